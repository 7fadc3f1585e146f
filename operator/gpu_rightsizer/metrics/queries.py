"""The PromQL of one sweep: a fixed set of queries, aggregated per pod on the server.

Every query returns one sample per ``(namespace, pod)`` (the identity query one per pod and GPU
kind, the cache-configuration query one per pod and configuration), whatever the number of
workloads: the queries never name a workload's pods, and the pods are attributed to workloads
afterwards in Python (:mod:`.attribution`). A sweep therefore issues :func:`sweep`'s queries and
no more, for one workload or ten thousand.

**Both label layouts in one query.** dcgm-exporter labels a GPU's series with the ``namespace``
and ``pod`` that use it. Scraped through a ServiceMonitor without ``honorLabels`` those become
``exported_namespace`` and ``exported_pod``, and ``namespace``/``pod`` then name the exporter's
own pod. Each query reads both: series that have ``exported_pod`` are aggregated by the
``exported_*`` labels, which are then copied to ``namespace``/``pod`` with ``label_replace``;
series without it are aggregated by ``namespace``/``pod``; the two are joined with ``or`` and
aggregated once more. Aggregating before the relabelling keeps series that differ only in the
exporter's pod (an exporter restarted within the window) from colliding.

**Per pod, the busiest GPU.** A statistic is taken per series over the window
(``quantile_over_time`` and friends), then the maximum across the pod's GPUs (and containers):
the pod's busiest GPU. Combining a workload's pods is :mod:`.attribution`'s job.

**Observed means any of the GPU's series.** Some drivers send a MIG instance's engine activity
but no ``DCGM_FI_DEV_FB_*`` series at all, so the history queries (``samples``, the coverage
steps, the ``gpus`` identity) read any of :data:`OBSERVED_METRICS` (framebuffer used,
graphics-engine activity, GPU utilisation). Over raw samples that is an ``or`` of one selector
per metric (per GPU the first present: ``or`` matches label sets without the metric name, so a
GPU that has all three counts once); a ``{__name__=~"A|B"}`` selector would not do there, as
``count_over_time`` drops the name and two series of one GPU then collide. Inside the step
subqueries of ``first_step`` and ``last_step`` the series are first grouped by pod
(``group by`` drops the name, so there a name regex is safe and cheap). A signal with no series
is unknown, not zero: a pod without framebuffer series has no ``memory_used_bytes`` at all.

**History.** ``samples`` counts the raw samples (busiest series of each pod). The coverage
figures do not depend on the scrape interval: subqueries at a fixed resolution (5 minutes by
default) ask, at every step of the window, whether the GPU had a sample within the lookback
delta; the resolution must not exceed Prometheus' ``--query.lookback-delta`` (5 minutes unless
changed). ``first_step`` looks one step further back than the window, so a pod older than the
window shows a step before it: the observed history (``observedSeconds``) is the evaluation
time minus the workload's first step, to within a step, and the source clips it to the window.
``timestamp()`` of the grouped, computed vector is the step's own time; ``timestamp()`` of a raw
selector at every step is what made the first-sample query slow (on a week of a thousand
workloads' GPUs, 8 s for one metric at hourly steps and 17 s for three, against 3 s for the
grouped form at 5-minute steps).

**Coverage is over time, not pods.** A workload's coverage is the share of the window's steps at
which *any* of its pods had a sample: a Deployment whose pods were all replaced by a rollout
half-way through the window is covered for the whole window, though each pod is for half of it.
Per pod, three queries give ``covered_steps`` (steps with a sample, busiest series) and
``first_step`` and ``last_step`` (the first and last such step, on the same aligned grid);
:mod:`.attribution` unites the pods' ``[first_step, last_step]`` intervals. That is exact when
each pod's samples run without a gap from its first to its last step, which is how pods live
(created, scraped, deleted); a pod's gaps, whose place is not known, are taken off the union, so
with gaps the figure is a lower bound, and never below the best single pod's. The alternative, a
subquery over ``max by (namespace, owner)`` of a ``label_replace`` that cuts the owner's name out
of the pod's, would be exact in every case but would parse pod names in PromQL (at every step of
the window) that :mod:`.attribution` parses better: Deployments and StatefulSets, known
pod-template hashes, names cut to 58 characters.

**vLLM.** The KV-cache gauge is ``vllm:kv_cache_usage_perc``, or ``vllm:gpu_cache_usage_perc``
(renamed, then removed in vLLM 0.12) as a fallback. ``vllm:cache_config_info`` has no
``model_name`` label (its labels are the cache settings and ``engine``), so it is never joined
on the model's name: one query groups it by pod and its ``num_gpu_blocks``, ``block_size`` and
``gpu_memory_utilization`` labels, and the source parses those strings per pod. Latency comes
from the histograms ``vllm:inter_token_latency_seconds`` (or the older
``vllm:time_per_output_token_seconds``) and ``vllm:time_to_first_token_seconds``:
``histogram_quantile`` over ``sum by (namespace, pod, le) (increase(<histogram>_bucket[W]))`` for
p50, p95 and p99, and the quantile 1 for the maximum (the upper bound of the highest bucket that
has observations, so within a bucket of the true maximum).

**The node agent's per-container memory.** ``gpu-rightsizer agent`` publishes, besides
DCGM's names (which every query above reads as dcgm-exporter's), the memory each container's
processes hold on each GPU (``gpu_rightsizer_process_memory_used_bytes``). Where a pod has
that series, its memory is read from it alone: the maximum per container and GPU (an agent
restarted within the window leaves two series of one container), summed over the pod's
containers per GPU (``UUID``, ``GPU_I_ID``), then the busiest GPU; pods without it fall back to
``DCGM_FI_DEV_FB_USED`` (an ``or`` of the two per-pod vectors). So two pods that time-slice one
GPU are each sized on their own memory, not on the whole GPU's that DCGM reports to both.

**Fallbacks.** ``graphicsEngineActive`` reads ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` and, for a GPU
that only has it, ``DCGM_FI_DEV_GPU_UTIL`` / 100 (an over-estimate of the need). Each alternative
is its own selector joined with ``or``, the preferred one first.

**Dialects.** The queries are written in dcgm-exporter's current names; :func:`sweep`'s
``dialect`` (:mod:`.dialects`) renders them with another exporter's or collector's metric and
label names (dcgm-exporter's ``--use-old-namespace``, Google Managed Prometheus), the same
number of queries in the same order, each answer still labelled ``namespace``/``pod``.

Label values are never interpolated except the optional namespace filter, which goes through
:func:`escape_label_value` (and :func:`escape_regex` inside a regex matcher).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Callable, Collection, Mapping

from gpu_rightsizer.metrics import dialects
from gpu_rightsizer.models import durations

MIB_BYTES = 1_048_576
DEFAULT_RESOLUTION = "5m"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

NAMESPACE = "namespace"
POD = "pod"
EXPORTED_NAMESPACE = "exported_namespace"
EXPORTED_POD = "exported_pod"
CONTAINER = "container"
EXPORTED_CONTAINER = "exported_container"
MODEL_NAME = "modelName"
MIG_PROFILE = "GPU_I_PROFILE"
_GPU_IDENTITY = ("UUID", "GPU_I_ID")
LE = "le"

FB_USED = "DCGM_FI_DEV_FB_USED"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
PIPE_TENSOR_ACTIVE = "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
DRAM_ACTIVE = "DCGM_FI_PROF_DRAM_ACTIVE"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
PROCESS_MEMORY = "gpu_rightsizer_process_memory_used_bytes"  # the node agent's, per container
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
KV_CACHE_USAGE_V0 = "vllm:gpu_cache_usage_perc"
REQUESTS_WAITING = "vllm:num_requests_waiting"
PREEMPTIONS_TOTAL = "vllm:num_preemptions_total"
CACHE_CONFIG_INFO = "vllm:cache_config_info"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
TIME_PER_OUTPUT_TOKEN_V0 = "vllm:time_per_output_token_seconds"
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
# SGLang (--enable-metrics), python/sglang/srt/metrics/collector.py and docs
# references/production_metrics.md: labels model_name, engine_type, tp_rank, pp_rank.
SGLANG_TOKEN_USAGE = "sglang:token_usage"
SGLANG_MAX_TOTAL_TOKENS = "sglang:max_total_num_tokens"
SGLANG_QUEUE_REQUESTS = "sglang:num_queue_reqs"
SGLANG_INTER_TOKEN_LATENCY = "sglang:inter_token_latency_seconds"
SGLANG_TIME_TO_FIRST_TOKEN = "sglang:time_to_first_token_seconds"
# trtllm-serve's /prometheus/metrics and Triton's TensorRT-LLM backend (shared reference
# platform-2026.md §2): the KV cache in blocks, its use as a fraction.
TRTLLM_KV_UTILIZATION = "trtllm_kv_cache_utilization"
TRTLLM_KV_MAX_BLOCKS = "trtllm_kv_cache_max_blocks"
TRTLLM_KV_TOKENS_PER_BLOCK = "trtllm_kv_cache_tokens_per_block"
TRTLLM_REQUESTS_WAITING = "trtllm_num_requests_waiting"
TRITON_KV_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
TRITON_KV_BLOCK_TYPE = "kv_cache_block_type"
TRITON_REQUESTS = "nv_trt_llm_request_metrics"
TRITON_REQUEST_TYPE = "request_type"

# Labels of vllm:cache_config_info that the source reads (strings, parsed per pod).
NUM_GPU_BLOCKS = "num_gpu_blocks"
BLOCK_SIZE = "block_size"
GPU_MEMORY_UTILIZATION = "gpu_memory_utilization"

OBSERVED_METRICS = (FB_USED, GR_ENGINE_ACTIVE, GPU_UTIL)
"""DCGM series any of which shows that a GPU was observed, preferred first."""

# Query names that are not "<signal>_<statistic>".
SAMPLES = "samples"
COVERED_STEPS = "covered_steps"
FIRST_STEP = "first_step"
LAST_STEP = "last_step"
GPUS = "gpus"
PREEMPTIONS = "preemptions"
CACHE_CONFIG = "cache_config"
KV_CAPACITY = "kv_capacity_tokens"
SERVING_ENGINE = "serving_engine"

ENGINE_CODES = {1.0: "vLLM", 2.0: "SGLang", 3.0: "TensorRT-LLM"}
"""The value the serving-engine query gives a pod whose metrics are that engine's."""
ENGINE_FINGERPRINTS = (
    ((KV_CACHE_USAGE, KV_CACHE_USAGE_V0, CACHE_CONFIG_INFO), 1.0),
    ((SGLANG_TOKEN_USAGE, SGLANG_MAX_TOTAL_TOKENS), 2.0),
    ((TRTLLM_KV_UTILIZATION, TRTLLM_KV_MAX_BLOCKS, TRITON_KV_BLOCKS), 3.0),
)
"""The gauges that show a pod runs an engine, and the engine's code (preferred first)."""

