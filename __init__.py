"""ComfyUI entry point of the Customize-A-Video node pack.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint`` (the V3 node API,
``comfy_api.latest``). The nodes live in ``nodes/`` and all logic in ``cav_core/``
(usable without ComfyUI). Heavy imports (diffusers, peft, transformers) are deferred to
node execution so the pack adds little to ComfyUI's start-up."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
try:  # pip-installed (pip install -e .) or already importable
    import cav_core  # noqa: F401
except ImportError:  # a plain git clone into custom_nodes: use the bundled copy.
    # Appended, not prepended: this folder also holds a `nodes` package, which must never
    # shadow ComfyUI's own top-level `nodes` module.
    sys.path.append(_here)

# The nodes register only when ComfyUI imports the pack (as a package, with ComfyUI loaded):
# pytest imports this file alone when the checkout's folder name is no Python identifier (a
# clone's default name, comfyui-customize-a-video), and the pack imported without ComfyUI is
# just the cav_core library. An old ComfyUI without comfy_api gets nodes/_io.py's message.
if __package__ and any(m in sys.modules for m in ("comfy_api", "comfy", "folder_paths")):
    from .nodes import NODES, comfy_entrypoint  # noqa: E402

WEB_DIRECTORY = None

# No NODE_CLASS_MAPPINGS here on purpose: ComfyUI prefers V1 mappings over
# comfy_entrypoint when a module has both.
__all__ = ["comfy_entrypoint", "NODES"]
