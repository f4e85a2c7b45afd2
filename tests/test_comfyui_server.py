"""The pack inside a real ComfyUI server (../shared/comfyui, CPU): import, /object_info,
every example workflow converted against /object_info, workflow (a) executed end to end,
cached re-run, and a cancelled run.  Run with ``pytest -m comfyui``.

The server gets its own base directory (models, custom_nodes, input, output, user) in a
temp folder; the pack is symlinked into ``custom_nodes/comfyui-customize-a-video`` as a
user's ``git clone`` would put it, and is the only custom node loaded."""

from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path

import pytest

from comfy_helpers import (PACK_NAME, RANDOM_MODEL, SHARED_COMFY, WORKFLOWS, load_pack, load_workflow,
                           start_test_server, status_messages, ui_to_api)

pytestmark = pytest.mark.comfyui

TOY_WORKFLOW = "01_toy_end_to_end.json"
# Inputs whose dropdown lists depend on the user's files (models/diffusers, models/loras, input/).
USER_FILE_INPUTS = {"model", "video", "lora_name"}

# The node contract: input name -> type (required and optional), output types.
EXPECTED = {
    "LoadModelScopeT2V": ({"model": "COMBO", "device": "COMBO", "dtype": "COMBO"}, {"path": "STRING"},
                          ["CAV_T2V_MODEL"]),
    "LoadReferenceVideo": ({"video": "COMBO", "num_frames": "INT", "fps": "FLOAT", "start": "FLOAT",
                            "width": "INT", "height": "INT"},
                           {"path": "STRING", "fit": "COMBO", "hold_last_frame": "BOOLEAN", "model": "CAV_T2V_MODEL",
                            "video_input": "VIDEO"},
                           ["IMAGE", "FLOAT", "INT"]),
    "TrainAppearanceAbsorber": ({"model": "CAV_T2V_MODEL", "frames": "IMAGE", "caption": "STRING", "kind": "COMBO",
                                 "steps": "INT", "lora_lr": "FLOAT", "ti_lr": "FLOAT", "rank": "INT",
                                 "num_tokens": "INT", "crop_min": "FLOAT", "crop_max": "FLOAT", "seed": "INT"},
                                {"init_word": "STRING", "snapshot_every": "INT", "snapshot_prefix": "STRING"},
                                ["CAV_ADAPTER", "STRING"]),
    "TrainTemporalLoRA": ({"model": "CAV_T2V_MODEL", "frames": "IMAGE", "caption": "STRING", "steps": "INT",
                           "lr": "FLOAT", "rank": "INT", "seed": "INT"},
                          {"min_timestep": "INT", "recolor": "COMBO", "absorber": "CAV_ADAPTER",
                           "validation_prompt": "STRING", "validate_every": "INT", "snapshot_every": "INT",
                           "snapshot_prefix": "STRING", "ad_loss": "FLOAT", "more_clips": "CAV_CLIPS"},
                          ["CAV_ADAPTER", "IMAGE", "STRING"]),
    "AddTrainingClip": ({"frames": "IMAGE", "caption": "STRING"}, {"absorber": "CAV_ADAPTER", "clips": "CAV_CLIPS"},
                        ["CAV_CLIPS"]),
    "ApplyTemporalLoRA": ({"model": "CAV_T2V_MODEL", "temporal_lora": "CAV_ADAPTER", "strength": "FLOAT"},
                          {"min_timestep": "INT", "cond_only_from": "INT"},
                          ["CAV_T2V_MODEL"]),
    "ApplySpatialLoRA": ({"model": "CAV_T2V_MODEL", "lora_name": "COMBO", "strength": "FLOAT"}, {},
                         ["CAV_T2V_MODEL"]),
    "BypassTemporalLayers": ({"model": "CAV_T2V_MODEL", "enabled": "BOOLEAN"}, {}, ["CAV_T2V_MODEL"]),
    "DDIMInvertVideo": ({"model": "CAV_T2V_MODEL", "frames": "IMAGE", "prompt": "STRING", "steps": "INT"}, {},
                        ["LATENT"]),
    "ModelScopeT2VSampler": ({"model": "CAV_T2V_MODEL", "prompt": "STRING", "negative_prompt": "STRING",
                              "steps": "INT", "cfg": "FLOAT", "seed": "INT", "num_frames": "INT", "width": "INT",
                              "height": "INT", "scheduler": "COMBO", "init_blend": "FLOAT", "preview": "BOOLEAN"},
                             {"init_latent": "LATENT"}, ["IMAGE"]),
    "SaveCAVAdapter": ({"adapter": "CAV_ADAPTER", "filename_prefix": "STRING", "save_to": "COMBO"}, {}, []),
    "LoadCAVAdapter": ({"lora_name": "COMBO", "foreign_role": "COMBO"}, {"model": "CAV_T2V_MODEL"}, ["CAV_ADAPTER"]),
    "CompareMotion": ({"reference": "IMAGE", "generated": "IMAGE"}, {}, ["FLOAT"]),
}


