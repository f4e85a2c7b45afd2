"""Helpers for testing the pack: load it the way ComfyUI does, convert UI workflows to API
prompts with ``/object_info``, and run a real ComfyUI server from ../shared/comfyui.

Usable from the pack's own venv (no ComfyUI installed there): the server runs in the
fixture's venv (``setup.sh``), and everything here talks to it over HTTP with urllib."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
SHARED_COMFY = Path(os.environ.get("CAV_SHARED_COMFYUI", REPO.parent / "shared" / "comfyui"))
PACK_NAME = "comfyui-customize-a-video"  # the folder name users clone the pack into

# Node types that exist only in the frontend (no server class, not part of an API prompt).
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# --------------------------------------------------------------------------- the pack


def load_pack(name: str = "cav_pack_under_test"):
    """Import the pack's root ``__init__.py`` as a package, exactly like ComfyUI's
    ``load_custom_node`` does (``spec_from_file_location`` on the folder's __init__)."""
    if name in sys.modules:
        return sys.modules[name]
    import comfy_standin

    comfy_standin.install()  # outside ComfyUI the nodes import this stand-in of comfy_api.latest
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def node_info_from_schema(node_cls) -> dict[str, Any]:
    """An ``/object_info``-shaped entry built from a node's schema (stand-in or real API),
    for converting workflows without a server."""
    schema = node_cls.define_schema()
    req, opt = {}, {}
    for i in schema.inputs:
        opts: dict[str, Any] = {}
        for k in ("default", "min", "max", "step", "tooltip", "multiline", "control_after_generate"):
            v = getattr(i, k, None)
            if v is not None:
                opts[k] = v
        if getattr(i, "force_input", None):
            opts["forceInput"] = True
        typ = i.get_io_type()
        if typ == "COMBO":
            opts["options"] = list(getattr(i, "options", None) or [])
            upload = getattr(i, "upload", None)  # V3 UploadType: its value is the flag, e.g. "video_upload"
            if upload:
                opts[getattr(upload, "value", upload)] = True
        (opt if i.optional else req)[i.id] = [typ, opts]
    return {
        "input": {"required": req, "optional": opt},
        "input_order": {"required": list(req), "optional": list(opt)},
        "output": [o.get_io_type() for o in schema.outputs],
        "output_name": [o.display_name or o.get_io_type() for o in schema.outputs],
        "name": schema.node_id, "display_name": schema.display_name, "category": schema.category,
        "description": schema.description, "output_node": schema.is_output_node,
    }


# --------------------------------------------------------------------------- UI workflow -> API prompt


class WorkflowError(ValueError):
    """A UI workflow does not fit the server's /object_info."""


def _is_widget(typ: Any, opts: dict) -> bool:
    return (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput")


# The frontend's "control after generate" widget (fixed / increment / decrement / randomize). The
# frontend ComfyUI 0.3.64 ships (comfyui_frontend_package 1.27.10, static/assets/index-*.js) adds
# it right after a widget, as a widget of its own: so a UI workflow's ``widgets_values`` holds a
# value for it in that place, and ``graphToPrompt()`` leaves it out of the API prompt. The rule,
# from the bundle: useIntWidget adds it when
#     inputSpec.control_after_generate ?? ["seed", "noise_seed"].includes(inputSpec.name)
# (so any INT named seed gets one unless the node says control_after_generate=False), and
# addComboWidget when ``inputSpec.control_after_generate`` is truthy. No other widget type has one.
CONTROL_WIDGET = "control_after_generate"
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize", "increment-wrap")  # the last: combos only
CONTROL_FILTER = "control_filter_list"  # a regex filter (string, "" = none) after a combo's control widget
_LEGACY_SEED_NAMES = ("seed", "noise_seed")


# The upload button a media combo gets (image_upload / video_upload / animated_image_upload on a
# required input, as V3's ``Combo.Input(upload=...)`` declares): the frontend's Comfy.UploadImage
# extension adds an ``upload`` input to the node definition, whose widget comes after all the
# node's other widgets (checked in the browser: tests/test_comfyui_browser.py) and saves "image" in
# ``widgets_values`` like any widget.
UPLOAD_WIDGET = "upload"
UPLOAD_VALUE = "image"
_UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")


def frontend_widgets(info: dict) -> list[tuple[str, str]]:
    """The widgets the frontend gives a node of ``/object_info`` entry ``info``, in the order of
    ``widgets_values``: ``(widget name, kind)``, kind "input" for a node input, or CONTROL_WIDGET,
    CONTROL_FILTER or UPLOAD_WIDGET for the frontend's own (not inputs of the API prompt)."""
    required, optional = info["input"].get("required", {}), info["input"].get("optional", {})
    spec = {**required, **optional}
    order = info["input_order"].get("required", list(required)) + info["input_order"].get("optional", list(optional))
    out: list[tuple[str, str]] = []
    for name in order:
        typ, opts = spec[name][0], spec[name][1] if len(spec[name]) > 1 else {}
        if not _is_widget(typ, opts):
            continue
        out.append((name, "input"))
        if has_control_widget(name, typ, opts):
            out.append((CONTROL_WIDGET, CONTROL_WIDGET))
            if typ == "COMBO" or isinstance(typ, list):  # addValueControlWidgets: a combo's also gets a filter
                out.append((CONTROL_FILTER, CONTROL_FILTER))
    if any((v[0] == "COMBO" or isinstance(v[0], list)) and len(v) > 1 and any(v[1].get(f) for f in _UPLOAD_FLAGS)
           for v in required.values()):
        out.append((UPLOAD_WIDGET, UPLOAD_WIDGET))
    return out


def has_control_widget(name: str, typ: Any, opts: dict) -> bool:
    """Whether the frontend adds a control_after_generate widget after widget ``name``."""
    if not _is_widget(typ, opts):
        return False
    if typ == "INT":
        flag = opts.get("control_after_generate")
        return bool(name in _LEGACY_SEED_NAMES if flag is None else flag)
    if typ == "COMBO" or isinstance(typ, list):
        return bool(opts.get("control_after_generate"))
    return False


def _check_value(where: str, typ: Any, opts: dict, value: Any, check_combos: bool) -> None:
    if typ == "INT" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise WorkflowError(f"{where}: INT value {value!r}")
    if typ == "FLOAT" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        raise WorkflowError(f"{where}: FLOAT value {value!r}")
    if typ in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            raise WorkflowError(f"{where}: {value!r} outside [{opts.get('min')}, {opts.get('max')}]")
    if typ == "BOOLEAN" and not isinstance(value, bool):
        raise WorkflowError(f"{where}: BOOLEAN value {value!r}")
    if typ == "STRING" and not isinstance(value, str):
        raise WorkflowError(f"{where}: STRING value {value!r}")
    if check_combos and (typ == "COMBO" or isinstance(typ, list)):
        options = typ if isinstance(typ, list) else opts.get("options", [])
        if value not in options:
            raise WorkflowError(f"{where}: {value!r} is not one of {options}")


def ui_to_api(workflow: dict, object_info: dict, check_combos: bool | set[str] = False) -> dict[str, dict]:
    """Convert a UI workflow (``nodes``/``links``, version 0.4) to an API prompt.

    Raises :class:`WorkflowError` for an unknown node type, an input the node does not
    have, a link whose types do not match, a wrong number of widget values, or a widget
    value of the wrong type / out of range. ``check_combos`` (True, or a set of input
    names to skip) also checks dropdown values against their options."""
    links = {link[0]: link for link in workflow.get("links", [])}
    by_id = {n["id"]: n for n in workflow["nodes"]}
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        ntype = node["type"]
        if ntype in FRONTEND_ONLY:
            continue
        if node.get("mode", 0) == 2:  # muted
            continue
        if node.get("mode", 0) == 4:
            raise WorkflowError(f"node {node['id']} ({ntype}) is bypassed; not supported by this converter")
        info = object_info.get(ntype)
        if info is None:
            raise WorkflowError(f"node {node['id']}: unknown node type {ntype!r}")
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        inputs: dict[str, Any] = {}
        for inp in node.get("inputs", []):
            name = inp["name"]
            where = f"node {node['id']} ({ntype}) input {name!r}"
            if name not in spec:
                raise WorkflowError(f"{where}: {ntype} has no such input (has {order})")
            if inp.get("link") is None:
                continue
            link = links.get(inp["link"])
            if link is None or link[3] != node["id"]:
                raise WorkflowError(f"{where}: link {inp['link']} missing or not pointing here")
            src = by_id.get(link[1])
            if src is None or src["type"] not in object_info:
                raise WorkflowError(f"{where}: link from unknown node {link[1]}")
            out_types = object_info[src["type"]]["output"]
            if link[2] >= len(out_types):
                raise WorkflowError(f"{where}: {src['type']} has no output slot {link[2]}")
            want = spec[name][0]
            want = "COMBO" if isinstance(want, list) else want
            got = out_types[link[2]]
            if want != "*" and got != "*" and got != want:
                raise WorkflowError(f"{where}: link brings {got}, input takes {want}")
            inputs[name] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise WorkflowError(f"node {node['id']} ({ntype}): dict widgets_values not supported")
        i = 0
        for name, own in frontend_widgets(info):
            where = f"node {node['id']} ({ntype}) widget {name!r}"
            if i >= len(values):
                raise WorkflowError(f"{where}: missing from widgets_values {values}")
            value = values[i]
            i += 1
            if own == CONTROL_WIDGET:  # the frontend's own widgets: not API inputs
                if value not in CONTROL_VALUES:
                    raise WorkflowError(f"{where}: {value!r} where a control_after_generate value (one of "
                                        f"{CONTROL_VALUES}) belongs")
                continue
            if own in (UPLOAD_WIDGET, CONTROL_FILTER):
                continue
            typ, opts = spec[name][0], spec[name][1] if len(spec[name]) > 1 else {}
            skip = check_combos if isinstance(check_combos, set) else set()
            _check_value(where, typ, opts, value, bool(check_combos) and name not in skip)
            inputs.setdefault(name, value)
        if i != len(values):
            raise WorkflowError(f"node {node['id']} ({ntype}): {len(values)} widget values, "
                                f"{i} expected")
        missing = [k for k in info["input"].get("required", {}) if k not in inputs]
        if missing:
            raise WorkflowError(f"node {node['id']} ({ntype}): required input(s) {missing} not connected")
        prompt[str(node["id"])] = {"class_type": ntype, "inputs": inputs,
                                   "_meta": {"title": node.get("title") or info.get("display_name") or ntype}}
    return prompt


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REPO_LIKE_ID = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]*[a-zA-Z0-9])?$")


