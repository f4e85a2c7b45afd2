"""Sharing the GPU with ComfyUI (issue #31, item 4), without a GPU.

What these tests prove, and what they do not:
- cav_core calls its host's ``before_run`` hook at the start of every training and sampling
  run, before the UNet's first forward, asking for the memory cav_core.device_guard
  estimates (a recording hook, no ComfyUI).
- Under codec offloading (ComfyUI ``--lowvram`` / ``--novram``) the text encoder and VAE are
  sent to the offload device before the run and after each encode/decode, and are never on
  the compute device while the UNet runs. This machine has one device (the CPU), so the
  placement of those two modules is virtual here (``memory._is_on`` / ``memory._move``
  record where a module was sent instead of moving it); what is shown is the order of the
  moves, not VRAM freed.
- Through the pack's nodes with a fake ``comfy.model_management`` that records calls, the
  bridge asks ComfyUI to free room (free_memory, then load_models_gpu to register the model,
  then soft_empty_cache) before training and before sampling. CUDA cannot be faked on a CPU
  build of torch, so the bridge is told to manage CPU devices for those tests; with the
  default setting a CPU run makes no call at all (what the real CPU server test relies on).
- ComfyUI 0.3.64's real model_management (three files from the tarball in ../shared/comfyui,
  in a subprocess on the CPU) registers the model patcher, offloads part of it for a small
  request and all of it on unload_all_models.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import tarfile
import textwrap
import types
import weakref
from pathlib import Path

import pytest
import torch

from cav_core import device_guard as dg
from cav_core import memory, sample
from cav_core.train import train_appearance_absorber, train_temporal_lora
from comfy_helpers import REPO, SHARED_COMFY, load_pack

pack = load_pack()
bridge = sys.modules[pack.__name__ + ".nodes.comfy_bridge"]
N = {cls.define_schema().node_id: cls for cls in pack.NODES}
FULL = "a red circle moving in a circle on a black background"
OFFLOAD = "host-ram"  # the virtual offload device of the placement tests


@pytest.fixture
def model():
    """A fresh random toy model per test: these tests move its modules (virtually or not)."""
    from cav_core.toyworld.model_config import build_random_toy

    return build_random_toy(seed=0)


def _frames(handle, n=4):
    h, w, _, _ = sample.latent_size(handle.base, None, None)
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def events(model):
    """A list that gets ("unet", where the text encoder is, where the VAE is) at every UNet
    forward; other fixtures and hooks append their own events to it."""
    log: list = []
    c = model.base

    def where(m):
        return _VIRTUAL.get(m, str(next(m.parameters()).device))

    handle = c.unet.register_forward_pre_hook(lambda *_: log.append(("unet", where(c.text_encoder), where(c.vae))))
    yield log
    handle.remove()


_VIRTUAL: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@pytest.fixture
def virtual_codecs(monkeypatch, model, events):
    """Virtual placement of the text encoder and VAE (see the module doc): a move is recorded
    as ("text_encoder" | "vae", device) in ``events``; the weights stay on the CPU."""
    c = model.base
    names = {c.text_encoder: "text_encoder", c.vae: "vae"}
    for m in names:
        _VIRTUAL[m] = "cpu"
    real_is_on, real_move = memory._is_on, memory._move

    def is_on(m, device):
        return _VIRTUAL[m] == str(device) if m in names else real_is_on(m, device)

    def move(m, device):
        if m not in names:
            return real_move(m, device)
        events.append((names[m], str(device)))
        _VIRTUAL[m] = str(device)

    monkeypatch.setattr(memory, "_is_on", is_on)
    monkeypatch.setattr(memory, "_move", move)
    monkeypatch.setattr(memory, "OFFLOAD_DEVICE", OFFLOAD)
    yield
    for m in names:
        _VIRTUAL.pop(m, None)


@pytest.fixture
def host(events):
    """A recording host: before_run appends ("before_run", purpose, bytes) to ``events``."""
    saved = memory.host()
    state = {"offload": False}
    memory.set_host(before_run=lambda comps, n, purpose: events.append(("before_run", purpose, n)),
                    offload_codecs=lambda: state["offload"])
    yield state
    memory.set_host(*saved)


def _unet_events(events):
    return [e for e in events if e[0] == "unet"]


# --------------------------------------------------------------------------- cav_core: the hook


def test_before_run_comes_before_the_first_unet_step_with_the_guards_estimate(model, events, host):
    cfg = model.base.unet.config
    h, w, _, _ = sample.latent_size(model.base, None, None)

    def est(frames, batch, sampling=False):
        f = dg.estimate_sampling_memory if sampling else dg.estimate_training_memory
        return f(tuple(cfg.block_out_channels), cfg.layers_per_block, frames, h, w, batch, bytes_per_value=4,
                 vae_scale_factor=model.base.vae_scale_factor).total

    train_temporal_lora(model, _frames(model), FULL, steps=1, recolor=False)
    assert events[0] == ("before_run", "training", est(4, 1)) and events[1][0] == "unet", events[:2]
    events.clear()
    train_appearance_absorber(model, _frames(model), "a red circle", kind="lora", steps=1, batch_size=2)
    assert events[0] == ("before_run", "training", est(1, 2)) and events[1][0] == "unet", events[:2]
    events.clear()
    sample.generate(model, "a green square", num_frames=4, steps=1, batch_size=2)
    assert events[0] == ("before_run", "sampling", est(4, 2, sampling=True)) and events[1][0] == "unet"
    events.clear()
    sample.invert_video(model, _frames(model), "a red circle", steps=1)
    assert events[0][:2] == ("before_run", "sampling") and events[1][0] == "unet"


# --------------------------------------------------------------------------- cav_core: codec offload


def test_low_vram_text_encoder_and_vae_visit_the_device_only_for_their_encodes(model, events, host,
                                                                               virtual_codecs):
    host["offload"] = True
    train_temporal_lora(model, _frames(model), FULL, steps=2, recolor=False, validation_prompt="a green square",
                        validate_every=2, validation_steps=1)
    assert events[0] == ("text_encoder", OFFLOAD) and events[1] == ("vae", OFFLOAD)  # parked first
    assert events[2][:2] == ("before_run", "training")  # ... so the host and the guard count that room
    steps = _unet_events(events)
    assert len(steps) == 3  # two training steps and one validation step
    assert all(te == OFFLOAD and vae == OFFLOAD for _, te, vae in steps), steps
    moves = [e for e in events if e[0] in ("text_encoder", "vae")]
    # the clip's encode, then the validation decode; text for the caption and the validation prompts
    assert moves.count(("vae", "cpu")) == 2 and moves.count(("vae", OFFLOAD)) == 3
    assert moves.count(("text_encoder", "cpu")) == 3 and moves.count(("text_encoder", OFFLOAD)) == 4
    assert _VIRTUAL[model.base.text_encoder] == OFFLOAD and _VIRTUAL[model.base.vae] == OFFLOAD

    events.clear()
    sample.generate(model, "a green square", num_frames=4, steps=2)
    steps = _unet_events(events)
    assert len(steps) == 2 and all(te == OFFLOAD and vae == OFFLOAD for _, te, vae in steps)
    assert events[-2:] == [("vae", "cpu"), ("vae", OFFLOAD)]  # the decode comes after the last step


def test_low_vram_keeps_the_text_encoder_while_tokens_train(model, events, host, virtual_codecs):
    host["offload"] = True
    train_appearance_absorber(model, _frames(model), "a red circle", kind="both", steps=2, batch_size=1,
                              num_tokens=1)
    steps = _unet_events(events)
    assert len(steps) == 2 and all(te == "cpu" and vae == OFFLOAD for _, te, vae in steps), steps
    assert _VIRTUAL[model.base.text_encoder] == OFFLOAD  # and back when the run is over


def test_without_offload_nothing_moves(model, events, host, virtual_codecs):
    sample.generate(model, "a green square", num_frames=4, steps=1)
    assert [e for e in events if e[0] in ("text_encoder", "vae")] == []


# --------------------------------------------------------------------------- the bridge, fake ComfyUI


class VRAMState(enum.Enum):  # the names of comfy.model_management.VRAMState (0.3.64)
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


@pytest.fixture
def fake_mm(monkeypatch, events):
    """A fake comfy.model_management recording its calls in ``events`` as ("mm", name, ...).
    load_models_gpu registers and loads the patcher as the real one does (a LoadedModel-like
    entry in current_loaded_models, then partially_load)."""
    mm = types.ModuleType("comfy.model_management")
    mm.VRAMState, mm.vram_state = VRAMState, VRAMState.NORMAL_VRAM
    mm.current_loaded_models = []
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.throw_exception_if_processing_interrupted = lambda: None
    mm.extra_reserved_memory = lambda: 400 * 1024**2
    mm.unet_offload_device = lambda: torch.device("cpu")

    def free_memory(memory_required, device, keep_loaded=()):
        events.append(("mm", "free_memory", memory_required, device, list(keep_loaded)))

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        events.append(("mm", "load_models_gpu", list(models), memory_required, force_full_load))
        for m in models:
            mm.current_loaded_models.insert(0, types.SimpleNamespace(model=m))
            m.partially_load(m.load_device, 1e32)

    mm.free_memory, mm.load_models_gpu = free_memory, load_models_gpu
    mm.soft_empty_cache = lambda force=False: events.append(("mm", "soft_empty_cache"))
    mm.unload_all_models = lambda: events.append(("mm", "unload_all_models"))
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setattr(bridge, "_PATCHERS", weakref.WeakKeyDictionary())
    saved = memory.host()
    bridge.install_memory_hooks()  # what importing the pack did; a test before may have replaced them
    yield mm
    memory.set_host(*saved)


def run(node: str, **inputs):
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return N[node].execute(**inputs).args


def _train(model):
    return run("TrainTemporalLoRA", model=model, frames=_frames(model), caption=FULL, steps=1, lr=1e-3, rank=2,
               seed=0, recolor=False)


def _sample(model):
    return run("ModelScopeT2VSampler", model=model, prompt="a green square", negative_prompt="", steps=1, cfg=7.5,
               seed=0, num_frames=4, width=0, height=0, scheduler="ddim", init_blend=1.0, preview=False)


def test_comfyui_frees_room_before_training_and_sampling(monkeypatch, model, events, fake_mm):
    monkeypatch.setattr(bridge, "MANAGED_DEVICE_TYPES", ("cpu",))  # CUDA cannot be faked: see the module doc
    _train(model)
    first_step = events.index(next(e for e in events if e[0] == "unet"))
    calls = [e for e in events[:first_step] if e[0] == "mm"]
    assert [c[1] for c in calls] == ["free_memory", "load_models_gpu", "soft_empty_cache"], calls
    (patcher,) = calls[1][2]
    assert patcher.model is model.base.unet and calls[1][4] is True  # fully loaded, as core training loads
    cfg = model.base.unet.config
    h, w, _, _ = sample.latent_size(model.base, None, None)
    estimate = dg.estimate_training_memory(tuple(cfg.block_out_channels), cfg.layers_per_block, 4, h, w, 1,
                                           bytes_per_value=4, vae_scale_factor=model.base.vae_scale_factor).total
    need = int(estimate * bridge.TRAINING_MARGIN)
    assert calls[0][2:] == (need + 400 * 1024**2, torch.device("cpu"), []) and calls[1][3] == need
    assert [e[0] for e in events[first_step:]].count("mm") == 0  # nothing while training

    events.clear()
    _sample(model)
    calls = [e for e in events if e[0] == "mm"]
    # registered now: kept while others are freed, and not registered twice
    assert [c[1] for c in calls] == ["free_memory", "soft_empty_cache"], calls
    assert [lm.model for lm in calls[0][4]] == [patcher] and len(fake_mm.current_loaded_models) == 1
    assert events.index(calls[-1]) < events.index(next(e for e in events if e[0] == "unet"))
    assert ("mm", "unload_all_models") not in events


def test_low_vram_comfyui_frees_room_and_parks_text_encoder_and_vae(monkeypatch, model, events, fake_mm,
                                                                    virtual_codecs):
    monkeypatch.setattr(bridge, "MANAGED_DEVICE_TYPES", ("cpu",))
    fake_mm.vram_state = VRAMState.LOW_VRAM  # ComfyUI started with --lowvram
    assert memory.offload_codecs()
    bridge.track_model(model.base)  # what Load ModelScope T2V does after loading
    assert events[:2] == [("text_encoder", OFFLOAD), ("vae", OFFLOAD)] and events[2][1] == "load_models_gpu"
    events.clear()
    _train(model)
    first_step = next(i for i, e in enumerate(events) if e[0] == "unet")
    assert [e[1] for e in events[:first_step] if e[0] == "mm"] == ["free_memory", "soft_empty_cache"]
    assert all(te == OFFLOAD and vae == OFFLOAD for _, te, vae in _unet_events(events))
    (patcher,) = [p for p in bridge._PATCHERS.values()]
    assert patcher.model_size() == bridge._module_bytes(model.base.unet)  # the codecs are not ComfyUI's to move


def test_cpu_runs_leave_comfyui_alone(model, events, fake_mm):
    from cav_core.toyworld import toy_model_path

    if toy_model_path() is not None:  # the loader registers GPU models only
        run("LoadModelScopeT2V", model=bridge.TOY_MODEL, device="cpu", dtype="auto")
    _train(model)
    _sample(model)
    assert [e for e in events if e[0] == "mm"] == [] and fake_mm.current_loaded_models == []
    assert not bridge._PATCHERS


# --------------------------------------------------------------------------- the real model_management


def _comfy_files(tmp_path: Path) -> Path | None:
    tarballs = sorted(SHARED_COMFY.glob("ComfyUI-*.tar.gz"))
    if not tarballs:
        return None
    wanted = ("comfy/model_management.py", "comfy/cli_args.py", "comfy/options.py")
    with tarfile.open(tarballs[0]) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.split("/", 1)[-1] in wanted]
        if len(members) != len(wanted):
            return None
        for m in members:
            m.name = m.name.split("/", 1)[-1]
            tar.extract(m, tmp_path, filter="data")
    return tmp_path


def test_the_real_model_management_offloads_the_model(tmp_path):
    """ComfyUI 0.3.64's free_memory / unload_all_models drive the patcher (in a subprocess:
    a real ``comfy`` package must not meet the pack's import in this process)."""
    root = _comfy_files(tmp_path)
    if root is None:
        pytest.skip(f"no ComfyUI tarball with comfy/model_management.py in {SHARED_COMFY}")
    code = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads(1)
        sys.path[:0] = [{str(root)!r}, {str(REPO / 'tests')!r}, {str(REPO)!r}]
        import comfy.cli_args
        comfy.cli_args.args.cpu = True  # as the test server runs
        import comfy.model_management as mm
        import importlib.util
        from cav_core.toyworld.model_config import build_random_toy
        # the bridge alone: the pack's import refuses a ComfyUI without comfy_api, and needs none here
        spec = importlib.util.spec_from_file_location("bridge", {str(REPO / 'nodes' / 'comfy_bridge.py')!r})
        bridge = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bridge)
        c = build_random_toy(seed=0).base
        cpu = torch.device("cpu")
        FREE = 10**9  # the free memory ComfyUI reads, fixed so the requests below are exact
        mm.get_free_memory = lambda dev=None, torch_free_too=False: (FREE, FREE) if torch_free_too else FREE
        bridge.track_model(c)
        assert mm.current_loaded_models == [], "a CPU model is not ComfyUI's to manage"
        bridge.MANAGED_DEVICE_TYPES = ("cpu",)  # pretend the CPU is a GPU of its own
        bridge.track_model(c)
        (p,) = mm.loaded_models()
        assert p.model is c.unet and p.loaded_size() == p.model_size() > 0
        p.offload_device = torch.device("meta")  # where the offloaded weights go, visibly
        mm.free_memory(FREE + 1, cpu)  # one byte short: the smallest module goes, the model stays listed
        where = {{n: next(getattr(c, n).parameters()).device.type for n in ("unet", "text_encoder", "vae")}}
        smallest = min(where, key=lambda n: bridge._module_bytes(getattr(c, n)))
        assert where == {{n: "meta" if n == smallest else "cpu" for n in where}}, (where, smallest)
        assert mm.loaded_models() == [p] and 0 < p.loaded_size() < p.model_size()
        mm.unload_all_models()  # the "Unload models" button
        assert all(t.device.type == "meta" for m in (c.unet, c.text_encoder, c.vae) for t in m.parameters())
        assert mm.current_loaded_models == []
        print("ok")
        """)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout[-2000:] + out.stderr[-3000:]
