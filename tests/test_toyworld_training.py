"""The toy model's training script: every stage runs, resumes where it stopped, a finished
model can be extended (video, decoder) and the export loads like a real model and records
each sitting. Tiny step counts: this checks the mechanics, not the quality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cav_core.toyworld import spec, train_toy

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
    trainer(work).run(minutes=5, extend=("video", 3), image_every=2, direction_aux=0.02, high_noise_weight=10.0, direction_contrast=1.0,
                       argv=["--extend-video", "3"])
    eps = trainer(work)
    assert eps.load() and eps.c.scheduler_config["prediction_type"] == "epsilon"
    trainer(work).run(minutes=5, extend=("video", 50), image_every=4, high_noise_weight=10.0, v_zero_snr=True,
                      position_aux=0.1, argv=["--extend-video", "50", "--v-zero-snr", "--position-aux", "0.1"])
    logged = (work / "train.log").read_text().splitlines()[-3]
    assert "video step 50/50" in logged and float(logged.split("position-probe loss ")[1].split()[0]) > 0
    ext = trainer(work)
    ext.load()
    # The objective switch sticks to the weights: the checkpoint carries it into later sittings.
    assert ext.c.scheduler_config["prediction_type"] == "v_prediction"
    assert ext.noise_schedule.alphas_cumprod[-1].item() == 0.0
    ext.run(minutes=5, extend=("decoder", 2), argv=["--extend-decoder", "2"])
    # The decoder sitting leaves the encoder (the latent space the UNet learned) untouched.
    assert all(torch.equal(v, ext.c.vae.encoder.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, ext.c.vae.decoder.state_dict()[k]) for k, v in dec_before.items())

    # A restarted sitting: new UNet and text encoder, same VAE, image then video steps.
    vae_before = {k: v.clone() for k, v in ext.c.vae.state_dict().items()}
    unet_before = {k: v.clone() for k, v in ext.c.unet.state_dict().items()}
    restart = trainer(work)
    restart.run(minutes=5, extend=("image", 2), video_steps=3, direction_aux=0.02, argv=["--restart-diffusion", "2", "3"])
    assert restart.state["stage"] == "done"
    assert "UNet and text encoder restarted" in (work / "train.log").read_text()
    assert all(torch.equal(v, restart.c.vae.state_dict()[k]) for k, v in vae_before.items())
    assert any(not torch.equal(v, restart.c.unet.state_dict()[k]) for k, v in unet_before.items())
    assert restart.history[-1]["from"]["video_total"] == 3

    out = tmp_path / "model"
    assert train_toy.main(["--work", str(work), "--export", str(out)]) == 0
    meta = json.loads((out / "training.json").read_text())
    assert [s["argv"] for s in meta["sittings"]][-4:] == [["--extend-video", "3"], ["--extend-video", "50", "--v-zero-snr", "--position-aux", "0.1"],
                                                          ["--extend-decoder", "2"], ["--restart-diffusion", "2", "3"]]
    assert meta["sittings"][-4]["from"]["direction_aux"] == 0.02
    assert meta["sittings"][-4]["from"]["high_noise_weight"] == 10.0
    assert meta["sittings"][-4]["from"]["direction_contrast"] == 1.0
    assert meta["sittings"][-4]["from"]["image_every"] == 2 and meta["sittings"][-2]["to"]["stage"] == "done"
    assert meta["sittings"][-3]["from"]["objective"].startswith("v_prediction")
    assert meta["sittings"][-3]["from"]["position_aux"] == 0.1
    assert "--vae-steps 2" in meta["command"]  # the recipe of the run that was extended
    loaded = load_t2v(out).base
    assert type(loaded.unet).__name__ == "UNet3DConditionModel"
    # The shipped scheduler config is what the weights were trained for.
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["prediction_type"], sched["rescale_betas_zero_snr"], sched["timestep_spacing"]) == \
        ("v_prediction", True, "trailing")
    assert loaded.scheduler_config["prediction_type"] == "v_prediction"


def test_the_terminal_sitting_trains_a_v_model_at_pure_noise_on_moving_captions(tmp_path):
    work = tmp_path / "run"
    trainer(work, n_clips=12).run(minutes=5)
    with pytest.raises(SystemExit, match="needs a model trained with --v-zero-snr"):
        trainer(work).run(minutes=5, extend=("terminal", 2))
    trainer(work).run(minutes=5, extend=("video", 2), v_zero_snr=True)
    t = trainer(work)
    t.load()
    seen_t, seen_prompts = [], []
    t.c.unet.register_forward_pre_hook(lambda _m, args: seen_t.extend(args[1].tolist()))
    encode = t._encode
    t._encode = lambda prompts: (seen_prompts.extend(prompts), encode(prompts))[1]
    before = {k: v.clone() for k, v in t.c.unet.state_dict().items()}
    vae_before = {k: v.clone() for k, v in t.c.vae.state_dict().items()}
    t.run(minutes=5, extend=("terminal", 3), argv=["--extend-terminal", "3"])
    assert t.state["stage"] == "done" and "terminal done" in (work / "train.log").read_text()
    assert seen_t and set(seen_t) == {999}
    labels = [train_toy.Trainer._direction_label(p) for p in seen_prompts]
    assert len(seen_prompts) == 3 and all(lab >= 0 and "still" not in p for lab, p in zip(labels, seen_prompts))
    assert any(not torch.equal(v, t.c.unet.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, t.c.vae.state_dict()[k]) for k, v in vae_before.items())
    assert t.history[-1]["argv"] == ["--extend-terminal", "3"] and t.history[-1]["from"]["stage"] == "terminal"

    # --opening-frames: every other step sees only the clips' first N frames.
    frames = []
    t.c.unet.register_forward_pre_hook(lambda _m, args: frames.append(args[0].shape[2]))
    text_before = {k: v.clone() for k, v in t.c.text_encoder.state_dict().items()}
    unet_before = {k: v.clone() for k, v in t.c.unet.state_dict().items()}
    t.run(minutes=5, extend=("terminal", 4), opening_frames=4, freeze_text=True,
          argv=["--extend-terminal", "4", "--opening-frames", "4", "--freeze-text"])
    assert frames == [4, 16, 4, 16] and t.history[-1]["from"]["opening_frames"] == 4
    # --freeze-text leaves the text encoder as it is, so the direction words stay apart.
    assert all(torch.equal(v, t.c.text_encoder.state_dict()[k]) for k, v in text_before.items())
    assert any(not torch.equal(v, t.c.unet.state_dict()[k]) for k, v in unet_before.items())

    # --with-still: the sitting also draws still clips, so "still" keeps a motionless estimate.
    caps = [{"full": spec.full_caption("red", "circle", d, "black")} for d in spec.DIRECTIONS]
    is_still = np.array([d == "still" for d in spec.DIRECTIONS])
    assert not is_still[t._terminal_pool(caps)].any()
    t.run(minutes=5, extend=("terminal", 1), with_still=True, argv=["--extend-terminal", "1", "--with-still"])
    assert t.history[-1]["from"]["with_still"] and sorted(t._terminal_pool(caps)) == list(range(len(caps)))


def test_text_pretraining_tells_the_words_apart_then_the_restart_keeps_it_frozen(tmp_path):
    work = tmp_path / "run"
    trainer(work, n_clips=12).run(minutes=5)
    t = trainer(work)
    pretrained, losses = {}, []
    pretrain = t.pretrain_text

    def spy(steps: int) -> list[float]:
        losses.extend(pretrain(steps))
        pretrained.update({k: v.clone() for k, v in t.c.text_encoder.state_dict().items()})
        return losses

    t.pretrain_text = spy
    t.run(minutes=5, extend=("image", 2), video_steps=2, text_pretrain=60,
          argv=["--restart-diffusion", "2", "2", "--text-pretrain", "60"])
    assert t.state["stage"] == "done" and "text pretraining: 60 steps" in (work / "train.log").read_text()
    assert t.history[-1]["from"]["freeze_text"] and t.history[-1]["from"]["text_pretrain"] == 60
    # The heads' loss falls: the encoder learned to tell the caption's words apart...
    assert len(losses) == 60 and sum(losses[-10:]) < 0.7 * sum(losses[:10])
    # ...and the image and video steps trained the UNet around a text encoder they left alone.
    assert pretrained and all(torch.equal(v, t.c.text_encoder.state_dict()[k]) for k, v in pretrained.items())


@pytest.mark.parametrize("argv, message", [
    (["--opening-frames", "4"], "give it with --extend-terminal"),
    (["--with-still"], "give it with --extend-terminal"),
    (["--still-rows", "2"], "give it with --extend-video or --restart-diffusion"),
    (["--extend-video", "10", "--still-rows", "5", "--terminal-rows", "4"], "together give 0 to 8"),
    (["--text-pretrain", "400"], "give it with --restart-diffusion"),
    (["--freeze-text"], "give it with --extend-video, --extend-terminal or --restart-diffusion"),
    (["--extend-video", "10", "--freeze-text", "--direction-aux", "0.02"], "drop one"),
    (["--extend-terminal", "10", "--opening-frames", "16"], "give 1 to 15"),
])
def test_opening_frames_is_refused_outside_a_terminal_sitting(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        train_toy.main(["--work", str(tmp_path / "run"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before any training


def record_batches(t: train_toy.Trainer):
    """Spy on ``t``'s training steps: returns a function giving (timesteps, prompts) per step."""
    calls = []  # [timesteps, None] per UNet call, [None, prompts] per text encoding
    t.c.unet.register_forward_pre_hook(lambda _m, args: calls.append([args[1].tolist(), None]))
    encode = t._encode
    t._encode = lambda prompts: (calls.append([None, list(prompts)]), encode(prompts))[1]
    # _encode runs before each UNet call: pair them up.
    return lambda: [(calls[i + 1][0], calls[i][1]) for i in range(0, len(calls), 2)]


