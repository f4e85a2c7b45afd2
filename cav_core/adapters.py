"""LoRA adapters on the UNet, through peft: create for training, attach for a call, detach.

Adapters live outside the model as plain tensors (:class:`LoraWeights`) and are put onto
the shared UNet only for the duration of a sample / train / invert call
(:func:`switchable_loras`), then removed, so the base weights and every cached model
handle stay valid (docs/DESIGN.md §2). peft owns the LoRA layers and their scaling; this module
owns naming, validation, clean removal and the merged mode used for sampling (strength·ΔW
folded into the weights for one call).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import AdapterError
from .layers import role_modules

ROLES = ("temporal", "spatial")


@dataclass(frozen=True, eq=False)
class LoraWeights:
    """A LoRA as data: ``tensors`` maps ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``
    (peft naming, module names relative to the UNet) to tensors; ``alphas`` gives each
    module's alpha (uniform for our own files, per module for some third-party ones)."""

    role: str
    tensors: Mapping[str, torch.Tensor]
    alphas: Mapping[str, float]
    base_model: str = ""
    info: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise AdapterError(f"LoRA role must be one of {ROLES}, got {self.role!r}")
        missing = [m for m in self.modules if f"{m}.lora_B.weight" not in self.tensors]
        if missing:
            raise AdapterError(f"LoRA has lora_A but no lora_B for module {missing[0]!r}")

    @property
    def modules(self) -> list[str]:
        return sorted(k[: -len(".lora_A.weight")] for k in self.tensors if k.endswith(".lora_A.weight"))

    def rank(self, module: str) -> int:
        return int(self.tensors[f"{module}.lora_A.weight"].shape[0])

    @property
    def ranks(self) -> set[int]:
        return {self.rank(m) for m in self.modules}

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def delta(self, module: str) -> torch.Tensor:
        """ΔW = alpha/r · B·A of one module, in fp32 (what a merge adds at strength 1)."""
        a = self.tensors[f"{module}.lora_A.weight"].float()
        b = self.tensors[f"{module}.lora_B.weight"].float()
        return (b @ a) * (self.alphas[module] / a.shape[0])


def _exact(names: Sequence[str]) -> str:
    """A peft ``target_modules`` regex that matches exactly these module names."""
    return "|".join(re.escape(n) for n in names)


def _lora_config(modules: Sequence[str], rank: int, alpha: float, dropout: float = 0.0,
                 rank_pattern: Mapping[str, int] | None = None,
                 alpha_pattern: Mapping[str, float] | None = None):
    from peft import LoraConfig

    # peft pattern keys are regexes matched against the module name suffix; escaping
    # the full names makes them exact.
    return LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=_exact(modules),
        rank_pattern={re.escape(k): v for k, v in (rank_pattern or {}).items()},
        alpha_pattern={re.escape(k): v for k, v in (alpha_pattern or {}).items()},
        init_lora_weights=True,
    )


def check_fits(unet: nn.Module, lora: LoraWeights, label: str = "LoRA") -> None:
    """Raise :class:`AdapterError` naming the first module that is absent or whose shape
    differs; nothing in ``unet`` is touched."""
    for m in lora.modules:
        try:
            layer = unet.get_submodule(m)
        except AttributeError:
            raise AdapterError(f"{label} does not fit this model: module {m!r} does not exist in the UNet "
                               f"(is the file for another architecture?)") from None
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        if not isinstance(base, nn.Linear):
            raise AdapterError(f"{label} does not fit this model: {m!r} is a {type(base).__name__}, not Linear")
        a = lora.tensors[f"{m}.lora_A.weight"]
        b = lora.tensors[f"{m}.lora_B.weight"]
        want_a = (a.shape[0], base.in_features)
        want_b = (base.out_features, a.shape[0])
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise AdapterError(
                f"{label} does not fit this model: first mismatching module {m!r}: LoRA shapes "
                f"A{tuple(a.shape)} B{tuple(b.shape)}, model layer is Linear({base.in_features} -> "
                f"{base.out_features}); the file was trained for a model with other layer sizes")


def _inject(unet: nn.Module, lora: LoraWeights, adapter_name: str) -> None:
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    modules = lora.modules
    ranks = {m: lora.rank(m) for m in modules}
    rank = max(set(ranks.values()), key=list(ranks.values()).count)
    alpha = max(set(lora.alphas.values()), key=list(lora.alphas.values()).count)
    config = _lora_config(
        modules, rank, alpha,
        rank_pattern={m: r for m, r in ranks.items() if r != rank},
        alpha_pattern={m: a for m, a in lora.alphas.items() if a != alpha},
    )
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    ref = next(unet.parameters())
    state = {k: v.to(device=ref.device, dtype=torch.float32) for k, v in lora.tensors.items()}
    result = set_peft_model_state_dict(unet, state, adapter_name=adapter_name)
    unexpected = [k for k in result.unexpected_keys if adapter_name in k or "lora_" in k]
    if unexpected:
        raise AdapterError(f"LoRA tensors not loaded into the model: {unexpected[:3]}")


