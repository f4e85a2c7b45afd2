"""Issue #29 item 2, on the DEV half only: why does a T-LoRA at the toy defaults fail on paths
other than the circle? Trains one T-LoRA per (motion, training variant) and samples it under
several sampling settings (gates, strength, noise prior, guidance, steps), on the suite's
new-subject prompts (which name no motion), writing every cell to ``--json`` as soon as it
is measured (a killed run loses nothing; ``--resume`` skips what is there).

    python benchmarks/suite_diagnosis.py --motions spiral_out,back_forth_x --variants default,floor0
    python benchmarks/suite_diagnosis.py --motions spiral_out --gates prior0.5,cfg4 --lora-cache /tmp/loras
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import motion_suite as suite
from _common import evaluate, machine, toy_handle, write_json

TRAIN_VARIANTS: dict[str, dict] = {
    "default": {},
    "floor0": {"min_timestep": 0},
    "floor600": {"min_timestep": 600},
    "steps2000": {"steps": 2000},
    "lr4e-3": {"lr": 4e-3},
    "rank8": {"rank": 8},
    "norecolor": {"recolor": False},
    "phrase": {"caption": "phrase"},
    "rebg": {"rebackground": True},
    "rebg-steps2000": {"rebackground": True, "steps": 2000},
    "rebg-r16-steps2000": {"rebackground": True, "rank": 16, "steps": 2000},
    "r16-steps2000": {"rank": 16, "steps": 2000},
    "ad1": {"ad_loss": 1.0},
    "tint-rebg-r16-steps2000": {"tint_white": True, "rebackground": True, "rank": 16, "steps": 2000},
}
"""Training variants: overrides of ``train_temporal_lora``'s defaults (``caption: phrase``
trains with the reference's full caption naming a motion word, see ``_phrase``)."""

GATES: dict[str, dict] = {
    "gate-default": {},
    "from300-both": {"min_timestep": 300, "cond_only_from": 1000},
    "from0-both": {"min_timestep": 0, "cond_only_from": 1000},
    "from600-both": {"min_timestep": 600, "cond_only_from": 1000},
    "from300-cond": {"min_timestep": 300, "cond_only_from": 0},
    "from0-cond": {"min_timestep": 0, "cond_only_from": 0},
    "strength1.5": {"strength": 1.5},
    "strength2": {"strength": 2.0},
    "prior0.25": {"prior": 0.25},
    "prior0.5": {"prior": 0.5},
    "prior0.75": {"prior": 0.75},
    "prior0.9": {"prior": 0.9},
    "prior1": {"prior": 1.0},
    "strength1.25": {"strength": 1.25},
    "strength0.75": {"strength": 0.75},
    "both300-cond600": {"min_timestep": 300, "cond_only_from": 600},
    "cfg4": {"cfg": 4.0},
    "cfg12": {"cfg": 12.0},
    "ddim50": {"steps": 50},
}
"""Sampling settings: ``ModelHandle.with_lora`` settings (``cond_only_from`` 1000 = never
prompt-branch-only, i.e. both guidance branches; ``strength``), and ``prior``: the share of
the reference's DDIM inversion in the start noise (``sqrt(p)·inv + sqrt(1-p)·noise``, the
peers' noise prior) under the default gate."""


