"""Output names stay inside the output folder; writes are atomic and never replace a file."""

from __future__ import annotations

import os

import pytest

from cav_core.errors import InputError
from cav_core.fileutil import atomic_write, safe_output_path, unique_path


@pytest.mark.parametrize("name, want", [
    ("clip", "clip.mp4"),
    ("clip.mp4", "clip.mp4"),
    ("clip.gif", "clip.gif"),  # the user's extension wins
    ("v1.5_final", "v1.5_final.mp4"),  # not an extension: the default is added
    ("clips/run1", "clips/run1.mp4"),
    ("clips\\run1", "clips/run1.mp4"),
    ("a/./b//c", "a/b/c.mp4"),
    ("  spaced  ", "spaced.mp4"),
    ("nul.txt", "_nul.txt"),
    ("lpt1", "_lpt1.mp4"),
    ("~draft", "~draft.mp4"),  # not expanded: just a name
    ("ünïcödé ✓", "ünïcödé ✓.mp4"),
    ("a\x7fb", "a_b.mp4"),
])
def test_safe_names(tmp_path, name, want):
    assert safe_output_path(tmp_path, name, ".mp4") == tmp_path.resolve() / want


@pytest.mark.parametrize("name", ["../x", "a/../../x", "..", " .. /x", "/abs", "C:/x", "c:x", "\\\\host\\share", "", "  ",
                                  "./.", None, 3])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(InputError):
        safe_output_path(tmp_path, name, ".mp4")
    assert list(tmp_path.iterdir()) == []


def test_default_extension_is_checked(tmp_path):
    with pytest.raises(InputError, match="default extension"):
        safe_output_path(tmp_path, "x", "mp4")
    assert safe_output_path(tmp_path, "x", "") == tmp_path.resolve() / "x"


def test_counter_and_no_counter(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"1")
    (tmp_path / "clip_00001.mp4").write_bytes(b"2")
    assert safe_output_path(tmp_path, "clip", ".mp4").name == "clip_00002.mp4"
    assert safe_output_path(tmp_path, "clip", ".mp4", unique=False).name == "clip.mp4"
    assert unique_path(tmp_path / "new.mp4") == tmp_path / "new.mp4"


def test_symlinks_inside_the_folder_are_fine_outside_not(tmp_path):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "inner").symlink_to(out / "real", target_is_directory=True)
    assert safe_output_path(out, "inner/x", ".mp4") == out.resolve() / "inner" / "x.mp4"
    (out / "outer").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(InputError, match="leads outside the output folder"):
        safe_output_path(out, "outer/x", ".mp4")
    (out / "file_link.mp4").symlink_to(tmp_path / "victim.mp4")
    with pytest.raises(InputError, match="leads outside"):
        safe_output_path(out, "file_link", ".mp4", unique=False)


def test_long_names_are_cut_below_the_file_system_limit(tmp_path):
    p = safe_output_path(tmp_path, "片" * 200 + "/" + "x" * 400, ".safetensors")
    assert all(len(part.encode()) <= 200 for part in p.relative_to(tmp_path.resolve()).parts)
    assert p.suffix == ".safetensors"


def test_atomic_write_never_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write(target, lambda t: t.write_bytes(b"first"))
    with pytest.raises(InputError, match="already exists"):
        atomic_write(target, lambda t: t.write_bytes(b"second"))
    assert target.read_bytes() == b"first"

    def fail(t):
        t.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "b.bin", fail)
    with pytest.raises(RuntimeError):
        atomic_write(target, fail, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["a.bin"] and target.read_bytes() == b"first"


def test_a_name_taken_between_choosing_and_writing_is_not_replaced(tmp_path):
    target = safe_output_path(tmp_path, "race", ".bin")

    def write(t):
        target.write_bytes(b"another save got there first")  # e.g. a second ComfyUI queue item
        t.write_bytes(b"ours")

    with pytest.raises(InputError, match="already exists"):
        atomic_write(target, write)
    assert target.read_bytes() == b"another save got there first" and os.listdir(tmp_path) == ["race.bin"]
