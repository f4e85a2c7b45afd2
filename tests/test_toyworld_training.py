"""The toy model's research trainer (toyworld_training/): a tiny model rebuilt end to end with
the shipped recipe's options, resuming, the option checks, and the diffusers helpers it uses
in place of hand-written ones. Tiny step counts: this checks the mechanics, not the quality."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from cav_core.toyworld import MODEL_DIR, spec
from toyworld_training import cli, losses, schedule
from toyworld_training.batches import direction_label
from toyworld_training.recipe import DEFAULTS
from toyworld_training.trainer import Trainer

TINY = dict(DEFAULTS, vae_steps=2, vae_batch=4, n_clips=27, image_steps=2, image_batch=4,
            video_steps=2, video_batch=3, decoder_steps=2, warmup=1)
SIZES = ["--vae-steps", "2", "--vae-batch", "4", "--n-clips", "27", "--image-steps", "2", "--image-batch", "4",
         "--video-steps", "2", "--video-batch", "3", "--decoder-steps", "2", "--warmup", "1"]


def spy(t: Trainer) -> list[tuple[list[int], list[str], int]]:
    """Record (timesteps, prompts, frames) of every UNet call of ``t``'s training steps."""
    calls: list = []
    prompts: list = []
    t.c.unet.register_forward_pre_hook(lambda _m, args: calls.append((args[1].tolist(), prompts[-1], args[0].shape[2])))
    encode = t.encode
    t.encode = lambda p: (prompts.append(list(p)), encode(p))[1]
    return calls


