"""A sweep through fake ports: statuses, patches only on change, Events only on transitions."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml

from gpu_rightsizer import catalogs, decision, ports, reconcile
from gpu_rightsizer.manifests import targets
from gpu_rightsizer.models import gpus, inventory, profiles, workloads

EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"
NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
REF = workloads.WorkloadRef(namespace="ml", name="chat")


def example(case: str) -> tuple[dict[str, Any], dict[str, Any], profiles.UsageProfile]:
    docs = list(yaml.safe_load_all((EXAMPLES / f"{case}.yaml").read_text()))
    gw = next(d for d in docs if d["kind"] == "GPUWorkload")
    target = next(d for d in docs if d["kind"] == "Deployment")
    usage = json.loads((EXAMPLES / f"{case}.usage.json").read_text())["items"][0]["usage"]
    return gw["spec"], target, profiles.UsageProfile.model_validate(usage)


class FakeReader:
    def __init__(self, bodies: dict[workloads.WorkloadRef, Mapping[str, Any] | None]) -> None:
        self.bodies = bodies
        self.calls = 0
        self.stock: inventory.Inventory | None = None
        self.within: list[object] = []
        """What each read was limited to (None: the whole cluster)."""

    def targets(
        self,
        refs: Sequence[tuple[workloads.WorkloadRef, str, str, str | None]],
        *,
        within: object = None,
    ) -> Mapping[workloads.WorkloadRef, ports.TargetState]:
        self.calls += 1
        self.within.append(within)
        out = {}
        for ref, kind, name, container in refs:
            body = self.bodies.get(ref)
            if body is None:
                out[ref] = ports.TargetState(found=False)
                continue
            out[ref] = ports.TargetState(
                found=True,
                gpus=targets.read(body, container),
                pods=ports.TargetPods(ref, ref.namespace, kind, name),
                body=body,
            )
        return out

    def inventory(self, catalog: gpus.Catalog) -> inventory.Inventory | None:
        return self.stock

    def disruption_budgets(self) -> list[dict[str, Any]]:
        return []


@dataclasses.dataclass
class FakeSource:
    profiles: dict[workloads.WorkloadRef, profiles.UsageProfile]
    error: str | None = None

    def collect(
        self,
        targets: Sequence[ports.TargetPods],
        *,
        window: str,
        at: datetime.datetime | None = None,
    ) -> ports.UsageReport:
        if self.error:
            return ports.UsageReport(profiles={}, queries=3, error=self.error)
        wanted = {t.workload for t in targets}
        found = {r: p for r, p in self.profiles.items() if r in wanted}
        return ports.UsageReport(profiles=found, queries=3)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies one."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


class FakeApi:
    """Stores status as the API server would after merge patches; records Events."""

    def __init__(self) -> None:
        self.status: dict[str, Any] | None = None
        self.patches = 0
        self.events: list[tuple[str, str, str]] = []

    def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None:
        self.patches += 1
        self.status = json.loads(json.dumps(merge_patch(self.status or {}, status)))

    def emit(self, ref: workloads.WorkloadRef, *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def run(
    api: FakeApi,
    spec: Mapping[str, Any],
    reader: FakeReader,
    source: FakeSource,
    now: datetime.datetime = NOW,
    *,
    narrow: bool = False,
) -> reconcile.SweepSummary:
    obj = reconcile.WorkloadObject(ref=REF, spec=spec, status=api.status, generation=1)
    return reconcile.sweep(
        [obj],
        reader=reader,
        source=source,
        writer=api,
        recorder=api,
        catalog=catalogs.default_catalog(),
        table=catalogs.default_precisions(),
        now=now,
        narrow=narrow,
    )


def conditions(api: FakeApi) -> dict[str, dict[str, Any]]:
    assert api.status is not None
    return {c["type"]: c for c in api.status["conditions"]}


def setup(case: str = "vllm-kv-mostly-empty") -> tuple[dict[str, Any], FakeReader, FakeSource]:
    spec, target, usage = example(case)
    return spec, FakeReader({REF: target}), FakeSource({REF: usage})


def test_first_sweep_writes_status_and_one_event_then_nothing_changes() -> None:
    spec, reader, source = setup()
    api = FakeApi()
    first = run(api, spec, reader, source)
    assert api.patches == 1 and first.patched == 1
    c = conditions(api)
    assert c["Ready"]["status"] == "True"
    assert c["MetricsAvailable"]["status"] == "True"
    assert c["TargetNotFound"]["status"] == "False"
    assert api.status is not None and api.status["recommendation"]["gpuModel"] == "L40S"
    assert api.status["observedGeneration"] == 1
    assert [e[1] for e in api.events] == ["RecommendationChanged"]
    # A later sweep (or an operator restart: the status is read back from the object) with
    # the same data patches nothing and emits nothing.
    later = NOW + datetime.timedelta(minutes=5)
    second = run(api, spec, reader, source, now=later)
    assert api.patches == 1 and second.patched == 0
    assert len(api.events) == 1
    assert conditions(api)["Ready"]["lastTransitionTime"] == "2026-11-29T12:00:00Z"


def test_prometheus_outage_keeps_the_recommendation_marked_stale_then_recovers() -> None:
    spec, reader, source = setup()
    api = FakeApi()
    run(api, spec, reader, source)
    good = dict(api.status or {})
    source.error = "http://prom:9090: connection refused"
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=5))
    c = conditions(api)
    assert c["MetricsAvailable"]["status"] == "False"
    assert c["MetricsAvailable"]["reason"] == "PrometheusUnavailable"
    assert "connection refused" in c["MetricsAvailable"]["message"]
    assert c["RecommendationReady"]["reason"] == "Stale"
    assert c["Ready"]["status"] == "False"
    assert api.status is not None
    assert api.status["recommendation"] == good["recommendation"]
    assert api.status["savings"] == good["savings"]
    assert ("Warning", "MetricsUnavailable") in [(e[0], e[1]) for e in api.events]
    patches, events = api.patches, len(api.events)
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=10))
    assert (api.patches, len(api.events)) == (patches, events)
    source.error = None
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=15))
    c = conditions(api)
    assert c["Ready"]["status"] == "True"
    assert c["MetricsAvailable"]["status"] == "True"
    assert c["Ready"]["lastTransitionTime"] == "2026-11-29T12:15:00Z"


def test_missing_target_then_recovery() -> None:
    spec, reader, source = setup()
    api = FakeApi()
    run(api, spec, reader, source)
    body = reader.bodies.pop(REF)
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=1))
    c = conditions(api)
    assert (c["TargetNotFound"]["status"], c["Ready"]["reason"]) == ("True", "TargetNotFound")
    assert "Deployment ml/chat not found" in c["Ready"]["message"]
    assert ("Warning", "TargetNotFound") in [(e[0], e[1]) for e in api.events]
    reader.bodies[REF] = body
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=2))
    c = conditions(api)
    assert c["TargetNotFound"]["status"] == "False"
    assert c["Ready"]["status"] == "True"


def test_mode_off_leaves_status_alone_but_says_so() -> None:
    spec, reader, source = setup()
    api = FakeApi()
    run(api, spec, reader, source)
    before = dict(api.status or {})
    reader.calls = 0
    run(api, {**spec, "mode": "Off"}, reader, source)
    assert reader.calls == 0
    assert api.status is not None
    assert api.status["recommendation"] == before["recommendation"]
    assert conditions(api)["Ready"]["reason"] == "Off"


def test_invalid_spec_and_unknown_gpu_model_get_conditions() -> None:
    spec, reader, source = setup()
    api = FakeApi()
    run(api, {**spec, "policy": {"memoryHeadroomPercent": 500}}, reader, source)
    ready = conditions(api)["Ready"]
    assert ready["reason"] == "InvalidSpec"
    assert "spec.policy.memoryHeadroomPercent" in ready["message"]
    body = reader.bodies[REF]
    pod = body["spec"]["template"]["spec"]
    reader.bodies[REF] = {
        **body,
        "spec": {
            **body["spec"],
            "template": {"spec": {**pod, "nodeSelector": {}}},
        },
    }
    api2 = FakeApi()
    run(api2, {**spec, "gpuModel": "TPU-v5"}, reader, source)
    ready = conditions(api2)["Ready"]
    assert ready["reason"] == "UnknownGPUModel"
    assert "'TPU-v5'" in ready["message"] and "spec.gpuModel" in ready["message"]


def test_no_series_is_reported_as_metrics_not_available() -> None:
    spec, reader, _ = setup()
    api = FakeApi()
    run(api, spec, reader, FakeSource({}))
    c = conditions(api)
    assert (c["MetricsAvailable"]["status"], c["MetricsAvailable"]["reason"]) == (
        "False",
        "NoSeries",
    )
    assert c["InsufficientData"]["status"] == "True"
    assert c["Ready"]["status"] == "False"


def test_series_that_vanish_keep_the_last_recommendation_stale_and_come_back_quietly() -> None:
    spec, reader, source = setup()
    api = FakeApi()
    run(api, spec, reader, source)
    assert api.status is not None
    good = api.status["recommendation"]
    posted = len(api.events)
    missing = run(api, spec, reader, FakeSource({}), now=NOW + datetime.timedelta(minutes=5))
    assert missing.patched == 1
    c = conditions(api)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "NoUsageData")
    assert (c["MetricsAvailable"]["status"], c["MetricsAvailable"]["reason"]) == (
        "False",
        "NoSeries",
    )
    assert (c["RecommendationReady"]["status"], c["RecommendationReady"]["reason"]) == (
        "True",
        "Stale",
    )
    assert api.status["recommendation"] == good
    assert [e[1] for e in api.events[posted:]] == ["NoUsageData"]
    again = run(api, spec, reader, FakeSource({}), now=NOW + datetime.timedelta(minutes=10))
    assert again.patched == 0 and [e[1] for e in api.events[posted:]] == ["NoUsageData"]
    back = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=15))
    assert back.patched == 1 and conditions(api)["Ready"]["status"] == "True"
    assert api.status["recommendation"] == good
    # The same recommendation as before the gap: no RecommendationChanged again.
    assert [e[1] for e in api.events[posted:]] == ["NoUsageData"]


@pytest.mark.parametrize(
    ("lost", "update"),
    [
        ("the framebuffer series", {"memory_used_bytes": None}),
        ("samples", {"samples": 0}),
    ],
)
def test_series_half_gone_in_one_sweep_keep_the_last_recommendation_stale(
    lost: str, update: dict[str, Any]
) -> None:
    """An exporter that goes (or comes back) while a sweep's queries run leaves a profile with
    some series and not others: that is not a workload with no history, and its recommendation
    stays, marked stale, as when all its series are gone."""
    spec, reader, source = setup()
    api = FakeApi()
    run(api, spec, reader, source)
    assert api.status is not None
    good = api.status["recommendation"]
    posted = len(api.events)
    partial = FakeSource({REF: source.profiles[REF].model_copy(update=update)})
    run(api, spec, reader, partial, now=NOW + datetime.timedelta(minutes=5))
    c = conditions(api)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "NoUsageData")
    assert (c["MetricsAvailable"]["status"], c["MetricsAvailable"]["reason"]) == (
        "False",
        "PartialSeries",
    )
    assert lost in c["MetricsAvailable"]["message"]
    assert c["RecommendationReady"]["reason"] == "Stale"
    assert api.status["recommendation"] == good
    # All of them gone at the next sweep: the same Ready reason, no second Warning.
    run(api, spec, reader, FakeSource({}), now=NOW + datetime.timedelta(minutes=10))
    assert conditions(api)["MetricsAvailable"]["reason"] == "NoSeries"
    assert api.status["recommendation"] == good
    back = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=15))
    assert back.patched == 1 and conditions(api)["Ready"]["status"] == "True"
    assert [e[1] for e in api.events[posted:]] == ["NoUsageData"]


def test_small_usage_drift_rewrites_nothing_but_a_real_change_does() -> None:
    spec, reader, source = setup("vllm-kv-saturated")
    api = FakeApi()
    run(api, spec, reader, source)
    usage = source.profiles[REF]
    assert usage.preemptions is not None
    drifted = usage.model_copy(
        update={"samples": usage.samples + 40, "preemptions": usage.preemptions + 1}
    )
    source.profiles[REF] = drifted
    later = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=5))
    assert later.patched == 0
    busier = drifted.model_copy(
        update={
            "graphics_engine_active": drifted.graphics_engine_active.model_copy(
                update={"p95": 0.66, "p99": 0.7, "max": 0.75}
            )
        }
    )
    source.profiles[REF] = busier
    changed = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=10))
    assert changed.patched == 1
    assert api.status is not None
    assert api.status["usage"]["graphicsEngineActive"]["p95"] == 0.66


def test_a_window_edge_moving_one_rounding_step_rewrites_nothing() -> None:
    """As the query window slides, one sample leaves it and coverage drops by one step of its
    rounding (0.17 to 0.16: a float difference of 0.010000000000000009); that is inside the
    0.01 tolerance and no status is rewritten, not the whole fleet at every sweep."""
    spec, reader, source = setup("vllm-kv-saturated")
    api = FakeApi()
    source.profiles[REF] = source.profiles[REF].model_copy(update={"coverage": 0.17})
    run(api, spec, reader, source)
    assert api.status is not None and api.status["usage"]["coverage"] == 0.17
    usage = source.profiles[REF]
    source.profiles[REF] = usage.model_copy(update={"coverage": 0.16, "samples": usage.samples - 1})
    later = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=5))
    assert later.patched == 0
    assert api.status["usage"]["coverage"] == 0.17
    source.profiles[REF] = usage.model_copy(update={"coverage": 0.15})
    moved = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=10))
    assert moved.patched == 1 and api.status["usage"]["coverage"] == 0.15


def test_a_higher_peak_takes_effect_at_once_however_little_it_rose() -> None:
    spec, reader, source = setup("vllm-kv-saturated")
    api = FakeApi()
    run(api, spec, reader, source)
    usage = source.profiles[REF]
    assert usage.memory_used_bytes is not None
    peak = usage.memory_used_bytes.max
    # 1 % more memory at the peak: inside the churn tolerance, but a higher need.
    higher = usage.model_copy(
        update={
            "memory_used_bytes": usage.memory_used_bytes.model_copy(update={"max": peak * 1.01})
        }
    )
    source.profiles[REF] = higher
    later = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=5))
    assert later.patched == 1
    assert api.status is not None
    assert api.status["usage"]["memoryUsedBytes"]["max"] > peak


# ---------------------------------------------------------------------------------------------
# Events are delivered at least once: posted before the status patch that records them


class Crash(BaseException):
    """The operator dying mid-sweep: not an Exception, so nothing in the sweep catches it."""


class FailingApi(FakeApi):
    """A FakeApi whose next status patches or Events raise the exceptions queued for them."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_patches: list[BaseException] = []
        self.fail_events: list[BaseException] = []

    def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None:
        if self.fail_patches:
            raise self.fail_patches.pop(0)
        super().patch_status(ref, status)

    def emit(self, ref: workloads.WorkloadRef, *, type_: str, reason: str, message: str) -> None:
        if self.fail_events:
            raise self.fail_events.pop(0)
        super().emit(ref, type_=type_, reason=reason, message=message)