def test_terminal_rows_put_the_last_rows_of_each_video_batch_at_pure_noise(tmp_path):
    work = tmp_path / "run"
    trainer(work, n_clips=12, video_batch=3).run(minutes=5)
    with pytest.raises(SystemExit, match="--terminal-rows needs --v-zero-snr"):
        trainer(work).run(minutes=5, extend=("video", 2), terminal_rows=1)
    t = trainer(work)
    batches = record_batches(t)
    t.run(minutes=5, extend=("video", 6), v_zero_snr=True, terminal_rows=2, image_every=3,
          argv=["--extend-video", "6", "--v-zero-snr", "--terminal-rows", "2"])
    assert t.state["stage"] == "done" and t.history[-1]["from"]["terminal_rows"] == 2
    steps = batches()
    assert len(steps) == 6
    for step, (ts, prompts) in enumerate(steps):
        if step % 3 == 2:  # an image batch: no terminal rows
            assert len(ts) == TINY["image_batch"] and ts.count(999) < 2
            continue
        assert len(ts) == 3 and ts[-2:] == [999, 999]
        for p in prompts[-2:]:  # full captions of moving clips, never dropped for guidance
            assert train_toy.Trainer._direction_label(p) >= 0 and "still" not in p


def test_still_rows_put_still_clips_with_full_captions_first_in_each_video_batch(tmp_path):
    work = tmp_path / "run"
    trainer(work, n_clips=27, video_batch=3).run(minutes=5)
    t = trainer(work)
    batches = record_batches(t)
    t.run(minutes=5, extend=("video", 6), still_rows=2, image_every=3,
          argv=["--extend-video", "6", "--still-rows", "2"])
    assert t.state["stage"] == "done" and t.history[-1]["from"]["still_rows"] == 2
    still = list(spec.DIRECTIONS).index("still")
    steps = batches()
    assert len(steps) == 6
    for step, (ts, prompts) in enumerate(steps):
        if step % 3 == 2:  # an image batch: a single frame shows no motion, no still rows
            assert len(ts) == TINY["image_batch"]
            continue
        assert len(ts) == 3
        # Full captions of still clips (never dropped for guidance), at the batch's own timesteps.
        assert [train_toy.Trainer._direction_label(p) for p in prompts[:2]] == [still, still]
    assert len({t for ts, _ in steps for t in ts}) > 2


