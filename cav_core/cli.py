"""``python -m cav_core`` — the same core as the ComfyUI nodes, from a shell (docs/DESIGN.md §6).

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
from .progress import printer as _progress


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
    except ImportError:
        pass
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


def _frames(args: argparse.Namespace, handle):
    from .data import load_video_clip
    from .sample import latent_size

    h, w, _, _ = latent_size(handle.base, args.height, args.width)
    return load_video_clip(args.video, num_frames=args.frames, fps=args.fps, start=args.start, size=(h, w))


def _out_path(path: Path, overwrite: bool) -> Path:
    from .fileutil import unique_path

    if path.suffix == "":
        raise CavError(f"--out {path}: give a file name with an extension")
    return path if overwrite else unique_path(path)


def _lora_arg(text: str) -> tuple[Path, float]:
    """``FILE[:strength]``; a Windows drive letter is not a strength."""
    head, sep, tail = text.rpartition(":")
    if sep and head and not tail.startswith("\\"):
        try:
            return Path(head), float(tail)
        except ValueError:
            pass
    return Path(text), 1.0


def _checkpoint_dir(args: argparse.Namespace, out: Path) -> Path:
    return args.checkpoint_dir or out.with_name(out.stem + ".checkpoint")


def _drop_default_checkpoint(args: argparse.Namespace, out: Path) -> None:
    """Once the result is safely written, the automatic checkpoint folder has done its job."""
    import shutil

    if args.checkpoint_dir is None:
        shutil.rmtree(_checkpoint_dir(args, out), ignore_errors=True)


def cmd_train_absorber(args: argparse.Namespace) -> int:
    from .adapter_files import save_adapter
    from .train import train_appearance_absorber

    handle = load_model(args)
    frames = _frames(args, handle)
    out = _out_path(args.out, args.overwrite)
    crop = tuple(float(x) for x in args.crop_range.split(",")) if args.crop_range else None
    absorber = train_appearance_absorber(
        handle, frames, args.prompt, kind=args.kind, steps=args.steps, rank=args.rank, num_tokens=args.tokens,
        init_word=args.init_word, crop_range=crop, lora_lr=args.lr, ti_lr=args.ti_lr, seed=args.seed,
        progress=_progress("absorber step"), checkpoint_dir=_checkpoint_dir(args, out), resume=args.resume)
    written = save_adapter(out, absorber, overwrite=args.overwrite)
    _drop_default_checkpoint(args, out)
    print(f"wrote {written} (absorber: {absorber.info['kind']}, final loss {absorber.info['final_loss']:.4f})")
    return 0


def cmd_train_temporal(args: argparse.Namespace) -> int:
    from .adapter_files import load_adapter, save_adapter
    from .train import train_temporal_lora

    handle = load_model(args)
    frames = _frames(args, handle)
    out = _out_path(args.out, args.overwrite)
    absorber = load_adapter(args.absorber) if args.absorber else None
    tlora = train_temporal_lora(
        handle, frames, args.prompt, absorber=absorber, steps=args.steps, rank=args.rank, lr=args.lr,
        seed=args.seed, progress=_progress("temporal step"), checkpoint_dir=_checkpoint_dir(args, out),
        resume=args.resume, min_timestep=args.min_timestep, recolor=args.recolor)
    written = save_adapter(out, tlora, overwrite=args.overwrite)
    _drop_default_checkpoint(args, out)
    print(f"wrote {written} (T-LoRA rank {args.rank}, {tlora.lora.num_params:,} parameters, "
          f"final loss {tlora.info['final_loss']:.4f})")
    return 0


def apply_lora_args(handle, temporal: list[str], spatial: list[str]):
    """The handle with each ``FILE[:strength]`` LoRA applied, in order."""
    from .lora_convert import load_any_lora

    for role, items in (("temporal", temporal), ("spatial", spatial)):
        for item in items:
            path, strength = _lora_arg(item)
            adapter = load_any_lora(path, unet=handle.base.unet, role=role)
            if adapter.lora is None:
                raise CavError(f"{path} holds no LoRA weights")
            if adapter.lora.role != role:
                raise CavError(f"{path} is a {adapter.lora.role} LoRA; pass it with --{adapter.lora.role}-lora")
            handle = handle.with_lora(adapter.lora, strength, name=path.stem)
    return handle


def cmd_generate(args: argparse.Namespace) -> int:
    from .sample import generate
    from .video_io import write_video

    handle = apply_lora_args(load_model(args), args.temporal_lora, args.spatial_lora)
    init = None
    if args.init_latents:
        from .adapter_files import read_safetensors

        tensors, _ = read_safetensors(args.init_latents)
        if "latents" not in tensors:
            raise CavError(f"{args.init_latents} holds no 'latents' tensor; make it with `invert`")
        init = tensors["latents"]
    out = _out_path(args.out, args.overwrite)
    videos = generate(handle, args.prompt, negative_prompt=args.negative, num_frames=args.frames,
                      height=args.height, width=args.width, steps=args.steps, guidance_scale=args.cfg,
                      seed=args.seed, scheduler=args.scheduler, batch_size=args.batch, init_latents=init,
                      init_blend=args.blend, progress=_progress("sampling step"))
    written = []
    for i, frames in enumerate(videos):
        target = out if len(videos) == 1 else out.with_name(f"{out.stem}_seed{args.seed + i}{out.suffix}")
        written.append(write_video(target if args.overwrite else _out_path(target, False), frames,
                                   fps=args.out_fps, overwrite=args.overwrite))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .fileutil import atomic_write
    from .sample import invert_video

    handle = load_model(args)
    frames = _frames(args, handle)
    out = _out_path(args.out, args.overwrite)
    latents = invert_video(handle, frames, args.prompt, steps=args.steps, progress=_progress("inversion step"))
    meta = {"prompt": args.prompt, "steps": str(args.steps), "base_model": handle.model_id}
    written = atomic_write(out, lambda tmp: save_file({"latents": latents.contiguous()}, str(tmp), metadata=meta),
                           overwrite=args.overwrite)
    print(f"wrote {written} (latents {tuple(latents.shape)})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a T-LoRA on a bundled reference clip and generate the motion with a new subject."""
    from .demo import run_demo

    run_demo(args, load_model(args))
    return 0


