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

from gpu_rightsizer import catalogs, config, decision, ports
from gpu_rightsizer.kube import clients, errors, reading
from gpu_rightsizer.manifests import nodes, targets
from gpu_rightsizer.metrics import prometheus
from gpu_rightsizer.models import crd, gpus, inventory, profiles, workloads


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
    nodes: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)
    """Node objects: the inventory the recommendations are drawn from."""
    pods: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)
    replicasets: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)


def read_manifests(paths: Iterable[pathlib.Path]) -> Manifests:
    found: list[Resource] = []
    found_targets: dict[tuple[str, str, str], Resource] = {}
    nodes: list[Mapping[str, Any]] = []
    pods: list[Mapping[str, Any]] = []
    replicasets: list[Mapping[str, Any]] = []
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
                elif api == "v1" and kind == "Node":
                    nodes.append(item)
                elif api == "v1" and kind == "Pod":
                    pods.append(_with_namespace(item))
                elif api == "apps/v1" and kind == "ReplicaSet":
                    replicasets.append(_with_namespace(item))
    if not found:
        names = ", ".join(str(p) for p in paths)
        raise InputError(f"{names}: no {crd.KIND} ({crd.API_VERSION}) found")
    return Manifests(found, found_targets, nodes, pods, replicasets)


def _with_namespace(item: Mapping[str, Any]) -> dict[str, Any]:
    """The object with ``metadata.namespace`` set (``default`` when a manifest omits it)."""
    meta = dict(item.get("metadata") or {})
    meta["namespace"] = _namespace(meta)
    return {**item, "metadata": meta}


def snapshot(manifests: Manifests) -> reading.Snapshot:
    """The files as the operator's list calls would have returned them."""
    deployments: list[Mapping[str, Any]] = []
    statefulsets: list[Mapping[str, Any]] = []
    for (kind, _, _), res in manifests.targets.items():
        (deployments if kind == "Deployment" else statefulsets).append(_with_namespace(res.body))
    return reading.Snapshot(
        deployments=deployments,
        statefulsets=statefulsets,
        replicasets=manifests.replicasets,
        pods=manifests.pods,
        nodes=manifests.nodes,
    )


def objects(manifests: Manifests) -> list[decision.WorkloadObject]:
    """The GPUWorkloads of the files as the operator reads them (status included, if any)."""
    out = []
    for res in manifests.gpu_workloads:
        meta = res.body.get("metadata") or {}
        generation = meta.get("generation")
        status = res.body.get("status")
        out.append(
            decision.WorkloadObject(
                ref=workloads.WorkloadRef(
                    namespace=_namespace(meta), name=str(meta.get("name", ""))
                ),
                spec=res.body.get("spec") or {},
                status=status if isinstance(status, Mapping) else None,
                generation=generation if isinstance(generation, int) else None,
                uid=str(meta["uid"]) if meta.get("uid") else None,
            )
        )
    return out


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
            raise InputError(f"{path}: {first_error(exc)}") from None
        for item in parsed.items:
            usage[(item.namespace, item.name)] = item.usage
    return usage


def first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in err["loc"]
    ).replace(".[", "[")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc or '(top level)'}: {err['msg']}{more}"


def check_workloads(
    manifests: Manifests,
    usage: Mapping[tuple[str, str], profiles.UsageProfile],
    catalog: gpus.Catalog,
) -> None:
    """Raise InputError, naming the file and field, for the first GPUWorkload that is bad input.

    Checked before anything is decided: a spec that does not validate, a target missing from
    the files or without GPUs, an unknown GPU model or MIG profile.
    """
    for res in manifests.gpu_workloads:
        meta = res.body.get("metadata") or {}
        namespace, name = _namespace(meta), str(meta.get("name", ""))
        where = f"{res.path}: {crd.KIND} {namespace}/{name}"
        try:
            spec = crd.GPUWorkloadSpec.model_validate(res.body.get("spec") or {})
        except pydantic.ValidationError as exc:
            raise InputError(f"{where}: spec.{first_error(exc)}") from None
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


def read_inventory(
    manifests: Manifests, catalog: gpus.Catalog, kubeconfig: pathlib.Path | None
) -> inventory.Inventory | None:
    """The GPU inventory: the cluster's nodes (with a kubeconfig), else the files' Node objects.

    None when neither gives any node: the whole catalog is then considered.
    """
    if kubeconfig is not None:
        try:
            api = clients.api_client(kubeconfig=kubeconfig)
            listed = reading.KubeClusterReader(api).snapshot()
        except (errors.ClusterReadError, OSError, ValueError) as exc:
            raise InputError(f"--kubeconfig {kubeconfig}: cannot list nodes: {exc}") from None
        return nodes.build(listed.nodes, listed.pods, catalog, source="the cluster's GPU nodes")
    if not manifests.nodes:
        return None
    return nodes.build(
        manifests.nodes, manifests.pods, catalog, source="the Node objects in the files"
    )


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
