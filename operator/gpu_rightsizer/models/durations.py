"""Durations as users write them in the resource and on the command line: ``90s``, ``24h``, ``7d``.

The same grammar as Prometheus range selectors (``1h30m``), so a window in the spec can be pasted
into PromQL unchanged. Pure parsing and formatting only.

Every duration is bounded: at most ``MAX_DAYS`` (3650 days, ten years) in total, at most
``MAX_LENGTH`` characters, and each number has at most as many digits as that maximum needs in
its unit (``[0-9]{1,4}d``, ``[0-9]{1,9}s``...), so that the API server rejects ``99999999999d``
by the CRD's pattern, and :func:`parse` rejects what the pattern still lets through (``9999d``)
with a ``ValueError``: it never overflows.
"""

from __future__ import annotations

import datetime
import functools
import re

MAX_DAYS = 3650
"""The longest duration anywhere (observation, windows, cooldowns, intervals): ten years."""
MAX_LENGTH = 32
"""The longest duration text (``1w2d3h4m5s6ms`` needs 13)."""

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_MILLISECONDS = MAX_DAYS * _UNIT_MS["d"]


def _digits(unit: str) -> int:
    """Digits of the largest count of ``unit`` within the maximum (3650d: 4, in seconds: 9)."""
    return len(str(MAX_MILLISECONDS // _UNIT_MS[unit]))


# ``ms`` first, so the alternation never reads it as minutes followed by garbage.
_UNITS = ("ms", "s", "m", "h", "d", "w")
PATTERN = "^(" + "|".join(f"[0-9]{{1,{_digits(u)}}}{u}" for u in _UNITS) + ")+$"
"""One or more ``<number><unit>`` parts, each number bounded in digits (RE2-compatible)."""
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_GRAMMAR = re.compile(r"^([0-9]+(ms|s|m|h|d|w))+$")


@functools.lru_cache(maxsize=256)
def parse(text: str) -> datetime.timedelta:
    """Parse ``1h30m``-style text into a timedelta.

    Raises only ``ValueError``, naming the text: for text that is not a duration, and for a
    duration above ``MAX_DAYS``.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected text such as 24h or 7d")
    if len(text) > MAX_LENGTH or not _GRAMMAR.fullmatch(text):
        shown = text if len(text) <= MAX_LENGTH else f"{text[:MAX_LENGTH]}..."
        raise ValueError(
            f"invalid duration {shown!r}: use a number and a unit (ms, s, m, h, d, w), "
            f"at most {MAX_LENGTH} characters"
        )
    # Integer milliseconds: exact, and no float or timedelta arithmetic before the bound check.
    milliseconds = sum(int(n) * _UNIT_MS[u] for n, u in _PART.findall(text))
    if milliseconds > MAX_MILLISECONDS:
        raise ValueError(f"duration {text!r} is longer than the maximum of {MAX_DAYS}d")
    return datetime.timedelta(milliseconds=milliseconds)


def bounded(text: str) -> str:
    """``text`` unchanged when :func:`parse` accepts it (a pydantic validator)."""
    parse(text)
    return text


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
