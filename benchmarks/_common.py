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
        sys.exit("the pretrained toy model is missing: rebuild it with `python -m toyworld_training` (docs/TOY_MODEL.md)")
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


def variety(videos: list) -> float:
    """Mean pairwise pixel distance of aligned frames across samples: the share of pixels whose
    object mask differs between two samples at the same frame index, averaged over frames and
    pairs. Masks, not colours, so prompts of different colours do not count as variety; 0
    when every sample draws the same layout (a copy of the reference)."""
    import itertools

    import numpy as np

    from cav_core.toyworld import measures

    masks = [np.stack([measures.object_mask(f) for f in v]) for v in videos]
    pairs = list(itertools.combinations(range(len(masks)), 2))
    if not pairs:
        return 0.0
    return float(np.mean([(masks[i] != masks[j]).mean() for i, j in pairs]))


def evaluate(handle, ref_centers, subjects: list, prompt_of, ref_color: str, seeds: int, steps=None, cfg=None,
             init=None, blend: float = 1.0, seed0: int = 100) -> dict:
    """Sample ``seeds`` videos (seed ``seed0 + i``, subject ``subjects[i % len]``; ``prompt_of``
    turns a (colour, shape, background) into the prompt) and score them with the toy measures:
    motion fidelity against ``ref_centers`` (mean and worst seed), prompt colour and shape
    right, reference-colour leak, start-position spread and ``variety``. ``init``/``blend``:
    start latents (DDIM-inverted reference) mixed into the noise."""
    import numpy as np

    from cav_core.sample import generate
    from cav_core.toyworld import measures

    ref = np.asarray(ref_centers, dtype=np.float64)
    fid, color_ok, shape_ok, leak, starts, videos = [], [], [], [], [], []
    for i in range(seeds):
        color, shape, _ = subjects[i % len(subjects)]
        v = generate(handle, prompt_of(subjects[i % len(subjects)]), steps=steps, guidance_scale=cfg, seed=seed0 + i,
                     init_latents=init, init_blend=blend)[0].numpy()
        videos.append(v)
        tr = measures.centroid_track(v)
        fid.append(measures.motion_fidelity(tr, ref))
        got = measures.object_color(v)
        color_ok.append(got == color)
        shape_ok.append(measures.object_shape(v) == shape)
        leak.append(got == ref_color and ref_color != color)
        ok = np.isfinite(tr).all(axis=1)
        if ok.any():
            starts.append(tr[ok][0])
    return {"fidelity": float(np.mean(fid)), "fid_min": float(np.min(fid)), "fid_seeds": [float(f) for f in fid],
            "color": float(np.mean(color_ok)), "shape": float(np.mean(shape_ok)), "leak": float(np.mean(leak)),
            "spread": float(np.asarray(starts).std(axis=0).mean()) if starts else 0.0, "variety": variety(videos)}
