"""Toy world spec v1: the public contract for the synthetic clips.

Everything that a trained adapter, a benchmark or a saved reference clip depends on lives
here as a constant, so that a change to the toy world is a deliberate, visible version bump
(``SPEC_VERSION``) instead of a silent drift that would make old results incomparable.

Coordinates: positions are in pixel-index coordinates, x to the right and y *down*
(image convention, so "up" means decreasing y). Pixel (row i, column j) has its center at
(x=j, y=i) and covers [j-0.5, j+0.5] x [i-0.5, i+0.5]; the frame spans [-0.5, SIZE-0.5] on
both axes. An object center is the center of the object's (OBJECT_SIZE x OBJECT_SIZE)
bounding box.

This module is numpy-free and torch-free on purpose: it only holds names, numbers and the
caption grammar, so anything (nodes, scripts, tests) can import it cheaply.
"""

from __future__ import annotations

import math

from ..errors import InputError

SPEC_VERSION: int = 1
"""Bump when anything below changes meaning; saved clips and results record it."""

NUM_FRAMES: int = 16
FPS: int = 8
SIZE: int = 32
"""Frame height and width in pixels (frames are square)."""

OBJECT_SIZE: int = 9
"""Side of the object's bounding box in pixels (about a quarter of the frame)."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
"""``triangle`` is an upright isosceles triangle (apex up, base at the bottom) that fills
its bounding box: apex at the top-center, base corners at the bottom corners."""

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}

BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "gray": (0.5, 0.5, 0.5),
}

_D = 1.0 / math.sqrt(2.0)
DIRECTIONS: dict[str, tuple[float, float]] = {
    "still": (0.0, 0.0),
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-_D, -_D),
    "up-right": (_D, -_D),
    "down-left": (-_D, _D),
    "down-right": (_D, _D),
}
"""Unit vectors (dx, dy) in image coordinates (y down). Diagonals have unit length, so a
speed is always measured along the direction of motion."""

MOVING_DIRECTIONS: tuple[str, ...] = tuple(d for d in DIRECTIONS if d != "still")

SPEEDS: dict[str, float] = {"slow": 0.8, "fast": 1.5}
"""Pixels per frame along the direction of motion. At ``fast`` a horizontal move covers
22.5 px over 16 frames, which still fits: the center may range over [4, 27] (23 px)."""

CURVED_MOTIONS: dict[str, str] = {
    "circle": "moving in a circle",
    "zigzag": "moving in a zigzag",
    "bounce": "bouncing",
    "stop_and_go": "stopping and going",
}
"""Motions that are NOT in the pretraining set (held out to test motion customization),
mapped to the verb phrase used in their full caption."""

CENTER_MIN: float = (OBJECT_SIZE - 1) / 2.0
CENTER_MAX: float = SIZE - 1 - (OBJECT_SIZE - 1) / 2.0
"""Range of object centers (both axes) for which the whole object is inside the frame."""


def _check(kind: str, value: str, allowed) -> None:
    if value not in allowed:
        raise InputError(f"unknown toy-world {kind} {value!r}; expected one of {sorted(allowed)}")


def _check_appearance(color: str, shape: str, background: str) -> None:
    _check("color", color, COLORS)
    _check("shape", shape, SHAPES)
    _check("background", background, BACKGROUNDS)


def full_caption(color: str, shape: str, direction: str, background: str) -> str:
    """``"a {color} {shape} moving {direction} on a {background} background"``.

    The direction word is kept even for ``still`` ("moving still") so the grammar has a
    single fixed slot for the motion word; the motion token's position is then the same in
    every full caption.
    """
    _check_appearance(color, shape, background)
    _check("direction", direction, DIRECTIONS)
    return f"a {color} {shape} moving {direction} on a {background} background"


def motion_unnamed_caption(color: str, shape: str, background: str) -> str:
    """``"a {color} {shape} moving on a {background} background"``: says that it moves but
    not how, so a motion adapter has to supply the how."""
    _check_appearance(color, shape, background)
    return f"a {color} {shape} moving on a {background} background"


def appearance_caption(color: str, shape: str, background: str) -> str:
    """``"a {color} {shape} on a {background} background"``: appearance only, no motion."""
    _check_appearance(color, shape, background)
    return f"a {color} {shape} on a {background} background"


def curved_caption(color: str, shape: str, kind: str, background: str) -> str:
    """Full caption of a held-out curved motion, e.g.
    ``"a red circle moving in a circle on a black background"`` or
    ``"a red circle bouncing on a black background"`` (phrase from ``CURVED_MOTIONS``)."""
    _check_appearance(color, shape, background)
    _check("curved motion", kind, CURVED_MOTIONS)
    return f"a {color} {shape} {CURVED_MOTIONS[kind]} on a {background} background"
