"""A motion score that needs no model: how alike two clips move, from dense optical flow.

``motion_similarity(ref_frames, gen_frames)`` compares the *motion* of two clips and ignores
what they show: a blue square on gray that moves like the reference's red circle on black
scores near 1. It is the real-footage counterpart of the toy world's
``cav_core.toyworld.measures.motion_fidelity`` (which needs a known object to track) and is
validated against it by ``benchmarks/motion_score.py``.

Flow comes from OpenCV's Farneback estimator (``opencv-python-headless``); this module only
summarises it. Per frame pair it keeps a small motion descriptor, in pixels per frame of a
common working size, that does not depend on where the subject is or how large it is:

- the dominant motion: the flow averaged with each pixel weighted by its own flow magnitude,
  a soft "region that moves most" (pixels that do not move have no weight, so a subject
  twice as large, or somewhere else, gives the same vector; a frame-wide mean flow would
  scale with the subject's area instead, which is why it is not used);
- the camera motion: a similarity transform (translation, zoom, rotation) fitted robustly
  (least median of squares) to the whole flow field, flat patches counted as not moving, written as the displacement it causes (translation at the frame
  center, zoom and rotation at half the frame's mean side), so that all entries share units.

Only flow on image structure counts (``TEXTURE_FRACTION``): Farneback has no confidence
output, and on flat or noise-only patches it returns vectors of a pixel or more.

The score is the uncentered correlation of the two clips' descriptor sequences, the same
formula as ``motion_fidelity`` applies to centroid displacements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import CavError, InputError

WORK_SIDE: int = 64
"""Shorter side, in pixels, of the common size both clips are resized to before the flow.
Small enough that a 16-frame clip takes well under a second on one CPU core; toy clips
(32 px) are upscaled, which gives Farneback's windows a few pixels of object to work on."""

MAX_ASPECT: float = 4.0
"""Widest aspect ratio of the working size (a 1x400 strip would otherwise become 64x25600)."""

FARNEBACK: dict[str, Any] = dict(pyr_scale=0.5, levels=3, winsize=9, iterations=3, poly_n=5, poly_sigma=1.1,
                                 flags=0)
"""``cv2.calcOpticalFlowFarneback`` settings at ``WORK_SIDE`` (OpenCV's documented example values,
with a window of 9 px, about a seventh of the working side)."""

STILL_PX: float = 0.15
"""Root-mean-square descriptor length (px per frame pair, at the working size) under which
a clip counts as not moving. A still toy clip with 1-3% noise measures 0.02-0.2 px; the
slowest toy motion (0.8 px per frame at 32 px) 1.6 px; 0.15 px per frame is a drift of 3.5%
of the frame over 16 frames."""

MAX_FLOW: float = 0.25
"""Largest believable flow, as a fraction of the working size's shorter side per frame:
beyond what Farneback's 3-level pyramid can follow, so a longer vector is a failure (seen
on flat regions next to a corner, e.g. 100 px in a 64 px frame) and is left out."""

CAMERA_GRID: int = 4
"""Stride, in working pixels, of the flow samples the camera transform is fitted to."""

MIN_CAMERA_POINTS: int = 6
"""Fewest flow samples to fit a camera transform to (it has 4 unknowns); a working size
has at least (64 / CAMERA_GRID)^2 = 256, so this only guards odd settings."""

TEXTURE_FRACTION: float = 0.1
"""A flow vector counts when the local gradient energy under it (see ``_structure``) is at
least this fraction of the clip's 99th percentile. On a green circle on gray (9% luminance
contrast) with noise of 1% it cuts a still clip's spurious motion from 1.3 to 0.2 px per
frame pair; 0.05 leaves most of it, 0.2 gains nothing more (measured with
benchmarks/motion_score.py's renderer)."""


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise CavError("the motion score needs OpenCV: pip install opencv-python-headless (a dependency of "
                       "this package; reinstall it with its dependencies)") from e
    return cv2


