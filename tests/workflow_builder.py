"""Builds the example workflows in ``workflows/`` (ComfyUI UI workflow JSON, version 0.4).

The node inputs, widget order and output slots come from the nodes' own schemas, so a
workflow cannot silently drift from the nodes: ``tests/test_nodes.py`` checks that the
files in ``workflows/`` equal what this script builds, and the server test converts
every file against a real ComfyUI's ``/object_info``.

    python tests/workflow_builder.py        # rewrite workflows/*.json
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_helpers import (  # noqa: E402
    CONTROL_FILTER, CONTROL_WIDGET, FRONTEND_ONLY, UPLOAD_VALUE, UPLOAD_WIDGET, WORKFLOWS, frontend_widgets,
    load_pack, node_info_from_schema)

# Core ComfyUI nodes used by the workflows, as their /object_info describes them (0.3.64).
CORE_NODES: dict[str, dict[str, Any]] = {
    "CreateVideo": {
        "input": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0}]},
                  "optional": {"audio": ["AUDIO", {}]}},
        "input_order": {"required": ["images", "fps"], "optional": ["audio"]},
        "output": ["VIDEO"], "output_name": ["VIDEO"],
    },
    "SaveVideo": {
        "input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {}],
                               "format": ["COMBO", {}], "codec": ["COMBO", {}]}},
        "input_order": {"required": ["video", "filename_prefix", "format", "codec"]},
        "output": [], "output_name": [],
    },
    "PreviewImage": {
        "input": {"required": {"images": ["IMAGE", {}]}},
        "input_order": {"required": ["images"]},
        "output": [], "output_name": [],
    },
}

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
PACK_PROPS = {"cnr_id": "comfyui-customize-a-video"}
NOTE_COLOR = {"color": "#432", "bgcolor": "#653"}
# The value of the frontend's control_after_generate widget (see comfy_helpers.has_control_widget)
# on every seed. "fixed" everywhere: on a training node any other value would change the seed
# after each queue and so retrain every time; on a sampler it keeps the example reproducible (the
# same graph gives the same video, and a re-queue after changing one widget reuses what it can).
# An artist who wants variations switches the sampler's to "randomize" in the UI.
SEED_CONTROL = "fixed"


def node_infos() -> dict[str, dict[str, Any]]:
    pack = load_pack()
    infos = {cls.define_schema().node_id: node_info_from_schema(cls) for cls in pack.NODES}
    return {**CORE_NODES, **infos}


class Workflow:
    """A small graph builder that writes the UI workflow format."""

    def __init__(self, title: str, infos: dict[str, dict[str, Any]]):
        self.title = title
        self.infos = infos
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []
        # What each node's widgets mean, by name (frontend widget names, control widgets included):
        # the browser test checks the loaded graph against this, not against widgets_values.
        self.intent: dict[int, dict[str, Any]] = {}

    def _node(self, nid: int) -> dict[str, Any]:
        return next(n for n in self.nodes if n["id"] == nid)

    def add(self, ntype: str, pos: tuple[int, int], widgets: dict[str, Any] | None = None,
            size: tuple[int, int] = (320, 200), title: str | None = None) -> int:
        info = self.infos[ntype]
        widgets = dict(widgets or {})
        spec = {**info["input"]["required"], **info["input"].get("optional", {})}
        order = info["input_order"]["required"] + info["input_order"].get("optional", [])
        optional = set(info["input_order"].get("optional", []))
        inputs, values, meant = [], [], {}
        for name in order:
            typ, opts = spec[name][0], spec[name][1]
            if not (typ in WIDGETS and not opts.get("forceInput")):
                slot = {"name": name, "type": typ, "link": None}
                if name in optional:
                    slot["shape"] = 7
                inputs.append(slot)
        # widgets_values in the frontend's widget order, its own widgets included
        for name, kind in frontend_widgets(info):
            if kind == CONTROL_WIDGET:
                meant[name] = SEED_CONTROL  # a node has at most one seed
            elif kind == CONTROL_FILTER:
                meant[name] = ""
            elif kind == UPLOAD_WIDGET:
                meant[name] = UPLOAD_VALUE
            elif name in widgets:
                meant[name] = widgets.pop(name)
            elif "default" in spec[name][1]:
                meant[name] = spec[name][1]["default"]
            else:
                raise KeyError(f"{ntype}: give a value for widget {name!r}")
            values.append(meant[name])
        if widgets:
            raise KeyError(f"{ntype} has no widget(s) {sorted(widgets)}")
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))]
        nid = len(self.nodes) + 1
        node = {"id": nid, "type": ntype, "pos": list(pos), "size": list(size), "flags": {}, "order": 0, "mode": 0,
                "inputs": inputs, "outputs": outputs,
                "properties": {**(PACK_PROPS if ntype not in CORE_NODES else {"cnr_id": "comfy-core"}),
                               "Node name for S&R": ntype},
                "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        self.intent[nid] = meant
        return nid

    def below(self, nid: int) -> int:
        """The y for a node stacked under node ``nid`` in the same column: clear of its box, and
        of the next node's title bar and the pack badge the frontend draws above that."""
        n = self._node(nid)
        return n["pos"][1] + n["size"][1] + STACK_GAP

    def api_prompt(self) -> dict[str, dict[str, Any]]:
        """The API prompt this graph means, built from the widget values by name and the links
        (not from widgets_values): what the frontend's graphToPrompt() must give."""
        prompt: dict[str, dict[str, Any]] = {}
        for n in self.nodes:
            if n["type"] in FRONTEND_ONLY:
                continue
            own = (CONTROL_WIDGET, CONTROL_FILTER, UPLOAD_WIDGET)  # the frontend's widgets, not inputs
            inputs = {k: v for k, v in self.intent[n["id"]].items() if k not in own}
            for inp in n["inputs"]:
                if inp["link"] is not None:
                    link = next(link for link in self.links if link[0] == inp["link"])
                    inputs[inp["name"]] = [str(link[1]), link[2]]
            prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
        return prompt

    def note(self, text: str, pos: tuple[int, int], size: tuple[int, int] = (420, 220), title: str = "Note") -> int:
        nid = len(self.nodes) + 1
        self.nodes.append({"id": nid, "type": "Note", "title": title, "pos": list(pos), "size": list(size),
                           "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                           "widgets_values": [text], **NOTE_COLOR})
        self.intent[nid] = {"text": text}  # the frontend's Note has one widget, "text"
        return nid

    def link(self, src: int, out_slot: int, dst: int, input_name: str) -> None:
        s, d = self._node(src), self._node(dst)
        slot = next(i for i, inp in enumerate(d["inputs"]) if inp["name"] == input_name)
        typ = s["outputs"][out_slot]["type"]
        if d["inputs"][slot]["type"] != typ:
            raise TypeError(f"{s['type']}[{out_slot}] gives {typ}, {d['type']}.{input_name} takes "
                            f"{d['inputs'][slot]['type']}")
        lid = len(self.links) + 1
        self.links.append([lid, src, out_slot, dst, slot, typ])
        d["inputs"][slot]["link"] = lid
        s["outputs"][out_slot]["links"].append(lid)

    def group(self, title: str, box: tuple[int, int, int, int], color: str = "#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(box), "color": color,
                            "font_size": 24, "flags": {}})

    def to_json(self) -> dict[str, Any]:
        # execution order for the UI: a topological order of the graph
        deps = {n["id"]: {l[1] for l in self.links if l[3] == n["id"]} for n in self.nodes}
        done: list[int] = []
        while len(done) < len(self.nodes):
            ready = sorted(n for n, d in deps.items() if n not in done and d <= set(done))
            done += ready
        for n in self.nodes:
            n["order"] = done.index(n["id"])
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "customize-a-video/" + self.title)),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}, "title": self.title},
            "version": 0.4,
        }


