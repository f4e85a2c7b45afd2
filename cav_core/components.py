"""The shared, frozen parts of a loaded text-to-video model (:class:`T2VComponents`) and
its identity (``model_id``): what a model handle (:mod:`cav_core.handle`) is built on and
what adapter files record as their base model (docs/DESIGN.md §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


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


def split_model_id(model_id: str) -> tuple[str, str] | None:
    """(architecture hash, weights fingerprint) of an id from :func:`_model_id`; None for the
    ids older versions wrote (``name@hash`` of a config that held the path)."""
    parts = model_id.split(".") if isinstance(model_id, str) else []
    if len(parts) == 2 and all(len(x) == 10 and all(c in "0123456789abcdef" for c in x) for x in parts):
        return parts[0], parts[1]
    return None


def base_model_note(components: T2VComponents, trained_id: str, trained_name: str = "",
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
