"""Apply mode's state machine: one step per sweep, persisted on the GPUWorkload's status.

Level-triggered: each sweep reads ``status.apply`` (the phase, the rollback record) and what
the cluster shows now, and decides the next step. The reconciler writes the new status
*before* it executes the returned action, so a crash anywhere leaves either nothing done or a
record from which the next sweep finishes the job:

* ``Patching``: the record (previous and desired field values) is on status. If the target
  already has the desired values, the patch landed: go to ``RollingOut``; if it still has the
  previous ones, send the patch (one JSON patch whose ``test`` operations make a second send
  fail rather than change anything twice); if it has neither, someone else changed it: stop.
* ``RollingOut``: watch the rollout until complete (``Verifying``), or failed / past
  ``rolloutTimeout`` (``RollingBack``).
* ``RollingBack``: restore the recorded fields until the target has them (``RolledBack``, the
  candidate blocked for ``cooldown``).
* ``Verifying``: the new pods run; a regression rolls back; after the verification window the
  realized savings are measured (``Succeeded``).
* otherwise (no change in flight): the gates — recommendation, cooldown, blocked candidates,
  plan, GitOps, permission, approval or the automatic policy, capacity, PodDisruptionBudgets.

Events carry a key (reason + recommendation id): the recorder names the Event after it, so a
step re-decided after a crash never posts the same Event twice.

Pure: never does I/O; ``now`` comes from the caller.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from gpu_rightsizer.apply import gates, patches, planning, realized, rollouts
from gpu_rightsizer.models import crd, durations, gpus, inventory, profiles
from gpu_rightsizer.recommend import statuses

APPLIED = "Applied"
SAVINGS_REALIZED = "SavingsRealized"
NORMAL, WARNING = "Normal", "Warning"
MEMORY_NEAR_LIMIT = 0.95
"""A p99 memory use above this share of the new allocation's usable memory is a regression."""
P = crd.ApplyPhase
IN_FLIGHT = frozenset({P.PATCHING, P.ROLLING_OUT, P.ROLLING_BACK, P.VERIFYING})


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    key: str | None = None
    """Names the Event: posting the same key again is a no-op (exactly once across crashes)."""


