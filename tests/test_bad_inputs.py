"""The bad-input catalogue (docs/BAD_INPUTS.md), one test per row: ``pytest -k bad_input``.

Every row asserts the exact kind of error (or, for inputs that must simply work, the
result) and, through :func:`refused` / :func:`snapshot`, that nothing under the test's
folders was created half-written or changed: no temp files left, no file replaced, no
file outside the output folder. Runs on the tiny random model, nothing is marked slow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
import shutil
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from cav_core import data, device_guard, train
from cav_core.adapter_files import AdapterFile, TokenEmbeddings, load_adapter, read_safetensors, save_adapter
from cav_core.adapters import LoraWeights, add_trainable_lora
from cav_core.data import load_video_clip
from cav_core.errors import AdapterError, InputError, ModelLoadError, VideoReadError
from cav_core.fileutil import atomic_write, safe_output_path
from cav_core.layers import role_modules
from cav_core.lora_convert import load_any_lora
from cav_core.model import load_t2v, resolve_device, resolve_dtype, save_t2v
from cav_core.sample import generate
from cav_core.train import TrainingError, train_appearance_absorber, train_temporal_lora
from cav_core.video_io import read_video, write_video

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUTS.md"
CAPTION = "a red circle moving on a black background"


# --------------------------------------------------------------------------- helpers

def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: size, content hash and mtime of files."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or p.is_dir():
            out[rel] = ("link" if p.is_symlink() else "dir",)
        else:
            b = p.read_bytes()
            out[rel] = (len(b), hashlib.sha256(b).hexdigest(), p.stat().st_mtime_ns)
    return out


def assert_same(before: dict, after: dict, allow: set[str] = frozenset()) -> None:
    new = set(after) - set(before) - set(allow)
    assert not new, f"files appeared: {sorted(new)}"
    assert not set(before) - set(after), f"files vanished: {sorted(set(before) - set(after))}"
    changed = [k for k in before if after[k] != before[k]]
    assert not changed, f"files changed: {changed}"


@contextlib.contextmanager
def refused(err: type[BaseException], match: str | None, root: Path, allow: set[str] = frozenset()):
    """Expect exactly ``err`` (not a subclass) matching ``match``; nothing under ``root``
    written or changed except the paths in ``allow``."""
    before = snapshot(root)
    with pytest.raises(err, match=match) as info:
        yield info
    assert type(info.value) is err, f"expected {err.__name__}, got {type(info.value).__name__}: {info.value}"
    assert_same(before, snapshot(root), allow)


@pytest.fixture
def out(tmp_path):
    """The output folder, holding a file of the user's that must never change."""
    o = tmp_path / "out"
    o.mkdir()
    (o / "keep.mp4").write_bytes(b"the user's own video, not to be touched")
    return o


def _rgb(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, 8:20, 2 + 2 * i: 12 + 2 * i] = (255, 40, 40)
        frames[i, 24:, :] = rng.integers(0, 255, 3)
    return frames


def _write_timed(path: Path, frames: np.ndarray, times_s: list[float], codec: str = "libx264") -> None:
    """An mp4 with the given presentation times (variable frame rate)."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=30)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.time_base = tb
        s.codec_context.time_base = tb
        s.options = {"preset": "ultrafast", "bf": "0"}
        for f, t in zip(frames, times_s):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = int(round(t * 1000)), tb
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _lora_tensors(unet, role: str, rank: int = 2, seed: int = 0, widen: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {}
    for m in role_modules(unet, role):
        lin = unet.get_submodule(m)
        t[f"{m}.lora_A.weight"] = torch.randn(rank, lin.in_features + widen, generator=g) * 0.01
        t[f"{m}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.01
    return t


def _lora(unet, role: str, rank: int = 2, **kw) -> LoraWeights:
    t = _lora_tensors(unet, role, rank, **kw)
    mods = sorted(k[: -len(".lora_A.weight")] for k in t if k.endswith(".lora_A.weight"))
    return LoraWeights(role=role, tensors=t, alphas={m: float(rank) for m in mods})


def _kohya(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Valid inputs of every kind, made once."""
    d = tmp_path_factory.mktemp("clips")
    frames = _rgb(8)
    for ext in (".mp4", ".webm", ".gif"):
        write_video(d / f"clip8{ext}", frames, fps=8)
    return d


