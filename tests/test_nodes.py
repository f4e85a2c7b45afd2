"""Every node called directly (no ComfyUI server), on the toy model (or, before the
pretrained toy model is in the checkout, the same architecture with random weights).

The pack is imported the way ComfyUI imports it (its folder's __init__.py as a package);
outside ComfyUI the nodes use the small V3 stand-in ``tests/comfy_standin.py`` (put into
``sys.modules``), and the ComfyUI hooks of ``nodes/comfy_bridge.py`` are exercised with fake
``comfy`` modules.
The real server is tested in test_comfyui_server.py (``pytest -m comfyui``)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from comfy_helpers import REPO, WORKFLOWS, check_ui_workflow_format, load_pack, node_info_from_schema, ui_to_api

pack = load_pack()
nodes = sys.modules[pack.__name__ + ".nodes"]
bridge = sys.modules[pack.__name__ + ".nodes.comfy_bridge"]
N = {cls.define_schema().node_id: cls for cls in pack.NODES}
RANDOM_MODEL = "tiny-random-t2v"
CAPTION = "a red circle on a black background"
FULL = "a red circle moving in a circle on a black background"


def run(node: str, **inputs):
    """Call a node's execute like ComfyUI does (keyword arguments, inside
    ``torch.inference_mode()`` as ComfyUI's executor runs every node), return its outputs."""
    with torch.inference_mode():
        out = N[node].execute(**inputs)
    return out.args


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def comfy_root(tmp_path_factory):
    """A ComfyUI-like folder layout for the bridge's standalone mode."""
    root = tmp_path_factory.mktemp("comfy_root")
    for sub in ("models/diffusers", "models/loras", "input", "output"):
        (root / sub).mkdir(parents=True)
    old = bridge.STANDALONE_ROOT
    bridge.STANDALONE_ROOT = root
    yield root
    bridge.STANDALONE_ROOT = old


@pytest.fixture(scope="module")
def model_choice(comfy_root):
    """('toy (embedded)', '') when the pretrained toy model is present, else a random model
    of the same architecture saved under models/diffusers (nested, to test the walk)."""
    from cav_core.toyworld import toy_model_path

    if toy_model_path() is not None:
        return bridge.TOY_MODEL
    from cav_core.model import save_t2v
    from cav_core.toyworld.model_config import build_random_toy

    save_t2v(build_random_toy(seed=0).base, comfy_root / "models" / "diffusers" / "test" / RANDOM_MODEL)
    return f"test/{RANDOM_MODEL}"


@pytest.fixture(scope="module")
def model(model_choice):
    (handle,) = run("LoadModelScopeT2V", model=model_choice, device="cpu", dtype="auto")
    return handle


@pytest.fixture(scope="module")
def frames(comfy_root):
    frames, fps, count = run("LoadReferenceVideo", video="circle", num_frames=8, fps=8.0, start=0.0, width=0, height=0)
    assert fps == 8.0 and count == 8
    return frames


@pytest.fixture(scope="module")
def trained(model, frames):
    """A few steps of each stage (the nodes' wiring is under test here, not quality)."""
    frames_before = frames.clone()
    absorber, *_ = run("TrainAppearanceAbsorber", model=model, frames=frames, caption=CAPTION, kind="both", steps=2,
                      lora_lr=1e-3, ti_lr=5e-3, rank=1, num_tokens=2, crop_min=0.5, crop_max=1.0, seed=0)
    tlora, *_ = run("TrainTemporalLoRA", model=model, frames=frames, caption=FULL, steps=2, lr=1e-3, rank=4, seed=0,
                   absorber=absorber)
    assert torch.equal(frames, frames_before), "training changed its input frames"
    assert not model.loras and not model.tokens and not model.bypass_temporal
    return absorber, tlora


class Interrupted(Exception):
    pass


