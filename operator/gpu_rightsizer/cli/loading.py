"""Reading ``-f`` manifest files and ``--usage`` files into the engine's inputs."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic
import yaml

from gpu_rightsizer import catalogs, config, ports
from gpu_rightsizer.manifests import targets
from gpu_rightsizer.metrics import prometheus
from gpu_rightsizer.models import crd, gpus, precisions, profiles, workloads


class InputError(ValueError):
    """Input that cannot be used; the message is one line naming the file and the field."""


@dataclasses.dataclass(frozen=True)
class Resource:
    """A GPUWorkload with where it came from."""

    path: pathlib.Path
    index: int
    body: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Manifests:
    gpu_workloads: list[Resource]
    targets: dict[tuple[str, str, str], Resource]
    """(kind, namespace, name) -> the Deployment or StatefulSet."""


def read_manifests(paths: Iterable[pathlib.Path]) -> Manifests:
    found: list[Resource] = []
    found_targets: dict[tuple[str, str, str], Resource] = {}
    for path in paths:
        for index, doc in enumerate(_documents(path)):
            for item in _items(doc):
                res = Resource(path, index, item)
                api, kind = item.get("apiVersion"), item.get("kind")
                if api == crd.API_VERSION and kind == crd.KIND:
                    found.append(res)
                elif api == "apps/v1" and kind in ("Deployment", "StatefulSet"):
                    meta = item.get("metadata") or {}
                    key = (str(kind), _namespace(meta), str(meta.get("name", "")))
                    found_targets[key] = res
    if not found:
        names = ", ".join(str(p) for p in paths)
        raise InputError(f"{names}: no {crd.KIND} ({crd.API_VERSION}) found")
    return Manifests(found, found_targets)


def _documents(path: pathlib.Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc.__class__.__name__}: {exc}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}: malformed YAML{where}: {problem}") from None


def _items(doc: Any) -> list[Mapping[str, Any]]:
    if not isinstance(doc, Mapping):
        return []
    if doc.get("kind") == "List" or (doc.get("kind", "").endswith("List") and "items" in doc):
        return [i for i in doc.get("items") or [] if isinstance(i, Mapping)]
    return [doc]


def _namespace(meta: Mapping[str, Any]) -> str:
    return str(meta.get("namespace") or "default")


def read_usage(paths: Iterable[pathlib.Path]) -> dict[tuple[str, str], profiles.UsageProfile]:
    usage: dict[tuple[str, str], profiles.UsageProfile] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read: {exc.__class__.__name__}: {exc}") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise InputError(
                f"{path}: malformed {path.suffix.lstrip('.') or 'file'}: {str(exc).splitlines()[0]}"
            ) from None
        try:
            parsed = profiles.UsageFile.model_validate(data)
        except pydantic.ValidationError as exc:
            raise InputError(f"{path}: {_first_error(exc)}") from None
        for item in parsed.items:
            usage[(item.namespace, item.name)] = item.usage
    return usage


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in err["loc"]
    ).replace(".[", "[")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc or '(top level)'}: {err['msg']}{more}"


@dataclasses.dataclass(frozen=True)
class Loaded:
    workload: workloads.Workload
    source: Resource
    generation: int | None


def build_workloads(
    manifests: Manifests,
    usage: Mapping[tuple[str, str], profiles.UsageProfile],
    catalog: gpus.Catalog,
) -> list[Loaded]:
    """Validate each GPUWorkload and read its target's current allocation."""
    loaded = []
    for res in manifests.gpu_workloads:
        meta = res.body.get("metadata") or {}
        namespace, name = _namespace(meta), str(meta.get("name", ""))
        where = f"{res.path}: {crd.KIND} {namespace}/{name}"
        try:
            spec = crd.GPUWorkloadSpec.model_validate(res.body.get("spec") or {})
        except pydantic.ValidationError as exc:
            raise InputError(f"{where}: spec.{_first_error(exc)}") from None
        ref = spec.target_ref
        target = manifests.targets.get((ref.kind, namespace, ref.name))
        if target is None:
            raise InputError(
                f"{where}: spec.targetRef: {ref.kind} {namespace}/{ref.name} is not in the "
                "given files"
            )
        try:
            gpus_ = targets.read(target.body, ref.container)
        except targets.TargetError as exc:
            raise InputError(f"{target.path}: {ref.kind} {namespace}/{ref.name}: {exc}") from None
        profile = usage.get((namespace, name))
        model_name, field = _gpu_model(spec, gpus_, profile)
        if model_name is None:
            raise InputError(
                f"{where}: spec.gpuModel: the GPU model is unknown: pin the target with a "
                f"{targets.PRODUCT_LABEL} node selector, set spec.gpuModel, or give gpuModel in "
                "the usage profile"
            )
        gpu = catalog.resolve(model_name)
        if gpu is None:
            raise InputError(
                f"{where}: {field}: unknown GPU model {model_name!r} "
                f"(known: {', '.join(catalog.ids)})"
            )
        for allowed in spec.policy.allowed_gpu_models or ():
            if catalog.resolve(allowed) is None:
                raise InputError(
                    f"{where}: spec.policy.allowedGPUModels: unknown GPU model {allowed!r} "
                    f"(known: {', '.join(catalog.ids)})"
                )
        if gpus_.mig_profile and gpu.mig_profile(gpus_.mig_profile) is None:
            raise InputError(
                f"{target.path}: {ref.kind} {namespace}/{ref.name}: {gpu.id} has no MIG profile "
                f"{gpus_.mig_profile!r}"
            )
        current = workloads.CurrentAllocation(
            gpu_model=gpu.id,
            mig_profile=gpus_.mig_profile,
            gpus_per_replica=gpus_.gpus_per_replica,
            replicas=gpus_.replicas,
            precision=spec.model.precision if spec.model else precisions.Precision.BF16,
        )
        generation = meta.get("generation")
        loaded.append(
            Loaded(
                workloads.Workload(
                    ref=workloads.WorkloadRef(namespace=namespace, name=name),
                    spec=spec,
                    current=current,
                    usage=profile,
                ),
                res,
                generation if isinstance(generation, int) else None,
            )
        )
    return loaded


