"""Snapshots (cav_core/snapshots.py): the adapter saved every N steps of a run, next to the
final one, sampled and scored with a validation prompt; the CLI flag, the nodes' grid and
file list. All on the tiny random model (fast)."""

from __future__ import annotations

import re

import pytest
import torch

from cav_core import train
from cav_core.adapter_files import load_adapter
from cav_core.errors import InputError
from cav_core.metrics import motion_similarity
from cav_core.snapshots import check_snapshot_every, read_snapshot_info, snapshot_steps, step_of

FULL = "a red circle moving in a circle on a black background"
APPEARANCE = "a red circle on a black background"


@pytest.fixture(scope="module")
def frames():
    from cav_core.toyworld import clips

    return torch.from_numpy(clips.render_clip("red", "circle", "black", clips.circle_path()[:8]))


def _temporal(tiny, frames, **kw):
    kw.setdefault("recolor", False)
    return train.train_temporal_lora(tiny, frames, FULL, rank=2, seed=3, **kw)


def _lora_equal(a, b) -> bool:
    return a.lora.tensors.keys() == b.lora.tensors.keys() and all(
        torch.equal(a.lora.tensors[k], b.lora.tensors[k]) for k in a.lora.tensors)


def test_snapshot_steps_and_names():
    assert snapshot_steps(2, 6) == [2, 4, 6] and snapshot_steps(4, 6) == [4, 6] and snapshot_steps(0, 6) == []
    assert step_of("x_step00300.safetensors") == 300 and step_of("cav/t_00002_step00100_00001.safetensors") == 100
    assert step_of("x.safetensors") is None


def test_snapshot_files_hold_the_runs_metadata_and_step(tiny, frames, tmp_path):
    shots = []
    final = _temporal(tiny, frames, steps=5, snapshot_every=2, snapshot_to=tmp_path / "m.safetensors",
                      on_snapshot=shots.append)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m_step00002.safetensors", "m_step00004.safetensors", "m_step00005.safetensors"]
    assert [s.step for s in shots] == [2, 4, 5] and all(s.preview is None and s.motion_score is None for s in shots)
    assert final.info["snapshots"] == [{"step": s, "file": f"m_step{s:05d}.safetensors", "motion_score": None}
                                       for s in (2, 4, 5)]
    for s in shots:
        a = load_adapter(s.path)
        assert a.kind == "temporal_lora" and a.base_model == final.base_model
        entry = a.info.pop("snapshot")
        assert entry["step"] == s.step and entry["of"] == 5 and entry["motion_score"] is None
        # the final file's metadata, with the loss of the steps done so far
        assert {k: v for k, v in a.info.items() if k != "final_loss"} == \
               {k: v for k, v in final.info.items() if k not in ("final_loss", "snapshots")}
    assert _lora_equal(load_adapter(shots[-1].path), final)  # the last snapshot is the result
    assert not _lora_equal(load_adapter(shots[0].path), final)


def test_snapshots_do_not_change_what_trains(tiny, frames, tmp_path):
    plain = _temporal(tiny, frames, steps=4)
    shot = _temporal(tiny, frames, steps=4, snapshot_every=1, snapshot_to=tmp_path / "s.safetensors",
                     validation_prompt="a green square moving", validation_steps=2)
    assert _lora_equal(plain, shot)
    assert "snapshots" not in plain.info and len(shot.info["snapshots"]) == 4


def test_scores_are_the_motion_score_of_each_sample_against_the_reference(tiny, frames, tmp_path):
    shots = []
    _temporal(tiny, frames, steps=4, snapshot_every=2, snapshot_to=tmp_path / "v.safetensors",
              validation_prompt="a green square moving", validation_steps=2, on_snapshot=shots.append)
    assert [s.step for s in shots] == [2, 4]
    for s in shots:
        assert s.preview.shape == frames.shape
        assert s.motion_score == round(motion_similarity(frames, s.preview), 4)
        assert read_snapshot_info(s.path)["motion_score"] == s.motion_score
    # the same seed and noise each time: after two more steps of a small change the samples stay close
    assert (shots[0].preview - shots[1].preview).abs().mean() < 0.2


