"""The V3 node API (``comfy_api.latest``) and this pack's custom io types.

The nodes run inside ComfyUI and import its real API; without ComfyUI, use the library
(``cav_core``, ``python -m cav_core``). The pack's tests put a stand-in into ``sys.modules``
(tests/comfy_standin.py)."""

from __future__ import annotations

try:
    from comfy_api.latest import ComfyExtension, io, ui
except ImportError:
    raise ImportError("Customize-A-Video's nodes need a ComfyUI with the V3 node API (comfy_api.latest, ComfyUI "
                      "0.3.64 or newer: pyproject.toml requires-comfyui); please update ComfyUI. Without ComfyUI, "
                      "use the library: import cav_core, or python -m cav_core") from None

CATEGORY = "Customize-A-Video"

#: The model handle (cav_core.handle.ModelHandle): immutable; Apply*/Bypass nodes return new ones.
T2VModel = io.Custom("CAV_T2V_MODEL")
#: A T-LoRA, S-LoRA or absorber (cav_core.adapter_files.AdapterFile).
Adapter = io.Custom("CAV_ADAPTER")
#: Further training clips of one motion (a tuple of cav_core.train.TrainClip), from Add Training Clip.
TrainingClips = io.Custom("CAV_CLIPS")

__all__ = ["io", "ui", "ComfyExtension", "CATEGORY", "T2VModel", "Adapter", "TrainingClips"]
