"""Loading a diffusers text-to-video folder and the immutable model handle (docs/DESIGN.md §2).

A folder in the layout of ModelScope ``text-to-video-ms-1.7b`` / ZeroScope v2 holds
``model_index.json`` and ``unet/ text_encoder/ tokenizer/ vae/ scheduler/``. The loader
checks that layout first so a wrong folder fails with a message naming what is missing,
instead of a deep diffusers traceback. The embedded toy model uses exactly this path.

The handle (:class:`ModelHandle`) is the shared base components plus an immutable record
of what is applied (LoRAs with strengths, textual-inversion tokens, temporal bypass).
``with_*`` methods return new handles; nothing touches the base weights except inside
:meth:`ModelHandle.applied`, which attaches the adapters for one call and removes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter_files import TokenEmbeddings
from .adapters import LoraSwitch, LoraWeights, switchable_loras
from .defaults import profile_for, timestep_from_fraction
from .errors import InputError, ModelLoadError
from .layers import bypass_temporal

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


# --------------------------------------------------------------------------- components

@dataclass(frozen=True, eq=False)
class T2VComponents:
    """The shared, frozen parts of a text-to-video model. Never mutated after loading."""

    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    vae: nn.Module
    scheduler_config: Mapping[str, Any]
    model_id: str
    source: str = ""
    name: str = ""  # readable (the folder's name); the identity is model_id

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def describe(self) -> str:
        def n_params(m: nn.Module) -> str:
            return f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f}M params"

        u = self.unet.config
        return "\n".join([
            f"model      {self.name or '?'}  (id {self.model_id}, {self.source or 'in memory'})",
            f"unet       {type(self.unet).__name__}: blocks {tuple(u.block_out_channels)}, "
            f"{n_params(self.unet)}, latent {u.in_channels} ch, sample size {u.sample_size}",
            f"text       {type(self.text_encoder).__name__}: width {self.text_encoder.config.hidden_size}, "
            f"{n_params(self.text_encoder)}; tokenizer {type(self.tokenizer).__name__} "
            f"({len(self.tokenizer)} tokens, max length {self.tokenizer.model_max_length})",
            f"vae        {type(self.vae).__name__}: {self.vae_scale_factor}x down, {n_params(self.vae)}, "
            f"scaling factor {self.vae.config.scaling_factor}",
            f"scheduler  {self.scheduler_config.get('_class_name', '?')}: "
            f"{self.scheduler_config.get('num_train_timesteps')} train steps, "
            f"{self.scheduler_config.get('prediction_type', 'epsilon')} prediction",
            f"device     {self.device}, dtype {str(self.dtype).replace('torch.', '')}",
        ])


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


def split_model_id(model_id: str) -> tuple[str, str] | None:
    """(architecture hash, weights fingerprint) of an id from :func:`_model_id`; None for the
    ids older versions wrote (``name@hash`` of a config that held the path)."""
    parts = model_id.split(".") if isinstance(model_id, str) else []
    if len(parts) == 2 and all(len(x) == 10 and all(c in "0123456789abcdef" for c in x) for x in parts):
        return parts[0], parts[1]
    return None


def base_model_note(components: "T2VComponents", trained_id: str, trained_name: str = "",
                    label: str = "the adapter") -> str | None:
    """A warning when an adapter whose layers fit was trained on other weights of the same
    architecture (or on another config whose layer sizes agree); None when it is the same
    model or the file is too old to tell. Layer sizes are checked elsewhere (a misfit is refused)."""
    if not trained_id or trained_id == components.model_id:
        return None
    old, new = split_model_id(trained_id), split_model_id(components.model_id)
    if old is None or new is None:
        return None  # written by an older version: its id held the folder path, so it cannot be compared
    theirs = f"{trained_name or 'a model'} ({trained_id})"
    ours = f"{components.name or 'this model'} ({components.model_id})"
    if old[0] == new[0]:
        return (f"{label} was trained on {theirs} and this model is {ours}: the same architecture with different "
                f"weights; it applies, but may work less well than on the model it was trained on")
    return (f"{label} was trained on {theirs} and this model is {ours}: another architecture config whose layer "
            f"sizes fit; it applies, but may work less well than on the model it was trained on")


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

    return diffusers.__version__


# --------------------------------------------------------------------------- the handle

@dataclass(frozen=True, eq=False)
class AppliedLora:
    """A LoRA on a handle. ``min_timestep``: the sampler applies it only on noise levels from
    this timestep up (0: every step). ``cond_only_from``: on steps from this timestep up it
    acts on the prompt's branch of classifier-free guidance only (None: never)."""

    lora: LoraWeights
    strength: float
    name: str = ""
    min_timestep: int = 0
    cond_only_from: int | None = None