def test_a_tiny_model_is_rebuilt_end_to_end_with_the_shipped_recipe_and_samples(tmp_path, capsys):
    """The v6 sittings (cav_core/toyworld/model/training.json) at tiny sizes: the first run
    (VAE, clips, decoder), a restarted UNet and text encoder with text pretraining and
    v-prediction, a terminal sitting, a video sitting with a still row; then the export loads
    like a real model and samples."""
    from cav_core import sample
    from cav_core.model import load_t2v

    work, out = tmp_path / "run", tmp_path / "model"
    run = ["--work", str(work), "--minutes", "5"]
    assert cli.main(run + SIZES) == 0
    log = (work / "train.log").read_text()
    assert all(f"{stage} done" in log for stage in ("vae", "image", "video", "decoder"))
    first = Trainer(work, dict(TINY))
    first.load()
    vae_before = {k: v.clone() for k, v in first.c.vae.state_dict().items()}
    unet_before = {k: v.clone() for k, v in first.c.unet.state_dict().items()}

    restart = ["--restart-diffusion", "2", "3", "--text-pretrain", "60", "--v-zero-snr", "--image-every", "2",
               "--high-noise-weight", "25", "--position-aux", "0.1"]
    assert cli.main(run + restart) == 0
    log = (work / "train.log").read_text()
    assert "UNet and text encoder restarted" in log
    head_loss = re.search(r"text pretraining: 60 steps, head loss ([\d.]+) -> ([\d.]+)", log)
    assert head_loss and float(head_loss[2]) < 0.7 * float(head_loss[1])  # it learned to tell the words apart
    t = Trainer(work, dict(TINY))
    t.load()
    assert t.c.scheduler_config["prediction_type"] == "v_prediction" and t.pure_noise_at_last_step
    assert all(torch.equal(v, t.c.vae.state_dict()[k]) for k, v in vae_before.items())
    assert any(not torch.equal(v, t.c.unet.state_dict()[k]) for k, v in unet_before.items())

    # The terminal sitting: pure noise only, full captions of moving clips, every other step
    # the opening frames, the text encoder left as it is.
    calls, text_before = spy(t), {k: v.clone() for k, v in t.c.text_encoder.state_dict().items()}
    t.run(5, extend=("terminal", 4), opening_frames=4, freeze_text=True,
          argv=["--extend-terminal", "4", "--opening-frames", "4", "--freeze-text"])
    assert {s for ts, _, _ in calls for s in ts} == {999} and [f for _, _, f in calls] == [4, 16, 4, 16]
    assert all(direction_label(p) >= 0 and "still" not in p for _, ps, _ in calls for p in ps)
    assert all(torch.equal(v, t.c.text_encoder.state_dict()[k]) for k, v in text_before.items())

    # A video sitting with a still row: the first row of each video batch is a still clip with
    # its full caption; every second step is an image batch (one frame, no still row).
    t = Trainer(work, dict(TINY))
    calls = spy(t)
    video = ["--extend-video", "4", "--image-every", "2", "--high-noise-weight", "25", "--position-aux", "0.1",
             "--freeze-text", "--still-rows", "1"]
    t.run(5, extend=("video", 4), image_every=2, high_noise_weight=25.0, position_aux=0.1, freeze_text=True,
          still_rows=1, argv=video)
    still = list(spec.DIRECTIONS).index("still")
    assert [f for _, _, f in calls] == [16, 1, 16, 1]
    assert all(direction_label(ps[0]) == still for _, ps, f in calls if f == 16)

    capsys.readouterr()
    assert cli.main(["--work", str(work), "--export", str(out)]) == 0
    meta = json.loads((out / "training.json").read_text())
    assert [s["argv"] for s in meta["sittings"]] == [run + SIZES, run + restart,
                                                     ["--extend-terminal", "4", "--opening-frames", "4", "--freeze-text"],
                                                     video]
    assert meta["sittings"][1]["from"]["objective"].startswith("v_prediction")
    assert meta["sittings"][3]["from"]["still_rows"] == 1 and meta["trained"]["stage"] == "done"
    assert meta["command"].startswith("python -m toyworld_training ") and "--vae-steps 2" in meta["command"]
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["prediction_type"], sched["rescale_betas_zero_snr"], sched["timestep_spacing"]) == \
        ("v_prediction", True, "trailing")
    handle = load_t2v(out, device="cpu", dtype="fp32")
    assert type(handle.base.unet).__name__ == "UNet3DConditionModel"
    clip = sample.generate(handle, "a red circle moving left on a black background", steps=3, seed=0)
    assert clip.shape == (1, spec.NUM_FRAMES, spec.SIZE, spec.SIZE, 3) and torch.isfinite(clip).all()


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    """Stopped in the middle of the video stage, the checkpoint holds the EMA as a list of
    tensors (the format every earlier checkpoint has) and resumes to the uninterrupted weights."""
    import shutil

    cfg = dict(TINY, video_steps=4, decoder_steps=0)
    whole = Trainer(tmp_path / "whole", dict(cfg))
    whole.out_of_time = lambda deadline: whole.state["stage"] == "image"  # the VAE and the cache, once
    whole.run(minutes=5)
    shutil.copytree(tmp_path / "whole", tmp_path / "stopped")
    whole = Trainer(tmp_path / "whole", dict(cfg))
    whole.run(minutes=5)
    stopped = Trainer(tmp_path / "stopped", dict(cfg))
    stopped.out_of_time = lambda deadline: stopped.state["stage"] == "video" and stopped.state["step"] >= 2
    stopped.run(minutes=5)
    assert stopped.state == {"stage": "video", "step": 2}
    blob = torch.load(stopped.ckpt, weights_only=True)
    params = list(stopped.c.unet.parameters()) + list(stopped.c.text_encoder.parameters())
    assert isinstance(blob["ema"], list) and [e.shape for e in blob["ema"]] == [p.shape for p in params]
    resumed = Trainer(tmp_path / "stopped", dict(cfg))
    resumed.run(minutes=5)
    assert resumed.state["stage"] == "done" and whole.state["stage"] == "done"
    for (k, a), b in zip(whole.c.unet.state_dict().items(), resumed.c.unet.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_a_checkpoint_using_a_removed_option_is_refused(tmp_path):
    t = Trainer(tmp_path / "old", dict(TINY))
    t.state = {"stage": "video", "step": 10, "total": 100, "sitting": 2, "video_t_min": 600}
    t.save()
    with pytest.raises(SystemExit, match="--video-t-min, which this trainer no longer has"):
        Trainer(tmp_path / "old", dict(TINY)).run(minutes=5)


@pytest.mark.parametrize("argv, message", [
    (["--opening-frames", "4"], "give it with --extend-terminal"),
    (["--still-rows", "2"], "give it with --extend-video or --restart-diffusion"),
    (["--v-zero-snr"], "give it with --extend-video or --restart-diffusion"),
    (["--extend-terminal", "10", "--image-every", "2"], "give it with --extend-video or --restart-diffusion"),
    (["--extend-video", "10", "--still-rows", "9"], "give 0 to 8"),
    (["--text-pretrain", "400"], "give it with --restart-diffusion"),
    (["--freeze-text"], "give it with --extend-video, --extend-terminal or --restart-diffusion"),
    (["--extend-video", "10", "--extend-terminal", "10"], "separate sittings; give one"),
    (["--extend-terminal", "10", "--opening-frames", "16"], "give 1 to 15"),
    (["--extend-video", "10", "--direction-aux", "0.02"], "unrecognized arguments: --direction-aux"),
])
def test_options_are_refused_outside_their_sitting(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--work", str(tmp_path / "run"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before any training


def test_every_shipped_sitting_and_documented_command_is_still_accepted():
    """The v6 recipe stays expressible: each sitting recorded in the shipped training.json, and
    each command of docs/TOY_MODEL.md, parses and passes the option checks."""
    ap = cli.parser()
    sittings = [s["argv"] for s in json.loads((MODEL_DIR / "training.json").read_text())["sittings"]]
    doc = (Path(__file__).resolve().parents[1] / "docs" / "TOY_MODEL.md").read_text()
    block = doc.split("```bash\n", 1)[1].split("```", 1)[0]
    names = dict(re.findall(r'^(\w+)="(.*)"$', block, re.M))
    commands = [shlex.split(re.sub(r"\$(\w+)", lambda m: names[m[1]], line.split("#")[0]))
                for line in block.splitlines() if line.startswith("$T")]
    assert len(sittings) == 5 and len(commands) == 6 and names["T"].startswith("python -m toyworld_training ")
    for argv in sittings + [c[3:] for c in commands]:
        cli.check(ap, ap.parse_args(argv))


def test_help_prints_every_option_and_no_measurement(capsys):
    # argparse formats help strings with %: a bare % in one breaks --help for all of them.
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--still-rows" in out and "--extend-terminal" in out
    # Figures belong in docs/TOY_MODEL.md and docs/EXPERIMENTS.md, not in the help.
    assert not re.search(r"\d%|[Mm]easured|\d+(\.\d+)? ?(min|s)\b", out), out


def test_loss_weights_favour_high_noise_only_when_asked():
    snr = torch.tensor([999.0, 1.0, 0.25, 0.01])
    plain = losses.loss_weights(snr, min_snr=5.0)
    torch.testing.assert_close(plain, torch.tensor([5 / 999, 1.0, 1.0, 1.0]), rtol=1e-6, atol=0)
    high = losses.loss_weights(snr, min_snr=5.0, high_noise_weight=25.0)
    # 1/SNR where it is between 1 and the cap; the cap near pure noise; low noise unchanged.
    torch.testing.assert_close(high, torch.tensor([5 / 999, 1.0, 4.0, 25.0]), rtol=1e-6, atol=0)
    # v-prediction at zero terminal SNR: the same x0 weights over (SNR + 1); pure noise
    # counts only when asked, and then as much as an x0 error at SNR 1.
    snr = torch.tensor([999.0, 1.0, 0.25, 0.0])
    plain_v = losses.loss_weights(snr, min_snr=5.0, prediction="v_prediction")
    torch.testing.assert_close(plain_v, torch.tensor([5 / 1000, 0.5, 0.2, 0.0]), rtol=1e-6, atol=1e-7)
    high_v = losses.loss_weights(snr, min_snr=5.0, high_noise_weight=25.0, prediction="v_prediction")
    torch.testing.assert_close(high_v, torch.tensor([5 / 1000, 0.5, 0.8, 1.0]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("v_zero_snr", [False, True])
def test_diffusers_compute_snr_is_the_hand_written_snr(v_zero_snr):
    """compute_snr replaced alphas_cumprod / (1 - alphas_cumprod): the same to float rounding
    on both toy schedules (ModelScope's, and the zero-terminal-SNR one v6 trains for)."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from cav_core.toyworld.model_config import SCHEDULER_CONFIG, V_ZERO_SNR

    cfg = {**SCHEDULER_CONFIG, **(V_ZERO_SNR if v_zero_snr else {})}
    sched = DDPMScheduler.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})  # as Trainer.noise_schedule
    steps = torch.arange(len(sched.alphas_cumprod))
    ac = sched.alphas_cumprod
    hand = ac / (1 - ac)
    torch.testing.assert_close(compute_snr(sched, steps), hand, rtol=1e-6, atol=0)
    assert (hand[-1].item() == 0.0) == v_zero_snr


def test_diffusers_ema_is_the_hand_written_ema_after_its_first_step():
    """EMAModel replaced ema = lerp(ema, p, 1 - min(decay, (1 + s) / (10 + s))). The one
    difference: at step 0 diffusers takes the weights (decay 0), the hand-written EMA kept 10%
    of the starting ones; that share shrinks by every later decay, below 1e-6 within 25 steps."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(50, generator=g)) for _ in range(3)]
    hand = [p.detach().clone() for p in params]
    ema = schedule.weights_ema(params, decay=0.998)
    start = [p.detach().clone() for p in params]
    gaps = []
    for step in range(40):
        with torch.no_grad():
            for p in params:
                p.add_(0.01 * torch.randn(p.shape, generator=g))  # an optimizer step
        decay = min(0.998, (1 + step) / (10 + step))
        torch._foreach_lerp_(hand, [p.detach() for p in params], 1 - decay)
        ema.step(params)
        if step == 0:  # the documented difference, exactly
            for h, e, p0 in zip(hand, ema.shadow_params, start):
                torch.testing.assert_close(h - e, 0.1 * (p0 - e), rtol=1e-5, atol=1e-6)
        gaps.append(max((h - e).abs().max().item() for h, e in zip(hand, ema.shadow_params)))
    assert gaps[0] > 1e-3 and max(gaps[25:]) < 1e-6
    # Resumed from a checkpoint's list at step s, it goes on as the uninterrupted one does.
    resumed = schedule.weights_ema(params, decay=0.998, step=40, shadow=[e.clone() for e in ema.shadow_params])
    ema.step(params)
    resumed.step(params)
    for a, b in zip(ema.shadow_params, resumed.shadow_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_learning_rate_is_diffusers_cosine_with_a_floor_and_an_overlapping_warm_up():
    """Not replaced by get_cosine_schedule_with_warmup, which is not the same schedule (see
    schedule.learning_rate): ours is min(1, (s+1)/W) * (0.9 * cosine(s) + 0.1), with diffusers'
    cosine over the whole sitting (no warm-up of its own); diffusers' with W warm-up steps
    starts at 0, runs its cosine after the warm-up and ends at 0."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    total, warmup, base = 1000, 200, 6e-4

    def factors(num_warmup: int) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return [get_cosine_schedule_with_warmup(opt, num_warmup, total).lr_lambdas[0](s) for s in range(total)]

    cosine, theirs = factors(0), factors(warmup)
    ours = [schedule.learning_rate(base, s, total, warmup) for s in range(total)]
    for s in range(total):
        assert math.isclose(ours[s], base * min(1.0, (s + 1) / warmup) * (0.9 * cosine[s] + 0.1), rel_tol=1e-12)
    assert theirs[0] == 0.0 and ours[0] == pytest.approx(base / warmup)
    assert ours[-1] > 0.1 * base > theirs[-1] * base
    assert not np.allclose(ours, np.array(theirs) * base, rtol=1e-3)
