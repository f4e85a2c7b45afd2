"""Toy world spec v1: clip generation, captions, measures and motion fidelity."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pytest

from cav_core.errors import InputError
from cav_core.toyworld import clips, measures, spec
from cav_core.toyworld.clips import (
    CURVED_PATHS,
    curved_clip,
    random_pretraining_clip,
    render_clip,
    straight_clip,
)

ALL_APPEARANCES = list(itertools.product(spec.COLORS, spec.SHAPES, spec.BACKGROUNDS))


def _inside_frame(centers: np.ndarray) -> bool:
    half = spec.OBJECT_SIZE / 2.0
    return bool(
        np.all(centers - half >= -0.5 - 1e-9) and np.all(centers + half <= spec.SIZE - 0.5 + 1e-9)
    )


# ------------------------------------------------------------------ spec constants


def test_spec_v1_constants():
    assert spec.SPEC_VERSION == 1
    assert (spec.NUM_FRAMES, spec.FPS, spec.SIZE, spec.OBJECT_SIZE) == (16, 8, 32, 9)
    assert spec.SHAPES == ("circle", "square", "triangle")
    assert spec.COLORS == {
        "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0),
        "magenta": (1, 0, 1), "cyan": (0, 1, 1), "white": (1, 1, 1),
    }
    assert spec.BACKGROUNDS == {"black": (0, 0, 0), "gray": (0.5, 0.5, 0.5)}
    assert spec.SPEEDS == {"slow": 0.8, "fast": 1.5}
    assert set(spec.DIRECTIONS) == {
        "still", "left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right"
    }
    assert spec.DIRECTIONS["still"] == (0.0, 0.0)
    assert spec.DIRECTIONS["up"] == (0.0, -1.0)  # image coordinates: up is -y
    assert spec.DIRECTIONS["right"] == (1.0, 0.0)
    for name, (dx, dy) in spec.DIRECTIONS.items():
        if name != "still":
            assert math.hypot(dx, dy) == pytest.approx(1.0)
    assert spec.DIRECTIONS["down-left"] == pytest.approx((-1 / math.sqrt(2), 1 / math.sqrt(2)))


# ------------------------------------------------------------------ captions


def test_captions_exact_grammar():
    assert spec.full_caption("red", "circle", "still", "black") == (
        "a red circle moving still on a black background"
    )
    assert spec.full_caption("cyan", "triangle", "up-left", "gray") == (
        "a cyan triangle moving up-left on a gray background"
    )
    assert spec.motion_unnamed_caption("white", "square", "gray") == (
        "a white square moving on a gray background"
    )
    assert spec.appearance_caption("blue", "circle", "black") == "a blue circle on a black background"
    assert spec.curved_caption("red", "circle", "circle", "black") == (
        "a red circle moving in a circle on a black background"
    )
    assert spec.curved_caption("red", "square", "zigzag", "black") == (
        "a red square moving in a zigzag on a black background"
    )
    assert spec.curved_caption("red", "circle", "bounce", "black") == (
        "a red circle bouncing on a black background"
    )


def test_clip_captions_follow_grammar_for_every_clip():
    full = re.compile(r"^a (\w+) (\w+) moving ([\w-]+) on a (\w+) background$")
    for seed in range(40):
        c = random_pretraining_clip(seed)
        m = full.match(c.captions["full"])
        assert m, c.captions["full"]
        assert m.groups() == (c.spec.color, c.spec.shape, c.spec.direction, c.spec.background)
        assert c.captions["motion_unnamed"] == (
            f"a {c.spec.color} {c.spec.shape} moving on a {c.spec.background} background"
        )
        assert c.captions["appearance"] == (
            f"a {c.spec.color} {c.spec.shape} on a {c.spec.background} background"
        )
        assert set(c.captions) == {"full", "motion_unnamed", "appearance"}


def test_captions_reject_unknown_words():
    with pytest.raises(InputError, match="purple"):
        spec.full_caption("purple", "circle", "left", "black")
    with pytest.raises(InputError, match="sideways"):
        spec.full_caption("red", "circle", "sideways", "black")
    with pytest.raises(ValueError):  # InputError is a ValueError
        spec.appearance_caption("red", "hexagon", "black")


# ------------------------------------------------------------------ generation


def test_clip_format_and_determinism():
    a = random_pretraining_clip(np.random.default_rng(123))
    b = random_pretraining_clip(np.random.default_rng(123))
    c = random_pretraining_clip(np.random.default_rng(124))
    assert a.frames.shape == (16, 32, 32, 3)
    assert a.frames.dtype == np.float32
    assert a.frames.min() >= 0.0 and a.frames.max() <= 1.0
    assert a.centers.shape == (16, 2)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.spec == b.spec and a.captions == b.captions
    assert not np.array_equal(a.centers, c.centers)
    # int seeds work the same as Generators
    np.testing.assert_array_equal(random_pretraining_clip(7).frames, random_pretraining_clip(7).frames)


def test_random_pretraining_covers_spec():
    seen = {"color": set(), "shape": set(), "background": set(), "direction": set(), "speed": set()}
    rng = np.random.default_rng(0)
    for _ in range(300):
        s = random_pretraining_clip(rng).spec
        for k in seen:
            seen[k].add(getattr(s, k))
    assert seen["color"] == set(spec.COLORS)
    assert seen["shape"] == set(spec.SHAPES)
    assert seen["background"] == set(spec.BACKGROUNDS)
    assert seen["direction"] == set(spec.DIRECTIONS)
    assert seen["speed"] == set(spec.SPEEDS)


@pytest.mark.parametrize("direction", list(spec.DIRECTIONS))
@pytest.mark.parametrize("speed", list(spec.SPEEDS))
def test_straight_motion_velocity_and_inside(direction, speed):
    rng = np.random.default_rng(5)
    for _ in range(20):
        c = straight_clip("red", "square", "black", direction, speed, rng)
        assert _inside_frame(c.centers), c.centers
        steps = np.diff(c.centers, axis=0)
        expected = np.asarray(spec.DIRECTIONS[direction]) * spec.SPEEDS[speed]
        np.testing.assert_allclose(steps, np.broadcast_to(expected, steps.shape), atol=1e-9)
        assert c.spec.start == pytest.approx(tuple(c.centers[0]))
        # the object's pixels are all in the frame: total coverage equals the full object area
        alpha = c.frames[..., 0]  # red on black: R channel is the coverage
        assert np.allclose(alpha.sum(axis=(1, 2)), spec.OBJECT_SIZE**2, atol=0.5)


def test_render_shapes_areas_and_colors():
    centers = np.array([[15.5, 15.5]])
    circle = render_clip("green", "circle", "gray", centers)[0]
    square = render_clip("green", "square", "gray", centers)[0]
    tri = render_clip("green", "triangle", "gray", centers)[0]
    # on gray, coverage = (G - 0.5) / 0.5
    area = {k: float(((f[..., 1] - 0.5) / 0.5).sum()) for k, f in
            [("circle", circle), ("square", square), ("tri", tri)]}
    assert area["square"] == pytest.approx(81.0, abs=0.3)
    assert area["circle"] == pytest.approx(math.pi * 4.5**2, abs=0.5)
    assert area["tri"] == pytest.approx(40.5, abs=0.5)
    # background untouched far from the object, object core is the pure color
    np.testing.assert_allclose(square[0, 0], (0.5, 0.5, 0.5))
    np.testing.assert_allclose(square[15, 15], (0.0, 1.0, 0.0))
    # triangle apex up: top row of its box nearly empty, bottom row nearly full
    assert ((tri[11, :, 1] - 0.5) / 0.5).sum() < 1.5
    assert ((tri[19, :, 1] - 0.5) / 0.5).sum() > 7.5
    # anti-aliased: intermediate values on edges
    off_grid = render_clip("green", "circle", "gray", np.array([[15.3, 15.8]]))[0]
    edge_values = np.unique(np.round(off_grid[..., 1], 3))
    assert len(edge_values) > 10


def test_render_rejects_bad_input():
    with pytest.raises(InputError):
        render_clip("red", "star", "black", np.zeros((16, 2)))
    with pytest.raises(InputError):
        render_clip("red", "circle", "black", np.zeros((16, 3)))


@pytest.mark.parametrize("kind", list(CURVED_PATHS))
def test_curved_paths_inside_and_deterministic(kind):
    for rng in [None, 0, 1, 2, np.random.default_rng(3)]:
        p = CURVED_PATHS[kind](rng)
        assert p.shape == (16, 2)
        assert _inside_frame(p), (kind, p)
    np.testing.assert_array_equal(CURVED_PATHS[kind](11), CURVED_PATHS[kind](11))
    c = curved_clip(kind, "red", "circle", "black")
    assert c.captions["full"] == spec.curved_caption("red", "circle", kind, "black")
    assert c.captions["motion_unnamed"] == "a red circle moving on a black background"
    np.testing.assert_array_equal(c.spec.path, c.centers)


def test_curved_path_shapes():
    circ = clips.circle_path()
    radius = np.linalg.norm(circ - circ.mean(axis=0), axis=1)
    np.testing.assert_allclose(radius, 7.0, atol=1e-9)
    # one full loop: the 16 steps' angles add up to 2*pi minus one step
    ang = np.unwrap(np.arctan2(*(circ - circ.mean(axis=0)).T[::-1]))
    assert abs(ang[-1] - ang[0]) == pytest.approx(2 * math.pi * 15 / 16)

    zz = clips.zigzag_path()
    steps = np.diff(zz, axis=0)
    assert np.all(steps[:, 0] > 0)  # always moving right
    signs = np.sign(steps[:, 1])
    assert list(signs[:8]) == [-1] * 4 + [1] * 4  # up for 4 frames, then down for 4

    b = clips.bounce_path()
    assert np.all(np.diff(b[:, 0]) > 0)  # drifts
    floor = b[:, 1].max()
    assert np.sum(np.isclose(b[:, 1], floor)) >= 2  # touches the floor more than once
    assert floor - b[:, 1].min() > 8  # bounces high

    sg = clips.stop_and_go_path()
    moving = np.linalg.norm(np.diff(sg, axis=0), axis=1) > 0
    assert moving.any() and (~moving).any()


# ------------------------------------------------------------------ measures


@pytest.mark.parametrize("color,shape,background", ALL_APPEARANCES)
def test_measures_classify_every_appearance(color, shape, background):
    rng = np.random.default_rng(ALL_APPEARANCES.index((color, shape, background)))
    for direction in ("still", "down-right", "left"):
        c = straight_clip(color, shape, background, direction, "fast", rng)
        d = measures.describe_clip(c.frames)
        assert (d["color"], d["shape"], d["background"]) == (color, shape, background)
        assert d["direction"] == direction
        # the track is the true center (triangle: its centroid, 1.5 px below)
        offset = np.array([0.0, 1.5 if shape == "triangle" else 0.0])
        np.testing.assert_allclose(d["track"], c.centers + offset, atol=0.12)


@pytest.mark.parametrize("direction", list(spec.DIRECTIONS))
def test_measures_direction_of_every_straight_motion(direction):
    rng = np.random.default_rng(42)
    for speed in spec.SPEEDS:
        for color, shape, background in [("red", "circle", "black"), ("white", "triangle", "gray"),
                                         ("blue", "square", "gray")]:
            c = straight_clip(color, shape, background, direction, speed, rng)
            assert measures.motion_direction(measures.centroid_track(c.frames)) == direction


def test_measures_tolerate_noise_and_blur():
    rng = np.random.default_rng(9)
    for color, shape, background in ALL_APPEARANCES[::3]:
        c = straight_clip(color, shape, background, "up-right", "slow", rng)
        noisy = np.clip(c.frames + rng.normal(0, 0.04, c.frames.shape), 0, 1)
        blurred = c.frames.copy()
        f = c.frames
        blurred[:, 1:-1, 1:-1] = (4 * f[:, 1:-1, 1:-1] + f[:, :-2, 1:-1] + f[:, 2:, 1:-1]
                                  + f[:, 1:-1, :-2] + f[:, 1:-1, 2:]) / 8
        for frames in (noisy, blurred):
            d = measures.describe_clip(frames)
            assert (d["color"], d["shape"], d["background"], d["direction"]) == (
                color, shape, background, "up-right")


def test_measures_on_empty_frames():
    empty = np.zeros((16, 32, 32, 3), dtype=np.float32)
    assert measures.object_color(empty) is None
    assert measures.object_shape(empty) is None
    assert not measures.object_mask(empty[0]).any()
    assert np.isnan(measures.centroid_track(empty)).all()
    assert measures.motion_direction(measures.centroid_track(empty)) == "still"
    assert measures.background_name(empty) == "black"
    # the object present in only some frames: NaN rows elsewhere, measures still work
    c = straight_clip("yellow", "square", "gray", "down", "fast", 0)
    frames = c.frames.copy()
    frames[5:9] = 0.5
    track = measures.centroid_track(frames)
    assert np.isnan(track[5:9]).all() and np.isfinite(track[:5]).all()
    assert measures.motion_direction(track) == "down"
    assert measures.object_color(frames) == "yellow"


def test_object_mask_given_background():
    c = render_clip("magenta", "circle", "gray", np.array([[10.0, 20.0]]))[0]
    m1 = measures.object_mask(c)
    m2 = measures.object_mask(c, "gray")
    m3 = measures.object_mask(c, (0.5, 0.5, 0.5))
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(m1, m3)
    assert abs(int(m1.sum()) - math.pi * 4.5**2) < 6
    ys, xs = np.nonzero(m1)
    assert abs(xs.mean() - 10.0) < 0.2 and abs(ys.mean() - 20.0) < 0.2


# ------------------------------------------------------------------ motion fidelity


def test_motion_fidelity_values():
    a = straight_clip("red", "circle", "black", "right", "fast", 0).centers
    zz = clips.zigzag_path()
    assert measures.motion_fidelity(a, a) == pytest.approx(1.0)
    assert measures.motion_fidelity(zz, zz + np.array([3.0, -2.0])) == pytest.approx(1.0)
    assert measures.motion_fidelity(zz, clips.zigzag_path(5)) == pytest.approx(1.0)  # shifted start
    assert measures.motion_fidelity(zz, 40.0 - zz) == pytest.approx(-1.0)  # every step mirrored
    left = straight_clip("red", "circle", "black", "left", "fast", 0).centers
    assert measures.motion_fidelity(a, left) == pytest.approx(-1.0)
    up = straight_clip("red", "circle", "black", "up", "slow", 0).centers
    assert measures.motion_fidelity(a, up) == pytest.approx(0.0, abs=1e-9)
    # a different motion scores clearly lower than the same one
    assert measures.motion_fidelity(zz, clips.circle_path()) < 0.3


def test_motion_fidelity_unrelated_random_tracks_near_zero():
    rng = np.random.default_rng(0)
    scores = [
        measures.motion_fidelity(np.cumsum(rng.normal(size=(16, 2)), axis=0),
                                 np.cumsum(rng.normal(size=(16, 2)), axis=0))
        for _ in range(200)
    ]
    assert abs(np.mean(scores)) < 0.1
    assert np.mean(np.abs(scores)) < 0.5
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_motion_fidelity_still_and_nan():
    still = np.full((16, 2), 10.0)
    moving = straight_clip("red", "circle", "black", "down", "slow", 0).centers
    assert measures.motion_fidelity(still, still + 3) == 1.0
    assert measures.motion_fidelity(still, moving) == 0.0
    assert measures.motion_fidelity(moving, still) == 0.0
    nan_track = moving.copy()
    nan_track[4] = np.nan
    noisy = moving + np.random.default_rng(0).normal(0, 0.05, moving.shape)
    assert measures.motion_fidelity(nan_track, noisy) > 0.95
    all_nan = np.full((16, 2), np.nan)
    assert measures.motion_fidelity(all_nan, moving) == 0.0
    # measured tracks of rendered clips match the true tracks
    c = curved_clip("bounce", "cyan", "triangle", "gray", rng=4)
    assert measures.motion_fidelity(measures.centroid_track(c.frames), c.centers) > 0.99


# ------------------------------------------------------------------ reference clips


def test_bundled_reference_clips_match_generator():
    from video_reader import read_video

    for name in ("circle", "zigzag", "bounce"):
        mp4 = clips.ASSETS_DIR / f"{name}.mp4"
        meta = json.loads((clips.ASSETS_DIR / f"{name}.json").read_text())
        ref = clips.reference_clip(name)
        assert meta["spec_version"] == spec.SPEC_VERSION
        assert meta["captions"] == ref.captions
        assert set(meta["captions"]) == {"full", "motion_unnamed", "appearance"}
        assert meta["motion_phrase"] in meta["captions"]["full"]
        np.testing.assert_allclose(np.array(meta["centers"]), ref.centers, atol=1e-4)
        frames, fps = read_video(mp4)
        assert frames.shape == (16, 32, 32, 3) and fps == pytest.approx(8.0)
        d = measures.describe_clip(frames)
        assert (d["color"], d["shape"], d["background"]) == (meta["color"], meta["shape"], meta["background"])
        assert measures.motion_fidelity(d["track"], ref.centers) > 0.99
    assert json.loads((clips.ASSETS_DIR / "bounce.json").read_text())["captions"]["full"] == (
        "a red circle bouncing on a black background"
    )


def test_write_reference_clips(tmp_path):
    written = clips.write_reference_clips(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        f"{n}.{e}" for n in ("circle", "zigzag", "bounce") for e in ("mp4", "json")
    )
    assert all(p.stat().st_size < 20_000 for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