def _phrase(m: suite.Motion) -> str:
    # a bundled phrase for a new path: "moving in a circle" is the bundled phrase closest to a
    # loop; the toy model has never seen any of them, so the word is a free trigger token
    return m.caption if m.phrase else f"a {m.color} {m.shape} moving in a circle on a {m.background} background"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--motions", default="spiral_out,back_forth_x,ellipse_wide")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--gates", default=",".join(GATES))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--seed0", type=int, default=100,
                    help="first sampling seed; seed s samples the subject a run from 100 would give it, so "
                         "--seed0 108 --seeds 24 adds 24 fresh samples to the default 8")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "suite_diagnosis_dev.json"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--model", default=None, help="model folder (default: the embedded toy model)")
    ap.add_argument("--lora-cache", default=None,
                    help="folder: save each trained T-LoRA there and reuse it on a later run (training is seeded)")
    args = ap.parse_args()
    for kind, names, known in (("--gates", args.gates, GATES), ("--variants", args.variants, TRAIN_VARIANTS)):
        bad = [n for n in names.split(",") if n not in known]
        if bad:  # before any training, not after the first one
            raise SystemExit(f"{kind}: unknown {', '.join(bad)}; choose from {', '.join(known)}")

    import torch

    from cav_core.adapter_files import load_adapter, save_adapter
    from cav_core.sample import invert_video
    from cav_core.train import train_temporal_lora

    handle = toy_handle(args.model)
    inverted: dict = {}  # motion -> its reference's DDIM inversion, made once
    out = {"settings": {"split": "dev", "seeds": args.seeds, "sample_seeds": [args.seed0, args.seed0 + args.seeds - 1],
                        "machine": machine(), "absorber": "none", "model": args.model or "embedded toy model",
                        "sampling": "toy defaults (ddim 25, cfg 7.5)"},
           "cells": {}}
    if args.resume and Path(args.json).exists():
        out["cells"] = json.loads(Path(args.json).read_text()).get("cells", {})
    for name in args.motions.split(","):
        m = suite.BY_NAME[name]
        if m.split != suite.DEV:
            raise SystemExit(f"{name} is a test motion: the diagnosis tunes on the dev half only")
        if args.seed0 < 100:
            raise SystemExit(f"--seed0 must be at least 100 (the suite's first sampling seed), got {args.seed0}")
        subjects = suite.prompts_for(m, args.seed0 - 100 + args.seeds)[args.seed0 - 100:]
        if f"base|{name}" not in out["cells"]:
            out["cells"][f"base|{name}"] = evaluate(handle, m.centers(), subjects, suite.prompt_text, m.color,
                                                    args.seeds, seed0=args.seed0)
            write_json(args.json, out)
        for variant in args.variants.split(","):
            kw = dict(TRAIN_VARIANTS[variant])
            caption = _phrase(m) if kw.pop("caption", None) == "phrase" else m.caption
            lora, train_s = None, None
            for gate in args.gates.split(","):
                sampling = dict(GATES[gate])
                prior = sampling.pop("prior", 0.0)
                cfg, steps = sampling.pop("cfg", None), sampling.pop("steps", None)
                key = f"{variant}|{gate}|{name}"
                if key in out["cells"]:
                    continue
                if prior and name not in inverted:  # after the resume check: a measured cell needs none
                    inverted[name] = invert_video(handle, torch.from_numpy(m.frames()), m.caption)
                if lora is None:
                    cached = Path(args.lora_cache) / f"{variant}_{name}.safetensors" if args.lora_cache else None
                    t = time.perf_counter()
                    if cached is not None and cached.exists():
                        res = load_adapter(cached)
                        train_s = float(res.info.get("train_s", "nan"))
                    else:
                        res = train_temporal_lora(handle, torch.from_numpy(m.frames()), caption, seed=0, **kw)
                        train_s = time.perf_counter() - t
                        if cached is not None:
                            res.info["train_s"] = train_s
                            save_adapter(cached, res)
                    lora = res.lora
                init, blend = (inverted[name], prior) if prior else (None, 1.0)
                cell = evaluate(handle.with_lora(lora, **sampling), m.centers(), subjects, suite.prompt_text,
                                m.color, args.seeds, steps=steps, cfg=cfg, init=init, blend=blend, seed0=args.seed0)
                cell.update(train_s=train_s, caption=caption, recolor=res.info.get("recolor"))
                out["cells"][key] = cell
                write_json(args.json, out)
                print(f"{name:18s} {variant:10s} {gate:13s} fidelity {cell['fidelity']:5.2f} (worst "
                      f"{cell['fid_min']:5.2f}) colour {cell['color']:4.0%} leak {cell['leak']:4.0%} "
                      f"spread {cell['spread']:4.1f} train {train_s:4.0f}s", flush=True)
        b = out["cells"][f"base|{name}"]
        print(f"{name:18s} base model              fidelity {b['fidelity']:5.2f} colour {b['color']:4.0%}", flush=True)


if __name__ == "__main__":
    main()