def check_ui_workflow_format(wf: dict) -> None:
    """The checks of the ComfyUI frontend's ``zComfyWorkflow`` schema (workflow version 0.4,
    frontend 1.27) that a hand-built file can get wrong; raises :class:`WorkflowError`."""
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise WorkflowError(what)

    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def vec2(v: Any) -> bool:
        return isinstance(v, list) and len(v) == 2 and all(num(x) for x in v)

    need(num(wf.get("version")) and wf["version"] != 1, "version must be a number (0.4)")
    need("id" not in wf or (isinstance(wf["id"], str) and bool(_UUID.match(wf["id"]))), "id must be a UUID")
    need(isinstance(wf.get("last_node_id"), (int, str)) and num(wf.get("last_link_id")), "last_node_id/last_link_id")
    need(isinstance(wf.get("nodes"), list) and isinstance(wf.get("links"), list), "nodes and links must be lists")
    for link in wf["links"]:
        need(isinstance(link, list) and len(link) == 6 and num(link[0]) and isinstance(link[5], str), f"link {link}")
    for g in wf.get("groups", []):
        need(isinstance(g.get("title"), str) and isinstance(g.get("bounding"), list) and len(g["bounding"]) == 4,
             f"group {g}")
    ids = set()
    for n in wf["nodes"]:
        where = f"node {n.get('id')}"
        need(isinstance(n.get("id"), (int, str)) and n["id"] not in ids, f"{where}: id missing or repeated")
        ids.add(n["id"])
        need(isinstance(n.get("type"), str), f"{where}: type")
        need(vec2(n.get("pos")) and vec2(n.get("size")), f"{where}: pos/size must be [x, y]")
        need(isinstance(n.get("flags"), dict) and num(n.get("order")) and num(n.get("mode")), f"{where}: flags/order/mode")
        props = n.get("properties")
        need(isinstance(props, dict), f"{where}: properties")
        if "cnr_id" in props:
            need(bool(_REPO_LIKE_ID.match(props["cnr_id"])), f"{where}: cnr_id {props['cnr_id']!r}")
        for i in n.get("inputs", []):
            need(isinstance(i.get("name"), str) and "type" in i and (i.get("link") is None or num(i["link"])),
                 f"{where}: input {i}")
        for o in n.get("outputs", []):
            need(isinstance(o.get("name"), str) and "type" in o and
                 (o.get("links") is None or all(num(x) for x in o["links"])), f"{where}: output {o}")
        need(isinstance(n.get("widgets_values", []), (list, dict)), f"{where}: widgets_values")
    need(max(ids, default=0) <= wf["last_node_id"], "last_node_id below a node id")
    need(max((link[0] for link in wf["links"]), default=0) <= wf["last_link_id"], "last_link_id below a link id")


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


