"""The one place where the pack touches ComfyUI internals: model folders (``folder_paths``),
the default device (``comfy.model_management``), the progress bar with previews
(``comfy.utils.ProgressBar``) and Cancel (``throw_exception_if_processing_interrupted``).

cav_core never imports ComfyUI; the nodes hand it :func:`progress` callbacks built here.
Outside ComfyUI (the pack's tests, scripts) every function falls back to plain
behaviour: folders under :data:`STANDALONE_ROOT` laid out like a ComfyUI install
(``models/diffusers``, ``models/loras``, ``input``, ``output``), no progress bar, no
interrupt. Everything heavy is imported inside functions."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("customize_a_video")

#: Root of the ComfyUI-like folder layout used when ComfyUI is not running.
STANDALONE_ROOT = Path(os.environ.get("CAV_STANDALONE_ROOT", ".")).resolve()

TOY_MODEL = "toy (embedded)"
"""Model list entry for the tiny pretrained toy model shipped inside the pack."""

ADAPTER_EXTENSIONS = (".safetensors", ".sft")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi", ".m4v")
OUTPUT_TAG = " [output]"  # ComfyUI's annotation for files in the output folder


def _folder_paths():
    try:
        import folder_paths  # ComfyUI's module; only present inside ComfyUI

        return folder_paths
    except ImportError:
        return None


def _folders(kind: str) -> list[Path]:
    fp = _folder_paths()
    if fp is not None:
        try:
            return [Path(p) for p in fp.get_folder_paths(kind)]
        except KeyError:
            pass
    return [STANDALONE_ROOT / "models" / kind]


def output_dir() -> Path:
    fp = _folder_paths()
    return Path(fp.get_output_directory()) if fp is not None else STANDALONE_ROOT / "output"


def input_dir() -> Path:
    fp = _folder_paths()
    return Path(fp.get_input_directory()) if fp is not None else STANDALONE_ROOT / "input"


# --------------------------------------------------------------------------- models


def diffusers_models() -> list[str]:
    """Folders under ComfyUI's ``models/diffusers`` holding a ``model_index.json`` (found by
    walking, as ComfyUI's own DiffusersLoader does), relative to their search path."""
    found: list[str] = []
    for base in _folders("diffusers"):
        if base.is_dir():
            for root, _dirs, files in os.walk(base, followlinks=True):
                if "model_index.json" in files:
                    found.append(os.path.relpath(root, base).replace(os.sep, "/"))
    return sorted(set(found))


def resolve_model(name: str, path: str = "") -> Path:
    """The folder to load: an explicit ``path`` wins, then the toy model, then a name from
    :func:`diffusers_models`."""
    from cav_core.errors import ModelLoadError

    if path and path.strip():
        return Path(path.strip()).expanduser()
    if name == TOY_MODEL:
        from cav_core.toyworld import toy_model_path

        p = toy_model_path()
        if p is None:
            raise ModelLoadError("the embedded toy model is not in this installation of the pack "
                                 "(cav_core/toyworld/model/); reinstall the pack or pick another model")
        return p
    for base in _folders("diffusers"):
        candidate = base / name
        if (candidate / "model_index.json").is_file():
            return candidate
    raise ModelLoadError(f"model {name!r} not found under {[str(b) for b in _folders('diffusers')]}; put the "
                         f"diffusers folder (with model_index.json) there, or give its full path in 'path'")


def device(choice: str) -> Any:
    """'default' is ComfyUI's compute device (``model_management.get_torch_device()``);
    outside ComfyUI it is cav_core's 'auto' (CUDA, then MPS, then CPU)."""
    if choice != "default":
        return choice
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except ImportError:
        return "auto"


# --------------------------------------------------------------------------- LoRA / adapter files