class ApiError(RuntimeError):
    def __init__(self, status: int) -> None:
        super().__init__(f"{status} from the API server")
        self.status = status


def reasons(api: FakeApi) -> list[str]:
    return [reason for _, reason, _ in api.events]


def test_a_crash_before_the_event_is_posted_loses_no_event() -> None:
    spec, reader, source = setup()
    api = FailingApi()
    api.fail_events.append(Crash())
    with pytest.raises(Crash):
        run(api, spec, reader, source)
    # The operator died before the Event: the status must not record the transition yet.
    assert api.status is None and api.events == []
    # After the restart, the status is read back from the object: the same transition again.
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=1))
    assert reasons(api) == ["RecommendationChanged"]
    assert conditions(api)["Ready"]["status"] == "True"
    # Recorded now: a normal restart posts nothing more.
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=2))
    assert reasons(api) == ["RecommendationChanged"]


def test_a_crash_between_the_event_and_the_patch_posts_the_event_again_once() -> None:
    spec, reader, source = setup()
    api = FailingApi()
    api.fail_patches.append(Crash())
    with pytest.raises(Crash):
        run(api, spec, reader, source)
    assert reasons(api) == ["RecommendationChanged"] and api.status is None
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=1))
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=2))
    # At least once; twice only because of the crash (the recorder aggregates the pair).
    assert reasons(api) == ["RecommendationChanged", "RecommendationChanged"]
    assert api.patches == 1