@pytest.fixture(scope="module", autouse=True)
def _only_when_selected(request):
    if "comfyui" not in (request.config.getoption("-m") or ""):
        pytest.skip("starts a real ComfyUI server; run with `pytest -m comfyui`")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (SHARED_COMFY / "setup.sh").is_file():
        pytest.skip(f"no ComfyUI test fixture at {SHARED_COMFY} (../shared/comfyui is absent)")
    base = tmp_path_factory.mktemp("comfy_base")
    t0 = time.time()
    srv = start_test_server(base)
    print(f"\nComfyUI up in {time.time() - t0:.1f}s at {srv.url}, base {base}")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def toy_prompt(object_info) -> dict:
    prompt = ui_to_api(load_workflow(TOY_WORKFLOW), object_info)
    if os.environ.get("CAV_COMFY_QUICK"):  # developer shortcut: same graph, 3 steps per long node
        for node in prompt.values():
            if node["class_type"] in ("TrainAppearanceAbsorber", "TrainTemporalLoRA", "ModelScopeT2VSampler"):
                node["inputs"]["steps"] = 3
                if node["inputs"].get("snapshot_every"):
                    node["inputs"]["snapshot_every"] = 3
    from cav_core.toyworld import toy_model_path

    if toy_model_path() is None:
        for node in prompt.values():
            if node["class_type"] == "LoadModelScopeT2V":
                node["inputs"]["model"] = RANDOM_MODEL
    return prompt


def node_ids(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if v["class_type"] == class_type]


def lora_files(server, snapshots: bool = False) -> list[Path]:
    """The files under output/loras; without ``snapshots``, those not in a snapshots folder."""
    return sorted(p for p in (server.output_dir / "loras").rglob("*") if p.is_file()
                  and (snapshots or "snapshots" not in p.relative_to(server.output_dir).parts))


