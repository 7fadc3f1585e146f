"""Stage a simulated GPU fleet on the local control plane, with its metrics history in Prometheus.

The one place the tests (tests/support and tests/e2e), ``make demo`` and ``make bench`` get
their fleet, their nodes, their operator and their waiting from:

1. kwok nodes for the fleet (GPU Feature Discovery labels, ``nvidia.com/gpu`` or
   ``nvidia.com/mig-<profile>`` resources): dedicated nodes per workload (:func:`nodes_for`),
   or node pools packed full, one per GPU shape (:func:`pooled_nodes`, for large fleets);
   the namespaces and the Deployments are applied; kube-scheduler places the pods and kwok
   makes them Running;
2. the simulator is told the REAL pod names (their ReplicaSet hashes come from
   kube-controller-manager), writes days of DCGM/vLLM history for exactly those pods, which
   ``promtool`` backfills;
3. Prometheus starts, scraping a live simulator endpoint for the present;
4. a GPUWorkload per workload points at its Deployment (:func:`gpuworkload`).

:class:`Operator` runs ``gpu-rightsizer run`` against it as a subprocess (its JSON log, its
/metrics). :func:`eventually` is the one wait-with-a-deadline; tests/support wraps it so that a
timeout fails the test. After a rollout (new pods, perhaps on another GPU model or a MIG
slice), :func:`retarget` makes the live endpoint serve the workload's series for the pods that
now run it.

It stages only what it is asked to, on the cluster it is given, and stops what it started.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import dataclasses
import datetime
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from hack.devcluster import kubeapi, nodes as kwok_nodes, plane
from prometheus_client.parser import text_string_to_metric_families

from gpu_rightsizer import catalogs
from gpu_rightsizer.fleetsim import deployments, exporter, fleets, layouts, openmetrics, series
from gpu_rightsizer.manifests import kinds
from gpu_rightsizer.models import crd

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# GPU Feature Discovery under the single MIG strategy: <product>-MIG-<profile>, as nvidia.com/gpu.
SINGLE_STRATEGY_PRODUCT = re.compile(r"^(?P<product>.+)-MIG-(?P<profile>[1-7]g\.[0-9]+gb)$")
POOL_LABEL = "bench.gpu-rightsizer.dev/pool"
SIMULATED = f"{deployments.SIMULATED_LABEL}=true"
# Objects are applied server-side as `kubectl apply --server-side` applies them, so later
# `kubectl apply --server-side` calls by tests own the same fields without a conflict.
FIELD_MANAGER = "kubectl"

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMETHEUS = REPO_ROOT / "hack" / "prometheus.py"
CRD = REPO_ROOT / "crds" / "gpuworkloads.gpu-rightsizer.dev.yaml"
OPERATOR = REPO_ROOT / ".venv" / "bin" / "gpu-rightsizer"

T = TypeVar("T")
Layout = Literal["dedicated", "pooled"]


def say(message: str) -> None:
    print(f">> {message}", file=sys.stderr, flush=True)


# --- ports and waiting -------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    return plane.free_ports(1)[0]


class WaitTimeoutError(TimeoutError):
    """:func:`eventually` ran out of time; says what it waited for and what it saw last."""


def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str = "the condition",
    every: float = 1.0,
    retry: tuple[type[Exception], ...] = (Exception,),
) -> T:
    """Call ``check`` every ``every`` s until it returns something truthy, and return that.

    Exceptions of the ``retry`` types count as "not yet"; others propagate at once. After
    ``timeout`` seconds it raises :class:`WaitTimeoutError` naming ``what``, the last value and the
    last retried error.
    """
    deadline = time.monotonic() + timeout
    value: T | None = None
    error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except retry as exc:
            error = exc
        if time.monotonic() > deadline:
            seen = f"last: {value!r}" + (f", last error: {error}" if error else "")
            raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {what} ({seen})")
        time.sleep(every)


# --- clients -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kubectl:
    """Runs the cached kubectl against one kubeconfig."""

    binary: pathlib.Path
    kubeconfig: pathlib.Path

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 120.0) -> str:
        argv = [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]
        return _run(argv, f"kubectl {' '.join(args)}", stdin=stdin, timeout=timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> None:
        items = list(objects)
        if items:
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            self("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=body)


def prometheus(*args: str, state_dir: pathlib.Path, timeout: float = 600.0) -> str:
    """Run ``hack/prometheus.py --state-dir STATE_DIR ARGS...``; its stdout."""
    argv = [sys.executable, str(PROMETHEUS), "--state-dir", str(state_dir), *args]
    return _run(argv, f"hack/prometheus.py {' '.join(args)}", timeout=timeout)


def _run(argv: Sequence[str], what: str, *, stdin: str | None = None, timeout: float) -> str:
    """A command's stdout; RuntimeError naming ``what`` with its stderr when it fails."""
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {proc.stderr.strip()}")
    return proc.stdout


