"""Copies of a clip on another plain background, each with its caption's background word swapped.

Why: a T-LoRA learns the reference's path through the features of the reference's scene. On
the toy model it moved new subjects on the reference's background along the path and failed
on the other one: a yellow spiral on black moved 3 of 4 subjects on black and 0 of 4
coloured subjects on gray. Trained on the clip on both backgrounds, the path is the only
thing the views share (docs/EXPERIMENTS.md §9). The same idea as the hue rotations of
:mod:`cav_core.recolor`, for the background.

Only for a clip whose caption names one plain background of :data:`PLAIN_BACKGROUNDS` ("on a
black background") and whose frame border is that colour: the swap keys each pixel on its
distance from the background colour, which is only the object/background split in a plain
scene. Real footage fails the border test and is used as it is (:func:`rebackground_skip_reason`).
"""

from __future__ import annotations

import re

import torch

PLAIN_BACKGROUNDS: dict[str, tuple[float, float, float]] = {"black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5)}
"""The backgrounds a clip is swapped between: the toy world's (cav_core/toyworld/spec.py
BACKGROUNDS), the only scenes whose words the toy model knows."""

BORDER_TOLERANCE = 0.06
"""Largest channel difference from the named colour a border pixel may have (anti-aliasing and
codec noise stay under it)."""
BORDER_SHARE = 0.95
"""Share of border pixels that must be within the tolerance for the background to count as plain."""

_PHRASE = re.compile(r"\b(" + "|".join(PLAIN_BACKGROUNDS) + r")(\s+background)\b", re.IGNORECASE)


def _named(caption: str) -> list[re.Match]:
    return list(_PHRASE.finditer(caption))


def rebackground_skip_reason(frames: torch.Tensor, caption: str) -> str | None:
    """Why the clip cannot be put on another background with a true caption, or None when it can."""
    named = _named(caption)
    if len(named) != 1:
        words = " or ".join(f"'{w} background'" for w in PLAIN_BACKGROUNDS)
        return (f"the caption names {'no' if not named else 'more than one'} plain background ({words})")
    word = named[0].group(1).lower()
    bg = torch.tensor(PLAIN_BACKGROUNDS[word], dtype=frames.dtype)
    border = torch.cat([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], dim=1)
    plain = ((border - bg).abs().amax(dim=-1) <= BORDER_TOLERANCE).float().mean().item()
    if plain < BORDER_SHARE:
        return f"the clip's border is not plain {word} ({plain:.0%} of it is), so its background cannot be keyed out"
    return None


def named_background(caption: str) -> str:
    """The plain background word the caption names, lower case (the caption must name exactly one:
    :func:`rebackground_skip_reason` is None)."""
    return _named(caption)[0].group(1).lower()


def object_coverage(frames: torch.Tensor, background: str) -> torch.Tensor:
    """Each pixel's share ``(F,H,W,1)`` of the object, in frames on plain ``background``: its largest
    channel distance from the background, relative to the clip's largest one (the object's full
    contrast). The toy renderer (cav_core/toyworld/clips.py) blends an edge pixel linearly, so
    this is its anti-aliasing coverage."""
    a = torch.tensor(PLAIN_BACKGROUNDS[background], dtype=frames.dtype)
    dist = (frames - a).abs().amax(dim=-1, keepdim=True)
    return (dist / dist.max().clamp_min(1e-6)).clamp(0.0, 1.0)


def swap_background(frames: torch.Tensor, old: str, new: str) -> torch.Tensor:
    """Frames ``(F,H,W,3)`` on plain background ``old`` moved onto plain background ``new``: the
    background's share of each pixel (:func:`object_coverage`) changes colour, so anti-aliased
    edges stay anti-aliased."""
    a = torch.tensor(PLAIN_BACKGROUNDS[old], dtype=frames.dtype)
    b = torch.tensor(PLAIN_BACKGROUNDS[new], dtype=frames.dtype)
    return (frames + (1.0 - object_coverage(frames, old)) * (b - a)).clamp(0.0, 1.0)


def rebackground_views(frames: torch.Tensor, caption: str) -> list[tuple[torch.Tensor, str]]:
    """The clip on every other plain background, each with its caption; [] when the clip
    cannot be swapped (see :func:`rebackground_skip_reason`)."""
    if rebackground_skip_reason(frames, caption) is not None:
        return []
    m = _named(caption)[0]
    old = m.group(1).lower()
    views = []
    for new in PLAIN_BACKGROUNDS:
        if new != old:
            word = new.capitalize() if m.group(1)[0].isupper() else new
            views.append((swap_background(frames, old, new), caption[:m.start(1)] + word + caption[m.end(1):]))
    return views