def test_still_rows_need_a_still_clip_in_the_cache(tmp_path):
    work = tmp_path / "run"
    t = trainer(work, n_clips=4)
    t.run(minutes=5)
    data = torch.load(t.data_path, weights_only=True)
    caps = json.loads(data["captions"])
    still = list(spec.DIRECTIONS).index("still")
    keep = [i for i, c in enumerate(caps) if train_toy.Trainer._direction_label(c["full"]) != still]
    data["latents"] = data["latents"][keep].clone()
    data["captions"] = json.dumps([caps[i] for i in keep])
    torch.save(data, t.data_path)
    with pytest.raises(SystemExit, match="--still-rows: no clip .* is still"):
        trainer(work).run(minutes=5, extend=("video", 2), still_rows=1)


def test_v_zero_snr_is_a_sitting_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_toy.main(["--work", str(tmp_path / "run"), "--v-zero-snr"])
    assert exc.value.code == 2 and "give it with --extend-video or --restart-diffusion" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before any training


def test_loss_weights_favour_high_noise_only_when_asked():
    ac = torch.tensor([0.999, 0.5, 0.2, 0.01])  # SNR 999, 1, 0.25, ~0.0101
    plain = train_toy.loss_weights(ac, min_snr=5.0)
    torch.testing.assert_close(plain, torch.tensor([5 / 999, 1.0, 1.0, 1.0]), rtol=1e-4, atol=0)
    high = train_toy.loss_weights(ac, min_snr=5.0, high_noise_weight=25.0)
    # 1/SNR where it is between 1 and the cap; the cap near pure noise; low noise unchanged.
    torch.testing.assert_close(high, torch.tensor([5 / 999, 1.0, 4.0, 25.0]), rtol=1e-4, atol=0)

    # v-prediction at zero terminal SNR: the same x0 weights over (SNR + 1); pure noise
    # counts only when asked, and then as much as an x0 error at SNR 1.
    ac = torch.tensor([0.999, 0.5, 0.2, 0.0])  # SNR 999, 1, 0.25, 0
    plain_v = train_toy.loss_weights(ac, min_snr=5.0, prediction="v_prediction")
    torch.testing.assert_close(plain_v, torch.tensor([5 / 1000, 0.5, 0.2, 0.0]), rtol=1e-3, atol=1e-6)
    high_v = train_toy.loss_weights(ac, min_snr=5.0, high_noise_weight=25.0, prediction="v_prediction")
    torch.testing.assert_close(high_v, torch.tensor([5 / 1000, 0.5, 0.8, 1.0]), rtol=1e-3, atol=1e-6)