@pytest.fixture
def fake_comfy(monkeypatch):
    """Minimal stand-ins of comfy.utils / comfy.model_management / comfy.cli_args, recording
    progress-bar updates; ``state['interrupt_after']`` makes the interrupt check raise."""
    state = {"updates": [], "bars": 0, "checks": 0, "interrupt_after": None}

    class ProgressBar:
        def __init__(self, total, node_id=None):
            state["bars"] += 1
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            state["updates"].append((value, total, preview))

    def throw_exception_if_processing_interrupted():
        state["checks"] += 1
        if state["interrupt_after"] is not None and state["checks"] > state["interrupt_after"]:
            raise Interrupted()

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    cli = types.ModuleType("comfy.cli_args")
    cli.args = types.SimpleNamespace(preview_size=512)
    comfy.utils, comfy.model_management, comfy.cli_args = utils, mm, cli
    for name, mod in {"comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm,
                      "comfy.cli_args": cli}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return state


# --------------------------------------------------------------------------- schemas and workflows


def test_every_node_is_documented():
    assert len(N) == 13
    for name, cls in N.items():
        s = cls.define_schema()
        assert s.category == "Customize-A-Video" and s.display_name and len(s.description) > 60, name
        for i in s.inputs:
            assert i.tooltip and len(i.tooltip) > 10, f"{name}.{i.id} has no tooltip"
        for o in s.outputs:
            assert o.tooltip and o.display_name, f"{name} output has no name/tooltip"
    assert N["SaveCAVAdapter"].define_schema().is_output_node
    assert N["CompareMotion"].define_schema().is_output_node  # its score shows without a consumer


def test_pack_import_defers_heavy_libraries():
    code = ("import sys, time; sys.path.insert(0, 'tests'); t = time.time(); import comfy_helpers; "
            "comfy_helpers.load_pack(); print(round(time.time() - t, 3)); "
            "print(sorted(m for m in ('diffusers', 'peft', 'transformers', 'av', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    seconds, heavy = out.stdout.strip().splitlines()
    assert heavy == "[]", heavy
    assert float(seconds) < 1.0


def test_workflow_files_are_built_from_the_node_schemas():
    from workflow_builder import build_all

    built = build_all()
    assert sorted(built) == sorted(p.name for p in WORKFLOWS.glob("*.json")), \
        "run `python tests/workflow_builder.py`"
    for name, text in built.items():
        assert (WORKFLOWS / name).read_text() == text, f"{name} is stale: run `python tests/workflow_builder.py`"


def test_workflows_convert_with_the_local_schemas():
    from workflow_builder import node_infos

    infos = node_infos()
    for path in sorted(WORKFLOWS.glob("*.json")):
        check_ui_workflow_format(json.loads(path.read_text()))
        prompt = ui_to_api(json.loads(path.read_text()), infos, check_combos={"model", "video", "lora_name",
                                                                              "format", "codec"})
        types_ = {n["class_type"] for n in prompt.values()}
        assert "SaveVideo" in types_ or "SaveCAVAdapter" in types_, path.name


def test_workflows_mean_what_the_builder_means():
    """Each file, read positionally the way the frontend reads widgets_values (a control widget
    after every seed), gives the API prompt the builder means by widget name. The browser test
    (tests/test_comfyui_browser.py) checks the same against the real frontend."""
    from workflow_builder import build_workflows, node_infos

    infos = node_infos()
    for name, w in build_workflows().items():
        got = ui_to_api(json.loads((WORKFLOWS / name).read_text()), infos)
        assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in got.items()} == w.api_prompt()
        for nid, meant in w.intent.items():  # every seed's control widget is "fixed", so nothing retrains
            if "seed" in meant:
                assert meant["control_after_generate"] == "fixed", (name, nid)


def test_control_widget_rule_is_the_frontends():
    from comfy_helpers import has_control_widget

    assert has_control_widget("seed", "INT", {})  # legacy rule: any INT named seed / noise_seed
    assert has_control_widget("noise_seed", "INT", {})
    assert not has_control_widget("seed", "INT", {"control_after_generate": False})
    assert has_control_widget("variant", "INT", {"control_after_generate": True})
    assert not has_control_widget("steps", "INT", {})
    assert has_control_widget("sampler", "COMBO", {"control_after_generate": True})
    assert not has_control_widget("seed", "COMBO", {})
    assert not has_control_widget("seed", "FLOAT", {})
    assert not has_control_widget("seed", "INT", {"forceInput": True})
    # a training seed (no control_after_generate in its schema) gets one, as the issue found
    info = node_info_from_schema(N["TrainTemporalLoRA"])
    assert has_control_widget("seed", *info["input"]["required"]["seed"])