def object_path(obj: Mapping[str, Any]) -> str:
    """The API path of a Namespace, Deployment, Argo Rollout or GPUWorkload."""
    kind, meta = obj["kind"], obj["metadata"]
    name, ns = urllib.parse.quote(meta["name"]), urllib.parse.quote(meta.get("namespace", ""))
    if kind == "Namespace":
        return f"/api/v1/namespaces/{name}"
    if kind == "Deployment":
        return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"
    if kind == crd.KIND:
        return f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{ns}/{crd.PLURAL}/{name}"
    if kind == kinds.ROLLOUT.kind:
        r = kinds.ROLLOUT
        return f"/apis/{r.api_version}/namespaces/{ns}/{r.plural}/{name}"
    raise ValueError(f"no API path for a {kind}")


def send_all(
    api: kubeapi.KubeApi,
    items: Sequence[tuple[str, str, Any, str]],
    what: str,
    *,
    workers: int = 4,
) -> float:
    """Send every (method, path, body, content type), a few at a time; the seconds it took."""
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(api.request, *item) for item in items]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            future.result()
            if done % 250 == 0 or (done == len(futures) and done >= 250):
                say(f"  {what}: {done}/{len(futures)}")
    return time.monotonic() - began


def apply_all(api: kubeapi.KubeApi, objects: Iterable[Mapping[str, Any]], what: str) -> float:
    """Server-side apply (forcing conflicts) of Namespaces, Deployments and GPUWorkloads."""
    query = f"?fieldManager={FIELD_MANAGER}&force=true"
    items = [
        ("PATCH", object_path(o) + query, dict(o), "application/apply-patch+yaml") for o in objects
    ]
    return send_all(api, items, what)


# --- the fleet on the cluster ------------------------------------------------------------------


def placements_of(fleet: fleets.Fleet) -> list[layouts.Placement]:
    """Where the simulator lays each workload out (GPU model, MIG profile, GPUs)."""
    catalog = catalogs.default_catalog()
    return [layouts.place(fleet.seed, catalog, w) for w in fleet.workloads]


