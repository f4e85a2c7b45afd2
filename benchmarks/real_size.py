"""The GPU check (issue 30, item 5): real ModelScope / ZeroScope configs, random weights.

Per model and stage it measures seconds per training step, the peak memory of the timed
training steps (``torch.cuda.max_memory_allocated``) beside the ``cav_core.device_guard``
estimate, and seconds per sampling step with 0, 1 and 3 adapters, and prints one table.

On a GPU (fp16, activation checkpointing as ``train.run_training`` does on CUDA):
ModelScope text-to-video-ms-1.7b at 256x256 x 16 frames and ZeroScope v2 576w (the same
UNet config) at 576x320 x 24. Budget: 3 warm-up + 5 timed steps per measurement, under 6
minutes on one GPU. On the CPU it runs at a reduced size (fp32, small-width configs of the
same structure, 64x64 x 4 / 128x64 x 6 frames) and the table says so; ``--model full``
keeps the real configs there too (about 10 GB of memory).

    python benchmarks/real_size.py [--device auto] [--warmup 3] [--timed 5] [--model auto|full|small]
    python benchmarks/real_size.py --smoke   # the full-size CLI pipeline on the CPU (pytest -m slow's run)

The adapters are applied on every step and both guidance branches (the paper's way), so
the sampling figures do not depend on a profile's gate; they are merged into the weights
for the call, so their per-step cost should be about zero.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from _common import machine

#: name -> (height, width, frames) on a GPU
GPU_RUNS = {"ModelScope 1.7B": (256, 256, 16), "ZeroScope v2 576w": (320, 576, 24)}
#: the same on the CPU, reduced
CPU_RUNS = {"ModelScope 1.7B": (64, 64, 4), "ZeroScope v2 576w": (64, 128, 6)}
APPEARANCE = "a man on a beach"
FULL = "a man running on a beach"
PROMPT = "a dog running in a park"


def _cuda(dev: torch.device) -> bool:
    return dev.type == "cuda"


def _sync(dev: torch.device) -> None:
    if _cuda(dev):
        torch.cuda.synchronize(dev)


def build(configs: dict[str, dict[str, Any]], dev: torch.device, dtype: torch.dtype, name: str):
    """A handle of the real classes with random weights made on ``dev``."""
    from cav_core.model import build_t2v
    from cav_core.realarch import write_tokenizer
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as d:
        tok = CLIPTokenizer.from_pretrained(str(write_tokenizer(Path(d))))
    text = dict(configs["text_encoder"])
    return build_t2v(configs["unet"], text, configs["vae"], configs["scheduler"], tok, seed=0, name=name,
                     device=dev, dtype=dtype)


class Steps:
    """A progress callback that stamps each step; the peak memory is reset after the warm-up,
    so it covers the timed steps only (not the VAE encoding before training)."""

    def __init__(self, dev: torch.device, warmup: int) -> None:
        self.dev, self.warmup, self.stamps = dev, warmup, []

    def __call__(self, step: int, total: int, info: dict) -> None:
        _sync(self.dev)
        self.stamps.append(time.perf_counter())
        if step == self.warmup and _cuda(self.dev):
            torch.cuda.reset_peak_memory_stats(self.dev)

    def per_step(self) -> float:
        timed = self.stamps[self.warmup - 1:]
        return (timed[-1] - timed[0]) / max(1, len(timed) - 1)


def _estimate(handle, frames: int, h: int, w: int, batch: int, checkpointing: bool) -> int:
    """What device_guard.check_training_memory estimates for this run, in bytes beyond the weights."""
    from cav_core.device_guard import estimate_training_memory

    c = handle.base
    cfg = c.unet.config
    return estimate_training_memory(tuple(cfg.block_out_channels), int(cfg.layers_per_block), frames, h, w, batch,
                                    bytes_per_value=torch.finfo(c.dtype).bits // 8,
                                    vae_scale_factor=c.vae_scale_factor, grad_checkpointing=checkpointing).total


def measure(label: str, handle, h: int, w: int, frames: int, warmup: int, timed: int) -> list[dict[str, Any]]:
    from cav_core.train import ABSORBER_DEFAULTS, train_appearance_absorber, train_temporal_lora
    from cav_core.sample import generate

    dev = handle.base.device
    clip = torch.rand(frames, h, w, 3, generator=torch.Generator().manual_seed(0))
    steps = warmup + timed
    rows = []
    checkpointing = _cuda(dev)  # what run_training does by default

    def train(stage: str, fn, n_frames: int, batch: int):
        _sync(dev)
        base = torch.cuda.memory_allocated(dev) if _cuda(dev) else 0
        rec = Steps(dev, warmup)
        out = fn(rec)
        peak = torch.cuda.max_memory_allocated(dev) if _cuda(dev) else None
        rows.append({"model": label, "size": f"{w}x{h}x{frames}", "stage": stage, "s/step": rec.per_step(),
                     "peak": peak, "peak-weights": None if peak is None else peak - base,
                     "estimate": _estimate(handle, n_frames, h, w, batch, checkpointing)})
        return out

    absorber = train("absorber (S-LoRA + 2 TI)", lambda p: train_appearance_absorber(
        handle, clip, APPEARANCE, kind="both", steps=steps, num_tokens=2, seed=0, progress=p, height=h, width=w),
        1, ABSORBER_DEFAULTS["batch_size"])
    tlora = train("T-LoRA (rank 4)", lambda p: train_temporal_lora(
        handle, clip, FULL, absorber=absorber, steps=steps, seed=0, progress=p, recolor=False, height=h, width=w),
        frames, 1)
    every = dict(min_timestep=0, cond_only_from=handle.base.num_train_timesteps)  # every step, both branches
    adapters = {0: handle,
                1: handle.with_lora(tlora.lora, 1.0, **every),
                3: handle.with_lora(tlora.lora, 1.0, **every).with_lora(absorber.lora, 0.5, **every)
                         .with_lora(tlora.lora, 0.3, **every)}
    for n, hd in adapters.items():
        rec = Steps(dev, warmup)
        generate(hd, PROMPT, num_frames=frames, height=h, width=w, steps=steps, seed=0, progress=rec)
        rows.append({"model": label, "size": f"{w}x{h}x{frames}", "stage": f"sampling, {n} adapter(s)",
                     "s/step": rec.per_step(), "peak": None, "peak-weights": None, "estimate": None})
    return rows


def _gib(v: int | None) -> str:
    return "-" if v is None else f"{v / 1024**3:.2f}"


def table(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, f"{'model':22s} {'size WxHxF':12s} {'stage':26s} {'s/step':>8s} {'peak GiB':>9s} "
                     f"{'peak-weights':>13s} {'guard est.':>11s}"]
    for r in rows:
        lines.append(f"{r['model']:22s} {r['size']:12s} {r['stage']:26s} {r['s/step']:8.3f} {_gib(r['peak']):>9s} "
                     f"{_gib(r['peak-weights']):>13s} {_gib(r['estimate']):>11s}")
    lines.append("peak: torch.cuda.max_memory_allocated over the timed steps; peak-weights: minus what was allocated "
                 "before the stage (weights, latents); guard est.: device_guard.estimate_training_memory (beyond "
                 "the weights, with its 0.5 GiB reserve)")
    return "\n".join(lines)


def smoke() -> None:
    """The full-size CLI pipeline at 64x64 x 4 frames on the CPU (as `pytest -m slow` runs it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tempfile

    from real_arch import cli_pipeline, kohya_sd21_lora, lora_values, motiondirector_lora

    from cav_core.lora_convert import _default_unet
    from cav_core.realarch import fullsize_cache

    t0 = time.perf_counter()
    folder = fullsize_cache()
    print(f"full-size random model: {folder} (ready in {time.perf_counter() - t0:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        meta = _default_unet()
        kohya = kohya_sd21_lora(work / "kohya_sd21.safetensors", meta, text_width=1024)
        md = motiondirector_lora(work / "motiondirector.safetensors", meta)
        t1 = time.perf_counter()
        out = cli_pipeline(folder, work, 64, 4, 2, extra_spatial=kohya, extra_temporal=md)
        total = time.perf_counter() - t1
        t_values, s_values = lora_values(out["temporal"]), lora_values(out["absorber"])
    print(f"full-size CLI pipeline, 64x64 x 4 frames, 2 steps per stage, CPU ({machine()})")
    for name, s in out["seconds"].items():
        print(f"  {name:30s} {s:7.1f} s")
    print(f"  {'total':30s} {total:7.1f} s")
    print(f"saved T-LoRA values {t_values:,} (paper 831.5K), S-LoRA values {s_values:,} (paper 207.5K)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timed", type=int, default=5)
    ap.add_argument("--model", choices=("auto", "full", "small"), default="auto",
                    help="auto: the real configs on a GPU, small-width ones on the CPU")
    ap.add_argument("--only", choices=tuple(GPU_RUNS), default=None, help="measure one model only")
    ap.add_argument("--smoke", action="store_true", help="run the full-size CLI pipeline on the CPU instead")
    args = ap.parse_args()
    if args.smoke:
        return smoke()
    from cav_core.model import resolve_device
    from cav_core.realarch import modelscope_configs, small_configs

    dev = resolve_device(args.device)
    gpu = _cuda(dev)
    full = args.model == "full" or (args.model == "auto" and gpu)
    dtype = torch.float16 if gpu else torch.float32
    runs = GPU_RUNS if gpu else CPU_RUNS
    if gpu:
        where = f"GPU {torch.cuda.get_device_name(dev)}, fp16, activation checkpointing"
    else:
        where = (f"CPU ({machine()}), REDUCED SIZE: {'real' if full else 'small-width (64/128/192/192)'} configs, "
                 f"fp32, sizes below instead of 256x256x16 / 576x320x24")
    t0 = time.perf_counter()
    rows = []
    for label, (h, w, f) in runs.items():
        if args.only and label != args.only:
            continue
        handle = build(modelscope_configs() if full else small_configs(), dev, dtype, label)
        rows += measure(label if full else f"{label.split()[0]}-like small", handle, h, w, f, args.warmup,
                        args.timed)
        del handle
        if gpu:
            torch.cuda.empty_cache()
    print(table(rows, f"real_size: {where}; {args.warmup} warm-up + {args.timed} timed steps; "
                      f"{'real' if full else 'small-width'} configs with random weights; "
                      f"total {time.perf_counter() - t0:.0f} s"))


if __name__ == "__main__":
    main()
