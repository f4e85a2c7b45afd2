"""Snapshots: the adapter saved every N steps of a run, to pick the best one afterwards.

The paper finds that the best number of steps differs from one reference video to the next
(supplement 0.B.3), so a run can leave numbered files next to its result
(``name_step00300.safetensors``), each a complete adapter file with the metadata the final
one has plus ``info["snapshot"]`` (step, run, motion score). With a validation prompt each
snapshot is sampled with the same seed and noise and scored against the reference with
:func:`cav_core.metrics.motion_similarity` (docs/DESIGN.md, "Snapshots").

:func:`cav_core.train.run_training` calls a :class:`Snapshots` hook at the snapshot steps; the
hook never changes the training (it reads the weights and samples without touching the
training's random streams), so a run with snapshots trains the same LoRA as one without.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from .adapter_files import METADATA_KEY, AdapterFile, save_adapter
from .errors import InputError
from .fileutil import glob_escape

#: A snapshot destination: the run's output file (snapshots go next to it as
#: ``stem_stepNNNNN.safetensors``), or a function ``save(step, adapter) -> path written``
#: (the ComfyUI nodes number files their own way, nodes/loaders.py ``save_numbered``).
SnapshotDest = Union[str, os.PathLike, Callable[[int, AdapterFile], Path]]
#: The key of a snapshot's entry in its adapter's ``info``.
INFO_KEY = "snapshot"


@dataclass
class Snapshot:
    """One snapshot of a run: its step, the file written, and with a validation prompt the
    validation sample (F, H, W, 3 in 0..1) and its motion score against the reference."""

    step: int
    path: Path
    motion_score: float | None = None
    preview: torch.Tensor | None = None

    def line(self) -> str:
        """One line for a log or the CLI."""
        score = "" if self.motion_score is None else f"  motion score {self.motion_score:+.3f}"
        return f"step {self.step:>6}  {self.path}{score}"


def check_snapshot_every(every: object, steps: int, label: str = "snapshot_every (--snapshot-every)") -> int:
    """``every`` as steps between snapshots (0 = off), refused with a message naming ``label``
    when it is not a whole number in 0..steps."""
    if isinstance(every, bool) or not isinstance(every, int):
        raise InputError(f"{label} must be a whole number of steps (0 = no snapshots), got {every!r}")
    if every < 0:
        raise InputError(f"{label} is {every}: give the steps between snapshots (e.g. 100), or 0 for none")
    if every > steps:
        raise InputError(f"{label} is {every}, more than the {steps} training steps, so no snapshot would be "
                         f"taken before the end; give at most {steps} (e.g. {max(1, steps // 4)}), or 0 for none")
    return every


def snapshot_steps(every: int, steps: int) -> list[int]:
    """The steps a run of ``steps`` takes snapshots at: every ``every`` steps, and the last."""
    if every <= 0:
        return []
    return sorted(set(range(every, steps + 1, every)) | {steps})


def snapshot_path(out: str | os.PathLike, step: int) -> Path:
    """The snapshot of step ``step`` next to the output ``out``: ``stem_step00300.safetensors``."""
    o = Path(out)
    return o.with_name(f"{o.stem}_step{step:05d}{o.suffix or '.safetensors'}")


def read_snapshot_info(path: str | os.PathLike) -> dict | None:
    """The ``info["snapshot"]`` entry of an adapter file (header only), None if it has none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
    except Exception:  # noqa: BLE001 - not a readable adapter file: not one of this run's snapshots
        return None
    entry = meta.get("info", {}).get(INFO_KEY) if isinstance(meta, dict) else None
    return entry if isinstance(entry, dict) else None


