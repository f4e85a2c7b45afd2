"""The one file format of the pack: adapters as ``.safetensors`` with JSON metadata.

A file holds a LoRA (T-LoRA, S-LoRA), textual-inversion tokens, or both (an absorber).
Tensor keys follow diffusers' LoRA convention (``unet.<module>.lora_A.weight``) so an
S-LoRA of ours also loads in diffusers tools; token embeddings sit under
``textual_inversion.embeddings``. Everything else is in the ``cav_adapter`` metadata
entry. Only safetensors is read: pickled ``.pt``/``.ckpt``/``.bin`` files are refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapters import LoraWeights
from .errors import AdapterError
from .fileutil import atomic_write
from .textual_inversion import TokenEmbeddings

FORMAT_NAME = "cav-adapter"
FORMAT_VERSION = 1
METADATA_KEY = "cav_adapter"
LORA_PREFIX = "unet."
TI_KEY = "textual_inversion.embeddings"
ADAPTER_EXTENSIONS = (".safetensors", ".sft")


@dataclass(frozen=True, eq=False)
class AdapterFile:
    """What one file holds. ``kind`` is 'temporal_lora', 'spatial_lora' or 'absorber'."""

    kind: str
    lora: LoraWeights | None = None
    tokens: TokenEmbeddings | None = None
    base_model: str = ""
    info: dict = field(default_factory=dict)
    base_model_name: str = ""  # readable name of the base model (base_model is its id)


def _kind_for(lora: LoraWeights | None, tokens: TokenEmbeddings | None, kind: str | None) -> str:
    if kind:
        return kind
    if tokens is not None:
        return "absorber"
    if lora is None:
        raise AdapterError("nothing to save: neither LoRA weights nor token embeddings")
    return f"{lora.role}_lora"


def save_adapter(path: str | os.PathLike, adapter: AdapterFile, overwrite: bool = False,
                 unique: bool = False, numbered: bool = False) -> Path:
    """Write ``adapter`` atomically; never replaces an existing file unless ``overwrite``.

    ``unique``: if the name is taken (also by another process while this one writes), the
    file goes to the next free counter name instead; ``numbered``: always to the first free
    counter name (:func:`cav_core.fileutil.atomic_write`). The path written is returned."""
    if Path(path).suffix.lower() not in ADAPTER_EXTENSIONS:
        raise AdapterError(f"cannot save the adapter as {path}: adapters are .safetensors files; give a name "
                           f"ending in .safetensors")
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": adapter.kind,
                  "base_model": adapter.base_model, "info": adapter.info}
    if adapter.base_model_name:
        meta["base_model_name"] = adapter.base_model_name
    if adapter.lora is not None:
        lora = adapter.lora
        for k, v in lora.tensors.items():
            tensors[LORA_PREFIX + k] = v.detach().to("cpu", torch.float32).contiguous()
        alphas = sorted(set(lora.alphas.values()))
        meta["lora"] = {"role": lora.role, "ranks": sorted(lora.ranks), "targets": lora.modules,
                        "alpha": alphas[0] if len(alphas) == 1 else None,
                        "alphas": None if len(alphas) == 1 else dict(lora.alphas),
                        "num_params": lora.num_params}
    if adapter.tokens is not None:
        tensors[TI_KEY] = adapter.tokens.embeddings.detach().to("cpu", torch.float32).contiguous()
        meta["textual_inversion"] = {"tokens": list(adapter.tokens.tokens)}
    if not tensors:
        raise AdapterError("nothing to save: neither LoRA weights nor token embeddings")
    header = {METADATA_KEY: json.dumps(meta), "format": "pt"}

    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), overwrite=overwrite,
                        unique=unique, numbered=numbered)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file, with errors that name the file."""
    from safetensors import safe_open

    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():
        raise AdapterError(f"{p} is not a regular file (a FIFO, socket or device); give a .safetensors file")
    if not p.is_file():
        raise AdapterError(f"adapter file not found: {p}" + (" (it is a folder)" if p.is_dir() else ""))
    if p.suffix.lower() in {".pt", ".pth", ".ckpt", ".bin", ".pkl"}:
        raise AdapterError(f"{p}: pickle-based files are refused for safety (they can run code when "
                           f"loaded); convert it to .safetensors first")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError, dtype errors...: the file is unreadable
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head[:1] == b"\x80" or head == b"PK\x03\x04":
            raise AdapterError(f"{p} is a PyTorch pickle/zip checkpoint named .safetensors; it is refused unread "
                               f"(pickles can run code when loaded): convert it to real .safetensors first") from None
        raise AdapterError(f"{p} is not a readable .safetensors file ({e}); it may be truncated "
                           f"or in another format") from None
    bad = next((k for k, t in tensors.items() if t.is_floating_point()
                and not bool(torch.isfinite(t.float() if t.element_size() < 2 else t).all())), None)
    if bad is not None:
        raise AdapterError(f"{p}: tensor {bad!r} holds NaN or infinite values; the file is damaged (or was saved "
                           f"from a run whose loss diverged): use another copy")
    return tensors, meta