def test_an_event_that_cannot_be_posted_holds_the_status_back_until_it_is() -> None:
    spec, reader, source = setup()
    api = FailingApi()
    api.fail_events.append(ApiError(503))
    first = run(api, spec, reader, source)
    assert api.status is None and first.patched == 0
    assert first.failed == {REF}
    assert any("RecommendationChanged not posted" in e for e in first.errors)
    second = run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=1))
    assert second.patched == 1 and second.failed == frozenset()
    assert reasons(api) == ["RecommendationChanged"]
    assert conditions(api)["Ready"]["status"] == "True"


def test_a_failed_status_patch_is_retried_with_its_event() -> None:
    spec, reader, source = setup()
    api = FailingApi()
    api.fail_patches.append(ApiError(500))
    first = run(api, spec, reader, source)
    assert first.failed == {REF} and api.status is None
    run(api, spec, reader, source, now=NOW + datetime.timedelta(minutes=1))
    assert api.status is not None
    assert reasons(api) == ["RecommendationChanged", "RecommendationChanged"]


def test_an_event_refused_for_good_does_not_freeze_the_status() -> None:
    spec, reader, source = setup()
    api = FailingApi()
    api.fail_events.append(ApiError(403))
    first = run(api, spec, reader, source)
    assert first.patched == 1 and first.failed == frozenset()
    assert conditions(api)["Ready"]["status"] == "True"
    assert any("403" in e for e in first.errors)


