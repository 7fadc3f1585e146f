"""Every metric gpu-rightsizer exports about itself, declared in one place.

The instruments live in their own ``CollectorRegistry`` rather than prometheus_client's global
one, so that each ``Instruments`` is independent (tests make a fresh one each) and the operator
exposes exactly these series, without the client library's process and platform collectors.

Per-workload series are labelled ``namespace`` and ``name`` (the GPUWorkload). A figure that is
not known (no recommendation yet) is absent rather than zero: ``set_workload`` removes its
series. These series and the fleet totals are built at scrape time from one row of figures per
workload (``set_workload``, ``set_activity``, ``record_apply`` fill it, ``forget`` drops it), so
the totals are always the sums over the workloads known here and a sweep's updates cost
nothing per series.

A finished sweep can be recorded in one call with ``record_sweep``; callers may also use the
instruments directly, e.g.::

    with instruments.reconcile_duration.time():
        ...
    instruments.kubernetes_requests.labels(verb="patch").inc()
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import prometheus_client
import prometheus_client.core
import prometheus_client.registry

_WORKLOAD_LABELS = ("namespace", "name")

APPLY_OUTCOMES = ("Applied", "RolledBack", "Failed")
"""How a change Apply mode made can end: the ``outcome`` of ``gpu_rightsizer_applies_total``."""

# One sweep evaluates every GPUWorkload: from well under a second to minutes for a large fleet.
SWEEP_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclasses.dataclass(slots=True)
class _Row:
    """One workload's figures; None: that series is absent."""

    ready: float | None = None
    currency: str | None = None
    savings_monthly: float | None = None
    gpus_freed: float | None = None
    energy_kwh: float | None = None
    co2_kg: float | None = None
    engine_activity_p99: float | None = None
    observed_seconds: float | None = None
    realized_monthly: float | None = None
    realized_currency: str | None = None


# (metric name, help, the row's field, whether it carries a currency label: which field)
_WORKLOAD_FAMILIES: tuple[tuple[str, str, str, str | None], ...] = (
    (
        "gpu_rightsizer_workload_projected_savings_monthly",
        "Money per month that applying the recommendation would save, in the currency "
        "given by the currency label.",
        "savings_monthly",
        "currency",
    ),
    (
        "gpu_rightsizer_workload_gpus_freed",
        "GPU-equivalents the recommendation would free: GPUs per replica freed times "
        "replicas (a MIG slice counts as its fraction of a GPU).",
        "gpus_freed",
        None,
    ),
    (
        "gpu_rightsizer_workload_energy_savings_kwh_monthly",
        "Energy per month, in kilowatt-hours including PUE, that the recommendation would save.",
        "energy_kwh",
        None,
    ),
    (
        "gpu_rightsizer_workload_co2_savings_kg_monthly",
        "CO2 per month, in kilograms, that the recommendation would avoid.",
        "co2_kg",
        None,
    ),
    (
        "gpu_rightsizer_workload_ready",
        "1 when the GPUWorkload's Ready condition is True, else 0.",
        "ready",
        None,
    ),
    (
        "gpu_rightsizer_workload_engine_activity_p99",
        "The busiest replica's graphics-engine activity (0-1), p99 over the window: an "
        "allocation at or near 0 for days is idle.",
        "engine_activity_p99",
        None,
    ),
    (
        "gpu_rightsizer_workload_observed_seconds",
        "History the workload's figures rest on (seconds, at most the window).",
        "observed_seconds",
        None,
    ),
    (
        "gpu_rightsizer_workload_realized_savings_monthly",
        "Money the last applied change really saves per month, measured after it ran.",
        "realized_monthly",
        "realized_currency",
    ),
)


