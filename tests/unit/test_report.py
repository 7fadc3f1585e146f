"""The fleet audit over the nine example cases: every output format against its golden file,
CSV and JSON that add up to the same totals, idle allocations first, groups by label, sharing
with its memory proof, and what-if through the operator's own decision.

The statuses come from ``gpu-rightsizer recommend`` over ``examples/`` (the same decision the
operator writes), each case's GPUWorkload given a ``team`` label for ``--group-by label:team``.
After a deliberate change, ``UPDATE_GOLDEN=1`` rewrites the golden files.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import json
import math
import os
import pathlib
from typing import Any

import pytest
from click.testing import CliRunner

from gpu_rightsizer import catalogs, decision
from gpu_rightsizer.audit import fleet, render, report, whatif
from gpu_rightsizer.cli import loading, main
from gpu_rightsizer.kube import reading
from gpu_rightsizer.models import crd

EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"
GOLDEN = pathlib.Path(__file__).parents[1] / "golden" / "report"
TEAMS = {
    "compute-bound-training": "research",
    "idle-server": "legacy",
    "llama-70b-fp8-int4": "assistants",
    "llama-8b-h100-low-use": "assistants",
    "mig-fits-smaller": "search",
    "single-model-no-mig": "search",
    "too-little-history": "research",
    "vllm-kv-mostly-empty": "assistants",
    "vllm-kv-saturated": "assistants",
}
GENERATED = "2026-12-01T12:00:00Z"


@functools.cache
def example_statuses() -> tuple[tuple[str, str, dict[str, Any]], ...]:
    out = []
    for case in sorted(TEAMS):
        result = CliRunner().invoke(
            main.cli,
            [
                "recommend",
                "-f",
                str(EXAMPLES / f"{case}.yaml"),
                "--usage",
                str(EXAMPLES / f"{case}.usage.json"),
                "-o",
                "json",
                "--at",
                GENERATED,
            ],
        )
        assert result.exit_code == 0, result.output
        ((item),) = json.loads(result.stdout)
        out.append((case, item["name"], item["status"]))
    return tuple(out)


def entries() -> list[fleet.Entry]:
    return [
        fleet.Entry(
            cluster="demo",
            namespace="ml",
            name=name,
            labels={"team": TEAMS[case]},
            status=crd.GPUWorkloadStatus.model_validate(status),
        )
        for case, name, status in example_statuses()
    ]


def build(settings: fleet.Settings | None = None, **extra: Any) -> report.Report:
    catalog = catalogs.default_catalog()
    chosen = settings or fleet.Settings(group_by="label:team", idle_days=6.0)
    found = entries()
    return report.build(
        found,
        generated=GENERATED,
        clusters=["demo"],
        currency=catalog.currency,
        settings=chosen,
        source="the operator's statuses",
        catalog_rows=fleet.rows(found, catalog, chosen),
        **extra,
    )


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_every_format_matches_its_golden_file(fmt: str) -> None:
    text = render.render(build(), fmt)
    suffix = {"table": "txt", "markdown": "md"}.get(fmt, fmt)
    path = GOLDEN / f"examples.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{path} differs; UPDATE_GOLDEN=1 rewrites"


def test_csv_and_json_add_up_to_the_same_totals() -> None:
    built = build()
    data = json.loads(render.to_json(built))
    rows = list(csv.DictReader(io.StringIO(render.to_csv(built))))
    assert len(rows) == data["totals"]["workloads"] == len(data["workloads"]) == 9
    for column in (
        "gpusCurrent",
        "gpusRecommended",
        "monthlyCostCurrent",
        "monthlyCostRecommended",
        "monthlySavings",
        "gpuHoursSavedPerMonth",
        "energyKWhSavedPerMonth",
        "co2KgSavedPerMonth",
    ):
        from_csv = math.fsum(float(r[column]) for r in rows)
        from_json = math.fsum(float(w[column]) for w in data["workloads"])
        assert from_csv == pytest.approx(data["totals"][column], abs=0.06), column
        assert from_json == pytest.approx(data["totals"][column], abs=0.06), column
    # The groups partition the fleet.
    assert sum(g["workloads"] for g in data["groups"]) == 9
    assert math.fsum(g["monthlySavings"] for g in data["groups"]) == pytest.approx(
        data["totals"]["monthlySavings"], abs=0.06
    )


def test_totals_are_the_statuses_own_figures() -> None:
    catalog = catalogs.default_catalog()
    built = build()
    saved = math.fsum(
        s["savings"]["monthlyCost"] for _, _, s in example_statuses() if s.get("recommendation")
    )
    assert built.totals.monthly_savings == pytest.approx(saved, abs=0.1)
    co2 = math.fsum(
        s["savings"]["co2KgPerMonth"] for _, _, s in example_statuses() if s.get("recommendation")
    )
    assert built.totals.co2_kg_saved_per_month == pytest.approx(co2, abs=0.1)
    cost = math.fsum(
        s["current"]["hourlyCost"] * s["current"]["replicas"] * catalog.hours_per_month
        for _, _, s in example_statuses()
        if s.get("current")
    )
    assert built.totals.monthly_cost_current == pytest.approx(cost, abs=0.1)


def test_the_idle_server_is_listed_first_with_its_cost() -> None:
    built = build()
    assert [r.name for r in built.idle] == ["legacy-bot"]
    assert built.rows[0].name == "legacy-bot" and built.rows[0].idle
    assert built.totals.idle_monthly_cost == built.rows[0].monthly_cost_current > 0
    # Less history than the idle window asks for is never idle.
    strict = build(fleet.Settings(group_by="label:team", idle_days=30.0))
    assert strict.idle == ()
    # The case with too little history is not idle whatever the threshold.
    lax = build(fleet.Settings(idle_days=1.0, idle_activity=1.0))
    assert "new-model" not in {r.name for r in lax.idle}


def test_groups_follow_the_label_or_the_namespace() -> None:
    by_team = {g.key: g.totals.workloads for g in build().groups}
    assert by_team == {"assistants": 4, "legacy": 1, "research": 2, "search": 2}
    by_namespace = build(fleet.Settings(group_by="namespace"))
    assert [(g.key, g.totals.workloads) for g in by_namespace.groups] == [("ml", 9)]
    unlabelled = build(fleet.Settings(group_by="label:cost-center"))
    assert [g.key for g in unlabelled.groups] == ["-"]


def _sharing_entry(name: str, need_gib: float, activity: float, replicas: int = 1) -> fleet.Entry:
    gib = 1 << 30
    allocation = {
        "gpuModel": "L4",
        "gpusPerReplica": 1,
        "replicas": replicas,
        "hourlyCost": 0.8,
    }
    status = {
        "current": {**allocation, "gpuModel": "L40S", "hourlyCost": 1.9},
        "recommendation": {
            **allocation,
            "memoryNeedBytes": int(need_gib * gib),
            "memoryAvailableBytes": int(21.9 * gib),
            "projectedComputeUtilization": activity,
            "confidence": 0.9,
        },
    }
    return fleet.Entry("c", "ml", name, {}, crd.GPUWorkloadStatus.model_validate(status))


def test_small_replicas_share_a_gpu_with_a_memory_proof() -> None:
    found = [
        _sharing_entry("a", 9.0, 0.2),
        _sharing_entry("b", 7.5, 0.1, replicas=2),
        _sharing_entry("c", 15.0, 0.1),
        _sharing_entry("busy", 4.0, 0.7),
    ]
    groups = fleet.sharing(found, fleet.Settings(), multi_cluster=False)
    for g in groups:
        assert len(g.members) >= 2
        assert g.memory_need_bytes == sum(m.memory_need_bytes for m in g.members)
        assert g.memory_need_bytes <= g.usable_memory_bytes
        assert g.activity <= 0.8
        assert "GiB usable on one L4" in g.proof
    members = sorted(m.workload for g in groups for m in g.members)
    assert "ml/busy" not in members or all(
        sum(m.activity for m in g.members) <= 0.8 for g in groups
    )
    assert sum(g.gpus_freed for g in groups) >= 1
    assert groups[0].proof.startswith("15.0 + ")


def test_what_if_decides_the_fleet_again_with_each_model() -> None:
    catalog = catalogs.default_catalog()
    manifests = loading.read_manifests(sorted(EXAMPLES.glob("*.yaml")))
    objects = loading.objects(manifests)
    specs = {o.ref: decision.validate(o) for o in objects}
    refs = [
        (o.ref, s.target_ref.kind, s.target_ref.name, s.target_ref.container)
        for o in objects
        if isinstance(s := specs[o.ref], crd.GPUWorkloadSpec)
    ]
    states = reading.resolve(loading.snapshot(manifests), refs)
    usage = {
        o.ref: crd.GPUWorkloadStatus.model_validate(status).usage
        for o in objects
        for _, name, status in example_statuses()
        if name == o.ref.name
    }
    outcomes = whatif.evaluate(
        objects,
        states,
        {ref: u for ref, u in usage.items() if u is not None},
        models=["L4", "B200"],
        stock=None,
        catalog=catalog,
        table=catalogs.default_precisions(),
        now=datetime.datetime(2026, 12, 1, 12, tzinfo=datetime.UTC),
        window="7d",
    )
    assert [o.gpu_model for o in outcomes] == ["L4", "B200"]
    for o in outcomes:
        assert o.monthly_savings >= 0 and o.gpus_needed >= 0
        assert (o.gpus_needed > 0) == (o.workloads_on_model > 0)
    with pytest.raises(ValueError, match="unknown GPU model 'X1'"):
        whatif.evaluate(
            objects,
            states,
            {},
            models=["X1"],
            stock=None,
            catalog=catalog,
            table=catalogs.default_precisions(),
            now=datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC),
            window="7d",
        )


def test_the_html_is_self_contained_with_four_charts() -> None:
    text = render.to_html(build())
    assert text.count('<svg class="chart"') == 4
    for chart, series in (("savings-by-group", 2), ("gpu-mix", 2), ("activity", 1), ("idle", 1)):
        assert f'data-chart="{chart}" data-series="{series}"' in text
    assert "http://" not in text and "https://" not in text and "src=" not in text
