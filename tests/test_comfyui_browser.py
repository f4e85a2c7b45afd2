"""The example workflows in the real ComfyUI frontend (the one ComfyUI 0.3.64 serves,
comfyui_frontend_package 1.27.10), in headless Chromium driven by Selenium.

Each workflow is loaded with the frontend's own loader (``app.loadGraphData``, what a
drag-and-drop does), then read back from the live graph: every widget must hold the value the
workflow builder meant (by widget name, from ``tests/workflow_builder.py``, not from the file's
positional ``widgets_values``), every node type must be known, and ``app.graphToPrompt()`` must
give the API prompt the builder means. The repo's own converter (``comfy_helpers.ui_to_api``)
must agree with the frontend. A second test checks that each graph stays readable when fitted
to a 1600-pixel-wide window. Run with ``pytest -m comfyui`` (it starts the test server);
skipped when Selenium, Chromium or chromedriver is missing."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from comfy_helpers import SHARED_COMFY, WORKFLOWS, frontend_widgets, load_workflow, start_test_server, ui_to_api

pytestmark = pytest.mark.comfyui

# The browser window the readability check fits each graph to (headless Chromium gives the page
# 1600x857 of it; the frontend's canvas is 1536x779 beside its sidebar and under its menu).
WINDOW = (1600, 1000)


def _workflow_names() -> list[str]:
    return sorted(p.name for p in WORKFLOWS.glob("*.json"))


@pytest.fixture(scope="module", autouse=True)
def _only_when_selected(request):
    if "comfyui" not in (request.config.getoption("-m") or ""):
        pytest.skip("starts a real ComfyUI server and a browser; run with `pytest -m comfyui`")


def _browser_paths() -> tuple[str, str]:
    chrome = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return chrome, driver


@pytest.fixture(scope="module")
def browser_bits():
    """(selenium webdriver module, chromium path, chromedriver path), or a one-line skip."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("Selenium not installed (pip install -e '.[test]')")
    chrome, driver = _browser_paths()
    if not chrome or not driver:
        pytest.skip("Chromium/chromedriver not found (apt-get install chromium chromium-driver)")
    return webdriver, chrome, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser_bits):
    if not (SHARED_COMFY / "setup.sh").is_file():
        pytest.skip(f"no ComfyUI test fixture at {SHARED_COMFY} (../shared/comfyui is absent)")
    srv = start_test_server(tmp_path_factory.mktemp("comfy_base"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server, browser_bits, tmp_path_factory):
    """The frontend, open and ready (node definitions from /object_info registered)."""
    webdriver, chrome, driver_path = browser_bits
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--force-device-scale-factor=1",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # a first visit opens the "Get Started with a Template" dialog over the canvas; a returning user's doesn't
    server.post("/settings/Comfy.TutorialCompleted", True)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.set_window_size(*WINDOW)
        drv.set_script_timeout(120)
        drv.get(server.url)
        deadline = time.time() + 180
        ready = "return !!(window.app && window.app.graph && window.LiteGraph && " \
                "window.LiteGraph.registered_node_types['TrainTemporalLoRA'])"
        while not drv.execute_script(ready):
            assert time.time() < deadline, "the frontend did not come up:\n" + _console(drv)
            time.sleep(0.5)
        yield drv
    finally:
        drv.quit()


def _console(drv) -> str:
    try:
        return "\n".join(e["message"] for e in drv.get_log("browser"))[-3000:]
    except Exception:  # noqa: BLE001 - only for a failure message
        return "(no browser log)"


# Loads one workflow with the frontend's loader and reads the graph back. Widget values are read
# from the live widgets; boxes are what LiteGraph draws for each node (title bar and badges).
LOAD_JS = """
const [wf, name, done] = arguments;
(async () => {
  const app = window.app;
  await app.loadGraphData(wf, true, true, name);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const g = app.graph;
  const plain = v => (v === undefined ? null : JSON.parse(JSON.stringify(v)));
  // LiteGraph's box (title bar included), raised by the badges drawn 2 units above the title bar
  // (LGraphNode.drawBadges: the pack's name, from the node source badge setting)
  const box = n => {
    const b = Array.from(n.getBounding());
    const badges = (n.badges || []).map(x => (typeof x === 'function' ? x() : x));
    const up = badges.length ? Math.max(...badges.map(x => x.height || 0)) + 2 : 0;
    return [b[0], b[1] - up, b[2], b[3] + up];
  };
  const nodes = g._nodes.map(n => ({
    id: n.id, type: n.type, title: n.title,
    registered: !!LiteGraph.registered_node_types[n.type], has_errors: !!n.has_errors,
    widgets: (n.widgets || []).map(w => [w.name, plain(w.value)]),
    bounding: box(n),
  }));
  const groups = g._groups.map(gr => ({title: gr.title, bounding: Array.from(gr._bounding),
                                       title_height: gr.titleHeight}));
  const p = await app.graphToPrompt();
  done({nodes, groups, output: plain(p.output)});
})().catch(e => done({error: String(e) + '\\n' + (e.stack || '')}));
"""


def _load(drv, name: str) -> dict:
    got = drv.execute_async_script(LOAD_JS, load_workflow(name), name)
    assert "error" not in got, got.get("error", "") + _console(drv)
    return got


@pytest.fixture(scope="module")
def built():
    from workflow_builder import build_workflows

    return build_workflows()


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@pytest.mark.parametrize("name", _workflow_names())
def test_workflow_loads_in_the_frontend_as_meant(page, built, object_info, name):
    assert name in built, f"{name} is not built by tests/workflow_builder.py"
    meant = built[name]
    got = _load(page, name)
    nodes = {n["id"]: n for n in got["nodes"]}
    assert sorted(nodes) == sorted(meant.intent), "nodes lost or added on load"
    missing = sorted({n["type"] for n in got["nodes"] if not n["registered"] or n["has_errors"]})
    assert missing == [], f"node types missing in the frontend: {missing}"
    wrong = []
    for nid, want in meant.intent.items():
        have = dict(nodes[nid]["widgets"])
        if have != want:
            diff = {k: (want.get(k, "<none>"), have.get(k, "<none>")) for k in sorted(set(want) | set(have))
                    if want.get(k, "<none>") != have.get(k, "<none>")}
            wrong.append(f"node {nid} {nodes[nid]['type']}: (meant, in the graph) {diff}")
    assert not wrong, "widgets do not hold the values the workflow means:\n" + "\n".join(wrong)
    # the frontend's own UI -> API conversion gives what the builder means ...
    expected = meant.api_prompt()
    prompt = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in got["output"].items()}
    assert prompt == expected
    # ... and so does the repo's converter, used by the server tests to queue the workflows
    ours = ui_to_api(load_workflow(name), object_info)
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in ours.items()} == expected