# Figures that are not query answers: the workload's coverage (from the three coverage
# queries, see :func:`.attribution.coverage`), its observed history (from the first step) and
# the two read from cache_config's labels.
COVERAGE = "coverage"
OBSERVED_SECONDS = "observed_seconds"
KV_CACHE_CAPACITY_TOKENS = "kv_cache_capacity_tokens"
GPU_MEMORY_UTILIZATION_FIGURE = "gpu_memory_utilization"


class AcrossPods(enum.Enum):
    """How the per-pod values of one query combine into a workload's value."""

    MAX = "max"  # the busiest pod: every statistic, last step
    MIN = "min"  # the earliest pod: first step (the observed history)
    SUM = "sum"  # samples: all the data the workload has


class Statistic(enum.Enum):
    """One statistic of a signal over the window; the value is the profile's key."""

    P50 = "p50"
    P95 = "p95"
    P99 = "p99"
    MAX = "max"
    MEAN = "mean"


_QUANTILES = {Statistic.P50: "0.5", Statistic.P95: "0.95", Statistic.P99: "0.99"}
# histogram_quantile(1, ...) is the upper bound of the highest bucket with observations.
_HISTOGRAM_QUANTILES = {**_QUANTILES, Statistic.MAX: "1"}


@dataclasses.dataclass(frozen=True)
class Source:
    """A metric a signal is read from, and the PromQL that turns its values into the unit."""

    metric: str
    scale: str = ""  # appended to the per-series expression, e.g. " * 1048576"
    labels: str = ""  # matchers the metric's series must carry, e.g. 'request_type="waiting"'


