"""Per-model defaults (cav_core/defaults.py): one torch-free home that the core, the CLI and
the nodes all read, a toy profile with the values measured on the toy model and a real
profile whose every value names its source; and recolor never trains on a false caption."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cav_core import cli, defaults, train
from cav_core.adapter_files import load_adapter
from cav_core.defaults import KEYS, PROFILES, REAL, TOY, Default, Profile, profile_for, profile_for_folder
from cav_core.toyworld import ASSETS_DIR

REPO = Path(__file__).resolve().parents[1]
CLIP = str(ASSETS_DIR / "circle.mp4")
FULL = "a red circle moving in a circle on a black background"

# ModelScope text-to-video-ms-1.7b's UNet config (the architecture keys, as its unet/config.json has them).
MODELSCOPE_UNET = {
    "sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
    "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024, "attention_head_dim": 64,
}


@pytest.fixture(scope="module")
def frames():
    return torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def other(tiny):
    """A model that is not of the toy architecture (wider first block): the real profile."""
    from cav_core.model import build_t2v
    from cav_core.toyworld.model_config import SCHEDULER_CONFIG, UNET_CONFIG, VAE_CONFIG, text_config

    return build_t2v({**UNET_CONFIG, "block_out_channels": (48, 64, 64)}, text_config(tiny.base.tokenizer),
                     VAE_CONFIG, SCHEDULER_CONFIG, tiny.base.tokenizer, seed=0, name="other-t2v")


def _temporal_lora(handle):
    from cav_core.adapters import LoraWeights
    from cav_core.layers import temporal_attention_modules

    unet = handle.base.unet
    mods = temporal_attention_modules(unet)
    tensors = {}
    for name in mods:
        lin = unet.get_submodule(name)
        tensors[f"{name}.lora_A.weight"] = torch.zeros(2, lin.in_features)
        tensors[f"{name}.lora_B.weight"] = torch.zeros(lin.out_features, 2)
    return LoraWeights(role="temporal", tensors=tensors, alphas={m: 2.0 for m in mods})


@pytest.fixture
def patched(monkeypatch):
    """Set toy defaults to values no caller passes, to see who reads them."""
    def patch(**values):
        for key, value in values.items():
            monkeypatch.setitem(PROFILES[TOY], key.replace("__", "."), Default(value, "test"))
    return patch


def test_importing_the_defaults_imports_no_torch():
    code = "import sys, cav_core.defaults; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_both_profiles_set_every_key_and_every_real_value_names_its_source():
    for name, values in PROFILES.items():
        assert list(values) == list(KEYS), name
    for key in KEYS:
        assert Profile(REAL).source(key).startswith(("paper", "MotionDirector config", "chosen, unmeasured")), key
    real = Profile(REAL)
    # the paper's and MotionDirector's numbers (shared/DESIGN.md section 7)
    assert (real["temporal.rank"], real["absorber.rank"], real["temporal.lr"], real["video.frames"],
            real["video.fps"]) == (4, 1, 5e-4, 16, 8.0)
    assert 2 <= real["absorber.num_tokens"] <= 6 and 100 <= real["temporal.steps"] <= 900
    assert real["temporal.recolor"] is False and real["gate.min_timestep_fraction"] == 0.0
    assert real["gate.cond_only_fraction"] is None and real["temporal.min_timestep"] == 0


def test_the_toy_profile_keeps_the_values_measured_on_the_toy():
    # The toy's measured values (README "Training defaults"). They change only with a dev-half measurement:
    # the T-LoRA's rank, steps, both backgrounds, the white tint and the gate from t 300 came from
    # docs/EXPERIMENTS.md §12 (before: rank 4, 1000 steps, neither view, the gate from t 600).
    toy = Profile(TOY)
    assert {k: toy[k] for k in ("absorber.steps", "absorber.rank", "absorber.lora_lr", "absorber.ti_lr",
                                "absorber.num_tokens", "absorber.crop_range", "absorber.batch_size",
                                "absorber.crop_pool", "temporal.steps", "temporal.rank", "temporal.lr",
                                "temporal.min_timestep", "temporal.recolor", "temporal.rebackground",
                                "temporal.tint_white", "temporal.validation_steps",
                                "temporal.validation_guidance", "train.weight_decay", "train.checkpoint_every",
                                "gate.min_timestep_fraction", "gate.cond_only_fraction", "sample.steps",
                                "sample.cfg", "sample.scheduler", "sample.frames", "sample.init_blend",
                                "video.frames", "video.fps")} == {
        "absorber.steps": 200, "absorber.rank": 1, "absorber.lora_lr": 1e-3, "absorber.ti_lr": 5e-3,
        "absorber.num_tokens": 4, "absorber.crop_range": (0.5, 1.0), "absorber.batch_size": 4,
        "absorber.crop_pool": 64, "temporal.steps": 2000, "temporal.rank": 16, "temporal.lr": 2e-3,
        "temporal.min_timestep": 300, "temporal.recolor": True, "temporal.rebackground": True,
        "temporal.tint_white": True, "temporal.validation_steps": 20,
        "temporal.validation_guidance": 7.5, "train.weight_decay": 1e-2, "train.checkpoint_every": 50,
        "gate.min_timestep_fraction": 0.3, "gate.cond_only_fraction": 0.6, "sample.steps": 25, "sample.cfg": 7.5,
        "sample.scheduler": "ddim", "sample.frames": 16, "sample.init_blend": 1.0, "video.frames": 16,
        "video.fps": 8.0}


def test_the_toy_is_told_by_its_architecture_not_its_folder(tiny, other, tmp_path):
    from cav_core.model import save_t2v
    from cav_core.toyworld import toy_model_path

    assert profile_for(tiny).name == TOY and profile_for(tiny.base).name == TOY
    assert profile_for(other).name == REAL
    assert profile_for(MODELSCOPE_UNET).name == REAL
    assert profile_for({**MODELSCOPE_UNET, "block_out_channels": [32, 64, 64]}).name == REAL
    if toy_model_path() is not None:
        assert profile_for_folder(toy_model_path()).name == TOY
    copy = save_t2v(tiny.base, tmp_path / "renamed-copy")  # the toy anywhere, under any name, is the toy
    assert profile_for_folder(copy).name == TOY
    unet_cfg = json.loads((copy / "unet" / "config.json").read_text())
    assert profile_for(unet_cfg).name == TOY  # lists from JSON, tuples in the toy's config


def test_the_core_reads_its_defaults_from_the_module(tiny, frames, patched, monkeypatch):
    patched(temporal__steps=2, temporal__lr=3e-4, temporal__rank=3, temporal__min_timestep=123,
            absorber__steps=1, absorber__rank=2, absorber__num_tokens=3, train__weight_decay=0.25)
    opts = []
    real_run = train.run_training
    monkeypatch.setattr(train, "run_training", lambda job: opts.append(job.weight_decay) or real_run(job))
    t = train.train_temporal_lora(tiny, frames, FULL)
    assert (t.info["steps"], t.info["lr"], t.info["rank"], t.info["min_timestep"]) == (2, 3e-4, 3, 123)
    assert t.lora.ranks == {3} and len(t.info["trained_captions"]) == 3
    a = train.train_appearance_absorber(tiny, frames, "a red circle on a black background")
    assert a.info["steps"] == 1 and a.lora.ranks == {2} and len(a.tokens.tokens) == 3
    assert opts == [0.25, 0.25]


def test_the_sampler_and_the_gate_read_their_defaults_from_the_module(tiny, other, patched):
    from cav_core.sample import generate

    patched(sample__frames=2, sample__steps=1, gate__min_timestep_fraction=0.25, gate__cond_only_fraction=None)
    assert generate(tiny, "a red circle").shape[1] == 2
    applied = tiny.with_lora(_temporal_lora(tiny)).loras[-1]
    assert (applied.min_timestep, applied.cond_only_from) == (250, None)
    applied = other.with_lora(_temporal_lora(other)).loras[-1]  # the real profile: the paper's every step
    assert (applied.min_timestep, applied.cond_only_from) == (0, None)


def test_the_real_profile_on_a_real_model_and_the_toy_findings_as_options(other, frames, tmp_path):
    t = train.train_temporal_lora(other, frames, FULL, steps=1)
    assert t.info["defaults"] == REAL and t.info["lr"] == 5e-4 and t.info["rank"] == 4
    assert t.info["min_timestep"] == 0 and t.info["recolor"] == "off" and t.info["trained_captions"] == [FULL]
    # the toy's findings stay available: training floor, recolor, the gate
    opt = train.train_temporal_lora(other, frames, FULL, steps=1, min_timestep=300, recolor=True)
    assert opt.info["min_timestep"] == 300 and opt.info["recolor"] == "on" and len(opt.info["trained_captions"]) == 3
    gated = other.with_lora(opt.lora, min_timestep=600, cond_only_from=600).loras[-1]
    assert (gated.min_timestep, gated.cond_only_from) == (600, 600)
    assert other.with_lora(opt.lora).loras[-1].min_timestep == 300  # never below its training floor


def test_saved_adapters_record_the_resolved_values(tiny, frames, patched, tmp_path):
    from cav_core.adapter_files import save_adapter

    patched(temporal__steps=2, temporal__lr=7e-4)
    path = save_adapter(tmp_path / "t.safetensors", train.train_temporal_lora(tiny, frames, FULL))
    info = load_adapter(path).info
    assert (info["defaults"], info["steps"], info["lr"], info["rank"], info["alpha"], info["min_timestep"],
            info["recolor"]) == (TOY, 2, 7e-4, 16, 16.0, 300, "on")
    path = save_adapter(tmp_path / "a.safetensors", train.train_appearance_absorber(
        tiny, frames, "a red circle", steps=1))
    info = load_adapter(path).info
    assert (info["defaults"], info["rank"], info["alpha"], info["num_tokens"], info["lora_lr"], info["ti_lr"],
            info["crop_range"], info["batch_size"]) == (TOY, 1, 1.0, 4, 1e-3, 5e-3, [0.5, 1.0], 4)


# --------------------------------------------------------------------------- CLI and nodes


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny):
    from cav_core.model import save_t2v

    return str(save_t2v(tiny.base, tmp_path_factory.mktemp("m") / "tiny-t2v"))


def test_info_prints_the_resolved_defaults_with_their_sources(model_dir, capsys):
    assert cli.main(["info", "--model", model_dir]) == 0
    out = capsys.readouterr().out
    assert "profile 'toy'" in out
    toy = Profile(TOY)
    for key in KEYS:
        line = next(x for x in out.splitlines() if x.split() and x.split()[0] == key)
        assert toy.source(key) in line and defaults._show(toy[key]) in line.split()


def test_cli_flags_left_out_take_the_model_defaults(model_dir, tmp_path, patched, capsys):
    patched(temporal__steps=2, temporal__lr=4e-4, video__frames=4, video__fps=4.0, sample__steps=1, sample__frames=2)
    t = tmp_path / "t.safetensors"
    assert cli.main(["train-temporal", "--model", model_dir, "--video", CLIP, "--prompt", FULL, "--out", str(t)]) == 0
    info = load_adapter(t).info
    assert (info["steps"], info["lr"], info["frames"], info["recolor"]) == (2, 4e-4, 4, "on")
    assert cli.main(["generate", "--model", model_dir, "--prompt", "a blue square", "--out",
                     str(tmp_path / "v.mp4")]) == 0
    assert "sampling step 1/1" in capsys.readouterr().out
    assert cli.main(["train-temporal", "--model", model_dir, "--video", CLIP, "--prompt", FULL, "--out",
                     str(tmp_path / "off.safetensors"), "--recolor", "off"]) == 0
    assert load_adapter(tmp_path / "off.safetensors").info["recolor"] == "off"


def test_node_widgets_left_at_default_take_the_model_defaults(tiny, frames, patched):
    from comfy_helpers import load_pack

    nodes = {cls.define_schema().node_id: cls for cls in load_pack().NODES}
    patched(temporal__steps=2, temporal__lr=6e-4, temporal__min_timestep=50, absorber__steps=1, sample__frames=2,
            sample__steps=1)
    schema = {i.id: i for i in nodes["TrainTemporalLoRA"].define_schema().inputs}
    assert schema["recolor"].options == ["default", "on", "off"] and schema["recolor"].default == "default"
    widgets = {k: schema[k].default for k in ("steps", "lr", "rank", "min_timestep")}
    with torch.inference_mode():
        t, *_ = nodes["TrainTemporalLoRA"].execute(model=tiny, frames=frames, caption=FULL, seed=0, **widgets).args
        assert (t.info["steps"], t.info["lr"], t.info["min_timestep"], t.info["recolor"]) == (2, 6e-4, 50, "on")
        off, *_ = nodes["TrainTemporalLoRA"].execute(model=tiny, frames=frames, caption=FULL, seed=0, recolor="off",
                                                   **widgets).args
        assert off.info["recolor"] == "off"
        schema = {i.id: i for i in nodes["TrainAppearanceAbsorber"].define_schema().inputs}
        widgets = {k: schema[k].default for k in ("kind", "steps", "lora_lr", "ti_lr", "rank", "num_tokens",
                                                  "crop_min", "crop_max")}
        a, *_ = nodes["TrainAppearanceAbsorber"].execute(model=tiny, frames=frames, caption="a red circle", seed=0,
                                                        **widgets).args
        assert a.info["steps"] == 1 and a.info["crop_range"] == [0.5, 1.0]
        schema = {i.id: i for i in nodes["ModelScopeT2VSampler"].define_schema().inputs}
        widgets = {i: s.default for i, s in schema.items() if i not in ("model", "init_latent")}
        (video,) = nodes["ModelScopeT2VSampler"].execute(model=tiny, **{**widgets, "preview": False}).args
        assert video.shape[0] == 2


# --------------------------------------------------------------------------- recolor keeps captions true


CAPTIONS = [  # (caption, the clip it is trained on: color, shape, background)
    ("a red circle moving in a circle on a black background", ("red", "circle", "black")),  # recolored
    ("a Yellow square moving left on a gray background", ("yellow", "square", "gray")),  # recolored
    ("a magenta triangle and a white dot on black", ("magenta", "triangle", "black")),  # recolored
    ("a man jumping in a park", ("red", "circle", "gray")),  # no color word: copies would be false
    ("an orange cat on a red sofa", ("red", "square", "black")),  # orange has no rotation
    ("a reddish fox in the snow", ("red", "triangle", "gray")),  # a shade has none either
    ("a blond girl in a blue dress", ("blue", "circle", "black")),  # one it cannot beside one it can
]


@pytest.mark.parametrize("caption, scene", CAPTIONS)
def test_recolor_never_trains_on_a_caption_it_cannot_keep_true(tiny, caption, scene, monkeypatch):
    """Each view the T-LoRA trains on is a clip whose measured subject color is the color its
    caption names; where no rotation can keep the caption true, only the clip itself."""
    from cav_core.recolor import recolor_skip_reason
    from cav_core.toyworld import measures
    from cav_core.toyworld.clips import render_clip
    from cav_core.toyworld.spec import COLORS

    clip = torch.from_numpy(render_clip(*scene, np.full((4, 2), 16.0)).astype(np.float32))
    encoded = []
    real_encode = train.encode_frames
    monkeypatch.setattr(train, "encode_frames", lambda c, f: encoded.append(f) or real_encode(c, f))
    notes = []
    t = train.train_temporal_lora(tiny, clip, caption, steps=1, recolor=True, rebackground=False,
                                  progress=lambda s, n, info: notes.append(info.get("note")))
    captions = t.info["trained_captions"]
    assert len(encoded) == len(captions)
    if recolor_skip_reason(caption) is not None:
        assert captions == [caption] and torch.equal(encoded[0], clip) and t.info["recolor"].startswith("off: ")
        assert notes[0].startswith("recolor skipped") and notes[1:] == [None] * (len(notes) - 1)
        return
    assert len(captions) == 3 and t.info["recolor"] == "on" and notes == [None]
    for view, text in zip(encoded, captions):
        # the subject's measured color is the first color word of the view's caption
        named = next(w.lower() for w in text.split() if w.lower() in COLORS)
        assert measures.object_color(view.numpy()) == named, text


def test_recolor_skips_are_said_in_one_line_by_the_cli(model_dir, tmp_path, capsys):
    t = tmp_path / "t.safetensors"
    assert cli.main(["train-temporal", "--model", model_dir, "--video", CLIP, "--prompt",
                     "a circle moving in a circle", "--out", str(t), "--steps", "1"]) == 0
    notes = [x for x in capsys.readouterr().out.splitlines() if x.startswith("note: ")]
    assert len(notes) == 1 and "recolor skipped" in notes[0] and "no color" in notes[0]


def test_docs_table_is_the_module_table():
    text = (REPO / "docs" / "DEFAULTS.md").read_text()
    assert defaults.markdown_table() in text, "regenerate the table: python -m cav_core.defaults"


def test_profiles_are_plain_data():
    # The module stays importable without torch and its tables serialize (adapter metadata, info).
    for values in PROFILES.values():
        json.dumps({k: dataclasses.asdict(v) for k, v in values.items()})


def test_recolor_skips_are_said_in_one_line_by_the_node(tiny, frames, caplog):
    import logging

    from comfy_helpers import load_pack

    nodes = {cls.define_schema().node_id: cls for cls in load_pack().NODES}
    with caplog.at_level(logging.INFO, logger="customize_a_video"), torch.inference_mode():
        t, *_ = nodes["TrainTemporalLoRA"].execute(model=tiny, frames=frames, caption="an orange circle", steps=2,
                                                  lr=0.0, rank=0, seed=0, recolor="on").args
    said = [r for r in caplog.records if "recolor skipped" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and "'orange'" in said[0].getMessage()
    assert t.info["trained_captions"] == ["an orange circle"]


def test_the_shipped_toy_config_is_the_toy_architecture():
    # defaults.py reads the shipped unet/config.json instead of importing model_config (import cycle);
    # the two must agree on every architecture key, or the shipped toy would get the real profile.
    from cav_core import defaults
    from cav_core.toyworld.model_config import UNET_CONFIG

    assert defaults._toy_unet_config() is not None
    assert defaults.profile_name_for_unet_config(UNET_CONFIG) == defaults.TOY