def nodes_for(fleet: fleets.Fleet) -> list[dict[str, Any]]:
    """Dedicated kwok nodes for each workload, with room for all its replicas."""
    catalog = catalogs.default_catalog()
    out = []
    for w in fleet.workloads:
        gpu, mig = layouts.resolve(catalog, w)
        base = f"sim-{w.namespace}-{w.name}"[:50]
        if mig is not None:
            out.append(
                kwok_nodes.gpu_node(
                    base, gpu.id, 8, mig={mig.name: 8 * mig.max_instances}, mig_gpus=8
                )
            )
            continue
        per_node = max(1, 8 // w.gpus_per_replica) * w.gpus_per_replica
        needed = w.replicas * w.gpus_per_replica
        for i in range(math.ceil(needed / per_node)):
            out.append(kwok_nodes.gpu_node(f"{base}-{i}", gpu.id, 8))
    return out


def pool_of(placement: layouts.Placement) -> str:
    """The node pool a workload's pods go to: one GPU model, partition and GPU count."""
    part = placement.mig.name.replace(".", "-") if placement.mig else "whole"
    return f"{placement.gpu.id.lower()}-{part}-x{placement.workload.gpus_per_replica}"


def pooled_nodes(placements: Sequence[layouts.Placement]) -> list[dict[str, Any]]:
    """8-GPU kwok nodes, one pool per (GPU model, MIG profile, GPUs per pod), packed full.

    Pods select their pool by label (:func:`deployment` with ``pooled``), so pods of different
    sizes never fragment a node and the pools hold exactly the fleet: a large fleet gets far
    fewer nodes than with :func:`nodes_for`.
    """
    pods: collections.Counter[str] = collections.Counter()
    first: dict[str, layouts.Placement] = {}
    for p in placements:
        pool = pool_of(p)
        pods[pool] += p.workload.replicas
        first.setdefault(pool, p)
    out = []
    per_node_gpus = layouts.GPUS_PER_NODE
    for pool, count in sorted(pods.items()):
        p = first[pool]
        if p.mig is not None:
            per_node = per_node_gpus * p.mig.max_instances
            mig = {p.mig.name: per_node}
        else:
            per_node = per_node_gpus // p.workload.gpus_per_replica
            mig = None
        for i in range(math.ceil(count / per_node)):
            out.append(
                kwok_nodes.gpu_node(
                    f"{pool}-{i:03d}",
                    p.gpu.id,
                    per_node_gpus,
                    mig=mig,
                    mig_gpus=per_node_gpus if mig else 0,
                    labels={POOL_LABEL: pool},
                )
            )
    return out


def deployment(placement: layouts.Placement, *, pooled: bool = False) -> dict[str, Any]:
    """The Deployment of a laid-out workload; ``pooled`` pins it to its :func:`pool_of`."""
    body = deployments.deployment(placement)
    if pooled:
        body["spec"]["template"]["spec"]["nodeSelector"][POOL_LABEL] = pool_of(placement)
    return body


def kserve_predictor(deployment_body: Mapping[str, Any]) -> dict[str, Any]:
    """``deployment_body`` (named ``<name>-predictor``) labelled the way KServe labels the
    Deployment it generates for InferenceService ``<name>`` in Standard mode. There is no KServe
    controller here: this Deployment stands in for the one it would make."""
    body = copy.deepcopy(dict(deployment_body))
    name = body["metadata"]["name"].removesuffix(f"-{kinds.PREDICTOR}")
    labels = {kinds.KSERVE_LABEL: name, kinds.KSERVE_COMPONENT_LABEL: kinds.PREDICTOR}
    body["metadata"]["labels"] = {**body["metadata"].get("labels", {}), **labels}
    template = body["spec"]["template"]
    template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), **labels}
    return body


def inferenceservice(deployment_body: Mapping[str, Any]) -> dict[str, Any]:
    """The InferenceService whose predictor runs what ``deployment_body`` (``<name>-predictor``,
    its container ``kserve-container``) runs: that container as ``spec.predictor.model``, the
    pod's placement fields on the predictor, the replicas as min and max."""
    meta = deployment_body["metadata"]
    spec = deployment_body["spec"]
    pod = dict(spec["template"]["spec"])
    containers = pod.pop("containers")
    model = {k: v for k, v in containers[0].items() if k not in ("name", "ports")}
    model["modelFormat"] = {"name": "huggingface"}
    predictor = {
        **{k: v for k, v in pod.items() if k in ("nodeSelector", "affinity", "tolerations")},
        "minReplicas": spec.get("replicas", 1),
        "maxReplicas": spec.get("replicas", 1),
        "model": model,
    }
    return {
        "apiVersion": kinds.INFERENCESERVICE.api_version,
        "kind": kinds.INFERENCESERVICE.kind,
        "metadata": {
            "name": meta["name"].removesuffix(f"-{kinds.PREDICTOR}"),
            "namespace": meta["namespace"],
            "annotations": {"serving.kserve.io/deploymentMode": "Standard"},
        },
        "spec": {"predictor": predictor},
    }


