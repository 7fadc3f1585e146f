"""The PromQL of one sweep: a fixed set of queries, aggregated per pod on the server.

Every query returns one sample per ``(namespace, pod)`` (the identity query one per pod and GPU
kind), whatever the number of workloads: the queries never name a workload's pods, and the
pods are attributed to workloads afterwards in Python (:mod:`.attribution`). A sweep therefore
issues :func:`sweep`'s queries and no more, for one workload or ten thousand.

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

**History.** ``samples`` counts the raw samples of ``DCGM_FI_DEV_FB_USED`` (busiest series).
``coverage`` and ``observed_seconds`` do not depend on the scrape interval: a subquery at a
fixed resolution (5 minutes by default) asks, at every step of the window, whether the series
had a sample within the lookback delta. ``coverage`` is the share of steps that had one
(gaps and a late start lower it), ``observed_seconds`` the evaluation time minus the first such
sample's timestamp (to within one hour, the step of that subquery; it looks one step further back
than the window, so a series older than the window is observed for all of it; the source clips
it to the window). The resolution must not exceed
Prometheus' ``--query.lookback-delta`` (5 minutes unless changed).

**Fallbacks.** ``graphicsEngineActive`` reads ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` and, for a GPU
that only has it, ``DCGM_FI_DEV_GPU_UTIL`` / 100 (an over-estimate of the need). The vLLM
KV-cache gauge is ``vllm:kv_cache_usage_perc``, or ``vllm:gpu_cache_usage_perc`` from older
vLLM releases. Each alternative is its own selector joined with ``or``, the preferred one first.

``vllm:cache_config_info`` is not queried: its labels give the pool in blocks and tokens, but
bytes per token depend on the model, which Prometheus does not know, so
``kvCacheCapacityBytes`` is left to the engine's estimate.

Label values are never interpolated except the optional namespace filter, which goes through
:func:`escape_label_value` (and :func:`escape_regex` inside a regex matcher).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Collection

from gpu_rightsizer.models import durations

MIB_BYTES = 1_048_576
DEFAULT_RESOLUTION = "5m"

NAMESPACE = "namespace"
POD = "pod"
EXPORTED_NAMESPACE = "exported_namespace"
EXPORTED_POD = "exported_pod"
MODEL_NAME = "modelName"
MIG_PROFILE = "GPU_I_PROFILE"
_GPU_IDENTITY = ("UUID", "GPU_I_ID")

FB_USED = "DCGM_FI_DEV_FB_USED"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
PIPE_TENSOR_ACTIVE = "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
DRAM_ACTIVE = "DCGM_FI_PROF_DRAM_ACTIVE"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
KV_CACHE_USAGE_V0 = "vllm:gpu_cache_usage_perc"
REQUESTS_WAITING = "vllm:num_requests_waiting"
PREEMPTIONS_TOTAL = "vllm:num_preemptions_total"

# Query names that are not "<signal>_<statistic>".
FIRST_SEEN_STEP_SECONDS = 3600.0
SAMPLES = "samples"
COVERAGE = "coverage"
OBSERVED_SECONDS = "observed_seconds"
GPUS = "gpus"
PREEMPTIONS = "preemptions"


class AcrossPods(enum.Enum):
    """How the per-pod values of one query combine into a workload's value."""

    MAX = "max"  # the busiest pod: every statistic, coverage, observed history
    SUM = "sum"  # samples: all the data the workload has


class Statistic(enum.Enum):
    """One statistic of a signal over the window; the value is the profile's key."""

    P50 = "p50"
    P95 = "p95"
    P99 = "p99"
    MAX = "max"
    MEAN = "mean"


_QUANTILES = {Statistic.P50: "0.5", Statistic.P95: "0.95", Statistic.P99: "0.99"}


@dataclasses.dataclass(frozen=True)
class Source:
    """A metric a signal is read from, and the PromQL that turns its values into the unit."""

    metric: str
    scale: str = ""  # appended to the per-series expression, e.g. " * 1048576"


@dataclasses.dataclass(frozen=True)
class Signal:
    """A field of the usage profile and the metrics it comes from, preferred first."""

    field: str
    sources: tuple[Source, ...]
    fraction: bool = False  # a 0-1 ratio (clipped to 1)


MEMORY_USED_BYTES = Signal("memory_used_bytes", (Source(FB_USED, f" * {MIB_BYTES}"),))
GRAPHICS_ENGINE_ACTIVE = Signal(
    "graphics_engine_active",
    (Source(GR_ENGINE_ACTIVE), Source(GPU_UTIL, " / 100")),
    fraction=True,
)
TENSOR_ACTIVE = Signal("tensor_active", (Source(PIPE_TENSOR_ACTIVE),), fraction=True)
DRAM_ACTIVE_SIGNAL = Signal("dram_active", (Source(DRAM_ACTIVE),), fraction=True)
POWER_WATTS = Signal("power_watts", (Source(POWER_USAGE),))
KV_CACHE_USAGE_SIGNAL = Signal(
    "kv_cache_usage", (Source(KV_CACHE_USAGE), Source(KV_CACHE_USAGE_V0)), fraction=True
)
REQUESTS_WAITING_SIGNAL = Signal("requests_waiting", (Source(REQUESTS_WAITING),))

SIGNALS: tuple[Signal, ...] = (
    MEMORY_USED_BYTES,
    GRAPHICS_ENGINE_ACTIVE,
    TENSOR_ACTIVE,
    DRAM_ACTIVE_SIGNAL,
    POWER_WATTS,
    KV_CACHE_USAGE_SIGNAL,
    REQUESTS_WAITING_SIGNAL,
)


@dataclasses.dataclass(frozen=True)
class Query:
    """One PromQL query of a sweep; ``name`` keys its per-pod values."""

    name: str
    promql: str
    across_pods: AcrossPods = AcrossPods.MAX


