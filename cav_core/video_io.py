"""Video file reading and writing with PyAV only (no imageio / OpenCV), so the node pack
has a single, wheel-installable media dependency.

Frames are (F, H, W, C) arrays everywhere: float in 0..1 or uint8. Writes are atomic (temp
file in the same folder, then moved into place) so a crash never leaves a half-written
video under the user's name.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from .errors import CavError, InputError, VideoReadError
from .fileutil import atomic_write

PathLike = Union[str, "os.PathLike[str]"]
#: A video file on disk, or one already in memory / open (a binary file-like with read and
#: seek, e.g. the BytesIO a ComfyUI VIDEO hands out): both decode the same way.
VideoSource = Union[str, "os.PathLike[str]", BinaryIO]

MP4_CRF: int = 12
"""x264 constant-rate factor: 12 is visually lossless; the toy clips are tiny, so the
extra bytes cost nothing and measures on re-read clips stay close to the originals."""

WEBM_CRF: int = 15

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".gif")

#: How a frame of another shape is fit to the model's (H, W) (``data.fit_frames``; here so the
#: command line can list them without importing torch): ``crop`` scales it to cover
#: and cuts the centre (nothing stretched, the edges lost), ``pad`` scales it to fit
#: inside and adds black bars (the whole frame kept), ``stretch`` scales each side on its
#: own (the whole frame kept, shapes distorted).
FIT_MODES: tuple[str, ...] = ("crop", "pad", "stretch")


def check_fit(fit: Any) -> str:
    """``fit`` as one of :data:`FIT_MODES`, else an :class:`InputError` naming the flag and widget."""
    if isinstance(fit, str) and fit.strip().lower() in FIT_MODES:
        return fit.strip().lower()
    raise InputError(f"fit must be one of {', '.join(FIT_MODES)} (--fit on the command line, the 'fit' widget of "
                     f"Load Reference Video), got {fit!r}")


def _to_numpy(frames: Any) -> np.ndarray:
    """numpy view of a numpy array or torch tensor (torch is only touched if given one)."""
    if isinstance(frames, np.ndarray):
        return frames
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # torch.Tensor, without importing torch
        t = frames.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return t.numpy()
    return np.asarray(frames)


def frames_to_uint8(frames: Any) -> np.ndarray:
    """(F, H, W, C) uint8 from float 0..1 (clipped, rounded) or uint8 (unchanged) frames.

    Single-channel frames are repeated to RGB and an alpha channel is dropped, because all
    three encoders here take RGB. Raises :class:`InputError` for other shapes/dtypes.
    """
    a = _to_numpy(frames)
    if a.ndim != 4:
        raise InputError(f"video frames must have shape (F, H, W, C), got shape {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise InputError("video has no frames")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        a = a[..., :3]
    elif a.shape[-1] != 3:
        raise InputError(f"video frames must have 1, 3 or 4 channels, got {a.shape[-1]}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"video frames must be float in 0..1 or uint8, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.integer):
        raise InputError(f"integer video frames must be uint8, got dtype {a.dtype}")
    a = np.nan_to_num(a.astype(np.float32), nan=0.0)
    return np.ascontiguousarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))


def _gif_palette(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Palette indices (F, H, W) uint8 and a (256, 4) ARGB palette for the whole clip.

    Exact when the clip has at most 256 distinct colors (always true for toy-world clips);
    otherwise a fixed 6x7x6 color cube, which is crude but fast and deterministic (a GIF is
    a preview, mp4/webm are the faithful formats).
    """
    flat = frames.reshape(-1, 3)
    packed = (flat[:, 0].astype(np.uint32) << 16) | (flat[:, 1].astype(np.uint32) << 8) | flat[:, 2]
    colors, inverse = np.unique(packed, return_inverse=True)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255  # opaque
    if len(colors) <= 256:
        palette[: len(colors), 1] = (colors >> 16) & 255
        palette[: len(colors), 2] = (colors >> 8) & 255
        palette[: len(colors), 3] = colors & 255
        index = inverse.reshape(frames.shape[:3]).astype(np.uint8)
        return index, palette
    levels = np.array([6, 7, 6])
    q = np.rint(flat.astype(np.float32) / 255.0 * (levels - 1)).astype(np.int64)
    index = (q[:, 0] * levels[1] + q[:, 1]) * levels[2] + q[:, 2]
    r, g, b = np.meshgrid(*(np.arange(n) for n in levels), indexing="ij")
    cube = np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1) / (levels - 1)
    palette[: len(cube), 1:] = np.rint(cube * 255).astype(np.uint8)
    return index.reshape(frames.shape[:3]).astype(np.uint8), palette


