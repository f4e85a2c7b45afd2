"""Synthetic toy-world clips (spec v1, see ``spec.py``): rendering, pretraining sampling,
held-out curved motions and the bundled reference clips.

Pure numpy, deterministic from a ``numpy.random.Generator`` (or an int seed), so a dataset
or a benchmark can be regenerated bit-for-bit from its seed instead of being stored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..errors import InputError
from . import spec
from .spec import (
    BACKGROUNDS,
    CENTER_MAX,
    CENTER_MIN,
    COLORS,
    CURVED_MOTIONS,
    DIRECTIONS,
    FPS,
    NUM_FRAMES,
    OBJECT_SIZE,
    SHAPES,
    SIZE,
    SPEC_VERSION,
    SPEEDS,
)

SUPERSAMPLE: int = 8
"""Sub-samples per pixel and axis for anti-aliasing: each pixel's coverage is the fraction
of its 8x8 sub-samples inside the shape, so edges get 65 grey levels instead of a jagged
staircase (a hard edge would make sub-pixel motion jump by whole pixels)."""

RngLike = Union[np.random.Generator, int, None]


def _rng(rng: RngLike) -> np.random.Generator:
    """Accept a Generator or a seed; ``None`` means a fixed seed 0 (never OS entropy), so
    every call in this module stays reproducible."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


@dataclass
class ClipSpec:
    """What a clip shows; enough to regenerate it and to caption it.

    ``direction`` is a ``DIRECTIONS`` key for straight clips or a ``CURVED_MOTIONS`` key for
    curved ones. ``speed`` is a ``SPEEDS`` key (``None`` for curved clips, whose speed is
    part of the path). ``start`` is the (x, y) center at frame 0; ``path`` holds all (F, 2)
    centers when the motion is not a straight line (``None`` for straight clips, whose path
    follows from start, direction and speed).
    """

    color: str
    shape: str
    background: str
    direction: str
    speed: Optional[str]
    start: tuple[float, float]
    path: Optional[np.ndarray] = None


@dataclass
class Clip:
    """A rendered clip: ``frames`` float32 (F, H, W, 3) in 0..1, ``centers`` (F, 2) true
    (x, y) object centers in pixel-index coordinates, the ``spec`` it came from and its
    ``captions`` with keys ``'full'``, ``'motion_unnamed'`` and ``'appearance'``."""

    frames: np.ndarray
    centers: np.ndarray
    spec: ClipSpec
    captions: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- rendering


def _inside(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float,
            size: float = OBJECT_SIZE) -> np.ndarray:
    """Boolean: which points (x, y) lie inside ``shape`` (bounding box ``size`` px) centered
    at (cx, cy)."""
    h = size / 2.0
    dx = x - cx
    dy = y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= h * h
    if shape == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":
        # Apex at (cx, cy - h), base from (cx - h, cy + h) to (cx + h, cy + h): the half
        # width grows linearly from 0 at the apex to h at the base.
        return (dy <= h) & (np.abs(dx) <= (dy + h) / 2.0)
    raise InputError(f"unknown toy-world shape {shape!r}; expected one of {list(SHAPES)}")