# --------------------------------------------------------------------------- the workflows

TOY_APPEARANCE = "a red circle on a black background"
TOY_FULL = "a red circle moving in a circle on a black background"
TOY_TARGET = "a green square moving in a circle on a gray background"
TOY_STEPS = {"absorber": 200, "temporal": 2000, "sample": 25}  # cav_core defaults; about 5 min on 2 free CPU cores
TOY_SNAPSHOT_EVERY = 500
# Train Temporal LoRA on the toy model with snapshots: four, each sampled with the sampler's prompt
# (the validation previews fall on the same steps, so nothing is sampled twice).
TOY_SNAPSHOTS = {"steps": TOY_STEPS["temporal"], "validation_prompt": TOY_TARGET,
                 "snapshot_every": TOY_SNAPSHOT_EVERY, "snapshot_prefix": "cav/snapshots/toy_circle"}


def _video_out(w: Workflow, frames_src: tuple[int, int], x: int, y: int, prefix: str, fps: float = 8.0,
               save_size: tuple[int, int] = (320, 360)) -> None:
    cv = w.add("CreateVideo", (x, y), {"fps": fps}, size=(240, 80))
    w.link(frames_src[0], frames_src[1], cv, "images")
    sv = w.add("SaveVideo", (x, w.below(cv)), {"filename_prefix": prefix, "format": "auto", "codec": "auto"},
               size=save_size)
    w.link(cv, 0, sv, "video")


