"""Read a toy-world clip back: object mask, color, shape, background, center track and
motion direction, plus a motion-fidelity score between two tracks. Numpy only.

These are the automatic judges of the toy-world benchmarks (did the model draw a red
circle? does it move the way the reference moves?), so they are deliberately simple,
documented and tolerant to codec blur and mild noise rather than clever.

Frames are (H, W, 3) or (F, H, W, 3) float in 0..1 (uint8 is accepted and rescaled).
Tracks are (F, 2) (x, y) in pixel-index coordinates, y down (see ``spec``).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np

from .spec import BACKGROUNDS, COLORS, DIRECTIONS

MIN_CONTRAST: float = 0.2
"""RGB (Euclidean) distance to the background below which a frame is considered empty.
Spec colors differ from their background by >= 0.87, noise and codec ringing by < 0.1."""

MASK_FRACTION: float = 0.5
"""A pixel is object when its distance to the background exceeds this fraction of the
frame's peak distance, i.e. when it is at least half covered. This keeps the mask's area and
bounding box equal to the true object's, whatever its color/background contrast."""

MIN_OBJECT_PIXELS: int = 4
"""Fewer mask pixels than this in a frame means no object (a few noisy pixels)."""

TRIANGLE_SKEW_THRESHOLD: float = 0.05
"""Vertical mass skew (see ``shape_features``) above which the object is a triangle. An
apex-up triangle carries its mass low: ideal skew 1/6 (measured 0.13-0.15 clean, >= 0.08 per
clip after mp4 / blur / noise); circles and squares are symmetric (|skew| < 0.015)."""

SQUARE_FILL_THRESHOLD: float = 0.9
"""Soft fill ratio (see ``shape_features``) at or above which a non-triangle is a square
(ideal 1.0, measured >= 0.93 per clip even with noise); below it, a circle (ideal
pi/4 = 0.785, measured <= 0.88 per clip after mp4)."""

STILL_THRESHOLD_PX: float = 2.0
"""Net displacement (first to last found frame) under which a track counts as ``still``;
the slowest pretraining move covers 0.8 * 15 = 12 px."""

ColorLike = Union[str, tuple, list, np.ndarray, None]


def _as_float(frames: np.ndarray) -> np.ndarray:
    a = np.asarray(frames)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return a.astype(np.float32, copy=False)


def _as_clip(frames: np.ndarray) -> np.ndarray:
    a = _as_float(frames)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (F, H, W, 3) or (H, W, 3), got {a.shape}")
    return a


def _border(frame: np.ndarray) -> np.ndarray:
    """(N, 3) pixels of the 1-pixel frame border."""
    return np.concatenate([frame[0], frame[-1], frame[1:-1, 0], frame[1:-1, -1]], axis=0)


def estimate_background(frame: np.ndarray) -> np.ndarray:
    """Background RGB of one frame: per-channel median of its border pixels. The object
    (a quarter of the frame, kept inside) touches at most a small part of the border."""
    return np.median(_border(_as_float(frame)), axis=0)


def _background_rgb(frame: np.ndarray, background: ColorLike) -> np.ndarray:
    if background is None:
        return estimate_background(frame)
    if isinstance(background, str):
        return np.asarray(BACKGROUNDS[background], dtype=np.float32)
    return np.asarray(background, dtype=np.float32).reshape(3)


