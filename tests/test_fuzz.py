"""Fuzz the file readers: random bytes and truncated files end in the project's own errors.

Random byte strings (some behind a real magic number: GIF, EBML, mp4 ``ftyp``, PNG,
pickle, a safetensors header length) and random truncations of valid files go to the
video readers (``data.load_video_clip``, tests/video_reader.py's ``read_video``) and the LoRA loaders
(``adapter_files.load_adapter``, ``lora_convert.load_any_lora``). Every call must raise
a :class:`cav_core.errors.CavError` subclass: not succeed, not raise anything else,
not unpickle anything, and not take long. The cases run in a child process with a
time limit, so a crash (segfault in a decoder) or a hang fails the test, naming the
case. Seeded: the same cases every run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

SEED = 20240611
N_RANDOM = 110          # random byte strings, each fed to all four readers
N_TRUNCATIONS = 20      # random truncations of each of the 5 valid files (plus 2 fixed ones each)
CASE_LIMIT_S = 10.0     # one call
TOTAL_LIMIT_S = 55.0    # the whole child process, imports included

VIDEO_EXTS = (".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi", "")
MAGICS = (b"", b"GIF89a", b"GIF87a", b"\x1aE\xdf\xa3", b"\x00\x00\x00\x18ftypisom", b"\x89PNG\r\n\x1a\n",
          b"\x80\x04\x95", b"PK\x03\x04", b"\x40\x00\x00\x00\x00\x00\x00\x00{\"", b"RIFF\x00\x00\x00\x00AVI ")


def test_fuzz_readers_raise_only_cav_errors(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, env=env,
                              timeout=TOTAL_LIMIT_S)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        last = [line for line in out.splitlines() if line.startswith("START ")][-1:]
        raise AssertionError(f"fuzzing hung (> {TOTAL_LIMIT_S} s); last case started: {last}") from None
    starts = [line for line in proc.stdout.splitlines() if line.startswith("START ")]
    assert proc.returncode == 0, (f"the fuzz process died (exit {proc.returncode}) during {starts[-1:]}\n"
                                  f"{proc.stderr[-3000:]}")
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert result["cases"] >= 200 and result["calls"] >= 4 * N_RANDOM
    assert result["failures"] == [], "\n".join(result["failures"][:20])
    assert result["slowest_s"] < CASE_LIMIT_S
    assert set(result["errors"]) <= {"VideoReadError", "AdapterError", "InputError"}
    assert time.time() - t0 < TOTAL_LIMIT_S


# --------------------------------------------------------------------------- the child process

def _valid_files(folder: Path) -> list[Path]:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from cav_core.adapter_files import AdapterFile, save_adapter
    from cav_core.textual_inversion import TokenEmbeddings
    from cav_core.adapters import LoraWeights
    from cav_core.video_io import write_video

    rng = np.random.default_rng(SEED)
    frames = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    frames[:, 8:16, 8:16] = 255
    files = [write_video(folder / f"valid{ext}", frames, fps=8) for ext in (".mp4", ".webm", ".gif")]
    g = torch.Generator().manual_seed(SEED)
    mod = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    lora = LoraWeights("spatial", {f"{mod}.lora_A.weight": torch.randn(4, 320, generator=g),
                                   f"{mod}.lora_B.weight": torch.randn(320, 4, generator=g)}, {mod: 4.0})
    files.append(save_adapter(folder / "valid_ours.safetensors",
                              AdapterFile("absorber", lora=lora, tokens=TokenEmbeddings(("<cav-0>",), torch.zeros(1, 8)),
                                          base_model="x@1", info={"kind": "both"})))
    kohya = "lora_unet_" + mod.replace(".", "_")
    save_file({f"{kohya}.lora_down.weight": torch.randn(4, 320, generator=g),
               f"{kohya}.lora_up.weight": torch.randn(320, 4, generator=g), f"{kohya}.alpha": torch.tensor(4.0)},
              str(folder / "valid_kohya.safetensors"), metadata={"ss_network_module": "networks.lora"})
    files.append(folder / "valid_kohya.safetensors")
    return files


def _cases(folder: Path) -> list[tuple[str, Path, str]]:
    """(case id, file, 'video' or 'lora'), files written; deterministic for SEED."""
    rnd = random.Random(SEED)
    cases = []
    for i in range(N_RANDOM):
        n = rnd.choice([0, 1, 7, 16, 64, 300, 1024, 4096, 20000])
        blob = rnd.choice(MAGICS) + rnd.randbytes(n)
        ext = rnd.choice(VIDEO_EXTS)
        video, lora = folder / f"random{i}{ext}", folder / f"random{i}.safetensors"
        video.write_bytes(blob)
        lora.write_bytes(blob)
        cases += [(f"random{i} ({len(blob)} bytes{', ' + ext if ext else ''})", video, "video"),
                  (f"random{i} ({len(blob)} bytes, .safetensors)", lora, "lora")]
    for src in _valid_files(folder):
        data = src.read_bytes()
        cuts = sorted({0, len(data) - 1, *(rnd.randrange(0, len(data)) for _ in range(N_TRUNCATIONS))})
        for cut in cuts:
            p = folder / f"cut{cut}_{src.name}"
            p.write_bytes(data[:cut])
            cases.append((f"{src.name} truncated to {cut} of {len(data)} bytes", p,
                          "lora" if src.suffix == ".safetensors" else "video"))
    return cases


def _run(folder: Path) -> dict:
    import pickle

    import torch

    from cav_core.adapter_files import load_adapter
    from cav_core.data import load_video_clip
    from cav_core.errors import CavError
    from cav_core.lora_convert import load_any_lora
    from video_reader import read_video

    def no_unpickling(*a, **k):
        raise RuntimeError("UNPICKLED: a loader unpickled a file")

    readers = {"video": [("read_video", read_video), ("load_video_clip", lambda p: load_video_clip(p, num_frames=8))],
               "lora": [("load_adapter", load_adapter), ("load_any_lora", load_any_lora)]}
    cases = _cases(folder)
    pickle.load = pickle.loads = torch.load = no_unpickling
    failures, errors, slowest, calls = [], {}, 0.0, 0
    for case_id, path, kind in cases:
        for name, read in readers[kind]:
            print(f"START {name}: {case_id}", flush=True)
            t = time.time()
            try:
                read(path)
            except CavError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            except Exception as e:  # noqa: BLE001 - this is what the fuzz looks for
                failures.append(f"{name}: {case_id}: {type(e).__name__}: {str(e)[:200]}")
            else:
                failures.append(f"{name}: {case_id}: no error (read as valid)")
            dt = time.time() - t
            slowest = max(slowest, dt)
            if dt > CASE_LIMIT_S:
                failures.append(f"{name}: {case_id}: took {dt:.1f} s")
            calls += 1
    return {"cases": len(cases), "calls": calls, "failures": failures, "errors": errors, "slowest_s": slowest}


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    print("RESULT " + json.dumps(_run(Path(sys.argv[1]))), flush=True)
