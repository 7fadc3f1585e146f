"""The operator end to end: real control plane, real Prometheus with simulated history.

One module-scoped environment: a small fleet staged by ``hack/staging.py`` (kwok GPU nodes,
Deployments whose real pod names get a day of DCGM/vLLM history backfilled into Prometheus,
a live simulator Prometheus scrapes, a GPUWorkload per Deployment) and the operator running as
``gpu-rightsizer run`` in a subprocess, sweeping every few seconds. The tests run in order:
outcomes, the CLI's agreement, restart, a deleted target, a Prometheus outage (bad input is
tests/e2e/test_bad_input.py's).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hack import staging

from gpu_rightsizer.fleetsim import fleets
from tests.support import browser, cluster as cluster_support

pytestmark = pytest.mark.cluster

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
GPU_RIGHTSIZER = REPO_ROOT / ".venv" / "bin" / "gpu-rightsizer"
INTERVAL = "5s"

FLEET = """
seed: 5
workloads:
  - name: chat
    namespace: {ns}
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    engine: vllm
    maxModelLen: 8192
    variants: [{{name: fp8, precision: fp8}}]
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.2
    traffic: {{shape: diurnal, low: 0.02, high: 0.2, peakHourUtc: 15}}
  - name: chat-v2
    namespace: {ns}
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    engine: vllm
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 1.15
    traffic: {{shape: constant, low: 0.85, high: 0.95}}
  - name: trainer
    namespace: {ns}
    container: trainer
    parameters: 7.0e9
    precision: bf16
    gpuModel: H100-80GB
    gpusPerReplica: 2
    traffic: {{shape: training}}
  - name: embedder
    namespace: {ns}
    parameters: 3.35e8
    precision: fp16
    gpuModel: A100-80GB
    migProfile: 3g.40gb
    policy: {{latency: {{guard: "Off"}}}}
    traffic: {{shape: constant, low: 0.05, high: 0.1}}
  - name: idle
    namespace: {ns}
    parameters: 8.03e9
    precision: bf16
    gpuModel: A100-80GB
    policy: {{latency: {{guard: "Off"}}}}
    traffic: {{shape: idle}}
