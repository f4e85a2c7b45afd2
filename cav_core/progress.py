"""Progress reporting, in one place: the ``progress(step, total, info)`` callback type that
training (``train.run_training``), sampling and inversion (``sample``) call, the ETA they
put in ``info["eta_s"]``, and the command line's one-line printer of it. The ComfyUI side
(``nodes/comfy_bridge.progress``) drives ComfyUI's bar from the same callback."""

from __future__ import annotations

import time
from collections.abc import Callable

ProgressFn = Callable[[int, int, dict], None]


class Eta:
    """Seconds left, from the mean wall time of the steps this object has seen finish.

    Start it when the loop starts; a resumed training run counts only the steps it ran
    itself, so the time spent before the checkpoint does not enter the rate."""

    def __init__(self) -> None:
        self._t0 = time.time()

    def seconds_left(self, done: int, remaining: int) -> float:
        """``done`` steps finished since the start, ``remaining`` still to run."""
        return (time.time() - self._t0) / max(int(done), 1) * remaining


def printer(label: str, every_s: float = 2.0) -> ProgressFn:
    """A one-line progress printer: step/total, loss, ETA. It prints at every 5% of the
    steps, on any step once ``every_s`` seconds have passed since its last line, and at the
    last step."""
    state = {"last": 0.0}

    def report(step: int, total: int, info: dict) -> None:
        if info.get("note"):  # a one-off remark of the run (e.g. a resume that starts fresh): always shown
            print(f"note: {info['note']}", flush=True)
        now = time.time()
        if step != total and now - state["last"] < every_s and step % max(1, total // 20):
            return
        state["last"] = now
        extra = f" loss {info['loss']:.4f}" if "loss" in info else ""
        eta = f" eta {info['eta_s']:.0f}s" if "eta_s" in info else ""
        print(f"{label} {step}/{total}{extra}{eta}", flush=True)

    return report
