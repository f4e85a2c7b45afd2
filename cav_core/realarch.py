"""The real ModelScope / ZeroScope architecture: component configs and a folder writer.

Tests and benchmarks build models of the real classes in the layout the real repositories
ship (``model_index.json``, ``unet/ vae/ text_encoder/ tokenizer/ scheduler/``, fp16
weight variants beside the fp32 ones, CLIP's slow-tokenizer files), with random weights,
since no weights can be downloaded:

* :func:`modelscope_configs`: the exact configs of ``damo-vilab/text-to-video-ms-1.7b``
  (ZeroScope v2 uses the same UNet config): diffusers' ``UNet3DConditionModel()``
  defaults with ``sample_size`` 32 (the 1.7B UNet, tests/test_layers.py), SD's 8x
  ``AutoencoderKL`` (4 blocks, 128/256/512/512) and OpenCLIP ViT-H's text tower as a
  ``CLIPTextModel`` (width 1024, 23 layers: SD 2.x drops the last of 24).
* :func:`small_configs`: the same structure (4 down / 4 up blocks, 3 cross-attention + 1
  plain, mirrored, 2 layers per block, ``attention_head_dim`` 64, cross-attention width =
  text width, 4-block VAE) at small widths, for CI (tests/test_real_arch.py).

Only the tokenizer is smaller than the real one: a CLIP BPE vocabulary of the byte
alphabet plus whole-word tokens for :data:`WORDS` (any other word still tokenizes, as
characters). Torch is imported only by :func:`write_model_folder`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

#: Words with whole-word tokens in the generated tokenizer (captions of the tests and benchmarks).
WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "on", "and", "with", "to", "is", "at", "man", "woman", "dog", "cat", "car",
    "person", "doing", "backflip", "park", "beach", "street", "walking", "running", "moving", "jumping",
    "circle", "square", "red", "green", "blue", "yellow", "black", "white", "gray", "background", "video",
    "style", "painting", "watercolor", "left", "right", "up", "down", "slowly", "fast", "around",
)

MAX_LENGTH = 77  # CLIP's context length, the tokenizer's model_max_length

#: The UNet of text-to-video-ms-1.7b = diffusers' UNet3DConditionModel() defaults + sample_size.
MODELSCOPE_UNET: dict[str, Any] = dict(
    sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024,
    attention_head_dim=64,  # UNet3DConditionModel reads it as the number of heads (diffusers issue 2011)
)

#: Stable Diffusion's 8x VAE, as ModelScope ships it.
MODELSCOPE_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
)

#: OpenCLIP ViT-H/14's text tower as transformers' CLIPTextModel, as SD 2.x and ModelScope ship
#: it. bos/eos/pad 0/2/1 are what those config files say (not the tokenizer's ids): with
#: eos_token_id 2 transformers pools at the highest token id, which is CLIP's end token.
MODELSCOPE_TEXT: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=MAX_LENGTH, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=512,
    attention_dropout=0.0, dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)

#: scheduler/scheduler_config.json of text-to-video-ms-1.7b (keys SD-era diffusers wrote included).
MODELSCOPE_SCHEDULER: dict[str, Any] = dict(
    _class_name="DDIMScheduler", beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085,
    clip_sample=False, num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False,
    skip_prk_steps=True, steps_offset=1, trained_betas=None,
)

#: model_index.json of text-to-video-ms-1.7b (its _diffusers_version is the one it was converted with).
MODEL_INDEX: dict[str, Any] = {
    "_class_name": "TextToVideoSDPipeline", "_diffusers_version": "0.15.0.dev0",
    "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet3DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

#: tokenizer/tokenizer_config.json as SD 2.x / ModelScope ship it (CLIP's special tokens; "!" pads).
TOKENIZER_CONFIG: dict[str, Any] = {
    "add_prefix_space": False, "bos_token": "<|startoftext|>", "do_lower_case": True,
    "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": MAX_LENGTH, "pad_token": "!",
    "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>",
}


def modelscope_configs() -> dict[str, dict[str, Any]]:
    """The exact component configs of text-to-video-ms-1.7b (and ZeroScope v2's UNet/VAE/text)."""
    return {"unet": dict(MODELSCOPE_UNET), "vae": dict(MODELSCOPE_VAE), "text_encoder": dict(MODELSCOPE_TEXT),
            "scheduler": dict(MODELSCOPE_SCHEDULER)}


def small_configs(width: int = 64, text_width: int = 64) -> dict[str, dict[str, Any]]:
    """ModelScope's structure at small widths: UNet blocks (w, 2w, 3w, 3w) with 64 heads (so
    ``width`` must be a multiple of 64; the width grows where ModelScope's 320/640/1280/1280
    grows, so every module exists, shortcut convolutions included), a 4-block VAE, a 2-layer
    CLIP text model whose width is the UNet's cross-attention width; native size 64x64
    (latent 8x8, the least that four UNet levels allow)."""
    if width % 64 or text_width % 16:
        raise ValueError("width must be a multiple of 64 (64 attention heads) and text_width of 16 (16 heads)")
    cfg = modelscope_configs()
    cfg["unet"].update(sample_size=8, block_out_channels=(width, 2 * width, 3 * width, 3 * width),
                       cross_attention_dim=text_width)
    cfg["vae"].update(block_out_channels=(32, 32, 64, 64), sample_size=64)
    cfg["text_encoder"].update(hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=2,
                               projection_dim=text_width)
    return cfg


def write_tokenizer(folder: Path, words: tuple[str, ...] = WORDS) -> Path:
    """CLIP slow-tokenizer files: ``vocab.json`` + ``merges.txt`` + configs (no tokenizer.json)."""
    from .toyworld.model_config import write_vocab

    write_vocab(folder, words)
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    special = {k: TOKENIZER_CONFIG[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder


def _save_with_fp16(module: Any, folder: Path, fp16_variant: bool) -> None:
    """fp32 weights, then (in place, no second copy in memory) the fp16 variant beside them."""
    import torch

    module.save_pretrained(str(folder), safe_serialization=True)
    if fp16_variant:
        config = (folder / "config.json").read_bytes()
        module.to(torch.float16).save_pretrained(str(folder), safe_serialization=True, variant="fp16")
        # transformers records the dtype of the last save in config.json: keep the fp32 one, which
        # loaders without a torch_dtype (transformers 5 reads "auto") then take for the main weights
        (folder / "config.json").write_bytes(config)


def write_model_folder(folder: str | os.PathLike, configs: dict[str, dict[str, Any]], seed: int = 0,
                       fp16_variants: bool = True, words: tuple[str, ...] = WORDS) -> Path:
    """Write a text-to-video folder in the real layout, with seeded random weights.

    One component at a time is built, saved and freed, so the full-size model needs the
    memory of its UNet only (about 6 GB in fp32). The folder is written under a temporary
    name and renamed when complete: an interrupted run never leaves a folder that looks
    finished. An existing ``folder`` is never touched (FileExistsError)."""
    import torch
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(folder)
    if out.exists():
        raise FileExistsError(f"{out} exists; not overwriting it")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover of this very process id
    tmp.mkdir(parents=True)
    try:
        write_tokenizer(tmp / "tokenizer", words)
        with torch.random.fork_rng(devices=[]):
            for i, (comp, cls) in enumerate((("unet", UNet3DConditionModel), ("vae", AutoencoderKL))):
                torch.manual_seed(seed + i)
                model = cls(**configs[comp])
                _save_with_fp16(model, tmp / comp, fp16_variants)
                del model
            torch.manual_seed(seed + 2)
            text = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
            _save_with_fp16(text, tmp / "text_encoder", fp16_variants)
            del text
        # as the real repository has it, with keys today's diffusers no longer writes (skip_prk_steps)
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(
            json.dumps({"_diffusers_version": MODEL_INDEX["_diffusers_version"], **configs["scheduler"]}, indent=2))
        (tmp / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def fullsize_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """The full-size ModelScope folder with random weights (about 7 GB, fp32 only), written
    once into ``cache_dir`` (default ``$CAV_FULLSIZE_CACHE`` or ``~/.cache/cav-fullsize``)
    and reused afterwards."""
    root = Path(cache_dir or os.environ.get("CAV_FULLSIZE_CACHE") or Path.home() / ".cache" / "cav-fullsize")
    folder = root.expanduser() / "text-to-video-ms-1.7b-random"
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    return write_model_folder(folder, modelscope_configs(), seed=0, fp16_variants=False)
