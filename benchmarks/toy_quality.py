"""How well the pretrained toy model follows its prompts (issue: toy world).

Generates one sample per prompt over prompts spanning spec v1 (every color, shape,
direction incl. still, both backgrounds) and reads color, shape and direction back with
the toy measures; then checks seed diversity for a few prompts.

    python benchmarks/toy_quality.py [--samples 112] [--steps 25] [--cfg 7.5]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from _common import machine, toy_handle


def vae_ceiling(handle, n: int = 60) -> tuple[float, float, float]:
    """Color / shape accuracy and pixel error of clean spec clips after a VAE round trip:
    the most any sample can reach, since every sample is drawn by this decoder."""
    import torch

    from cav_core.codec import decode_latents, encode_frames
    from cav_core.toyworld import measures
    from cav_core.toyworld.clips import random_pretraining_clip

    rng = np.random.default_rng(5)
    color, shape, err = [], [], []
    for _ in range(n):
        clip = random_pretraining_clip(rng)
        with torch.no_grad():
            back = decode_latents(handle.base, encode_frames(handle.base, torch.from_numpy(clip.frames)))[0].numpy()
        truth, got = measures.describe_clip(clip.frames), measures.describe_clip(back)
        color.append(got["color"] == truth["color"])
        shape.append(got["shape"] == truth["shape"])
        err.append(np.abs(back - clip.frames).mean())
    return float(np.mean(color)), float(np.mean(shape)), float(np.mean(err))


def text_sensitivity(handle, steps: int = 25, n: int = 8) -> dict[str, float]:
    """How much the UNet's clean-video estimate at the first sampling step moves when one
    caption word changes, relative to its size (mean over ``n`` spec clips, noised to that
    step). A word the UNet ignores scores ~0, whatever the text encoder does with it."""
    import torch

    from cav_core.codec import encode_frames, text_embeddings
    from cav_core.sample import make_scheduler
    from cav_core.toyworld import spec
    from cav_core.toyworld.clips import straight_clip

    c = handle.base
    sched = make_scheduler("ddim", c.scheduler_config)
    sched.set_timesteps(steps)
    t = sched.timesteps[0]
    rng = np.random.default_rng(3)
    other = {"right": "left", "left": "right", "up": "down", "down": "up"}
    change: dict[str, list[float]] = {"direction": [], "direction -> still": [], "color": []}
    for i in range(n):
        direction = list(other)[i % 4]
        color, swap = rng.choice(list(spec.COLORS), 2, replace=False)
        clip = straight_clip(str(color), "circle", "gray", direction, "fast", rng=i)
        z = encode_frames(c, torch.from_numpy(clip.frames))
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(i))
        xt = sched.add_noise(z, noise, t[None])
        prompts = {"ref": spec.full_caption(str(color), "circle", direction, "gray"),
                   "direction": spec.full_caption(str(color), "circle", other[direction], "gray"),
                   "direction -> still": spec.full_caption(str(color), "circle", "still", "gray"),
                   "color": spec.full_caption(str(swap), "circle", direction, "gray")}
        with torch.no_grad():
            eps = c.unet(xt.repeat(4, 1, 1, 1, 1), t, encoder_hidden_states=text_embeddings(handle, list(prompts.values()))).sample
        x0 = [sched.step(e[None], t, xt).pred_original_sample for e in eps]
        for k, x in zip(list(prompts)[1:], x0[1:]):
            change[k].append(float((x - x0[0]).norm() / x0[0].norm()))
    return {k: float(np.mean(v)) for k, v in change.items()}


def sign_source(handle, steps: int, cfg: float, seeds: range = range(6)) -> tuple[str, str]:
    """Who picks which way along an axis, the words or the start noise? (a) The same seed
    with opposite words (left/right, up/down): in how many pairs do the two clips move
    opposite ways? (b) The same prompt with the start noise reversed along the frames: in
    how many does the motion reverse? Words in charge: (a) all, (b) none."""
    from cav_core.sample import generate, latent_size, seed_noise
    from cav_core.toyworld import measures, spec

    def displacement(prompt: str, seed: int, axis: int, noise=None) -> float:
        kw = {"init_latents": noise[None], "init_blend": 1.0} if noise is not None else {}
        v = generate(handle, prompt, steps=steps, guidance_scale=cfg, seed=seed, **kw)[0].numpy()
        tr = measures.centroid_track(v)
        ok = np.isfinite(tr).all(axis=1)
        return float(tr[ok][-1, axis] - tr[ok][0, axis]) if ok.sum() >= 2 else 0.0

    opposite = reversed_ = n = 0
    c = handle.base
    shape = (c.latent_channels, spec.NUM_FRAMES, *latent_size(c, None, None)[2:])
    for seed in seeds:
        for axis, (a, b) in enumerate((("right", "left"), ("down", "up"))):
            pa = spec.full_caption("red", "circle", a, "black")
            da, db = displacement(pa, seed, axis), displacement(spec.full_caption("red", "circle", b, "black"), seed, axis)
            opposite += da * db < 0
            reversed_ += da * displacement(pa, seed, axis, seed_noise(seed, shape).flip(1)) < 0
            n += 1
    return f"{opposite}/{n}", f"{reversed_}/{n}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=112)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--scheduler", default="ddim")
    ap.add_argument("--model", help="model folder (default: the embedded toy model)")
    args = ap.parse_args()

    from cav_core.sample import generate
    from cav_core.toyworld import measures, spec

    handle = toy_handle(args.model)
    c, sh, e = vae_ceiling(handle)
    print(f"VAE round trip of 60 clean spec clips (the ceiling for samples): color {c:.1%}, shape {sh:.1%}, "
          f"mean abs pixel error {e:.3f}")
    combos = list(itertools.product(spec.COLORS, spec.SHAPES, spec.DIRECTIONS, spec.BACKGROUNDS))
    rng = np.random.default_rng(0)
    # A balanced spread: every direction and color appears about equally often.
    order = rng.permutation(len(combos))
    picked = [combos[i] for i in order[: args.samples]]
    hits = {"color": [], "shape": [], "direction": [], "still": []}
    per_direction: dict[str, list[bool]] = {}
    shape_read: dict[str, list[str]] = {}  # prompted shape -> the shapes measured
    t0 = time.time()
    for i, (color, shape, direction, bg) in enumerate(picked):
        prompt = spec.full_caption(color, shape, direction, bg)
        frames = generate(handle, prompt, steps=args.steps, guidance_scale=args.cfg, seed=1000 + i,
                          scheduler=args.scheduler)[0].numpy()
        d = measures.describe_clip(frames)
        hits["color"].append(d["color"] == color)
        hits["shape"].append(d["shape"] == shape)
        moved = measures.motion_direction(d["track"])
        ok = moved == direction
        (hits["still"] if direction == "still" else hits["direction"]).append(ok)
        per_direction.setdefault(direction, []).append(ok)
        shape_read.setdefault(str(shape), []).append(str(d["shape"]))
    took = time.time() - t0

    print(f"toy model prompt following: {len(picked)} samples, {args.scheduler} {args.steps} steps, "
          f"guidance {args.cfg}, one seed per prompt ({machine()}, {took:.0f} s)")
    print(f"  color matches the prompt      {np.mean(hits['color']):6.1%}   (goal >= 90%)")
    print(f"  shape matches the prompt      {np.mean(hits['shape']):6.1%}   (goal >= 70%)")
    print(f"  named direction of motion     {np.mean(hits['direction']):6.1%}   (goal >= 80%, {len(hits['direction'])} moving prompts)")
    print(f"  'still' prompts stay still    {np.mean(hits['still']):6.1%}   ({len(hits['still'])} prompts)")
    print("  per direction: " + ", ".join(f"{k} {np.mean(v):.0%}" for k, v in sorted(per_direction.items())))
    # Which shape a miss was read as: the weak pair is where the model (or the measure) needs work.
    print("  shape prompted -> read: " + "; ".join(
        f"{k} ({len(v)}): " + ", ".join(f"{r} {v.count(r)}" for r in sorted(set(v)))
        for k, v in sorted(shape_read.items())))

    sens = text_sensitivity(handle, args.steps)
    print("  the UNet's clean-video estimate at the first step changes by "
          + ", ".join(f"{v:.1%} ({k} word)" for k, v in sens.items()) + " of its norm")

    # Does the text or the start noise decide the motion? One seed, every direction word.
    for seed in (11, 12):
        got = []
        for direction in spec.DIRECTIONS:
            v = generate(handle, spec.full_caption("red", "square", direction, "black"), steps=args.steps,
                         guidance_scale=args.cfg, seed=seed)[0].numpy()
            got.append(measures.motion_direction(measures.centroid_track(v)))
        print(f"  seed {seed}, the {len(got)} direction words -> measured {', '.join(got)}")

    words, noise = sign_source(handle, args.steps, args.cfg)
    print(f"  same seed, opposite direction words -> opposite motion in {words} pairs; "
          f"start noise reversed in time -> motion reversed in {noise} (the words should decide: all / none)")

    # Diversity: the same prompt with different seeds starts elsewhere and moves differently.
    starts, speeds = [], []
    for prompt in ("a red circle moving right on a black background", "a green square moving down on a gray background"):
        videos = generate(handle, prompt, steps=args.steps, guidance_scale=args.cfg, seed=7, batch_size=6)
        for v in videos.numpy():
            tr = measures.centroid_track(v)
            ok = np.isfinite(tr).all(axis=1)
            if ok.sum() >= 2:
                starts.append(tr[ok][0])
                speeds.append(float(np.linalg.norm(tr[ok][-1] - tr[ok][0]) / (np.flatnonzero(ok)[-1] - np.flatnonzero(ok)[0])))
    starts = np.asarray(starts)
    print(f"  seed diversity (2 prompts x 6 seeds): start position spread {starts.std(axis=0).mean():.1f} px, "
          f"speed {np.min(speeds):.2f}..{np.max(speeds):.2f} px/frame")


if __name__ == "__main__":
    main()
