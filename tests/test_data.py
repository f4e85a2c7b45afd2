"""Reference-video frames: decoding, timestamp resampling, fitting, crops, VAE layout."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from cav_core import data
from cav_core.data import fit_frames, frames_from_images, load_video_clip, random_patch_crops
from cav_core.errors import CavError, InputError, VideoReadError
from cav_core.toyworld.clips import render_clip, straight_clip
from cav_core.video_io import write_video


def _moving_square(n: int) -> np.ndarray:
    """n frames of a square sliding left to right: every frame differs from its
    neighbours, so a decoded frame can be matched back to its source index."""
    xs = np.linspace(4.0, 27.0, n)
    centers = np.stack([xs, np.full(n, 15.5)], axis=1)
    return render_clip("white", "square", "black", centers)


def _source_index(decoded: torch.Tensor, source: np.ndarray) -> list[int]:
    d = ((decoded.numpy()[:, None] - source[None]) ** 2).mean(axis=(2, 3, 4))
    return d.argmin(axis=1).tolist()


@pytest.fixture(scope="module")
def src32():
    return _moving_square(32)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, src32):
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4_16fps": write_video(d / "src16.mp4", src32, 16),
        "gif_16fps": write_video(d / "src16.gif", src32, 16),
        "mp4_8fps": write_video(d / "clip8.mp4", straight_clip("red", "circle", "gray", "right", "fast", 1).frames, 8),
    }


@pytest.mark.parametrize("kind", ["mp4_16fps", "gif_16fps"])
def test_half_rate_picks_every_other_frame(videos, src32, kind):
    frames = load_video_clip(videos[kind], num_frames=16, fps=8)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    assert _source_index(frames, src32) == list(range(0, 32, 2))


def test_same_rate_and_start_offset(videos, src32):
    frames = load_video_clip(videos["mp4_16fps"], num_frames=8, fps=16, start=1.0)
    assert _source_index(frames, src32) == list(range(16, 24))
    # a start between two frames takes the nearer one
    frames = load_video_clip(videos["gif_16fps"], num_frames=4, fps=16, start=0.33)
    assert _source_index(frames, src32) == [5, 6, 7, 8]


def test_upsampling_repeats_nearest_frames(videos, src32):
    frames = load_video_clip(videos["mp4_16fps"], num_frames=8, fps=32)
    assert _source_index(frames, src32) == [0, 0, 1, 1, 2, 2, 3, 3]  # a tie goes to the earlier frame


def test_toy_clip_roundtrip(videos):
    frames = load_video_clip(videos["mp4_8fps"])
    assert frames.shape == (16, 32, 32, 3)
    clip = straight_clip("red", "circle", "gray", "right", "fast", 1)
    assert (frames.numpy() - clip.frames).__abs__().mean() < 0.05


def test_too_short_says_what_was_found_and_needed(videos):
    with pytest.raises(InputError) as e:
        load_video_clip(videos["mp4_8fps"], num_frames=17, fps=8)
    msg = str(e.value)
    assert "clip8.mp4" in msg and "16 frames" in msg and "2.00 s" in msg and "2.12 s" in msg
    assert "num_frames" in msg and "at most 16" in msg
    with pytest.raises(InputError, match="start"):
        load_video_clip(videos["mp4_8fps"], num_frames=4, fps=8, start=2.5)
    # exactly the whole clip still fits
    assert load_video_clip(videos["mp4_8fps"], num_frames=16, fps=8).shape[0] == 16
    assert load_video_clip(videos["mp4_16fps"], num_frames=2, fps=1, start=0.9).shape[0] == 2


@pytest.mark.parametrize("kind", ["mp4_16fps", "gif_16fps"])
def test_in_memory_file_reads_like_the_path(videos, kind):
    import io

    path = videos[kind]
    stream = io.BytesIO(path.read_bytes())
    for kw in (dict(num_frames=5, fps=8, start=0.3), dict(num_frames=4, fps=16, start=1.2, size=(24, 16), fit="pad")):
        assert torch.equal(load_video_clip(stream, **kw), load_video_clip(path, **kw))
    with pytest.raises(InputError, match=r"^video the upload is too short: it lasts 2\.00 s"):
        load_video_clip(stream, num_frames=40, fps=16, name="the upload")


@pytest.mark.parametrize("kw", [dict(num_frames=16, fps=8), dict(num_frames=8, fps=16, start=1.0),
                                dict(num_frames=4, fps=16, start=0.33), dict(num_frames=8, fps=32),
                                dict(num_frames=6, fps=5, start=0.1, size=(16, 24), fit="stretch")])
def test_frames_in_memory_are_picked_like_a_file(videos, src32, kw):
    """clip_from_frames (a VIDEO made of frames) takes the frames load_video_clip takes from the
    same clip as a file: same times, same nearest-frame rule, same fit."""
    from video_reader import read_video

    # the mp4's timestamps are exact multiples of 1/16 s (a GIF's are rounded to 1/100 s), and
    # both routes decode with the same frame_to_rgb: the picks can be compared exactly
    decoded, rate = read_video(videos["mp4_16fps"])
    got = data.clip_from_frames(torch.from_numpy(decoded), Fraction(16), **kw)
    by_file = load_video_clip(videos["mp4_16fps"], **kw)
    assert torch.allclose(got, by_file, atol=1e-6)
    if "size" not in kw:
        assert _source_index(got, src32) == _source_index(by_file, src32)


def test_frames_in_memory_too_short_and_held(src32):
    frames = torch.from_numpy(src32)  # 32 frames at 16 fps: 2 s
    with pytest.raises(InputError, match=r"^video in memory is too short: it lasts 2\.00 s \(32 frames, 16 fps\)"):
        data.clip_from_frames(frames, 16, num_frames=20, fps=8)
    with pytest.warns(UserWarning, match="held for the last 4 of 20"):
        held = data.clip_from_frames(frames, 16, num_frames=20, fps=8, hold_last=True)
    assert torch.equal(held[-1], held[-4])
    for bad in (0, float("nan"), "fast"):
        with pytest.raises(InputError, match="frame rate of in memory"):
            data.clip_from_frames(frames, bad)


def test_seek_for_late_start(tmp_path, monkeypatch):
    src = _moving_square(64)
    p = tmp_path / "long.mp4"
    _write_vfr(p, src, [i / 16 for i in range(64)], gop=8)
    starts = []
    real = data._pick_frames

    def spy(*args):
        picks, seen = real(*args)
        starts.append(seen["first_t"])
        return picks, seen

    monkeypatch.setattr(data, "_pick_frames", spy)
    frames = load_video_clip(p, num_frames=16, fps=8, start=2.0)
    assert _source_index(frames, src) == list(range(32, 64, 2))
    assert starts == [pytest.approx(2.0)]  # decoding began at the key frame, not at 0


def _write_vfr(path, frames: np.ndarray, times_s: list[float], container: str = "mp4", gop: int = 250) -> None:
    import av

    with av.open(str(path), "w", format=container) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        s.options = {"crf": "12", "bf": "0", "g": str(gop), "keyint_min": str(gop)}
        for img, t in zip((np.rint(frames * 255).astype(np.uint8)), times_s):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = round(t * 1000)
            vf.time_base = Fraction(1, 1000)
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_variable_frame_rate_follows_timestamps(tmp_path):
    src = _moving_square(10)
    # a burst of fast frames, then slow ones: index-based sampling would drift
    times = [0.0, 0.05, 0.1, 0.15, 0.2, 0.5, 0.75, 1.0, 1.25, 1.5]
    p = tmp_path / "vfr.mp4"
    _write_vfr(p, src, times)
    frames = load_video_clip(p, num_frames=7, fps=4)  # t = 0, .25, .5, ..., 1.5
    assert _source_index(frames, src) == [0, 4, 5, 6, 7, 8, 9]


def test_mov_container(tmp_path):
    src = _moving_square(8)
    p = tmp_path / "clip.mov"
    _write_vfr(p, src, [i / 8 for i in range(8)], container="mov")
    assert _source_index(load_video_clip(p, num_frames=8, fps=8), src) == list(range(8))


def test_size_resizes_and_center_crops(videos):
    frames = load_video_clip(videos["mp4_8fps"], num_frames=4, size=(16, 24))
    assert frames.shape == (4, 16, 24, 3)
    with pytest.raises(InputError, match="size"):
        load_video_clip(videos["mp4_8fps"], size=(0, 32))


def test_large_source_is_shrunk_while_decoding(tmp_path, monkeypatch):
    big = np.zeros((3, 480, 640, 3), dtype=np.float32)
    big[:, 120:360, 240:400] = (0.0, 1.0, 0.0)  # green box in the middle
    p = write_video(tmp_path / "big.mp4", big, 8)
    seen = []
    real = data._to_rgb
    monkeypatch.setattr(data, "_to_rgb", lambda *args: seen.append(a := real(*args)) or a)
    frames = load_video_clip(p, num_frames=3, fps=8, size=(32, 32))
    assert frames.shape == (3, 32, 32, 3)
    assert all(a.shape[0] <= 2 * 32 + 1 for a in seen)  # never the full 480x640 frame
    # 640x480 -> 43x32 -> crop 32x32 (columns 5..37): the box covers rows 8..24, cols 11..21
    assert frames[0, 16, 16].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=0.08)
    assert frames[0, 2, 2].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=0.08)


def test_missing_and_non_video_files(tmp_path):
    with pytest.raises(VideoReadError, match="nope.mp4"):
        load_video_clip(tmp_path / "nope.mp4")
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 50)
    with pytest.raises(VideoReadError, match="notes.mp4") as e:
        load_video_clip(bad)
    assert isinstance(e.value, CavError)


@pytest.mark.parametrize("kwargs", [dict(num_frames=0), dict(fps=0), dict(fps=float("nan")), dict(start=-1),
                                    dict(num_frames=2.5)])
def test_bad_arguments(videos, kwargs):
    with pytest.raises(InputError):
        load_video_clip(videos["mp4_8fps"], **kwargs)


def test_frames_from_images():
    t = torch.rand(3, 8, 10, 3)
    assert torch.equal(frames_from_images(t), t)
    rgba = torch.rand(2, 4, 4, 4)
    assert torch.equal(frames_from_images(rgba), rgba[..., :3])
    gray = np.full((2, 4, 4, 1), 255, dtype=np.uint8)
    out = frames_from_images(gray)
    assert out.shape == (2, 4, 4, 3) and out.dtype == torch.float32 and out.min() == 1.0
    assert frames_from_images(torch.full((1, 2, 2, 3), 1.5)).max() == 1.0
    with pytest.raises(InputError, match=r"\(1, H, W, C\)"):
        frames_from_images(torch.rand(8, 8, 3))
    with pytest.raises(InputError, match="channels"):
        frames_from_images(torch.rand(2, 3, 8, 8))
    with pytest.raises(InputError, match="dtype"):
        frames_from_images(np.zeros((1, 2, 2, 3), dtype=np.int32))
    with pytest.raises(InputError):
        frames_from_images([[1, 2]])
    with pytest.raises(InputError, match="empty"):
        frames_from_images(torch.rand(0, 4, 4, 3))


def test_fit_frames_keeps_aspect_and_centers():
    f = torch.zeros(2, 20, 40, 3)
    f[:, :, 15:25] = 1.0  # a bright band at the horizontal center
    out = fit_frames(f, (10, 10))
    assert out.shape == (2, 10, 10, 3)
    # 20x40 -> 10x20, center crop columns 5..15: the band (7.5..12.5) is in the middle
    assert out[0, 5, 5, 0] > 0.9 and out[0, 5, 0, 0] < 0.1 and out[0, 5, 9, 0] < 0.1
    up = fit_frames(torch.rand(1, 4, 4, 3), (8, 16))
    assert up.shape == (1, 8, 16, 3) and 0.0 <= up.min() and up.max() <= 1.0
    assert fit_frames(f, (20, 40)) is f
    with pytest.raises(InputError):
        fit_frames(f, (10,))
    with pytest.raises(InputError):
        fit_frames(f.permute(0, 3, 1, 2), (10, 10))


def test_random_patch_crops():
    frames = torch.rand(4, 16, 24, 3)
    a = random_patch_crops(frames, 6, (0.5, 0.9), generator=torch.Generator().manual_seed(3))
    b = random_patch_crops(frames, 6, (0.5, 0.9), generator=torch.Generator().manual_seed(3))
    c = random_patch_crops(frames, 6, (0.5, 0.9), generator=torch.Generator().manual_seed(4))
    assert a.shape == (6, 16, 24, 3) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    # crop fraction 1 is the frame itself
    full = random_patch_crops(frames, 5, (1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(x, fr) for fr in frames) for x in full)
    for bad in [(0.0, 1.0), (0.8, 0.5), (0.5, 1.2), (0.5,), "big"]:
        with pytest.raises(InputError, match="crop_range"):
            random_patch_crops(frames, 2, bad)
    with pytest.raises(InputError):
        random_patch_crops(frames, 0)
