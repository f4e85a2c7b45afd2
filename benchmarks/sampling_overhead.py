"""Sampling time per step with 0, 1 and 3 adapters attached, as ratios to the base (issue: inference),
and with a T-LoRA on the prompt's guidance branch only at high noise (its default).

Merged mode (the default of ``generate``): each strength·ΔW is added to the touched
weights for the call (the sum peft's merge computes, without building peft layers) and
the weights are restored bit-exactly after; strengths never change mid-run in this
sampler, so merging is always valid. Unmerged mode runs peft's LoRA layers each step.

    python benchmarks/sampling_overhead.py [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import machine, toy_handle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from cav_core.adapters import LoraWeights
    from cav_core.layers import role_modules
    from cav_core.sample import generate

    handle = toy_handle()
    unet = handle.base.unet

    def lora(role: str, rank: int, seed: int) -> LoraWeights:
        g = torch.Generator().manual_seed(seed)
        t, a = {}, {}
        for m in role_modules(unet, role):
            lin = unet.get_submodule(m)
            t[f"{m}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.01
            t[f"{m}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.01
            a[m] = float(rank)
        return LoraWeights(role, t, a)

    loras = [lora("temporal", 4, 1), lora("temporal", 4, 2), lora("spatial", 8, 3)]
    both = handle.base.num_train_timesteps  # cond_only_from = the schedule's end: both guidance branches always
    handles = {0: handle, 1: handle.with_lora(loras[0], 1.0, cond_only_from=both),
               3: handle.with_lora(loras[0], 0.8, cond_only_from=both).with_lora(loras[1], 0.5, cond_only_from=both)
               .with_lora(loras[2], 0.7)}

    def per_step(h, merge: bool) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            generate(h, "a red circle moving left on a black background", steps=args.steps, merge=merge,
                     return_latents=True)
            best = min(best, (time.perf_counter() - t0) / args.steps)
        return best

    per_step(handle, True)  # warm-up
    base = per_step(handle, True)
    print(f"sampling time per step (best of {args.repeats}, {args.steps} DDIM steps, guidance 7.5, "
          f"16x32x32, toy model; {machine()})")
    print(f"  base: {base * 1e3:.1f} ms/step")
    for n in (1, 3):
        m, u = per_step(handles[n], True), per_step(handles[n], False)
        print(f"  {n} adapter(s): merged {m * 1e3:.1f} ms ({m / base:.3f}x)   unmerged {u * 1e3:.1f} ms ({u / base:.3f}x)")
    # the T-LoRA default: on the noisiest 40% of steps the guidance branches run as two forwards,
    # with the merged T-LoRA switched off for the unconditional one and on again
    split = handle.with_lora(loras[0], 1.0)
    m, u = per_step(split, True), per_step(split, False)
    print(f"  1 T-LoRA, prompt branch only on t >= {split.loras[0].cond_only_from} (the default): merged "
          f"{m * 1e3:.1f} ms ({m / base:.3f}x)   unmerged {u * 1e3:.1f} ms ({u / base:.3f}x)")
    print("goal: <= 1.05x with adapters merged in both branches (the sampler's default; merge cost is paid once "
          "per call); the prompt-branch-only steps add two weight switches each")


if __name__ == "__main__":
    main()
