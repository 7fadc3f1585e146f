"""What one sweep costs Prometheus, and how soon a newly applied GPUWorkload gets its status.

Used by ``bench/fleet.py`` for every fleet size; the query statistics also run on their own
against a Prometheus already staged (``bench/fleet.py --keep``)::

    .venv/bin/python bench/sweepcost.py --prometheus-url http://127.0.0.1:PORT --window 2d

- ``query_stats``: each query of the sweep once more, with ``stats=all`` (Prometheus' own
  timings and the samples it loaded: ``totalQueryableSamples``, ``peakSamples``).
- ``PrometheusSelf``: Prometheus' own ``/metrics`` (``process_cpu_seconds_total``,
  ``process_resident_memory_bytes`` sampled every half second for its peak,
  ``prometheus_engine_query_duration_seconds``), read around an operator sweep.
- ``apply_probes``: ``kubectl apply`` of a new GPUWorkload (a copy of an existing one's spec,
  so its target has pods and history) while the operator runs, timed until the object has a
  Ready condition; deleted again; repeated.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import random
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "operator"))

from hack import staging  # noqa: E402
from hack.devcluster import kubeapi  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from gpu_rightsizer.metrics import queries  # noqa: E402
from gpu_rightsizer.models import crd  # noqa: E402

GPUWORKLOADS = f"/apis/{crd.GROUP}/{crd.VERSION}/{crd.PLURAL}"
PROBE_PREFIX = "apply-probe"


def say(message: str) -> None:
    print(f">> {message}", flush=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --- Prometheus' side -----------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 300.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def query_stats(
    prometheus_url: str, window: str, *, namespaces: Sequence[str] | None = None
) -> dict[str, Any]:
    """Every query of one sweep, one at a time, with Prometheus' own statistics."""
    at = f"{time.time():.3f}"
    rows = []
    for query in queries.sweep(window, namespaces=namespaces):
        params = urllib.parse.urlencode(
            {"query": query.promql, "time": at, "stats": "all", "timeout": "300s"}
        )
        began = time.perf_counter()
        body = _get_json(f"{prometheus_url.rstrip('/')}/api/v1/query?{params}")
        wall = time.perf_counter() - began
        data = body.get("data") or {}
        stats = data.get("stats") or {}
        timings, samples = stats.get("timings") or {}, stats.get("samples") or {}
        rows.append(
            {
                "name": query.name,
                "seconds": round(wall, 3),
                "eval_seconds": timings.get("evalTotalTime"),
                "queryable_samples": samples.get("totalQueryableSamples"),
                "peak_samples": samples.get("peakSamples"),
                "series": len(data.get("result") or []),
            }
        )
    rows.sort(key=lambda r: -float(r["seconds"]))

    def total(key: str) -> float:
        return round(sum(float(r[key] or 0) for r in rows), 3)

    return {
        "how": "each query of the sweep alone, evaluated at one instant with stats=all",
        "queries": len(rows),
        "seconds": total("seconds"),
        "eval_seconds": total("eval_seconds"),
        "queryable_samples": int(total("queryable_samples")),
        "peak_samples_max": max((int(r["peak_samples"] or 0) for r in rows), default=0),
        "slowest": rows[:8],
    }


def prometheus_metrics(prometheus_url: str) -> dict[str, float]:
    """Prometheus' own process and query-engine figures from its /metrics."""
    with urllib.request.urlopen(f"{prometheus_url.rstrip('/')}/metrics", timeout=30) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
                out[sample.name] = sample.value
            elif sample.name.startswith("prometheus_engine_query_duration_seconds") and (
                sample.name.endswith(("_sum", "_count"))
            ):
                out[f"{sample.name}{{slice={sample.labels.get('slice')}}}"] = sample.value
            elif sample.name == "prometheus_engine_query_samples_total":
                out[sample.name] = sample.value
    return out