def rollout(deployment_body: Mapping[str, Any]) -> dict[str, Any]:
    """The Argo Rollout that runs what ``deployment_body`` would: the same name, labels,
    selector and pod template, a canary strategy without steps (a rolling update)."""
    spec = deployment_body["spec"]
    return {
        "apiVersion": kinds.ROLLOUT.api_version,
        "kind": kinds.ROLLOUT.kind,
        "metadata": dict(deployment_body["metadata"]),
        "spec": {
            "replicas": spec.get("replicas", 1),
            "selector": spec["selector"],
            "template": spec["template"],
            "strategy": {"canary": {}},
        },
    }


ENGINE_NAMES = {
    fleets.Engine.VLLM: "vLLM",
    fleets.Engine.SGLANG: "SGLang",
    fleets.Engine.TRTLLM: "TensorRT-LLM",
    fleets.Engine.OTHER: "Other",
}
"""The simulator's engines as spec.serving.engine names them."""


def gpuworkload(
    w: fleets.Workload,
    *,
    mode: str = "Recommend",
    declare_model: bool = True,
    declare_engine: bool = True,
) -> dict[str, Any]:
    """A GPUWorkload for a simulated workload: its target, serving engine (unless
    ``declare_engine`` is False: then the operator detects it) and policy, and (unless
    ``declare_model`` is False) its model and the variants the team accepts."""
    spec: dict[str, Any] = {
        "targetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": w.name,
            "container": w.container,
        },
        "mode": mode,
        "serving": {"engine": ENGINE_NAMES[w.engine]} if declare_engine else {},
        "policy": {"minObservation": "12h", **w.policy},
    }
    if declare_model:
        spec["model"] = {
            "name": w.served_model_name,
            "parameters": w.parameters,
            "precision": str(w.precision),
        }
        if w.variants:
            spec["model"]["variants"] = [dict(v) for v in w.variants]
        if w.engine.preallocates and w.kv_cache_bytes_per_token is not None:
            spec["model"]["kvCacheBytesPerToken"] = w.kv_cache_bytes_per_token
    if w.engine.preallocates:
        spec["serving"]["gpuMemoryUtilization"] = w.gpu_memory_utilization
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": w.name, "namespace": w.namespace},
        "spec": spec,
    }


def running_pods(api: kubeapi.KubeApi) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(namespace, Deployment) -> sorted (pod, node) of every simulated Deployment's pods that
    are Running and not being deleted."""
    items = api.get(f"/api/v1/pods?labelSelector={SIMULATED}").get("items", [])
    out: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
    for pod in items:
        meta = pod["metadata"]
        if pod.get("status", {}).get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        app = meta.get("labels", {}).get("app.kubernetes.io/name", "")
        out[(meta["namespace"], app)].append((meta["name"], pod["spec"].get("nodeName", "")))
    return {k: sorted(v) for k, v in out.items()}


def wait_for_pods(
    api: kubeapi.KubeApi, fleet: fleets.Fleet, *, timeout: float
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Every workload's (pod, node) once each Deployment has all its replicas Running."""
    progress = {"at": time.monotonic()}

    def all_running() -> dict[tuple[str, str], list[tuple[str, str]]] | None:
        pods = running_pods(api)
        ready = sum(len(pods.get(w.key, ())) == w.replicas for w in fleet.workloads)
        if ready == len(fleet.workloads):
            return pods
        if time.monotonic() - progress["at"] > 10:
            progress["at"] = time.monotonic()
            say(f"  {ready}/{len(fleet.workloads)} Deployments have their pods Running")
        return None

    return eventually(
        all_running, timeout=timeout, every=1.0, what="every simulated Deployment's pods Running"
    )


@dataclasses.dataclass(frozen=True)
class StageSeconds:
    """Where staging's time went."""

    pods_running: float  # from the start to every Deployment's pods Running
    history_write: float
    backfill: float
    total: float