def render_clip(color: str, shape: str, background: str, centers: np.ndarray,
                object_size: float = OBJECT_SIZE) -> np.ndarray:
    """Render one object following any per-frame center path.

    ``centers`` is (F, 2) (x, y) in pixel-index coordinates (see ``spec``); any F works,
    positions are not clipped (the sampling functions keep the object inside).
    ``object_size`` (bounding-box side in px) is the spec's ``OBJECT_SIZE`` unless a test
    needs another one (the motion score's size invariance, ``tests/test_metrics.py``). Returns
    float32 (F, SIZE, SIZE, 3) in 0..1, anti-aliased by ``SUPERSAMPLE`` x box filtering so
    the measures and the model see smooth sub-pixel motion.
    """
    if color not in COLORS:
        raise InputError(f"unknown toy-world color {color!r}; expected one of {list(COLORS)}")
    if background not in BACKGROUNDS:
        raise InputError(
            f"unknown toy-world background {background!r}; expected one of {list(BACKGROUNDS)}"
        )
    if shape not in SHAPES:
        raise InputError(f"unknown toy-world shape {shape!r}; expected one of {list(SHAPES)}")
    if not object_size > 0:
        raise InputError(f"object_size must be a positive number of pixels, got {object_size}")
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != 2:
        raise InputError(f"centers must have shape (F, 2), got {centers.shape}")
    s = SUPERSAMPLE
    # Sub-sample positions: pixel j covers [j-0.5, j+0.5]; sub-sample k sits at its
    # (k+0.5)/s fraction.
    sub = (np.arange(SIZE * s) + 0.5) / s - 0.5
    xs = sub[None, :]
    ys = sub[:, None]
    alpha = np.empty((len(centers), SIZE, SIZE), dtype=np.float64)
    for i, (cx, cy) in enumerate(centers):
        hit = _inside(shape, xs, ys, cx, cy, object_size).astype(np.float64)
        alpha[i] = hit.reshape(SIZE, s, SIZE, s).mean(axis=(1, 3))
    bg = np.asarray(BACKGROUNDS[background], dtype=np.float64)
    fg = np.asarray(COLORS[color], dtype=np.float64)
    frames = bg + alpha[..., None] * (fg - bg)
    return frames.astype(np.float32)


def _captions(color: str, shape: str, background: str, full: str) -> dict[str, str]:
    return {
        "full": full,
        "motion_unnamed": spec.motion_unnamed_caption(color, shape, background),
        "appearance": spec.appearance_caption(color, shape, background),
    }


# --------------------------------------------------------------------------- straight clips


def straight_path(direction: str, speed: str, start: tuple[float, float]) -> np.ndarray:
    """(NUM_FRAMES, 2) centers of a constant-velocity move from ``start``."""
    if direction not in DIRECTIONS:
        raise InputError(f"unknown direction {direction!r}; expected one of {list(DIRECTIONS)}")
    if speed not in SPEEDS:
        raise InputError(f"unknown speed {speed!r}; expected one of {list(SPEEDS)}")
    v = np.asarray(DIRECTIONS[direction], dtype=np.float64) * SPEEDS[speed]
    t = np.arange(NUM_FRAMES, dtype=np.float64)[:, None]
    return np.asarray(start, dtype=np.float64)[None, :] + t * v[None, :]


def _random_start(rng: np.random.Generator, displacement: np.ndarray) -> tuple[float, float]:
    """Uniform start such that start and start + displacement (hence the whole straight
    path) keep the object inside the frame on both axes."""
    start = []
    for d in displacement:
        lo = CENTER_MIN - min(d, 0.0)
        hi = CENTER_MAX - max(d, 0.0)
        if hi < lo - 1e-9:  # cannot happen with spec v1 speeds; guard for future specs
            raise InputError(f"a displacement of {d:.2f} px does not fit in the frame")
        start.append(float(rng.uniform(lo, max(lo, hi))))
    return (start[0], start[1])


def straight_clip(
    color: str,
    shape: str,
    background: str,
    direction: str,
    speed: str,
    rng: RngLike = None,
) -> Clip:
    """A pretraining clip: straight motion (or ``still``) from a random start that keeps
    the object fully inside the frame for all frames. Deterministic from ``rng``."""
    if direction not in DIRECTIONS:
        raise InputError(f"unknown direction {direction!r}; expected one of {list(DIRECTIONS)}")
    if speed not in SPEEDS:
        raise InputError(f"unknown speed {speed!r}; expected one of {list(SPEEDS)}")
    g = _rng(rng)
    disp = np.asarray(DIRECTIONS[direction]) * SPEEDS[speed] * (NUM_FRAMES - 1)
    start = _random_start(g, disp)
    centers = straight_path(direction, speed, start)
    frames = render_clip(color, shape, background, centers)
    clip_spec = ClipSpec(color, shape, background, direction, speed, start, None)
    full = spec.full_caption(color, shape, direction, background)
    return Clip(frames, centers, clip_spec, _captions(color, shape, background, full))


