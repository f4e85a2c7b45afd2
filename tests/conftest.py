"""Shared fixtures. Models are built once per session; tests must not mutate them
(the pack's own rule: adapters and bypass are attached for a call and removed)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)
# One thread: as fast as two for these tiny models, and immune to the 5-10x slow-down
# that OpenMP spin-waits suffer when another process shares the cores.
torch.set_num_threads(1)

# The nodes import comfy_api.latest: outside ComfyUI that is the stand-in (tests/comfy_standin.py),
# in sys.modules before any test module imports the pack.
import comfy_standin  # noqa: E402

comfy_standin.install()


@pytest.fixture(scope="session")
def tiny():
    """The toy architecture with seeded random weights (no training needed)."""
    from cav_core.toyworld.model_config import build_random_toy

    return build_random_toy(seed=0)


@pytest.fixture(scope="session")
def toy():
    """The shipped pretrained toy model; skipped if the weights are not in the checkout."""
    from cav_core.toyworld import toy_model_path

    path = toy_model_path()
    if path is None:
        pytest.skip("pretrained toy model not present (python -m toyworld_training rebuilds it)")
    from cav_core.model import load_t2v

    return load_t2v(path, device="cpu", dtype="fp32")


def unet_inputs(handle, frames: int = 4, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = handle.base.unet.config
    x = torch.randn(batch, u.in_channels, frames, u.sample_size, u.sample_size, generator=g)
    ctx = torch.randn(batch, 8, u.cross_attention_dim, generator=g)
    return x, torch.tensor([500]), ctx


def unet_out(handle, x, t, ctx, **applied):
    with torch.no_grad(), handle.applied(**applied) as unet:
        return unet(x, t, encoder_hidden_states=ctx).sample


@pytest.fixture(scope="session")
def real_arch_dir(tmp_path_factory):
    """A model folder with ModelScope's structure and file layout at small widths (random
    weights): 4+4 UNet blocks, the SD 8x VAE, CLIP slow-tokenizer files, fp16 variants
    beside the fp32 weights (cav_core/realarch.py small_configs)."""
    from cav_core.realarch import small_configs, write_model_folder

    return write_model_folder(tmp_path_factory.mktemp("real_arch") / "text-to-video-ms-small", small_configs())