@pytest.fixture(scope="module")
def frames():
    return torch.rand(8, 32, 32, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def saved_model(tiny, tmp_path_factory):
    return save_t2v(tiny.base, tmp_path_factory.mktemp("model") / "tiny")


def _both_readers(path: Path, **clip_kw):
    """The error of each reader for ``path`` (they must agree on the kind)."""
    errors = []
    for read in (lambda: read_video(path), lambda: load_video_clip(path, **clip_kw)):
        try:
            read()
        except Exception as e:  # noqa: BLE001 - collected and checked by the caller
            errors.append(e)
        else:
            errors.append(None)
    return errors


def _assert_both(path: Path, err: type, match: str, root: Path, **clip_kw) -> None:
    before = snapshot(root)
    for e in _both_readers(path, **clip_kw):
        assert type(e) is err, f"expected {err.__name__}, got {e!r}"
        assert re.search(match, str(e)), str(e)
    assert_same(before, snapshot(root))


# --------------------------------------------------------------------------- video files

def test_bad_input_missing_video(tmp_path, out):
    _assert_both(tmp_path / "nope.mp4", VideoReadError, r"nope\.mp4: the file does not exist", tmp_path)


def test_bad_input_video_path_is_a_folder(tmp_path, out):
    (tmp_path / "folder.mp4").mkdir()
    _assert_both(tmp_path / "folder.mp4", VideoReadError, "is a folder, not a video file", tmp_path)


def test_bad_input_empty_video(tmp_path, out):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _assert_both(tmp_path / "empty.mp4", VideoReadError, r"the file is empty \(0 bytes\)", tmp_path)


def test_bad_input_corrupt_video(tmp_path, out):
    p = tmp_path / "noise.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _assert_both(p, VideoReadError, r"cannot read video .*noise\.mp4", tmp_path)


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".gif"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_bad_input_truncated_video(clips, tmp_path, out, ext, keep):
    b = (clips / f"clip8{ext}").read_bytes()
    p = tmp_path / f"cut{ext}"
    p.write_bytes(b[: int(len(b) * keep)])
    _assert_both(p, VideoReadError, "incomplete|cannot read video", tmp_path, num_frames=2)


def test_bad_input_truncated_video_names_the_shortfall(clips, tmp_path, out):
    b = (clips / "clip8.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(b[:-3])  # only the tail of the index box is missing
    _assert_both(tmp_path / "cut.mp4", VideoReadError, r"incomplete \(its 'moov' box needs \d+ bytes, the file has "
                 r"\d+\).*get the whole file again", tmp_path, num_frames=2)


def test_bad_input_no_video_stream(tmp_path, out):
    with wave.open(str(tmp_path / "sound.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    _assert_both(tmp_path / "sound.wav", VideoReadError, "has no video stream", tmp_path)


def test_bad_input_subtitle_file(tmp_path, out):
    (tmp_path / "subs.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n")
    _assert_both(tmp_path / "subs.srt", VideoReadError, "has no video stream", tmp_path)


@pytest.mark.parametrize("name, fmt", [("photo.png", "PNG"), ("photo.jpg", "JPEG"), ("photo_as.mp4", "PNG")])
def test_bad_input_image_instead_of_video(tmp_path, out, name, fmt):
    from PIL import Image

    Image.fromarray(_rgb(1)[0]).save(tmp_path / name, format=fmt)
    _assert_both(tmp_path / name, VideoReadError, r"still image \((png|jpeg)\), not a video", tmp_path)


def test_bad_input_text_file_instead_of_video(tmp_path, out):
    (tmp_path / "notes.txt").write_text("shot list\nthis is a text file\n" * 20)  # ffmpeg renders this as a "video"
    _assert_both(tmp_path / "notes.txt", VideoReadError, "is a text file, not a video", tmp_path)


def test_bad_input_too_few_frames(clips, tmp_path, out):
    with refused(InputError, r"lasts 1\.00 s \(8 frames, 8 fps\); 16 frames at 8 fps from start=0 s need it to "
                 r"run to 2\.00 s, and only 8 fit\. Lower num_frames \(at most 8 here\)", tmp_path):
        load_video_clip(clips / "clip8.mp4", num_frames=16, fps=8)


def test_bad_input_start_past_the_end(clips, tmp_path, out):
    with refused(InputError, r"start=5 s is past its end \(1\.00 s, 8 fps\); use a start below 1\.00 s", tmp_path):
        load_video_clip(clips / "clip8.mp4", num_frames=2, start=5)


@pytest.mark.parametrize("kw, match", [
    (dict(num_frames=0), "num_frames must be a whole number >= 1"),
    (dict(num_frames=2.5), "num_frames must be a whole number >= 1"),
    (dict(fps=0), "fps must be a positive number"),
    (dict(fps=float("nan")), "fps must be a positive number"),
    (dict(start=-1), "start must be a time in seconds >= 0"),
    (dict(size=(0, 32)), "size must be two positive whole numbers"),
    (dict(size="32x32"), r"size must be \(height, width\)"),
])
def test_bad_input_clip_arguments(clips, tmp_path, out, kw, match):
    with refused(InputError, match, tmp_path):
        load_video_clip(clips / "clip8.mp4", **{"num_frames": 2, **kw})


@pytest.fixture(scope="module")
def huge_video(tmp_path_factory):
    """Two 3840x2160 (4K UHD) frames."""
    p = tmp_path_factory.mktemp("huge") / "uhd.mp4"
    h, w = 2160, 3840
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], -1).astype(np.uint8)
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(2):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 64 * i, 1), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return p


def test_bad_input_huge_resolution_is_resized_while_decoding(huge_video, tmp_path, out, monkeypatch):
    sizes = []
    to_rgb = data._to_rgb
    monkeypatch.setattr(data, "_to_rgb", lambda frame, size: sizes.append(to_rgb(frame, size).shape) or to_rgb(frame, size))
    before = snapshot(tmp_path)
    x = load_video_clip(huge_video, num_frames=2, fps=8, size=(32, 32))
    assert x.shape == (2, 32, 32, 3) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    # the decoder shrank every frame: no 4K frame ever existed as an array
    assert sizes and all(h <= 2 * 32 + 1 and w <= 2 * 57 + 1 for h, w, _ in sizes), sizes
    assert_same(before, snapshot(tmp_path))


def test_bad_input_huge_resolution_without_size(huge_video, tmp_path, out, monkeypatch):
    # 2 frames of 4K are 0.2 GiB; a lower cap stands in for 64 frames of 8K
    monkeypatch.setattr(data, "MAX_UNRESIZED_BYTES", 64 * 1024**2)
    with refused(InputError, r"is 3840x2160: 2 frames at full size would take 0\.2 GiB; pass size=\(height, width\)",
                 tmp_path):
        load_video_clip(huge_video, num_frames=2, fps=8)
    import cav_core.video_io as vio

    monkeypatch.setattr(vio, "MAX_READ_BYTES", 64 * 1024**2)
    with refused(InputError, r"video .*uhd\.mp4 is too large to read whole: 1 frame\(s\) of 3840x2160 already take 0\.1 "
                 r"GiB; load a clip of it resized instead", tmp_path):
        read_video(huge_video)


def test_bad_input_gif_with_palette_and_transparency(tmp_path, out):
    from PIL import Image

    ims = []
    for i in range(6):
        a = np.zeros((32, 32), np.uint8)  # palette index 0 is transparent
        a[8:20, 2 + 3 * i: 12 + 3 * i] = 1  # a red box moving right
        a[26:, :] = 2  # an opaque green floor
        im = Image.fromarray(a, mode="P")
        im.putpalette([255, 0, 255, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
        ims.append(im)
    p = tmp_path / "sprite.gif"
    ims[0].save(p, save_all=True, append_images=ims[1:], duration=100, loop=0, transparency=0, disposal=2)
    before = snapshot(tmp_path)
    x = load_video_clip(p, num_frames=6, fps=10)
    full, fps = read_video(p)
    assert x.shape == (6, 32, 32, 3) and full.shape == (6, 32, 32, 3) and fps == pytest.approx(10)
    assert torch.equal(x[0, 10, 3], torch.tensor([1.0, 0.0, 0.0]))  # palette colors exact
    assert torch.equal(x[0, 30, 0], torch.tensor([0.0, 1.0, 0.0]))
    hole = x[:, 0:6, :]  # always transparent: one flat color, never the magenta key color
    assert torch.equal(hole, hole[:1, :1, :1].expand_as(hole))
    assert not torch.equal(hole[0, 0, 0], torch.tensor([1.0, 0.0, 1.0]))
    assert not torch.equal(x[5, 10, 3], torch.tensor([1.0, 0.0, 0.0]))  # disposal honored: no trail
    assert_same(before, snapshot(tmp_path))


def test_bad_input_variable_frame_rate(tmp_path, out):
    times = [0.0, 0.05, 0.1, 0.4, 0.45, 0.9, 1.0, 1.5, 1.55, 2.0]  # bursts and pauses
    p = tmp_path / "phone.mp4"
    _write_timed(p, _rgb(10), times)
    before = snapshot(tmp_path)
    x = load_video_clip(p, num_frames=5, fps=2)  # targets 0, .5, 1, 1.5, 2 s
    src = torch.from_numpy(_rgb(10)).float() / 255
    picked = [int(torch.stack([(x[k] - s).abs().mean() for s in src]).argmin()) for k in range(5)]
    assert picked == [0, 4, 6, 7, 9]  # the frame shown at each time, not every 2nd frame
    assert_same(before, snapshot(tmp_path))


# --------------------------------------------------------------------------- prompts

@pytest.mark.parametrize("caption", ["", "   \n"])
def test_bad_input_empty_caption(tiny, frames, tmp_path, out, caption):
    with refused(InputError, "caption is empty: describe the reference video", tmp_path):
        train_temporal_lora(tiny, frames, caption, steps=1, checkpoint_dir=out / "ckpt")
    with refused(InputError, "appearance caption is empty", tmp_path):
        train_appearance_absorber(tiny, frames, caption, steps=1, checkpoint_dir=out / "ckpt")


def test_bad_input_overlong_prompt(tiny, tmp_path, out):
    limit = tiny.base.tokenizer.model_max_length - 2
    long = " ".join(["red"] * (limit + 5))
    with refused(InputError, rf"prompt is too long: {limit + 5} tokens, the text encoder takes at most {limit}; "
                 "shorten it", tmp_path):
        generate(tiny, long, steps=1, num_frames=2)
    with refused(InputError, rf"at most {limit}", tmp_path):
        generate(tiny, "a red circle", negative_prompt=long, steps=1, num_frames=2)


def test_bad_input_overlong_caption_for_training(tiny, frames, tmp_path, out):
    long = " ".join(["red"] * 40)
    with refused(InputError, r"prompt is too long: 40 tokens, the text encoder takes at most 22", tmp_path):
        train_temporal_lora(tiny, frames, long, steps=1, checkpoint_dir=out / "ckpt")


def test_bad_input_prompt_not_text(tiny, tmp_path, out):
    with refused(InputError, "prompt and negative prompt must be text", tmp_path):
        generate(tiny, None, steps=1, num_frames=2)
    with refused(InputError, "prompt and negative prompt must be text", tmp_path):
        generate(tiny, "a red circle", negative_prompt=None, steps=1, num_frames=2)


# --------------------------------------------------------------------------- LoRA / adapter files

def _save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def test_bad_input_lora_for_sdxl(tiny, tmp_path, out):
    unet = tiny.base.unet
    m = role_modules(unet, "spatial")[0]
    t = {_kohya(m) + ".lora_down.weight": torch.zeros(2, 32), _kohya(m) + ".lora_up.weight": torch.zeros(32, 2),
         "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 8)}
    p = _save_tensors(tmp_path / "in" / "sdxl_style.safetensors", t)
    with refused(AdapterError, r"looks like a LoRA for SDXL.*Use a LoRA made for Stable Diffusion 2\.x", tmp_path):
        load_any_lora(p, unet=unet)


def test_bad_input_lora_for_sd15(tiny, tmp_path, out):
    key = _kohya("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k")
    t = {key + ".lora_down.weight": torch.zeros(4, 768), key + ".lora_up.weight": torch.zeros(32, 4)}
    p = _save_tensors(tmp_path / "in" / "sd15.safetensors", t)
    with refused(AdapterError, r"Stable Diffusion 1\.x \(its cross-attention input width is 768, this model's is 64\)",
                 tmp_path):
        load_any_lora(p, unet=tiny.base.unet)


def test_bad_input_lora_wrong_shape(tiny, tmp_path, out):
    p = save_adapter(tmp_path / "in" / "wide.safetensors",
                     AdapterFile("temporal_lora", lora=_lora(tiny.base.unet, "temporal", widen=8)))
    with refused(AdapterError, r"does not fit this model: first mismatching module .*Linear\(", tmp_path):
        load_any_lora(p, unet=tiny.base.unet)
    lora = load_adapter(p).lora
    with refused(AdapterError, "does not fit this model", tmp_path):  # also when applied without the check
        generate(tiny.with_lora(lora, 1.0), "a red circle", steps=1, num_frames=2)


def test_bad_input_lora_wrong_rank(tiny, tmp_path, out):
    unet = tiny.base.unet
    m = role_modules(unet, "spatial")[0]
    lin = unet.get_submodule(m)
    t = {f"unet.{m}.lora_A.weight": torch.zeros(4, lin.in_features),
         f"unet.{m}.lora_B.weight": torch.zeros(lin.out_features, 2)}  # rank 4 down, rank 2 up
    p = _save_tensors(tmp_path / "in" / "ranks.safetensors", t)
    with refused(AdapterError, r"LoRA shapes A\(4, 32\) B\(32, 2\)", tmp_path):
        load_any_lora(p, unet=unet)


def test_bad_input_lora_wrong_role(tiny, tmp_path, out):
    p = save_adapter(tmp_path / "in" / "motion.safetensors", AdapterFile("temporal_lora", lora=_lora(tiny.base.unet, "temporal")))
    t, _ = read_safetensors(p)
    q = _save_tensors(tmp_path / "in" / "motion_peft.safetensors", t)  # without our metadata: a third-party file
    with refused(AdapterError, r"is a temporal LoRA .* load it as a temporal LoRA \(role='temporal'\)", tmp_path):
        load_any_lora(q, unet=tiny.base.unet, role="spatial")


@pytest.fixture
def no_unpickling(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a pickle was unpickled")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)


@pytest.mark.parametrize("name", ["style.pt", "style.ckpt", "style.bin", "style.pth"])
def test_bad_input_lora_pickle_file(tmp_path, out, name, no_unpickling):
    p = tmp_path / "in" / name
    p.parent.mkdir()
    p.write_bytes(pickle.dumps({"lora_unet_x.lora_down.weight": [0.0]}, protocol=4))
    for load in (load_adapter, load_any_lora):
        with refused(AdapterError, r"pickle-based files are refused for safety .*convert it to \.safetensors", tmp_path):
            load(p)


@pytest.mark.parametrize("kind", ["pickle", "torch_zip"])
def test_bad_input_lora_pickle_renamed_safetensors(tmp_path, out, kind):
    p = tmp_path / "in" / "renamed.safetensors"
    p.parent.mkdir()
    if kind == "pickle":
        p.write_bytes(pickle.dumps({"w": [0.0]}, protocol=4))
    else:
        torch.save({"w": torch.zeros(2)}, p)  # written here, before the loaders are watched
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
        mp.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
        mp.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled"))
        for load in (load_adapter, load_any_lora):
            with refused(AdapterError, r"PyTorch pickle/zip checkpoint named \.safetensors; it is refused unread",
                         tmp_path):
                load(p)


@pytest.mark.parametrize("cut", [0.3, 0.999])
def test_bad_input_lora_truncated_safetensors(tiny, tmp_path, out, cut):
    p = save_adapter(tmp_path / "in" / "t.safetensors", AdapterFile("temporal_lora", lora=_lora(tiny.base.unet, "temporal")))
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * cut)])
    for load in (load_adapter, load_any_lora):
        with refused(AdapterError, r"is not a readable \.safetensors file .*it may be truncated", tmp_path):
            load(p)


def test_bad_input_lora_with_nan_values(tiny, tmp_path, out):
    lora = _lora(tiny.base.unet, "temporal")
    bad = dict(lora.tensors)
    k = sorted(bad)[3]
    bad[k] = bad[k].clone()
    bad[k][0, 0] = float("nan")
    p = save_adapter(tmp_path / "in" / "nan.safetensors",
                     AdapterFile("temporal_lora", lora=LoraWeights("temporal", bad, lora.alphas)))
    for load in (load_adapter, load_any_lora):
        with refused(AdapterError, rf"tensor 'unet\.{re.escape(k)}' holds NaN or infinite values; the file is damaged",
                     tmp_path):
            load(p)


@pytest.mark.parametrize("meta, match", [
    ("{not json", "metadata is damaged"),
    (json.dumps({"format": "cav-adapter", "format_version": 1, "kind": "absorber",
                 "textual_inversion": {"tokens": ["<cav-0>"]}}), r"metadata is damaged .*KeyError"),
    (json.dumps({"format": "cav-adapter", "format_version": 1, "kind": "mystery"}), "unknown adapter kind 'mystery'"),
    (json.dumps({"format": "cav-adapter", "format_version": 99, "kind": "absorber"}),
     "has format version 99; this pack reads up to 1: update the pack"),
])
def test_bad_input_adapter_damaged_metadata(tmp_path, out, meta, match):
    p = _save_tensors(tmp_path / "in" / "meta.safetensors", {"unet.x.lora_A.weight": torch.zeros(1, 2)},
                      {"cav_adapter": meta})
    for load in (load_adapter, load_any_lora):
        with refused(AdapterError, match, tmp_path):
            load(p)


def test_bad_input_lora_malformed_alpha(tiny, tmp_path, out):
    unet = tiny.base.unet
    m = role_modules(unet, "spatial")[0]
    lin = unet.get_submodule(m)
    t = {_kohya(m) + ".lora_down.weight": torch.zeros(2, lin.in_features),
         _kohya(m) + ".lora_up.weight": torch.zeros(lin.out_features, 2), _kohya(m) + ".alpha": torch.zeros(0)}
    p = _save_tensors(tmp_path / "in" / "alpha.safetensors", t)
    with refused(AdapterError, r"the LoRA file is malformed \(IndexError", tmp_path):
        load_any_lora(p, unet=unet)


def test_bad_input_lora_not_a_lora(tmp_path, out):
    p = _save_tensors(tmp_path / "in" / "weights.safetensors", {"conv_in.weight": torch.zeros(4, 4, 3, 3)})
    with refused(AdapterError, r"no layer of this file applies .*Is it a LoRA for a Stable Diffusion 2\.x", tmp_path):
        load_any_lora(p)
    with refused(AdapterError, "is not a Customize-A-Video adapter file", tmp_path):
        load_adapter(p)


# --------------------------------------------------------------------------- model folders

def _trunc(p: Path, keep: float = 0.5) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * keep)])