# ---------------------------------------------------------------------------------------------
# one object must never stop the fleet


def sweep_many(
    api: dict[workloads.WorkloadRef, FakeApi],
    specs: Mapping[workloads.WorkloadRef, Mapping[str, Any]],
    reader: FakeReader,
    source: FakeSource,
) -> reconcile.SweepSummary:
    """One sweep over several GPUWorkloads, each with its own FakeApi (status and Events)."""

    class Router:
        def patch_status(self, ref: workloads.WorkloadRef, status: Mapping[str, Any]) -> None:
            api[ref].patch_status(ref, status)

        def emit(
            self, ref: workloads.WorkloadRef, *, type_: str, reason: str, message: str
        ) -> None:
            api[ref].emit(ref, type_=type_, reason=reason, message=message)

    objects = [
        reconcile.WorkloadObject(ref=ref, spec=spec, status=api[ref].status, generation=1)
        for ref, spec in specs.items()
    ]
    return reconcile.sweep(
        objects,
        reader=reader,
        source=source,
        writer=Router(),
        recorder=Router(),
        catalog=catalogs.default_catalog(),
        table=catalogs.default_precisions(),
        now=NOW,
    )


def fleet_of_three() -> tuple[list[workloads.WorkloadRef], dict[str, Any], FakeReader, FakeSource]:
    spec, target, usage = example("vllm-kv-mostly-empty")
    refs = [workloads.WorkloadRef(namespace="ml", name=n) for n in ("a", "bad", "c")]
    return (
        refs,
        spec,
        FakeReader(dict.fromkeys(refs, target)),
        FakeSource(dict.fromkeys(refs, usage)),
    )


