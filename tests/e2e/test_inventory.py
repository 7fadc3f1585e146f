"""Recommendations drawn from the cluster's GPU inventory, end to end.

Each scenario gets a control plane of its own (hack/devcluster, in a temporary state folder), so
this module owns every Node the operator sees: the session cluster's default fleet and other
tests' nodes would blur what "the inventory" is. On it a fleet is staged with
``hack/staging.py`` (kwok GPU nodes, Deployments whose real pods get a day of DCGM/vLLM history
in a real Prometheus) and the operator runs as ``gpu-rightsizer run``.

The scenarios, in order:

* the demo fleet on the demo cluster (``hack/fleet/fleet.yaml`` on the default fleet plus the
  nodes staging adds, as ``make demo`` stages it): every recommendation is hardware it has;
* a cluster with only A100-80GB nodes, one of them partitioned (mixed strategy) into 3g.40gb
  slices only: nothing outside the inventory is recommended, cheaper fits elsewhere are
  ``NotInCluster`` alternatives, MIG repartitioning only on opt-in, ``recommend -o json``
  equals the operator's status, and a full slice pool gives ``CapacityAvailable=False``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import pytest
import yaml
from hack import staging
from hack.devcluster import nodes as kwok_nodes, plane

from gpu_rightsizer.fleetsim import fleets
from tests.e2e.test_operator import GPU_RIGHTSIZER, INTERVAL, REPO_ROOT
from tests.support import cluster as cluster_support

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

A100 = "A100-80GB"
SLICE = "3g.40gb"
SLICE_RESOURCE = f"nvidia.com/mig-{SLICE}"
MIG_SLICES = 8
DEMO_FLEET = REPO_ROOT / "hack" / "fleet" / "fleet.yaml"
PRODUCTS = {spec.product: model for model, spec in kwok_nodes.GPU_MODELS.items()}

# Workloads on A100s only, most of which would be cheaper on hardware this cluster lacks.
A100_FLEET = """
seed: 17
workloads:
  - name: idle
    namespace: {ns}
    parameters: 8.03e9
    precision: bf16
    gpuModel: A100-80GB
    traffic: {{shape: idle}}
  - name: pair
    namespace: {ns}
    parameters: 8.03e9
    precision: bf16
    gpuModel: A100-80GB
    gpusPerReplica: 2
    traffic: {{shape: constant, low: 0.04, high: 0.08}}
  - name: chat
    namespace: {ns}
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: A100-80GB
    engine: vllm
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.2
    traffic: {{shape: diurnal, low: 0.02, high: 0.15, peakHourUtc: 15}}
  - name: embedder
    namespace: {ns}
    parameters: 3.35e8
    precision: fp16
    gpuModel: A100-80GB
    migProfile: 3g.40gb
    traffic: {{shape: constant, low: 0.05, high: 0.1}}