def lora_layers(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer)]


def remove_all_loras(unet: nn.Module) -> None:
    """Replace every peft LoRA wrapper by the original layer object it wraps (diffusers'
    ``recurse_remove_peft_layers``).

    The wrapped layer is the very module that was there before injection, so when no
    merge happened the model is bit-identical to the base afterwards."""
    from diffusers.utils.peft_utils import recurse_remove_peft_layers

    recurse_remove_peft_layers(unet)
    # inject_adapter_in_model records its configs in ``unet.peft_config``; drop it so the next
    # injection starts clean. No public function does this for a model without diffusers'
    # PeftAdapterMixin (UNet3DConditionModel has none): peft.functional.delete_adapter leaves
    # the config by design, and PeftAdapterMixin.unload_lora is a method of that mixin.
    if "peft_config" in vars(unet):
        del unet.peft_config


def _set_strengths(unet: nn.Module, strengths: Mapping[str, float]) -> None:
    """Activate the named frozen adapters at their strengths (diffusers'
    ``set_weights_and_activate_adapters``), keeping them frozen: peft's activation makes the
    active adapters trainable."""
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters
    from peft.functional import set_requires_grad

    names = list(strengths)
    set_weights_and_activate_adapters(unet, names, [float(strengths[n]) for n in names])
    set_requires_grad(unet, names, requires_grad=False)


class LoraSwitch:
    """Frozen LoRAs attached to a UNet for one call (see :func:`switchable_loras`).

    ``set_active`` turns single LoRAs off and on again between forwards: the sampler uses it
    to apply each LoRA only on its noise levels and guidance branches. Merged, a switch
    rewrites the touched weights (about 1 ms for a T-LoRA on the toy model, against ~60 ms a
    sampling step)."""

    def __init__(self, unet: nn.Module, loras: Sequence[tuple[LoraWeights, float]], merge: bool) -> None:
        self.unet, self.loras, self.merge = unet, list(loras), merge
        self.active = [True] * len(self.loras)
        self._saved: dict[str, tuple[nn.Module, torch.Tensor]] = {}
        self._names: list[str] = []

    def attach(self) -> None:
        if self.merge:
            with torch.no_grad():
                for m in {m for lora, _ in self.loras for m in lora.modules}:
                    layer = self.unet.get_submodule(m)
                    self._saved[m] = (layer, layer.weight.detach().clone())
            self._merge()
        else:
            for i, (lora, _) in enumerate(self.loras):
                self._names.append(f"cav{i}_{lora.role}")
                _inject(self.unet, lora, self._names[-1])
            _set_strengths(self.unet, dict(zip(self._names, (s for _, s in self.loras))))

    def _merge(self) -> None:
        # Every active adapter's delta is summed in fp32 first, so fp16 weights are rounded once,
        # and added to the saved base weight, so switching never accumulates rounding error.
        deltas: dict[str, torch.Tensor] = {}
        for (lora, strength), on in zip(self.loras, self.active):
            if not on:
                continue
            for m in lora.modules:
                d = lora.delta(m) * float(strength)
                deltas[m] = deltas[m] + d if m in deltas else d
        with torch.no_grad():
            for m, (layer, base) in self._saved.items():
                w = layer.weight
                if m in deltas:
                    w.copy_((base.float() + deltas[m].to(w.device)).to(w.dtype))
                else:
                    w.copy_(base)

    def set_active(self, active: Sequence[bool]) -> None:
        active = [bool(a) for a in active]
        if len(active) != len(self.loras):
            raise AdapterError(f"set_active needs {len(self.loras)} flags, got {len(active)}")
        if active == self.active:
            return
        self.active = active
        if self.merge:
            self._merge()
        else:
            _set_strengths(self.unet, {name: (strength if on else 0.0)
                                       for name, (_, strength), on in zip(self._names, self.loras, active)})

    def detach(self) -> None:
        remove_all_loras(self.unet)
        with torch.no_grad():
            for layer, weight in self._saved.values():
                layer.weight.copy_(weight)


#: A LoRA's change to a layer larger than this many times the layer's own weights (Frobenius
#: norms, at its strength) is no adaptation but a broken file: it would drive the sample to
#: NaN or to a flat frame. Trained LoRAs stay far below 1 (the toy T-LoRAs: about 0.05).
MAX_DELTA_RATIO = 1e3