def _gpu_model(
    spec: crd.GPUWorkloadSpec,
    found: targets.TargetGPUs,
    profile: profiles.UsageProfile | None,
) -> tuple[str | None, str]:
    if found.gpu_product:
        return found.gpu_product, f"nodeSelector {targets.PRODUCT_LABEL}"
    if spec.gpu_model:
        return spec.gpu_model, "spec.gpuModel"
    if profile is not None and profile.gpu_model:
        return profile.gpu_model, "usage gpuModel"
    return None, ""


def load_catalog(overrides: pathlib.Path | None) -> gpus.Catalog:
    try:
        return catalogs.load_catalog(overrides)
    except catalogs.CatalogError as exc:
        raise InputError(str(exc)) from None


def read_prometheus(
    manifests: Manifests,
    conn: config.PrometheusConnection,
    *,
    window: str,
    at: datetime.datetime | None,
) -> dict[tuple[str, str], profiles.UsageProfile]:
    """Usage of every GPUWorkload in the files from Prometheus (the operator's queries)."""
    wanted = []
    for res in manifests.gpu_workloads:
        meta = res.body.get("metadata") or {}
        ref = workloads.WorkloadRef(namespace=_namespace(meta), name=str(meta.get("name", "")))
        target = (res.body.get("spec") or {}).get("targetRef") or {}
        wanted.append(
            ports.TargetPods(
                workload=ref,
                namespace=ref.namespace,
                kind=str(target.get("kind", "Deployment")),
                name=str(target.get("name", "")),
            )
        )
    source = prometheus.PrometheusUsageSource(prometheus.settings_from(conn))
    report = source.collect(wanted, window=window, at=at)
    if report.error is not None:
        raise InputError(report.error)
    # Rounded exactly as the operator rounds before it writes a status.
    return {(r.namespace, r.name): p.rounded() for r, p in report.profiles.items()}
