"""Atomic, never-overwriting file writes.

A crash or Ctrl-C mid-write must never leave a half file under the user's chosen name,
and a save must never replace a file the user already has: data goes to a temp file in
the same folder, then is hard-linked into place (which fails if the name exists)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError


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
