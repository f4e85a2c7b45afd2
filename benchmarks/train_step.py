"""Cost of one training step of each stage vs a bare UNet forward+backward (issue: training).

The bare step is the same UNet on the same shapes with the same LoRA layers attached
(and trainable), run directly: what any LoRA trainer must pay. The stage steps go
through ``run_training`` with everything the stage does around it. Also counts VAE and
text-encoder calls per step (goal 0; textual inversion: text encoder only).

    python benchmarks/train_step.py [--steps 30]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import machine, toy_handle


def _count(module, box):
    return module.register_forward_pre_hook(lambda *a: box.append(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    from cav_core.adapters import add_trainable_lora
    from cav_core.train import train_appearance_absorber, train_temporal_lora

    handle = toy_handle()
    c = handle.base
    frames = torch.rand(16, 32, 32, 3, generator=torch.Generator().manual_seed(0))

    def bare(role: str, x: torch.Tensor, rank: int, bypass: bool) -> float:
        ctx = torch.randn(x.shape[0], 24, c.text_encoder.config.hidden_size)
        h = handle.with_bypass(bypass)
        with h.applied() as unet:
            params = add_trainable_lora(unet, role, rank, float(rank), "bench")
            opt = torch.optim.AdamW(params, lr=1e-4)
            unet.train()
            times = []
            for i in range(args.steps + 3):
                t0 = time.perf_counter()
                t = torch.randint(0, 1000, (x.shape[0],))
                loss = (unet(x, t, encoder_hidden_states=ctx).sample - x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i >= 3:
                    times.append(time.perf_counter() - t0)
            unet.eval()
        return float(torch.tensor(times).median())

    def staged(fn) -> tuple[float, float, float]:
        stamps, vae, text = [], [], []
        hooks = [_count(c.vae, vae), _count(c.text_encoder, text)]
        marks = {}

        def progress(step, total, info):
            stamps.append(time.perf_counter())
            if step == 3:
                marks["vae"], marks["text"] = len(vae), len(text)
        try:
            fn(progress)
        finally:
            for h in hooks:
                h.remove()
        n = len(stamps) - 3
        per_step = (stamps[-1] - stamps[2]) / n
        return per_step, (len(vae) - marks["vae"]) / n, (len(text) - marks["text"]) / n

    lat_clip = torch.randn(1, 4, 16, 8, 8)
    lat_frames = torch.randn(4, 4, 1, 8, 8)
    rows = []
    b = bare("temporal", lat_clip, 4, False)
    s = staged(lambda p: train_temporal_lora(handle, frames, "a red circle moving in a circle on a black background",
                                             steps=args.steps + 3, progress=p))
    rows.append(("stage 2 T-LoRA (rank 4, 1x16 frames)", s, b))
    b = bare("spatial", lat_frames, 1, True)
    for kind in ("lora", "ti", "both"):
        s = staged(lambda p: train_appearance_absorber(handle, frames, "a red circle on a black background", kind=kind,
                                                       steps=args.steps + 3, progress=p))
        rows.append((f"stage 1 absorber {kind} (4 frames)", s, b))
    print(f"training step cost on the toy model, median of {args.steps} steps ({machine()})")
    print(f"{'':38s} {'step ms':>8s} {'bare ms':>8s} {'ratio':>6s} {'VAE/step':>9s} {'text enc/step':>14s}")
    for name, (step, vae, text), bare_s in rows:
        print(f"{name:38s} {step * 1e3:8.1f} {bare_s * 1e3:8.1f} {step / bare_s:6.2f} {vae:9.2f} {text:14.2f}")
    print("goal: ratio <= 1.10; VAE calls 0; text-encoder calls 0 (1 for textual inversion, whose tokens train)")


if __name__ == "__main__":
    main()