def test_absorber_snapshots(tiny, frames, tmp_path):
    a = train.train_appearance_absorber(tiny, frames, APPEARANCE, kind="both", steps=3, seed=1, snapshot_every=2,
                                        snapshot_to=tmp_path / "a.safetensors")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a_step00002.safetensors", "a_step00003.safetensors"]
    first = load_adapter(tmp_path / names[0])
    assert first.tokens is not None and first.info["snapshot"]["step"] == 2
    last = load_adapter(tmp_path / names[1])
    assert torch.equal(last.tokens.embeddings, a.tokens.embeddings) and _lora_equal(last, a)


def test_a_snapshot_never_replaces_a_file(tiny, frames, tmp_path):
    mine = tmp_path / "m_step00002.safetensors"
    mine.write_bytes(b"the user's own file")
    final = _temporal(tiny, frames, steps=2, snapshot_every=2, snapshot_to=tmp_path / "m.safetensors")
    assert mine.read_bytes() == b"the user's own file"
    assert final.info["snapshots"][0]["file"] == "m_step00002_00001.safetensors"
    assert load_adapter(tmp_path / "m_step00002_00001.safetensors").info["snapshot"]["step"] == 2


def test_resume_neither_loses_nor_duplicates_snapshots(tiny, frames, tmp_path, monkeypatch):
    """A run killed after its step-4 snapshot but before a checkpoint past step 3 resumes at
    3: it finds the step-2 and step-4 files of this run and writes only the step-6 one."""
    out, ckpt = tmp_path / "r.safetensors", tmp_path / "ckpt"
    post_init = train.TrainJob.__post_init__

    def every_3(self):
        post_init(self)
        self.checkpoint_every = 3

    monkeypatch.setattr(train.TrainJob, "__post_init__", every_3)
    save = train._save_checkpoint
    monkeypatch.setattr(train, "_save_checkpoint", lambda job, opt, step: save(job, opt, step) if step <= 3 else None)

    def killed(step, total, info):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _temporal(tiny, frames, steps=6, snapshot_every=2, snapshot_to=out, checkpoint_dir=ckpt, progress=killed)
    written = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("r_step*")}
    assert sorted(written) == ["r_step00002.safetensors", "r_step00004.safetensors"]
    monkeypatch.setattr(train, "_save_checkpoint", save)
    shots = []
    resumed = _temporal(tiny, frames, steps=6, snapshot_every=2, snapshot_to=out, checkpoint_dir=ckpt, resume=True,
                        on_snapshot=shots.append)
    assert sorted(p.name for p in tmp_path.glob("r_step*")) == [f"r_step0000{s}.safetensors" for s in (2, 4, 6)]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("r_step*") if p.name in written} == written
    assert [s["step"] for s in resumed.info["snapshots"]] == [2, 4, 6]
    assert sorted(s.step for s in shots) == [2, 4, 6]
    # the snapshots are those of an uninterrupted run
    monkeypatch.setattr(train.TrainJob, "__post_init__", post_init)
    whole = tmp_path / "whole"
    _temporal(tiny, frames, steps=6, snapshot_every=2, snapshot_to=whole / "r.safetensors")
    for s in (2, 4, 6):
        assert _lora_equal(load_adapter(tmp_path / f"r_step0000{s}.safetensors"),
                           load_adapter(whole / f"r_step0000{s}.safetensors")), s


@pytest.mark.parametrize("every, match", [
    (-1, r"snapshot_every \(--snapshot-every\) is -1: give the steps between snapshots \(e\.g\. 100\), or 0"),
    (7, r"snapshot_every \(--snapshot-every\) is 7, more than the 6 training steps, so no snapshot would be taken "
        r"before the end; give at most 6"),
    (2.5, r"snapshot_every \(--snapshot-every\) must be a whole number of steps \(0 = no snapshots\), got 2\.5"),
])
def test_snapshot_every_out_of_range(every, match):
    with pytest.raises(InputError, match=match):
        check_snapshot_every(every, 6)


# --------------------------------------------------------------------------- nodes

def _pack():
    """The pack imported as ComfyUI imports it (tests/comfy_helpers.py), and its bridge module."""
    import sys

    from comfy_helpers import load_pack

    pack = load_pack()
    return pack, sys.modules[pack.__name__ + ".nodes.comfy_bridge"]


def sys_module(name: str):
    import importlib

    return importlib.import_module(_pack()[0].__name__ + "." + name)


@pytest.fixture
def comfy_root(tmp_path, monkeypatch):
    _, bridge = _pack()
    for sub in ("models/loras", "input", "output"):
        (tmp_path / sub).mkdir(parents=True)
    monkeypatch.setattr(bridge, "STANDALONE_ROOT", tmp_path)
    return tmp_path