COMMANDS = {"info": cmd_info, "train-absorber": cmd_train_absorber, "train-temporal": cmd_train_temporal,
            "generate": cmd_generate, "invert": cmd_invert, "demo": cmd_demo}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cav_core", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", type=Path, help="diffusers text-to-video folder (default: embedded toy model)")
    common.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    common.add_argument("--dtype", default="auto", help="auto | fp32 | fp16 | bf16")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: add a counter)")
    video = argparse.ArgumentParser(add_help=False)
    video.add_argument("--video", type=Path, required=True, help="reference video (mp4, webm, mov, gif)")
    video.add_argument("--frames", type=int, default=16, help="frames taken from the video (default 16)")
    video.add_argument("--fps", type=float, default=8.0, help="rate the frames are taken at (default 8)")
    video.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    size = argparse.ArgumentParser(add_help=False)
    size.add_argument("--height", type=int, default=None, help="default: the model's native size")
    size.add_argument("--width", type=int, default=None)
    train = argparse.ArgumentParser(add_help=False)
    train.add_argument("--prompt", required=True)
    train.add_argument("--out", type=Path, required=True, help=".safetensors file to write")
    train.add_argument("--steps", type=int, default=None, help="default: see README 'Training defaults'")
    train.add_argument("--checkpoint-dir", type=Path, default=None, help="default: OUT.checkpoint next to --out")
    train.add_argument("--resume", action="store_true", help="continue the run saved in the checkpoint folder")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", parents=[common], help="load a model and print what was found")
    p = sub.add_parser("train-absorber", parents=[common, video, size, train],
                       help="Stage 1: appearance absorber (S-LoRA and/or textual inversion) from unordered frames")
    p.add_argument("--kind", choices=("lora", "ti", "both"), default="both")
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--tokens", type=int, default=4, help="textual-inversion tokens (2-6 in the paper)")
    p.add_argument("--init-word", default=None, help="word the tokens start from and replace in the caption")
    p.add_argument("--crop-range", default=None, help="patch-crop side as a fraction of the frame, e.g. 0.5,1.0")
    p.add_argument("--lr", type=float, default=None, help="S-LoRA learning rate")
    p.add_argument("--ti-lr", type=float, default=None, help="textual-inversion learning rate")
    p = sub.add_parser("train-temporal", parents=[common, video, size, train],
                       help="Stage 2: Temporal LoRA on the whole clip (absorber loaded and frozen)")
    p.add_argument("--absorber", type=Path, default=None, help="absorber .safetensors from train-absorber")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--min-timestep", type=int, default=None,
                   help="train only on noise levels from this timestep up (default: see README 'Training defaults')")
    p.add_argument("--no-recolor", dest="recolor", action="store_false",
                   help="train on the clip as it is, without its two hue-rotated, recaptioned copies")
    p = sub.add_parser("generate", parents=[common, size], help="sample a video (T-LoRAs and spatial LoRAs applied)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--out", type=Path, required=True, help="video file (.mp4, .webm or .gif)")
    p.add_argument("--temporal-lora", action="append", default=[], metavar="FILE[:STRENGTH]")
    p.add_argument("--spatial-lora", action="append", default=[], metavar="FILE[:STRENGTH]")
    p.add_argument("--init-latents", type=Path, default=None, help="latents .safetensors from `invert`")
    p.add_argument("--blend", type=float, default=1.0, help="weight of --init-latents vs fresh noise (0..1)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--scheduler", default="ddim", help="ddim | dpmpp_2m | euler | euler_ancestral")
    p.add_argument("--batch", type=int, default=1, help="videos with seeds seed, seed+1, ...")
    p.add_argument("--out-fps", type=float, default=8.0)
    p = sub.add_parser("invert", parents=[common, video, size], help="DDIM-invert a reference clip to start latents")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", type=Path, required=True, help=".safetensors file to write")
    p.add_argument("--steps", type=int, default=25)
    p = sub.add_parser("demo", parents=[common],
                       help="the README's main job: learn a bundled clip's motion, generate it with a new subject")
    p.add_argument("--clip", default="circle", help="bundled reference clip: circle | zigzag | bounce")
    p.add_argument("--prompt", default=None, help="new subject (default: a blue square on a gray background)")
    p.add_argument("--out-dir", type=Path, default=Path("outputs"), help="where the LoRA and videos go")
    p.add_argument("--steps", type=int, default=None, help="T-LoRA training steps")
    p.add_argument("--absorber", choices=("none", "lora", "ti", "both"), default="lora")
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