def check_delta_sizes(unet: nn.Module, lora: LoraWeights, strength: float, label: str = "LoRA") -> None:
    """Raise :class:`AdapterError` naming ``label`` when the LoRA's strength x delta is absurd
    against a base weight (:data:`MAX_DELTA_RATIO`) or not finite."""
    if strength == 0:
        return
    with torch.no_grad():
        for m in lora.modules:
            a = lora.tensors[f"{m}.lora_A.weight"].double()
            b = lora.tensors[f"{m}.lora_B.weight"].double()
            dn = float(torch.linalg.matrix_norm(b @ a)) * abs(lora.alphas[m] / a.shape[0] * float(strength))
            w = unet.get_submodule(m)
            w = w.get_base_layer() if hasattr(w, "get_base_layer") else w
            wn = max(float(torch.linalg.vector_norm(w.weight.detach().double())), 1e-12)
            if not math.isfinite(dn) or dn > MAX_DELTA_RATIO * wn:
                size = ("not finite" if not math.isfinite(dn)
                        else f"{dn / wn:.3g} times the size of the layer's own weights")
                raise AdapterError(f"{label}: its change to layer {m!r} at strength {strength:g} is {size}, which "
                                   f"can only give a black or garbage video; the file is broken: use another copy "
                                   f"or train it again")


@contextlib.contextmanager
def switchable_loras(unet: nn.Module, loras: Sequence[tuple[LoraWeights, float]],
                     merge: bool = False, names: Sequence[str] = ()) -> Iterator[LoraSwitch]:
    """Attach frozen LoRAs (each with a strength) to ``unet`` for the block, then remove them.

    Strength scales the LoRA's delta: 0 is off, negative and > 1 are allowed.

    Unmerged, each LoRA is a peft layer (strengths could change between forwards). With
    ``merge`` (sampling: strengths are fixed for the call) the sum of strength·ΔW is folded
    into the touched base weights, the same ``W + s·(alpha/r)·B·A`` that peft's merge
    computes, but without building peft layers only to drop them again: that injection cost
    ~0.1 s per adapter per call, more than a whole denoising step of a small model. The
    touched weights are saved first and copied back on exit, so the base stays
    bit-identical instead of carrying unmerge rounding error.
    """
    for i, (lora, strength) in enumerate(loras):
        label = (names[i] if i < len(names) and names[i] else "") or f"LoRA #{i + 1} ({lora.role})"
        check_fits(unet, lora, label=label)
        check_delta_sizes(unet, lora, strength, label=label)
    if lora_layers(unet):
        raise AdapterError("the UNet already carries LoRA layers; nested attach is not supported")
    switch = LoraSwitch(unet, loras, merge)
    try:
        switch.attach()
        yield switch
    finally:
        switch.detach()


def add_trainable_lora(unet: nn.Module, role: str, rank: int, alpha: float,
                       adapter_name: str, dropout: float = 0.0,
                       modules: Sequence[str] | None = None) -> list[nn.Parameter]:
    """Inject a fresh, trainable LoRA on the ``role``'s modules (or on ``modules``, Linear
    layers of that role); return its parameters.

    peft initialises B to zero, so the model's output is unchanged until training moves it."""
    from peft.functional import cast_adapter_dtype, inject_adapter_in_model, set_adapter, set_requires_grad

    modules = role_modules(unet, role) if modules is None else list(modules)
    if not modules:
        raise AdapterError(f"the UNet has no {role} attention layers to adapt")
    if rank < 1:
        raise AdapterError(f"LoRA rank must be >= 1, got {rank}")
    frozen = sorted({n for _, layer in lora_layers(unet) for n in layer.active_adapters})
    inject_adapter_in_model(_lora_config(modules, rank, alpha, dropout), unet, adapter_name=adapter_name)
    if frozen:
        # peft makes the new adapter the only active one everywhere; keep the frozen
        # adapters already attached active (and frozen) as they were.
        set_adapter(unet, frozen + [adapter_name])
        set_requires_grad(unet, frozen, requires_grad=False)
    cast_adapter_dtype(unet, adapter_name)  # LoRA weights train in fp32 even under autocast
    set_requires_grad(unet, adapter_name, requires_grad=True)
    return [p for _, layer in lora_layers(unet) if adapter_name in layer.lora_A
            for p in (layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight)]


def extract_lora(unet: nn.Module, adapter_name: str, role: str, base_model: str = "",
                 info: Mapping[str, object] | None = None) -> LoraWeights:
    """Copy a trained adapter out of the model as :class:`LoraWeights` (CPU, fp32)."""
    tensors: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for name, layer in lora_layers(unet):
        if adapter_name not in layer.lora_A:
            continue
        tensors[f"{name}.lora_A.weight"] = layer.lora_A[adapter_name].weight.detach().float().cpu().clone()
        tensors[f"{name}.lora_B.weight"] = layer.lora_B[adapter_name].weight.detach().float().cpu().clone()
        alphas[name] = float(layer.lora_alpha[adapter_name])
    if not tensors:
        raise AdapterError(f"no adapter named {adapter_name!r} in the model")
    return LoraWeights(role=role, tensors=tensors, alphas=alphas, base_model=base_model, info=dict(info or {}))
