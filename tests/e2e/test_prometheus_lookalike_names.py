"""Look-alike workload names against a real Prometheus: no workload captures another's pods.

A Prometheus (no scrapes) is backfilled with an hour and a half of DCGM series for the pods of
Deployments whose names differ only where a careless matcher would not look: ``chat.v1``,
``chatxv1``, ``chat.v1x``, ``chat-v1``, ``chat.v1-bcdfg2`` (whose pods start like ``chat.v1``'s),
a 63-character dotted name whose pods' names Kubernetes cut, a StatefulSet ``db.v1`` beside a
Deployment ``db.v1-0``... in the namespaces ``ml`` and ``ml-v1``, plus a namespace ``mlxv1``
no target lives in, some pods in the layout behind a ServiceMonitor without ``honorLabels``
(``exported_pod``), and every series copied to a second ``cluster`` (``euxwest-1`` beside
``eu.west-1``) with other values. The operator's Prometheus adapter sweeps it with its real
queries (namespace filter and ``cluster="eu.west-1"`` matcher included), and every workload
must get exactly its own pods: its memory, its activity, and as many samples as its own pods
have, no more.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import pathlib
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator

import pytest

from gpu_rightsizer import ports
from gpu_rightsizer.metrics import prometheus, queries
from gpu_rightsizer.models import workloads
from tests.support import prometheus as support

pytestmark = pytest.mark.prometheus

STEP_SECONDS = 60
HISTORY_SECONDS = 5400
WINDOW = "1h"
HASH = "bcdfg2"
CLUSTER = "eu.west-1"
OTHER_CLUSTER = "euxwest-1"
LONG = "a.b-c" * 11 + "d.e-f-g8"  # 63 characters: pod names cut to 58 before the suffix


@dataclasses.dataclass(frozen=True)
class Owner:
    """One target and the pods its controller made, with the constant figures they report."""

    namespace: str
    kind: str
    name: str
    pods: tuple[str, ...]
    memory_mib: float
    activity: float
    exported: bool = False
    target: bool = True

    @property
    def ref(self) -> workloads.WorkloadRef:
        return workloads.WorkloadRef(namespace=self.namespace, name=self.name)


def _deployment_pods(name: str, *suffixes: str) -> tuple[str, ...]:
    return tuple(f"{name}-{HASH}-"[:58] + s for s in suffixes)


OWNERS = (
    Owner("ml", "Deployment", "chat.v1", _deployment_pods("chat.v1", "x2x4z", "k9m4t"), 1000, 0.1),
    Owner("ml", "Deployment", "chatxv1", _deployment_pods("chatxv1", "x2x4z"), 2000, 0.2),
    Owner("ml", "Deployment", "chat.v1x", _deployment_pods("chat.v1x", "x2x4z"), 3000, 0.3, True),
    Owner("ml", "Deployment", "chat-v1", _deployment_pods("chat-v1", "x2x4z"), 4000, 0.4),
    Owner(
        "ml",
        "Deployment",
        f"chat.v1-{HASH}",
        _deployment_pods(f"chat.v1-{HASH}", "x2x4z", "q7w8z"),
        5000,
        0.5,
    ),
    Owner("ml", "Deployment", LONG, _deployment_pods(LONG, "x2x4z", "b5n6m"), 6000, 0.6, True),
    Owner("ml", "StatefulSet", "db.v1", ("db.v1-0", "db.v1-1"), 7000, 0.7),
    Owner("ml", "Deployment", "db.v1-0", _deployment_pods("db.v1-0", "x2x4z"), 8000, 0.8),
    Owner("ml-v1", "Deployment", "chat.v1", _deployment_pods("chat.v1", "x2x4z"), 9000, 0.9),
    # No GPUWorkload points here: the namespace filter keeps its series out of the sweep.
    Owner(
        "mlxv1",
        "Deployment",
        "chat.v1",
        _deployment_pods("chat.v1", "x2x4z"),
        9500,
        0.95,
        target=False,
    ),
)


def _labels(owner: Owner, pod: str, gpu: int, cluster: str) -> str:
    identity = {
        "gpu": str(gpu),
        "UUID": f"GPU-{zlib.crc32(f'{owner.namespace}/{pod}'.encode()):08x}",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": f"node-{gpu}",
        "cluster": cluster,
    }
    if owner.exported:
        where = {
            "namespace": "gpu-operator",
            "pod": "dcgm-exporter-z9z9z",
            "exported_namespace": owner.namespace,
            "exported_pod": pod,
            "exported_container": "server",
        }
    else:
        where = {"namespace": owner.namespace, "pod": pod, "container": "server"}
    labels = {**identity, **where}
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def _history(times: list[int]) -> str:
    """OpenMetrics text: framebuffer used (MiB) and engine activity of every owner's pods, in
    both clusters (the other one with ten times the memory and full activity)."""
    lines: list[str] = []
    for metric, figure in (
        (queries.FB_USED, lambda o, c: o.memory_mib * (1 if c == CLUSTER else 10)),
        (queries.GR_ENGINE_ACTIVE, lambda o, c: o.activity if c == CLUSTER else 1.0),
    ):
        lines.append(f"# TYPE {metric} gauge")
        for owner in OWNERS:
            for gpu, pod in enumerate(owner.pods):
                for cluster in (CLUSTER, OTHER_CLUSTER):
                    labels = _labels(owner, pod, gpu, cluster)
                    value = figure(owner, cluster)
                    lines += [f"{metric}{{{labels}}} {value} {t}" for t in times]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Lookalikes:
    url: str
    end: float


@pytest.fixture(scope="module")
def lookalikes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lookalikes]:
    support._require_tools()
    work: pathlib.Path = tmp_path_factory.mktemp("lookalikes")
    state_dir = work / "state"
    end = math.floor(time.time() / STEP_SECONDS) * STEP_SECONDS
    times = list(range(end - HISTORY_SECONDS, end + 1, STEP_SECONDS))
    history_file = work / "history.om"
    history_file.write_text(_history(times), encoding="utf-8")
    support._harness(state_dir, "backfill", str(history_file))
    history_file.unlink()
    try:
        support._harness(state_dir, "up")
        url = str(json.loads((state_dir / "state.json").read_text(encoding="utf-8"))["url"])
        yield Lookalikes(url, float(end))
    finally:
        support._harness(state_dir, "down")


def _target(owner: Owner, hashes: frozenset[str]) -> ports.TargetPods:
    return ports.TargetPods(
        workload=owner.ref,
        namespace=owner.namespace,
        kind=owner.kind,
        name=owner.name,
        pod_template_hashes=hashes if owner.kind == "Deployment" else frozenset(),
    )


def _samples_per_pod(url: str, at: float) -> float:
    """Samples one pod's framebuffer series has in the window, read from Prometheus itself."""
    query = (
        f'count_over_time({queries.FB_USED}{{pod="chatxv1-{HASH}-x2x4z",cluster="{CLUSTER}"}}'
        f"[{WINDOW}])"
    )
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=30) as response:
        body = json.loads(response.read())
    found = body["data"]["result"]
    assert len(found) == 1, body
    return float(found[0]["value"][1])


