"""What each training step sees: frames for the VAE, clips and captions for the diffusion
and terminal steps, and the noise and timesteps they are trained at."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cav_core.toyworld import spec
from cav_core.toyworld.clips import random_pretraining_clip

if TYPE_CHECKING:
    from diffusers import DDPMScheduler

#: How often each caption form is drawn: (full, motion unnamed, appearance only). Video batches
#: mostly name the motion; image batches mostly the appearance; a sitting's image batches
#: ("no-direction" in its recipe) never name a direction, as a single frame shows none.
CAPTION_FORMS = {"video": (0.7, 0.1, 0.2), "image": (0.2, 0.2, 0.6), "image, no-direction": (0.0, 0.3, 0.7)}


def vae_frames(rng: np.random.Generator, n: int) -> torch.Tensor:
    """``n`` single frames (4 from each fresh clip) in -1..1, (N, C, H, W)."""
    clips = [random_pretraining_clip(rng).frames for _ in range((n + 3) // 4)]
    frames = np.concatenate([c[rng.choice(spec.NUM_FRAMES, 4, replace=False)] for c in clips])[:n]
    return torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1


def direction_label(prompt: str) -> int:
    """Index of the caption's direction word in spec.DIRECTIONS, or -100 (ignored by a
    cross-entropy) when the caption names none."""
    words = prompt.split()
    if "moving" in words and words.index("moving") + 1 < len(words):
        word = words[words.index("moving") + 1]
        if word in spec.DIRECTIONS:
            return list(spec.DIRECTIONS).index(word)
    return -100


def clips_of(caps: list[dict], option: str, data_path: Path, still: bool = False) -> np.ndarray:
    """Indices of the cached clips whose full caption names a direction other than still
    (``still``: whose caption is still); ``option`` names the option that needs them."""
    s = list(spec.DIRECTIONS).index("still")
    labels = [direction_label(c["full"]) for c in caps]
    found = np.array([i for i, lab in enumerate(labels) if (lab == s if still else lab not in (-100, s))])
    if not len(found):
        raise SystemExit(f"{option}: no clip in {data_path} {'is still' if still else 'moves'}; "
                         "encode more clips (--n-clips)")
    return found


def caption(rng: np.random.Generator, caps: dict, forms: tuple[float, float, float], dropout: float) -> str:
    """One of a clip's captions, or "" with probability ``dropout`` (for classifier-free guidance)."""
    if rng.random() < dropout:
        return ""
    p_full, p_unnamed, _ = forms
    u = rng.random()
    return caps["full"] if u < p_full else caps["motion_unnamed"] if u < p_full + p_unnamed else caps["appearance"]


def diffusion_batch(rng: np.random.Generator, latents: torch.Tensor, caps: list[dict], *, image: bool, size: int,
                    forms: tuple[float, float, float], dropout: float, still: np.ndarray | None = None,
                    still_rows: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Clean latents (B, C, F, h, w; F = 1 for an image batch) and their prompts. With
    ``still_rows`` K, a video batch's first K rows are clips from ``still`` with their full
    captions, never dropped (--still-rows)."""
    idx = rng.integers(len(latents), size=size)
    if image:
        fr = rng.integers(spec.NUM_FRAMES, size=len(idx))
        x0 = latents[idx, :, fr][:, :, None].float()
        still_rows = 0
    else:
        if still_rows:
            idx[:still_rows] = rng.choice(still, size=still_rows)
        x0 = latents[idx].float()
    prompts = [caption(rng, caps[i], forms, dropout) for i in idx]
    prompts[:still_rows] = [caps[i]["full"] for i in idx[:still_rows]]
    return x0, prompts


def noised(schedule: DDPMScheduler, x0: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Timesteps drawn uniformly, the noisy input and the target of the schedule's objective."""
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, len(schedule.alphas_cumprod), (x0.shape[0],), generator=g)
    xt = schedule.add_noise(x0, noise, t)
    target = noise if schedule.config.prediction_type == "epsilon" else schedule.get_velocity(x0, noise, t)
    return t, xt, target


def terminal_batch(rng: np.random.Generator, g: torch.Generator, latents: torch.Tensor, caps: list[dict],
                   pool: np.ndarray, size: int, opening: int = 0, step: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Clean latents, noise and full captions of clips drawn from ``pool``. With ``opening``
    N, every other step keeps only the clips' first N frames (--opening-frames)."""
    idx = rng.choice(pool, size=size)
    x0 = latents[idx].float()
    noise = torch.randn(x0.shape, generator=g)
    if opening and step % 2 == 0:
        x0, noise = x0[:, :, :opening], noise[:, :, :opening]
    return x0, noise, [caps[i]["full"] for i in idx]
