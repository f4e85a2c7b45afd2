import pytest
import torch
from diffusers import UNet3DConditionModel

from cav_core.adapters import add_trainable_lora, remove_all_loras
from cav_core.layers import (bypass_temporal, spatial_attention_modules, temporal_attention_modules,
                             temporal_modules)
from conftest import unet_inputs, unet_out


@pytest.fixture(scope="module")
def modelscope_meta():
    # diffusers' UNet3DConditionModel() defaults are the ModelScope 1.7B config.
    with torch.device("meta"):
        return UNet3DConditionModel()


@pytest.mark.parametrize("role,rank,modules,params", [
    ("temporal", 4, 136, 831_488),   # the paper's T-LoRA: 831.5K
    # the paper's S-LoRA: 207.5K. Rank 1 on these 128 modules is sum(in + out) = 207,488
    # exactly (207,520, another rounding of 207.5K, is unreachable: every module adds >= 640).
    ("spatial", 1, 128, 207_488),
])
def test_modelscope_lora_sizes_match_paper(modelscope_meta, role, rank, modules, params):
    unet = modelscope_meta
    with torch.device("meta"):
        trainable = add_trainable_lora(unet, role, rank=rank, alpha=rank, adapter_name="probe")
    try:
        assert len(trainable) == 2 * modules
        assert sum(p.numel() for p in trainable) == params
    finally:
        remove_all_loras(unet)
    assert not any("lora" in n for n, _ in unet.named_parameters())


def test_role_module_names(modelscope_meta):
    t = temporal_attention_modules(modelscope_meta)
    s = spatial_attention_modules(modelscope_meta)
    assert not set(t) & set(s)
    assert all(("temp_attentions" in n or n.startswith("transformer_in")) for n in t)
    assert all(".attentions." in n for n in s)
    assert "transformer_in.transformer_blocks.0.attn1.to_q" in t
    assert "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0" in s
    names = temporal_modules(modelscope_meta)
    assert "transformer_in" in names and sum(".temp_convs." in n for n in names) == 22


@pytest.fixture(scope="module")
def mixing():
    """A random toy model whose temporal layers actually mix frames: diffusers
    zero-initialises their output layers, which makes them identities at init."""
    from cav_core.toyworld.model_config import build_random_toy

    h = build_random_toy(seed=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in temporal_modules(h.base.unet):
            for p in h.base.unet.get_submodule(name).parameters():
                if not p.any():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return h


def _perm_out(handle, perm, bypass):
    x, t, ctx = unet_inputs(handle, frames=6)
    h = handle.with_bypass(bypass)
    return unet_out(h, x, t, ctx), unet_out(h, x[:, :, perm], t, ctx)


def test_bypass_makes_frames_independent(mixing):
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out, out_perm = _perm_out(mixing, perm, bypass=True)
    torch.testing.assert_close(out_perm, out[:, :, perm], rtol=1e-4, atol=1e-5)


def test_without_bypass_frames_interact(mixing):
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out, out_perm = _perm_out(mixing, perm, bypass=False)
    assert (out_perm - out[:, :, perm]).abs().max() > 1e-3


def test_bypass_restores_model_exactly(mixing):
    x, t, ctx = unet_inputs(mixing)
    before = unet_out(mixing, x, t, ctx)
    with bypass_temporal(mixing.base.unet):
        bypassed = mixing.base.unet(x, t, encoder_hidden_states=ctx).sample
    after = unet_out(mixing, x, t, ctx)
    assert torch.equal(before, after)
    assert not torch.equal(before, bypassed)
    assert all("forward" not in vars(mixing.base.unet.get_submodule(n)) for n in temporal_modules(mixing.base.unet))


def test_bypass_restores_after_error(tiny):
    with pytest.raises(RuntimeError, match="boom"):
        with bypass_temporal(tiny.base.unet):
            raise RuntimeError("boom")
    assert all("forward" not in vars(tiny.base.unet.get_submodule(n)) for n in temporal_modules(tiny.base.unet))
