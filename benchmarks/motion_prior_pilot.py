"""Pilot for issue #29: would a base model with a curved-motion prior let a one-clip T-LoRA transfer?

The toy model v6 was pretrained on straight lines only. Before spending a 2-hour from-scratch
v7 on that hypothesis, this gives v6 a curved-motion prior cheaply and writes it as a model
folder, which ``benchmarks/suite_diagnosis.py --model DIR`` then measures on the dev half:

- ``N`` random constant-speed arcs (a quadratic Bezier with one bend, 14-30 px long, seeded).
  One bend at constant speed is a family the motion suite (``benchmarks/motion_suite.py``)
  does not hold: its curves loop, wave, reverse, pause or change speed. Every colour, shape
  and background, captioned in the motion-unnamed form the suite's prompts use;
- one temporal LoRA trained on all of them by the pack's one training loop
  (``train_temporal_lora`` with ``more_clips``: one clip drawn per step, every timestep, no
  recolor, since the clips already vary in colour);
- its ΔW folded into the toy UNet's weights (``switchable_loras(merge=True)``, the sampler's
  merge), and the UNet written next to a copy of the toy model's other parts.

Not a shipped model: a v7 would be pretrained from scratch (docs/TOY_MODEL.md). Result in
docs/EXPERIMENTS.md §10.

    python benchmarks/motion_prior_pilot.py --clips 240 --steps 2000 --out runs/prior_pilot
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import numpy as np

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import toy_handle


def arc(g: np.random.Generator, frames: int) -> np.ndarray:
    """(frames, 2) offsets of one arc at constant speed along it."""
    length = g.uniform(14, 30)
    th = g.uniform(0, 2 * math.pi)
    bend = g.uniform(0.25, 0.6) * length * g.choice([-1, 1])
    p1 = length * np.array([math.cos(th), math.sin(th)])
    ctrl = p1 / 2 + bend * np.array([-math.sin(th), math.cos(th)])
    u = np.linspace(0, 1, 400)[:, None]
    pts = 2 * u * (1 - u) * ctrl + u ** 2 * p1
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    at = np.linspace(0, s[-1], frames)
    return np.stack([np.interp(at, s, pts[:, 0]), np.interp(at, s, pts[:, 1])], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=240)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True, help="model folder to write (must not exist)")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"--out {args.out} exists; give a new folder")

    import torch

    from cav_core.adapters import switchable_loras
    from cav_core.errors import InputError
    from cav_core.toyworld import spec, toy_model_path
    from cav_core.toyworld.clips import _place, render_clip
    from cav_core.train import TrainClip, train_temporal_lora

    g = np.random.default_rng(args.seed)
    clips: list[TrainClip] = []
    while len(clips) < args.clips:
        try:
            centers = _place(g, arc(g, spec.NUM_FRAMES))
        except InputError:  # too long for the frame at this angle: draw another
            continue
        col, shp, bg = g.choice(list(spec.COLORS)), g.choice(spec.SHAPES), g.choice(list(spec.BACKGROUNDS))
        clips.append(TrainClip(torch.from_numpy(render_clip(col, shp, bg, centers)),
                               spec.motion_unnamed_caption(col, shp, bg)))
    handle = toy_handle()
    t0 = time.perf_counter()
    res = train_temporal_lora(handle, clips[0].frames, clips[0].caption, more_clips=clips[1:], steps=args.steps,
                              recolor=False, min_timestep=0, seed=0,
                              progress=lambda s, n, info: s % 250 == 0 and print(f"step {s}/{n}", flush=True))
    print(f"prior LoRA trained in {time.perf_counter() - t0:.0f} s")
    shutil.copytree(toy_model_path(), args.out)
    # The pack's one merge (strength x ΔW folded into the base weights, checked first); it
    # restores the weights on exit, so the loaded handle stays the toy model.
    with switchable_loras(handle.base.unet, [(res.lora, 1.0)], merge=True, names=["prior LoRA"]):
        handle.base.unet.save_pretrained(args.out / "unet")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