@dataclasses.dataclass(frozen=True)
class Signal:
    """A field of the usage profile and the gauges it comes from, preferred first."""

    field: str
    sources: tuple[Source, ...]
    fraction: bool = False  # a 0-1 ratio (clipped to 1)
    per_container: str | None = None
    """A per-container series (in the unit) summed per GPU and preferred, pod by pod, over
    ``sources``: a pod that has it is read from it alone."""


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A field of the usage profile read from a Prometheus histogram (in seconds)."""

    field: str
    metrics: tuple[str, ...]  # histogram names without ``_bucket``, preferred first
    fraction: bool = False

    @property
    def statistics(self) -> tuple[Statistic, ...]:
        return tuple(_HISTOGRAM_QUANTILES)


MEMORY_USED_BYTES = Signal(
    "memory_used_bytes", (Source(FB_USED, f" * {MIB_BYTES}"),), per_container=PROCESS_MEMORY
)
GRAPHICS_ENGINE_ACTIVE = Signal(
    "graphics_engine_active",
    (Source(GR_ENGINE_ACTIVE), Source(GPU_UTIL, " / 100")),
    fraction=True,
)
TENSOR_ACTIVE = Signal("tensor_active", (Source(PIPE_TENSOR_ACTIVE),), fraction=True)
DRAM_ACTIVE_SIGNAL = Signal("dram_active", (Source(DRAM_ACTIVE),), fraction=True)
POWER_WATTS = Signal("power_watts", (Source(POWER_USAGE),))
KV_CACHE_USAGE_SIGNAL = Signal(
    "kv_cache_usage",
    (
        Source(KV_CACHE_USAGE),
        Source(KV_CACHE_USAGE_V0),
        Source(SGLANG_TOKEN_USAGE),
        Source(TRTLLM_KV_UTILIZATION),
        Source(TRITON_KV_BLOCKS, labels=f'{TRITON_KV_BLOCK_TYPE}="fraction"'),
    ),
    fraction=True,
)
REQUESTS_WAITING_SIGNAL = Signal(
    "requests_waiting",
    (
        Source(REQUESTS_WAITING),
        Source(SGLANG_QUEUE_REQUESTS),
        Source(TRTLLM_REQUESTS_WAITING),
        Source(TRITON_REQUESTS, labels=f'{TRITON_REQUEST_TYPE}="waiting"'),
    ),
)

SIGNALS: tuple[Signal, ...] = (
    MEMORY_USED_BYTES,
    GRAPHICS_ENGINE_ACTIVE,
    TENSOR_ACTIVE,
    DRAM_ACTIVE_SIGNAL,
    POWER_WATTS,
    KV_CACHE_USAGE_SIGNAL,
    REQUESTS_WAITING_SIGNAL,
)

TIME_PER_OUTPUT_TOKEN_SECONDS = Histogram(
    "time_per_output_token_seconds",
    (INTER_TOKEN_LATENCY, TIME_PER_OUTPUT_TOKEN_V0, SGLANG_INTER_TOKEN_LATENCY),
)
TIME_TO_FIRST_TOKEN_SECONDS = Histogram(
    "time_to_first_token_seconds", (TIME_TO_FIRST_TOKEN, SGLANG_TIME_TO_FIRST_TOKEN)
)

HISTOGRAMS: tuple[Histogram, ...] = (TIME_PER_OUTPUT_TOKEN_SECONDS, TIME_TO_FIRST_TOKEN_SECONDS)


@dataclasses.dataclass(frozen=True)
class Query:
    """One PromQL query of a sweep; ``name`` keys its per-pod values."""

    name: str
    promql: str
    across_pods: AcrossPods = AcrossPods.MAX


@dataclasses.dataclass(frozen=True)
class Grid:
    """The steps of the coverage subqueries: ``window_seconds / resolution_seconds`` of them,
    ending at ``end`` (Unix seconds, where known)."""

    window_seconds: float
    resolution_seconds: float
    end: float | None = None

    @property
    def steps(self) -> float:
        return self.window_seconds / self.resolution_seconds

    @property
    def first_step(self) -> float | None:
        """The time of the window's first step (the subquery's steps are aligned to the
        resolution), or None without ``end``."""
        if self.end is None:
            return None
        start = self.end - self.window_seconds
        return math.ceil(start / self.resolution_seconds) * self.resolution_seconds


def grid(window: str, resolution: str = DEFAULT_RESOLUTION) -> Grid:
    """The coverage grid of a sweep over ``window``; the resolution is at most the window.

    ValueError for a malformed or zero duration.
    """
    window_seconds = durations.parse(window).total_seconds()
    resolution_seconds = durations.parse(resolution).total_seconds()
    if window_seconds <= 0 or resolution_seconds <= 0:
        raise ValueError(f"window {window!r} and resolution {resolution!r} must be positive")
    return Grid(window_seconds, min(resolution_seconds, window_seconds))


def statistic_name(signal: Signal | Histogram, statistic: Statistic) -> str:
    """The query name of one statistic of a signal: ``memory_used_bytes_p95``."""
    return f"{signal.field}_{statistic.value}"


# --- escaping -------------------------------------------------------------------------------

_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def escape_label_value(value: str) -> str:
    """``value`` as the inside of a double-quoted PromQL string.

    Backslashes, double quotes and control characters are escaped (``\\n``, ``\\xNN``), so no
    value can end the string or change the query.
    """
    out: list[str] = []
    for char in value:
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def escape_regex(value: str) -> str:
    """``value`` as a literal inside an RE2 regular expression (before string escaping)."""
    return "".join(f"\\{char}" if char in _RE2_SPECIAL else char for char in value)


def namespace_regex(namespaces: Collection[str]) -> str:
    """The escaped body of ``=~"..."`` matching exactly these namespaces (sorted)."""
    alternatives = "|".join(escape_regex(ns) for ns in sorted(set(namespaces)))
    return escape_label_value(alternatives)


# --- building blocks -------------------------------------------------------------------------


def _matchers(layout: dialects.Layout, namespaces: Collection[str] | None) -> str:
    """Label matchers (inside braces) for series in ``layout``, in ``namespaces`` if given."""
    matchers = [layout.present]
    if namespaces is not None:
        matchers.append(f'{layout.namespace}=~"{namespace_regex(namespaces)}"')
    return ",".join(matchers)


def _as_namespace_pod(expression: str, layout: dialects.Layout) -> str:
    """``expression`` with the layout's pod labels copied to ``namespace`` and ``pod``."""
    if not layout.renamed:
        return expression
    return (
        f'label_replace(label_replace({expression}, "{NAMESPACE}", "$1", '
        f'"{layout.namespace}", "(.*)"), "{POD}", "$1", "{layout.pod}", "(.*)")'
    )


