"""Stage a simulated GPU fleet on the local control plane, with its metrics history in Prometheus.

Shared by ``make demo``, the operator's end-to-end tests and ``make bench``:

1. kwok nodes sized for the fleet (GPU Feature Discovery labels, ``nvidia.com/gpu`` or
   ``nvidia.com/mig-<profile>`` resources), the namespaces and the Deployments are applied;
   kube-scheduler places the pods and kwok makes them Running;
2. the simulator is told the REAL pod names (their ReplicaSet hashes come from
   kube-controller-manager), writes days of DCGM/vLLM history for exactly those pods, which
   ``promtool`` backfills;
3. Prometheus starts, scraping a live simulator endpoint for the present;
4. a GPUWorkload per workload points at its Deployment.

After a rollout (new pods, perhaps on another GPU model or a MIG slice), :func:`retarget` makes
the live endpoint serve the workload's series for the pods that now run it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hack.devcluster import fleet as nodes_, plane

from gpu_rightsizer import catalogs
from gpu_rightsizer.fleetsim import deployments, exporter, fleets, layouts, openmetrics, series
from gpu_rightsizer.models import crd

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# GPU Feature Discovery under the single MIG strategy: <product>-MIG-<profile>, as nvidia.com/gpu.
SINGLE_STRATEGY_PRODUCT = re.compile(r"^(?P<product>.+)-MIG-(?P<profile>[1-7]g\.[0-9]+gb)$")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMETHEUS = REPO_ROOT / "hack" / "prometheus.py"
CRD = REPO_ROOT / "crds" / "gpuworkloads.gpu-rightsizer.dev.yaml"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    print(f">> {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Kubectl:
    """Runs the cached kubectl against one kubeconfig."""

    binary: pathlib.Path
    kubeconfig: pathlib.Path

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 120.0) -> str:
        proc = subprocess.run(
            [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> None:
        items = list(objects)
        if items:
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            self("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=body)


def eventually(check: Callable[[], Any], *, timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # retried until the deadline
            last = exc
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}: {last}")


def nodes_for(fleet: fleets.Fleet) -> list[dict[str, Any]]:
    """Dedicated kwok nodes for each workload, with room for all its replicas."""
    catalog = catalogs.default_catalog()
    out = []
    for w in fleet.workloads:
        gpu, mig = layouts.resolve(catalog, w)
        base = f"sim-{w.namespace}-{w.name}"[:50]
        if mig is not None:
            out.append(
                nodes_.gpu_node(base, gpu.id, 8, mig={mig.name: 8 * mig.max_instances}, mig_gpus=8)
            )
            continue
        per_node = max(1, 8 // w.gpus_per_replica) * w.gpus_per_replica
        needed = w.replicas * w.gpus_per_replica
        for i in range(math.ceil(needed / per_node)):
            out.append(nodes_.gpu_node(f"{base}-{i}", gpu.id, 8))
    return out


def gpuworkload(w: fleets.Workload, *, mode: str = "Recommend") -> dict[str, Any]:
    """A GPUWorkload for a simulated workload, declaring its model."""
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
        "mode": mode,
        "model": {
            "name": w.served_model_name,
            "parameters": w.parameters,
            "precision": str(w.precision),
        },
        "serving": {"engine": "vLLM" if w.engine is fleets.Engine.VLLM else "Other"},
        "policy": {"minObservation": "12h", **w.policy},
    }
    if w.variants:
        spec["model"]["variants"] = [dict(v) for v in w.variants]
    if w.engine is fleets.Engine.VLLM:
        spec["serving"]["gpuMemoryUtilization"] = w.gpu_memory_utilization
        if w.kv_cache_bytes_per_token is not None:
            spec["model"]["kvCacheBytesPerToken"] = w.kv_cache_bytes_per_token
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": w.name, "namespace": w.namespace},
        "spec": spec,
    }


@dataclasses.dataclass
class Staged:
    fleet: fleets.Fleet
    simulator: series.Simulator
    live: exporter.Exporter
    prometheus_url: str
    state_dir: pathlib.Path

    def stop(self) -> None:
        prometheus("down", state_dir=self.state_dir)
        self.live.stop()


def prometheus(*args: str, state_dir: pathlib.Path, timeout: float = 600.0) -> str:
    proc = subprocess.run(
        [sys.executable, str(PROMETHEUS), "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/prometheus.py {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def pods_of(kubectl: Kubectl, w: fleets.Workload) -> list[tuple[str, str]] | None:
    """(pod, node) of a Deployment's Running pods, once all replicas run."""
    pods = kubectl.json("get", "pods", "-n", w.namespace, "-l", f"app.kubernetes.io/name={w.name}")[
        "items"
    ]
    running = [
        (p["metadata"]["name"], p["spec"].get("nodeName", ""))
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]
    return sorted(running) if len(running) == w.replicas else None