def random_pretraining_clip(rng: RngLike = None) -> Clip:
    """A clip drawn uniformly over colors, shapes, backgrounds, directions (``still``
    included, 1 in 9) and speeds (also drawn for ``still``, where it has no effect, so that
    the number of draws per clip is fixed). Deterministic from ``rng``."""
    g = _rng(rng)
    color = str(g.choice(list(COLORS)))
    shape = str(g.choice(list(SHAPES)))
    background = str(g.choice(list(BACKGROUNDS)))
    direction = str(g.choice(list(DIRECTIONS)))
    speed = str(g.choice(list(SPEEDS)))
    return straight_clip(color, shape, background, direction, speed, g)


# --------------------------------------------------------------------------- curved paths


def _place(rng: RngLike, offsets: np.ndarray) -> np.ndarray:
    """Translate a path given as offsets so it fits the frame: centered in the allowed
    range when ``rng`` is None, else at a uniform random position where it still fits."""
    lo = offsets.min(axis=0)
    hi = offsets.max(axis=0)
    free_lo = CENTER_MIN - lo
    free_hi = CENTER_MAX - hi
    if np.any(free_hi < free_lo - 1e-9):
        raise InputError("path does not fit in the frame")
    if rng is None:
        shift = (free_lo + free_hi) / 2.0
    else:
        g = _rng(rng)
        shift = np.array([g.uniform(a, max(a, b)) for a, b in zip(free_lo, free_hi)])
    return offsets + shift[None, :]


def circle_path(rng: RngLike = None, radius: float = 7.0) -> np.ndarray:
    """One full loop over the 16 frames (clockwise on screen, since y points down), radius
    ~7 px. With ``rng`` the loop's center and starting angle are random."""
    g = None if rng is None else _rng(rng)
    phase = 0.0 if g is None else float(g.uniform(0.0, 2.0 * math.pi))
    a = phase + 2.0 * math.pi * np.arange(NUM_FRAMES) / NUM_FRAMES
    offsets = radius * np.stack([np.cos(a), np.sin(a)], axis=1)
    return _place(g, offsets)