class _WorkloadSeries(prometheus_client.registry.Collector):
    """The per-workload gauges, built from one table at scrape time.

    One labelled ``Gauge`` child per workload and metric costs about 750 bytes (its value,
    lock and label tuple); seven of them over 10,000 workloads took 51 MiB of the operator's
    memory. A row of floats per workload holds the same figures in a few hundred bytes.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.rows: dict[tuple[str, str], _Row] = {}
        self._lock = lock

    def row(self, key: tuple[str, str]) -> _Row:
        """The workload's row, created empty if new (call with the lock held)."""
        found = self.rows.get(key)
        if found is None:
            found = self.rows[key] = _Row()
        return found

    def describe(self) -> list[prometheus_client.Metric]:
        families = [self._family(name, help_, unit) for name, help_, _, unit in _WORKLOAD_FAMILIES]
        return [*families, *self._fleet([], {})]

    def collect(self) -> list[prometheus_client.Metric]:
        with self._lock:
            rows = [(key, dataclasses.astuple(row)) for key, row in self.rows.items()]
        index = {field.name: i for i, field in enumerate(dataclasses.fields(_Row))}
        families: list[prometheus_client.Metric] = []
        for name, help_, field, currency in _WORKLOAD_FAMILIES:
            family = self._family(name, help_, currency)
            at = index[field]
            unit_at = index[currency] if currency else None
            for (namespace, workload), values in rows:
                value = values[at]
                if value is None:
                    continue
                labels = [namespace, workload]
                if unit_at is not None:
                    if not values[unit_at]:
                        continue
                    labels.append(values[unit_at])
                family.add_metric(labels, value)
            families.append(family)
        return [*families, *self._fleet(rows, index)]

    @staticmethod
    def _fleet(
        rows: list[tuple[tuple[str, str], tuple[Any, ...]]], index: dict[str, int]
    ) -> list[prometheus_client.Metric]:
        """The fleet totals: sums over the rows, so they never drift from the series."""
        savings: dict[str, float] = {}
        gpus = 0.0
        for _, values in rows:
            currency, monthly = values[index["currency"]], values[index["savings_monthly"]]
            if currency and monthly is not None:
                savings[currency] = savings.get(currency, 0.0) + monthly
            if values[index["gpus_freed"]] is not None:
                gpus += values[index["gpus_freed"]]
        by_currency = prometheus_client.core.GaugeMetricFamily(
            "gpu_rightsizer_fleet_projected_savings_monthly",
            "Money per month that applying every recommendation would save, per currency.",
            labels=["currency"],
        )
        for currency, total in sorted(savings.items()):
            by_currency.add_metric([currency], total)
        freed = prometheus_client.core.GaugeMetricFamily(
            "gpu_rightsizer_fleet_gpus_freed",
            "GPU-equivalents that applying every recommendation would free.",
            value=gpus,
        )
        return [by_currency, freed]

    @staticmethod
    def _family(
        name: str, help_: str, currency: str | None
    ) -> prometheus_client.core.GaugeMetricFamily:
        labels = [*_WORKLOAD_LABELS, *(["currency"] if currency else [])]
        return prometheus_client.core.GaugeMetricFamily(name, help_, labels=labels)