def test_converter_rejects_unknown_nodes_and_inputs():
    from workflow_builder import node_infos

    infos = node_infos()
    wf = json.loads((WORKFLOWS / "01_toy_end_to_end.json").read_text())
    bad = json.loads(json.dumps(wf))
    bad["nodes"][1]["type"] = "NoSuchNode"
    with pytest.raises(ValueError, match="unknown node type"):
        ui_to_api(bad, infos)
    bad = json.loads(json.dumps(wf))
    node = next(n for n in bad["nodes"] if n["type"] == "TrainTemporalLoRA")
    node["inputs"][0]["name"] = "no_such_input"
    with pytest.raises(ValueError, match="no such input"):
        ui_to_api(bad, infos)
    bad = json.loads(json.dumps(wf))
    node = next(n for n in bad["nodes"] if n["type"] == "ModelScopeT2VSampler")
    node["widgets_values"].append(1)
    with pytest.raises(ValueError, match="widget values"):
        ui_to_api(bad, infos)


def test_schema_info_has_types_for_every_input():
    info = node_info_from_schema(N["ModelScopeT2VSampler"])
    assert info["input"]["required"]["seed"][1]["control_after_generate"] is True
    assert info["input"]["optional"]["init_latent"][0] == "LATENT"
    assert info["output"] == ["IMAGE"]


# --------------------------------------------------------------------------- loaders


def test_load_model_lists_walks_and_resolves(comfy_root, model_choice, model):
    opts = N["LoadModelScopeT2V"].define_schema().inputs[0].options
    assert opts[0] == bridge.TOY_MODEL
    if model_choice != bridge.TOY_MODEL:
        assert model_choice in opts  # found by walking models/diffusers for model_index.json
    assert model.base.device.type == "cpu" and model.base.dtype == torch.float32
    assert "UNet3DConditionModel" in model.describe()
    # an explicit path wins over the list
    folder = bridge.resolve_model(model_choice)
    (again,) = run("LoadModelScopeT2V", model="nothing-here", device="cpu", dtype="fp32", path=str(folder))
    assert again.model_id == model.model_id
    from cav_core.errors import CavError

    with pytest.raises(CavError, match="not found"):
        run("LoadModelScopeT2V", model="nothing-here", device="cpu", dtype="auto")
    with pytest.raises(CavError, match="model_index.json"):
        run("LoadModelScopeT2V", model=bridge.TOY_MODEL, device="cpu", dtype="auto", path=str(comfy_root))


def test_default_device_is_comfyuis(fake_comfy):
    assert bridge.device("default") == torch.device("cpu")  # from comfy.model_management
    assert bridge.device("cuda") == "cuda"


def test_load_reference_video_bundled_path_and_size(comfy_root, frames):
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    opts = N["LoadReferenceVideo"].define_schema().inputs[0].options
    assert {"circle", "zigzag", "bounce"} <= set(opts)
    clip = bridge.bundled_clips()["zigzag"]
    (comfy_root / "input" / "mine.mp4").write_bytes(clip.read_bytes())
    assert "mine.mp4" in N["LoadReferenceVideo"].define_schema().inputs[0].options
    by_name, fps, count = run("LoadReferenceVideo", video="mine.mp4", num_frames=4, fps=4.0, start=0.5, width=16,
                              height=24)
    assert by_name.shape == (4, 24, 16, 3) and fps == 4.0 and count == 4
    by_path, _, _ = run("LoadReferenceVideo", video="circle", num_frames=4, fps=4.0, start=0.5, width=16, height=24,
                        path=str(clip))
    assert torch.equal(by_name, by_path)
    # re-read only when the file changes
    fp = N["LoadReferenceVideo"].fingerprint_inputs
    stamp = fp(video="mine.mp4", num_frames=4)
    assert stamp == fp(video="mine.mp4", num_frames=4)
    (comfy_root / "input" / "mine.mp4").write_bytes(bridge.bundled_clips()["bounce"].read_bytes())
    assert fp(video="mine.mp4") != stamp
    from cav_core.errors import CavError

    with pytest.raises(CavError):
        run("LoadReferenceVideo", video="nope.mp4", num_frames=4, fps=8.0, start=0.0, width=0, height=0)


