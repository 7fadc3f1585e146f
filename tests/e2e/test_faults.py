"""Faults end to end: a running operator keeps true statuses through outages and recovers alone.

One module-scoped environment: a small fleet staged by ``hack/staging.py`` on the session's
control plane (kwok GPU nodes, real pods, a day of DCGM/vLLM history in a real Prometheus, a
live exporter), a fault-injecting proxy (``tests/support/faultproxy.py``) between the operator
and that Prometheus, and the operator as ``gpu-rightsizer run`` in a subprocess sweeping every
few seconds with a short ``--prometheus-timeout``. Each test injects one fault, checks what a
user sees with ``kubectl`` (conditions, Events counted per reason, the last good recommendation,
the process alive, ``/healthz``), removes the fault and waits for every status to recover
without restarting the operator. The API-server tests restart the session cluster's
kube-apiserver (same etcd, port and certificates) and leave it running.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hack import staging
from hack.devcluster import plane

from gpu_rightsizer.fleetsim import fleets
from tests.support import cluster as cluster_support, faultproxy
from tests.support.cluster import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

INTERVAL_SECONDS = 3
TIMEOUT_SECONDS = 3
RECOVERY_SECONDS = 60
ALL = ("chat", "embedder", "idle")
KEYS = ("gpuModel", "migProfile", "gpusPerReplica", "precision", "variant")
WORKLOAD_RESOURCE = "gpuworkloads.v1alpha1.gpu-rightsizer.dev"

FLEET = """
seed: 7
workloads:
  - name: chat
    namespace: {ns}
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    engine: vllm
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.2
    traffic: {{shape: diurnal, low: 0.02, high: 0.2, peakHourUtc: 15}}
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
    cluster: cluster_support.Cluster
    staged: staging.Staged
    proxy: faultproxy.FaultProxy
    operator: staging.Operator

    def body(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.kubectl.json("get", "gpuworkload", "-n", self.ns, name)
        return found

    def statuses(self) -> dict[str, dict[str, Any]]:
        items = self.kubectl.json("get", "gpuworkloads", "-n", self.ns)["items"]
        return {i["metadata"]["name"]: i.get("status") or {} for i in items}

    def versions(self) -> dict[str, str]:
        items = self.kubectl.json("get", "gpuworkloads", "-n", self.ns)["items"]
        return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}

    def event_counts(self) -> collections.Counter[tuple[str, str]]:
        """Occurrences per (GPUWorkload, reason): the sum of the Events' counts."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for e in staging.gpuworkload_events(self.kubectl, self.ns):
            counts[(e["involvedObject"]["name"], e["reason"])] += int(e.get("count") or 1)
        return counts

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        return staging.gpuworkload_events(self.kubectl, self.ns, name, reason)

    def wait_sweeps(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The sweep lines after ``count`` more sweeps than now."""
        start = len(self.operator.sweeps())
        eventually(
            lambda: len(self.operator.sweeps()) >= start + count,
            timeout=timeout,
            what=f"{count} more sweeps",
        )
        return self.operator.sweeps()[start:]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == kind), {})
    return found


def key(status: dict[str, Any]) -> dict[str, Any]:
    rec = status.get("recommendation") or {}
    return {k: rec.get(k) for k in KEYS}


def all_ready(env: Env) -> dict[str, dict[str, Any]] | None:
    statuses = env.statuses()
    ok = all(condition(statuses.get(n, {}), "Ready").get("status") == "True" for n in ALL)
    return statuses if ok else None


def assert_well_formed(statuses: dict[str, dict[str, Any]]) -> None:
    """No duplicated entries: one condition per type, distinct reasons and alternatives."""
    for name, status in statuses.items():
        types = [c["type"] for c in status.get("conditions", [])]
        assert len(types) == len(set(types)), (name, types)
        reasons = (status.get("recommendation") or {}).get("reasons") or []
        assert len(reasons) == len(set(reasons)), (name, reasons)
        alternatives = [json.dumps(a, sort_keys=True) for a in status.get("alternatives") or []]
        assert len(alternatives) == len(set(alternatives)), name


