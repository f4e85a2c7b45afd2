"""The project's own error types: every user-facing failure is one of these, so callers
(CLI, ComfyUI nodes) can show the message as-is instead of a traceback."""


class CavError(Exception):
    """Base class: the message names the input at fault and what to do about it."""


class VideoReadError(CavError):
    """A video file could not be found, opened or decoded."""


class ModelLoadError(CavError):
    """A model folder is missing parts or is not a text-to-video model."""


class AdapterError(CavError):
    """A LoRA / absorber file is invalid or does not fit the model."""


class InputError(CavError, ValueError):
    """An argument is out of range or malformed."""


class OutputError(CavError, OSError):
    """An output file or folder could not be written (read-only, full disk, bad name...).

    Also an ``OSError``, so code that handles OS errors still catches it."""