def _json_edit(p: Path, **changes) -> None:
    p.write_text(json.dumps({**json.loads(p.read_text()), **changes}))


MODEL_CASES = {
    "missing_folder": (lambda d: shutil.rmtree(d), r"model folder not found"),
    "file_not_folder": (lambda d: (shutil.rmtree(d), d.write_text("x")), r"is a file; give the diffusers model \*folder\*"),
    "no_model_index": (lambda d: (d / "model_index.json").unlink(), r"model_index\.json is missing"),
    "model_index_not_json": (lambda d: (d / "model_index.json").write_text("{oops"), r"model_index\.json is not valid JSON"),
    "model_index_not_object": (lambda d: (d / "model_index.json").write_text("[1, 2]"), "is not a diffusers model index"),
    "image_model": (lambda d: _json_edit(d / "model_index.json", unet=["diffusers", "UNet2DConditionModel"]),
                    r"component 'unet' is UNet2DConditionModel, expected UNet3DConditionModel"),
    "missing_vae": (lambda d: shutil.rmtree(d / "vae"), r"component folder 'vae/' is missing"),
    "missing_unet_config": (lambda d: (d / "unet" / "config.json").unlink(), r"unet: no config file"),
    "missing_weights": (lambda d: (d / "unet" / "diffusion_pytorch_model.safetensors").unlink(), r"unet: no weights found"),
    "truncated_unet": (lambda d: _trunc(d / "unet" / "diffusion_pytorch_model.safetensors"),
                       r"unet: could not load the unet .*download the model again"),
    "truncated_text_encoder": (lambda d: _trunc(d / "text_encoder" / "model.safetensors", 0.1),
                               r"text_encoder: could not load the text_encoder \(SafetensorError"),
    "broken_unet_config": (lambda d: (d / "unet" / "config.json").write_text("{oops"), r"could not load the unet"),
    "other_unet_widths": (lambda d: _json_edit(d / "unet" / "config.json", block_out_channels=[16, 32, 32]),
                          r"could not load the unet \(ValueError"),
    "tokenizer_without_vocabulary": (lambda d: (d / "tokenizer" / "tokenizer.json").unlink(),
                                     r"tokenizer: no vocabulary \(tokenizer\.json, or vocab\.json \+ merges\.txt\)"),
    "broken_tokenizer": (lambda d: (d / "tokenizer" / "tokenizer.json").write_text("{oops"), "could not load the tokenizer"),
    "broken_scheduler_config": (lambda d: (d / "scheduler" / "scheduler_config.json").write_text("{oops"),
                                r"scheduler_config\.json is not valid JSON"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_input_model_folder(saved_model, tmp_path, out, case):
    d = tmp_path / "model"
    shutil.copytree(saved_model, d)
    mutate, match = MODEL_CASES[case]
    mutate(d)
    with refused(ModelLoadError, match, tmp_path):
        load_t2v(d, device="cpu", dtype="fp32")


# --------------------------------------------------------------------------- adapters vs. base model

def test_bad_input_absorber_from_another_base_model(tiny, frames, tmp_path, out):
    absorber = AdapterFile("absorber", lora=_lora(tiny.base.unet, "spatial", rank=1),
                           tokens=TokenEmbeddings(("<cav-0>",), torch.zeros(1, 64)), base_model="zeroscope_v2_576w@0123456789",
                           info={"kind": "both", "init_word": "red"})
    p = save_adapter(tmp_path / "in" / "absorber.safetensors", absorber)
    loaded = load_adapter(p)
    assert loaded.base_model == "zeroscope_v2_576w@0123456789"  # the metadata says which
    with refused(InputError, rf"the absorber was trained on model zeroscope_v2_576w@0123456789, but this model is "
                 rf"{re.escape(tiny.model_id)}; train the absorber on this model", tmp_path):
        train_temporal_lora(tiny, frames, CAPTION, absorber=loaded, steps=1, checkpoint_dir=out / "ckpt")


def test_bad_input_tokens_for_another_text_encoder(tiny, tmp_path, out):
    handle = tiny.with_tokens(TokenEmbeddings(("<cav-0>",), torch.zeros(1, 1024)))
    with refused(InputError, r"embeddings have width 1024 but this text encoder's is 64: they were trained for another "
                 "model", tmp_path):
        generate(handle, "a <cav-0> circle", steps=1, num_frames=2)


# --------------------------------------------------------------------------- numbers out of range

@pytest.mark.parametrize("strength", [1e6, float("nan"), float("inf"), "1.0", None])
def test_bad_input_lora_strength(tiny, tmp_path, out, strength):
    with refused(InputError, r"LoRA strength must be a finite number in \[-100, 100\]", tmp_path):
        tiny.with_lora(_lora(tiny.base.unet, "temporal"), strength)


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), r"steps must be in 1\.\.1000"), (dict(steps=5000), r"steps must be in 1\.\.1000"),
    (dict(steps=2.5), r"steps must be in 1\.\.1000 \(a whole number\), got 2\.5"),
    (dict(steps="25"), r"steps must be in 1\.\.1000 \(a whole number\), got '25'"),
    (dict(guidance_scale=float("nan")), r"guidance scale must be in 0\.\.100"),
    (dict(guidance_scale=-1.0), r"guidance scale must be in 0\.\.100"),
    (dict(guidance_scale="7"), r"guidance scale must be in 0\.\.100"),
    (dict(num_frames=0), r"frames must be in 1\.\.1024"), (dict(batch_size=0), r"batch size must be in 1\.\.64"),
    (dict(height=30), r"height 30 is not a positive multiple of 16, which this model needs; try 32"),
    (dict(scheduler="plms"), "unknown scheduler 'plms'; choose one of ddim"),
    (dict(init_latents=torch.zeros(1, 4, 2, 4, 4)), "start latents have shape"),
])
def test_bad_input_sampling_settings(tiny, tmp_path, out, kw, match):
    with refused(InputError, match, tmp_path):
        generate(tiny, "a red circle", **{"steps": 1, "num_frames": 2, **kw})


