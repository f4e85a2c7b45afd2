"""The VAE and text codec of a handle: frames <-> scaled latents, prompts -> embeddings.
The sampler (:mod:`cav_core.sample`) and the trainer (:mod:`cav_core.train`) both encode
and decode through here; each call moves the codec onto the device for its duration
(:func:`cav_core.memory.codec_on_device`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from . import memory
from .errors import InputError
from .components import T2VComponents
from .handle import ModelHandle
from .textual_inversion import encode_text


@torch.no_grad()
def encode_frames(components: T2VComponents, frames: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Frames (F,H,W,C) or (B,F,H,W,C) in 0..1 -> scaled latents (B,C,F,h,w), deterministic (mode)."""
    vae = components.vae
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise InputError(f"frames must be (F,H,W,3) or (B,F,H,W,3), got {tuple(frames.shape)}")
    b = frames.shape[0]
    flat = rearrange(frames, "b f h w c -> (b f) c h w") * 2 - 1
    out = []
    with memory.codec_on_device(components, vae):
        dev, dt = next(vae.parameters()).device, next(vae.parameters()).dtype
        for i in range(0, flat.shape[0], chunk):
            out.append(vae.encode(flat[i:i + chunk].to(dev, dt)).latent_dist.mode().float().cpu())
    lat = torch.cat(out) * vae.config.scaling_factor
    return rearrange(lat, "(b f) c h w -> b c f h w", b=b)


@torch.no_grad()
def decode_latents(components: T2VComponents, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Scaled latents (B,C,F,h,w) -> frames (B,F,H,W,C) in 0..1 on the CPU, ``chunk`` frames at a time."""
    vae = components.vae
    b = latents.shape[0]
    flat = rearrange(latents, "b c f h w -> (b f) c h w") / vae.config.scaling_factor
    out = []
    with memory.codec_on_device(components, vae):
        dev, dt = next(vae.parameters()).device, next(vae.parameters()).dtype
        for i in range(0, flat.shape[0], chunk):
            img = vae.decode(flat[i:i + chunk].to(dev, dt)).sample.float().cpu()
            out.append(((img + 1) / 2).clamp(0, 1))
    return rearrange(torch.cat(out), "(b f) c h w -> b f h w c", b=b)


def text_embeddings(handle: ModelHandle, prompts: Sequence[str]) -> torch.Tensor:
    """Embeddings of ``prompts`` with the handle's textual-inversion tokens."""
    c = handle.base
    with torch.no_grad(), memory.codec_on_device(c, c.text_encoder):
        return encode_text(c.text_encoder, c.tokenizer, prompts, handle.tokens).float()
