"""Orchestration of one sweep: read the cluster and metrics through ports, run the core, write.

A sweep evaluates every GPUWorkload at once: one batch of API list calls (``ClusterReader``),
one fixed set of Prometheus queries (``UsageSource``), one engine batch, then a status patch
only for the workloads whose status really changed, and Events only on transitions (a new
recommendation, savings that moved by more than a fraction, a problem appearing). Because the
previous status is read back from the object itself, an operator restart changes nothing and
emits nothing.

Takes its adapters as arguments (:mod:`gpu_rightsizer.ports`), so tests pass fakes. Never
imports kopf.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Sequence

from gpu_rightsizer import decision, ports
from gpu_rightsizer.models import crd, gpus, precisions, workloads

WorkloadObject = decision.WorkloadObject
Settings = decision.Settings
Result = decision.Result


@dataclasses.dataclass(frozen=True)
class SweepSummary:
    results: tuple[Result, ...]
    queries: int
    metrics_error: str | None
    patched: int
    seconds: float
    failed: frozenset[workloads.WorkloadRef] = frozenset()
    """Workloads whose status could not be written (retried at the next sweep)."""
    errors: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# the sweep (I/O through ports)


def sweep(
    objects: Sequence[WorkloadObject],
    *,
    reader: ports.ClusterReader,
    source: ports.UsageSource,
    writer: ports.StatusWriter,
    recorder: ports.EventRecorder,
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
    now: datetime.datetime,
    settings: Settings = decision.DEFAULT_SETTINGS,
    at: datetime.datetime | None = None,
) -> SweepSummary:
    started = time.perf_counter()
    specs = {o.ref: decision.validate(o) for o in objects}
    active = [
        o
        for o in objects
        if isinstance(specs[o.ref], crd.GPUWorkloadSpec) and specs[o.ref].mode != crd.Mode.OFF  # type: ignore[union-attr]
    ]
    refs = []
    for o in active:
        spec = specs[o.ref]
        assert isinstance(spec, crd.GPUWorkloadSpec)
        target = spec.target_ref
        refs.append((o.ref, target.kind, target.name, target.container))
    states = reader.targets(refs) if refs else {}
    pods = [s.pods for s in states.values() if s.found and s.pods is not None]
    report = (
        source.collect(pods, window=settings.window, at=at)
        if pods
        else ports.UsageReport(profiles={}, queries=0)
    )
    results = decision.decide(
        objects, specs, states, report, catalog=catalog, table=table, now=now, settings=settings
    )
    patched = 0
    failed: set[workloads.WorkloadRef] = set()
    errors: list[str] = []
    for result in results:
        if result.changed:
            try:
                writer.patch_status(result.ref, result.status)
                patched += 1
            except Exception as exc:  # one workload's failure must not stop the sweep
                failed.add(result.ref)
                errors.append(f"{result.ref}: status not written: {exc}")
                continue
        for event in result.events:
            try:
                recorder.emit(
                    result.ref, type_=event.type, reason=event.reason, message=event.message
                )
            except Exception as exc:  # Events are best-effort
                errors.append(f"{result.ref}: event {event.reason} not posted: {exc}")
    return SweepSummary(
        results=tuple(results),
        queries=report.queries,
        metrics_error=report.error,
        patched=patched,
        seconds=time.perf_counter() - started,
        failed=frozenset(failed),
        errors=tuple(errors),
    )
