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

from .errors import CavError, InputError, OutputError
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
    from .defaults import describe, profile_for, timestep_from_fraction

    d = profile_for(handle)
    print(f"defaults   profile {d.name!r} (what a setting left at its default takes; docs/DEFAULTS.md):")
    for line in describe(d):
        print(f"  {line}")
    n = handle.base.num_train_timesteps
    gate, cond = (timestep_from_fraction(d[k], n) for k in ("gate.min_timestep_fraction", "gate.cond_only_fraction"))
    print(f"gate       a T-LoRA acts on t >= {gate} (or from its training floor, if higher), "
          + (f"on the prompt's guidance branch only from t >= {cond}" if cond is not None else "on both branches"))
    print(f"loaded {handle.base.name or 'model'} (id {handle.model_id})")
    return 0


def _frames(args: argparse.Namespace, handle, video: Path | None = None):
    from .data import load_video_clip
    from .defaults import profile_for
    from .sample import latent_size

    d = profile_for(handle)
    h, w, _, _ = latent_size(handle.base, args.height, args.width)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        frames = load_video_clip(video or args.video, num_frames=d.resolve("video.frames", args.frames),
                                 fps=d.resolve("video.fps", args.fps), start=args.start, size=(h, w),
                                 fit=args.fit, hold_last=args.hold_last)
    for w_ in caught:  # the held last frame: one line, not a warning's file:line header
        print(f"note: {w_.message}", flush=True)
    return frames


ADAPTER_EXTS = (".safetensors",)
VIDEO_EXTS = (".mp4", ".webm", ".gif")


def _out_path(path: Path, overwrite: bool, exts: tuple[str, ...] = ADAPTER_EXTS, flag: str = "--out") -> Path:
    """``--out``, checked before any work: a file name (not a folder) with an extension that
    fits what the command writes, in a place that can be written; a counter name if taken."""
    from .fileutil import check_output_path, unique_path

    check_output_path(path, 0, flag)
    if path.suffix == "":
        raise InputError(f"{flag} {path}: give a file name with an extension ({' or '.join(exts)})")
    if path.suffix.lower() not in exts:
        raise InputError(f"{flag} {path}: this command writes {'videos' if exts == VIDEO_EXTS else 'safetensors'} "
                         f"files; the name must end in {' or '.join(exts)}")
    return path if overwrite else unique_path(path)


def _lora_arg(text: str) -> tuple[Path, float]:
    """``FILE[:strength]``; a Windows drive letter is not a strength, nor is a colon of a file that exists."""
    head, sep, tail = text.rpartition(":")
    if not sep or not head or tail.startswith(("\\", "/")) or Path(text).exists():
        return Path(text), 1.0
    try:
        return Path(head), float(tail)
    except ValueError:
        raise InputError(f"bad strength {tail!r} in {text!r}: give FILE or FILE:STRENGTH with a number, e.g. "
                         f"{head}:0.8") from None


def _crop_range(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--crop-range {text!r}: give two fractions of the frame side, LOW,HIGH, "
                         f"e.g. 0.5,1.0") from None
    return lo, hi


def _claim(args: argparse.Namespace, out: Path):
    """(out, checkpoint folder, lock) for a training command. Another run writing the same
    output right now holds its checkpoint folder: this run then takes the next counter name,
    so both results are kept. A user's folder named like the automatic one is refused."""
    from .fileutil import clean_stale_temps, numbered_path
    from .train import claim_checkpoint_dir, default_checkpoint_dir

    explicit = args.checkpoint_dir is not None
    candidate = out
    for _ in range(10000):
        ckpt = args.checkpoint_dir if explicit else default_checkpoint_dir(candidate)
        lock = claim_checkpoint_dir(ckpt, default=not explicit)
        if lock is not None:
            if candidate != out:
                print(f"note: another run is writing {out} right now; this run writes {candidate} "
                      f"(checkpoints in {ckpt})", flush=True)
            clean_stale_temps(candidate)  # left by a run on this output killed while saving
            return candidate, ckpt, lock
        if explicit:
            raise InputError(f"another run is using the checkpoint folder {ckpt} right now; wait for it to finish "
                             f"or pass another --checkpoint-dir")
        candidate = numbered_path(out, after=candidate)
    raise InputError(f"no free output name next to {out}")


