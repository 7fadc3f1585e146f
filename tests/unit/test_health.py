"""/healthz fails while sweeps keep failing, and recovers with the next good sweep."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
import pytest
from hack import staging

from gpu_rightsizer import catalogs, config, ports, reconcile
from gpu_rightsizer.handlers import health, operator, sweeping
from gpu_rightsizer.models import workloads
from tests.unit import test_reconcile

REF = test_reconcile.REF


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthy_until_the_configured_number_of_failures_in_a_row() -> None:
    clock = Clock()
    h = health.SweepHealth(interval_seconds=300, max_failures=3, clock=clock)
    assert h.problem() is None
    h.failed("ClusterReadError: listing pods: 503")
    h.failed("ClusterReadError: listing pods: 503")
    assert h.problem() is None
    h.failed("ClusterReadError: listing pods: 503")
    problem = h.problem()
    assert problem is not None
    assert "the last 3 sweeps failed" in problem and "listing pods: 503" in problem
    h.succeeded()
    assert h.problem() is None
    assert h.report() == {"consecutive_failures": 0, "last_error": None, "seconds_since_success": 0}


def test_unhealthy_when_no_sweep_succeeded_for_a_few_intervals() -> None:
    clock = Clock()
    h = health.SweepHealth(
        interval_seconds=300,
        jitter_fraction=0.1,
        stale_intervals=3,
        min_stale_seconds=60,
        clock=clock,
    )
    assert h.stale_after_seconds == pytest.approx(990)
    clock.now += 989
    assert h.problem() is None  # starting: the first sweep may take this long
    clock.now += 2
    assert "no sweep has succeeded for 991s" in (h.problem() or "")
    h.succeeded()
    clock.now += 900
    assert h.problem() is None
    clock.now += 100
    assert "no sweep succeeded for 1000s" in (h.problem() or "")


def test_short_intervals_get_at_least_the_minimum_grace() -> None:
    h = health.SweepHealth(interval_seconds=2, min_stale_seconds=60)
    assert h.stale_after_seconds == 60


# ---------------------------------------------------------------------------------------------
# the sweep loop reports to it


class BrokenReader(test_reconcile.FakeReader):
    """The cluster cannot be listed (until ``broken`` is cleared)."""

    def __init__(self, bodies: dict[workloads.WorkloadRef, Mapping[str, Any] | None]) -> None:
        super().__init__(bodies)
        self.broken = True

    def targets(
        self,
        refs: Sequence[tuple[workloads.WorkloadRef, str, str, str | None]],
        *,
        within: object = None,
    ) -> Mapping[workloads.WorkloadRef, ports.TargetState]:
        if self.broken:
            raise RuntimeError("listing deployments: 503 ServiceUnavailable")
        return super().targets(refs)


def sweeper(
    reader: test_reconcile.FakeReader, source: test_reconcile.FakeSource
) -> sweeping.Sweeper:
    api = test_reconcile.FakeApi()
    return sweeping.Sweeper(
        cfg=config.OperatorConfig(
            prometheus=config.PrometheusConnection(url="http://prometheus:9090"),
            interval_seconds=60,
            unhealthy_after_failures=2,
        ),
        reader=reader,
        source=source,
        writer=api,
        recorder=api,
        catalog=catalogs.default_catalog(),
        table=catalogs.default_precisions(),
    )


def test_failed_sweeps_make_the_probe_fail_and_a_good_one_heals_it() -> None:
    spec, target, usage = test_reconcile.example("vllm-kv-mostly-empty")
    reader = BrokenReader({REF: target})
    s = sweeper(reader, test_reconcile.FakeSource({REF: usage}))
    memo = kopf.Memo(sweeper=s)
    assert asyncio.run(s.sweep_once()) is None  # nothing observed yet: an idle sweep is fine
    assert operator.last_sweep(memo=memo)["consecutive_failures"] == 0
    s.observe(reconcile.WorkloadObject(ref=REF, spec=spec, generation=1))
    for _ in range(2):
        assert asyncio.run(s.sweep_once()) is None
    with pytest.raises(kopf.PermanentError, match=r"the last 2 sweeps failed.*503"):
        operator.last_sweep(memo=memo)
    reader.broken = False
    summary = asyncio.run(s.sweep_once())
    assert summary is not None and summary.patched == 1
    report = operator.last_sweep(memo=memo)
    assert report["consecutive_failures"] == 0 and report["workloads"] == 1


def test_a_sweep_with_problem_workloads_is_not_a_failure() -> None:
    spec, _, _ = test_reconcile.example("vllm-kv-mostly-empty")
    source = test_reconcile.FakeSource({}, error="http://prometheus:9090: connection refused")
    s = sweeper(test_reconcile.FakeReader({}), source)  # no target, and no Prometheus
    s.observe(reconcile.WorkloadObject(ref=REF, spec=spec, generation=1))
    for _ in range(3):
        assert asyncio.run(s.sweep_once()) is not None
    assert s.health.problem() is None


# ---------------------------------------------------------------------------------------------
# through kopf's own /healthz server


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_kopf_healthz_answers_500_while_unhealthy_and_200_after() -> None:
    from kopf._core.engines import probing  # noqa: PLC0415 (kopf's server, not public API)

    _, target, usage = test_reconcile.example("vllm-kv-mostly-empty")
    s = sweeper(test_reconcile.FakeReader({REF: target}), test_reconcile.FakeSource({REF: usage}))
    url = f"http://127.0.0.1:{staging.free_port()}/healthz"

    async def probe() -> list[int]:
        ready = asyncio.Event()
        server = asyncio.create_task(
            probing.health_reporter(
                url,
                memo=kopf.Memo(sweeper=s),
                indices={},
                registry=kopf.get_default_registry(),
                settings=kopf.OperatorSettings(),
                ready_flag=ready,
            )
        )
        try:
            await asyncio.wait_for(ready.wait(), timeout=10)
            codes = []
            for _ in range(2):
                s.health.failed("RuntimeError: listing pods: 503")
            codes.append(await asyncio.to_thread(_get, url))
            s.health.succeeded()
            codes.append(await asyncio.to_thread(_get, url))
            return codes
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)

    assert asyncio.run(probe()) == [500, 200]
