"""The one sampler: text-to-video denoising over diffusers schedulers, and DDIM inversion.

Own loop over ``UNet3DConditionModel`` (diffusers' TextToVideoSDPipeline is deprecated):
classifier-free guidance with cond/uncond in one batch, per-sample seeds drawn on the
CPU (the same seed gives the same start noise on any device), optional start latents
blended with fresh noise, a per-step ``progress`` callback that may raise to cancel, and
VAE decoding in frame chunks so long clips fit in memory.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
from typing import Any

import torch
from torch import nn

from .defaults import SCHEDULERS, profile_for
from .device_guard import prepare_sampling
from .errors import CavError, InputError
from .codec import decode_latents, encode_frames, text_embeddings
from .gate import StepLoras
from .components import T2VComponents
from .handle import ModelHandle
from .progress import Eta, ProgressFn

MAX_SEED = 2**63 - 1


class SamplingError(CavError):
    """Sampling produced no usable video (e.g. the latents became NaN)."""


def check_seed(seed: Any, what: str = "seed", count: int = 1) -> int:
    """``seed`` as an int such that ``seed .. seed+count-1`` are all in 0..2**63-1 (what
    torch generators take); an error names the seed instead of an overflow deep in torch."""
    top = MAX_SEED - (max(1, int(count)) - 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= top:
        extra = f" (with a batch of {count}, seed+{count - 1} must fit too)" if count > 1 else ""
        raise InputError(f"{what} must be a whole number in 0..{top}{extra}, got {seed!r} (--seed, node input seed)")
    return int(seed)



def make_scheduler(name: str, config: dict[str, Any]):
    """A fresh scheduler of the named kind from the model's scheduler config."""
    import diffusers

    if name not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    return getattr(diffusers, cls_name).from_config({**cfg, **extra})


def latent_size(components: T2VComponents, height: int | None, width: int | None) -> tuple[int, int, int, int]:
    """(height, width, latent h, latent w), checking the multiples the UNet needs."""
    vsf = components.vae_scale_factor
    sample = components.unet.config.sample_size
    sample = sample if isinstance(sample, int) else sample[0]
    # None is the native size; 0 is a mistake, not a request for it
    height = int(sample * vsf if height is None else height)
    width = int(sample * vsf if width is None else width)
    # each UNet down block but the last halves the latent
    multiple = vsf * 2 ** (len(components.unet.config.down_block_types) - 1)
    for label, v in (("height", height), ("width", width)):
        if v <= 0 or v % multiple:
            raise InputError(f"{label} {v} is not a positive multiple of {multiple}, which this model needs; "
                             f"try {max(multiple, round(v / multiple) * multiple)} (or leave --{label} out for the "
                             f"model's native size, {sample * vsf})")
    return height, width, height // vsf, width // vsf


def _whole(value: Any, label: str, lo: int, hi: int) -> int:
    """``value`` as an int in lo..hi; floats, text and bools are refused, not rounded."""
    try:
        n = operator.index(value)  # ints and numpy ints
        ok = not isinstance(value, bool)
    except TypeError:
        n, ok = 0, False
    if not ok or not lo <= n <= hi:
        raise InputError(f"{label} must be in {lo}..{hi} (a whole number), got {value!r}")
    return n


def _check_common(steps: int, guidance_scale: float, num_frames: int, batch_size: int) -> None:
    _whole(steps, "steps", 1, 1000)
    g = float(guidance_scale) if isinstance(guidance_scale, numbers.Real) else float("nan")
    if isinstance(guidance_scale, bool) or not math.isfinite(g) or not 0 <= g <= 100:
        raise InputError(f"guidance scale must be in 0..100, got {guidance_scale!r}")
    _whole(num_frames, "frames", 1, 1024)
    _whole(batch_size, "batch size", 1, 64)


def seed_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Start noise for one sample, drawn on the CPU so it does not depend on the device."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed) % 2**63), dtype=torch.float32)


def blend_latents(init: torch.Tensor, noise: torch.Tensor, blend: float) -> torch.Tensor:
    """Variance-preserving mix: blend 1 = the given latents, 0 = fresh noise."""
    if not 0.0 <= blend <= 1.0:
        raise InputError(f"init blend must be in 0..1, got {blend}")
    return math.sqrt(blend) * init + math.sqrt(1.0 - blend) * noise


# --------------------------------------------------------------------------- the loop

