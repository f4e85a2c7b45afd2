"""Validation of the model-free motion score (cav_core.metrics.motion_similarity, issue #31).

Two checks, printed as figures (``tests/test_metrics.py`` asserts them at a small size):

1. Toy world: does the score rank clips the way the toy world's ground-truth judge does?
   References are the bundled clips (decoded from their mp4, as benchmarks/motion_transfer.py
   loads them). Candidates are (a) clips rendered with cav_core/toyworld/clips.py: every
   held-out path at random placements, straight moves, still clips, the reference's path
   reversed, mirrored, time-shifted, jittered and blended with another path, each with a
   random color, shape, background, object size and pixel noise (``NOISE``); and (b) with ``--base-samples N``,
   videos the toy model generates without a T-LoRA (prompts naming the reference's motion
   and others, new subjects, seeds 100...), like the benchmark's "base model" row, and (c)
   with ``--tlora CLIP``, as many videos from a T-LoRA trained on that clip. For
   every (reference, candidate) pair: the centroid-track motion fidelity
   (cav_core.toyworld.measures.motion_fidelity vs the reference's true track) and the
   score; reported is their Spearman rank correlation (goal >= 0.8).
2. Camera motion: clips cut from random blurred-noise textures by a moving window (pans in
   four directions, zoom in/out, rotation both ways, a pan that turns back). Same motion on
   another texture (and another frame size and count) should score >= 0.8; two different
   motions <= 0.3. Texture B's clips carry 1% pixel noise.

    python benchmarks/motion_score.py [--per-ref 40] [--base-samples 6] [--sample-steps 25] [--tlora circle]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

REFERENCES = ("circle", "zigzag", "bounce")
NOISE = (0.0, 0.0, 0.01, 0.02)
"""Pixel noise (std, 0..1 scale) of the rendered candidates, drawn per clip: half are clean."""
CAMERA_MOTIONS = ("pan_right", "pan_left", "pan_down", "pan_up", "zoom_in", "zoom_out", "rotate_cw",
                  "rotate_ccw", "pan_right_and_back")


# --------------------------------------------------------------------------- toy world


def _fit(offsets: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """Place a path (offsets) at a random position where an object of ``size`` stays inside
    the 32 px frame; shrink the path about its middle first if it is too wide to fit."""
    from cav_core.toyworld.spec import SIZE

    lo_c, hi_c = size / 2.0, SIZE - 1 - size / 2.0
    span = offsets.max(axis=0) - offsets.min(axis=0)
    room = hi_c - lo_c
    if np.any(span > room):
        offsets = offsets * float(np.min(room / np.maximum(span, 1e-9)))
    lo, hi = offsets.min(axis=0), offsets.max(axis=0)
    shift = np.array([rng.uniform(lo_c - a, max(lo_c - a, hi_c - b)) for a, b in zip(lo, hi)])
    return offsets + shift[None, :]


def _random_path(rng: np.random.Generator) -> np.ndarray:
    """Offsets of a random other motion: a held-out path or a straight move."""
    from cav_core.toyworld import clips
    from cav_core.toyworld.spec import DIRECTIONS, MOVING_DIRECTIONS, SPEEDS

    if rng.random() < 0.5:
        kind = str(rng.choice(list(clips.CURVED_PATHS)))
        return clips.CURVED_PATHS[kind](rng)
    d = np.asarray(DIRECTIONS[str(rng.choice(MOVING_DIRECTIONS))]) * SPEEDS[str(rng.choice(list(SPEEDS)))]
    return np.arange(16, dtype=np.float64)[:, None] * d[None, :]


def candidate_paths(ref: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """``n`` (label, offsets) candidate paths against the reference path ``ref`` (F, 2),
    cycling over transformations that give fidelities from -1 to 1."""
    from cav_core.toyworld import clips

    d = np.diff(ref, axis=0)
    makers = [
        ("same path", lambda: ref),
        ("other path", lambda: _random_path(rng)),
        ("reversed", lambda: ref[::-1]),
        ("blend 0.75", lambda: 0.75 * ref + 0.25 * _random_path(rng)),
        ("jitter 0.4", lambda: ref + np.cumsum(rng.normal(0, 0.4, ref.shape), axis=0)),
        ("mirrored x", lambda: ref * np.array([-1.0, 1.0])),
        ("blend 0.5", lambda: 0.5 * ref + 0.5 * _random_path(rng)),
        ("time shift", lambda: np.concatenate([[0 * d[0]], np.cumsum(np.roll(d, int(rng.integers(1, 5)), axis=0),
                                                                    axis=0)])),
        ("jitter 1.2", lambda: ref + np.cumsum(rng.normal(0, 1.2, ref.shape), axis=0)),
        ("blend 0.25", lambda: 0.25 * ref + 0.75 * _random_path(rng)),
        ("still", lambda: np.zeros_like(ref)),
        ("held-out path", lambda: clips.CURVED_PATHS[str(rng.choice(list(clips.CURVED_PATHS)))](rng)),
        ("mirrored y", lambda: ref * np.array([1.0, -1.0])),
    ]
    return [(makers[i % len(makers)][0], np.asarray(makers[i % len(makers)][1](), dtype=np.float64))
            for i in range(n)]


@dataclass
class Pair:
    reference: str
    label: str
    fidelity: float
    score: float


def reference(name: str):
    """(frames, true track) of a bundled reference, loaded as motion_transfer.py loads it."""
    from cav_core.data import load_video_clip
    from cav_core.demo import bundled_clip

    video, meta = bundled_clip(name)
    frames = load_video_clip(video, num_frames=16, fps=8, size=(32, 32)).numpy()
    return frames, np.asarray(meta["centers"], dtype=np.float64)


def rendered_pairs(refs: tuple[str, ...], per_ref: int, seed: int = 0) -> list[Pair]:
    """Pairs of bundled references and rendered toy clips (see the module docstring)."""
    from cav_core.metrics import motion_similarity
    from cav_core.toyworld import measures
    from cav_core.toyworld.clips import render_clip
    from cav_core.toyworld.spec import BACKGROUNDS, COLORS, SHAPES

    rng = np.random.default_rng(seed)
    pairs = []
    for name in refs:
        frames, track = reference(name)
        for label, offsets in candidate_paths(track - track[0], per_ref, rng):
            size = float(rng.uniform(6.0, 13.0))
            bg = str(rng.choice(list(BACKGROUNDS)))
            color = str(rng.choice([c for c in COLORS if not (bg == "black" and c == "black")]))
            clip = render_clip(color, str(rng.choice(SHAPES)), bg, _fit(offsets, size, rng), object_size=size)
            noise = float(rng.choice(NOISE))
            if noise:
                clip = np.clip(clip + rng.normal(0.0, noise, clip.shape), 0.0, 1.0).astype(np.float32)
            fid = measures.motion_fidelity(measures.centroid_track(clip), track)
            pairs.append(Pair(name, label, fid, motion_similarity(frames, clip)))
    return pairs


def base_model_pairs(refs: tuple[str, ...], samples: int, steps: int) -> list[Pair]:
    """Each of ``samples`` toy-model videos (no T-LoRA) against every reference."""
    from cav_core.toyworld.spec import CURVED_MOTIONS

    from _common import toy_handle

    handle = toy_handle()
    phrases = [CURVED_MOTIONS[r] for r in refs] + ["moving left", "moving down-right", "moving up"]
    loaded = {name: reference(name) for name in refs}
    return _sampled_pairs(handle, lambda i: phrases[i % len(phrases)], samples, steps, loaded, "base model")


def _sampled_pairs(handle, phrase, samples: int, steps: int, loaded: dict, label: str) -> list[Pair]:
    """Sample ``samples`` new-subject prompts (``phrase(i)`` their motion words, seeds 100..)
    and score each video against every loaded reference, by track fidelity and by the score."""
    from cav_core.demo import NEW_SUBJECTS
    from cav_core.metrics import motion_similarity
    from cav_core.sample import generate
    from cav_core.toyworld import measures

    pairs = []
    for i in range(samples):
        color, shape, bg = NEW_SUBJECTS[i % len(NEW_SUBJECTS)]
        prompt = f"a {color} {shape} {phrase(i)} on a {bg} background"
        video = generate(handle, prompt, steps=steps, seed=100 + i)[0].numpy()
        tr = measures.centroid_track(video)
        for name, (frames, track) in loaded.items():
            pairs.append(Pair(name, f"{label}: {prompt}", measures.motion_fidelity(tr, track),
                              motion_similarity(frames, video)))
    return pairs


def tlora_pairs(name: str, samples: int, steps: int, train_steps: int | None) -> list[Pair]:
    """Videos from the toy model with a T-LoRA trained on reference ``name`` (no absorber,
    seed 0, as benchmarks/motion_transfer.py's "absorber none" row), new subjects, against
    every reference."""
    from _common import toy_handle

    from cav_core.data import load_video_clip
    from cav_core.demo import bundled_clip
    from cav_core.train import train_temporal_lora

    handle = toy_handle()
    video, meta = bundled_clip(name)
    frames = load_video_clip(video, num_frames=16, fps=8, size=(32, 32))
    tlora = train_temporal_lora(handle, frames, meta["captions"]["full"], steps=train_steps, seed=0)
    with_lora = handle.with_lora(tlora.lora)
    loaded = {r: reference(r) for r in REFERENCES}
    return _sampled_pairs(with_lora, lambda i: meta["motion_phrase"], samples, steps, loaded, f"T-LoRA({name})")


def spearman(pairs: list[Pair]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr([p.fidelity for p in pairs], [p.score for p in pairs]).statistic)


# --------------------------------------------------------------------------- camera motion


def texture(rng: np.random.Generator, side: int = 320) -> np.ndarray:
    """A random color texture: uniform noise blurred at a random scale, contrast stretched."""
    import cv2

    sigma = float(rng.uniform(2.0, 5.0))
    t = cv2.GaussianBlur(rng.random((side, side, 3)).astype(np.float32), (0, 0), sigma)
    t = (t - t.min(axis=(0, 1))) / np.maximum(t.max(axis=(0, 1)) - t.min(axis=(0, 1)), 1e-6)
    return t * rng.uniform(0.5, 1.0, 3).astype(np.float32)


def camera_clip(motion: str, tex: np.ndarray, frames: int = 16, size: tuple[int, int] = (64, 64),
                speed: float = 1.0) -> np.ndarray:
    """(F, H, W, 3) float32 clip of ``tex`` seen through a camera doing ``motion``.

    Per frame the window's center, scale and angle change by a fixed step (pans 1.5 px, zooms
    2%, rotations 1.5 degrees per frame, times ``speed``); ``pan_right_and_back`` pans right
    for half the clip and back."""
    import cv2

    h, w = size
    c = np.array([tex.shape[1] / 2.0, tex.shape[0] / 2.0])
    step = {"pan_right": (1, 0), "pan_left": (-1, 0), "pan_down": (0, 1), "pan_up": (0, -1)}
    out = np.empty((frames, h, w, 3), dtype=np.float32)
    for t in range(frames):
        k = t * speed
        shift, scale, angle = np.zeros(2), 1.0, 0.0
        if motion in step:
            shift = 1.5 * k * np.asarray(step[motion], dtype=np.float64)
        elif motion == "pan_right_and_back":
            half = (frames - 1) / 2.0 * speed
            shift = np.array([1.5 * (half - abs(half - k)), 0.0])
        elif motion in ("zoom_in", "zoom_out"):
            scale = 0.98 ** k if motion == "zoom_in" else 1.02 ** k  # window size: smaller = zoom in
        elif motion in ("rotate_cw", "rotate_ccw"):
            angle = math.radians(1.5 * k) * (1 if motion == "rotate_cw" else -1)
        else:
            raise ValueError(f"unknown camera motion {motion!r}")
        # output pixel p -> texture point c + shift + scale * R(angle) (p - output center)
        cos, sin = scale * math.cos(angle), scale * math.sin(angle)
        oc = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        m = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
        m[:, 2] = c + shift - m[:, :2] @ oc
        out[t] = cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
    return out


def camera_scores(seed: int = 0, motions: tuple[str, ...] = CAMERA_MOTIONS) -> tuple[list[float], list[float]]:
    """(same-motion scores, different-motion scores). Same: each motion on texture A at
    64x64 / 16 frames vs on texture B at 48x80 / 12 frames, 1.2x the speed and 1% noise. Different:
    every ordered pair of distinct motions, on textures A and B."""
    from cav_core.metrics import motion_similarity

    rng = np.random.default_rng(seed)
    tex_a, tex_b = texture(rng), texture(rng)
    a = {m: camera_clip(m, tex_a) for m in motions}
    b = {m: camera_clip(m, tex_b, frames=12, size=(48, 80), speed=1.2) for m in motions}
    b = {m: np.clip(v + rng.normal(0.0, 0.01, v.shape), 0.0, 1.0).astype(np.float32) for m, v in b.items()}
    same = [motion_similarity(a[m], b[m]) for m in motions]
    diff = [motion_similarity(a[m], b[n]) for m in motions for n in motions if m != n]
    return same, diff


# --------------------------------------------------------------------------- report


def validate(per_ref: int, base_samples: int = 0, sample_steps: int = 25, refs: tuple[str, ...] = REFERENCES,
             camera_motions: tuple[str, ...] = CAMERA_MOTIONS, seed: int = 0) -> dict:
    """The figures this script prints, as a dict (the test calls it at a small size)."""
    pairs = rendered_pairs(refs, per_ref, seed)
    if base_samples:
        pairs += base_model_pairs(refs, base_samples, sample_steps)
    same, diff = camera_scores(seed, camera_motions)
    return {"pairs": pairs, "spearman": spearman(pairs), "same": same, "diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-ref", type=int, default=40, help="rendered candidates per bundled reference")
    ap.add_argument("--base-samples", type=int, default=6,
                    help="toy-model videos (no T-LoRA) compared with every reference (0: none; each costs one "
                         "sampling run)")
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--tlora", default="", metavar="CLIP",
                    help="also train a T-LoRA on this bundled clip and compare its --base-samples videos with "
                         "every reference (slow: one training run)")
    ap.add_argument("--tlora-steps", type=int, default=None, help="T-LoRA steps (default: the library default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="print every pair")
    args = ap.parse_args()

    import cv2
    from _common import machine  # sets up quiet libraries; imported here, not when tests import this file

    cv2.setNumThreads(1)
    t0 = time.time()
    r = validate(args.per_ref, args.base_samples, args.sample_steps, seed=args.seed)
    if args.tlora:
        r["pairs"] += tlora_pairs(args.tlora, max(args.base_samples, 1), args.sample_steps, args.tlora_steps)
        r["spearman"] = spearman(r["pairs"])
    pairs = r["pairs"]
    if args.verbose:
        for p in pairs:
            print(f"{p.reference:7s} fidelity {p.fidelity:+.2f} score {p.score:+.2f}  {p.label}")
    rendered = [p for p in pairs if not p.label.startswith(("base model", "T-LoRA"))]
    base = [p for p in pairs if p.label.startswith("base model")]
    tl = [p for p in pairs if p.label.startswith("T-LoRA")]
    fid = np.asarray([p.fidelity for p in pairs])
    print(f"motion score validation ({time.time() - t0:.0f} s; {machine()})")
    print(f"toy world: {len(pairs)} pairs ({len(rendered)} rendered clips, {len(base)} base-model and {len(tl)} "
          f"T-LoRA sample x reference pairs) against {', '.join(REFERENCES)}; fidelity spans "
          f"{fid.min():+.2f}..{fid.max():+.2f}")
    print(f"  Spearman(score, centroid fidelity) = {r['spearman']:.3f}   (goal >= 0.8)")
    parts = [(label, group) for label, group in (("rendered", rendered), ("base-model", base), ("T-LoRA", tl))
             if len(group) > 2]
    if len(parts) > 1:
        print("  " + ", ".join(f"{label} only {spearman(group):.3f} ({len(group)})" for label, group in parts))
    same, diff = np.asarray(r["same"]), np.asarray(r["diff"])
    print(f"camera motion: {len(same)} same-motion pairs, {len(diff)} different-motion pairs "
          f"({', '.join(CAMERA_MOTIONS)})")
    print(f"  same motion, other texture/size/frames: min {same.min():+.3f} mean {same.mean():+.3f}   (goal >= 0.8)")
    print(f"  different motion:                       max {diff.max():+.3f} mean {diff.mean():+.3f}   (goal <= 0.3)")


if __name__ == "__main__":
    main()
