"""The training loop and both stages on the tiny random model (fast); quality checks that
need the pretrained toy model live in test_toy_model.py."""

from __future__ import annotations

import math

import pytest
import torch

from cav_core import train
from cav_core.adapters import add_trainable_lora, lora_layers, switchable_loras
from cav_core.errors import InputError
from cav_core.layers import spatial_attention_modules, temporal_attention_modules
from conftest import unet_inputs

APPEARANCE = "a red circle on a black background"
FULL = "a red circle moving in a circle on a black background"


@pytest.fixture(scope="module")
def frames():
    return torch.rand(8, 32, 32, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def absorber(tiny, frames):
    return train.train_appearance_absorber(tiny, frames, APPEARANCE, kind="both", steps=3, seed=1)


def _count_calls(module):
    calls = []
    handle = module.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


def test_absorber_kinds_hold_what_they_should(tiny, frames, absorber):
    spatial = set(spatial_attention_modules(tiny.base.unet))
    assert set(absorber.lora.modules) == spatial and absorber.lora.ranks == {1}
    assert absorber.tokens.tokens == ("<cav-0>", "<cav-1>", "<cav-2>", "<cav-3>")
    assert absorber.info["trained_caption"] == "a <cav-0> <cav-1> <cav-2> <cav-3> circle on a black background"
    ti = train.train_appearance_absorber(tiny, frames, APPEARANCE, kind="ti", steps=2, num_tokens=2,
                                         init_word="circle")
    assert ti.lora is None and ti.info["trained_caption"] == "a red <cav-0> <cav-1> on a black background"
    lora = train.train_appearance_absorber(tiny, frames, APPEARANCE, kind="lora", steps=2, rank=2)
    assert lora.tokens is None and lora.lora.ranks == {2}


def test_temporal_lora_touches_only_temporal_attention_and_drops_the_absorber(tiny, frames, absorber):
    t = train.train_temporal_lora(tiny, frames, FULL, absorber=absorber, steps=3, rank=2)
    assert set(t.lora.modules) == set(temporal_attention_modules(tiny.base.unet))
    assert t.kind == "temporal_lora" and t.tokens is None
    assert t.info["trained_caption"].startswith("a <cav-0>")
    assert not lora_layers(tiny.base.unet)  # nothing left attached


def test_frozen_absorber_stays_active_while_the_t_lora_trains(tiny, absorber):
    # peft re-activates adapters on injection; the absorber must still shape the output.
    x, t, ctx = unet_inputs(tiny)
    with torch.no_grad(), switchable_loras(tiny.base.unet, [(absorber.lora, 1.0)]) as switch:
        want = switch.unet(x, t, encoder_hidden_states=ctx).sample
    for merge in (True, False):
        with torch.no_grad(), tiny.with_lora(absorber.lora).applied(merge=merge) as unet:
            add_trainable_lora(unet, "temporal", 2, 2.0, "t")  # B = 0: no change yet
            got = unet(x, t, encoder_hidden_states=ctx).sample
        assert torch.allclose(got, want, atol=1e-5), merge


def test_only_the_trainable_tensors_change(tiny, frames):
    before = {k: v.clone() for k, v in tiny.base.unet.state_dict().items()}
    text_before = tiny.base.text_encoder.get_input_embeddings().weight.clone()
    train.train_temporal_lora(tiny, frames, FULL, steps=2)
    train.train_appearance_absorber(tiny, frames, APPEARANCE, kind="both", steps=2)
    after = tiny.base.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(text_before, tiny.base.text_encoder.get_input_embeddings().weight)


def test_no_vae_or_text_encoder_calls_per_step_except_for_ti(tiny, frames):
    c = tiny.base
    counts = {}
    for kind in ("lora", "ti"):
        per_run = []
        for steps in (2, 5):
            vae_calls, h1 = _count_calls(c.vae)
            text_calls, h2 = _count_calls(c.text_encoder)
            try:
                train.train_appearance_absorber(tiny, frames, APPEARANCE, kind=kind, steps=steps)
            finally:
                h1.remove()
                h2.remove()
            per_run.append((len(vae_calls), len(text_calls)))
        counts[kind] = (per_run[1][0] - per_run[0][0], per_run[1][1] - per_run[0][1])
    assert counts["lora"] == (0, 0)
    assert counts["ti"] == (0, 3)


def test_the_same_seed_trains_the_same_lora_and_leaves_the_global_rng_alone(tiny, frames):
    # The UNet3D's temporal convolutions keep dropout in training; it must follow the seed.
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in tiny.base.unet.modules())
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train.train_temporal_lora(tiny, frames, FULL, steps=4, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # another caller state: the result must not depend on it
    b = train.train_temporal_lora(tiny, frames, FULL, steps=4, seed=5)
    c = train.train_temporal_lora(tiny, frames, FULL, steps=4, seed=6)
    assert all(torch.equal(a.lora.tensors[k], b.lora.tensors[k]) for k in a.lora.tensors)
    assert not all(torch.equal(a.lora.tensors[k], c.lora.tensors[k]) for k in a.lora.tensors)


def test_resume_ends_with_the_same_weights(tiny, frames, tmp_path):
    full = train.train_temporal_lora(tiny, frames, FULL, steps=6, seed=3)

    class Stop(Exception):
        pass

    def stop_at_3(step, total, info):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train.train_temporal_lora(tiny, frames, FULL, steps=6, seed=3, checkpoint_dir=tmp_path, progress=stop_at_3)
    with pytest.raises(InputError, match="resume"):
        train.train_temporal_lora(tiny, frames, FULL, steps=6, seed=3, checkpoint_dir=tmp_path)
    with pytest.raises(InputError, match="different training run"):
        train.train_temporal_lora(tiny, frames, FULL, steps=6, seed=4, checkpoint_dir=tmp_path, resume=True)
    seen = []
    resumed = train.train_temporal_lora(tiny, frames, FULL, steps=6, seed=3, checkpoint_dir=tmp_path, resume=True,
                                        progress=lambda s, n, i: seen.append(s))
    assert seen == [4, 5, 6]
    for k, v in full.lora.tensors.items():
        assert torch.allclose(resumed.lora.tensors[k], v, atol=1e-6), k
    assert resumed.info["final_loss"] == pytest.approx(full.info["final_loss"], rel=1e-5)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny, frames, tmp_path):
    latents = torch.zeros(1, 4, 4, 8, 8)
    cond = torch.zeros(1, 24, 64)

    def batch(step, g):
        return (latents * float("nan") if step >= 3 else latents), cond

    with tiny.applied() as unet:
        params = add_trainable_lora(unet, "temporal", 1, 1.0, "t")
        job = train.TrainJob("temporal", unet, [{"params": params, "lr": 1e-3}], batch, 10,
                             tiny.base.scheduler_config, checkpoint_dir=tmp_path, checkpoint_every=2)
        with pytest.raises(train.TrainingError, match="step 4.*step 2"):
            train.run_training(job)
    assert (tmp_path / train.CHECKPOINT_FILE).exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="lorax"), "absorber kind"),
    (dict(steps=0), "training steps"),
    (dict(lora_lr=float("nan")), "learning rate"),
    (dict(crop_range=(0.0, 1.0)), "crop"),
    (dict(num_tokens=0), "tokens"),
])
def test_bad_absorber_settings(tiny, frames, kwargs, match):
    with pytest.raises(InputError, match=match):
        train.train_appearance_absorber(tiny, frames, APPEARANCE, **kwargs)


