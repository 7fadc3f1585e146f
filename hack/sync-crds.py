#!/usr/bin/env python3
"""Copy the CRDs from crds/ into the Helm chart as templates (cert-manager style).

    .venv/bin/python hack/sync-crds.py           # write helm/gpu-rightsizer/templates/crds/
    .venv/bin/python hack/sync-crds.py --check   # exit 1, with a diff, if the copies drift

crds/ holds the canonical CRDs (generated from the pydantic models by hack/gen-crds.py). The chart
renders them from ``templates/crds/`` rather than from a chart-level ``crds/`` folder, which Helm
installs once and never upgrades: as templates they are upgraded with the release. Each copy is
the canonical file with

- ``{{- if .Values.crds.enabled }}`` ... ``{{- end }}`` around it;
- the chart's labels, and ``helm.sh/resource-policy: keep`` when ``crds.keep`` is true (so that
  ``helm uninstall`` leaves the CRD, and with it every GPUWorkload), added to its metadata;
- any ``{{`` in the text escaped, so Helm renders the schema verbatim.

Files in templates/crds/ with no counterpart in crds/ are removed.
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "crds"
TARGET = ROOT / "helm" / "gpu-rightsizer" / "templates" / "crds"

_METADATA = re.compile(r"^metadata:\n  name: (?P<name>\S+)\n(?=\S)", re.MULTILINE)

OPEN = "{{- if .Values.crds.enabled }}\n"
CLOSE = "{{- end }}\n"
METADATA = """\
metadata:
  name: {name}
  labels:
    {{{{- include "gpu-rightsizer.labels" . | nindent 4 }}}}
  {{{{- if .Values.crds.keep }}}}
  annotations:
    helm.sh/resource-policy: keep
  {{{{- end }}}}
"""


class SyncError(ValueError):
    """A canonical CRD the script cannot wrap (the message says why)."""


def _header(name: str) -> str:
    return (
        f"# Synced from crds/{name} by hack/sync-crds.py; do not edit.\n"
        "# Rendered when crds.enabled; kept on uninstall when crds.keep.\n"
    )


def template(name: str, text: str) -> str:
    """The chart template for the canonical CRD file ``name`` with content ``text``."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"
    body = body.replace("{{", '{{"{{"}}')
    found = list(_METADATA.finditer(body))
    if len(found) != 1:
        raise SyncError(
            f"crds/{name}: expected one top-level 'metadata:' holding only 'name:', "
            "so that labels and annotations can be added"
        )
    match = found[0]
    metadata = METADATA.format(name=match["name"])
    return _header(name) + OPEN + body[: match.start()] + metadata + body[match.end() :] + CLOSE


def wanted() -> dict[str, str]:
    """File name -> the template's exact text, for every CRD in crds/."""
    return {
        path.name: template(path.name, path.read_text(encoding="utf-8"))
        for path in sorted(SOURCE.glob("*.yaml"))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the chart's copies drift")
    args = parser.parse_args(argv)
    try:
        files = wanted()
    except SyncError as exc:
        print(exc, file=sys.stderr)
        return 1
    present = {path.name: path for path in TARGET.glob("*.yaml")} if TARGET.exists() else {}
    stale = sorted(set(present) - set(files))
    changed = sorted(
        name
        for name, text in files.items()
        if name not in present or present[name].read_text(encoding="utf-8") != text
    )
    if args.check:
        for name in changed:
            current = present[name].read_text(encoding="utf-8") if name in present else ""
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    files[name].splitlines(keepends=True),
                    f"{TARGET.relative_to(ROOT)}/{name}",
                    f"from crds/{name}",
                )
            )
        for name in stale:
            print(f"{TARGET.relative_to(ROOT)}/{name} has no source in crds/")
        if changed or stale:
            print("the chart's CRDs drift from crds/: run hack/sync-crds.py", file=sys.stderr)
            return 1
        return 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (TARGET / name).write_text(files[name], encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT)}/{name}")
    for name in stale:
        present[name].unlink()
        print(f"removed {TARGET.relative_to(ROOT)}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