class VideoInput:
    """Stands for comfy_api's abstract VideoInput (same class name): its get_stream_source
    would re-encode the frames (comfy_api/latest/_input/video_types.py), so the node must not
    ask it; a subclass that has its own (VideoFromFile) streams the file."""

    def get_stream_source(self):
        raise AssertionError("the base class's re-encoding get_stream_source was asked")

    def get_components(self):
        raise NotImplementedError


class FakeVideoFromFile(VideoInput):
    def __init__(self, source):
        self.source, self.components_asked = source, False

    def get_stream_source(self):
        if hasattr(self.source, "seek"):
            self.source.seek(0)
        return self.source

    def get_components(self):
        self.components_asked = True
        raise AssertionError("a VIDEO with a file must be decoded from it, not from its components")


class FakeVideoFromComponents(VideoInput):
    def __init__(self, images, frame_rate):
        self.images, self.frame_rate = images, frame_rate

    def get_components(self):
        return types.SimpleNamespace(images=self.images, frame_rate=self.frame_rate, audio=None, metadata=None)


CLIP_ARGS = dict(video="nope.mp4", num_frames=5, fps=4.0, start=0.5, width=16, height=24, fit="pad")


def test_load_reference_video_video_input_from_a_file_or_stream(comfy_root):
    import io

    clip = bridge.bundled_clips()["zigzag"]
    by_path, fps, count = run("LoadReferenceVideo", **{**CLIP_ARGS, "video": "circle"}, path=str(clip))
    assert by_path.shape == (5, 24, 16, 3) and fps == 4.0 and count == 5
    for source in (str(clip), clip, io.BytesIO(clip.read_bytes())):
        fake = FakeVideoFromFile(source)
        frames, fps, count = run("LoadReferenceVideo", **CLIP_ARGS, video_input=fake)  # 'video' names no file
        assert torch.equal(frames, by_path) and fps == 4.0 and count == 5 and not fake.components_asked
    # the VIDEO wins over 'path' too, and its input (the node's upstream) is left as it was
    stream = io.BytesIO(clip.read_bytes())
    before = stream.getvalue()
    frames, _, _ = run("LoadReferenceVideo", **CLIP_ARGS, path=str(bridge.bundled_clips()["circle"]),
                       video_input=FakeVideoFromFile(stream))
    assert torch.equal(frames, by_path) and stream.getvalue() == before


def test_load_reference_video_video_input_from_components(comfy_root):
    from fractions import Fraction

    from cav_core.errors import InputError
    from video_reader import read_video

    clip = bridge.bundled_clips()["zigzag"]
    by_path, _, _ = run("LoadReferenceVideo", **{**CLIP_ARGS, "video": "circle"}, path=str(clip))
    decoded, rate = read_video(clip)  # 16 frames at 8 fps, as Load Video's get_components gives them
    fake = FakeVideoFromComponents(torch.from_numpy(decoded), Fraction(rate).limit_denominator(1001))
    frames, fps, count = run("LoadReferenceVideo", **CLIP_ARGS, video_input=fake)
    # the same source frames picked (by time), fit the same way
    assert frames.shape == by_path.shape and count == 5 and fps == 4.0
    assert torch.allclose(frames, by_path, atol=1e-6)
    # frames k/8 s apart read at 8 fps from 0 s: each frame once, in order
    same, _, _ = run("LoadReferenceVideo", **{**CLIP_ARGS, "num_frames": 16, "fps": 8.0, "start": 0.0,
                                              "width": 32, "height": 32}, video_input=fake)
    assert torch.allclose(same, torch.from_numpy(decoded), atol=1e-6)
    # too short: the message names the input and the widgets that fix it; hold_last_frame holds
    with pytest.raises(InputError, match=r"video from video_input \(VIDEO\) is too short: it lasts 2\.00 s.*"
                                         r"hold_last_frame"):
        run("LoadReferenceVideo", **{**CLIP_ARGS, "num_frames": 20}, video_input=fake)
    held, _, count = run("LoadReferenceVideo", **{**CLIP_ARGS, "num_frames": 20}, hold_last_frame=True,
                         video_input=fake)
    assert count == 20 and torch.equal(held[-1], held[-3])