def test_the_contrast_caption_swaps_only_the_direction_word():
    import numpy as np

    from cav_core.toyworld import spec

    rng = np.random.default_rng(0)
    seen = set()
    for direction in spec.DIRECTIONS:
        prompt = spec.full_caption("red", "circle", direction, "gray")
        for _ in range(80):
            wrong = train_toy.Trainer.wrong_direction(prompt, rng)
            words, orig = wrong.split(), prompt.split()
            diff = [i for i, (a, b) in enumerate(zip(words, orig)) if a != b]
            assert len(words) == len(orig) and diff == [orig.index("moving") + 1], wrong
            assert words[diff[0]] in spec.DIRECTIONS
            seen.add((direction, words[diff[0]]))
    assert len(seen) == len(spec.DIRECTIONS) * (len(spec.DIRECTIONS) - 1)  # every other word is drawn
    assert train_toy.Trainer.wrong_direction("a red circle on a gray background", rng) is None


def test_the_contrast_loss_takes_part_only_at_high_noise(tmp_path):
    import numpy as np

    t = trainer(tmp_path / "c")
    unet = t.c.unet.train().requires_grad_(True)
    prompts = ["a red circle moving left on a gray background", "a red circle on a gray background"]
    xt, noise = torch.randn(2, 4, 16, 8, 8), torch.randn(2, 4, 16, 8, 8)
    w = torch.ones(2)

    def contrast(steps):
        ts = torch.tensor(steps)
        per_sample = ((unet(xt, ts, encoder_hidden_states=t._encode(prompts)[0]).sample - noise) ** 2).mean(dim=(1, 2, 3, 4))
        return t._contrast_loss(np.random.default_rng(0), unet, xt, ts, noise, w, per_sample, prompts)

    assert contrast([100, 900]).item() == 0.0  # the caption naming a direction is at low noise
    loss = contrast([900, 900])
    assert loss.item() > 0  # a random UNet predicts the right word within the 20% margin
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())


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


def test_help_prints_every_option(capsys):
    # argparse formats help strings with %: a bare % in one breaks --help for all of them.
    with pytest.raises(SystemExit) as exc:
        train_toy.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--still-rows" in out and "--with-still" in out


def test_an_image_only_sitting_logs_no_empty_video_loss(tmp_path):
    work = tmp_path / "run"
    trainer(work).run(minutes=5)
    trainer(work).run(minutes=5, extend=("video", 50), image_every=1, argv=["--extend-video", "50", "--image-every", "1"])
    logged = [line for line in (work / "train.log").read_text().splitlines() if "video step 50/50" in line]
    assert logged and "nan" not in logged[0] and " image loss " in logged[0], logged
