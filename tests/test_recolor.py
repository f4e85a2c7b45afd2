"""Hue-rotated views for T-LoRA training: the frames and the caption's color words rotate together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cav_core import train
from cav_core.recolor import (ROTATIONS, hue_rotated_views, recolor_skip_reason, rotate_caption, rotate_frames,
                              tint_skip_reason, unrotatable_color)
from cav_core.toyworld.clips import render_clip
from cav_core.toyworld.spec import COLORS


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize("word", [w for w in COLORS if w != "white"])
def test_a_rotated_caption_names_the_color_of_the_rotated_frames(word, rotation):
    # COLORS (the toy-world spec) is a table independent of the module's own.
    pixel = torch.tensor(COLORS[word], dtype=torch.float32).view(1, 1, 1, 3)
    got = tuple(rotate_frames(pixel, rotation).flatten().tolist())
    new_word = rotate_caption(f"a {word} circle", rotation).split()[1]
    assert new_word != word and COLORS[new_word] == got


def test_only_whole_color_words_change_and_case_is_kept():
    caption = "A Red fox and a redwood by a blue lake, white clouds on a black and gray sky"
    assert rotate_caption(caption, (1, 2, 0)) == \
        "A Blue fox and a redwood by a green lake, white clouds on a black and gray sky"


def test_three_rotations_give_back_the_clip_and_its_caption():
    frames = torch.rand(2, 4, 4, 3)
    caption = "a yellow square moving left on a cyan background"
    f, c = frames, caption
    for _ in range(3):
        f, c = rotate_frames(f, ROTATIONS[0]), rotate_caption(c, ROTATIONS[0])
    assert torch.equal(f, frames) and c == caption
    assert rotate_caption(rotate_caption(caption, ROTATIONS[0]), ROTATIONS[1]) == caption


def test_views_are_the_clip_and_two_rotations_unless_a_rotated_caption_would_be_false():
    frames = torch.rand(3, 8, 8, 3)
    views = hue_rotated_views(frames, "a red dog running on a beach")
    assert len(views) == 3 and views[0][0] is frames
    assert [c for _, c in views] == ["a red dog running on a beach", "a blue dog running on a beach",
                                     "a green dog running on a beach"]
    assert not torch.equal(views[1][0], frames) and not torch.equal(views[1][0], views[2][0])
    # no color word: the rotated copies would show colors the caption does not admit (green skin)
    assert [c for _, c in hue_rotated_views(frames, "a dog running on a beach")] == ["a dog running on a beach"]
    assert unrotatable_color("an Orange cat jumping") == "Orange"
    only = hue_rotated_views(frames, "an Orange cat jumping")
    assert len(only) == 1 and only[0][1] == "an Orange cat jumping"
    with pytest.raises(ValueError, match="cannot rename"):
        rotate_caption("a pink car", ROTATIONS[0])


# --------------------------------------------------------------------------- tint_white: a white object is tinted first

PATH = np.stack([np.linspace(8.0, 22.0, 6), np.linspace(20.0, 9.5, 6)], axis=1)  # sub-pixel: anti-aliased edges


@pytest.mark.parametrize("background", ["black", "gray"])
def test_a_tinted_white_object_gives_the_clip_in_white_red_green_and_blue(background):
    # The renderer (cav_core/toyworld/clips.py) is independent of the tint: each view must be the
    # clip it would render in the colour its caption names, edges included.
    clip = torch.from_numpy(render_clip("white", "triangle", background, PATH))
    caption = f"A White triangle moving on a {background} background"
    assert hue_rotated_views(clip, caption) == [(clip, caption)]  # off: a rotation cannot recolour white
    views = hue_rotated_views(clip, caption, tint_white=True)
    assert views[0][0] is clip and len(views) == 4
    for frames, text in views:
        color = text.split()[1]
        assert color[0].isupper()  # case is kept
        want = torch.from_numpy(render_clip(color.lower(), "triangle", background, PATH))
        assert float((frames - want).abs().max()) < 1e-5, text
    assert sorted(c.split()[1] for _, c in views) == ["Blue", "Green", "Red", "White"]
    assert recolor_skip_reason(caption, clip, tint_white=True) is None
    assert "no color" in recolor_skip_reason(caption, clip)  # the tint is off unless asked for


@pytest.mark.parametrize("caption,frames,reason", [
    ("a white dog running on a beach", None, "names no plain background"),
    ("a white dog and a white cat on a black background", None, "'white' once"),
    ("a white dog on a black background", torch.rand(4, 8, 8, 3), "border is not plain black"),
    ("a white circle on a gray background", None, "border is not plain gray"),  # the clip is on black
])
def test_a_white_object_that_cannot_be_tinted_truthfully_is_trained_as_it_is(caption, frames, reason):
    frames = torch.from_numpy(render_clip("white", "circle", "black", PATH)) if frames is None else frames
    assert reason in tint_skip_reason(frames, caption)
    why = recolor_skip_reason(caption, frames, tint_white=True)
    assert "cannot be tinted" in why and reason in why
    assert hue_rotated_views(frames, caption, tint_white=True) == [(frames, caption)]


def test_a_white_word_beside_a_rotatable_colour_is_rotated_not_tinted():
    clip = torch.from_numpy(render_clip("magenta", "square", "black", PATH))
    views = hue_rotated_views(clip, "a magenta square and a white dot on a black background", tint_white=True)
    assert len(views) == 3 and all("white dot" in c for _, c in views)


def test_tint_white_trains_a_white_reference_on_four_colours_and_leaves_a_coloured_one_bit_identical(tiny):
    white = torch.from_numpy(render_clip("white", "circle", "gray", PATH))
    t = train.train_temporal_lora(tiny, white, "a white circle moving on a gray background", steps=1, rank=2,
                                  tint_white=True, rebackground=True)
    assert t.info["tint_white"] is True and t.info["recolor"] == "on"
    assert len(t.info["trained_captions"]) == 8  # 4 colours x 2 backgrounds
    red = torch.from_numpy(render_clip("red", "circle", "gray", PATH))
    on, off = (train.train_temporal_lora(tiny, red, "a red circle moving on a gray background", steps=3, rank=2,
                                         tint_white=flag) for flag in (True, False))
    assert on.info["trained_captions"] == off.info["trained_captions"]
    assert all(torch.equal(on.lora.tensors[k], off.lora.tensors[k]) for k in off.lora.tensors)
