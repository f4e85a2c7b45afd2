"""Real footage in, any shape: 1280x720 at 25 and 30 fps, 9:16 portrait (as pixels and as a
phone's rotation flag), variable frame rate, 10-bit, all fit to the model's size by centre
crop, pad or stretch, through ``data.load_video_clip``, the CLI and the node.

Every clip is made here with PyAV. Each frame shows the same test card, and its frame index
is the gray level of the background, so a decoded frame says which source frame it is:

    red bars on the two ends of the long side (1/8 of it each), a green square in each
    corner, a white square in the middle, the rest gray = frame index.
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from cav_core import cli
from cav_core.data import load_video_clip
from cav_core.errors import InputError
from video_reader import read_video

RED, GREEN, WHITE, BLACK = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
TOL = 0.12  # lossy chroma and resizing blur the edges of the card's blocks a little


def levels(n: int) -> np.ndarray:
    """Background gray (0..255) of frames 0..n-1: 5 or more levels apart for n <= 36, so
    the 1-2 levels that yuv420p and its rounding move a gray by cannot mistake a frame."""
    return np.rint(40 + 180 * np.arange(n) / max(1, n - 1))


def card(h: int, w: int, k: int, n: int) -> np.ndarray:
    """Frame k of n: (h, w, 3) uint8."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = levels(n)[k]
    bar = max(h, w) // 8
    if w >= h:
        img[:, :bar] = img[:, w - bar:] = (255, 0, 0)
    else:
        img[:bar] = img[h - bar:] = (255, 0, 0)
    c = min(h, w) // 8
    for ys in (slice(0, c), slice(h - c, h)):
        for xs in (slice(0, c), slice(w - c, w)):
            img[ys, xs] = (0, 255, 0)
    m = min(h, w) // 10
    img[h // 2 - m:h // 2 + m, w // 2 - m:w // 2 + m] = 255
    return img


def encode(path: Path, frames: list[np.ndarray], times: list[float], pix_fmt: str = "yuv420p",
           codec: str = "libx264", rotation: int | None = None, bframes: int = 0) -> Path:
    """Frames (uint8 or uint16 RGB) shown at ``times`` seconds (millisecond timestamps)."""
    import av

    tb = Fraction(1, 1000)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(round(1 / (times[1] - times[0]) * 1000), 1000))
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.codec_context.time_base = tb
        if codec == "libx264":
            s.options = {"crf": "8", "preset": "ultrafast", "bf": str(bframes)}
        elif codec == "libx265":
            s.options = {"crf": "8", "preset": "ultrafast", "x265-params": "log-level=none"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for img, t in zip(frames, times):
            fmt = "rgb48le" if img.dtype == np.uint16 else "rgb24"
            vf = av.VideoFrame.from_ndarray(img, format=fmt).reformat(format=pix_fmt)
            vf.pts, vf.time_base = round(t * 1000), tb
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def card_clip(path: Path, h: int, w: int, times: list[float], **kw) -> Path:
    n = len(times)
    return encode(path, [card(h, w, k, n) for k in range(n)], times, **kw)


def index_of(frame: torch.Tensor, n: int, y: float, x: float) -> int:
    """Which of n card frames ``frame`` (H, W, 3) is, read at (y, x) as fractions of it:
    a spot of background gray."""
    h, w = frame.shape[:2]
    cy, cx = round(y * (h - 1)), round(x * (w - 1))
    g = float(frame[max(0, cy - 1):cy + 2, max(0, cx - 1):cx + 2].mean()) * 255
    return int(np.abs(levels(n) - g).argmin())


def nearest(times: list[float], targets: list[float]) -> list[int]:
    """The frame shown at each target time: the nearest timestamp."""
    t = np.asarray(times)
    return [int(np.abs(t - x).argmin()) for x in targets]


def close(pixel: torch.Tensor, rgb: tuple[float, float, float]) -> bool:
    return bool((pixel - torch.tensor(rgb)).abs().max() <= TOL)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, list[float]]]:
    """name -> (file, the timestamps of its frames)."""
    d = tmp_path_factory.mktemp("footage")
    out = {}
    for name, h, w, rate, n, kw in [
        ("720p25", 720, 1280, 25, 30, {}),
        ("720p30", 720, 1280, 30, 36, {"bframes": 3}),
        ("portrait", 1280, 720, 30, 30, {}),
        ("hevc10", 720, 1280, 25, 10, {"codec": "libx265", "pix_fmt": "yuv420p10le"}),
    ]:
        times = [i / rate for i in range(n)]
        out[name] = (card_clip(d / f"{name}.mp4", h, w, times, **kw), times)
    # A phone's variable rate: a burst, a stall, then steady; B-frames reorder the decoding.
    times = [0.0, 0.03, 0.06, 0.09, 0.12, 0.5, 0.55, 1.0, 1.033, 1.066, 1.3, 1.6, 1.85, 2.2]
    out["vfr"] = (card_clip(d / "vfr.mp4", 720, 1280, times, bframes=2), times)
    return out


