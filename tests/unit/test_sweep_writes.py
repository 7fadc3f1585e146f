"""Writes of a sweep run concurrently and lose nothing; new objects are swept on their own."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Any

from gpu_rightsizer import catalogs, config, reconcile
from gpu_rightsizer.handlers import sweeping
from gpu_rightsizer.models import workloads
from tests.unit import test_reconcile

NOW = test_reconcile.NOW


class Api:
    """Statuses and Events per object, and the order every write arrived in (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[workloads.WorkloadRef, dict[str, Any]] = {}
        self.log: list[tuple[workloads.WorkloadRef, str]] = []
        self.fail_patch: set[workloads.WorkloadRef] = set()

    def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None:
        with self.lock:
            if ref in self.fail_patch:
                self.fail_patch.discard(ref)
                raise test_reconcile.ApiError(500)
            merged = test_reconcile.merge_patch(self.status.get(ref, {}), status)
            self.status[ref] = json.loads(json.dumps(merged))
            self.log.append((ref, "patch"))

    def emit(self, ref: workloads.WorkloadRef, *, type_: str, reason: str, message: str) -> None:
        with self.lock:
            self.log.append((ref, f"event {reason}"))


class GatedApi(Api):
    """The first ``width`` status patches wait for each other: only concurrent writes pass."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(width, timeout=30)
        self.gated = width

    def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None:
        with self.lock:
            gate = self.gated > 0
            self.gated -= 1
        if gate:
            self.barrier.wait()  # BrokenBarrierError unless `width` patches are in flight at once
        super().patch_status(ref, status)


def fleet(n: int) -> tuple[list[workloads.WorkloadRef], dict[str, Any], Any, Any]:
    spec, target, usage = test_reconcile.example("vllm-kv-mostly-empty")
    refs = [workloads.WorkloadRef(namespace=f"ns{i % 3}", name=f"w{i}") for i in range(n)]
    reader = test_reconcile.FakeReader(dict.fromkeys(refs, target))
    source = test_reconcile.FakeSource(dict.fromkeys(refs, usage))
    return refs, spec, reader, source


def sweep(
    api: Api,
    refs: list[workloads.WorkloadRef],
    spec: Mapping[str, Any],
    reader: Any,
    source: Any,
    **kwargs: Any,
) -> reconcile.SweepSummary:
    objects = [
        reconcile.WorkloadObject(ref=r, spec=spec, status=api.status.get(r), generation=1)
        for r in refs
    ]
    return reconcile.sweep(
        objects,
        reader=reader,
        source=source,
        writer=api,
        recorder=api,
        catalog=catalogs.default_catalog(),
        table=catalogs.default_precisions(),
        now=NOW,
        **kwargs,
    )


def test_concurrent_writes_keep_every_write_once_and_each_objects_order() -> None:
    refs, spec, reader, source = fleet(40)
    api = GatedApi(width=4)
    summary = sweep(api, refs, spec, reader, source, write_workers=8)
    assert summary.patched == 40 and summary.failed == frozenset() and not summary.errors
    assert set(summary.stage_seconds) == {"cluster_read", "prometheus", "engine", "writes"}
    for ref in refs:
        # Exactly one Event, then exactly one patch, for every object.
        assert [op for r, op in api.log if r == ref] == ["event RecommendationChanged", "patch"]
        assert api.status[ref]["conditions"]
    # Nothing left to write: the next sweep writes nothing at all.
    before = len(api.log)
    again = sweep(api, refs, spec, reader, source, write_workers=8)
    assert again.patched == 0 and len(api.log) == before


def test_a_failed_write_among_concurrent_ones_is_retried_at_the_next_sweep() -> None:
    refs, spec, reader, source = fleet(20)
    api = Api()
    api.fail_patch = {refs[7]}
    first = sweep(api, refs, spec, reader, source, write_workers=8)
    assert first.failed == {refs[7]} and first.patched == 19
    assert refs[7] not in api.status
    assert any(str(refs[7]) in e and "500" in e for e in first.errors)
    second = sweep(api, refs, spec, reader, source, write_workers=8)
    assert second.patched == 1 and second.failed == frozenset()
    assert api.status[refs[7]]["conditions"]
    # Its Event again (the status did not record it), then the patch; the others: nothing new.
    assert [op for r, op in api.log if r == refs[7]] == [
        "event RecommendationChanged",
        "event RecommendationChanged",
        "patch",
    ]


def test_an_object_that_changed_under_the_sweep_is_not_written_by_it() -> None:
    refs, spec, reader, source = fleet(5)
    api = Api()
    summary = sweep(
        api, refs, spec, reader, source, write_workers=4, still_current=lambda r: r != refs[2]
    )
    assert summary.superseded == {refs[2]} and summary.patched == 4
    assert not [op for r, op in api.log if r == refs[2]]  # neither its Event nor its status


# ---------------------------------------------------------------------------------------------
# the prompt sweep of new objects


class BlockingReader(test_reconcile.FakeReader):
    """Its first read blocks until released: a long full sweep in flight."""

    def __init__(self, bodies: Any) -> None:
        super().__init__(bodies)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.first = True

    def targets(self, refs: Any, *, within: Any = None) -> Any:
        if self.first:
            self.first = False
            self.entered.set()
            assert self.release.wait(30)
        return super().targets(refs, within=within)


def sweeper(reader: Any, source: Any, api: Api) -> sweeping.Sweeper:
    return sweeping.Sweeper(
        cfg=config.OperatorConfig(prometheus=config.PrometheusConnection(url="http://p:9090")),
        reader=reader,
        source=source,
        writer=api,
        recorder=api,
        catalog=catalogs.default_catalog(),
        table=catalogs.default_precisions(),
    )


def test_a_new_object_is_swept_on_its_own_while_a_full_sweep_is_in_flight() -> None:
    refs, spec, plain, source = fleet(6)
    reader = BlockingReader(plain.bodies)
    api = Api()
    s = sweeper(reader, source, api)
    old, new, changed = refs[:4], refs[4], refs[5]
    for ref in [*old, changed]:
        s.observe(reconcile.WorkloadObject(ref=ref, spec=spec, generation=1))

    async def scenario() -> tuple[Any, Any]:
        full = asyncio.create_task(s.sweep_once())
        assert await asyncio.to_thread(reader.entered.wait, 30)
        # While the full sweep reads the cluster: one object is created, one changes its spec.
        s.observe(reconcile.WorkloadObject(ref=new, spec=spec, generation=1))
        edited = {**spec, "policy": {**spec.get("policy", {}), "memoryHeadroomPercent": 30}}
        s.observe(reconcile.WorkloadObject(ref=changed, spec=edited, generation=2))
        prompt = await s.sweep_pending()
        assert not full.done()  # written before the full sweep is done
        reader.release.set()
        return prompt, await full

    prompt, full = asyncio.run(scenario())
    assert {r.ref for r in prompt.results} == {new, changed}
    assert prompt.patched == 2
    # The prompt sweep read just its objects' namespaces (its read finished first, while the
    # full sweep's was held), the full sweep the whole cluster.
    assert reader.within == [{new.namespace, changed.namespace}, None]
    # The full sweep read the old version of `changed`: it leaves it to the prompt sweep.
    assert {r.ref for r in full.results} == {*old, changed}
    assert full.superseded == {changed} and full.patched == 4
    assert [op for r, op in api.log if r == changed] == ["event RecommendationChanged", "patch"]
    assert s.last_sweep["kind"] == "full"
    # Nothing pending any more: no further prompt sweep.
    assert asyncio.run(s.sweep_pending()) is None


def test_a_full_sweep_leaves_out_what_a_prompt_sweep_holds() -> None:
    refs, spec, plain, source = fleet(3)
    reader = BlockingReader(plain.bodies)
    api = Api()
    s = sweeper(reader, source, api)
    s.observe(reconcile.WorkloadObject(ref=refs[0], spec=spec, generation=1))

    async def scenario() -> tuple[Any, Any]:
        prompt = asyncio.create_task(s.sweep_pending())  # holds refs[0], blocked in its read
        assert await asyncio.to_thread(reader.entered.wait, 30)
        for ref in refs[1:]:
            s.observe(reconcile.WorkloadObject(ref=ref, spec=spec, generation=1))
        full = await s.sweep_once()
        reader.release.set()
        return await prompt, full

    prompt, full = asyncio.run(scenario())
    assert {r.ref for r in prompt.results} == {refs[0]}
    assert {r.ref for r in full.results} == set(refs[1:])
    assert sorted(op for r, op in api.log if op == "patch") == ["patch"] * 3
    assert asyncio.run(s.sweep_pending()) is None  # the full sweep read the other two


def test_a_sweep_decided_in_slices_writes_what_one_batch_writes(monkeypatch: Any) -> None:
    refs, spec, reader, source = fleet(7)
    whole = Api()
    whole.fail_patch = {refs[5]}
    one = sweep(whole, refs, spec, reader, source, write_workers=4)
    monkeypatch.setattr(reconcile, "DECIDE_BATCH", 2)  # slices of 2, 2, 2, 1
    sliced = Api()
    sliced.fail_patch = {refs[5]}
    many = sweep(sliced, refs, spec, reader, source, write_workers=4)
    assert sliced.status == whole.status and len(sliced.status) == 6
    assert [r.ref for r in many.results] == refs  # every object once, in order
    assert many.failed == one.failed == {refs[5]} and many.patched == one.patched == 6
    assert sorted(sliced.log, key=str) == sorted(whole.log, key=str)
    # A finished sweep keeps no patches, and a changed status whole (the object's new status).
    assert all(r.status == {} for r in many.results)
    assert all(r.document == sliced.status[r.ref] for r in many.results if r.ref != refs[5])
    # An unchanged status is not copied again: just the usage figures the metrics read.
    again = sweep(sliced, refs, spec, reader, source, write_workers=4)
    unchanged = [r for r in again.results if not r.changed]
    assert unchanged and all(set(r.document) <= {"usage"} for r in unchanged)
    assert all(r.document.get("usage") == sliced.status[r.ref].get("usage") for r in unchanged)
