"""Every training and sampling default of the pack, per model family: their one home.

Nodes, the CLI and the core all read these tables; a node widget or CLI flag left at
"default" (None in the core's API) resolves here, for the model it is used with. This
module imports no torch, so the nodes can read it when ComfyUI starts.

Two profiles:

- ``toy``: the embedded toy model (``cav_core/toyworld/model``) and any model of its
  architecture (``cav_core/toyworld/model_config.py``). Its values were measured on the
  toy world of seven colours on black or gray (README "Training defaults"); they are
  toy defaults, not known to carry over to other models.
- ``real``: every other model (ModelScope text-to-video-ms-1.7b, ZeroScope v2, ...).
  Published practice: the Customize-A-Video paper (Ren et al. 2024) and MotionDirector's
  single-video config (showlab/MotionDirector ``configs/config_single_video.yaml``).
  Where neither gives a number the value is conservative and says "chosen, unmeasured".

Every value carries its source string; ``docs/DEFAULTS.md`` is checked against it by
``tests/test_defaults.py``. The toy's findings (the sampling gate, the training floor,
recolor) stay available on real models as explicit settings.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOY = "toy"
REAL = "real"

PAPER = "paper"
MOTIONDIRECTOR = "MotionDirector config"
CHOSEN = "chosen, unmeasured"
TOY_MEASURED = "measured on the toy model"


@dataclass(frozen=True)
class Default:
    """One default value, why it is what it is (``source``) and what it means (``what``)."""

    value: Any
    source: str
    note: str = ""


#: What each key means (the same for both profiles); also the order of tables and ``info``.
KEYS: dict[str, str] = {
    "absorber.steps": "Stage 1 (appearance absorber) training steps",
    "absorber.rank": "S-LoRA rank",
    "absorber.alpha": "S-LoRA alpha (None: equal to the rank, LoRA scale 1)",
    "absorber.lora_lr": "S-LoRA learning rate (AdamW)",
    "absorber.ti_lr": "textual-inversion learning rate (AdamW)",
    "absorber.num_tokens": "textual-inversion tokens",
    "absorber.crop_range": "random patch-crop side, as a fraction of the frame side",
    "absorber.batch_size": "frames (and crops) per absorber step",
    "absorber.crop_pool": "random patch crops made once per run, beside the frames",
    "temporal.steps": "Stage 2 (T-LoRA) training steps",
    "temporal.rank": "T-LoRA rank",
    "temporal.alpha": "T-LoRA alpha (None: equal to the rank, LoRA scale 1)",
    "temporal.lr": "T-LoRA learning rate (AdamW)",
    "temporal.min_timestep": "T-LoRA trains only on timesteps from here up (training floor)",
    "temporal.recolor": "also train on two hue-rotated, recaptioned copies of the clip",
    "temporal.tint_white": "with recolor, tint a white object red first, so that it is rotated too",
    "temporal.rebackground": "also train on the clip's views moved onto the other plain background, recaptioned",
    "temporal.ad_loss": "weight of the appearance-debiased temporal loss (0: off)",
    "temporal.validation_steps": "sampling steps of a validation preview",
    "temporal.validation_guidance": "guidance scale of a validation preview",
    "motiondirector.steps": "MotionDirector baseline: joint training steps",
    "motiondirector.rank": "MotionDirector baseline: rank of its spatial and temporal LoRAs",
    "motiondirector.lr": "MotionDirector baseline: learning rate of both LoRAs (AdamW)",
    "motiondirector.spatial_share": "MotionDirector baseline: share of steps that also train the spatial path",
    "motiondirector.ad_loss": "MotionDirector baseline: weight of its appearance-debiased temporal loss",
    "train.weight_decay": "AdamW weight decay (both stages)",
    "train.checkpoint_every": "steps between training checkpoints",
    "gate.min_timestep_fraction": "sampling: a T-LoRA acts on timesteps from this fraction of the schedule up",
    "gate.cond_only_fraction": "sampling: from this fraction up a T-LoRA acts on the prompt's guidance branch "
                               "only (None: both branches)",
    "sample.steps": "sampling (and DDIM inversion) steps",
    "sample.cfg": "classifier-free guidance scale",
    "sample.scheduler": "sampling scheduler",
    "sample.frames": "frames generated",
    "sample.init_blend": "weight of DDIM-inverted start latents against fresh noise",
    "video.frames": "frames taken from a reference video",
    "video.fps": "rate reference frames are taken at, and videos are written at",
}

_PAPER_RANK_T = "paper: T-LoRA rank 4 (~0.8M parameters on ModelScope)"
_SUITE_12 = "docs/EXPERIMENTS.md §12"
_16_AT_8 = "paper (2 s at 8 fps) and MotionDirector config (n_sample_frames 16, fps 8)"

_MD_SHARE = MOTIONDIRECTOR + " (the spatial path is skipped in 20% of steps)"
_MD_AD = MOTIONDIRECTOR + " (the appearance-debiased loss is added at weight 1)"
TOY_MD_STEPS = 700
TOY_MD_STEPS_SOURCE = ("chosen on the toy: about the wall-clock of the default absorber + T-LoRA "
                       "(0.32 s a step against 0.21 s a T-LoRA step, docs/EXPERIMENTS.md)")

PROFILES: dict[str, dict[str, Default]] = {
    TOY: {
        "absorber.steps": Default(200, "chosen on the toy: Stage 1 in 10-20 s on a CPU"),
        "absorber.rank": Default(1, "paper: S-LoRA rank 1"),
        "absorber.alpha": Default(None, "alpha = rank, as the toy was measured"),
        "absorber.lora_lr": Default(1e-3, "chosen on the toy"),
        "absorber.ti_lr": Default(5e-3, "chosen on the toy: its TI rows move slowly"),
        "absorber.num_tokens": Default(4, "paper: 2-6 tokens"),
        "absorber.crop_range": Default((0.5, 1.0), TOY_MEASURED + ": 0.3-1.0 leaked the reference colour, "
                                                                  "0.5-1.0 did not"),
        "absorber.batch_size": Default(4, "chosen on the toy"),
        "absorber.crop_pool": Default(64, "chosen on the toy"),
        "temporal.steps": Default(2000, TOY_MEASURED + ": with rank 16, both backgrounds and the white tint, the "
                                       "motion suite's dev half at 32 seeds (" + _SUITE_12 + "; 1000 at rank 4 "
                                       "before)"),
        "temporal.rank": Default(16, TOY_MEASURED + ": the extra views need the capacity (§11, §12; the paper's 4 "
                                     "before)"),
        "temporal.alpha": Default(None, "alpha = rank, as the toy was measured"),
        "temporal.lr": Default(2e-3, TOY_MEASURED + " (benchmarks/defaults_sweep.py)"),
        "temporal.min_timestep": Default(300, TOY_MEASURED + " (benchmarks/defaults_sweep.py)"),
        "temporal.recolor": Default(True, TOY_MEASURED + ": fidelity 0.82-0.87 against 0.66-0.75 without"),
        "temporal.tint_white": Default(True, TOY_MEASURED + ": the two white dev references 0.76 against 0.62 "
                                             "without (" + _SUITE_12 + ")"),
        "temporal.rebackground": Default(True, TOY_MEASURED + ": with rank 16, 2000 steps, the white tint and the "
                                               "gate from t 300, dev-half fidelity 0.84 against 0.59, prompt colour "
                                               "272 of 288 against the base's 275 (" + _SUITE_12 + ")"),
        "temporal.ad_loss": Default(0.0, TOY_MEASURED + ": on the dev half weight 1 gave fidelity 0.58, the same as "
                                         "off, and prompt colour 92% against 93% (docs/EXPERIMENTS.md §10)"),
        "temporal.validation_steps": Default(20, CHOSEN),
        "temporal.validation_guidance": Default(7.5, CHOSEN),
        "motiondirector.steps": Default(TOY_MD_STEPS, TOY_MD_STEPS_SOURCE),
        "motiondirector.rank": Default(32, MOTIONDIRECTOR + " (lora_rank 32), kept on the toy"),
        "motiondirector.lr": Default(5e-4, MOTIONDIRECTOR + " (learning_rate 5e-4), kept on the toy"),
        "motiondirector.spatial_share": Default(0.8, _MD_SHARE),
        "motiondirector.ad_loss": Default(1.0, _MD_AD),
        "train.weight_decay": Default(1e-2, MOTIONDIRECTOR + " (adam_weight_decay 1e-2)"),
        "train.checkpoint_every": Default(50, MOTIONDIRECTOR + " (checkpointing_steps 50)"),
        "gate.min_timestep_fraction": Default(0.3, TOY_MEASURED + ": with the T-LoRA defaults of " + _SUITE_12
                                                   + ", acting from t 300 on both branches below 600 raised the dev "
                                                   "half's fidelity at the same colour (0.6 before)"),
        "gate.cond_only_fraction": Default(0.6, TOY_MEASURED + " (prompt branch only from t 600: on both branches "
                                                "the T-LoRA lost its motion, §8; from t 300 on the prompt branch "
                                                "only it cost colour, §12)"),
        "sample.steps": Default(25, "chosen; every toy figure was measured with it"),
        "sample.cfg": Default(7.5, "chosen; every toy figure was measured with it"),
        "sample.scheduler": Default("ddim", "the toy ships DDIMScheduler; inversion needs DDIM"),
        "sample.frames": Default(16, "the toy world's clips (cav_core/toyworld/spec.py)"),
        "sample.init_blend": Default(1.0, CHOSEN + " (all of the inverted structure)"),
        "video.frames": Default(16, "the toy world's clips (cav_core/toyworld/spec.py)"),
        "video.fps": Default(8.0, "the toy world's clips (cav_core/toyworld/spec.py)"),
    },
    REAL: {
        "absorber.steps": Default(150, CHOSEN + ": the paper's absorbers converge >7x faster than its T-LoRA "
                                               "(0.5-1 min against 7)"),
        "absorber.rank": Default(1, "paper: S-LoRA rank 1"),
        "absorber.alpha": Default(None, CHOSEN + ": alpha = rank, LoRA scale 1"),
        "absorber.lora_lr": Default(5e-4, MOTIONDIRECTOR + " (learning_rate 5e-4, spatial LoRAs too)"),
        "absorber.ti_lr": Default(5e-4, CHOSEN + ": MotionDirector's rate (the toy's 5e-3 suits its 32-px "
                                                "frames)"),
        "absorber.num_tokens": Default(4, "paper: 2-6 tokens by content complexity (the middle)"),
        "absorber.crop_range": Default((0.5, 1.0), CHOSEN + ": the paper crops at random ratios; the toy's bounds"),
        "absorber.batch_size": Default(4, CHOSEN + ": four images cost less memory than one 16-frame T-LoRA step"),
        "absorber.crop_pool": Default(64, CHOSEN),
        "temporal.steps": Default(300, MOTIONDIRECTOR + " (max_train_steps 300)"),
        "temporal.rank": Default(4, _PAPER_RANK_T),
        "temporal.alpha": Default(None, CHOSEN + ": alpha = rank, LoRA scale 1"),
        "temporal.lr": Default(5e-4, MOTIONDIRECTOR + " (learning_rate 5e-4)"),
        "temporal.min_timestep": Default(0, "paper: the standard diffusion loss over all timesteps"),
        "temporal.recolor": Default(False, CHOSEN + ": a hue rotation of real footage is no real scene "
                                                   "(green skin, magenta grass)"),
        "temporal.tint_white": Default(False, CHOSEN + ": real footage has no plain background to key out"),
        "temporal.rebackground": Default(False, CHOSEN + ": real footage has no plain background to key out"),
        "temporal.ad_loss": Default(0.0, "paper: the plain diffusion loss (the option is MotionDirector's "
                                         "appearance-debiased loss, weight 1 there)"),
        "temporal.validation_steps": Default(30, MOTIONDIRECTOR + " (num_inference_steps 30)"),
        "temporal.validation_guidance": Default(12.0, MOTIONDIRECTOR + " (guidance_scale 12)"),
        "motiondirector.steps": Default(300, MOTIONDIRECTOR + " (max_train_steps 300; 150-500 in its configs)"),
        "motiondirector.rank": Default(32, MOTIONDIRECTOR + " (lora_rank 32)"),
        "motiondirector.lr": Default(5e-4, MOTIONDIRECTOR + " (learning_rate 5e-4)"),
        "motiondirector.spatial_share": Default(0.8, _MD_SHARE),
        "motiondirector.ad_loss": Default(1.0, _MD_AD),
        "train.weight_decay": Default(1e-2, MOTIONDIRECTOR + " (adam_weight_decay 1e-2)"),
        "train.checkpoint_every": Default(50, MOTIONDIRECTOR + " (checkpointing_steps 50)"),
        "gate.min_timestep_fraction": Default(0.0, "paper: T-LoRA applied on every step"),
        "gate.cond_only_fraction": Default(None, "paper: T-LoRA applied on both guidance branches"),
        "sample.steps": Default(30, MOTIONDIRECTOR + " (num_inference_steps 30)"),
        "sample.cfg": Default(12.0, MOTIONDIRECTOR + " (guidance_scale 12)"),
        "sample.scheduler": Default("ddim", CHOSEN + ": DDIM, which ModelScope ships and inversion needs"),
        "sample.frames": Default(16, _16_AT_8),
        "sample.init_blend": Default(0.5, MOTIONDIRECTOR + " (noise_prior 0.5)"),
        "video.frames": Default(16, _16_AT_8),
        "video.fps": Default(8.0, _16_AT_8),
    },
}

#: Sampling scheduler names -> (diffusers class, extra config); the user-facing names follow
#: ComfyUI's. Here so that the nodes list them without importing diffusers.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
}

#: UNet config keys that tell the toy architecture from any other model.
_ARCH_KEYS = ("down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
              "cross_attention_dim", "attention_head_dim", "in_channels", "out_channels", "sample_size",
              "norm_num_groups")


class Profile:
    """The defaults of one model family: ``profile["temporal.lr"]`` is a value,
    :meth:`source` why, :meth:`resolve` a given setting or the default."""

    def __init__(self, name: str) -> None:
        if name not in PROFILES:
            raise KeyError(f"unknown defaults profile {name!r}; choose one of {', '.join(PROFILES)}")
        self.name = name
        self.values = PROFILES[name]

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def source(self, key: str) -> str:
        return self.values[key].source

    def resolve(self, key: str, given: Any) -> Any:
        """``given`` unless it is None ("default"), else this profile's value."""
        return self[key] if given is None else given

    def __repr__(self) -> str:
        return f"Profile({self.name!r})"


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def profile_name_for_unet_config(config: Mapping[str, Any]) -> str:
    """``toy`` for a UNet of the toy architecture, ``real`` for anything else.

    Decided by the architecture rather than the folder path, so a copy of the toy model
    (e.g. under ComfyUI's models/diffusers) and the random-weight toy of the tests are the
    toy, while no real model (block widths from 320 up) can match."""
    toy = _toy_unet_config()
    same = toy is not None and all(_norm(config.get(k)) == _norm(toy.get(k)) for k in _ARCH_KEYS)
    return TOY if same else REAL


