"""One motion from one clip or from three (issue 29, "options a peer has"), on the motion suite.

For each motion named (dev half by default: nothing here may tune on the test half), the T-LoRA
is trained at the toy defaults (no absorber, as the CLI trains without one) on

- ``1 clip``: the suite's reference clip of the motion;
- ``3 clips``: the same path rendered in that look and two more colours/shapes/backgrounds
  (``more_clips``, one clip drawn per step),

and sampled on the suite's new-subject prompts (names no motion), seeds 100.. , with
``_common.evaluate``: motion fidelity against the true track, prompt colour, and leak. Leak is
given twice: of the first clip's colour (the only reference of the 1-clip run, so comparable),
and of any training clip's colour (a sample in a training colour the prompt did not ask for).

    python benchmarks/multiclip.py --motions ellipse_wide,spiral_out --seeds 8 --json out.json

``--views off`` trains without the toy's extra views (recolor, white tint, rebackground), as the
real-model profile does (``cav_core/defaults.py``): there the only other looks a T-LoRA can see
are the user's other clips, so that is where a leak that more clips could cut would show.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import motion_suite as suite
from _common import evaluate, machine, toy_handle, write_json

#: The two extra looks of the 3-clip run, per motion: colours, shapes and backgrounds other than
#: the reference's (white and gray included across the suite), fixed before any run.
EXTRA_LOOKS: list[tuple[str, str, str]] = [("green", "square", "gray"), ("yellow", "triangle", "black"),
                                           ("magenta", "circle", "gray"), ("white", "square", "gray")]


def looks_for(motion: suite.Motion) -> list[tuple[str, str, str]]:
    """Two extra looks that differ from the reference in colour and shape."""
    return [lk for lk in EXTRA_LOOKS if lk[0] != motion.color and lk[1] != motion.shape][:2]


def clips_of(motion: suite.Motion, n: int) -> list[tuple]:
    """(frames, caption, colour) of the motion's reference and ``n - 1`` more looks of its path."""
    import torch

    from cav_core.toyworld import spec
    from cav_core.toyworld.clips import render_clip

    out = [(torch.from_numpy(motion.frames()), motion.caption, motion.color)]
    for color, shape, bg in looks_for(motion)[: n - 1]:
        frames = render_clip(color, shape, bg, motion.centers())
        caption = (spec.motion_unnamed_caption(color, shape, bg) if motion.phrase is None
                   else f"a {color} {shape} {motion.phrase} on a {bg} background")
        out.append((torch.from_numpy(frames), caption, color))
    return out


def run(args: argparse.Namespace) -> dict:
    import cav_core.sample as sample_mod
    from cav_core.toyworld import measures
    from cav_core.train import TrainClip, train_temporal_lora

    handle = toy_handle()
    out: dict = {"settings": {"motions": args.motions, "seeds": args.seeds, "sample_seeds": [100, 100 + args.seeds - 1],
                              "train_seed": 0, "steps": args.steps, "machine": machine(),
                              "defaults": "toy profile, no absorber", "views": args.views}, "cells": {}}
    views = {} if args.views == "default" else dict(recolor=False, tint_white=False, rebackground=False)
    colours: list = []
    real_generate = sample_mod.generate

    def recording(*a, **k):  # the colour of every sample evaluate() draws, for the any-clip leak
        v = real_generate(*a, **k)
        colours.append(measures.object_color(v[0].numpy()))
        return v

    for name in args.motions.split(","):
        motion = suite.BY_NAME[name]
        subjects = suite.prompts_for(motion, args.seeds)
        for n in (1, 3):
            clips = clips_of(motion, n)
            t = time.perf_counter()
            lora = train_temporal_lora(handle, clips[0][0], clips[0][1], steps=args.steps, seed=0,
                                       more_clips=[TrainClip(f, c) for f, c, _ in clips[1:]], **views).lora
            train_s = time.perf_counter() - t
            colours.clear()
            sample_mod.generate = recording
            try:
                cell = evaluate(handle.with_lora(lora), motion.centers(), subjects, suite.prompt_text, motion.color,
                                args.seeds)
            finally:
                sample_mod.generate = real_generate
            trained = {c for _, _, c in clips}
            asked = [subjects[i % len(subjects)][0] for i in range(args.seeds)]
            cell["leak_any"] = sum(g in trained and g != p for g, p in zip(colours, asked)) / args.seeds
            cell.update(train_s=train_s, clips=[c for _, c, _ in clips])
            out["cells"][f"{name}|{n}"] = cell
            print(f"{motion.split} {name:18s} {n} clip(s): fidelity {cell['fidelity']:5.2f} (worst "
                  f"{cell['fid_min']:5.2f}) colour {cell['color']:4.0%} leak {cell['leak']:4.0%} (any clip "
                  f"{cell['leak_any']:4.0%}) variety {cell['variety']:.3f} train {train_s:4.0f}s", flush=True)
            if args.json:
                write_json(args.json, out)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--motions", default="ellipse_wide,spiral_out", help="suite motions (default: two dev ones)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="T-LoRA steps (default: the toy's)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--views", choices=("default", "off"), default="default",
                    help="off: no recolor, white tint or rebackground views (as on real models)")
    ap.add_argument("--quick", action="store_true", help="CI size: one motion, 2 seeds, 20 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.motions, args.seeds, args.steps = args.motions.split(",")[0], 2, 20
    return run(args)


if __name__ == "__main__":
    main()
