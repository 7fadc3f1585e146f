"""The decision for every GPUWorkload of a sweep: from what was read to the status to write.

One pure function, :func:`decide`, turns (GPUWorkload objects, their targets' state, the cluster's
GPU inventory, the usage report, the catalog) into each workload's status and Events. The
operator's sweep (:mod:`gpu_rightsizer.reconcile`) and the offline ``recommend`` command both call
it, so ``recommend -o json`` prints exactly what the operator writes, conditions included.

Must never do I/O: no API calls, no queries, no clocks (the caller passes ``now``).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from gpu_rightsizer import ports
from gpu_rightsizer.apply import machine, planning
from gpu_rightsizer.models import crd, gpus, inventory, precisions, profiles, workloads
from gpu_rightsizer.recommend import engine, priced, statuses

TARGET_NOT_FOUND = "TargetNotFound"
CAPACITY_AVAILABLE = "CapacityAvailable"
APPLIED = "Applied"
NORMAL, WARNING = "Normal", "Warning"


@dataclasses.dataclass(frozen=True)
class WorkloadObject:
    """A GPUWorkload as read from the API: identity, spec and the status it carries now."""

    ref: workloads.WorkloadRef
    spec: Mapping[str, Any]
    status: Mapping[str, Any] | None = None
    generation: int | None = None
    uid: str | None = None
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ApplyInputs:
    """What Apply mode needs beyond the recommendation; read only when some workload acts."""

    budgets: Sequence[Mapping[str, Any]] | None = None
    """Every PodDisruptionBudget of the watched namespaces; None: not read (or unreadable)."""
    permissions: Mapping[tuple[str, str], str | None] = dataclasses.field(default_factory=dict)
    """(namespace, target kind) -> None when the operator may patch, else why it may not."""
    verification: Mapping[workloads.WorkloadRef, profiles.UsageProfile] = dataclasses.field(
        default_factory=dict
    )
    """Usage of the new pods over each verifying workload's verification window."""


NO_APPLY_INPUTS = ApplyInputs()


@dataclasses.dataclass(frozen=True)
class Settings:
    window: str = "7d"
    """Look-back of the usage queries."""
    savings_event_fraction: float = 0.1
    """An Event when projected monthly savings move by more than this fraction."""


DEFAULT_SETTINGS = Settings()


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    key: str | None = None
    """When set, the Event is named after it: posting it again is a no-op (exactly once)."""