def _probe(required: dict, optional: dict | None = None) -> dict:
    optional = optional or {}
    return {"input": {"required": required, "optional": optional},
            "input_order": {"required": list(required), "optional": list(optional)},
            "output": [], "output_name": [], "output_is_list": [], "output_node": True,
            "category": "probe", "description": "", "python_module": "probe", "deprecated": False,
            "experimental": False}


# Node definitions that exercise each rule comfy_helpers.frontend_widgets follows.
PROBES = {
    "CavProbeSeed": _probe({"seed": ["INT", {}], "steps": ["INT", {}], "mode": [["a", "b"], {}]},
                           {"note": ["STRING", {}], "noise_seed": ["INT", {}]}),
    "CavProbeSeedOff": _probe({"seed": ["INT", {"control_after_generate": False}], "x": ["FLOAT", {}]}),
    "CavProbeControl": _probe({"mode": ["COMBO", {"options": ["a", "b"], "control_after_generate": True}],
                               "n": ["INT", {"control_after_generate": True}], "seed": ["INT", {"forceInput": True}]}),
    "CavProbeUpload": _probe({"video": ["COMBO", {"options": ["a.mp4"], "video_upload": True}], "n": ["INT", {}]},
                             {"path": ["STRING", {}], "seed": ["INT", {}]}),
}

