"""Configs of the embedded toy text-to-video model: the real classes, tiny sizes.

UNet3DConditionModel + CLIPTextModel/CLIPTokenizer + AutoencoderKL + DDIM scheduler,
as ModelScope, sized to train on 2 CPU cores: 32x32 RGB clips are encoded by a 4x VAE to
4x8x8 latents; the UNet has block widths (32, 64, 64), one layer per block.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from . import spec

MAX_TOKENS = 24  # longest spec caption is 14 tokens with BOS/EOS; room for TI tokens

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
    cross_attention_dim=64,
    attention_head_dim=8,  # UNet3DConditionModel reads this as the number of heads
)

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4,
    norm_num_groups=8, sample_size=spec.SIZE,
)

# ModelScope's scheduler settings.
SCHEDULER_CONFIG: dict[str, Any] = dict(
    _class_name="DDIMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    prediction_type="epsilon",
)

#: What ``python -m toyworld_training --v-zero-snr`` switches a model to (Lin et al. 2024,
#: "Common diffusion noise schedules and sample steps are flawed"): ModelScope's schedule keeps 0.07 of the clean video
#: at t = 999, enough for a tiny model to read the whole motion path out of the start noise, so
#: the seed, not the prompt, picks which way the object goes. With zero terminal SNR the first
#: step sees pure noise and must take the motion from the caption; v-prediction keeps that
#: step well-defined and "trailing" spacing makes sampling start there.
V_ZERO_SNR: dict[str, Any] = dict(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                  timestep_spacing="trailing")

#: Words given whole-word tokens; anything else still tokenizes, as characters.
VOCAB_WORDS: tuple[str, ...] = tuple(dict.fromkeys(
    ["a", "an", "the", "moving", "on", "background", "in", "and", "of", "to", "still",
     "circle", "zigzag", "bouncing", "bounce", "stopping", "going", "object", "shape", "video",
     "up", "down", "left", "right", "slowly", "fast", "quickly", "turning", "around", "with",
     *spec.COLORS, *spec.SHAPES, *spec.BACKGROUNDS]
    + [w for d in spec.DIRECTIONS for w in d.split("-")]))


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level alphabet: every byte maps to a printable character.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_vocab(folder: Path, words: tuple[str, ...] = VOCAB_WORDS) -> tuple[Path, Path]:
    """Write a CLIP BPE ``vocab.json`` + ``merges.txt``: the byte alphabet, plus merges that
    build each known word left to right into one ``word</w>`` token."""
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [c + "</w>" for c in alphabet]
    seen = set(vocab)
    merges: list[str] = []
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            merge, cur = f"{cur} {p}", cur + p
            if cur not in seen:
                merges.append(merge)
                vocab.append(cur)
                seen.add(cur)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def build_tokenizer():
    """A CLIPTokenizer whose vocabulary covers the caption grammar by whole words."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as d:
        write_vocab(Path(d))
        # from_pretrained on vocab.json + merges.txt reads the same on transformers 4 and 5,
        # whose constructors differ.
        return CLIPTokenizer.from_pretrained(d, model_max_length=MAX_TOKENS)


def text_config(tokenizer) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_random_toy(seed: int = 0):
    """The toy architecture with random weights (tests that need no trained model)."""
    from ..model import build_t2v

    tok = build_tokenizer()
    return build_t2v(UNET_CONFIG, text_config(tok), VAE_CONFIG, SCHEDULER_CONFIG, tok, seed=seed, name="toy-random")
