"""Atomic, never-overwriting file writes.

A crash or Ctrl-C mid-write must never leave a half file under the user's chosen name,
and a save must never replace a file the user already has: data goes to a temp file in
the same folder, then is hard-linked into place (which fails if the name exists)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError

#: Characters that are not allowed (Windows) or are trouble in a file name: control
#: characters and ``<>:"|?*``. Each becomes ``_``; letters of any script are kept.
_ODD_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,12}")
#: Extensions a name may bring itself (else ``default_ext`` is added: "v1.5" is no extension).
KNOWN_EXTENSIONS = frozenset({".mp4", ".webm", ".gif", ".mov", ".mkv", ".png", ".jpg", ".jpeg", ".webp",
                              ".safetensors", ".json", ".txt"})
MAX_NAME_BYTES = 200  # per path part, below the 255-byte limit of common file systems


def _clip_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def safe_output_path(folder: str | os.PathLike, name: str, default_ext: str = "", unique: bool = True) -> Path:
    """Where to save ``name`` inside ``folder``: never outside it, never over an existing file.

    ``name`` may hold subfolders (``clips/run1``, ``\\`` counts as ``/``), like ComfyUI's
    filename prefix. An absolute path, a drive letter or a ``..`` part is refused
    with :class:`InputError` (so is a symbolic link inside ``folder`` that leads out of it);
    odd characters (control characters, ``<>:"|?*``) become ``_``; leading dots, trailing
    dots and spaces are dropped; Windows device names (``CON``, ``NUL``, ...) get a ``_``
    prefix; each part is cut to 200 bytes. ``default_ext`` (e.g. ``".mp4"``) is appended
    unless the name already ends in it or in another known extension (``KNOWN_EXTENSIONS``).
    With ``unique`` (default) an existing file gives a new name with a counter
    (``clip_00001.mp4``), as ComfyUI saves images.
    """
    if not isinstance(name, str):
        raise InputError(f"output name must be text, got {type(name).__name__}")
    if default_ext and not _EXTENSION.fullmatch(default_ext):
        raise InputError(f"default extension must look like '.mp4', got {default_ext!r}")
    text = name.strip().replace("\\", "/")
    if not text:
        raise InputError("output name is empty; give a file name such as 'clip'")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise InputError(f"output name {name!r} is an absolute path; give a name inside the output folder "
                         f"{folder} (subfolders like 'clips/run1' are fine)")
    parts = []
    for raw in text.split("/"):
        if raw.strip() == "..":
            raise InputError(f"output name {name!r} contains '..', which would leave the output folder {folder}; "
                             f"give a name inside it")
        part = _ODD_CHARS.sub("_", raw).strip().lstrip(".").rstrip(". ")
        if not part:
            continue  # '', '.', '//': nothing to keep
        if part.split(".")[0].upper() in _WINDOWS_RESERVED:
            part = "_" + part
        parts.append(part)
    if not parts:
        raise InputError(f"output name {name!r} has no usable characters; give a file name such as 'clip'")
    last = parts[-1]
    suffix = Path(last).suffix
    ext = suffix if suffix.lower() in KNOWN_EXTENSIONS | {default_ext.lower()} else default_ext
    stem = last[: len(last) - len(ext)] if ext and last.endswith(ext) else last
    parts = [_clip_utf8(p, MAX_NAME_BYTES) for p in parts[:-1]]
    parts.append(_clip_utf8(stem, MAX_NAME_BYTES - len(ext.encode())) + ext)
    base = Path(folder).expanduser().resolve()
    path = base.joinpath(*parts)
    real = path.resolve()
    if real != base and base not in real.parents:
        raise InputError(f"output name {name!r} leads outside the output folder {base} (through a symbolic "
                         f"link to {real.parent}); give another name")
    if path.is_dir():
        raise InputError(f"output name {name!r} is a folder in {base}; give a file name")
    return unique_path(path) if unique else path


def unique_path(path: str | os.PathLike) -> Path:
    """``path`` if free, else ``stem_00001.ext``, ``stem_00002.ext``, ... (ComfyUI-style counter)."""
    p = Path(path)
    if not p.exists():
        return p
    for i in range(1, 100000):
        q = p.with_name(f"{p.stem}_{i:05d}{p.suffix}")
        if not q.exists():
            return q
    raise InputError(f"no free file name next to {p}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` then move the result to ``path`` in one step.

    With ``overwrite=False`` an existing ``path`` raises :class:`InputError` and is left
    untouched; the temp file is removed on any failure."""
    final = Path(path)
    if final.is_dir():
        raise InputError(f"output path {final} is a folder; give a file name")
    final.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and final.exists():
        raise InputError(f"{final} already exists; choose another name (files are never overwritten)")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if tmp.exists():  # mkstemp makes 0600 files; give the result the usual umask permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        if overwrite:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)  # atomic and refuses an existing name, unlike rename
            except FileExistsError:
                raise InputError(f"{final} already exists; choose another name (files are never overwritten)") from None
            except OSError:  # file systems without hard links
                if final.exists():
                    raise InputError(f"{final} already exists; choose another name") from None
                os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final
