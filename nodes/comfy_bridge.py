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
import weakref
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
    p = annotated_input_file(choice)
    if p is not None:
        return p
    raise VideoReadError(f"reference video {choice!r} ('video' of Load Reference Video) is neither a bundled clip "
                         f"({', '.join(clips)}) nor a file in {input_dir()}: upload it with the node's upload button, "
                         f"pick another, give a full path in 'path', or connect a VIDEO to video_input")


def annotated_input_file(choice: str) -> Path | None:
    """A combo value naming a file the way ComfyUI's upload widget writes it (``clip.mp4``,
    ``pasted/clip.mp4``, or annotated ``clip.mp4 [output]``): its path if it is a file."""
    fp = _folder_paths()
    if fp is not None and hasattr(fp, "get_annotated_filepath"):
        try:
            p = Path(fp.get_annotated_filepath(choice))
        except Exception:  # noqa: BLE001 - an unknown annotation: not a file of ComfyUI's folders
            p = None
        if p is not None and p.is_file():
            return p
    p = input_dir() / choice
    return p if p.is_file() else None


def video_input_source(video: Any) -> tuple[Any, Any, float | None]:
    """What to decode of a ComfyUI VIDEO (``comfy_api`` VideoInput): ``(source, None, None)``
    with the file path or in-memory file it streams from (VideoFromFile and the like), so
    cav_core's one decoder reads it as it reads a file; else ``(None, images, frame_rate)``
    from ``get_components()`` (VideoFromComponents: frames made in the graph, e.g. by Create
    Video). The base class's ``get_stream_source`` is not asked: for frames it would
    re-encode them lossily (docs/DESIGN.md, section 7)."""
    from cav_core.errors import InputError

    getter = None
    for klass in type(video).__mro__:
        if "get_stream_source" in vars(klass):
            getter = None if klass.__name__ == "VideoInput" else video.get_stream_source
            break
    if getter is not None:
        source = getter()
        if isinstance(source, (str, os.PathLike)):
            return Path(source), None, None
        if hasattr(source, "read") and hasattr(source, "seek"):
            return source, None, None
    if not hasattr(video, "get_components"):
        raise InputError(f"video_input of Load Reference Video must be a VIDEO (e.g. from Load Video), got "
                         f"{type(video).__name__}; connect a VIDEO output or disconnect it to use 'video'")
    parts = video.get_components()
    return None, parts.images, float(parts.frame_rate)


def link_type_problem(node: str, expected: dict[str, str], received: dict[str, str]) -> str | None:
    """A message for the first linked input whose type ``received`` (``input_types`` of a
    ``validate_inputs``) does not fit ``expected``, else None. ComfyUI skips its own link
    check for a node whose validate_inputs takes ``input_types``, so such a node calls this;
    the rule is ComfyUI's own (``comfy_execution.validation``) when it is there."""
    try:
        from comfy_execution.validation import validate_node_input
    except ImportError:
        def validate_node_input(got: str, want: str) -> bool:
            return got == want or "*" in (got, want)
    for name, got in received.items():
        want = expected.get(name)
        if want is not None and not validate_node_input(got, want):
            return (f"{node}: input {name} takes {want}, but an output of type {got} is connected to it; connect "
                    f"a {want} output there")
    return None


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


# --------------------------------------------------------------------------- GPU memory shared with ComfyUI
#
# cav_core calls memory.before_run at the start of every training and sampling run and asks
# memory.offload_codecs where the text encoder and VAE live (cav_core/memory.py); the hooks
# below answer for ComfyUI. The model is also entered in comfy.model_management's list of
# loaded models (current_loaded_models, through load_models_gpu) as a T2VModelPatcher, so
# that when another model needs the room, ComfyUI's free_memory / unload_all_models (the
# "Unload models" button too) offload ours like one of its own. That list is the only
# offload path ComfyUI 0.3.64 has: free_memory walks it and calls, through LoadedModel,
# partially_unload or detach on each entry's patcher; nothing else is asked to give memory.