def _to_numpy(frames: Any, name: str) -> np.ndarray:
    """Frames as float32 (F, H, W, C) in 0..1, from a torch tensor (ComfyUI IMAGE, float 0..1)
    or a numpy array (uint8 0..255 or float 0..1); (F, H, W) is grayscale."""
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # torch.Tensor, without importing torch
        frames = frames.detach().cpu().float().numpy()
    try:
        a = np.asarray(frames)
    except Exception as e:  # noqa: BLE001 (anything array-like that fails to convert)
        raise InputError(f"{name}: expected video frames as an array of shape [F, H, W, C], got "
                         f"{type(frames).__name__}") from e
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype.kind in "fiu":
        a = a.astype(np.float32)
    else:
        raise InputError(f"{name}: expected numeric frames (uint8 0..255 or float 0..1), got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name}: expected frames of shape [F, H, W, C] with C = 1, 3 or 4 (a ComfyUI IMAGE "
                         f"batch), got shape {tuple(a.shape)}")
    if a.shape[0] < 2:
        raise InputError(f"{name}: a motion needs at least 2 frames, got {a.shape[0]}; connect a video "
                         f"(an IMAGE batch of 2 or more frames), not a single image")
    if a.shape[1] < 2 or a.shape[2] < 2:
        raise InputError(f"{name}: frames of {a.shape[2]}x{a.shape[1]} pixels are too small to see motion in")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: the frames contain NaN or infinite values; check the node or code that made "
                         f"them")
    return a


def _gray_u8(clip: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(F, h, w) uint8 luminance at ``size`` = (w, h), contrast-stretched over the whole clip.

    The stretch (1st to 99th percentile to 0..255) is per clip, so a low-contrast clip (green
    on gray differs by 9% in luminance) gives Farneback the same signal as a high-contrast
    one; one stretch for all frames keeps frame-to-frame brightness changes as they are."""
    cv2 = _cv2()
    rgb = clip[..., :3] if clip.shape[-1] >= 3 else np.repeat(clip[..., :1], 3, axis=-1)
    lum = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    lo, hi = np.percentile(lum, [1.0, 99.0])
    if hi - lo < 1e-6:  # a flat clip: nothing moves in it, keep it flat
        lo, hi = float(lum.min()), float(lum.min()) + 1.0
    lum = np.clip((lum - lo) / (hi - lo), 0.0, 1.0)
    w, h = size
    interp = cv2.INTER_AREA if w * h < lum.shape[1] * lum.shape[2] else cv2.INTER_LINEAR
    out = np.empty((lum.shape[0], h, w), dtype=np.uint8)
    for i, f in enumerate(lum):
        out[i] = np.round(cv2.resize(f, (w, h), interpolation=interp) * 255.0).astype(np.uint8)
    return out


def _working_size(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """(w, h) both clips are resized to: the aspect of the smaller height and width over
    the clips (so the order of the clips does not matter), shorter side ``WORK_SIDE``."""
    h = min(s[0] for s in shapes)
    w = min(s[1] for s in shapes)
    aspect = min(max(w / h, 1.0 / MAX_ASPECT), MAX_ASPECT)
    if aspect >= 1.0:
        return int(round(WORK_SIDE * aspect)), WORK_SIDE
    return WORK_SIDE, int(round(WORK_SIDE / aspect))


def _resample(clip: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames spread evenly over the clip (first and last kept), nearest frame."""
    if len(clip) == n:
        return clip
    idx = np.round(np.linspace(0, len(clip) - 1, n)).astype(int)
    return clip[idx]


def _structure(gray: np.ndarray) -> np.ndarray:
    """(F, h, w) local gradient energy of each frame (squared Sobel gradient, Gaussian-
    averaged over about Farneback's window): how much image structure a flow vector there
    rests on."""
    cv2 = _cv2()
    out = np.empty(gray.shape, dtype=np.float32)
    for i, g in enumerate(gray):
        f = g.astype(np.float32) / 255.0
        gx, gy = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
        out[i] = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), FARNEBACK["winsize"] / 4.0)
    return out