# Layout. Every graph must stay readable when the frontend fits it to a 1600x1000 window
# (tests/test_comfyui_browser.py): at most ~2000 x 1000 canvas units, or the fitted zoom falls below
# the frontend's low-quality threshold (8/14 = 0.57) and node text and notes are not drawn. Above
# each node the frontend draws its 30-unit title bar and, above that, a 22-unit badge naming the
# pack; a group's title bar (font_size 24) is 34 units high and must stay clear of both.
STACK_GAP = 70  # between a node's bottom and the top (pos) of the node under it
ROW_Y = 300  # top of the first row of nodes under the read-me note (train-and-generate graphs)
GROUP_Y = ROW_Y - 90
TOP_Y = 320  # the same for the other graphs, whose note is taller


TLORA_H = 460  # Train Temporal LoRA with its snapshot widgets
GRID_TITLE = "Snapshots: step and motion score"


def _train_and_generate(w: Workflow, *, model: dict, video: dict, appearance: str, full: str, target: str,
                        absorber: dict, temporal: dict, sample: dict, save_prefix: str, video_prefix: str,
                        fps: float, snapshot_grid: bool = False) -> dict[str, int]:
    ids: dict[str, int] = {}
    ids["model"] = w.add("LoadModelScopeT2V", (0, ROW_Y), model, size=(320, 130))
    ids["video"] = w.add("LoadReferenceVideo", (0, w.below(ids["model"])), video, size=(320, 300))
    ids["preview"] = w.add("PreviewImage", (0, w.below(ids["video"])), size=(320, 90), title="Reference frames")
    w.link(ids["video"], 0, ids["preview"], "images")
    ids["absorber"] = w.add("TrainAppearanceAbsorber", (380, ROW_Y), {"caption": appearance, **absorber},
                            size=(360, 400))
    w.link(ids["model"], 0, ids["absorber"], "model")
    w.link(ids["video"], 0, ids["absorber"], "frames")
    ids["tlora"] = w.add("TrainTemporalLoRA", (800, ROW_Y), {"caption": full, **temporal}, size=(360, TLORA_H))
    w.link(ids["model"], 0, ids["tlora"], "model")
    w.link(ids["video"], 0, ids["tlora"], "frames")
    w.link(ids["absorber"], 0, ids["tlora"], "absorber")
    ids["save"] = w.add("SaveCAVAdapter", (800, w.below(ids["tlora"])), {"filename_prefix": save_prefix},
                        size=(360, 90))
    w.link(ids["tlora"], 0, ids["save"], "adapter")
    ids["apply"] = w.add("ApplyTemporalLoRA", (1220, ROW_Y), {"strength": 1.0}, size=(300, 130))
    w.link(ids["model"], 0, ids["apply"], "model")
    w.link(ids["tlora"], 0, ids["apply"], "temporal_lora")
    ids["sampler"] = w.add("ModelScopeT2VSampler", (1220, w.below(ids["apply"])), {"prompt": target, **sample},
                           size=(320, 420))
    w.link(ids["apply"], 0, ids["sampler"], "model")
    _video_out(w, (ids["sampler"], 0), 1580, ROW_Y, video_prefix, fps, save_size=(300, 330))
    if snapshot_grid:  # under the saved video: the snapshots to compare it with
        below = w.below(next(n["id"] for n in w.nodes if n["type"] == "SaveVideo"))
        ids["grid"] = w.add("PreviewImage", (1580, below), size=(300, 90), title=GRID_TITLE)
        w.link(ids["tlora"], 1, ids["grid"], "images")
    w.group("Stage 1: appearance absorber", (360, GROUP_Y, 400, 510), "#88a")
    w.group("Stage 2: temporal LoRA (the motion)", (780, GROUP_Y, 400, TLORA_H + 270), "#8a8")
    w.group("Generate with the learned motion", (1200, GROUP_Y, 700, 730), "#a88")
    return ids


