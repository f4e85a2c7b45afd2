"""The sampler on the tiny random model: determinism, seeds, schedulers, adapters, inversion."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cav_core import codec, sample
from cav_core.textual_inversion import TokenEmbeddings
from cav_core.adapters import LoraWeights, switchable_loras
from cav_core.errors import InputError
from cav_core.layers import temporal_attention_modules
from conftest import unet_inputs

PROMPT = "a red circle moving left on a black background"


def _lat(handle, **kw):
    kw.setdefault("steps", 3)
    return sample.generate(handle, PROMPT, return_latents=True, **kw)


def _random_lora(unet, role_modules, rank, seed, alpha=None):
    g = torch.Generator().manual_seed(seed)
    tensors, alphas = {}, {}
    for m in role_modules:
        lin = unet.get_submodule(m)
        tensors[f"{m}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.1
        tensors[f"{m}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.1
        alphas[m] = float(alpha if alpha is not None else rank)
    return LoraWeights(role="temporal", tensors=tensors, alphas=alphas)


def test_same_seed_same_video_and_seeds_differ(tiny):
    a, b = _lat(tiny, seed=5), _lat(tiny, seed=5)
    assert torch.equal(a, b)
    assert not torch.allclose(_lat(tiny, seed=6), a)


def test_batch_is_the_same_as_one_seed_at_a_time(tiny):
    batch = _lat(tiny, seed=10, batch_size=2)
    assert torch.allclose(batch[1], _lat(tiny, seed=11)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(sample.SCHEDULERS))
def test_every_scheduler_gives_finite_frames(tiny, name):
    frames = sample.generate(tiny, PROMPT, steps=3, scheduler=name, num_frames=4)
    assert frames.shape == (1, 4, 32, 32, 3)
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1


def test_bad_settings_are_refused_with_the_input_named(tiny):
    with pytest.raises(InputError, match="height 30"):
        sample.generate(tiny, PROMPT, height=30)
    with pytest.raises(InputError, match="scheduler"):
        sample.generate(tiny, PROMPT, scheduler="plms")
    with pytest.raises(InputError, match="steps"):
        sample.generate(tiny, PROMPT, steps=0)
    with pytest.raises(InputError, match="blend"):
        sample.generate(tiny, PROMPT, steps=1, init_latents=torch.zeros(1, 4, 16, 8, 8), init_blend=1.5)
    with pytest.raises(InputError, match="start latents"):
        sample.generate(tiny, PROMPT, steps=1, init_latents=torch.zeros(1, 4, 8, 8, 8))
    with pytest.raises(InputError, match="too long"):
        sample.generate(tiny, " ".join(["red"] * 40), steps=1)


def test_strength_zero_is_the_base_and_the_base_is_untouched(tiny):
    before = _lat(tiny)
    lora = _random_lora(tiny.base.unet, temporal_attention_modules(tiny.base.unet), 2, seed=1)
    assert torch.equal(_lat(tiny.with_lora(lora, 0.0)), before)
    assert not torch.allclose(_lat(tiny.with_lora(lora, 1.0)), before)
    assert torch.equal(_lat(tiny), before)


def test_two_loras_at_strengths_equal_one_adapter_with_the_summed_delta(tiny):
    unet = tiny.base.unet
    mods = temporal_attention_modules(unet)
    l1, l2 = _random_lora(unet, mods, 2, seed=1), _random_lora(unet, mods, 3, seed=2, alpha=1.5)
    a, b = 0.7, -1.3
    # One rank-5 adapter whose B A equals a*s1*B1 A1 + b*s2*B2 A2 (alpha = rank: scale 1).
    tensors, alphas = {}, {}
    for m in mods:
        tensors[f"{m}.lora_A.weight"] = torch.cat([l1.tensors[f"{m}.lora_A.weight"], l2.tensors[f"{m}.lora_A.weight"]])
        tensors[f"{m}.lora_B.weight"] = torch.cat([a * (2 / 2) * l1.tensors[f"{m}.lora_B.weight"],
                                                   b * (1.5 / 3) * l2.tensors[f"{m}.lora_B.weight"]], dim=1)
        alphas[m] = 5.0
    combined = LoraWeights(role="temporal", tensors=tensors, alphas=alphas)
    x, t, ctx = unet_inputs(tiny)
    for merge in (False, True):
        with torch.no_grad(), switchable_loras(unet, [(l1, a), (l2, b)], merge=merge):
            two = unet(x, t, encoder_hidden_states=ctx).sample
        with torch.no_grad(), switchable_loras(unet, [(combined, 1.0)], merge=merge):
            one = unet(x, t, encoder_hidden_states=ctx).sample
        assert torch.allclose(two, one, atol=1e-5), merge


def test_merged_and_unmerged_sampling_agree(tiny):
    lora = _random_lora(tiny.base.unet, temporal_attention_modules(tiny.base.unet), 2, seed=3)
    h = tiny.with_lora(lora, 0.8)
    assert torch.allclose(_lat(h, merge=True), _lat(h, merge=False), atol=1e-4)


def test_start_latents_blend(tiny):
    init = sample.seed_noise(99, (4, 16, 8, 8))[None]
    pure_noise = _lat(tiny, seed=1)
    assert torch.allclose(_lat(tiny, seed=1, init_latents=init, init_blend=0.0), pure_noise, atol=1e-6)
    from_init = _lat(tiny, seed=1, init_latents=init, init_blend=1.0)
    assert torch.allclose(_lat(tiny, seed=7, init_latents=init, init_blend=1.0), from_init, atol=1e-6)
    assert not torch.allclose(from_init, pure_noise, atol=1e-3)


def test_inversion_shape_and_determinism(tiny):
    # Reconstruction needs a trained denoiser: see test_toy_model.py for the round trip.
    frames = torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    a = sample.invert_video(tiny, frames, PROMPT, steps=3)
    assert a.shape == (1, 4, 4, 8, 8)
    assert torch.equal(a, sample.invert_video(tiny, frames, PROMPT, steps=3))
    assert not torch.equal(a, codec.encode_frames(tiny.base, frames))


def test_textual_inversion_tokens_change_only_their_positions(tiny):
    tok = tiny.base.tokenizer
    n_before = len(tok)
    te = TokenEmbeddings(("<cav-0>", "<cav-1>"), torch.randn(2, 64))
    h = tiny.with_tokens(te)
    with_tokens = codec.text_embeddings(h, ["a <cav-0> <cav-1> circle"])
    plain = codec.text_embeddings(tiny, ["a red red circle"])
    assert len(tok) == n_before  # the shared tokenizer is not extended
    assert torch.allclose(with_tokens[0, 0], plain[0, 0])  # BOS comes before the tokens (causal)
    assert torch.allclose(with_tokens[0, 1], plain[0, 1])  # "a"
    assert not torch.allclose(with_tokens[0, 2], plain[0, 2])
    with pytest.raises(InputError, match="already applied"):
        h.with_tokens(te)



def _forward_trace(handle, lora, **kw):
    """Per UNet forward while sampling: (timestep, batch size, whether the LoRA's first module
    carries its delta then)."""
    name = lora.modules[0]
    linear = handle.base.unet.get_submodule(name)
    probe = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(0))
    base_out = linear(probe).detach()
    trace = []

    def spy(unet, args, kwargs):
        with torch.no_grad():  # the module as it is now: a merged Linear or a peft wrapper
            on = not torch.allclose(unet.get_submodule(name)(probe), base_out)
        trace.append((int(args[1]), args[0].shape[0], on))

    hook = handle.base.unet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        _lat(handle, steps=6, **kw)
    finally:
        hook.remove()
    return trace


def _lora_trace(handle, lora, **kw):
    """Per sampling step: (timestep, whether the LoRA's first module carries its delta then)."""
    trace = _forward_trace(handle, lora, **kw)
    assert len(trace) == 6 and all(b == 2 for _, b, _ in trace)  # one forward per step, both branches batched
    return [(t, on) for t, _, on in trace]


@pytest.mark.parametrize("merge", [True, False])
def test_a_lora_is_applied_only_from_its_min_timestep_up(tiny, merge):
    before = {k: v.clone() for k, v in tiny.base.unet.state_dict().items()}
    lora = _random_lora(tiny.base.unet, temporal_attention_modules(tiny.base.unet), 2, seed=4)
    trace = _lora_trace(tiny.with_lora(lora, 1.0, min_timestep=500, cond_only_from=1000), lora, merge=merge)
    assert [on for _, on in trace] == [t >= 500 for t, _ in trace]
    assert any(on for _, on in trace) and not all(on for _, on in trace)
    # without a gate: on at every step
    assert all(on for _, on in _lora_trace(tiny.with_lora(lora, 1.0, min_timestep=0, cond_only_from=1000), lora,
                                           merge=merge))
    # gated off on every step: exactly the base model's sample
    top = max(t for t, _ in trace)
    assert top < 999
    assert torch.equal(_lat(tiny.with_lora(lora, 1.0, min_timestep=top + 1, cond_only_from=1000), steps=6,
                            merge=merge), _lat(tiny, steps=6))
    after = tiny.base.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("merge", [True, False])
def test_a_cond_only_lora_is_left_out_of_the_unconditional_branch(tiny, merge):
    before = {k: v.clone() for k, v in tiny.base.unet.state_dict().items()}
    lora = _random_lora(tiny.base.unet, temporal_attention_modules(tiny.base.unet), 2, seed=6)
    trace = _forward_trace(tiny.with_lora(lora, 1.0, min_timestep=300, cond_only_from=600), lora, merge=merge)
    steps = []
    for t, b, on in trace:  # regroup the forwards by step
        if steps and steps[-1][0] == t and b == 1:
            steps[-1][1].append((b, on))
        else:
            steps.append((t, [(b, on)]))
    assert len(steps) == 6
    for t, forwards in steps:
        if t >= 600:  # unconditional alone without the LoRA, then the prompt's branch with it
            assert forwards == [(1, False), (1, True)], (t, forwards)
        else:  # one batched forward; the LoRA in both branches or in neither
            assert forwards == [(2, t >= 300)], (t, forwards)
    assert {t >= 600 for t, _ in steps} == {True, False} and any(300 <= t < 600 for t, _ in steps)
    # what the split computes: eps_u(no LoRA) + g * (eps_c(LoRA) - eps_u(no LoRA))
    split = _lat(tiny.with_lora(lora, 1.0, min_timestep=0, cond_only_from=0), steps=2, merge=merge)
    assert not torch.equal(split, _lat(tiny.with_lora(lora, 1.0, min_timestep=0, cond_only_from=1000), steps=2,
                                       merge=merge))
    unet = tiny.base.unet
    sched = sample.make_scheduler("ddim", tiny.base.scheduler_config)
    sched.set_timesteps(2)
    x = sample.seed_noise(0, tuple(split.shape[1:]))[None] * sched.init_noise_sigma
    cond, uncond = codec.text_embeddings(tiny, [PROMPT]), codec.text_embeddings(tiny, [""])
    with torch.no_grad():
        for t in sched.timesteps:
            eps_u = unet(x, t, encoder_hidden_states=uncond).sample
            with tiny.with_lora(lora, 1.0).applied(merge=merge) as u:
                eps_c = u(x, t, encoder_hidden_states=cond).sample
            x = sched.step(eps_u + 7.5 * (eps_c - eps_u), t, x).prev_sample
    assert torch.allclose(split, x, atol=1e-5)
    after = tiny.base.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_lora_is_by_default_never_applied_below_its_training_floor(tiny):
    lora = _random_lora(tiny.base.unet, temporal_attention_modules(tiny.base.unet), 2, seed=5)
    spatial = LoraWeights(role="spatial", tensors=lora.tensors, alphas=lora.alphas, info={"min_timestep": 300})
    assert tiny.with_lora(spatial).loras[-1].min_timestep == 300
    assert tiny.with_lora(spatial, min_timestep=0).loras[-1].min_timestep == 0
    assert tiny.with_lora(dataclasses.replace(spatial, info={})).loras[-1].min_timestep == 0
    high = LoraWeights(role="temporal", tensors=lora.tensors, alphas=lora.alphas, info={"min_timestep": 800})
    assert tiny.with_lora(high).loras[-1].min_timestep == 800  # above the T-LoRA default of 300
    assert "on t >= 300" in tiny.with_lora(spatial).describe()
    for bad in (-1, 1000, 2.5, True, "300"):
        with pytest.raises(InputError, match="min_timestep"):
            tiny.with_lora(lora, min_timestep=bad)


def test_t_loras_act_on_the_prompt_branch_only_at_high_noise_by_default(tiny):
    lora = _random_lora(tiny.base.unet, temporal_attention_modules(tiny.base.unet), 2, seed=5)
    trained = dataclasses.replace(lora, info={"min_timestep": 300})
    high = dataclasses.replace(lora, info={"min_timestep": 450})
    style = LoraWeights(role="spatial", tensors={}, alphas={})
    # from 30% of this model's 1000 timesteps (or the training floor if higher), the prompt branch
    # only from 60% (the toy gate, docs/EXPERIMENTS.md §12)
    for t_lora, start in ((lora, 300), (trained, 300), (high, 450)):
        applied = tiny.with_lora(t_lora).loras[-1]
        assert (applied.min_timestep, applied.cond_only_from) == (start, 600)
    assert tiny.with_lora(trained, min_timestep=700).loras[-1].min_timestep == 700
    assert tiny.with_lora(style).loras[-1].cond_only_from is None
    assert tiny.with_lora(lora, cond_only_from=0).loras[-1].cond_only_from == 0
    assert tiny.with_lora(lora, cond_only_from=1000).loras[-1].cond_only_from is None  # the end: never
    assert "prompt branch only on t >= 600" in tiny.with_lora(lora).describe()
    assert "prompt branch" not in tiny.with_lora(lora, cond_only_from=1000).describe()
    for bad in (-1, 1001, 2.5, True, "600"):
        with pytest.raises(InputError, match=r"cond_only_from must be an integer in 0\.\.1000"):
            tiny.with_lora(lora, cond_only_from=bad)
