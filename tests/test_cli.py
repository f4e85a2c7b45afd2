"""The command line (docs/DESIGN.md §6) on a tiny model folder, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from cav_core import cli
from cav_core.adapter_files import load_adapter, read_safetensors
from cav_core.toyworld import ASSETS_DIR

CLIP = str(ASSETS_DIR / "circle.mp4")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny):
    from cav_core.model import save_t2v

    return str(save_t2v(tiny.base, tmp_path_factory.mktemp("m") / "tiny-t2v"))


def run(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def test_train_generate_invert_end_to_end(model_dir, tmp_path, capsys):
    m = ["--model", model_dir]
    a, t = tmp_path / "abs.safetensors", tmp_path / "t.safetensors"
    assert run("train-absorber", *m, "--video", CLIP, "--prompt", "a red circle on a black background",
               "--out", a, "--steps", 2, "--kind", "lora") == 0
    assert run("train-temporal", *m, "--video", CLIP, "--prompt", "a red circle moving in a circle",
               "--absorber", a, "--out", t, "--steps", 2, "--no-recolor") == 0
    out = capsys.readouterr().out
    assert f"wrote {t}" in out and "temporal step 2/2" in out
    assert load_adapter(t).kind == "temporal_lora" and load_adapter(a).kind == "absorber"
    assert load_adapter(t).info["recolor"] == "off"
    assert not (tmp_path / "t.checkpoint").exists()  # the automatic checkpoint is dropped once saved
    inv = tmp_path / "inv.safetensors"
    assert run("invert", *m, "--video", CLIP, "--prompt", "a red circle", "--out", inv, "--steps", 2) == 0
    assert read_safetensors(inv)[0]["latents"].shape == (1, 4, 16, 8, 8)
    v = tmp_path / "v.mp4"
    assert run("generate", *m, "--prompt", "a blue square", "--temporal-lora", f"{t}:0.7", "--init-latents", inv,
               "--blend", "0.5", "--steps", 2, "--out", v) == 0
    assert v.stat().st_size > 0
    # never overwrites: a second run gets a counter
    assert run("generate", *m, "--prompt", "a blue square", "--steps", 1, "--out", v) == 0
    assert "v_00001.mp4" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "x", "--out", "o.mp4", "--height", "33"], "height 33"),
    (["generate", "--prompt", "x", "--out", "o.mp4", "--temporal-lora", "missing.safetensors"], "missing.safetensors"),
    (["train-temporal", "--video", "nope.mp4", "--prompt", "x", "--out", "t.safetensors"], "nope.mp4"),
    (["generate", "--prompt", "x", "--out", "o"], "extension"),
])
def test_bad_input_exits_2_with_a_message(model_dir, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert run(*argv, "--model", model_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert list(Path(tmp_path).iterdir()) == []


def test_missing_model_folder(tmp_path, capsys):
    assert run("info", "--model", tmp_path / "nothing") == 2
    assert "nothing" in capsys.readouterr().err


def test_rebackground_is_a_train_temporal_flag(model_dir, tmp_path):
    t = tmp_path / "t.safetensors"
    assert run("train-temporal", "--model", model_dir, "--video", CLIP, "--prompt",
               "a red circle moving in a circle on a black background", "--out", t, "--steps", 1,
               "--rebackground", "on", "--tint-white", "on") == 0
    info = load_adapter(t).info
    assert info["tint_white"] is True  # the flag reaches the loop (what it does: tests/test_recolor.py)
    assert info["rebackground"] == "on" and "a red circle moving in a circle on a gray background" in \
        info["trained_captions"]