def _save_result(args: argparse.Namespace, out: Path, ckpt: Path, adapter) -> Path:
    """Save the trained adapter (at the next free counter if the name was taken meanwhile);
    on failure the run's weights stay in the checkpoint folder for ``--resume``."""
    from .adapter_files import save_adapter
    from .train import CHECKPOINT_FILE, drop_checkpoint

    try:
        written = save_adapter(out, adapter, overwrite=args.overwrite, unique=not args.overwrite)
    except OutputError as e:
        if not (ckpt / CHECKPOINT_FILE).exists():
            raise
        raise OutputError(f"{e}; the trained weights are kept in {ckpt}: fix that and run the same command with "
                          f"--resume to write them") from None
    if args.checkpoint_dir is None:
        drop_checkpoint(ckpt)  # the automatic folder has done its job (only the tool's own files go)
    return written


def _snapshots_flag(args: argparse.Namespace) -> int:
    """--snapshot-every, checked before the model loads (against --steps when given; against the
    model's default steps again by the training itself)."""
    from .snapshots import check_snapshot_every

    steps = args.steps if isinstance(args.steps, int) and args.steps >= 1 else 100_000
    return check_snapshot_every(args.snapshot_every, steps, "--snapshot-every")


def _snapshot_printer(label: str):
    def show(shot) -> None:
        print(f"{label} snapshot: {shot.line()}", flush=True)

    return show


def _snapshot_count(every: int, steps: int | None) -> int:
    """How many snapshots a run takes (for the disk check; unknown default steps: a guess of 5)."""
    from .snapshots import snapshot_steps

    return len(snapshot_steps(every, steps)) if every and steps else 5 if every else 0


def _print_snapshots(adapter) -> None:
    """The list of snapshot files, with their motion scores when validating."""
    shots = adapter.info.get("snapshots")
    if shots is None:
        return
    print(f"snapshots ({len(shots)}):")
    for s in shots:
        score = "" if s["motion_score"] is None else f"  motion score {s['motion_score']:+.3f}"
        print(f"  step {s['step']:>6}  {s['file']}{score}")


def cmd_train_absorber(args: argparse.Namespace) -> int:
    from .fileutil import check_output_path
    from .train import expected_adapter_bytes, train_appearance_absorber

    out = _out_path(args.out, args.overwrite)
    crop = _crop_range(args.crop_range)
    every = _snapshots_flag(args)
    handle = load_model(args)
    out, ckpt, lock = _claim(args, out)
    try:
        frames = _frames(args, handle)
        size = expected_adapter_bytes(handle, "spatial" if args.kind != "ti" else None, args.rank,
                                      args.tokens if args.kind != "lora" else 0)
        # the adapter, its checkpoint (weights + AdamW state) and the snapshots
        check_output_path(out, size * (4 + _snapshot_count(every, args.steps)), "--out")
        absorber = train_appearance_absorber(
            handle, frames, args.prompt, kind=args.kind, steps=args.steps, rank=args.rank, num_tokens=args.tokens,
            init_word=args.init_word, crop_range=crop, lora_lr=args.lr, ti_lr=args.ti_lr, seed=args.seed,
            progress=_progress("absorber step"), checkpoint_dir=ckpt, resume=args.resume,
            height=frames.shape[1], width=frames.shape[2], snapshot_every=every, snapshot_to=out,
            on_snapshot=_snapshot_printer("absorber"))
        written = _save_result(args, out, ckpt, absorber)
    finally:
        lock.release()
    print(f"wrote {written} (absorber: {absorber.info['kind']}, final loss {absorber.info['final_loss']:.4f})")
    _print_snapshots(absorber)
    return 0


def _clip_args(args: argparse.Namespace) -> tuple[list[Path], list[str], list[Path]]:
    """The clips of train-temporal: ``--video`` repeated, with one ``--prompt``/``--caption``
    per video (or one for all) and one ``--absorber`` per video (or one for all, or none)."""
    videos, captions, absorbers = list(args.video), list(args.prompt), list(args.absorber or [])
    n = len(videos)
    if len(captions) not in (1, n):
        raise InputError(f"{n} --video but {len(captions)} --prompt/--caption: give one caption per --video, in the "
                         f"same order, or one caption for all of them")
    if len(absorbers) not in (0, 1, n):
        raise InputError(f"{n} --video but {len(absorbers)} --absorber: give one absorber per --video, in the same "
                         f"order, one for all of them, or none")
    return videos, captions * n if len(captions) == 1 else captions, absorbers


