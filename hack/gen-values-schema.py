#!/usr/bin/env python3
"""Write helm/gpu-rightsizer/values.schema.json from the chart's values.yaml.

    .venv/bin/python hack/gen-values-schema.py           # regenerate the schema
    .venv/bin/python hack/gen-values-schema.py --check   # exit 1, with a diff, if it is stale

values.yaml is the single source: every key must have a comment directly above it (it becomes the
key's ``description``), the default gives the type (boolean, integer, number, string, or an object
whose keys are described the same way, recursively), and an optional ``# +schema: {...}`` line
(JSON) among the comments adds constraints (``enum``, ``pattern``, ``minimum``...) or, when it
names a ``type``, replaces the inferred schema outright: that is how lists, nullable numbers,
string maps (labels, annotations) and objects passed to Kubernetes as they are (securityContext,
affinity) are declared. Every object the chart defines itself gets ``additionalProperties: false``,
so a misspelt key fails ``helm install`` / ``helm template`` / ``helm lint`` with Helm's schema
error instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import sys
from typing import Any

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from hack import generated

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "gpu-rightsizer"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*):(?:\s|$)")
_ANNOTATION = "+schema:"

Path = tuple[str, ...]


class ValuesError(ValueError):
    """values.yaml breaks a rule of this generator; the message names the key and line."""


@dataclasses.dataclass
class KeyDoc:
    line: int
    description: str
    annotation: dict[str, Any] | None


def key_docs(text: str) -> dict[Path, KeyDoc]:
    """The comment block directly above each mapping key, by the key's path.

    A blank line, a list item or any other content line ends a comment block, so only comments
    that touch the key document it. The description stops at a line that starts with
    "For example:" (examples stay in the file, out of the schema).
    """
    docs: dict[Path, KeyDoc] = {}
    stack: list[tuple[int, str]] = []
    comments: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:
            comments = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(key for _, key in stack), match["key"])
        stack.append((indent, match["key"]))
        docs[path] = _parse_comments(comments, path, number)
        comments = []
    return docs


def _parse_comments(comments: list[str], path: Path, line: int) -> KeyDoc:
    annotation: dict[str, Any] | None = None
    words: list[str] = []
    in_description = True
    for comment in comments:
        if comment.startswith(_ANNOTATION):
            raw = comment[len(_ANNOTATION) :].strip()
            try:
                loaded = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValuesError(
                    f"line {line}: {'.'.join(path)}: bad +schema JSON: {exc}"
                ) from None
            if not isinstance(loaded, dict):
                raise ValuesError(f"line {line}: {'.'.join(path)}: +schema must be a JSON object")
            annotation = loaded
            continue
        if not in_description:
            continue
        before, example, _ = comment.partition("For example:")
        words.append(before)
        in_description = not example
    description = " ".join(" ".join(words).split())
    return KeyDoc(line=line, description=description, annotation=annotation)


def _inferred(value: Any, path: Path, docs: dict[Path, KeyDoc]) -> dict[str, Any]:
    name = ".".join(path)
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, dict):
        if not value:
            raise ValuesError(f"{name}: an empty object needs a +schema line with its type")
        return {
            "type": "object",
            "properties": {
                str(key): key_schema(child, (*path, str(key)), docs) for key, child in value.items()
            },
            "additionalProperties": False,
        }
    raise ValuesError(
        f"{name}: a {type(value).__name__} default needs a +schema line with its type"
    )


def key_schema(value: Any, path: Path, docs: dict[Path, KeyDoc]) -> dict[str, Any]:
    """The schema of one key: description, then the inferred or declared type and constraints."""
    doc = docs.get(path)
    name = ".".join(path)
    if doc is None or not doc.description:
        where = f" (line {doc.line})" if doc else ""
        raise ValuesError(f"{name}{where}: every key needs a comment directly above it")
    annotation = doc.annotation or {}
    declared = "type" in annotation
    body = dict(annotation) if declared else {**_inferred(value, path, docs), **annotation}
    schema: dict[str, Any] = {"description": doc.description, **body}
    if declared or body["type"] != "object":
        # The defaults of an object the chart defines are given on its keys.
        schema["default"] = value
    return schema


def build(text: str) -> dict[str, Any]:
    """The whole schema for values.yaml's text."""
    values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValuesError("values.yaml must be a mapping")
    docs = key_docs(text)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "Values of the gpu-rightsizer chart",
        "type": "object",
        "properties": {
            str(key): key_schema(value, (str(key),), docs) for key, value in values.items()
        },
        "additionalProperties": False,
    }


def render(text: str | None = None) -> str:
    """The schema file's exact text."""
    source = VALUES.read_text(encoding="utf-8") if text is None else text
    return json.dumps(build(source), indent=2, ensure_ascii=False) + "\n"


def check(path: pathlib.Path = SCHEMA) -> int:
    """0 when ``path`` holds exactly what would be generated, else 1 with a diff on stderr."""
    return generated.check(path, render(), "run hack/gen-values-schema.py")


def main(argv: list[str] | None = None) -> int:
    try:
        return generated.main(argv, doc=__doc__, output=SCHEMA, render=render, check_file=check)
    except ValuesError as exc:
        print(f"{VALUES.relative_to(ROOT)}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