def test_load_reference_video_upload_widget_and_validation(comfy_root):
    from comfy_helpers import UPLOAD_WIDGET, frontend_widgets

    cls = N["LoadReferenceVideo"]
    info = node_info_from_schema(cls)
    assert info["input"]["required"]["video"][1]["video_upload"] is True  # what core Load Video declares
    assert frontend_widgets(info)[-1] == (UPLOAD_WIDGET, UPLOAD_WIDGET)
    assert info["output"] == ["IMAGE", "FLOAT", "INT"] and info["input"]["optional"]["video_input"][0] == "VIDEO"
    clip = bridge.bundled_clips()["bounce"]
    (comfy_root / "input" / "pasted").mkdir(exist_ok=True)
    (comfy_root / "input" / "pasted" / "up.mp4").write_bytes(clip.read_bytes())  # where a pasted upload lands
    assert cls.validate_inputs(video="pasted/up.mp4", path="", fit="crop", width=0, height=0, input_types={}) is True
    frames, _, _ = run("LoadReferenceVideo", **{**CLIP_ARGS, "video": "pasted/up.mp4"})
    assert frames.shape == (5, 24, 16, 3)
    # a linked VIDEO makes the file widgets irrelevant; a linked model gives the size
    assert cls.validate_inputs(video="nope.mp4", fit="pad", width=0, height=0,
                               input_types={"video_input": "VIDEO", "model": "CAV_T2V_MODEL"}) is True


# --------------------------------------------------------------------------- training


def test_training_nodes_return_adapters(trained, model):
    absorber, tlora = trained
    assert absorber.kind == "absorber" and absorber.lora.role == "spatial" and len(absorber.tokens.tokens) == 2
    assert tlora.kind == "temporal_lora" and tlora.lora.role == "temporal" and tlora.lora.ranks == {4}
    assert tlora.base_model == model.model_id and tlora.info["caption"] == FULL


def test_training_is_deterministic_so_comfyui_caching_is_sound(model, frames):
    kw = dict(model=model, frames=frames, caption=CAPTION, kind="lora", steps=1, lora_lr=1e-3, ti_lr=5e-3, rank=1,
              num_tokens=1, crop_min=0.5, crop_max=1.0, seed=3)
    a, *_ = run("TrainAppearanceAbsorber", **kw)
    b, *_ = run("TrainAppearanceAbsorber", **kw)
    assert a.tokens is None
    for k, v in a.lora.tensors.items():
        assert torch.equal(v, b.lora.tensors[k]), k
    for cls in (N["TrainAppearanceAbsorber"], N["TrainTemporalLoRA"]):
        assert "fingerprint_inputs" not in vars(cls)  # cached on inputs, never forced to re-run


def test_training_reports_progress_with_previews(fake_comfy, model, frames):
    run("TrainTemporalLoRA", model=model, frames=frames, caption=FULL, steps=2, lr=1e-3, rank=2, seed=1,
        validation_prompt="a green square moving in a circle on a gray background", validate_every=2)
    values = [u[0] for u in fake_comfy["updates"]]
    assert values == [1, 2] and fake_comfy["bars"] == 1
    fmt, image, size = fake_comfy["updates"][-1][2]
    assert fmt == "JPEG" and size == 512 and image.width >= 256  # 8 frames of 32 px in a grid, upscaled
    assert fake_comfy["checks"] >= 2