PROBE_JS = """
const [defs, done] = arguments;
(async () => {
  const out = {};
  for (const [name, def] of Object.entries(defs)) {
    await window.app.registerNodeDef(name, {...def, name, display_name: name});
    const n = LiteGraph.createNode(name);
    out[name] = (n.widgets || []).map(w => w.name);
  }
  done(out);
})().catch(e => done({error: String(e) + '\\n' + (e.stack || '')}));
"""


def test_frontend_widget_rules_are_the_builders(page):
    """The widget list the frontend makes for a node definition (its own control and upload
    widgets included) is the one tests/workflow_builder.py writes widgets_values for."""
    got = page.execute_async_script(PROBE_JS, PROBES)
    assert "error" not in got, got.get("error")
    for name, info in PROBES.items():
        assert got[name] == [w for w, _ in frontend_widgets(info)], name


def _overlap(a: list[float], b: list[float]) -> bool:
    """Whether two [x, y, w, h] boxes share more than a 1-px sliver."""
    return min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]) > 1 and min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]) > 1


FIT_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const app = window.app;
  await app.extensionManager.command.execute('Comfy.Canvas.FitView');
  app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 500));
  const notes = app.graph._nodes.filter(n => n.type === 'Note').map(n => {
    const el = (n.widgets || [])[0]?.element;
    const shown = !!el && el.offsetParent !== null && getComputedStyle(el).visibility !== 'hidden';
    return {id: n.id, title: n.title, shown,
            scroll: el ? [el.scrollHeight, el.clientHeight] : null,
            font_px: el ? parseFloat(getComputedStyle(el).fontSize) : null};
  });
  done({scale: app.canvas.ds.scale, low_quality_below: app.canvas._lowQualityZoomThreshold,
        low_quality: app.canvas.low_quality, notes, window: [window.innerWidth, window.innerHeight]});
})().catch(e => done({error: String(e) + '\\n' + (e.stack || '')}));
"""


@pytest.mark.parametrize("name", _workflow_names())
def test_workflow_is_readable_fitted_to_1600_px(page, name):
    got = _load(page, name)
    nodes, groups = got["nodes"], got["groups"]
    crowded = [f"{a['type']} #{a['id']} / {b['type']} #{b['id']}" for i, a in enumerate(nodes) for b in nodes[i + 1:]
               if _overlap(a["bounding"], b["bounding"])]
    assert not crowded, f"nodes overlap: {crowded}"
    for g in groups:
        x, y, w, _ = g["bounding"]
        bar = [x, y, w, g["title_height"]]
        hidden = [f"{n['type']} #{n['id']}" for n in nodes if _overlap(n["bounding"], bar)]
        assert not hidden, f"group title {g['title']!r} is under {hidden}"
    fit = page.execute_async_script(FIT_JS)
    assert "error" not in fit, fit.get("error")
    assert fit["window"][0] == WINDOW[0]
    # fitted to the window, the frontend still draws node text and notes: below a zoom of
    # min_font_size_for_lod / NODE_TEXT_SIZE (8/14) it renders in "low quality", without them
    assert not fit["low_quality"] and fit["scale"] >= fit["low_quality_below"], \
        f"fitted zoom {fit['scale']:.2f} < {fit['low_quality_below']:.2f}: too large to read fitted to the window"
    for note in fit["notes"]:
        assert note["shown"], f"note {note['title']!r} not drawn at scale {fit['scale']:.2f}"
        sh, ch = note["scroll"]
        assert sh <= ch + 2, f"note {note['title']!r} text does not fit its box ({sh} > {ch} px): enlarge it"
    shots = os.environ.get("CAV_BROWSER_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.save_screenshot(str(Path(shots) / (Path(name).stem + ".png")))
    print(f"{name}: fitted scale {fit['scale']:.2f}, notes {[(n['title'], n['font_px']) for n in fit['notes']]}")
