"""Which modules of a diffusers ``UNet3DConditionModel`` are temporal and which are spatial.

The method hinges on this split: T-LoRAs go on temporal attention only, absorbers
(S-LoRAs) on spatial attention only, and Stage 1 runs with every temporal layer bypassed
so the UNet behaves as an image model on independent frames (paper, supplement A.1).
Names follow diffusers' UNet3DConditionModel, which is the ModelScope/ZeroScope layout;
its spatial names equal those of the SD 2.1 UNet.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch
from torch import nn

_BLOCK = r"(?:(?:down|up)_blocks\.\d+|mid_block)"
_ATTN_PROJ = r"transformer_blocks\.\d+\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0)"

#: Full-match regex for the Linear layers a T-LoRA adapts: q/k/v/out of both attentions
#: in ``transformer_in`` and every ``temp_attentions`` transformer.
TEMPORAL_ATTENTION_REGEX = rf"(?:transformer_in|{_BLOCK}\.temp_attentions\.\d+)\.{_ATTN_PROJ}"

#: Full-match regex for the Linear layers an S-LoRA adapts: q/k/v/out of spatial
#: self-attention (attn1) and cross-attention (attn2) in every Transformer2DModel.
SPATIAL_ATTENTION_REGEX = rf"{_BLOCK}\.attentions\.\d+\.{_ATTN_PROJ}"

#: Whole temporal modules that the bypass turns into identities.
TEMPORAL_MODULE_REGEX = rf"transformer_in|{_BLOCK}\.(?:temp_attentions|temp_convs)\.\d+"

ROLE_REGEX = {"temporal": TEMPORAL_ATTENTION_REGEX, "spatial": SPATIAL_ATTENTION_REGEX}

_FFN = r"transformer_blocks\.\d+\.ff\.net\.(?:0\.proj|2)"

#: The MotionDirector baseline's LoRA targets (cav_core/motiondirector.py), full-match regexes
#: of Linear layers: spatial = the spatial transformers' self-attention (attn1, not the
#: cross-attention attn2) and feed-forward; temporal = the temporal transformers' attention
#: and feed-forward, ``transformer_in`` included.
MOTIONDIRECTOR_REGEX = {
    "spatial": rf"{_BLOCK}\.attentions\.\d+\.(?:transformer_blocks\.\d+\.attn1\.(?:to_q|to_k|to_v|to_out\.0)|{_FFN})",
    "temporal": rf"(?:transformer_in|{_BLOCK}\.temp_attentions\.\d+)\.(?:{_ATTN_PROJ}|{_FFN})",
}


def _matching(model: nn.Module, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [name for name, _ in model.named_modules() if rx.fullmatch(name)]


def temporal_attention_modules(unet: nn.Module) -> list[str]:
    """Names of the Linear layers a T-LoRA targets (136 on ModelScope 1.7B)."""
    return _matching(unet, TEMPORAL_ATTENTION_REGEX)


def spatial_attention_modules(unet: nn.Module) -> list[str]:
    """Names of the Linear layers an S-LoRA targets (128 on ModelScope 1.7B)."""
    return _matching(unet, SPATIAL_ATTENTION_REGEX)


def temporal_modules(unet: nn.Module) -> list[str]:
    """Names of the whole temporal modules: transformer_in, temp_attentions.*, temp_convs.*."""
    return _matching(unet, TEMPORAL_MODULE_REGEX)


def motiondirector_modules(unet: nn.Module, role: str) -> list[str]:
    """The Linear layers the MotionDirector baseline adapts for ``role`` ('spatial' or 'temporal')."""
    if role not in MOTIONDIRECTOR_REGEX:
        raise ValueError(f"unknown adapter role {role!r}; expected one of {sorted(MOTIONDIRECTOR_REGEX)}")
    return _matching(unet, MOTIONDIRECTOR_REGEX[role])


def role_modules(unet: nn.Module, role: str) -> list[str]:
    """Target Linear layers for an adapter role ('temporal' or 'spatial')."""
    if role not in ROLE_REGEX:
        raise ValueError(f"unknown adapter role {role!r}; expected one of {sorted(ROLE_REGEX)}")
    return _matching(unet, ROLE_REGEX[role])


def _identity_transformer(hidden_states: torch.Tensor, *args, return_dict: bool = True, **kwargs):
    # Same return contract as diffusers' TransformerTemporalModel.forward.
    if return_dict:
        from diffusers.models.transformers.transformer_temporal import TransformerTemporalModelOutput

        return TransformerTemporalModelOutput(sample=hidden_states)
    return (hidden_states,)


def _identity_conv(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return hidden_states


@contextlib.contextmanager
def bypass_temporal(unet: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Make every temporal module an identity for the duration of the block.

    The bypass shadows ``forward`` on the module instances, so parameter names, peft
    wrappers inside the modules and the weights are untouched, and the skipped modules
    cost no compute. Leaving the block deletes the shadows: the model is exactly as before.
    """
    if not enabled:
        yield unet
        return
    patched: list[nn.Module] = []
    try:
        for name in temporal_modules(unet):
            module = unet.get_submodule(name)
            if "forward" in vars(module):
                raise RuntimeError(f"module {name} is already bypassed (nested bypass_temporal?)")
            is_conv = ".temp_convs." in name
            module.forward = _identity_conv if is_conv else _identity_transformer
            patched.append(module)
        yield unet
    finally:
        for module in patched:
            del module.forward
