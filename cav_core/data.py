"""Training frames from a reference video: decode, resample in time, fit to size, crop.

Frames are torch float32 ``(F, H, W, C)`` in 0..1 on the CPU (the ComfyUI IMAGE layout,
docs/API.md). Resampling goes by the frames' presentation timestamps rather than their
index, so variable-frame-rate phone videos and GIFs with uneven delays are sampled at the
times the viewer actually sees.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError, VideoReadError
from .video_io import VideoSource, check_fit, display_size, frame_to_rgb, is_stream, open_video, rgb_to_float

#: Before the final antialiased resize, frames much larger than the target are shrunk by
#: the decoder (area filter) to this multiple of the scaled size: a 4K or 8K source then
#: never exists in memory as float, and the last resize still has real pixels to average.
PRESHRINK_MARGIN = 2.0

#: Seeking saves decoding everything before ``start``; below this it is not worth the
#: risk of a container that seeks imprecisely.
SEEK_MIN_START_S = 1.0

#: Without ``size`` the frames stay at the source resolution; above this many bytes of
#: float frames (16 frames of 8K are 6 GiB) the call is refused and asks for a size.
MAX_UNRESIZED_BYTES = 4 * 1024**3


# --------------------------------------------------------------------------- validation

def _check_size(size: Any, what: str = "size") -> tuple[int, int]:
    if isinstance(size, (str, bytes)):
        raise InputError(f"{what} must be (height, width) in pixels, got {size!r}")
    try:
        h, w = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be (height, width) in pixels, got {size!r}") from None
    if not ok or h < 1 or w < 1:
        raise InputError(f"{what} must be two positive whole numbers (height, width), got {size!r}")
    return h, w


def _count(value: Any, what: str) -> int:
    try:
        n = operator.index(value)  # ints and numpy ints; floats and bools are mistakes here
    except TypeError:
        n = None
    if n is None or isinstance(value, bool) or n < 1:
        raise InputError(f"{what} must be a whole number >= 1, got {value!r}")
    return n


def _check_frames(frames: Any, what: str = "frames") -> torch.Tensor:
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"{what} must be a torch tensor (F, H, W, 3) in 0..1; got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise InputError(f"{what} must have shape (F, H, W, 3) with F >= 1, got {tuple(frames.shape)}")
    return frames


# --------------------------------------------------------------------------- resize / crop

def _scaled_size(h: int, w: int, th: int, tw: int, fit: str = "crop") -> tuple[int, int]:
    """The size a (h, w) frame is resized to before it is cut or padded to (th, tw):
    the smallest with the source aspect that covers it (crop), the largest that fits
    inside it (pad), or (th, tw) itself (stretch)."""
    if fit == "stretch":
        return th, tw
    if fit == "pad":
        s = min(th / h, tw / w)
        return min(th, max(1, round(h * s))), min(tw, max(1, round(w * s)))
    s = max(th / h, tw / w)
    return max(th, math.ceil(h * s - 1e-6)), max(tw, math.ceil(w * s - 1e-6))


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, C, h0, w0) -> (N, C, h, w). Antialiasing averages when shrinking, so thin
    structure and fine texture alias less; bilinear never overshoots 0..1."""
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)


def fit_frames(frames: torch.Tensor, size: Sequence[int], fit: str = "crop") -> torch.Tensor:
    """``frames`` (F, H, W, C) at exactly ``size`` = (H, W), by ``fit`` (``video_io.FIT_MODES``):
    ``crop`` (the default) resizes to cover keeping the aspect and cuts the centre;
    ``pad`` resizes to fit inside keeping the aspect and centres it on black; ``stretch``
    resizes to the size as it is."""
    frames = _check_frames(frames)
    th, tw = _check_size(size)
    fit = check_fit(fit)
    _, h, w, _ = frames.shape
    if (h, w) == (th, tw):
        return frames
    sh, sw = _scaled_size(h, w, th, tw, fit)
    x = _resize(frames.permute(0, 3, 1, 2).float(), sh, sw)
    if fit == "pad":
        top, left = (th - sh) // 2, (tw - sw) // 2
        out = x.new_zeros(x.shape[0], x.shape[1], th, tw)
        out[:, :, top:top + sh, left:left + sw] = x
        x = out
    else:
        top, left = (sh - th) // 2, (sw - tw) // 2
        x = x[:, :, top:top + th, left:left + tw]
    return x.permute(0, 2, 3, 1).contiguous()


