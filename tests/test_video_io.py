"""Video file I/O with PyAV: round trips, errors that name the path, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cav_core.errors import CavError, InputError, VideoReadError
from cav_core.toyworld import measures
from cav_core.toyworld.clips import straight_clip
from cav_core.video_io import frames_to_uint8, write_video
from video_reader import read_video


@pytest.fixture(scope="module")
def clip():
    return straight_clip("yellow", "circle", "gray", "down-right", "slow", 3)


def test_frames_to_uint8():
    f = np.array([0.0, 0.5, 1.0, 1.7, -0.3], dtype=np.float32).reshape(1, 1, 5, 1)
    u = frames_to_uint8(f)
    assert u.dtype == np.uint8 and u.shape == (1, 1, 5, 3)
    assert u[0, 0, :, 0].tolist() == [0, 128, 255, 255, 0]
    raw = np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3)
    np.testing.assert_array_equal(frames_to_uint8(raw), raw)
    rgba = np.zeros((2, 2, 2, 4), dtype=np.float32)
    assert frames_to_uint8(rgba).shape == (2, 2, 2, 3)
    with pytest.raises(InputError):
        frames_to_uint8(np.zeros((2, 2, 3)))
    with pytest.raises(InputError):
        frames_to_uint8(np.zeros((1, 2, 2, 2)))


def test_torch_tensor_input(tmp_path, clip):
    torch = pytest.importorskip("torch")
    out = write_video(tmp_path / "t.gif", torch.from_numpy(clip.frames), 8)
    frames, _ = read_video(out)
    assert np.abs(frames - clip.frames).max() < 1 / 255 + 1e-6


def test_mp4_roundtrip(tmp_path, clip):
    out = write_video(tmp_path / "clip.mp4", clip.frames, 8)
    assert out == tmp_path / "clip.mp4" and out.is_file()
    frames, fps = read_video(out)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.float32
    assert fps == pytest.approx(8.0)
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    err = np.abs(frames - clip.frames).mean()
    assert err < 0.05
    d = measures.describe_clip(frames)
    assert (d["color"], d["shape"], d["background"], d["direction"]) == (
        "yellow", "circle", "gray", "down-right")
    # only the final file is left in the folder (no temp files)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_gif_roundtrip_is_exact_for_toy_clips(tmp_path, clip):
    out = write_video(tmp_path / "clip.gif", clip.frames, 8)
    frames, fps = read_video(out)
    assert frames.shape == (16, 32, 32, 3)
    assert fps == pytest.approx(8.0, abs=0.1)  # GIF delays are in 1/100 s
    assert np.abs(frames - clip.frames).max() <= 0.5 / 255 + 1e-6


def test_gif_many_colors(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.random((4, 16, 16, 3)).astype(np.float32)
    frames, _ = read_video(write_video(tmp_path / "noise.gif", frames, 10))
    assert frames.shape == (4, 16, 16, 3)


def test_webm_roundtrip(tmp_path, clip):
    frames, fps = read_video(write_video(tmp_path / "clip.webm", clip.frames, 8))
    assert frames.shape == (16, 32, 32, 3)
    assert fps == pytest.approx(8.0)
    assert np.abs(frames - clip.frames).mean() < 0.05


def test_uint8_input_and_other_fps(tmp_path):
    frames = np.zeros((5, 16, 24, 3), dtype=np.uint8)
    frames[:, 4:12, 8:16] = (0, 0, 255)
    out, fps = read_video(write_video(tmp_path / "u.mp4", frames, 24))
    assert out.shape == (5, 16, 24, 3)
    assert fps == pytest.approx(24.0)
    assert out[:, 8, 12].mean(axis=0) == pytest.approx([0.0, 0.0, 1.0], abs=0.05)


def test_overwrite(tmp_path, clip):
    p = tmp_path / "a.mp4"
    write_video(p, clip.frames, 8)
    write_video(p, clip.frames[:4], 8)  # replaces by default
    assert read_video(p)[0].shape[0] == 4
    with pytest.raises(InputError, match="exists"):
        write_video(p, clip.frames, 8, overwrite=False)
    assert read_video(p)[0].shape[0] == 4


def test_odd_size_mp4_is_a_clear_value_error(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), dtype=np.float32), 8)
    assert list(tmp_path.iterdir()) == []
    # a GIF has no such constraint
    frames, _ = read_video(write_video(tmp_path / "odd.gif", np.zeros((2, 31, 33, 3)), 8))
    assert frames.shape == (2, 31, 33, 3)


def test_bad_arguments(tmp_path, clip):
    with pytest.raises(InputError, match="extension"):
        write_video(tmp_path / "clip.avi", clip.frames, 8)
    with pytest.raises(InputError, match="fps"):
        write_video(tmp_path / "clip.mp4", clip.frames, 0)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path, clip, monkeypatch):
    import av

    calls = {"n": 0}
    real = av.VideoFrame.from_ndarray

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:  # fail mid-stream, after the container has been opened and written
            raise RuntimeError("simulated encoder failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", flaky)
    for ext in ("mp4", "gif"):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="simulated"):
            write_video(tmp_path / f"broken.{ext}", clip.frames, 8)
        assert list(tmp_path.iterdir()) == []
    # a failed overwrite keeps the old file intact
    monkeypatch.setattr(av.VideoFrame, "from_ndarray", real)
    good = write_video(tmp_path / "keep.mp4", clip.frames, 8)
    before = good.read_bytes()
    monkeypatch.setattr(av.VideoFrame, "from_ndarray", flaky)
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        write_video(good, clip.frames[::-1], 8)
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]


def test_read_missing_file_names_path(tmp_path):
    p = tmp_path / "nope.mp4"
    with pytest.raises(VideoReadError, match="nope.mp4") as e:
        read_video(p)
    assert isinstance(e.value, CavError)
    with pytest.raises(VideoReadError, match=str(tmp_path.name)):
        read_video(tmp_path)  # a folder


def test_read_non_video_file_names_path(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoReadError, match="notes.mp4"):
        read_video(p)
    empty = tmp_path / "empty.gif"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.gif"):
        read_video(empty)


def test_read_audio_only_file_has_no_video_stream(tmp_path):
    import av

    p = tmp_path / "tone.wav"
    with av.open(str(p), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(VideoReadError, match="no video stream") as e:
        read_video(p)
    assert "tone.wav" in str(e.value)


def test_write_creates_missing_folder(tmp_path, clip):
    out = write_video(tmp_path / "a" / "b" / "c.gif", clip.frames, 8)
    assert out.is_file()
    assert os.stat(out).st_mode & 0o044  # readable like a normal file, not a private temp