@dataclasses.dataclass(frozen=True)
class Result:
    """What a sweep decided for one workload."""

    ref: workloads.WorkloadRef
    status: dict[str, Any]
    changed: bool
    events: tuple[Event, ...] = ()
    ready: bool = False
    savings: crd.Savings | None = None
    gpus_freed: float = 0.0
    changed_fields: tuple[str, ...] = ()
    document: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The whole status as written (``status`` is the merge patch that gets it there)."""
    apply_outcome: str | None = None
    """Set on the sweep an applied change finished: ``Applied``, ``RolledBack`` or ``Failed``."""
    realized: crd.RealizedSavings | None = None
    """The realized savings of the last applied change, once measured."""
    action: machine.Action | None = None
    """Server-side applies to run on the target once ``status`` is written."""


def validate(o: WorkloadObject) -> crd.GPUWorkloadSpec | str:
    try:
        return crd.GPUWorkloadSpec.model_validate(dict(o.spec))
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}"


def decide(
    objects: Sequence[WorkloadObject],
    specs: Mapping[workloads.WorkloadRef, crd.GPUWorkloadSpec | str],
    states: Mapping[workloads.WorkloadRef, ports.TargetState],
    report: ports.UsageReport,
    *,
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
    now: datetime.datetime,
    settings: Settings,
    stock: inventory.Inventory | None = None,
    apply_inputs: ApplyInputs = NO_APPLY_INPUTS,
) -> list[Result]:
    """Statuses and Events for every object; the engine runs once over the evaluable ones.

    ``stock`` is the cluster's GPU inventory (None: the whole catalog is considered). A failure
    while judging one object is that object's problem (Ready=False, ``EvaluationFailed``); the
    others are decided as usual.
    """
    previous = {o.ref: _previous(o) for o in objects}
    results: dict[workloads.WorkloadRef, Result] = {}
    batch: list[tuple[WorkloadObject, workloads.Workload]] = []
    for o in objects:
        prev = previous[o.ref]
        try:
            item = _prepare(o, specs[o.ref], states, report, prev, catalog, now)
        except Exception as exc:  # one object must never stop the sweep
            results[o.ref] = _failed(o, prev, now, exc)
            continue
        if isinstance(item, Result):
            spec = specs[o.ref]
            if isinstance(spec, crd.GPUWorkloadSpec) and _in_flight(prev):
                # A change in flight goes on without a recommendation (metrics outage, ...).
                try:
                    item = _continued(
                        o, spec, item, prev, states, stock, apply_inputs, catalog, now
                    )
                except Exception as exc:  # one object must never stop the sweep
                    item = _failed(o, prev, now, exc)
            results[o.ref] = item
        else:
            batch.append((o, item))
    for (o, w), evaluation in zip(batch, _evaluate(batch, catalog, table, stock), strict=True):
        prev = previous[o.ref]
        try:
            if isinstance(evaluation, Exception):
                raise evaluation
            state = states[o.ref]
            results[o.ref] = _evaluated(
                o, w, evaluation, prev, now, settings, state, stock, apply_inputs, catalog
            )
        except Exception as exc:  # one object must never stop the sweep
            results[o.ref] = _failed(o, prev, now, exc)
    return [results[o.ref] for o in objects]


ENGINE_BATCH = 256
"""Workloads per call of the engine. Each workload's evaluation is its own (the batch only
shares the arithmetic), and the engine's arrays grow with the batch: 1,000 at once peaked at
40 MiB of them, 250 at 13 MiB, in the same CPU time; so a fleet of ten thousand is decided in
slices of this size."""


def _evaluate(
    batch: Sequence[tuple[WorkloadObject, workloads.Workload]],
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
    stock: inventory.Inventory | None,
) -> list[engine.Evaluation | Exception]:
    """The engine over the batch, ``ENGINE_BATCH`` at a time."""
    out: list[engine.Evaluation | Exception] = []
    for start in range(0, len(batch), ENGINE_BATCH):
        out.extend(_evaluate_slice(batch[start : start + ENGINE_BATCH], catalog, table, stock))
    return out


def _evaluate_slice(
    batch: Sequence[tuple[WorkloadObject, workloads.Workload]],
    catalog: gpus.Catalog,
    table: precisions.PrecisionTable,
    stock: inventory.Inventory | None,
) -> list[engine.Evaluation | Exception]:
    """The engine over one slice; if that fails, one at a time to find the culprit."""
    items = [w for _, w in batch]
    try:
        return list(priced.attach(engine.evaluate(items, catalog, table, stock), catalog, table))
    except Exception:
        pass
    out: list[engine.Evaluation | Exception] = []
    for w in items:
        try:
            out.append(
                priced.attach([engine.evaluate_one(w, catalog, table, stock)], catalog, table)[0]
            )
        except Exception as exc:
            out.append(exc)
    return out


def _failed(
    o: WorkloadObject, prev: crd.GPUWorkloadStatus | None, now: datetime.datetime, exc: Exception
) -> Result:
    message = f"evaluating this GPUWorkload failed: {exc.__class__.__name__}: {exc}"
    return _problem(o, prev, now, "EvaluationFailed", message[:1024])


def _prepare(
    o: WorkloadObject,
    spec: crd.GPUWorkloadSpec | str,
    states: Mapping[workloads.WorkloadRef, ports.TargetState],
    report: ports.UsageReport,
    prev: crd.GPUWorkloadStatus | None,
    catalog: gpus.Catalog,
    now: datetime.datetime,
) -> workloads.Workload | Result:
    """The workload for the engine, or the Result of a problem found before it."""
    if isinstance(spec, str):
        return _problem(o, prev, now, "InvalidSpec", spec)
    if spec.mode == crd.Mode.OFF:
        return _problem(
            o,
            prev,
            now,
            "Off",
            "mode is Off: gpu-rightsizer leaves this workload alone",
            event=False,
        )
    state = states.get(o.ref, ports.TargetState(found=False))
    target = f"{spec.target_ref.kind} {o.ref.namespace}/{spec.target_ref.name}"
    if not state.found:
        missing = f"{target} not found" + (f": {state.error}" if state.error else "")
        return _problem(o, prev, now, TARGET_NOT_FOUND, missing, target_missing=True)
    if state.gpus is None:
        reason = state.error_reason or "TargetHasNoGPUs"
        return _problem(o, prev, now, reason, f"{target}: {state.error or 'no GPUs'}")
    usage = report.profiles.get(o.ref)
    model, where = _gpu_model(spec, state, usage)
    gpu = catalog.resolve(model) if model else None
    if gpu is None and (model is not None or report.error is None):
        # A spec error stays visible whatever the metrics do.
        message = (
            f"GPU model {model!r} ({where}) is not in the catalog (known: {', '.join(catalog.ids)})"
            if model
            else f"{target}: the GPU model is unknown: pin it with a nvidia.com/gpu.product "
            "node selector, or set spec.gpuModel"
        )
        return _problem(o, prev, now, "UnknownGPUModel", message)
    if report.error is not None or gpu is None:
        return _stale(o, prev, now, report.error or "metrics unavailable")
    if (
        spec.mode == crd.Mode.RECOMMEND  # Apply mode: the change machine decides
        and prev is not None
        and prev.recommendation is not None
        and not _in_flight(prev)
    ):
        if usage is None:
            return _no_series(o, prev, now, "NoSeries", "no DCGM series for the target's pods")
        lost = _lost_series(usage, prev.usage)
        if lost is not None:
            return _no_series(o, prev, now, "PartialSeries", lost)
    return workloads.Workload(
        ref=o.ref,
        spec=spec,
        current=workloads.CurrentAllocation(
            gpu_model=gpu.id,
            mig_profile=state.gpus.mig_profile,
            gpus_per_replica=state.gpus.gpus_per_replica,
            replicas=state.gpus.replicas,
            precision=(spec.model.precision if spec.model else precisions.Precision.BF16),
        ),
        usage=_settled(usage, prev),
        previous=prev.recommendation if prev is not None else None,
        max_model_len=state.gpus.max_model_len,
        gpu_memory_utilization=state.gpus.gpu_memory_utilization,
        serving_engine=state.gpus.engine,
    )


def _settled(
    usage: profiles.UsageProfile | None, prev: crd.GPUWorkloadStatus | None
) -> profiles.UsageProfile | None:
    """The usage to decide on: the one already written while the new one is within tolerance.

    Usage drifts a little with every scrape (sample counts, history length, counters); deciding
    on, and writing, that drift would patch every workload at every sweep. The written usage
    stands until some figure moves by more than USAGE_TOLERANCE, so an unchanged workload gets
    an identical status. The tolerance only suppresses churn: a peak that rose takes effect at
    once, however little.
    """
    if usage is None:
        return None
    fresh = usage.rounded()
    if (
        prev is not None
        and prev.usage is not None
        and not _rose(fresh, prev.usage)
        and _close(fresh.to_api(), prev.usage.to_api())
    ):
        return prev.usage
    return fresh


_PEAKS = (
    "memory_used_bytes",
    "graphics_engine_active",
    "dram_active",
    "kv_cache_usage",
    "time_per_output_token_seconds",
    "time_to_first_token_seconds",
)


def _rose(fresh: profiles.UsageProfile, written: profiles.UsageProfile) -> bool:
    """Some high percentile (p95, p99, max) of a need signal is above the written one."""
    for name in _PEAKS:
        new, old = getattr(fresh, name), getattr(written, name)
        if new is None:
            continue
        if old is None:
            return True
        if any(getattr(new, q) > getattr(old, q) for q in ("p95", "p99", "max")):
            return True
    return False


def _previous(o: WorkloadObject) -> crd.GPUWorkloadStatus | None:
    if not o.status:
        return None
    try:
        return crd.GPUWorkloadStatus.model_validate(dict(o.status))
    except pydantic.ValidationError:
        return None


def _gpu_model(
    spec: crd.GPUWorkloadSpec, state: ports.TargetState, usage: profiles.UsageProfile | None
) -> tuple[str | None, str]:
    assert state.gpus is not None
    if state.gpus.gpu_product:
        return state.gpus.gpu_product, "the target's nvidia.com/gpu.product node selector"
    products = sorted(set(state.node_products))
    if len(products) == 1:
        return products[0], "the nvidia.com/gpu.product label of its nodes"
    if spec.gpu_model:
        return spec.gpu_model, "spec.gpuModel"
    if usage is not None and usage.gpu_model:
        return usage.gpu_model, "DCGM modelName"
    return None, ""


def _cond(type_: str, ok: bool, reason: str, message: str) -> statuses.ConditionInput:
    status = crd.ConditionStatus.TRUE if ok else crd.ConditionStatus.FALSE
    return statuses.ConditionInput(type_, status, reason, message)


def _finish(
    o: WorkloadObject,
    prev: crd.GPUWorkloadStatus | None,
    new: crd.GPUWorkloadStatus,
    events: tuple[Event, ...],
) -> Result:
    old_api = prev.to_api() if prev is not None else None
    new_api = new.to_api()
    ready = any(c.type == statuses.READY and c.status == "True" for c in new.conditions)
    freed = 0.0
    if new.savings is not None and new.current is not None:
        freed = new.savings.gpu_hours_per_month / 730 if new.savings.gpu_hours_per_month else 0.0
    return Result(
        ref=o.ref,
        status=_with_removals(new_api, old_api),
        document=new_api,
        changed=new_api != old_api,
        changed_fields=tuple(
            sorted(
                k for k in {*new_api, *(old_api or {})} if new_api.get(k) != (old_api or {}).get(k)
            )
        ),
        events=events,
        ready=ready,
        savings=new.savings,
        gpus_freed=round(freed, 3),
    )


USAGE_TOLERANCE = 0.05
"""Relative change of a usage figure (or 0.01 absolute for fractions) worth a status write."""

_FLOAT_SLACK = 1e-9
"""Binary rounding in a difference: 0.17 - 0.16 is 0.010000000000000009, one step of a
figure rounded to 0.01, and must count as within the 0.01 it is."""


def _close(a: Any, b: Any) -> bool:
    """Same shape, and every number within USAGE_TOLERANCE (relative) or 0.01 (absolute)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        limit = max(USAGE_TOLERANCE * max(abs(a), abs(b)), 0.01)
        return bool(abs(a - b) <= limit + _FLOAT_SLACK)
    return bool(a == b)