def cmd_train_temporal(args: argparse.Namespace) -> int:
    from .fileutil import check_output_path
    from .lora_convert import load_any_lora
    from .train import expected_adapter_bytes, train_temporal_lora

    from .train import TrainClip

    videos, captions, absorber_paths = _clip_args(args)
    out = _out_path(args.out, args.overwrite)
    every = _snapshots_flag(args)
    if args.validation_prompt and not every:
        raise InputError("--validation-prompt is sampled at each snapshot: give --snapshot-every N too")
    handle = load_model(args)
    loaded = {p: load_any_lora(p, unet=handle.base.unet, role="spatial") for p in dict.fromkeys(absorber_paths)}
    absorbers = [loaded[p] for p in absorber_paths] or [None]
    absorbers = absorbers * len(videos) if len(absorbers) == 1 else absorbers
    out, ckpt, lock = _claim(args, out)
    try:
        clips = [TrainClip(_frames(args, handle, v), c, a) for v, c, a in zip(videos, captions, absorbers)]
        frames = clips[0].frames
        check_output_path(out, expected_adapter_bytes(handle, "temporal", args.rank)
                          * (4 + _snapshot_count(every, args.steps)), "--out")
        tlora = train_temporal_lora(
            handle, frames, clips[0].caption, absorber=clips[0].absorber, steps=args.steps, rank=args.rank,
            lr=args.lr, seed=args.seed, progress=_progress("temporal step"), checkpoint_dir=ckpt,
            resume=args.resume, min_timestep=args.min_timestep, recolor={"on": True, "off": False}.get(args.recolor),
            rebackground={"on": True, "off": False}.get(args.rebackground),
            tint_white={"on": True, "off": False}.get(args.tint_white),
            height=frames.shape[1], width=frames.shape[2], ad_loss=args.ad_loss, more_clips=clips[1:],
            snapshot_every=every, snapshot_to=out, validation_prompt=args.validation_prompt,
            on_snapshot=_snapshot_printer("temporal"))
        written = _save_result(args, out, ckpt, tlora)
    finally:
        lock.release()
    print(f"wrote {written} (T-LoRA rank {tlora.info['rank']}, {tlora.lora.num_params:,} parameters, "
          f"final loss {tlora.info['final_loss']:.4f})")
    _print_snapshots(tlora)
    return 0


def apply_lora_args(handle, temporal: list[str], spatial: list[str], temporal_min_timestep: int | None = None,
                    temporal_cond_only_from: int | None = None):
    """The handle with each ``FILE[:strength]`` LoRA applied, in order; the T-LoRAs with
    the sampling gate given (None: the model's default, cav_core/defaults.py)."""
    from .handle import with_adapter
    from .lora_convert import load_any_lora

    for role, items in (("temporal", temporal), ("spatial", spatial)):
        for item in items:
            path, strength = _lora_arg(item)
            adapter = load_any_lora(path, unet=handle.base.unet, role=role)
            gate = (temporal_min_timestep, temporal_cond_only_from) if role == "temporal" else (None, None)
            fix = f"pass it with --{adapter.lora.role}-lora" if adapter.lora is not None else "it holds no LoRA weights"
            handle = with_adapter(handle, adapter, strength, role, name=path.stem, min_timestep=gate[0],
                                  cond_only_from=gate[1], what=str(path), fix=fix)
    return handle


