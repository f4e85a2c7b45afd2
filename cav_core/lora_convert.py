"""Third-party LoRA files as :class:`~cav_core.adapter_files.AdapterFile` for the T2V UNet.

Users own LoRAs in several layouts; all become one :class:`LoraWeights` keyed by module
names of the diffusers ``UNet3DConditionModel``:

* our own files (``cav_adapter`` metadata): read by :func:`adapter_files.load_adapter`;
* kohya / A1111 (``lora_unet_<module_with_underscores>.lora_down.weight``, ``.lora_up``,
  ``.alpha``): the underscores are resolved against the real module names, since names
  such as ``transformer_blocks`` or ``to_out_0`` cannot be split by rule;
* diffusers / peft (``unet.<module>.lora_A.weight``, ``<module>.lora.down.weight``,
  the old attention-processor ``...attn1.processor.to_q_lora.down.weight``, an optional
  ``base_model.model.`` prefix);
* MotionDirector / cloneofsimo "safeloras" (``unet:<i>:up`` / ``unet:<i>:down`` with the
  targeted block classes in the metadata): the index is the position in the order the
  training code walked the model, which this module replays on the target UNet.

SD 2.x spatial layer names equal the spatial layer names of UNet3DConditionModel, which
is why a style LoRA for SD 2.1 applies as a spatial LoRA here. Tensors that do not apply
(text encoder, feed-forward, conv layers, layers this model lacks) are counted and
reported in one warning and in ``info["skipped"]``, never dropped silently. A file for
another architecture (SD 1.x, SDXL, DiT models) is refused: its layers do not fit.
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter_files import METADATA_KEY, AdapterFile, load_adapter, read_safetensors
from .adapters import ROLES, LoraWeights, check_fits
from .errors import AdapterError, CavError
from .layers import role_modules

# --------------------------------------------------------------------------- key grammar

_KOHYA = re.compile(r"^lora_(unet|te\d*)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_SAFELORAS = re.compile(r"^([^.:]+):(\d+):(up|down)$")
_ATTN_PROCS = re.compile(r"^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_SUFFIXES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\.lora_A(?:\.[^.]+)?\.weight$"), "A"),  # peft; an adapter name may sit in between
    (re.compile(r"\.lora_B(?:\.[^.]+)?\.weight$"), "B"),
    (re.compile(r"\.lora_down\.weight$"), "A"),
    (re.compile(r"\.lora_up\.weight$"), "B"),
    (re.compile(r"\.lora(?:_linear_layer)?\.down\.weight$"), "A"),  # diffusers LoRACompatibleLinear
    (re.compile(r"\.lora(?:_linear_layer)?\.up\.weight$"), "B"),
    (re.compile(r"\.alpha$"), "alpha"),
)
_TEXT_PREFIXES = ("text_encoder.", "text_encoder_2.", "te.", "te1.", "te2.", "text_model.")
_LYCORIS = re.compile(r"\.(hada_|lokr_|oft_|lokr|diag_oft|w_norm|b_norm|bias_indices|bias_values)")
_DORA = re.compile(r"(dora_scale|lora_magnitude_vector)")
_LDM_NAMES = re.compile(r"(?:^|[._])(input_blocks|middle_block|output_blocks)[._]")

#: Cross-attention widths of the model families a LoRA file is likely to come from.
_CROSS_DIMS = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x / ModelScope / ZeroScope",
               2048: "SDXL", 4096: "a T5-conditioned model (e.g. PixArt)"}

# Reasons a tensor does not apply; the labels are what the user reads.
SKIP_TEXT = "text-encoder layers"
SKIP_FF = "feed-forward (ff) layers"
SKIP_PROJ = "proj_in/proj_out layers"
SKIP_OTHER_UNET = "other UNet layers (convs, resnets, embeddings)"
SKIP_MISSING = "layers this model does not have"
SKIP_LDM = "layers with original-SD (LDM) names, not mapped"
SKIP_INCOMPLETE = "incomplete pairs (down without up or the reverse)"
SKIP_NOT_LORA = "non-LoRA tensors (LyCORIS LoHa/LoKr/OFT or unknown keys)"


def _skip_other_role(role: str) -> str:
    return f"{role} attention layers (load the file with role='{role}' for those)"


# --------------------------------------------------------------------------- target model

@functools.lru_cache(maxsize=1)
def _default_unet() -> nn.Module:
    """The diffusers default UNet3DConditionModel (= ModelScope 1.7B layout) on the meta
    device: names and layer shapes to map and check against, with no weights in memory."""
    from diffusers import UNet3DConditionModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            return UNet3DConditionModel()


def _cross_dim(unet: nn.Module) -> int | None:
    config = getattr(unet, "config", None)
    dim = getattr(config, "cross_attention_dim", None) if config is not None else None
    return int(dim) if isinstance(dim, int) else None


# --------------------------------------------------------------------------- helpers

def _guess_architecture(keys: list[str], tensors: Mapping[str, torch.Tensor],
                        want_cross: int | None) -> str | None:
    """What model a file was made for, when that is visibly not this one; else None."""
    if any(k.startswith(("lora_te2_", "text_encoder_2.", "te2.")) or ".text_encoder_2." in k for k in keys):
        return "SDXL (it has layers for a second text encoder)"
    if any("add_embedding" in k or "label_emb" in k for k in keys):
        return "SDXL (it adapts SDXL's added-condition embedding)"
    if any(k.startswith("lora_transformer_") or re.search(r"(double_blocks|single_blocks|single_transformer_blocks|"
                                                          r"joint_blocks|joint_attention)", k) for k in keys):
        return "a diffusion-transformer model (Flux / SD3 family)"
    if want_cross is None:
        return None
    for k in keys:
        temporal = "temp_attentions" in k or "transformer_in" in k
        if temporal or not re.search(r"attn2[._](?:processor[._])?to_[kv]", k):
            continue
        if not re.search(r"(lora_down|lora_A|lora\.down|lora_linear_layer\.down|_lora\.down)", k):
            continue
        t = tensors[k]
        if t.ndim == 2 and int(t.shape[1]) != want_cross:
            d = int(t.shape[1])
            return (f"{_CROSS_DIMS.get(d, 'another model')} (its cross-attention input width is {d}, "
                    f"this model's is {want_cross})")
    return None


def _alpha_config(path: Path | None, header: Mapping[str, str]) -> tuple[float | None, dict[str, float]]:
    """lora_alpha (and per-module alpha_pattern) from diffusers' ``lora_adapter_metadata``
    header or a peft ``adapter_config.json`` beside the file; (None, {}) when neither."""
    raw = header.get("lora_adapter_metadata")
    if raw:
        try:
            meta = json.loads(raw)
            alpha = meta.get("unet.lora_alpha")
            return (float(alpha) if alpha is not None else None), dict(meta.get("unet.alpha_pattern") or {})
        except (ValueError, TypeError, AttributeError):
            pass
    if path is not None and (path.parent / "adapter_config.json").is_file():
        try:
            cfg = json.loads((path.parent / "adapter_config.json").read_text())
            alpha = cfg.get("lora_alpha")
            return (float(alpha) if alpha is not None else None), dict(cfg.get("alpha_pattern") or {})
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    return None, {}


def _pattern_alpha(module: str, patterns: Mapping[str, float]) -> float | None:
    for pat, a in patterns.items():
        if re.match(rf"(.*\.)?({pat})$", module):  # peft's own matching rule
            return float(a)
    return None


def _module_kind(name: str) -> str:
    parts = name.split(".")
    if "ff" in parts:
        return SKIP_FF
    if parts[-1] in ("proj_in", "proj_out"):
        return SKIP_PROJ
    return SKIP_OTHER_UNET


def cloneofsimo_order(unet: nn.Module, classes: list[str]) -> list[str]:
    """Module names in the order cloneofsimo-style LoRA code (MotionDirector) walks them:
    every instance of ``classes`` in ``named_modules`` order, then its Linear layers;
    with Transformer2DModel only ``attn1``/``ff`` layers, with TransformerTemporalModel
    only ``attn1``/``attn2``/``ff`` layers (MotionDirector's own filter)."""
    wanted = set(classes)
    keep: tuple[str, ...] | None = None
    if "Transformer2DModel" in wanted:
        keep = ("attn1", "ff")
    if "TransformerTemporalModel" in wanted:
        keep = ("attn1", "attn2", "ff")
    order = []
    for name, module in unet.named_modules():
        if type(module).__name__ not in wanted:
            continue
        for sub, layer in module.named_modules():
            if not isinstance(layer, nn.Linear) or not sub:
                continue
            if keep is not None and not any(k in sub for k in keep):
                continue
            order.append(f"{name}.{sub}" if name else sub)
    return order


# --------------------------------------------------------------------------- parsing

class _Entry(dict):
    """'A' / 'B' / 'alpha' tensors of one source layer."""


def _parse_keyed(tensors: Mapping[str, torch.Tensor], names: set[str],
                 underscored: Mapping[str, str]) -> tuple[dict[str, _Entry], Counter, str]:
    """Group keys of the kohya / diffusers / peft layouts by UNet module name.

    Returns {module: entry}, counts of skipped layers by reason, and the layout name."""
    entries: dict[str, _Entry] = {}
    skipped_layers: dict[str, set[str]] = {}
    layouts: Counter = Counter()

    def skip(reason: str, layer: str) -> None:
        skipped_layers.setdefault(reason, set()).add(layer)

    for key, value in tensors.items():
        if _LYCORIS.search(key):
            skip(SKIP_NOT_LORA, key.rsplit(".", 1)[0])
            continue
        m = _KOHYA.match(key)
        if m:
            layouts["kohya"] += 1
            scope, flat, part = m.groups()
            part = {"lora_down.weight": "A", "lora_up.weight": "B", "alpha": "alpha"}[part]
            if scope != "unet":
                skip(SKIP_TEXT, flat)
                continue
            module = underscored.get(flat)
            if module is None:
                skip(SKIP_LDM if _LDM_NAMES.search("_" + flat) else SKIP_MISSING, flat)
                continue
        else:
            m = _ATTN_PROCS.match(key)
            if m:
                layouts["diffusers (attention processors)"] += 1
                base, proj, updown = m.groups()
                module = f"{base}.{proj}.0" if proj == "to_out" else f"{base}.{proj}"
                part = "A" if updown == "down" else "B"
            else:
                for rx, part in _SUFFIXES:
                    if rx.search(key):
                        module = rx.sub("", key)
                        break
                else:
                    skip(SKIP_NOT_LORA, key)
                    continue
                layouts["diffusers/peft"] += 1
            if module.startswith("base_model.model."):
                module = module[len("base_model.model."):]
            if module.startswith(_TEXT_PREFIXES):
                skip(SKIP_TEXT, module)
                continue
            if module.startswith("unet."):
                module = module[len("unet."):]
            if module not in names:
                skip(SKIP_LDM if _LDM_NAMES.search(module) else SKIP_MISSING, module)
                continue
        entry = entries.setdefault(module, _Entry())
        if part in entry:
            raise AdapterError(f"the file holds two {part} tensors for layer {module!r} (keys in two layouts?); "
                               f"it is malformed: re-export it from the tool that trained it")
        entry[part] = value
    layout = layouts.most_common(1)[0][0] if layouts else "unknown"
    return entries, Counter({r: len(v) for r, v in skipped_layers.items()}), layout


def _parse_safeloras(tensors: Mapping[str, torch.Tensor], header: Mapping[str, str],
                     unet: nn.Module, source: str) -> tuple[dict[str, _Entry], Counter]:
    groups: dict[str, dict[int, _Entry]] = {}
    for key, value in tensors.items():
        m = _SAFELORAS.match(key)
        if not m:
            continue
        name, idx, updown = m.group(1), int(m.group(2)), m.group(3)
        groups.setdefault(name, {}).setdefault(idx, _Entry())["A" if updown == "down" else "B"] = value
    entries: dict[str, _Entry] = {}
    skipped: Counter = Counter()
    for name, layers in groups.items():
        try:
            classes = list(json.loads(header[name]))
        except (KeyError, ValueError, TypeError):
            raise AdapterError(f"{source}: the MotionDirector/cloneofsimo LoRA part {name!r} has no list of "
                               f"targeted block classes in its metadata, so its layers cannot be placed; "
                               f"re-export it with that tool's convert_loras_to_safeloras") from None
        if name.startswith("text") or "CLIPAttention" in classes:
            skipped[SKIP_TEXT] += len(layers)
            continue
        order = cloneofsimo_order(unet, classes)
        if sorted(layers) != list(range(len(order))):
            raise AdapterError(
                f"{source}: the LoRA part {name!r} holds {len(layers)} layers for {'/'.join(classes)} but this "
                f"model has {len(order)} such layers; it was trained for a model with another layout "
                f"(MotionDirector LoRAs fit ModelScope / ZeroScope)")
        for i, module in enumerate(order):
            entries[module] = layers[i]
    return entries, skipped


# --------------------------------------------------------------------------- conversion

def convert_lora(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                 unet: nn.Module | None = None, role: str = "spatial", source: str = "LoRA file",
                 path: str | os.PathLike | None = None) -> AdapterFile:
    """Convert the tensors of a third-party LoRA file (see module doc for the layouts).

    ``unet`` is the model it will be applied to (default: the ModelScope layout, built
    on the meta device); names and shapes are checked against it. ``role`` picks which
    layers to keep: 'spatial' (SD-style LoRAs, absorbers), 'temporal' (MotionDirector),
    or 'auto' (whichever the file holds). Layers that do not apply are reported in one
    UserWarning and counted in ``info["skipped"]``.
    """
    if role not in (*ROLES, "auto"):
        raise AdapterError(f"LoRA role must be one of {(*ROLES, 'auto')}, got {role!r}")
    header = dict(metadata or {})
    target = unet if unet is not None else _default_unet()
    keys = list(tensors)
    if not keys:
        raise AdapterError(f"{source} holds no tensors")
    dora = next((k for k in keys if _DORA.search(k)), None)
    if dora:
        raise AdapterError(f"{source} is a DoRA LoRA (key {dora!r}); DoRA's magnitude vectors are not supported, "
                           f"use a plain LoRA")
    arch = _guess_architecture(keys, tensors, _cross_dim(target))
    if arch:
        model = "this model" if unet is not None else "ModelScope / ZeroScope (whose spatial layers match SD 2.x)"
        raise AdapterError(f"{source} looks like a LoRA for {arch}; its layers do not fit {model}. "
                           f"Use a LoRA made for Stable Diffusion 2.x (512/768 px) or for this model.")

    module_names = {n for n, _ in target.named_modules() if n}
    if any(_SAFELORAS.match(k) for k in keys):
        entries, skipped = _parse_safeloras(tensors, header, target, source)
        layout = "motiondirector (cloneofsimo safeloras)"
    else:
        underscored = {n.replace(".", "_"): n for n in module_names}
        entries, skipped, layout = _parse_keyed(tensors, module_names, underscored)

    by_role = {r: set(role_modules(target, r)) for r in ROLES}
    found = {r: [m for m in entries if m in by_role[r]] for r in ROLES}
    if role == "auto":
        have = [r for r in ROLES if found[r]]
        if len(have) > 1:
            raise AdapterError(f"{source} holds both temporal ({len(found['temporal'])}) and spatial "
                               f"({len(found['spatial'])}) attention layers; load it with role='temporal' or "
                               f"role='spatial' to pick one")
        role = have[0] if have else "spatial"
    other = "temporal" if role == "spatial" else "spatial"
    if not found[role] and found[other]:
        raise AdapterError(f"{source} is a {other} LoRA ({len(found[other])} {other} attention layers, no {role} "
                           f"ones); load it as a {other} LoRA (role='{other}')")

    alpha_default, alpha_patterns = _alpha_config(Path(path) if path else None, header)
    out: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for module, entry in sorted(entries.items()):
        if module not in by_role[role]:
            skipped[_skip_other_role(other) if module in by_role[other] else _module_kind(module)] += 1
            continue
        if "A" not in entry or "B" not in entry:
            skipped[SKIP_INCOMPLETE] += 1
            continue
        a, b = entry["A"], entry["B"]
        if a.ndim != 2 or b.ndim != 2:
            raise AdapterError(f"{source}: layer {module!r} has LoRA tensors of shapes {tuple(a.shape)} / "
                               f"{tuple(b.shape)}, but it is a Linear layer (2-D tensors expected); the file "
                               f"was made for another architecture")
        out[f"{module}.lora_A.weight"] = a.detach().float().contiguous()
        out[f"{module}.lora_B.weight"] = b.detach().float().contiguous()
        rank = int(a.shape[0])
        if "alpha" in entry:
            alphas[module] = float(entry["alpha"].float().reshape(-1)[0])
        else:
            # No alpha stored means scale 1 (alpha = rank) in kohya, diffusers and peft alike.
            alpha = _pattern_alpha(module, alpha_patterns)
            alphas[module] = alpha if alpha is not None else (alpha_default if alpha_default is not None else rank)

    summary = dict(sorted(skipped.items()))
    if not out:
        why = "; ".join(f"{n} {r}" for r, n in summary.items()) or "no LoRA tensors recognised"
        raise AdapterError(f"{source}: no layer of this file applies to the {role} attention of this model "
                           f"({why}). Is it a LoRA for a Stable Diffusion 2.x-family UNet?")
    base_model = header.get("ss_sd_model_name") or header.get("ss_base_model_version") or ""
    info: dict[str, Any] = {"source_format": layout, "source_file": source, "converted_layers": len(out) // 2,
                            "skipped": summary}
    lora = LoraWeights(role=role, tensors=out, alphas=alphas, base_model=base_model, info=dict(info))
    check_fits(target, lora, label=source)
    if summary:
        parts = ", ".join(f"{n} {r}" for r, n in summary.items())
        warnings.warn(f"{source}: loaded {len(out) // 2} {role} attention layers; skipped {parts} "
                      f"(they do not apply to a {role} LoRA of this model)", UserWarning, stacklevel=3)
    return AdapterFile(kind=f"{role}_lora", lora=lora, tokens=None, base_model=base_model, info=info)


def load_any_lora(path: str | os.PathLike, unet: nn.Module | None = None, role: str = "spatial") -> AdapterFile:
    """Load a LoRA ``.safetensors`` file of ours or of a third-party tool (kohya/A1111,
    diffusers/peft, MotionDirector) as an :class:`AdapterFile`.

    ``unet``: the UNet it is meant for (checks names and shapes; default: the
    ModelScope/ZeroScope layout). ``role``: 'spatial' (default; SD 2.x style LoRAs),
    'temporal' (MotionDirector T-LoRAs) or 'auto'. Our own files carry their role and
    load as saved. Pickle files (.pt/.ckpt/.bin) are refused unread.
    """
    p = Path(path)
    tensors, header = read_safetensors(p)
    if METADATA_KEY in header:
        adapter = load_adapter(p)
        if unet is not None and adapter.lora is not None:
            check_fits(unet, adapter.lora, label=str(p))
        return adapter
    try:
        return convert_lora(tensors, header, unet=unet, role=role, source=str(p), path=p)
    except CavError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as e:  # e.g. an empty alpha tensor
        raise AdapterError(f"{p}: the LoRA file is malformed ({type(e).__name__}: {e}); re-export it from the "
                           f"tool that made it") from None
