"""The README's main job: learn a bundled clip's motion and replay it with a new subject.

On the toy model (the default) it also measures the result with the toy-world measures:
motion fidelity of the generated track to the reference, and the generated color/shape.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .errors import InputError
from .toyworld import ASSETS_DIR

DEFAULT_PROMPT = "a blue square {motion} on a gray background"
# (color, shape, background) for measuring motion transfer: each differs from the bundled
# clips' red subjects in color and from the circle clip's in shape or background too.
NEW_SUBJECTS = [("blue", "square", "gray"), ("green", "triangle", "gray"), ("yellow", "square", "black"),
                ("cyan", "triangle", "black"), ("magenta", "square", "gray"), ("white", "triangle", "gray"),
                ("blue", "triangle", "black"), ("green", "square", "black")]


def bundled_clip(name: str) -> tuple[Path, dict]:
    """Path and description (captions, centers) of a bundled reference clip."""
    video, meta = ASSETS_DIR / f"{name}.mp4", ASSETS_DIR / f"{name}.json"
    if not video.exists() or not meta.exists():
        names = sorted(p.stem for p in ASSETS_DIR.glob("*.mp4"))
        raise InputError(f"no bundled clip named {name!r}; choose one of {', '.join(names)}")
    return video, json.loads(meta.read_text())


def check_demo_args(args: argparse.Namespace) -> None:
    """Everything about the demo's arguments that can be checked before the model loads."""
    from .fileutil import check_output_path
    from .sample import check_seed
    from .train import _check_steps

    bundled_clip(args.clip)
    if args.steps is not None:
        try:
            _check_steps(args.steps)
        except InputError as e:
            raise InputError(f"--steps: {e}") from None
    check_seed(args.seed)
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir} is a file, not a folder; give a folder for the LoRA and videos")
    check_output_path(out_dir / f"tlora_{args.clip}.safetensors", 0, "--out-dir")


def run_demo(args: argparse.Namespace, handle) -> dict:
    from .adapter_files import save_adapter
    from .data import load_video_clip
    from .fileutil import ensure_folder, unique_path
    from .progress import printer
    from .sample import generate, latent_size
    from .toyworld import measures
    from .train import train_appearance_absorber, train_temporal_lora
    from .video_io import write_video

    video, meta = bundled_clip(args.clip)
    h, w, _, _ = latent_size(handle.base, None, None)
    frames = load_video_clip(video, num_frames=meta["num_frames"], fps=meta["fps"], size=(h, w))
    prompt = args.prompt or DEFAULT_PROMPT.format(motion=meta["motion_phrase"])
    check_demo_args(args)
    out_dir = ensure_folder(args.out_dir, "--out-dir")
    print(f"reference  {video.name}: {meta['captions']['full']!r}, {frames.shape[0]} frames")

    absorber = None
    if args.absorber != "none":
        print(f"stage 1    appearance absorber ({args.absorber}) on unordered frames, temporal layers bypassed")
        absorber = train_appearance_absorber(handle, frames, meta["captions"]["appearance"], kind=args.absorber,
                                             seed=args.seed, progress=printer("  absorber step"))
    print("stage 2    temporal LoRA on the whole clip" + (" with the absorber frozen" if absorber else ""))
    tlora = train_temporal_lora(handle, frames, meta["captions"]["full"], absorber=absorber, steps=args.steps,
                                seed=args.seed, progress=printer("  temporal step"))
    lora_path = save_adapter(unique_path(out_dir / f"tlora_{args.clip}.safetensors"), tlora, unique=True)

    print(f"generate   {prompt!r} (seed {args.seed}) with and without the T-LoRA")
    with_lora = generate(handle.with_lora(tlora.lora, 1.0, name=args.clip), prompt, seed=args.seed)[0]
    base = generate(handle, prompt, seed=args.seed)[0]
    paths = [write_video(unique_path(out_dir / f"{args.clip}_tlora.mp4"), with_lora, fps=meta["fps"], overwrite=False,
                         unique=True),
             write_video(unique_path(out_dir / f"{args.clip}_base.mp4"), base, fps=meta["fps"], overwrite=False,
                         unique=True)]
    report = {"lora": str(lora_path), "videos": [str(p) for p in paths]}
    if args.model is None:  # the toy model: its world can be measured
        ref_track = np.asarray(meta["centers"], dtype=np.float64)
        for label, clip in (("with T-LoRA", with_lora), ("base model", base)):
            arr = clip.numpy()
            fid = measures.motion_fidelity(measures.centroid_track(arr), ref_track)
            color, shape = measures.object_color(arr), measures.object_shape(arr)
            report[label] = {"motion_fidelity": fid, "color": color, "shape": shape}
            print(f"measured   {label:12s} motion fidelity to the reference {fid:+.2f}, color {color}, shape {shape}")
    print(f"wrote {lora_path}, {paths[0]}, {paths[1]}")
    return report