def _distance(frame: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return np.sqrt(((frame - bg) ** 2).sum(axis=-1))


def _peak(dist: np.ndarray) -> float:
    """Robust peak distance: the 5th largest value, so a couple of hot noise pixels cannot
    set the threshold while a real object (>= ~40 px) still does."""
    flat = dist.ravel()
    k = min(5, flat.size)
    return float(np.partition(flat, flat.size - k)[flat.size - k])


def object_mask(frame: np.ndarray, background: ColorLike = None) -> np.ndarray:
    """Boolean (H, W) mask of the object in one frame.

    ``background`` is a name, an RGB triple, or None to estimate it from the border
    (median). A pixel is object when its RGB distance to the background exceeds
    ``max(MIN_CONTRAST, MASK_FRACTION * peak distance)``. All False when the frame has no
    pixel clearly different from the background.
    """
    f = _as_float(frame)
    dist = _distance(f, _background_rgb(f, background))
    peak = _peak(dist)
    if peak < MIN_CONTRAST:
        return np.zeros(dist.shape, dtype=bool)
    mask = dist > max(MIN_CONTRAST, MASK_FRACTION * peak)
    if mask.sum() < MIN_OBJECT_PIXELS:
        return np.zeros(dist.shape, dtype=bool)
    return mask


def _nearest(rgb: np.ndarray, table: dict) -> str:
    names = list(table)
    ref = np.asarray([table[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((ref - rgb) ** 2).sum(axis=1)))]


def background_name(frames: np.ndarray) -> str:
    """Nearest spec background to the median border color over the clip."""
    clip = _as_clip(frames)
    border = np.concatenate([_border(f) for f in clip], axis=0)
    return _nearest(np.median(border, axis=0), BACKGROUNDS)


def object_color(frames: np.ndarray) -> Optional[str]:
    """Nearest spec color to the mean color of the object's core pixels over the clip, or
    None when no frame has an object.

    Core pixels are those at >= 80% of the frame's peak distance to the background: edge
    pixels are mixed with the background (anti-aliasing, chroma subsampling) and would pull
    e.g. yellow on gray toward an in-between color.
    """
    clip = _as_clip(frames)
    picked = []
    for f in clip:
        bg = estimate_background(f)
        if not object_mask(f, bg).any():
            continue
        dist = _distance(f, bg)
        picked.append(f[dist >= 0.8 * _peak(dist)])
    if not picked:
        return None
    return _nearest(np.concatenate(picked, axis=0).mean(axis=0), COLORS)


def _soft_alpha(frame: np.ndarray) -> Optional[np.ndarray]:
    """Per-pixel object coverage 0..1 (distance to background over the object's contrast),
    restricted to the object's mask bounding box grown by one pixel; None if no object.

    The contrast is the median distance of the core pixels (>= 75% of the peak), so noise
    that inflates single pixels does not shrink everyone else's coverage."""
    f = _as_float(frame)
    bg = estimate_background(f)
    mask = object_mask(f, bg)
    if not mask.any():
        return None
    dist = _distance(f, bg)
    contrast = float(np.median(dist[dist >= 0.75 * _peak(dist)]))
    ys, xs = np.nonzero(mask)
    region = np.zeros_like(mask)
    region[max(ys.min() - 1, 0) : ys.max() + 2, max(xs.min() - 1, 0) : xs.max() + 2] = True
    return np.clip(dist / contrast, 0.0, 1.0) * region


def shape_features(frame: np.ndarray) -> Optional[tuple[float, float]]:
    """``(fill, skew)`` of the object in one frame, or None if there is none.

    Both are computed on soft coverage, so they do not jump with sub-pixel position and
    survive blur: ``fill`` = covered area / (soft width * soft height), where the soft width
    is the sum over columns of the column's max coverage (and likewise the height): circle
    ~0.79, square ~1.0, triangle ~0.6. ``skew`` = (area centroid y - row-profile center y)
    / soft height: how much lower the mass sits than the object's vertical middle; ~1/6
    for an apex-up triangle, ~0 for circle and square.
    """
    a = _soft_alpha(frame)
    if a is None:
        return None
    area = float(a.sum())
    rows = a.max(axis=1)
    width = float(a.max(axis=0).sum())
    height = float(rows.sum())
    y = np.arange(a.shape[0], dtype=np.float64)
    mass_y = float((a.sum(axis=1) * y).sum() / area)
    middle_y = float((rows * y).sum() / height)
    return area / (width * height), (mass_y - middle_y) / height


def object_shape(frames: np.ndarray) -> Optional[str]:
    """``circle`` / ``square`` / ``triangle`` from the per-frame ``shape_features``
    (medians over frames, so a few bad frames are harmless), or None when no frame has an
    object: triangle when skew > ``TRIANGLE_SKEW_THRESHOLD``, else square when fill >=
    ``SQUARE_FILL_THRESHOLD``, else circle."""
    clip = _as_clip(frames)
    feats = [x for x in (shape_features(f) for f in clip) if x is not None]
    if not feats:
        return None
    fill, skew = np.median(np.asarray(feats), axis=0)
    if skew > TRIANGLE_SKEW_THRESHOLD:
        return "triangle"
    if fill >= SQUARE_FILL_THRESHOLD:
        return "square"
    return "circle"


def centroid_track(frames: np.ndarray) -> np.ndarray:
    """(F, 2) object centroid (x, y) per frame, NaN rows where no object is found.

    The centroid is weighted by each mask pixel's distance to the background, so partly
    covered edge pixels count partly and the track moves smoothly at sub-pixel steps. It
    equals the true center for circles and squares; for the triangle it sits 1/6 of the
    object size (1.5 px) below the bounding-box center, a constant offset that cancels in
    displacements.
    """
    clip = _as_clip(frames)
    track = np.full((clip.shape[0], 2), np.nan, dtype=np.float64)
    h, w = clip.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w]
    for i, f in enumerate(clip):
        bg = estimate_background(f)
        mask = object_mask(f, bg)
        if not mask.any():
            continue
        # Grow the mask by one pixel so the thin, partly covered rim is weighted in too.
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        wgt = _distance(f, bg) * grown
        total = wgt.sum()
        track[i] = ((wgt * xx).sum() / total, (wgt * yy).sum() / total)
    return track


