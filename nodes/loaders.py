"""Loading the model and reference videos; loading and saving T-LoRAs / absorbers."""

from __future__ import annotations

from pathlib import Path

from cav_core.defaults import common

from . import comfy_bridge as bridge
from ._io import CATEGORY, Adapter, T2VModel, io, ui

DEVICES = ["default", "cpu", "cuda", "mps"]
DTYPES = ["auto", "fp32", "fp16", "bf16"]
SAVE_LOCATIONS = ["output/loras", "models/loras"]


class LoadModelScopeT2V(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadModelScopeT2V",
            display_name="Load ModelScope T2V",
            category=CATEGORY,
            description="Loads a ModelScope-style text-to-video model (diffusers folder with model_index.json: "
                        "UNet3D + CLIP text encoder + VAE, e.g. text-to-video-ms-1.7b or zeroscope_v2) from "
                        "models/diffusers, or the tiny toy model shipped with the pack.",
            inputs=[
                io.Combo.Input("model", options=[bridge.TOY_MODEL] + bridge.diffusers_models(),
                               default=bridge.TOY_MODEL,
                               tooltip="A folder under models/diffusers that holds model_index.json, or the "
                                       "embedded 32x32 toy model (fast on CPU, for trying the pack out)."),
                io.Combo.Input("device", options=DEVICES, default="default",
                               tooltip="'default' is ComfyUI's compute device (the GPU unless started with --cpu)."),
                io.Combo.Input("dtype", options=DTYPES, default="auto",
                               tooltip="'auto' is fp16 on GPUs and fp32 on the CPU. LoRAs always train in fp32."),
                io.String.Input("path", default="", optional=True,
                                tooltip="Optional full path to a diffusers T2V folder; when set it is used "
                                        "instead of 'model'."),
            ],
            outputs=[T2VModel.Output(display_name="model",
                                     tooltip="The model handle; Apply*/Bypass nodes return new handles and never "
                                             "change this one.")],
        )

    @classmethod
    def execute(cls, model, device, dtype, path="") -> io.NodeOutput:
        from cav_core.model import load_t2v

        folder = bridge.resolve_model(model, path)
        with bridge.autograd_enabled():  # normal (not inference) weight tensors, so the training nodes can use them
            handle = load_t2v(folder, device=bridge.device(device), dtype=dtype)
        bridge.track_model(handle.base)  # ComfyUI may offload it when another model needs the GPU
        return io.NodeOutput(handle)


#: What the 'video_input' messages call a connected VIDEO.
VIDEO_INPUT_NAME = "from video_input (VIDEO)"


def _clip_size(fit: str, width: int, height: int, model=None) -> tuple[int, int] | None:
    """The (H, W) Load Reference Video fits its frames to: the connected model's size (its
    own where width and height are 0), else width x height, else the video's own (None,
    which only centre-crop allows: the training nodes crop to the model's size)."""
    from cav_core.errors import InputError

    if model is not None:
        from cav_core.sample import latent_size

        return latent_size(model.base, height or None, width or None)[:2]
    if width > 0 and height > 0:
        return height, width
    if width > 0 or height > 0:
        raise InputError(f"width and height of Load Reference Video go together (got {width} x {height}): set "
                         f"both, or both to 0 to keep the video's size or take the connected model's")
    if fit != "crop":
        raise InputError(f"fit={fit!r} needs a size to fit to: set width and height (e.g. 256 x 256 for "
                         f"ModelScope, 576 x 320 for ZeroScope) or connect the model input; at 0 x 0 the "
                         f"frames keep the video's size and the training nodes centre-crop them")
    return None


class LoadReferenceVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from cav_core.video_io import FIT_MODES

        return io.Schema(
            node_id="LoadReferenceVideo",
            display_name="Load Reference Video",
            category=CATEGORY,
            description="Reads a reference clip as IMAGE frames, resampled to a frame rate from a start time "
                        "(by the frames' timestamps, so variable-frame-rate phone videos work) and fit to a size by "
                        "centre crop, pad or stretch: one of the clips bundled with the pack (toy world motions), "
                        "a video uploaded to ComfyUI's input folder or any path, or a VIDEO (e.g. from Load Video).",
            inputs=[
                io.Combo.Input("video", options=list(bridge.bundled_clips()) + bridge.input_videos(),
                               default="circle", upload=io.UploadType.video,
                               tooltip="A bundled toy-world clip (circle, zigzag, bounce: 32x32, 16 frames) or a "
                                       "video file in ComfyUI's input folder: upload your own with the button "
                                       "below or by dropping it on the node."),
                io.Int.Input("num_frames", default=common("video.frames"), min=1, max=1024,
                             tooltip="How many frames to take (ModelScope and the toy model are trained on 16)."),
                io.Float.Input("fps", default=common("video.fps"), min=0.1, max=240.0, step=0.5,
                               tooltip="Frames per second to sample at (8 for ModelScope and the toy model): a 24 "
                                       "fps video read at 8 fps takes every third frame."),
                io.Float.Input("start", default=0.0, min=0.0, max=36000.0, step=0.1,
                               tooltip="Start time in seconds."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Fit to this width (0 = the connected model's width, or keep the video's; "
                                     "the training nodes centre-crop frames to the model's size anyway)."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Fit to this height (0 = the connected model's height, or keep the video's)."),
                io.String.Input("path", default="", optional=True,
                                tooltip="Optional path to a video file (absolute or relative to the input "
                                        "folder); when set it is used instead of 'video'."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="crop", optional=True,
                               tooltip="A video of another shape than width x height (e.g. 1280x720 or 9:16 "
                                       "portrait for a square model): crop the centre (edges lost), pad with black "
                                       "bars (whole frame kept), or stretch (whole frame kept, shapes distorted)."),
                io.Boolean.Input("hold_last_frame", default=False, optional=True,
                                 tooltip="If the video ends before num_frames at fps are taken, repeat its last "
                                         "frame (off: stop with an error naming the video's duration)."),
                T2VModel.Input("model", optional=True,
                               tooltip="Optional: the model the frames are for; with width and height 0 the frames "
                                       "are fit to its native size."),
                io.Video.Input("video_input", optional=True,
                               tooltip="Optional VIDEO (Load Video, a video pack's loader): when connected it is read "
                                       "instead of 'video' and 'path', with the same fps, start, num_frames and "
                                       "fit."),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="The clip as an IMAGE batch (one image per "
                                                                    "frame)."),
                     io.Float.Output(display_name="fps", tooltip="The frame rate the frames were sampled at."),
                     io.Int.Output(display_name="frame_count", tooltip="How many frames were taken (num_frames).")],
        )

    @classmethod
    def fingerprint_inputs(cls, video, path="", **_):
        return bridge.file_stamp_of(bridge.resolve_video, video, path)  # re-read when the file changes

    @classmethod
    def validate_inputs(cls, video=None, path="", fit="crop", width=None, height=None,
                        input_types=None) -> bool | str:
        """Checked when the prompt is queued, before anything runs. ComfyUI passes the
        widget values only (a linked input's type is in ``input_types``), and skips its own
        list check of ``video`` (an uploaded file may sit in a subfolder, e.g. pasted/) and
        its link type check, so both are done here (``bridge.link_type_problem``)."""
        from cav_core.errors import CavError
        from cav_core.video_io import check_fit, open_video

        linked = dict(input_types or {})
        expected = {i.id: i.get_io_type() for i in cls.define_schema().inputs}
        problem = bridge.link_type_problem("Load Reference Video", expected, linked)
        if problem:
            return problem
        try:
            if fit is not None:
                fit = check_fit(fit)
                if width is not None and height is not None and "model" not in linked:
                    _clip_size(fit, width, height)
            if "video_input" not in linked and video is not None:
                file = bridge.resolve_video(video, path or "")  # its message names the widgets
        except CavError as e:
            return str(e)
        if "video_input" in linked or video is None:
            return True
        widget = "path" if (path or "").strip() else "video"
        try:
            with open_video(file):
                pass  # a readable video file with a video stream: its frames are read when the node runs
        except CavError as e:
            return f"Load Reference Video, '{widget}': {e}"
        return True

    @classmethod
    def execute(cls, video, num_frames, fps, start, width, height, path="", fit="crop", hold_last_frame=False,
                model=None, video_input=None) -> io.NodeOutput:
        import warnings

        from cav_core.data import clip_from_frames, load_video_clip
        from cav_core.video_io import check_fit, is_stream

        fit = check_fit(fit)
        size = _clip_size(fit, width, height, model)
        if video_input is not None:  # a connected VIDEO wins over the file widgets
            source, images, rate = bridge.video_input_source(video_input)
            name = VIDEO_INPUT_NAME if source is None or is_stream(source) else None
        else:
            source, images, rate, name = bridge.resolve_video(video, path), None, None, None
        clip = dict(num_frames=num_frames, fps=fps, start=start, size=size, fit=fit, hold_last=bool(hold_last_frame))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            if source is not None:
                frames = load_video_clip(source, name=name, **clip)
            else:
                frames = clip_from_frames(images, rate, name=name, **clip)
        for w in caught:  # the held last frame
            bridge.log.warning("Customize-A-Video: %s", w.message)
        return io.NodeOutput(frames, float(fps), int(frames.shape[0]))


def load_adapter_file(path: Path, role: str = "spatial", unet=None):
    """Our own adapter files load as saved (kind, role, tokens, metadata); other LoRA files
    (kohya/A1111, diffusers/peft, MotionDirector) are converted by cav_core, checked against
    ``unet`` (default: the ModelScope layout)."""
    from cav_core.lora_convert import load_any_lora

    return load_any_lora(path, unet=unet, role=role)


class LoadCAVAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadCAVAdapter",
            display_name="Load T-LoRA / Absorber",
            category=CATEGORY,
            description="Loads a saved T-LoRA or appearance absorber (.safetensors, with its metadata) from "
                        "models/loras or output/loras. Other LoRA files (kohya/A1111 or diffusers SD2.1 LoRAs, "
                        "MotionDirector LoRAs) are converted on load, e.g. to use a spatial LoRA as the absorber.",
            inputs=[
                io.Combo.Input("lora_name", options=bridge.lora_names(),
                               tooltip="A .safetensors file in models/loras, or one saved to output/loras "
                                       "(marked [output]), training snapshots included (e.g. cav/snapshots/"
                                       "temporal_lora_00001_step00300). Press R to list new files."),
                io.Combo.Input("foreign_role", options=["spatial", "temporal", "auto"], default="spatial",
                               tooltip="Only for LoRAs not made by this pack: keep their spatial layers (image / "
                                       "style LoRAs, absorbers), their temporal layers (MotionDirector motion "
                                       "LoRAs), or whichever the file holds (auto)."),
                T2VModel.Input("model", optional=True,
                               tooltip="Optional: the model the LoRA is for; a third-party file's layer names and "
                                       "sizes are checked against it (default: the ModelScope 1.7B layout)."),
            ],
            outputs=[Adapter.Output(display_name="adapter", tooltip="The T-LoRA, S-LoRA or absorber.")],
        )

    @classmethod
    def fingerprint_inputs(cls, lora_name, **_):
        return bridge.file_stamp_of(bridge.resolve_lora, lora_name)

    @classmethod
    def execute(cls, lora_name, foreign_role, model=None) -> io.NodeOutput:
        unet = model.base.unet if model is not None else None
        return io.NodeOutput(load_adapter_file(bridge.resolve_lora(lora_name), foreign_role, unet))