@functools.lru_cache(maxsize=1)
def _toy_unet_config() -> dict[str, Any] | None:
    """The shipped toy model's UNet config (None if the install lacks it). Read as data, not
    imported from cav_core/toyworld/model_config.py: cav_core.toyworld also holds the toy's
    trainer, which imports the training loop, which reads this module (pyproject.toml's
    acyclic contract). tests/test_defaults.py checks it equals model_config.UNET_CONFIG."""
    import json

    path = Path(__file__).resolve().parent / "toyworld" / "model" / "unet" / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def profile_for(components: Any) -> Profile:
    """The profile of a loaded model: a ``T2VComponents``, a ``ModelHandle`` or a UNet config."""
    if hasattr(components, "base"):  # a ModelHandle
        components = components.base
    config = components.unet.config if hasattr(components, "unet") else components
    return Profile(profile_name_for_unet_config(config))


def profile_for_folder(folder: Any) -> Profile:
    """The profile of a diffusers model folder, read from ``unet/config.json`` alone (no weights)."""
    import json
    from pathlib import Path

    return Profile(profile_name_for_unet_config(json.loads((Path(folder) / "unet" / "config.json").read_text())))


def common(key: str) -> Any:
    """A default that every profile shares, for a widget that sees no model (e.g. the
    reference video's frame count); refuses a key whose profiles differ."""
    values = {repr(p[key].value): p[key].value for p in PROFILES.values()}
    if len(values) != 1:
        raise KeyError(f"default {key!r} differs between profiles; resolve it for a model (profile_for)")
    return next(iter(values.values()))