def _node(name: str, **inputs):
    cls = {c.define_schema().node_id: c for c in _pack()[0].NODES}[name]
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return cls.execute(**inputs).args


def test_train_temporal_lora_node_gives_the_grid_and_the_files(tiny, frames, comfy_root):
    grid_module = sys_module("nodes.snapshot_grid")
    LABEL_WIDTH, MAX_COLUMNS, MIN_CELL = grid_module.LABEL_WIDTH, grid_module.MAX_COLUMNS, grid_module.MIN_CELL

    kw = dict(model=tiny, frames=frames, caption=FULL, steps=4, lr=1e-3, rank=2, seed=0, recolor="off",
              validation_prompt="a green square moving", snapshot_every=2, snapshot_prefix="cav/snap")
    tlora, grid, files = _node("TrainTemporalLoRA", **kw)
    assert files.splitlines() == ["output/loras/cav/snap_00001_step00002.safetensors",
                                  "output/loras/cav/snap_00001_step00004.safetensors"]
    for line in files.splitlines():
        assert load_adapter(comfy_root / line).info["snapshot"]["step"] == step_of(line)
    # the reference row, then one row per snapshot (64 px cells: the 32 px frames enlarged), 2 px between rows
    assert grid.shape == (1, 3 * MIN_CELL + 2 * 2, LABEL_WIDTH + MAX_COLUMNS * MIN_CELL, 3)
    assert grid.dtype == torch.float32 and 0 <= grid.min() and grid.max() <= 1
    assert grid[0, :MIN_CELL, LABEL_WIDTH:].mean() > 0  # the reference frames are drawn
    assert grid[0, :, :LABEL_WIDTH].std() > 0  # labels are written
    # a second run: a new run number; both runs are listed by Load T-LoRA / Absorber
    *_, files2 = _node("TrainTemporalLoRA", **kw)
    assert files2.splitlines()[0] == "output/loras/cav/snap_00002_step00002.safetensors"
    names = _pack()[1].lora_names()
    assert {"cav/snap_00001_step00004.safetensors [output]", "cav/snap_00002_step00004.safetensors [output]"} \
        <= set(names)
    (picked,) = _node("LoadCAVAdapter", lora_name="cav/snap_00001_step00004.safetensors [output]",
                      foreign_role="spatial")
    assert _lora_equal(picked, tlora)


def test_training_nodes_with_snapshots_off_and_without_validation(tiny, frames, comfy_root):
    tlora, grid, files = _node("TrainTemporalLoRA", model=tiny, frames=frames, caption=FULL, steps=2, lr=1e-3,
                               rank=2, seed=0, recolor="off")
    assert grid.shape == (1, 1, 1, 3) and float(grid.max()) == 0 and files == ""
    assert not list((comfy_root / "output").rglob("*.safetensors"))
    _, grid, files = _node("TrainTemporalLoRA", model=tiny, frames=frames, caption=FULL, steps=2, lr=1e-3, rank=2,
                           seed=0, recolor="off", snapshot_every=1)
    assert len(files.splitlines()) == 2 and grid.shape[1] == 3 * 64 + 4  # reference + 2 rows, frames black
    LABEL_WIDTH = sys_module("nodes.snapshot_grid").LABEL_WIDTH
    assert float(grid[0, 66:, LABEL_WIDTH:].max()) == pytest.approx(90 / 255)  # only the row separators
    absorber, files = _node("TrainAppearanceAbsorber", model=tiny, frames=frames, caption=APPEARANCE, kind="lora",
                            steps=2, lora_lr=1e-3, ti_lr=1e-3, rank=1, num_tokens=0, crop_min=0.5, crop_max=1.0,
                            seed=0, snapshot_every=2)
    assert files == "output/loras/cav/snapshots/absorber_00001_step00002.safetensors"


def test_node_refuses_a_prefix_outside_the_folder_before_training(tiny, frames, comfy_root):
    with pytest.raises(InputError, match=re.escape("snapshot_prefix '../x' must be a name inside the folder")):
        _node("TrainTemporalLoRA", model=tiny, frames=frames, caption=FULL, steps=50, lr=1e-3, rank=2, seed=0,
              snapshot_every=10, snapshot_prefix="../x")
