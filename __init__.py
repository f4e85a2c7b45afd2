"""ComfyUI entry point of the Customize-A-Video node pack.

ComfyUI imports this folder as a package; the nodes live in ``nodes/`` and all logic in
``cav_core/`` (usable without ComfyUI). Heavy imports are deferred to node execution so
the pack adds little to ComfyUI's start-up."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:  # cav_core is importable even when the pack is not pip-installed
    sys.path.insert(0, _here)

WEB_DIRECTORY = None
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