def _per_pod(
    aggregation: str,
    per_series: Callable[[str], str],
    namespaces: Collection[str] | None,
    keep: tuple[str, ...] = (),
    per_container: bool = False,
    layouts: tuple[dialects.Layout, ...] = dialects.BOTH,
) -> str:
    """``aggregation by (namespace, pod, *keep)`` of ``per_series(matchers)``, every layout.

    ``per_container``: the series are per container and GPU; they are first reduced to one per
    container and GPU (the maximum: an agent restarted within the window has two), then summed
    over the pod's containers per GPU, before the aggregation across the pod's GPUs.
    """
    extra = "".join(f", {label}" for label in keep)
    gpu = ", ".join(_GPU_IDENTITY)

    def inner(pod_labels: str, container: str, matchers: str) -> str:
        expression = per_series(matchers)
        if not per_container:
            return expression
        one = f"max by ({pod_labels}, {container}, {gpu}) ({expression})"
        return f"sum by ({pod_labels}, {gpu}) ({one})"

    def branch(layout: dialects.Layout) -> str:
        pod_labels = f"{layout.namespace}, {layout.pod}"
        body = inner(pod_labels, layout.container, _matchers(layout, namespaces))
        return _as_namespace_pod(f"{aggregation} by ({pod_labels}{extra}) ({body})", layout)

    branches = " or ".join(branch(layout) for layout in layouts)
    return f"{aggregation} by ({NAMESPACE}, {POD}{extra}) ({branches})"


