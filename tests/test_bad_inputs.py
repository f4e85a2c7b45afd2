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
import sys
import types
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from cav_core import data, device_guard, train
from cav_core.adapter_files import AdapterFile, load_adapter, read_safetensors, save_adapter
from cav_core.textual_inversion import TokenEmbeddings
from cav_core.adapters import LoraWeights, add_trainable_lora
from cav_core.data import load_video_clip
from cav_core.errors import AdapterError, InputError, ModelLoadError, OutputError, VideoReadError
from cav_core.fileutil import atomic_write, safe_output_path
from cav_core.layers import role_modules
from cav_core.lora_convert import load_any_lora
from cav_core.model import load_t2v, resolve_device, resolve_dtype, save_t2v
from cav_core.sample import SamplingError, generate
from cav_core.train import TrainingError, train_appearance_absorber, train_temporal_lora
from cav_core.video_io import write_video
from video_reader import read_video

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUTS.md"
REPO = CATALOGUE.parents[1]
CAPTION = "a red circle moving on a black background"


# --------------------------------------------------------------------------- helpers

def node_run(node: str, **inputs):
    """Call a node's execute as ComfyUI does (inside ``torch.inference_mode()``): the class
    tests below check that the nodes reach the same core checks as the CLI."""
    from comfy_helpers import load_pack

    pack = load_pack()
    cls = {c.define_schema().node_id: c for c in pack.NODES}[node]
    with torch.inference_mode():
        return cls.execute(**inputs).args


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: size, content hash and mtime of files."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or p.is_dir():
            out[rel] = ("link" if p.is_symlink() else "dir",)
        elif not p.is_file():  # a FIFO or device: reading it would block
            out[rel] = ("special",)
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
                 r"run to 2\.00 s, and only 8 fit\. Take at most 8 frames \(--frames, num_frames\), a lower --fps or "
                 r"an earlier --start, or hold the last frame for the rest \(--hold-last, hold_last_frame\)", tmp_path):
        load_video_clip(clips / "clip8.mp4", num_frames=16, fps=8)


def test_bad_input_start_past_the_end(clips, tmp_path, out):
    with refused(InputError, r"start=5 s \(--start\) is past its end \(1\.00 s, 8 fps\); use a start below 1\.00 s",
                 tmp_path):
        load_video_clip(clips / "clip8.mp4", num_frames=2, start=5)


