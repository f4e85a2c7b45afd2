"""How far the split trainer (toyworld_training/) is from the one that trained v6
(cav_core/toyworld/train_toy.py, read from git history), on a tiny v6-shaped recipe:

  1. both trainers run the shipped recipe's options (cav_core/toyworld/model/training.json) at
     tiny sizes; the exported weights are compared;
  2. the same with the old trainer's hand-written EMA and SNR patched into the new one: any
     difference left is the split's, not diffusers';
  3. a checkpoint the old trainer wrote in the middle of a sitting (EMA, position heads) is
     resumed by both; the finished weights are compared.

    python benchmarks/trainer_equivalence.py            # ~2.5 min of CPU, 1 thread

Docs: docs/TOY_MODEL.md ("The trainer's code")."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path, quiet libraries)
import torch

OLD = ("9d0cda5", "cav_core/toyworld/train_toy.py")  # the last commit with the trainer inside cav_core
TINY = dict(vae_steps=2, vae_batch=4, n_clips=27, image_steps=30, image_batch=4, video_steps=30, video_batch=3,
            decoder_steps=2, warmup=5)
SITTINGS = [
    ("image", 30, dict(video_steps=30, text_pretrain=20, v_zero_snr=True, image_every=2, high_noise_weight=25.0,
                       position_aux=0.05)),
    ("terminal", 4, dict(opening_frames=4, freeze_text=True)),
    ("video", 30, dict(image_every=2, high_noise_weight=25.0, position_aux=0.05, freeze_text=True, still_rows=1)),
]


def old_trainer(tmp: Path):
    """The old module, its relative imports made absolute, loaded from ``git show``."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{OLD[0]}:{OLD[1]}"], cwd=root, check=True, capture_output=True,
                         text=True).stdout
    for a, b in (("from . import", "from cav_core.toyworld import"), ("from .clips", "from cav_core.toyworld.clips"),
                 ("from ..", "from cav_core.")):
        src = src.replace(a, b)
    (tmp / "old_train_toy.py").write_text(src)
    spec = importlib.util.spec_from_file_location("old_train_toy", tmp / "old_train_toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def hand_written() -> None:
    """Patch the old trainer's EMA and SNR into the new one."""
    import diffusers.training_utils as tu

    import toyworld_training.diffusion as diffusion

    class HandEMA:
        def __init__(self, params, decay, step=0, shadow=None):
            self.shadow_params = list(shadow) if shadow is not None else [p.detach().clone() for p in params]
            self.decay, self.at = decay, step

        def step(self, params):
            d = min(self.decay, (1 + self.at) / (10 + self.at))
            with torch.no_grad():
                torch._foreach_lerp_(self.shadow_params, [p.detach() for p in params], 1 - d)
            self.at += 1

        def copy_to(self, params):
            with torch.no_grad():
                for p, e in zip(params, self.shadow_params):
                    p.copy_(e)

    diffusion.weights_ema = HandEMA
    tu.compute_snr = lambda sched, t: (sched.alphas_cumprod / (1 - sched.alphas_cumprod))[t]


def recipe(trainer_cls, defaults: dict, work: Path) -> dict[str, torch.Tensor]:
    trainer_cls(work, dict(defaults, **TINY)).run(5)
    for stage, steps, opts in SITTINGS:
        t = trainer_cls(work, dict(defaults, **TINY))
        t.run(5, extend=(stage, steps), argv=[stage], **opts)
    return {**t.c.unet.state_dict(), **t.c.text_encoder.state_dict()}


def resume(trainer_cls, work: Path, cfg: dict) -> dict[str, torch.Tensor]:
    t = trainer_cls(work, dict(cfg))
    t.run(5)
    return t.c.unet.state_dict()


def gap(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def main() -> None:
    torch.set_num_threads(1)
    from toyworld_training.recipe import DEFAULTS
    from toyworld_training.trainer import Trainer

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        old = old_trainer(tmp)
        ref = recipe(old.Trainer, old.DEFAULTS, tmp / "old")
        new = recipe(Trainer, DEFAULTS, tmp / "new")
        # 3: an old checkpoint stopped in the middle of a video sitting.
        cfg = dict(old.DEFAULTS, **dict(TINY, image_steps=2, video_steps=2, decoder_steps=0))
        o = old.Trainer(tmp / "ckpt", dict(cfg))
        o.run(5)
        o = old.Trainer(tmp / "ckpt", dict(cfg))
        o._out_of_time = lambda deadline: o.state["step"] >= 5
        o.run(5, extend=("video", 10), argv=["x"], **SITTINGS[2][2], v_zero_snr=True)
        shutil.copytree(tmp / "ckpt", tmp / "ckpt_new")
        resumed_old, resumed_new = resume(old.Trainer, tmp / "ckpt", cfg), resume(Trainer, tmp / "ckpt_new", cfg)
        hand_written()
        split = recipe(Trainer, DEFAULTS, tmp / "hand")
    print(f"{_common.machine()}; weights up to {max(v.abs().max().item() for v in ref.values()):.2f}")
    print(f"1. recipe, new trainer vs old:                      max |diff| {gap(ref, new):.3g}")
    print(f"2. recipe, new with the old EMA and SNR vs old:     max |diff| {gap(ref, split):.3g}")
    print(f"3. old mid-sitting checkpoint resumed, new vs old:  max |diff| {gap(resumed_old, resumed_new):.3g}")


if __name__ == "__main__":
    sys.exit(main())
