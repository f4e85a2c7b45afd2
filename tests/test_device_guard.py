"""The memory guard's estimate and decision with fake numbers (no GPU needed), and the
device / dtype policy of model.resolve_device / resolve_dtype."""

from __future__ import annotations

import re

import pytest
import torch

from cav_core import device_guard as dg
from cav_core.errors import InputError
from cav_core.model import resolve_device, resolve_dtype

GIB = dg.GIB
MODELSCOPE = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)  # text-to-video-ms-1.7b


def _ms(frames=16, size=256, **kw):
    return dg.estimate_training_memory(**MODELSCOPE, num_frames=frames, height=size, width=size, **kw)


def test_estimate_is_linear_in_frames_and_batch_and_grows_with_size():
    assert _ms(32).activations == 2 * _ms(16).activations
    assert _ms(16, batch_size=3).activations == 3 * _ms(16).activations
    assert _ms(16, 512).activations == 4 * _ms(16, 256).activations
    assert _ms(16, bytes_per_value=4).activations == 2 * _ms(16).activations  # fp32 vs fp16


def test_estimate_is_in_a_plausible_range_for_modelscope():
    # 16 frames at 256x256 in fp16 fine-tune in a few GiB with checkpointing; far more without
    with_ckpt, without = _ms(), _ms(grad_checkpointing=False)
    assert 0.5 * GIB < with_ckpt.activations < 4 * GIB
    assert without.activations > 2 * with_ckpt.activations
    assert _ms(trainable_params=1_000_000).trainable == 16_000_000  # fp32 weight, grad and two AdamW moments
    assert with_ckpt.total == with_ckpt.activations + with_ckpt.reserve


def test_decide_passes_when_it_fits():
    est = _ms()
    dg.decide(est, free=int(est.total / dg.USABLE_FRACTION) + 1, total=24 * GIB, stage="temporal", num_frames=16,
              batch_size=1, size=(256, 256))


def test_decide_names_the_frames_that_fit():
    est = _ms(24)
    free = 2 * GIB
    with pytest.raises(InputError) as e:
        dg.decide(est, free, 8 * GIB, "temporal", 24, 1, (256, 256), device="cuda:0")
    msg = str(e.value)
    assert msg.startswith("not enough GPU memory for temporal training: 24 frame(s) at 256x256, batch 1 need about ")
    assert "cuda:0 has 2.0 GiB free of 8.0 GiB" in msg
    n = int(re.search(r"Use fewer frames \(at most (\d+) fit here\)", msg).group(1))
    budget = free * dg.USABLE_FRACTION
    assert 0 < n < 24 and _ms(n).total <= budget < _ms(n + 1).total  # the largest count that fits


def test_decide_names_the_batch_for_single_images():
    est = dg.estimate_training_memory(**MODELSCOPE, num_frames=1, height=256, width=256, batch_size=64)
    with pytest.raises(InputError, match=r"Lower the batch size \(at most \d+ fit here\)"):
        dg.decide(est, GIB, 8 * GIB, "absorber", 1, 64, (256, 256))


def test_decide_when_nothing_fits():
    with pytest.raises(InputError, match=r"even 1 frame does not fit here"):
        dg.decide(_ms(), 100 * 1024**2, 4 * GIB, "temporal", 16, 1, (256, 256))


def test_no_check_off_cuda(tiny):
    assert dg.available_memory(torch.device("cpu")) is None
    dg.check_training_memory(tiny.base, 10**6, 4096, 4096, 64, stage="temporal")  # CPU: nothing to measure


def test_cuda_free_memory_comes_from_mem_get_info(tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * GIB, 16 * GIB))
    assert dg.available_memory(torch.device("cuda")) == (3 * GIB, 16 * GIB)
    monkeypatch.setattr(dg, "available_memory", lambda dev: (3 * GIB, 16 * GIB))
    dg.check_training_memory(tiny.base, 16, 32, 32)  # the tiny model fits
    with pytest.raises(InputError, match="not enough GPU memory"):
        dg.check_training_memory(tiny.base, 100_000, 32, 32)


# --------------------------------------------------------------------------- dtype / device policy

@pytest.mark.parametrize("device, want", [("cpu", torch.float32), ("cuda", torch.float16), ("mps", torch.float16),
                                          (None, torch.float32)])
def test_auto_dtype_per_device(device, want):
    assert resolve_dtype("auto", torch.device(device) if device else None) == want


@pytest.mark.parametrize("dtype", ["fp16", "float16", "bf16", torch.float16, torch.bfloat16])
def test_half_precision_is_refused_on_the_cpu(dtype):
    with pytest.raises(InputError, match=r"not supported on the CPU here; use 'fp32' \(or 'auto'\)"):
        resolve_dtype(dtype, torch.device("cpu"))


def test_fp32_everywhere_and_fp16_on_gpus():
    for dev in ("cpu", "cuda", "mps"):
        assert resolve_dtype("fp32", torch.device(dev)) == torch.float32
    assert resolve_dtype("fp16", torch.device("cuda")) == torch.float16
    assert resolve_dtype(torch.float16, torch.device("mps")) == torch.float16


def test_bf16_only_on_gpus_that_support_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(InputError, match="not supported by this GPU; use 'fp16'"):
        resolve_dtype("bf16", torch.device("cuda"))


def test_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match=r"only 2 CUDA device\(s\) \(cuda:0\.\.cuda:1\)"):
        resolve_device("cuda:2")