@pytest.mark.parametrize("kw, match", [
    (dict(num_frames=0), "num_frames must be a whole number >= 1"),
    (dict(num_frames=2.5), "num_frames must be a whole number >= 1"),
    (dict(fps=0), "fps must be a positive number"),
    (dict(fps=float("nan")), "fps must be a positive number"),
    (dict(start=-1), "start must be a time in seconds >= 0"),
    (dict(size=(0, 32)), "size must be two positive whole numbers"),
    (dict(size="32x32"), r"size must be \(height, width\)"),
    (dict(fit="zoom"), r"fit must be one of crop, pad, stretch \(--fit on the command line, the 'fit' widget"),
    (dict(hold_last="yes"), r"hold_last must be True or False \(--hold-last, the 'hold_last_frame' widget\)"),
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
    monkeypatch.setattr(data, "_to_rgb", lambda *a: sizes.append(to_rgb(*a).shape) or to_rgb(*a))
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
    """Another architecture (layers of other sizes) is refused, naming both models, in the
    core (what the CLI calls) and through the Train Temporal LoRA node."""
    absorber = AdapterFile("absorber", lora=_lora(tiny.base.unet, "spatial", rank=1, widen=8),
                           tokens=TokenEmbeddings(("<cav-0>",), torch.zeros(1, 64)), base_model="0123456789.abcdef0123",
                           base_model_name="zeroscope_v2_576w", info={"kind": "both", "init_word": "red"})
    p = save_adapter(tmp_path / "in" / "absorber.safetensors", absorber)
    loaded = load_adapter(p)
    # the metadata says which model
    assert (loaded.base_model, loaded.base_model_name) == ("0123456789.abcdef0123", "zeroscope_v2_576w")
    match = (rf"the absorber was trained on model zeroscope_v2_576w \(0123456789\.abcdef0123\), but this model is "
             rf"{tiny.base.name} \({re.escape(tiny.model_id)}\) and its layers do not fit \(.*first mismatching "
             rf"module.*\); train the absorber on this model")
    with refused(InputError, match, tmp_path):
        train_temporal_lora(tiny, frames, CAPTION, absorber=loaded, steps=1, checkpoint_dir=out / "ckpt")
    with refused(InputError, match, tmp_path):
        node_run("TrainTemporalLoRA", model=tiny, frames=frames, caption=CAPTION, steps=1, lr=1e-3, rank=1, seed=0,
                 absorber=loaded)


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
#: What a run may add: its checkpoint folder, the checkpoint and the folder's marker.
CKPT_FILES = {"out/ckpt", f"out/ckpt/{train.CHECKPOINT_FILE}", f"out/ckpt/{train.CHECKPOINT_MARKER}"}
DIVERGED = 1e30  # finite latents this large make the loss overflow, as too high a learning rate does


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

    def batch(step, g):  # the loss overflows at the 4th step
        return (LATENTS + DIVERGED if step >= 3 else LATENTS), COND

    with tiny.applied() as unet:
        job = _job(tiny, unet, batch, ckpt, progress=progress)
        with refused(TrainingError, r"the loss became (nan|inf) at step 4, training stopped; the last good checkpoint "
                     r"\(step 2\) is kept in .*ckpt\. Lower the learning rate", tmp_path,
                     allow=CKPT_FILES):
            train.run_training(job)
    assert _ckpt_state(ckpt) == at_step_2["state"] and at_step_2["state"][0] == "2"  # not replaced, finite


def test_bad_input_non_finite_loss_before_any_checkpoint(tiny, tmp_path, out):
    with tiny.applied() as unet:
        job = _job(tiny, unet, lambda step, g: (LATENTS + DIVERGED, COND), out / "ckpt")
        with refused(TrainingError, r"loss became (nan|inf) at step 1, training stopped; no checkpoint was written yet",
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
                     allow=CKPT_FILES):
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
                     "Use fewer frames", tmp_path, allow=CKPT_FILES):
            train.run_training(job)
    assert _ckpt_state(out / "ckpt")[0] == "3"


def test_bad_input_cancelled_training(tiny, frames, tmp_path, out):
    class Interrupted(Exception):  # like ComfyUI's InterruptProcessingException
        pass

    def cancel(step, total, info):
        if step == 2:
            raise Interrupted

    with refused(Interrupted, None, tmp_path, allow=CKPT_FILES):
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
    with refused(OutputError, r"cannot write .*new\.mp4: the disk is full \(no space left on the device\); free "
                 r"some space or write somewhere else", tmp_path):
        write_video(out / "new.mp4", _rgb(2), fps=8, overwrite=False)
    with refused(OutputError, "the disk is full", tmp_path):  # overwrite=True must not lose the old file either
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


# --------------------------------------------------------------------------- hardening II: classes of failure
# One test per class of issue 28 (docs/BAD_INPUTS.md rows 76-): the CLI and, where a node
# reaches the same core path, the node too.

CLIP = REPO / "cav_core" / "toyworld" / "assets" / "circle.mp4"


@pytest.fixture(scope="module")
def model_dir(saved_model):
    return str(saved_model)


def cli(*argv) -> int:
    from cav_core import cli as cav_cli

    return cav_cli.main([str(a) for a in argv])


def _cli_refused(capsys, root: Path, argv: list, match: str, allow: set[str] = frozenset()) -> str:
    """The CLI exits 2 with one line ``error: ...`` matching ``match``; nothing under ``root``
    changes (except ``allow``). Returns the line."""
    capsys.readouterr()
    before = snapshot(root)
    assert cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert re.search(match, err), err
    assert_same(before, snapshot(root), allow)
    return err


TRAIN = ["train-temporal", "--video", CLIP, "--prompt", CAPTION, "--frames", 4, "--no-recolor"]


# class 1: never delete what the tool did not make

def test_bad_input_user_folder_named_like_the_checkpoint(model_dir, tmp_path, out, capsys):
    user = out / "X.checkpoint"
    user.mkdir()
    (user / "notes.txt").write_text("the user's own file")
    _cli_refused(capsys, tmp_path, [*TRAIN, "--model", model_dir, "--out", out / "X.safetensors", "--steps", 1],
                 r"X\.checkpoint already exists and was not made by this tool, so it is left untouched and not "
                 r"used for checkpoints; move it away, or pass --checkpoint-dir")
    # named explicitly it is used, and the tool's cleanup never takes the user's file (or the folder)
    assert cli(*TRAIN, "--model", model_dir, "--out", out / "X.safetensors", "--steps", 1,
               "--checkpoint-dir", user) == 0
    assert (user / "notes.txt").read_text() == "the user's own file"
    assert not train.drop_checkpoint(user) and (user / "notes.txt").exists()  # no marker: never cleaned up


def test_bad_input_checkpoint_cleanup_takes_only_the_tools_files(tiny, frames, tmp_path, out):
    ckpt = out / "run.checkpoint"
    train_temporal_lora(tiny, frames[:2], CAPTION, steps=1, checkpoint_dir=ckpt, recolor=False)
    assert train.is_tool_checkpoint_dir(ckpt) and (ckpt / train.CHECKPOINT_FILE).exists()
    (ckpt / "mine.txt").write_text("put here by the user")
    assert not train.drop_checkpoint(ckpt)  # the folder stays: it holds a file of the user's
    assert sorted(p.name for p in ckpt.iterdir()) == ["mine.txt"]


def test_bad_input_no_empty_checkpoint_folder_after_an_early_failure(model_dir, tiny, tmp_path, out, capsys):
    with refused(InputError, "caption is empty", tmp_path):
        train_temporal_lora(tiny, torch.rand(2, 32, 32, 3), " ", steps=1, checkpoint_dir=out / "ckpt")
    def batch(step, g):  # fails in the loop, before a step is done
        raise RuntimeError("no frames to be had")

    with tiny.applied() as unet:
        with refused(RuntimeError, "no frames", tmp_path):
            train.run_training(_job(tiny, unet, batch, out / "ckpt"))
    _cli_refused(capsys, tmp_path, ["train-temporal", "--model", model_dir, "--video", tmp_path / "nope.mp4",
                                    "--prompt", CAPTION, "--out", out / "T.safetensors"], "nope.mp4")


# class 2: a model's identity comes from its content

@pytest.fixture(scope="module")
def toy_copy(tmp_path_factory):
    """The shipped toy model, and a copy in another folder with another diffusers version."""
    from cav_core.toyworld import toy_model_path

    src = toy_model_path()
    if src is None:
        pytest.skip("pretrained toy model not present")
    copy = tmp_path_factory.mktemp("moved") / "copy"
    shutil.copytree(src, copy)
    _json_edit(copy / "unet" / "config.json", _diffusers_version="9.9.9")
    _json_edit(copy / "model_index.json", _diffusers_version="9.9.9")
    return src, copy


def test_bad_input_model_copied_or_upgraded_keeps_its_identity(toy_copy, tmp_path, out, recwarn):
    src, copy = toy_copy
    original, moved = load_t2v(src, device="cpu"), load_t2v(copy, device="cpu")
    assert original.model_id == moved.model_id and (original.base.name, moved.base.name) == (src.name, "copy")
    clip = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    absorber = train_appearance_absorber(original, clip, "a red circle", kind="lora", steps=1)
    p = save_adapter(out / "absorber.safetensors", absorber)
    loaded = load_adapter(p)
    assert (loaded.base_model, loaded.base_model_name) == (original.model_id, src.name)
    before = snapshot(tmp_path)
    tlora = train_temporal_lora(moved, clip, CAPTION, absorber=loaded, steps=1, recolor=False)  # no refusal
    node_run("TrainTemporalLoRA", model=moved, frames=clip, caption=CAPTION, steps=1, lr=1e-3, rank=1, seed=0,
             absorber=loaded, recolor=False)
    assert tlora.base_model == original.model_id
    assert not [w for w in recwarn if "trained on" in str(w.message)]  # not even a warning: it is the same model
    assert_same(before, snapshot(tmp_path))


def test_bad_input_same_architecture_other_weights_warns(tiny, frames, tmp_path, out, caplog):
    from cav_core.toyworld.model_config import build_random_toy

    other = build_random_toy(seed=1)  # the same architecture, other weights
    assert other.model_id.split(".")[0] == tiny.model_id.split(".")[0] and other.model_id != tiny.model_id
    absorber = AdapterFile("absorber", lora=_lora(tiny.base.unet, "spatial", rank=1), base_model=other.model_id,
                           base_model_name="toy-random", info={"kind": "lora"})
    before = snapshot(tmp_path)
    with pytest.warns(UserWarning, match=rf"the absorber was trained on toy-random \({re.escape(other.model_id)}\) "
                      rf"and this model is .*\({re.escape(tiny.model_id)}\): the same architecture with different "
                      r"weights; it applies"):
        train_temporal_lora(tiny, frames[:2], CAPTION, absorber=absorber, steps=1, recolor=False)
    import logging

    with caplog.at_level(logging.WARNING, logger="customize_a_video"):
        node_run("ApplyTemporalLoRA", model=tiny, temporal_lora=AdapterFile(
            "temporal_lora", lora=_lora(tiny.base.unet, "temporal"), base_model=other.model_id,
            base_model_name="toy-random"), strength=1.0)
    assert "the same architecture with different weights" in caplog.text
    assert_same(before, snapshot(tmp_path))


def test_bad_input_old_adapter_ids_stay_loadable(tiny, frames, tmp_path, out, recwarn):
    old = AdapterFile("absorber", lora=_lora(tiny.base.unet, "spatial", rank=1), base_model="copy@19fd0123ab",
                      info={"kind": "lora"})  # an id of an older version: name@hash of a config with the path
    p = save_adapter(tmp_path / "in" / "old.safetensors", old)
    before = snapshot(tmp_path)
    train_temporal_lora(tiny, frames[:2], CAPTION, absorber=load_adapter(p), steps=1, recolor=False)
    assert not [w for w in recwarn if "trained on" in str(w.message)]
    assert_same(before, snapshot(tmp_path))


# class 3: every OS error on an output path is one line naming the path

def _fake_statvfs(real, **fields):
    def statvfs(path):
        st = real(path)
        values = {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                                              "f_ffree", "f_favail", "f_flag", "f_namemax")}
        values.update(fields)
        return types.SimpleNamespace(**values)
    return statvfs


