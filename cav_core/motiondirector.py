"""A MotionDirector-style baseline, built on the pack's own pieces (issue 29's peer table).

MotionDirector (Zhao et al. 2023) trains two paths jointly on one clip:

- a spatial LoRA (the spatial transformers' self-attention and feed-forward, not the
  cross-attention) on one random frame, with the temporal layers bypassed, in 80% of the
  steps (``motiondirector.spatial_share``);
- a temporal LoRA (the temporal transformers' attention and feed-forward, ``transformer_in``
  included) on the whole clip, with the spatial LoRA shared but frozen on that path, under
  the plain loss plus its appearance-debiased temporal loss (``motiondirector.ad_loss``,
  :func:`cav_core.train.appearance_debiased_loss`).

Both LoRAs train in one run of the one training loop (:func:`cav_core.train.run_training`):
the temporal path is the loop's own forward, the spatial path its ``extra_loss`` of the same
step. Each path's LoRA gets gradients from its own path only: the spatial LoRA is frozen for
the temporal forward and trainable for the spatial one (autograd records ``requires_grad`` at
forward time). At inference only the temporal LoRA is applied by default (MotionDirector
drops the spatial path for a new appearance), on every noise level and both guidance
branches, optionally from a noise prior: ``sqrt(p)*inverted + sqrt(1-p)*noise``, which is
what :func:`cav_core.sample.generate` computes from ``init_latents``/``init_blend``.

The defaults (rank 32, lr 5e-4, 300 steps on real models) are MotionDirector's public
single-video config (cav_core/defaults.py); on the toy model the step count is chosen so a
run takes about the wall-clock of the pack's default absorber + T-LoRA
(``benchmarks/train_step.py``-style timing, docs/EXPERIMENTS.md "Peers").
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .adapter_files import AdapterFile
from .adapters import add_trainable_lora, extract_lora
from .defaults import profile_for
from .device_guard import check_training_memory
from .errors import InputError
from .layers import bypass_temporal, motiondirector_modules
from .model import ModelHandle
from .sample import ProgressFn, check_seed, encode_frames, generate, text_embeddings
from .train import (TrainJob, _as_dir, _check_ad_loss, _check_caption, _check_lr, _check_steps, _fingerprint,
                    _prepare_frames, _warn_if_still, diffusion_loss, noise_schedule, noised, run_training, seeded)


@dataclass(frozen=True, eq=False)
class MotionDirectorResult:
    """The two LoRAs of one MotionDirector run (files of the pack's one format)."""

    spatial: AdapterFile  # kind 'spatial_lora': the appearance path
    temporal: AdapterFile  # kind 'temporal_lora': the motion path


def _check_share(share: Any) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise InputError(f"spatial_share must be a fraction in 0..1, got {share!r}")
    return float(share)


def train_motiondirector(handle: ModelHandle, frames: torch.Tensor, caption: str, steps: int | None = None,
                         lr: float | None = None, rank: int | None = None, seed: int = 0,
                         progress: ProgressFn | None = None, ad_loss: float | None = None,
                         spatial_share: float | None = None, checkpoint_dir: str | os.PathLike | None = None,
                         resume: bool = False, height: int | None = None,
                         width: int | None = None) -> MotionDirectorResult:
    """Train MotionDirector's spatial and temporal LoRAs jointly on one clip (module doc).

    Settings left None take the model's ``motiondirector.*`` defaults (:mod:`cav_core.defaults`).
    Randomness of step k derives from (seed, k) alone, as in every run of the loop."""
    d = profile_for(handle)
    caption = _check_caption(caption, "caption")
    steps = _check_steps(d.resolve("motiondirector.steps", steps))
    lr = _check_lr(d.resolve("motiondirector.lr", lr), "learning rate")
    rank = d.resolve("motiondirector.rank", rank)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 256:
        raise InputError(f"rank must be an integer in 1..256, got {rank!r}")
    ad_loss = _check_ad_loss(d.resolve("motiondirector.ad_loss", ad_loss))
    share = _check_share(d.resolve("motiondirector.spatial_share", spatial_share))
    seed = check_seed(seed)
    frames = _prepare_frames(handle, frames, height, width)
    _warn_if_still(frames)
    c = handle.base
    check_training_memory(c, frames.shape[0], frames.shape[1], frames.shape[2], 1, stage="temporal")
    latents = encode_frames(c, frames)  # (1, C, F, h, w), once
    cond = text_embeddings(handle, [caption])  # frozen: once
    sched = noise_schedule(c.scheduler_config)
    fingerprint = _fingerprint("motiondirector", c.model_id, caption, steps, rank, lr, ad_loss, share, seed, frames)
    spatial: list[torch.Tensor] = []

    def batch(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for p in spatial:  # the temporal path uses the spatial LoRA, frozen
            p.requires_grad_(False)
        return latents, cond

    def spatial_path(step: int, g: torch.Generator) -> torch.Tensor:
        """The spatial path of a step: one random frame as an image, temporal layers bypassed."""
        if float(torch.rand((1,), generator=g)) >= share:
            return torch.zeros((), device=dev)
        j = int(torch.randint(0, latents.shape[2], (1,), generator=g))
        xt, t, target = noised(sched, latents[:, :, j:j + 1], g)
        for p in spatial:
            p.requires_grad_(True)
        with bypass_temporal(unet):
            pred = unet(xt.to(dev, dtype), t.to(dev), encoder_hidden_states=cond.to(dev, dtype)).sample
        return diffusion_loss(pred.float(), target.to(dev))

    with handle.with_bypass(False).applied(merge=True) as unet:
        dev, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
        with seeded(seed):
            temporal = add_trainable_lora(unet, "temporal", rank, float(rank), "md_temporal",
                                          modules=motiondirector_modules(unet, "temporal"))
            with warnings.catch_warnings():  # peft's note that a second adapter joins the first: meant so
                warnings.simplefilter("ignore", UserWarning)
                spatial += add_trainable_lora(unet, "spatial", rank, float(rank), "md_spatial",
                                              modules=motiondirector_modules(unet, "spatial"))
        for p in temporal:  # adding the spatial LoRA froze the adapters already there
            p.requires_grad_(True)
        job = TrainJob("motiondirector", unet, [{"params": temporal, "lr": lr}, {"params": spatial, "lr": lr}],
                       batch, steps, c.scheduler_config, seed, fingerprint, progress, _as_dir(checkpoint_dir),
                       resume=resume, ad_loss=ad_loss, extra_loss=spatial_path)
        losses = run_training(job)
        info = {"method": "motiondirector", "caption": caption, "steps": steps, "seed": seed, "lr": lr, "rank": rank,
                "alpha": float(rank), "ad_loss": ad_loss, "spatial_share": share, "min_timestep": 0,
                "defaults": d.name, "size": [int(frames.shape[1]), int(frames.shape[2])],
                "frames": int(frames.shape[0]),
                "final_loss": float(sum(losses[-20:]) / max(1, len(losses[-20:])))}
        t_lora = extract_lora(unet, "md_temporal", "temporal", base_model=c.model_id, info=info)
        s_lora = extract_lora(unet, "md_spatial", "spatial", base_model=c.model_id, info=info)
    return MotionDirectorResult(
        spatial=AdapterFile(kind="spatial_lora", lora=s_lora, base_model=c.model_id, info=info,
                            base_model_name=c.name),
        temporal=AdapterFile(kind="temporal_lora", lora=t_lora, base_model=c.model_id, info=info,
                             base_model_name=c.name))


def motiondirector_handle(handle: ModelHandle, result: MotionDirectorResult, spatial: float = 0.0) -> ModelHandle:
    """``handle`` with the run's temporal LoRA on every noise level and both guidance branches
    (MotionDirector applies it throughout, unlike the toy's T-LoRA gate), and its spatial LoRA
    at strength ``spatial`` (0, the default: off, as MotionDirector samples a new appearance)."""
    n = handle.base.num_train_timesteps
    out = handle.with_lora(result.temporal.lora, 1.0, name="MotionDirector temporal", min_timestep=0,
                           cond_only_from=n)
    if spatial:
        out = out.with_lora(result.spatial.lora, float(spatial), name="MotionDirector spatial", min_timestep=0,
                            cond_only_from=n)
    return out


def motiondirector_sample(handle: ModelHandle, result: MotionDirectorResult, prompt: str, seed: int = 0,
                          noise_prior: float = 0.0, inverted: torch.Tensor | None = None, spatial: float = 0.0,
                          **generate_kwargs: Any) -> torch.Tensor:
    """Sample with a MotionDirector run: frames (B,F,H,W,C) from :func:`cav_core.sample.generate`.

    ``noise_prior`` p > 0 starts from ``sqrt(p)*inverted + sqrt(1-p)*noise``; ``inverted``:
    the reference's DDIM-inverted latents, e.g. ``invert_video(handle, frames, caption)`` on
    the plain base model. Further keywords go to ``generate`` (steps, guidance_scale, ...)."""
    if not isinstance(noise_prior, (int, float)) or not 0 <= noise_prior <= 1:
        raise InputError(f"noise_prior must be in 0..1, got {noise_prior!r}")
    if noise_prior > 0 and inverted is None:
        raise InputError("noise_prior > 0 needs the reference's inverted latents (inverted=invert_video(...))")
    init = dict(init_latents=inverted, init_blend=float(noise_prior)) if noise_prior > 0 else {}
    return generate(motiondirector_handle(handle, result, spatial), prompt, seed=seed, **init, **generate_kwargs)
