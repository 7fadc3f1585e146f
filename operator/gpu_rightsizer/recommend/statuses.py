"""From an evaluation to the GPUWorkload status the operator writes (and ``-o json`` prints).

Conditions keep their ``lastTransitionTime`` unless their status flips, so re-evaluating an
unchanged workload yields an identical status (no churn). The caller passes ``now``.
"""

from __future__ import annotations

import dataclasses
import datetime

from gpu_rightsizer.models import crd
from gpu_rightsizer.recommend import engine

READY = "Ready"
RECOMMENDATION_READY = "RecommendationReady"
INSUFFICIENT_DATA = "InsufficientData"
METRICS_AVAILABLE = "MetricsAvailable"

_CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


@dataclasses.dataclass(frozen=True)
class ConditionInput:
    """A condition as decided now, before timestamps are reconciled with the previous status."""

    type: str
    status: crd.ConditionStatus
    reason: str
    message: str


def timestamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(
    evaluation: engine.Evaluation,
    *,
    generation: int | None,
    now: datetime.datetime,
    previous: crd.GPUWorkloadStatus | None = None,
    extra_conditions: tuple[ConditionInput, ...] = (),
) -> crd.GPUWorkloadStatus:
    """The full status for an evaluation; ``extra_conditions`` come from the adapters."""
    decided = (*_conditions(evaluation), *extra_conditions)
    return crd.GPUWorkloadStatus(
        observed_generation=generation,
        conditions=merge_conditions(decided, previous, generation, now),
        current=evaluation.current,
        usage=evaluation.usage,
        recommendation=evaluation.recommendation,
        alternatives=evaluation.alternatives,
        savings=evaluation.savings,
        summary=summary(evaluation),
    )


def _conditions(evaluation: engine.Evaluation) -> tuple[ConditionInput, ...]:
    true, false = crd.ConditionStatus.TRUE, crd.ConditionStatus.FALSE
    outcome, reason, message = evaluation.outcome, evaluation.reason, evaluation.message
    if outcome in (engine.Outcome.RECOMMENDED, engine.Outcome.NO_CHANGE):
        return (
            ConditionInput(READY, true, reason, message),
            ConditionInput(RECOMMENDATION_READY, true, reason, message),
            ConditionInput(INSUFFICIENT_DATA, false, "EnoughObservation", "enough history"),
        )
    if outcome == engine.Outcome.INSUFFICIENT_DATA:
        return (
            ConditionInput(READY, false, reason, message),
            ConditionInput(RECOMMENDATION_READY, false, reason, message),
            ConditionInput(INSUFFICIENT_DATA, true, reason, message),
        )
    # Invalid input, or usage that cannot be true: nothing is recommended.
    return (
        ConditionInput(READY, false, reason, message),
        ConditionInput(RECOMMENDATION_READY, false, reason, message),
    )


def merge_conditions(
    decided: tuple[ConditionInput, ...],
    previous: crd.GPUWorkloadStatus | None,
    generation: int | None,
    now: datetime.datetime,
) -> tuple[crd.Condition, ...]:
    """Conditions with ``lastTransitionTime`` kept from ``previous`` where the status held."""
    before = {c.type: c for c in (previous.conditions if previous else ())}
    merged = []
    for c in decided:
        old = before.get(c.type)
        since = (
            old.last_transition_time if old is not None and old.status == c.status else None
        ) or timestamp(now)
        merged.append(
            crd.Condition(
                type=c.type,
                status=c.status,
                observed_generation=generation,
                last_transition_time=since,
                reason=c.reason,
                message=c.message[:32768],
            )
        )
    return tuple(merged)


def money(amount: float, currency: str) -> str:
    symbol = _CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{amount:,.0f}" if symbol else f"{amount:,.0f} {currency}"


def summary(evaluation: engine.Evaluation) -> crd.Summary:
    current = evaluation.current
    rec = evaluation.recommendation
    recommended = ""
    if evaluation.outcome == engine.Outcome.NO_CHANGE:
        recommended = "no change"
    elif rec is not None:
        recommended = _describe(rec)
    savings = evaluation.savings
    return crd.Summary(
        current=_describe(current) if current else "",
        recommended=recommended,
        monthly_savings=money(savings.monthly_cost, savings.currency) if savings else "",
    )


def _describe(allocation: crd.Allocation) -> str:
    text = allocation.describe()
    if allocation.precision is not None and allocation.variant is None:
        text += f" {allocation.precision}"
    return text