@pytest.mark.parametrize("hashes", [frozenset({HASH}), frozenset()], ids=["known", "any-hash"])
def test_no_workload_captures_a_lookalikes_pods(
    lookalikes: Lookalikes, hashes: frozenset[str]
) -> None:
    at = lookalikes.end - STEP_SECONDS / 2
    targets = [_target(o, hashes) for o in OWNERS if o.target]
    source = prometheus.PrometheusUsageSource(
        prometheus.PrometheusSettings(
            url=lookalikes.url, retries=0, matchers=(("cluster", CLUSTER),)
        )
    )
    when = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    report = support.eventually(
        lambda: (r := source.collect(targets, window=WINDOW, at=when)).profiles and r,
        timeout=60,
        what="a sweep with profiles",
    )
    assert report.error is None, report.error
    per_pod = _samples_per_pod(lookalikes.url, at)
    assert per_pod >= 59
    assert set(report.profiles) == {o.ref for o in OWNERS if o.target}
    for owner in OWNERS:
        if not owner.target:
            continue
        profile = report.profiles[owner.ref]
        assert profile.memory_used_bytes is not None
        for figure in ("p50", "p95", "p99", "max"):
            got = getattr(profile.memory_used_bytes, figure)
            assert got == owner.memory_mib * queries.MIB_BYTES, (owner.name, figure)
            assert getattr(profile.graphics_engine_active, figure) == pytest.approx(
                owner.activity
            ), (owner.name, figure)
        # Exactly its own pods' samples: one more pod, of any workload, would add per_pod.
        assert profile.samples == len(owner.pods) * per_pod, owner.name
        assert profile.gpus == 1