class PrometheusSelf:
    """Prometheus' own cost over a stretch of time: CPU, query-engine seconds, peak RSS."""

    def __init__(self, prometheus_url: str, every_seconds: float = 0.5) -> None:
        self.url = prometheus_url
        self.every = every_seconds
        self.before: dict[str, float] = {}
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PrometheusSelf:
        self.before = prometheus_metrics(self.url)
        self.peak_rss = self.before.get("process_resident_memory_bytes", 0.0)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            try:
                rss = prometheus_metrics(self.url).get("process_resident_memory_bytes", 0.0)
            except OSError:
                continue
            self.peak_rss = max(self.peak_rss, rss)

    def stop(self, sweeps: int = 1) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        after = prometheus_metrics(self.url)
        n = max(1, sweeps)

        def delta(key: str) -> float:
            return after.get(key, 0.0) - self.before.get(key, 0.0)

        inner = "prometheus_engine_query_duration_seconds_sum{slice=inner_eval}"
        count = "prometheus_engine_query_duration_seconds_count{slice=inner_eval}"
        rss_before = self.before.get("process_resident_memory_bytes", 0.0)
        return {
            "how": "Prometheus' own /metrics before and after, RSS sampled every "
            f"{self.every:g} s; per sweep (divided by {n}); includes its scrapes and rule "
            "evaluations in that time",
            "cpu_seconds_per_sweep": round(delta("process_cpu_seconds_total") / n, 3),
            "query_eval_seconds_per_sweep": round(delta(inner) / n, 3),
            "queries_evaluated_per_sweep": round(delta(count) / n, 1),
            "samples_loaded_per_sweep": (
                round(delta("prometheus_engine_query_samples_total") / n)
                if "prometheus_engine_query_samples_total" in after
                else None
            ),
            "rss_bytes_before": int(rss_before),
            "rss_bytes_peak": int(self.peak_rss),
            "rss_bytes_peak_over_before": int(self.peak_rss - rss_before),
        }


# --- apply -> status ------------------------------------------------------------------------------


def _items(api: kubeapi.KubeApi, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = ""
    while True:
        sep = "&" if "?" in path else "?"
        page = api.get(f"{path}{sep}limit=500" + (f"&continue={token}" if token else ""))
        out.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return out


def _has_ready(obj: Mapping[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" for c in conditions)


def apply_probes(
    api: kubeapi.KubeApi,
    kubectl: staging.Kubectl,
    *,
    tries: int = 20,
    timeout_seconds: float = 120.0,
    seed: int = 7,
) -> dict[str, Any]:
    """``kubectl apply`` a new GPUWorkload ``tries`` times; seconds until it has Ready."""
    existing = [o for o in _items(api, GPUWORKLOADS) if _has_ready(o)]
    others = len(existing)
    rng = random.Random(seed)
    seconds: list[float] = []
    reasons: list[str] = []
    for i in range(tries):
        template = rng.choice(existing)
        meta = template["metadata"]
        name = f"{PROBE_PREFIX}-{i}"
        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "spec": template["spec"],
        }
        path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{meta['namespace']}/{crd.PLURAL}/{name}"
        time.sleep(rng.uniform(0.0, 3.0))  # land at different points of the periodic sweeps
        began = time.monotonic()
        kubectl("apply", "-f", "-", stdin=json.dumps(body))
        deadline = began + timeout_seconds
        got: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            obj = api.get(path)
            if _has_ready(obj):
                got = obj
                break
            time.sleep(0.05)
        took = time.monotonic() - began
        if got is None:
            say(f"  probe {i}: no status after {timeout_seconds:g}s")
            seconds.append(float("inf"))
        else:
            seconds.append(took)
            ready = next(c for c in got["status"]["conditions"] if c["type"] == "Ready")
            reasons.append(f"{ready['status']}/{ready.get('reason')}")
            say(f"  probe {i}: Ready {ready['status']}/{ready.get('reason')} after {took:.2f}s")
        kubectl("delete", crd.PLURAL, name, "-n", meta["namespace"], "--wait=true")
    finite = [s for s in seconds if math.isfinite(s)]
    return {
        "how": "kubectl apply of a new GPUWorkload (the spec of a random existing one) until "
        "its status has a Ready condition, polled every 50 ms; deleted after each try; "
        "0-3 s random pause before each",
        "others_present": others,
        "tries": tries,
        "without_status": len(seconds) - len(finite),
        "seconds": [round(s, 3) for s in seconds],
        "p50_seconds": round(percentile(seconds, 50) or 0.0, 3),
        "p95_seconds": round(percentile(seconds, 95) or 0.0, 3),
        "max_seconds": round(max(seconds), 3) if seconds else None,
        "ready": {r: reasons.count(r) for r in sorted(set(reasons))},
    }


# --- on an already-staged cluster -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prometheus' cost of each query of a sweep")
    parser.add_argument("--prometheus-url", required=True)
    parser.add_argument("--window", default="2d")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    text = json.dumps(query_stats(args.prometheus_url, args.window), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