def motion_descriptor(gray: np.ndarray) -> np.ndarray:
    """(F-1, 6) motion descriptor of a (F, h, w) uint8 clip, per frame pair: dominant motion
    (dx, dy), camera translation (tx, ty), camera zoom and rotation, all in px per frame.

    Only flow that rests on image structure counts (``TEXTURE_FRACTION``): on a flat or
    noise-only patch Farneback returns vectors of a pixel or more whatever the true motion
    (its estimate does not depend on the patch's contrast), which would swamp slow motion."""
    cv2 = _cv2()
    f, h, w = gray.shape
    r = 0.5 * math.sqrt(h * w)  # radius at which zoom and rotation are written as displacement
    ys, xs = np.mgrid[CAMERA_GRID // 2:h:CAMERA_GRID, CAMERA_GRID // 2:w:CAMERA_GRID]
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    center = np.asarray([(w - 1) / 2.0, (h - 1) / 2.0])
    structure = _structure(gray)
    textured = structure >= TEXTURE_FRACTION * max(float(np.percentile(structure, 99.0)), 1e-12)
    out = np.zeros((f - 1, 6), dtype=np.float64)
    for t in range(f - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, **FARNEBACK).astype(np.float64)
        mag = np.sqrt((flow**2).sum(axis=-1))
        # structure in either frame: a subject moving onto a flat patch still counts there
        ok = (mag <= MAX_FLOW * min(h, w)) & (textured[t] | textured[t + 1])
        weight = np.where(ok, mag, 0.0)
        total = weight.sum()
        if total > 1e-9:
            out[t, 0:2] = (flow * weight[..., None]).reshape(-1, 2).sum(axis=0) / total
        # The camera is fitted to every grid point, the ones without structure (or with a
        # failed vector) taken as not moving: a flat patch gives no evidence of motion, and
        # fitting the textured points alone would fit the subject when it is all the
        # structure there is (a toy object's edges, wobbling in a generated video, fitted as
        # zooms of 40% per frame).
        moved = np.where(ok[..., None], flow, 0.0)[ys, xs].reshape(-1, 2)
        if len(src) < MIN_CAMERA_POINTS:
            continue
        m, _ = cv2.estimateAffinePartial2D(src, src + moved.astype(np.float32), method=cv2.LMEDS)
        if m is None:
            continue
        a, b = float(m[0, 0]), float(m[1, 0])  # m = [[s cos, -s sin, tx], [s sin, s cos, ty]]
        scale, angle = math.hypot(a, b), math.atan2(b, a)
        out[t, 2:4] = m[:, :2] @ center + m[:, 2] - center  # where the frame center goes
        out[t, 4] = (scale - 1.0) * r
        out[t, 5] = angle * r
    return out


def _correlation(da: np.ndarray, db: np.ndarray) -> float:
    """Uncentered correlation with ``motion_fidelity``'s rules for clips without motion."""
    ea, eb = float((da**2).sum()), float((db**2).sum())
    a_still, b_still = ea < STILL_PX**2 * len(da), eb < STILL_PX**2 * len(db)
    if a_still and b_still:
        return 1.0
    if a_still or b_still:
        return 0.0
    return max(-1.0, min(1.0, float((da * db).sum() / math.sqrt(ea * eb))))


def motion_similarity(ref_frames: Any, gen_frames: Any) -> float:
    """How alike two clips move, in [-1, 1]: 1 = the same motion, 0 = unrelated motion (or
    one clip still and the other moving), -1 = the opposite motion; two still clips score 1.

    It measures motion only: colours, shapes, textures and where the subject starts do not
    count, nor how large it is, nor the overall speed (the same path twice as fast scores 1),
    while the direction, the path's shape and its timing do; camera pans, zooms and
    rotations count as motion.

    ``ref_frames`` and ``gen_frames`` are videos as ``[F, H, W, C]`` arrays: a torch tensor
    (a ComfyUI IMAGE batch, float 0..1) or numpy (uint8 0..255 or float 0..1); C = 3 (RGB),
    4 (alpha ignored) or 1, and ``[F, H, W]`` is grayscale. They may differ in frame count
    (the longer one is resampled evenly in time to the shorter one's count) and in size
    (both are resized to one working size, see ``WORK_SIDE``). Each needs at least 2 frames.
    The score is symmetric: swapping the clips gives the same number.
    """
    ref = _to_numpy(ref_frames, "ref_frames (the reference video)")
    gen = _to_numpy(gen_frames, "gen_frames (the video to judge)")
    n = min(len(ref), len(gen))
    size = _working_size([ref.shape[1:3], gen.shape[1:3]])
    cv2 = _cv2()
    # One thread: at the working size OpenCV's threads cost more than they save, and the
    # score runs next to training (tests/conftest.py keeps torch at one thread too).
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        da = motion_descriptor(_gray_u8(_resample(ref, n), size))
        db = motion_descriptor(_gray_u8(_resample(gen, n), size))
    finally:
        cv2.setNumThreads(threads)
    return _correlation(da, db)


def similarity_text(score: float) -> str:
    """One line for a UI preview or a log: the score and how to read it."""
    return f"motion score {score:+.2f} (1 = same motion, 0 = unrelated, -1 = opposite; measures motion only)"


__all__ = ["motion_similarity", "motion_descriptor", "similarity_text", "WORK_SIDE", "FARNEBACK"]
