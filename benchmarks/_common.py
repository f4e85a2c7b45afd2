"""Shared set-up for the benchmark scripts: the toy model, quiet libraries, timing."""

from __future__ import annotations

import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")


def toy_handle(path: str | None = None):
    """The embedded toy model, or the model folder at ``path`` (e.g. a freshly exported one)."""
    from cav_core.model import load_t2v
    from cav_core.toyworld import toy_model_path

    path = path or toy_model_path()
    if path is None:
        sys.exit("the pretrained toy model is missing: run `python -m cav_core.toyworld.train_toy` and export it")
    return load_t2v(path, device="cpu", dtype="fp32")


def machine() -> str:
    import platform

    import torch

    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


@contextmanager
def timer(out: list):
    t = time.perf_counter()
    yield
    out.append(time.perf_counter() - t)


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON atomically (a killed run never leaves half a file)."""
    import json

    from cav_core.fileutil import atomic_write

    text = json.dumps(data, indent=1) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=True)