@dataclasses.dataclass(frozen=True)
class Action:
    """One JSON patch of the target, to send after the status is written."""

    purpose: str
    """``patch`` (apply the change) or ``restore`` (roll it back)."""
    kind: str
    namespace: str
    name: str
    operations: tuple[dict[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Observed:
    """What one sweep knows about one workload in Apply mode (or with a change in flight)."""

    spec: crd.GPUWorkloadSpec
    namespace: str
    annotations: Mapping[str, str]
    target: Mapping[str, Any]
    container: str
    pods: Sequence[Mapping[str, Any]]
    replicasets: Sequence[Mapping[str, Any]]
    current: crd.Allocation | None
    recommendation: crd.Recommendation | None
    """Only when the engine recommends a change; carries its id."""
    savings: crd.Savings | None
    alternatives: tuple[crd.Candidate, ...]
    """The engine's alternatives: an approved allocation with no room now is among them."""
    engine_settings: crd.EngineSettings | None
    usage: profiles.UsageProfile | None
    verification_usage: profiles.UsageProfile | None
    stock: inventory.Inventory | None
    budgets: Sequence[Mapping[str, Any]] | None
    """PodDisruptionBudgets of the namespace; None: they could not be read."""
    permission: str | None
    """None: the operator may patch the target; else why it may not."""
    catalog: gpus.Catalog
    now: datetime.datetime
    no_recommendation: str = "no recommendation"
    """Why there is no recommendation (the RecommendationReady message)."""


@dataclasses.dataclass(frozen=True)
class Step:
    apply: crd.ApplyState | None
    blocked: tuple[crd.BlockedCandidate, ...]
    plan: crd.Plan | None
    conditions: tuple[statuses.ConditionInput, ...]
    events: tuple[Event, ...] = ()
    action: Action | None = None
    outcome: str | None = None
    """``Applied``, ``RolledBack`` or ``Failed`` on the sweep a change finished so."""


def _ts(now: datetime.datetime) -> str:
    return statuses.timestamp(now)


def _time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _cond(type_: str, ok: bool, reason: str, message: str) -> statuses.ConditionInput:
    status = crd.ConditionStatus.TRUE if ok else crd.ConditionStatus.FALSE
    return statuses.ConditionInput(type_, status, reason, message[:32768])


def candidate_key(a: crd.Allocation) -> str:
    return a.describe() + (f" ({a.precision})" if a.precision and not a.variant else "")


def _target_name(o: Observed) -> str:
    return f"{o.spec.target_ref.kind} {o.namespace}/{o.spec.target_ref.name}"


def step(
    o: Observed, previous: crd.ApplyState | None, blocked: Sequence[crd.BlockedCandidate]
) -> Step:
    """The next step for one workload, from its persisted state and what the sweep read."""
    live = tuple(b for b in blocked if (_time(b.until) or o.now) > o.now)
    if previous is not None and previous.phase in IN_FLIGHT:
        handler = {
            P.PATCHING: _patching,
            P.ROLLING_OUT: _rolling_out,
            P.ROLLING_BACK: _rolling_back,
            P.VERIFYING: _verifying,
        }[previous.phase]
        return handler(o, previous, live)
    return _idle(o, previous, live)


# --- in flight ---------------------------------------------------------------------------------


def _patch_action(o: Observed, state: crd.ApplyState) -> Action:
    ref = o.spec.target_ref
    ops = patches.json_patch(o.target, state.previous, state.desired)
    return Action("patch", ref.kind, o.namespace, ref.name, tuple(ops))


def _restore_action(o: Observed, state: crd.ApplyState) -> Action:
    ref = o.spec.target_ref
    ops = patches.json_patch(o.target, state.desired, state.previous)
    return Action("restore", ref.kind, o.namespace, ref.name, tuple(ops))


def _in_flight(state: crd.ApplyState, reason: str, message: str) -> statuses.ConditionInput:
    return _cond(APPLIED, False, reason, message)


def _patching(
    o: Observed, state: crd.ApplyState, blocked: tuple[crd.BlockedCandidate, ...]
) -> Step:
    if patches.matches(o.target, state.desired):
        generation = int((o.target.get("metadata") or {}).get("generation") or 0)
        new = state.model_copy(
            update={
                "phase": P.ROLLING_OUT,
                "target_generation": generation,
                "patched_time": _ts(o.now),
                "message": f"{_target_name(o)} patched (generation {generation}); rolling out",
            }
        )
        return Step(new, blocked, None, (_in_flight(new, "RollingOut", new.message),))
    if not patches.matches(o.target, state.previous):
        # Someone changed those fields since the record was taken: applying now would clobber
        # their change, and the record would restore a state nobody wants. Stop; nothing done.
        message = (
            f"{_target_name(o)} changed before gpu-rightsizer patched it (the fields it would "
            "change no longer have their recorded values): nothing was applied"
        )
        return _failed(o, state, blocked, message, block=False)
    message = f"patching {_target_name(o)} with {state.candidate}"
    return Step(
        state,
        blocked,
        None,
        (_in_flight(state, "Patching", message),),
        action=_patch_action(o, state),
    )


def _failed(
    o: Observed,
    state: crd.ApplyState,
    blocked: tuple[crd.BlockedCandidate, ...],
    message: str,
    *,
    block: bool = True,
) -> Step:
    new = state.model_copy(
        update={"phase": P.FAILED, "finished_time": _ts(o.now), "message": message}
    )
    if block:
        blocked = _block(o, state, blocked, message)
    return Step(
        new,
        blocked,
        None,
        (_cond(APPLIED, False, "ApplyFailed", message),),
        events=(Event(WARNING, "ApplyFailed", message, key=f"failed-{state.recommendation_id}"),),
        outcome="Failed",
    )


def _block(
    o: Observed,
    state: crd.ApplyState,
    blocked: tuple[crd.BlockedCandidate, ...],
    reason: str,
) -> tuple[crd.BlockedCandidate, ...]:
    until = o.now + durations.parse(o.spec.apply.cooldown)
    kept = tuple(b for b in blocked if b.candidate != state.candidate)
    entry = crd.BlockedCandidate(candidate=state.candidate, until=_ts(until), reason=reason[:4096])
    return (*kept, entry)[-64:]


def _rolling_out(
    o: Observed, state: crd.ApplyState, blocked: tuple[crd.BlockedCandidate, ...]
) -> Step:
    kind = o.spec.target_ref.kind
    if not patches.matches(o.target, state.desired):
        message = (
            f"{_target_name(o)} no longer has the fields gpu-rightsizer set (changed by someone "
            "else during the rollout): stopped watching, nothing rolled back"
        )
        return _failed(o, state, blocked, message, block=False)
    rollout = rollouts.assess(
        kind, o.target, o.pods, o.replicasets, generation=state.target_generation, now=o.now
    )
    patched = _time(state.patched_time) or o.now
    timeout = durations.parse(o.spec.apply.rollout_timeout)
    if rollout.state == rollouts.State.COMPLETE:
        new = state.model_copy(
            update={
                "phase": P.VERIFYING,
                "applied_time": _ts(o.now),
                "revision": rollout.revision,
                "message": f"{state.candidate} rolled out; verifying for "
                f"{o.spec.apply.verification_window}",
            }
        )
        message = (
            f"applied {state.candidate} to {_target_name(o)} "
            f"(recommendation {state.recommendation_id})"
        )
        return Step(
            new,
            blocked,
            None,
            (_cond(APPLIED, True, "Applied", message),),
            events=(Event(NORMAL, "Applied", message, key=f"applied-{state.recommendation_id}"),),
            outcome="Applied",
        )
    failure = None
    if rollout.state == rollouts.State.FAILED:
        failure = rollout.message
    elif o.now - patched > timeout:
        failure = (
            f"rollout not complete after {o.spec.apply.rollout_timeout} (rolloutTimeout): "
            f"{rollout.message}"
        )
    if failure is None:
        message = f"rolling out {state.candidate}: {rollout.message}"
        new = state.model_copy(update={"revision": rollout.revision or state.revision})
        return Step(new, blocked, None, (_in_flight(new, "RollingOut", message),))
    return _start_rollback(o, state, blocked, failure)


def _start_rollback(
    o: Observed, state: crd.ApplyState, blocked: tuple[crd.BlockedCandidate, ...], failure: str
) -> Step:
    if not o.spec.apply.rollback_on_failure:
        return _failed(o, state, blocked, f"{failure} (rollbackOnFailure is false: left as it is)")
    new = state.model_copy(update={"phase": P.ROLLING_BACK, "message": failure})
    message = f"rolling back {state.candidate}: {failure}"
    return Step(
        new,
        blocked,
        None,
        (_in_flight(new, "RollingBack", message),),
        action=_restore_action(o, new),
    )


def _rolling_back(
    o: Observed, state: crd.ApplyState, blocked: tuple[crd.BlockedCandidate, ...]
) -> Step:
    if not patches.matches(o.target, state.previous) and not patches.matches(
        o.target, state.desired
    ):
        message = (
            f"{_target_name(o)} was changed by someone else while gpu-rightsizer rolled back "
            f"{state.candidate} ({state.message}): not restored, left as they set it"
        )
        return _failed(o, state, blocked, message)
    if not patches.matches(o.target, state.previous):
        message = f"rolling back {state.candidate}: {state.message}"
        return Step(
            state,
            blocked,
            None,
            (_in_flight(state, "RollingBack", message),),
            action=_restore_action(o, state),
        )
    until = o.now + durations.parse(o.spec.apply.cooldown)
    message = (
        f"rolled back {state.candidate} on {_target_name(o)}: {state.message}; this allocation "
        f"is blocked until {_ts(until)}"
    )
    new = state.model_copy(
        update={"phase": P.ROLLED_BACK, "finished_time": _ts(o.now), "message": message}
    )
    return Step(
        new,
        _block(o, state, blocked, state.message),
        None,
        (_cond(APPLIED, False, "RolledBack", message),),
        events=(
            Event(WARNING, "RolledBack", message, key=f"rolledback-{state.recommendation_id}"),
        ),
        outcome="RolledBack",
    )


def _regression(o: Observed, state: crd.ApplyState) -> str | None:
    """Something the new allocation does worse than it may: pods failing, memory, latency."""
    kind = o.spec.target_ref.kind
    problems = rollouts.pod_problems(rollouts.pods_of_revision(kind, o.pods, state.revision), o.now)
    if problems:
        return "; ".join(problems[:3])
    usage, alloc, base = o.verification_usage, state.allocation, state.baseline
    if usage is None:
        return None
    if alloc is not None and usage.memory_used_bytes is not None and alloc.memory_available_bytes:
        used = usage.memory_used_bytes.p99
        if used > MEMORY_NEAR_LIMIT * alloc.memory_available_bytes:
            return (
                f"memory p99 {used / 2**30:.1f} GiB is above {MEMORY_NEAR_LIMIT:.0%} of the "
                f"{alloc.memory_available_bytes / 2**30:.1f} GiB the new allocation has"
            )
    if usage.preemptions and base is not None and not base.preemptions:
        return f"vLLM preempted {usage.preemptions} requests since the change (none before)"
    latency = o.spec.policy.latency
    tpot = usage.time_per_output_token_seconds
    if tpot is not None and latency.guard != crd.LatencyGuard.OFF:
        limit = latency.time_per_output_token_seconds
        if base is not None and base.time_per_output_token_seconds:
            relative = (
                base.time_per_output_token_seconds * latency.max_time_per_output_token_slowdown
            )
            limit = min(limit, relative) if limit is not None else relative
        if limit is not None and tpot.p95 > limit:
            return (
                f"p95 time per output token {tpot.p95 * 1000:.0f} ms is above the guard's "
                f"{limit * 1000:.0f} ms"
            )
    return None


def _verifying(
    o: Observed, state: crd.ApplyState, blocked: tuple[crd.BlockedCandidate, ...]
) -> Step:
    regression = _regression(o, state)
    applied_message = f"applied {state.candidate} (recommendation {state.recommendation_id})"
    if regression is not None:
        message = f"regression after applying {state.candidate}: {regression}"
        if o.spec.apply.rollback_on_failure:
            event = Event(
                WARNING, "Regression", message, key=f"regression-{state.recommendation_id}"
            )
            rolled = _start_rollback(o, state, blocked, message)
            return dataclasses.replace(rolled, events=(event, *rolled.events))
        return Step(
            state,
            blocked,
            None,
            (_cond(APPLIED, True, "Regression", f"{applied_message}; {message}"),),
            events=(
                Event(WARNING, "Regression", message, key=f"regression-{state.recommendation_id}"),
            ),
        )
    applied_at = _time(state.applied_time) or o.now
    window = durations.parse(o.spec.apply.verification_window)
    if o.now - applied_at < window:
        return Step(
            state,
            blocked,
            None,
            (
                _cond(
                    APPLIED,
                    True,
                    "Applied",
                    f"{applied_message}; verifying until {_ts(applied_at + window)}",
                ),
            ),
        )
    measured = realized.measure(
        state,
        rollouts.pods_of_revision(o.spec.target_ref.kind, o.pods, state.revision) or o.pods,
        o.container,
        o.verification_usage,
        stock=o.stock,
        catalog=o.catalog,
        window=o.spec.apply.verification_window,
        now=o.now,
    )
    new = state.model_copy(
        update={"phase": P.SUCCEEDED, "finished_time": _ts(o.now), "realized": measured}
    )
    conditions = [_cond(APPLIED, True, "Applied", applied_message)]
    events = []
    if measured is not None:
        ok, text = realized.agreement(
            measured, o.spec.apply.realized_tolerance_percent, o.catalog.currency
        )
        conditions.append(
            _cond(SAVINGS_REALIZED, ok, "AsProjected" if ok else "DiffersFromProjection", text)
        )
        events.append(
            Event(
                NORMAL if ok else WARNING,
                "SavingsRealized",
                text,
                key=f"realized-{state.recommendation_id}",
            )
        )
    new = new.model_copy(update={"message": conditions[-1].message})
    return Step(new, blocked, None, tuple(conditions), events=tuple(events))


# --- no change in flight: the gates ------------------------------------------------------------


def _idle(
    o: Observed, previous: crd.ApplyState | None, blocked: tuple[crd.BlockedCandidate, ...]
) -> Step:
    keep = _done_conditions(o, previous)

    def wait(
        reason: str, message: str, plan: crd.Plan | None = None, events: tuple[Event, ...] = ()
    ) -> Step:
        return Step(
            previous, blocked, plan, (_cond(APPLIED, False, reason, message), *keep), events
        )

    if o.spec.mode != crd.Mode.APPLY:
        return Step(previous, blocked, None, keep)
    rec = o.recommendation
    approval = o.annotations.get(planning.APPROVE_ANNOTATION)
    waiting = _approved_without_room(o, approval)
    if waiting is not None:
        message = (
            f"recommendation {approval} ({waiting.describe()}) is approved, but no node has "
            "it free now: waiting for capacity (meanwhile the best allocation with room is "
            "recommended)"
        )
        return wait("WaitingForCapacity", message)
    stale = _stale_approval(approval, rec, previous)
    if rec is None or o.current is None:
        if previous is not None and previous.phase == P.SUCCEEDED and stale is None:
            return Step(
                previous,
                blocked,
                None,
                (
                    _cond(
                        APPLIED,
                        True,
                        "Applied",
                        previous.message or f"applied {previous.candidate}",
                    ),
                    *keep,
                ),
            )
        return wait(
            "NothingToApply", f"nothing to apply: {o.no_recommendation}", events=stale or ()
        )
    assert rec.id is not None
    try:
        plan = planning.plan_for(
            o.spec,
            o.target,
            o.current,
            rec,
            stock=o.stock,
            catalog=o.catalog,
            container=o.container,
        )
        patch = planning.patch_for(
            o.spec,
            o.target,
            o.current,
            rec,
            stock=o.stock,
            catalog=o.catalog,
            container=o.container,
        )
    except patches.PlanError as exc:
        return wait(exc.reason, f"cannot apply {rec.describe()}: {exc}", events=stale or ())
    if not patch.changes:
        return wait("NothingToChange", f"{_target_name(o)} already has {rec.describe()}", plan)
    key = candidate_key(rec)
    cooldown = _cooldown_until(o, previous)
    if cooldown is not None:
        return wait(
            "InCooldown",
            f"the last change finished recently: next change not before {_ts(cooldown)} "
            f"(apply.cooldown {o.spec.apply.cooldown})",
            plan,
            stale or (),
        )
    for b in blocked:
        if b.candidate == key:
            return wait(
                "CandidateBlocked",
                f"{key} was rolled back ({b.reason}); blocked until {b.until}",
                plan,
                stale or (),
            )
    owner = gates.gitops_owner(o.target)
    if owner is not None:
        message = (
            f"{_target_name(o)} is managed by {owner}: gpu-rightsizer never patches it; commit "
            "status.plan.patch to its source instead"
        )
        return wait("GitOpsManaged", message, plan, stale or ())
    elsewhere = gates.template_elsewhere(o.spec.target_ref.kind, o.target)
    if elsewhere is not None:
        return wait("TemplateElsewhere", f"{_target_name(o)}: {elsewhere}", plan, stale or ())
    controller = gates.rolled_out_by_its_controller(o.spec.target_ref.kind, o.target)
    if controller is not None:
        return wait("AppliedByHand", controller, plan, stale or ())
    if o.permission is not None:
        return wait("ApplyForbidden", o.permission, plan, stale or ())
    if o.spec.apply.approval == crd.Approval.MANUAL:
        if approval != rec.id:
            message = (
                f"waiting for approval of recommendation {rec.id} ({rec.describe()}): "
                f"gpu-rightsizer approve -n {o.namespace} <name>, or annotate "
                f"{planning.APPROVE_ANNOTATION}={rec.id}"
            )
            if stale:
                return wait("ApprovalStale", stale[0].message, plan, stale)
            return wait("AwaitingApproval", message, plan)
    else:
        auto = _automatic_gate(o, rec)
        if auto is not None:
            return wait(auto[0], auto[1], plan)
    if rec.availability != crd.Availability.IN_CLUSTER:
        why = {
            crd.Availability.NO_FREE_CAPACITY: "no node has it free now",
            crd.Availability.NEEDS_REPARTITION: "no node offers that MIG profile (repartition one)",
            crd.Availability.NOT_IN_CLUSTER: "the cluster has no such hardware",
        }.get(
            rec.availability or crd.Availability.UNKNOWN, "the cluster's GPU inventory is unknown"
        )
        return wait("WaitingForCapacity", f"waiting to apply {rec.describe()}: {why}", plan)
    if o.budgets is None:
        return wait(
            "PodDisruptionBudgetsUnknown",
            "PodDisruptionBudgets could not be read: not starting a rollout they might forbid",
            plan,
        )
    pdb = gates.disruption_blocked(o.target, o.budgets)
    if pdb is not None:
        return wait("BlockedByPodDisruptionBudget", pdb, plan)
    if not rollouts.settled(o.spec.target_ref.kind, o.target):
        return wait(
            "TargetRollingOut",
            f"{_target_name(o)} is rolling out already; waiting for it to finish",
            plan,
        )
    state = crd.ApplyState(
        phase=P.PATCHING,
        recommendation_id=rec.id,
        candidate=key,
        allocation=crd.Candidate.model_validate(
            {k: v for k, v in rec.model_dump().items() if k in crd.Candidate.model_fields}
        ),
        started_time=_ts(o.now),
        previous=patch.previous(),
        desired=patch.desired(),
        baseline=realized.baseline(o.current, o.usage, o.catalog),
        projected=o.savings,
        message=f"patching {_target_name(o)} with {key}",
    )
    how = "approved" if o.spec.apply.approval == crd.Approval.MANUAL else "automatic"
    message = f"applying {key} to {_target_name(o)} (recommendation {rec.id}, {how}): " + "; ".join(
        c.path for c in patch.changes
    )
    return Step(
        state,
        blocked,
        plan,
        (_cond(APPLIED, False, "Patching", state.message),),
        events=(Event(NORMAL, "ApplyStarted", message[:1024], key=f"started-{rec.id}"),),
        action=_patch_action(o, state),
    )


def _done_conditions(
    o: Observed, previous: crd.ApplyState | None
) -> tuple[statuses.ConditionInput, ...]:
    """The SavingsRealized condition of the last change, kept while it is the last one."""
    if previous is None or previous.phase != P.SUCCEEDED or previous.realized is None:
        return ()
    ok, text = realized.agreement(
        previous.realized, o.spec.apply.realized_tolerance_percent, o.catalog.currency
    )
    return (_cond(SAVINGS_REALIZED, ok, "AsProjected" if ok else "DiffersFromProjection", text),)


def _approved_without_room(o: Observed, approval: str | None) -> crd.Candidate | None:
    """The approved allocation, when it is an alternative only for want of free capacity.

    The engine recommends the best allocation with room; the one approved, once capacity ran
    out, is an alternative marked NoFreeCapacity with the same id (same allocation, same target
    generation, the workload's engine settings). It is waited for, not refused.
    """
    rec = o.recommendation
    if not approval or (rec is not None and approval == rec.id):
        return None
    generation = (o.target.get("metadata") or {}).get("generation")
    for alt in o.alternatives:
        if alt.availability != crd.Availability.NO_FREE_CAPACITY:
            continue
        alt_id = planning.recommendation_id(
            alt, o.engine_settings, int(generation) if generation else None
        )
        if alt_id == approval:
            return alt
    return None


def _stale_approval(
    approval: str | None, rec: crd.Recommendation | None, previous: crd.ApplyState | None
) -> tuple[Event, ...] | None:
    """A Warning when the approval names an id that is neither current nor the last applied."""
    if not approval:
        return None
    if rec is not None and approval == rec.id:
        return None
    if previous is not None and approval == previous.recommendation_id:
        return None
    current = (
        f"the current one is {rec.id} ({rec.describe()})"
        if rec is not None and rec.id
        else "there is no current recommendation"
    )
    message = (
        f"approval {approval} refused: it is not the current recommendation ({current}); "
        "review gpu-rightsizer plan and approve again"
    )
    return (Event(WARNING, "ApprovalStale", message, key=f"stale-{approval}"),)


def _cooldown_until(o: Observed, previous: crd.ApplyState | None) -> datetime.datetime | None:
    if previous is None:
        return None
    done = _time(previous.finished_time or previous.applied_time)
    if done is None:
        return None
    until = done + durations.parse(o.spec.apply.cooldown)
    return until if until > o.now else None


def _automatic_gate(o: Observed, rec: crd.Recommendation) -> tuple[str, str] | None:
    a = o.spec.apply
    if rec.confidence < a.min_confidence:
        return (
            "LowConfidence",
            f"confidence {rec.confidence:.2f} is below apply.minConfidence {a.min_confidence:g}",
        )
    monthly = o.savings.monthly_cost if o.savings is not None else 0.0
    if monthly < a.min_monthly_savings:
        return "BelowMinimumSavings", (
            f"projected {statuses.money(monthly, o.catalog.currency)}/month is below "
            f"apply.minMonthlySavings {a.min_monthly_savings:g}"
        )
    if not gates.window_open(a.window, o.now):
        assert a.window is not None
        return "OutsideWindow", f"outside the apply window ({gates.describe_window(a.window)})"
    return None