def check_snapshots(history_entry: dict, output_dir: Path) -> list[Path]:
    """What a run of a graph with Train Temporal LoRA snapshots (workflows 01, 07) must leave:
    one file per snapshot step under output/loras/PREFIX_NNNNN_stepSSSSS.safetensors, each a
    T-LoRA whose metadata names its step and (validation prompt given) its motion score, and
    the grid in /history as the image output of the PreviewImage fed by snapshot_grid: one row
    for the reference and one per snapshot. Returns the snapshot files, in step order."""
    from PIL import Image

    from cav_core.adapter_files import load_adapter
    from cav_core.snapshots import snapshot_steps

    prompt = history_entry["prompt"][2]
    (tid,) = node_ids(prompt, "TrainTemporalLoRA")
    inputs = prompt[tid]["inputs"]
    steps = snapshot_steps(inputs["snapshot_every"], inputs["steps"])
    assert steps, "the graph takes no snapshots"
    prefix = output_dir / "loras" / inputs["snapshot_prefix"]
    runs = sorted(prefix.parent.glob(prefix.name + "_[0-9][0-9][0-9][0-9][0-9]_step*.safetensors"))
    assert runs, f"no snapshot files {prefix}_NNNNN_step*.safetensors"
    last_run = runs[-1].name[len(prefix.name) + 1:][:5]
    files = sorted(prefix.parent.glob(f"{prefix.name}_{last_run}_step*.safetensors"))
    assert [f.name for f in files] == [f"{prefix.name}_{last_run}_step{s:05d}.safetensors" for s in steps], files
    for f, s in zip(files, steps):
        a = load_adapter(f)
        assert a.kind == "temporal_lora" and a.info["snapshot"]["step"] == s and a.info["caption"] == \
            inputs["caption"]
        scored = a.info["snapshot"]["motion_score"]
        assert (scored is not None) == bool(inputs.get("validation_prompt", "").strip()), a.info["snapshot"]
        assert scored is None or -1.0 <= scored <= 1.0
    (grid_id,) = [k for k, v in prompt.items() if v["class_type"] == "PreviewImage" and v["inputs"]["images"] ==
                  [tid, 1]]
    (image,) = history_entry["outputs"][grid_id]["images"]
    path = output_dir.parent / image["type"] / image["subfolder"] / image["filename"]
    with Image.open(path) as im:
        width, height = im.size
    cell = 64  # the toy model's 32 px frames, enlarged (nodes/snapshot_grid.py)
    assert height == (len(steps) + 1) * cell + 2 * len(steps) and width > 8 * cell, (width, height)
    return files


# --------------------------------------------------------------------------- start-up and schema


def test_pack_imports_without_error_and_fast(server):
    log = server.log()
    link = str(server.base / "custom_nodes" / PACK_NAME)
    assert f"Cannot import {link}" not in log and f"IMPORT FAILED): {link}" not in log, log[-3000:]
    assert f"Error while calling comfy_entrypoint in {link}" not in log
    assert f"Skip {link}" not in log
    m = re.search(r"^\s*([\d.]+) seconds(?: \(IMPORT FAILED\))?: " + re.escape(link) + r"\s*$", log, re.M)
    assert m, "ComfyUI did not report an import time for the pack:\n" + log[-3000:]
    print(f"pack import time reported by ComfyUI: {m.group(1)} s")
    assert float(m.group(1)) <= 1.0
    # nothing else in the start-up log is about the pack (no warning, no traceback)
    about_pack = [line for line in log.splitlines() if PACK_NAME in line and line.strip() != m.group(0).strip()]
    assert about_pack == [], about_pack


def test_object_info_lists_every_node_with_its_types(object_info):
    pack = load_pack()
    assert {c.define_schema().node_id for c in pack.NODES} == set(EXPECTED)
    for name, (required, optional, outputs) in EXPECTED.items():
        info = object_info.get(name)
        assert info is not None, f"{name} missing from /object_info"
        assert info["category"] == "Customize-A-Video"
        assert info["description"].strip(), name
        assert info["python_module"] == f"custom_nodes.{PACK_NAME}"
        got_req = {k: v[0] for k, v in info["input"]["required"].items()}
        got_opt = {k: v[0] for k, v in info["input"].get("optional", {}).items()}
        assert got_req == required, name
        assert got_opt == optional, name
        assert info["output"] == outputs, name
        for k, v in {**info["input"]["required"], **info["input"].get("optional", {})}.items():
            assert v[1].get("tooltip"), f"{name}.{k} has no tooltip"
        assert all(info["output_tooltips"]), name
    assert object_info["SaveCAVAdapter"]["output_node"] is True
    assert "toy (embedded)" in object_info["LoadModelScopeT2V"]["input"]["required"]["model"][1]["options"]
    assert {"circle", "zigzag", "bounce"} <= set(object_info["LoadReferenceVideo"]["input"]["required"]["video"][1]
                                                 ["options"])
    assert object_info["LoadReferenceVideo"]["input"]["required"]["video"][1].get("video_upload") is True


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_every_workflow_converts_against_object_info(object_info, name):
    wf = load_workflow(name)
    prompt = ui_to_api(wf, object_info, check_combos=USER_FILE_INPUTS)
    assert prompt
    assert any(object_info[n["class_type"]]["output_node"] for n in prompt.values()), "no output node"
    notes = [n for n in wf["nodes"] if n["type"] == "Note"]
    assert notes and all(len(n["widgets_values"][0]) > 100 for n in notes), "every workflow explains itself"


