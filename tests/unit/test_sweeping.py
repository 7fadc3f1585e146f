"""The sweep loop's view of the objects when another writer changes a status during a sweep."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from gpu_rightsizer import catalogs, config, reconcile
from gpu_rightsizer.handlers import sweeping
from gpu_rightsizer.models import workloads
from tests.unit import test_reconcile

REF = test_reconcile.REF


class RacingApi(test_reconcile.FakeApi):
    """After the operator's patch lands, another writer changes the status; its watch event
    reaches the sweeper before the sweep ends."""

    def __init__(self) -> None:
        super().__init__()
        self.sweeper: sweeping.Sweeper | None = None
        self.race = False

    def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None:
        super().patch_status(ref, status)
        if not self.race or self.sweeper is None:
            return
        self.race = False
        assert self.status is not None
        self.status = {**self.status, "summary": {**self.status["summary"], "recommended": "x"}}
        seen = self.sweeper.objects[ref]
        self.sweeper.observe(dataclasses.replace(seen, status=dict(self.status)))


def test_a_status_changed_by_another_writer_during_a_sweep_is_repaired_by_the_next() -> None:
    spec, target, usage = test_reconcile.example("vllm-kv-mostly-empty")
    api = RacingApi()
    s = sweeping.Sweeper(
        cfg=config.OperatorConfig(
            prometheus=config.PrometheusConnection(url="http://prometheus:9090"),
            interval_seconds=60,
        ),
        reader=test_reconcile.FakeReader({REF: target}),
        source=test_reconcile.FakeSource({REF: usage}),
        writer=api,
        recorder=api,
        catalog=catalogs.default_catalog(),
        table=catalogs.default_precisions(),
    )
    api.sweeper = s
    s.observe(reconcile.WorkloadObject(ref=REF, spec=spec, generation=1))
    api.race = True
    first = asyncio.run(s.sweep_once())
    assert first is not None and first.patched == 1
    assert api.status is not None and api.status["summary"]["recommended"] == "x"
    # The sweeper holds the other writer's status (what the server has), not its own patch...
    assert s.objects[REF].status == api.status
    # ...so the next sweep puts its own back, and the one after has nothing left to write.
    second = asyncio.run(s.sweep_once())
    assert second is not None and second.patched == 1
    assert api.status["summary"]["recommended"] != "x"
    s.observe(dataclasses.replace(s.objects[REF], status=dict(api.status)))  # the echo
    third = asyncio.run(s.sweep_once())
    assert third is not None and third.patched == 0
