"""Hue-rotated views for T-LoRA training: the frames and the caption's color words rotate together."""

from __future__ import annotations

import pytest
import torch

from cav_core.recolor import ROTATIONS, hue_rotated_views, rotate_caption, rotate_frames, unrotatable_color
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
