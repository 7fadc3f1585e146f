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

import collections
import concurrent.futures
import dataclasses
import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gpu_rightsizer import decision, ports
from gpu_rightsizer.apply import machine
from gpu_rightsizer.manifests import kinds
from gpu_rightsizer.models import crd, gpus, precisions, profiles, workloads

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
    """Every object's result, as written: ``status`` (the patch) is emptied, and ``document``
    holds the whole new status only where it changed (else just ``KEPT_UNCHANGED``)."""
    queries: int
    metrics_error: str | None
    patched: int
    seconds: float
    failed: frozenset[workloads.WorkloadRef] = frozenset()
    """Workloads whose status could not be written (retried at the next sweep)."""
    errors: tuple[str, ...] = ()
    target_applies: int = 0
    """Server-side applies to targets (Apply mode) this sweep."""
    superseded: frozenset[workloads.WorkloadRef] = frozenset()
    """Workloads not written because they changed during the sweep (their next sweep writes)."""
    stage_seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Wall time of each stage: cluster_read (target lists), prometheus, engine (validation,
    Apply-mode inputs, the node inventory and the decisions), writes (Events, statuses and
    target changes)."""


def _emit(recorder: ports.EventRecorder, ref: workloads.WorkloadRef, event: decision.Event) -> None:
    kwargs: dict[str, Any] = {"key": event.key} if event.key else {}
    recorder.emit(ref, type_=event.type, reason=event.reason, message=event.message, **kwargs)


# ---------------------------------------------------------------------------------------------
# the sweep (I/O through ports)


def no_crash(point: str) -> None:
    """The crash-injection hook's default: carry on."""


CRASH_POINTS = (
    "before-status",
    "before-patch",
    "after-patch",
    "before-restore",
    "after-restore",
)
"""Where tests may make the operator die mid-change (``GPU_RIGHTSIZER_CRASH_AT``)."""


def _phase(o: WorkloadObject) -> str | None:
    apply = (o.status or {}).get("apply")
    return str(apply.get("phase")) if isinstance(apply, Mapping) and apply.get("phase") else None


def _acting(o: WorkloadObject, spec: crd.GPUWorkloadSpec | str) -> bool:
    """Apply mode, or a change still in flight (it is finished whatever the mode now says)."""
    if not isinstance(spec, crd.GPUWorkloadSpec) or spec.mode == crd.Mode.OFF:
        return False
    in_flight = {str(p) for p in machine.IN_FLIGHT}
    return spec.mode == crd.Mode.APPLY or _phase(o) in in_flight


def _apply_inputs(
    objects: Sequence[WorkloadObject],
    specs: Mapping[workloads.WorkloadRef, crd.GPUWorkloadSpec | str],
    states: Mapping[workloads.WorkloadRef, ports.TargetState],
    *,
    reader: ports.ClusterReader,
    source: ports.UsageSource,
    actuator: ports.TargetWriter | None,
    at: datetime.datetime | None,
) -> tuple[decision.ApplyInputs, int]:
    """PodDisruptionBudgets, permissions and verification usage, for the workloads that act.

    A fixed number of calls: one PDB list, one access review per (namespace, kind) acting, and
    one batch of queries per distinct verification window.
    """
    acting = [o for o in objects if _acting(o, specs[o.ref])]
    if not acting:
        return decision.NO_APPLY_INPUTS, 0
    permissions: dict[tuple[str, str], str | None] = {}
    for o in acting:
        spec = specs[o.ref]
        assert isinstance(spec, crd.GPUWorkloadSpec)
        key = (o.ref.namespace, spec.target_ref.kind)
        if key not in permissions:
            permissions[key] = (
                actuator.may_patch(key[1], key[0])
                if actuator is not None
                else "this run cannot change targets (no writer for them)"
            )
    windows: dict[str, list[ports.TargetPods]] = collections.defaultdict(list)
    for o in acting:
        if _phase(o) != str(crd.ApplyPhase.VERIFYING):
            continue
        spec = specs[o.ref]
        state = states.get(o.ref)
        assert isinstance(spec, crd.GPUWorkloadSpec)
        if state is None or state.pods is None:
            continue
        revision = str(((o.status or {}).get("apply") or {}).get("revision") or "")
        pods = state.pods
        kind = kinds.of(pods.kind)
        if kind is not None and kind.through_replicasets and revision:
            pods = dataclasses.replace(pods, pod_template_hashes=frozenset({revision}))
        windows[spec.apply.verification_window].append(pods)
    verification: dict[workloads.WorkloadRef, profiles.UsageProfile] = {}
    queries = 0
    for window, pods_list in windows.items():
        report = source.collect(pods_list, window=window, at=at)
        queries += report.queries
        verification.update(report.profiles)
    return (
        decision.ApplyInputs(
            budgets=reader.disruption_budgets(),
            permissions=permissions,
            verification=verification,
        ),
        queries,
    )