def test_bad_temporal_inputs(tiny, frames, absorber):
    with pytest.raises(InputError, match="caption"):
        train.train_temporal_lora(tiny, frames, "  ")
    with pytest.raises(InputError, match="frames"):
        train.train_temporal_lora(tiny, frames[0], FULL)
    # tokens of another text encoder's width: a real mismatch (a fitting file of another model only warns)
    wide = type(absorber.tokens)(absorber.tokens.tokens, torch.zeros(len(absorber.tokens.tokens), 1024))
    other = type(absorber)(kind="absorber", lora=absorber.lora, tokens=wide, base_model="someone-else@123",
                           info=absorber.info)
    with pytest.raises(InputError, match="trained on model someone-else.*tokens have width 1024"):
        train.train_temporal_lora(tiny, frames, FULL, absorber=other)
    for bad in (-1, 1000, 2.5, True):
        with pytest.raises(InputError, match=r"min_timestep must be an integer in 0\.\.999"):
            train.train_temporal_lora(tiny, frames, FULL, min_timestep=bad)


def test_min_timestep_keeps_the_temporal_stage_on_high_noise(tiny, frames, monkeypatch):
    from diffusers import UNet3DConditionModel

    seen: list[int] = []
    real = UNet3DConditionModel.forward
    monkeypatch.setattr(UNet3DConditionModel, "forward",
                        lambda self, x, t, *a, **k: seen.append(int(t.min())) or real(self, x, t, *a, **k))
    t = train.train_temporal_lora(tiny, frames, FULL, steps=8, rank=2, min_timestep=900)
    assert len(seen) == 8 and min(seen) >= 900 and t.info["min_timestep"] == 900
    seen.clear()
    train.train_temporal_lora(tiny, frames, FULL, steps=8, rank=2, min_timestep=0)
    assert min(seen) < 900  # 8 uniform draws over 0..999 all >= 900: p = 1e-8 (the draw is seeded anyway)