def test_bad_input_init_blend(tiny, tmp_path, out):
    with refused(InputError, r"init blend must be in 0\.\.1", tmp_path):
        generate(tiny, "a red circle", steps=1, num_frames=2, init_latents=torch.zeros(1, 4, 2, 8, 8), init_blend=1.5)


@pytest.mark.parametrize("stage, kw, match", [
    ("temporal", dict(steps=0), r"training steps must be an integer in 1\.\.100000"),
    ("temporal", dict(steps=10**6), r"training steps must be an integer in 1\.\.100000"),
    ("temporal", dict(steps=2.5), r"training steps must be an integer"),
    ("temporal", dict(lr=0.0), r"learning rate must be in \(0, 1\]"),
    ("temporal", dict(lr=float("nan")), r"learning rate must be in \(0, 1\]"),
    ("temporal", dict(lr=5.0), r"learning rate must be in \(0, 1\]"),
    ("temporal", dict(rank=0), r"rank must be an integer in 1\.\.256"),
    ("absorber", dict(rank=0), r"rank must be an integer in 1\.\.256"),
    ("absorber", dict(rank=300), r"rank must be an integer in 1\.\.256"),
    ("absorber", dict(kind="lorax"), "absorber kind must be 'lora', 'ti' or 'both'"),
    ("absorber", dict(num_tokens=0), r"number of textual-inversion tokens must be in 1\.\.16"),
    ("absorber", dict(crop_range=(0.0, 1.0)), r"crop_range must satisfy 0 < low <= high <= 1"),
    ("absorber", dict(ti_lr=-1.0), r"textual-inversion learning rate must be in \(0, 1\]"),
])
def test_bad_input_training_settings(tiny, frames, tmp_path, out, stage, kw, match):
    fn = train_temporal_lora if stage == "temporal" else train_appearance_absorber
    with refused(InputError, match, tmp_path):
        fn(tiny, frames, CAPTION, **{"steps": 1, "checkpoint_dir": out / "ckpt", **kw})


