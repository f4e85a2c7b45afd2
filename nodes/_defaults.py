"""Widgets whose "default" resolves per model: the sentinel values the nodes show (0, -1 or
"default") and their tooltips, read from cav_core/defaults.py. A sentinel reaches cav_core as
None, and cav_core resolves it for the model it runs on (cav_core.defaults.profile_for)."""

from __future__ import annotations

from typing import Any

from cav_core.defaults import REAL, TOY, Profile

#: Options of a per-model on/off setting.
SWITCH = ["default", "on", "off"]


def show(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, tuple):
        return "-".join(f"{x:g}" for x in v)
    if v is None:
        return "never"
    return f"{v:g}" if isinstance(v, float) else str(v)


def hint(key: str, sentinel: str = "0", part: int | None = None) -> str:
    """'{sentinel}: the model's default (X on the toy model, Y on other models).' for a tooltip."""
    toy, real = (Profile(n)[key] for n in (TOY, REAL))
    if part is not None:
        toy, real = toy[part], real[part]
    return f"{sentinel}: the model's default ({show(toy)} on the toy model, {show(real)} on other models)."


def or_none(v: Any) -> Any:
    """A number widget's sentinel (0 or negative) or an unconnected input as None."""
    return None if v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 else v


def switch(v: Any) -> bool | None:
    """'default' / 'on' / 'off' as None / True / False (True/False: workflows saved when the
    widget was a BOOLEAN)."""
    return {"on": True, "off": False, True: True, False: False}.get(v)
