"""The pipeline on ModelScope's real architecture and file layout (issue 30, items 3 and 4).

CI: a folder generated with ModelScope's structure at small widths (``real_arch_dir`` in
conftest.py, cav_core/realarch.py small_configs): both stages, inversion, generation with a
T-LoRA, a spatial LoRA and third-party LoRAs (kohya SD 2.1, MotionDirector) made for its
shapes, through the CLI and through the nodes. ``-m slow``: the same CLI pipeline on the
full-size configs with random weights (about 7 GB, cached, see realarch.fullsize_cache).
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import pytest
import torch
from safetensors import safe_open

from cav_core.adapter_files import load_adapter, read_safetensors
from cav_core.layers import spatial_attention_modules, temporal_attention_modules, temporal_modules
from cav_core.lora_convert import SKIP_FF, SKIP_PROJ, SKIP_TEXT
from cav_core.realarch import MODEL_INDEX, TOKENIZER_CONFIG
from video_reader import read_video
from real_arch import APPEARANCE, FULL, NEW, cli_pipeline, kohya_sd21_lora, lora_values, motiondirector_lora

SIZE, FRAMES, STEPS = 64, 4, 2  # 64 px: the least that four UNet levels of an 8x VAE allow


@pytest.fixture(scope="module")
def real_model(real_arch_dir):
    from cav_core.model import load_t2v

    return load_t2v(real_arch_dir, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def third_party(real_model, tmp_path_factory):
    """A kohya SD 2.1 style LoRA and a MotionDirector T-LoRA made for the fixture's shapes."""
    d = tmp_path_factory.mktemp("third_party")
    unet = real_model.base.unet
    return kohya_sd21_lora(d / "kohya_sd21.safetensors", unet), motiondirector_lora(d / "motiondirector.safetensors",
                                                                                     unet)


def _lora_size(unet, role_modules, rank):
    return sum(rank * (unet.get_submodule(m).in_features + unet.get_submodule(m).out_features) for m in role_modules)


def test_fixture_has_modelscopes_structure_and_files(real_arch_dir, real_model):
    from diffusers import UNet3DConditionModel

    from cav_core.model import WEIGHT_STEMS, _weights_variant

    d = real_arch_dir
    assert json.loads((d / "model_index.json").read_text()) == MODEL_INDEX
    for comp, stem in WEIGHT_STEMS.items():
        assert _weights_variant(d / comp, stem, torch.float16) == ("fp16", True)
        assert _weights_variant(d / comp, stem, torch.float32) == (None, True)
        with safe_open(str(d / comp / f"{stem}.safetensors"), "pt") as f32, \
                safe_open(str(d / comp / f"{stem}.fp16.safetensors"), "pt") as f16:
            assert set(f32.keys()) == set(f16.keys())
            k = sorted(f32.keys())[0]
            assert f16.get_tensor(k).dtype == torch.float16
            assert torch.equal(f16.get_tensor(k), f32.get_tensor(k).half())
    tok_files = {p.name for p in (d / "tokenizer").iterdir()}
    assert {"vocab.json", "merges.txt"} <= tok_files and "tokenizer.json" not in tok_files  # the slow tokenizer
    tok = real_model.base.tokenizer
    assert tok.model_max_length == TOKENIZER_CONFIG["model_max_length"] == 77
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|startoftext|>", "<|endoftext|>", "!")
    ids = tok("a man doing a backflip in a park").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id == len(tok) - 1
    # the same modules, by name, as the full-size ModelScope UNet: only the widths differ
    unet = real_model.base.unet
    with torch.device("meta"):
        full = UNet3DConditionModel()
    assert [n for n, _ in unet.named_modules()] == [n for n, _ in full.named_modules()]
    assert len(temporal_attention_modules(unet)) == 136 and len(spatial_attention_modules(unet)) == 128
    assert sum(".temp_convs." in n for n in temporal_modules(unet)) == 22
    assert unet.config.cross_attention_dim == real_model.base.text_encoder.config.hidden_size
    assert real_model.base.vae_scale_factor == 8 and len(real_model.base.vae.encoder.down_blocks) == 4


