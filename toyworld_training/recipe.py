"""The fixed parts of the toy model's recipe: the stages in order, the defaults of the
run-wide settings (recorded as ``config`` in the exported training.json), and the sitting
options an older version of this trainer had."""

from __future__ import annotations

STAGES = ("vae", "data", "image", "video", "decoder", "terminal")
PIPELINE = STAGES[:5]  # a first run goes through these; "terminal" is an extension sitting only

DEFAULTS: dict[str, int | float] = dict(
    vae_steps=1500, vae_batch=64, vae_lr=1e-3, n_clips=8000,
    image_steps=1500, image_batch=64, video_steps=6000, video_batch=8,
    lr=6e-4, warmup=200, ema_decay=0.998, cfg_dropout=0.1, min_snr=5.0, seed=1234,
    decoder_steps=1500, decoder_lr=5e-4, terminal_lr=1e-3)

#: Sitting options of the trainer while it lived in cav_core/toyworld/train_toy.py that no
#: sitting of the shipped v6 recipe used (cav_core/toyworld/model/training.json): they are gone
#: with their code. A checkpoint whose unfinished sitting uses one is refused (trainer.py, load).
REMOVED_OPTIONS = ("direction_aux", "direction_contrast", "video_t_min", "terminal_rows", "with_still")