"""


@dataclasses.dataclass
class Env:
    ns: str
    kubectl: staging.Kubectl
    staged: staging.Staged
    operator: staging.Operator
    cluster: cluster_support.Cluster

    def status(self, name: str) -> dict[str, Any]:
        body = self.kubectl.json("get", "gpuworkload", "-n", self.ns, name)
        status: dict[str, Any] = body.get("status") or {}
        return status

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        found: dict[str, Any] = next(
            (c for c in self.status(name).get("conditions", []) if c["type"] == kind), {}
        )
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        return staging.gpuworkload_events(self.kubectl, self.ns, name)

    def wait_event(self, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
        """The first Event ``reason`` about GPUWorkload ``name``, once the operator posted it."""
        found: dict[str, Any] = staging.eventually(
            lambda: next((e for e in self.events(name) if e["reason"] == reason), None),
            timeout=timeout,
            what=f"a {reason} Event about {name}",
        )
        return found


@pytest.fixture(scope="module")
def env(
    cluster: cluster_support.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("operator")
    ns = f"e2e-op-{uuid.uuid4().hex[:6]}"
    kubectl = staging.Kubectl(cluster.kubectl_bin, cluster.kubeconfig)
    fleet = fleets.parse(FLEET.format(ns=ns), "tests/e2e/test_operator.py")
    staged = staging.stage(kubectl, fleet, work_dir=work, history_days=1.0, scrape_interval="5s")
    operator = staging.Operator(
        cluster.kubeconfig, staged.prometheus_url, work / "operator.log", interval=INTERVAL
    ).start()
    try:
        yield Env(ns, kubectl, staged, operator, cluster)
    finally:
        operator.stop()
        staged.stop()
        if not os.environ.get("KEEP_E2E"):
            kubectl("delete", "namespace", ns, "--wait=false")
        sys.stderr.write(f"operator log: {operator.log}\n")


def wait_ready(env: Env, names: list[str], timeout: float = 120) -> None:
    staging.eventually(
        lambda: all(env.condition(n, "Ready").get("status") == "True" for n in names),
        timeout=timeout,
        what=f"Ready=True on {', '.join(names)}",
    )


ALL = ["chat", "chat-v2", "trainer", "embedder", "idle"]


def test_statuses_show_the_expected_recommendations(env: Env) -> None:
    wait_ready(env, ALL)
    chat = env.status("chat")
    assert chat["current"]["gpuModel"] == "H100-80GB"
    assert chat["summary"]["recommended"] != "no change"
    assert chat["savings"]["monthlyCost"] > 0
    assert chat["recommendation"]["hourlyCost"] < chat["current"]["hourlyCost"]
    assert any("KV cache peaked" in r for r in chat["recommendation"]["reasons"])
    assert chat["usage"]["kvCacheUsage"]["max"] < 0.5
    # chat-v2's pods are its own: its KV cache runs full, so it keeps its GPU.
    v2 = env.status("chat-v2")
    assert v2["usage"]["kvCacheUsage"]["max"] > 0.95
    assert v2["summary"]["recommended"] == "no change"
    assert "KV cache is full" in env.condition("chat-v2", "Ready")["message"]
    trainer = env.status("trainer")
    assert trainer["summary"]["recommended"] == "no change"
    assert "compute-bound" in env.condition("trainer", "Ready")["message"]
    embedder = env.status("embedder")
    assert embedder["current"]["migProfile"] == "3g.40gb"
    assert embedder["recommendation"]["hourlyCost"] < embedder["current"]["hourlyCost"]
    idle = env.status("idle")
    assert idle["savings"]["percent"] > 50
    for name in ALL:
        assert env.condition(name, "MetricsAvailable")["status"] == "True"
        assert env.status(name)["observedGeneration"] == 1
    table = env.kubectl("get", "gpuw", "-n", env.ns)
    header = table.splitlines()[0].split()
    assert header[:4] == ["NAME", "TARGET", "MODE", "CURRENT"]
    assert "SAVINGS/MO" in header and "READY" in header
    chat_row = next(line for line in table.splitlines() if line.startswith("chat "))
    assert "1x H100-80GB" in chat_row and "$" in chat_row and "True" in chat_row
    env.wait_event("chat", "RecommendationChanged")
    described = env.kubectl("describe", "gpuworkload", "-n", env.ns, "chat")
    squashed = described.replace(" ", "").lower()
    for text in ("Recommendation:", "Reasons:", "Savings:", "co2KgPerMonth", "EnergyKWhPerMonth"):
        assert text.lower() in squashed, text
    assert "RecommendationChanged" in described


def test_recommend_cli_on_prometheus_gives_the_operators_status(env: Env) -> None:
    wait_ready(env, ALL)
    manifests = env.kubectl("get", "deployments,gpuworkloads", "-n", env.ns, "-o", "yaml")
    files = env.cluster.workdir / f"{env.ns}.yaml"
    files.write_text(manifests)
    proc = subprocess.run(
        [
            str(GPU_RIGHTSIZER),
            "recommend",
            "-f",
            str(files),
            "--prometheus-url",
            env.staged.prometheus_url,
            "--kubeconfig",
            str(env.cluster.kubeconfig),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    offline = {item["name"]: item["status"] for item in json.loads(proc.stdout)}
    assert set(offline) == set(ALL)
    for name in ALL:
        live = env.status(name)
        mine = offline[name]
        assert mine["current"] == live["current"], name
        for key in ("gpuModel", "migProfile", "gpusPerReplica", "precision", "hourlyCost"):
            assert mine["recommendation"].get(key) == live["recommendation"].get(key), (name, key)
        # The same decision: every condition the operator wrote, with the same reasons.
        assert [(c["type"], c["status"], c["reason"]) for c in mine["conditions"]] == [
            (c["type"], c["status"], c["reason"]) for c in live["conditions"]
        ], name
        assert mine["summary"]["recommended"] == live["summary"]["recommended"], name
        assert mine["savings"]["monthlyCost"] == pytest.approx(
            live["savings"]["monthlyCost"], rel=0.02, abs=1
        ), name
        assert mine["usage"]["gpuModel"] == live["usage"]["gpuModel"]
        assert mine["usage"]["memoryUsedBytes"]["max"] == pytest.approx(
            live["usage"]["memoryUsedBytes"]["max"], rel=0.05
        )


def _report(env: Env, *args: str) -> str:
    proc = subprocess.run(
        [
            str(GPU_RIGHTSIZER),
            "report",
            "--kubeconfig",
            str(env.cluster.kubeconfig),
            "-n",
            env.ns,
            "--idle-days",
            "0.5",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_report_totals_are_the_sum_of_the_statuses(env: Env) -> None:
    wait_ready(env, ALL)
    statuses = {name: env.status(name) for name in ALL}
    data = json.loads(_report(env, "-o", "json", "--gpu-models", "L4", "--purchase-price", "25000"))
    assert data["kind"] == "FleetReport" and data["totals"]["workloads"] == len(ALL)
    saved = sum(s["savings"]["monthlyCost"] for s in statuses.values() if s.get("recommendation"))
    assert data["totals"]["monthlySavings"] == pytest.approx(saved, abs=0.1 * len(ALL))
    co2 = sum(s["savings"]["co2KgPerMonth"] for s in statuses.values() if s.get("recommendation"))
    assert data["totals"]["co2KgSavedPerMonth"] == pytest.approx(co2, abs=0.1 * len(ALL))
    hours = 730.0
    cost = sum(
        s["current"]["hourlyCost"] * s["current"]["replicas"] * hours for s in statuses.values()
    )
    assert data["totals"]["monthlyCostCurrent"] == pytest.approx(cost, abs=0.1 * len(ALL))
    # The idle workload is listed first, with what it costs.
    activity = {w["name"]: (w["activityP95"], w["observedDays"]) for w in data["workloads"]}
    assert [w["name"] for w in data["idle"]] == ["idle"], activity
    assert data["workloads"][0]["name"] == "idle"
    # Consolidation counts only the cluster's real nodes and never frees more than it has.
    consolidation = data["consolidation"]
    for model in consolidation["models"]:
        assert 0 <= model["gpusFreed"] <= model["gpusTotal"]
        assert model["gpusNeeded"] >= model["lowerBoundGpus"]
        assert model["capexAvoided"] == model["gpusFreed"] * 25000
    assert [w["gpuModel"] for w in data["whatIf"]] == ["L4"]
    # CSV has the same rows and adds up to the same totals.
    rows = list(csv.DictReader(io.StringIO(_report(env, "-o", "csv"))))
    assert sorted(r["name"] for r in rows) == sorted(ALL)
    assert sum(float(r["monthlySavings"]) for r in rows) == pytest.approx(
        data["totals"]["monthlySavings"], abs=0.1 * len(ALL)
    )
    # From Prometheus, on the same path as recommend: the same recommendations.
    live = json.loads(_report(env, "-o", "json", "--prometheus-url", env.staged.prometheus_url))
    by_name = {w["name"]: w for w in live["workloads"]}
    for w in data["workloads"]:
        assert by_name[w["name"]]["recommended"] == w["recommended"], w["name"]


def test_report_over_two_contexts_has_a_cluster_column(env: Env, tmp_path: pathlib.Path) -> None:
    wait_ready(env, ALL)
    config = yaml.safe_load(env.cluster.kubeconfig.read_text(encoding="utf-8"))
    context = config["contexts"][0]
    config["contexts"] = [
        {"name": "east", "context": context["context"]},
        {"name": "west", "context": context["context"]},
    ]
    config["current-context"] = "east"
    kubeconfig = tmp_path / "two-contexts.yaml"
    kubeconfig.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = subprocess.run(
        [
            str(GPU_RIGHTSIZER),
            "report",
            "--kubeconfig",
            str(kubeconfig),
            "--context",
            "east",
            "--context",
            "west",
            "-n",
            env.ns,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["clusters"] == ["east", "west"]
    assert sorted({w["cluster"] for w in data["workloads"]}) == ["east", "west"]
    assert data["totals"]["workloads"] == 2 * len(ALL)
    one = json.loads(_report(env, "-o", "json"))
    assert data["totals"]["monthlySavings"] == pytest.approx(
        2 * one["totals"]["monthlySavings"], abs=0.1
    )
    table = subprocess.run(
        [
            str(GPU_RIGHTSIZER),
            "report",
            "--kubeconfig",
            str(kubeconfig),
            "--context",
            "east",
            "--context",
            "west",
            "-n",
            env.ns,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    ).stdout
    assert f"east/{env.ns}/chat" in table and f"west/{env.ns}/chat" in table


def test_report_html_renders_in_a_real_browser(env: Env, tmp_path: pathlib.Path) -> None:
    wait_ready(env, ALL)
    html_file = tmp_path / "report.html"
    _report(env, "-o", "html", "--output-file", str(html_file), "--gpu-models", "L4")
    page = browser.open_page(html_file)
    assert page.console_errors == []
    assert page.requests == []  # self-contained: nothing fetched at view time
    assert not browser.png_is_blank(page.screenshot)
    for chart, series in (("savings-by-group", 2), ("gpu-mix", 2), ("activity", 1), ("idle", 1)):
        marker = f'data-chart="{chart}" data-series="{series}"'
        assert marker in page.dom, chart
        start = page.dom.index(marker)
        svg = page.dom[start : page.dom.index("</svg>", start)]
        assert svg.count('class="series"') == series, chart
        assert "<rect" in svg
    assert f"{env.ns}/idle" in page.dom


def test_restart_makes_no_duplicate_events_and_no_churn(env: Env) -> None:
    wait_ready(env, ALL)
    # Complete once the statuses are: a transition's Events are posted before its status patch.
    before = {n: env.status(n) for n in ALL}
    events = {n: len(env.events(n)) for n in ALL}
    resource_versions = {
        n: env.kubectl.json("get", "gpuworkload", "-n", env.ns, n)["metadata"]["resourceVersion"]
        for n in ALL
    }
    env.operator.stop()
    sweeps_before = len(env.operator.sweeps())
    records = len(env.operator.records())
    env.operator.start()
    staging.eventually(
        lambda: len(env.operator.sweeps()) >= sweeps_before + 2,
        timeout=90,
        what="two sweeps after the restart",
    )
    keys = ("gpuModel", "migProfile", "gpusPerReplica", "precision", "variant", "hourlyCost")
    for name in ALL:
        after = env.status(name)
        assert {k: after["recommendation"].get(k) for k in keys} == {
            k: before[name]["recommendation"].get(k) for k in keys
        }, name
        assert after["conditions"] == before[name]["conditions"], name
        assert len(env.events(name)) == events[name], name
    # What the sweeps after the restart wrote is only usage figures that new live samples moved
    # (and what is computed from them; conditions and recommendations are compared above): the
    # restart itself rewrites nothing. How many workloads' figures move depends on the samples.
    figures = {"usage", "recommendation", "alternatives", "savings", "summary", "conditions"}
    changed = [r for r in env.operator.records()[records:] if r.get("event") == "status changed"]
    assert all(set(r["fields"]) <= figures for r in changed), changed
    for name in ALL:
        now = env.kubectl.json("get", "gpuworkload", "-n", env.ns, name)
        if now["metadata"]["resourceVersion"] != resource_versions[name]:
            assert any(r["name"] == name for r in changed), name  # written by the operator


def test_deleted_target_gives_target_not_found_then_recovers(env: Env) -> None:
    body = env.kubectl.json("get", "deployment", "-n", env.ns, "idle")
    env.kubectl("delete", "deployment", "-n", env.ns, "idle")
    staging.eventually(
        lambda: env.condition("idle", "TargetNotFound").get("status") == "True",
        timeout=60,
        what="TargetNotFound=True",
    )
    assert env.condition("idle", "Ready")["reason"] == "TargetNotFound"
    assert env.status("idle")["recommendation"]  # the last recommendation is kept
    env.wait_event("idle", "TargetNotFound")
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        body["metadata"].pop(key, None)
    body.pop("status", None)
    env.kubectl.apply([body])
    staging.eventually(
        lambda: (
            env.condition("idle", "TargetNotFound").get("status") == "False"
            and env.condition("idle", "Ready").get("status") == "True"
        ),
        timeout=90,
        what="recovery after the Deployment came back",
    )


def test_prometheus_outage_keeps_the_last_recommendation_and_recovers(env: Env) -> None:
    wait_ready(env, ["chat"])
    good = env.status("chat")["recommendation"]
    state = json.loads((env.staged.state_dir / "state.json").read_text())
    port = str(state["port"])
    staging.prometheus("down", state_dir=env.staged.state_dir)
    staging.eventually(
        lambda: env.condition("chat", "MetricsAvailable").get("status") == "False",
        timeout=90,
        what="MetricsAvailable=False",
    )
    metrics = env.condition("chat", "MetricsAvailable")
    assert metrics["reason"] == "PrometheusUnavailable"
    assert "127.0.0.1" in metrics["message"]
    assert env.condition("chat", "RecommendationReady")["reason"] == "Stale"
    assert env.status("chat")["recommendation"] == good
    assert env.operator.alive()
    staging.prometheus(
        "up",
        "--port",
        port,
        "--target",
        env.staged.live.target,
        "--scrape-interval",
        "5s",
        state_dir=env.staged.state_dir,
    )
    staging.eventually(
        lambda: (
            env.condition("chat", "MetricsAvailable").get("status") == "True"
            and env.condition("chat", "Ready").get("status") == "True"
        ),
        timeout=120,
        what="recovery after Prometheus came back",
    )
    assert env.operator.alive()
