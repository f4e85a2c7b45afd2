"""Generating videos and DDIM-inverting reference clips."""

from __future__ import annotations

from cav_core.defaults import SCHEDULERS

from . import comfy_bridge as bridge
from ._defaults import hint, or_none
from ._io import CATEGORY, T2VModel, io


class ModelScopeT2VSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VSampler",
            display_name="Sample Video (ModelScope T2V)",
            category=CATEGORY,
            description="Generates a video from text with the model and everything applied to it (T-LoRAs, "
                        "spatial LoRAs), optionally starting from DDIM-inverted latents. Returns the frames as an "
                        "IMAGE batch for Create Video / Save Video / previews.",
            inputs=[
                T2VModel.Input("model", tooltip="The model, usually with a T-LoRA applied."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="What to generate: new subject and scene; the T-LoRA brings the motion."),
                io.String.Input("negative_prompt", multiline=True, default="",
                                tooltip="What to avoid (used by classifier-free guidance)."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="Denoising steps. " + hint("sample.steps")),
                io.Float.Input("cfg", default=-1.0, min=-1.0, max=100.0, step=0.1,
                               tooltip="Classifier-free guidance scale (1 = off). " + hint("sample.cfg", "-1")),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="Noise seed (drawn on the CPU, so the same seed gives the same video on "
                                     "any device)."),
                io.Int.Input("num_frames", default=0, min=0, max=1024,
                             tooltip="Number of frames to generate. " + hint("sample.frames")),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Width in pixels; 0 = the model's native size (or the start latent's)."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Height in pixels; 0 = the model's native size (or the start latent's)."),
                io.Combo.Input("scheduler", options=["default", *SCHEDULERS], default="default",
                               tooltip="Sampling scheduler. " + hint("sample.scheduler", "default")),
                io.Float.Input("init_blend", default=-1.0, min=-1.0, max=1.0, step=0.05,
                               tooltip="Only with init_latent: how much of it to keep in the start noise (1 = all "
                                       "of the inverted structure, 0 = fresh noise; MotionDirector uses 0.5). "
                                       + hint("sample.init_blend", "-1")),
                io.Boolean.Input("preview", default=True,
                                 tooltip="Show the predicted video on the node while sampling (costs a VAE "
                                         "decode per step; turn off for large models)."),
                io.Latent.Input("init_latent", optional=True,
                                tooltip="Optional start latents from DDIM Invert Video (same frames and size)."),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="The video as an IMAGE batch (one image per "
                                                                    "frame).")],
        )

    @classmethod
    def execute(cls, model, prompt, negative_prompt, steps, cfg, seed, num_frames, width, height, scheduler,
                init_blend, preview, init_latent=None) -> io.NodeOutput:
        from cav_core.sample import generate

        init = None
        if init_latent is not None:
            init = init_latent["samples"]
            vsf = model.base.vae_scale_factor
            height, width = height or init.shape[-2] * vsf, width or init.shape[-1] * vsf
        frames = generate(model, prompt, negative_prompt=negative_prompt, num_frames=or_none(num_frames),
                          height=height or None, width=width or None, steps=or_none(steps),
                          guidance_scale=None if cfg < 0 else cfg, seed=seed,
                          scheduler=None if scheduler == "default" else scheduler, init_latents=init,
                          init_blend=None if init_blend < 0 else init_blend, preview=preview,
                          progress=bridge.progress("ModelScopeT2VSampler"))
        return io.NodeOutput(frames[0])


class DDIMInvertVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DDIMInvertVideo",
            display_name="DDIM Invert Video",
            category=CATEGORY,
            description="Runs DDIM inversion on a clip: finds the start latents from which DDIM sampling "
                        "recreates it. Feed them to the sampler's init_latent to keep the clip's layout and "
                        "motion while the prompt (and T-LoRA) change the content.",
            inputs=[
                T2VModel.Input("model", tooltip="The model (use the one you will sample with)."),
                io.Image.Input("frames", tooltip="The clip's frames; width and height must suit the model "
                                                 "(set them in Load Reference Video)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="A caption of the clip (inversion is conditioned on it)."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="Inversion steps; use the sampler's step count with the ddim scheduler. "
                                     + hint("sample.steps") + " The sampler's default is the same."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="5-D video latents {'samples': (1, C, frames, h, w)}.")],
        )

    @classmethod
    def execute(cls, model, frames, prompt, steps) -> io.NodeOutput:
        from cav_core.sample import invert_video

        latents = invert_video(model, frames, prompt, steps=or_none(steps), progress=bridge.progress("DDIMInvertVideo"))
        return io.NodeOutput({"samples": latents})