@pytest.mark.parametrize("case", ["read_only", "disk_full", "name_too_long", "under_a_file", "out_dir_is_a_file",
                                  "out_is_a_folder"])
def test_bad_input_output_location_checked_first(model_dir, tmp_path, out, capsys, monkeypatch, case):
    import os

    (out / "file.txt").write_text("a file")
    target = out / "T.safetensors"
    argv = [*TRAIN, "--model", tmp_path / "no-model-needed", "--out", target]
    if case == "read_only":
        monkeypatch.setattr(os, "statvfs", _fake_statvfs(os.statvfs, f_flag=os.ST_RDONLY))
        match = r"--out .*T\.safetensors: .*out is on a read-only file system; choose a folder you can write to"
    elif case == "disk_full":
        monkeypatch.setattr(os, "statvfs", _fake_statvfs(os.statvfs, f_bavail=0))
        argv[argv.index(tmp_path / "no-model-needed")] = model_dir  # the size is known once the model is
        match = (r"--out .*T\.safetensors: not enough disk space in .*out: the result needs about .* MiB, 0\.0 MiB "
                 r"are free")
    elif case == "name_too_long":
        argv[-1] = out / ("x" * 300 + ".safetensors")
        match = r"is 312 bytes long; this file system allows 255: choose a shorter name"
    elif case == "under_a_file":
        argv[-1] = out / "file.txt" / "T.safetensors"
        match = r"file\.txt is a file, not a folder; choose a path inside a folder"
    elif case == "out_dir_is_a_file":
        argv = ["demo", "--out-dir", out / "file.txt"]
        match = r"--out-dir .*file\.txt is a file, not a folder; give a folder"
    else:
        argv[-1] = out
        match = r"--out .*out is a folder; give a file name inside it"
    _cli_refused(capsys, tmp_path, argv, match)


