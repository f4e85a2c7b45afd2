"""The experiments behind the training defaults (issue: training): T-LoRA steps x learning
rate x lowest training timestep (on top of one absorber), and the Stage-1 patch-crop range,
on the toy model with one bundled clip.

Each T-LoRA setting is trained on the clip and sampled with new subjects over several
seeds (benchmarks/motion_transfer.py's evaluation): motion fidelity to the reference and
prompt-color accuracy. Each crop range trains an S-LoRA absorber, then a T-LoRA on top,
and reports reference-color leakage and prompt-color accuracy.

    python benchmarks/defaults_sweep.py [--clip circle] [--seeds 8] [--absorber ti] [--steps 600,1000]
        [--lrs 2e-3,3e-3] [--min-timesteps 0,300,500] [--crops 0.3-1.0,0.5-1.0,0.8-1.0 | --crops none]
"""

from __future__ import annotations

import argparse
import time

from _common import machine, toy_handle
from motion_transfer import evaluate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="circle")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--absorber", choices=("none", "lora", "ti", "both"), default="ti",
                    help="absorber the T-LoRA settings train on top of (trained once)")
    ap.add_argument("--steps", default="600,1000")
    ap.add_argument("--lrs", default="2e-3,3e-3")
    ap.add_argument("--min-timesteps", default="0,300,500")
    ap.add_argument("--crops", default="0.3-1.0,0.5-1.0,0.8-1.0", help="'none' skips the crop sweep")
    ap.add_argument("--model", help="model folder (default: the embedded toy model)")
    args = ap.parse_args()

    from cav_core.data import load_video_clip
    from cav_core.demo import bundled_clip
    from cav_core.train import train_appearance_absorber, train_temporal_lora

    handle = toy_handle(args.model)
    video, meta = bundled_clip(args.clip)
    frames = load_video_clip(video, num_frames=16, fps=8, size=(32, 32))
    print(f"defaults sweep on bundled clip {args.clip!r}, {args.seeds} seeds, ddim 25 steps, guidance 7.5; {machine()}")
    base = evaluate(handle, meta, args.seeds, 25, 7.5)
    print(f"  base model (no T-LoRA): fidelity {base['fidelity']:.2f}, color ok {base['color']:.0%}")
    absorber = None if args.absorber == "none" else train_appearance_absorber(
        handle, frames, meta["captions"]["appearance"], kind=args.absorber, seed=0)
    print(f"  T-LoRA on absorber {args.absorber}")
    print(f"  {'T-LoRA steps':>12s} {'lr':>7s} {'min t':>6s} {'fidelity':>9s} {'(min)':>6s} {'color ok':>9s} "
          f"{'final loss':>11s} {'train s':>8s}")
    for steps in (int(s) for s in args.steps.split(",")):
        for lr in (float(x) for x in args.lrs.split(",")):
            for t_min in (int(x) for x in args.min_timesteps.split(",")):
                t0 = time.time()
                tl = train_temporal_lora(handle, frames, meta["captions"]["full"], absorber=absorber, steps=steps,
                                         lr=lr, min_timestep=t_min, seed=0)
                took = time.time() - t0
                r = evaluate(handle.with_lora(tl.lora), meta, args.seeds, 25, 7.5)
                print(f"  {steps:12d} {lr:7.0e} {t_min:6d} {r['fidelity']:9.2f} {r['fid_min']:6.2f} {r['color']:9.0%} "
                      f"{tl.info['final_loss']:11.4f} {took:8.0f}", flush=True)
    if args.crops == "none":
        return
    print(f"  {'crop range':>12s} {'fidelity':>9s} {'color ok':>9s} {'ref-color leak':>15s}")
    for crop in args.crops.split(","):
        lo, hi = (float(x) for x in crop.split("-"))
        ab = train_appearance_absorber(handle, frames, meta["captions"]["appearance"], kind="lora",
                                       crop_range=(lo, hi), seed=0)
        tl = train_temporal_lora(handle, frames, meta["captions"]["full"], absorber=ab, seed=0)
        r = evaluate(handle.with_lora(tl.lora), meta, args.seeds, 25, 7.5)
        print(f"  {crop:>12s} {r['fidelity']:9.2f} {r['color']:9.0%} {r['leak']:15.0%}", flush=True)


if __name__ == "__main__":
    main()
