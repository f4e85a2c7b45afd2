"""The MotionDirector-style baseline (cav_core/motiondirector.py): which layers it adapts,
that its two paths train jointly in the one loop, and how it samples."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet3DConditionModel

from cav_core.adapter_files import load_adapter, save_adapter
from cav_core.layers import motiondirector_modules
from cav_core.motiondirector import motiondirector_handle, train_motiondirector
from cav_core.realarch import MODELSCOPE_UNET

CAPTION = "a red circle moving in a circle on a black background"


@pytest.fixture(scope="module")
def frames():
    return torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(0))


def _by_description(unet: torch.nn.Module) -> tuple[set[str], set[str]]:
    """The layers the description names, found from the module classes (not the regexes):
    spatial = self-attention (attn1) q/k/v/out and feed-forward of every Transformer2DModel;
    temporal = both attentions' q/k/v/out and feed-forward of every TransformerTemporalModel."""
    from diffusers.models.attention import BasicTransformerBlock

    spatial, temporal = set(), set()
    for name, module in unet.named_modules():
        kind = type(module).__name__
        if kind not in ("Transformer2DModel", "TransformerTemporalModel"):
            continue
        for bname, block in module.named_modules():
            if not isinstance(block, BasicTransformerBlock):
                continue
            attns = ("attn1",) if kind == "Transformer2DModel" else ("attn1", "attn2")
            layers = [f"{a}.{p}" for a in attns for p in ("to_q", "to_k", "to_v", "to_out.0")]
            layers += ["ff.net.0.proj", "ff.net.2"]
            (spatial if kind == "Transformer2DModel" else temporal).update(f"{name}.{bname}.{x}" for x in layers)
    return spatial, temporal


def test_the_baseline_adapts_exactly_the_layers_its_description_names_on_modelscope():
    with torch.device("meta"):
        unet = UNet3DConditionModel(**MODELSCOPE_UNET)
    spatial, temporal = _by_description(unet)
    got_s, got_t = motiondirector_modules(unet, "spatial"), motiondirector_modules(unet, "temporal")
    print(f"\nMotionDirector on ModelScope 1.7B: {len(got_s)} spatial Linear layers (self-attention + FFN of "
          f"{sum(type(m).__name__ == 'Transformer2DModel' for m in unet.modules())} spatial transformers), "
          f"{len(got_t)} temporal (attention + FFN of "
          f"{sum(type(m).__name__ == 'TransformerTemporalModel' for m in unet.modules())} temporal transformers, "
          f"transformer_in included)")
    assert set(got_s) == spatial and set(got_t) == temporal
    assert len(got_s) == len(spatial) == 96 and len(got_t) == len(temporal) == 170
    assert not any(".attn2." in m for m in got_s)  # no cross-attention on the spatial path
    assert any(m.startswith("transformer_in.") for m in got_t)
    assert all(isinstance(unet.get_submodule(m), torch.nn.Linear) for m in got_s + got_t)


def test_a_two_step_run_trains_both_paths_and_saves_both_files(tiny, frames, tmp_path):
    base = {k: v.clone() for k, v in tiny.base.unet.state_dict().items()}
    r = train_motiondirector(tiny, frames, CAPTION, steps=2, rank=2, spatial_share=1.0, seed=3)
    unet = tiny.base.unet
    assert r.spatial.lora.modules == sorted(motiondirector_modules(unet, "spatial"))
    assert r.temporal.lora.modules == sorted(motiondirector_modules(unet, "temporal"))
    for lora in (r.spatial.lora, r.temporal.lora):  # both moved off peft's zero B
        assert any(float(v.abs().max()) > 0 for k, v in lora.tensors.items() if k.endswith("lora_B.weight"))
    after = unet.state_dict()
    assert set(after) == set(base) and all(torch.equal(after[k], base[k]) for k in base)  # the base is untouched
    paths = [save_adapter(tmp_path / f"md_{role}.safetensors", f) for role, f in
             (("spatial", r.spatial), ("temporal", r.temporal))]
    back = [load_adapter(p) for p in paths]
    assert [(b.kind, b.lora.role) for b in back] == [("spatial_lora", "spatial"), ("temporal_lora", "temporal")]
    assert back[1].info["ad_loss"] == 1.0 and back[1].info["rank"] == 2 and back[1].info["steps"] == 2
    assert all(torch.equal(back[1].lora.tensors[k], r.temporal.lora.tensors[k]) for k in r.temporal.lora.tensors)


def test_the_temporal_path_trains_the_temporal_lora_only(tiny, frames):
    """With the spatial path never drawn, the spatial LoRA (shared, frozen on the temporal
    path) must stay at its zero B: the temporal loss may not train it."""
    r = train_motiondirector(tiny, frames, CAPTION, steps=2, rank=2, spatial_share=0.0, seed=3)
    assert all(float(v.abs().max()) == 0 for k, v in r.spatial.lora.tensors.items() if k.endswith("lora_B.weight"))
    assert any(float(v.abs().max()) > 0 for k, v in r.temporal.lora.tensors.items() if k.endswith("lora_B.weight"))
    same = train_motiondirector(tiny, frames, CAPTION, steps=2, rank=2, spatial_share=0.0, seed=3)
    assert all(torch.equal(same.temporal.lora.tensors[k], v) for k, v in r.temporal.lora.tensors.items())


def test_sampling_applies_the_temporal_lora_everywhere_and_the_spatial_one_only_when_asked(tiny, frames):
    r = train_motiondirector(tiny, frames, CAPTION, steps=1, rank=1, seed=0)
    h = motiondirector_handle(tiny, r)
    assert [(a.lora.role, a.min_timestep, a.cond_only_from) for a in h.loras] == [("temporal", 0, None)]
    both = motiondirector_handle(tiny, r, spatial=1.0)
    assert [a.lora.role for a in both.loras] == ["temporal", "spatial"]


def test_bad_settings_name_the_setting(tiny, frames):
    from cav_core.errors import InputError
    from cav_core.motiondirector import motiondirector_sample

    with pytest.raises(InputError, match="spatial_share"):
        train_motiondirector(tiny, frames, CAPTION, steps=1, spatial_share=1.5)
    with pytest.raises(InputError, match="ad_loss"):
        train_motiondirector(tiny, frames, CAPTION, steps=1, ad_loss=-1.0)
    r = train_motiondirector(tiny, frames, CAPTION, steps=1, rank=1)
    with pytest.raises(InputError, match="inverted"):
        motiondirector_sample(tiny, r, "a blue square", noise_prior=0.5)
