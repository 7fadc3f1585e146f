"""Benchmark of the operator at fleet scale: N GPUWorkloads on a real control plane and Prometheus.

For each fleet size: starts a private local control plane (hack/devcluster: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kwok), generates a varied fleet
(GPU models, MIG instances, vLLM and other servers, traffic shapes), creates kwok GPU nodes,
namespaces and one Deployment per workload, feeds the real pod names to the fleet simulator,
backfills days of DCGM/vLLM history into a real Prometheus (hack/prometheus.py) with a live
exporter for the present, creates a GPUWorkload per Deployment, then starts
``gpu-rightsizer run`` as a subprocess and measures: the time from its start to every
GPUWorkload having a Ready condition, PromQL queries and Kubernetes API requests per sweep,
status patches in the first sweep and in a steady-state sweep, each sweep's time by stage
(cluster read, PromQL, engine, writes: from the operator's own log), the operator's CPU seconds
per steady sweep and peak RSS, Prometheus' own cost of the sweep's queries and the time from
``kubectl apply`` of a new GPUWorkload to its status (:mod:`bench.sweepcost`).
Everything it started is stopped and removed afterwards.

    .venv/bin/python bench/fleet.py --sizes 100,1000 --out bench/results/fleet.json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "operator")]

from bench import sweepcost  # noqa: E402
from hack import staging  # noqa: E402
from hack.devcluster import kubeapi, plane  # noqa: E402

from gpu_rightsizer import catalogs  # noqa: E402
from gpu_rightsizer.fleetsim import fleets, layouts, physics  # noqa: E402
from gpu_rightsizer.kube import reading  # noqa: E402
from gpu_rightsizer.models import crd, gpus  # noqa: E402

WORK_DIR = plane.cache_dir() / "bench-fleet"
GPUWORKLOADS = f"/apis/{crd.GROUP}/{crd.VERSION}/{crd.PLURAL}"
MIB = 2**20

# GPU models of the generated fleet (weight, MIG profiles offered) and model sizes to pick from.
GPU_MIX: dict[str, tuple[int, tuple[str, ...]]] = {
    "H100-80GB": (6, ("1g.10gb", "2g.20gb", "3g.40gb")),
    "A100-80GB": (4, ("1g.10gb", "3g.40gb")),
    "H200-141GB": (2, ("1g.18gb", "3g.71gb")),
    "B200": (1, ("3g.90gb",)),
    "A100-40GB": (2, ("1g.5gb", "3g.20gb")),
    "L40S": (3, ()),
    "L4": (4, ()),
    "A10G": (2, ()),
    "T4": (1, ()),
}
MODEL_SIZES = (1.25e8, 3.35e8, 5.68e8, 1.5e9, 3e9, 7.24e9, 8.03e9, 13e9, 14e9, 32e9, 70.6e9)
T = fleets.TrafficShape
VLLM_SHAPES = ((T.DIURNAL, 4), (T.BURSTY, 2), (T.IDLE, 1), (T.CONSTANT, 2))
OTHER_SHAPES = ((T.DIURNAL, 3), (T.BURSTY, 2), (T.IDLE, 1), (T.CONSTANT, 2), (T.TRAINING, 2))
# The operator's own series, not the per-workload ones (a thousand each).
OWN_METRICS_ONLY = ("gpu_rightsizer_workload_",)
# The API requests one sweep's cluster read is made of, by (verb, resource).
SWEEP_LISTS = ("deployments", "statefulsets", "replicasets", "pods", "nodes")


def say(message: str) -> None:
    staging.say(message)


# ---------------------------------------------------------------------------------------------
# the generated fleet


def _traffic(rng: random.Random, shape: fleets.TrafficShape) -> fleets.Traffic:
    low, high = fleets.DEFAULT_LEVELS[shape]
    if shape in (T.DIURNAL, T.BURSTY):
        high = round(rng.uniform(0.2, 0.9), 2)
        low = round(min(low, high) * rng.uniform(0.5, 1.5), 3)
    return fleets.Traffic(
        shape=shape,
        low=min(low, high),
        high=high,
        peak_hour_utc=rng.randrange(24),
        bursts_per_day=rng.choice((2.0, 6.0, 12.0)),
    )


def _workload(
    rng: random.Random, catalog: gpus.Catalog, seed: int, index: int, namespaces: int
) -> fleets.Workload:
    """One random workload that fits its GPU (retries the model size until it does)."""
    names = list(GPU_MIX)
    gpu = rng.choices(names, [GPU_MIX[g][0] for g in names])[0]
    migs = GPU_MIX[gpu][1]
    mig = rng.choice(migs) if migs and rng.random() < 0.25 else None
    count = 1 if mig else rng.choices((1, 2, 4, 8), (70, 15, 10, 5))[0]
    vllm = rng.random() < 0.5
    shapes = VLLM_SHAPES if vllm else OTHER_SHAPES
    shape = rng.choices([s for s, _ in shapes], [w for _, w in shapes])[0]
    kind = "llm" if vllm else ("train" if shape is T.TRAINING else "svc")
    for size in rng.sample(MODEL_SIZES, len(MODEL_SIZES)):
        workload = fleets.Workload(
            name=f"{kind}-{gpu.lower()}-{index:04d}",
            namespace=f"team-{index % namespaces:02d}",
            container="trainer" if shape is T.TRAINING else "server",
            parameters=size,
            precision=rng.choices(("bf16", "fp16", "fp8"), (6, 3, 1))[0],
            gpu_model=gpu,
            mig_profile=mig,
            gpus_per_replica=count,
            replicas=1,
            engine=fleets.Engine.VLLM if vllm else fleets.Engine.OTHER,
            traffic=_traffic(rng, shape),
            kv_cache_usage_at_peak=round(rng.uniform(0.15, 0.95), 2),
            gpu_memory_utilization=rng.choice((0.85, 0.9, 0.9, 0.95)),
        )
        try:
            physics.plan_memory(layouts.place(seed, catalog, workload))
        except fleets.FleetError:
            continue
        return workload
    raise fleets.FleetError(f"no model size fits {gpu} {mig or ''} x{count}")


def make_fleet(size: int, seed: int, catalog: gpus.Catalog) -> fleets.Fleet:
    rng = random.Random(seed)
    namespaces = max(1, size // 25)
    return fleets.Fleet(
        seed=seed,
        workloads=tuple(_workload(rng, catalog, seed, i, namespaces) for i in range(size)),
    )


def declare(
    rng: random.Random, fleet: fleets.Fleet
) -> tuple[fleets.Fleet, frozenset[tuple[str, str]]]:
    """What each GPUWorkload declares: assorted policies, a model on most (with the quantized
    variants the team accepts on some); returns the fleet with them and the workloads that
    declare no model.

    minCoverage is 0 and minObservation 24h: the history's coarse step leaves most 5-minute
    steps of the coverage subquery without a sample in Prometheus' 5-minute lookback.
    """
    workloads, undeclared = [], set()
    for w in fleet.workloads:
        policy: dict[str, Any] = {
            "minObservation": "24h",
            "minCoverage": 0,
            "memoryHeadroomPercent": rng.choice((10, 20, 20, 30)),
            "targetComputeUtilization": rng.choice((0.6, 0.7, 0.7, 0.8)),
            "allowMIG": rng.random() < 0.8,
        }
        if rng.random() < 0.2:
            policy["allowedGPUModels"] = sorted(rng.sample(list(GPU_MIX), rng.randint(2, 5)))
        variants: list[dict[str, Any]] = []
        if rng.random() < 0.85:
            variants = [
                {"name": name, "precision": precision}
                for name, precision, share in (("fp8", "fp8", 0.4), ("w4a16", "int4", 0.2))
                if precision != str(w.precision) and rng.random() < share
            ]
        else:
            undeclared.add(w.key)
        workloads.append(w.model_copy(update={"policy": policy, "variants": tuple(variants)}))
    return fleet.model_copy(update={"workloads": tuple(workloads)}), frozenset(undeclared)


# ---------------------------------------------------------------------------------------------
# the cluster, Prometheus and the operator


def clear_statuses(api: kubeapi.KubeApi, fleet: fleets.Fleet) -> None:
    """Remove every GPUWorkload's status, so the next operator run starts from none."""
    staging.send_all(
        api,
        [
            (
                "PATCH",
                f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{w.namespace}/{crd.PLURAL}/"
                f"{w.name}/status",
                {"status": None},
                "application/merge-patch+json",
            )
            for w in fleet.workloads
        ],
        "statuses cleared",
    )


