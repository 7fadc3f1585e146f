"""Durations as users write them in the resource and on the command line: ``90s``, ``24h``, ``7d``.

The same grammar as Prometheus range selectors (``1h30m``), so a window in the spec can be pasted
into PromQL unchanged. Pure parsing and formatting only.
"""

from __future__ import annotations

import datetime
import functools
import re

PATTERN = r"^([0-9]+(ms|s|m|h|d|w))+$"
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@functools.lru_cache(maxsize=256)
def parse(text: str) -> datetime.timedelta:
    """Parse ``1h30m``-style text into a timedelta; ValueError names the bad text."""
    if not re.fullmatch(PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d, w)")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    return datetime.timedelta(seconds=seconds)


def format_seconds(seconds: float) -> str:
    """The shortest exact form: 86400 -> ``1d``, 5400 -> ``1h30m``, 0 -> ``0s``."""
    remaining = round(seconds)
    if remaining <= 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