def load_adapter(path: str | os.PathLike) -> AdapterFile:
    """Read a file written by :func:`save_adapter` (third-party formats: see ``convert_lora``)."""
    tensors, header = read_safetensors(path)
    if METADATA_KEY not in header:
        raise AdapterError(f"{path} is not a Customize-A-Video adapter file (no '{METADATA_KEY}' metadata); other "
                           f"LoRA files load as LoRAs (--temporal-lora / --spatial-lora, --absorber, the Load T-LoRA "
                           f"/ Absorber node, or load_any_lora())")
    try:
        return _parse_adapter(path, tensors, header)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise AdapterError(f"{path}: its '{METADATA_KEY}' metadata is damaged or does not match its tensors "
                           f"({type(e).__name__}: {e}); save the adapter again or use another copy") from None


def _parse_adapter(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> AdapterFile:
    meta = json.loads(header[METADATA_KEY])
    if meta.get("kind") not in ("temporal_lora", "spatial_lora", "absorber"):
        raise AdapterError(f"{path}: unknown adapter kind {meta.get('kind')!r} in its metadata; the file is damaged "
                           f"or from a newer pack")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise AdapterError(f"{path} has format version {meta['format_version']}; this pack reads up to "
                           f"{FORMAT_VERSION}: update the pack")
    lora = None
    if "lora" in meta:
        lm = meta["lora"]
        lt = {k[len(LORA_PREFIX):]: v for k, v in tensors.items() if k.startswith(LORA_PREFIX)}
        modules = sorted(k[: -len(".lora_A.weight")] for k in lt if k.endswith(".lora_A.weight"))
        alphas = lm["alphas"] or {m: float(lm["alpha"]) for m in modules}
        alphas = {m: float(alphas[m]) for m in modules}  # every module needs one
        _check_role_of_keys(path, lm["role"], modules)
        lora = LoraWeights(role=lm["role"], tensors=lt, alphas=alphas,
                           base_model=meta.get("base_model", ""), info=meta.get("info", {}))
    tokens = None
    if "textual_inversion" in meta:
        tokens = TokenEmbeddings(tuple(meta["textual_inversion"]["tokens"]), tensors[TI_KEY])
    return AdapterFile(kind=meta["kind"], lora=lora, tokens=tokens,
                       base_model=meta.get("base_model", ""), info=meta.get("info", {}),
                       base_model_name=str(meta.get("base_model_name", "")))


def _check_role_of_keys(path: str | os.PathLike, role: str, modules: list[str]) -> None:
    """The role the metadata states must be the role of the layers the file adapts: a
    mislabeled file would put a motion LoRA on the spatial layers (or the reverse)."""
    import re

    from .layers import ROLE_REGEX

    found = {r for m in modules for r, rx in ROLE_REGEX.items() if re.fullmatch(rx, m)}
    if role in ROLE_REGEX and found and found != {role}:
        layers = " and ".join(sorted(found))
        raise AdapterError(f"{path}: its metadata says it is a {role} LoRA, but it adapts {layers} attention "
                           f"layers; the file is damaged or mislabeled: save it again or use another copy")