# --------------------------------------------------------------------------- a real server


def setup_comfyui(pack_dir: Path = REPO, timeout: float = 1800) -> tuple[Path, Path]:
    """Run ../shared/comfyui/setup.sh (idempotent; installs the pack's dependencies into the
    fixture's venv) and return (COMFY_DIR, COMFY_PY)."""
    out = subprocess.run(["bash", str(SHARED_COMFY / "setup.sh"), str(pack_dir)], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"setup.sh failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    found = dict(re.findall(r"^(COMFY_DIR|COMFY_PY)=(.*)$", out.stdout, re.M))
    return Path(found["COMFY_DIR"]), Path(found["COMFY_PY"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's child process: get SIGTERM when the test process dies, so a killed
    pytest run never leaves a ComfyUI server behind (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ComfyServer:
    """``main.py --cpu`` on a free loopback port with its own base directory (models,
    custom_nodes, input, output, user under ``base``), the pack symlinked into
    ``base/custom_nodes/comfyui-customize-a-video`` and only that pack loaded."""

    def __init__(self, comfy_dir: Path, comfy_py: Path, base: Path, pack_dir: Path = REPO):
        self.comfy_dir, self.comfy_py, self.base, self.pack_dir = comfy_dir, comfy_py, base, pack_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None

    # paths inside the server's base directory
    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    def start(self, timeout: float = 240) -> "ComfyServer":
        (self.base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(self.pack_dir, target_is_directory=True)
        for sub in ("input", "output", "user", "temp", "models/loras", "models/diffusers"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # One torch thread by default (CAV_COMFY_THREADS to change): as fast for the toy model, and
        # immune to the many-fold OpenMP spin-wait slow-down when other processes share the cores.
        threads = os.environ.get("CAV_COMFY_THREADS", "1")
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS=threads,
                   MKL_NUM_THREADS=threads)
        env.pop("PYTHONPATH", None)
        cmd = [str(self.comfy_py), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(self.base), "--disable-all-custom-nodes",
               "--whitelist-custom-nodes", PACK_NAME, "--database-url", "sqlite:///:memory:"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
        link = self.base / "custom_nodes" / PACK_NAME
        if link.is_symlink():
            link.unlink()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # HTTP
    def get(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.load(r)

    def post(self, path: str, body: dict | None = None, timeout: float = 30) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
        return json.loads(data) if data.strip() else None

    def queue(self, prompt: dict, workflow: dict | None = None) -> str:
        body: dict[str, Any] = {"prompt": prompt, "client_id": "cav-test"}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        try:
            return self.post("/prompt", body)["prompt_id"]
        except urllib.error.HTTPError as e:
            raise WorkflowError(f"/prompt refused the prompt: {e.code} {e.read().decode()[:3000]}") from None

    def wait(self, prompt_id: str, timeout: float) -> dict:
        """The /history entry once the prompt finished (success, error or interrupted)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                return h[prompt_id]
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} not finished within {timeout}s; log tail:\n{self.log()[-3000:]}")

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.2)
        raise TimeoutError(f"no log line matching {pattern!r} within {timeout}s; tail:\n{self.log()[-3000:]}")


RANDOM_MODEL = "tiny-random-t2v"


def start_test_server(base: Path) -> ComfyServer:
    """The server the ``-m comfyui`` tests share: set up by ../shared/comfyui/setup.sh, base
    directory ``base``; before the pretrained toy model is in the checkout, a random model of the
    same architecture is put in ``models/diffusers/tiny-random-t2v`` (RANDOM_MODEL)."""
    comfy_dir, comfy_py = setup_comfyui()
    from cav_core.toyworld import toy_model_path

    if toy_model_path() is None:
        from cav_core.model import save_t2v
        from cav_core.toyworld.model_config import build_random_toy

        save_t2v(build_random_toy(seed=0).base, base / "models" / "diffusers" / RANDOM_MODEL)
    return ComfyServer(comfy_dir, comfy_py, base).start()


def status_messages(entry: dict, kind: str) -> list[dict]:
    return [m[1] for m in entry.get("status", {}).get("messages", []) if m[0] == kind]


def comfy_python_available() -> bool:
    return (SHARED_COMFY / "setup.sh").is_file() and shutil.which("bash") is not None