_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_requests(api: kubeapi.KubeApi) -> collections.Counter[tuple[str, str, str]]:
    """The API server's own request counter, summed by (verb, resource, subresource)."""
    out: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for line in str(api.get("/metrics")).splitlines():
        match = _REQUEST_LINE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        out[key] += int(float(match["value"]))
    return out


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes, and its CPU seconds (user + system) x 100."""
    out: dict[str, int] = {}
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["cpu_ticks"] = int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        pass
    return out


def ready_conditions(api: kubeapi.KubeApi) -> list[dict[str, Any] | None]:
    """Every GPUWorkload's Ready condition (None where it has none)."""
    items = api.get(GPUWORKLOADS).get("items", [])
    out: list[dict[str, Any] | None] = []
    for item in items:
        conditions = (item.get("status") or {}).get("conditions") or []
        out.append(next((c for c in conditions if c.get("type") == "Ready"), None))
    return out


def statuses(api: kubeapi.KubeApi) -> dict[tuple[str, str], dict[str, Any]]:
    """Every GPUWorkload's status by (namespace, name)."""
    return {
        (item["metadata"]["namespace"], item["metadata"]["name"]): item.get("status") or {}
        for item in api.get(GPUWORKLOADS).get("items", [])
    }


def changed_paths(old: Any, new: Any, path: str = "status") -> list[str]:
    """Where two statuses differ; conditions are matched by type, other lists compared whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += changed_paths(old.get(key), new.get(key), f"{path}.{key}")
        return out
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and all(isinstance(c, dict) and "type" in c for c in [*old, *new])
    ):
        by_type_old = {c["type"]: c for c in old}
        by_type_new = {c["type"]: c for c in new}
        out = []
        for kind in sorted(set(by_type_old) | set(by_type_new)):
            out += changed_paths(by_type_old.get(kind), by_type_new.get(kind), f"{path}[{kind}]")
        return out
    return [] if old == new else [path]


def churn(
    before: Mapping[tuple[str, str], Mapping[str, Any]],
    after: Mapping[tuple[str, str], Mapping[str, Any]],
) -> dict[str, Any]:
    """Which status fields changed between two snapshots, with an example of each."""
    fields: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    objects = 0
    for key, new in after.items():
        paths = changed_paths(before.get(key), new)
        objects += bool(paths)
        for field in paths:
            fields[field] += 1
            if field not in examples:
                old_value, new_value = before.get(key), new
                for part in field.split(".")[1:]:
                    old_value = _step(old_value, part)
                    new_value = _step(new_value, part)
                examples[field] = f"{key[0]}/{key[1]}: {old_value!r} -> {new_value!r}"[:240]
    return {
        "objects_changed": objects,
        "fields": dict(fields.most_common()),
        "examples": {f: examples[f] for f, _ in fields.most_common(12)},
    }


def _step(value: Any, part: str) -> Any:
    name, _, kind = part.partition("[")
    value = value.get(name) if isinstance(value, dict) else None
    if kind and isinstance(value, list):
        kind = kind.rstrip("]")
        value = next((c for c in value if isinstance(c, dict) and c.get("type") == kind), None)
    return value


# ---------------------------------------------------------------------------------------------
# where a sweep's time goes (in this process, the operator stopped)


@dataclasses.dataclass
class _Timed:
    """A port whose one method is timed."""

    inner: Any
    seconds: float = 0.0

    def __getattr__(self, name: str) -> Any:  # the port's other methods, untimed
        return getattr(self.inner, name)

    def _time(self, method: str, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return getattr(self.inner, method)(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began


class _TimedReader(_Timed):
    def targets(self, refs: Any, **kwargs: Any) -> Any:
        return self._time("targets", refs, **kwargs)


class _TimedSource(_Timed):
    def collect(self, targets: Any, **kwargs: Any) -> Any:
        return self._time("collect", targets, **kwargs)


class _NullWriter:
    patched = 0

    def patch_status(self, ref: Any, status: Any) -> None:
        self.patched += 1


class _NullRecorder:
    def emit(self, ref: Any, **kwargs: Any) -> None:
        return None


def time_queries(
    prometheus_url: str, window: str, namespaces: Sequence[str]
) -> list[dict[str, Any]]:
    """Each query of a sweep on its own, slowest first, with Prometheus' own limit (2 min)."""
    import requests  # noqa: PLC0415

    from gpu_rightsizer.metrics import queries  # noqa: PLC0415

    plan = queries.sweep(window, namespaces=namespaces if len(namespaces) <= 50 else None)
    out = []
    with requests.Session() as session:
        for query in plan:
            t0 = time.perf_counter()
            response = session.get(
                f"{prometheus_url}/api/v1/query",
                params={"query": query.promql, "time": f"{time.time():.3f}", "timeout": "5m"},
                timeout=600,
            )
            seconds = time.perf_counter() - t0
            try:
                body = response.json()
            except ValueError:
                body = {}
            out.append(
                {
                    "name": query.name,
                    "seconds": round(seconds, 3),
                    "series": len((body.get("data") or {}).get("result") or []),
                    "bytes": len(response.content),
                    "status": body.get("status") or response.status_code,
                }
            )
    return sorted(out, key=lambda q: -q["seconds"])