def test_example_workflows_are_served_as_templates(server):
    templates = server.get("/workflow_templates")
    assert sorted(templates.get(PACK_NAME, [])) == sorted(p.stem for p in WORKFLOWS.glob("*.json"))


# --------------------------------------------------------------------------- execution


@pytest.fixture(scope="module")
def toy_run(server, object_info):
    """Workflow (a) as shipped, queued through /prompt; (entry, prompt, seconds)."""
    prompt = toy_prompt(object_info)
    t0 = time.time()
    pid = server.queue(prompt, workflow=load_workflow(TOY_WORKFLOW))
    entry = server.wait(pid, timeout=900)
    return entry, prompt, time.time() - t0


def test_toy_workflow_runs_end_to_end(server, toy_run):
    entry, prompt, seconds = toy_run
    print(f"workflow (a) executed in {seconds:.1f}s")
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:4000]
    # a video written by core SaveVideo
    (save_id,) = node_ids(prompt, "SaveVideo")
    out = entry["outputs"][save_id]
    files = [i for i in out.get("images", []) + out.get("videos", []) if i.get("filename")]
    assert files, out
    video = server.output_dir / files[0]["subfolder"] / files[0]["filename"]
    assert video.is_file() and video.stat().st_size > 0
    # the T-LoRA saved with its metadata, and its snapshots
    (saved,) = lora_files(server)
    check_snapshots(entry, server.output_dir)
    assert saved.name == "toy_circle_tlora_00001.safetensors" and saved.parent.name == "cav"
    from cav_core.adapter_files import load_adapter

    tl = load_adapter(saved)
    assert tl.kind == "temporal_lora" and tl.info["caption"].startswith("a red circle")
    (save_node,) = node_ids(prompt, "SaveCAVAdapter")
    assert entry["outputs"][save_node]["text"] == ["output/loras/cav/toy_circle_tlora_00001.safetensors"]
    # ~3 min on 2 free CPU cores; the bound only catches a pathological slow-down (shared CI machines vary)
    assert seconds < 900


