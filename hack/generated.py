"""Shared by the hack/gen-*.py scripts: write a generated file, or check it is up to date."""

from __future__ import annotations

import argparse
import difflib
import pathlib
import sys
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent


def check(path: pathlib.Path, expected: str, hint: str) -> int:
    """0 when ``path`` holds exactly ``expected``, else 1 with a diff and ``hint`` on stderr."""
    actual = path.read_text(encoding="utf-8") if path.exists() else ""
    if actual == expected:
        return 0
    name = path.relative_to(ROOT)
    diff = difflib.unified_diff(
        actual.splitlines(keepends=True),
        expected.splitlines(keepends=True),
        fromfile=f"{name} (committed)",
        tofile=f"{name} (generated)",
    )
    sys.stderr.writelines(list(diff)[:200])
    sys.stderr.write(f"\n{name} is out of date: {hint} and commit it\n")
    return 1


def main(
    argv: list[str] | None,
    *,
    doc: str | None,
    output: pathlib.Path,
    render: Callable[[], str],
    check_file: Callable[[], int],
) -> int:
    """``--check`` runs ``check_file``; otherwise ``render()`` is written to ``output``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed file differs; write nothing"
    )
    args = parser.parse_args(argv)
    if args.check:
        return check_file()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(), encoding="utf-8")
    print(f"wrote {output.relative_to(ROOT)}")
    return 0
