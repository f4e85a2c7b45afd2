"""What snapshots cost on the toy model: a T-LoRA run of --steps steps without snapshots, with
snapshots every --every steps (files only), and with a validation prompt (each snapshot
sampled and scored with the motion score), on the bundled 'circle' clip; also the motion
score of each snapshot, to see how it moves over a run (docs/DESIGN.md §4, "Snapshots").

    python benchmarks/snapshots.py [--steps 200] [--every 50]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _common import machine, timer, toy_handle

FULL = "a red circle moving in a circle on a black background"
TARGET = "a green square moving in a circle on a gray background"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=50)
    args = ap.parse_args()
    from cav_core.data import load_video_clip
    from cav_core.toyworld import ASSETS_DIR
    from cav_core.train import train_temporal_lora

    torch.set_num_threads(1)
    handle = toy_handle()
    frames = load_video_clip(ASSETS_DIR / "circle.mp4", num_frames=16, fps=8.0, size=(32, 32))
    print(f"{machine()}; {args.steps} T-LoRA steps, snapshots every {args.every}")
    base: float | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw in (("no snapshots", {}),
                          ("snapshots, files only", {"snapshot_every": args.every}),
                          ("snapshots + validation", {"snapshot_every": args.every, "validation_prompt": TARGET})):
            shots: list = []
            t: list = []
            out = Path(tmp) / f"{len(label)}.safetensors"
            with timer(t):
                train_temporal_lora(handle, frames, FULL, steps=args.steps, seed=0, snapshot_to=out,
                                    on_snapshot=shots.append, **kw)
            base = base or t[0]
            print(f"  {label:<24} {t[0]:7.1f} s  ({t[0] / base:.2f}x)")
            for s in shots:
                if s.motion_score is not None:
                    print(f"    step {s.step:>5}: motion score {s.motion_score:+.3f}")


if __name__ == "__main__":
    main()