def _predict(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
             uncond: torch.Tensor | None, guidance_scale: float, loras: StepLoras | None = None) -> torch.Tensor:
    """Guided noise prediction at ``t``; ``loras`` selects the handle's LoRAs for the step, and
    where the two guidance branches need different LoRAs they run as two forwards."""
    dt = next(unet.parameters()).dtype

    def forward(inp: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return unet(inp.to(dt), t, encoder_hidden_states=text).sample.float()

    if uncond is not None and loras is not None and loras.splits(t):
        loras.select(t, uncond=True)
        eps_u = forward(x, uncond)
        loras.select(t)
        eps_c = forward(x, cond)
        return eps_u + guidance_scale * (eps_c - eps_u)
    if loras is not None:
        loras.select(t)
    if uncond is None:
        return forward(x, cond)
    eps_u, eps_c = forward(torch.cat([x, x]), torch.cat([uncond, cond])).chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def denoise(components: T2VComponents, unet: nn.Module, cond: torch.Tensor, uncond: torch.Tensor | None,
            latents: torch.Tensor, steps: int, guidance_scale: float, scheduler: str = "ddim",
            seed: int = 0, progress: ProgressFn | None = None, preview: bool = False,
            loras: StepLoras | None = None) -> torch.Tensor:
    """Run the scheduler from start ``latents`` (unit-variance noise scale) to clean latents.

    ``unet`` is the UNet with whatever adapters the caller attached; ``cond``/``uncond``
    are per-sample text embeddings. Ancestral schedulers draw from a CPU generator.
    ``loras`` (from :meth:`ModelHandle.applied_by_timestep`) picks the LoRAs of each step."""
    sched = make_scheduler(scheduler, components.scheduler_config)
    sched.set_timesteps(int(steps))
    dev = next(unet.parameters()).device
    x = (latents.float() * sched.init_noise_sigma).to(dev)
    cond = cond.to(dev, next(unet.parameters()).dtype)
    uncond = uncond.to(dev, cond.dtype) if uncond is not None and guidance_scale != 1.0 else None
    gen = torch.Generator().manual_seed(int(seed) + 1)
    kwargs = {"generator": gen} if "generator" in inspect.signature(sched.step).parameters else {}
    eta = Eta()
    for i, t in enumerate(sched.timesteps):
        inp = sched.scale_model_input(x, t)
        eps = _predict(unet, inp, t.to(dev), cond, uncond, guidance_scale, loras)
        out = sched.step(eps, t, x, **kwargs)
        x = out.prev_sample
        if progress is not None:
            info: dict[str, Any] = {"stage": "sample", "eta_s": eta.seconds_left(i + 1, len(sched.timesteps) - i - 1)}
            x0 = getattr(out, "pred_original_sample", None)
            if preview and x0 is not None:
                info["preview"] = decode_latents(components, x0[:1])[0]
            progress(i + 1, len(sched.timesteps), info)
    return x.cpu()


def generate(handle: ModelHandle, prompt: str, negative_prompt: str = "", num_frames: int | None = None,
             height: int | None = None, width: int | None = None, steps: int | None = None,
             guidance_scale: float | None = None, seed: int = 0, scheduler: str | None = None, batch_size: int = 1,
             init_latents: torch.Tensor | None = None, init_blend: float | None = None,
             progress: ProgressFn | None = None, preview: bool = False, merge: bool = True,
             return_latents: bool = False) -> torch.Tensor:
    """Sample ``batch_size`` videos (seeds ``seed, seed+1, ...``) -> frames (B,F,H,W,C) in 0..1.

    ``init_latents`` (1 or B,C,F,h,w; e.g. from :func:`invert_video`) replace the start
    noise with weight ``init_blend`` (1 = all inverted structure, 0 = fresh noise). The
    handle's LoRAs are merged into the weights for the call (``merge``; no per-step LoRA
    cost) and removed afterwards, leaving the base exactly as it was. Settings left None
    take the model's defaults (``sample.*`` in :mod:`cav_core.defaults`)."""
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise InputError("prompt and negative prompt must be text")
    d = profile_for(handle)
    num_frames, steps = d.resolve("sample.frames", num_frames), d.resolve("sample.steps", steps)
    guidance_scale = d.resolve("sample.cfg", guidance_scale)
    scheduler, init_blend = d.resolve("sample.scheduler", scheduler), d.resolve("sample.init_blend", init_blend)
    _check_common(steps, guidance_scale, num_frames, batch_size)
    seed = check_seed(seed, count=batch_size)
    c = handle.base
    height, width, h, w = latent_size(c, height, width)
    prepare_sampling(c, int(num_frames), height, width, batch_size)  # a host (ComfyUI) frees room first
    shape = (c.latent_channels, int(num_frames), h, w)
    from .device_guard import check_output_memory

    check_output_memory(c, batch_size, int(num_frames), height, width)
    noise = torch.stack([seed_noise(seed + i, shape) for i in range(batch_size)])
    if init_latents is not None:
        init = init_latents.float().cpu()
        if init.ndim != 5 or tuple(init.shape[1:]) != shape or init.shape[0] not in (1, batch_size):
            raise InputError(f"start latents have shape {tuple(init.shape)} but this video needs "
                             f"(1, {', '.join(map(str, shape))}); invert a clip with the same frames and size")
        noise = blend_latents(init.expand(batch_size, *shape), noise, init_blend)
    cond = text_embeddings(handle, [prompt] * batch_size)
    try:
        uncond = text_embeddings(handle, [negative_prompt] * batch_size) if guidance_scale != 1.0 else None
    except InputError as e:
        raise InputError(f"negative {e} (--negative, node input negative_prompt)") from None
    with handle.applied_by_timestep(merge=merge) as (unet, loras):
        latents = denoise(c, unet, cond, uncond, noise, steps, guidance_scale, scheduler, seed, progress, preview,
                          loras=loras)
    if not bool(torch.isfinite(latents).all()):
        raise SamplingError(f"sampling produced NaN or infinite latents, so the video would be black: "
                            f"{_suspects(handle)}")
    if return_latents:
        return latents
    frames = decode_latents(c, latents)
    if not bool(torch.isfinite(frames).all()):
        raise SamplingError(f"the VAE of model {c.name or c.model_id} decoded NaN or infinite frames from finite "
                            f"latents: the model's VAE weights are broken; load an intact copy of the model")
    return frames


def _suspects(handle: ModelHandle) -> str:
    """Who made the latents non-finite: a broken model weight, else the applied adapters."""
    c = handle.base
    for module in (c.unet, c.text_encoder):
        for name, p in module.named_parameters():
            if not bool(torch.isfinite(p).all()):
                return (f"the model {c.name or c.model_id} is broken (its weight {name} holds NaN or infinite "
                        f"values); load an intact copy of the model")
    if handle.loras:
        names = ", ".join(f"{a.name or a.lora.role + ' LoRA'} (strength {a.strength:g})" for a in handle.loras)
        return (f"with {names} applied to model {c.name or c.model_id}; one of them is broken or too strong: "
                f"sample without it or at a lower strength")
    return (f"the model {c.name or c.model_id} with no adapters applied; try another scheduler or guidance scale, "
            f"or load an intact copy of the model")


@torch.no_grad()
def invert_latents(components: T2VComponents, unet: nn.Module, latents: torch.Tensor, cond: torch.Tensor,
                   steps: int, progress: ProgressFn | None = None,
                   loras: StepLoras | None = None) -> torch.Tensor:
    """DDIM inversion of clean latents to the noise that DDIM with ``steps`` maps back to them."""
    from diffusers import DDIMInverseScheduler

    accepted = inspect.signature(DDIMInverseScheduler.__init__).parameters
    inv = DDIMInverseScheduler.from_config({k: v for k, v in components.scheduler_config.items() if k in accepted})
    inv.set_timesteps(int(steps))
    dev = next(unet.parameters()).device
    x = latents.float().to(dev)
    cond = cond.to(dev, next(unet.parameters()).dtype)
    eta = Eta()
    for i, t in enumerate(inv.timesteps):
        eps = _predict(unet, x, t.to(dev), cond, None, 1.0, loras)
        x = inv.step(eps, t, x).prev_sample
        if progress is not None:
            progress(i + 1, len(inv.timesteps),
                     {"stage": "invert", "eta_s": eta.seconds_left(i + 1, len(inv.timesteps) - i - 1)})
    return x.cpu()


def invert_video(handle: ModelHandle, frames: torch.Tensor, prompt: str, steps: int | None = None,
                 progress: ProgressFn | None = None) -> torch.Tensor:
    """Reference frames (F,H,W,C) -> DDIM-inverted latents (1,C,F,h,w) for :func:`generate`;
    ``steps`` None: the model's sampling steps, so DDIM sampling at its default retraces it."""
    steps = profile_for(handle).resolve("sample.steps", steps)
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"frames must be a (F,H,W,3) tensor, got {type(frames).__name__}")
    _check_common(steps, 1.0, frames.shape[0] if frames.ndim == 4 else 1, 1)
    c = handle.base
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be (F,H,W,3), got {tuple(frames.shape)}")
    latent_size(c, frames.shape[1], frames.shape[2])
    prepare_sampling(c, frames.shape[0], frames.shape[1], frames.shape[2])
    latents = encode_frames(c, frames)
    cond = text_embeddings(handle, [prompt])
    with handle.applied_by_timestep(merge=True) as (unet, loras):
        return invert_latents(c, unet, latents, cond, steps, progress, loras=loras)