def test_bad_input_training_frames(tiny, tmp_path, out):
    with refused(InputError, r"reference frames must be a \(F,H,W,3\) tensor in 0\.\.1, got \(32, 32, 3\)", tmp_path):
        train_temporal_lora(tiny, torch.rand(32, 32, 3), CAPTION, steps=1, checkpoint_dir=out / "ckpt")


# --------------------------------------------------------------------------- training runs

def _job(tiny, unet, batch, ckpt: Path, steps: int = 10, progress=None) -> train.TrainJob:
    params = add_trainable_lora(unet, "temporal", 1, 1.0, "t")
    return train.TrainJob("temporal", unet, [{"params": params, "lr": 1e-3}], batch, steps,
                          tiny.base.scheduler_config, checkpoint_dir=ckpt, checkpoint_every=2, progress=progress)


LATENTS, COND = torch.zeros(1, 4, 4, 8, 8), torch.zeros(1, 24, 64)


def _ckpt_state(ckpt: Path) -> tuple[str, str, bool]:
    from safetensors import safe_open

    with safe_open(str(ckpt / train.CHECKPOINT_FILE), framework="pt") as f:
        finite = all(bool(torch.isfinite(f.get_tensor(k)).all()) for k in f.keys())
        return f.metadata()["step"], hashlib.sha256((ckpt / train.CHECKPOINT_FILE).read_bytes()).hexdigest(), finite