def toy_end_to_end(infos) -> Workflow:
    w = Workflow("Customize-A-Video: toy model end to end", infos)
    w.note(
        "Customize-A-Video on the tiny toy model that ships with the pack (32x32 px, 16 frames): runs on a CPU "
        "in about five minutes.\n\n"
        "1. Load Reference Video picks a bundled clip: 'circle' is a red circle moving in a circle.\n"
        "2. Train Appearance Absorber learns how the clip LOOKS from its frames (appearance caption, no "
        "motion words).\n"
        "3. Train Temporal LoRA learns how it MOVES (full caption, with the motion).\n"
        "4. The sampler applies only the T-LoRA and draws a NEW subject with the same motion.\n\n"
        "Try: another clip (zigzag = 'a red square moving in a zigzag on a black background', bounce = 'a red "
        "circle bouncing on a black background'; change both captions to match), another prompt for the "
        "sampler (colors: red green blue yellow magenta cyan white; shapes: circle square triangle; "
        "backgrounds: black gray), or the T-LoRA strength. Changing only the sampler or the strength does not "
        "retrain: ComfyUI reuses the trained LoRA.\n\n"
        "The T-LoRA is saved to output/loras/cav/ (Load T-LoRA / Absorber lists it as [output]), and every "
        f"{TOY_SNAPSHOT_EVERY} steps a snapshot to output/loras/cav/snapshots/: the grid at the bottom right "
        "shows each one's validation sample and motion score (workflow 07 picks one).",
        (0, 30), (1160, 170), "Read me")
    _train_and_generate(
        w, model={"model": "toy (embedded)"}, video={"video": "circle"},
        appearance=TOY_APPEARANCE, full=TOY_FULL, target=TOY_TARGET,
        absorber={"steps": TOY_STEPS["absorber"]}, temporal=TOY_SNAPSHOTS,
        sample={"steps": TOY_STEPS["sample"], "cfg": 7.5, "seed": 0},
        save_prefix="cav/toy_circle_tlora", video_prefix="cav/toy_circle", fps=8.0, snapshot_grid=True)
    return w


MS_MODEL = "text-to-video-ms-1.7b"