def zigzag_path(rng: RngLike = None, dx: float = 1.2, dy: float = 1.5) -> np.ndarray:
    """Moves right at ``dx`` px/frame while going up then down, alternating every 4 frames
    at ``dy`` px/frame (a 6 px zigzag). Net motion is to the right."""
    steps = np.zeros((NUM_FRAMES, 2))
    for t in range(1, NUM_FRAMES):
        up = ((t - 1) // 4) % 2 == 0
        steps[t] = (dx, -dy if up else dy)
    return _place(rng, np.cumsum(steps, axis=0))


def bounce_path(rng: RngLike = None, dx: float = 1.0, height: float = 12.0) -> np.ndarray:
    """Drifts right at ``dx`` px/frame while bouncing like a ball on a floor: height above
    the floor is ``height * |sin|``, two bounces over the clip."""
    t = np.arange(NUM_FRAMES, dtype=np.float64)
    x = dx * t
    y = -height * np.abs(np.sin(math.pi * t / (NUM_FRAMES / 2.0)))
    return _place(rng, np.stack([x, y], axis=1))


def stop_and_go_path(rng: RngLike = None, speed: float = 2.0) -> np.ndarray:
    """Moves right at ``speed`` px/frame for 4 frames, stops for 4, moves for 4, stops."""
    steps = np.zeros((NUM_FRAMES, 2))
    for t in range(1, NUM_FRAMES):
        if ((t - 1) // 4) % 2 == 0:
            steps[t, 0] = speed
    return _place(rng, np.cumsum(steps, axis=0))


CURVED_PATHS: dict[str, Callable[..., np.ndarray]] = {
    "circle": circle_path,
    "zigzag": zigzag_path,
    "bounce": bounce_path,
    "stop_and_go": stop_and_go_path,
}


def curved_clip(
    kind: str, color: str, shape: str, background: str, rng: RngLike = None
) -> Clip:
    """A clip with a held-out motion (``CURVED_MOTIONS`` key). ``rng=None`` gives the
    canonical, centered path; a Generator/seed randomizes its placement."""
    if kind not in CURVED_PATHS:
        raise InputError(f"unknown curved motion {kind!r}; expected one of {list(CURVED_PATHS)}")
    centers = CURVED_PATHS[kind](rng)
    frames = render_clip(color, shape, background, centers)
    start = (float(centers[0, 0]), float(centers[0, 1]))
    clip_spec = ClipSpec(color, shape, background, kind, None, start, centers)
    full = spec.curved_caption(color, shape, kind, background)
    return Clip(frames, centers, clip_spec, _captions(color, shape, background, full))


# --------------------------------------------------------------------------- reference clips

REFERENCE_CLIPS: dict[str, dict[str, str]] = {
    "circle": {"kind": "circle", "color": "red", "shape": "circle", "background": "black"},
    "zigzag": {"kind": "zigzag", "color": "red", "shape": "square", "background": "black"},
    "bounce": {"kind": "bounce", "color": "red", "shape": "circle", "background": "black"},
}
"""The bundled motion references (name -> clip parameters); canonical (centered) paths."""

ASSETS_DIR: Path = Path(__file__).resolve().parent / "assets"


def reference_clip(name: str) -> Clip:
    """The clip behind bundled reference ``name`` (rendered, not read from disk)."""
    if name not in REFERENCE_CLIPS:
        raise InputError(f"unknown reference clip {name!r}; expected one of {list(REFERENCE_CLIPS)}")
    p = REFERENCE_CLIPS[name]
    return curved_clip(p["kind"], p["color"], p["shape"], p["background"], rng=None)


def write_reference_clips(folder: Union[str, Path] = ASSETS_DIR) -> list[Path]:
    """Write ``{name}.mp4`` plus a ``{name}.json`` sidecar (captions, motion phrase, true
    center track, spec numbers) for every reference clip; returns the written paths.

    The JSON carries the true track so a benchmark can score motion fidelity against ground
    truth rather than against a track re-measured from the lossy mp4.
    """
    from ..video_io import write_video  # av only needed here

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, p in REFERENCE_CLIPS.items():
        clip = reference_clip(name)
        mp4 = write_video(folder / f"{name}.mp4", clip.frames, FPS)
        meta = {
            "spec_version": SPEC_VERSION,
            "name": name,
            "motion": p["kind"],
            "motion_phrase": CURVED_MOTIONS[p["kind"]],
            "color": p["color"],
            "shape": p["shape"],
            "background": p["background"],
            "num_frames": NUM_FRAMES,
            "fps": FPS,
            "size": SIZE,
            "object_size": OBJECT_SIZE,
            "captions": clip.captions,
            "coordinates": "pixel-index (x right, y down; pixel (row i, col j) centered at x=j, y=i)",
        }
        # One [x, y] pair per line keeps the sidecar short and diff-friendly.
        rows = ",\n".join(f"  [{float(x):.4f}, {float(y):.4f}]" for x, y in clip.centers)
        text = json.dumps(meta, indent=1)[:-2] + f',\n "centers": [\n{rows}\n ]\n}}\n'
        json.loads(text)  # guard: what we write must stay valid JSON
        js = folder / f"{name}.json"
        js.write_text(text, encoding="utf-8")
        written += [mp4, js]
    return written


if __name__ == "__main__":  # python -m cav_core.toyworld.clips [folder]
    import sys

    for path in write_reference_clips(sys.argv[1] if len(sys.argv) > 1 else ASSETS_DIR):
        print(path)