def test_the_recolor_input_reaches_training(fake_comfy, model, frames):
    kw = dict(model=model, frames=frames, caption=FULL, steps=1, lr=1e-3, rank=2, seed=1)
    on, *_ = run("TrainTemporalLoRA", **kw)
    off, *_ = run("TrainTemporalLoRA", recolor=False, **kw)
    # on the toy, rebackground is on by default too: 3 hues x 2 backgrounds, or the clip on both backgrounds
    assert on.info["recolor"] == "on" and len(on.info["trained_captions"]) == 6
    assert off.info["recolor"] == "off" and off.info["trained_captions"] == [FULL, FULL.replace("black", "gray")]


def test_cancel_stops_training_and_leaves_the_model_clean(fake_comfy, model, frames, comfy_root):
    from cav_core.adapters import lora_layers

    fake_comfy["interrupt_after"] = 2
    with pytest.raises(Interrupted):
        run("TrainTemporalLoRA", model=model, frames=frames, caption=FULL, steps=50, lr=1e-3, rank=4, seed=0)
    assert len(fake_comfy["updates"]) == 2  # stopped at the next step
    assert lora_layers(model.base.unet) == [] and all(not p.requires_grad for p in model.base.unet.parameters())
    assert not list((comfy_root / "output").rglob("*.safetensors"))
    fake_comfy["interrupt_after"] = None
    (out,) = run("ModelScopeT2VSampler", **sampler_args(model, steps=1))
    assert out.shape[0] == 8


# --------------------------------------------------------------------------- model handles


def test_apply_nodes_return_new_handles_and_leave_the_input_alone(model, trained):
    absorber, tlora = trained
    (m1,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=1.0)
    (m2,) = run("ApplyTemporalLoRA", model=m1, temporal_lora=tlora, strength=0.5)  # chainable
    (m3,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=0.3)
    assert model.loras == () and len(m1.loras) == 1 and len(m2.loras) == 2
    assert m1.loras[0].strength == 1.0 and m3.loras[0].strength == 0.3 and m2.loras[1].strength == 0.5
    assert m2.base is model.base  # shared weights, no copy
    # by default from t 300 (the toy gate, docs/EXPERIMENTS.md §12), or from the training floor if that is
    # higher, unless the widget says otherwise
    assert m1.loras[0].min_timestep == max(300, tlora.info["min_timestep"]) and tlora.info["min_timestep"] > 0
    (m4,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=1.0, min_timestep=0)
    (m5,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=1.0, min_timestep=-1)
    assert m4.loras[0].min_timestep == 0 and m5.loras[0].min_timestep == m1.loras[0].min_timestep
    # the prompt-branch-only range: library default, a set timestep, never
    (m6,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=1.0, cond_only_from=800)
    (m7,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=1.0, cond_only_from=1000)
    assert m1.loras[0].cond_only_from == 600 and m6.loras[0].cond_only_from == 800
    assert m7.loras[0].cond_only_from is None
    (b,) = run("BypassTemporalLayers", model=m1, enabled=True)
    assert b.bypass_temporal and not m1.bypass_temporal and b.loras == m1.loras
    from cav_core.errors import CavError

    with pytest.raises(CavError, match="not a T-LoRA"):
        run("ApplyTemporalLoRA", model=model, temporal_lora=absorber, strength=1.0)


def test_save_never_overwrites_and_load_keeps_metadata(comfy_root, trained, model):
    absorber, tlora = trained
    ui1 = N["SaveCAVAdapter"].execute(adapter=tlora, filename_prefix="cav/t", save_to="output/loras").ui
    ui2 = N["SaveCAVAdapter"].execute(adapter=tlora, filename_prefix="cav/t", save_to="output/loras").ui
    assert ui1.as_dict()["text"] == ("output/loras/cav/t_00001.safetensors",)  # ui.PreviewText
    assert ui2.as_dict()["text"] == ("output/loras/cav/t_00002.safetensors",)
    N["SaveCAVAdapter"].execute(adapter=absorber, filename_prefix="absorber", save_to="models/loras")
    assert (comfy_root / "models" / "loras" / "absorber_00001.safetensors").is_file()
    names = N["LoadCAVAdapter"].define_schema().inputs[0].options
    assert "absorber_00001.safetensors" in names and "cav/t_00002.safetensors [output]" in names
    (loaded,) = run("LoadCAVAdapter", lora_name="cav/t_00001.safetensors [output]", foreign_role="spatial")
    assert loaded.kind == "temporal_lora" and loaded.info == json.loads(json.dumps(tlora.info))
    assert loaded.base_model == tlora.base_model
    for k, v in tlora.lora.tensors.items():
        assert torch.equal(loaded.lora.tensors[k], v)
    (ab,) = run("LoadCAVAdapter", lora_name="absorber_00001.safetensors", foreign_role="spatial", model=model)
    assert ab.kind == "absorber" and ab.tokens.tokens == absorber.tokens.tokens
    from cav_core.errors import CavError

    with pytest.raises(CavError, match="inside the folder"):
        N["SaveCAVAdapter"].execute(adapter=tlora, filename_prefix="../escape", save_to="output/loras")
    with pytest.raises(CavError, match="not found"):
        run("LoadCAVAdapter", lora_name="missing.safetensors", foreign_role="spatial")


