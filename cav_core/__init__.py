"""Customize-A-Video core: one-shot motion customization for ModelScope-style
text-to-video models (Ren et al. 2024). Usable without ComfyUI; see docs/DESIGN.md §1.

Heavy libraries (torch, diffusers, transformers, peft) are imported by the submodules
that need them, so importing this package stays cheap."""

__version__ = "0.1.0"