def new_events(
    before: collections.Counter[tuple[str, str]], after: collections.Counter[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.fixture(scope="module")
def env(
    cluster: cluster_support.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("faults")
    ns = f"e2e-faults-{uuid.uuid4().hex[:6]}"
    kubectl = staging.Kubectl(cluster.kubectl_bin, cluster.kubeconfig)
    fleet = fleets.parse(FLEET.format(ns=ns), "tests/e2e/test_faults.py")
    staged = staging.stage(kubectl, fleet, work_dir=work, history_days=1.0, scrape_interval="5s")
    proxy = faultproxy.FaultProxy(staged.prometheus_url).start()
    operator = staging.Operator(
        cluster.kubeconfig,
        proxy.url,
        work / "operator.log",
        interval=f"{INTERVAL_SECONDS}s",
        args=(
            "--prometheus-timeout",
            f"{TIMEOUT_SECONDS}s",
            "--window",
            "1d",
            "--log-level",
            "DEBUG",  # kopf's watch-stream restarts are logged at DEBUG
        ),
    )
    operator.start()
    try:
        yield Env(ns, kubectl, cluster, staged, proxy, operator)
    finally:
        operator.stop()
        proxy.stop()
        staged.stop()
        if not os.environ.get("KEEP_E2E"):
            kubectl("delete", "namespace", ns, "--wait=false")
        sys.stderr.write(f"operator log: {operator.log}\n")


@pytest.fixture
def healthy(env: Env) -> Iterator[dict[str, dict[str, Any]]]:
    """Every workload Ready with a recommendation before the test; the proxy passes after it."""
    if not env.operator.alive():
        env.operator.start()
    env.proxy.set("pass")
    statuses = eventually(
        lambda: all_ready(env), timeout=180, what=f"Ready=True on {', '.join(ALL)}"
    )
    assert all(statuses[n].get("recommendation") for n in ALL)
    try:
        yield statuses
    finally:
        env.proxy.set("pass")


def wait_healthz(env: Env, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """``/healthz`` answering 200 with a last sweep that passes ``check``; kopf caches a
    probe's answer for 10 s, so this waits a little longer than that."""

    def answer() -> dict[str, Any] | None:
        code, body = env.operator.healthz()
        if code != 200:
            return None
        sweep: dict[str, Any] = json.loads(body)["sweep"]
        return sweep if check(sweep) else None

    found: dict[str, Any] = eventually(answer, timeout=30, what="/healthz: 200 and the sweep")
    return found


def metrics_outage(
    env: Env,
    before: dict[str, dict[str, Any]],
    inject: Callable[[], None],
    says: str,
) -> None:
    """Inject a fault that makes Prometheus unusable; check the outage, remove it, recover."""
    events = env.event_counts()
    sweeps = len(env.operator.sweeps())
    inject()

    def stale() -> dict[str, dict[str, Any]] | None:
        statuses = env.statuses()
        return (
            statuses
            if all(
                condition(statuses[n], "Ready").get("reason") == "MetricsUnavailable"
                and says in condition(statuses[n], "Ready").get("message", "")
                for n in ALL
            )
            else None
        )

    eventually(stale, timeout=60, what=f"Ready=False MetricsUnavailable ({says})")
    # A Prometheus outage is not the operator's: it stays healthy, /healthz says what failed.
    mark = len(env.operator.sweeps())
    wait_healthz(env, lambda sweep: says in (sweep.get("metrics_error") or ""))
    # More sweeps under the fault: the Events are posted once per transition, not per sweep.
    eventually(
        lambda: len(env.operator.sweeps()) >= mark + 2, timeout=60, what="2 sweeps in the fault"
    )
    statuses = env.statuses()
    for name in ALL:
        status = statuses[name]
        metrics = condition(status, "MetricsAvailable")
        assert (metrics["status"], metrics["reason"]) == ("False", "PrometheusUnavailable"), name
        assert says in metrics["message"] and f"127.0.0.1:{env.proxy.port}" in metrics["message"]
        assert condition(status, "RecommendationReady")["reason"] == "Stale", name
        assert status["recommendation"] == before[name]["recommendation"], name
        assert status["current"] == before[name]["current"], name
        assert status["savings"] == before[name]["savings"], name
        [event] = env.events(name, "MetricsUnavailable")[-1:]
        assert event["type"] == "Warning" and says in event["message"], event
    assert_well_formed(statuses)
    assert new_events(events, env.event_counts()) == {(n, "MetricsUnavailable"): 1 for n in ALL}
    assert env.operator.alive()
    assert len(env.operator.sweeps()) > sweeps
    env.proxy.set("pass")
    after = eventually(
        lambda: all_ready(env), timeout=RECOVERY_SECONDS, what="recovery without a restart"
    )
    for name in ALL:
        assert key(after[name]) == key(before[name]), name
        assert condition(after[name], "MetricsAvailable")["status"] == "True", name
        assert condition(after[name], "RecommendationReady")["reason"] != "Stale", name
    assert_well_formed(after)
    # No Event but the one per workload: no RecommendationChanged again on recovery.
    assert new_events(events, env.event_counts()) == {(n, "MetricsUnavailable"): 1 for n in ALL}
    wait_healthz(env, lambda sweep: sweep.get("metrics_error") is None)
    assert env.operator.alive()


# --- Prometheus faults ------------------------------------------------------------------------


def test_prometheus_stopped(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    metrics_outage(env, healthy, lambda: env.proxy.set("closed"), "cannot connect")


def test_prometheus_slower_than_the_timeout(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    metrics_outage(
        env,
        healthy,
        lambda: env.proxy.set("delay", delay_seconds=TIMEOUT_SECONDS + 3),
        f"no answer within {TIMEOUT_SECONDS} s",
    )


def test_prometheus_answering_5xx(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    metrics_outage(
        env,
        healthy,
        lambda: env.proxy.set("status", status_code=503),
        "HTTP 503: unavailable: injected HTTP 503",
    )


def test_prometheus_answering_malformed_json(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    metrics_outage(env, healthy, lambda: env.proxy.set("malformed"), "malformed sample")


def test_prometheus_answering_truncated_json(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    metrics_outage(env, healthy, lambda: env.proxy.set("truncated"), "not Prometheus JSON")


def test_series_for_only_some_workloads(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    events = env.event_counts()
    env.proxy.set("drop", drop_pods=r"idle-.*")

    def idle_without_series() -> dict[str, dict[str, Any]] | None:
        statuses = env.statuses()
        metrics = condition(statuses["idle"], "MetricsAvailable")
        return statuses if metrics.get("reason") == "NoSeries" else None

    eventually(idle_without_series, timeout=60, what="idle: MetricsAvailable=False NoSeries")
    env.wait_sweeps(2)
    statuses = env.statuses()
    idle = statuses["idle"]
    assert condition(idle, "MetricsAvailable")["status"] == "False"
    ready = condition(idle, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoUsageData"), ready
    # Its last good recommendation stays, marked stale, and nothing else of it is lost.
    assert idle["recommendation"] == healthy["idle"]["recommendation"]
    assert condition(idle, "RecommendationReady")["reason"] == "Stale"
    assert idle["current"] == healthy["idle"]["current"]
    # The others keep theirs, Ready, untouched by idle's missing series. Their series go on
    # arriving, and a peak that rose meanwhile moves the memory need at once, however little:
    # the choice is what must hold.
    for name in ("chat", "embedder"):
        assert condition(statuses[name], "Ready")["status"] == "True", name
        assert condition(statuses[name], "MetricsAvailable")["reason"] == "SeriesFound", name
        assert key(statuses[name]) == key(healthy[name]), name
    assert_well_formed(statuses)
    assert new_events(events, env.event_counts()) == {("idle", "NoUsageData"): 1}
    wait_healthz(env, lambda sweep: sweep.get("metrics_error") is None)
    env.proxy.set("pass")
    after = eventually(lambda: all_ready(env), timeout=RECOVERY_SECONDS, what="idle's recovery")
    assert key(after["idle"]) == key(healthy["idle"])
    assert condition(after["idle"], "MetricsAvailable")["reason"] == "SeriesFound"
    assert_well_formed(after)
    assert new_events(events, env.event_counts()) == {("idle", "NoUsageData"): 1}
    assert env.operator.alive()


# --- another writer ---------------------------------------------------------------------------


def test_status_patch_conflicting_with_another_writer(
    env: Env, healthy: dict[str, dict[str, Any]]
) -> None:
    """Another writer patches the status and the spec while the operator sweeps and writes."""
    events = env.event_counts()
    stop = threading.Event()
    writes = collections.Counter[str]()
    errors: list[str] = []

    def tamper() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            patch = {
                "status": {
                    "summary": {"recommended": f"tampered-{n}"},
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "Tampered",
                            "message": f"written by another writer ({n})",
                            "lastTransitionTime": "2020-01-01T00:00:00Z",
                        }
                    ],
                }
            }
            try:
                env.kubectl(
                    "patch",
                    "gpuworkload",
                    "-n",
                    env.ns,
                    "chat",
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    json.dumps(patch),
                )
                writes["status"] += 1
                if n % 4 == 0:  # and the object: a new generation, with the same meaning
                    headroom = 20 + (n // 4) % 2
                    env.kubectl(
                        "patch",
                        "gpuworkload",
                        "-n",
                        env.ns,
                        "chat",
                        "--type=merge",
                        "-p",
                        json.dumps({"spec": {"policy": {"memoryHeadroomPercent": headroom}}}),
                    )
                    writes["spec"] += 1
            except RuntimeError as exc:
                errors.append(str(exc))

    writer = threading.Thread(target=tamper, daemon=True)
    writer.start()
    try:
        env.wait_sweeps(3, timeout=90)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not errors, errors
    assert writes["status"] >= 4 and writes["spec"] >= 1, writes
    # The spec ends as it meant before (20 % is the default headroom), in a new generation.
    env.kubectl(
        "patch",
        "gpuworkload",
        "-n",
        env.ns,
        "chat",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"policy": {"memoryHeadroomPercent": 20}}}),
    )
    generation = env.body("chat")["metadata"]["generation"]

    def converged() -> dict[str, Any] | None:
        status = env.body("chat").get("status") or {}
        ready = condition(status, "Ready")
        return (
            status
            if ready.get("status") == "True"
            and not status["summary"]["recommended"].startswith("tampered")
            and status.get("observedGeneration") == generation
            else None
        )

    status = eventually(converged, timeout=RECOVERY_SECONDS, what="chat's status restored")
    # Nothing of the other writer's survives, nothing of the operator's is lost or doubled.
    assert all(c["reason"] != "Tampered" for c in status["conditions"])
    assert all(c.get("observedGeneration") == generation for c in status["conditions"])
    assert key(status) == key(healthy["chat"])
    assert_well_formed({"chat": status})
    # Later sweeps put back nothing of the other writer's and flip nothing: the operator's view
    # is the server's. Only new live samples may move usage figures (as in the restart test).
    env.wait_sweeps(2)
    later = env.body("chat")["status"]
    assert key(later) == key(status)
    assert [without_message(c) for c in later["conditions"]] == [
        without_message(c) for c in status["conditions"]
    ]
    assert not later["summary"]["recommended"].startswith("tampered")
    # The other writer's Ready=False was not the operator's transition: no Warning for it.
    assert new_events(events, env.event_counts()) == {}
    assert env.operator.alive()


# --- the operator killed ----------------------------------------------------------------------


def without_message(c: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in c.items() if k != "message"}


def kill_mid_sweep(env: Env) -> None:
    """SIGKILL the operator while the proxy holds one of a sweep's queries (not its first)."""
    started = env.proxy.received
    eventually(
        lambda: env.proxy.in_flight > 0 and env.proxy.received >= started + 2,
        timeout=60,
        interval=0.05,
        what="a sweep's query in flight",
    )
    env.operator.kill()


def test_sigkill_mid_sweep_then_restart(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    events = env.event_counts()
    # Killed in the sweep that would post idle's transition (its series are gone).
    env.proxy.set("drop", drop_pods=r"idle-.*", delay_seconds=0.02)
    kill_mid_sweep(env)
    env.operator.start()
    eventually(
        lambda: condition(env.statuses()["idle"], "MetricsAvailable").get("reason") == "NoSeries",
        timeout=60,
        what="idle's transition after the restart",
    )
    env.wait_sweeps(2)
    assert new_events(events, env.event_counts()) == {("idle", "NoUsageData"): 1}
    # Recovered, then killed mid-sweep in steady state: the restart writes nothing.
    env.proxy.set("pass", delay_seconds=0.02)
    eventually(lambda: all_ready(env), timeout=RECOVERY_SECONDS, what="recovery")
    env.wait_sweeps(2)
    settled = env.statuses()
    kill_mid_sweep(env)
    records = len(env.operator.records())
    env.operator.start()
    env.wait_sweeps(2)
    now = env.statuses()
    # Field by field: the restart flips no condition (transition times held), keeps every
    # recommendation and allocation. Only new live samples may move usage figures (and what
    # is computed from them); the restart itself writes nothing else.
    figures = {"usage", "recommendation", "alternatives", "savings", "summary", "conditions"}
    for name in ALL:
        for field in sorted({*settled[name], *now[name]} - figures):
            assert now[name].get(field) == settled[name].get(field), (name, field)
        assert key(now[name]) == key(settled[name]), name
        # A condition's message may quote a figure; its status, reason and time may not move.
        assert [without_message(c) for c in now[name]["conditions"]] == [
            without_message(c) for c in settled[name]["conditions"]
        ], name
    changed = [r for r in env.operator.records()[records:] if r.get("event") == "status changed"]
    assert all(set(r["fields"]) <= figures for r in changed), changed
    assert_well_formed(now)
    assert new_events(events, env.event_counts()) == {("idle", "NoUsageData"): 1}
    wait_healthz(env, lambda sweep: sweep.get("consecutive_failures") == 0)


# --- the API server ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plane:
    """One component of the local control plane stopped and started through ``hack/cluster``."""

    local: plane.LocalCluster

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            [
                sys.executable,
                str(cluster_support.HACK_CLUSTER),
                "--state-dir",
                str(self.local.state_dir),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert proc.returncode == 0, f"hack/cluster {' '.join(args)}: {proc.stdout}{proc.stderr}"

    def stop_component(self, name: str) -> None:
        self._run("stop", name)

    def start_component(self, name: str) -> None:
        self._run("start", name)

    @property
    def ports(self) -> dict[str, int]:
        return self.local.ports


def local_cluster(env: Env) -> Plane:
    if env.cluster.local is None:
        pytest.fail("restarting the API server needs the local control plane", pytrace=False)
    return Plane(env.cluster.local)


def test_api_server_restarted_under_a_running_operator(
    env: Env, healthy: dict[str, dict[str, Any]]
) -> None:
    local = local_cluster(env)
    events = env.event_counts()
    local.stop_component("kube-apiserver")
    try:
        # Sweeps fail while the API server is away; /healthz says so after a few of them.
        _, body = eventually(
            lambda: next((r for r in [env.operator.healthz()] if r[0] == 500), None),
            timeout=60,
            what="/healthz answering 500 while the API server is down",
        )
        assert body  # kopf answers a failing probe with a bare 500
        assert env.operator.alive()
        failed = [r for r in env.operator.records() if r.get("event") == "sweep failed"]
        assert failed and "consecutive_failures" in failed[-1], failed[-1:]
    finally:
        local.start_component("kube-apiserver")
    wait_healthz(env, lambda sweep: sweep.get("consecutive_failures") == 0)
    # The operator's watch works again: a new GPUWorkload gets its status.
    added = staging.gpuworkload(env.staged.fleet.workload(env.ns, "idle"))
    added["metadata"]["name"] = "after-restart"
    env.kubectl.apply([added])
    eventually(
        lambda: (
            condition(env.body("after-restart").get("status") or {}, "Ready").get("status")
            == "True"
        ),
        timeout=RECOVERY_SECONDS,
        what="the status of a GPUWorkload created after the restart",
    )
    env.kubectl("delete", "gpuworkload", "-n", env.ns, "after-restart")
    statuses = eventually(lambda: all_ready(env), timeout=RECOVERY_SECONDS, what="all Ready")
    for name in ALL:
        # The same recommendation, and no condition flipped and back (transition times held).
        assert key(statuses[name]) == key(healthy[name]), name
        assert statuses[name]["conditions"] == healthy[name]["conditions"], name
    assert_well_formed(statuses)
    counts = new_events(events, env.event_counts())
    assert {k: v for k, v in counts.items() if k[0] in ALL} == {}, counts
    assert env.operator.alive()


def _etcd(local: Plane, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A call to etcd's JSON gateway (the v3 API over HTTP)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{local.ports['etcd']}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def watch_restarts(env: Env) -> int:
    """How often kopf restarted its GPUWorkload watch (what it logs on ``410 Gone``)."""
    marker = f"Restarting the watch-stream for {WORKLOAD_RESOURCE}"
    return sum(1 for r in env.operator.records() if str(r.get("event", "")).startswith(marker))


def test_watch_expired_410_gone_relists(env: Env, healthy: dict[str, dict[str, Any]]) -> None:
    """The operator's watch resumes from a resourceVersion that etcd has compacted away.

    While the API server is down, etcd moves on (a write, as another API server would make)
    and is compacted to its newest revision; the restarted API server's watch cache starts
    there, so resuming a watch at any older resourceVersion is answered ``410 Gone``
    ("too old resource version"). kopf must relist and carry on.
    """
    local = local_cluster(env)
    path = f"/apis/gpu-rightsizer.dev/v1alpha1/namespaces/{env.ns}/gpuworkloads"
    listed = json.loads(env.kubectl("get", "--raw", path))["metadata"]["resourceVersion"]
    restarts_before = watch_restarts(env)
    local.stop_component("kube-apiserver")
    try:
        put = _etcd(local, "/v3/kv/put", {"key": _b64("/faults/moved-on"), "value": _b64("1")})
        revision = int(put["header"]["revision"])
        assert revision > int(listed)
        _etcd(local, "/v3/kv/compaction", {"revision": str(revision), "physical": True})
    finally:
        local.start_component("kube-apiserver")
    # What any client resuming at an older resourceVersion now gets: a real 410.
    gone = env.kubectl("get", "--raw", f"{path}?watch=1&resourceVersion={listed}&timeoutSeconds=1")
    first = json.loads(gone.splitlines()[0])
    assert first["type"] == "ERROR" and first["object"]["code"] == 410, first

    eventually(
        lambda: watch_restarts(env) > restarts_before,
        timeout=RECOVERY_SECONDS,
        what="kopf restarting its GPUWorkload watch after 410 Gone",
    )
    added = staging.gpuworkload(env.staged.fleet.workload(env.ns, "embedder"))
    added["metadata"]["name"] = "after-410"
    env.kubectl.apply([added])
    status = eventually(
        lambda: next(
            (
                s
                for s in [env.body("after-410").get("status") or {}]
                if condition(s, "Ready").get("status") == "True"
            ),
            None,
        ),
        timeout=RECOVERY_SECONDS,
        what="the status of a GPUWorkload created after the 410",
    )
    assert key(status) == key(healthy["embedder"])
    env.kubectl("delete", "gpuworkload", "-n", env.ns, "after-410")
    statuses = eventually(lambda: all_ready(env), timeout=RECOVERY_SECONDS, what="all Ready")
    assert_well_formed(statuses)
    assert env.operator.alive()
