import json
import shutil

import pytest
import torch

from cav_core.errors import ModelLoadError
from cav_core.model import load_t2v, save_t2v
from conftest import unet_inputs, unet_out


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    return save_t2v(tiny.base, tmp_path_factory.mktemp("m") / "tiny-t2v")


def test_round_trip_through_real_layout(tiny, saved):
    for comp in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (saved / comp).is_dir()
    assert (saved / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    index = json.loads((saved / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet3DConditionModel"]
    h = load_t2v(saved, device="cpu", dtype="fp32")
    assert type(h.base.unet).__name__ == "UNet3DConditionModel"
    assert not any(p.requires_grad for p in h.base.unet.parameters())
    x, t, ctx = unet_inputs(tiny)
    assert torch.equal(unet_out(h, x, t, ctx), unet_out(tiny, x, t, ctx))
    assert h.base.tokenizer("a red circle").input_ids == tiny.base.tokenizer("a red circle").input_ids
    assert h.base.scheduler_config["_class_name"] == "DDIMScheduler"
    assert "UNet3DConditionModel" in h.describe()


def test_fp16_variant_is_preferred_in_half(saved, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(saved, d)
    w = d / "unet" / "diffusion_pytorch_model.safetensors"
    w.rename(d / "unet" / "diffusion_pytorch_model.fp16.safetensors")  # only the variant present
    from cav_core.model import _weights_variant

    assert _weights_variant(d / "unet", "diffusion_pytorch_model", torch.float16) == ("fp16", True)
    assert _weights_variant(d / "unet", "diffusion_pytorch_model", torch.float32) == ("fp16", True)
    assert _weights_variant(d / "vae", "diffusion_pytorch_model", torch.float32) == (None, True)


def _copy(saved, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(saved, d)
    return d


def test_missing_component_folder(saved, tmp_path):
    d = _copy(saved, tmp_path)
    shutil.rmtree(d / "vae")
    with pytest.raises(ModelLoadError, match=r"component folder 'vae/' is missing") as e:
        load_t2v(d)
    assert str(d) in str(e.value)


def test_missing_weights(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights found") as e:
        load_t2v(d)
    assert str(d / "unet") in str(e.value)


def test_wrong_class_is_named(saved, tmp_path):
    d = _copy(saved, tmp_path)
    index = json.loads((d / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DConditionModel"]
    (d / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="'unet' is UNet2DConditionModel, expected UNet3DConditionModel"):
        load_t2v(d)


def test_not_a_t2v_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json is missing"):
        load_t2v(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ModelLoadError, match="'unet' is UNet2DConditionModel"):
        load_t2v(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet3DConditionModel"]}))
    with pytest.raises(ModelLoadError, match="no 'text_encoder' component"):
        load_t2v(tmp_path)
    with pytest.raises(ModelLoadError, match="not found"):
        load_t2v(tmp_path / "nope")