def test_bad_input_non_finite_loss(tiny, tmp_path, out):
    ckpt = out / "ckpt"
    at_step_2 = {}

    def progress(step, total, info):
        if step == 2:
            at_step_2["state"] = _ckpt_state(ckpt)

    def batch(step, g):  # the loss turns NaN at the 4th step
        return (LATENTS * float("nan") if step >= 3 else LATENTS), COND

    with tiny.applied() as unet:
        job = _job(tiny, unet, batch, ckpt, progress=progress)
        with refused(TrainingError, r"the loss became nan at step 4, training stopped; the last good checkpoint "
                     r"\(step 2\) is kept in .*ckpt\. Lower the learning rate", tmp_path,
                     allow={"out/ckpt", f"out/ckpt/{train.CHECKPOINT_FILE}"}):
            train.run_training(job)
    assert _ckpt_state(ckpt) == at_step_2["state"] and at_step_2["state"][0] == "2"  # not replaced, finite


def test_bad_input_non_finite_loss_before_any_checkpoint(tiny, tmp_path, out):
    with tiny.applied() as unet:
        job = _job(tiny, unet, lambda step, g: (LATENTS * float("inf"), COND), out / "ckpt")
        with refused(TrainingError, r"loss became nan at step 1, training stopped; no checkpoint was written yet",
                     tmp_path):
            train.run_training(job)


def test_bad_input_diverged_weights(tiny, tmp_path, out):
    ckpt = out / "ckpt"

    def progress(step, total, info):
        if step == 3:  # an update that blew the weights up (the loss only shows it next step)
            with torch.no_grad():
                job.param_groups[0]["params"][0].fill_(float("inf"))

    with tiny.applied() as unet:
        job = _job(tiny, unet, lambda step, g: (LATENTS, COND), ckpt, progress=progress)
        with refused(TrainingError, r"at step 5, training stopped; the last good checkpoint \(step 2\)", tmp_path,
                     allow={"out/ckpt", f"out/ckpt/{train.CHECKPOINT_FILE}"}):
            train.run_training(job)
    step, _, finite = _ckpt_state(ckpt)
    assert step == "2" and finite  # the step-4 checkpoint of broken weights was never written


