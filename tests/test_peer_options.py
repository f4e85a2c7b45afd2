"""The peers' options of Stage 2 (issue 29): the appearance-debiased loss (``ad_loss``) and
one motion from several clips (``more_clips``), plus inversion alone as a baseline."""

from __future__ import annotations

import hashlib

import pytest
import torch

from cav_core import train
from cav_core.errors import InputError
from cav_core.train import TrainClip, clip_schedule, diffusion_loss, train_temporal_lora

FULL = "a red circle moving in a circle on a black background"


@pytest.fixture(scope="module")
def frames():
    return torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(0))


def _digest(adapter) -> str:
    h = hashlib.sha256()
    for k in sorted(adapter.lora.tensors):
        h.update(adapter.lora.tensors[k].numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- ad_loss

def test_the_loss_at_weight_zero_is_the_plain_loss_bit_for_bit_and_draws_nothing():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 4, 8, 4, 4, generator=g), torch.randn(2, 4, 8, 4, 4, generator=g)
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    plain = torch.nn.functional.mse_loss(pred, target)
    assert torch.equal(diffusion_loss(pred, target, 0.0, gen), plain)
    assert torch.equal(gen.get_state(), state)  # the step's later draws are unchanged
    with_term = diffusion_loss(pred, target, 0.5, gen)
    assert not torch.equal(with_term, plain) and float(with_term) > float(plain)


def test_the_debiased_term_weighs_an_error_every_frame_shares_less_than_one_of_a_single_frame():
    """An error the prediction makes on all frames alike (appearance) is mostly subtracted with
    the anchor: it keeps (sqrt 2 - 1)^2 of its plain loss; an error on one frame, not the
    anchor, keeps all of it, times 2 (the scale sqrt(1 + beta^2) squared)."""
    import math

    g = torch.Generator().manual_seed(2)
    target = torch.randn(1, 4, 8, 4, 4, generator=g)
    shared = target + torch.randn(1, 4, 1, 4, 4, generator=g)  # the same error on every frame
    anchor = int(torch.randint(0, 8, (1,), generator=torch.Generator().manual_seed(3)))
    one = target.clone()
    one[:, :, (anchor + 1) % 8] += 1.0  # an error on one frame only
    for pred, share in ((shared, (math.sqrt(2) - 1) ** 2), (one, 2.0)):
        ad = train.appearance_debiased_loss(pred, target, torch.Generator().manual_seed(3))
        assert math.isclose(float(ad), share * float(torch.nn.functional.mse_loss(pred, target)), rel_tol=1e-4)


def test_ad_loss_zero_trains_the_same_lora_as_without_the_option_and_is_recorded(tiny, frames):
    """ad_loss=None (the default, 0 on both profiles) and 0.0 give the same bytes; on this
    checkout before the option, the same 3-step run gave the same digest (see the commit)."""
    default = train_temporal_lora(tiny, frames, FULL, steps=3, seed=0, recolor=False)
    zero = train_temporal_lora(tiny, frames, FULL, steps=3, seed=0, recolor=False, ad_loss=0.0)
    on = train_temporal_lora(tiny, frames, FULL, steps=3, seed=0, recolor=False, ad_loss=1.0)
    assert _digest(default) == _digest(zero) != _digest(on)
    assert default.info["ad_loss"] == 0.0 and on.info["ad_loss"] == 1.0


def test_ad_loss_reaches_the_loop(tiny, frames, monkeypatch):
    seen = []
    real = train.run_training
    monkeypatch.setattr(train, "run_training", lambda job: seen.append(job.ad_loss) or real(job))
    train_temporal_lora(tiny, frames, FULL, steps=1, recolor=False, ad_loss=0.25)
    assert seen == [0.25]


# --------------------------------------------------------------------------- several clips

def test_multi_clip_training_draws_every_clip_one_per_step_from_the_step_seed(tiny, frames, monkeypatch):
    other = torch.flip(frames, dims=[2])
    third = torch.flip(frames, dims=[0])
    used = []
    real = train.run_training

    def spy(job):
        batch = job.batch

        def recording(step, g):
            x0, cond = batch(step, g)
            used.append(next(i for i, x in enumerate(latents) if torch.equal(x, x0)))
            return x0, cond

        job.batch = recording
        return real(job)

    from cav_core.sample import encode_frames

    latents = [encode_frames(tiny.base, f) for f in (frames, other, third)]
    monkeypatch.setattr(train, "run_training", spy)
    t = train_temporal_lora(tiny, frames, FULL, steps=12, seed=5, recolor=False,
                            more_clips=[TrainClip(other, "a blue square moving in a circle on a black background"),
                                        TrainClip(third, "a green circle moving in a circle on a gray background")])
    assert used == clip_schedule(5, 12, 3) and set(used) == {0, 1, 2}  # every clip, as the seed decides
    assert [c["steps"] for c in t.info["clips"]] == [used.count(i) for i in range(3)]
    assert [c["caption"] for c in t.info["clips"]][1].startswith("a blue square")
    single = train_temporal_lora(tiny, frames, FULL, steps=12, seed=5, recolor=False)
    assert "clips" not in single.info and _digest(single) != _digest(t)


