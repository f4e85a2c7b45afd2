"""The toy model's training script: every stage runs, resumes where it stopped, a finished
model can be extended (video, decoder) and the export loads like a real model and records
each sitting. Tiny step counts: this checks the mechanics, not the quality."""

from __future__ import annotations

import json

import pytest
import torch

from cav_core.toyworld import train_toy

TINY = dict(train_toy.DEFAULTS, vae_steps=2, vae_batch=4, n_clips=4, image_steps=2, image_batch=4,
            video_steps=2, video_batch=1, decoder_steps=2, warmup=1)


def trainer(work, **over) -> train_toy.Trainer:
    return train_toy.Trainer(work, dict(TINY, **over))


def test_every_stage_runs_then_extensions_are_recorded_and_exported(tmp_path):
    from cav_core.model import load_t2v

    work = tmp_path / "run"
    t = trainer(work)
    t.run(minutes=5)
    assert t.state["stage"] == "done"
    log = (work / "train.log").read_text()
    for stage in ("vae done", "image done", "video done", "decoder done"):
        assert stage in log

    unfinished = trainer(tmp_path / "unfinished")
    unfinished.state = {"stage": "video", "step": 0}
    unfinished.save()
    with pytest.raises(SystemExit, match="finish it first"):
        trainer(tmp_path / "unfinished").run(minutes=5, extend=("video", 2))

    before = {k: v.clone() for k, v in t.c.vae.encoder.state_dict().items()}
    dec_before = {k: v.clone() for k, v in t.c.vae.decoder.state_dict().items()}
    trainer(work).run(minutes=5, extend=("video", 3), image_every=2, direction_aux=0.02, argv=["--extend-video", "3"])
    ext = trainer(work)
    ext.run(minutes=5, extend=("decoder", 2), argv=["--extend-decoder", "2"])
    # The decoder sitting leaves the encoder (the latent space the UNet learned) untouched.
    assert all(torch.equal(v, ext.c.vae.encoder.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, ext.c.vae.decoder.state_dict()[k]) for k, v in dec_before.items())

    out = tmp_path / "model"
    assert train_toy.main(["--work", str(work), "--export", str(out)]) == 0
    meta = json.loads((out / "training.json").read_text())
    assert [s["argv"] for s in meta["sittings"]][-2:] == [["--extend-video", "3"], ["--extend-decoder", "2"]]
    assert meta["sittings"][-2]["from"]["direction_aux"] == 0.02
    assert meta["sittings"][-2]["from"]["image_every"] == 2 and meta["sittings"][-1]["to"]["stage"] == "done"
    assert "--vae-steps 2" in meta["command"]  # the recipe of the run that was extended
    assert type(load_t2v(out).base.unet).__name__ == "UNet3DConditionModel"


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    whole = trainer(tmp_path / "whole", video_steps=4, decoder_steps=0)
    whole.run(minutes=5)
    # Stop in the middle of the video stage, as a deadline or Ctrl-C would.
    stopped = trainer(tmp_path / "stopped", video_steps=4, decoder_steps=0)

    def out_of_time(deadline: float) -> bool:
        return stopped.state["stage"] == "video" and stopped.state["step"] >= 2

    stopped._out_of_time = out_of_time  # type: ignore[method-assign]
    stopped.run(minutes=5)
    assert stopped.state == {"stage": "video", "step": 2}
    resumed = trainer(tmp_path / "stopped", video_steps=4, decoder_steps=0)
    resumed.run(minutes=5)
    assert resumed.state["stage"] == "done"
    for (k, a), b in zip(whole.c.unet.state_dict().items(), resumed.c.unet.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
