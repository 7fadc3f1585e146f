"""Orchestration of one sweep: read the cluster and metrics through ports, run the core, write.

A sweep evaluates every GPUWorkload at once: one batch of API list calls (``ClusterReader``),
one fixed set of Prometheus queries (``UsageSource``), one engine batch, then a status patch
only for the workloads whose status really changed, and Events only on transitions (a new
recommendation, savings that moved by more than a fraction, a problem appearing). Because the
previous status is read back from the object itself, an operator restart changes nothing and
emits nothing.

Events are delivered at least once: a transition's Events are posted *before* the status patch
that records it. If the operator dies in between, or the patch fails, the status still shows the
old state, so the next sweep decides the same transition and posts its Events again (the
recorder aggregates an identical Event into a higher ``count``); once the patch is written, no
later sweep or restart posts them again. If an Event cannot be posted, the patch waits for the
next sweep too, unless the API server refused that Event for good (a 4xx that retrying cannot
change), when the status is written anyway: one unpostable Event must not freeze a status.

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


_RETRYABLE_CLIENT_ERRORS = frozenset({404, 408, 409, 429})
"""4xx answers to an Event that a later attempt may not get (404: the object may be gone)."""


def _refused_for_good(exc: BaseException) -> bool:
    """The API server answered 4xx to the Event: posting it again gets the same answer."""
    status = getattr(exc, "status", None)
    return (
        isinstance(status, int) and 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS
    )


def _validate(o: WorkloadObject) -> crd.GPUWorkloadSpec | str:
    """The validated spec, or why it is invalid; never raises, so one object cannot stop a sweep."""
    try:
        return decision.validate(o)
    except Exception as exc:
        return f"spec: cannot be read: {type(exc).__name__}: {exc}"


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
    specs = {o.ref: _validate(o) for o in objects}
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
        objects,
        specs,
        states,
        report,
        catalog=catalog,
        table=table,
        now=now,
        settings=settings,
        stock=reader.inventory(catalog) if refs else None,
    )
    patched = 0
    failed: set[workloads.WorkloadRef] = set()
    errors: list[str] = []
    for result in results:
        # Events first: a crash before the patch below re-posts them at the next sweep.
        retry = False
        for event in result.events:
            try:
                recorder.emit(
                    result.ref, type_=event.type, reason=event.reason, message=event.message
                )
            except Exception as exc:  # one workload's failure must not stop the sweep
                errors.append(f"{result.ref}: event {event.reason} not posted: {exc}")
                retry = retry or not _refused_for_good(exc)
        if not result.changed:
            continue
        if retry:
            # Leave the old status in place, so the next sweep decides (and posts) it again.
            failed.add(result.ref)
            errors.append(f"{result.ref}: status not written: waiting for its events")
            continue
        try:
            writer.patch_status(result.ref, result.status)
            patched += 1
        except Exception as exc:  # one workload's failure must not stop the sweep
            failed.add(result.ref)
            errors.append(f"{result.ref}: status not written: {exc}")
    return SweepSummary(
        results=tuple(results),
        queries=report.queries,
        metrics_error=report.error,
        patched=patched,
        seconds=time.perf_counter() - started,
        failed=frozenset(failed),
        errors=tuple(errors),
    )