def test_changing_strength_reuses_training(server, toy_run):
    _, prompt, _ = toy_run
    prompt = copy.deepcopy(prompt)
    (apply_id,) = node_ids(prompt, "ApplyTemporalLoRA")
    prompt[apply_id]["inputs"]["strength"] = 0.5
    (sampler_id,) = node_ids(prompt, "ModelScopeT2VSampler")
    prompt[sampler_id]["inputs"]["steps"] = 3  # keep the re-run short
    before = lora_files(server, snapshots=True)
    t0 = time.time()
    entry = server.wait(server.queue(prompt), timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    (cached,) = status_messages(entry, "execution_cached")
    for cls in ("LoadModelScopeT2V", "LoadReferenceVideo", "TrainAppearanceAbsorber", "TrainTemporalLoRA",
                "SaveCAVAdapter"):
        assert set(node_ids(prompt, cls)) <= set(cached["nodes"]), f"{cls} ran again"
    assert apply_id not in cached["nodes"] and sampler_id not in cached["nodes"]
    assert lora_files(server, snapshots=True) == before  # the save node did not run again either
    print(f"re-run with a new strength: {time.time() - t0:.1f}s, training cached")


def test_cancel_stops_training_leaves_no_file_and_server_healthy(server, toy_run):
    _, prompt, _ = toy_run
    prompt = copy.deepcopy(prompt)
    (tid,) = node_ids(prompt, "TrainTemporalLoRA")
    prompt[tid]["inputs"]["steps"] = 5000  # would take an hour: must be cancelled
    prompt[tid]["inputs"]["seed"] = 7
    before = lora_files(server, snapshots=True)
    log_len = len(server.log())
    pid = server.queue(prompt)
    deadline = time.time() + 180
    while not re.search(r"Customize-A-Video TrainTemporalLoRA.*step \d+/5000", server.log()[log_len:]):
        assert time.time() < deadline, server.log()[-3000:]
        time.sleep(0.2)
    t_cancel = time.time()
    server.post("/interrupt")
    entry = server.wait(pid, timeout=120)
    stopped_in = time.time() - t_cancel
    print(f"cancel honoured in {stopped_in:.1f}s")
    assert entry["status"]["status_str"] == "error"
    assert status_messages(entry, "execution_interrupted"), entry["status"]
    assert stopped_in < 30
    assert lora_files(server, snapshots=True) == before, "a cancelled run left a LoRA file behind"
    assert not [p for p in (server.output_dir / "loras").rglob(".*") if p.is_file()], "temp file left behind"
    # healthy: the queue is empty, and training + sampling run again on the untouched shared base model
    assert server.get("/queue") == {"queue_running": [], "queue_pending": []}
    prompt[tid]["inputs"]["steps"] = 2
    prompt[tid]["inputs"]["snapshot_every"] = 0
    (sid,) = node_ids(prompt, "ModelScopeT2VSampler")
    prompt[sid]["inputs"]["steps"] = 2
    entry = server.wait(server.queue(prompt), timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert len(lora_files(server, snapshots=True)) == len(before) + 1


# --------------------------------------------------------------------------- the artist's own clip (issue 31)

UPLOADED_CLIP = "my_zigzag.mp4"
QUICK_STEPS = 3  # per training / sampling node: the run shows the route works, not the result


def upload_input_file(server, path: Path, name: str, subfolder: str = "") -> dict:
    """POST ``path`` to ``/upload/image`` as the frontend's upload widget does for core Load
    Video (multipart fields ``image``, ``type`` and, for pasted files, ``subfolder``:
    ComfyUI's server.py image_upload); returns the server's answer (name, subfolder, type)."""
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    fields = [("type", "input"), ("subfolder", subfolder)]
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in fields)
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
             f"Content-Type: video/mp4\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server.url + "/upload/image", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def uploaded_clip(server, tmp_path_factory) -> tuple[str, Path]:
    """A toy-world clip rendered here (not a bundled file), uploaded like an artist's own:
    (the name Load Reference Video's 'video' takes, the file the server stored)."""
    from cav_core.toyworld.clips import reference_clip
    from cav_core.video_io import write_video

    src = write_video(tmp_path_factory.mktemp("clip") / "render.mp4", reference_clip("zigzag").frames, fps=8.0)
    answer = upload_input_file(server, src, UPLOADED_CLIP)
    assert answer == {"name": UPLOADED_CLIP, "subfolder": "", "type": "input"}, answer
    stored = server.base / "input" / UPLOADED_CLIP
    assert stored.read_bytes() == src.read_bytes()
    return UPLOADED_CLIP, stored


def run_workflow_on_clip(server, object_info, clip: str, steps: int = QUICK_STEPS,
                         prefix: str = "cav/uploaded") -> tuple[dict, dict, Path, float]:
    """Workflow 01 (converted as shipped) with Load Reference Video set to ``clip``, ``steps``
    steps on every training and sampling node, and its own file names under ``prefix``:
    (the /history entry, the API prompt, the server's output folder, seconds). Tests on what
    the run wrote (the T-LoRA, the video, snapshots) read them from the entry and the folder."""
    prompt = toy_prompt(object_info)
    for node in prompt.values():
        if node["class_type"] in ("TrainAppearanceAbsorber", "TrainTemporalLoRA", "ModelScopeT2VSampler"):
            node["inputs"]["steps"] = steps
    (vid,) = node_ids(prompt, "LoadReferenceVideo")
    prompt[vid]["inputs"]["video"] = clip
    (tid,) = node_ids(prompt, "TrainTemporalLoRA")
    prompt[tid]["inputs"].update(snapshot_every=max(1, steps - 1), snapshot_prefix=f"{prefix}_snapshots")
    (save_id,) = node_ids(prompt, "SaveCAVAdapter")
    prompt[save_id]["inputs"]["filename_prefix"] = f"{prefix}_tlora"
    (video_id,) = node_ids(prompt, "SaveVideo")
    prompt[video_id]["inputs"]["filename_prefix"] = prefix
    t0 = time.time()
    entry = server.wait(server.queue(prompt), timeout=600)
    return entry, prompt, server.output_dir, time.time() - t0


@pytest.fixture(scope="module")
def uploaded_run(server, object_info, uploaded_clip):
    return run_workflow_on_clip(server, object_info, uploaded_clip[0])


def test_uploaded_clip_is_listed_and_runs_workflow_01(server, uploaded_run, uploaded_clip):
    entry, prompt, out_dir, seconds = uploaded_run
    print(f"workflow 01 on an uploaded clip ({QUICK_STEPS} steps per node): {seconds:.1f}s")
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:4000]
    # the upload shows up in the dropdown once the node list is refreshed (R in the frontend)
    options = server.get("/object_info/LoadReferenceVideo")["LoadReferenceVideo"]["input"]["required"]["video"][1]
    assert uploaded_clip[0] in options["options"]
    # the reference node ran on it (not cached from the bundled-clip run), the save nodes wrote
    (vid,) = node_ids(prompt, "LoadReferenceVideo")
    cached = {n for m in status_messages(entry, "execution_cached") for n in m["nodes"]}
    assert vid not in cached
    (save_id,) = node_ids(prompt, "SaveCAVAdapter")
    (saved,) = entry["outputs"][save_id]["text"]
    assert saved == "output/loras/cav/uploaded_tlora_00001.safetensors"
    from cav_core.adapter_files import load_adapter

    assert load_adapter(out_dir / "loras" / "cav" / "uploaded_tlora_00001.safetensors").kind == "temporal_lora"
    (video_id,) = node_ids(prompt, "SaveVideo")
    out = entry["outputs"][video_id]
    (item,) = [i for i in out.get("images", []) + out.get("videos", []) if i.get("filename")]
    assert item["filename"].startswith("uploaded") and (out_dir / item["subfolder"] / item["filename"]).is_file()
    # the snapshots of that run, with the grid in /history (issue 31: upload, run 01, snapshots)
    assert len(check_snapshots(entry, out_dir)) == 2