def test_bad_input_disk_full_during_the_final_checkpoint(tiny, tmp_path, out, monkeypatch):
    import errno
    import safetensors.torch as st

    ckpt = out / "ckpt"
    real, calls = st.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(metadata.get("step") if metadata else None)
        if metadata and metadata.get("step") == "4":  # the final checkpoint: the disk fills up half-way
            Path(filename).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", save_file)
    at_step_2 = {}

    def progress(step, total, info):
        if step == 2:
            at_step_2["state"] = _ckpt_state(ckpt)

    with tiny.applied() as unet:
        job = _job(tiny, unet, lambda step, g: (LATENTS, COND), ckpt, steps=4, progress=progress)
        with refused(OutputError, r"cannot write .*ckpt/checkpoint\.safetensors: the disk is full \(no space left on "
                     r"the device\); free some space or write somewhere else; the last good checkpoint \(step 2\) is "
                     r"kept in .*ckpt$", tmp_path, allow=CKPT_FILES):
            train.run_training(job)
    assert calls == ["2", "4"] and _ckpt_state(ckpt) == at_step_2["state"]  # no partial file, step 2 survives


def test_bad_input_disk_full_when_saving_the_result(model_dir, tmp_path, out, capsys, monkeypatch):
    """The CLI: the LoRA cannot be written; its weights stay for --resume with the same command."""
    import errno

    import cav_core.adapter_files as af

    real = af.atomic_write

    def full(path, write, **kw):
        def half(tmp):
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, half, **kw)

    monkeypatch.setattr(af, "atomic_write", full)
    argv = [*TRAIN, "--model", model_dir, "--out", out / "T.safetensors", "--steps", 2]
    _cli_refused(capsys, tmp_path, argv, r"cannot write .*T\.safetensors: the disk is full .*; the trained weights are "
                 r"kept in .*T\.checkpoint: fix that and run the same command with --resume to write them",
                 allow={"out/T.checkpoint", f"out/T.checkpoint/{train.CHECKPOINT_FILE}",
                        f"out/T.checkpoint/{train.CHECKPOINT_MARKER}"})
    monkeypatch.setattr(af, "atomic_write", real)
    assert cli(*argv, "--resume") == 0
    assert load_adapter(out / "T.safetensors").kind == "temporal_lora" and not (out / "T.checkpoint").exists()


def test_bad_input_save_node_on_a_read_only_folder(tiny, tmp_path, out, monkeypatch):
    import errno

    def read_only(tensors, filename, metadata=None):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("safetensors.torch.save_file", read_only)
    from comfy_helpers import load_pack

    load_pack()
    bridge = sys.modules["cav_pack_under_test.nodes.comfy_bridge"]
    monkeypatch.setattr(bridge, "STANDALONE_ROOT", out)
    with refused(OutputError, r"cannot write .*temporal_lora_00001\.safetensors: it is on a read-only file system",
                 tmp_path, allow={"out/output", "out/output/loras", "out/output/loras/cav"}):
        node_run("SaveCAVAdapter", adapter=AdapterFile("temporal_lora", lora=_lora(tiny.base.unet, "temporal")),
                 filename_prefix="cav/temporal_lora", save_to="output/loras")


# class 4: no silent garbage

def test_bad_input_absurd_lora_deltas(model_dir, tiny, tmp_path, out, capsys):
    lora = _lora(tiny.base.unet, "temporal")
    huge = LoraWeights("temporal", {k: v * 1e15 for k, v in lora.tensors.items()}, lora.alphas)  # deltas x1e30
    p = save_adapter(tmp_path / "in" / "huge.safetensors", AdapterFile("temporal_lora", lora=huge))
    match = r"huge: its change to layer .* at strength 1 is .*e\+\d+ times the size of the layer's own weights"
    with refused(AdapterError, match, tmp_path):
        generate(tiny.with_lora(huge, 1.0, name="huge"), "a red circle", steps=1, num_frames=2)
    _cli_refused(capsys, tmp_path, ["generate", "--model", model_dir, "--prompt", "x", "--steps", 1, "--frames", 2,
                                    "--temporal-lora", p, "--out", out / "v.mp4"], match)
    applied = node_run("ApplyTemporalLoRA", model=tiny, temporal_lora=load_adapter(p), strength=1.0)[0]
    with refused(AdapterError, r"T-LoRA: its change to layer .* times the size", tmp_path):
        node_run("ModelScopeT2VSampler", model=applied, prompt="x", negative_prompt="", steps=1, cfg=7.5, seed=0,
                 num_frames=2, width=0, height=0, scheduler="ddim", init_blend=1.0, preview=False)


@pytest.fixture(scope="module")
def broken_model():
    """The toy architecture with one weight of the UNet gone NaN (a damaged download)."""
    from cav_core.toyworld.model_config import build_random_toy

    m = build_random_toy(seed=0)
    with torch.no_grad():
        m.base.unet.conv_out.bias[0] = float("nan")
    return m