def _with_removals(new: dict[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON merge patch from ``old`` to ``new``: what ``new`` lacks is set to None, nested too.

    A merge patch merges objects key by key, so a field that a nested object (the
    recommendation, its engine settings) no longer has must be nulled explicitly or it would
    survive the patch. Lists are replaced whole, as merge patches do.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = (old or {}).get(key)
        if isinstance(value, dict) and isinstance(before, Mapping):
            patch[key] = _with_removals(value, before)
        else:
            patch[key] = value
    for key in old or {}:
        if key not in new:
            patch[key] = None
    return patch


def _transition_events(
    prev: crd.GPUWorkloadStatus | None, new: crd.GPUWorkloadStatus
) -> tuple[Event, ...]:
    """Warnings for a Ready condition that newly turned False for a new reason."""
    before = {c.type: c for c in (prev.conditions if prev else ())}
    events = []
    for c in new.conditions:
        if c.type != statuses.READY or c.status == "True":
            continue
        old = before.get(c.type)
        if old is None or old.status != c.status or old.reason != c.reason:
            events.append(Event(WARNING, c.reason, c.message))
    return tuple(events)


def _problem(
    o: WorkloadObject,
    prev: crd.GPUWorkloadStatus | None,
    now: datetime.datetime,
    reason: str,
    message: str,
    *,
    target_missing: bool = False,
    event: bool = True,
) -> Result:
    """Ready=False for ``reason``; everything else the status had stays as it was."""
    decided = [
        _cond(statuses.READY, False, reason, message),
        _cond(
            TARGET_NOT_FOUND,
            target_missing,
            TARGET_NOT_FOUND if target_missing else "TargetFound",
            message if target_missing else "the target exists",
        ),
    ]
    if reason == "Off":
        decided = decided[:1]
    new = _keep(prev, decided, o.generation, now)
    return _finish(o, prev, new, _transition_events(prev, new) if event else ())


def _keep(
    prev: crd.GPUWorkloadStatus | None,
    decided: list[statuses.ConditionInput],
    generation: int | None,
    now: datetime.datetime,
) -> crd.GPUWorkloadStatus:
    """The previous status with ``decided`` conditions replacing their namesakes."""
    base = prev or crd.GPUWorkloadStatus()
    kept = [
        statuses.ConditionInput(c.type, c.status, c.reason, c.message)
        for c in base.conditions
        if c.type not in {d.type for d in decided}
    ]
    merged = statuses.merge_conditions((*decided, *kept), prev, generation, now)
    order = [c.type for c in base.conditions]
    merged_sorted = sorted(
        merged, key=lambda c: (order.index(c.type) if c.type in order else -1, c.type)
    )
    return base.model_copy(
        update={"conditions": tuple(merged_sorted), "observed_generation": generation}
    )


def _stale(
    o: WorkloadObject, prev: crd.GPUWorkloadStatus | None, now: datetime.datetime, error: str
) -> Result:
    """Metrics unavailable: keep the last good recommendation, say it is stale."""
    has_rec = prev is not None and prev.recommendation is not None
    decided = [
        _cond(statuses.READY, False, "MetricsUnavailable", error),
        _cond(statuses.METRICS_AVAILABLE, False, "PrometheusUnavailable", error),
    ]
    if has_rec:
        decided.append(
            _cond(
                statuses.RECOMMENDATION_READY,
                True,
                "Stale",
                "metrics are unavailable; this is the last recommendation made with metrics",
            )
        )
    new = _keep(prev, decided, o.generation, now)
    return _finish(o, prev, new, _transition_events(prev, new))


def _lost_series(fresh: profiles.UsageProfile, written: profiles.UsageProfile | None) -> str | None:
    """What the written usage had that this sweep's lacks, or None: an exporter that went (or
    came back) while the sweep's queries ran answers some of them for a workload and not
    others. Such a profile is not a workload without history, and deciding on it would wipe a
    good recommendation for one sweep."""
    if written is None:
        return None
    lost = []
    if fresh.memory_used_bytes is None and written.memory_used_bytes is not None:
        lost.append("the framebuffer series")
    if fresh.samples == 0 and written.samples > 0:
        lost.append("samples")
    if not lost:
        return None
    return f"this sweep's answers for the target's pods lack {' and '.join(lost)}"


def _no_series(
    o: WorkloadObject,
    prev: crd.GPUWorkloadStatus,
    now: datetime.datetime,
    reason: str,
    missing: str,
) -> Result:
    """In Recommend mode, the target's series are gone or half gone (an exporter down, a
    partial answer): keep the last good recommendation, say it is stale. Otherwise a blip in
    one workload's series would wipe its recommendation and post RecommendationChanged again
    when the series come back. (In Apply mode the change machine decides, as before.) Either
    way Ready says NoUsageData, so going from half gone to gone posts one Warning."""
    missing = f"{missing} in the window"
    decided = [
        _cond(statuses.READY, False, "NoUsageData", missing),
        _cond(statuses.METRICS_AVAILABLE, False, reason, missing),
        _cond(
            statuses.RECOMMENDATION_READY,
            True,
            "Stale",
            "the target's series are missing; this is the last recommendation made with metrics",
        ),
        _cond(TARGET_NOT_FOUND, False, "TargetFound", "the target exists"),
    ]
    new = _keep(prev, decided, o.generation, now)
    return _finish(o, prev, new, _transition_events(prev, new))


def _evaluated(
    o: WorkloadObject,
    w: workloads.Workload,
    evaluation: engine.Evaluation,
    prev: crd.GPUWorkloadStatus | None,
    now: datetime.datetime,
    settings: Settings,
    state: ports.TargetState,
    stock: inventory.Inventory | None,
    inputs: ApplyInputs,
    catalog: gpus.Catalog,
) -> Result:
    has_usage = w.usage is not None
    extra: tuple[statuses.ConditionInput, ...] = (
        _cond(
            statuses.METRICS_AVAILABLE,
            has_usage,
            "SeriesFound" if has_usage else "NoSeries",
            "DCGM series found for the target's pods"
            if has_usage
            else "no DCGM series for the target's pods in the window",
        ),
        _cond(TARGET_NOT_FOUND, False, "TargetFound", "the target exists"),
    )
    if evaluation.capacity is not None:
        ok, reason, message = evaluation.capacity
        extra = (*extra, _cond(CAPACITY_AVAILABLE, ok, reason, message))
    rec = evaluation.recommendation
    if rec is not None:
        generation = ((state.body or {}).get("metadata") or {}).get("generation")
        rec = rec.model_copy(
            update={
                "id": planning.recommendation_id(
                    rec, rec.engine_settings, int(generation) if generation else None
                )
            }
        )
        evaluation = dataclasses.replace(evaluation, recommendation=rec)
    step = None
    if w.spec.mode == crd.Mode.APPLY or _in_flight(prev):
        step = machine.step(
            _observed(
                o,
                w.spec,
                state,
                current=evaluation.current,
                recommendation=rec if evaluation.outcome == engine.Outcome.RECOMMENDED else None,
                savings=evaluation.savings,
                alternatives=evaluation.alternatives,
                engine_settings=(
                    rec.engine_settings
                    if rec is not None
                    else prev.recommendation.engine_settings
                    if prev is not None and prev.recommendation is not None
                    else None
                ),
                usage=w.usage,
                no_recommendation=evaluation.message,
                stock=stock,
                inputs=inputs,
                catalog=catalog,
                now=now,
            ),
            prev.apply if prev is not None else None,
            prev.blocked if prev is not None else (),
        )
        extra = (*extra, *step.conditions)
    new = statuses.build(
        evaluation, generation=o.generation, now=now, previous=prev, extra_conditions=extra
    )
    if step is not None:
        new = _with_step(new, step)
    events = list(_transition_events(prev, new))
    old_rec = prev.recommendation if prev else None
    rec = new.recommendation
    if evaluation.outcome == engine.Outcome.RECOMMENDED and rec is not None:
        if old_rec is None or _key(old_rec) != _key(rec):
            events.append(
                Event(
                    NORMAL,
                    "RecommendationChanged",
                    f"recommend {statuses.summary(evaluation).recommended} instead of "
                    f"{statuses.summary(evaluation).current}: {evaluation.message}",
                )
            )
        elif _savings_moved(prev, new, settings.savings_event_fraction):
            assert new.savings is not None
            events.append(
                Event(
                    NORMAL,
                    "SavingsChanged",
                    f"projected savings now "
                    f"{statuses.money(new.savings.monthly_cost, new.savings.currency)}/month",
                )
            )
    return _with_apply(_finish(o, prev, new, tuple(events)), step)


def _in_flight(prev: crd.GPUWorkloadStatus | None) -> bool:
    return prev is not None and prev.apply is not None and prev.apply.phase in machine.IN_FLIGHT


def _observed(
    o: WorkloadObject,
    spec: crd.GPUWorkloadSpec,
    state: ports.TargetState,
    *,
    current: crd.Allocation | None,
    recommendation: crd.Recommendation | None,
    savings: crd.Savings | None,
    alternatives: tuple[crd.Candidate, ...],
    engine_settings: crd.EngineSettings | None,
    usage: profiles.UsageProfile | None,
    no_recommendation: str,
    stock: inventory.Inventory | None,
    inputs: ApplyInputs,
    catalog: gpus.Catalog,
    now: datetime.datetime,
) -> machine.Observed:
    kind = spec.target_ref.kind
    container = (
        state.gpus.container if state.gpus is not None else (spec.target_ref.container or "")
    )
    return machine.Observed(
        spec=spec,
        namespace=o.ref.namespace,
        annotations=o.annotations,
        target=state.body or {},
        container=container,
        pods=state.pod_objects,
        replicasets=state.replicaset_objects,
        current=current,
        recommendation=recommendation,
        savings=savings,
        alternatives=alternatives,
        engine_settings=engine_settings,
        usage=usage,
        verification_usage=inputs.verification.get(o.ref),
        stock=stock,
        budgets=inputs.budgets,
        permission=inputs.permissions.get(
            (o.ref.namespace, kind), "the operator's permission to patch was not checked"
        ),
        catalog=catalog,
        now=now,
        no_recommendation=no_recommendation,
    )


def _with_step(new: crd.GPUWorkloadStatus, step: machine.Step) -> crd.GPUWorkloadStatus:
    """The status with the apply step's state, plan and blocked candidates.

    Once the last applied change is measured, its realized savings stand beside the projection
    (``savings.realized`` names the change it measures); with nothing new recommended, the
    projection shown is that change's own.
    """
    update: dict[str, Any] = {"apply": step.apply, "blocked": step.blocked, "plan": step.plan}
    state = step.apply
    done = state is not None and state.phase in (
        crd.ApplyPhase.VERIFYING,
        crd.ApplyPhase.SUCCEEDED,
    )
    if state is not None and done:
        # Nothing new recommended: the savings shown are the applied change's projection.
        shown = new.savings if new.savings is not None else state.projected
        if shown is not None:
            update["savings"] = shown.model_copy(update={"realized": state.realized})
    return new.model_copy(update=update)


def _with_apply(result: Result, step: machine.Step | None) -> Result:
    if step is None:
        return result
    events = (
        *(Event(e.type, e.reason, e.message, key=e.key) for e in step.events),
        *result.events,
    )
    return dataclasses.replace(
        result,
        events=events,
        action=step.action,
        apply_outcome=step.outcome,
        realized=step.apply.realized if step.apply is not None else None,
    )


def _continued(
    o: WorkloadObject,
    spec: crd.GPUWorkloadSpec,
    item: Result,
    prev: crd.GPUWorkloadStatus | None,
    states: Mapping[workloads.WorkloadRef, ports.TargetState],
    stock: inventory.Inventory | None,
    inputs: ApplyInputs,
    catalog: gpus.Catalog,
    now: datetime.datetime,
) -> Result:
    """The next step of a change in flight when nothing could be recommended this sweep."""
    state = states.get(o.ref)
    if state is None or not state.found or state.body is None or prev is None:
        return item  # the target is gone: nothing to watch or restore; the record stays
    written = crd.GPUWorkloadStatus.model_validate(item.document)
    step = machine.step(
        _observed(
            o,
            spec,
            state,
            current=prev.current,
            recommendation=None,
            savings=None,
            alternatives=(),
            engine_settings=None,
            usage=None,
            no_recommendation="no recommendation this sweep",
            stock=stock,
            inputs=inputs,
            catalog=catalog,
            now=now,
        ),
        prev.apply,
        prev.blocked,
    )
    kept = [
        statuses.ConditionInput(c.type, c.status, c.reason, c.message)
        for c in written.conditions
        if c.type not in {d.type for d in step.conditions}
    ]
    merged = statuses.merge_conditions((*kept, *step.conditions), prev, o.generation, now)
    new = _with_step(written.model_copy(update={"conditions": merged}), step)
    new = new.model_copy(update={"plan": prev.plan})
    return _with_apply(_finish(o, prev, new, item.events), step)


def _key(a: crd.Allocation) -> tuple[object, ...]:
    return (a.gpu_model, a.mig_profile, a.gpus_per_replica, a.precision, a.variant)


def _savings_moved(
    prev: crd.GPUWorkloadStatus | None, new: crd.GPUWorkloadStatus, fraction: float
) -> bool:
    if prev is None or prev.savings is None or new.savings is None:
        return False
    old, cur = prev.savings.monthly_cost, new.savings.monthly_cost
    return abs(cur - old) > fraction * max(abs(old), 1.0)