def check_min_timestep(components: T2VComponents, t: Any, what: str = "min_timestep", allow_end: bool = False) -> int:
    """``t`` as a lowest timestep of ``components``' schedule (training floor or LoRA gate);
    ``allow_end`` also accepts the schedule's length, i.e. no timestep at all."""
    n = components.num_train_timesteps
    top = n if allow_end else n - 1
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= top:
        raise InputError(f"{what} must be an integer in 0..{top} (this model has {n} timesteps), got {t!r}; "
                         f"0 means every noise level" + (f", {n} none" if allow_end else ""))
    return t


def trained_min_timestep(lora: LoraWeights) -> int:
    """The lowest timestep ``lora`` was trained on (``info['min_timestep']``; 0 if not recorded).

    A LoRA trained only on t >= 300 never saw the low-noise steps, and applied there it
    shifts the sample's colors (docs/EXPERIMENTS.md §3), so by default it is never
    applied below that."""
    t = lora.info.get("min_timestep", 0) if isinstance(lora.info, Mapping) else 0
    return t if isinstance(t, int) and not isinstance(t, bool) and t >= 0 else 0


def default_timesteps(components: T2VComponents, lora: LoraWeights) -> tuple[int, int | None]:
    """Where ``lora`` acts by default when sampling: (``min_timestep``, ``cond_only_from``).

    T-LoRAs, by the model's defaults (``gate.*`` in :mod:`cav_core.defaults`): on the toy
    model only on the noisiest 40% of the schedule (or from where they were trained, if
    higher), and there on the prompt's branch of classifier-free guidance only. Guidance then
    compares "prompt + learned motion" with the plain model's unconditional prediction, which
    amplifies the motion where the layout forms; on the lower-noise steps the toy's T-LoRA
    mostly carried the reference's look (its red leaked into other colors), and the gate kept
    the prompt's color as often as the base model does at about the same motion fidelity
    (README "Training defaults"). Measured only on the toy: on other models a T-LoRA acts on
    every step (from its training floor) and both branches, as in the paper. Other LoRAs
    (styles, absorbers): from their recorded training floor (usually every step), in both
    branches."""
    trained = trained_min_timestep(lora)
    if lora.role != "temporal":
        return trained, None
    d, n = profile_for(components), components.num_train_timesteps
    gate = timestep_from_fraction(d["gate.min_timestep_fraction"], n)
    return max(trained, gate), timestep_from_fraction(d["gate.cond_only_fraction"], n)


class StepLoras:
    """Which of a handle's LoRAs act on a sampling step and guidance branch; made by
    :meth:`ModelHandle.applied_by_timestep` for the sampler."""

    def __init__(self, switch: LoraSwitch, loras: Sequence[AppliedLora]) -> None:
        self.switch, self.loras = switch, list(loras)

    def splits(self, t: Any) -> bool:
        """Whether the two guidance branches need different LoRAs at timestep ``t`` (the
        sampler then runs them as two forwards instead of one batch)."""
        t = int(t)
        return any(t >= a.min_timestep and _cond_only(a, t) for a in self.loras)

    def select(self, t: Any, uncond: bool = False) -> None:
        """Switch on the LoRAs that act at ``t`` (on the unconditional branch if ``uncond``)."""
        t = int(t)
        self.switch.set_active([t >= a.min_timestep and not (uncond and _cond_only(a, t)) for a in self.loras])


