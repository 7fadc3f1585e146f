"""kopf handlers for GPUWorkloads.

Deliberate choices, for large clusters:

- One watch-event handler keeps an in-memory view of every GPUWorkload and wakes the sweep
  loop when an object is new (created, or seen when the operator resumes) or its spec changed.
  Event handlers store no progress, so the operator writes no annotations to users' objects;
  all evaluation happens in batched sweeps (:mod:`.sweeping`), never per object, which keeps
  Prometheus queries and API calls per sweep fixed whatever the fleet's size.
- Standalone by default (one replica, ``strategy: Recreate``); ``--peering NAME`` when several
  replicas run, so only one of them acts.
- Handler logs are posted as Kubernetes Events only at WARNING and above; our own Events are
  emitted by the sweep, on transitions only.
- Watch streams time out server-side and are re-established, lists are paginated, so memory
  stays flat on clusters with many objects.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import kopf

from gpu_rightsizer import catalogs, config, reconcile
from gpu_rightsizer.apply import planning
from gpu_rightsizer.handlers import sweeping
from gpu_rightsizer.kube import acting, clients, reading, writing
from gpu_rightsizer.metrics import prometheus
from gpu_rightsizer.models import crd, workloads

RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)
CRASH_AT = "GPU_RIGHTSIZER_CRASH_AT"
"""Tests only: the crash point (``reconcile.CRASH_POINTS``) at which the operator exits."""


def _crash_hook() -> Callable[[str], None] | None:
    """Exit the process at once at the point named by ``GPU_RIGHTSIZER_CRASH_AT``, if set."""
    point = os.environ.get(CRASH_AT)
    if not point:
        return None
    if point not in reconcile.CRASH_POINTS:
        raise kopf.PermanentError(
            f"{CRASH_AT}={point!r}: expected one of {', '.join(reconcile.CRASH_POINTS)}"
        )

    def crash(at: str) -> None:
        if at == point:
            logging.getLogger("gpu_rightsizer").critical("crash injected at %s", at)
            os._exit(CRASH_EXIT_CODE)

    return crash


CRASH_EXIT_CODE = 86


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: config.OperatorConfig = memo["config"]
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "gpu-rightsizer"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.chunk_size = 500
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="gpu-rightsizer.dev"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="gpu-rightsizer.dev", key="last-handled-configuration"
    )
    settings.execution.max_workers = 4
    # One connection per writing thread, and a few for the sweep's lists and the actuator.
    api = clients.api_client(kubeconfig=cfg.kubeconfig, connections=cfg.write_workers + 4)
    sweeper = sweeping.Sweeper(
        cfg=cfg,
        reader=reading.KubeClusterReader(api, namespaces=cfg.namespaces or None),
        source=prometheus.PrometheusUsageSource(prometheus.settings_from(cfg.prometheus)),
        writer=writing.KubeStatusWriter(api),
        recorder=writing.KubeEventRecorder(api),
        actuator=acting.KubeTargetWriter(api),
        crash=_crash_hook(),
        catalog=catalogs.load_catalog(cfg.catalog_overrides),
        table=catalogs.default_precisions(),
        instruments=memo.get("instruments"),
    )
    memo["sweeper"] = sweeper
    memo["task"] = asyncio.create_task(sweeper.run(), name="gpu-rightsizer-sweeps")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig (``--kubeconfig``/KUBECONFIG)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@kopf.on.event(*RESOURCE)
def workload_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    sweeper: sweeping.Sweeper | None = memo.get("sweeper")
    if sweeper is None:
        return
    meta = body.get("metadata", {})
    ref = workloads.WorkloadRef(namespace=meta.get("namespace", ""), name=meta.get("name", ""))
    if event.get("type") == "DELETED":
        sweeper.forget(ref)
        return
    sweeper.observe(
        reconcile.WorkloadObject(
            ref=ref,
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}) or None,
            generation=meta.get("generation"),
            uid=meta.get("uid"),
            annotations={
                str(k): str(v)
                for k, v in (meta.get("annotations") or {}).items()
                if k == planning.APPROVE_ANNOTATION  # not kopf's own (same prefix)
            },
        )
    )


@kopf.on.probe(id="sweep")
def last_sweep(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """The last sweep's figures; fails (``/healthz`` answers 500) while sweeps keep failing."""
    sweeper: sweeping.Sweeper | None = memo.get("sweeper")
    if sweeper is None:
        return {}
    problem = sweeper.health.problem()
    if problem is not None:
        # Permanent: kopf would otherwise retry the probe handler instead of answering.
        raise kopf.PermanentError(f"unhealthy: {problem}")
    return {**sweeper.last_sweep, **sweeper.health.report()}