def _each_observed(function: Callable[[str], str], matchers: str, dialect: dialects.Dialect) -> str:
    """``function`` of each observation metric's selector, the first present per GPU."""
    return " or ".join(
        function(f"{dialect.metric(metric)}{{{matchers}}}") for metric in OBSERVED_METRICS
    )


def _step_times(
    aggregation: str,
    function: str,
    range_: str,
    namespaces: Collection[str] | None,
    dialect: dialects.Dialect,
) -> str:
    """``aggregation by (namespace, pod)`` of ``function`` over the times of the steps at which
    the pod had any observation series (grouped by pod first: one series a pod, no name)."""
    names = escape_label_value("|".join(escape_regex(dialect.metric(m)) for m in OBSERVED_METRICS))

    def steps(layout: dialects.Layout) -> str:
        pod_labels = f"{layout.namespace}, {layout.pod}"
        matchers = _matchers(layout, namespaces)
        present = f'group by ({pod_labels}) ({{__name__=~"{names}",{matchers}}})'
        return _as_namespace_pod(f"{function}(timestamp({present})[{range_}])", layout)

    branches = " or ".join(steps(layout) for layout in dialect.dcgm_layouts)
    return f"{aggregation} by ({NAMESPACE}, {POD}) ({branches})"


def _layouts(metric: str, dialect: dialects.Dialect) -> tuple[dialects.Layout, ...]:
    """Where ``metric``'s series keep their pods in ``dialect``: DCGM's way, or the serving
    engines' (scraped from the serving pod itself, as vLLM's are)."""
    return dialect.dcgm_layouts if metric.startswith("DCGM_") else dialect.vllm_layouts