def _valid(track: np.ndarray) -> np.ndarray:
    t = np.asarray(track, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"expected a track of shape (F, 2), got {t.shape}")
    return t


def motion_direction(track: np.ndarray) -> str:
    """One of the 8 ``DIRECTIONS`` or ``still``, from the net displacement between the
    first and last frames where the object was found (NaN rows skipped); ``still`` when
    that displacement is shorter than ``STILL_THRESHOLD_PX`` or fewer than 2 frames have an
    object. The direction is the nearest of the 8 unit vectors (45 degree sectors)."""
    t = _valid(track)
    ok = np.isfinite(t).all(axis=1)
    if ok.sum() < 2:
        return "still"
    pts = t[ok]
    d = pts[-1] - pts[0]
    if float(np.hypot(*d)) < STILL_THRESHOLD_PX:
        return "still"
    u = d / np.hypot(*d)
    moving = [k for k in DIRECTIONS if k != "still"]
    return max(moving, key=lambda k: float(np.dot(u, DIRECTIONS[k])))


MOTION_EPS: float = 1e-6
"""Total squared displacement (px^2) under which a track counts as not moving at all in
``motion_fidelity``."""


def motion_fidelity(track_a: np.ndarray, track_b: np.ndarray) -> float:
    """How alike two tracks move, in [-1, 1]: the uncentered correlation of their
    frame-to-frame displacements, sum(d_a . d_b) / sqrt(sum|d_a|^2 * sum|d_b|^2).

    Comparing displacements (not positions) makes it blind to where the object starts, so
    the same motion from a shifted start scores 1; opposite motion scores -1; unrelated
    motion ~0. It is not blind to speed profile (a different timing lowers it) but is to
    overall scale (the same path at twice the speed still scores 1). Displacement pairs
    touching a NaN frame in either track are dropped; tracks of different lengths are
    compared over the common first frames.

    Zero motion is defined explicitly (the formula would be 0/0): both tracks still ->
    1.0 (same motion: none); exactly one still -> 0.0 (no motion is unrelated to any
    motion, not opposite to it); no usable displacement pair at all (fewer than 2 common
    frames with an object) -> 0.0, since nothing can be compared.
    """
    a = _valid(track_a)
    b = _valid(track_b)
    n = min(len(a), len(b))
    da = np.diff(a[:n], axis=0)
    db = np.diff(b[:n], axis=0)
    ok = np.isfinite(da).all(axis=1) & np.isfinite(db).all(axis=1)
    da = da[ok]
    db = db[ok]
    ea = float((da**2).sum())
    eb = float((db**2).sum())
    a_still = ea < MOTION_EPS
    b_still = eb < MOTION_EPS
    if a_still and b_still:
        return 1.0 if len(da) > 0 else 0.0
    if a_still or b_still:
        return 0.0
    r = float((da * db).sum() / math.sqrt(ea * eb))
    return max(-1.0, min(1.0, r))


def describe_clip(frames: np.ndarray) -> dict:
    """Everything the measures can say about a clip: ``color``, ``shape``,
    ``background``, ``track`` ((F, 2) centroids) and ``direction``."""
    clip = _as_clip(frames)
    track = centroid_track(clip)
    return {
        "color": object_color(clip),
        "shape": object_shape(clip),
        "background": background_name(clip),
        "track": track,
        "direction": motion_direction(track),
    }


__all__ = [
    "MIN_CONTRAST",
    "MASK_FRACTION",
    "MIN_OBJECT_PIXELS",
    "TRIANGLE_SKEW_THRESHOLD",
    "SQUARE_FILL_THRESHOLD",
    "STILL_THRESHOLD_PX",
    "estimate_background",
    "object_mask",
    "object_color",
    "object_shape",
    "shape_features",
    "background_name",
    "centroid_track",
    "motion_direction",
    "motion_fidelity",
    "describe_clip",
]
