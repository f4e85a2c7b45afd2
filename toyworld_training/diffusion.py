"""The image and video stages: the UNet (and the text encoder unless frozen) trained to
denoise cached latents. One step is: compose the batch (batches.py), add noise, the loss terms
(losses.py), the learning rate and the EMA (schedule.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from cav_core.layers import bypass_temporal

from .batches import CAPTION_FORMS, clips_of, diffusion_batch, noised
from .losses import PositionProbe, denoising_loss
from .recipe import PIPELINE
from .schedule import learning_rate, set_learning_rate, step_rng, weights_ema

if TYPE_CHECKING:
    from .trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a sitting's diffusion steps do, read from its state (the options it was started with)."""

    image_every: int = 0  # every K-th video step is an image batch (--image-every)
    high_noise_weight: float = 0.0  # video batches only (--high-noise-weight)
    position_aux: float = 0.0  # weight of the frame-position probe (--position-aux)
    still_rows: int = 0  # first rows of a video batch that are still clips (--still-rows)
    no_direction_images: bool = False  # image batches never name a direction

    @classmethod
    def of(cls, state: dict, stage: str) -> Recipe:
        video = stage == "video"
        return cls(image_every=int(state.get("image_every", 0)) if video else 0,
                   high_noise_weight=float(state.get("high_noise_weight", 0.0)),
                   position_aux=float(state.get("position_aux", 0.0)),
                   still_rows=int(state.get("still_rows", 0)) if video else 0,
                   no_direction_images=state.get("image_captions") == "no-direction")

    def is_image_step(self, stage: str, step: int) -> bool:
        every = self.image_every
        return stage == "image" or (every > 0 and step % every == every - 1)

    def caption_forms(self, image: bool) -> tuple[float, float, float]:
        if not image:
            return CAPTION_FORMS["video"]
        return CAPTION_FORMS["image, no-direction" if self.no_direction_images else "image"]


@dataclasses.dataclass
class _Losses:
    """The step losses kept for the log: interleaved image batches apart, so the video loss
    stays comparable between sittings."""

    main: list[float] = dataclasses.field(default_factory=list)
    image: list[float] = dataclasses.field(default_factory=list)
    position: list[float] = dataclasses.field(default_factory=list)

    def line(self, stage: str, step: int, total: int, lr: float, rate: float) -> str:
        extra = f" image loss {np.mean(self.image[-10:]):.4f}" if self.image else ""
        extra += f" position-probe loss {np.mean(self.position[-50:]):.3f}" if self.position else ""
        # An image-only sitting (--image-every 1) has no video loss to show.
        shown = f" loss {np.mean(self.main[-50:]):.4f}" if self.main else ""
        return f"{stage} step {step}/{total}{shown}{extra} lr {lr:.2e} {rate:.2f}s/step"


def _step_loss(tr: Trainer, stage: str, step: int, recipe: Recipe, data: dict, probe: PositionProbe | None,
               losses: _Losses) -> torch.Tensor:
    """Compose the step's batch, run the UNet and return its loss (logging its terms)."""
    latents, caps, still, schedule = data["latents"], data["caps"], data["still"], data["schedule"]
    rng = step_rng(tr.cfg["seed"], stage, step, int(tr.state.get("sitting", 0)))
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    image = recipe.is_image_step(stage, step)
    x0, prompts = diffusion_batch(rng, latents, caps, image=image,
                                  size=tr.cfg["image_batch" if image else "video_batch"],
                                  forms=recipe.caption_forms(image), dropout=tr.cfg["cfg_dropout"],
                                  still=still, still_rows=recipe.still_rows)
    t, xt, target = noised(schedule, x0, g)
    # UNet3D's temporal convs use dropout: seed it from this step so a resumed run
    # draws the masks an uninterrupted one would.
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
    states, _ = tr.encode(prompts)
    if probe is not None:
        probe.clear()
    with bypass_temporal(tr.c.unet, enabled=image):
        pred = tr.c.unet(xt, t, encoder_hidden_states=states).sample
    loss = denoising_loss(schedule, pred, target, t, tr.cfg["min_snr"], 0.0 if image else recipe.high_noise_weight)
    (losses.image if image and stage == "video" else losses.main).append(loss.item())
    if probe is not None and not image:
        pos_loss = probe.loss(x0.shape[0], x0.shape[2])
        losses.position.append(pos_loss.item())
        loss = loss + recipe.position_aux * pos_loss
    return loss


def _finish(tr: Trainer, stage: str, params: list[torch.nn.Parameter], ema) -> None:
    """The EMA weights become the model; the run goes on to the next stage of the pipeline."""
    ema.copy_to(params)
    nxt = PIPELINE.index(stage) + 1
    if PIPELINE[nxt] == "decoder" and (tr.state.get("sitting") or not tr.cfg.get("decoder_steps")):
        nxt += 1  # an extension sitting (or an older recipe) does only what it was asked
    tr.state = tr.next_state(PIPELINE[nxt] if nxt < len(PIPELINE) else "done")
    tr.log(f"{stage} done")
    tr.save()


def run_diffusion(tr: Trainer, stage: str, blob: dict | None, deadline: float) -> None:
    """Train ``stage`` ("image": single frames with the temporal layers bypassed, the way
    ModelScope grew out of an image model; "video": 16-frame clips, optionally interleaving
    image batches) until its step count or the deadline."""
    cache = torch.load(tr.data_path, weights_only=True)
    recipe = Recipe.of(tr.state, stage)
    caps = json.loads(cache["captions"])
    data = {"latents": cache["latents"], "caps": caps, "schedule": tr.noise_schedule,
            "still": clips_of(caps, "--still-rows", tr.data_path, still=True) if recipe.still_rows else None}
    params = tr.start_training()
    probe = PositionProbe(tr.c.unet) if recipe.position_aux else None
    trained = params + (list(probe.heads.parameters()) if probe is not None else [])
    opt = torch.optim.AdamW(trained, lr=tr.cfg["lr"], weight_decay=1e-2)
    resumed = bool(blob and blob["state"]["stage"] == stage and "opt" in blob)
    if resumed:
        opt.load_state_dict(blob["opt"])
        if probe is not None and "pos_heads" in blob:
            probe.heads.load_state_dict(blob["pos_heads"])
    ema = weights_ema(params, tr.cfg["ema_decay"], tr.state["step"], blob["ema"] if resumed else None)
    tr.heads = {"pos_heads": probe.heads if probe is not None else None}
    total = int(tr.state.get("total", tr.cfg[f"{stage}_steps"]))
    losses, t0, n_run, lr = _Losses(), time.time(), 0, 0.0
    while tr.state["step"] < total and not tr.out_of_time(deadline):
        step = tr.state["step"]
        loss = _step_loss(tr, stage, step, recipe, data, probe, losses)
        lr = learning_rate(tr.cfg["lr"], step, total, tr.cfg["warmup"])
        set_learning_rate(opt, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(params)
        tr.state["step"] += 1
        n_run += 1
        if tr.state["step"] % 50 == 0:
            tr.log(losses.line(stage, tr.state["step"], total, lr, (time.time() - t0) / n_run))
        if tr.state["step"] % 200 == 0:
            tr.save(opt, ema.shadow_params)
    if tr.state["step"] >= total:
        _finish(tr, stage, params, ema)
    else:
        tr.save(opt, ema.shadow_params)
    if probe is not None:
        probe.remove()
    tr.stop_training()
