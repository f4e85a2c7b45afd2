"""Memory guard: refuse a training run that cannot fit on the GPU before it starts.

A CUDA out-of-memory error half-way through model loading, VAE encoding and the first
step costs minutes and says nothing useful. :func:`check_training_memory` estimates
what a run needs on top of the weights already on the device and compares it with what
``torch.cuda.mem_get_info()`` reports free; when it does not fit it raises
:class:`InputError` saying how much is missing and what to lower (frames for Stage 2,
the batch for Stage 1), with the largest value that fits.

The estimate is deliberately rough (think +-50%) and errs on the low side, so it only
refuses runs that clearly cannot fit. It counts, per UNet resolution level, the values
each layer keeps for the backward pass; with activation checkpointing (on CUDA by
default, see ``train.run_training``) only block inputs are kept and one block at a time
is recomputed. CPU and MPS are not checked: they use system memory, which can swap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import memory
from .errors import InputError

GIB = 1024**3

#: Values one UNet3D layer (resnet + temporal conv + spatial and temporal transformer,
#: with memory-efficient attention) keeps for backward, per latent position and channel.
VALUES_PER_LAYER = 40
#: Values kept per position and channel of each layer with activation checkpointing.
VALUES_PER_LAYER_CHECKPOINTED = 2
#: Kept free for the CUDA workspace, the allocator's fragmentation and the VAE/text encoder
#: calls of validation previews.
RESERVE_BYTES = GIB // 2
#: Share of the reported free memory a run may plan to use.
USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run needs on the device, beyond the model weights already there."""

    activations: int
    trainable: int
    reserve: int = RESERVE_BYTES

    @property
    def total(self) -> int:
        return self.activations + self.trainable + self.reserve


