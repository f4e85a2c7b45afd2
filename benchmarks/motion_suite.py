"""The motion suite of issue #29: reference motions with a fixed DEV/TEST split.

Deterministic from seeds: every path is built from fixed numbers plus a seeded placement, and
rendered with ``cav_core.toyworld.clips.render_clip``, so nothing is stored but the code.

- The three bundled clips (``clips.reference_clip``: circle, zigzag, bounce), captioned with
  their bundled motion phrase, as the CLI's demo trains them.
- 14 further paths from families the spec (``spec.CURVED_MOTIONS``: circle, zigzag, bounce,
  stop_and_go; and the straight pretraining lines) does not list: ellipses, spirals,
  back-and-forth, S-curves, waves, accelerate-brake, a figure-8 and a move-pause-turn.
  Speed, size and start vary; the start is a seeded random placement that keeps the object in
  the frame. Captioned in the spec's motion-unnamed form (``spec.motion_unnamed_caption``),
  which is what a user with an unlabelled clip of a new motion would write.
- Reference colours, shapes and backgrounds vary (white and gray included).
- New-subject prompts name no motion (the motion-unnamed form) and use only subjects the base
  toy model itself draws in the right colour and shape: measured per prompt over
  ``SUBJECT_SEEDS`` and cached in ``benchmarks/motion_suite_subjects.json`` (rerun with
  ``python benchmarks/motion_suite.py --measure-subjects``).

THE SPLIT. ``split`` of each motion below was fixed when this file was first written, before
any method was run on a suite motion. Tune defaults on "dev" only; report "test", which
nothing is tuned on. NEVER move a motion between halves, and never add a test motion after
seeing a result on it: that would make the test half a second dev half. Families are disjoint
between halves (ellipse, spiral, back-and-forth and the bundled three are dev; S-curve, wave,
accelerate-brake, figure-8 and pause-turn are test), so the test figures measure transfer to
path families the defaults never saw.

    python benchmarks/motion_suite.py              # list the suite
    python benchmarks/motion_suite.py --measure-subjects   # re-measure the base model's subjects
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import _common  # noqa: F401  (puts the repository on sys.path)
from cav_core.toyworld import spec
from cav_core.toyworld.clips import _place, reference_clip, render_clip
from cav_core.toyworld.spec import BACKGROUNDS, COLORS, CURVED_MOTIONS, NUM_FRAMES, SHAPES

DEV = "dev"
TEST = "test"

SUBJECTS_JSON: Path = Path(__file__).resolve().parent / "motion_suite_subjects.json"
SUBJECT_SEEDS: tuple[int, ...] = (0, 1, 2)
"""Seeds the base model is sampled with per candidate subject prompt (``measure_subjects``)."""
SUBJECT_MIN_RIGHT: int = 3
"""A subject is kept when the base model draws its colour AND its shape right on at least this
many of the ``SUBJECT_SEEDS`` (all of them): prompts the base fails would blame a motion method
for the base model's own misses."""

_T = np.arange(NUM_FRAMES, dtype=np.float64)
_U = _T / (NUM_FRAMES - 1)  # 0..1 over the clip


# --------------------------------------------------------------------------- path families
# Each returns (F, 2) offsets (x right, y down); ``_place`` puts them in the frame.


def ellipse(a: float, b: float, turns: float = 1.0, phase: float = 0.0, ccw: bool = False) -> np.ndarray:
    """An ellipse with half-axes ``a`` (x) and ``b`` (y), ``turns`` loops over the clip."""
    s = -1.0 if ccw else 1.0
    ang = phase + s * 2.0 * math.pi * turns * _T / NUM_FRAMES
    return np.stack([a * np.cos(ang), b * np.sin(ang)], axis=1)


def spiral(r0: float, r1: float, turns: float, phase: float = 0.0, ccw: bool = False) -> np.ndarray:
    """A spiral whose radius goes linearly from ``r0`` to ``r1`` over ``turns`` loops."""
    s = -1.0 if ccw else 1.0
    ang = phase + s * 2.0 * math.pi * turns * _U
    r = r0 + (r1 - r0) * _U
    return np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)


def back_and_forth(axis: int, amplitude: float, cycles: float, sharp: bool = False) -> np.ndarray:
    """Oscillates along one axis (0: x, 1: y): smooth (sine) or at constant speed with sharp
    reversals (triangle wave); ``cycles`` full periods over the clip."""
    ph = 2.0 * math.pi * cycles * _U
    s = (2.0 / math.pi) * np.arcsin(np.sin(ph)) if sharp else np.sin(ph)
    out = np.zeros((NUM_FRAMES, 2))
    out[:, axis] = amplitude * s
    return out


def s_curve(length: float, width: float, vertical: bool) -> np.ndarray:
    """An S: travels ``length`` px along one axis while swinging one full period of ``width``
    px across it."""
    along = length * _U
    across = width * np.sin(2.0 * math.pi * _U)
    return np.stack([across, along], axis=1) if vertical else np.stack([along, across], axis=1)