def _selector(metric: str, labels: str, matchers: str) -> str:
    return f"{metric}{{{matchers},{labels}}}" if labels else f"{metric}{{{matchers}}}"


def _over_time(statistic: Statistic, selector: str) -> str:
    if statistic in _QUANTILES:
        return f"quantile_over_time({_QUANTILES[statistic]}, {selector})"
    function = "max_over_time" if statistic is Statistic.MAX else "avg_over_time"
    return f"{function}({selector})"


def _statistic(
    signal: Signal,
    statistic: Statistic,
    window: str,
    namespaces: Collection[str] | None,
    dialect: dialects.Dialect = dialects.DCGM,
) -> Query:
    def per_series(matchers: str) -> str:
        return " or ".join(
            _over_time(
                statistic,
                f"{_selector(dialect.metric(source.metric), source.labels, matchers)}[{window}]",
            )
            + source.scale
            for source in signal.sources
        )

    layouts = _layouts(signal.sources[0].metric, dialect)
    promql = _per_pod("max", per_series, namespaces, layouts=layouts)
    if signal.per_container is not None:
        metric = signal.per_container

        def per_container(matchers: str) -> str:
            return _over_time(statistic, f"{metric}{{{matchers}}}[{window}]")

        summed = _per_pod("max", per_container, namespaces, per_container=True)
        promql = f"{summed} or {promql}"
    return Query(statistic_name(signal, statistic), promql)