def test_bad_input_out_of_memory_during_training(tiny, tmp_path, out):
    def batch(step, g):
        if step == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return LATENTS, COND

    with tiny.applied() as unet:
        job = _job(tiny, unet, batch, out / "ckpt")
        with refused(TrainingError, r"out of GPU memory at step 4; the last good checkpoint \(step 3\) is kept in .*"
                     "Use fewer frames", tmp_path, allow={"out/ckpt", f"out/ckpt/{train.CHECKPOINT_FILE}"}):
            train.run_training(job)
    assert _ckpt_state(out / "ckpt")[0] == "3"


def test_bad_input_cancelled_training(tiny, frames, tmp_path, out):
    class Interrupted(Exception):  # like ComfyUI's InterruptProcessingException
        pass

    def cancel(step, total, info):
        if step == 2:
            raise Interrupted

    with refused(Interrupted, None, tmp_path, allow={"out/ckpt", f"out/ckpt/{train.CHECKPOINT_FILE}"}):
        train_temporal_lora(tiny, frames, CAPTION, steps=4, checkpoint_dir=out / "ckpt", progress=cancel)
    assert _ckpt_state(out / "ckpt")[0] == "2"  # resume continues from here: see test_train.py


def test_bad_input_checkpoint_of_another_run(tiny, frames, tmp_path, out):
    _save_tensors(out / "ckpt" / train.CHECKPOINT_FILE, {"param.0": torch.zeros(1)},
                  {"step": "5", "fingerprint": "another-run", "stage": "temporal", "losses": "[]"})
    with refused(InputError, r"checkpoint folder .*ckpt holds a different training run .* choose another folder",
                 tmp_path):
        train_temporal_lora(tiny, frames, CAPTION, steps=2, checkpoint_dir=out / "ckpt", resume=True)