def stage(
    kubectl: Kubectl,
    fleet: fleets.Fleet,
    *,
    work_dir: pathlib.Path,
    history_days: float = 2.0,
    step_seconds: float = 60.0,
    scrape_interval: str = "5s",
    workloads_mode: str | None = "Recommend",
    extra_workloads: Sequence[Mapping[str, Any]] = (),
    nodes: Sequence[dict[str, Any]] | None = None,
) -> Staged:
    """Stage ``fleet`` on the cluster and in a fresh Prometheus; see the module docstring.

    ``nodes`` are the kwok nodes to apply instead of :func:`nodes_for` the fleet's (e.g. a test
    that wants a given inventory); they must have room for every workload's pods.
    """
    catalog = catalogs.default_catalog()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/gpuworkloads.gpu-rightsizer.dev")
    say(f"applying {len(fleet.workloads)} simulated workloads and nodes for them")
    plane.LocalCluster(state_dir=kubectl.kubeconfig.parent).apply_nodes(
        nodes_for(fleet) if nodes is None else nodes
    )
    namespaces = sorted({w.namespace for w in fleet.workloads})
    kubectl.apply(deployments.namespace(ns) for ns in namespaces)
    simulator = series.Simulator(fleet, catalog, epoch=series.default_epoch(time.time()))
    kubectl.apply(deployments.deployment(p) for p in simulator.placements)
    for w in fleet.workloads:
        placed = eventually(
            lambda w=w: pods_of(kubectl, w), timeout=300, what=f"pods of {w.namespace}/{w.name}"
        )
        simulator.set_pods(w.namespace, w.name, [p for p, _ in placed], [n for _, n in placed])
    state_dir = work_dir / "prometheus"
    end = math.floor(time.time() / step_seconds) * step_seconds
    start = end - history_days * 86_400
    history = work_dir / "history.om"
    say(f"writing {history_days:g} days of DCGM/vLLM history for the real pods")
    openmetrics.write_history(simulator, history, start=start, end=end, step_seconds=step_seconds)
    say("backfilling Prometheus with promtool")
    prometheus("backfill", str(history), state_dir=state_dir)
    history.unlink()
    live = exporter.Exporter(simulator).start()
    prometheus(
        "up", "--target", live.target, "--scrape-interval", scrape_interval, state_dir=state_dir
    )
    state = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    if workloads_mode is not None:
        kubectl.apply(gpuworkload(w, mode=workloads_mode) for w in fleet.workloads)
    kubectl.apply(extra_workloads)
    return Staged(fleet, simulator, live, str(state["url"]), state_dir)


# --- after a rollout ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServingPod:
    """A pod that serves a workload, and the GPUs it holds (from its node and its limits)."""

    name: str
    node: str
    container: str
    product: str  # the node's nvidia.com/gpu.product
    gpus: int  # nvidia.com/gpu, or 1 for a MIG instance
    mig_profile: str | None  # <profile> of an nvidia.com/mig-<profile> limit


def label_selector(selector: Mapping[str, Any]) -> str:
    """A LabelSelector (matchLabels, matchExpressions) as a ``kubectl -l`` argument."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values") or [])
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    if not terms:
        raise ValueError("an empty selector selects every pod")
    return ",".join(terms)


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and not pod["metadata"].get("deletionTimestamp")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
    )


def _gpu_limits(pod: Mapping[str, Any]) -> tuple[str, int, str | None]:
    """(container, GPUs, MIG profile) of the pod's container that holds GPUs."""
    where = f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}"
    for container in pod["spec"]["containers"]:
        resources = container.get("resources") or {}
        limits = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        migs = [r for r, n in limits.items() if r.startswith(MIG_RESOURCE_PREFIX) and int(n) > 0]
        if len(migs) > 1 or (migs and int(limits[migs[0]]) != 1):
            raise ValueError(f"{where}: more than one MIG instance in {container['name']}")
        if migs:
            return container["name"], 1, migs[0].removeprefix(MIG_RESOURCE_PREFIX)
        if int(limits.get(GPU_RESOURCE, 0)) > 0:
            return container["name"], int(limits[GPU_RESOURCE]), None
    raise ValueError(f"{where} holds no {GPU_RESOURCE} or {MIG_RESOURCE_PREFIX}<profile>")


