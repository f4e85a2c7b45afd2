"""Sharing the accelerator with a host application (ComfyUI), without knowing the host.

A host installs two hooks with :func:`set_host` (``nodes/comfy_bridge.py`` does, for
ComfyUI's ``comfy.model_management``); outside a host both do nothing:

- ``before_run(components, nbytes, purpose)`` is called at the start of every training
  and sampling run, before anything reads the model's device or measures free memory
  (``device_guard``): the host frees ``nbytes`` on the device for the run (unloading its
  own models) and brings back a model of ours it had offloaded. ``purpose`` is
  ``"training"`` or ``"sampling"``.
- ``offload_codecs()`` says whether the text encoder and the VAE live on the CPU and visit
  the compute device only for their encodes and decodes (ComfyUI's ``--lowvram`` /
  ``--novram``): a run then needs the UNet on the device, not the whole model.

Moving modules between devices mutates the base components, which handles share and
which are otherwise never changed (``model.T2VComponents``). A move changes neither
weights nor dtypes, so every handle still sees the same model; what must not happen is a
module sent to the CPU while another call is using it. So every codec move goes through
:func:`codec_on_device`, which keeps a hold count per module under one lock: a module is
sent back to the CPU only when its last user is done, and nested users (a sampler's
preview decode inside a training run's validation) share one visit.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # no torch import here: nodes/comfy_bridge.py installs the hooks when ComfyUI loads the pack
    from torch import nn

BeforeRun = Callable[[Any, int, str], None]

_before_run: BeforeRun | None = None
_offload_codecs: Callable[[], bool] | bool = False
_lock = threading.RLock()
_holds: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()
OFFLOAD_DEVICE = "cpu"


def set_host(before_run: BeforeRun | None = None, offload_codecs: Callable[[], bool] | bool = False) -> None:
    """Install a host's hooks (None / False: none). A later call replaces the earlier one."""
    global _before_run, _offload_codecs
    _before_run, _offload_codecs = before_run, offload_codecs


def host() -> tuple[BeforeRun | None, Callable[[], bool] | bool]:
    """The installed hooks, e.g. to restore them after a test."""
    return _before_run, _offload_codecs


def offload_codecs() -> bool:
    """Whether the text encoder and VAE stay on the CPU between their uses."""
    return bool(_offload_codecs() if callable(_offload_codecs) else _offload_codecs)


def _is_on(module: nn.Module, device: Any) -> bool:
    """Whether ``module``'s weights are on ``device`` (a torch.device or a name such as "cpu")."""
    p = next(module.parameters(), None)
    return p is None or str(p.device) == str(device) or (p.device.type == str(device) and ":" not in str(device))


def _move(module: nn.Module, device: Any) -> None:
    module.to(device)


def before_run(components: Any, nbytes: int, purpose: str) -> None:
    """Start of a run on ``components`` (a ``model.T2VComponents``) needing about ``nbytes``
    on its device besides the weights. Under codec offloading the text encoder and VAE
    leave the device first (unless in use), so the host and the memory guard count the
    room they leave."""
    if offload_codecs():
        park_codecs(components)
    if _before_run is not None:
        _before_run(components, int(nbytes), purpose)


def park_codecs(components: Any) -> None:
    """Send the text encoder and VAE of ``components`` to the CPU, except one in use."""
    for m in (components.text_encoder, components.vae):
        _park(m)


def _park(module: nn.Module) -> None:
    with _lock:
        if not _holds.get(module) and not _is_on(module, OFFLOAD_DEVICE):
            _move(module, OFFLOAD_DEVICE)


@contextlib.contextmanager
def codec_on_device(components: Any, module: nn.Module) -> Iterator[nn.Module]:
    """``module`` (the text encoder or VAE of ``components``) on the compute device, the
    UNet's, for one use. Under codec offloading it goes back to the CPU when its last
    user is done; otherwise it stays on the device (where the loader put it, and where a
    host that had offloaded it wants it back)."""
    with _lock:
        target = components.device
        if not _is_on(module, target):
            _move(module, target)
        _holds[module] = _holds.get(module, 0) + 1
    try:
        yield module
    finally:
        with _lock:
            n = _holds.get(module, 1) - 1
            if n > 0:
                _holds[module] = n
            else:
                _holds.pop(module, None)
                if offload_codecs() and not _is_on(module, OFFLOAD_DEVICE):
                    _move(module, OFFLOAD_DEVICE)


def in_use(module: nn.Module) -> bool:
    """Whether a run holds ``module`` on the device now (a host must not offload it)."""
    with _lock:
        return bool(_holds.get(module))
