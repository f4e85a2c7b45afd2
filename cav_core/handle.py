"""The immutable model handle (docs/DESIGN.md §2): the shared base components plus a
record of what is applied (LoRAs with strengths, textual-inversion tokens, temporal bypass).

``with_*`` methods and :func:`with_adapter` return new handles; nothing touches the base
weights except inside :meth:`ModelHandle.applied`, which attaches the adapters for one call
and removes them. Loading a folder into a handle is :mod:`cav_core.model`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from .adapters import LoraWeights, check_fits, switchable_loras
from .components import T2VComponents, base_model_note
from .errors import InputError
from .gate import AppliedLora, StepLoras, check_min_timestep, default_timesteps
from .layers import bypass_temporal
from .textual_inversion import TokenEmbeddings

if TYPE_CHECKING:
    from .adapter_files import AdapterFile


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """Base components + what is applied to them. Immutable: ``with_*`` returns a new handle.

    Like ComfyUI's ``ModelPatcher.clone()``: branches of a graph can hold different
    handles over the same base weights."""

    base: T2VComponents
    loras: tuple[AppliedLora, ...] = ()
    tokens: tuple[TokenEmbeddings, ...] = ()
    bypass_temporal: bool = False

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


#: What each LoRA role is called in messages.
_ROLE_NAMES = {"temporal": "T-LoRA", "spatial": "spatial LoRA"}


def with_adapter(handle: ModelHandle, adapter: AdapterFile, strength: float = 1.0, role: str | None = None, *,
                 name: str = "", min_timestep: int | None = None, cond_only_from: int | None = None,
                 what: str = "", fix: str = "", warn: Callable[[str], None] | None = None) -> ModelHandle:
    """``handle`` + an adapter file's LoRA at ``strength`` and its textual-inversion tokens: the
    one way nodes, the CLI and training apply a file (docs/DESIGN.md §2).

    ``role``: the LoRA role the caller takes (None: any, and a file without a LoRA); another
    is refused naming ``what`` (the input, flag or file; default ``name``) and ``fix``, and
``what`` labels the other messages too. The LoRA is
    checked against the model now, so a misfit is reported where it is applied and not later
    in the sampler. An adapter trained on other weights of a fitting model is applied, with
    a note to ``warn`` (default: :func:`warnings.warn`). ``min_timestep`` and
    ``cond_only_from`` None: the model's defaults for the LoRA's kind
    (:func:`cav_core.gate.default_timesteps`)."""
    what = what or name or "the adapter"
    if role is not None and (adapter.lora is None or adapter.lora.role != role):
        raise InputError(f"{what} is a {adapter.kind}, not a {_ROLE_NAMES[role]}" + (f"; {fix}" if fix else ""))
    if adapter.lora is not None:
        check_fits(handle.base.unet, adapter.lora, label=what)
    note = base_model_note(handle.base, adapter.base_model, adapter.base_model_name, what)
    if note:
        if warn is None:
            warnings.warn(note, stacklevel=3)  # at the caller of the node/CLI/training function
        else:
            warn(note)
    new = handle
    if adapter.lora is not None:
        new = new.with_lora(adapter.lora, strength, name, min_timestep=min_timestep, cond_only_from=cond_only_from)
    if adapter.tokens is not None:
        new = new.with_tokens(adapter.tokens)
    return new
