"""Loading a diffusers text-to-video folder (docs/DESIGN.md §2): device policy, layout
checks, the model id, and building/saving the real classes (the toy model, tests).

A folder in the layout of ModelScope ``text-to-video-ms-1.7b`` / ZeroScope v2 holds
``model_index.json`` and ``unet/ text_encoder/ tokenizer/ vae/ scheduler/``. The loader
checks that layout first so a wrong folder fails with a message naming what is missing,
instead of a deep diffusers traceback. The embedded toy model uses exactly this path.
What a loaded model becomes, the immutable :class:`~cav_core.handle.ModelHandle`, lives
in :mod:`cav_core.handle`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputError, ModelLoadError
from .components import T2VComponents
from .handle import ModelHandle

#: component -> accepted class names (the first is what we build).
COMPONENT_CLASSES: dict[str, tuple[str, ...]] = {
    "unet": ("UNet3DConditionModel",),
    "text_encoder": ("CLIPTextModel",),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
    "vae": ("AutoencoderKL",),
    "scheduler": (),  # any diffusers scheduler; the sampler picks its own from this config
}
WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


# --------------------------------------------------------------------------- device policy

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available in this PyTorch install; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s) "
                         f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r}: Apple MPS is not available here; use 'auto' or 'cpu'")
    return dev


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """'auto' is fp16 on CUDA/MPS (how ModelScope is run) and fp32 on CPU, where fp16
    kernels are slow or missing. Half precision on the CPU is refused (not silently
    changed), and so is bf16 on a GPU without bf16 support (before Ampere): use fp16."""
    if dtype == "auto":
        return torch.float16 if device is not None and device.type in ("cuda", "mps") else torch.float32
    if isinstance(dtype, torch.dtype):
        dt, name = dtype, str(dtype).replace("torch.", "")
    elif dtype in _DTYPES:
        dt, name = _DTYPES[dtype], dtype
    else:
        raise InputError(f"unknown dtype {dtype!r}; use 'auto', 'fp32', 'fp16' or 'bf16'")
    if dt not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"dtype {name} is not usable for the model; use 'auto', 'fp32', 'fp16' or 'bf16'")
    if dt != torch.float32 and device is not None and device.type == "cpu":
        raise InputError(f"dtype {name} is not supported on the CPU here; use 'fp32' (or 'auto')")
    if dt == torch.bfloat16 and device is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(f"dtype {name} is not supported by this GPU; use 'fp16' (or 'auto')")
    return dt


# --------------------------------------------------------------------------- loading

def _freeze(*modules: nn.Module) -> None:
    for m in modules:
        m.requires_grad_(False)
        m.eval()


#: Tensors whose bytes identify a model's weights (the first of each group that exists):
#: small, fixed, and changed by any fine-tune of the UNet or the text encoder.
_FINGERPRINT_TENSORS = (("conv_in.weight",), ("conv_out.weight",), ("time_embedding.linear_1.weight",),
                        ("text_model.embeddings.token_embedding.weight",))
_FINGERPRINT_VALUES = 1 << 20  # at most this many values of each (a large vocabulary table is 50M)


def architecture_config(unet_config: Mapping[str, Any]) -> dict[str, Any]:
    """The UNet config without diffusers' bookkeeping (``_name_or_path`` is the folder's
    absolute path, ``_diffusers_version`` the library's version): what the layers are."""
    return {k: v for k, v in dict(unet_config).items() if not str(k).startswith("_")}