def test_bad_input_broken_model_weights(broken_model, frames, tmp_path, out):
    with refused(SamplingError, r"sampling produced NaN or infinite latents, so the video would be black: the model "
                 r"toy-random is broken \(its weight conv_out\.bias holds NaN", tmp_path):
        generate(broken_model, "a red circle", steps=1, num_frames=2)
    with refused(SamplingError, r"the model toy-random is broken", tmp_path):
        node_run("ModelScopeT2VSampler", model=broken_model, prompt="x", negative_prompt="", steps=1, cfg=7.5,
                 seed=0, num_frames=2, width=0, height=0, scheduler="ddim", init_blend=1.0, preview=False)
    # training on it: the model is named as broken, not "lower the learning rate"
    with refused(TrainingError, r"the loss became nan at step 1, training stopped: the model itself is broken: its "
                 r"weight conv_out\.bias holds NaN or infinite values \(before any training\), so no learning rate "
                 r"can help", tmp_path):
        train_temporal_lora(broken_model, frames[:2], CAPTION, steps=1, recolor=False)


def test_bad_input_clip_without_motion_warns(tiny, tmp_path, out):
    still = torch.rand(1, 32, 32, 3).expand(4, -1, -1, -1).contiguous()  # e.g. --fps 1e9: one frame, repeated
    before = snapshot(tmp_path)
    for clip in (still, still[:1]):
        with pytest.warns(UserWarning, match=r"the reference clip has no motion: all \d frame\(s\) are identical"):
            train_temporal_lora(tiny, clip, CAPTION, steps=1, recolor=False)
    with pytest.warns(UserWarning, match="has no motion"):
        node_run("TrainTemporalLoRA", model=tiny, frames=still, caption=CAPTION, steps=1, lr=1e-3, rank=1, seed=0,
                 recolor=False)
    assert_same(before, snapshot(tmp_path))


def test_bad_input_lora_role_from_keys(tiny, tmp_path, out):
    spatial = _lora(tiny.base.unet, "spatial")
    p = save_adapter(tmp_path / "in" / "mislabeled.safetensors",
                     AdapterFile("temporal_lora", lora=LoraWeights("temporal", spatial.tensors, spatial.alphas)))
    match = (r"mislabeled\.safetensors: its metadata says it is a temporal LoRA, but it adapts spatial attention "
             r"layers; the file is damaged or mislabeled")
    for load in (load_adapter, load_any_lora):
        with refused(AdapterError, match, tmp_path):
            load(p)


GEN = ["generate", "--prompt", "x", "--steps", 1, "--frames", 2]


@pytest.mark.parametrize("argv, match", [
    ([*GEN, "--height", 0, "--out", "v.mp4"], r"height 0 is not a positive multiple of 16, .*leave --height out for "
                                              r"the model's native size, 32"),
    ([*GEN, "--seed", 2**63, "--out", "v.mp4"], r"seed must be a whole number in 0\.\.9223372036854775807, got "
                                                r"9223372036854775808"),
    ([*GEN, "--seed", -1, "--out", "v.mp4"], r"seed must be a whole number in 0\.\."),
    ([*GEN, "--out", "clip.safetensors"], r"this command writes videos files; the name must end in \.mp4 or \.webm or "
                                          r"\.gif"),
    (["train-absorber", "--video", CLIP, "--prompt", CAPTION, "--crop-range", "abc", "--out", "a.safetensors"],
     r"--crop-range 'abc': give two fractions of the frame side, LOW,HIGH, e\.g\. 0\.5,1\.0"),
    ([*TRAIN, "--out", "t.mp4"], r"the name must end in \.safetensors"),
])
def test_bad_input_cli_values(model_dir, tmp_path, out, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(out)
    _cli_refused(capsys, tmp_path, [*argv, "--model", model_dir], match)


def test_bad_input_core_values(tiny, frames, tmp_path, out):
    """The same rules in the core, for the nodes and the API."""
    with refused(InputError, r"height 0 is not a positive multiple of 16", tmp_path):
        generate(tiny, "x", steps=1, num_frames=2, height=0)
    for seed in (2**63, -1, 1.5):
        with refused(InputError, r"seed must be a whole number in 0\.\.", tmp_path):
            generate(tiny, "x", steps=1, num_frames=2, seed=seed)
        with refused(InputError, r"seed must be a whole number in 0\.\.", tmp_path):
            train_temporal_lora(tiny, frames, CAPTION, steps=1, seed=seed)
    with refused(InputError, r"with a batch of 2, seed\+1 must fit too", tmp_path):
        generate(tiny, "x", steps=1, num_frames=2, seed=2**63 - 1, batch_size=2)
    with refused(InputError, r"seed must be a whole number", tmp_path):
        node_run("ModelScopeT2VSampler", model=tiny, prompt="x", negative_prompt="", steps=1, cfg=7.5, seed=-5,
                 num_frames=2, width=0, height=0, scheduler="ddim", init_blend=1.0, preview=False)
    with refused(AdapterError, r"adapters are \.safetensors files", tmp_path):
        save_adapter(out / "motion.pt", AdapterFile("temporal_lora", lora=_lora(tiny.base.unet, "temporal")))


def test_bad_input_video_too_large_for_memory(tiny, tmp_path, out, monkeypatch):
    monkeypatch.setattr(device_guard, "system_memory_available", lambda: 4 * 1024**2)
    with refused(InputError, r"not enough memory for the video: 1 x 512 frame\(s\) at 32x32 need about .* of RAM, "
                 r"4 MiB are available\. Use fewer frames \(--frames, num_frames; at most \d+ fit here\)", tmp_path):
        generate(tiny, "x", steps=1, num_frames=512)


# class 5: concurrent runs never lose a result

def test_bad_input_two_runs_on_the_same_output(model_dir, tmp_path, out):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "cav_core", *map(str, TRAIN), "--model", model_dir, "--out",
            str(out / "T.safetensors"), "--steps", "3"]
    procs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    written = sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors")
    assert written == ["T.safetensors", "T_00001.safetensors"], (written, results)
    for name in written:
        assert load_adapter(out / name).kind == "temporal_lora"
    assert sorted(p.name for p in out.iterdir()) == ["T.safetensors", "T_00001.safetensors", "keep.mp4"]