def _run_action(
    action: machine.Action, actuator: ports.TargetWriter, crash: Callable[[str], None]
) -> None:
    """The step's patch of the target, between its crash-injection points."""
    first, last = (
        ("before-patch", "after-patch")
        if action.purpose == "patch"
        else ("before-restore", "after-restore")
    )
    crash(first)
    actuator.patch(action.kind, action.namespace, action.name, action.operations)
    crash(last)


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
    actuator: ports.TargetWriter | None = None,
    crash: Callable[[str], None] = no_crash,
    write_workers: int = 1,
    still_current: Callable[[workloads.WorkloadRef], bool] | None = None,
    narrow: bool = False,
) -> SweepSummary:
    """Evaluate ``objects`` in one batch and write what changed.

    Up to ``write_workers`` workloads are written at the same time; each workload's Events,
    status patch and target change stay in that order. ``still_current(ref)`` is asked just
    before a workload is written: False (the object changed since it was read) skips it, and
    it is reported in ``SweepSummary.superseded``. ``narrow`` (a prompt sweep of a few new
    objects) lets the reader list just their namespaces (``ClusterReader.targets``'s
    ``within``), whose capacity check then uses the last whole read's nodes and pods; never
    when one of them may act (Apply mode or a change in flight): what it changes must be
    judged on the cluster as it is now.
    """
    started = time.perf_counter()
    still_current = still_current or always_current
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
    if not refs:
        states: Mapping[workloads.WorkloadRef, ports.TargetState] = {}
    elif narrow and not any(_acting(o, specs[o.ref]) for o in active):
        states = reader.targets(refs, within={ref.namespace for ref, *_ in refs})
    else:
        states = reader.targets(refs)
    read = time.perf_counter()
    pods = [s.pods for s in states.values() if s.found and s.pods is not None]
    report = (
        source.collect(pods, window=settings.window, at=at)
        if pods
        else ports.UsageReport(profiles={}, queries=0)
    )
    queried = time.perf_counter()
    inputs, extra_queries = (
        _apply_inputs(
            objects, specs, states, reader=reader, source=source, actuator=actuator, at=at
        )
        if refs
        else (decision.NO_APPLY_INPUTS, 0)
    )
    stock = reader.inventory(catalog) if refs else None
    kept: list[Result] = []
    written: list[workloads.WorkloadRef] = []
    outcomes: list[_Written] = []
    engine_seconds = time.perf_counter() - queried
    for start in range(0, len(objects), DECIDE_BATCH):
        # Decided and written a slice at a time: a slice's statuses, patches and Events are
        # garbage once written, so a sweep holds DECIDE_BATCH of them, not the fleet's.
        began = time.perf_counter()
        results = decision.decide(
            objects[start : start + DECIDE_BATCH],
            specs,
            states,
            report,
            catalog=catalog,
            table=table,
            now=now,
            settings=settings,
            stock=stock,
            apply_inputs=inputs,
        )
        engine_seconds += time.perf_counter() - began
        part = [r for r in results if r.events or r.changed or r.action is not None]
        written.extend(r.ref for r in part)
        outcomes.extend(
            _write_all(
                part,
                writer=writer,
                recorder=recorder,
                actuator=actuator,
                crash=crash,
                still_current=still_current,
                workers=write_workers,
            )
        )
        kept.extend(_written_down(r) for r in results)
    errors = [e for o in outcomes for e in o.errors]
    done = time.perf_counter()
    return SweepSummary(
        results=tuple(kept),
        queries=report.queries + extra_queries,
        metrics_error=report.error,
        patched=sum(o.patched for o in outcomes),
        target_applies=sum(o.applied for o in outcomes),
        seconds=done - started,
        stage_seconds={
            "cluster_read": read - started,
            "prometheus": queried - read,
            "engine": engine_seconds,
            "writes": done - queried - engine_seconds,
        },
        failed=frozenset(ref for ref, o in zip(written, outcomes, strict=True) if o.failed),
        errors=tuple(errors),
        superseded=frozenset(ref for ref, o in zip(written, outcomes, strict=True) if o.superseded),
    )


