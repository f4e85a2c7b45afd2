"""Helpers for the real-architecture checks (tests/test_real_arch.py, benchmarks/real_size.py):
third-party LoRA files made for a given UNet's shapes, and the whole CLI pipeline.

The folders come from cav_core/realarch.py (the ``real_arch_dir`` fixture in conftest.py, or
the cached full-size model); the pipeline is ``python -m cav_core`` run in-process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cav_core import cli
from cav_core.toyworld import ASSETS_DIR

CLIP = ASSETS_DIR / "circle.mp4"
APPEARANCE = "a red circle on a black background"
FULL = "a red circle moving in a circle on a black background"
NEW = "a blue square moving on a gray background"


def _pair(layer: nn.Linear, rank: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(rank, layer.in_features, generator=g) * 0.05,
            torch.randn(layer.out_features, rank, generator=g) * 0.05)


def kohya_sd21_lora(path: Path, unet: nn.Module, rank: int = 4, text_width: int | None = None) -> Path:
    """A kohya / A1111 LoRA as sd-scripts writes one for SD 2.1: every Linear layer of the
    spatial transformers (attention, feed-forward, the linear proj_in/proj_out of SD 2.x),
    plus two text-encoder layers; fp16 tensors, alpha = rank / 2, sd-scripts' metadata."""
    g = torch.Generator().manual_seed(11)
    sd: dict[str, torch.Tensor] = {}
    for name, layer in unet.named_modules():
        if ".attentions." not in name:
            continue
        if isinstance(layer, nn.Conv2d) and name.endswith((".proj_in", ".proj_out")):
            layer = nn.Linear(layer.in_channels, layer.out_channels, device="meta")  # SD 2.x: linear projections
        if isinstance(layer, nn.Linear):
            key = "lora_unet_" + name.replace(".", "_")
            down, up = _pair(layer, rank, g)
            sd[key + ".lora_down.weight"], sd[key + ".lora_up.weight"] = down.half(), up.half()
            sd[key + ".alpha"] = torch.tensor(rank / 2, dtype=torch.float16)
    width = text_width or int(unet.config.cross_attention_dim)
    for i in range(2):
        key = f"lora_te_text_model_encoder_layers_{i}_self_attn_q_proj"
        sd[key + ".lora_down.weight"] = torch.randn(rank, width, generator=g).half()
        sd[key + ".lora_up.weight"] = torch.zeros(width, rank, dtype=torch.float16)
        sd[key + ".alpha"] = torch.tensor(rank / 2, dtype=torch.float16)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank / 2),
            "ss_v2": "True", "ss_base_model_version": "sd_v2", "ss_sd_model_name": "v2-1_768-ema-pruned"}
    save_file(sd, str(path), metadata=meta)
    return path


def motiondirector_lora(path: Path, unet: nn.Module, rank: int = 4) -> Path:
    """A MotionDirector temporal LoRA in cloneofsimo's "safeloras" layout: ``unet:<i>:down``
    / ``unet:<i>:up`` for the Linear layers of every TransformerTemporalModel, in the order
    its training code walks them (attention and feed-forward), the class list in the metadata."""
    from cav_core.lora_convert import cloneofsimo_order

    g = torch.Generator().manual_seed(12)
    sd: dict[str, torch.Tensor] = {}
    for i, name in enumerate(cloneofsimo_order(unet, ["TransformerTemporalModel"])):
        down, up = _pair(unet.get_submodule(name), rank, g)
        sd[f"unet:{i}:down"], sd[f"unet:{i}:up"] = down, up
    save_file(sd, str(path), metadata={"unet": json.dumps(["TransformerTemporalModel"]),
                                       "unet:0:rank": str(rank)})
    return path


def lora_values(path: Path) -> int:
    """LoRA values (A and B matrices) stored in one of our adapter files."""
    with safe_open(str(path), framework="pt") as f:
        return sum(f.get_slice(k).get_shape()[0] * f.get_slice(k).get_shape()[1]
                   for k in f.keys() if k.endswith((".lora_A.weight", ".lora_B.weight")))


def run_cli(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


def cli_pipeline(model_dir: Path, work: Path, size: int, frames: int, steps: int,
                 extra_spatial: Path | None = None, extra_temporal: Path | None = None) -> dict[str, object]:
    """Both stages, inversion, and generation (T-LoRA + the absorber's S-LoRA, from the
    inverted latents) through ``python -m cav_core``; returns the files and each command's
    wall time. Asserts every command exits 0."""
    m = ["--model", model_dir, "--device", "cpu", "--dtype", "fp32"]
    shape = ["--height", size, "--width", size]
    clip = ["--video", CLIP, "--frames", frames, "--fps", 8]
    a, t, inv = work / "absorber.safetensors", work / "motion.safetensors", work / "inverted.safetensors"
    v, v2 = work / "new.mp4", work / "third_party.mp4"
    commands = {
        "train-absorber": ["train-absorber", *m, *clip, *shape, "--prompt", APPEARANCE, "--out", a,
                           "--steps", steps, "--kind", "both", "--tokens", 2, "--rank", 1],
        "train-temporal": ["train-temporal", *m, *clip, *shape, "--prompt", FULL, "--absorber", a, "--out", t,
                           "--steps", steps, "--rank", 4],
        "invert": ["invert", *m, *clip, *shape, "--prompt", FULL, "--out", inv, "--steps", steps],
        "generate": ["generate", *m, *shape, "--prompt", NEW, "--frames", frames, "--steps", steps,
                     "--temporal-lora", f"{t}:0.9", "--spatial-lora", f"{a}:0.5", "--init-latents", inv,
                     "--blend", 0.5, "--out", v],
    }
    if extra_spatial or extra_temporal:
        commands["generate (third-party LoRAs)"] = [
            "generate", *m, *shape, "--prompt", NEW, "--frames", frames, "--steps", steps, "--out", v2,
            *(["--spatial-lora", extra_spatial] if extra_spatial else []),
            *(["--temporal-lora", extra_temporal] if extra_temporal else [])]
    seconds: dict[str, float] = {}
    for name, argv in commands.items():
        t0 = time.perf_counter()
        rc = run_cli(*argv)
        seconds[name] = time.perf_counter() - t0
        assert rc == 0, f"{name} exited {rc}"
    return {"absorber": a, "temporal": t, "inverted": inv, "video": v,
            "third_party_video": v2 if "generate (third-party LoRAs)" in commands else None, "seconds": seconds}