def modelscope_train_and_generate(infos) -> Workflow:
    w = Workflow("Customize-A-Video: ModelScope T2V, train a motion and generate", infos)
    w.note(
        "Same graph as the toy workflow, for a real ModelScope-style model. SET BEFORE QUEUEING:\n\n"
        "- Load ModelScope T2V: put the diffusers folder of damo-vilab/text-to-video-ms-1.7b (or zeroscope_v2_576w) "
        "under ComfyUI/models/diffusers/ (the folder that holds model_index.json) and pick it in 'model', or "
        "paste its full path into 'path'. A GPU is strongly advised (dtype auto = fp16).\n"
        "- Load Reference Video: upload your clip with its upload button (or connect Load Video). 16 frames at "
        "8 fps, resized to 256x256 for text-to-video-ms-1.7b.\n"
        "- Captions: appearance caption = what is in the clip WITHOUT the motion ('a man in a red jacket in a "
        "park'); full caption = with the motion ('a man in a red jacket doing a backflip in a park').\n"
        "- Sampler prompt: the new subject/scene with the same motion ('a bear doing a backflip in a forest').\n\n"
        "Widgets left at 0 / -1 / default take the real-model defaults (docs/DEFAULTS.md), which follow the "
        "paper and MotionDirector (T-LoRA rank 4, S-LoRA rank 1, lr 5e-4, 300 T-LoRA steps, 30 sampling steps). "
        "recolor is off: it was measured on the toy model only, and would train on hue-rotated footage. The "
        "validation prompt previews the motion while it trains; a snapshot is saved every 100 steps "
        "(output/loras/cav/snapshots/), scored in the grid at the bottom right.",
        (0, 30), (1160, 170), "Read me: set the model, the video and the captions")
    _train_and_generate(
        w, model={"model": MS_MODEL}, video={"video": "my_reference.mp4", "width": 256, "height": 256},
        appearance="a man in a red jacket in a park", full="a man in a red jacket doing a backflip in a park",
        target="a bear doing a backflip in a forest",
        absorber={},
        temporal={"recolor": "off", "validation_prompt": "a bear doing a backflip in a forest",
                  "validate_every": 100, "snapshot_every": 100, "snapshot_prefix": "cav/snapshots/my_motion"},
        sample={"seed": 0, "width": 256, "height": 256, "negative_prompt": "blurry, low quality, watermark, text"},
        save_prefix="cav/my_motion_tlora", video_prefix="cav/my_motion", fps=8.0, snapshot_grid=True)
    return w


def combine_two_temporal_loras(infos) -> Workflow:
    w = Workflow("Customize-A-Video: two T-LoRAs combined", infos)
    w.note(
        "Combines two learned motions by chaining Apply Temporal LoRA nodes (each returns a new model; the "
        "loaded model is never changed, so other branches can use it without the LoRAs).\n\n"
        "SET: the two T-LoRA files. Make them with the toy workflow: run it once with the 'circle' clip "
        "(saves cav/toy_circle_tlora_00001) and once with 'zigzag' (change the save prefix to "
        "cav/toy_zigzag_tlora and the captions), then press R to refresh the lists. Balance the two "
        "strengths (about 0.5-0.8 each). For a real model, switch Load ModelScope T2V to it and use "
        "T-LoRAs trained on that model.",
        (40, 20), (760, 220), "Read me")
    m = w.add("LoadModelScopeT2V", (40, TOP_Y), {"model": "toy (embedded)"}, size=(320, 130))
    a = w.add("LoadCAVAdapter", (40, w.below(m)), {"lora_name": "cav/toy_circle_tlora_00001.safetensors [output]"},
              size=(360, 90), title="T-LoRA 1 (circle)")
    b = w.add("LoadCAVAdapter", (40, w.below(a)), {"lora_name": "cav/toy_zigzag_tlora_00001.safetensors [output]"},
              size=(360, 90), title="T-LoRA 2 (zigzag)")
    ap1 = w.add("ApplyTemporalLoRA", (460, TOP_Y), {"strength": 0.7}, size=(300, 130))
    w.link(m, 0, ap1, "model")
    w.link(a, 0, ap1, "temporal_lora")
    ap2 = w.add("ApplyTemporalLoRA", (460, w.below(ap1)), {"strength": 0.7}, size=(300, 130))
    w.link(ap1, 0, ap2, "model")
    w.link(b, 0, ap2, "temporal_lora")
    s = w.add("ModelScopeT2VSampler", (820, TOP_Y),
              {"prompt": "a yellow triangle moving on a gray background", "steps": 25, "seed": 0}, size=(360, 520))
    w.link(ap2, 0, s, "model")
    _video_out(w, (s, 0), 1240, TOP_Y, "cav/two_motions")
    return w


