"""Every metric gpu-rightsizer exports about itself, declared in one place.

The instruments live in their own ``CollectorRegistry`` rather than prometheus_client's global
one, so that each ``Instruments`` is independent (tests make a fresh one each) and the operator
exposes exactly these series, without the client library's process and platform collectors.

Per-workload series are labelled ``namespace`` and ``name`` (the GPUWorkload). A figure that is
not known (no recommendation yet) is absent rather than zero: ``set_workload`` removes its
series. The fleet totals are sums over the workloads currently known here, kept in step by
``set_workload`` and ``forget``.

A finished sweep can be recorded in one call with ``record_sweep``; callers may also use the
instruments directly, e.g.::

    with instruments.reconcile_duration.time():
        ...
    instruments.kubernetes_requests.labels(verb="patch").inc()
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import prometheus_client

_WORKLOAD_LABELS = ("namespace", "name")

APPLY_OUTCOMES = ("Applied", "RolledBack", "Failed")
"""How a change Apply mode made can end: the ``outcome`` of ``gpu_rightsizer_applies_total``."""

# One sweep evaluates every GPUWorkload: from well under a second to minutes for a large fleet.
SWEEP_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclasses.dataclass(frozen=True)
class _Contribution:
    """What one workload adds to the fleet totals."""

    currency: str | None
    savings_monthly: float | None
    gpus_freed: float | None


class Instruments:
    """The operator's own Prometheus instruments, registered in ``registry``."""

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        reg = self.registry

        # Per workload.
        self.workload_projected_savings = prometheus_client.Gauge(
            "gpu_rightsizer_workload_projected_savings_monthly",
            "Money per month that applying the recommendation would save, in the currency "
            "given by the currency label.",
            [*_WORKLOAD_LABELS, "currency"],
            registry=reg,
        )
        self.workload_gpus_freed = prometheus_client.Gauge(
            "gpu_rightsizer_workload_gpus_freed",
            "GPU-equivalents the recommendation would free: GPUs per replica freed times "
            "replicas (a MIG slice counts as its fraction of a GPU).",
            _WORKLOAD_LABELS,
            registry=reg,
        )
        self.workload_energy_savings = prometheus_client.Gauge(
            "gpu_rightsizer_workload_energy_savings_kwh_monthly",
            "Energy per month, in kilowatt-hours including PUE, that the recommendation would "
            "save.",
            _WORKLOAD_LABELS,
            registry=reg,
        )
        self.workload_co2_savings = prometheus_client.Gauge(
            "gpu_rightsizer_workload_co2_savings_kg_monthly",
            "CO2 per month, in kilograms, that the recommendation would avoid.",
            _WORKLOAD_LABELS,
            registry=reg,
        )
        self.workload_ready = prometheus_client.Gauge(
            "gpu_rightsizer_workload_ready",
            "1 when the GPUWorkload's Ready condition is True, else 0.",
            _WORKLOAD_LABELS,
            registry=reg,
        )

        self.workload_engine_activity = prometheus_client.Gauge(
            "gpu_rightsizer_workload_engine_activity_p99",
            "The busiest replica's graphics-engine activity (0-1), p99 over the window: an "
            "allocation at or near 0 for days is idle.",
            _WORKLOAD_LABELS,
            registry=reg,
        )
        self.workload_observed = prometheus_client.Gauge(
            "gpu_rightsizer_workload_observed_seconds",
            "History the workload's figures rest on (seconds, at most the window).",
            _WORKLOAD_LABELS,
            registry=reg,
        )

        # Fleet totals (sums of the per-workload figures above).
        self.fleet_projected_savings = prometheus_client.Gauge(
            "gpu_rightsizer_fleet_projected_savings_monthly",
            "Money per month that applying every recommendation would save, per currency.",
            ["currency"],
            registry=reg,
        )
        self.fleet_gpus_freed = prometheus_client.Gauge(
            "gpu_rightsizer_fleet_gpus_freed",
            "GPU-equivalents that applying every recommendation would free.",
            registry=reg,
        )

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
        self.workload_realized_savings = prometheus_client.Gauge(
            "gpu_rightsizer_workload_realized_savings_monthly",
            "Money the last applied change really saves per month, measured after it ran.",
            ["namespace", "name", "currency"],
            registry=reg,
        )

        self._lock = threading.Lock()
        self._realized_currency: dict[tuple[str, str], str] = {}
        self._contributions: dict[tuple[str, str], _Contribution] = {}
        self._fleet_currencies: set[str] = set()

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
            previous = self._contributions.get(key)
            if previous is not None and previous.currency not in (None, currency):
                self._remove(self.workload_projected_savings, namespace, name, previous.currency)

            self.workload_ready.labels(namespace, name).set(1 if ready else 0)
            if savings_monthly is not None and currency:
                self.workload_projected_savings.labels(namespace, name, currency).set(
                    savings_monthly
                )
            elif currency:
                self._remove(self.workload_projected_savings, namespace, name, currency)
            for gauge, value in (
                (self.workload_gpus_freed, gpus_freed),
                (self.workload_energy_savings, energy_kwh),
                (self.workload_co2_savings, co2_kg),
            ):
                if value is None:
                    self._remove(gauge, namespace, name)
                else:
                    gauge.labels(namespace, name).set(value)

            self._contributions[key] = _Contribution(currency, savings_monthly, gpus_freed)
            self._update_fleet()

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
        key = (namespace, name)
        with self._lock:
            old = self._realized_currency.pop(key, None)
            if old is not None and (realized_monthly is None or old != currency):
                self._remove(self.workload_realized_savings, namespace, name, old)
            if realized_monthly is not None and currency:
                self.workload_realized_savings.labels(namespace, name, currency).set(
                    realized_monthly
                )
                self._realized_currency[key] = currency

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
            for gauge, value in (
                (self.workload_engine_activity, engine_activity_p99),
                (self.workload_observed, observed_seconds),
            ):
                if value is None:
                    self._remove(gauge, namespace, name)
                else:
                    gauge.labels(namespace, name).set(value)

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted workload and take it out of the fleet totals."""
        with self._lock:
            realized = self._realized_currency.pop((namespace, name), None)
            if realized is not None:
                self._remove(self.workload_realized_savings, namespace, name, realized)
            contribution = self._contributions.pop((namespace, name), None)
            if contribution is not None and contribution.currency is not None:
                self._remove(
                    self.workload_projected_savings, namespace, name, contribution.currency
                )
            for gauge in (
                self.workload_ready,
                self.workload_gpus_freed,
                self.workload_energy_savings,
                self.workload_co2_savings,
                self.workload_engine_activity,
                self.workload_observed,
            ):
                self._remove(gauge, namespace, name)
            self._update_fleet()

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, as ``/metrics`` serves it."""
        return prometheus_client.generate_latest(self.registry)

    def _update_fleet(self) -> None:
        savings: dict[str, float] = {}
        gpus = 0.0
        for contribution in self._contributions.values():
            if contribution.currency and contribution.savings_monthly is not None:
                savings[contribution.currency] = (
                    savings.get(contribution.currency, 0.0) + contribution.savings_monthly
                )
            if contribution.gpus_freed is not None:
                gpus += contribution.gpus_freed
        for currency in self._fleet_currencies - savings.keys():
            self._remove(self.fleet_projected_savings, currency)
        for currency, total in savings.items():
            self.fleet_projected_savings.labels(currency).set(total)
        self._fleet_currencies = set(savings)
        self.fleet_gpus_freed.set(gpus)

    @staticmethod
    def _remove(gauge: prometheus_client.Gauge, *labels: str) -> None:
        # Older prometheus_client releases (0.20, the floor in pyproject) raise KeyError for a
        # series that was never set; newer ones ignore it.
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
