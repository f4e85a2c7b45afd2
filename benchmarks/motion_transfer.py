"""Motion transfer on the toy model, and the paper's absorber ablation (issue: training).

For each bundled curved reference (default: circle), train the absorber of each kind
(none / S-LoRA / TI / both) and a T-LoRA, then generate the motion with prompts of
another color, shape and background over several seeds, and measure with the toy
measures: motion fidelity of generated vs reference tracks, prompt-color accuracy,
reference-color leakage, and diversity across seeds (start-position spread).

    python benchmarks/motion_transfer.py [--clip circle] [--seeds 16] [--absorbers none,lora,ti,both]
"""

from __future__ import annotations

import argparse
import time

from _common import evaluate as _evaluate
from _common import machine, toy_handle


def evaluate(handle, meta: dict, seeds: int, steps: int, cfg: float, init=None, blend: float = 1.0) -> dict:
    """The bundled clip's motion on the demo's new subjects, prompts naming the motion phrase."""
    from cav_core.demo import NEW_SUBJECTS

    def prompt(subject) -> str:
        return f"a {subject[0]} {subject[1]} {meta['motion_phrase']} on a {subject[2]} background"

    return _evaluate(handle, meta["centers"], NEW_SUBJECTS, prompt, meta["color"], seeds, steps, cfg, init, blend)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="circle")
    ap.add_argument("--seeds", type=int, default=16, help="samples per row; the 8 prompts repeat with new seeds")
    ap.add_argument("--absorbers", default="none,lora,ti,both")
    ap.add_argument("--steps", type=int, default=None, help="T-LoRA steps (default: the library default)")
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--init-blend", type=float, default=0.0,
                    help="also start from the reference's DDIM-inverted latents with this blend (0: off)")
    ap.add_argument("--model", help="model folder (default: the embedded toy model)")
    ap.add_argument("--every-step", action="store_true",
                    help="also sample each T-LoRA on every step, not only on the noise levels it trained on")
    ap.add_argument("--also-from", type=int, default=None, metavar="T",
                    help="also sample each T-LoRA applied only on steps from timestep T up (its min_timestep)")
    ap.add_argument("--both-branches", action="store_true",
                    help="also sample each T-LoRA in both guidance branches on every step it acts on (not on "
                         "the prompt's branch alone at high noise)")
    ap.add_argument("--without-recolor", action="store_true",
                    help="also train each T-LoRA on the clip alone, without its hue-rotated copies")
    args = ap.parse_args()

    from cav_core.data import load_video_clip
    from cav_core.demo import bundled_clip
    from cav_core.defaults import profile_for
    from cav_core.train import train_appearance_absorber, train_temporal_lora

    handle = toy_handle(args.model)
    defaults = profile_for(handle)
    video, meta = bundled_clip(args.clip)
    frames = load_video_clip(video, num_frames=16, fps=8, size=(32, 32))
    base = evaluate(handle, meta, args.seeds, args.sample_steps, args.cfg)
    rows = [("base model, no T-LoRA", base, 0.0, 0.0)]
    for kind in args.absorbers.split(","):
        t0 = time.time()
        absorber = None if kind == "none" else train_appearance_absorber(
            handle, frames, meta["captions"]["appearance"], kind=kind, seed=0)
        t1 = time.time()
        tlora = train_temporal_lora(handle, frames, meta["captions"]["full"], absorber=absorber, steps=args.steps,
                                    seed=0)
        t2 = time.time()
        rows.append((f"T-LoRA, absorber {kind}", evaluate(handle.with_lora(tlora.lora), meta, args.seeds,
                                                          args.sample_steps, args.cfg), t1 - t0, t2 - t1))
        if args.every_step:
            # the same T-LoRA also on the low-noise steps it never trained on
            rows.append(("  ...applied on every step", evaluate(handle.with_lora(tlora.lora, min_timestep=0), meta,
                                                               args.seeds, args.sample_steps, args.cfg), 0.0, 0.0))
        if args.also_from is not None:
            later = handle.with_lora(tlora.lora, min_timestep=args.also_from)
            rows.append((f"  ...only on t >= {args.also_from}", evaluate(later, meta, args.seeds, args.sample_steps,
                                                                          args.cfg), 0.0, 0.0))
        if args.both_branches:
            both = handle.with_lora(tlora.lora, cond_only_from=handle.base.num_train_timesteps)
            rows.append(("  ...in both branches", evaluate(both, meta, args.seeds, args.sample_steps, args.cfg),
                         0.0, 0.0))
        if args.without_recolor:
            t3 = time.time()
            plain = train_temporal_lora(handle, frames, meta["captions"]["full"], absorber=absorber,
                                        steps=args.steps, seed=0, recolor=False)
            rows.append(("  ...trained without recolor", evaluate(handle.with_lora(plain.lora), meta, args.seeds,
                                                                 args.sample_steps, args.cfg), 0.0,
                         time.time() - t3))

    if args.init_blend > 0:
        from cav_core.sample import invert_video

        inv = invert_video(handle, frames, meta["captions"]["full"], steps=args.sample_steps)
        rows.append((f"base + inversion {args.init_blend:g}",
                     evaluate(handle, meta, args.seeds, args.sample_steps, args.cfg, inv, args.init_blend), 0.0, 0.0))
        rows.append((f"T-LoRA ({kind}) + inversion {args.init_blend:g}",
                     evaluate(handle.with_lora(tlora.lora), meta, args.seeds, args.sample_steps, args.cfg, inv,
                              args.init_blend), 0.0, 0.0))

    print(f"motion transfer from bundled clip {args.clip!r} ({meta['captions']['full']!r}) to new subjects; "
          f"{args.seeds} seeds, ddim {args.sample_steps} steps, guidance {args.cfg}; T-LoRA "
          f"{args.steps or defaults['temporal.steps']} steps rank {defaults['temporal.rank']}; {machine()}")
    print(f"{'':28s} {'fidelity':>9s} {'(min)':>6s} {'color ok':>9s} {'ref-color leak':>15s} {'start spread':>13s}"
          f" {'absorber s':>11s} {'T-LoRA s':>9s}")
    for name, r, ta, tt in rows:
        print(f"{name:28s} {r['fidelity']:9.2f} {r['fid_min']:6.2f} {r['color']:9.0%} {r['leak']:15.0%}"
              f" {r['spread']:11.1f}px {ta:11.0f} {tt:9.0f}")
    print("goal: fidelity >= 0.80 averaged over >= 6 seeds (vs the base model), color ok >= 80%, "
          "T-LoRA training <= 180 s on 2 CPU cores")


if __name__ == "__main__":
    main()