def temporal_plus_style_lora(infos) -> Workflow:
    w = Workflow("Customize-A-Video: T-LoRA + SD2.1 style LoRA", infos)
    w.note(
        "A learned motion (T-LoRA, temporal layers) stacked with a style LoRA made for Stable Diffusion 2.1 "
        "(spatial layers: ModelScope's spatial layers have the same names and sizes as SD 2.1's UNet, so SD2.1 "
        "LoRAs in kohya/A1111 or diffusers format load as spatial LoRAs).\n\n"
        "SET: the model (ModelScope text-to-video-ms-1.7b under models/diffusers, or a path); the T-LoRA file "
        "(trained on that model, e.g. with the ModelScope workflow); an SD 2.1 style LoRA (.safetensors) in "
        "ComfyUI/models/loras; and the prompt (include the style's trigger words). SD 1.x / SDXL LoRAs do not "
        "fit (other layer sizes) and are refused with a clear message.",
        (40, 20), (760, 220), "Read me: set the model and both LoRA files")
    m = w.add("LoadModelScopeT2V", (40, TOP_Y), {"model": MS_MODEL}, size=(320, 130))
    t = w.add("LoadCAVAdapter", (40, w.below(m)), {"lora_name": "cav/my_motion_tlora_00001.safetensors [output]"},
              size=(360, 90), title="Load T-LoRA")
    ap = w.add("ApplyTemporalLoRA", (460, TOP_Y), {"strength": 1.0}, size=(300, 130))
    w.link(m, 0, ap, "model")
    w.link(t, 0, ap, "temporal_lora")
    st = w.add("ApplySpatialLoRA", (460, w.below(ap)), {"lora_name": "sd21_style_lora.safetensors", "strength": 0.8},
               size=(360, 130))
    w.link(ap, 0, st, "model")
    s = w.add("ModelScopeT2VSampler", (880, TOP_Y),
              {"prompt": "a bear doing a backflip in a forest, watercolor painting", "steps": 30, "cfg": 9.0,
               "seed": 0, "width": 256, "height": 256}, size=(360, 520))
    w.link(st, 0, s, "model")
    _video_out(w, (s, 0), 1300, TOP_Y, "cav/motion_with_style")
    return w


def ddim_inverted_editing(infos) -> Workflow:
    w = Workflow("Customize-A-Video: DDIM-inverted editing", infos)
    w.note(
        "Edits a clip: DDIM inversion finds the start latents that recreate the reference, and the sampler "
        "starts from them with a new prompt, so layout and motion stay while the content changes.\n\n"
        "init_blend sets how much of the inverted latents is kept (1 = all, 0 = fresh noise; 0.5 is "
        "MotionDirector's 'noise prior'). Use the ddim scheduler and the same steps for inversion and sampling; "
        "the sampler takes the size from the latents (width/height 0). Runs on the toy model as is; to add a "
        "learned motion, put an Apply Temporal LoRA between the model and the sampler. For a real model, set "
        "the model and a reference video with width/height 256.",
        (40, 20), (760, 220), "Read me")
    m = w.add("LoadModelScopeT2V", (40, TOP_Y), {"model": "toy (embedded)"}, size=(320, 130))
    v = w.add("LoadReferenceVideo", (40, w.below(m)), {"video": "circle"}, size=(320, 300))
    inv = w.add("DDIMInvertVideo", (420, TOP_Y), {"prompt": TOY_FULL, "steps": 25}, size=(360, 220))
    w.link(m, 0, inv, "model")
    w.link(v, 0, inv, "frames")
    s = w.add("ModelScopeT2VSampler", (840, TOP_Y),
              {"prompt": "a yellow triangle moving in a circle on a gray background", "steps": 25, "seed": 0,
               "init_blend": 0.7}, size=(360, 540))
    w.link(m, 0, s, "model")
    w.link(inv, 0, s, "init_latent")
    _video_out(w, (s, 0), 1260, TOP_Y, "cav/edited")
    return w


