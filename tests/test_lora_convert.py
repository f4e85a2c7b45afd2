"""Third-party LoRA files (kohya/A1111, diffusers/peft, MotionDirector) on the tiny UNet."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cav_core.adapter_files import AdapterFile, save_adapter
from cav_core.adapters import LoraWeights, lora_layers
from cav_core.errors import AdapterError
from cav_core.layers import spatial_attention_modules, temporal_attention_modules
from cav_core.lora_convert import SKIP_FF, SKIP_MISSING, SKIP_PROJ, SKIP_TEXT, cloneofsimo_order, load_any_lora
from conftest import unet_inputs, unet_out

RANK = 2
# A slice of the layout that exists in the tiny UNet and in SD 2.1 alike.
PICK = ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_v")


def _linear(unet: nn.Module, name: str) -> nn.Linear:
    return unet.get_submodule(name)


def _pair(unet, name, seed, rank=RANK):
    g = torch.Generator().manual_seed(seed)
    lin = _linear(unet, name)
    return (torch.randn(rank, lin.in_features, generator=g) * 0.3,
            torch.randn(lin.out_features, rank, generator=g) * 0.3)


def _kohya(name: str) -> str:
    return "lora_unet_" + name.replace(".", "_")


def _no_warnings_load(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_any_lora(*args, **kwargs)


@pytest.fixture(scope="module")
def unet(tiny):
    return tiny.base.unet


def _kohya_file(path, unet, modules=PICK, alpha=1.0, extra=None):
    sd = {}
    for i, m in enumerate(modules):
        a, b = _pair(unet, m, i)
        sd[_kohya(m) + ".lora_down.weight"] = a.half()
        sd[_kohya(m) + ".lora_up.weight"] = b.half()
        sd[_kohya(m) + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
    sd.update(extra or {})
    save_file(sd, str(path), metadata={"ss_network_module": "networks.lora", "ss_sd_model_name": "v2-1_768"})
    return path


def test_kohya_file_maps_to_the_named_modules(tiny, unet, tmp_path):
    p = _kohya_file(tmp_path / "style.safetensors", unet)
    ad = _no_warnings_load(p, unet=unet)
    assert isinstance(ad, AdapterFile) and ad.kind == "spatial_lora"
    lora = ad.lora
    assert lora.role == "spatial" and lora.modules == sorted(PICK)
    assert lora.base_model == "v2-1_768" and ad.info["source_format"] == "kohya" and ad.info["skipped"] == {}
    for i, m in enumerate(PICK):
        a, b = _pair(unet, m, i)
        assert torch.equal(lora.tensors[f"{m}.lora_A.weight"], a.half().float())
        assert torch.equal(lora.tensors[f"{m}.lora_B.weight"], b.half().float())
        assert lora.alphas[m] == 1.0
    # attached, it puts peft layers exactly on those modules and changes the output
    h = tiny.with_lora(lora, 1.0)
    with h.applied() as u:
        assert sorted(n for n, _ in lora_layers(u)) == sorted(PICK)
    x, t, ctx = unet_inputs(tiny)
    assert not torch.allclose(unet_out(h, x, t, ctx), unet_out(tiny, x, t, ctx))
    assert lora_layers(unet) == []


def test_kohya_equals_the_same_lora_in_peft_naming(tiny, unet, tmp_path):
    """alpha and the down/up -> A/B mapping give the same delta as a native LoRA."""
    ad = _no_warnings_load(_kohya_file(tmp_path / "k.safetensors", unet, alpha=1.0), unet=unet)
    native = LoraWeights("spatial", {f"{m}.lora_{ab}.weight": t for m in PICK for ab, t in
                                     zip("AB", (x.half().float() for x in _pair(unet, m, PICK.index(m))))},
                         {m: 1.0 for m in PICK})
    x, t, ctx = unet_inputs(tiny)
    assert torch.allclose(unet_out(tiny.with_lora(ad.lora), x, t, ctx),
                          unet_out(tiny.with_lora(native), x, t, ctx), atol=1e-6)
    for m in PICK:
        assert torch.allclose(ad.lora.delta(m), native.delta(m))


def test_skipped_layers_give_one_warning_with_counts(unet, tmp_path):
    ff = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"
    proj = "down_blocks.0.attentions.0.proj_in"
    extra = {}
    for name in (ff, proj):
        a, b = _pair(unet, name, 9)
        extra[_kohya(name) + ".lora_down.weight"], extra[_kohya(name) + ".lora_up.weight"] = a, b
    # a layer of the full-size layout that the tiny UNet lacks
    absent = _kohya("up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_q")
    extra[absent + ".lora_down.weight"], extra[absent + ".lora_up.weight"] = torch.zeros(2, 320), torch.zeros(320, 2)
    for layer in range(2):  # two text-encoder layers, three tensors each
        for proj_name in ("q_proj", "v_proj"):
            k = f"lora_te_text_model_encoder_layers_{layer}_self_attn_{proj_name}"
            extra[k + ".lora_down.weight"] = torch.randn(RANK, 64)
            extra[k + ".lora_up.weight"] = torch.randn(64, RANK)
            extra[k + ".alpha"] = torch.tensor(1.0)
    p = _kohya_file(tmp_path / "mixed.safetensors", unet, extra=extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ad = load_any_lora(p, unet=unet)
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    msg = str(caught[0].message)
    assert "mixed.safetensors" in msg and "4 text-encoder layers" in msg and "1 feed-forward" in msg
    assert ad.info["skipped"] == {SKIP_TEXT: 4, SKIP_FF: 1, SKIP_PROJ: 1, SKIP_MISSING: 1}
    assert ad.lora.modules == sorted(PICK)


def test_only_text_encoder_keys_is_refused(tmp_path):
    p = tmp_path / "te.safetensors"
    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 1024),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(4096, 2)}, str(p))
    with pytest.raises(AdapterError, match="no layer of this file applies") as e:
        load_any_lora(p)
    assert "te.safetensors" in str(e.value) and "1 text-encoder" in str(e.value)


@pytest.mark.parametrize("style", ["peft", "lora_linear", "attn_procs", "base_model"])
def test_diffusers_formats(tiny, unet, tmp_path, style):
    sd = {}
    for i, m in enumerate(PICK):
        a, b = _pair(unet, m, i)
        if style == "peft":
            sd[f"unet.{m}.lora_A.weight"], sd[f"unet.{m}.lora_B.weight"] = a, b
        elif style == "lora_linear":
            sd[f"unet.{m}.lora.down.weight"], sd[f"unet.{m}.lora.up.weight"] = a, b
        elif style == "attn_procs":
            base, proj = m.rsplit(".attn", 1)[0], m.split(".attn")[1]  # "1.to_q" / "2.to_out.0"
            num, proj = proj.split(".", 1)
            proj = proj.removesuffix(".0")
            sd[f"{base}.attn{num}.processor.{proj}_lora.down.weight"] = a
            sd[f"{base}.attn{num}.processor.{proj}_lora.up.weight"] = b
        else:
            sd[f"base_model.model.{m}.lora_A.weight"], sd[f"base_model.model.{m}.lora_B.weight"] = a, b
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": RANK, "unet.lora_alpha": 4})} if style == "peft" else {}
    p = tmp_path / f"{style}.safetensors"
    save_file(sd, str(p), metadata=meta)
    ad = _no_warnings_load(p, unet=unet)
    assert ad.lora.modules == sorted(PICK) and ad.lora.role == "spatial"
    want_alpha = 4.0 if style == "peft" else float(RANK)  # no alpha stored = scale 1
    assert set(ad.lora.alphas.values()) == {want_alpha}
    with tiny.with_lora(ad.lora).applied() as u:
        assert sorted(n for n, _ in lora_layers(u)) == sorted(PICK)


def test_peft_adapter_config_alpha(unet, tmp_path):
    d = tmp_path / "peft_dir"
    d.mkdir()
    m = PICK[0]
    a, b = _pair(unet, m, 0)
    save_file({f"base_model.model.{m}.lora_A.weight": a, f"base_model.model.{m}.lora_B.weight": b},
              str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({"r": RANK, "lora_alpha": 8}))
    assert _no_warnings_load(d / "adapter_model.safetensors", unet=unet).lora.alphas[m] == 8.0


@pytest.mark.parametrize("case", ["sdxl_cross_dim", "te2", "input_blocks", "sd15_no_unet", "sdxl_no_unet"])
def test_other_architectures_are_refused(unet, tmp_path, case):
    k = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    target = unet
    if case == "sdxl_cross_dim":
        sd = {f"unet.{k}.lora_A.weight": torch.zeros(4, 2048), f"unet.{k}.lora_B.weight": torch.zeros(64, 4)}
        want = "SDXL"
    elif case == "te2":
        sd = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 1280),
              "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(1280, 4)}
        want = "SDXL"
    elif case == "input_blocks":
        n = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
        sd = {f"{n}.lora_down.weight": torch.zeros(4, 2048), f"{n}.lora_up.weight": torch.zeros(640, 4)}
        want = "SDXL"
    elif case == "sd15_no_unet":
        n = _kohya("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k")
        sd = {f"{n}.lora_down.weight": torch.zeros(4, 768), f"{n}.lora_up.weight": torch.zeros(320, 4)}
        want, target = "Stable Diffusion 1.x", None
    else:
        sd = {f"{k}.lora.down.weight": torch.zeros(4, 2048), f"{k}.lora.up.weight": torch.zeros(640, 4)}
        want, target = "SDXL", None
    p = tmp_path / f"{case}.safetensors"
    save_file(sd, str(p))
    with pytest.raises(AdapterError, match=want) as e:
        load_any_lora(p, unet=target)
    assert p.name in str(e.value)


def test_sd21_lora_loads_without_a_model(tmp_path):
    """No unet given: names and shapes are checked against the ModelScope layout (meta)."""
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    k = "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k"
    sd = {_kohya(q) + ".lora_down.weight": torch.randn(4, 320), _kohya(q) + ".lora_up.weight": torch.randn(320, 4),
          _kohya(q) + ".alpha": torch.tensor(2.0),
          _kohya(k) + ".lora_down.weight": torch.randn(4, 1024), _kohya(k) + ".lora_up.weight": torch.randn(320, 4),
          _kohya(k) + ".alpha": torch.tensor(2.0)}
    p = tmp_path / "sd21.safetensors"
    save_file(sd, str(p))
    ad = _no_warnings_load(p)
    assert ad.lora.modules == sorted([q, k]) and ad.lora.alphas == {q: 2.0, k: 2.0}


def test_wrong_shapes_for_the_given_model_are_refused(unet, tmp_path):
    m = PICK[0]
    lin = _linear(unet, m)
    p = tmp_path / "wide.safetensors"
    save_file({f"unet.{m}.lora_A.weight": torch.zeros(RANK, lin.in_features * 2),
               f"unet.{m}.lora_B.weight": torch.zeros(lin.out_features, RANK)}, str(p))
    with pytest.raises(AdapterError, match="does not fit"):
        load_any_lora(p, unet=unet)


def test_pickle_files_are_refused_unread(tmp_path, monkeypatch):
    p = tmp_path / "motion.pt"
    torch.save([torch.zeros(2, 2)], p)

    def boom(*a, **k):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    with pytest.raises(AdapterError, match="pickle") as e:
        load_any_lora(p)
    assert "motion.pt" in str(e.value) and ".safetensors" in str(e.value)


def test_not_a_safetensors_file(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(AdapterError, match="junk.safetensors"):
        load_any_lora(p)
    with pytest.raises(AdapterError, match="not found"):
        load_any_lora(tmp_path / "missing.safetensors")


def test_dora_is_refused(unet, tmp_path):
    m = PICK[0]
    a, b = _pair(unet, m, 0)
    p = tmp_path / "dora.safetensors"
    save_file({f"unet.{m}.lora_A.weight": a, f"unet.{m}.lora_B.weight": b,
               f"unet.{m}.lora_magnitude_vector": torch.ones(b.shape[0])}, str(p))
    with pytest.raises(AdapterError, match="DoRA"):
        load_any_lora(p, unet=unet)


# --------------------------------------------------------------------------- MotionDirector

def test_motiondirector_keyed_temporal_lora(tiny, unet, tmp_path):
    mods = temporal_attention_modules(unet)[:6]
    sd = {}
    for i, m in enumerate(mods):
        a, b = _pair(unet, m, i)
        sd[f"base_model.model.{m}.lora_A.weight"], sd[f"base_model.model.{m}.lora_B.weight"] = a, b
    p = tmp_path / "md.safetensors"
    save_file(sd, str(p))
    ad = _no_warnings_load(p, unet=unet, role="temporal")
    assert ad.kind == "temporal_lora" and ad.lora.role == "temporal" and ad.lora.modules == sorted(mods)
    assert _no_warnings_load(p, unet=unet, role="auto").lora.role == "temporal"
    with pytest.raises(AdapterError, match="role='temporal'"):
        load_any_lora(p, unet=unet)  # the default role is spatial
    with tiny.with_lora(ad.lora).applied() as u:
        assert sorted(n for n, _ in lora_layers(u)) == sorted(mods)


def test_motiondirector_lora_down_up_keys(unet, tmp_path):
    mods = temporal_attention_modules(unet)[4:8]
    sd = {}
    for i, m in enumerate(mods):
        a, b = _pair(unet, m, i)
        sd[f"{m}.lora_down.weight"], sd[f"{m}.lora_up.weight"] = a, b
    p = tmp_path / "md2.safetensors"
    save_file(sd, str(p))
    assert _no_warnings_load(p, unet=unet, role="temporal").lora.modules == sorted(mods)


def test_motiondirector_safeloras_by_walk_order(tiny, unet, tmp_path):
    order = cloneofsimo_order(unet, ["TransformerTemporalModel"])
    temporal = set(temporal_attention_modules(unet))
    n_ff = sum(".ff." in m for m in order)
    assert set(order) - temporal == {m for m in order if ".ff." in m} and n_ff > 0
    assert temporal <= set(order)  # every temporal attention layer is in the walk
    sd = {}
    for i, m in enumerate(order):
        a, b = _pair(unet, m, i)
        sd[f"unet:{i}:down"], sd[f"unet:{i}:up"] = a, b
    p = tmp_path / "md_safeloras.safetensors"
    save_file(sd, str(p), metadata={"unet": json.dumps(["TransformerTemporalModel"]), "unet:0:rank": str(RANK)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ad = load_any_lora(p, unet=unet, role="temporal")
    assert len(caught) == 1 and f"{n_ff} feed-forward" in str(caught[0].message)
    assert ad.lora.modules == sorted(temporal) and ad.info["skipped"] == {SKIP_FF: n_ff}
    for i, m in enumerate(order):
        if m in temporal:
            assert torch.equal(ad.lora.tensors[f"{m}.lora_A.weight"], _pair(unet, m, i)[0])
    with tiny.with_lora(ad.lora).applied() as u:
        assert len(lora_layers(u)) == len(temporal)
    # a file from a model with a different layout cannot be placed by index
    del sd[f"unet:{len(order) - 1}:down"], sd[f"unet:{len(order) - 1}:up"]
    save_file(sd, str(tmp_path / "short.safetensors"), metadata={"unet": json.dumps(["TransformerTemporalModel"])})
    with pytest.raises(AdapterError, match="another layout"):
        load_any_lora(tmp_path / "short.safetensors", unet=unet, role="temporal")


def test_motiondirector_walk_order_on_modelscope_layout():
    """On the real layout the walk gives 17 temporal transformers x (8 attention + 2 ff)."""
    from cav_core.lora_convert import _default_unet

    u = _default_unet()
    order = cloneofsimo_order(u, ["TransformerTemporalModel"])
    assert len(order) == 170 and order[0] == "transformer_in.transformer_blocks.0.attn1.to_q"
    ff = "transformer_in.transformer_blocks.0.ff"
    assert order[8:10] == [f"{ff}.net.0.proj", f"{ff}.net.2"]
    assert len(set(order) & set(temporal_attention_modules(u))) == 136
    spatial = cloneofsimo_order(u, ["Transformer2DModel"])
    assert len(spatial) == 16 * 6 and not any(".attn2." in m for m in spatial)


def test_own_files_are_delegated(tiny, unet, tmp_path):
    mods = spatial_attention_modules(unet)[:2]
    lora = LoraWeights("spatial", {f"{m}.lora_{ab}.weight": t for m in mods
                                   for ab, t in zip("AB", _pair(unet, m, 1))}, {m: 1.0 for m in mods})
    p = save_adapter(tmp_path / "ours.safetensors", AdapterFile("spatial_lora", lora, info={"caption": "x"}))
    ad = _no_warnings_load(p, unet=unet, role="temporal")  # our file's own role wins
    assert ad.kind == "spatial_lora" and ad.lora.modules == sorted(mods) and ad.info == {"caption": "x"}