# --------------------------------------------------------------------------- shapes and fit modes

@pytest.mark.parametrize("name", ["720p25", "720p30", "portrait", "vfr", "hevc10"])
@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("size", [(32, 32), (40, 72)])
def test_every_clip_comes_out_at_the_model_size(clips, name, fit, size):
    x = load_video_clip(clips[name][0], num_frames=3, fps=8, size=size, fit=fit)
    assert x.shape == (3, *size, 3) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("name", ["720p25", "portrait"])
def test_crop_keeps_the_centre_and_cuts_the_bars(clips, name):
    x = load_video_clip(clips[name][0], num_frames=1, size=(64, 64), fit="crop")[0]
    assert close(x[32, 32], WHITE)  # the marker in the middle survives
    edges = [x[32, 0], x[32, -1]] if name == "720p25" else [x[0, 32], x[-1, 32]]
    assert not any(close(p, RED) for p in edges)  # the bars on the long side's ends are cut
    assert index_of(x, len(clips[name][1]), 0.5, 0.15) == 0  # background gray, not stretched bars


def test_pad_keeps_the_whole_frame_with_black_bars(clips):
    x = load_video_clip(clips["720p25"][0], num_frames=1, size=(64, 64), fit="pad")[0]
    # 1280x720 -> 64x36 in rows 14..49; rows above and below are the padding
    assert close(x[2, 32], BLACK) and close(x[61, 32], BLACK)
    assert close(x[32, 1], RED) and close(x[32, 62], RED)  # both bars kept
    assert close(x[32, 32], WHITE)
    assert close(x[15, 1], GREEN) and close(x[48, 62], GREEN)  # the frame's own corners
    portrait = load_video_clip(clips["portrait"][0], num_frames=1, size=(64, 64), fit="pad")[0]
    assert close(portrait[32, 2], BLACK) and close(portrait[32, 61], BLACK)  # pillarbox
    assert close(portrait[1, 32], RED) and close(portrait[62, 32], RED)


def test_stretch_keeps_the_corners(clips):
    for name in ("720p25", "portrait"):
        x = load_video_clip(clips[name][0], num_frames=1, size=(64, 64), fit="stretch")[0]
        assert all(close(x[y, c], GREEN) for y in (0, -1) for c in (0, -1)), name
        assert close(x[32, 32], WHITE)
    wide = load_video_clip(clips["720p25"][0], num_frames=1, size=(64, 64), fit="stretch")[0]
    assert close(wide[32, 1], RED) and close(wide[32, 62], RED)


def test_fit_names_the_flag_and_widget(clips):
    with pytest.raises(InputError, match=r"fit must be one of crop, pad, stretch \(--fit .*'fit' widget"):
        load_video_clip(clips["720p25"][0], num_frames=1, size=(32, 32), fit="zoom")


# --------------------------------------------------------------------------- time

@pytest.mark.parametrize("name", ["720p25", "720p30"])
def test_frames_are_taken_at_the_requested_fps_from_start(clips, name):
    path, times = clips[name]
    start = 0.2025  # 1/16 frame off the 25 fps grid: no target is a tie between two frames at 25 or 30 fps
    x = load_video_clip(path, num_frames=8, fps=8, start=start, size=(32, 32))
    want = nearest(times, [start + k / 8 for k in range(8)])
    assert [index_of(f, len(times), 0.25, 0.5) for f in x] == want
    assert want[1] - want[0] in (3, 4)  # really resampled: 25 or 30 fps read at 8


def test_variable_frame_rate_follows_presentation_timestamps(clips):
    path, times = clips["vfr"]
    x = load_video_clip(path, num_frames=9, fps=4, size=(32, 32), fit="stretch")  # t = 0, 0.25, ..., 2 s
    got = [index_of(f, len(times), 0.25, 0.5) for f in x]
    assert got == nearest(times, [k / 4 for k in range(9)]) == [0, 4, 5, 6, 7, 10, 11, 12, 12]
    # by index, every third frame would have been [0, 3, 6, 9, ...]
    full, fps = read_video(path)  # the other reader: every frame, in presentation order
    assert [index_of(torch.from_numpy(f), len(times), 0.25, 0.5) for f in full] == list(range(len(times)))


