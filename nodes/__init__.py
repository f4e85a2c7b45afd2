"""ComfyUI nodes of Customize-A-Video (V3 schema, ``comfy_api.latest``). Each node is a thin
wrapper over one cav_core call; ComfyUI hooks live in ``comfy_bridge``. Importing this
package imports no torch-heavy library (diffusers, peft, transformers are imported when a
node runs), so the pack adds next to nothing to ComfyUI's start-up."""

from __future__ import annotations

from ._io import ComfyExtension, io
from .loaders import LoadCAVAdapter, LoadModelScopeT2V, LoadReferenceVideo, SaveCAVAdapter
from .metrics import CompareMotion
from .model_ops import ApplySpatialLoRA, ApplyTemporalLoRA, BypassTemporalLayers
from .sampling import DDIMInvertVideo, ModelScopeT2VSampler
from .training import AddTrainingClip, TrainAppearanceAbsorber, TrainTemporalLoRA

NODES: list[type] = [
    LoadModelScopeT2V,
    LoadReferenceVideo,
    TrainAppearanceAbsorber,
    TrainTemporalLoRA,
    AddTrainingClip,
    ApplyTemporalLoRA,
    ApplySpatialLoRA,
    BypassTemporalLayers,
    DDIMInvertVideo,
    ModelScopeT2VSampler,
    SaveCAVAdapter,
    LoadCAVAdapter,
    CompareMotion,
]


class CustomizeAVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type]:
        return list(NODES)


async def comfy_entrypoint() -> CustomizeAVideoExtension:
    """ComfyUI calls this to load the pack (V3 extension entry point)."""
    return CustomizeAVideoExtension()


__all__ = ["NODES", "comfy_entrypoint", "CustomizeAVideoExtension", "io"]
