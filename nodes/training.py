"""The two training stages of Customize-A-Video. Outputs are cached by ComfyUI on their
inputs: changing anything downstream (strength, prompt, seed of the sampler) never retrains."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._defaults import SWITCH, hint, or_none, switch
from ._io import CATEGORY, Adapter, T2VModel, TrainingClips, io

# Widgets left at "default" (0, -1 or "default") take the model's default (nodes/_defaults.py).
ABSORBER_KINDS = ["both", "lora", "ti"]


def _lr(name: str, key: str, what: str) -> object:
    return io.Float.Input(name, default=0.0, min=0.0, max=1.0, step=1e-5,
                          tooltip=f"Learning rate of the {what} (AdamW). " + hint(key))


def _snapshot_inputs(what: str, prefix: str) -> list:
    """The snapshot widgets, optional and last, so workflows made before them keep their values."""
    return [
        io.Int.Input("snapshot_every", default=0, min=0, max=100000, optional=True,
                     tooltip=f"Also save the {what} every this many steps and at the end, as numbered files in "
                             f"output/loras (0: off). The best number of steps differs from one reference "
                             f"video to the next: pick the best snapshot with Load T-LoRA / Absorber (press R "
                             f"to refresh its list)."),
        io.String.Input("snapshot_prefix", default=prefix, optional=True,
                        tooltip="Where snapshots go in output/loras (may include subfolders); each run gets a "
                                "free number, then _step00100 etc.: e.g. " + prefix + "_00001_step00100."),
    ]


_FILES_OUT = "One path per line (output/loras/...), in step order; empty with snapshots off."


def _snapshots(snapshot_every: int, snapshot_prefix: str):
    """(destination, collected snapshots) for a training node: output/loras/PREFIX_NNNNN_stepSSSSS."""
    from .loaders import prefixed_path, snapshot_saver

    shots: list = []
    if not snapshot_every:
        return None, shots
    folder = bridge.lora_save_dir("output/loras")
    prefixed_path(folder, snapshot_prefix, "snapshot_prefix")  # before training, not at the first snapshot
    return snapshot_saver(folder, snapshot_prefix), shots


def _file_list(shots: list) -> str:
    root = bridge.lora_save_dir("output/loras")
    return "\n".join(f"output/loras/{s.path.relative_to(root).as_posix()}" for s in shots)


def _seed() -> object:
    return io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                        tooltip="Training seed (timesteps, noise, crops). Same inputs + seed = same result, so "
                                "ComfyUI reuses the trained output instead of training again.")


class TrainAppearanceAbsorber(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrainAppearanceAbsorber",
            display_name="Train Appearance Absorber",
            category=CATEGORY,
            description="Stage 1: learns the reference video's appearance (subject, background) from its frames "
                        "as an unordered set of images plus random patch crops, with the temporal layers "
                        "bypassed, as a spatial LoRA (S-LoRA), textual-inversion tokens, or both. Feed it to "
                        "Train Temporal LoRA so the T-LoRA learns the motion and not the look.",
            inputs=[
                T2VModel.Input("model", tooltip="The base text-to-video model."),
                io.Image.Input("frames", tooltip="The reference video's frames (fit to the model's size)."),
                io.String.Input("caption", multiline=True, default="",
                                tooltip="Appearance caption: what the reference shows, without the motion, "
                                        "e.g. 'a red circle on a black background'."),
                io.Combo.Input("kind", options=ABSORBER_KINDS, default="both",
                               tooltip="lora: spatial LoRA; ti: textual-inversion tokens; both (the paper's "
                                       "best setting)."),
                io.Int.Input("steps", default=0, min=0, max=100000,
                             tooltip="Training steps (a few hundred on the toy model take ~1 min on a CPU). "
                                     + hint("absorber.steps")),
                _lr("lora_lr", "absorber.lora_lr", "S-LoRA"),
                _lr("ti_lr", "absorber.ti_lr", "textual-inversion tokens"),
                io.Int.Input("rank", default=0, min=0, max=256,
                             tooltip="S-LoRA rank (the paper uses 1). " + hint("absorber.rank")),
                io.Int.Input("num_tokens", default=0, min=0, max=16,
                             tooltip="Number of textual-inversion tokens (the paper uses 2-6). "
                                     + hint("absorber.num_tokens")),
                io.Float.Input("crop_min", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Smallest random patch crop, as a fraction of the frame side. "
                                       + hint("absorber.crop_range", part=0)),
                io.Float.Input("crop_max", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Largest random patch crop, as a fraction of the frame side. "
                                       + hint("absorber.crop_range", part=1)),
                _seed(),
                io.String.Input("init_word", default="", optional=True,
                                tooltip="Word the tokens start from (empty: the subject word of the caption)."),
                *_snapshot_inputs("absorber", "cav/snapshots/absorber"),
            ],
            outputs=[Adapter.Output(display_name="absorber", tooltip="The appearance absorber (save it with "
                                                                     "Save T-LoRA / Absorber to reuse it)."),
                     io.String.Output(display_name="snapshot_files",
                                      tooltip="The absorber's snapshot files (not sampled: with the temporal "
                                              "layers bypassed there is no motion to score). " + _FILES_OUT)],
        )

    @classmethod
    def execute(cls, model, frames, caption, kind, steps, lora_lr, ti_lr, rank, num_tokens, crop_min, crop_max,
                seed, init_word="", snapshot_every=0, snapshot_prefix="cav/snapshots/absorber") -> io.NodeOutput:
        from cav_core.train import train_appearance_absorber

        from cav_core.defaults import profile_for

        default_crop = profile_for(model)["absorber.crop_range"]
        crop = (or_none(crop_min) or default_crop[0], or_none(crop_max) or default_crop[1])
        dest, shots = _snapshots(snapshot_every, snapshot_prefix)
        with bridge.autograd_enabled():
            absorber = train_appearance_absorber(
                model, frames.clone(), caption, kind=kind, steps=or_none(steps), rank=or_none(rank),
                num_tokens=or_none(num_tokens), init_word=init_word.strip() or None, crop_range=crop,
                lora_lr=or_none(lora_lr), ti_lr=or_none(ti_lr), seed=seed,
                progress=bridge.progress("TrainAppearanceAbsorber"), snapshot_every=snapshot_every,
                snapshot_to=dest, on_snapshot=shots.append)
        return io.NodeOutput(absorber, _file_list(shots))


class TrainTemporalLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrainTemporalLoRA",
            display_name="Train Temporal LoRA",
            category=CATEGORY,
            description="Stage 2: learns the reference video's motion as a Temporal LoRA (T-LoRA) on the temporal "
                        "attention layers, with the appearance absorber loaded and frozen. At generation only the "
                        "T-LoRA is applied, so the motion carries over to new subjects and scenes.",
            inputs=[
                T2VModel.Input("model", tooltip="The base text-to-video model (the same one the absorber was "
                                                "trained on)."),
                io.Image.Input("frames", tooltip="The reference video's frames, in order."),
                io.String.Input("caption", multiline=True, default="",
                                tooltip="Full caption of the reference, with the motion, e.g. 'a red circle "
                                        "moving in a circle on a black background'. Absorber tokens are inserted "
                                        "automatically."),
                io.Int.Input("steps", default=0, min=0, max=100000,
                             tooltip="Training steps. " + hint("temporal.steps")),
                _lr("lr", "temporal.lr", "T-LoRA"),
                io.Int.Input("rank", default=0, min=0, max=256,
                             tooltip="T-LoRA rank (the paper uses 4: ~0.8M parameters on ModelScope). "
                                     + hint("temporal.rank")),
                _seed(),
                io.Int.Input("min_timestep", default=-1, min=-1, max=999, optional=True,
                             tooltip="Train only on noise levels from this timestep up (0: all). On the toy "
                                     "model motion was decided at high noise and low noise mostly held the "
                                     "reference's look (measured there only). "
                                     + hint("temporal.min_timestep", "-1")),
                io.Combo.Input("recolor", options=SWITCH, default="default", optional=True,
                               tooltip="Also train on two hue-rotated copies of the clip, with the caption's "
                                       "color words rotated to match (red becomes green in one, blue in the "
                                       "other), so the T-LoRA keeps the motion and not the reference's colors. "
                                       "Skipped (and said in the log) when a rotated caption would be false: it "
                                       "names a color like orange that a rotation cannot rename, or no color. "
                                       "Measured on the toy model only. " + hint("temporal.recolor", "default")),
                Adapter.Input("absorber", optional=True,
                              tooltip="Optional appearance absorber (from Train Appearance Absorber, or a spatial "
                                      "LoRA loaded with Load T-LoRA / Absorber)."),
                io.String.Input("validation_prompt", multiline=True, default="", optional=True,
                                tooltip="Optional: a prompt sampled now and then during training and shown as "
                                        "the node's preview (costs a short sampling run each time)."),
                io.Int.Input("validate_every", default=0, min=0, max=100000, optional=True,
                             tooltip="Steps between validation previews (0: four previews over the run)."),
                *_snapshot_inputs("T-LoRA", "cav/snapshots/temporal_lora"),
                io.Float.Input("ad_loss", default=-1.0, min=-1.0, max=100.0, step=0.05, optional=True,
                               tooltip="Weight of the appearance-debiased temporal loss (MotionDirector's): a "
                                       "second loss on predictions and targets minus one random anchor frame, so "
                                       "training sees the changes between frames rather than the look; 0: off. "
                                       + hint("temporal.ad_loss", "-1")),
                TrainingClips.Input("more_clips", optional=True,
                                    tooltip="Optional further clips of the same motion (from Add Training Clip), "
                                            "each with its own caption and absorber: each training step draws one "
                                            "clip, this node's own frames included."),
            ],
            outputs=[Adapter.Output(display_name="temporal_lora",
                                    tooltip="The T-LoRA: apply it with Apply Temporal LoRA, or save it."),
                     io.Image.Output(display_name="snapshot_grid",
                                     tooltip="One row per snapshot under a first row with the reference: up to 8 "
                                             "frames of the validation prompt's sample (same seed and noise for "
                                             "every snapshot), with the step and the motion score against the "
                                             "reference (Compare Motion's score: it measures motion only, not "
                                             "looks). Without a validation prompt the rows have the step and "
                                             "black frames; with snapshots off it is a 1x1 black image."),
                     io.String.Output(display_name="snapshot_files", tooltip="The T-LoRA's snapshot files. "
                                                                             + _FILES_OUT)],
        )

    @classmethod
    def execute(cls, model, frames, caption, steps, lr, rank, seed, min_timestep=-1, absorber=None,
                validation_prompt="", validate_every=0, recolor="default", snapshot_every=0,
                snapshot_prefix="cav/snapshots/temporal_lora", ad_loss=-1.0, more_clips=None) -> io.NodeOutput:
        from cav_core.train import train_temporal_lora

        from .snapshot_grid import snapshot_grid

        min_timestep = None if min_timestep is None or min_timestep < 0 else min_timestep  # 0 means all
        dest, shots = _snapshots(snapshot_every, snapshot_prefix)
        ad_loss = None if ad_loss is None or ad_loss < 0 else ad_loss  # 0 means off
        with bridge.autograd_enabled():
            tlora = train_temporal_lora(
                model, frames.clone(), caption, absorber=absorber, steps=or_none(steps), rank=or_none(rank),
                lr=or_none(lr), seed=seed, validation_prompt=validation_prompt.strip() or None,
                validate_every=validate_every or None, progress=bridge.progress("TrainTemporalLoRA"),
                min_timestep=min_timestep, recolor=switch(recolor), snapshot_every=snapshot_every,
                snapshot_to=dest, on_snapshot=shots.append, ad_loss=ad_loss, more_clips=tuple(more_clips or ()))
        grid = snapshot_grid(shots, frames if shots else None)
        return io.NodeOutput(tlora, grid, _file_list(shots))


class AddTrainingClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AddTrainingClip",
            display_name="Add Training Clip",
            category=CATEGORY,
            description="One more clip of the same motion for Train Temporal LoRA (its more_clips input): frames, "
                        "their caption and optional absorber. Chain several; each training step draws one clip, "
                        "with its own absorber attached, so the T-LoRA keeps what the clips share: the motion.",
            inputs=[
                io.Image.Input("frames", tooltip="This clip's frames, in order (fit to the model's size)."),
                io.String.Input("caption", multiline=True, default="",
                                tooltip="Full caption of this clip, with the motion, e.g. 'a white square moving "
                                        "in a circle on a gray background'."),
                Adapter.Input("absorber", optional=True,
                              tooltip="Optional appearance absorber of this clip (attached, frozen, on the steps "
                                      "that draw it)."),
                TrainingClips.Input("clips", optional=True,
                                    tooltip="Optional clips added upstream (another Add Training Clip)."),
            ],
            outputs=[TrainingClips.Output(display_name="clips",
                                          tooltip="The upstream clips and this one: connect to Train Temporal "
                                                  "LoRA's more_clips or to another Add Training Clip.")],
        )

    @classmethod
    def execute(cls, frames, caption, absorber=None, clips=None) -> io.NodeOutput:
        from cav_core.errors import InputError
        from cav_core.train import TrainClip

        if not caption.strip():
            raise InputError("Add Training Clip: caption is empty: describe this clip with its motion, e.g. 'a "
                             "white square moving in a circle on a gray background'")
        # A new tuple: the upstream node's output is never changed (nodes are pure).
        return io.NodeOutput(tuple(clips or ()) + (TrainClip(frames.clone(), caption.strip(), absorber),))
