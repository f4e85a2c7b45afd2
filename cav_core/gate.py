"""The sampling-time LoRA gate: on which timesteps and guidance branches each of a
handle's LoRAs acts (used by the sampler, :mod:`cav_core.sample`, through
:meth:`cav_core.handle.ModelHandle.applied_by_timestep`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .adapters import LoraSwitch, LoraWeights
from .defaults import profile_for, timestep_from_fraction
from .errors import InputError

if TYPE_CHECKING:
    from .components import T2VComponents


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