def prefixed_path(folder: Path, prefix: str, what: str = "filename_prefix") -> Path:
    """``folder/prefix.safetensors``; never leaves ``folder`` (the prefix is cleaned by
    :func:`cav_core.fileutil.safe_output_path`). Called before training, so a bad prefix fails
    before the run, not at its first save."""
    from cav_core.errors import InputError
    from cav_core.fileutil import safe_output_path

    try:
        path = safe_output_path(folder, prefix.strip() or "cav/adapter", ".safetensors", unique=False)
    except InputError as e:
        raise InputError(f"{what} {prefix!r} must be a name inside the folder {folder}: {e}") from None
    if path.suffix.lower() != ".safetensors":  # a prefix like 'run.mp4' keeps its dot: run.mp4_00001.safetensors
        path = path.with_name(f"{path.name}.safetensors")
    return path


def save_numbered(folder: Path, prefix: str, adapter) -> Path:
    """``folder/prefix_00001.safetensors``, the next free number (fileutil's one numbering); the
    write is atomic and refuses an existing name, so a race just takes the next number."""
    from cav_core.adapter_files import save_adapter

    return save_adapter(prefixed_path(folder, prefix), adapter, numbered=True)


def snapshot_saver(folder: Path, prefix: str):
    """A snapshot destination for cav_core (``save(step, adapter) -> path``): one run's
    snapshots share a run number no earlier snapshot uses, ``prefix_00003_step00100.safetensors``,
    ``prefix_00003_step00200.safetensors``..., so they sort together in Load T-LoRA / Absorber.
    A name taken meanwhile gets fileutil's counter (``..._step00100_00001``), never a replace."""
    from cav_core.adapter_files import save_adapter
    from cav_core.fileutil import glob_escape

    base = prefixed_path(folder, prefix, "snapshot_prefix")
    stem = base.name[:-len(".safetensors")]
    run: list[int] = []

    def save(step: int, adapter) -> Path:
        if not run:
            taken = (base.parent.glob(f"{glob_escape(stem)}_{i:05d}_step*.safetensors") for i in range(1, 100000))
            run.append(next(i for i, files in enumerate(taken, 1) if next(files, None) is None))
        return save_adapter(base.with_name(f"{stem}_{run[0]:05d}_step{step:05d}.safetensors"), adapter, unique=True)

    return save


class SaveCAVAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SaveCAVAdapter",
            display_name="Save T-LoRA / Absorber",
            category=CATEGORY,
            description="Saves a T-LoRA or absorber as .safetensors with its metadata (kind, base model, caption, "
                        "training settings). Files are numbered and never overwritten; nothing is written if the "
                        "run is cancelled.",
            inputs=[
                Adapter.Input("adapter", tooltip="The T-LoRA or absorber to save."),
                io.String.Input("filename_prefix", default="cav/temporal_lora",
                                tooltip="Name (may include subfolders); _00001 etc. is appended."),
                io.Combo.Input("save_to", options=SAVE_LOCATIONS, default="output/loras",
                               tooltip="output/loras is where ComfyUI puts trained LoRAs; models/loras makes the "
                                       "file show up in every LoRA loader right away."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, adapter, filename_prefix, save_to) -> io.NodeOutput:
        folder = bridge.lora_save_dir(save_to)
        path = save_numbered(folder, filename_prefix, adapter)
        rel = path.relative_to(folder).as_posix()
        bridge.log.info("Customize-A-Video: saved %s to %s", adapter.kind, path)
        return io.NodeOutput(ui=ui.PreviewText(f"{save_to}/{rel}"))
