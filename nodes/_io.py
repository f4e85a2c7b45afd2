"""The V3 node API (``comfy_api.latest``) and this pack's custom io types.

Inside ComfyUI this is the real API. Outside it (the pack's tests, scripts) a small
stand-in with the same names is used, so node modules import one thing either way."""

from __future__ import annotations

import sys

try:
    from comfy_api.latest import ComfyExtension, io, ui

    IN_COMFYUI = True
except ImportError:
    if "comfy" in sys.modules or "folder_paths" in sys.modules:  # an old ComfyUI: say so plainly
        raise ImportError("Customize-A-Video needs a ComfyUI with the V3 node API (comfy_api.latest, "
                          "ComfyUI 0.3.64 or newer: pyproject.toml requires-comfyui); please update "
                          "ComfyUI") from None
    from ._standin import ComfyExtension, io, ui

    IN_COMFYUI = False

CATEGORY = "Customize-A-Video"

#: The model handle (cav_core.model.ModelHandle): immutable; Apply*/Bypass nodes return new ones.
T2VModel = io.Custom("CAV_T2V_MODEL")
#: A T-LoRA, S-LoRA or absorber (cav_core.adapter_files.AdapterFile).
Adapter = io.Custom("CAV_ADAPTER")
#: Further training clips of one motion (a tuple of cav_core.train.TrainClip), from Add Training Clip.
TrainingClips = io.Custom("CAV_CLIPS")

__all__ = ["io", "ui", "ComfyExtension", "IN_COMFYUI", "CATEGORY", "T2VModel", "Adapter", "TrainingClips"]
