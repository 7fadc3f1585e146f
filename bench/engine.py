"""Benchmark of the recommendation engine: one sweep over N synthetic workloads on one core.

Generates a varied fleet (GPU models by id and alias, MIG instances, vLLM and other servers,
declared models with quantized variants, assorted policies, some with too little history),
times ``engine.evaluate`` over the whole batch (best of several runs) and a one-workload-at-a-time
loop over a subset, measures peak memory, and writes the figures as JSON.

    .venv/bin/python bench/engine.py --workloads 10000 --out bench/results/engine.json
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gc
import json
import os
import pathlib
import platform
import random
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

# One core, one BLAS thread: set before numpy is imported (by this module or the engine).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

from gpu_rightsizer import catalogs  # noqa: E402
from gpu_rightsizer.models import crd, gpus, inventory, precisions, profiles, workloads  # noqa: E402
from gpu_rightsizer.recommend import engine, priced  # noqa: E402

GIB = 2**30
P = precisions.Precision
MODEL_SIZES = (0.5e9, 1.5e9, 3e9, 7e9, 8.03e9, 13e9, 14e9, 32e9, 34e9, 70.6e9)
WINDOWS = ("3d", "7d", "7d", "7d", "14d")
VARIANT_NAMES = {P.FP8: "fp8", P.INT8: "w8a8", P.INT4: "w4a16", P.FP16: "fp16", P.BF16: "bf16"}


def pin_to_one_core() -> str:
    """Run on one CPU where the platform allows it; says what happened."""
    setter: Callable[[int, set[int]], None] | None = getattr(os, "sched_setaffinity", None)
    if setter is None:
        return "not pinned (no sched_setaffinity on this platform)"
    getter: Callable[[int], set[int]] = os.sched_getaffinity
    cpu = min(getter(0))
    try:
        setter(0, {cpu})
    except OSError as exc:
        return f"not pinned ({exc})"
    return f"pinned to CPU {cpu}"


# ---------------------------------------------------------------------------------------------
# the synthetic fleet


def _percentiles(rng: random.Random, high: float, spread: float = 0.5) -> dict[str, float]:
    top = high * rng.uniform(0.05, 1.0)
    p99 = top * rng.uniform(1 - spread / 2, 1.0)
    p95 = p99 * rng.uniform(1 - spread, 1.0)
    p50 = p95 * rng.uniform(0.2, 1.0)
    return {"p50": p50, "p95": p95, "p99": p99, "max": top, "mean": (p50 + p95) / 2}


def _model(rng: random.Random) -> crd.ModelSpec:
    precision = rng.choice((P.BF16, P.BF16, P.BF16, P.FP16, P.FP8))
    others = [p for p in (P.FP8, P.INT8, P.INT4) if p != precision]
    chosen = rng.sample(others, rng.randint(0, len(others)))
    variants = tuple(
        crd.Variant(
            name=f"{VARIANT_NAMES[p]}-{i}",
            precision=p,
            quality_recovery=rng.choice((None, None, 0.95, 0.97, 0.99, 1.0)),
        )
        for i, p in enumerate(chosen)
    )
    parameters = rng.choice(MODEL_SIZES)
    return crd.ModelSpec(
        name="synthetic/model",
        parameters=parameters,
        embedding_parameters=parameters * rng.uniform(0.02, 0.15),
        precision=precision,
        variants=variants,
    )


def _policy(rng: random.Random, catalog: gpus.Catalog) -> crd.Policy:
    allowed = None
    if rng.random() < 0.2:
        chosen = rng.sample(catalog.gpus, rng.randint(1, 6))
        allowed = tuple(rng.choice((g.id, *g.aliases)) for g in chosen)
    return crd.Policy(
        memory_headroom_percent=rng.choice((10, 20, 20, 20, 30, 50)),
        target_compute_utilization=rng.choice((0.6, 0.7, 0.7, 0.8, 0.9)),
        allowed_gpu_models=allowed,
        allow_mig=rng.random() < 0.8,
        min_quality_recovery=rng.choice((0.95, 0.97, 0.99, 0.99, 1.0)),
        min_observation=rng.choice(("24h", "24h", "3d")),
        min_coverage=rng.choice((0.5, 0.8, 0.8)),
        max_gpus_per_replica=rng.choice((1, 2, 4, 8, 8)),
    )


def make_workload(rng: random.Random, catalog: gpus.Catalog, index: int) -> workloads.Workload:
    gpu = rng.choice(catalog.gpus)
    mig = None
    if gpu.mig_profiles and rng.random() < 0.25:
        mig = rng.choice(gpu.mig_profiles)
    count = 1 if mig else rng.choice((1, 1, 1, 2, 4, 8))
    slot = float(gpu.slot_memory_bytes(mig.name if mig else None))
    vllm = rng.random() < 0.5
    model = _model(rng) if rng.random() < 0.6 else None
    serving = crd.Serving(
        engine=crd.ServingEngine.VLLM if vllm else rng.choice((None, crd.ServingEngine.OTHER)),
        gpu_memory_utilization=rng.choice((0.9, 0.9, 0.85, 0.95)),
    )
    memory_used = _percentiles(rng, slot, 0.3)
    kv = capacity = preemptions = None
    if vllm:
        # vLLM pre-allocates its pool: DCGM sees it full whatever the load.
        full = slot * serving.gpu_memory_utilization
        memory_used = {"p50": full * 0.97, "p95": full * 0.99, "p99": full, "max": full}
        kv = profiles.Fractions.model_validate(_percentiles(rng, 1.0))
        capacity = int(slot * rng.uniform(0.2, 0.7)) if rng.random() < 0.7 else None
        preemptions = rng.choice((0, 0, 0, 0, 3))
    enough = rng.random() < 0.9
    use = profiles.UsageProfile(
        window=rng.choice(WINDOWS) if enough else "6h",
        samples=10080,
        coverage=rng.uniform(0.85, 1.0) if enough else rng.uniform(0.3, 1.0),
        memory_used_bytes=profiles.Percentiles.model_validate(memory_used),
        graphics_engine_active=profiles.Fractions.model_validate(_percentiles(rng, 1.0)),
        dram_active=(
            profiles.Fractions.model_validate(_percentiles(rng, 0.8))
            if rng.random() < 0.7
            else None
        ),
        power_watts=(
            profiles.Percentiles.model_validate(_percentiles(rng, gpu.tdp_watts))
            if rng.random() < 0.7
            else None
        ),
        kv_cache_usage=kv,
        kv_cache_capacity_bytes=capacity,
        preemptions=preemptions,
    )
    return workloads.Workload(
        ref=workloads.WorkloadRef(namespace=f"team-{index % 37}", name=f"model-{index}"),
        spec=crd.GPUWorkloadSpec(
            target_ref=crd.TargetRef(name=f"model-{index}"),
            model=model,
            serving=serving,
            policy=_policy(rng, catalog),
        ),
        current=workloads.CurrentAllocation(
            gpu_model=rng.choice((gpu.id, gpu.id, *gpu.aliases)),
            mig_profile=mig.name if mig else None,
            gpus_per_replica=count,
            replicas=rng.randint(1, 8),
            precision=rng.choice((P.BF16, P.BF16, P.FP16)),
        ),
        usage=use,
    )


def make_fleet(n: int, seed: int, catalog: gpus.Catalog) -> list[workloads.Workload]:
    rng = random.Random(seed)
    return [make_workload(rng, catalog, i) for i in range(n)]


def make_inventory(seed: int, catalog: gpus.Catalog, nodes: int = 500) -> inventory.Inventory:
    """A cluster of eight-GPU nodes of most catalog models, some partly partitioned with MIG."""
    rng = random.Random(seed)
    models = rng.sample(list(catalog.gpus), k=max(1, len(catalog.gpus) * 2 // 3))
    out = []
    for i in range(nodes):
        gpu = rng.choice(models)
        mig: dict[str, int] = {}
        if gpu.mig_profiles and rng.random() < 0.3:
            profile = rng.choice([p for p in gpu.mig_profiles if "+" not in p.name])
            mig[profile.name] = profile.max_instances * 2
        whole = 8 - (2 if mig else 0)
        out.append(
            inventory.NodeGPUs(
                name=f"node-{i}",
                product=gpu.aliases[0] if gpu.aliases else gpu.id,
                gpu_model=gpu.id,
                gpu_count=8,
                mig_capable=gpu.mig_capable,
                mig_strategy="mixed" if mig else "none",
                mig_config=None,
                whole_allocatable=whole,
                whole_free=rng.randint(0, whole),
                mig_allocatable=mig,
                mig_free={k: rng.randint(0, v) for k, v in mig.items()},
            )
        )
    return inventory.Inventory(tuple(out), "a synthetic cluster")


# ---------------------------------------------------------------------------------------------
# measurements


def best_of(runs: int, fn: Callable[[], object]) -> tuple[float, float, list[float]]:
    """(best wall seconds, CPU seconds of that run, all wall times)."""
    walls: list[float] = []
    best_cpu = 0.0
    for _ in range(runs):
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if not walls or wall < min(walls):
            best_cpu = cpu
        walls.append(wall)
    return min(walls), best_cpu, walls


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def run(n: int, seed: int, runs: int, single: int) -> dict[str, Any]:
    pinned = pin_to_one_core()
    catalog, table = catalogs.default_catalog(), catalogs.default_precisions()
    t0 = time.perf_counter()
    fleet = make_fleet(n, seed, catalog)
    stock = make_inventory(seed, catalog)
    generate_seconds = time.perf_counter() - t0

    results: list[engine.Evaluation] = []

    def sweep() -> None:
        # The candidate search and the savings stage after it, as a sweep runs them.
        results[:] = priced.attach(engine.evaluate(fleet, catalog, table, stock), catalog, table)

    sweep()  # warm-up: slot table, imports, caches
    seconds, cpu_seconds, walls = best_of(runs, sweep)
    outcomes = collections.Counter(str(r.outcome) for r in results)

    subset = fleet[: min(single, n)]

    def one_by_one() -> None:
        for w in subset:
            engine.evaluate_one(w, catalog, table)

    single_seconds, _, _ = best_of(1, one_by_one) if subset else (0.0, 0.0, [])
    batched_subset_seconds, _, _ = best_of(runs, lambda: engine.evaluate(subset, catalog, table))

    gc.collect()
    tracemalloc.start()
    engine.evaluate(fleet, catalog, table)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    max_rss_bytes = max_rss if sys.platform == "darwin" else max_rss * 1024

    per_single = single_seconds / len(subset) if subset else 0.0
    per_batched = batched_subset_seconds / len(subset) if subset else 0.0
    return {
        "benchmark": "engine.evaluate over a synthetic fleet",
        "workloads": n,
        "seed": seed,
        "runs": runs,
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu_seconds, 4),
        "run_seconds": [round(w, 4) for w in walls],
        "workloads_per_second": round(n / seconds, 1),
        "single": {
            "workloads": len(subset),
            "one_at_a_time_seconds": round(single_seconds, 4),
            "one_at_a_time_ms_per_workload": round(per_single * 1000, 4),
            "batched_seconds": round(batched_subset_seconds, 4),
            "batched_ms_per_workload": round(per_batched * 1000, 4),
            "batching_speedup": round(per_single / per_batched, 1) if per_batched else None,
        },
        "generate_seconds": round(generate_seconds, 2),
        "peak_tracemalloc_bytes": peak,
        "max_rss_bytes": max_rss_bytes,
        "outcomes": dict(sorted(outcomes.items())),
        "cpu_affinity": pinned,
        "threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": machine(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def print_table(r: dict[str, Any]) -> None:
    single = r["single"]
    rows: Sequence[tuple[str, str]] = (
        ("workloads", f"{r['workloads']:,}"),
        (
            f"evaluate (best of {r['runs']})",
            f"{r['seconds']:.3f} s wall, {r['cpu_seconds']:.3f} s CPU",
        ),
        ("throughput", f"{r['workloads_per_second']:,.0f} workloads/s"),
        (
            f"one at a time ({single['workloads']})",
            f"{single['one_at_a_time_ms_per_workload']:.3f} ms/workload",
        ),
        (
            f"batched ({single['workloads']})",
            f"{single['batched_ms_per_workload']:.3f} ms/workload",
        ),
        ("batching gain", f"{single['batching_speedup']}x"),
        ("peak tracemalloc", f"{r['peak_tracemalloc_bytes'] / 2**20:.1f} MiB"),
        ("max RSS", f"{r['max_rss_bytes'] / 2**20:.1f} MiB"),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())),
        ("cpu", r["cpu_affinity"]),
    )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, default=10_000, help="fleet size (10000)")
    parser.add_argument("--seed", type=int, default=20240601, help="fleet generator seed")
    parser.add_argument("--runs", type=int, default=3, help="timed sweeps; the best counts (3)")
    parser.add_argument(
        "--single", type=int, default=500, help="workloads evaluated one at a time (500)"
    )
    parser.add_argument("--out", type=pathlib.Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.workloads < 1 or args.runs < 1 or args.single < 0:
        parser.error("--workloads and --runs must be positive, --single not negative")
    result = run(args.workloads, args.seed, args.runs, args.single)
    print_table(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
