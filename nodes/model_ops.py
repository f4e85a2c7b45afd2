"""Nodes that return a *new* model handle with something applied; the input handle and the
base weights are never changed (like ComfyUI's ModelPatcher.clone())."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._io import CATEGORY, Adapter, T2VModel, io


def _strength(default: float = 1.0) -> object:
    return io.Float.Input("strength", default=default, min=-10.0, max=10.0, step=0.05,
                          tooltip="Scales the LoRA's effect: 0 = off, 1 = as trained; values above 1 exaggerate.")


def _log_note(note: str) -> None:
    bridge.log.warning("Customize-A-Video: %s", note)


class ApplyTemporalLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ApplyTemporalLoRA",
            display_name="Apply Temporal LoRA",
            category=CATEGORY,
            description="Adds a T-LoRA (a learned motion) with a strength to the model and returns a new model "
                        "handle. Chain several to combine motions; the input model is left unchanged.",
            inputs=[
                T2VModel.Input("model", tooltip="The model to add the motion to."),
                Adapter.Input("temporal_lora", tooltip="A T-LoRA from Train Temporal LoRA or Load T-LoRA / "
                                                       "Absorber."),
                _strength(),
                io.Int.Input("min_timestep", default=-1, min=-1, max=999, optional=True,
                             tooltip="Apply the T-LoRA only on sampling steps at this timestep or above (never "
                                     "below where it was trained); 0: every step. -1: the model's default: 300 on "
                                     "the toy model, with cond_only_from 600 (stronger motion at the prompt's "
                                     "colors; measured on the toy only), every step on other models, as in the "
                                     "paper."),
                io.Int.Input("cond_only_from", default=-1, min=-1, max=1000, optional=True,
                             tooltip="On steps at this timestep or above, apply the T-LoRA to the prompt's side of "
                                     "classifier-free guidance only, so guidance strengthens the motion; 1000: "
                                     "never (both sides on every step it is applied). -1: the model's default: "
                                     "600 on the toy model (measured there only), never on other models, as in "
                                     "the paper."),
            ],
            outputs=[T2VModel.Output(display_name="model", tooltip="A new handle with the T-LoRA applied.")],
        )

    @classmethod
    def execute(cls, model, temporal_lora, strength, min_timestep=-1, cond_only_from=-1) -> io.NodeOutput:
        from cav_core.handle import with_adapter

        def as_set(v: int | None) -> int | None:  # -1 (or an unconnected input): the library default
            return None if v is None or v < 0 else int(v)

        return io.NodeOutput(with_adapter(
            model, temporal_lora, strength, "temporal", name="T-LoRA", min_timestep=as_set(min_timestep),
            cond_only_from=as_set(cond_only_from), what="Apply Temporal LoRA's temporal_lora input",
            fix="spatial LoRAs go through Apply Spatial LoRA, absorbers into Train Temporal LoRA", warn=_log_note))


class ApplySpatialLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ApplySpatialLoRA",
            display_name="Apply Spatial LoRA",
            category=CATEGORY,
            description="Adds a spatial (image) LoRA from models/loras to the model's spatial attention layers, "
                        "e.g. a Stable Diffusion 2.1 style LoRA (kohya/A1111 or diffusers format), whose layer "
                        "names match ModelScope's spatial layers. Returns a new model handle.",
            inputs=[
                T2VModel.Input("model", tooltip="The model to add the LoRA to."),
                io.Combo.Input("lora_name", options=bridge.lora_names(),
                               tooltip="A .safetensors LoRA in models/loras (or output/loras)."),
                _strength(),
            ],
            outputs=[T2VModel.Output(display_name="model", tooltip="A new handle with the spatial LoRA applied.")],
        )

    @classmethod
    def fingerprint_inputs(cls, lora_name, **_):  # linked inputs are not passed here
        return bridge.file_stamp_of(bridge.resolve_lora, lora_name)

    @classmethod
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        from cav_core.handle import with_adapter

        from .loaders import load_adapter_file

        adapter = load_adapter_file(bridge.resolve_lora(lora_name), "spatial", model.base.unet)
        return io.NodeOutput(with_adapter(model, adapter, strength, "spatial", name=lora_name,
                                          fix="T-LoRAs go through Apply Temporal LoRA", warn=_log_note))


class BypassTemporalLayers(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="BypassTemporalLayers",
            display_name="Bypass Temporal Layers",
            category=CATEGORY,
            description="Turns the model's temporal layers (temporal attention and convolutions) into identities, "
                        "so every frame is generated as an independent image; returns a new model handle.",
            inputs=[
                T2VModel.Input("model", tooltip="The model whose temporal layers to bypass."),
                io.Boolean.Input("enabled", default=True, tooltip="On: temporal layers bypassed. Off: normal."),
            ],
            outputs=[T2VModel.Output(display_name="model", tooltip="A new handle with the bypass set.")],
        )

    @classmethod
    def execute(cls, model, enabled) -> io.NodeOutput:
        return io.NodeOutput(model.with_bypass(enabled))