def test_bad_input_run_on_an_output_another_run_is_writing(model_dir, tmp_path, out, capsys):
    """The deterministic half of the test above: while another run holds T's checkpoint
    folder, a run on T takes the next counter name and says so."""
    held = train.claim_checkpoint_dir(out / "T.checkpoint", default=True)  # another run, mid-training
    try:
        assert train.claim_checkpoint_dir(out / "T.checkpoint", default=True) is None
        assert cli(*TRAIN, "--model", model_dir, "--out", out / "T.safetensors", "--steps", 1) == 0
    finally:
        held.release()
    said = capsys.readouterr().out
    assert re.search(r"note: another run is writing .*T\.safetensors right now; this run writes "
                     r".*T_00001\.safetensors \(checkpoints in .*T_00001\.checkpoint\)", said), said
    assert load_adapter(out / "T_00001.safetensors").kind == "temporal_lora"
    assert sorted(p.name for p in out.iterdir()) == ["T_00001.safetensors", "keep.mp4"]  # held folder: empty, gone


def test_bad_input_name_taken_while_writing(tmp_path, out):
    target = out / "race.safetensors"

    def write(t):
        target.write_bytes(b"another run got there first")
        t.write_bytes(b"ours")

    before = snapshot(tmp_path)
    written = atomic_write(target, write, unique=True)
    assert written.name == "race_00001.safetensors" and written.read_bytes() == b"ours"
    assert target.read_bytes() == b"another run got there first"
    assert_same(before, snapshot(tmp_path), allow={"out/race.safetensors", "out/race_00001.safetensors"})


# class 6: messages name what is wrong and the flag that fixes it

def test_bad_input_negative_prompt_and_token_count(tiny, frames, tmp_path, out):
    limit = tiny.base.tokenizer.model_max_length - 2
    with refused(InputError, rf"negative prompt is too long: {limit + 5} tokens.*\(--negative, node input "
                 r"negative_prompt\)", tmp_path):
        generate(tiny, "x", negative_prompt=" ".join(["red"] * (limit + 5)), steps=1, num_frames=2)
    caption = " ".join(["red"] * (limit - 2))
    with refused(InputError, r"the caption with 8 textual-inversion token\(s\) in it is too long .*use fewer tokens "
                 r"\(--tokens, num_tokens\) or shorten the caption", tmp_path):
        train_appearance_absorber(tiny, frames, caption, kind="ti", num_tokens=8, init_word="red", steps=1)


