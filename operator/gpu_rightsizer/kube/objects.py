"""Objects for the one-shot commands: get a GPUWorkload and its target, annotate a GPUWorkload
(``plan``, ``approve``), list the GPUWorkloads with their statuses (``report``). The operator
itself reads in batches (:mod:`.reading`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import kubernetes.client

from gpu_rightsizer.kube import clients, errors
from gpu_rightsizer.manifests import kinds
from gpu_rightsizer.models import crd

MERGE_PATCH = "application/merge-patch+json"


def get_gpuworkload(api: Any, namespace: str, name: str) -> dict[str, Any]:
    """The GPUWorkload; raises ``errors.ClusterReadError`` (404: not found)."""
    objects = kubernetes.client.CustomObjectsApi(api)
    try:
        return clients.read_json(
            objects.get_namespaced_custom_object(
                crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name, _preload_content=False
            )
        )
    except errors.REQUEST_ERRORS as exc:
        raise errors.ClusterReadError(
            f"getting GPUWorkload {namespace}/{name}: {errors.describe(exc)}",
            errors.status_of(exc),
        ) from exc


def list_gpuworkloads(
    api: Any, namespaces: Sequence[str] = (), *, page_size: int = 500
) -> list[dict[str, Any]]:
    """Every GPUWorkload (of ``namespaces``, or of the cluster), status included, page by page;
    raises ``errors.ClusterReadError``."""
    objects = kubernetes.client.CustomObjectsApi(api)
    out: list[dict[str, Any]] = []
    for namespace in namespaces or (None,):
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            try:
                if namespace is None:
                    response = objects.list_cluster_custom_object(
                        crd.GROUP, crd.VERSION, crd.PLURAL, **kwargs
                    )
                else:
                    response = objects.list_namespaced_custom_object(
                        crd.GROUP, crd.VERSION, namespace, crd.PLURAL, **kwargs
                    )
                body = clients.read_json(response)
            except errors.REQUEST_ERRORS as exc:
                where = "the cluster" if namespace is None else f"namespace {namespace}"
                raise errors.ClusterReadError(
                    f"listing GPUWorkloads in {where}: {errors.describe(exc)}",
                    errors.status_of(exc),
                ) from exc
            out.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue") or None
            if not token:
                break
    return out


def get_target(api: Any, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """A Deployment, StatefulSet, Rollout or InferenceService, as the API returns it (kind and
    apiVersion set)."""
    apps = kubernetes.client.AppsV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    getters: dict[str, Callable[..., Any]] = {
        "Deployment": apps.read_namespaced_deployment,
        "StatefulSet": apps.read_namespaced_stateful_set,
        **{
            k.kind: functools.partial(
                custom.get_namespaced_custom_object, k.group, k.version, plural=k.plural
            )
            for k in (kinds.ROLLOUT, kinds.INFERENCESERVICE)
        },
    }
    spec = kinds.of(kind)
    if spec is None or kind not in getters:
        raise errors.ClusterReadError(f"{kind} is not one of {', '.join(kinds.NAMES)}")
    try:
        body = clients.read_json(
            getters[kind](name=name, namespace=namespace, _preload_content=False)
        )
    except errors.REQUEST_ERRORS as exc:
        raise errors.ClusterReadError(
            f"getting {kind} {namespace}/{name}: {errors.describe(exc)}", errors.status_of(exc)
        ) from exc
    return {"apiVersion": spec.api_version, "kind": kind, **body}


def annotate_gpuworkload(api: Any, namespace: str, name: str, key: str, value: str) -> None:
    """Set one annotation on the GPUWorkload (a JSON merge patch of its metadata)."""
    objects = kubernetes.client.CustomObjectsApi(api)
    body = {"metadata": {"annotations": {key: value}}}
    try:
        response: Any = objects.patch_namespaced_custom_object(
            crd.GROUP,
            crd.VERSION,
            namespace,
            crd.PLURAL,
            name,
            body,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
        response.read()
        response.release_conn()
    except errors.REQUEST_ERRORS as exc:
        raise errors.WriteError(
            f"annotating GPUWorkload {namespace}/{name}: {errors.describe(exc)}",
            errors.status_of(exc),
        ) from exc