def cmd_generate(args: argparse.Namespace) -> int:
    from .fileutil import check_output_path
    from .sample import check_seed, generate
    from .video_io import check_fps, write_video

    out = _out_path(args.out, args.overwrite, VIDEO_EXTS)
    fps = None if args.out_fps is None else check_fps(args.out_fps, "--out-fps")
    if args.blend is not None and args.init_latents is None:
        raise InputError("--blend weighs --init-latents against fresh noise; give --init-latents too, or leave "
                         "--blend out")
    blend = args.blend  # None: the model's default (cav_core/defaults.py)
    if blend is not None and not 0.0 <= blend <= 1.0:
        raise InputError(f"--blend must be in 0..1, got {blend:g}")
    check_seed(args.seed, count=args.batch)
    for item in args.temporal_lora + args.spatial_lora:
        _lora_arg(item)  # a bad strength is reported before the model loads
    from .defaults import profile_for

    handle = apply_lora_args(load_model(args), args.temporal_lora, args.spatial_lora, args.temporal_min_timestep,
                             args.temporal_cond_only_from)
    init = None
    if args.init_latents:
        from .adapter_files import read_safetensors

        tensors, _ = read_safetensors(args.init_latents)
        if "latents" not in tensors:
            raise CavError(f"{args.init_latents} holds no 'latents' tensor; make it with `invert`")
        init = tensors["latents"]
    from .sample import latent_size

    h, w, _, _ = latent_size(handle.base, args.height, args.width)
    n_frames = profile_for(handle).resolve("sample.frames", args.frames)
    check_output_path(out, args.batch * n_frames * h * w * 3, "--out")  # raw frames: more than any encoding
    videos = generate(handle, args.prompt, negative_prompt=args.negative, num_frames=args.frames,
                      height=args.height, width=args.width, steps=args.steps, guidance_scale=args.cfg,
                      seed=args.seed, scheduler=args.scheduler, batch_size=args.batch, init_latents=init,
                      init_blend=blend, progress=_progress("sampling step"))
    written = []
    for i, frames in enumerate(videos):
        target = out if len(videos) == 1 else out.with_name(f"{out.stem}_seed{args.seed + i}{out.suffix}")
        written.append(write_video(target if args.overwrite else _out_path(target, False, VIDEO_EXTS), frames,
                                   fps=profile_for(handle).resolve("video.fps", fps), overwrite=args.overwrite, unique=not args.overwrite))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .defaults import profile_for
    from .fileutil import atomic_write, check_output_path
    from .sample import invert_video

    out = _out_path(args.out, args.overwrite)
    handle = load_model(args)
    frames = _frames(args, handle)
    check_output_path(out, 4 * handle.base.latent_channels * frames.shape[0] * frames.shape[1] * frames.shape[2]
                      // handle.base.vae_scale_factor ** 2, "--out")
    steps = profile_for(handle).resolve("sample.steps", args.steps)
    latents = invert_video(handle, frames, args.prompt, steps=steps, progress=_progress("inversion step"))
    meta = {"prompt": args.prompt, "steps": str(steps), "base_model": handle.model_id}
    written = atomic_write(out, lambda tmp: save_file({"latents": latents.contiguous()}, str(tmp), metadata=meta),
                           overwrite=args.overwrite, unique=not args.overwrite)
    print(f"wrote {written} (latents {tuple(latents.shape)})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a T-LoRA on a bundled reference clip and generate the motion with a new subject."""
    from .demo import check_demo_args, run_demo

    check_demo_args(args)  # before the model loads and Stage 1 starts
    run_demo(args, load_model(args))
    return 0


PER_MODEL = "default: per model, see `info`"
COMMANDS = {"info": cmd_info, "train-absorber": cmd_train_absorber, "train-temporal": cmd_train_temporal,
            "generate": cmd_generate, "invert": cmd_invert, "demo": cmd_demo}


def _video_parent(video: argparse.ArgumentParser, fit_modes: tuple[str, ...],
                  repeat: bool = False) -> argparse.ArgumentParser:
    """The reference-video flags (``repeat``: ``--video`` may be given several times)."""
    if repeat:
        video.add_argument("--video", type=Path, required=True, action="append",
                           help="reference video (mp4, webm, mov, gif); repeat it to learn one motion from several "
                                "clips (one clip drawn per training step)")
    else:
        video.add_argument("--video", type=Path, required=True, help="reference video (mp4, webm, mov, gif)")
    video.add_argument("--frames", type=int, default=None, help=f"frames taken from the video ({PER_MODEL})")
    video.add_argument("--fps", type=float, default=None, help=f"rate the frames are taken at ({PER_MODEL})")
    video.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    video.add_argument("--fit", choices=fit_modes, default="crop",
                       help="another shape than the model's: crop the centre (default), pad with black bars, "
                            "or stretch")
    video.add_argument("--hold-last", action="store_true",
                       help="if the video ends before --frames at --fps are taken, repeat its last frame "
                            "(default: stop with an error naming its duration)")
    return video


def _train_parent(train: argparse.ArgumentParser, repeat: bool = False) -> argparse.ArgumentParser:
    """The training flags (``repeat``: one ``--prompt``/``--caption`` per ``--video``)."""
    if repeat:
        train.add_argument("--prompt", "--caption", dest="prompt", required=True, action="append",
                           help="caption of the reference; repeat it once per --video (or give one for all)")
    else:
        train.add_argument("--prompt", required=True)
    train.add_argument("--out", type=Path, required=True, help=".safetensors file to write")
    train.add_argument("--steps", type=int, default=None, help=PER_MODEL)
    train.add_argument("--checkpoint-dir", type=Path, default=None, help="default: OUT.checkpoint next to --out")
    train.add_argument("--resume", action="store_true", help="continue the run saved in the checkpoint folder")
    train.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                       help="also save the adapter every N steps and at the end, next to --out as "
                            "OUT_step00300.safetensors, to pick the best one (default 0: no snapshots)")
    return train


def build_parser() -> argparse.ArgumentParser:
    from .video_io import FIT_MODES  # torch-free: --help stays fast

    ap = argparse.ArgumentParser(prog="python -m cav_core", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", type=Path, help="diffusers text-to-video folder (default: embedded toy model)")
    common.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    common.add_argument("--dtype", default="auto", help="auto | fp32 | fp16 | bf16")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: add a counter)")
    video = _video_parent(argparse.ArgumentParser(add_help=False), FIT_MODES)
    videos = _video_parent(argparse.ArgumentParser(add_help=False), FIT_MODES, repeat=True)
    size = argparse.ArgumentParser(add_help=False)
    size.add_argument("--height", type=int, default=None,
                      help="pixels to train, invert or generate at; default: the model's native size")
    size.add_argument("--width", type=int, default=None)
    train = _train_parent(argparse.ArgumentParser(add_help=False))
    train_many = _train_parent(argparse.ArgumentParser(add_help=False), repeat=True)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", parents=[common], help="load a model, print what was found and the defaults it takes")
    p = sub.add_parser("train-absorber", parents=[common, video, size, train],
                       help="Stage 1: appearance absorber (S-LoRA and/or textual inversion) from unordered frames")
    p.add_argument("--kind", choices=("lora", "ti", "both"), default="both")
    p.add_argument("--rank", type=int, default=None, help=f"S-LoRA rank ({PER_MODEL})")
    p.add_argument("--tokens", type=int, default=None, help=f"textual-inversion tokens (2-6 in the paper; {PER_MODEL})")
    p.add_argument("--init-word", default=None, help="word the tokens start from and replace in the caption")
    p.add_argument("--crop-range", default=None,
                   help=f"patch-crop side as a fraction of the frame, e.g. 0.5,1.0 ({PER_MODEL})")
    p.add_argument("--lr", type=float, default=None, help=f"S-LoRA learning rate ({PER_MODEL})")
    p.add_argument("--ti-lr", type=float, default=None, help=f"textual-inversion learning rate ({PER_MODEL})")
    p = sub.add_parser("train-temporal", parents=[common, videos, size, train_many],
                       help="Stage 2: Temporal LoRA on the whole clip (absorber loaded and frozen)")
    p.add_argument("--absorber", type=Path, action="append", default=None,
                   help="absorber .safetensors from train-absorber; repeat it once per --video (or give one for all)")
    p.add_argument("--rank", type=int, default=None, help=f"T-LoRA rank ({PER_MODEL})")
    p.add_argument("--lr", type=float, default=None, help=f"T-LoRA learning rate ({PER_MODEL})")
    p.add_argument("--min-timestep", type=int, default=None,
                   help=f"train only on noise levels from this timestep up ({PER_MODEL}; 300 was measured on the "
                        f"toy model only)")
    p.add_argument("--recolor", choices=("default", "on", "off"), default="default",
                   help="also train on two hue-rotated copies of the clip with the caption's colors rotated; "
                        "skipped where that would make the caption false (default: on for the toy model, where "
                        "it was measured, off for other models)")
    p.add_argument("--no-recolor", dest="recolor", action="store_const", const="off", help="same as --recolor off")
    p.add_argument("--rebackground", choices=("default", "on", "off"), default="default",
                   help="also train on the clip (and its recolored copies) moved onto the other plain background "
                        "(black or gray), with the caption's background word swapped; skipped unless the caption names one and the clip's "
                        "border is that colour (default: per model, see `info`; measured on the toy model only)")
    p.add_argument("--tint-white", choices=("default", "on", "off"), default="default",
                   help="with recolor: a white object on a plain background is tinted red first, so that it is "
                        "rotated too (white, red, green, blue views); skipped unless the clip's border is the "
                        "plain background its caption names (default: per model, see `info`; toy model only)")
    p.add_argument("--validation-prompt", default=None,
                   help="with --snapshot-every: sample this prompt at each snapshot (same seed and noise each "
                        "time) and print its motion score against the reference (cav_core.metrics)")
    p.add_argument("--ad-loss", type=float, default=None, metavar="W",
                   help=f"weight of the appearance-debiased temporal loss (MotionDirector's; {PER_MODEL}, 0 = off)")
    p = sub.add_parser("generate", parents=[common, size], help="sample a video (T-LoRAs and spatial LoRAs applied)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--out", type=Path, required=True, help="video file (.mp4, .webm or .gif)")
    p.add_argument("--temporal-lora", action="append", default=[], metavar="FILE[:STRENGTH]")
    p.add_argument("--spatial-lora", action="append", default=[], metavar="FILE[:STRENGTH]")
    p.add_argument("--init-latents", type=Path, default=None, help="latents .safetensors from `invert`")
    p.add_argument("--blend", type=float, default=None,
                   help=f"weight of --init-latents vs fresh noise (0..1; {PER_MODEL})")
    p.add_argument("--frames", type=int, default=None, help=PER_MODEL)
    p.add_argument("--steps", type=int, default=None, help=PER_MODEL)
    p.add_argument("--cfg", type=float, default=None, help=f"classifier-free guidance scale ({PER_MODEL})")
    p.add_argument("--scheduler", default=None, help=f"ddim | dpmpp_2m | euler | euler_ancestral ({PER_MODEL})")
    p.add_argument("--batch", type=int, default=1, help="videos with seeds seed, seed+1, ...")
    p.add_argument("--out-fps", type=float, default=None, help=PER_MODEL)
    p.add_argument("--temporal-min-timestep", type=int, default=None,
                   help=f"apply the T-LoRAs only on sampling steps at this timestep or above ({PER_MODEL}: 300 on "
                        f"the toy model, where it was measured, 0 on others)")
    p.add_argument("--temporal-cond-only-from", type=int, default=None,
                   help=f"from this timestep up, apply the T-LoRAs to the prompt's guidance branch only; 1000: "
                        f"never ({PER_MODEL}: 600 on the toy model, never on others)")
    p = sub.add_parser("invert", parents=[common, video, size], help="DDIM-invert a reference clip to start latents")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", type=Path, required=True, help=".safetensors file to write")
    p.add_argument("--steps", type=int, default=None, help=f"{PER_MODEL} (use the sampling steps)")
    p = sub.add_parser("demo", parents=[common],
                       help="the README's main job: learn a bundled clip's motion, generate it with a new subject")
    p.add_argument("--clip", default="circle", help="bundled reference clip: circle | zigzag | bounce")
    p.add_argument("--prompt", default=None, help="new subject (default: a blue square on a gray background)")
    p.add_argument("--out-dir", type=Path, default=Path("outputs"), help="where the LoRA and videos go")
    p.add_argument("--steps", type=int, default=None, help="T-LoRA training steps")
    p.add_argument("--absorber", choices=("none", "lora", "ti", "both"), default="lora")
    return ap


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    _quiet()
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _show_warning  # one line, like the errors
        try:
            return COMMANDS.get(args.command, cmd_info)(args)
        except CavError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # an OS error the core did not word: still one line naming the path
            from .fileutil import os_error_message

            print(f"error: {os_error_message(e, e.filename) if e.filename else e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
