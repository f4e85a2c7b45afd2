"""``python -m cav_core`` — the same core as the ComfyUI nodes, from a shell (DESIGN §5).

Every command prints progress, ends with one line saying what it wrote, and exits
non-zero with a one-line message on bad input (the project's own errors never show a
traceback)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import CavError


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)


def load_model(args: argparse.Namespace):
    """The model named by --model, or the embedded toy model."""
    from .model import load_t2v
    from .toyworld import toy_model_path

    path = args.model or toy_model_path()
    if path is None:
        raise CavError("no --model given and the embedded toy model is missing from this install; "
                       "pass --model PATH to a diffusers text-to-video folder")
    return load_t2v(path, device=args.device, dtype=args.dtype)


def cmd_info(args: argparse.Namespace) -> int:
    handle = load_model(args)
    print(handle.describe())
    from .layers import spatial_attention_modules, temporal_attention_modules, temporal_modules

    unet = handle.base.unet
    print(f"layers     {len(temporal_attention_modules(unet))} temporal attention Linear layers (T-LoRA targets), "
          f"{len(spatial_attention_modules(unet))} spatial (S-LoRA targets), "
          f"{len(temporal_modules(unet))} temporal modules bypassed in Stage 1")
    print(f"loaded {handle.model_id}")
    return 0


COMMANDS = {"info": cmd_info}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cav_core", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", type=Path, help="diffusers text-to-video folder (default: embedded toy model)")
    common.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    common.add_argument("--dtype", default="auto", help="auto | fp32 | fp16 | bf16")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", parents=[common], help="load a model and print what was found")
    sub.add_parser("demo", parents=[common], help="the README's main job")
    return ap


def main(argv: list[str] | None = None) -> int:
    _quiet()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS.get(args.command, cmd_info)(args)
    except CavError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