def test_bad_input_damaged_checkpoint(tiny, frames, tmp_path, out):
    (out / "ckpt").mkdir()
    (out / "ckpt" / train.CHECKPOINT_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with refused(InputError, r"checkpoint .* is damaged \(\w+\); delete it to start over", tmp_path):
        train_temporal_lora(tiny, frames, CAPTION, steps=2, checkpoint_dir=out / "ckpt", resume=True)


def test_bad_input_checkpoint_folder_is_a_file(tiny, frames, tmp_path, out):
    (out / "ckpt").write_text("not a folder")
    with refused(InputError, r"checkpoint folder .*ckpt exists and is not a folder", tmp_path):
        train_temporal_lora(tiny, frames, CAPTION, steps=1, checkpoint_dir=out / "ckpt")


# --------------------------------------------------------------------------- memory and devices

def test_bad_input_too_little_gpu_memory(tiny, frames, tmp_path, out, monkeypatch):
    cfg = tiny.base.unet.config
    per_frame = device_guard.estimate_training_memory(cfg.block_out_channels, cfg.layers_per_block, 1, 32, 32,
                                                      bytes_per_value=4, vae_scale_factor=4).activations
    free = int((4.5 * per_frame) / device_guard.USABLE_FRACTION)  # room for 4 frames, the clip has 8
    monkeypatch.setattr(device_guard, "RESERVE_BYTES", 0)
    monkeypatch.setattr(device_guard, "available_memory", lambda dev: (free, 8 * device_guard.GIB))
    with refused(InputError, r"not enough GPU memory for temporal training: 8 frame\(s\) at 32x32, batch 1 need about "
                 r"\d+ MiB besides the model, and cpu has \d+ MiB free of 8\.0 GiB\. Use fewer frames \(at most "
                 r"4 fit here\)", tmp_path):
        train_temporal_lora(tiny, frames, CAPTION, steps=1, checkpoint_dir=out / "ckpt")
    with refused(InputError, r"not enough GPU memory for absorber training: 1 frame\(s\) at 32x32, batch 8 .*Lower the "
                 r"batch size \(at most 4 fit here\)", tmp_path):
        train_appearance_absorber(tiny, frames, CAPTION, steps=1, batch_size=8, checkpoint_dir=out / "ckpt")


@pytest.mark.parametrize("dtype", ["fp16", "bf16", torch.float16])
def test_bad_input_half_precision_on_cpu(saved_model, tmp_path, out, dtype):
    with refused(InputError, r"dtype (fp16|bf16|float16) is not supported on the CPU here; use 'fp32' \(or 'auto'\)",
                 tmp_path):
        load_t2v(saved_model, device="cpu", dtype=dtype)


@pytest.mark.parametrize("kw, match", [
    (dict(dtype="fp8"), "unknown dtype 'fp8'; use 'auto', 'fp32', 'fp16' or 'bf16'"),
    (dict(dtype=torch.int8), "dtype int8 is not usable for the model"),
    (dict(device="tpu"), "unknown device 'tpu'; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
])
def test_bad_input_unknown_dtype_or_device(saved_model, tmp_path, out, kw, match):
    with refused(InputError, match, tmp_path):
        load_t2v(saved_model, **{"device": "cpu", "dtype": "fp32", **kw})


def test_bad_input_device_not_available(saved_model, tmp_path, out, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with refused(InputError, r"device 'cuda': CUDA is not available in this PyTorch install; use 'auto' or 'cpu'",
                 tmp_path):
        load_t2v(saved_model, device="cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with refused(InputError, r"device 'mps': Apple MPS is not available here", tmp_path):
        load_t2v(saved_model, device="mps")


def test_bad_input_bf16_on_a_gpu_without_it(tmp_path, out, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with refused(InputError, r"dtype bf16 is not supported by this GPU; use 'fp16'", tmp_path):
        resolve_dtype("bf16", resolve_device("cuda"))
    with refused(InputError, r"there are only 1 CUDA device\(s\)", tmp_path):
        resolve_device("cuda:3")


# --------------------------------------------------------------------------- output names and files

@pytest.mark.parametrize("name, match", [
    ("../escape", r"contains '\.\.', which would leave the output folder"),
    ("clips/../../escape", r"contains '\.\.'"),
    ("..\\escape", r"contains '\.\.'"),
    ("/etc/cron.d/job", "is an absolute path; give a name inside the output folder"),
    ("C:\\Windows\\evil", "is an absolute path"),
    ("\\\\server\\share\\x", "is an absolute path"),
    ("", "output name is empty"),
    ("...", "has no usable characters"),
])
def test_bad_input_output_name_escapes(tmp_path, out, name, match):
    with refused(InputError, match, tmp_path):
        target = safe_output_path(out, name, ".mp4")
        write_video(target, _rgb(2), fps=8, overwrite=False)


def test_bad_input_output_name_symlink_out_of_the_folder(tmp_path, out):
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with refused(InputError, r"leads outside the output folder .* \(through a symbolic link", tmp_path):
        safe_output_path(out, "link/clip", ".mp4")


@pytest.mark.parametrize("name, want", [
    ('bad<>:"|?*name', "bad_______name.mp4"),
    ("tab\tnew\nline\x00nul", "tab_new_line_nul.mp4"),
    (".hidden", "hidden.mp4"),
    ("CON", "_CON.mp4"),
    ("trailing dots. . ", "trailing dots.mp4"),
    ("clips/run 1/take:2", "clips/run 1/take_2.mp4"),
    ("日本語の動画", "日本語の動画.mp4"),
])
def test_bad_input_output_name_odd_characters(tmp_path, out, name, want):
    before = snapshot(tmp_path)
    target = safe_output_path(out, name, ".mp4")
    assert target == out.resolve() / want
    write_video(target, _rgb(2), fps=8, overwrite=False)
    assert_same(before, snapshot(tmp_path), allow={f"out/{want}", *(f"out/{'/'.join(want.split('/')[:i])}"
                                                                       for i in range(1, want.count('/') + 1))})
    assert read_video(target)[0].shape == (2, 32, 32, 3)  # complete


def test_bad_input_output_name_too_long(tmp_path, out):
    target = safe_output_path(out, "é" * 300, ".mp4")
    assert len(target.name.encode()) <= 200 and target.name.endswith(".mp4") and target.parent == out.resolve()


def test_bad_input_output_name_exists(tmp_path, out):
    before = snapshot(tmp_path)
    first = safe_output_path(out, "keep", ".mp4")
    assert first.name == "keep_00001.mp4"  # a counter, as ComfyUI saves images
    write_video(first, _rgb(2), fps=8, overwrite=False)
    second = safe_output_path(out, "keep.mp4", ".gif")
    assert second.name == "keep_00002.mp4"
    assert_same(before, snapshot(tmp_path), allow={"out/keep_00001.mp4"})


def test_bad_input_save_over_existing_file(tiny, tmp_path, out):
    adapter = AdapterFile("temporal_lora", lora=_lora(tiny.base.unet, "temporal"))
    (out / "motion.safetensors").write_bytes(b"an older LoRA of the user's")
    with refused(InputError, r"motion\.safetensors already exists; choose another name \(files are never overwritten\)",
                 tmp_path):
        save_adapter(out / "motion.safetensors", adapter)
    with refused(InputError, "already exists", tmp_path):
        write_video(out / "keep.mp4", _rgb(2), fps=8, overwrite=False)


def test_bad_input_write_fails_half_way(tmp_path, out, monkeypatch):
    import cav_core.video_io as vio

    real = vio._encode

    def encode_then_fail(tmp, ext, frames, fps):
        real(tmp, ext, frames, fps)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vio, "_encode", encode_then_fail)
    with refused(OSError, "No space left on device", tmp_path):
        write_video(out / "new.mp4", _rgb(2), fps=8, overwrite=False)
    with refused(OSError, "No space left on device", tmp_path):  # overwrite=True must not lose the old file either
        write_video(out / "keep.mp4", _rgb(2), fps=8, overwrite=True)

    def half(tmp):
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt

    with refused(KeyboardInterrupt, None, tmp_path):
        atomic_write(out / "other.safetensors", half)


@pytest.mark.parametrize("name, match", [
    ("clip.avi", r"extension must be one of \.mp4, \.webm, \.gif"),
    ("odd.mp4", r"needs an even width and height, got 33x32"),
    ("folder.mp4", "is a folder; give a file name"),
])
def test_bad_input_video_output(tmp_path, out, name, match):
    (out / "folder.mp4").mkdir()
    frames = _rgb(2, 32, 33) if name == "odd.mp4" else _rgb(2)
    with refused(InputError, match, tmp_path):
        write_video(out / name, frames, fps=8)


@pytest.mark.parametrize("frames, match", [
    (np.zeros((0, 32, 32, 3), np.uint8), "video has no frames"),
    (np.zeros((32, 32, 3), np.uint8), r"must have shape \(F, H, W, C\)"),
    (np.zeros((2, 32, 32, 3), np.int32), "integer video frames must be uint8"),
    (np.zeros((2, 32, 32, 2), np.uint8), "must have 1, 3 or 4 channels"),
])
def test_bad_input_video_frames_to_write(tmp_path, out, frames, match):
    with refused(InputError, match, tmp_path):
        write_video(out / "new.mp4", frames, fps=8)


# --------------------------------------------------------------------------- the catalogue itself

def test_bad_input_catalogue_lists_every_test():
    """docs/BAD_INPUTS.md names tests that exist, and every bad-input test is in it."""
    text = CATALOGUE.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "test_bad_input" in line]
    assert len(rows) >= 30
    me = "test_bad_input_catalogue_lists_every_test"
    named = set(re.findall(r"`(test_bad_input_\w+)", text)) - {me}
    here = {n for n in globals() if n.startswith("test_bad_input_")} - {me}
    assert named - here == set(), f"catalogue names missing tests: {named - here}"
    assert here - named == set(), f"tests missing from the catalogue: {here - named}"
    ids = set(re.findall(r"`test_bad_input_model_folder\[(\w+)\]`", text))
    assert ids == set(MODEL_CASES), f"model-folder cases not in the catalogue: {set(MODEL_CASES) ^ ids}"
