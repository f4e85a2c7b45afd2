"""When things happen in a sitting: the random stream of each step, the learning rate over
the sitting, and the EMA of the weights."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .recipe import STAGES

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel


def step_rng(seed: int, stage: str, step: int, sitting: int = 0) -> np.random.Generator:
    """The numpy stream of one step: it derives from (seed, stage, step), so a resumed run
    draws exactly what an uninterrupted one would."""
    # Sitting 0 keeps the original stream; an extension (--extend-video) draws fresh batches.
    key = [seed, STAGES.index(stage), step] + ([sitting] if sitting else [])
    return np.random.default_rng(key)


def learning_rate(base: float, step: int, total: int, warmup: int = 1) -> float:
    """``base`` warmed up linearly over ``warmup`` steps, times a half cosine over the whole
    sitting that ends at 10% of ``base`` rather than 0.

    Kept hand-written: diffusers' ``get_cosine_schedule_with_warmup`` starts its cosine
    after the warm-up, decays to 0 and warms up from 0/warmup; the exact relation is checked
    in tests/test_toyworld_training.py, and the v6 sittings were trained with this one."""
    lr = base * min(1.0, (step + 1) / warmup)
    return lr * (0.5 * (1 + math.cos(math.pi * min(1.0, step / total))) * 0.9 + 0.1)


def set_learning_rate(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def weights_ema(params: Iterable[torch.nn.Parameter], decay: float, step: int = 0,
                shadow: Sequence[torch.Tensor] | None = None) -> EMAModel:
    """diffusers' ``EMAModel`` over ``params`` at sitting step ``step``: its decay at a step s
    is min(decay, (1 + s) / (10 + s)), as this trainer's was. ``shadow`` (a checkpoint's
    "ema" list) resumes it; the optimization step is the sitting's step, so it is not stored.

    One documented difference from the hand-written EMA that trained v6: at step 0 diffusers
    copies the weights (decay 0) where that one kept 10% of the starting weights. That share
    is multiplied by every later decay and is below float32 resolution after ~30 steps
    (tests/test_toyworld_training.py checks both); every v6 diffusion sitting ran >= 800."""
    from diffusers.training_utils import EMAModel

    ema = EMAModel(list(params), decay=decay, foreach=True)
    if shadow is not None:
        ema.shadow_params = list(shadow)
    ema.optimization_step = step
    return ema