def _histogram_statistic(
    histogram: Histogram,
    statistic: Statistic,
    window: str,
    namespaces: Collection[str] | None,
    dialect: dialects.Dialect = dialects.DCGM,
) -> Query:
    def per_series(matchers: str) -> str:
        return " or ".join(
            f"increase({metric}_bucket{{{matchers}}}[{window}])" for metric in histogram.metrics
        )

    layouts = _layouts(histogram.metrics[0], dialect)
    buckets = _per_pod("sum", per_series, namespaces, (LE,), layouts=layouts)
    quantile = _HISTOGRAM_QUANTILES[statistic]
    return Query(statistic_name(histogram, statistic), f"histogram_quantile({quantile}, {buckets})")


def _number(value: float) -> str:
    return f"{value:.10g}"


# --- the sweep -------------------------------------------------------------------------------


def _scoped(promql: str, matchers: Mapping[str, str], dialect: dialects.Dialect) -> str:
    """``promql`` with ``matchers`` added to every selector (each starts with its layout's
    ``present`` matchers, which :func:`_matchers` writes and nothing else does)."""
    extra = "".join(f',{label}="{escape_label_value(value)}"' for label, value in matchers.items())
    layouts = {*dialects.BOTH, *dialect.dcgm_layouts, *dialect.vllm_layouts}
    present = sorted({layout.present for layout in layouts}, key=len, reverse=True)
    scoped = promql
    for index, text in enumerate(present):
        scoped = scoped.replace(text, f"\x00{index}\x00")
    for index, text in enumerate(present):
        scoped = scoped.replace(f"\x00{index}\x00", text + extra)
    return scoped


def sweep(
    window: str,
    *,
    namespaces: Collection[str] | None = None,
    resolution: str = DEFAULT_RESOLUTION,
    matchers: Mapping[str, str] | None = None,
    dialect: dialects.Dialect = dialects.DCGM,
) -> tuple[Query, ...]:
    """Every query of one sweep over ``window`` (a PromQL duration such as ``7d``).

    ``namespaces`` restricts the series to those namespaces (None: all). ``resolution`` is the
    subquery step of the coverage queries (at most the window: see :func:`grid`). ``matchers``
    are label equalities every selector carries, e.g. ``{"cluster": "eu-1"}`` to read one
    cluster's series from a central Prometheus (Thanos, Mimir). The number of queries depends
    on nothing but the code, whatever the ``dialect`` (:mod:`.dialects`: the metric and label
    names the cluster's series have). ValueError for a malformed or zero duration, or a matcher
    label that is not a Prometheus label name.
    """
    for label in matchers or {}:
        if not _LABEL_NAME.fullmatch(label):
            raise ValueError(f"{label!r} is not a Prometheus label name")
    plan = _sweep(window, namespaces=namespaces, resolution=resolution, dialect=dialect)
    if not matchers:
        return plan
    return tuple(dataclasses.replace(q, promql=_scoped(q.promql, matchers, dialect)) for q in plan)