def test_each_clip_trains_with_its_own_absorber_attached(tiny, frames, monkeypatch):
    """The drawn clip's absorber is the one switched on: the unet's spatial weights on a step
    are the base plus that absorber's delta, or the plain base for a clip without one."""
    from cav_core.layers import spatial_attention_modules

    ab = train.train_appearance_absorber(tiny, frames, "a red circle on a black background", kind="lora", steps=2,
                                         seed=1)
    other = torch.flip(frames, dims=[2])
    ab2 = train.train_appearance_absorber(tiny, other, "a blue circle on a black background", kind="lora", steps=2,
                                          seed=2)
    m = spatial_attention_modules(tiny.base.unet)[0]
    w0 = tiny.base.unet.get_submodule(m).weight.detach().clone()
    seen = []
    real = train.run_training

    def spy(job):
        batch = job.batch

        def recording(step, g):
            out = batch(step, g)
            seen.append(job.unet.get_submodule(m).weight.detach().clone())
            return out

        job.batch = recording
        return real(job)

    monkeypatch.setattr(train, "run_training", spy)
    clips = [TrainClip(other, "a blue circle moving in a circle on a black background", ab2),
             TrainClip(frames, "a red circle moving in a circle on a gray background")]
    train_temporal_lora(tiny, frames, FULL, absorber=ab, steps=8, seed=2, recolor=False, more_clips=clips)
    want = {0: w0 + ab.lora.delta(m), 1: w0 + ab2.lora.delta(m), 2: w0}
    order = clip_schedule(2, 8, 3)
    assert set(order) == {0, 1, 2} and len(seen) == len(order)
    for j, w in zip(order, seen):
        assert torch.allclose(w, want[j], atol=1e-6), j
    assert torch.equal(tiny.base.unet.get_submodule(m).weight, w0)  # the base is restored


# --------------------------------------------------------------------------- inversion alone

def test_inversion_at_blend_one_reproduces_the_reference_layout(toy):
    """Inversion-only editing (the Tune-A-Video / Video-P2P baseline): DDIM-invert a bundled
    clip, sample from all of it (blend 1) with the reference caption, and the object follows
    the reference's track. Guidance 1 is the one the inversion ran at; at the toy's default
    7.5 the layout drifts (circle: fidelity ~0.1 at 25 steps), so a peer run must say which
    guidance it samples inversions with."""
    from cav_core.sample import generate, invert_video
    from cav_core.toyworld.clips import reference_clip
    from cav_core.toyworld.measures import centroid_track, motion_fidelity

    clip = reference_clip("circle")
    frames = torch.as_tensor(clip.frames).float()
    inverted = invert_video(toy, frames, clip.captions["full"], steps=10)
    out = generate(toy, clip.captions["full"], steps=10, guidance_scale=1.0, seed=0, init_latents=inverted,
                   init_blend=1.0)[0].numpy()
    fresh = generate(toy, clip.captions["full"], steps=10, guidance_scale=1.0, seed=0)[0].numpy()
    fidelity = motion_fidelity(centroid_track(out), clip.centers)
    print(f"\ninversion at blend 1.0, 10 DDIM steps, guidance 1: fidelity {fidelity:.3f} "
          f"(fresh noise: {motion_fidelity(centroid_track(fresh), clip.centers):.3f})")
    assert fidelity > 0.9
    assert motion_fidelity(centroid_track(fresh), clip.centers) < fidelity


# --------------------------------------------------------------------------- the CLI

ASSETS = __import__("pathlib").Path(__file__).resolve().parents[1] / "cav_core" / "toyworld" / "assets"


def test_the_cli_trains_one_motion_from_two_videos_with_one_caption_each(tmp_path):
    from cav_core import cli
    from cav_core.adapter_files import load_adapter

    out = tmp_path / "two.safetensors"
    assert cli.main(["train-temporal", "--video", str(ASSETS / "circle.mp4"), "--video", str(ASSETS / "bounce.mp4"),
                     "--caption", FULL, "--prompt", "a red circle bouncing on a black background", "--steps", "2",
                     "--seed", "1", "--ad-loss", "0.5", "--no-recolor", "--out", str(out)]) == 0
    info = load_adapter(out).info
    assert info["ad_loss"] == 0.5 and [c["caption"] for c in info["clips"]] == [
        FULL, "a red circle bouncing on a black background"]
    assert sum(c["steps"] for c in info["clips"]) == 2


# --------------------------------------------------------------------------- the nodes

def test_the_nodes_chain_training_clips_into_one_t_lora_without_changing_upstream_outputs(tiny, frames):
    from comfy_helpers import load_pack

    nodes = {cls.define_schema().node_id: cls for cls in load_pack().NODES}
    inputs = [i.id for i in nodes["TrainTemporalLoRA"].define_schema().inputs]
    assert inputs[-2:] == ["ad_loss", "more_clips"]  # appended: saved workflows keep their widget order
    other = torch.flip(frames, dims=[2])
    with torch.inference_mode():
        (one,) = nodes["AddTrainingClip"].execute(frames=other, caption="a blue circle moving in a circle on a "
                                                                        "black background").args
        (two,) = nodes["AddTrainingClip"].execute(frames=frames, caption=" a green circle moving in a circle on a "
                                                                         "gray background ", clips=one).args
        t, *_ = nodes["TrainTemporalLoRA"].execute(model=tiny, frames=frames, caption=FULL, steps=3, lr=1e-3, rank=2,
                                                  seed=0, recolor="off", ad_loss=0.5, more_clips=two).args
        plain, *_ = nodes["TrainTemporalLoRA"].execute(model=tiny, frames=frames, caption=FULL, steps=1, lr=1e-3,
                                                      rank=2, seed=0).args
    assert len(one) == 1 and len(two) == 2 and two[0] is one[0]  # a new tuple each time
    assert [c["caption"].split()[1] for c in t.info["clips"]] == ["red", "blue", "green"]
    assert t.info["ad_loss"] == 0.5 and plain.info["ad_loss"] == 0.0 and "clips" not in plain.info
    with pytest.raises(InputError, match="caption is empty"):
        nodes["AddTrainingClip"].execute(frames=frames, caption=" ")