def test_the_t_lora_trains_on_the_clip_and_its_hue_rotations_each_with_its_caption(tiny, frames, absorber,
                                                                                    monkeypatch):
    from cav_core.recolor import ROTATIONS, rotate_frames
    from cav_core.codec import encode_frames, text_embeddings

    jobs = []
    real = train.run_training
    monkeypatch.setattr(train, "run_training", lambda job: jobs.append(job) or real(job))
    t = train.train_temporal_lora(tiny, frames, FULL, steps=2, rank=2)
    want_captions = [FULL, "a blue circle moving in a circle on a black background",
                     "a green circle moving in a circle on a black background"]
    assert t.info["trained_captions"] == want_captions and t.info["recolor"] == "on"
    want = [(encode_frames(tiny.base, f), text_embeddings(tiny, [c])) for f, c in
            zip([frames] + [rotate_frames(frames, r) for r in ROTATIONS], want_captions)]
    drawn = set()
    for step in range(40):
        x0, cond = jobs[0].batch(step, train._step_generator(0, step))
        i = next(i for i, (w, c) in enumerate(want) if torch.allclose(x0, w) and torch.allclose(cond, c))
        drawn.add(i)
    assert drawn == {0, 1, 2}
    # The absorber's tokens stand for the reference's look: only the unrotated view has them.
    t = train.train_temporal_lora(tiny, frames, FULL, absorber=absorber, steps=1, rank=2)
    assert t.info["trained_captions"][0].startswith("a <cav-0>") and t.info["trained_captions"][1:] == want_captions[1:]
    off = train.train_temporal_lora(tiny, frames, FULL, steps=1, rank=2, recolor=False)
    assert off.info["trained_captions"] == [FULL] and off.info["recolor"] == "off"
    with pytest.warns(UserWarning, match="'orange'"):
        orange = train.train_temporal_lora(tiny, frames, "an orange circle moving left", steps=1, rank=2)
    assert len(orange.info["trained_captions"]) == 1 and "'orange'" in orange.info["recolor"]
    x0, _ = jobs[-1].batch(0, train._step_generator(0, 0))
    assert torch.allclose(x0, want[0][0])


def test_validation_previews_reach_progress(tiny, frames):
    previews = []
    train.train_temporal_lora(tiny, frames, FULL, steps=2, validation_prompt="a blue square", validate_every=1,
                              validation_steps=2, progress=lambda s, n, i: previews.append(i.get("preview")))
    assert len(previews) == 2 and all(p is not None and p.shape == (8, 32, 32, 3) for p in previews)


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    x, t, ctx = unet_inputs(tiny)
    grads = []
    for enabled in (False, True):
        with tiny.applied() as unet:
            params = add_trainable_lora(unet, "temporal", 2, 2.0, "t")
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in params:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            with train._checkpointed_blocks(unet, enabled):
                unet(x, t, encoder_hidden_states=ctx).sample.square().mean().backward()
            grads.append([p.grad.clone() for p in params])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_v_prediction_model_trains_against_the_velocity(tiny, frames, monkeypatch):
    """The scheduler config decides the target: a v-prediction, zero-terminal-SNR model (what
    ``toyworld_training --v-zero-snr`` makes) trains its T-LoRA against v, samples and inverts to
    finite clips; an eps model never asks for v."""
    import diffusers

    from cav_core import sample
    from cav_core.model import build_t2v
    from cav_core.toyworld.model_config import (SCHEDULER_CONFIG, UNET_CONFIG, V_ZERO_SNR, VAE_CONFIG,
                                                build_tokenizer, text_config)

    calls = []
    real = diffusers.DDPMScheduler.get_velocity
    monkeypatch.setattr(diffusers.DDPMScheduler, "get_velocity",
                        lambda self, *a: calls.append(1) or real(self, *a))
    train.train_temporal_lora(tiny, frames, FULL, steps=2, rank=2)
    assert calls == []
    tok = build_tokenizer()
    v_model = build_t2v(UNET_CONFIG, text_config(tok), VAE_CONFIG, {**SCHEDULER_CONFIG, **V_ZERO_SNR}, tok, seed=0)
    losses = []
    t = train.train_temporal_lora(v_model, frames, FULL, steps=2, rank=2,
                                  progress=lambda step, total, info: losses.append(info["loss"]))
    assert len(calls) == 2 and len(losses) == 2 and all(map(math.isfinite, losses))
    clip = sample.generate(v_model.with_lora(t.lora), FULL, steps=4, return_latents=True)
    inverted = sample.invert_video(v_model, frames, FULL, steps=4)
    assert torch.isfinite(clip).all() and torch.isfinite(inverted).all() and clip.abs().sum() > 0
