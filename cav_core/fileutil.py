"""Atomic, never-overwriting file writes.

A crash or Ctrl-C mid-write must never leave a half file under the user's chosen name,
and a save must never replace a file the user already has: data goes to a temp file in
the same folder, then is hard-linked into place (which fails if the name exists)."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError, OutputError

#: Characters that are not allowed (Windows) or are trouble in a file name: control
#: characters and ``<>:"|?*``. Each becomes ``_``; letters of any script are kept.
_ODD_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,12}")
#: Extensions a name may bring itself (else ``default_ext`` is added: "v1.5" is no extension).
KNOWN_EXTENSIONS = frozenset({".mp4", ".webm", ".gif", ".mov", ".mkv", ".png", ".jpg", ".jpeg", ".webp",
                              ".safetensors", ".json", ".txt"})
MAX_NAME_BYTES = 200  # per path part, below the 255-byte limit of common file systems
MAX_PART_BYTES = 255  # what ext4, btrfs, xfs, NTFS and APFS allow per path part


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
    return p if not p.exists() else numbered_path(p)


def numbered_path(path: str | os.PathLike, after: str | os.PathLike | None = None) -> Path:
    """The first free counter name of ``path`` (``stem_00001.ext``, ...), past ``after`` when that
    is one of them: the one numbering of every saved file (CLI outputs, nodes' saves, races)."""
    p = Path(path)
    i = 0
    if after is not None:
        a = Path(after)
        tail = a.stem[len(p.stem) + 1:] if a != p and a.stem.startswith(p.stem + "_") else ""
        i = int(tail) if tail.isdigit() else 0
    while i < 99999:
        i += 1
        q = p.with_name(f"{p.stem}_{i:05d}{p.suffix}")
        if not q.exists():
            return q
    raise InputError(f"no free file name next to {p}")


#: Temp files carry the writer's process id, so a later run can tell a temp file left by a
#: killed process (removed by :func:`clean_stale_temps`) from one a live run is writing.
_TEMP_TAG = ".cav{pid}-"
_TEMP_PID = re.compile(r"\.cav(\d+)-[^/]*\.tmp")

_OS_REASONS = {
    errno.ENOSPC: ("the disk is full (no space left on the device)", "free some space or write somewhere else"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or write somewhere else"),
    errno.EROFS: ("it is on a read-only file system", "choose a folder you can write to"),
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("permission denied", "choose a folder you can write to"),
    errno.ENAMETOOLONG: ("the name is too long for the file system", "choose a shorter name"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a path inside a folder"),
    errno.EEXIST: ("a file of that name is in the way of a folder", "choose another path"),
    errno.EISDIR: ("it is a folder", "give a file name"),
}


def os_error_message(e: OSError, path: str | os.PathLike) -> str:
    """One line for an OS error on an output ``path``: what went wrong and what to do."""
    reason, todo = _OS_REASONS.get(e.errno, (e.strerror or type(e).__name__, "choose another place to write"))
    return f"cannot write {path}: {reason}; {todo}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temp files that writes of ``path`` left behind in a process that was
    killed (e.g. ``kill -9`` during the final save); temp files of live processes stay."""
    p = Path(path)
    removed = []
    try:
        candidates = list(p.parent.glob(f".{glob_escape(p.stem)}.cav*-*.tmp{glob_escape(p.suffix)}"))
    except OSError:
        return removed
    for t in candidates:
        m = _TEMP_PID.search(t.name)
        if m and not _pid_alive(int(m.group(1))) and t.is_file():
            try:
                t.unlink()
                removed.append(t)
            except OSError:
                pass
    return removed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _existing_ancestor(path: Path) -> Path:
    q = path
    while not q.exists() and q.parent != q:
        q = q.parent
    return q


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free for this user on the file system of ``folder`` (None where not measurable)."""
    try:
        st = os.statvfs(_existing_ancestor(Path(folder).absolute()))
    except (OSError, AttributeError):
        return None
    return int(st.f_bavail * st.f_frsize)


def check_output_path(path: str | os.PathLike, expected_bytes: int = 0, what: str = "output") -> Path:
    """Refuse, before any work, an output ``path`` that cannot be written: a folder, a name
    the file system does not allow, a parent that is a file, a read-only or not writable
    folder, or a disk without room for about ``expected_bytes``. Creates nothing.

    ``what`` names the input in the message (e.g. ``"--out"``)."""
    p = Path(path).expanduser()
    if "\x00" in str(p):
        raise InputError(f"{what} {p!r}: a file name cannot contain a NUL character")
    parts = p.absolute().parts
    for part in parts:  # first: a stat of a too-long name fails with an OS error of its own
        if len(part.encode("utf-8", "surrogateescape")) > MAX_PART_BYTES:
            raise InputError(f"{what} {p}: the name {part[:40]!r}... is {len(part.encode())} bytes long; this file "
                             f"system allows {MAX_PART_BYTES}: choose a shorter name")
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder; give a file name inside it, e.g. "
                         f"{p / ('result' + (p.suffix or ''))}")
    base = _existing_ancestor(p.absolute().parent)  # an existing file at p itself is fine: it gets a counter name
    if not base.is_dir():
        raise InputError(f"{what} {p}: {base} is a file, not a folder; choose a path inside a folder")
    try:
        st = os.statvfs(base)
        readonly = bool(st.f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        st, readonly = None, False
    if readonly:
        raise InputError(f"{what} {p}: {base} is on a read-only file system; choose a folder you can write to")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p}: no permission to write in {base}; choose a folder you can write to")
    if st is not None and expected_bytes > 0:
        free = int(st.f_bavail * st.f_frsize)
        need = int(expected_bytes * 1.1) + 1024**2
        if free < need:
            raise InputError(f"{what} {p}: not enough disk space in {base}: the result needs about "
                             f"{_size(need)}, {_size(free)} are free; free some space or write somewhere else")
    return p


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def ensure_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as an existing folder (made if missing), with a one-line error naming it."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {p} is a file, not a folder; give a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(os_error_message(e, p)) from None
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False,
                 unique: bool = False, numbered: bool = False) -> Path:
    """Call ``write(tmp_path)`` then move the result to ``path`` in one step; returns where it went.

    With ``overwrite=False`` an existing ``path`` raises :class:`InputError` and is left
    untouched, unless ``unique``: then the result takes the next free counter name
    (``name_00001.ext``, :func:`numbered_path`), also when another process takes the name
    while this one writes, so two runs given the same name both keep their result.
    ``numbered``: always a counter name, the first free one (how ComfyUI saves). The temp file is removed on
    any failure; an OS error (full disk, read-only folder, ...) becomes :class:`OutputError`
    naming the path."""
    final = Path(path)
    if final.is_dir():
        raise InputError(f"output path {final} is a folder; give a file name")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(os_error_message(e, final)) from None
    requested, unique = final, unique or numbered
    if numbered:
        final = numbered_path(requested)
    elif not overwrite and final.exists():
        if not unique:
            raise InputError(f"{final} already exists; choose another name (files are never overwritten)")
        final = numbered_path(requested)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}{_TEMP_TAG.format(pid=os.getpid())}",
                                        suffix=f".tmp{final.suffix}", dir=final.parent)
    except OSError as e:
        raise OutputError(os_error_message(e, final)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            write(tmp)
            if tmp.exists():  # mkstemp makes 0600 files; give the result the usual umask permissions
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            if overwrite:
                os.replace(tmp, final)
            else:
                final = _link_into_place(tmp, final, unique, requested)
        except OutputError:
            raise
        except OSError as e:
            raise OutputError(os_error_message(e, final)) from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def _link_into_place(tmp: Path, final: Path, unique: bool, requested: Path) -> Path:
    for _ in range(100000):
        try:
            os.link(tmp, final)  # atomic and refuses an existing name, unlike rename
            return final
        except FileExistsError:
            if not unique:
                raise InputError(f"{final} already exists; choose another name (files are never overwritten)") from None
            final = numbered_path(requested, after=final)
        except OSError as e:  # file systems without hard links
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
                raise
            if final.exists():
                if not unique:
                    raise InputError(f"{final} already exists; choose another name") from None
                final = numbered_path(requested, after=final)
                continue
            os.replace(tmp, final)
            return final
    raise InputError(f"no free file name next to {final}")