def test_timestamps_that_do_not_start_at_zero(tmp_path):
    # A clip cut from a longer recording keeps its timestamps: here the first frame is at 3 s.
    times = [3.0 + i / 20 for i in range(30)]
    p = card_clip(tmp_path / "cut.mp4", 180, 320, times, bframes=2)
    for start in (0.0, 1.0):  # 1 s and later seeks first
        x = load_video_clip(p, num_frames=4, fps=8, start=start + 0.0025, size=(32, 32))
        want = nearest([t - 3.0 for t in times], [start + 0.0025 + k / 8 for k in range(4)])
        assert [index_of(f, len(times), 0.25, 0.5) for f in x] == want, start


def test_too_short_names_its_duration_and_the_flags(clips):
    path, _ = clips["720p25"]  # 30 frames at 25 fps: 1.20 s
    with pytest.raises(InputError) as e:
        load_video_clip(path, num_frames=14, fps=8, size=(32, 32))
    msg = str(e.value)
    assert "720p25.mp4 is too short: it lasts 1.20 s (30 frames, 25 fps)" in msg
    assert "14 frames at 8 fps from start=0 s need it to run to 1.75 s, and only 10 fit" in msg
    for flag in ("--frames", "--fps", "--start", "--hold-last", "hold_last_frame"):
        assert flag in msg
    with pytest.raises(InputError, match=r"start=3 s \(--start\) is past its end \(1\.20 s"):
        load_video_clip(path, num_frames=2, start=3, size=(32, 32), hold_last=True)  # nothing to hold


def test_hold_last_repeats_the_last_frame(clips):
    path, times = clips["720p25"]
    with pytest.warns(UserWarning, match=r"ends at 1\.20 s: its last frame is held for the last 4 of 14 frames"):
        x = load_video_clip(path, num_frames=14, fps=8, size=(32, 32), hold_last=True)
    assert x.shape == (14, 32, 32, 3)
    got = [index_of(f, len(times), 0.25, 0.5) for f in x]
    assert got[:10] == nearest(times, [k / 8 for k in range(10)])
    assert got[10:] == [29] * 4 and all(torch.equal(x[k], x[10]) for k in range(11, 14))
    assert not torch.equal(x[9], x[10])  # frame 28, then the held frame 29
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clip that is long enough holds nothing and says nothing
        assert torch.equal(load_video_clip(path, num_frames=8, fps=8, size=(32, 32), hold_last=True),
                           load_video_clip(path, num_frames=8, fps=8, size=(32, 32)))


# --------------------------------------------------------------------------- pixels

@pytest.mark.parametrize("codec, pix_fmt, ext", [("libx264", "yuv420p10le", ".mp4"),
                                                 ("libx265", "yuv420p10le", ".mp4"),
                                                 ("prores_ks", "yuv422p10le", ".mov")])
