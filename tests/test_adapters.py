import pytest
import torch

from cav_core.adapter_files import AdapterFile, load_adapter, save_adapter
from cav_core.textual_inversion import TokenEmbeddings
from cav_core.adapters import LoraWeights, add_trainable_lora, extract_lora, lora_layers, remove_all_loras
from cav_core.errors import AdapterError, InputError
from conftest import unet_inputs, unet_out


def random_lora(handle, role="temporal", rank=4, alpha=4.0, seed=0, scale=0.05) -> LoraWeights:
    """A LoRA with non-zero A and B, made through peft and extracted like a trained one."""
    unet = handle.base.unet
    add_trainable_lora(unet, role, rank=rank, alpha=alpha, adapter_name="mk")
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            for _, layer in lora_layers(unet):
                for p in (layer.lora_A["mk"].weight, layer.lora_B["mk"].weight):
                    p.copy_(torch.randn(p.shape, generator=g) * scale)
        return extract_lora(unet, "mk", role, base_model=handle.model_id)
    finally:
        remove_all_loras(unet)


def test_trainable_lora_changes_nothing_until_trained(tiny):
    x, t, ctx = unet_inputs(tiny)
    base = unet_out(tiny, x, t, ctx)
    params = add_trainable_lora(tiny.base.unet, "temporal", 4, 4, "fresh")
    try:
        assert all(p.requires_grad for p in params)
        with torch.no_grad():
            out = tiny.base.unet(x, t, encoder_hidden_states=ctx).sample
        assert torch.equal(out, base)  # peft initialises B = 0
    finally:
        remove_all_loras(tiny.base.unet)


def test_save_load_round_trip_is_exact(tiny, tmp_path):
    lora = random_lora(tiny, "temporal")
    tokens = TokenEmbeddings(("<a1>", "<a2>"), torch.randn(2, 64))
    path = save_adapter(tmp_path / "t.safetensors", AdapterFile("absorber", lora, tokens, tiny.model_id,
                                                                 {"caption": "a red circle"}))
    back = load_adapter(path)
    assert back.kind == "absorber" and back.base_model == tiny.model_id and back.info["caption"] == "a red circle"
    assert back.lora.modules == lora.modules and back.lora.role == "temporal"
    for k, v in lora.tensors.items():
        assert torch.equal(back.lora.tensors[k], v)
    assert dict(back.lora.alphas) == dict(lora.alphas)
    assert back.tokens.tokens == tokens.tokens and torch.equal(back.tokens.embeddings, tokens.embeddings)


def test_save_never_overwrites(tiny, tmp_path):
    lora = random_lora(tiny, "spatial", rank=1, alpha=1.0)
    p = tmp_path / "s.safetensors"
    save_adapter(p, AdapterFile("spatial_lora", lora))
    before = p.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        save_adapter(p, AdapterFile("spatial_lora", random_lora(tiny, "spatial", rank=1, seed=3)))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["s.safetensors"]  # no temp file left behind


def test_attached_lora_changes_output_and_detach_is_bit_identical(tiny):
    x, t, ctx = unet_inputs(tiny, frames=4)
    base = unet_out(tiny, x, t, ctx)
    names_before = [n for n, _ in tiny.base.unet.named_parameters()]
    h = tiny.with_lora(random_lora(tiny, "spatial", rank=2), 1.0)
    with_lora = unet_out(h, x, t, ctx)
    merged = unet_out(h, x, t, ctx, merge=True)
    after = unet_out(tiny, x, t, ctx)
    assert (with_lora - base).abs().max() > 1e-4
    torch.testing.assert_close(merged, with_lora, rtol=1e-4, atol=1e-5)
    assert torch.equal(after, base)
    assert [n for n, _ in tiny.base.unet.named_parameters()] == names_before
    assert not lora_layers(tiny.base.unet)


def test_strength_zero_is_base_and_handles_are_immutable(tiny):
    x, t, ctx = unet_inputs(tiny)
    lora = random_lora(tiny, "spatial", rank=2)
    h1 = tiny.with_lora(lora, 0.0)
    assert tiny.loras == () and len(h1.loras) == 1
    assert torch.equal(unet_out(h1, x, t, ctx), unet_out(tiny, x, t, ctx))
    with pytest.raises(InputError, match="strength"):
        tiny.with_lora(lora, float("nan"))


def test_mismatched_lora_is_refused_and_model_unchanged(tiny):
    from cav_core.toyworld.model_config import UNET_CONFIG, VAE_CONFIG, SCHEDULER_CONFIG, build_tokenizer, text_config
    from cav_core.model import build_t2v

    tok = build_tokenizer()
    wider = build_t2v({**UNET_CONFIG, "block_out_channels": (48, 64, 64)}, text_config(tok), VAE_CONFIG,
                      SCHEDULER_CONFIG, tok, seed=0)
    foreign = random_lora(wider, "temporal")
    x, t, ctx = unet_inputs(tiny)
    base = unet_out(tiny, x, t, ctx)
    with pytest.raises(AdapterError, match=r"first mismatching module 'down_blocks\.0\.temp_attentions\.0\.transformer_blocks\.0\.attn1\.to_k'"):
        unet_out(tiny.with_lora(foreign, 1.0), x, t, ctx)
    assert not lora_layers(tiny.base.unet)
    assert torch.equal(unet_out(tiny, x, t, ctx), base)


def test_unknown_module_is_refused(tiny):
    lora = random_lora(tiny, "spatial", rank=1)
    bad = LoraWeights("spatial", {k.replace("down_blocks.0", "down_blocks.9"): v for k, v in lora.tensors.items()},
                      {m.replace("down_blocks.0", "down_blocks.9"): a for m, a in lora.alphas.items()})
    with pytest.raises(AdapterError, match="does not exist"):
        with tiny.with_lora(bad).applied():
            pass


def test_pickle_and_garbage_files_are_refused(tmp_path):
    pt = tmp_path / "x.ckpt"
    pt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(AdapterError, match="pickle"):
        load_adapter(pt)
    junk = tmp_path / "x.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(AdapterError, match="not a readable"):
        load_adapter(junk)


def test_direct_merge_matches_peft_layers_for_stacked_adapters(tiny):
    """Merged sampling folds s·ΔW into the weights itself; it must equal peft's LoRA layers,
    also with mixed ranks, per-module alphas (third-party files) and strengths < 0 or > 1."""
    x, t, ctx = unet_inputs(tiny, frames=4)
    base = unet_out(tiny, x, t, ctx)
    t1 = random_lora(tiny, "temporal", rank=4, seed=1)
    t2 = random_lora(tiny, "temporal", rank=2, alpha=1.0, seed=2)
    s = random_lora(tiny, "spatial", rank=1, seed=3)
    s = LoraWeights("spatial", s.tensors, {m: (0.5 if i % 2 else 3.0) for i, m in enumerate(s.modules)})
    h = tiny.with_lora(t1, 0.8).with_lora(t2, -1.3).with_lora(s, 2.0)
    unmerged = unet_out(h, x, t, ctx)
    merged = unet_out(h, x, t, ctx, merge=True)
    assert (unmerged - base).abs().max() > 1e-3
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    assert torch.equal(unet_out(tiny, x, t, ctx), base)
