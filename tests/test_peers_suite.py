"""The motion suite (benchmarks/motion_suite.py) and the peers table (benchmarks/peers.py):
the split is fixed and disjoint, the paths are deterministic and fit the frame, and the
table's --quick mode runs end to end (at a further reduced setting, so it stays CI-sized)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import motion_suite as suite  # noqa: E402
import peers  # noqa: E402

from cav_core.toyworld.spec import CENTER_MAX, CENTER_MIN, CURVED_MOTIONS  # noqa: E402


def test_suite_split_is_fixed_and_families_are_disjoint():
    dev, test = suite.motions("dev"), suite.motions("test")
    assert {m.name for m in dev}.isdisjoint(m.name for m in test)
    assert {m.family for m in dev}.isdisjoint(m.family for m in test)
    new = [m for m in suite.SUITE if m.family not in CURVED_MOTIONS]
    assert len(new) >= 12 and len(test) >= 6
    # every bundled clip is in the dev half (the defaults were tuned on the circle)
    assert {"circle", "zigzag", "bounce"} <= {m.name for m in dev}
    looks = {(m.color, m.background) for m in suite.SUITE}
    assert {"white"} <= {c for c, _ in looks} and {"gray", "black"} <= {b for _, b in looks}


def test_suite_paths_are_deterministic_moving_and_inside_the_frame():
    for m in suite.SUITE:
        c = m.centers()
        np.testing.assert_array_equal(c, m.centers())
        assert c.shape == (16, 2)
        assert c.min() >= CENTER_MIN - 1e-9 and c.max() <= CENTER_MAX + 1e-9, m.name
        assert np.hypot(*np.diff(c, axis=0).T).sum() > 10.0, m.name
    # the bundled three are exactly the shipped clips' paths
    from cav_core.toyworld.clips import reference_clip

    np.testing.assert_allclose(suite.BY_NAME["zigzag"].centers(), reference_clip("zigzag").centers, atol=1e-9)


def test_new_subject_prompts_name_no_motion_and_differ_from_the_reference():
    from cav_core.toyworld.spec import motion_unnamed_caption

    for m in suite.SUITE:
        subjects = suite.prompts_for(m, 8)
        assert len(subjects) == 8
        for s in subjects:
            assert s[0] != m.color
            assert suite.prompt_text(s) == motion_unnamed_caption(*s)
            assert not any(phrase in suite.prompt_text(s) for phrase in CURVED_MOTIONS.values())
            assert s in suite.good_subjects()


def test_peers_quick_runs_end_to_end(tmp_path, capsys):
    out_json = tmp_path / "peers.json"
    out = peers.main(["--quick", "--split", "dev", "--motions", "1", "--seeds", "2", "--sample-steps", "2",
                      "--temporal-steps", "2", "--absorber-steps", "2", "--md-steps", "2", "--json", str(out_json)])
    saved = json.loads(out_json.read_text())
    assert saved["table"].keys() == out["table"].keys() == set(peers.METHODS)
    for method in ("base", "inversion@1", "inversion@0.5", "cav", "cav-noabs", "md@0", "md@0.5"):
        row = saved["table"][method]
        assert -1.0 <= row["fidelity"] <= 1.0 and row["worst"] <= row["fidelity"]
        assert 0.0 <= row["variety"] <= 1.0
    assert saved["table"]["base"]["color_vs_base"] == 0.0
    assert saved["table"]["cav"]["train_s"] > 0.0 and saved["table"]["base"]["train_s"] == 0.0
    printed = capsys.readouterr().out
    assert "threads" in printed and "seeds per motion" in printed


def test_the_prior_pilots_arcs_bend_one_way_at_constant_speed():
    # benchmarks/motion_prior_pilot.py claims a family the suite does not hold: one bend, no
    # change of speed (the suite's curves loop, wave, reverse, pause or accelerate).
    import motion_prior_pilot as pilot

    g = np.random.default_rng(0)
    for _ in range(50):
        c = pilot.arc(g, 16)
        steps = np.diff(c, axis=0)
        speed = np.hypot(*steps.T)
        assert speed.max() / speed.min() < 1.02
        turn = np.cross(steps[:-1], steps[1:])
        assert (turn > 0).all() or (turn < 0).all()
        assert 14 - 0.5 <= speed.sum() <= 30 * 1.3  # chord 14-30 px; the bend adds under 30%


def test_budget_steps_charge_the_set_up_once():
    # 10 steps in 12 s and 30 in 16 s: 0.2 s a step after 10 s of set-up, so 110 s hold 500
    # steps; charging the set-up to every step (12 s / 10) would give 91
    assert peers.step_cost((10, 12.0), (30, 16.0)) == (0.2, 10.0)
    assert peers.fit_steps(110.0, (10, 12.0), (30, 16.0)) == 500
    assert peers.fit_steps(5.0, (10, 12.0), (30, 16.0)) == 1  # a budget under the set-up: one step


def test_multiclip_views_off_trains_without_the_toys_extra_views(monkeypatch):
    # benchmarks/multiclip.py --views off stands in for the real-model profile, where recolor,
    # the white tint and rebackground are off; the run is only that if all three reach training.
    import multiclip

    import cav_core.train as train_mod

    seen: list[dict] = []

    class Stop(Exception):
        pass

    def fake_train(handle, frames, caption, **kwargs):
        seen.append(kwargs)
        raise Stop

    monkeypatch.setattr(train_mod, "train_temporal_lora", fake_train)
    monkeypatch.setattr(multiclip, "toy_handle", lambda: None)
    names = ("recolor", "tint_white", "rebackground")
    for views, expected in (("off", False), ("default", None)):
        with pytest.raises(Stop):
            multiclip.main(["--motions", "ellipse_wide", "--seeds", "1", "--steps", "1", "--views", views])
        assert {k: seen[-1].get(k) for k in names} == dict.fromkeys(names, expected)
    assert len(seen) == 2 and len(seen[0]["more_clips"]) == 0