def _weights_fingerprint(*modules: nn.Module | None) -> str:
    h = hashlib.sha1()
    for m in modules:
        if m is None:
            continue
        params = dict(m.named_parameters())
        for group in _FINGERPRINT_TENSORS:
            for name in group:
                if name in params:
                    # fp16 bytes: the same file loaded in fp32 or fp16 gives the same fingerprint
                    t = params[name].detach().flatten()[:_FINGERPRINT_VALUES].to("cpu", torch.float16).contiguous()
                    h.update(name.encode())
                    h.update(t.numpy().tobytes())
        if not any(n in params for g in _FINGERPRINT_TENSORS for n in g) and params:
            first = next(iter(params.values())).detach().flatten()[:_FINGERPRINT_VALUES]
            h.update(first.to("cpu", torch.float16).contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def _model_id(unet: nn.Module, text_encoder: nn.Module | None = None) -> str:
    """``arch.weights``: a hash of the architecture config and a fingerprint of a few weight
    tensors. The same model copied, moved, loaded from another folder or with another
    diffusers version has the same id; the readable name is kept apart (``T2VComponents.name``)."""
    cfg = json.dumps(architecture_config(unet.config), sort_keys=True, default=str)
    arch = hashlib.sha1(cfg.encode()).hexdigest()[:10]
    return f"{arch}.{_weights_fingerprint(unet, text_encoder)}"


def _check_layout(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise ModelLoadError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file; give the diffusers model *folder* (the one with model_index.json)")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelLoadError(f"{folder} is not a diffusers model folder: model_index.json is missing "
                             f"(expected the layout of damo-vilab/text-to-video-ms-1.7b or zeroscope_v2)")
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{index_path} is not valid JSON: {e}") from None
    if not isinstance(index, dict):
        raise ModelLoadError(f"{index_path} is not a diffusers model index (a JSON object naming the components)")
    for comp, classes in COMPONENT_CLASSES.items():
        entry = index.get(comp)
        if not entry:
            raise ModelLoadError(f"{folder} is not a text-to-video model: model_index.json has no '{comp}' "
                                 f"component (found: {sorted(k for k in index if not k.startswith('_'))})")
        cls = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
        if classes and cls not in classes:
            raise ModelLoadError(f"{folder} is not a ModelScope-style text-to-video model: component '{comp}' is "
                                 f"{cls}, expected {' or '.join(classes)}")
    for comp in COMPONENT_CLASSES:
        sub = folder / comp
        if not sub.is_dir():
            raise ModelLoadError(f"{folder}: component folder '{comp}/' is missing")
        if comp != "tokenizer" and not any(sub.glob("*config.json")):
            raise ModelLoadError(f"{sub}: no config file; the '{comp}' component is incomplete")
        if comp == "tokenizer" and not ((sub / "tokenizer.json").is_file()
                                        or ((sub / "vocab.json").is_file() and (sub / "merges.txt").is_file())):
            # transformers would build an empty-vocabulary tokenizer and every prompt would be lost
            raise ModelLoadError(f"{sub}: no vocabulary (tokenizer.json, or vocab.json + merges.txt); the "
                                 f"'tokenizer' component is incomplete")
    return index


def _weights_variant(sub: Path, stem: str, dtype: torch.dtype) -> tuple[str | None, bool]:
    """(variant, use_safetensors) for a component folder; prefers safetensors, and the fp16
    files when loading in half precision."""
    def has(name: str) -> bool:
        return (sub / name).is_file() or (sub / f"{name}.index.json").is_file()

    candidates = [("fp16", True), ("fp16", False)] if dtype == torch.float16 else []
    candidates += [(None, True), (None, False), ("fp16", True), ("fp16", False)]
    for variant, st in candidates:
        if has(f"{stem}{'.' + variant if variant else ''}.{'safetensors' if st else 'bin'}"):
            return variant, st
    raise ModelLoadError(f"{sub}: no weights found (looked for {stem}[.fp16].safetensors / .bin)")


def load_t2v(path: str | os.PathLike, device: str | torch.device = "auto",
             dtype: str | torch.dtype = "auto") -> "ModelHandle":
    """Load a diffusers text-to-video folder into a :class:`ModelHandle`.

    Safetensors files are preferred; ``.bin`` files are read by diffusers/transformers
    with ``weights_only`` loading. Raises :class:`ModelLoadError` naming the folder and
    the missing or wrong part."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(path).expanduser().resolve()
    _check_layout(folder)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    loaded: dict[str, Any] = {}
    for comp, cls in (("unet", UNet3DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
        sub = folder / comp
        variant, use_st = _weights_variant(sub, WEIGHT_STEMS[comp], dt)
        try:
            loaded[comp] = cls.from_pretrained(str(sub), variant=variant, use_safetensors=use_st, torch_dtype=dt)
        except Exception as e:  # OSError, SafetensorError, config errors...: the files are damaged or wrong
            raise ModelLoadError(f"{sub}: could not load the {comp} ({type(e).__name__}: {str(e)[:300]}); the "
                                 f"files may be incomplete: download the model again") from None
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    except Exception as e:  # OSError, JSON and tokenizers errors: the files are damaged or wrong
        raise ModelLoadError(f"{folder / 'tokenizer'}: could not load the tokenizer ({str(e)[:300]}); the files "
                             f"may be incomplete: download the model again") from None
    sched_files = sorted((folder / "scheduler").glob("scheduler_config.json"))
    if not sched_files:
        raise ModelLoadError(f"{folder / 'scheduler'}: scheduler_config.json is missing")
    try:
        scheduler_config = json.loads(sched_files[0].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{sched_files[0]} is not valid JSON: {e}") from None
    if not isinstance(scheduler_config, dict):
        raise ModelLoadError(f"{sched_files[0]} is not a scheduler config (a JSON object)")
    for m in (loaded["unet"], loaded["vae"], loaded["text_encoder"]):
        m.to(dev)
    _freeze(loaded["unet"], loaded["vae"], loaded["text_encoder"])
    comps = T2VComponents(unet=loaded["unet"], text_encoder=loaded["text_encoder"], tokenizer=tokenizer,
                          vae=loaded["vae"], scheduler_config=scheduler_config,
                          model_id=_model_id(loaded["unet"], loaded["text_encoder"]), source=str(folder),
                          name=folder.name)
    return ModelHandle(comps)


def build_t2v(unet_config: Mapping[str, Any], text_config: Mapping[str, Any], vae_config: Mapping[str, Any],
              scheduler_config: Mapping[str, Any], tokenizer: Any, seed: int = 0,
              name: str = "tiny-t2v", device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> "ModelHandle":
    """Build the real classes from configs with seeded random weights, e.g. for tests and
    benchmarks. The weights are created on ``device`` (a full-size model initialises in
    seconds on a GPU, in minutes on a CPU) and then cast to ``dtype``."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet3DConditionModel(**unet_config).to(dtype)
        vae = AutoencoderKL(**vae_config).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config)).to(dtype)
    _freeze(unet, vae, text_encoder)
    comps = T2VComponents(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
                          scheduler_config=dict(scheduler_config),
                          model_id=_model_id(unet, text_encoder), source="", name=name)
    return ModelHandle(comps)


def save_t2v(components: T2VComponents, folder: str | os.PathLike, pipeline_class: str = "TextToVideoSDPipeline") -> Path:
    """Write components in the diffusers folder layout (safetensors), as a real model ships."""
    from diffusers import DDIMScheduler

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    components.unet.save_pretrained(out / "unet", safe_serialization=True)
    components.vae.save_pretrained(out / "vae", safe_serialization=True)
    components.text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    components.tokenizer.save_pretrained(out / "tokenizer")
    sched_cls = components.scheduler_config.get("_class_name", "DDIMScheduler")
    DDIMScheduler.from_config(dict(components.scheduler_config)).save_pretrained(out / "scheduler")
    # keep the original scheduler class name in the saved config
    cfg_path = out / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_class_name"] = sched_cls
    cfg_path.write_text(json.dumps(cfg, indent=2))
    index = {"_class_name": pipeline_class, "_diffusers_version": _diffusers_version(),
             "scheduler": ["diffusers", sched_cls], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet3DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def _diffusers_version() -> str:
    import diffusers
