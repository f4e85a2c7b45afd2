"""Generating videos and DDIM-inverting reference clips."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._io import CATEGORY, T2VModel, io

# cav_core.sample.SCHEDULERS (a test keeps them equal; listed here so the pack imports no
# diffusers at ComfyUI start-up).
SCHEDULERS = ["ddim", "dpmpp_2m", "euler", "euler_ancestral"]


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
                io.Int.Input("steps", default=25, min=1, max=1000, tooltip="Denoising steps."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1,
                               tooltip="Classifier-free guidance scale (1 = off)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                             tooltip="Noise seed (drawn on the CPU, so the same seed gives the same video on "
                                     "any device)."),
                io.Int.Input("num_frames", default=16, min=1, max=1024, tooltip="Number of frames to generate."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Width in pixels; 0 = the model's native size (or the start latent's)."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Height in pixels; 0 = the model's native size (or the start latent's)."),
                io.Combo.Input("scheduler", options=SCHEDULERS, default="ddim", tooltip="Sampling scheduler."),
                io.Float.Input("init_blend", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Only with init_latent: how much of it to keep in the start noise (1 = all "
                                       "of the inverted structure, 0 = fresh noise; MotionDirector uses 0.5)."),
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
        frames = generate(model, prompt, negative_prompt=negative_prompt, num_frames=num_frames,
                          height=height or None, width=width or None, steps=steps, guidance_scale=cfg, seed=seed,
                          scheduler=scheduler, init_latents=init, init_blend=init_blend, preview=preview,
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
                io.Int.Input("steps", default=25, min=1, max=1000,
                             tooltip="Inversion steps; use the sampler's step count with the ddim scheduler."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="5-D video latents {'samples': (1, C, frames, h, w)}.")],
        )

    @classmethod
    def execute(cls, model, frames, prompt, steps) -> io.NodeOutput:
        from cav_core.sample import invert_video

        latents = invert_video(model, frames, prompt, steps=steps, progress=bridge.progress("DDIMInvertVideo"))
        return io.NodeOutput({"samples": latents})