"""
A100_NAMES = ["idle", "pair", "chat", "embedder"]
REPARTITION = "embedder-repartition"


def a100_nodes() -> list[dict[str, Any]]:
    """Two A100 nodes: eight whole GPUs; four whole GPUs and four cut into 3g.40gb slices."""
    return [
        kwok_nodes.gpu_node("a100-0", A100, 8),
        kwok_nodes.gpu_node("a100-mig-0", A100, 8, mig={SLICE: MIG_SLICES}, mig_gpus=4),
    ]


# ---------------------------------------------------------------------------------------------
# an environment: a control plane of its own, a staged fleet, the operator


@dataclasses.dataclass
class Env:
    kubectl: staging.Kubectl
    staged: staging.Staged
    operator: staging.Operator
    work: pathlib.Path

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.kubectl.kubeconfig

    def gpuworkloads(self) -> dict[tuple[str, str], dict[str, Any]]:
        items = self.kubectl.json("get", "gpuworkloads", "-A")["items"]
        return {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items}

    def status(self, ns: str, name: str) -> dict[str, Any]:
        body = self.kubectl.json("get", "gpuworkload", "-n", ns, name)
        status: dict[str, Any] = body.get("status") or {}
        return status

    def inventory(self) -> Inventory:
        return Inventory.of(self.kubectl.json("get", "nodes")["items"])


@dataclasses.dataclass(frozen=True)
class Inventory:
    """What the cluster's Node objects offer, read independently of the operator's code."""

    whole: Mapping[str, int]
    """GPU model -> the most whole GPUs one node has allocatable."""
    mig: frozenset[tuple[str, str]]
    """(GPU model, MIG profile) some node has allocatable."""

    @classmethod
    def of(cls, nodes: Sequence[Mapping[str, Any]]) -> Inventory:
        whole: dict[str, int] = {}
        mig: set[tuple[str, str]] = set()
        for node in nodes:
            product = node["metadata"].get("labels", {}).get("nvidia.com/gpu.product")
            if product is None:
                continue
            model = PRODUCTS[product]
            allocatable = node["status"].get("allocatable", {})
            count = int(allocatable.get("nvidia.com/gpu", 0))
            if count:
                whole[model] = max(whole.get(model, 0), count)
            for resource, amount in allocatable.items():
                if resource.startswith("nvidia.com/mig-") and int(amount) > 0:
                    mig.add((model, resource.removeprefix("nvidia.com/mig-")))
        return cls(whole, frozenset(mig))

    def has(self, allocation: Mapping[str, Any]) -> bool:
        model, profile = str(allocation["gpuModel"]), allocation.get("migProfile")
        if profile:
            return (model, str(profile)) in self.mig
        return self.whole.get(model, 0) >= int(allocation["gpusPerReplica"])


def hack_cluster(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack" / "cluster"), *args],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"hack/cluster {' '.join(args)}: {proc.stdout}\n{proc.stderr}", pytrace=False)


@contextlib.contextmanager
def environment(
    name: str,
    fleet: fleets.Fleet,
    *,
    default_fleet: bool,
    staged_nodes: list[dict[str, Any]] | None = None,
    gpuworkloads: Sequence[Mapping[str, Any]] | None = None,
    rollouts: Collection[tuple[str, str]] = (),
    kserve: Collection[tuple[str, str]] = (),
) -> Iterator[Env]:
    """A control plane of its own (with the default fleet or no nodes), ``fleet`` staged on it.

    ``staged_nodes`` replace the nodes staging would add for the fleet (see hack/staging.py);
    ``gpuworkloads`` replace the GPUWorkloads it would make; the workloads named in
    ``rollouts`` run as Argo Rollouts, with the Argo Rollouts controller running; those in
    ``kserve`` as KServe predictors of an InferenceService (CRD only, see hack/staging.py).
    """
    try:
        kubectl_bin = plane.find_tools(["kubectl"])["kubectl"]
        plane.find_tools(plane.COMPONENTS)
    except plane.ToolsMissingError as err:
        pytest.fail(str(err), pytrace=False)
    # Not under pytest's basetemp: another session of the same user prunes old ones meanwhile.
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"gpu-rightsizer-{name}-"))
    local = plane.LocalCluster(state_dir=work / "cluster")
    # In a subprocess, like the session cluster: the components outlive any Popen of ours.
    hack_cluster(
        "--state-dir", str(local.state_dir), "up", *([] if default_fleet else ["--no-fleet"])
    )
    staged = operator = argo = None
    try:
        kubectl = staging.Kubectl(kubectl_bin, local.kubeconfig)
        if rollouts:
            argo = staging.ArgoRollouts(kubectl, work / "argo-rollouts.log").start()
        staged = staging.stage(
            kubectl,
            fleet,
            work_dir=work,
            history_days=1.0,
            scrape_interval="5s",
            nodes=staged_nodes,
            workloads_mode="Recommend" if gpuworkloads is None else None,
            extra_workloads=gpuworkloads or (),
            rollouts=rollouts,
            kserve=kserve,
        )
        operator = staging.Operator(
            local.kubeconfig, staged.prometheus_url, work / "operator.log", interval=INTERVAL
        ).start()
        yield Env(kubectl, staged, operator, work)
    finally:
        if operator is not None:
            operator.stop()
            sys.stderr.write(f"operator log: {operator.log}\n")
        if staged is not None:
            staged.stop()
        if argo is not None:
            argo.stop()
        if os.environ.get("KEEP_E2E"):
            sys.stderr.write(f"left running: hack/cluster --state-dir {local.state_dir} down\n")
        else:
            hack_cluster("--state-dir", str(local.state_dir), "down")
            for bulky in ("cluster", "prometheus"):  # the operator's log stays
                shutil.rmtree(work / bulky, ignore_errors=True)


def wait_evaluated(env: Env, keys: Sequence[tuple[str, str]], timeout: float = 120) -> None:
    """Every named GPUWorkload has Ready=True."""

    def ready() -> bool:
        found = env.gpuworkloads()
        return all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (found.get(k, {}).get("status") or {}).get("conditions", [])
            )
            for k in keys
        )

    cluster_support.eventually(
        ready, timeout=timeout, interval=1.0, what=f"Ready=True on {len(keys)} GPUWorkloads"
    )


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == kind), {})
    return found


# ---------------------------------------------------------------------------------------------
# the demo fleet on the demo cluster


def test_demo_fleet_recommends_only_hardware_the_demo_cluster_has() -> None:
    fleet = fleets.load(DEMO_FLEET)
    with environment("demo", fleet, default_fleet=True) as env:
        keys = [(w.namespace, w.name) for w in fleet.workloads]
        wait_evaluated(env, keys, timeout=180)
        inventory = env.inventory()
        # What make demo's cluster has: the default fleet and the nodes staging adds.
        assert inventory == Inventory.of(kwok_nodes.default_fleet() + staging.nodes_for(fleet))
        assert {(A100, "1g.10gb"), ("H100-80GB", SLICE)} <= inventory.mig
        outside = []
        for ns, name in keys:
            status = env.status(ns, name)
            rec = status["recommendation"]
            assert inventory.has(rec), (name, rec)
            assert rec["availability"] == "InCluster", (name, rec)
            assert condition(status, "CapacityAvailable")["status"] == "True", name
            for alt in status.get("alternatives", []):
                if alt["availability"] == "NotInCluster":
                    assert not inventory.has(alt), (name, alt)
                    assert alt["hourlyCost"] < rec["hourlyCost"], (name, alt)
                    outside.append(alt)
                else:
                    assert inventory.has(alt), (name, alt)
        # Some cheaper fits are on hardware the demo cluster lacks, and are shown as such.
        assert outside


# ---------------------------------------------------------------------------------------------
# a cluster of A100s


@dataclasses.dataclass
class A100Env:
    env: Env
    ns: str

    def status(self, name: str) -> dict[str, Any]:
        return self.env.status(self.ns, name)

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(self.ns, n) for n in [*A100_NAMES, REPARTITION]]


def a100_gpuworkloads(fleet: fleets.Fleet) -> list[dict[str, Any]]:
    """A GPUWorkload per workload; all but the vLLM chat server are batch (no latency guard).

    Plus ``embedder-repartition``: the embedder again, allowed MIG repartitioning.
    """
    out = []
    for w in fleet.workloads:
        body = staging.gpuworkload(w)
        if w.name != "chat":
            body["spec"]["policy"]["latency"] = {"guard": "Off"}
        out.append(body)
    repartition = json.loads(
        json.dumps(next(b for b in out if b["metadata"]["name"] == "embedder"))
    )
    repartition["metadata"]["name"] = REPARTITION
    repartition["spec"]["policy"]["allowMIGRepartition"] = True
    return [*out, repartition]


@pytest.fixture(scope="module")
def a100() -> Iterator[A100Env]:
    ns = f"e2e-inv-{uuid.uuid4().hex[:6]}"
    fleet = fleets.parse(A100_FLEET.format(ns=ns), "tests/e2e/test_inventory.py")
    with environment(
        "a100",
        fleet,
        default_fleet=False,
        staged_nodes=a100_nodes(),
        gpuworkloads=a100_gpuworkloads(fleet),
    ) as env:
        found = A100Env(env, ns)
        wait_evaluated(env, found.keys)
        yield found


def check_in_inventory(name: str, status: Mapping[str, Any], inventory: Inventory) -> None:
    """The recommendation and the alternatives said to be in the cluster are in the inventory;
    those said not to be are not, and are cheaper."""
    rec = status["recommendation"]
    assert inventory.has(rec), (name, rec)
    assert rec["availability"] == "InCluster", (name, rec)
    for alt in status.get("alternatives", []):
        if alt["availability"] == "NotInCluster":
            assert not inventory.has(alt), (name, alt)
            assert alt["hourlyCost"] < rec["hourlyCost"], (name, alt)
        else:
            assert inventory.has(alt), (name, alt)


def test_only_what_the_a100_nodes_offer_is_recommended(a100: A100Env) -> None:
    inventory = a100.env.inventory()
    assert inventory == Inventory({A100: 8}, frozenset({(A100, SLICE)}))
    note = "candidates from the cluster's inventory (the cluster's GPU nodes: A100-80GB)"
    for name in A100_NAMES:
        status = a100.status(name)
        rec = status["recommendation"]
        assert rec["gpuModel"] == A100, (name, rec)
        assert rec.get("migProfile") in (None, SLICE), (name, rec)
        check_in_inventory(name, status, inventory)
        assert note in rec["reasons"], (name, rec["reasons"])
        capacity = condition(status, "CapacityAvailable")
        assert (capacity["status"], capacity["reason"]) == ("True", "CapacityAvailable"), name
        # A MIG profile no node offers is never more than a NotInCluster alternative.
        for alt in status.get("alternatives", []):
            if alt["gpuModel"] == A100 and alt.get("migProfile") not in (None, SLICE):
                assert alt["availability"] == "NotInCluster", (name, alt)
    # An idle 8B model, and one on two GPUs at 8 %, fit a 3g.40gb slice the cluster has; an A10
    # (which it has not) would be cheaper still, and is shown as NotInCluster.
    for name, current in (("idle", 1), ("pair", 2)):
        status = a100.status(name)
        assert status["current"]["gpusPerReplica"] == current
        rec = status["recommendation"]
        assert (rec["gpuModel"], rec["migProfile"], rec["gpusPerReplica"]) == (A100, SLICE, 1)
        assert status["savings"]["monthlyCost"] > 0
        outside = [a for a in status["alternatives"] if a["availability"] == "NotInCluster"]
        assert outside and all(a["gpuModel"] != A100 for a in outside), (name, outside)
    # The embedder on a 3g.40gb slice keeps it: every smaller slice would need repartitioning.
    embedder = a100.status("embedder")
    assert embedder["summary"]["recommended"] == "no change"
    assert any(a["availability"] == "NotInCluster" for a in embedder["alternatives"])
    # The vLLM chat server is latency-guarded: nothing the cluster has is cheaper and as fast.
    assert a100.status("chat")["summary"]["recommended"] == "no change"


def test_repartition_opt_in_recommends_a_profile_no_node_offers(a100: A100Env) -> None:
    inventory = a100.env.inventory()
    status = a100.status(REPARTITION)
    rec = status["recommendation"]
    assert (rec["gpuModel"], rec["migProfile"]) == (A100, "1g.10gb"), rec
    assert (A100, "1g.10gb") not in inventory.mig
    assert rec["availability"] == "NeedsRepartition"
    assert rec["hourlyCost"] < status["current"]["hourlyCost"]
    assert any("must be repartitioned" in r and "1g.10gb" in r for r in rec["reasons"]), rec
    assert condition(status, "Ready")["reason"] == "CheaperAllocationFound"
    for alt in status["alternatives"]:
        if alt["availability"] == "NeedsRepartition":
            assert alt["gpuModel"] == A100 and (A100, alt["migProfile"]) not in inventory.mig
    # The same workload without the opt-in: nothing that needs a repartition is offered.
    plain = a100.status("embedder")
    assert plain["recommendation"]["migProfile"] == SLICE
    assert all(a["availability"] != "NeedsRepartition" for a in plain["alternatives"])
    assert all(
        a["migProfile"] != "1g.10gb" or a["availability"] == "NotInCluster"
        for a in plain["alternatives"]
    )


def differences(a: Any, b: Any, path: str = "status") -> list[str]:
    """Where two JSON values differ, as 'path: a != b' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted({*a, *b}) for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_recommend_cli_gives_the_operators_status(a100: A100Env) -> None:
    env = a100.env
    files = env.work / "workloads.yaml"

    def attempt() -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(written, offline) statuses, if the operator wrote nothing while the CLI ran."""
        text = env.kubectl("get", "gpuworkloads,deployments", "-n", a100.ns, "-o", "yaml")
        files.write_text(text)
        listed = [i for i in yaml.safe_load(text)["items"] if i["kind"] == "GPUWorkload"]
        written = {i["metadata"]["name"]: i["status"] for i in listed}
        versions = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in listed}
        proc = subprocess.run(
            [
                str(GPU_RIGHTSIZER),
                "recommend",
                "-f",
                str(files),
                "--prometheus-url",
                env.staged.prometheus_url,
                "--kubeconfig",
                str(env.kubeconfig),
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        offline = {i["name"]: i["status"] for i in json.loads(proc.stdout)}
        # Two more sweeps: if the operator still writes nothing, it stands by `written`.
        done = len(env.operator.sweeps())
        cluster_support.eventually(
            lambda: len(env.operator.sweeps()) >= done + 2, timeout=60, what="two more sweeps"
        )
        now = {
            i["metadata"]["name"]: i["metadata"]["resourceVersion"]
            for i in env.kubectl.json("get", "gpuworkloads", "-n", a100.ns)["items"]
        }
        return (written, offline) if now == versions else None

    written, offline = cluster_support.eventually(
        attempt, timeout=120, interval=1.0, what="a CLI run while the operator wrote nothing"
    )
    assert set(offline) == set(written) == {n for _, n in a100.keys}
    for name in sorted(written):
        found = differences(offline[name], written[name])
        assert not found, f"{name}: recommend -o json differs from the status written:\n" + (
            "\n".join(found)
        )


def test_no_free_capacity_recommends_the_next_best_with_room(a100: A100Env) -> None:
    env = a100.env
    node = env.kubectl.json("get", "node", "a100-mig-0")
    slices = int(node["status"]["allocatable"][SLICE_RESOURCE])
    pods = env.kubectl.json("get", "pods", "-A", "--field-selector", "spec.nodeName=a100-mig-0")[
        "items"
    ]
    used = sum(
        int(c["resources"].get("requests", {}).get(SLICE_RESOURCE, 0))
        for p in pods
        for c in p["spec"]["containers"]
    )
    assert slices - used > 0
    filler = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "slice-filler", "namespace": a100.ns},
        "spec": {
            "replicas": slices - used,
            "selector": {"matchLabels": {"app": "slice-filler"}},
            "template": {
                "metadata": {"labels": {"app": "slice-filler"}},
                "spec": {
                    "containers": [
                        {
                            "name": "batch",
                            "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                            "resources": {
                                "limits": {SLICE_RESOURCE: "1"},
                                "requests": {SLICE_RESOURCE: "1"},
                            },
                        }
                    ]
                },
            },
        },
    }
    env.kubectl.apply([filler])
    try:
        cluster_support.eventually(
            lambda: all(
                condition(a100.status(n), "CapacityAvailable").get("status") == "False"
                for n in ("idle", "pair")
            ),
            timeout=90,
            what="CapacityAvailable=False once every 3g.40gb slice is taken",
        )
        # idle: the slice would fit, but has no room; the next best with room is what runs.
        idle = a100.status("idle")
        capacity = condition(idle, "CapacityAvailable")
        assert capacity["reason"] == "NoFreeCapacity"
        assert "no node has one free now" in capacity["message"], capacity
        assert idle["summary"]["recommended"] == "no change"
        ready = condition(idle, "Ready")
        assert "1x A100-80GB/3g.40gb" in ready["message"] and "stays" in ready["message"], ready
        full = [a for a in idle["alternatives"] if a["availability"] == "NoFreeCapacity"]
        assert [(a["gpuModel"], a["migProfile"]) for a in full] == [(A100, SLICE)], idle
        # pair: the slice has no room, so one whole A100 (which has) is recommended instead.
        pair = a100.status("pair")
        assert condition(pair, "CapacityAvailable")["reason"] == "NoFreeCapacity"
        assert pair["summary"]["recommended"] == "1x A100-80GB bf16", pair["summary"]
        rec = pair["recommendation"]
        assert (rec["gpuModel"], rec["gpusPerReplica"], rec["hourlyCost"]) == (A100, 1, 3.43)
        assert rec["availability"] == "InCluster"
        assert any("the next best that has room is recommended" in r for r in rec["reasons"]), rec
        assert any(a["availability"] == "NoFreeCapacity" for a in pair["alternatives"]), pair
        whole_gpu = dict(rec)
    finally:
        env.kubectl("delete", "deployment", "-n", a100.ns, "slice-filler", "--wait=false")
    cluster_support.eventually(
        lambda: all(
            condition(a100.status(n), "CapacityAvailable").get("status") == "True"
            and a100.status(n)["recommendation"].get("migProfile") == SLICE
            for n in ("idle", "pair")
        ),
        timeout=120,
        what="the 3g.40gb recommendations back once the slices are free again",
    )
    # The whole-GPU recommendation written while the slices were taken names no MIG profile
    # (a field the earlier 3g.40gb recommendation had must not survive the status patch).
    assert whole_gpu.get("migProfile") is None, (
        "status.recommendation of pair while the slices were taken is a whole A100 (cost, "
        "memory, summary) but still names a MIG profile:\n" + json.dumps(whole_gpu, indent=1)
    )
