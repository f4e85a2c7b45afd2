"""Customize-A-Video side by side with the peers' methods on the motion suite (issue #29).

One table, per method, over the motions of one half of ``benchmarks/motion_suite.py``
(``--split test`` by default; tune on ``dev`` only): motion fidelity (mean over motions of the
per-motion mean over seeds, the worst motion, and the share of motions at >= 0.8), prompt
colour and shape right relative to the base model's on the same prompts and seeds,
reference-colour leak, variety across the seeds (start-position spread, mean pairwise pixel
distance of aligned frames, see ``_common.variety``) and training seconds per motion.

Methods, each at its own defaults, on the same clips, captions, prompts and seeds:
- ``base``: the toy model, no adapter;
- ``inversion@1``, ``inversion@0.5``: Tune-A-Video / Video-P2P-style editing, no training: the
  reference DDIM-inverted under its caption, generation starts from those latents mixed with
  fresh noise (``cav_core.sample.invert_video`` + ``generate(init_latents, init_blend)``);
- ``cav``, ``cav-noabs``: Customize-A-Video, the default absorber (both: S-LoRA + TI, the node's
  and CLI's default) or none, then the T-LoRA (``cav_core.train``), sampled with the T-LoRA
  alone at the profile's defaults (``cav_core/defaults.py``);
- ``md@0``, ``md@0.5``: the MotionDirector-style baseline (``cav_core.motiondirector``), its
  temporal LoRA sampled with noise prior 0 or 0.5 (``sqrt(p)·inv + sqrt(1-p)·noise``, the same
  mix as ``blend_latents``); "not available in this checkout" where the module is missing.

``--budget-s S`` gives every trained method the same wall-clock budget: its steps are scaled
to fit S seconds from two timed probe runs (per-step cost and set-up, ``fit_steps``). Probes
are short, so under load they can miss a full run's rate (docs/EXPERIMENTS.md §12);
``--md-steps`` etc. set steps directly. ``--quick`` is CI-sized.
Results are written to ``--json`` after every motion, and ``--resume`` skips the cells a
killed run already wrote.

    python benchmarks/peers.py [--split test] [--seeds 8] [--json PATH] [--budget-s S] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import motion_suite as suite
from _common import evaluate, machine, toy_handle, write_json

METHODS: tuple[str, ...] = ("base", "inversion@1", "inversion@0.5", "cav", "cav-noabs", "md@0", "md@0.5")
TRAINED = {"cav": "cav", "cav-noabs": "cav-noabs", "md@0": "md", "md@0.5": "md"}
"""Method -> the training it needs (the two md rows share one training)."""
QUICK = {"motions": 2, "seeds": 2, "temporal_steps": 20, "absorber_steps": 10, "md_steps": 20}


def _md():
    try:
        from cav_core.motiondirector import train_motiondirector
    except ImportError:
        return None
    return train_motiondirector


def _frames(motion: suite.Motion):
    import torch

    return torch.from_numpy(motion.frames())


def train(handle, method: str, motion: suite.Motion, steps: dict, seed: int = 0):
    """Train what ``method`` needs on ``motion`` -> the LoRA to sample with. ``steps``: overrides
    (None values: the method's defaults)."""
    from cav_core.train import train_appearance_absorber, train_temporal_lora

    frames = _frames(motion)
    if method in ("cav", "cav-noabs"):
        absorber = None
        if method == "cav":
            absorber = train_appearance_absorber(handle, frames, motion.appearance_caption, kind="both",
                                                 steps=steps.get("absorber"), seed=seed)
        return train_temporal_lora(handle, frames, motion.caption, absorber=absorber, steps=steps.get("temporal"),
                                   seed=seed, **steps.get("temporal_kw", {})).lora
    if method == "md":  # the whole run: it samples through motiondirector_handle (its own gate)
        return _md()(handle, frames, motion.caption, steps=steps.get("md"), seed=seed)
    raise ValueError(method)


def default_steps(handle) -> dict:
    from cav_core.defaults import profile_for

    d = profile_for(handle)
    md = d["motiondirector.steps"] if _md() is not None else None
    return {"absorber": d["absorber.steps"], "temporal": d["temporal.steps"], "md": md}


def step_cost(probe: tuple[int, float], longer: tuple[int, float]) -> tuple[float, float]:
    """(seconds a step, set-up seconds) from two timed runs ``(steps, seconds)`` of one method:
    their difference is the per-step cost, the rest the fixed set-up (wrapping the model,
    encoding the clip). One probe alone would charge the set-up to every step."""
    (n0, t0), (n1, t1) = probe, longer
    per = max((t1 - t0) / (n1 - n0), 1e-9)
    return per, max(t0 - n0 * per, 0.0)


def fit_steps(budget_s: float, probe: tuple[int, float], longer: tuple[int, float]) -> int:
    """Steps whose training call, set-up included, fits ``budget_s`` seconds (see ``step_cost``)."""
    per, setup = step_cost(probe, longer)
    return max(1, int((budget_s - setup) / per))


def budget_steps(handle, budget_s: float, base_steps: dict, probe: int = 25) -> tuple[dict, dict]:
    """Steps per trained method that fit ``budget_s`` seconds of its whole training call (what
    ``train_s`` reports), from timed runs of ``probe`` and ``3 * probe`` steps of each on the
    first dev motion. -> (steps, {method: (s per step, set-up s)})."""
    from cav_core.train import train_appearance_absorber

    m = suite.motions("dev")[0]
    runs = {"temporal": lambda n: train(handle, "cav-noabs", m, {"temporal": n}),
            "absorber": lambda n: train_appearance_absorber(handle, _frames(m), m.appearance_caption,
                                                            kind="both", steps=n)}
    if _md() is not None:
        runs["md"] = lambda n: train(handle, "md", m, {"md": n})
    timed = {}
    for name, go in runs.items():
        timed[name] = []
        for n in (probe, 3 * probe):
            t = time.perf_counter()
            go(n)
            timed[name].append((n, time.perf_counter() - t))
    per = {name: step_cost(*runs_) for name, runs_ in timed.items()}
    out = {k: fit_steps(budget_s, *timed[k]) for k in timed if k != "absorber"}
    # cav with an absorber: both stages share the budget in their default proportion
    a, tt = base_steps["absorber"], base_steps["temporal"]
    fixed = per["absorber"][1] + per["temporal"][1]
    k = max(budget_s - fixed, 0.0) / (a * per["absorber"][0] + tt * per["temporal"][0])
    out["absorber"], out["temporal_cav"] = max(1, int(a * k)), max(1, int(tt * k))
    return out, per


def run(args) -> dict:
    import torch

    from cav_core.sample import invert_video

    handle = toy_handle(args.model)
    motions = suite.motions(args.split)
    if args.motions:
        motions = [suite.BY_NAME[n] for n in args.motions.split(",")] if not args.motions.isdigit() \
            else motions[: int(args.motions)]
    methods = args.methods.split(",")
    steps = default_steps(handle)
    for k in ("absorber", "temporal", "md"):
        if getattr(args, f"{k}_steps") is not None:
            steps[k] = getattr(args, f"{k}_steps")
    per_step = None
    if args.budget_s:
        b, per_step = budget_steps(handle, args.budget_s, steps)
        steps.update({k: v for k, v in b.items() if k != "temporal_cav"})
        steps["cav_temporal"] = b["temporal_cav"]
    temporal_kw = json.loads(args.temporal_kw) if args.temporal_kw else {}
    settings = {"split": args.split, "motions": [m.name for m in motions], "methods": methods, "seeds": args.seeds,
                "sample_seeds": list(range(100, 100 + args.seeds)), "train_seed": 0, "sample_steps": args.sample_steps,
                "cfg": args.cfg, "steps": steps, "budget_s": args.budget_s, "s_per_step": per_step,
                "temporal_kw": temporal_kw, "machine": machine(), "quick": args.quick}
    out = {"settings": settings, "cells": {}}
    if args.resume and args.json and Path(args.json).exists():
        old = json.loads(Path(args.json).read_text())
        if old.get("settings", {}).get("steps") == steps:
            out["cells"] = old.get("cells", {})
    t_run = time.perf_counter()
    for m in motions:
        subjects = suite.prompts_for(m, args.seeds)
        ref = m.centers()
        inv = None
        lora_cache: dict[str, tuple] = {}
        for method in methods:
            key = f"{method}|{m.name}"
            if key in out["cells"]:
                continue
            cell: dict = {"train_s": 0.0}
            init, blend, h = None, 1.0, handle
            if method.startswith(("inversion", "md@")):
                if method.startswith("md@") and _md() is None:
                    out["cells"][key] = {"missing": "not available in this checkout"}
                    continue
                if inv is None:
                    inv = invert_video(handle, torch.from_numpy(m.frames()), m.caption, steps=args.sample_steps)
                p = float(method.split("@")[1])
                init, blend = (inv, p) if p > 0 else (None, 1.0)
            if method in TRAINED:
                need = TRAINED[method]
                if need not in lora_cache:
                    s = dict(steps)
                    if need == "cav" and "cav_temporal" in steps:
                        s["temporal"] = steps["cav_temporal"]
                    s["temporal_kw"] = temporal_kw
                    t = time.perf_counter()
                    lora_cache[need] = (train(handle, need, m, s), time.perf_counter() - t)
                lora, cell["train_s"] = lora_cache[need]
                if need == "md":
                    from cav_core.motiondirector import motiondirector_handle

                    # MotionDirector's LoRA acts on every step and both branches, its spatial LoRA off
                    h = motiondirector_handle(handle, lora)
                else:
                    h = handle.with_lora(lora)
            cell.update(evaluate(h, ref, subjects, suite.prompt_text, m.color, args.seeds, args.sample_steps,
                                 args.cfg, init, blend))
            out["cells"][key] = cell
            print(f"  {m.split} {m.name:20s} {method:14s} fidelity {cell['fidelity']:5.2f} (worst {cell['fid_min']:5.2f})"
                  f" colour {cell['color']:4.0%} shape {cell['shape']:4.0%} leak {cell['leak']:4.0%} spread "
                  f"{cell['spread']:4.1f}px variety {cell['variety']:.3f} train {cell['train_s']:5.0f}s", flush=True)
            if args.json:  # the table so far too: a killed run still leaves whole motions to report
                out["wall_s"] = time.perf_counter() - t_run
                out["table"] = table(out["cells"], methods, [m.name for m in motions])
                write_json(args.json, out)
    out["wall_s"] = time.perf_counter() - t_run
    out["table"] = table(out["cells"], methods, [m.name for m in motions])
    if args.json:
        write_json(args.json, out)
    return out


def table(cells: dict, methods: list[str], names: list[str]) -> dict:
    """Per method: the aggregate row over the motions (``None`` when the method is missing)."""
    rows = {}
    base = {n: cells.get(f"base|{n}") for n in names}
    for method in methods:
        got = [(n, cells[f"{method}|{n}"]) for n in names if f"{method}|{n}" in cells]
        if not got or "missing" in got[0][1]:
            rows[method] = None
            continue
        fid = np.array([c["fidelity"] for _, c in got])
        row = {"motions": len(got), "fidelity": float(fid.mean()), "worst": float(fid.min()),
               "share_ge_0.8": float((fid >= 0.8).mean())}
        for k in ("color", "shape"):
            row[k] = float(np.mean([c[k] for _, c in got]))
            b = [base[n][k] for n, _ in got if base.get(n)]
            row[f"{k}_vs_base"] = row[k] - float(np.mean(b)) if b else None
        for k in ("leak", "spread", "variety", "train_s"):
            row[k] = float(np.mean([c[k] for _, c in got]))
        rows[method] = row
    return rows


def print_table(out: dict) -> None:
    s = out["settings"]
    print(f"motion suite, {s['split']} half: {len(s['motions'])} motions ({', '.join(s['motions'])}); "
          f"{s['seeds']} seeds per motion {s['sample_seeds'][0]}..{s['sample_seeds'][-1]}, training seed "
          f"{s['train_seed']}; DDIM {s['sample_steps'] or 'default'} steps, cfg {s['cfg'] or 'default'}; "
          f"steps {s['steps']}; budget {s['budget_s'] or 'none (own defaults)'}; {s['machine']}; "
          f"run {out.get('wall_s', 0):.0f}s")
    print(f"{'method':14s} {'fid mean':>8s} {'worst':>6s} {'>=0.8':>6s} {'colour':>7s} {'vs base':>8s} {'shape':>6s}"
          f" {'vs base':>8s} {'leak':>5s} {'spread':>7s} {'variety':>8s} {'train s':>8s}")
    for method, r in out["table"].items():
        if r is None:
            print(f"{method:14s} not available in this checkout")
            continue
        vs = lambda v: "" if v is None else f"{v:+.0%}"  # noqa: E731
        print(f"{method:14s} {r['fidelity']:8.2f} {r['worst']:6.2f} {r['share_ge_0.8']:6.0%} {r['color']:7.0%}"
              f" {vs(r['color_vs_base']):>8s} {r['shape']:6.0%} {vs(r['shape_vs_base']):>8s} {r['leak']:5.0%}"
              f" {r['spread']:5.1f}px {r['variety']:8.3f} {r['train_s']:8.0f}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--motions", default=None, help="a count (the first N of the half) or comma-separated names")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None, help="write the cells and the table here (after every motion)")
    ap.add_argument("--resume", action="store_true", help="keep the cells --json already holds (same steps)")
    ap.add_argument("--budget-s", type=float, default=None, help="equal wall-clock training budget per method")
    ap.add_argument("--quick", action="store_true", help=f"CI-sized: {QUICK}")
    ap.add_argument("--absorber-steps", type=int, default=None)
    ap.add_argument("--temporal-steps", type=int, default=None)
    ap.add_argument("--md-steps", type=int, default=None)
    ap.add_argument("--temporal-kw", default=None,
                    help='extra train_temporal_lora settings as JSON, e.g. \'{"min_timestep": 0}\' (dev diagnosis)')
    ap.add_argument("--sample-steps", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--model", help="model folder (default: the embedded toy model)")
    return ap


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    if args.quick:
        args.motions = args.motions or str(QUICK["motions"])
        args.seeds = min(args.seeds, QUICK["seeds"])
        args.temporal_steps = args.temporal_steps or QUICK["temporal_steps"]
        args.absorber_steps = args.absorber_steps or QUICK["absorber_steps"]
        args.md_steps = args.md_steps or QUICK["md_steps"]
    out = run(args)
    print_table(out)
    return out


if __name__ == "__main__":
    main()