def wave(vx: float, vy: float, amplitude: float, periods: float) -> np.ndarray:
    """Drifts at (vx, vy) px/frame while oscillating perpendicular to the drift."""
    v = np.array([vx, vy], dtype=np.float64)
    n = np.array([-vy, vx]) / math.hypot(vx, vy)
    osc = amplitude * np.sin(2.0 * math.pi * periods * _U)
    return _T[:, None] * v[None, :] + osc[:, None] * n[None, :]


def accelerate_brake(dx: float, dy: float, brake: bool) -> np.ndarray:
    """Covers (dx, dy) px from rest: speeds up then brakes (smooth step) or only speeds up
    (quadratic)."""
    s = (1.0 - np.cos(math.pi * _U)) / 2.0 if brake else _U**2
    return s[:, None] * np.array([dx, dy])[None, :]


def figure8(a: float, b: float) -> np.ndarray:
    """A figure-8 (Lissajous 1:2) with half-width ``a`` and half-height ``b``."""
    ang = 2.0 * math.pi * _T / NUM_FRAMES
    return np.stack([a * np.sin(ang), b * np.sin(2.0 * ang)], axis=1)


def pause_turn(speed: float, first: tuple[float, float], second: tuple[float, float],
               legs: tuple[int, int, int] = (5, 5, 5)) -> np.ndarray:
    """Moves along ``first`` for ``legs[0]`` frames, pauses ``legs[1]``, then moves along
    ``second`` for ``legs[2]`` (unit-ish directions, ``speed`` px/frame)."""
    steps = np.zeros((NUM_FRAMES, 2))
    a, p, _ = legs
    for t in range(1, NUM_FRAMES):
        if t <= a:
            steps[t] = first
        elif t > a + p:
            steps[t] = second
    return np.cumsum(steps * speed, axis=0)


# --------------------------------------------------------------------------- the suite


@dataclass
class Motion:
    """One reference motion: its path, reference look, training caption and split."""

    name: str
    family: str
    split: str
    color: str
    shape: str
    background: str
    make: Callable[[], np.ndarray] = field(repr=False)
    placement_seed: Optional[int] = None
    phrase: Optional[str] = None
    """A bundled motion phrase for the training caption; None: the motion-unnamed form."""

    def centers(self) -> np.ndarray:
        """(F, 2) true centers: the path placed in the frame (seeded, or centered if None)."""
        return _place(self.placement_seed, self.make())

    def frames(self) -> np.ndarray:
        """The rendered reference clip, float32 (F, H, W, 3) in 0..1."""
        return render_clip(self.color, self.shape, self.background, self.centers())

    @property
    def caption(self) -> str:
        """The training caption."""
        if self.phrase is None:
            return spec.motion_unnamed_caption(self.color, self.shape, self.background)
        return f"a {self.color} {self.shape} {self.phrase} on a {self.background} background"

    @property
    def appearance_caption(self) -> str:
        return spec.appearance_caption(self.color, self.shape, self.background)


def _bundled(name: str) -> Motion:
    clip = reference_clip(name)
    c = clip.spec
    centers = clip.centers
    return Motion(name, name, DEV, c.color, c.shape, c.background, lambda: centers - centers.mean(0),
                  None, CURVED_MOTIONS[c.direction])


SUITE: list[Motion] = [
    # ---- DEV: the bundled three (the defaults were already tuned on the circle) + 6 new
    _bundled("circle"),
    _bundled("zigzag"),
    _bundled("bounce"),
    Motion("ellipse_wide", "ellipse", DEV, "white", "circle", "black", lambda: ellipse(9.0, 4.5), 11),
    Motion("ellipse_tall_ccw", "ellipse", DEV, "green", "square", "gray",
           lambda: ellipse(4.0, 8.0, turns=0.75, phase=1.0, ccw=True), 12),
    Motion("spiral_out", "spiral", DEV, "yellow", "triangle", "black", lambda: spiral(1.5, 9.0, 1.25), 13),
    Motion("spiral_in_ccw", "spiral", DEV, "blue", "circle", "gray",
           lambda: spiral(10.0, 2.0, 1.0, phase=2.0, ccw=True), 14),
    Motion("back_forth_x", "back_and_forth", DEV, "magenta", "square", "black",
           lambda: back_and_forth(0, 8.0, 1.5), 15),
    Motion("back_forth_y_sharp", "back_and_forth", DEV, "white", "triangle", "gray",
           lambda: back_and_forth(1, 6.0, 1.0, sharp=True), 16),
    # ---- TEST: 8 new, from families that are not in the dev half
    Motion("s_curve_down", "s_curve", TEST, "cyan", "circle", "black", lambda: s_curve(20.0, 5.0, True), 21),
    Motion("s_curve_right", "s_curve", TEST, "red", "triangle", "gray", lambda: s_curve(16.0, 4.0, False), 22),
    Motion("wave_right", "wave", TEST, "white", "square", "black", lambda: wave(1.3, 0.0, 3.0, 2.0), 23),
    Motion("wave_diag", "wave", TEST, "yellow", "circle", "gray", lambda: wave(-0.9, 0.9, 2.5, 1.5), 24),
    Motion("accel_brake_right", "accelerate_brake", TEST, "green", "triangle", "black",
           lambda: accelerate_brake(20.0, 0.0, brake=True), 25),
    Motion("accel_up", "accelerate_brake", TEST, "magenta", "circle", "gray",
           lambda: accelerate_brake(-6.0, -18.0, brake=False), 26),
    Motion("figure8", "figure8", TEST, "blue", "square", "black", lambda: figure8(8.0, 5.0), 27),
    Motion("pause_turn", "pause_turn", TEST, "white", "circle", "gray",
           lambda: pause_turn(2.0, (1.0, 0.0), (0.0, 1.0)), 28),
]

