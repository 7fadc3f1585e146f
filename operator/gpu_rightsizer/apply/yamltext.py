"""A small, deterministic YAML writer for plain JSON data (dicts, lists, strings, numbers).

Block style, keys in the order given; a string is written plain only where YAML reads it back
as the same string, else JSON-quoted (JSON strings are valid YAML). The patch builders use it
for diffs and ready-to-commit patches; the core may not import a YAML library. Never does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

_PLAIN = re.compile(r"^(--?)?[A-Za-z_/][A-Za-z0-9_./=+@:-]*$")
_RESERVED = frozenset(
    {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", "nan", "inf"}
)


def scalar(value: Any) -> str:
    """One scalar as YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and not text.endswith(":") and text.lower() not in _RESERVED:
        return text
    return _quoted(text)


def _printable(code: int) -> bool:
    """YAML's printable set, less its line breaks and tab (written escaped)."""
    if code in (0x2028, 0x2029):
        return False
    return (
        0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _quoted(text: str) -> str:
    """A double-quoted YAML scalar; everything outside the printable set escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif _printable(code):
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def dump(value: Any) -> str:
    """The YAML document for ``value`` (ends with a newline)."""
    if isinstance(value, Mapping | list) and value:
        return "\n".join(_lines(value, 0)) + "\n"
    return _inline(value) + "\n"


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def _nested(value: Any) -> bool:
    return isinstance(value, Mapping | list) and bool(value)


def _lines(value: Any, indent: int) -> Iterator[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _nested(item):
                yield f"{pad}{scalar(str(key))}:"
                yield from _lines(item, indent + 2 if isinstance(item, Mapping) else indent)
            else:
                yield f"{pad}{scalar(str(key))}: {_inline(item)}"
        return
    for item in value:
        if not _nested(item):
            yield f"{pad}- {_inline(item)}"
            continue
        inner = list(_lines(item, indent + 2))
        yield f"{pad}- {inner[0][indent + 2 :]}"
        yield from inner[1:]