def serving_pods(
    kubectl: Kubectl, namespace: str, name: str, *, kind: str = "Deployment"
) -> list[ServingPod]:
    """The workload's pods that serve now (Running and Ready, not being deleted), by name.

    A crash-looping pod is Running but not Ready, and its container serves no metrics.
    """
    workload = kubectl.json("get", kind.lower(), "-n", namespace, name)
    selector = label_selector(workload["spec"]["selector"])
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    serving = sorted((p for p in pods if _ready(p)), key=lambda p: str(p["metadata"]["name"]))
    labels = {
        n["metadata"]["name"]: n["metadata"].get("labels") or {}
        for n in kubectl.json("get", "nodes")["items"]
    }
    out = []
    for pod in serving:
        node = str(pod["spec"].get("nodeName", ""))
        product = labels.get(node, {}).get(deployments.PRODUCT_LABEL)
        if not product:
            raise ValueError(f"node {node!r} of pod {pod['metadata']['name']} has no GPU product")
        container, gpus, mig = _gpu_limits(pod)
        single = SINGLE_STRATEGY_PRODUCT.match(product)
        if single and mig is None:
            if gpus != 1:
                raise ValueError(f"pod {pod['metadata']['name']}: more than one MIG instance")
            product, mig = single["product"], single["profile"]
        out.append(ServingPod(pod["metadata"]["name"], node, container, product, gpus, mig))
    return out


def retarget(
    staged: Staged, kubectl: Kubectl, namespace: str, name: str, *, kind: str = "Deployment"
) -> layouts.Placement | None:
    """Serve the workload's live series for exactly the pods that serve it now.

    Reads the workload's Running and Ready pods (:func:`serving_pods`), their nodes' GPU model
    (``nvidia.com/gpu.product``) and their ``nvidia.com/gpu`` or ``nvidia.com/mig-<profile>``
    limits, and replaces the workload in the live exporter with that GPU model, MIG profile, GPU
    count and replica count, under those pod and node names; the model, engine and traffic stay.
    Prometheus has the new pods' series from its next scrape and marks the old pods' stale (if
    it scraped them live at all: backfilled history alone shows in instant queries for the
    5-minute lookback).

    Returns the new placement, or None when no pod serves (the workload's series then stop).
    Raises ValueError while the pods hold different GPUs (half-way through a rollout to other
    hardware): call it again once the rollout has finished or been rolled back.
    """
    pods = serving_pods(kubectl, namespace, name, kind=kind)
    if not pods:
        staged.live.remove_workload(namespace, name)
        return None
    shapes = {(p.product, p.mig_profile, p.gpus, p.container) for p in pods}
    if len(shapes) > 1:
        found = ", ".join(sorted(f"{p.name}: {p.gpus}x {p.product}/{p.mig_profile}" for p in pods))
        raise ValueError(f"{namespace}/{name}: its pods hold different GPUs ({found})")
    product, mig, gpus, container = shapes.pop()
    gpu = staged.simulator.catalog.resolve(product)
    if gpu is None:
        raise ValueError(f"{namespace}/{name}: GPU product {product!r} is not in the catalog")
    try:
        base = staged.simulator.placement(namespace, name).workload
    except KeyError:  # retargeted to no pods before
        base = staged.fleet.workload(namespace, name)
    workload = fleets.Workload.model_validate(
        {
            **base.model_dump(),
            "gpu_model": gpu.id,
            "mig_profile": mig,
            "gpus_per_replica": gpus,
            "replicas": len(pods),
            "container": container,
        }
    )
    placement = staged.live.set_workload(workload, [p.name for p in pods], [p.node for p in pods])
    say(
        f"{namespace}/{name}: live series for {len(pods)} pods on {gpus}x {gpu.id}"
        + (f" {mig}" if mig else "")
    )
    return placement