def test_apply_spatial_lora_from_models_loras(comfy_root, model, trained):
    absorber, tlora = trained
    from cav_core.adapter_files import AdapterFile, save_adapter

    save_adapter(comfy_root / "models" / "loras" / "style.safetensors",
                 AdapterFile(kind="spatial_lora", lora=absorber.lora, base_model=model.model_id))
    save_adapter(comfy_root / "models" / "loras" / "motion.safetensors", tlora)
    assert "style.safetensors" in N["ApplySpatialLoRA"].define_schema().inputs[1].options
    (m,) = run("ApplySpatialLoRA", model=model, lora_name="style.safetensors", strength=0.8)
    assert model.loras == () and m.loras[0].lora.role == "spatial" and m.loras[0].strength == 0.8
    from cav_core.errors import CavError

    with pytest.raises(CavError, match="not a spatial LoRA"):
        run("ApplySpatialLoRA", model=model, lora_name="motion.safetensors", strength=1.0)


def test_apply_spatial_lora_converts_a_kohya_file(comfy_root, model):
    """A third-party (kohya/A1111-style) spatial LoRA made for this model's layer names."""
    from safetensors.torch import save_file

    from cav_core.layers import role_modules

    unet = model.base.unet
    tensors = {}
    for name in role_modules(unet, "spatial")[:4]:
        layer = unet.get_submodule(name)
        key = "lora_unet_" + name.replace(".", "_")
        tensors[key + ".lora_down.weight"] = torch.randn(2, layer.in_features) * 0.01
        tensors[key + ".lora_up.weight"] = torch.randn(layer.out_features, 2) * 0.01
        tensors[key + ".alpha"] = torch.tensor(2.0)
    save_file(tensors, str(comfy_root / "models" / "loras" / "kohya_style.safetensors"))
    (m,) = run("ApplySpatialLoRA", model=model, lora_name="kohya_style.safetensors", strength=1.0)
    assert len(m.loras[0].lora.modules) == 4
    (a,) = run("LoadCAVAdapter", lora_name="kohya_style.safetensors", foreign_role="spatial", model=model)
    assert a.lora.role == "spatial" and a.tokens is None  # usable as the absorber input of Train Temporal LoRA


# --------------------------------------------------------------------------- sampling


def sampler_args(model, **kw):
    args = dict(model=model, prompt="a green square moving in a circle on a gray background", negative_prompt="",
                steps=2, cfg=7.5, seed=0, num_frames=8, width=0, height=0, scheduler="ddim", init_blend=1.0,
                preview=False)
    return {**args, **kw}


def test_sampler_returns_image_frames_and_never_mutates_the_base(model, trained):
    _, tlora = trained
    (base1,) = run("ModelScopeT2VSampler", **sampler_args(model))
    assert base1.shape == (8, 32, 32, 3) and 0.0 <= base1.min() and base1.max() <= 1.0
    (m,) = run("ApplyTemporalLoRA", model=model, temporal_lora=tlora, strength=1.0)
    (with_lora,) = run("ModelScopeT2VSampler", **sampler_args(m, scheduler="euler"))
    (base2,) = run("ModelScopeT2VSampler", **sampler_args(model))
    assert torch.equal(base1, base2)  # the LoRA was removed after the call; same seed -> same video
    assert with_lora.shape == base1.shape
    (other_seed,) = run("ModelScopeT2VSampler", **sampler_args(model, seed=1))
    assert not torch.equal(other_seed, base1)