def spatial_lora_as_absorber(infos) -> Workflow:
    w = Workflow("Customize-A-Video: third-party spatial LoRA as the absorber", infos)
    w.note(
        "Skips Stage 1: a spatial LoRA you already have (e.g. an SD 2.1 LoRA of the subject in the reference, "
        "kohya/A1111 or diffusers format) is the appearance absorber while the T-LoRA trains, so the T-LoRA "
        "learns the motion and not the look.\n\n"
        "SET: the model (ModelScope under models/diffusers or a path), the reference video (ComfyUI/input, "
        "256x256), the LoRA file in ComfyUI/models/loras ('foreign_role' spatial), the caption (with the LoRA's "
        "trigger words if it has any) and the sampler prompt. The T-LoRA is saved to output/loras/cav/.",
        (40, 20), (760, 220), "Read me: set the model, video, LoRA and captions")
    m = w.add("LoadModelScopeT2V", (40, TOP_Y), {"model": MS_MODEL}, size=(320, 130))
    v = w.add("LoadReferenceVideo", (40, w.below(m)), {"video": "my_reference.mp4", "width": 256, "height": 256},
              size=(320, 300))
    a = w.add("LoadCAVAdapter", (40, w.below(v)), {"lora_name": "my_subject_sd21_lora.safetensors",
                                                  "foreign_role": "spatial"}, size=(360, 100),
              title="Spatial LoRA as absorber")
    w.link(m, 0, a, "model")  # map and check the file against the loaded model
    t = w.add("TrainTemporalLoRA", (460, TOP_Y),
              {"caption": "a man in a red jacket doing a backflip in a park", "recolor": "off",
               "validation_prompt": "a bear doing a backflip in a forest", "validate_every": 100},
              size=(360, TLORA_H))
    w.link(m, 0, t, "model")
    w.link(v, 0, t, "frames")
    w.link(a, 0, t, "absorber")
    sv = w.add("SaveCAVAdapter", (460, w.below(t)), {"filename_prefix": "cav/my_motion_tlora"}, size=(360, 90))
    w.link(t, 0, sv, "adapter")
    ap = w.add("ApplyTemporalLoRA", (880, TOP_Y), {"strength": 1.0}, size=(300, 130))
    w.link(m, 0, ap, "model")
    w.link(t, 0, ap, "temporal_lora")
    s = w.add("ModelScopeT2VSampler", (880, w.below(ap)),
              {"prompt": "a bear doing a backflip in a forest", "steps": 30, "cfg": 9.0, "seed": 0,
               "width": 256, "height": 256}, size=(360, 420))
    w.link(ap, 0, s, "model")
    _video_out(w, (s, 0), 1300, TOP_Y, "cav/my_motion")
    return w