BY_NAME: dict[str, Motion] = {m.name: m for m in SUITE}


def motions(split: str = TEST) -> list[Motion]:
    """The motions of one half (``dev`` or ``test``), in suite order; ``all`` for both."""
    if split == "all":
        return list(SUITE)
    if split not in (DEV, TEST):
        raise SystemExit(f"--split must be dev, test or all, got {split!r}")
    return [m for m in SUITE if m.split == split]


# --------------------------------------------------------------------------- subjects


def candidate_subjects() -> list[tuple[str, str, str]]:
    """Every (colour, shape, background) of the spec."""
    return [(c, s, b) for c in COLORS for s in SHAPES for b in BACKGROUNDS]


def measure_subjects(handle=None, seeds: tuple[int, ...] = SUBJECT_SEEDS, path: Path = SUBJECTS_JSON) -> dict:
    """Sample the base model on every candidate subject's motion-unnamed prompt over
    ``seeds`` and record how often it draws the colour and the shape right; writes ``path``."""
    from cav_core.sample import generate
    from cav_core.toyworld import measures

    handle = handle or _common.toy_handle()
    rows = {}
    for color, shape, bg in candidate_subjects():
        prompt = spec.motion_unnamed_caption(color, shape, bg)
        col = shp = 0
        for s in seeds:
            v = generate(handle, prompt, seed=s)[0].numpy()
            col += measures.object_color(v) == color
            shp += measures.object_shape(v) == shape
        rows[prompt] = {"color": color, "shape": shape, "background": bg, "color_right": int(col),
                        "shape_right": int(shp)}
        print(f"{prompt:55s} colour {col}/{len(seeds)} shape {shp}/{len(seeds)}", flush=True)
    out = {"model": "embedded toy model (cav_core/toyworld/model)", "spec_version": spec.SPEC_VERSION,
           "seeds": list(seeds), "sampling": "defaults of the toy profile (ddim 25 steps, cfg 7.5)",
           "rule": f"kept when colour and shape are right on >= {SUBJECT_MIN_RIGHT} seeds", "prompts": rows}
    _common.write_json(path, out)
    return out


def good_subjects(path: Path = SUBJECTS_JSON) -> list[tuple[str, str, str]]:
    """Subjects the base model draws right (from the cached measurement)."""
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python benchmarks/motion_suite.py --measure-subjects`")
    data = json.loads(path.read_text())
    return [(r["color"], r["shape"], r["background"]) for r in data["prompts"].values()
            if r["color_right"] >= SUBJECT_MIN_RIGHT and r["shape_right"] >= SUBJECT_MIN_RIGHT]


def prompts_for(motion: Motion, count: int = 8, path: Path = SUBJECTS_JSON) -> list[tuple[str, str, str]]:
    """``count`` new subjects for ``motion``: good subjects of another colour and shape than the
    reference's (so a leak of the reference look is visible), in a fixed order drawn from the
    motion's name; cycles if fewer are available."""
    pool = [s for s in good_subjects(path) if s[0] != motion.color and s[1] != motion.shape]
    if not pool:
        pool = [s for s in good_subjects(path) if s[0] != motion.color]
    if not pool:
        raise SystemExit(f"no measured subject fits motion {motion.name}")
    g = np.random.default_rng(sum(map(ord, motion.name)))
    order = [pool[i] for i in g.permutation(len(pool))]
    return [order[i % len(order)] for i in range(count)]


def prompt_text(subject: tuple[str, str, str]) -> str:
    """The new-subject prompt: names no motion."""
    return spec.motion_unnamed_caption(*subject)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measure-subjects", action="store_true")
    args = ap.parse_args()
    if args.measure_subjects:
        measure_subjects()
    for m in SUITE:
        c = m.centers()
        path_len = float(np.hypot(*np.diff(c, axis=0).T).sum())
        print(f"{m.split:4s} {m.name:20s} {m.family:17s} {m.color:7s} {m.shape:8s} {m.background:5s} "
              f"start ({c[0, 0]:5.1f},{c[0, 1]:5.1f}) path {path_len:5.1f}px  {m.caption!r}")
    if SUBJECTS_JSON.exists():
        print(f"{len(good_subjects())} of {len(candidate_subjects())} subjects kept ({SUBJECTS_JSON.name})")


if __name__ == "__main__":
    main()