def test_sampler_previews(fake_comfy, model):
    run("ModelScopeT2VSampler", **sampler_args(model, steps=2, preview=True))
    assert [u[0] for u in fake_comfy["updates"]] == [1, 2]
    assert all(u[2] is not None and u[2][0] == "JPEG" for u in fake_comfy["updates"])


def test_ddim_invert_then_sample_from_the_latent(model, frames):
    before = frames.clone()
    (latent,) = run("DDIMInvertVideo", model=model, frames=frames, prompt=FULL, steps=2)
    assert set(latent) == {"samples"} and latent["samples"].shape == (1, 4, 8, 8, 8)
    assert torch.equal(frames, before)
    samples = latent["samples"].clone()
    (edited,) = run("ModelScopeT2VSampler", **sampler_args(model, init_latent=latent, init_blend=0.7))
    assert edited.shape == (8, 32, 32, 3)
    assert torch.equal(latent["samples"], samples), "the sampler changed the cached LATENT"
    from cav_core.errors import CavError

    with pytest.raises(CavError, match="start latents"):
        run("ModelScopeT2VSampler", **sampler_args(model, num_frames=4, init_latent=latent))


def test_compare_motion_scores_motion_only(frames):
    from cav_core.toyworld import clips

    schema = N["CompareMotion"].define_schema()
    assert "motion only" in schema.description and "motion only" in schema.outputs[0].tooltip
    # frames: the bundled red circle on black, its first 8 frames; the same half loop as a
    # blue square on gray from another start, at twice the size and with 16 frames (each twice)
    path = clips.circle_path()[:8] + [[3.0, -2.0]]
    moved = clips.render_clip("blue", "square", "gray", path).repeat(2, axis=0)
    other = torch.from_numpy(moved).permute(0, 3, 1, 2)
    other = torch.nn.functional.interpolate(other, scale_factor=2.0, mode="bilinear").permute(0, 2, 3, 1)
    with torch.inference_mode():
        out = N["CompareMotion"].execute(reference=frames, generated=other)
    (score,) = out.args
    assert isinstance(score, float) and score > 0.8
    assert out.ui.as_dict()["text"] == (f"motion score {score:+.2f} (1 = same motion, 0 = unrelated, -1 = "
                                        "opposite; measures motion only)",)  # ui.PreviewText
    still = frames[:1].expand(8, -1, -1, -1)
    (zero,) = run("CompareMotion", reference=frames, generated=still)
    assert zero == 0.0
    from cav_core.errors import InputError

    with pytest.raises(InputError, match="gen_frames.*at least 2 frames, got 1"):
        run("CompareMotion", reference=frames, generated=frames[:1])


def test_preview_image_grid():
    img = bridge.preview_image(torch.rand(16, 32, 32, 3))
    assert img.size == (256, 256)  # 4x4 grid of 32 px frames, upscaled 2x
    img = bridge.preview_image(torch.rand(3, 256, 256, 3))
    assert img.size == (512, 512)


def test_progress_outside_comfyui_is_silent():
    cb = bridge.progress("test")
    cb(1, 2, {"loss": 0.5, "preview": torch.rand(2, 8, 8, 3)})
    cb(2, 2, {})


def test_pack_never_prepends_its_folder_to_sys_path():
    """The pack folder holds a `nodes` package: it must never shadow ComfyUI's top-level
    `nodes` module, so the folder is at most appended to sys.path (plain git clone)."""
    code = ("import sys; sys.path.insert(0, %r); before = list(sys.path); import comfy_helpers; "
            "comfy_helpers.load_pack(); added = [p for p in sys.path if p not in before]; "
            "print(sys.path[:len(before)] == before, added in ([], [%r]))") % (str(REPO / "tests"), str(REPO))
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr
    assert Path(nodes.__file__).parent == REPO / "nodes"
