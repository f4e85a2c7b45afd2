"""Hue-rotated copies of a clip, each with its caption's color words rotated to match.

Why: a T-LoRA trained on one clip learns how that clip looks along with how it moves, and
the look leaks into new subjects. Rotating the RGB channels (R->G->B, a hue rotation by
120 degrees) keeps every frame's layout and motion and changes only color. If the caption's
color words rotate too, the caption still describes its frames, so the copies share only the
motion. Captions must stay true: a recolored clip trained under its old caption taught the
T-LoRA to fight the words and fidelity fell (docs/EXPERIMENTS.md §2).

A channel rotation maps the six primary and secondary colors onto each other and leaves
white, black and gray unchanged, so those words rotate exactly. A caption naming any other
color (orange, pink, reddish, ...) cannot be rotated, and one naming no color at all would
be false for the rotated copies (a caption of real footage says nothing of the green skin
a rotation makes): in both cases the clip is used as it is (:func:`recolor_skip_reason`).

A white object has no hue to rotate, so a white reference trains on itself alone, and the
white references were the motion suite's worst (docs/EXPERIMENTS.md §10, §12). With
``tint_white``, a caption whose one color word is "white", of a clip on a plain background
(:mod:`cav_core.rebackground` keys the object out), is tinted :data:`TINT` and then rotated:
the views are the clip in white, red, green and blue, each captioned with its color.
"""

from __future__ import annotations

import re

import torch

from .rebackground import PLAIN_BACKGROUNDS, named_background, object_coverage, rebackground_skip_reason

# RGB of each color word that a channel rotation maps onto another word of this table.
_PRIMARY = {
    "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1),
    "yellow": (1, 1, 0), "cyan": (0, 1, 1), "magenta": (1, 0, 1),
}
# Color words a channel rotation cannot map to a word: a caption with one is not recolored.
_UNROTATABLE = (
    "orange", "pink", "purple", "violet", "brown", "gold", "golden", "beige", "tan", "turquoise", "teal",
    "navy", "maroon", "lime", "olive", "indigo", "crimson", "scarlet", "amber", "lavender", "peach",
    "coral", "khaki", "aqua", "blond", "blonde", "bronze", "copper", "ginger", "rust",
    "ivory", "cream", "emerald", "ruby", "azure", "cerulean", "mauve", "fuchsia", "rose", "rosy", "sepia",
    "chartreuse", "vermilion", "saffron", "mustard", "burgundy", "plum", "lilac", "mint", "jade", "cobalt",
    "sapphire", "auburn", "brunette", "hazel", "salmon", "blush", "cherry", "wine", "redhead",
)
# Shades of a rotatable color ("reddish", "bluish"): a rotation has no word for them either.
_SHADE = re.compile(r"(?:red|green|blue?|yellow|cyan|magenta)d?ish", re.IGNORECASE)
# The two hue rotations: output channel c takes input channel ROTATIONS[k][c].
ROTATIONS: tuple[tuple[int, int, int], ...] = ((1, 2, 0), (2, 0, 1))

_WORD = re.compile(r"[A-Za-z]+")


def _rotated_word(word: str, rotation: tuple[int, int, int]) -> str:
    rgb = _PRIMARY[word.lower()]
    new = tuple(rgb[i] for i in rotation)
    out = next(name for name, v in _PRIMARY.items() if v == new)
    return out.capitalize() if word[0].isupper() else out


def unrotatable_color(caption: str) -> str | None:
    """The first color word of ``caption`` that a hue rotation cannot rename, if any."""
    for w in _WORD.findall(caption):
        if w.lower() in _UNROTATABLE or _SHADE.fullmatch(w):
            return w
    return None


def recolor_skip_reason(caption: str, frames: torch.Tensor | None = None, tint_white: bool = False) -> str | None:
    """Why ``caption`` cannot stay true under a hue rotation, or None when it can: it must
    name at least one color a rotation renames and none that it cannot, or, with
    ``tint_white`` and the ``frames``, be a white object that can be tinted
    (:func:`tint_skip_reason`)."""
    bad = unrotatable_color(caption)
    if bad is not None:
        return f"the caption names {bad!r}, which a hue rotation cannot rename"
    if not any(w.lower() in _PRIMARY for w in _WORD.findall(caption)):
        tint = tint_skip_reason(frames, caption) if tint_white and frames is not None else None
        if tint_white and frames is not None and tint is None:
            return None
        return (f"the caption names no color a hue rotation can rename ({', '.join(_PRIMARY)})"
                + (f", and its white object cannot be tinted: {tint}" if tint and _whites(caption) else ""))
    return None


TINT = "red"
"""The color a white object takes before its hue rotations give green and blue."""


def _whites(caption: str) -> list[re.Match]:
    return [m for m in _WORD.finditer(caption) if m.group(0).lower() == "white"]


def tint_skip_reason(frames: torch.Tensor, caption: str) -> str | None:
    """Why the white object of ``frames`` cannot be tinted with a true caption, or None when it can:
    the caption names "white" once and no other color, and the clip is on the one plain background
    it names (:func:`cav_core.rebackground.rebackground_skip_reason`)."""
    if len(_whites(caption)) != 1 or any(w.lower() in _PRIMARY for w in _WORD.findall(caption)):
        return "the caption must name 'white' once and no other color"
    return rebackground_skip_reason(frames, caption)


def tint_frames(frames: torch.Tensor, background: str, color: str = TINT) -> torch.Tensor:
    """Frames ``(F,H,W,3)`` of a white object on plain ``background`` with the object in ``color``:
    its share of each pixel (:func:`cav_core.rebackground.object_coverage`) takes the new color."""
    bg = torch.tensor(PLAIN_BACKGROUNDS[background], dtype=frames.dtype)
    rgb = torch.tensor(_PRIMARY[color], dtype=frames.dtype)
    return (bg + object_coverage(frames, background) * (rgb - bg)).clamp(0.0, 1.0)


def rotate_caption(caption: str, rotation: tuple[int, int, int]) -> str:
    """``caption`` with each primary/secondary color word replaced by its rotated color."""
    if unrotatable_color(caption) is not None:
        raise ValueError(f"caption {caption!r} names a color a hue rotation cannot rename")
    return _WORD.sub(lambda m: _rotated_word(m.group(0), rotation) if m.group(0).lower() in _PRIMARY
                     else m.group(0), caption)


def rotate_frames(frames: torch.Tensor, rotation: tuple[int, int, int]) -> torch.Tensor:
    """Frames ``(..., 3)`` with their RGB channels rotated."""
    return frames[..., list(rotation)].contiguous()


def hue_rotated_views(frames: torch.Tensor, caption: str, tint_white: bool = False) -> list[tuple[torch.Tensor, str]]:
    """The clip and its two hue rotations, each with its caption; with ``tint_white``, for a
    white object, the clip and its tint with that tint's two rotations; only the clip when a
    recolored caption would not be true (see :func:`recolor_skip_reason`)."""
    views = [(frames, caption)]
    if recolor_skip_reason(caption, frames, tint_white) is not None:
        return views
    base = (frames, caption)
    if recolor_skip_reason(caption) is not None:  # a white object: tint it first
        m = _whites(caption)[0]
        word = TINT.capitalize() if m.group(0)[0].isupper() else TINT
        base = (tint_frames(frames, named_background(caption)), caption[:m.start()] + word + caption[m.end():])
        views.append(base)
    return views + [(rotate_frames(base[0], r), rotate_caption(base[1], r)) for r in ROTATIONS]