class Instruments:
    """The operator's own Prometheus instruments, registered in ``registry``."""

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        reg = self.registry

        # Per workload: one collector over a plain table (see _WorkloadSeries).
        self._lock = threading.Lock()
        self._workloads = _WorkloadSeries(self._lock)
        reg.register(self._workloads)

        # Sweeps.
        self.reconcile_duration = prometheus_client.Histogram(
            "gpu_rightsizer_reconcile_duration_seconds",
            "Time one sweep over all GPUWorkloads took.",
            buckets=SWEEP_BUCKETS_SECONDS,
            registry=reg,
        )
        self.sweep_workloads = prometheus_client.Gauge(
            "gpu_rightsizer_sweep_workloads",
            "GPUWorkloads evaluated in the last sweep.",
            registry=reg,
        )

        # Calls to the outside.
        self.prometheus_queries = prometheus_client.Counter(
            "gpu_rightsizer_prometheus_queries_total",
            "PromQL queries sent to Prometheus.",
            registry=reg,
        )
        self.prometheus_query_errors = prometheus_client.Counter(
            "gpu_rightsizer_prometheus_query_errors_total",
            "PromQL queries that failed (unreachable, HTTP error or bad response).",
            registry=reg,
        )
        self.kubernetes_requests = prometheus_client.Counter(
            "gpu_rightsizer_kubernetes_requests_total",
            "Requests sent to the Kubernetes API, by verb.",
            ["verb"],
            registry=reg,
        )
        self.status_patches = prometheus_client.Counter(
            "gpu_rightsizer_status_patches_total",
            "Patches written to GPUWorkload status.",
            registry=reg,
        )
        self.events = prometheus_client.Counter(
            "gpu_rightsizer_events_total",
            "Kubernetes Events posted, by reason.",
            ["reason"],
            registry=reg,
        )
        self.applies = prometheus_client.Counter(
            "gpu_rightsizer_applies_total",
            "Changes Apply mode finished, by outcome (Applied, RolledBack, Failed).",
            ["outcome"],
            registry=reg,
        )
        for outcome in APPLY_OUTCOMES:  # exported at 0 from the start, so rate() sees the 1st
            self.applies.labels(outcome)

    def set_workload(
        self,
        namespace: str,
        name: str,
        *,
        ready: bool,
        savings_monthly: float | None,
        currency: str | None,
        gpus_freed: float | None,
        energy_kwh: float | None,
        co2_kg: float | None,
    ) -> None:
        """Record one workload's latest evaluation and update the fleet totals.

        A ``None`` figure removes that series (unknown, not zero). Savings need a currency.
        """
        if savings_monthly is not None and not currency:
            raise ValueError(f"{namespace}/{name}: savings_monthly given without a currency")
        key = (namespace, name)
        with self._lock:
            row = self._workloads.row(key)
            row.ready = 1.0 if ready else 0.0
            row.currency = currency
            row.savings_monthly = savings_monthly if currency else None
            row.gpus_freed = gpus_freed
            row.energy_kwh = energy_kwh
            row.co2_kg = co2_kg

    def record_apply(
        self,
        namespace: str,
        name: str,
        *,
        outcome: str | None,
        realized_monthly: float | None,
        currency: str | None,
    ) -> None:
        """Count a finished change; show the realized savings of the last one (None: none)."""
        if outcome is not None:
            self.applies.labels(outcome).inc()
        with self._lock:
            row = self._workloads.row((namespace, name))
            known = realized_monthly is not None and currency
            row.realized_monthly = realized_monthly if known else None
            row.realized_currency = currency if known else None

    def record_sweep(
        self,
        *,
        seconds: float,
        workloads: int,
        queries: int = 0,
        query_errors: int = 0,
        status_patches: int = 0,
    ) -> None:
        """Record one finished sweep.

        ``seconds`` and ``workloads`` describe the sweep; the counts are added to the counters,
        for callers that tally queries and patches per sweep rather than as they go.
        """
        self.reconcile_duration.observe(seconds)
        self.sweep_workloads.set(workloads)
        self.prometheus_queries.inc(queries)
        self.prometheus_query_errors.inc(query_errors)
        self.status_patches.inc(status_patches)

    def set_activity(
        self,
        namespace: str,
        name: str,
        *,
        engine_activity_p99: float | None,
        observed_seconds: float | None,
    ) -> None:
        """The workload's busiest-replica activity and observed history; None removes one."""
        with self._lock:
            row = self._workloads.row((namespace, name))
            row.engine_activity_p99 = engine_activity_p99
            row.observed_seconds = observed_seconds

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted workload and take it out of the fleet totals."""
        with self._lock:
            self._workloads.rows.pop((namespace, name), None)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, as ``/metrics`` serves it."""
        return prometheus_client.generate_latest(self.registry)
