"""The toy world: tiny synthetic clips (one colored shape moving on a plain background)
with exact captions and ground-truth tracks, plus numpy measures that read color, shape,
background and motion back from frames. Importing this package loads nothing heavy
(numpy only, in the submodules); see ``spec`` for the v1 contract."""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def toy_model_path() -> Path | None:
    """The shipped pretrained toy model folder, or None when it is not in this checkout."""
    return MODEL_DIR if (MODEL_DIR / "model_index.json").is_file() else None