#: Device types whose memory is shared with ComfyUI's models. CPU runs (``--cpu``, the
#: test server) never free or register anything; MPS memory is the system's.
MANAGED_DEVICE_TYPES = ("cuda",)
#: Training asks ComfyUI for this much more than cav_core.device_guard's estimate, which
#: errs on the low side (its module doc: "think +-50%"): an out-of-memory error mid-run
#: costs the steps done, unloading one more model costs a reload.
TRAINING_MARGIN = 1.5


def _model_management():
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return mm


def codecs_offloaded() -> bool:
    """ComfyUI was started with ``--lowvram`` or ``--novram``: the text encoder and VAE stay
    on the CPU between their encodes (``comfy.model_management.vram_state``)."""
    mm = _model_management()
    states = getattr(mm, "VRAMState", None)
    return states is not None and getattr(mm, "vram_state", None) in (states.LOW_VRAM, states.NO_VRAM)


def _module_bytes(module) -> int:
    return sum(t.nelement() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _on(module, device) -> bool:
    p = next(module.parameters(), None)
    return p is not None and p.device == device


class T2VModelPatcher:
    """Our model as ComfyUI's model management sees a model: the part of ``ModelPatcher``'s
    interface that comfy.model_management 0.3.64 uses on the entries of current_loaded_models
    (through ``LoadedModel``: sizes, load, partial unload, detach). A real ModelPatcher does
    not fit: it sets attributes such as ``device`` on the module, a read-only property of
    diffusers models, and loads weights layer by layer for ComfyUI's own cast layers.

    It covers the UNet, and the text encoder and VAE unless they are offloaded between
    uses (:func:`codecs_offloaded`). Loading is all or nothing: a diffusers module cannot run
    with part of its weights elsewhere. It holds the UNet weakly, so that it lives exactly as
    long as the model (it is kept in ``_PATCHERS`` under the UNet) and ComfyUI never sees a
    dead patcher of a live model."""

    def __init__(self, components: Any, load_device: Any, offload_device: Any) -> None:
        self._unet = weakref.ref(components.unet)
        self._codecs = (components.text_encoder, components.vae)
        self.load_device, self.offload_device = load_device, offload_device
        self.parent = None  # not a clone of another patcher
        self._sizes: dict[int, int] = {}

    @property
    def model(self):
        """The UNet (LoadedModel keeps a weak reference and a finalizer on it)."""
        return self._unet()

    def _managed(self) -> list:
        unet = self.model
        return ([unet] if unet is not None else []) + ([] if codecs_offloaded() else list(self._codecs))

    def _bytes(self, module) -> int:
        if id(module) not in self._sizes:
            self._sizes[id(module)] = _module_bytes(module)
        return self._sizes[id(module)]

    def model_size(self) -> int:
        return sum(self._bytes(m) for m in self._managed())

    def loaded_size(self) -> int:
        return sum(self._bytes(m) for m in self._managed() if _on(m, self.load_device))

    def current_loaded_device(self):
        return next(self.model.parameters()).device

    def model_dtype(self):
        return next(self.model.parameters()).dtype

    def lowvram_patch_counter(self) -> int:
        return 0

    def model_patches_to(self, device) -> None:
        pass  # no patches of ComfyUI's kind: LoRAs are attached by cav_core for each call

    def model_patches_models(self) -> list:
        return []

    def is_clone(self, other) -> bool:
        return getattr(other, "model", None) is self.model

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False) -> int:
        before = self.loaded_size()
        for m in self._managed():
            if not _on(m, device_to):
                m.to(device_to)
        return self.loaded_size() - before

    def partially_unload(self, device_to, memory_to_free=0) -> int:
        """Offload the smallest modules first (VAE, text encoder: a run uses them for a moment)
        until ``memory_to_free`` bytes are freed; modules a run holds stay."""
        from cav_core import memory

        freed = 0
        for m in sorted(self._managed(), key=self._bytes):
            if freed >= memory_to_free:
                break
            if _on(m, self.load_device) and not memory.in_use(m):
                m.to(device_to)
                freed += self._bytes(m)
        return freed

    def detach(self, unpatch_all=True):
        self.partially_unload(self.offload_device, float("inf"))
        return self.model


