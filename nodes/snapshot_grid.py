"""The snapshot grid of the training nodes: one row per snapshot, its validation sample's
frames side by side, the step and the motion score written at the row's left.

Drawn with Pillow, which every ComfyUI install has (ComfyUI's own image nodes need it);
cav_core does not depend on it, so the grid lives here and not in cav_core.snapshots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: Frames per row at most: evenly spaced over the clip, first and last kept (a 16-frame
#: 256 px sample side by side would be a 4096 px wide row).
MAX_COLUMNS = 8
#: Frames smaller than this (the toy model's 32 px) are enlarged, nearest neighbour, to be seen.
MIN_CELL = 64
LABEL_WIDTH = 132


def _cells(frames: Any, n: int, cell: tuple[int, int]):
    """``n`` frames of a (F, H, W, C) clip, evenly spaced, each resized to ``cell`` = (h, w):
    a (n, h, w, 3) uint8 array."""
    import numpy as np
    import torch

    t = frames.detach().float().cpu() if hasattr(frames, "detach") else torch.as_tensor(np.asarray(frames)).float()
    idx = torch.linspace(0, t.shape[0] - 1, n).round().long()
    t = t[idx][..., :3].clamp(0, 1)
    if t.shape[-1] == 1:
        t = t.repeat(1, 1, 1, 3)
    t = torch.nn.functional.interpolate(t.permute(0, 3, 1, 2), size=cell, mode="nearest").permute(0, 2, 3, 1)
    return (t * 255).round().to(torch.uint8).numpy()


def _label(text: list[str], height: int):
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (LABEL_WIDTH, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=15)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        font = ImageFont.load_default()  # the fixed bitmap font
    y = 6
    for line in text:
        draw.text((8, y), line, fill=(235, 235, 235), font=font)
        y += 19
    return np.asarray(img)


def snapshot_grid(snapshots: Sequence[Any], reference: Any | None = None):
    """The grid as a ComfyUI IMAGE (1, H, W, 3): a first row with the reference clip (when
    given), then one row per :class:`cav_core.snapshots.Snapshot` with its validation sample,
    or black cells and "no sample" where it has none (no validation prompt). No snapshots:
    a 1x1 black image."""
    import numpy as np
    import torch

    if not snapshots:
        return torch.zeros(1, 1, 1, 3)
    clips = [s.preview for s in snapshots if s.preview is not None]
    shape_from = clips[0] if clips else reference
    if shape_from is not None:
        h, w = int(shape_from.shape[1]), int(shape_from.shape[2])
        n = min(MAX_COLUMNS, max(int(c.shape[0]) for c in clips + ([reference] if reference is not None else [])))
    else:
        h = w = MIN_CELL
        n = MAX_COLUMNS
    scale = max(1, math.ceil(MIN_CELL / max(1, min(h, w))))
    cell = (h * scale, w * scale)
    row_h = max(cell[0], 48)

    def row(frames: Any | None, text: list[str]):
        body = np.zeros((row_h, n * cell[1], 3), dtype=np.uint8)
        if frames is not None:
            cells = _cells(frames, n, cell)
            top = (row_h - cell[0]) // 2
            for i, c in enumerate(cells):
                body[top:top + cell[0], i * cell[1]:(i + 1) * cell[1]] = c
        return np.concatenate([_label(text, row_h), body], axis=1)

    rows = [row(reference, ["reference"])] if reference is not None else []
    for s in snapshots:
        if s.preview is None:
            text = ["no sample"]
        elif s.motion_score is None:
            text = ["no score"]
        else:
            text = [f"motion {s.motion_score:+.2f}"]
        rows.append(row(s.preview, [f"step {s.step}", *text]))
    sep = np.full((2, rows[0].shape[1], 3), 90, dtype=np.uint8)
    stacked = np.concatenate([r for pair in zip(rows, [sep] * len(rows)) for r in pair][:-1], axis=0)
    return torch.from_numpy(stacked.astype(np.float32) / 255.0)[None]


__all__ = ["snapshot_grid", "MAX_COLUMNS", "MIN_CELL", "LABEL_WIDTH"]