def pick_the_best_snapshot(infos) -> Workflow:
    w = Workflow("Customize-A-Video: pick the best snapshot", infos)
    w.note(
        "The best number of training steps differs from one reference video to the next. Train Temporal LoRA "
        f"saves a snapshot every {TOY_SNAPSHOT_EVERY} steps and samples the validation prompt with each (same "
        "seed and noise), scored against the reference with Compare Motion's score (1 = same motion; it "
        "measures motion only, judge the looks yourself).\n\n"
        "1. Queue once: it trains and shows the snapshot grid (reference on top, one row per snapshot with "
        "its step and motion score). The lower half reports the snapshot file missing until it exists.\n"
        "2. Press R, then in 'Pick a snapshot' choose the row you like best (e.g. the highest score whose "
        "sample also looks right): cav/snapshots/toy_circle_00001_stepNNNNN [output].\n"
        "3. Queue again: training is reused (nothing changed above it); the picked snapshot is applied, a new "
        "video sampled and its motion scored against the reference.",
        (0, 30), (1500, 200), "Read me: train, look at the grid, pick a snapshot")
    m = w.add("LoadModelScopeT2V", (0, ROW_Y + 30), {"model": "toy (embedded)"}, size=(320, 130))
    v = w.add("LoadReferenceVideo", (0, w.below(m)), {"video": "circle"}, size=(320, 330))
    w.link(m, 0, v, "model")
    t = w.add("TrainTemporalLoRA", (380, ROW_Y + 30), {"caption": TOY_FULL, **TOY_SNAPSHOTS}, size=(360, TLORA_H))
    w.link(m, 0, t, "model")
    w.link(v, 0, t, "frames")
    grid = w.add("PreviewImage", (380, w.below(t)), size=(360, 90), title=GRID_TITLE)
    w.link(t, 1, grid, "images")
    pick = w.add("LoadCAVAdapter", (800, ROW_Y + 30),
                 {"lora_name": "cav/snapshots/toy_circle_00001_step00500.safetensors [output]"}, size=(360, 100),
                 title="Pick a snapshot")
    w.link(m, 0, pick, "model")
    ap = w.add("ApplyTemporalLoRA", (800, w.below(pick)), {"strength": 1.0}, size=(300, 130))
    w.link(m, 0, ap, "model")
    w.link(pick, 0, ap, "temporal_lora")
    s = w.add("ModelScopeT2VSampler", (1200, ROW_Y + 30), {"prompt": TOY_TARGET, "steps": TOY_STEPS["sample"],
                                                           "seed": 0}, size=(320, 420))
    w.link(ap, 0, s, "model")
    cmp_ = w.add("CompareMotion", (1580, ROW_Y + 30), size=(300, 110))
    w.link(v, 0, cmp_, "reference")
    w.link(s, 0, cmp_, "generated")
    _video_out(w, (s, 0), 1580, w.below(cmp_), "cav/picked_snapshot", save_size=(300, 330))
    w.group("Train with snapshots", (360, GROUP_Y + 30, 400, TLORA_H + 270), "#8a8")
    w.group("Apply the picked snapshot and score its motion", (780, GROUP_Y + 30, 1120, 760), "#a88")
    return w


WORKFLOWS_BUILT = {
    "01_toy_end_to_end.json": toy_end_to_end,
    "02_modelscope_train_and_generate.json": modelscope_train_and_generate,
    "03_two_temporal_loras.json": combine_two_temporal_loras,
    "04_temporal_lora_with_style_lora.json": temporal_plus_style_lora,
    "05_ddim_inverted_editing.json": ddim_inverted_editing,
    "06_spatial_lora_as_absorber.json": spatial_lora_as_absorber,
    "07_pick_the_best_snapshot.json": pick_the_best_snapshot,
}


def build_workflows() -> dict[str, Workflow]:
    infos = node_infos()
    return {name: make(infos) for name, make in WORKFLOWS_BUILT.items()}


def build_all() -> dict[str, str]:
    return {name: json.dumps(w.to_json(), indent=1) + "\n" for name, w in build_workflows().items()}


if __name__ == "__main__":
    WORKFLOWS.mkdir(exist_ok=True)
    for name, text in build_all().items():
        (WORKFLOWS / name).write_text(text)
        print("wrote", WORKFLOWS / name)