@dataclasses.dataclass
class Staged:
    fleet: fleets.Fleet
    simulator: series.Simulator
    live: exporter.Exporter
    prometheus_url: str
    state_dir: pathlib.Path
    nodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    history: openmetrics.HistoryStats | None = None
    seconds: StageSeconds | None = None

    def stop(self) -> None:
        """Stop Prometheus and the live exporter (the cluster's objects stay)."""
        try:
            prometheus("down", state_dir=self.state_dir)
        finally:
            self.live.stop()


def gpuworkload_events(
    kubectl: Kubectl, namespace: str, name: str | None = None, reason: str | None = None
) -> list[dict[str, Any]]:
    """The Events about GPUWorkloads in ``namespace`` (about ``name``, of ``reason``, if given)."""
    selector = ["involvedObject.kind=GPUWorkload"]
    if name is not None:
        selector.append(f"involvedObject.name={name}")
    if reason is not None:
        selector.append(f"reason={reason}")
    items: list[dict[str, Any]] = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", ",".join(selector)
    )["items"]
    return items


def wait_established(kubectl: Kubectl, crd_name: str, *, timeout: float = 60.0) -> None:
    """Wait until the CRD ``crd_name`` is Established. Polls the condition itself: ``kubectl
    wait`` fails at once on a CRD whose status has no conditions yet."""

    def established() -> bool:
        status = kubectl.json("get", "crd", crd_name).get("status") or {}
        return any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )

    eventually(established, timeout=timeout, what=f"CRD {crd_name} Established", every=0.2)


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
    layout: Layout = "dedicated",
    undeclared: Collection[tuple[str, str]] = (),
    rollouts: Collection[tuple[str, str]] = (),
    kserve: Collection[tuple[str, str]] = (),
    timeout_seconds: float = 300.0,
) -> Staged:
    """Stage ``fleet`` on the cluster and in a fresh Prometheus; see the module docstring.

    ``layout`` picks the nodes: "dedicated" (:func:`nodes_for`) or "pooled"
    (:func:`pooled_nodes`, Deployments pinned to their pool). ``nodes`` are kwok nodes to apply
    instead (e.g. a test that wants a given inventory); they must have room for every
    workload's pods. ``workloads_mode`` is the GPUWorkloads' mode (None: create none); those of
    the (namespace, name) in ``undeclared`` declare no model. The workloads named in
    ``rollouts`` run as Argo Rollouts (:func:`rollout`) instead of Deployments: their CRDs and
    controller must be there already (:class:`ArgoRollouts`). The workloads named in
    ``kserve`` (each ``<name>-predictor``) run as KServe's predictor Deployments of an
    InferenceService ``<name>`` (:func:`kserve_predictor`, :func:`inferenceservice`; KServe's CRD
    is installed, no KServe controller runs). The cluster is the local control
    plane whose state folder holds ``kubectl``'s kubeconfig. On failure it stops the
    Prometheus and exporter it started.
    """
    began = time.monotonic()
    catalog = catalogs.default_catalog()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    wait_established(kubectl, f"{crd.PLURAL}.{crd.GROUP}")
    cluster = plane.LocalCluster(state_dir=kubectl.kubeconfig.parent, say=lambda m: say(f"  {m}"))
    api = dataclasses.replace(cluster.api(), timeout=120.0)
    simulator = series.Simulator(fleet, catalog, epoch=series.default_epoch(time.time()))
    pooled = layout == "pooled"
    if nodes is None:
        nodes = pooled_nodes(simulator.placements) if pooled else nodes_for(fleet)
    namespaces = sorted({w.namespace for w in fleet.workloads})
    say(
        f"applying {len(fleet.workloads)} simulated workloads in {len(namespaces)} namespaces "
        f"and {len(nodes)} nodes for them"
    )
    cluster.apply_nodes(nodes)
    apply_all(api, (deployments.namespace(ns) for ns in namespaces), "namespaces")
    if kserve:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(kserve_crd()))
        wait_established(kubectl, f"{kinds.INFERENCESERVICE.plural}.{kinds.INFERENCESERVICE.group}")
    bodies = [deployment(p, pooled=pooled) for p in simulator.placements]
    keys = [p.workload.key for p in simulator.placements]
    bodies = [
        rollout(b) if k in rollouts else kserve_predictor(b) if k in kserve else b
        for b, k in zip(bodies, keys, strict=True)
    ]
    apply_all(api, bodies, "Deployments")
    kubectl.apply([inferenceservice(b) for b, k in zip(bodies, keys, strict=True) if k in kserve])
    pods = wait_for_pods(api, fleet, timeout=timeout_seconds)
    for w in fleet.workloads:
        placed = pods[w.key]
        simulator.set_pods(w.namespace, w.name, [p for p, _ in placed], [n for _, n in placed])
    pods_running = time.monotonic() - began

    state_dir = work_dir / "prometheus"
    shutil.rmtree(state_dir, ignore_errors=True)
    end = math.floor(time.time() / step_seconds) * step_seconds
    history_path = work_dir / "history.om"
    say(f"writing {history_days:g} days of DCGM/vLLM history for the real pods")
    history = openmetrics.write_history(
        simulator,
        history_path,
        start=end - history_days * 86_400,
        end=end,
        step_seconds=step_seconds,
    )
    say(
        f"  {history.series} series, {history.samples:,} samples, {history.bytes / 1e6:.0f} MB "
        f"in {history.seconds:.0f}s; backfilling Prometheus with promtool"
    )
    t0 = time.monotonic()
    prometheus("backfill", str(history_path), state_dir=state_dir, timeout=3600)
    backfill = time.monotonic() - t0
    history_path.unlink()
    live = exporter.Exporter(simulator).start()
    try:
        prometheus(
            "up", "--target", live.target, "--scrape-interval", scrape_interval, state_dir=state_dir
        )
        url = str(json.loads((state_dir / "state.json").read_text(encoding="utf-8"))["url"])
        staged = Staged(fleet, simulator, live, url, state_dir, list(nodes), history)
        if workloads_mode is not None:
            apply_all(
                api,
                (
                    gpuworkload(w, mode=workloads_mode, declare_model=w.key not in undeclared)
                    for w in fleet.workloads
                ),
                "GPUWorkloads",
            )
        kubectl.apply(extra_workloads)
    except BaseException:
        try:
            prometheus("down", state_dir=state_dir)
        except RuntimeError as exc:
            say(f"  {exc}")
        live.stop()
        raise
    staged.seconds = StageSeconds(
        pods_running=pods_running,
        history_write=history.seconds,
        backfill=backfill,
        total=time.monotonic() - began,
    )
    return staged