def _safetensors_under(base: Path) -> list[str]:
    out = []
    if base.is_dir():
        for root, _dirs, files in os.walk(base, followlinks=True):
            for f in files:
                if f.lower().endswith(ADAPTER_EXTENSIONS) and not f.startswith("."):
                    out.append(os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/"))
    return out


def lora_names(include_output: bool = True) -> list[str]:
    """``.safetensors`` files in ComfyUI's ``loras`` folders, then those under
    ``output/loras`` (where the save node writes by default) tagged ``[output]``."""
    names: list[str] = []
    fp = _folder_paths()
    if fp is not None:
        names = [n for n in fp.get_filename_list("loras") if n.lower().endswith(ADAPTER_EXTENSIONS)]
    else:
        for base in _folders("loras"):
            names += _safetensors_under(base)
    names = sorted(set(names))
    if include_output:
        names += sorted(n + OUTPUT_TAG for n in _safetensors_under(output_dir() / "loras"))
    return names


def resolve_lora(name: str) -> Path:
    from cav_core.errors import AdapterError

    if name.endswith(OUTPUT_TAG):
        p = output_dir() / "loras" / name[: -len(OUTPUT_TAG)]
        if p.is_file():
            return p
    else:
        fp = _folder_paths()
        full = fp.get_full_path("loras", name) if fp is not None else None
        if full:
            return Path(full)
        for base in _folders("loras"):
            if (base / name).is_file():
                return base / name
    raise AdapterError(f"LoRA file {name!r} not found in models/loras or output/loras; refresh the list "
                       f"(press R in ComfyUI) or check the file name")


def lora_save_dir(location: str) -> Path:
    """'output/loras' (ComfyUI's place for trained LoRAs) or 'models/loras' (first loras folder:
    listed by every LoRA loader right away)."""
    if location == "models/loras":
        return _folders("loras")[0]
    return output_dir() / "loras"


# --------------------------------------------------------------------------- videos


def bundled_clips() -> dict[str, Path]:
    """The reference clips shipped with the toy world: name -> mp4."""
    from cav_core.toyworld import ASSETS_DIR

    return {p.stem: p for p in sorted(ASSETS_DIR.glob("*.mp4"))}


def input_videos() -> list[str]:
    base = input_dir()
    if not base.is_dir():
        return []
    return sorted(f.name for f in base.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)


def resolve_video(choice: str, path: str = "") -> Path:
    """An explicit ``path`` (absolute, or relative to ComfyUI's input folder) wins; else a
    bundled clip name, else a file in the input folder."""
    from cav_core.errors import VideoReadError

    if path and path.strip():
        p = Path(path.strip()).expanduser()
        if not p.is_absolute() and (input_dir() / p).exists():
            p = input_dir() / p
        return p
    clips = bundled_clips()
    if choice in clips:
        return clips[choice]
    p = input_dir() / choice
    if p.is_file():
        return p
    raise VideoReadError(f"reference video {choice!r} is neither a bundled clip ({', '.join(clips)}) nor a file in "
                         f"{input_dir()}; give a full path in 'path'")


def file_stamp_of(resolve: Callable[..., Path], *args: Any) -> str:
    """Cache key for a node reading a file (its ``fingerprint_inputs``): path, mtime and size,
    so ComfyUI re-runs the node when the file changes and reuses its output otherwise. A
    file that cannot be resolved gives a stamp too; the node's run then reports the error."""
    try:
        p = resolve(*args)
        st = p.stat()
        return f"{p}:{st.st_mtime_ns}:{st.st_size}"
    except Exception as e:  # noqa: BLE001 - reported properly when the node runs
        return f"unresolved:{args}:{type(e).__name__}"


# --------------------------------------------------------------------------- autograd


@contextlib.contextmanager
def autograd_enabled():
    """ComfyUI executes every node under ``torch.inference_mode()``. Training needs autograd,
    and tensors that take part in it (the frozen base weights included: backward reads them)
    must not be inference tensors: the model loader and the training nodes run inside this."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        yield


# --------------------------------------------------------------------------- progress / cancel


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def preview_image(frames: Any, min_side: int = 256, max_side: int = 512):
    """A PIL grid of up to 16 frames (F,H,W,C float 0..1), nearest-upscaled so tiny (toy)
    frames are visible; ComfyUI shows it on the node while it runs."""
    import numpy as np
    from PIL import Image

    a = frames.detach().float().cpu().clamp(0, 1).numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    a = a[:: max(1, math.ceil(a.shape[0] / 16))][:16]
    n, h, w, c = a.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = a[i][..., :3] if c >= 3 else np.repeat(a[i], 3, axis=-1)
    img = Image.fromarray((grid * 255).round().astype(np.uint8))
    side = max(img.width, img.height, 1)
    scale = max(1, min(math.ceil(min_side / side), max_side // side))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def progress(label: str, log_every_s: float = 5.0) -> Callable[[int, int, dict], None]:
    """A cav_core ``progress(step, total, info)`` callback that drives ComfyUI's progress bar
    (with a preview when ``info`` carries "preview" frames), logs a line now and then
    (step, loss, ETA) and any ``info["note"]`` (e.g. recolor skipped) as a warning, and raises
    on Cancel so cav_core stops and writes nothing."""
    state: dict[str, Any] = {"bar": None, "last_log": 0.0}
    try:
        import comfy.utils as cu
    except ImportError:
        cu = None

    def callback(step: int, total: int, info: dict | None = None) -> None:
        check_interrupt()
        info = info or {}
        if info.get("note"):
            log.warning("Customize-A-Video %s: %s", label, info["note"])
        preview = None
        if info.get("preview") is not None and cu is not None:
            try:
                from comfy.cli_args import args

                preview = ("JPEG", preview_image(info["preview"]), args.preview_size)
            except Exception as e:  # a preview must never break a run
                log.debug("preview failed: %s", e)
        if cu is not None:
            if state["bar"] is None:
                state["bar"] = cu.ProgressBar(max(int(total), 1))
            state["bar"].update_absolute(int(step), max(int(total), 1), preview)
        now = time.monotonic()
        if step <= 1 or step >= total or now - state["last_log"] >= log_every_s:
            state["last_log"] = now
            extra = "".join(f" {k} {info[k]:.4g}" for k in ("loss", "eta_s") if isinstance(info.get(k), (int, float)))
            stage = f" [{info['stage']}]" if info.get("stage") else ""
            log.info("Customize-A-Video %s%s: step %d/%d%s", label, stage, step, total, extra)

    return callback
