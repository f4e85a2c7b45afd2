"""Background-swapped views for T-LoRA training: the frames and the caption's background word change together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cav_core import train
from cav_core.rebackground import rebackground_skip_reason, rebackground_views, swap_background
from cav_core.toyworld.clips import render_clip
from cav_core.toyworld.spec import BACKGROUNDS

PATH = np.stack([np.linspace(8.0, 22.0, 6), np.linspace(20.0, 9.5, 6)], axis=1)  # sub-pixel: anti-aliased edges


@pytest.mark.parametrize("old,new", [("black", "gray"), ("gray", "black")])
@pytest.mark.parametrize("color", ["red", "cyan", "white"])
def test_a_swapped_clip_is_the_clip_rendered_on_the_other_background(color, old, new):
    # The renderer (cav_core/toyworld/clips.py) is independent of the swap; its anti-aliasing
    # blends object and background linearly, which the swap must undo exactly.
    clip = torch.from_numpy(render_clip(color, "triangle", old, PATH))
    want = torch.from_numpy(render_clip(color, "triangle", new, PATH))
    assert float((swap_background(clip, old, new) - want).abs().max()) < 1e-5


def test_views_swap_the_caption_word_and_keep_the_rest():
    clip = torch.from_numpy(render_clip("yellow", "circle", "black", PATH))
    (frames, caption), = rebackground_views(clip, "A yellow circle moving on a Black background")
    assert caption == "A yellow circle moving on a Gray background"
    assert torch.allclose(frames[:, 0, 0], torch.tensor(BACKGROUNDS["gray"], dtype=frames.dtype))


@pytest.mark.parametrize("caption,frames,reason", [
    ("a dog running on a beach", None, "names no plain background"),
    ("a dot on a black background and a gray background", None, "more than one"),
    ("a dog on a black background", torch.rand(4, 8, 8, 3), "border is not plain black"),
    ("a red circle on a gray background", None, "border is not plain gray"),  # the clip is on black
])
def test_a_clip_that_cannot_be_swapped_truthfully_is_skipped_with_a_reason(caption, frames, reason):
    frames = torch.from_numpy(render_clip("red", "circle", "black", PATH)) if frames is None else frames
    assert reason in rebackground_skip_reason(frames, caption)
    assert rebackground_views(frames, caption) == []


def test_the_t_lora_trains_on_every_view_on_both_backgrounds(tiny, monkeypatch):
    from cav_core.codec import encode_frames, text_embeddings

    caption = "a red circle moving on a black background"
    clip = torch.from_numpy(render_clip("red", "circle", "black", PATH))
    jobs = []
    real = train.run_training
    monkeypatch.setattr(train, "run_training", lambda job: jobs.append(job) or real(job))
    t = train.train_temporal_lora(tiny, clip, caption, steps=2, rank=2, rebackground=True)
    assert t.info["rebackground"] == "on" and len(t.info["trained_captions"]) == 6
    assert t.info["trained_captions"][3:] == [c.replace("black", "gray") for c in t.info["trained_captions"][:3]]
    gray = swap_background(clip, "black", "gray")
    want = (encode_frames(tiny.base, gray), text_embeddings(tiny, [caption.replace("black", "gray")]))
    hits = [step for step in range(60) if all(torch.allclose(a, b) for a, b in zip(
        jobs[0].batch(step, train._step_generator(0, step)), want))]
    assert hits  # 60 draws of 6 views miss one with p = (5/6)^60 < 2e-5 (and the draw is seeded)
    off = train.train_temporal_lora(tiny, clip, caption, steps=1, rank=2, rebackground=False)
    assert off.info["rebackground"] == "off" and len(off.info["trained_captions"]) == 3
    with pytest.warns(UserWarning, match="rebackground skipped"):
        odd = train.train_temporal_lora(tiny, clip, "a red circle moving left", steps=1, rank=2, rebackground=True)
    assert odd.info["rebackground"].startswith("off: the caption names no plain background")

