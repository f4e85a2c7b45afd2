"""Checks on the shipped pretrained toy model: it loads like a real model, follows its
prompts, inverts and reconstructs a clip, and a T-LoRA learns a held-out motion.
Skipped when the model is not in the checkout; the long ones are marked slow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cav_core import sample
from cav_core.toyworld import ASSETS_DIR, MODEL_DIR, measures


def test_folder_has_the_real_layout_and_is_small(toy):
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet3DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    size = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    training = json.loads((MODEL_DIR / "training.json").read_text())
    assert "command" in training and "seed" in training["config"]
    assert type(toy.base.unet).__name__ == "UNet3DConditionModel"


def test_text_conditions_the_samples(toy):
    """A regression floor under the figures benchmarks/toy_quality.py reports (v6: color 92%,
    shape 75% over 112 prompts; v4 had 88% and 56%). Chance is 1/7 for color, 1/3 for
    shape and 1/2 for background, so a model that ignores its prompt fails this."""
    from cav_core.toyworld import spec

    hits_color, hits_shape, hits_bg, n = 0, 0, 0, 0
    for i, (color, bg) in enumerate((c, b) for c in spec.COLORS for b in spec.BACKGROUNDS):
        shape = spec.SHAPES[i % 3]
        clip = sample.generate(toy, f"a {color} {shape} moving right on a {bg} background", steps=20, seed=i)[0]
        d = measures.describe_clip(clip.numpy())
        hits_color += d["color"] == color
        hits_shape += d["shape"] == shape
        hits_bg += d["background"] == bg
        n += 1
    # chance: color 2 of 14, shape 5 of 14, background 7 of 14
    assert hits_color >= 10 and hits_shape >= 9 and hits_bg >= 12, (hits_color, hits_shape, hits_bg, n)


def test_seeds_give_different_samples(toy):
    videos = sample.generate(toy, "a green circle moving right on a black background", steps=15, seed=3, batch_size=3)
    starts = [measures.centroid_track(v.numpy())[0] for v in videos]
    assert max(np.abs(starts[0] - s).max() for s in starts[1:]) > 1.0


def test_direction_word_sets_the_motion_and_still_stays_still(toy):
    """A regression floor under what v4, v5 and v6 learned (benchmarks/toy_quality.py:
    direction 100% / 100% / 91%, 'still' 80% / 93% / 100%). The same seeds serve every word, so a model whose start noise
    picks the way along an axis (as v3's did: 51.5%, 1 of 12 same-seed pairs opposite) gets
    at most about half of the moving words right (v3: 9/15 here); chance is about 1/8."""
    hits, n = 0, 0
    for word in ("left", "right", "up", "down", "still"):
        for seed in range(3):
            clip = sample.generate(toy, f"a white circle moving {word} on a black background", steps=20, seed=seed)[0]
            hits += measures.motion_direction(measures.centroid_track(clip.numpy())) == word
            n += 1
    assert hits >= 12, (hits, n)


@pytest.mark.parametrize("clip", ["zigzag", "circle"])
def test_inversion_reconstructs_the_clip(toy, clip):
    from cav_core.data import load_video_clip

    meta = json.loads((ASSETS_DIR / f"{clip}.json").read_text())
    frames = load_video_clip(ASSETS_DIR / f"{clip}.mp4", size=(32, 32))
    prompt = meta["captions"]["full"]
    inverted = sample.invert_video(toy, frames, prompt, steps=50)
    back = sample.generate(toy, prompt, steps=50, guidance_scale=1.0, init_latents=inverted)[0]
    err = float((back - frames).abs().mean())
    print(f"inversion round trip: mean abs pixel error {err:.4f}")
    assert err < 0.05
    ref, got = measures.describe_clip(frames.numpy()), measures.describe_clip(back.numpy())
    assert (got["color"], got["shape"], got["background"]) == (ref["color"], ref["shape"], ref["background"])
    assert measures.motion_fidelity(got["track"], ref["track"]) > 0.9
    # with blend 0 the start is fresh noise: the layout changes with the seed (a start taken
    # from the inverted latents would give the same clip for both seeds, a difference of 0)
    a = sample.generate(toy, prompt, steps=20, init_latents=inverted, init_blend=0.0, seed=1)[0]
    b = sample.generate(toy, prompt, steps=20, init_latents=inverted, init_blend=0.0, seed=2)[0]
    assert float((a - b).abs().mean()) > 0.005


@pytest.mark.slow
def test_t_lora_learns_a_held_out_motion(toy):
    """A T-LoRA trained with the library defaults (1000 steps at 2e-3 on t >= 300, on the
    clip and its two hue rotations, no absorber; sampled on t >= 600, on the prompt's
    guidance branch only) replays the circle on the 8 prompts of new color, shape and
    background that benchmarks/motion_transfer.py uses, one seed each.

    Measured on the shipped v6 model (training is reproducible, so every run gives this;
    1 CPU thread): fidelity 0.89 0.13 0.83 0.95 0.90 0.84 0.95 0.90, mean 0.80; the prompt's
    color in 6 of 8 (the cyan triangle came out white, the white triangle magenta). The
    floors sit under that: fidelity 0.75 is far above the base model's -0.05 on these
    prompts (docs/EXPERIMENTS.md), so a T-LoRA that stops learning the motion fails; 6
    colors is the base model's own rate (81%). Issue #5's goal (fidelity >= 0.8, color >=
    80%, over 16 seeds) is measured by `benchmarks/motion_transfer.py`, not here."""
    from cav_core.data import load_video_clip
    from cav_core.demo import NEW_SUBJECTS
    from cav_core.train import train_temporal_lora

    meta = json.loads((ASSETS_DIR / "circle.json").read_text())
    frames = load_video_clip(ASSETS_DIR / "circle.mp4", size=(32, 32))
    tlora = train_temporal_lora(toy, frames, meta["captions"]["full"], seed=0)
    ref = np.asarray(meta["centers"])
    h = toy.with_lora(tlora.lora)
    fid, colors_ok = [], []
    for i, (color, shape, bg) in enumerate(NEW_SUBJECTS):
        prompt = f"a {color} {shape} {meta['motion_phrase']} on a {bg} background"
        clip = sample.generate(h, prompt, seed=100 + i)[0].numpy()
        fid.append(measures.motion_fidelity(measures.centroid_track(clip), ref))
        colors_ok.append(measures.object_color(clip) == color)
    assert np.mean(fid) >= 0.75, fid
    assert sum(colors_ok) >= 6, colors_ok


@pytest.mark.slow
def test_absorber_reproduces_the_reference_appearance_in_single_frames(toy):
    """Paper Fig. 9 analogue: absorber loaded, temporal layers bypassed, appearance caption."""
    from cav_core.data import load_video_clip
    from cav_core.train import train_appearance_absorber

    meta = json.loads((ASSETS_DIR / "zigzag.json").read_text())
    frames = load_video_clip(ASSETS_DIR / "zigzag.mp4", size=(32, 32))
    absorber = train_appearance_absorber(toy, frames, meta["captions"]["appearance"], kind="both", seed=0)
    h = toy.with_lora(absorber.lora).with_tokens(absorber.tokens).with_bypass(True)
    clips = sample.generate(h, absorber.info["trained_caption"], num_frames=4, seed=0, batch_size=4)
    colors = [measures.object_color(c.numpy()) for c in clips]
    assert colors.count(meta["color"]) >= 3, colors