class Snapshots:
    """The snapshot hook of one training run (see the module doc).

    ``adapter_at(extra)`` returns the adapter as it is now, with ``extra`` as its
    ``info["snapshot"]``; ``sample()`` draws the validation video (same seed and noise every
    time), scored against ``reference``; ``on_snapshot`` is told of each snapshot.

    With an output file as ``dest``, a snapshot that a killed run of the same settings
    already wrote (same ``run_id`` and step in its metadata) is taken as it is, so a resumed
    run neither loses nor duplicates snapshots; any other file of that name is kept and the
    snapshot takes the next counter name (``..._step00300_00001.safetensors``)."""

    def __init__(self, every: int, steps: int, dest: SnapshotDest, adapter_at: Callable[[dict], AdapterFile],
                 run_id: str, sample: Callable[[], torch.Tensor] | None = None,
                 reference: torch.Tensor | None = None,
                 on_snapshot: Callable[[Snapshot], None] | None = None) -> None:
        self.every, self.steps, self.dest, self.run_id = every, steps, dest, run_id
        self.adapter_at, self.sample, self.reference, self.on_snapshot = adapter_at, sample, reference, on_snapshot
        self.taken: dict[int, Snapshot] = {}

    def due(self, step: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == self.steps)

    def _own_file(self, step: int) -> Path | None:
        """A file next to the output that this very run wrote for ``step`` (a resumed run's)."""
        if callable(self.dest):
            return None
        first = snapshot_path(self.dest, step)
        numbered = sorted(first.parent.glob(glob_escape(first.stem) + "_[0-9][0-9][0-9][0-9][0-9]" + first.suffix))
        for p in [first, *numbered]:
            entry = read_snapshot_info(p) if p.is_file() else None
            if entry and entry.get("run") == self.run_id and entry.get("step") == step:
                return p
        return None

    def _adopt(self, step: int, path: Path) -> Snapshot:
        score = (read_snapshot_info(path) or {}).get("motion_score")
        return self._record(Snapshot(step, path, float(score) if isinstance(score, (int, float)) else None))

    def _record(self, shot: Snapshot) -> Snapshot:
        self.taken[shot.step] = shot
        if self.on_snapshot is not None:
            self.on_snapshot(shot)
        return shot

    def __call__(self, step: int) -> torch.Tensor | None:
        """Take the snapshot of ``step`` (the weights as they are now); returns the validation
        sample, if one was drawn, so the caller can show it as the progress preview."""
        own = self._own_file(step)
        if own is not None:
            self._adopt(step, own)
            return None
        preview = score = None
        if self.sample is not None:
            from .metrics import motion_similarity

            preview = self.sample()
            if self.reference is not None:
                score = round(float(motion_similarity(self.reference, preview)), 4)
        extra = {"step": step, "of": self.steps, "run": self.run_id, "motion_score": score}
        adapter = self.adapter_at(extra)
        if callable(self.dest):
            path = Path(self.dest(step, adapter))
        else:
            path = save_adapter(snapshot_path(self.dest, step), adapter, overwrite=False, unique=True)
        self._record(Snapshot(step, path, score, preview))
        return preview

    def finish(self) -> list[Snapshot]:
        """Every snapshot of the run, in step order: those taken here, and (resumed run) those
        an earlier process of the same run wrote before its last checkpoint."""
        for step in snapshot_steps(self.every, self.steps):
            if step not in self.taken:
                own = self._own_file(step)
                if own is not None:
                    self._adopt(step, own)
        return [self.taken[s] for s in sorted(self.taken)]

    def records(self) -> list[dict]:
        """What the final adapter's info records of its snapshots (file names, not paths)."""
        return [{"step": s.step, "file": s.path.name, "motion_score": s.motion_score}
                for s in (self.taken[k] for k in sorted(self.taken))]


_STEP = re.compile(r"_step(\d{5,})(?:_\d{5})?$")


def step_of(path: str | os.PathLike) -> int | None:
    """The step in a snapshot file name (``x_step00300.safetensors`` -> 300), None if none."""
    m = _STEP.search(Path(path).stem)
    return int(m.group(1)) if m else None


__all__ = ["Snapshot", "Snapshots", "SnapshotDest", "check_snapshot_every", "snapshot_steps", "snapshot_path",
           "read_snapshot_info", "step_of", "INFO_KEY"]