DECIDE_BATCH = 500
"""Workloads decided and written together within one sweep."""


def _write_all(
    writes: Sequence[Result],
    *,
    writer: ports.StatusWriter,
    recorder: ports.EventRecorder,
    actuator: ports.TargetWriter | None,
    crash: Callable[[str], None],
    still_current: Callable[[workloads.WorkloadRef], bool],
    workers: int,
) -> list[_Written]:
    """Write each result (``_write``), up to ``workers`` at the same time."""

    def write(result: Result) -> _Written:
        return _write(
            result,
            writer=writer,
            recorder=recorder,
            actuator=actuator,
            crash=crash,
            still_current=still_current,
        )

    if workers > 1 and len(writes) > 1:
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(workers, len(writes)), thread_name_prefix="gpu-rightsizer-write"
        ) as pool:
            return list(pool.map(write, writes))
    return [write(r) for r in writes]


KEPT_UNCHANGED = ("usage",)
"""What a written result keeps of a status it did not change (the operator's own metrics
read the usage figures); a changed one keeps its whole document (the object's new status)."""


def _written_down(result: Result) -> Result:
    """The result as a finished sweep reports it: without the merge patch it wrote, and, when
    nothing changed, without the copy of the status the object already has."""
    if result.changed:
        return dataclasses.replace(result, status={})
    document = {k: result.document[k] for k in KEPT_UNCHANGED if k in result.document}
    return dataclasses.replace(result, status={}, document=document)


@dataclasses.dataclass(frozen=True)
class _Written:
    """What writing one workload's result did."""

    patched: bool = False
    applied: bool = False
    failed: bool = False
    superseded: bool = False
    errors: tuple[str, ...] = ()


def _write(
    result: Result,
    *,
    writer: ports.StatusWriter,
    recorder: ports.EventRecorder,
    actuator: ports.TargetWriter | None,
    crash: Callable[[str], None],
    still_current: Callable[[workloads.WorkloadRef], bool],
) -> _Written:
    """One workload's Events, then its status patch, then its target change: in that order.

    Workloads are written concurrently, so this touches nothing shared but the adapters.
    """
    if not still_current(result.ref):
        # Changed (or deleted) since this sweep read it: the newer version's sweep writes it.
        return _Written(superseded=True)
    errors: list[str] = []
    # Events first: a crash before the patch below re-posts them at the next sweep.
    retry = False
    for event in result.events:
        try:
            _emit(recorder, result.ref, event)
        except Exception as exc:  # one workload's failure must not stop the sweep
            errors.append(f"{result.ref}: event {event.reason} not posted: {exc}")
            retry = retry or not _refused_for_good(exc)
    acting = result.action is not None or any(e.key for e in result.events)
    if acting:
        crash("before-status")
    if not result.changed and result.action is None:
        return _Written(errors=tuple(errors))
    if retry:
        # Leave the old status in place, so the next sweep decides (and posts) it again.
        errors.append(f"{result.ref}: status not written: waiting for its events")
        return _Written(failed=True, errors=tuple(errors))
    patched = False
    if result.changed:
        try:
            writer.patch_status(result.ref, result.status)
            patched = True
        except Exception as exc:  # one workload's failure must not stop the sweep
            errors.append(f"{result.ref}: status not written: {exc}")
            # never act on a target before the record of it is written
            return _Written(failed=True, errors=tuple(errors))
    if result.action is None:
        return _Written(patched=patched, errors=tuple(errors))
    if actuator is None:
        errors.append(f"{result.ref}: cannot change {result.action.kind}: no target writer")
        return _Written(patched=patched, errors=tuple(errors))
    try:
        _run_action(result.action, actuator, crash)
    except Exception as exc:  # retried at the next sweep, from the record on status
        errors.append(
            f"{result.ref}: {result.action.purpose} of {result.action.kind} "
            f"{result.action.namespace}/{result.action.name} failed: {exc}"
        )
        return _Written(patched=patched, errors=tuple(errors))
    return _Written(patched=patched, applied=True, errors=tuple(errors))


def always_current(ref: workloads.WorkloadRef) -> bool:
    """The default of ``sweep``'s ``still_current``: nothing changes under a sweep."""
    return True