def statistic_name(signal: Signal, statistic: Statistic) -> str:
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


def _selectors(namespaces: Collection[str] | None) -> tuple[str, str]:
    """Label matchers (inside braces) for series in the exported and in the direct layout."""
    exported = [f'{EXPORTED_POD}!=""']
    direct = [f'{EXPORTED_POD}=""', f'{POD}!=""']
    if namespaces is not None:
        regex = namespace_regex(namespaces)
        exported.append(f'{EXPORTED_NAMESPACE}=~"{regex}"')
        direct.append(f'{NAMESPACE}=~"{regex}"')
    return ",".join(exported), ",".join(direct)


def _per_pod(
    aggregation: str,
    per_series: Callable[[str], str],
    namespaces: Collection[str] | None,
    keep: tuple[str, ...] = (),
) -> str:
    """``aggregation by (namespace, pod, *keep)`` of ``per_series(matchers)``, both layouts."""
    exported_matchers, direct_matchers = _selectors(namespaces)
    extra = "".join(f", {label}" for label in keep)
    exported = (
        f"{aggregation} by ({EXPORTED_NAMESPACE}, {EXPORTED_POD}{extra}) "
        f"({per_series(exported_matchers)})"
    )
    renamed = (
        f'label_replace(label_replace({exported}, "{NAMESPACE}", "$1", '
        f'"{EXPORTED_NAMESPACE}", "(.*)"), "{POD}", "$1", "{EXPORTED_POD}", "(.*)")'
    )
    direct = f"{aggregation} by ({NAMESPACE}, {POD}{extra}) ({per_series(direct_matchers)})"
    return f"{aggregation} by ({NAMESPACE}, {POD}{extra}) ({renamed} or {direct})"


def _over_time(statistic: Statistic, selector: str) -> str:
    if statistic in _QUANTILES:
        return f"quantile_over_time({_QUANTILES[statistic]}, {selector})"
    function = "max_over_time" if statistic is Statistic.MAX else "avg_over_time"
    return f"{function}({selector})"


def _statistic(
    signal: Signal, statistic: Statistic, window: str, namespaces: Collection[str] | None
) -> Query:
    def per_series(matchers: str) -> str:
        return " or ".join(
            _over_time(statistic, f"{source.metric}{{{matchers}}}[{window}]") + source.scale
            for source in signal.sources
        )

    return Query(statistic_name(signal, statistic), _per_pod("max", per_series, namespaces))


def _number(value: float) -> str:
    return f"{value:.10g}"


# --- the sweep -------------------------------------------------------------------------------


def sweep(
    window: str,
    *,
    namespaces: Collection[str] | None = None,
    resolution: str = DEFAULT_RESOLUTION,
) -> tuple[Query, ...]:
    """Every query of one sweep over ``window`` (a PromQL duration such as ``7d``).

    ``namespaces`` restricts the series to those namespaces (None: all). ``resolution`` is the
    subquery step of ``coverage`` and ``observed_seconds`` (at most the window). The number of
    queries depends on nothing but the code. ValueError for a malformed or zero duration.
    """
    window_seconds = durations.parse(window).total_seconds()
    resolution_seconds = durations.parse(resolution).total_seconds()
    if window_seconds <= 0 or resolution_seconds <= 0:
        raise ValueError(f"window {window!r} and resolution {resolution!r} must be positive")
    if resolution_seconds > window_seconds:
        resolution, resolution_seconds = window, window_seconds
    steps = window_seconds / resolution_seconds
    # The first sample is looked for at a coarser step (an hour, or the window if shorter):
    # evaluating timestamp() at every 5-minute step of a week over a thousand workloads took
    # Prometheus 40 s, against 1 s for the hourly steps; history is judged in hours anyway.
    first_step_seconds = min(max(resolution_seconds, FIRST_SEEN_STEP_SECONDS), window_seconds)
    first_step = durations.format_seconds(first_step_seconds)
    # One step more than the window: a series older than the window shows a sample before the
    # window's start, so its observed history is the whole window, not a step less.
    reach = durations.format_seconds(window_seconds + first_step_seconds)

    out = [
        _statistic(signal, statistic, window, namespaces)
        for signal in SIGNALS
        for statistic in Statistic
    ]

    def raw_count(matchers: str) -> str:
        return f"count_over_time({FB_USED}{{{matchers}}}[{window}])"

    def stepped_count(matchers: str) -> str:
        return f"count_over_time({FB_USED}{{{matchers}}}[{window}:{resolution}])"

    def first_seen(matchers: str) -> str:
        return f"min_over_time(timestamp({FB_USED}{{{matchers}}})[{reach}:{first_step}])"

    def last_seen(matchers: str) -> str:
        return f"last_over_time({FB_USED}{{{matchers}}}[{window}])"

    def preempted(matchers: str) -> str:
        return f"increase({PREEMPTIONS_TOTAL}{{{matchers}}}[{window}])"

    gpus = _per_pod("group", last_seen, namespaces, (MODEL_NAME, MIG_PROFILE, *_GPU_IDENTITY))
    out += [
        Query(SAMPLES, _per_pod("max", raw_count, namespaces), AcrossPods.SUM),
        Query(
            COVERAGE,
            f"clamp_max({_per_pod('max', stepped_count, namespaces)} / {_number(steps)}, 1)",
        ),
        Query(OBSERVED_SECONDS, f"time() - {_per_pod('min', first_seen, namespaces)}"),
        Query(GPUS, f"count by ({NAMESPACE}, {POD}, {MODEL_NAME}, {MIG_PROFILE}) ({gpus})"),
        Query(PREEMPTIONS, _per_pod("max", preempted, namespaces)),
    ]
    return tuple(out)
