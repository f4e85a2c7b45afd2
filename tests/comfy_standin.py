"""A minimal stand-in for ``comfy_api.latest`` (``io``, ``ui`` and ``ComfyExtension``), for the
pack's tests and the scripts that build the example workflows: :func:`install` puts it into
``sys.modules`` as ``comfy_api.latest`` (tests/conftest.py and ``comfy_helpers.load_pack`` call
it), so the production nodes import one API either way. It implements the small subset of
the V3 schema API (and of ``ui``) these nodes use, with the same names and keyword
arguments. Inside ComfyUI the real ``comfy_api.latest`` is always used (``nodes/_io.py``);
the server test checks the real one end to end."""

from __future__ import annotations

import enum
import importlib.util
import sys
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


class NumberDisplay(str, enum.Enum):
    number = "number"
    slider = "slider"


class UploadType(str, enum.Enum):
    """The upload button of a media combo, as in the real ``io.UploadType``."""

    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class _Input:
    io_type = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, default: Any = None,
                 force_input: bool | None = None, socketless: bool | None = None, **widget: Any):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.default = default
        self.force_input = force_input
        self.socketless = socketless
        for k, v in widget.items():
            setattr(self, k, v)

    def get_io_type(self) -> str:
        return self.io_type


class _Output:
    io_type = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def get_io_type(self) -> str:
        return self.io_type


def _comfytype(io_type: str, widget_kwargs: tuple[str, ...] = ()):
    """A type with nested ``Input`` / ``Output`` classes, like the real ``io.Image`` etc."""

    class _In(_Input):
        def __init__(self, id: str, *args: Any, **kwargs: Any):
            unknown = set(kwargs) - set(widget_kwargs) - {
                "display_name", "optional", "tooltip", "lazy", "default", "force_input", "socketless"}
            if unknown or args:
                raise TypeError(f"{io_type}.Input got unexpected arguments {sorted(unknown) or args}")
            super().__init__(id, **kwargs)

    _In.io_type = io_type

    class _Out(_Output):
        pass

    _Out.io_type = io_type
    return type(io_type.title(), (), {"io_type": io_type, "Input": _In, "Output": _Out})


def Custom(io_type: str):  # noqa: N802 (same name as the real API)
    return _comfytype(io_type)


Image = _comfytype("IMAGE")
Latent = _comfytype("LATENT")
Video = _comfytype("VIDEO")
Int = _comfytype("INT", ("min", "max", "step", "control_after_generate", "display_mode"))
Float = _comfytype("FLOAT", ("min", "max", "step", "round", "display_mode"))
String = _comfytype("STRING", ("multiline", "placeholder", "dynamic_prompts"))
Boolean = _comfytype("BOOLEAN", ("label_on", "label_off"))
Combo = _comfytype("COMBO", ("options", "control_after_generate", "upload", "image_folder", "remote"))


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list | None = None
    outputs: list | None = None
    hidden: list | None = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None, expand: Any = None, block_execution: Any = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class ComfyNode:
    hidden = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 (the real API's name)
        return cls.define_schema()


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list[type[ComfyNode]]:
        """The node classes of this extension."""


class _IoNamespace:
    """``io`` as a namespace object, like ``from comfy_api.latest import io``."""

    NumberDisplay = NumberDisplay
    UploadType = UploadType
    Custom = staticmethod(Custom)
    Image = Image
    Latent = Latent
    Video = Video
    Int = Int
    Float = Float
    String = String
    Boolean = Boolean
    Combo = Combo
    Schema = Schema
    NodeOutput = NodeOutput
    ComfyNode = ComfyNode


io = _IoNamespace()


class _UIOutput(ABC):
    @abstractmethod
    def as_dict(self) -> dict:
        """What the node shows in the UI (the real API's ``_UIOutput.as_dict``)."""


class PreviewText(_UIOutput):
    """Text shown on the node, like ``comfy_api.latest.ui.PreviewText``."""

    def __init__(self, value: str, **kwargs: Any):
        self.value = value

    def as_dict(self) -> dict:
        return {"text": (self.value,)}


class PreviewVideo(_UIOutput):
    """Saved videos shown on the node, like ``comfy_api.latest.ui.PreviewVideo``."""

    def __init__(self, values: list[dict], **kwargs: Any):
        self.values = values

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (True,)}


class _UiNamespace:
    """``ui`` as a namespace object, like ``from comfy_api.latest import ui``."""

    PreviewText = PreviewText
    PreviewVideo = PreviewVideo


ui = _UiNamespace()


def install() -> None:
    """Make ``import comfy_api.latest`` give this stand-in, unless a real ComfyUI API is
    loaded or importable (then the real one is used)."""
    if "comfy_api.latest" in sys.modules or importlib.util.find_spec("comfy_api") is not None:
        return
    package, latest = types.ModuleType("comfy_api"), types.ModuleType("comfy_api.latest")
    package.__path__ = []  # a package, so ``comfy_api.latest`` imports
    latest.io, latest.ui, latest.ComfyExtension = io, ui, ComfyExtension
    package.latest = latest
    sys.modules["comfy_api"], sys.modules["comfy_api.latest"] = package, latest
