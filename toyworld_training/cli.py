"""The command line of the trainer (``python -m toyworld_training``): options, their checks,
and the export of a checkpoint as a model folder with its training.json."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import torch

from cav_core.toyworld import spec

from . import __doc__ as _doc
from .recipe import DEFAULTS
from .trainer import Trainer

_VIDEO_SITTING = "with --extend-video or --restart-diffusion"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m toyworld_training", description=_doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/toy"), help="checkpoint folder (resumed if present)")
    ap.add_argument("--minutes", type=float, default=120.0, help="stop (with a checkpoint) after this long")
    ap.add_argument("--export", type=Path, help="write the model folder from the checkpoint and exit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--extend-video", type=int, default=0, metavar="STEPS",
                    help="train a finished model STEPS more video steps (fresh warm-up and schedule)")
    ap.add_argument("--extend-terminal", type=int, default=0, metavar="STEPS",
                    help="train a finished --v-zero-snr model STEPS steps at the last timestep only (pure noise), "
                         "full captions of moving clips: the caption learns which way the object goes")
    ap.add_argument("--restart-diffusion", type=int, nargs=2, default=None, metavar=("IMAGE", "VIDEO"),
                    help="keep a finished run's VAE and cached latents, restart the UNet and text encoder from "
                         "random weights and train IMAGE image then VIDEO video steps with the recipe options below")
    ap.add_argument("--high-noise-weight", type=float, default=0.0, metavar="W",
                    help=f"{_VIDEO_SITTING}: weigh video batches' loss by 1/SNR capped at W (an x0 loss at high "
                         "noise); on a v-prediction model, floor the weight at 1 where the SNR is below 1")
    ap.add_argument("--position-aux", type=float, default=0.0, metavar="W",
                    help=f"{_VIDEO_SITTING}: weight of a probe loss that reads each frame's index back from the "
                         "UNet's features, so frames know where they stand in the clip")
    ap.add_argument("--still-rows", type=int, default=0, metavar="K",
                    help=f"{_VIDEO_SITTING}: the first K rows of every video batch are still clips with full "
                         "captions, so 'still' prompts learn to hold the object in place")
    ap.add_argument("--opening-frames", type=int, default=0, metavar="N",
                    help="with --extend-terminal: every other step trains on the clips' first N frames, where the "
                         "direction is a static offset the caption can learn first")
    ap.add_argument("--text-pretrain", type=int, default=0, metavar="STEPS",
                    help="with --restart-diffusion: first train the fresh text encoder STEPS steps to tell the "
                         "caption's words apart, then keep it frozen for the sitting")
    ap.add_argument("--freeze-text", action="store_true",
                    help="with --restart-diffusion, --extend-video or --extend-terminal: leave the text encoder as "
                         "it is (a pretrained one keeps the direction words apart only while it is not trained along)")
    ap.add_argument("--v-zero-snr", action="store_true",
                    help=f"{_VIDEO_SITTING}: from this sitting on, train (and ship) v-prediction on a "
                         "zero-terminal-SNR schedule, so the start noise cannot choose the motion")
    ap.add_argument("--image-every", type=int, default=0, metavar="K",
                    help=f"{_VIDEO_SITTING}: every K-th step is an image batch (temporal layers bypassed)")
    for k, v in DEFAULTS.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v, help="run-wide (recorded as config)")
    return ap


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a combination of options before anything is trained (argparse exits with 2)."""
    video_sitting = bool(args.extend_video or args.restart_diffusion)
    if sum(map(bool, (args.extend_video, args.extend_terminal, args.restart_diffusion))) > 1:
        ap.error("--extend-video, --extend-terminal and --restart-diffusion are separate sittings; give one")
    for flag in ("v_zero_snr", "still_rows", "image_every", "high_noise_weight", "position_aux"):
        if getattr(args, flag) and not video_sitting:
            ap.error(f"--{flag.replace('_', '-')} is part of a video sitting's recipe: give it {_VIDEO_SITTING}")
    if not 0 <= args.still_rows <= args.video_batch:
        ap.error(f"--still-rows {args.still_rows}: give 0 to {args.video_batch} (the rows of a video batch, --video-batch)")
    if args.text_pretrain and not args.restart_diffusion:
        ap.error("--text-pretrain trains a fresh text encoder: give it with --restart-diffusion")
    if args.freeze_text and not (video_sitting or args.extend_terminal):
        ap.error("--freeze-text is part of a sitting: give it with --extend-video, --extend-terminal or --restart-diffusion")
    if args.opening_frames and not args.extend_terminal:
        ap.error("--opening-frames is part of a terminal sitting: give it with --extend-terminal")
    if not 0 <= args.opening_frames < spec.NUM_FRAMES:
        ap.error(f"--opening-frames {args.opening_frames}: give 1 to {spec.NUM_FRAMES - 1} (fewer than a clip's "
                 f"{spec.NUM_FRAMES} frames), or 0 for whole clips only")


def export(trainer: Trainer, folder: Path) -> int:
    """Write the checkpoint's model (its EMA weights if a diffusion stage is unfinished) and
    training.json: the run-wide config, the command that gives it, and every sitting."""
    from cav_core.model import save_t2v

    blob = trainer.load()
    if blob is None:
        print(f"no checkpoint in {trainer.work}", file=sys.stderr)
        return 2
    trainer.ema_weights_into_model(blob)
    save_t2v(trainer.c, folder)
    meta = {"spec_version": spec.SPEC_VERSION, "trained": trainer.state, "config": blob["cfg"],
            "command": "python -m toyworld_training " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in blob["cfg"].items()),
            "sittings": trainer.history}
    (folder / "training.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {folder} (stage {trainer.state['stage']} step {trainer.state['step']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = Trainer(args.work, {k: getattr(args, k) for k in DEFAULTS})
    if args.export:
        return export(trainer, args.export)
    check(ap, args)

    def on_signal(signum, frame):  # checkpoint and exit cleanly on Ctrl-C / kill
        trainer.stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    extend = ("video", args.extend_video) if args.extend_video \
        else ("terminal", args.extend_terminal) if args.extend_terminal \
        else ("image", args.restart_diffusion[0]) if args.restart_diffusion else None
    trainer.run(args.minutes, extend=extend, argv=list(argv if argv is not None else sys.argv[1:]),
                image_every=args.image_every, high_noise_weight=args.high_noise_weight,
                position_aux=args.position_aux, still_rows=args.still_rows, v_zero_snr=args.v_zero_snr,
                opening_frames=args.opening_frames, text_pretrain=args.text_pretrain, freeze_text=args.freeze_text,
                video_steps=args.restart_diffusion[1] if args.restart_diffusion else 0)
    return 0