def _sweep(
    window: str,
    *,
    namespaces: Collection[str] | None,
    resolution: str,
    dialect: dialects.Dialect,
) -> tuple[Query, ...]:
    steps = grid(window, resolution)
    step = durations.format_seconds(steps.resolution_seconds)
    # One step more than the window: a pod older than the window shows a step before the
    # window's start, so its observed history is the whole window, not a step less.
    reach = durations.format_seconds(steps.window_seconds + steps.resolution_seconds)

    out = [
        _statistic(signal, statistic, window, namespaces, dialect)
        for signal in SIGNALS
        for statistic in Statistic
    ]
    out += [
        _histogram_statistic(histogram, statistic, window, namespaces, dialect)
        for histogram in HISTOGRAMS
        for statistic in histogram.statistics
    ]

    def raw_count(matchers: str) -> str:
        return _each_observed(lambda s: f"count_over_time({s}[{window}])", matchers, dialect)

    def stepped_count(matchers: str) -> str:
        return _each_observed(lambda s: f"count_over_time({s}[{window}:{step}])", matchers, dialect)

    def last_seen(matchers: str) -> str:
        return _each_observed(lambda s: f"last_over_time({s}[{window}])", matchers, dialect)

    def preempted(matchers: str) -> str:
        return f"increase({PREEMPTIONS_TOTAL}{{{matchers}}}[{window}])"

    def cache_config(matchers: str) -> str:
        return f"last_over_time({CACHE_CONFIG_INFO}{{{matchers}}}[{window}])"

    dcgm = dialect.dcgm_layouts
    vllm = dialect.vllm_layouts
    identity = (dialect.uuid_label, *_GPU_IDENTITY[1:])
    gpus = _per_pod(
        "group", last_seen, namespaces, (MODEL_NAME, MIG_PROFILE, *identity), layouts=dcgm
    )
    cache_labels = (NUM_GPU_BLOCKS, BLOCK_SIZE, GPU_MEMORY_UTILIZATION)
    out += [
        Query(SAMPLES, _per_pod("max", raw_count, namespaces, layouts=dcgm), AcrossPods.SUM),
        Query(COVERED_STEPS, _per_pod("max", stepped_count, namespaces, layouts=dcgm)),
        Query(
            FIRST_STEP,
            _step_times("min", "min_over_time", f"{reach}:{step}", namespaces, dialect),
            AcrossPods.MIN,
        ),
        Query(
            LAST_STEP,
            _step_times("max", "max_over_time", f"{window}:{step}", namespaces, dialect),
        ),
        Query(GPUS, f"count by ({NAMESPACE}, {POD}, {MODEL_NAME}, {MIG_PROFILE}) ({gpus})"),
        Query(PREEMPTIONS, _per_pod("max", preempted, namespaces, layouts=vllm)),
        Query(CACHE_CONFIG, _per_pod("max", cache_config, namespaces, cache_labels, layouts=vllm)),
        Query(KV_CAPACITY, _kv_capacity(window, namespaces, vllm)),
        Query(SERVING_ENGINE, _serving_engine(window, namespaces, vllm)),
    ]
    return tuple(out)


def _last(metric: str, labels: str, window: str) -> Callable[[str], str]:
    def per_series(matchers: str) -> str:
        return f"last_over_time({_selector(metric, labels, matchers)}[{window}])"

    return per_series


def _kv_capacity(
    window: str, namespaces: Collection[str] | None, layouts: tuple[dialects.Layout, ...]
) -> str:
    """The KV pool in tokens of engines that send it as gauges: SGLang's
    ``max_total_num_tokens``; TensorRT-LLM's maximum blocks times tokens per block (trtllm-serve,
    or Triton's block metrics by type). vLLM's is in cache_config's labels."""

    def last(metric: str, labels: str = "") -> str:
        return _per_pod("max", _last(metric, labels, window), namespaces, layouts=layouts)

    block = f'{TRITON_KV_BLOCK_TYPE}="{{}}"'
    return " or ".join(
        (
            last(SGLANG_MAX_TOTAL_TOKENS),
            f"({last(TRTLLM_KV_MAX_BLOCKS)} * {last(TRTLLM_KV_TOKENS_PER_BLOCK)})",
            f"({last(TRITON_KV_BLOCKS, block.format('max'))}"
            f" * {last(TRITON_KV_BLOCKS, block.format('tokens_per'))})",
        )
    )


def _serving_engine(
    window: str, namespaces: Collection[str] | None, layouts: tuple[dialects.Layout, ...]
) -> str:
    """Per pod, the code (:data:`ENGINE_CODES`) of the first engine whose gauges it sends.

    Each engine's gauges are an ``or`` of one selector per metric (a name regex would collide
    once ``last_over_time`` drops the names), counted per pod (a count is never NaN), then
    turned into the engine's code; the engines are joined with ``or``, the first one wins.
    """
    branches = []
    for metrics, code in ENGINE_FINGERPRINTS:

        def present(matchers: str, metrics: tuple[str, ...] = metrics) -> str:
            return " or ".join(
                f"last_over_time({metric}{{{matchers}}}[{window}])" for metric in metrics
            )

        counted = _per_pod("count", present, namespaces, layouts=layouts)
        branches.append(f"({counted} * 0 + {_number(code)})")
    return " or ".join(branches)