def _saved_frames(out_dir: Path, entry: dict, node_id: str):
    import numpy as np
    from PIL import Image

    files = entry["outputs"][node_id]["images"]
    return np.stack([np.asarray(Image.open(out_dir / f["subfolder"] / f["filename"]).convert("RGB")) for f in files])


def test_load_video_feeds_load_reference_video(server, uploaded_clip):
    """Core Load Video's VIDEO into video_input (decoded from the file it streams), and the
    same clip as frames made in the graph (Get Video Components -> Create Video: a VIDEO with
    no file behind it), against the file route: the same frames, the same count. 'video'
    names no file on the VIDEO routes: a connected VIDEO makes it irrelevant."""
    clip = dict(num_frames=5, fps=4.0, start=0.5, width=16, height=24, path="", fit="pad", hold_last_frame=False)
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": uploaded_clip[0]}},
        "2": {"class_type": "LoadReferenceVideo", "inputs": {**clip, "video": "missing.mp4", "video_input": ["1", 0]}},
        "3": {"class_type": "LoadReferenceVideo", "inputs": {**clip, "video": uploaded_clip[0]}},
        "4": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "5": {"class_type": "CreateVideo", "inputs": {"images": ["4", 0], "fps": ["4", 2]}},
        "6": {"class_type": "LoadReferenceVideo", "inputs": {**clip, "video": "missing.mp4", "video_input": ["5", 0]}},
    }
    for src, name in (("2", "from_video"), ("3", "from_file"), ("6", "from_components")):
        prompt[f"{src}0"] = {"class_type": "SaveImage", "inputs": {"images": [src, 0], "filename_prefix": f"cav/{name}"}}
        prompt[f"{src}1"] = {"class_type": "PreviewAny", "inputs": {"source": [src, 2]}}
    t0 = time.time()
    entry = server.wait(server.queue(prompt), timeout=300)
    print(f"Load Video -> Load Reference Video, three routes: {time.time() - t0:.1f}s")
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:4000]
    by_file = _saved_frames(server.output_dir, entry, "30")
    assert by_file.shape == (5, 24, 16, 3)
    assert (_saved_frames(server.output_dir, entry, "20") == by_file).all()
    assert abs(_saved_frames(server.output_dir, entry, "60").astype(int) - by_file).max() <= 1
    for src in ("2", "3", "6"):
        assert entry["outputs"][f"{src}1"]["text"] == ["5"], entry["outputs"][f"{src}1"]


