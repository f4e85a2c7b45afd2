"""A whole-file video reader for tests: every frame and the average fps, to check what the
runtime wrote or decoded. The runtime has one decoder (``cav_core.data.load_video_clip``);
this reads through the same ``cav_core.video_io.open_video`` / ``frame_to_rgb``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cav_core.errors import VideoReadError
from cav_core.video_io import frame_to_rgb, open_video, rgb_to_float


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame of ``path``: float32 (F, H, W, 3) RGB in 0..1, and the average fps.

    Through the runtime's own ``open_video`` and ``frame_to_rgb``, so it sees the frames
    ``data.load_video_clip`` sees; raises the same :class:`VideoReadError`s.
    """
    p = Path(path)
    frames: list[np.ndarray] = []
    times: list[float] = []
    with open_video(p) as (container, stream):
        for frame in container.decode(stream):
            frames.append(frame_to_rgb(frame))
            if frame.time is not None:
                times.append(float(frame.time))
        avg = stream.average_rate
        guessed = getattr(stream, "guessed_rate", None)
    if not frames:
        raise VideoReadError(f"cannot read video {p}: it contains no decodable frames")
    fps = _average_fps(times, avg, guessed)
    return rgb_to_float(np.stack(frames)), fps


def _average_fps(times: list[float], avg: Any, guessed: Any) -> float:
    """Frames per second from the frame timestamps (what the viewer sees), falling back to
    the container's average / guessed rate when timestamps are missing or degenerate."""
    if len(times) >= 2:
        span = max(times) - min(times)
        if span > 0:
            return float((len(times) - 1) / span)
    for rate in (avg, guessed):
        if rate:
            return float(rate)
    return 0.0