def estimate_training_memory(block_out_channels: Sequence[int], layers_per_block: int, num_frames: int,
                             height: int, width: int, batch_size: int = 1, bytes_per_value: int = 2,
                             vae_scale_factor: int = 8, grad_checkpointing: bool = True,
                             trainable_params: int = 0) -> MemoryEstimate:
    """Rough memory of one training step of a UNet3D (see the module doc for the model).

    ``height``/``width`` are pixels of the frames; a latent position is one of
    ``batch_size * num_frames * (height/vae) * (width/vae)``, and each down level
    halves both sides. ``trainable_params`` (LoRA / token rows) train in fp32 with AdamW:
    weights, gradients and two moments, 16 bytes each."""
    positions = batch_size * num_frames * max(1, height // vae_scale_factor) * max(1, width // vae_scale_factor)
    # (layers on that level: down blocks have layers_per_block, up blocks one more) x positions x channels
    levels = [(2 * layers_per_block + 1) * (positions // 4**i) * c for i, c in enumerate(block_out_channels)]
    if grad_checkpointing:
        biggest_block = max((layers_per_block + 1) * (positions // 4**i) * c for i, c in enumerate(block_out_channels))
        values = VALUES_PER_LAYER_CHECKPOINTED * sum(levels) + VALUES_PER_LAYER * biggest_block
    else:
        values = VALUES_PER_LAYER * sum(levels)
    return MemoryEstimate(activations=int(values * bytes_per_value), trainable=16 * int(trainable_params),
                          reserve=RESERVE_BYTES)


def available_memory(device: torch.device) -> tuple[int, int] | None:
    """(free, total) bytes on a CUDA device; None where it is not measured (CPU, MPS)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total)


def decide(estimate: MemoryEstimate, free: int, total: int, stage: str, num_frames: int, batch_size: int,
           size: tuple[int, int], device: str = "cuda") -> None:
    """Raise :class:`InputError` when ``estimate`` does not fit in ``free`` bytes, naming what to lower."""
    budget = int(free * USABLE_FRACTION)
    if estimate.total <= budget:
        return
    h, w = size
    # Activations grow linearly with frames x batch: the largest count that still fits.
    per_unit = estimate.activations / max(1, num_frames * batch_size)
    room = budget - estimate.trainable - estimate.reserve
    fits = int(room // per_unit) if per_unit > 0 and room > 0 else 0
    if num_frames > 1:
        knob = (f"use fewer frames (at most {fits // batch_size} fit here)" if fits >= batch_size
                else "use fewer frames (even 1 frame does not fit here)")
    else:
        knob = (f"lower the batch size (at most {fits} fit here)" if fits >= 1
                else "lower the batch size (even 1 does not fit here)")
    raise InputError(
        f"not enough GPU memory for {stage} training: {num_frames} frame(s) at {w}x{h}, batch {batch_size} need "
        f"about {_size(estimate.total)} besides the model, and {device} has {_size(free)} free of {_size(total)}. "
        f"{knob[0].upper() + knob[1:]}, close other programs using the GPU, or use a model with a smaller "
        f"native size.")


def _size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 1024**2:.0f} MiB"


def check_training_memory(components: Any, num_frames: int, height: int, width: int, batch_size: int = 1,
                          stage: str = "", trainable_params: int = 0) -> None:
    """Refuse a training run on ``components`` (a ``model.T2VComponents``) that cannot fit.

    Called by both training stages before any work. It first lets a host (ComfyUI) free
    what the run needs (:func:`memory.before_run`), so the check counts the room the
    host's own models leave; the check itself does nothing off CUDA."""
    cfg = components.unet.config
    dtype = components.dtype
    estimate = estimate_training_memory(
        tuple(cfg.block_out_channels), int(cfg.layers_per_block), num_frames, height, width, batch_size,
        bytes_per_value=torch.finfo(dtype).bits // 8, vae_scale_factor=components.vae_scale_factor,
        grad_checkpointing=True, trainable_params=trainable_params)
    memory.before_run(components, estimate.total, "training")
    device = components.device  # read after the hook: a host may have brought the model back
    measured = available_memory(device)
    if measured is None:
        return
    decide(estimate, measured[0], measured[1], stage or "this", num_frames, batch_size, (height, width), str(device))


# --------------------------------------------------------------------------- sampling output

#: Float values held per output pixel and channel at the end of sampling: the decoded frames
#: (fp32), the clamp/convert copy and the uint8 frames of the writer, rounded up.
OUTPUT_VALUES_PER_PIXEL = 3


def system_memory_available() -> int | None:
    """Bytes of RAM the system can give without swapping (Linux ``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def check_output_memory(components: Any, batch_size: int, num_frames: int, height: int, width: int,
                        available: int | None = None) -> None:
    """Refuse a sampling run whose decoded video cannot fit in RAM (frames are decoded to the
    CPU in every case): the estimate is the output frames alone, so it errs low, like the
    training guard, and only stops runs that clearly cannot fit. ``available`` overrides
    the measurement (tests)."""
    free = system_memory_available() if available is None else available
    if free is None:
        return
    need = int(batch_size) * int(num_frames) * int(height) * int(width) * 3 * 4 * OUTPUT_VALUES_PER_PIXEL
    budget = int(free * USABLE_FRACTION)
    if need <= budget:
        return
    per_frame = max(1, need // max(1, int(batch_size) * int(num_frames)))
    fits = budget // per_frame
    raise InputError(f"not enough memory for the video: {batch_size} x {num_frames} frame(s) at {width}x{height} "
                     f"need about {_size(need)} of RAM, {_size(free)} are available. Use fewer frames (--frames, "
                     f"num_frames; at most {fits // max(1, int(batch_size))} fit here), a smaller size or batch")


def estimate_sampling_memory(block_out_channels: Sequence[int], layers_per_block: int, num_frames: int,
                             height: int, width: int, batch_size: int = 1, bytes_per_value: int = 2,
                             vae_scale_factor: int = 8) -> MemoryEstimate:
    """Rough memory of one guided sampling step: no backward, so only the skip connections
    and one layer's transient values are alive (the checkpointed training model of
    :func:`estimate_training_memory` minus the trainables), for the doubled batch of
    classifier-free guidance."""
    return estimate_training_memory(block_out_channels, layers_per_block, num_frames, height, width,
                                    2 * batch_size, bytes_per_value, vae_scale_factor, grad_checkpointing=True)


def prepare_sampling(components: Any, num_frames: int, height: int, width: int, batch_size: int = 1) -> None:
    """Start of a sampling or inversion run: let a host free what it needs
    (:func:`memory.before_run`). Sampling is not refused: it needs far less than training."""
    cfg = components.unet.config
    estimate = estimate_sampling_memory(
        tuple(cfg.block_out_channels), int(cfg.layers_per_block), num_frames, height, width, batch_size,
        bytes_per_value=torch.finfo(components.dtype).bits // 8, vae_scale_factor=components.vae_scale_factor)
    memory.before_run(components, estimate.total, "sampling")