def test_diffusers_reads_the_fixture_as_a_text_to_video_model(real_arch_dir):
    """diffusers' own (deprecated) TextToVideoSDPipeline loads the folder, fp32 and the fp16
    variant, and samples from it: the layout is the one real loaders expect, not only ours."""
    import diffusers

    if not hasattr(diffusers, "TextToVideoSDPipeline"):
        pytest.skip("this diffusers no longer has TextToVideoSDPipeline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = diffusers.TextToVideoSDPipeline.from_pretrained(str(real_arch_dir))
        half = diffusers.TextToVideoSDPipeline.from_pretrained(str(real_arch_dir), variant="fp16",
                                                               torch_dtype=torch.float16)
        frames = pipe(NEW, num_inference_steps=1, num_frames=2, height=SIZE, width=SIZE, output_type="pt",
                      generator=torch.Generator().manual_seed(0)).frames
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.vae_scale_factor == 8
    assert frames.shape == (1, 2, 3, SIZE, SIZE) and torch.isfinite(frames).all()
    assert pipe.text_encoder.dtype == torch.float32
    assert half.unet.dtype == half.text_encoder.dtype == half.vae.dtype == torch.float16


def test_cli_pipeline(real_arch_dir, real_model, third_party, tmp_path, capsys):
    kohya, md = third_party
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cli_pipeline(real_arch_dir, tmp_path, SIZE, FRAMES, STEPS, extra_spatial=kohya, extra_temporal=md)
    with capsys.disabled():
        print(f"CLI pipeline on the real-architecture fixture: {time.perf_counter() - t0:.1f} s "
              f"({', '.join(f'{k} {v:.1f} s' for k, v in out['seconds'].items())})", file=sys.stderr)
    unet = real_model.base.unet
    absorber, tlora = load_adapter(out["absorber"]), load_adapter(out["temporal"])
    assert absorber.kind == "absorber" and len(absorber.tokens.tokens) == 2
    assert absorber.lora.modules == sorted(spatial_attention_modules(unet))
    assert lora_values(out["absorber"]) == _lora_size(unet, spatial_attention_modules(unet), 1)
    assert tlora.lora.modules == sorted(temporal_attention_modules(unet)) and tlora.lora.ranks == {4}
    assert lora_values(out["temporal"]) == _lora_size(unet, temporal_attention_modules(unet), 4)
    assert tlora.base_model == real_model.model_id
    assert read_safetensors(out["inverted"])[0]["latents"].shape == (1, 4, FRAMES, SIZE // 8, SIZE // 8)
    for video in (out["video"], out["third_party_video"]):
        frames, _ = read_video(video)
        assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    # the kohya file's feed-forward, projection and text-encoder layers are reported, not applied
    # silently: the CLI prints each warning as one "warning: ..." line on stderr (cav_core/cli.py)
    printed = capsys.readouterr()
    skipped = [line for line in printed.err.splitlines() + [str(w.message) for w in caught]
               if "kohya_sd21" in line and "skipped" in line]
    assert len(skipped) == 1 and all(s in skipped[0] for s in ("feed-forward", "proj_in", "text-encoder"))
    assert f"wrote {out['third_party_video']}" in printed.out


def test_third_party_loras_fit_the_real_layout(real_model, third_party):
    from cav_core.lora_convert import load_any_lora

    kohya, md = third_party
    unet = real_model.base.unet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = load_any_lora(kohya, unet=unet, role="spatial")
        m = load_any_lora(md, unet=unet, role="temporal")
    assert k.lora.modules == sorted(spatial_attention_modules(unet)) and k.lora.role == "spatial"
    assert k.info["skipped"] == {SKIP_FF: 32, SKIP_PROJ: 32, SKIP_TEXT: 2}  # 16 transformers, 2 text layers
    assert set(k.lora.alphas.values()) == {2.0}
    assert m.lora.modules == sorted(temporal_attention_modules(unet)) and m.lora.role == "temporal"
    assert m.info["skipped"] == {SKIP_FF: 34}  # 17 temporal transformers x 2 feed-forward layers


def test_training_size_is_chosen_and_recorded(tiny):
    """A large model trains at a size below its native one (the full-size check trains ModelScope's
    256 px UNet at 64 px); the size is checked like the sampler's and kept in the file's info."""
    from cav_core.errors import InputError
    from cav_core.train import train_appearance_absorber, train_temporal_lora

    frames = torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    t = train_temporal_lora(tiny, frames, FULL, steps=1, recolor=False, height=16, width=48)
    a = train_appearance_absorber(tiny, frames, APPEARANCE, kind="lora", steps=1, height=16, width=16)
    native = train_temporal_lora(tiny, frames, FULL, steps=1, recolor=False)
    assert t.info["size"] == [16, 48] and a.info["size"] == [16, 16] and native.info["size"] == [32, 32]
    with pytest.raises(InputError, match="height 20"):
        train_temporal_lora(tiny, frames, FULL, steps=1, height=20, width=16)


# --------------------------------------------------------------------------- nodes


@pytest.fixture(scope="module")
def nodes_env(tmp_path_factory, third_party):
    """The pack as ComfyUI imports it, with a ComfyUI-like folder holding the third-party LoRAs."""
    from comfy_helpers import load_pack

    pack = load_pack()
    bridge = sys.modules[pack.__name__ + ".nodes.comfy_bridge"]
    root = tmp_path_factory.mktemp("comfy_root_real")
    for sub in ("models/diffusers", "models/loras", "input", "output"):
        (root / sub).mkdir(parents=True)
    for f in third_party:
        (root / "models" / "loras" / f.name).write_bytes(f.read_bytes())
    old, bridge.STANDALONE_ROOT = bridge.STANDALONE_ROOT, root
    yield {cls.define_schema().node_id: cls for cls in pack.NODES}
    bridge.STANDALONE_ROOT = old


def test_nodes_pipeline(real_arch_dir, nodes_env):
    def run(node, **inputs):
        with torch.inference_mode():  # as ComfyUI's executor runs every node
            return nodes_env[node].execute(**inputs).args

    t0 = time.perf_counter()
    (model,) = run("LoadModelScopeT2V", model="unused", device="cpu", dtype="fp32", path=str(real_arch_dir))
    frames, fps, _ = run("LoadReferenceVideo", video="circle", num_frames=FRAMES, fps=8.0, start=0.0, width=SIZE,
                      height=SIZE)
    absorber, *_ = run("TrainAppearanceAbsorber", model=model, frames=frames, caption=APPEARANCE, kind="both",
                      steps=STEPS, lora_lr=1e-3, ti_lr=5e-3, rank=1, num_tokens=2, crop_min=0.5, crop_max=1.0, seed=0)
    tlora, *_ = run("TrainTemporalLoRA", model=model, frames=frames, caption=FULL, steps=STEPS, lr=1e-3, rank=4,
                   seed=0, absorber=absorber)
    unet = model.base.unet
    assert tlora.lora.modules == sorted(temporal_attention_modules(unet)) and tlora.lora.ranks == {4}
    assert absorber.lora.modules == sorted(spatial_attention_modules(unet)) and len(absorber.tokens.tokens) == 2
    (m,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=1.0)
    (m,) = run("ApplySpatialLoRA", model=m, lora_name="kohya_sd21.safetensors", strength=0.8)
    (md,) = run("LoadCAVAdapter", lora_name="motiondirector.safetensors", foreign_role="temporal", model=model)
    (m,) = run("ApplyTemporalLoRA", model=m, temporal_lora=md, strength=0.5)
    assert [a.lora.role for a in m.loras] == ["temporal", "spatial", "temporal"] and model.loras == ()
    (latent,) = run("DDIMInvertVideo", model=model, frames=frames, prompt=FULL, steps=STEPS)
    assert latent["samples"].shape == (1, 4, FRAMES, SIZE // 8, SIZE // 8)
    sample = dict(prompt=NEW, negative_prompt="", steps=STEPS, cfg=7.5, seed=0, num_frames=FRAMES, width=0,
                  height=0, scheduler="ddim", init_blend=0.5, preview=False, init_latent=latent)
    (video,) = run("ModelScopeT2VSampler", model=m, **sample)
    (plain,) = run("ModelScopeT2VSampler", model=model, **sample)
    print(f"nodes pipeline on the real-architecture fixture: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    assert video.shape == plain.shape == (FRAMES, SIZE, SIZE, 3)  # the size comes from the inverted latent
    assert not torch.equal(video, plain)  # the LoRAs act
    from cav_core.adapters import lora_layers

    assert lora_layers(unet) == []  # and were removed after the call


# --------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_fullsize_cli_pipeline(tmp_path):
    """ModelScope's exact configs, random weights, the whole CLI at 64x64 x 4 frames on the CPU;
    the saved T-LoRA and S-LoRA hold the paper's parameter counts."""
    from cav_core.lora_convert import _default_unet
    from cav_core.realarch import fullsize_cache

    t0 = time.perf_counter()
    folder = fullsize_cache()
    built = time.perf_counter() - t0
    meta = _default_unet()  # the same layer shapes, no weights in memory
    kohya = kohya_sd21_lora(tmp_path / "kohya_sd21.safetensors", meta, text_width=1024)
    md = motiondirector_lora(tmp_path / "motiondirector.safetensors", meta)
    t1 = time.perf_counter()
    out = cli_pipeline(folder, tmp_path, SIZE, FRAMES, STEPS, extra_spatial=kohya, extra_temporal=md)
    print(f"full-size CLI pipeline: {time.perf_counter() - t1:.0f} s wall "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in out['seconds'].items())}); cache ready in {built:.0f} s",
          file=sys.stderr)
    assert lora_values(out["temporal"]) == 831_488
    assert lora_values(out["absorber"]) == 207_488
    assert load_adapter(out["temporal"]).info["size"] == [SIZE, SIZE]  # not the native 256
    frames, _ = read_video(out["video"])
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