def breakdown(
    api: kubeapi.KubeApi,
    kubeconfig: pathlib.Path,
    prometheus_url: str,
    windows: Sequence[str],
) -> dict[str, Any]:
    """One sweep in this process with the operator's adapters, timed phase by phase.

    The sweep (over the last of ``windows``) under cProfile: cluster read, Prometheus, the
    decisions (everything else; statuses are computed but not written). Then every query of
    each window timed on its own, and 50 real status patches that rewrite the status each
    object already has.
    """
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    from gpu_rightsizer import config, reconcile  # noqa: PLC0415
    from gpu_rightsizer.kube import clients, writing  # noqa: PLC0415
    from gpu_rightsizer.metrics import prometheus  # noqa: PLC0415
    from gpu_rightsizer.models import workloads  # noqa: PLC0415

    items = api.get(GPUWORKLOADS).get("items", [])
    objects = [
        reconcile.WorkloadObject(
            ref=workloads.WorkloadRef(
                namespace=i["metadata"]["namespace"], name=i["metadata"]["name"]
            ),
            spec=i.get("spec") or {},
            status=i.get("status") or None,
            generation=i["metadata"].get("generation"),
            uid=i["metadata"].get("uid"),
        )
        for i in items
    ]
    client = clients.api_client(kubeconfig=kubeconfig)
    reader = _TimedReader(reading.KubeClusterReader(client))
    source = _TimedSource(
        prometheus.PrometheusUsageSource(
            prometheus.settings_from(config.PrometheusConnection(url=prometheus_url))
        )
    )
    writer = _NullWriter()
    catalog, table = catalogs.default_catalog(), catalogs.default_precisions()

    def one_sweep() -> reconcile.SweepSummary:
        return reconcile.sweep(
            objects,
            reader=reader,
            source=source,
            writer=writer,
            recorder=_NullRecorder(),
            catalog=catalog,
            table=table,
            now=datetime.datetime.now(datetime.UTC),
            settings=reconcile.Settings(window=windows[-1]),
        )

    one_sweep()  # warm-up: imports, catalog indexes, connection set-up
    reader.seconds = source.seconds = 0.0
    writer.patched = 0
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    summary = one_sweep()
    profiler.disable()
    total = time.perf_counter() - began

    namespaces = sorted({o.ref.namespace for o in objects})
    per_window = {}
    for each in windows:
        say(f"  timing each query of a {each} sweep")
        timed = time_queries(prometheus_url, each, namespaces)
        per_window[each] = {
            "seconds": round(sum(q["seconds"] for q in timed), 3),
            "answer_bytes": sum(q["bytes"] for q in timed),
            "slowest": timed[:6],
        }

    status_writer = writing.KubeStatusWriter(client)
    sample = [o for o in objects if o.status][:50]
    failures = 0
    t0 = time.perf_counter()
    for o in sample:
        try:
            status_writer.patch_status(o.ref, dict(o.status or {}))
        except Exception:  # counted: the figure is about speed and failures
            failures += 1
    patch_seconds = time.perf_counter() - t0

    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, func), (_cc, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = path.split("site-packages/")[-1].split("operator/")[-1]
        rows.append((cumtime, tottime, calls, f"{where}:{line}({func})"))
    top_cumulative = [
        f"{cum:7.3f}s cum {tot:7.3f}s own {calls:>8} calls  {where}"
        for cum, tot, calls, where in sorted(rows, reverse=True)[:30]
    ]
    top_own = [
        f"{tot:7.3f}s own {cum:7.3f}s cum {calls:>8} calls  {where}"
        for cum, tot, calls, where in sorted(rows, key=lambda r: -r[1])[:20]
    ]
    return {
        "workloads": len(objects),
        "window": windows[-1],
        "sweep_seconds": round(total, 3),
        "cluster_read_seconds": round(reader.seconds, 3),
        "prometheus_collect_seconds": round(source.seconds, 3),
        "decide_seconds": round(total - reader.seconds - source.seconds, 3),
        "statuses_that_would_be_patched": writer.patched,
        "queries": summary.queries,
        "metrics_error": summary.metrics_error,
        "queries_alone": per_window,
        "status_patch_ms": round(1000 * patch_seconds / max(1, len(sample)), 2),
        "status_patch_failures": f"{failures}/{len(sample)}",
        "profile_top_cumulative": top_cumulative,
        "profile_top_own": top_own,
    }


# ---------------------------------------------------------------------------------------------
# one fleet size


@dataclasses.dataclass
class Watcher:
    """Follows the operator: sweeps from its log, its memory and CPU from /proc."""

    run: staging.Operator
    sweeps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    problems: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    rss_samples: list[tuple[float, int]] = dataclasses.field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.run.process is not None, "the operator was not started"
        return self.run.process.pid

    def poll(self) -> list[dict[str, Any]]:
        """New "sweep done" lines (with ``t``: seconds since the operator started)."""
        now = self.run.elapsed()
        status = proc_status(self.pid)
        if "VmRSS" in status:
            self.rss_samples.append((round(now, 2), status["VmRSS"]))
        new = []
        for line in self.run.lines():
            if line.get("event") == "sweep done":
                sweep = {k: v for k, v in line.items() if k not in ("level", "logger")}
                sweep["t"] = round(self.run.since_start(line), 2)
                sweep["cpu_seconds_total"] = status.get("cpu_ticks", 0) / os.sysconf("SC_CLK_TCK")
                self.sweeps.append(sweep)
                new.append(sweep)
            elif line.get("level") in ("warning", "error", "critical"):
                self.problems[str(line.get("event"))[:160]] += 1
        return new

    def until(
        self, check: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run.alive():
                raise RuntimeError(f"the operator exited; see {self.run.log}")
            if check(self.poll()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def next_sweeps(self, timeout: float) -> list[dict[str, Any]]:
        """Wait for the next "sweep done" line(s)."""
        seen: list[dict[str, Any]] = []

        def arrived(new: list[dict[str, Any]]) -> bool:
            seen.extend(new)
            return bool(seen)

        self.until(arrived, timeout, "a periodic sweep")
        return seen


def design_list_calls(counts: Mapping[str, int], page_size: int = reading.PAGE_SIZE) -> int:
    """The list requests of one cluster-wide sweep by the reader's design: one per page."""
    return sum(max(1, math.ceil(counts.get(kind, 0) / page_size)) for kind in SWEEP_LISTS)


def sweep_figures(sweep: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "t",
        "kind",
        "workloads",
        "ready",
        "patched",
        "queries",
        "seconds",
        "stage_seconds",
        "metrics_error",
    )
    return {k: sweep.get(k) for k in keys}


def measure(
    api: kubeapi.KubeApi,
    kubeconfig: pathlib.Path,
    prometheus_url: str,
    size: int,
    window: str,
    cluster_counts: Mapping[str, int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run the operator until every GPUWorkload has a Ready condition, then a steady sweep."""
    tag = f"[{size} {window}]"
    say(f"{tag} starting the operator (--window {window}, Prometheus at {prometheus_url})")
    log = WORK_DIR / f"operator-{window}.log"
    log.unlink(missing_ok=True)
    operator = staging.Operator(
        kubeconfig, prometheus_url, log, interval=args.interval, args=("--window", window)
    ).start()
    try:
        watcher = Watcher(operator)
        deadline = time.monotonic() + args.timeout
        conditioned: float | None = None
        all_true: float | None = None
        settle = 0
        while all_true is None and (conditioned is None or settle < args.ready_sweeps):
            new = watcher.next_sweeps(deadline - time.monotonic())
            for sweep in new:
                say(
                    f"{tag}   sweep done at {sweep['t']:.1f}s: {sweep.get('workloads')} "
                    f"workloads, {sweep.get('ready')} ready, {sweep.get('patched')} patched, "
                    f"{sweep.get('queries')} queries, {sweep.get('seconds')}s"
                    + (f" ({sweep['metrics_error']})" if sweep.get("metrics_error") else "")
                )
            conditions = ready_conditions(api)
            complete = len(conditions) == size and all(conditions)
            if complete and conditioned is None:
                conditioned = new[-1]["t"]
                say(f"{tag} every GPUWorkload has a Ready condition {conditioned:.1f}s after start")
            elif conditioned is not None:
                settle += len(new)
            if complete and all(c and c.get("status") == "True" for c in conditions):
                all_true = new[-1]["t"]
        until_ready = list(watcher.sweeps)
        conditions = ready_conditions(api)
        reasons = collections.Counter(f"{c['status']}/{c.get('reason')}" for c in conditions if c)
        if all_true is None:
            say(f"{tag} not every Ready condition is True: {dict(reasons)}")

        before_api = apiserver_requests(api)
        before_metrics = operator.metrics(skip=OWN_METRICS_ONLY)
        before_status = statuses(api)
        before_cpu = proc_status(watcher.pid).get("cpu_ticks", 0)
        prom_self = sweepcost.PrometheusSelf(prometheus_url).start()
        mark = operator.elapsed()
        steady: list[dict[str, Any]] = []
        say(f"{tag} waiting for {args.steady_sweeps} periodic sweep(s) ({args.interval})")
        while len(steady) < args.steady_sweeps:
            for sweep in watcher.next_sweeps(deadline - time.monotonic()):
                if sweep["t"] - float(sweep.get("seconds") or 0) <= mark:
                    # Under way before the window opened: open it again after this one.
                    steady.clear()
                    before_api = apiserver_requests(api)
                    before_metrics = operator.metrics(skip=OWN_METRICS_ONLY)
                    before_status = statuses(api)
                    before_cpu = proc_status(watcher.pid).get("cpu_ticks", 0)
                    prom_self.stop()
                    prom_self = sweepcost.PrometheusSelf(prometheus_url).start()
                    mark = operator.elapsed()
                    continue
                steady.append(sweep)
                say(
                    f"{tag}   steady sweep done at {sweep['t']:.1f}s: {sweep.get('patched')} "
                    f"patched, {sweep.get('queries')} queries, {sweep.get('seconds')}s"
                )
        after_api = apiserver_requests(api)
        after_metrics = operator.metrics(skip=OWN_METRICS_ONLY)
        after_cpu = proc_status(watcher.pid).get("cpu_ticks", 0)
        prometheus_cost = prom_self.stop(len(steady))
        status_churn = churn(before_status, statuses(api))
        probes = None
        if args.probes and window == args.window:
            say(f"{tag} {args.probes} times: kubectl apply of a new GPUWorkload until its status")
            kubectl = staging.Kubectl(plane.find_tools(["kubectl"])["kubectl"], kubeconfig)
            probes = sweepcost.apply_probes(api, kubectl, tries=args.probes)
            say(
                f"{tag}   apply -> status: p50 {probes['p50_seconds']}s, p95 "
                f"{probes['p95_seconds']}s, max {probes['max_seconds']}s "
                f"({probes['others_present']} others present)"
            )
        final = proc_status(watcher.pid)
    finally:
        operator.stop()
    say(f"{tag} each query of the sweep once more, with Prometheus' stats=all")
    query_stats = sweepcost.query_stats(prometheus_url, window)

    delta = after_api - before_api
    n = len(steady)
    lists = {kind: delta.get(("LIST", kind, ""), 0) / n for kind in SWEEP_LISTS}
    others = {
        f"{verb} {resource}{'/' + sub if sub else ''}": count
        for (verb, resource, sub), count in sorted(delta.items())
        if count
        and resource not in (*SWEEP_LISTS, crd.PLURAL, "events")
        and verb not in ("WATCH", "CONNECT")
    }
    sweeps_total = after_metrics.get("gpu_rightsizer_reconcile_duration_seconds_count", 0)
    queries_total = after_metrics.get("gpu_rightsizer_prometheus_queries_total", 0)
    first = watcher.sweeps[0]
    clock = os.sysconf("SC_CLK_TCK")
    complete_queries = {
        int(s.get("queries") or 0) for s in watcher.sweeps if not s.get("metrics_error")
    }
    failed_queries = {int(s.get("queries") or 0) for s in watcher.sweeps if s.get("metrics_error")}
    result = {
        "window": window,
        "seconds_to_first_sweep": first["t"],
        "seconds_to_all_conditioned": conditioned,
        "seconds_to_all_ready_true": all_true,
        "ready_conditions": dict(sorted(reasons.items())),
        "metrics_errors": sorted(
            {s["metrics_error"] for s in watcher.sweeps if s.get("metrics_error")}
        ),
        "sweeps_until_settled": [sweep_figures(s) for s in until_ready],
        "first_sweep": sweep_figures(first),
        "steady_sweeps": [sweep_figures(s) for s in steady],
        "steady_sweep_stage_seconds": [s.get("stage_seconds") for s in steady],
        "first_sweep_stage_seconds": first.get("stage_seconds"),
        "operator_cpu_seconds_per_steady_sweep": round((after_cpu - before_cpu) / clock / n, 2),
        "prometheus_cost_per_steady_sweep": prometheus_cost,
        "prometheus_query_stats": query_stats,
        "apply_to_status": probes,
        "status_patches_first_sweep": first.get("patched"),
        "status_patches_steady_sweep": max(int(s.get("patched") or 0) for s in steady),
        "steady_status_changes": status_churn,
        "queries_per_complete_sweep": sorted(complete_queries),
        "queries_per_failed_sweep": sorted(failed_queries),
        "queries_per_sweep_from_metrics": round(queries_total / sweeps_total, 2)
        if sweeps_total
        else None,
        "sweeps_total": sweeps_total,
        "kubernetes_requests_per_steady_sweep": {
            "how": "kube-apiserver's apiserver_request_total before and after the steady "
            "sweep(s), divided by their number; compare operator_metrics_delta_steady "
            "(gpu_rightsizer_kubernetes_requests_total)",
            "list": lists,
            "list_total": sum(lists.values()),
            "list_by_design": design_list_calls(cluster_counts),
            "status_patches": delta.get(("PATCH", crd.PLURAL, "status"), 0) / n,
            "events": (delta.get(("POST", "events", ""), 0) + delta.get(("PATCH", "events", ""), 0))
            / n,
            "other_clients_in_window": others,
        },
        "operator_metrics_delta_steady": {
            k: round(after_metrics[k] - before_metrics.get(k, 0.0), 3)
            for k in after_metrics
            if k.startswith(
                (
                    "gpu_rightsizer_prometheus_queries_total",
                    "gpu_rightsizer_status_patches_total",
                    "gpu_rightsizer_reconcile_duration_seconds_count",
                    "gpu_rightsizer_kubernetes_requests_total",
                    "gpu_rightsizer_events_total",
                )
            )
        },
        "kubernetes_requests_total_metric": {
            k: v for k, v in after_metrics.items() if "kubernetes_requests_total" in k
        },
        "events_posted": {
            k.split("reason=")[1].rstrip("}"): v
            for k, v in after_metrics.items()
            if k.startswith("gpu_rightsizer_events_total{")
        },
        "peak_rss_bytes": final.get("VmHWM"),
        "rss_bytes_end": final.get("VmRSS"),
        "rss_bytes_before_first_sweep": next(
            (rss for t, rss in reversed(watcher.rss_samples) if t <= first["t"] - first["seconds"]),
            None,
        ),
        "operator_cpu_seconds": round(final.get("cpu_ticks", 0) / clock, 2),
        "operator_cpu_seconds_first_sweep_done": round(first["cpu_seconds_total"], 2),
        "warnings": dict(watcher.problems.most_common(8)),
        "log": str(log.relative_to(REPO_ROOT)),
    }
    say(
        f"{tag} first sweep done {first['t']:.1f}s after start, every Ready condition at "
        f"{conditioned}s, all True at {all_true}s; queries/sweep {sorted(complete_queries)} "
        f"(failed sweeps {sorted(failed_queries)}); lists/sweep {sum(lists.values()):g}; "
        f"patches {first.get('patched')} then {result['status_patches_steady_sweep']}; "
        f"peak RSS {(final.get('VmHWM') or 0) / MIB:.0f} MiB"
    )
    return result


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    catalog = catalogs.default_catalog()
    began = time.monotonic()
    fleet, undeclared = declare(random.Random(args.seed + 1), make_fleet(size, args.seed, catalog))
    namespaces = sorted({w.namespace for w in fleet.workloads})
    say(f"[{size}] fleet: {size} workloads in {len(namespaces)} namespaces")
    cluster = plane.LocalCluster(state_dir=WORK_DIR / "cluster", say=lambda m: say(f"  {m}"))
    staged: staging.Staged | None = None
    try:
        say(f"[{size}] starting a private local control plane")
        cluster.down(keep_data=False)
        cluster.up(timeout=600, nodes=[])
        api = dataclasses.replace(cluster.api(), timeout=120.0)
        kubectl = staging.Kubectl(plane.find_tools(["kubectl"])["kubectl"], cluster.kubeconfig)
        staged = staging.stage(
            kubectl,
            fleet,
            work_dir=WORK_DIR,
            history_days=args.days,
            step_seconds=args.step,
            scrape_interval=args.scrape_interval,
            layout="pooled",
            undeclared=undeclared,
            timeout_seconds=args.timeout,
        )
        assert staged.history is not None and staged.seconds is not None
        history, nodes, prometheus_url = staged.history, staged.nodes, staged.prometheus_url
        say(
            f"[{size}] staged on {len(nodes)} nodes in {staged.seconds.total:.0f}s "
            f"(pods Running after {staged.seconds.pods_running:.0f}s)"
        )
        cluster_counts = {
            "deployments": size,
            "statefulsets": 0,
            "replicasets": size,
            "pods": sum(w.replicas for w in fleet.workloads),
            "nodes": len(nodes),
        }
        windows = [args.window, *args.also_window]
        runs = []
        for i, window in enumerate(windows):
            if i:
                clear_statuses(api, fleet)
            runs.append(
                measure(api, cluster.kubeconfig, prometheus_url, size, window, cluster_counts, args)
            )
        phases = None
        if args.breakdown:
            say(f"[{size}] timing one sweep in this process, phase by phase (operator stopped)")
            phases = breakdown(api, cluster.kubeconfig, prometheus_url, windows)
            say(
                f"[{size}]   {phases['sweep_seconds']}s ({phases['window']}): cluster read "
                f"{phases['cluster_read_seconds']}s, Prometheus "
                f"{phases['prometheus_collect_seconds']}s, decisions "
                f"{phases['decide_seconds']}s; a status patch {phases['status_patch_ms']} ms"
            )
        return {
            "workloads": size,
            "fleet": {
                "namespaces": len(namespaces),
                "nodes": len(nodes),
                "pods": cluster_counts["pods"],
                "gpus_whole": sum(
                    w.gpus_per_replica * w.replicas for w in fleet.workloads if not w.mig_profile
                ),
                "mig_instances": sum(w.replicas for w in fleet.workloads if w.mig_profile),
                "vllm": sum(w.engine is fleets.Engine.VLLM for w in fleet.workloads),
                "gpu_models": dict(
                    sorted(collections.Counter(w.gpu_model for w in fleet.workloads).items())
                ),
                "traffic": dict(
                    sorted(
                        collections.Counter(str(w.traffic.shape) for w in fleet.workloads).items()
                    )
                ),
            },
            "history": {
                "days": args.days,
                "step_seconds": args.step,
                "live_scrape_interval": args.scrape_interval,
                "series": history.series,
                "samples": history.samples,
                "openmetrics_bytes": history.bytes,
                "write_seconds": round(history.seconds, 1),
                "backfill_seconds": round(staged.seconds.backfill, 1),
            },
            "staging_seconds": round(staged.seconds.total, 1),
            "pods_running_seconds": round(staged.seconds.pods_running, 1),
            "runs": runs,
            "sweep_breakdown": phases,
            "total_seconds": round(time.monotonic() - began, 1),
        }
    finally:
        if not args.keep:
            say(f"[{size}] cleaning up: Prometheus, simulator, control plane")
            try:
                if staged is not None:
                    staged.stop()
            except RuntimeError as exc:
                say(f"  {exc}")
            finally:
                shutil.rmtree(WORK_DIR / "prometheus", ignore_errors=True)
                cluster.down(keep_data=False)


# ---------------------------------------------------------------------------------------------
# report


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    meminfo = pathlib.Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0].split()
        info["memory_bytes"] = int(first[1]) * 1024
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def tool_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, command in (
        ("prometheus", ["prometheus", "--version"]),
        (
            "kube-apiserver",
            [str(plane.find_tools(["kube-apiserver"])["kube-apiserver"]), "--version"],
        ),
    ):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
            out[name] = (proc.stdout or proc.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            out[name] = "unknown"
    return out


def _with_new_samples(run: Mapping[str, Any]) -> int:
    """Steady-sweep patches explained by their input: GPUWorkloads whose sample count changed."""
    changes = run.get("steady_status_changes") or {}
    return int((changes.get("fields") or {}).get("status.usage.samples", 0))


def goals(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The issue's goals. Time to Ready is judged on the default run (the first window) of the
    largest size; the others on every run."""
    runs = {f"{r['workloads']} {run['window']}": run for r in results for run in r["runs"]}
    largest = max(results, key=lambda r: r["workloads"])
    main_run = largest["runs"][0]
    ready = main_run["seconds_to_all_ready_true"]
    complete = {k: run["queries_per_complete_sweep"] for k, run in runs.items()}
    seen = {q for counts in complete.values() for q in counts}
    # The 5 s goal is set with 1,000 others present: judged at every size from 1,000 up.
    probed = [
        run
        for r in results
        if r["workloads"] >= 1000
        for run in r["runs"]
        if run.get("apply_to_status")
    ]
    return {
        "all_ready_under_60s": {
            "workloads": largest["workloads"],
            "window": main_run["window"],
            "seconds_to_all_ready_true": ready,
            "ready_conditions": main_run["ready_conditions"],
            "other_windows": {
                run["window"]: run["seconds_to_all_ready_true"] for run in largest["runs"][1:]
            },
            "met": ready is not None and ready < 60,
        },
        "queries_independent_of_size": {
            "queries_per_complete_sweep": complete,
            "queries_per_failed_sweep": {
                k: run["queries_per_failed_sweep"]
                for k, run in runs.items()
                if run["queries_per_failed_sweep"]
            },
            "met": len(seen) == 1
            and len(
                {
                    r["workloads"]
                    for r in results
                    if any(run["queries_per_complete_sweep"] for run in r["runs"])
                }
            )
            == len(results),
        },
        "peak_rss_under_300MB": {
            "bytes": {k: run["peak_rss_bytes"] for k, run in runs.items()},
            "met": all((run["peak_rss_bytes"] or 0) < 300e6 for run in runs.values()),
        },
        "no_churn_in_steady_sweep": {
            "how": "status patches in the steady sweep less those of GPUWorkloads whose "
            "status.usage.samples changed (a sample entered or left their window between "
            "the sweeps); any other patch rewrote a status its input did not change",
            "patches": {k: run["status_patches_steady_sweep"] for k, run in runs.items()},
            "with_new_samples": {k: _with_new_samples(run) for k, run in runs.items()},
            "met": all(
                run["status_patches_steady_sweep"] - _with_new_samples(run) == 0
                for run in runs.values()
            ),
        },
        "apply_to_status_p95_under_5s": {
            "p95_seconds": {
                k: (run["apply_to_status"] or {}).get("p95_seconds")
                for k, run in runs.items()
                if run.get("apply_to_status")
            },
            "others_present": {
                k: run["apply_to_status"]["others_present"]
                for k, run in runs.items()
                if run.get("apply_to_status")
            },
            "met": bool(probed)
            and all(
                run["apply_to_status"]["without_status"] == 0
                and run["apply_to_status"]["p95_seconds"] < 5
                for run in probed
            ),
        },
    }


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


ROWS: tuple[tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str]], ...] = (
    ("workloads (--window)", lambda r, run: f"{r['workloads']:,} ({run['window']})"),
    ("kwok nodes / pods", lambda r, run: f"{r['fleet']['nodes']} / {r['fleet']['pods']}"),
    (
        "history series / samples",
        lambda r, run: f"{r['history']['series']:,} / {r['history']['samples'] / 1e6:.1f} M",
    ),
    ("start -> first sweep done", lambda r, run: _seconds(run["seconds_to_first_sweep"])),
    ("start -> every Ready condition", lambda r, run: _seconds(run["seconds_to_all_conditioned"])),
    ("start -> every Ready True", lambda r, run: _seconds(run["seconds_to_all_ready_true"])),
    (
        "Ready conditions",
        lambda r, run: ", ".join(f"{k} {v}" for k, v in run["ready_conditions"].items()),
    ),
    (
        "PromQL queries per sweep",
        lambda r, run: (
            ", ".join(map(str, run["queries_per_complete_sweep"]))
            + (
                f" (failed: {', '.join(map(str, run['queries_per_failed_sweep']))})"
                if run["queries_per_failed_sweep"]
                else ""
            )
        ),
    ),
    (
        "API list calls per sweep",
        lambda r, run: (
            f"{run['kubernetes_requests_per_steady_sweep']['list_total']:g} "
            f"(design {run['kubernetes_requests_per_steady_sweep']['list_by_design']})"
        ),
    ),
    (
        "status patches first / steady",
        lambda r, run: (
            f"{run['status_patches_first_sweep']} / {run['status_patches_steady_sweep']}"
        ),
    ),
    (
        "sweep seconds first / steady",
        lambda r, run: f"{run['first_sweep']['seconds']} / {run['steady_sweeps'][0]['seconds']}",
    ),
    (
        "steady sweep: read / PromQL / engine / writes",
        lambda r, run: " / ".join(
            f"{v:.2f}" for v in (run["steady_sweep_stage_seconds"][0] or {}).values()
        ),
    ),
    (
        "first sweep: read / PromQL / engine / writes",
        lambda r, run: " / ".join(
            f"{v:.2f}" for v in (run["first_sweep_stage_seconds"] or {}).values()
        ),
    ),
    (
        "operator CPU s per steady sweep",
        lambda r, run: f"{run['operator_cpu_seconds_per_steady_sweep']}",
    ),
    ("operator peak RSS (VmHWM)", lambda r, run: f"{(run['peak_rss_bytes'] or 0) / MIB:.1f} MiB"),
    (
        "Prometheus CPU s / peak RSS rise per sweep",
        lambda r, run: (
            f"{run['prometheus_cost_per_steady_sweep']['cpu_seconds_per_sweep']} / "
            f"{run['prometheus_cost_per_steady_sweep']['rss_bytes_peak_over_before'] / MIB:.0f} MiB"
        ),
    ),
    (
        "queries alone: eval s / samples loaded",
        lambda r, run: (
            f"{run['prometheus_query_stats']['eval_seconds']} / "
            f"{run['prometheus_query_stats']['queryable_samples'] / 1e6:.2f} M"
        ),
    ),
    (
        "apply -> status p50 / p95 / max",
        lambda r, run: (
            "-"
            if not run.get("apply_to_status")
            else " / ".join(
                str(run["apply_to_status"][k])
                for k in ("p50_seconds", "p95_seconds", "max_seconds")
            )
            + " s"
        ),
    ),
)


def print_table(results: Sequence[Mapping[str, Any]]) -> None:
    columns = [(r, run) for r in results for run in r["runs"]]
    width = max(len(name) for name, _ in ROWS)
    for name, cell in ROWS:
        print(f"{name:<{width}}  " + "  |  ".join(cell(r, run) for r, run in columns))


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes like 100,1000") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, default=1000, help="fleet size (1000)")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="several fleet sizes, e.g. 100,1000 (overrides --workloads)",
    )
    parser.add_argument("--seed", type=int, default=20240601, help="fleet generator seed")
    parser.add_argument("--days", type=float, default=7.0, help="days of history (7)")
    parser.add_argument(
        "--step", type=float, default=900.0, help="history step in seconds (900 = 15 min)"
    )
    parser.add_argument(
        "--scrape-interval",
        help="live scrape interval (default: the history step, so the present looks like the past)",
    )
    parser.add_argument("--interval", default="30s", help="operator's sweep interval (30s)")
    parser.add_argument(
        "--steady-sweeps", type=int, default=1, help="periodic sweeps measured after all Ready"
    )
    parser.add_argument(
        "--ready-sweeps",
        type=int,
        default=0,
        help="sweeps to wait for every Ready to turn True once every Ready condition exists (0)",
    )
    parser.add_argument("--window", default="7d", help="the operator's --window (7d)")
    parser.add_argument(
        "--also-window",
        action="append",
        default=None,
        help="then run the operator again with this --window (repeatable; default 2d)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait (600)")
    parser.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="skip timing one sweep in-process phase by phase",
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=20,
        help="kubectl apply of a new GPUWorkload this many times, timed to its status (20)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the last size running")
    parser.add_argument("--out", type=pathlib.Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    sizes = args.sizes or [args.workloads]
    if args.also_window is None:
        args.also_window = ["2d"]
    args.also_window = [w for w in args.also_window if w and w != args.window]
    if args.scrape_interval is None:
        args.scrape_interval = f"{args.step:g}s"
    if args.workloads < 1 or args.steady_sweeps < 1:
        parser.error("--workloads and --steady-sweeps must be positive")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    for i, size in enumerate(sizes):
        args_for_size = argparse.Namespace(
            **{**vars(args), "keep": args.keep and i == len(sizes) - 1}
        )
        results.append(run_size(size, args_for_size))
    print()
    print_table(results)
    report = {
        "benchmark": "gpu-rightsizer run on a local control plane + Prometheus, per fleet size",
        "sizes": sizes,
        "seed": args.seed,
        "operator_interval": args.interval,
        "operator_windows": [args.window, *args.also_window],
        "results": results,
        "goals": goals(results),
        "tools": tool_versions(),
        "python": platform.python_version(),
        "machine": machine(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print()
    for name, goal in report["goals"].items():
        print(f"{name}: {'met' if goal['met'] else 'NOT met'}")
    print(f"(operator logs: {WORK_DIR})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
