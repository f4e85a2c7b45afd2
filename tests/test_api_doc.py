"""docs/API.md is generated from the real signatures (tests/api_doc.py) and must be current."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_doc  # noqa: E402


def test_api_md_is_current():
    assert api_doc.API_MD.read_text() == api_doc.build(), "docs/API.md is stale: run `python tests/api_doc.py`"


def test_api_md_shows_every_parameter_of_a_public_function():
    """The page lists what the code takes: issue #32 found train_temporal_lora documented
    without min_timestep, recolor and alpha."""
    import inspect

    from cav_core.train import train_temporal_lora

    line = next(x for x in api_doc.build().splitlines() if x.startswith("- `train_temporal_lora("))
    listed = line.split("`")[1].split("(", 1)[1].rsplit(")", 1)[0]
    assert [p.split("=")[0] for p in listed.split(", ")] == list(inspect.signature(train_temporal_lora).parameters)