def test_10_bit_decodes_to_0_1_and_keeps_its_levels(tmp_path, codec, pix_fmt, ext):
    h, w = 720, 1280
    ramp = np.rint(np.linspace(0, 65535, w)).astype(np.uint16)  # black to white, left to right
    img = np.repeat(np.repeat(ramp[None, :, None], h, 0), 3, 2)
    img[:, :64] = 0
    img[:, -64:] = 65535
    p = encode(tmp_path / f"ten{ext}", [img, img], [0.0, 0.04], pix_fmt=pix_fmt, codec=codec)
    x = load_video_clip(p, num_frames=1, fps=25)[0]
    assert x.shape == (h, w, 3) and x.dtype == torch.float32
    row = x[h // 2, :, 1]
    assert float(row[:64].max()) < 0.01 and float(row[-64:].min()) > 0.99  # full 0..1, not 64/1023..940/1023
    assert abs(float(row[w // 2]) - 0.5) < 0.01
    # 8-bit output would hold at most 256 levels; 10 bits of limited range give ~877
    assert len(torch.unique(row)) > 400
    full, _ = read_video(p)  # the same decoder
    assert np.array_equal(full[0], x.numpy())
    small = load_video_clip(p, num_frames=1, fps=25, size=(36, 64), fit="stretch")[0]
    assert float(small.min()) < 0.01 and float(small.max()) > 0.99


def test_phone_portrait_with_a_rotation_flag_is_upright(tmp_path):
    # A phone stores a portrait clip as landscape pixels and a display matrix of -90
    # degrees (rotate clockwise to show it), as ffprobe reports for an iPhone.
    upright = [card(320, 180, k, 4) for k in range(4)]
    for img in upright:
        img[:20, :20] = (0, 0, 255)  # a blue top-left corner tells the turn apart from its mirror
    stored = [np.ascontiguousarray(np.rot90(img, 1)) for img in upright]  # 180x320, turned counter-clockwise
    p = encode(tmp_path / "phone.mp4", stored, [k / 30 for k in range(4)], rotation=-90)
    x = load_video_clip(p, num_frames=4, fps=30)
    assert x.shape == (4, 320, 180, 3)
    assert float((x[0] - torch.from_numpy(upright[0]).float() / 255).abs().mean()) < 0.03
    assert close(x[0, 5, 5], (0.0, 0.0, 1.0)) and close(x[0, 5, -5], GREEN)
    full, _ = read_video(p)
    assert full.shape == (4, 320, 180, 3)
    fitted = load_video_clip(p, num_frames=1, fps=30, size=(64, 64), fit="pad")[0]
    assert close(fitted[32, 2], BLACK) and close(fitted[1, 32], RED)  # portrait: pillarboxed, bars on top


# --------------------------------------------------------------------------- command line and node

def _cli_frames(argv: list[str], handle) -> torch.Tensor:
    # train-absorber: one --video (train-temporal takes several, one clip each)
    args = cli.build_parser().parse_args(["train-absorber", "--prompt", "x", "--out", "t.safetensors", *argv])
    return cli._frames(args, handle)


def test_cli_fit_and_hold_last(clips, tiny, capsys):
    path = str(clips["720p25"][0])
    x = _cli_frames(["--video", path, "--frames", "2", "--fit", "pad"], tiny)  # toy model: 32x32
    assert x.shape == (2, 32, 32, 3) and close(x[0, 1, 16], BLACK) and close(x[0, 16, 0], RED)
    crop = _cli_frames(["--video", path, "--frames", "2"], tiny)  # crop is the default
    assert not close(crop[0, 16, 0], RED)
    held = _cli_frames(["--video", path, "--frames", "14", "--hold-last"], tiny)
    assert held.shape[0] == 14 and "note: video" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["invert", "--video", path, "--prompt", "x", "--out", "l.safetensors",
                                       "--fit", "zoom"])
    assert e.value.code == 2 and "--fit: invalid choice: 'zoom'" in capsys.readouterr().err


def test_cli_too_short_exits_2_naming_the_duration(clips, tiny, tmp_path, capsys, monkeypatch):
    from cav_core.model import save_t2v

    model = save_t2v(tiny.base, tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()  # saving the model printed progress
    assert cli.main(["invert", "--model", str(model), "--video", str(clips["720p25"][0]), "--frames", "14",
                     "--prompt", "x", "--out", "l.safetensors", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lasts 1.20 s" in err and "--hold-last" in err
    assert sorted(tmp_path.rglob("*")) == before


def _node(**inputs):
    from comfy_helpers import load_pack

    pack = load_pack()
    node = next(c for c in pack.NODES if c.define_schema().node_id == "LoadReferenceVideo")
    with torch.inference_mode():
        return node.execute(**{"video": "circle", "num_frames": 2, "fps": 8.0, "start": 0.0, "width": 0,
                               "height": 0, **inputs}).args


def test_node_fit_widget_and_model_size(clips, tiny):
    path = str(clips["portrait"][0])
    frames, fps, count = _node(path=path, fit="pad", model=tiny)  # 0 x 0 with a model: the model's 32x32
    assert frames.shape == (2, 32, 32, 3) and fps == 8.0 and count == 2 and close(frames[0, 16, 1], BLACK)
    stretched, _, _ = _node(path=path, fit="stretch", width=24, height=40)
    assert stretched.shape == (2, 40, 24, 3) and close(stretched[0, 0, 0], GREEN)
    kept, _, _ = _node(path=path)  # the defaults: crop, and 0 x 0 without a model keeps the video's size
    assert kept.shape == (2, 1280, 720, 3)
    with pytest.raises(InputError, match=r"fit='pad' needs a size to fit to: set width and height"):
        _node(path=path, fit="pad")
    with pytest.raises(InputError, match=r"'fit' widget"):
        _node(path=path, fit="zoom", width=32, height=32)


def test_node_hold_last_frame(clips, caplog):
    path = str(clips["720p25"][0])
    with pytest.raises(InputError, match=r"lasts 1\.20 s.*hold_last_frame"):
        _node(path=path, num_frames=14, width=32, height=32)
    frames, _, count = _node(path=path, num_frames=14, width=32, height=32, hold_last_frame=True)
    assert frames.shape[0] == 14 == count and torch.equal(frames[-1], frames[-4])
    assert "its last frame is held for the last 4 of 14 frames" in caplog.text