def _cond_only(a: AppliedLora, t: int) -> bool:
    return a.cond_only_from is not None and t >= a.cond_only_from


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """Base components + what is applied to them. Immutable: ``with_*`` returns a new handle.

    Like ComfyUI's ``ModelPatcher.clone()``: branches of a graph can hold different
    handles over the same base weights."""

    base: T2VComponents
    loras: tuple[AppliedLora, ...] = ()
    tokens: tuple[TokenEmbeddings, ...] = ()
    bypass_temporal: bool = False
    extras: Mapping[str, Any] = field(default_factory=dict)

    def with_lora(self, lora: LoraWeights, strength: float = 1.0, name: str = "",
                  min_timestep: int | None = None, cond_only_from: int | None = None) -> "ModelHandle":
        """``min_timestep``: apply the LoRA only on noise levels from this timestep up when
        sampling. ``cond_only_from``: from this timestep up, apply it to the prompt's guidance
        branch only; the schedule's length (1000) means never. None takes the defaults of
        :func:`default_timesteps`."""
        if not isinstance(strength, (int, float)) or strength != strength or abs(strength) > 100:
            raise InputError(f"LoRA strength must be a finite number in [-100, 100], got {strength!r}")
        default_gate, default_cond_only = default_timesteps(self.base, lora)
        gate = check_min_timestep(self.base, default_gate if min_timestep is None else min_timestep,
                                  "the LoRA's min_timestep")
        if cond_only_from is None:
            cond_only = default_cond_only
        else:
            cond_only = check_min_timestep(self.base, cond_only_from, "the LoRA's cond_only_from", allow_end=True)
            cond_only = None if cond_only == self.base.num_train_timesteps else cond_only
        applied = AppliedLora(lora, float(strength), name, gate, cond_only)
        return dataclasses.replace(self, loras=self.loras + (applied,))

    def with_tokens(self, tokens: TokenEmbeddings) -> "ModelHandle":
        clash = set(tokens.tokens) & {t for te in self.tokens for t in te.tokens}
        if clash:
            raise InputError(f"textual-inversion token(s) {sorted(clash)} are already applied to this model")
        return dataclasses.replace(self, tokens=self.tokens + (tokens,))

    def with_bypass(self, enabled: bool = True) -> "ModelHandle":
        return dataclasses.replace(self, bypass_temporal=bool(enabled))

    def without_adapters(self) -> "ModelHandle":
        return ModelHandle(self.base)

    @property
    def model_id(self) -> str:
        return self.base.model_id

    def describe(self) -> str:
        lines = [self.base.describe()]
        for a in self.loras:
            lines.append(f"lora       {a.name or a.lora.role}: {a.lora.role}, {len(a.lora.modules)} modules, "
                         f"rank {sorted(a.lora.ranks)}, strength {a.strength:g}"
                         + (f", on t >= {a.min_timestep}" if a.min_timestep else "")
                         + (f", prompt branch only on t >= {a.cond_only_from}" if a.cond_only_from is not None else ""))
        for te in self.tokens:
            lines.append(f"tokens     {' '.join(te.tokens)}")
        if self.bypass_temporal:
            lines.append("bypass     temporal layers bypassed (frames are independent images)")
        return "\n".join(lines)

    @contextlib.contextmanager
    def applied(self, merge: bool = False, extra_loras: tuple[AppliedLora, ...] = ()) -> Iterator[nn.Module]:
        """The UNet with this handle's LoRAs attached (all of them, on every timestep) and
        bypass set, for one call.

        ``merge`` folds the LoRAs into the weights (sampling with fixed strengths);
        on exit the base is restored bit-exactly."""
        with self.applied_by_timestep(merge, extra_loras) as (unet, _):
            yield unet

    @contextlib.contextmanager
    def applied_by_timestep(self, merge: bool = False, extra_loras: tuple[AppliedLora, ...] = ()
                            ) -> Iterator[tuple[nn.Module, StepLoras]]:
        """:meth:`applied`, plus a :class:`StepLoras` for a sampler to select, before each
        forward, the LoRAs that act on that step and guidance branch."""
        loras = [a for a in self.loras + extra_loras if a.strength != 0.0]
        with switchable_loras(self.base.unet, [(a.lora, a.strength) for a in loras], merge=merge,
                              names=[a.name for a in loras]) as switch, \
                bypass_temporal(self.base.unet, enabled=self.bypass_temporal):
            yield switch.unet, StepLoras(switch, loras)