def kserve_crd() -> pathlib.Path:
    """KServe's InferenceService CRD, fetched from its Go module by ``make tools``."""
    path = plane.default_bin_dir() / "kserve-inferenceservice-crd.yaml"
    if not path.is_file():
        raise plane.ToolsMissingError(f"missing {path}: fetch it with `make tools`")
    return path.resolve()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s, unless it has exited already."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class ArgoRollouts:
    """The Argo Rollouts controller (``.cache/bin/rollouts-controller``) out of cluster.

    :meth:`start` installs its CRDs (``.cache/bin/argo-rollouts-crds.yaml``, built with it by
    ``make tools``) and runs the controller with the admin kubeconfig, without leader election,
    on free ports; its log goes to ``log``. :meth:`stop` stops the process.
    """

    def __init__(self, kubectl: Kubectl, log: pathlib.Path) -> None:
        self.kubectl, self.log = kubectl, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ArgoRollouts:
        controller = plane.find_tools(["rollouts-controller"])["rollouts-controller"]
        crds = controller.parent / "argo-rollouts-crds.yaml"  # beside it, of the same version
        if not crds.is_file():
            raise plane.ToolsMissingError(f"missing {crds}: build it with `make tools`")
        say("installing the Argo Rollouts CRDs and starting its controller")
        self.kubectl("apply", "--server-side", "-f", str(crds))
        wait_established(self.kubectl, f"{kinds.ROLLOUT.plural}.{kinds.ROLLOUT.group}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(controller),
                    "--kubeconfig",
                    str(self.kubectl.kubeconfig),
                    "--leader-elect=false",
                    "--metricsPort",
                    str(free_port()),
                    "--healthzPort",
                    str(free_port()),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; a no-op when it is not running."""
        if self.process is not None:
            stop_process(self.process)
        self.process = None


# --- the operator ------------------------------------------------------------------------------


def parse_metrics(
    text: str, *, prefix: str = "gpu_rightsizer_", skip: tuple[str, ...] = ()
) -> dict[str, float]:
    """Prometheus text exposition as {series: value}: unlabelled series by name, labelled ones
    as ``name{a=b,c=d}`` (labels sorted); only families starting with ``prefix``, none of
    ``skip``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(prefix) or (skip and family.name.startswith(skip)):
            continue
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


@dataclasses.dataclass
class Operator:
    """``gpu-rightsizer run`` in a subprocess, restartable: its JSON log and its /metrics.

    The log (stdout and stderr) is appended to ``log``; every start takes fresh ports for
    /metrics and the liveness endpoint.
    """

    kubeconfig: pathlib.Path
    prometheus_url: str
    log: pathlib.Path
    interval: str = "10s"
    args: Sequence[str] = ()
    """More ``gpu-rightsizer run`` arguments (e.g. ``--window 7d``)."""
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    """More environment for the next start (e.g. GPU_RIGHTSIZER_CRASH_AT)."""
    binary: pathlib.Path = OPERATOR
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    liveness_port: int = 0
    started: float = 0.0  # time.monotonic() at the last start
    started_wall: float = 0.0  # time.time() at the last start
    _offset: int = 0
    _partial: str = ""

    def start(self) -> Operator:
        self.metrics_port, self.liveness_port = free_port(), free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self._offset, self._partial = out.tell(), ""
            self.started, self.started_wall = time.monotonic(), time.time()
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "run",
                    "--prometheus-url",
                    self.prometheus_url,
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--interval",
                    self.interval,
                    "--metrics-port",
                    str(self.metrics_port),
                    "--liveness",
                    f"http://127.0.0.1:{self.liveness_port}/healthz",
                    *self.args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env},
            )
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; a no-op when it is not running."""
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no cleanup handler runs. RuntimeError when it was not running."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("the operator is not running: nothing to kill")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthz(self) -> tuple[int, str]:
        """The liveness endpoint's HTTP status and body (0 and the error when unreachable)."""
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def elapsed(self) -> float:
        """Seconds since the last start."""
        return time.monotonic() - self.started

    def since_start(self, line: Mapping[str, Any]) -> float:
        """Seconds from the last start to a log line (its timestamp, else now)."""
        stamp = line.get("timestamp")
        if isinstance(stamp, str):
            try:
                when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                return when.timestamp() - self.started_wall
            except ValueError:
                pass
        return self.elapsed()

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written since the last call (since the last start at first)."""
        with self.log.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", "replace")
        *complete, self._partial = text.split("\n")
        return _records(complete)

    def records(self) -> list[dict[str, Any]]:
        """Every JSON log line in the log, from every start."""
        return _records(self.log.read_text(encoding="utf-8", errors="replace").splitlines())

    def sweeps(self) -> list[dict[str, Any]]:
        """Every "sweep done" log line, from every start."""
        return [r for r in self.records() if r.get("event") == "sweep done"]

    def metrics(self, *, skip: tuple[str, ...] = ()) -> dict[str, float]:
        """Its own ``gpu_rightsizer_*`` series on /metrics (see :func:`parse_metrics`)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return parse_metrics(response.read().decode(), skip=skip)


def _records(lines: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


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