def random_patch_crops(frames: torch.Tensor, n: int, crop_range: Sequence[float] = (0.6, 1.0),
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random patches of random frames, each resized back to the full frame size.

    Per sample: a frame, a fraction ``s`` uniform in ``crop_range``, a crop of
    ``s*H x s*W`` (the frame's aspect) at a uniform position. Used in Stage 1 so the
    absorber sees the appearance at many scales and positions and no frame order.
    Deterministic for a given ``generator`` state.
    """
    frames = _check_frames(frames)
    n = _count(n, "number of crops")
    try:
        lo, hi = (float(v) for v in crop_range)
    except (TypeError, ValueError):
        raise InputError(f"crop_range must be (low, high) fractions of the frame side, got {crop_range!r}") from None
    if not (0.0 < lo <= hi <= 1.0):
        raise InputError(f"crop_range must satisfy 0 < low <= high <= 1 (fractions of the frame side), "
                         f"got ({lo:g}, {hi:g}); e.g. (0.6, 1.0), or (1.0, 1.0) for no cropping")
    f, h, w, _ = frames.shape
    idx = torch.randint(0, f, (n,), generator=generator)
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    out = torch.empty(n, h, w, 3, dtype=torch.float32)
    for i in range(n):
        s = lo + (hi - lo) * float(u[i, 0])
        ch, cw = max(1, round(s * h)), max(1, round(s * w))
        top = min(h - ch, int(float(u[i, 1]) * (h - ch + 1)))
        left = min(w - cw, int(float(u[i, 2]) * (w - cw + 1)))
        patch = frames[int(idx[i]), top:top + ch, left:left + cw].permute(2, 0, 1)[None].float()
        out[i] = _resize(patch, h, w)[0].permute(1, 2, 0)
    return out


# --------------------------------------------------------------------------- video files

def _decode_size(fw: int, fh: int, size: tuple[int, int] | None, fit: str) -> tuple[int, int] | None:
    """(width, height) to have the decoder shrink a (displayed) frame to, or None to keep it."""
    if size is None:
        return None
    sh, sw = _scaled_size(fh, fw, *size, fit)
    ph, pw = math.ceil(sh * PRESHRINK_MARGIN), math.ceil(sw * PRESHRINK_MARGIN)
    if ph >= fh or pw >= fw:
        return None
    return pw, ph


def _to_rgb(frame: Any, size: tuple[int, int] | None, fit: str = "crop") -> np.ndarray:
    return frame_to_rgb(frame, _decode_size(*display_size(frame), size, fit))


def _pick_frames(decoded: Iterable[Any], rate: float | None, targets: list[float], t0: float | None,
                 to_rgb: Callable[[Any], np.ndarray],
                 hold_last: bool = False) -> tuple[list[np.ndarray | None], dict]:
    """Nearest frame for each target time (seconds from the video's first frame).

    ``decoded`` yields frames in display order, each with a ``time`` in seconds (None
    when unknown: then ``rate`` frames per second are assumed); ``to_rgb`` turns a picked
    one into an (H, W, 3) array. Streams through them keeping only the previous frame, so
    memory holds the picked frames only, and stops as soon as every target is served.
    Returns the picks (None for targets past the end, unless ``hold_last`` repeats the
    last frame there once the video has given at least one) and what was seen (for the
    too-short message)."""
    picks: list[np.ndarray | None] = [None] * len(targets)
    cache: dict[int, np.ndarray] = {}

    def rgb(item: tuple[int, float, Any]) -> np.ndarray:
        if item[0] not in cache:
            cache[item[0]] = to_rgb(item[2])
        return cache[item[0]]

    k = 0
    prev: tuple[int, float, Any] | None = None
    n = 0
    first_t = None
    for n, frame in enumerate(decoded, start=1):
        if frame.time is not None:
            t_abs = float(frame.time)
        elif prev is not None:
            t_abs = (prev[1] + (t0 or 0.0)) + (1.0 / rate if rate else 0.0)
        else:
            t_abs = t0 or 0.0
        if t0 is None:
            t0 = t_abs
        t = t_abs - t0
        if first_t is None:
            first_t = t
        cur = (n, t, frame)
        while k < len(targets) and t >= targets[k] - 1e-9:
            use = cur if prev is None or (t - targets[k]) < (targets[k] - prev[1]) else prev
            picks[k] = rgb(use)
            k += 1
        prev = cur
        if k == len(targets):
            break
    # The mean interval, not the last one: container timestamps are rounded (e.g. to ms).
    step = (prev[1] - first_t) / (n - 1) if prev is not None and n > 1 and prev[1] > first_t else None
    seen = {"frames": n, "first_t": first_t, "last_t": prev[1] if prev else None,
            "step": step or (1.0 / rate if rate else None)}
    if prev is not None and k < len(targets):
        # Past the last frame it stays the nearest one for half a frame interval; later
        # times would need a frame the video does not have.
        end = prev[1] + 0.5 * (seen["step"] or 0.0)
        while k < len(targets) and targets[k] <= end + 1e-9:
            picks[k] = rgb(prev)
            k += 1
    seen["held"] = 0
    if hold_last and prev is not None and 0 < k < len(targets):
        seen["held"] = len(targets) - k
        picks[k:] = [rgb(prev)] * seen["held"]
        k = len(targets)
    seen["complete"] = k == len(targets)
    return picks, seen


def _clip_request(num_frames: Any, fps: Any, start: Any, size: Sequence[int] | None, fit: str,
                  hold_last: Any) -> tuple[int, float, float, tuple[int, int] | None, str]:
    """The checked arguments shared by :func:`load_video_clip` and :func:`clip_from_frames`."""
    num_frames = _count(num_frames, "num_frames")
    try:
        fps_f, start_f = float(fps), float(start)
    except (TypeError, ValueError):
        raise InputError(f"fps and start must be numbers, got fps={fps!r}, start={start!r}") from None
    if not math.isfinite(fps_f) or fps_f <= 0:
        raise InputError(f"fps must be a positive number of frames per second, got {fps!r}")
    if not math.isfinite(start_f) or start_f < 0:
        raise InputError(f"start must be a time in seconds >= 0, got {start!r}")
    target = None if size is None else _check_size(size)
    fit = check_fit(fit)
    if not isinstance(hold_last, bool):
        raise InputError(f"hold_last must be True or False (--hold-last, the 'hold_last_frame' widget), "
                         f"got {hold_last!r}")
    return num_frames, fps_f, start_f, target, fit


def _finish_clip(label: Any, picks: list, seen: dict, num_frames: int, fps: float, start: float,
                 target: tuple[int, int] | None, fit: str) -> torch.Tensor:
    if seen["frames"] == 0:
        raise VideoReadError(f"cannot read video {label}: it contains no decodable frames")
    if not seen["complete"]:
        _raise_too_short(label, picks, seen, num_frames, fps, start)
    if seen["held"]:
        warnings.warn(f"video {label} ends at {_duration(seen):.2f} s: its last frame is held for the last "
                      f"{seen['held']} of {num_frames} frames (hold_last)", stacklevel=3)
    stacked = np.stack(picks)
    frames = torch.from_numpy(stacked if stacked.dtype == np.float32 else rgb_to_float(stacked))
    return fit_frames(frames, target, fit) if target is not None else frames


def load_video_clip(path: VideoSource, num_frames: int = 16, fps: float = 8.0, start: float = 0.0,
                    size: Sequence[int] | None = None, fit: str = "crop", hold_last: bool = False,
                    name: str | None = None) -> torch.Tensor:
    """``num_frames`` frames of the video at ``path`` sampled at ``fps``, from ``start``
    seconds: float32 (F, H, W, 3) in 0..1.

    Frame k is the source frame shown at time ``start + k / fps`` (the nearest by
    presentation timestamp), so a 24 fps source read at 8 fps takes every third frame, a
    25 or 30 fps one the frame nearest each 1/8 s, and a variable frame rate is followed. ``size=(H, W)`` fits the frames to that
    size by ``fit`` (see :func:`fit_frames`: centre ``crop``, ``pad`` or ``stretch``);
    large sources are shrunk while decoding. Frames are as a player shows them: a phone's
    rotation is applied and 10-bit sources keep their levels (``video_io.frame_to_rgb``).
    A video too short for the request is an :class:`InputError` naming its duration,
    unless ``hold_last`` repeats its last frame for the missing ones (with a warning).
    mp4, webm, mov, mkv and gif all decode through PyAV. ``path`` may also be an open
    binary file-like holding the video (``video_io.open_video``; ``name`` labels it in
    messages).
    """
    label: Any = (name or "from the stream") if is_stream(path) else (name or Path(path))
    num_frames, fps_f, start_f, target, fit = _clip_request(num_frames, fps, start, size, fit, hold_last)
    targets = [start_f + k / fps_f for k in range(num_frames)]

    import av

    with open_video(path, name=name) as (container, stream):
        need = num_frames * (stream.width or 0) * (stream.height or 0) * 3 * 4
        if target is None and need > MAX_UNRESIZED_BYTES:
            raise InputError(f"video {label} is {stream.width}x{stream.height}: {num_frames} frames at full size "
                             f"would take {need / 1024**3:.1f} GiB; pass size=(height, width) to resize while "
                             f"decoding, or take fewer frames")
        stream.thread_type = "AUTO"
        tb = stream.time_base
        t0 = float(stream.start_time * tb) if stream.start_time is not None and tb else None
        rate = float(stream.average_rate or stream.guessed_rate or 0.0) or None

        def pick() -> tuple[list, dict]:
            return _pick_frames(container.decode(stream), rate, targets, t0,
                                lambda frame: _to_rgb(frame, target, fit), hold_last)

        picks = seen = None
        if start_f >= SEEK_MIN_START_S and t0 is not None:
            try:
                container.seek(int((t0 + start_f) / tb), stream=stream, backward=True, any_frame=False)
                picks, seen = pick()
                seen["frames_counted_from_seek"] = True
                # An imprecise seek lands after the start: then decode from the top.
                if seen["first_t"] is None or seen["first_t"] > start_f + 0.5 / fps_f:
                    picks = None
            except av.error.FFmpegError:
                picks = None
            if picks is None:
                container.seek(0, stream=stream, backward=True, any_frame=False)
        if picks is None:
            picks, seen = pick()
    return _finish_clip(label, picks, seen, num_frames, fps_f, start_f, target, fit)


def frames_from_images(images: Any) -> torch.Tensor:
    """A ComfyUI IMAGE batch or a numpy array as float32 ``(F, H, W, 3)`` in 0..1 on the CPU.

    Accepts float tensors/arrays in 0..1 (values outside are clipped) and uint8 (scaled
    by 1/255). One channel is repeated to RGB and an alpha channel is dropped, since every
    model here takes RGB.
    """
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            t = torch.from_numpy(np.ascontiguousarray(images))
        elif np.issubdtype(images.dtype, np.floating):
            t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        else:
            raise InputError(f"image array must be uint8 (0..255) or float (0..1), got dtype {images.dtype}")
    elif isinstance(images, torch.Tensor):
        t = images.detach().cpu()
    else:
        raise InputError(f"images must be a torch tensor or numpy array (F, H, W, C), got {type(images).__name__}")
    if t.ndim != 4:
        hint = " (a single image needs a leading frame axis: (1, H, W, C))" if t.ndim == 3 else ""
        raise InputError(f"images must have shape (F, H, W, C), got {tuple(t.shape)}{hint}")
    if t.shape[0] == 0 or t.shape[1] == 0 or t.shape[2] == 0:
        raise InputError(f"images are empty: shape {tuple(t.shape)}")
    c = t.shape[-1]
    if c == 1:
        t = t.expand(-1, -1, -1, 3)
    elif c == 4:
        t = t[..., :3]
    elif c != 3:
        raise InputError(f"images must have 1 (gray), 3 (RGB) or 4 (RGBA) channels in the last axis, got {c} "
                         f"(channels-first (F, C, H, W) tensors must be permuted to (F, H, W, C))")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        t = torch.nan_to_num(t.float(), nan=0.0).clamp(0.0, 1.0)
    else:
        raise InputError(f"images must be float (0..1) or uint8 (0..255), got dtype {t.dtype}")
    return t.contiguous()


# --------------------------------------------------------------------------- resize / crop


class _HeldFrame(NamedTuple):
    """A frame of :func:`clip_from_frames`, shaped like a decoded one for :func:`_pick_frames`."""

    time: float
    index: int


def clip_from_frames(images: Any, frame_rate: float, num_frames: int = 16, fps: float = 8.0, start: float = 0.0,
                     size: Sequence[int] | None = None, fit: str = "crop", hold_last: bool = False,
                     name: str = "in memory") -> torch.Tensor:
    """:func:`load_video_clip` for a video already decoded to ``images`` (F, H, W, C; a
    ComfyUI IMAGE batch, see :func:`frames_from_images`) shown at ``frame_rate`` frames
    per second: the same frames are picked (nearest to ``start + k / fps``), fit and held
    the same way, and a clip too short gets the same message (``name`` labels it)."""
    frames = frames_from_images(images)
    try:
        rate = float(frame_rate)
    except (TypeError, ValueError):
        raise InputError(f"the frame rate of {name} must be a number, got {frame_rate!r}") from None
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"the frame rate of {name} must be a positive number of frames per second, "
                         f"got {frame_rate!r}")
    num_frames, fps_f, start_f, target, fit = _clip_request(num_frames, fps, start, size, fit, hold_last)
    targets = [start_f + k / fps_f for k in range(num_frames)]
    held = (_HeldFrame(i / rate, i) for i in range(frames.shape[0]))
    picks, seen = _pick_frames(held, rate, targets, 0.0, lambda f: frames[f.index].numpy(), hold_last)
    return _finish_clip(name, picks, seen, num_frames, fps_f, start_f, target, fit)


def _duration(seen: dict) -> float:
    return (seen["last_t"] or 0.0) + (seen["step"] or 0.0)


def _raise_too_short(p: Any, picks: list, seen: dict, num_frames: int, fps: float, start: float) -> None:
    step = seen["step"] or 0.0
    duration = _duration(seen)
    end_needed = start + num_frames / fps  # the last sampled frame is shown for 1/fps too
    got = sum(x is not None for x in picks)
    src = f"{1.0 / step:.3g} fps" if step else "unknown fps"
    # After a seek the decoder saw only the frames from a key frame on.
    found = src if seen.get("frames_counted_from_seek") else f"{seen['frames']} frames, {src}"
    if start >= duration:
        raise InputError(f"video {p} is too short: start={start:g} s (--start) is past its end ({duration:.2f} s, "
                         f"{found}); use a start below {duration:.2f} s")
    raise InputError(
        f"video {p} is too short: it lasts {duration:.2f} s ({found}); {num_frames} frames at {fps:g} fps "
        f"from start={start:g} s need it to run to {end_needed:.2f} s, and only {got} fit. Take at most "
        f"{max(1, got)} frames (--frames, num_frames), a lower --fps or an earlier --start, or hold the last "
        f"frame for the rest (--hold-last, hold_last_frame).")
