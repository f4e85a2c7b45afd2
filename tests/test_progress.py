"""The one progress/ETA helper (cav_core/progress.py) that training, sampling, inversion
and the command line share."""

from __future__ import annotations

from cav_core import progress


def test_eta_is_the_mean_step_time_times_the_steps_left(monkeypatch):
    clock = iter([100.0, 106.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    eta = progress.Eta()  # starts at t = 100
    assert eta.seconds_left(3, 5) == 10.0  # 6 s for 3 steps -> 2 s a step, 5 left


def test_printer_prints_every_5_percent_and_the_last_step(monkeypatch, capsys):
    monkeypatch.setattr(progress.time, "time", lambda: 0.0)  # never 2 s between calls
    report = progress.printer("step")
    for step in range(1, 41):
        report(step, 40, {"loss": 0.5, "eta_s": 3.2})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step 2/40 loss 0.5000 eta 3s"
    assert len(lines) == 20 and lines[-1].startswith("step 40/40 ")


def test_printer_prints_when_time_has_passed(monkeypatch, capsys):
    now = [10.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    report = progress.printer("sampling step")
    report(1, 1000, {})  # the first call: 10 s since "never"
    now[0] = 11.0
    report(2, 1000, {})  # 1 s later, not a 5% mark
    now[0] = 13.0
    report(3, 1000, {})
    assert capsys.readouterr().out.splitlines() == ["sampling step 1/1000", "sampling step 3/1000"]
