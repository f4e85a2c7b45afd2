"""The loss terms of a diffusion step: the min-SNR weighted denoising loss (optionally
favouring high noise) and the frame-position probe."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from cav_core.toyworld import spec

if TYPE_CHECKING:
    from diffusers import DDPMScheduler


def loss_weights(snr: torch.Tensor, min_snr: float, high_noise_weight: float = 0.0,
                 prediction: str = "epsilon") -> torch.Tensor:
    """Per-sample weights of the eps (or v) loss at signal-to-noise ratio ``snr``: min-SNR
    (low noise counts less), and optionally 1/SNR capped at ``high_noise_weight``. The eps
    loss weighs an error in the clean video by SNR, which is small at high noise, where the
    layout (and so the motion) is decided; the second factor turns those steps into an x0
    loss, so a prediction from near-pure noise has to follow the caption rather than the noise.

    A v error weighs an x0 error by SNR + 1; the same x0 weights (min(SNR, min_snr), and with
    ``high_noise_weight`` at least 1 at high noise) are divided by that. At zero terminal SNR
    the 1/SNR cap has nothing to cap, so any ``high_noise_weight`` > 0 means the full floor."""
    if prediction == "v_prediction":
        floor = 1.0 if high_noise_weight > 0 else 0.0
        return torch.clamp(snr, min=floor, max=min_snr) / (snr + 1)
    w = torch.clamp(snr, max=min_snr) / snr
    if high_noise_weight > 0:
        w = w * torch.clamp(1 / snr, min=1.0, max=high_noise_weight)
    return w


def denoising_loss(schedule: DDPMScheduler, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, min_snr: float,
                   high_noise_weight: float = 0.0) -> torch.Tensor:
    """The batch mean of the weighted per-sample MSE; the SNR is diffusers' ``compute_snr``
    (equal to alphas_cumprod / (1 - alphas_cumprod) to float rounding, checked in
    tests/test_toyworld_training.py)."""
    from diffusers.training_utils import compute_snr

    w = loss_weights(compute_snr(schedule, t), min_snr, high_noise_weight, schedule.config.prediction_type)
    return (w * ((pred - target) ** 2).mean(dim=(1, 2, 3, 4))).mean()


class PositionProbe:
    """Linear heads that read each frame's index back from the UNet's mid block and second
    up block (--position-aux). UNet3DConditionModel has no temporal position embedding: a
    frame learns where it stands in the clip only through the temporal convolutions' zero
    padding, and moving left rather than right needs that (docs/EXPERIMENTS.md §5). The
    heads train with the sitting and are saved in its checkpoint, never exported."""

    def __init__(self, unet: torch.nn.Module):
        widths = [unet.config.block_out_channels[-1], unet.config.block_out_channels[-2]]  # mid, up_blocks[1]
        self.heads = torch.nn.ModuleList([torch.nn.Linear(w, spec.NUM_FRAMES) for w in widths])
        self._seen: list[torch.Tensor] = []
        self._hooks = [m.register_forward_hook(lambda _m, _i, out: self._seen.append(out))
                       for m in (unet.mid_block, unet.up_blocks[1])]

    def clear(self) -> None:
        """Forget the features of earlier UNet calls (call before the step's forward)."""
        self._seen.clear()

    def loss(self, batch: int, frames: int) -> torch.Tensor:
        """Cross-entropy of the frame index from the features of the last UNet call."""
        probe = self._seen[:len(self._hooks)]
        return sum(F.cross_entropy(h(f.reshape(batch, frames, f.shape[1], -1).mean(-1)).flatten(0, 1),
                                   torch.arange(frames).repeat(batch))
                   for h, f in zip(self.heads, probe)) / len(probe)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