def _encode(tmp: Path, ext: str, frames: np.ndarray, fps: float) -> None:
    import av  # deferred: importing this module stays cheap

    # The atomic writer hands over an empty placeholder created private (0600); remove it
    # so the encoder creates the file afresh with the user's normal permissions.
    if tmp.exists() and tmp.stat().st_size == 0:
        tmp.unlink()
    rate = Fraction(fps).limit_denominator(1001)
    f, h, w, _ = frames.shape
    fmt = {".mp4": "mp4", ".webm": "webm", ".gif": "gif"}[ext]
    with av.open(str(tmp), mode="w", format=fmt) as container:
        if ext == ".mp4":
            stream = container.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(MP4_CRF), "preset": "medium"}
        elif ext == ".webm":
            stream = container.add_stream("libvpx-vp9", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(WEBM_CRF), "b": "0", "row-mt": "1"}
        else:
            stream = container.add_stream("gif", rate=rate)
            stream.pix_fmt = "pal8"
        stream.width = w
        stream.height = h
        if ext == ".gif":
            index, palette = _gif_palette(frames)
            vframes = (av.VideoFrame.from_ndarray((index[i], palette), format="pal8") for i in range(f))
        else:
            vframes = (av.VideoFrame.from_ndarray(frames[i], format="rgb24") for i in range(f))
        for vf in vframes:
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(path: PathLike, frames: Any, fps: float, overwrite: bool = True, unique: bool = False) -> Path:
    """Encode ``frames`` (F, H, W, C; float 0..1 or uint8; numpy or torch) to ``path``.

    The extension picks the format: ``.mp4`` (H.264 yuv420p, crf 12; H and W must be even
    because of the 2x2 chroma subsampling), ``.webm`` (VP9) or ``.gif`` (palette, exact
    for <= 256 colors). The file is written to a temp name in the same folder and moved
    into place, so on any error nothing is left behind. With ``overwrite=False`` an
    existing file raises :class:`InputError` instead of being replaced, or with ``unique``
    the video takes the next free counter name (the path written is returned).
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(f"cannot write video {p}: extension must be one of {', '.join(SUPPORTED_EXTENSIONS)}")
    fps_f = check_fps(fps)
    data = frames_to_uint8(frames)
    _, h, w, _ = data.shape
    if ext in (".mp4", ".webm") and (h % 2 or w % 2):
        raise InputError(
            f"cannot write {p}: {ext} (yuv420p) needs an even width and height, got {w}x{h}; "
            "crop or pad the frames by one pixel, or write a .gif"
        )
    return atomic_write(p, lambda tmp: _encode(tmp, ext, data, fps_f), overwrite=overwrite, unique=unique)


def check_video_file(p: Path) -> None:
    """:class:`VideoReadError` unless ``p`` is a regular file: a folder, a missing path, and a
    FIFO or device (which would block or read forever) each get their own message."""
    if p.is_file():
        return
    if p.is_dir():
        what = "the file is a folder, not a video file"
    elif p.exists():
        what = "it is not a regular file (a FIFO, socket or device); give a video file (--video, path)"
    else:
        what = "the file does not exist"
    raise VideoReadError(f"cannot read video {p}: {what}")


def check_fps(fps: Any, what: str = "fps") -> float:
    """A frame rate to write a video at: a finite number > 0 (at most 1000)."""
    try:
        fps_f = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {fps!r}") from None
    if not np.isfinite(fps_f) or not 0 < fps_f <= 1000:
        raise InputError(f"{what} must be a frame rate in (0, 1000], got {fps!r}")
    return fps_f


def is_stream(source: Any) -> bool:
    """Whether ``source`` is an open binary file-like (read + seek) rather than a path."""
    return hasattr(source, "read") and hasattr(source, "seek")


@contextmanager
def open_video(path: VideoSource, name: str | None = None) -> Iterator[tuple[Any, Any]]:
    """The one way in to a video file: ``(container, stream)`` of its first video stream.

    Checks what ffmpeg would not (missing, a folder, empty, cut short, a still image or
    text file, no video stream), and turns any decoding failure inside the ``with`` block
    into a :class:`VideoReadError` naming the path; the project's own errors pass as they
    are. ``data.load_video_clip``, the one decoder, reads through it with
    :func:`frame_to_rgb` (and the tests' whole-file reader, tests/video_reader.py).

    ``path`` may also be a binary file-like already open (a video held in memory, e.g. by
    ComfyUI's VIDEO type): it gets the same checks from its current content; ``name`` is
    what the messages call it (default: the path, or "from the stream")."""
    if is_stream(path):
        label: Any = name or "from the stream"
        check_complete(path, name=label)
        path.seek(0)
        src: Any = path
    else:
        p = Path(path)
        label = name or p
        check_video_file(p)
        check_complete(p)
        src = str(p)
    import av

    try:
        with av.open(src, mode="r") as container:
            yield container, video_stream(container, label)
    except CavError:
        raise
    except Exception as e:  # av.error.FFmpegError and friends: not a video, truncated, unknown codec
        raise VideoReadError(f"cannot read video {label}: {type(e).__name__}: {e}; is it a video file "
                             f"(mp4, webm, mov, mkv, gif)?") from e


def _quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns the display matrix asks for (0..3). Phones store a
    portrait clip as landscape pixels plus a rotation; ffmpeg's command line applies it,
    PyAV leaves it to the caller."""
    try:
        degrees = float(frame.rotation)
    except Exception:  # no display matrix, or one PyAV cannot read
        return 0
    if not -360.0 <= degrees <= 360.0:  # an unset / malformed matrix reads as a huge number
        return 0
    return round(degrees / 90.0) % 4


def display_size(frame: Any) -> tuple[int, int]:
    """(width, height) of a decoded frame as it is shown, after its rotation."""
    return (frame.height, frame.width) if _quarter_turns(frame) % 2 else (frame.width, frame.height)


def frame_to_rgb(frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded PyAV frame as an (H, W, 3) RGB array the way a player shows it: rotated by
    its display matrix, converted with its own colour range and matrix (PyAV reads them
    from the frame), uint8 for 8-bit sources and uint16 (0..65535) for deeper ones, so a
    10-bit clip keeps its extra levels; :func:`rgb_to_float` maps either to 0..1.

    ``size`` = (width, height) as displayed has the decoder shrink the frame (area filter)
    on the way, so a 4K source never exists at full size."""
    turns = _quarter_turns(frame)
    deep = max((c.bits for c in frame.format.components), default=8) > 8
    fmt = "rgb48le" if deep else "rgb24"
    if size is None:
        a = frame.to_ndarray(format=fmt)
    else:
        w, h = size if turns % 2 == 0 else size[::-1]
        a = frame.reformat(width=w, height=h, format=fmt, interpolation="AREA").to_ndarray()
    return np.ascontiguousarray(np.rot90(a, turns)) if turns else a


def rgb_to_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 or uint16 RGB from :func:`frame_to_rgb` as float32 in 0..1."""
    scale = 65535.0 if rgb.dtype == np.uint16 else 255.0
    return rgb.astype(np.float32) / np.float32(scale)


# --------------------------------------------------------------------------- file checks

#: Demuxers that make "video" out of text (``tty`` opens any .txt file as ANSI art).
_TEXT_FORMATS = frozenset({"tty", "bin", "adf", "idf", "xbin"})


def video_stream(container: Any, path: Path) -> Any:
    """The first video stream of an opened PyAV ``container``; :class:`VideoReadError`
    for a file without one, a still image (png, jpeg, webp, ...) or a text file, which
    ffmpeg would otherwise open as a one-frame or text-rendering "video"."""
    names = set(container.format.name.split(","))
    if names & _TEXT_FORMATS:
        raise VideoReadError(f"cannot read video {path}: it is a text file, not a video; give a video file "
                             f"(mp4, webm, mov, mkv, gif)")
    still = sorted(n for n in names if (n.endswith("_pipe") and n != "gif_pipe") or n in ("image2", "image2pipe"))
    if still:
        kind = still[0].replace("_pipe", "")
        raise VideoReadError(f"cannot read video {path}: it is a still image ({kind}), not a video; give a video "
                             f"file (mp4, webm, mov, mkv, gif), or load the image as frames with an image loader")
    if not container.streams.video:
        raise VideoReadError(f"cannot read video {path}: the file has no video stream")
    return container.streams.video[0]


def check_complete(path: VideoSource, name: str | None = None) -> None:
    """Raise :class:`VideoReadError` if the file at ``path`` is empty or was cut short.

    A partly downloaded or copied video often still decodes, silently missing its end;
    this reads the container's own size fields instead: the top-level boxes of
    mp4/mov, the segment of mkv/webm (unless it was written with an unknown size, as
    live recordings are), the block chain of a GIF up to its trailer. Other formats
    pass unchecked (ffmpeg reports what it can). ``path`` may be an open binary
    file-like (see :func:`open_video`; ``name`` is what the messages call it)."""
    if is_stream(path):
        label: Any = name or "from the stream"
        path.seek(0, os.SEEK_END)
        problem = _shortfall(path, path.tell(), in_memory=True)
        path.seek(0)
    else:
        label = name or Path(path)
        with open(path, "rb") as f:
            problem = _shortfall(f, os.fstat(f.fileno()).st_size, in_memory=False)
    if problem == "empty":
        raise VideoReadError(f"cannot read video {label}: the file is empty (0 bytes)")
    if problem:
        raise VideoReadError(f"cannot read video {label}: the file is incomplete ({problem}); it was cut short, e.g. "
                             f"by an interrupted download or copy: get the whole file again")


def _shortfall(f: Any, size: int, in_memory: bool) -> str | None:
    """What :func:`check_complete` finds wrong with the ``size`` bytes of ``f``: "empty",
    a description of the shortfall, or None."""
    if size == 0:
        return "empty"
    f.seek(0)
    head = f.read(16)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return _mp4_shortfall(f, size)
    if head[:4] == b"\x1aE\xdf\xa3":
        return _ebml_shortfall(f, size)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        if in_memory:
            f.seek(0)
            return _gif_shortfall(f.read())
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _gif_shortfall(data)
    return None


def _mp4_shortfall(f: Any, size: int) -> str | None:
    pos = 0
    while pos < size:
        f.seek(pos)
        hdr = f.read(16)
        if len(hdr) < 8:
            return f"it ends inside a box header at byte {pos} of {size}"
        n, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8].decode("latin-1")
        if n == 1:
            if len(hdr) < 16:
                return f"it ends inside the header of its '{kind}' box"
            n = int.from_bytes(hdr[8:16], "big")
        elif n == 0:
            return None  # the last box runs to the end of the file
        if n < 8:
            return None  # not a box structure after all: leave it to ffmpeg
        if pos + n > size:
            return f"its '{kind}' box needs {pos + n} bytes, the file has {size}"
        pos += n
    return None


def _ebml_vint(f: Any, keep_marker: bool) -> tuple[int, int, bool] | None:
    """(value, length, unknown-size) of an EBML variable-size integer, None at end of file."""
    first = f.read(1)
    if not first:
        return None
    b = first[0]
    length = next((i + 1 for i in range(8) if b & (0x80 >> i)), 0)
    if length == 0:
        return 0, 1, True  # invalid: treat as unknown, no verdict
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = (b if keep_marker else b & (0xFF >> length)).to_bytes(1, "big") + rest
    v = int.from_bytes(value, "big")
    return v, length, (not keep_marker and v == (1 << (7 * length)) - 1)


def _ebml_shortfall(f: Any, size: int) -> str | None:
    pos = 0
    while pos < size:
        f.seek(pos)
        ident, size_field = _ebml_vint(f, True), None
        if ident is not None:
            size_field = _ebml_vint(f, False)
        if ident is None or size_field is None:
            return f"it ends inside an element header at byte {pos} of {size}"
        n, unknown = size_field[0], size_field[2]
        if unknown:
            return None  # written live, without a final size: nothing to compare
        end = pos + ident[1] + size_field[1] + n
        if end > size:
            what = "segment" if ident[0] == 0x18538067 else f"element 0x{ident[0]:X}"
            return f"its {what} needs {end} bytes, the file has {size}"
        pos = end
    return None


def _gif_shortfall(data: Any) -> str | None:
    size = len(data)
    cut = f"it ends at byte {size} before the GIF trailer"
    if size < 13:
        return cut
    pos = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while pos < size:
        block = data[pos]
        if block == 0x3B:
            return None
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image: descriptor, local palette, LZW code size, then sub-blocks
            if pos + 10 > size:
                return cut
            flags = data[pos + 9]
            pos += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            return None  # not a block we know: leave the verdict to the decoder
        while pos < size and data[pos] != 0:
            pos += 1 + data[pos]
        pos += 1
    return cut