def test_load_reference_video_refused_at_queue_time_with_clear_messages(server, uploaded_clip):
    clip = dict(num_frames=4, fps=8.0, start=0.0, width=0, height=0)
    cases = {
        "missing.mp4": (dict(video="missing.mp4"), r"reference video 'missing\.mp4' \('video' of Load Reference "
                                                    r"Video\) is neither a bundled clip .* upload it"),
        "pad at 0x0": (dict(video=uploaded_clip[0], fit="pad"), r"fit='pad' needs a size to fit to: set width and "
                                                                 r"height"),
        "IMAGE into video_input": (dict(video=uploaded_clip[0], video_input=["9", 0]),
                                   r"input video_input takes VIDEO, but an output of type IMAGE is connected"),
    }
    for case, (inputs, match) in cases.items():
        prompt = {"1": {"class_type": "LoadReferenceVideo", "inputs": {**clip, **inputs}},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 2]}},
                  "9": {"class_type": "LoadReferenceVideo", "inputs": {**clip, "video": "circle"}}}
        with pytest.raises(Exception) as info:
            server.queue(prompt)
        assert re.search(match, str(info.value)), (case, str(info.value)[:2000])


def test_pick_the_best_snapshot_workflow(server, object_info):
    """Workflow 07 as an artist runs it, with few steps: queue the training (the pick branch
    left out, as its snapshot does not exist yet), pick a snapshot by its name in Load T-LoRA /
    Absorber, queue again: the training is reused, the snapshot applied, the motion scored."""
    prompt = ui_to_api(load_workflow("07_pick_the_best_snapshot.json"), object_info)
    (tid,) = node_ids(prompt, "TrainTemporalLoRA")
    prompt[tid]["inputs"].update(steps=6, snapshot_every=3, snapshot_prefix="cav/snapshots/wf07")
    (sid,) = node_ids(prompt, "ModelScopeT2VSampler")
    prompt[sid]["inputs"]["steps"] = 3
    (pick,) = node_ids(prompt, "LoadCAVAdapter")
    downstream = {pick, *node_ids(prompt, "ApplyTemporalLoRA"), sid, *node_ids(prompt, "CompareMotion"),
                  *node_ids(prompt, "CreateVideo"), *node_ids(prompt, "SaveVideo")}
    first = {k: v for k, v in prompt.items() if k not in downstream}
    entry = server.wait(server.queue(first), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    files = check_snapshots(entry, server.output_dir)
    name = files[0].relative_to(server.output_dir / "loras").as_posix() + " [output]"
    assert name in server.get("/object_info/LoadCAVAdapter")["LoadCAVAdapter"]["input"]["required"]["lora_name"][1][
        "options"]  # listed like any LoRA once it exists
    prompt[pick]["inputs"]["lora_name"] = name
    entry = server.wait(server.queue(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    (cached,) = status_messages(entry, "execution_cached")
    assert tid in cached["nodes"], "picking a snapshot retrained"
    (cmp_id,) = node_ids(prompt, "CompareMotion")
    (text,) = entry["outputs"][cmp_id]["text"]
    assert re.fullmatch(r"motion score [+-]\d\.\d\d \(1 = same motion, .*measures motion only\)", text), text