def timestep_from_fraction(fraction: float | None, num_train_timesteps: int) -> int | None:
    """A gate fraction of the schedule as a timestep (None stays None)."""
    return None if fraction is None else round(fraction * num_train_timesteps)


def describe(profile: Profile) -> list[str]:
    """One line per default: key, value, source (for ``python -m cav_core info``)."""
    width = max(len(k) for k in KEYS)
    return [f"{k:<{width}}  {_show(profile[k]):<10}  {profile.source(k)}" for k in KEYS]


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return "-".join(_show(x) for x in v)
    if isinstance(v, bool):
        return "on" if v else "off"
    if v is None:
        return "none"
    return f"{v:g}" if isinstance(v, float) else str(v)


def markdown_table() -> str:
    """The defaults table of ``docs/DEFAULTS.md`` (both profiles, the source of each)."""
    toy, real = Profile(TOY), Profile(REAL)
    rows = ["| setting | what | toy | real | source (real) | source (toy) |", "|---|---|---|---|---|---|"]
    for k, what in KEYS.items():
        rows.append(f"| `{k}` | {what} | {_show(toy[k])} | {_show(real[k])} | {real.source(k)} | {toy.source(k)} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m cav_core.defaults: the table for docs/DEFAULTS.md
    print(markdown_table())