def test_an_absurd_min_observation_is_reported_and_the_rest_evaluated() -> None:
    # The API server's schema rejects it; fakes don't validate, as an object stored before the
    # schema had the bound would not have been.
    refs, spec, reader, source = fleet_of_three()
    bad = {**spec, "policy": {**spec.get("policy", {}), "minObservation": "99999999999d"}}
    api = {ref: FakeApi() for ref in refs}
    summary = sweep_many(api, {refs[0]: spec, refs[1]: bad, refs[2]: spec}, reader, source)
    assert summary.failed == frozenset()
    for good in (refs[0], refs[2]):
        assert conditions(api[good])["Ready"]["status"] == "True"
        assert api[good].status is not None and api[good].status["recommendation"]
        assert reasons(api[good]) == ["RecommendationChanged"]
    ready = conditions(api[refs[1]])["Ready"]
    assert ready["status"] == "False"
    assert "spec.policy.minObservation" in ready["message"]
    assert [(t, r) for t, r, _ in api[refs[1]].events] == [("Warning", ready["reason"])]


def test_an_object_whose_evaluation_fails_is_reported_and_the_rest_evaluated() -> None:
    # A usage profile that passed no validation (model_copy does not validate): deciding on it
    # raises. That object's Ready says so; the others are evaluated as if it were not there.
    refs, spec, reader, source = fleet_of_three()
    source.profiles[refs[1]] = source.profiles[refs[1]].model_copy(
        update={"window": "99999999999d"}
    )
    api = {ref: FakeApi() for ref in refs}
    sweep_many(api, dict.fromkeys(refs, spec), reader, source)
    for good in (refs[0], refs[2]):
        assert conditions(api[good])["Ready"]["status"] == "True"
        assert api[good].status is not None and api[good].status["recommendation"]
    ready = conditions(api[refs[1]])["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "EvaluationFailed")
    assert "99999999999d" in ready["message"]
    assert ("Warning", "EvaluationFailed") in [(t, r) for t, r, _ in api[refs[1]].events]


def test_a_fleet_is_decided_in_engine_slices_with_the_same_statuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine is called ENGINE_BATCH workloads at a time (its arrays grow with the batch);
    slicing changes no status, and a failure stays its object's in whichever slice it falls."""
    refs, spec, reader, source = fleet_of_three()
    source.profiles[refs[1]] = source.profiles[refs[1]].model_copy(
        update={"window": "99999999999d"}
    )
    whole = {ref: FakeApi() for ref in refs}
    sweep_many(whole, dict.fromkeys(refs, spec), reader, source)
    sizes: list[int] = []
    evaluate = decision.engine.evaluate

    def spy(items: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(items))
        return evaluate(items, *args, **kwargs)

    monkeypatch.setattr(decision, "ENGINE_BATCH", 2)
    monkeypatch.setattr(decision.engine, "evaluate", spy)
    sliced = {ref: FakeApi() for ref in refs}
    sweep_many(sliced, dict.fromkeys(refs, spec), reader, source)
    assert sizes and max(sizes) <= 2
    for ref in refs:
        assert sliced[ref].status == whole[ref].status, ref
        assert sliced[ref].events == whole[ref].events, ref
    assert conditions(sliced[refs[1]])["Ready"]["reason"] == "EvaluationFailed"


@pytest.mark.parametrize(
    ("mode", "status", "narrowed"),
    [
        ("Recommend", None, True),
        ("Apply", None, False),
        # A change in flight is finished whatever the mode now says: it acts, so a whole read.
        ("Recommend", {"apply": {"phase": "RollingOut"}}, False),
    ],
)
def test_a_narrow_sweep_reads_only_its_namespaces_unless_an_object_may_act(
    mode: str, status: dict[str, Any] | None, narrowed: bool
) -> None:
    """A prompt sweep's capacity check uses the last whole read's nodes and pods; what may
    change the cluster is judged on a fresh read of all of it."""
    spec, reader, source = setup()
    api = FakeApi()
    api.status = status  # as the object was read
    run(api, {**spec, "mode": mode}, reader, source, narrow=True)
    assert reader.within == [{REF.namespace} if narrowed else None]