#: UNet -> its patcher (weak keys: an entry goes with its model).
_PATCHERS: "weakref.WeakKeyDictionary[Any, T2VModelPatcher]" = weakref.WeakKeyDictionary()


def _patcher(components: Any, mm: Any) -> T2VModelPatcher | None:
    """The patcher of a model on a managed device (made on first sight), None otherwise."""
    p = _PATCHERS.get(components.unet)
    if p is None:
        dev = components.device
        if dev.type not in MANAGED_DEVICE_TYPES:
            return None
        offload = mm.unet_offload_device() if hasattr(mm, "unet_offload_device") else "cpu"
        p = _PATCHERS[components.unet] = T2VModelPatcher(components, dev, offload)
    return p


def _registered(mm: Any, patcher: T2VModelPatcher) -> list:
    return [lm for lm in getattr(mm, "current_loaded_models", ()) if getattr(lm, "model", None) is patcher]


def _managed(components: Any, needs: str) -> tuple[Any, T2VModelPatcher] | None:
    """ComfyUI's model_management (if it has ``needs``) and our model's patcher in it, or None
    outside ComfyUI, off CUDA, or on a ComfyUI without that call."""
    mm = _model_management()
    if mm is None or not hasattr(mm, needs):
        return None
    patcher = _patcher(components, mm)
    return None if patcher is None else (mm, patcher)


def track_model(components: Any) -> None:
    """Enter a freshly loaded model in ComfyUI's list of loaded models, so ComfyUI can offload
    it when another model needs the room. Does nothing outside ComfyUI and off CUDA."""
    managed = _managed(components, "load_models_gpu")
    if managed is None:
        return
    mm, patcher = managed
    if codecs_offloaded():  # --lowvram / --novram: they come back for their encodes only
        from cav_core import memory

        memory.park_codecs(components)
    if not _registered(mm, patcher):
        mm.load_models_gpu([patcher], force_full_load=True)


def before_run(components: Any, nbytes: int, purpose: str) -> None:
    """cav_core's ``memory.before_run`` hook: make room on the device for a run, then bring
    our model back (whatever ComfyUI offloaded) and keep it registered.

    ComfyUI frees ``nbytes`` (x :data:`TRAINING_MARGIN` for training) plus the weights to
    bring back with ``free_memory``, never unloading our model for it, then
    ``soft_empty_cache`` hands the freed blocks back to the driver, as core training does
    before it starts. Nothing happens outside ComfyUI or off CUDA (``--cpu``)."""
    managed = _managed(components, "free_memory")
    if managed is None:
        return
    mm, patcher = managed
    need = int(nbytes * (TRAINING_MARGIN if purpose == "training" else 1.0))
    away = patcher.model_size() - patcher.loaded_size()
    reserve = mm.extra_reserved_memory() if hasattr(mm, "extra_reserved_memory") else 0
    keep = _registered(mm, patcher)
    mm.free_memory(need + away + reserve, patcher.load_device, keep_loaded=keep)
    if keep:
        patcher.partially_load(patcher.load_device)
    else:
        mm.load_models_gpu([patcher], memory_required=need, force_full_load=True)
    mm.soft_empty_cache()


def install_memory_hooks() -> None:
    """Hand cav_core the hooks above (no torch import: cheap at pack import)."""
    from cav_core import memory

    memory.set_host(before_run=before_run, offload_codecs=codecs_offloaded)


install_memory_hooks()