@pytest.fixture
def fifo(tmp_path):
    import os

    p = tmp_path / "pipe.mp4"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("argv, match", [
    (["generate", "--temporal-lora", "file:abc"], r"bad strength 'abc' in 'file:abc': give FILE or FILE:STRENGTH"),
    (["generate", "--out-fps", 0], r"--out-fps must be a frame rate in \(0, 1000\], got 0"),
    (["generate", "--blend", 0.5], r"--blend weighs --init-latents against fresh noise; give --init-latents too"),
    (["generate", "--blend", 2, "--init-latents", "lat.safetensors"], r"--blend must be in 0\.\.1, got 2"),
    (["demo", "--steps", 0], r"--steps: training steps must be an integer in 1\.\.100000, got 0"),
])
def test_bad_input_cli_flags_checked_before_work(tmp_path, out, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(out)
    extra = ["--prompt", "x", "--out", "v.mp4"] if argv[0] == "generate" else ["--out-dir", "demo"]
    _cli_refused(capsys, tmp_path, [*argv, "--model", tmp_path / "never-loaded", *extra], match)


def test_bad_input_fifo_as_video(model_dir, fifo, tmp_path, out, capsys):
    match = r"pipe\.mp4: it is not a regular file \(a FIFO, socket or device\); give a video file"
    _assert_both(fifo, VideoReadError, match, tmp_path)
    with refused(VideoReadError, match, tmp_path):
        node_run("LoadReferenceVideo", video="circle", num_frames=2, fps=8.0, start=0.0, width=0, height=0,
                 path=str(fifo))
    argv = [*TRAIN, "--model", model_dir, "--out", out / "T.safetensors"]
    argv[argv.index("--video") + 1] = fifo
    _cli_refused(capsys, tmp_path, argv, match)


def test_bad_input_cli_messages_that_need_the_model(model_dir, tiny, tmp_path, out, capsys):
    # --resume with nothing to resume: said, then a fresh run
    assert cli(*TRAIN, "--model", model_dir, "--out", out / "T.safetensors", "--steps", 1, "--resume") == 0
    assert re.search(r"warning: --resume: there is no checkpoint in .*T\.checkpoint; starting fresh",
                     capsys.readouterr().err)
    # --absorber given a file that is no absorber: CLI words, not Python API names
    not_lora = _save_tensors(tmp_path / "in" / "weights.safetensors", {"conv_in.weight": torch.zeros(4, 4, 3, 3)})
    err = _cli_refused(capsys, tmp_path, [*TRAIN, "--model", model_dir, "--out", out / "U.safetensors",
                                          "--absorber", not_lora],
                       r"weights\.safetensors: no layer of this file applies")
    err2 = _cli_refused(capsys, tmp_path, [*TRAIN, "--model", model_dir, "--out", out / "U.safetensors",
                                           "--absorber", out / "T.safetensors"],
                        r"the absorber \(--absorber, node input absorber\) is a temporal_lora, not an appearance "
                        r"absorber")
    assert "load_any_lora" not in err + err2 and "()" not in err + err2


# class 7: leftovers of a killed run are cleaned up

def test_bad_input_temp_file_of_a_killed_run(model_dir, tmp_path, out):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that is gone
    stale = out / f".T.cav{dead}-x1y2z3.tmp.safetensors"
    live = out / f".T.cav{os.getpid()}-a1b2c3.tmp.safetensors"  # a live run's write in progress: kept
    stale.write_bytes(b"half of a LoRA, its writer was killed")
    live.write_bytes(b"being written")
    ckpt = out / "T.checkpoint"
    train.make_checkpoint_dir(ckpt)
    stale_ckpt = ckpt / f".checkpoint.cav{dead}-q.tmp.safetensors"
    stale_ckpt.write_bytes(b"half a checkpoint")
    assert cli(*TRAIN, "--model", model_dir, "--out", out / "T.safetensors", "--steps", 1, "--resume") == 0
    assert not stale.exists() and not stale_ckpt.exists() and live.exists()
    assert sorted(p.name for p in out.iterdir()) == [live.name, "T.safetensors", "keep.mp4"]


# --------------------------------------------------------------------------- issue 29: the peers' options

@pytest.mark.parametrize("bad", [-0.1, float("nan"), "1", True])
def test_bad_input_ad_loss(tiny, frames, bad):
    with pytest.raises(InputError, match=r"ad_loss \(--ad-loss, node widget ad_loss\) must be a weight in 0\.\.100"):
        train_temporal_lora(tiny, frames, CAPTION, steps=1, ad_loss=bad)


def test_bad_input_more_clips(tiny, frames):
    from cav_core.train import TrainClip

    with pytest.raises(InputError, match=r"more_clips\[0\] is a Tensor, not a training clip .*Add Training Clip"):
        train_temporal_lora(tiny, frames, CAPTION, steps=1, more_clips=[frames])
    with pytest.raises(InputError, match="caption of training clip 2 is empty"):
        train_temporal_lora(tiny, frames, CAPTION, steps=1, more_clips=[TrainClip(frames, "  ")])
    with pytest.raises(InputError, match="Add Training Clip: caption is empty"):
        node_run("AddTrainingClip", frames=frames, caption=" ")


@pytest.mark.parametrize("extra, match", [
    (["--caption", "a", "--caption", "b", "--caption", "c"],
     r"2 --video but 3 --prompt/--caption: give one caption per --video"),
    (["--caption", "a", "--absorber", "x.safetensors", "--absorber", "y.safetensors", "--absorber", "z.safetensors"],
     r"2 --video but 3 --absorber: give one absorber per --video"),
])
def test_bad_input_video_caption_absorber_counts(tmp_path, capsys, extra, match):
    _cli_refused(capsys, tmp_path, ["train-temporal", "--video", CLIP, "--video", CLIP, *extra, "--steps", 1,
                                    "--out", tmp_path / "t.safetensors"], match)


# --------------------------------------------------------------------------- the catalogue itself

def _reference_video_node():
    from comfy_helpers import load_pack

    return next(c for c in load_pack().NODES if c.define_schema().node_id == "LoadReferenceVideo")


def test_bad_input_reference_video_checked_when_queued(tmp_path, out):
    check = _reference_video_node().validate_inputs
    (tmp_path / "notes.txt").write_text("not a video\n")
    base = dict(video="circle", path="", fit="crop", width=0, height=0, input_types={})
    cases = [
        (dict(video="missing.mp4"), r"reference video 'missing\.mp4' \('video' of Load Reference Video\) is neither "
                                    r"a bundled clip \(bounce, circle, zigzag\) nor a file in .*: upload it with the "
                                    r"node's upload button, pick another, give a full path in 'path', or connect a "
                                    r"VIDEO to video_input"),
        (dict(path=str(tmp_path / "notes.txt")), r"^Load Reference Video, 'path': cannot read video .*notes\.txt: "
                                                 r".*(text file, not a video|is it a video file)"),
        (dict(fit="pad"), r"fit='pad' needs a size to fit to: set width and height .* or connect the model input"),
        (dict(width=16), r"width and height of Load Reference Video go together \(got 16 x 0\)"),
        (dict(fit="zoom"), r"fit must be one of crop, pad, stretch .*'fit' widget of Load Reference Video"),
        (dict(input_types={"video_input": "IMAGE"}), r"^Load Reference Video: input video_input takes VIDEO, but an "
                                                     r"output of type IMAGE is connected to it; connect a VIDEO"),
    ]
    before = snapshot(tmp_path)
    for inputs, match in cases:
        got = check(**{**base, **inputs})
        assert isinstance(got, str) and re.search(match, got), (inputs, got)
    # all fine: a bundled clip; a connected VIDEO (the file widgets unused) and model (its size)
    assert check(**base) is True
    assert check(**{**base, "video": "missing.mp4", "fit": "pad",
                    "input_types": {"video_input": "VIDEO", "model": "CAV_T2V_MODEL"}}) is True
    assert_same(before, snapshot(tmp_path))


def test_bad_input_unreadable_video_input(tmp_path, out):
    import io

    from cav_core.toyworld import ASSETS_DIR

    class VideoFromFile:
        def __init__(self, data: bytes):
            self.data = data

        def get_stream_source(self):
            return io.BytesIO(self.data)

    class VideoFromComponents:
        def get_components(self):
            frames, rate = read_video(ASSETS_DIR / "zigzag.mp4")
            return types.SimpleNamespace(images=torch.from_numpy(frames), frame_rate=Fraction(int(rate)))

    clip = dict(video="circle", num_frames=4, fps=8.0, start=0.0, width=0, height=0)
    whole = (ASSETS_DIR / "zigzag.mp4").read_bytes()
    for source, err, match in [
        (VideoFromFile(b""), VideoReadError, r"^cannot read video from video_input \(VIDEO\): the file is empty"),
        (VideoFromFile(whole[:600]), VideoReadError, r"^cannot read video from video_input \(VIDEO\): the file is "
                                                     r"incomplete \(its 'mdat' box needs"),
        (VideoFromFile(b"hello " * 100), VideoReadError, r"^cannot read video from video_input \(VIDEO\): it is a "
                                                         r"text file, not a video|InvalidDataError"),
        (VideoFromComponents(), InputError, r"^video from video_input \(VIDEO\) is too short: it lasts 2\.00 s "
                                            r"\(16 frames, 8 fps\).*hold_last_frame"),
        ("clip.mp4", InputError, r"video_input of Load Reference Video must be a VIDEO \(e\.g\. from Load Video\), "
                                 r"got str"),
    ]:
        kw = {**clip, "num_frames": 40} if isinstance(source, VideoFromComponents) else clip
        with refused(err, match, tmp_path):
            node_run("LoadReferenceVideo", **kw, video_input=source)


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


# --------------------------------------------------------------------------- snapshots (issue 31)

def test_bad_input_snapshot_every_out_of_range(tiny, frames, tmp_path, out, capsys, monkeypatch):
    """Negative, or more than the steps: refused before any work, naming the flag and the widget."""
    for every, match in ((-1, r"snapshot_every \(--snapshot-every\) is -1: give the steps between snapshots"),
                         (3, r"snapshot_every \(--snapshot-every\) is 3, more than the 2 training steps, so no "
                             r"snapshot would be taken before the end; give at most 2")):
        with refused(InputError, match, tmp_path):
            train_temporal_lora(tiny, frames, CAPTION, steps=2, snapshot_every=every,
                                snapshot_to=out / "T.safetensors", checkpoint_dir=out / "ckpt")
        with refused(InputError, match, tmp_path):
            node_run("TrainTemporalLoRA", model=tiny, frames=frames, caption=CAPTION, steps=2, lr=1e-3, rank=1,
                     seed=0, snapshot_every=every)
    with refused(InputError, r"snapshot_every \(--snapshot-every\) is 3, more than the 2 training steps", tmp_path):
        train.train_appearance_absorber(tiny, frames, "a red circle", steps=2, snapshot_every=3,
                                        snapshot_to=out / "A.safetensors")
    monkeypatch.chdir(out)
    never = ["--model", tmp_path / "never-loaded", "--out", "T.safetensors"]
    _cli_refused(capsys, tmp_path, [*TRAIN, *never, "--snapshot-every", -5],
                 r"--snapshot-every is -5: give the steps between snapshots \(e\.g\. 100\), or 0 for none")
    _cli_refused(capsys, tmp_path, [*TRAIN, *never, "--steps", 2, "--snapshot-every", 5],
                 r"--snapshot-every is 5, more than the 2 training steps")
    _cli_refused(capsys, tmp_path, [*TRAIN, *never, "--validation-prompt", "a cat"],
                 r"--validation-prompt is sampled at each snapshot: give --snapshot-every N too")
    _cli_refused(capsys, tmp_path, ["train-absorber", "--video", CLIP, "--prompt", "a red circle", *never,
                                    "--snapshot-every", -1], r"--snapshot-every is -1")


def test_bad_input_snapshot_name_taken(tiny, frames, tmp_path, out):
    """A file at a snapshot's name (the user's, or an earlier run's) is kept; the snapshot takes
    the next counter name, like the final output."""
    (out / "T_step00001.safetensors").write_bytes(b"the user's own file")
    before = snapshot(tmp_path)
    t = train_temporal_lora(tiny, frames[:2], CAPTION, steps=1, snapshot_every=1, snapshot_to=out / "T.safetensors",
                            recolor=False)
    assert_same(before, snapshot(tmp_path), {"out/T_step00001_00001.safetensors"})
    assert t.info["snapshots"] == [{"step": 1, "file": "T_step00001_00001.safetensors", "motion_score": None}]
