"""Loads the packaged GPU catalog and a user's catalog overrides.

The only I/O here is reading the packaged ``data/catalog.yaml`` and an override file given by
path. Problems with either (malformed YAML or JSON, values that fail validation) raise
:class:`CatalogError`, whose one-line message names the file and the field path, e.g.
``overrides.yaml: prices.H100-80GB.perGpuHour: Input should be greater than or equal to 0``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import pathlib
from collections.abc import Mapping
from typing import TypeVar

import pydantic
import yaml

from gpu_rightsizer.audit import placements
from gpu_rightsizer.models import gpus, precisions

PACKAGED_CATALOG = "catalog.yaml"
PACKAGED_PRECISIONS = "precisions.yaml"
PACKAGED_MIG_PLACEMENTS = "mig-placements.yaml"

_M = TypeVar("_M", bound=pydantic.BaseModel)


class CatalogError(ValueError):
    """A catalog or override file that cannot be read, parsed or validated."""


class _Loader(yaml.SafeLoader):
    """Safe YAML that keeps dates as strings (``date: 2025-06-01`` stays ``"2025-06-01"``)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@functools.cache
def default_catalog() -> gpus.Catalog:
    """The catalog shipped with the package (parsed once per process)."""
    resource = importlib.resources.files("gpu_rightsizer").joinpath("data", PACKAGED_CATALOG)
    return parse_catalog(resource.read_text(encoding="utf-8"), PACKAGED_CATALOG)


@functools.cache
def mig_placements() -> placements.Table:
    """The MIG placement rules shipped with the package (``data/mig-placements.yaml``)."""
    resource = importlib.resources.files("gpu_rightsizer").joinpath("data", PACKAGED_MIG_PLACEMENTS)
    return parse_mig_placements(resource.read_text(encoding="utf-8"), PACKAGED_MIG_PLACEMENTS)


def parse_mig_placements(text: str, source: str) -> placements.Table:
    """Parse and check MIG placement YAML; ``source`` names the file in error messages."""
    data = _parse(text, source, as_json=False)
    if not isinstance(data, Mapping):
        raise CatalogError(f"{source}: expected a mapping at the top level")
    try:
        return placements.Table(
            layouts=tuple(
                placements.Layout(
                    whole_gpu_compute_slices=int(x["wholeGpuComputeSlices"]),
                    memory_slices=int(x["memorySlices"]),
                )
                for x in data["layouts"]
            ),
            rules=tuple(
                placements.Rule(
                    gpu_memory_slices=int(r["gpuMemorySlices"]),
                    compute_slices=int(r["computeSlices"]),
                    memory_slices=int(r["memorySlices"]),
                    start_slices=tuple(int(s) for s in r["startSlices"]),
                )
                for r in data["rules"]
            ),
        )
    except KeyError as exc:
        raise CatalogError(f"{source}: missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{source}: {_one_line(str(exc))}") from None


def parse_catalog(text: str, source: str) -> gpus.Catalog:
    """Parse and validate catalog YAML; ``source`` names the file in error messages."""
    data = _parse(text, source, as_json=False)
    return _validate(gpus.Catalog, data, source)


def load_overrides(path: pathlib.Path) -> gpus.CatalogOverrides:
    """Read a user's override file (YAML, or JSON when it ends in ``.json``).

    An empty file means no overrides.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from None
    data = _parse(text, str(path), as_json=path.suffix.lower() == ".json")
    return _validate(gpus.CatalogOverrides, {} if data is None else data, str(path))


def load_catalog(overrides: pathlib.Path | None = None) -> gpus.Catalog:
    """The packaged catalog with the overrides in ``overrides`` (if given) in force."""
    catalog = default_catalog()
    if overrides is None:
        return catalog
    try:
        return catalog.with_overrides(load_overrides(overrides))
    except CatalogError:
        raise
    except ValueError as exc:
        raise CatalogError(f"{overrides}: {_one_line(str(exc))}") from None


def _parse(text: str, source: str, *, as_json: bool) -> object:
    if as_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(
                f"{source}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: malformed YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return where + _one_line(exc.problem or exc.context or "invalid YAML")
    return _one_line(str(exc))


def _validate(model: type[_M], data: object, source: str) -> _M:
    if not isinstance(data, Mapping):
        raise CatalogError(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise CatalogError(f"{source}: {_describe(exc)}") from None


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        message = _one_line(error["msg"]).removeprefix("Value error, ")
        path = ".".join(str(part) for part in error["loc"])
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@functools.cache
def default_precisions() -> precisions.PrecisionTable:
    """Quality and speed-up figures per weight format shipped with the package."""
    resource = importlib.resources.files("gpu_rightsizer").joinpath("data", PACKAGED_PRECISIONS)
    data = _parse(resource.read_text(encoding="utf-8"), PACKAGED_PRECISIONS, as_json=False)
    return _validate(precisions.PrecisionTable, data, PACKAGED_PRECISIONS)
