"""The simulated series, named, labelled and in the units dcgm-exporter and vLLM publish.

:class:`Simulator` turns a fleet into :class:`Series` (a metric family, a label set, one value
per timestamp) for any array of timestamps. Gauges are computed directly at each timestamp
(:mod:`.physics`); counters (energy in mJ, vLLM preemptions) integrate their rate over a fixed
60-second grid that starts at the simulator's ``epoch``, so they only ever grow and the energy
counter's increase over a window is the power's integral over it.

DCGM series carry the labels dcgm-exporter gives them (``gpu``, ``UUID``, ``device``,
``modelName``, ``Hostname``, the pod's ``namespace``/``pod``/``container``, and
``GPU_I_PROFILE``/``GPU_I_ID`` on MIG) plus the ``job``/``instance`` a scrape adds. With
:attr:`fleets.DcgmLabels.EXPORTED` they look as they do behind a ServiceMonitor without
``honorLabels``: the pod's labels become ``exported_*``, ``namespace``/``pod``/``container`` name
the exporter's own pod, and the host label is ``hostname``. A workload with
``framebufferMetrics: false`` gets no ``DCGM_FI_DEV_FB_*`` series (a MIG instance on a driver
that sends only its engine activity).

SGLang (``sglang:*``, labels ``model_name``, ``engine_type``, ``tp_rank``, ``pp_rank``) and
``trtllm-serve`` (``trtllm_*``) workloads get the same state under their engines' names.

vLLM series carry ``model_name`` and ``engine`` (``cache_config_info`` only ``engine``: it has no
``model_name``, and its other labels are the cache settings) plus the scrape's
``namespace``/``pod``/``job``/``instance``. The latency histograms
(``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``, vLLM's own bucket
bounds) are counters per bucket: the rate of observations times the share of them at or below
the bound (:func:`.physics.latency_share_below`), integrated like the other counters.

:func:`stitch` joins histories computed over consecutive spans of time, between which the layout
changed (a rollout that gave a workload new pods): one series per label set, NaN where a series
had no sample, which the writers leave out.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence

import numpy as np

from gpu_rightsizer.fleetsim import fleets, layouts, physics, signals
from gpu_rightsizer.models import gpus

FloatArray = signals.FloatArray
Labels = tuple[tuple[str, str], ...]

COUNTER_GRID_SECONDS = 60.0
# How far back the counters' epoch lies by default: GPUs and servers were "started" this long
# before the present (at a UTC midnight), so a history and a live endpoint started on the same
# day agree on every counter.
DEFAULT_EPOCH_DAYS = 30

DCGM_JOB = "dcgm-exporter"
DCGM_PORT = 9400
VLLM_JOB = "vllm"
VLLM_PORT = 8000
# Behind a ServiceMonitor (kube-prometheus-stack + the GPU Operator): the exporter's own pod.
EXPORTER_NAMESPACE = "gpu-operator"
EXPORTER_NAME = "nvidia-dcgm-exporter"


@dataclasses.dataclass(frozen=True)
class Family:
    """A metric family: its name, type, help text and the name its samples carry."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    decimals: int | None  # None: integer values
    sample_suffix: str = ""
    buckets: tuple[float, ...] = ()  # a histogram's finite upper bounds (then +Inf)

    @property
    def sample_name(self) -> str:
        return self.name + self.sample_suffix


FB_USED = Family("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", None)
FB_FREE = Family("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", None)
GR_ENGINE_ACTIVE = Family(
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", 6
)
PIPE_TENSOR_ACTIVE = Family(
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "gauge",
    "Ratio of cycles the tensor (HMMA) pipe is active.",
    6,
)
DRAM_ACTIVE = Family(
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "gauge",
    "Ratio of cycles the device memory interface is active sending or receiving data.",
    6,
)
GPU_UTIL = Family("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", None)
POWER_USAGE = Family("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", 3)
TOTAL_ENERGY = Family(
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "counter",
    "Total energy consumption since boot (in mJ).",
    None,
)
KV_CACHE_USAGE = Family(
    "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", 6
)
REQUESTS_RUNNING = Family(
    "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", None
)
REQUESTS_WAITING = Family(
    "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", None
)
PREEMPTIONS = Family(
    "vllm:num_preemptions",
    "counter",
    "Cumulative number of preemption from the engine.",
    None,
    sample_suffix="_total",
)
CACHE_CONFIG = Family(
    "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig", None
)


def _bounds(text: str) -> tuple[float, ...]:
    return tuple(float(bound) for bound in text.split())


# vLLM's bucket bounds for these histograms (vllm/v1/metrics/loggers.py).
TIME_TO_FIRST_TOKEN = Family(
    "vllm:time_to_first_token_seconds",
    "histogram",
    "Histogram of time to first token in seconds.",
    None,
    buckets=_bounds(
        "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 0.75 1 2.5 5 7.5 10 20 40 80 160 640"
        " 2560"
    ),
)
INTER_TOKEN_LATENCY = Family(
    "vllm:inter_token_latency_seconds",
    "histogram",
    "Histogram of inter-token latency in seconds.",
    None,
    buckets=_bounds("0.01 0.025 0.05 0.075 0.1 0.15 0.2 0.3 0.4 0.5 0.75 1 2.5 5 7.5 10 20 40 80"),
)
HISTOGRAM_SUM_DECIMALS = 6
VLLM_ENGINE = "0"  # vLLM's engine index label: one engine per server here

# SGLang's names (python/sglang/srt/metrics/collector.py; docs references/production_metrics.md);
# its histograms are given vLLM's bucket bounds here.
SGLANG_TOKEN_USAGE = Family("sglang:token_usage", "gauge", "The token usage", 6)
SGLANG_MAX_TOTAL_TOKENS = Family(
    "sglang:max_total_num_tokens", "gauge", "Maximum total number of tokens", None
)
SGLANG_RUNNING = Family("sglang:num_running_reqs", "gauge", "The number of running requests", None)
SGLANG_QUEUE = Family(
    "sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue", None
)
SGLANG_TIME_TO_FIRST_TOKEN = dataclasses.replace(
    TIME_TO_FIRST_TOKEN, name="sglang:time_to_first_token_seconds"
)
SGLANG_INTER_TOKEN_LATENCY = dataclasses.replace(
    INTER_TOKEN_LATENCY, name="sglang:inter_token_latency_seconds"
)
SGLANG_LABELS: Labels = (("engine_type", "unified"), ("tp_rank", "0"), ("pp_rank", "0"))
# trtllm-serve's names (shared reference platform-2026.md §2); no latency histograms here.
TRTLLM_KV_UTILIZATION = Family(
    "trtllm_kv_cache_utilization", "gauge", "KV cache utilization (0-1).", 6
)
TRTLLM_KV_MAX_BLOCKS = Family("trtllm_kv_cache_max_blocks", "gauge", "KV cache blocks.", None)
TRTLLM_KV_TOKENS_PER_BLOCK = Family(
    "trtllm_kv_cache_tokens_per_block", "gauge", "Tokens per KV cache block.", None
)
TRTLLM_RUNNING = Family("trtllm_num_requests_running", "gauge", "Requests running.", None)
TRTLLM_WAITING = Family("trtllm_num_requests_waiting", "gauge", "Requests waiting.", None)

DCGM_FAMILIES: tuple[Family, ...] = (
    FB_USED,
    FB_FREE,
    GR_ENGINE_ACTIVE,
    PIPE_TENSOR_ACTIVE,
    DRAM_ACTIVE,
    GPU_UTIL,
    POWER_USAGE,
    TOTAL_ENERGY,
)
VLLM_FAMILIES: tuple[Family, ...] = (
    KV_CACHE_USAGE,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
    PREEMPTIONS,
    CACHE_CONFIG,
    TIME_TO_FIRST_TOKEN,
    INTER_TOKEN_LATENCY,
)
SGLANG_FAMILIES: tuple[Family, ...] = (
    SGLANG_TOKEN_USAGE,
    SGLANG_MAX_TOTAL_TOKENS,
    SGLANG_RUNNING,
    SGLANG_QUEUE,
    SGLANG_TIME_TO_FIRST_TOKEN,
    SGLANG_INTER_TOKEN_LATENCY,
)
TRTLLM_FAMILIES: tuple[Family, ...] = (
    TRTLLM_KV_UTILIZATION,
    TRTLLM_KV_MAX_BLOCKS,
    TRTLLM_KV_TOKENS_PER_BLOCK,
    TRTLLM_RUNNING,
    TRTLLM_WAITING,
)
ENGINE_FAMILIES: tuple[Family, ...] = VLLM_FAMILIES + SGLANG_FAMILIES + TRTLLM_FAMILIES
FAMILIES: tuple[Family, ...] = DCGM_FAMILIES + ENGINE_FAMILIES


@dataclasses.dataclass(frozen=True)
class Series:
    """One time series: a family, its labels, and a value per timestamp (NaN: no sample).

    ``suffix`` is a histogram series' ``_bucket``, ``_sum`` or ``_count``.
    """

    family: Family
    labels: Labels
    values: FloatArray
    suffix: str = ""

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def sample_name(self) -> str:
        return self.family.sample_name + self.suffix

    @property
    def decimals(self) -> int | None:
        """Decimals of its values as text; None: integers."""
        return HISTOGRAM_SUM_DECIMALS if self.suffix == "_sum" else self.family.decimals


def bound_text(bound: float) -> str:
    """A bucket bound as Prometheus' client library writes the ``le`` label."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def stitch(
    parts: Sequence[tuple[FloatArray, Mapping[str, Sequence[Series]]]],
) -> tuple[FloatArray, dict[str, list[Series]]]:
    """Join histories of consecutive, ascending spans of time into one.

    Each part is ``(times, series by family)`` as :meth:`Simulator.series` returns them. Series
    with the same family, name and labels are joined; where a series has no part, its values
    are NaN (no sample).
    """
    times = np.concatenate([np.asarray(t, dtype=np.float64) for t, _ in parts])
    if times.size and np.any(np.diff(times) <= 0):
        raise ValueError("the parts' timestamps must ascend and not overlap")
    offsets = np.cumsum([0] + [len(t) for t, _ in parts])
    joined: dict[str, dict[tuple[str, Labels], Series]] = {f.name: {} for f in FAMILIES}
    for (part_times, by_family), start in zip(parts, offsets[:-1], strict=True):
        for name, members in by_family.items():
            into = joined.setdefault(name, {})
            for member in members:
                key = (member.suffix, member.labels)
                if key not in into:
                    into[key] = dataclasses.replace(member, values=np.full(times.shape, np.nan))
                into[key].values[start : start + len(part_times)] = member.values
    return times, {name: list(members.values()) for name, members in joined.items()}


def default_epoch(now: float) -> float:
    """UTC midnight :data:`DEFAULT_EPOCH_DAYS` days before ``now``."""
    day = math.floor(now / signals.SECONDS_PER_DAY) * signals.SECONDS_PER_DAY
    return day - DEFAULT_EPOCH_DAYS * signals.SECONDS_PER_DAY


def describe_epoch(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).isoformat()


@dataclasses.dataclass
class _Integral:
    """How far a workload's counters have been integrated: up to grid point ``k``."""

    k: int
    totals: dict[str, float]


class Simulator:
    """Every series of a fleet, for any timestamps from ``epoch`` on.

    The layout can change while a live endpoint serves it: :meth:`set_pods` replaces a
    workload's pods (names, and optionally nodes), :meth:`set_workload` adds or replaces a
    workload (say, after a right-sizing), :meth:`remove_workload` drops one.
    """

    def __init__(self, fleet: fleets.Fleet, catalog: gpus.Catalog, *, epoch: float) -> None:
        self.fleet = fleet
        self.catalog = catalog
        self.epoch = float(epoch)
        self.dcgm_labels = fleet.dcgm_labels
        self._workloads: dict[tuple[str, str], fleets.Workload] = {}
        self._behaviours: dict[tuple[str, str], physics.Behaviour] = {}
        self._integrals: dict[tuple[str, str], _Integral] = {}
        for workload in fleet.workloads:
            self.set_workload(workload)

    # --- the layout -------------------------------------------------------------------------

    @property
    def placements(self) -> tuple[layouts.Placement, ...]:
        return tuple(b.placement for b in self._behaviours.values())

    def placement(self, namespace: str, name: str) -> layouts.Placement:
        return self._behaviours[(namespace, name)].placement

    def behaviour(self, namespace: str, name: str) -> physics.Behaviour:
        return self._behaviours[(namespace, name)]

    def set_workload(
        self,
        workload: fleets.Workload,
        pods: Sequence[str] | None = None,
        nodes: Sequence[str] | None = None,
    ) -> layouts.Placement:
        """Add or replace a workload; raises FleetError if it does not fit its GPU."""
        placement = layouts.place(self.fleet.seed, self.catalog, workload, pods, nodes)
        behaviour = physics.Behaviour(self.fleet.seed, placement)
        self._workloads[workload.key] = workload
        self._behaviours[workload.key] = behaviour
        self._integrals.pop(workload.key, None)
        return placement

    def set_pods(
        self,
        namespace: str,
        name: str,
        pods: Sequence[str],
        nodes: Sequence[str] | None = None,
    ) -> layouts.Placement:
        """Give a workload's series these pod names (one replica per pod), e.g. real pods'."""
        workload = self._workloads[(namespace, name)]
        return self.set_workload(workload, pods, nodes)

    def remove_workload(self, namespace: str, name: str) -> None:
        self._workloads.pop((namespace, name), None)
        self._behaviours.pop((namespace, name), None)
        self._integrals.pop((namespace, name), None)

    # --- the series -------------------------------------------------------------------------

    def series(self, times: FloatArray) -> dict[str, list[Series]]:
        """All series at ``times`` (ascending, not before the epoch), by family name."""
        times = np.asarray(times, dtype=np.float64)
        if times.size and float(times[0]) < self.epoch:
            raise ValueError(
                f"timestamps start before the simulator's epoch ({describe_epoch(self.epoch)})"
            )
        out: dict[str, list[Series]] = {family.name: [] for family in FAMILIES}
        for key, behaviour in self._behaviours.items():
            state = behaviour.state(times)
            counters = self._counters(key, behaviour, times)
            self._dcgm_series(behaviour, state, counters, out)
            self._vllm_series(behaviour, state, counters, out)
        return out

    def _counters(
        self, key: tuple[str, str], behaviour: physics.Behaviour, times: FloatArray
    ) -> dict[str, FloatArray]:
        """Counter values at ``times``: ``energy:<uuid>`` in mJ, ``preemptions:<replica>``."""
        if times.size == 0:
            return {}
        step = COUNTER_GRID_SECONDS
        done = self._integrals.get(key)
        first = math.floor((float(times[0]) - self.epoch) / step)
        if done is None or first < done.k:
            done = _Integral(k=0, totals={})
        last = math.floor((float(times[-1]) - self.epoch) / step)
        grid = self.epoch + step * np.arange(done.k, last + 1, dtype=np.float64)
        rates = _rates(behaviour.state(grid))
        index = np.floor((times - self.epoch) / step).astype(np.int64) - done.k
        partial = times - grid[index]
        values: dict[str, FloatArray] = {}
        totals: dict[str, float] = {}
        for name, rate in rates.items():
            at_grid = done.totals.get(name, 0.0) + np.concatenate(
                ([0.0], np.cumsum(rate[:-1] * step))
            )
            values[name] = at_grid[index] + rate[index] * partial
            totals[name] = float(at_grid[-1])
        self._integrals[key] = _Integral(k=last, totals=totals)
        # Energy counts from the driver's load, long before the epoch: start at a few days of
        # idle energy. mJ = J * 1000.
        for slot in {s.uuid: s for r in behaviour.placement.replicas for s in r.gpus}.values():
            name = f"energy:{slot.uuid}"
            days = 1.0 + 20.0 * (signals.key(self.fleet.seed, "boot", slot.uuid) % 1000) / 1000.0
            before = behaviour.placement.gpu.idle_watts * days * signals.SECONDS_PER_DAY
            values[name] = np.floor((before + values[name]) * 1000.0)
        return values

    def _dcgm_series(
        self,
        behaviour: physics.Behaviour,
        state: physics.State,
        counters: Mapping[str, FloatArray],
        out: dict[str, list[Series]],
    ) -> None:
        placement = behaviour.placement
        capacity_mib = placement.slot_memory_bytes / physics.MIB
        for slot_state in state.slots:
            labels = self.dcgm_labels_for(placement, slot_state.replica, slot_state.slot)
            used_mib = np.round(slot_state.memory_used_bytes / physics.MIB)
            uuid = slot_state.slot.uuid
            values = {
                FB_USED.name: used_mib,
                FB_FREE.name: np.maximum(capacity_mib - used_mib, 0.0),
                GR_ENGINE_ACTIVE.name: slot_state.graphics_active,
                PIPE_TENSOR_ACTIVE.name: slot_state.tensor_active,
                DRAM_ACTIVE.name: slot_state.dram_active,
                POWER_USAGE.name: state.power_watts[uuid],
                TOTAL_ENERGY.name: counters[f"energy:{uuid}"],
            }
            if slot_state.slot.mig_profile is None:  # DCGM has no GPU_UTIL for MIG instances
                values[GPU_UTIL.name] = slot_state.gpu_util_percent
            if not placement.workload.framebuffer_metrics:
                del values[FB_USED.name], values[FB_FREE.name]
            for family in DCGM_FAMILIES:
                if family.name in values:
                    out[family.name].append(Series(family, labels, values[family.name]))

    def _vllm_series(
        self,
        behaviour: physics.Behaviour,
        state: physics.State,
        counters: Mapping[str, FloatArray],
        out: dict[str, list[Series]],
    ) -> None:
        placement = behaviour.placement
        workload = placement.workload
        for vllm in state.vllm:
            replica = vllm.replica
            target: Labels = (
                ("namespace", workload.namespace),
                ("pod", replica.pod),
                ("job", VLLM_JOB),
                ("instance", f"{replica.pod_ip}:{VLLM_PORT}"),
            )
            if workload.engine is not fleets.Engine.VLLM:
                self._other_engine_series(behaviour, vllm, target, counters, out)
                continue
            engine = ("engine", VLLM_ENGINE)
            labels: Labels = (("model_name", workload.served_model_name), engine, *target)
            for family, values in (
                (KV_CACHE_USAGE, vllm.kv_cache_usage),
                (REQUESTS_RUNNING, vllm.requests_running),
                (REQUESTS_WAITING, vllm.requests_waiting),
                (PREEMPTIONS, np.floor(counters[f"preemptions:{replica.index}"])),
            ):
                out[family.name].append(Series(family, labels, values))
            # The labels vLLM's CacheConfig exports (a selection), all strings, and no model.
            info: Labels = (
                ("block_size", str(physics.VLLM_BLOCK_SIZE)),
                ("cache_dtype", "auto"),
                ("enable_prefix_caching", "True"),
                engine,
                ("gpu_memory_utilization", f"{workload.gpu_memory_utilization:g}"),
                ("num_cpu_blocks", "0"),
                ("num_gpu_blocks", str(behaviour.memory.num_gpu_blocks)),
                ("swap_space", "4"),
                *target,
            )
            out[CACHE_CONFIG.name].append(
                Series(CACHE_CONFIG, info, np.ones_like(vllm.kv_cache_usage))
            )
            _histograms(_HISTOGRAMS, replica.index, labels, counters, out)

    def _other_engine_series(
        self,
        behaviour: physics.Behaviour,
        state: physics.VllmState,
        target: Labels,
        counters: Mapping[str, FloatArray],
        out: dict[str, list[Series]],
    ) -> None:
        """SGLang's or trtllm-serve's series for one replica: the same state, their names."""
        workload = behaviour.placement.workload
        blocks = float(behaviour.memory.num_gpu_blocks)
        constant = np.ones_like(state.kv_cache_usage)
        gauges: tuple[tuple[Family, FloatArray], ...]
        if workload.engine is fleets.Engine.SGLANG:
            labels: Labels = (("model_name", workload.served_model_name), *SGLANG_LABELS, *target)
            gauges = (
                (SGLANG_TOKEN_USAGE, state.kv_cache_usage),
                (SGLANG_MAX_TOTAL_TOKENS, constant * blocks * physics.VLLM_BLOCK_SIZE),
                (SGLANG_RUNNING, state.requests_running),
                (SGLANG_QUEUE, state.requests_waiting),
            )
            _histograms(_SGLANG_HISTOGRAMS, state.replica.index, labels, counters, out)
        else:
            labels = (("model_name", workload.served_model_name), *target)
            gauges = (
                (TRTLLM_KV_UTILIZATION, state.kv_cache_usage),
                (TRTLLM_KV_MAX_BLOCKS, constant * blocks),
                (TRTLLM_KV_TOKENS_PER_BLOCK, constant * physics.VLLM_BLOCK_SIZE),
                (TRTLLM_RUNNING, state.requests_running),
                (TRTLLM_WAITING, state.requests_waiting),
            )
        for family, values in gauges:
            out[family.name].append(Series(family, labels, values))

    def dcgm_labels_for(
        self, placement: layouts.Placement, replica: layouts.Replica, slot: layouts.GpuSlot
    ) -> Labels:
        """The label set of a GPU slot's DCGM series."""
        workload = placement.workload
        gpu_labels: list[tuple[str, str]] = [
            ("gpu", str(slot.index)),
            ("UUID", slot.uuid),
            ("device", f"nvidia{slot.index}"),
            ("modelName", layouts.dcgm_model_name(placement.gpu)),
        ]
        if slot.mig_profile is not None and slot.instance_id is not None:
            gpu_labels += [("GPU_I_PROFILE", slot.mig_profile), ("GPU_I_ID", str(slot.instance_id))]
        instance = ("instance", f"{slot.node_ip}:{DCGM_PORT}")
        if self.dcgm_labels is fleets.DcgmLabels.EXPORTED:
            suffix = layouts.safe_name(self.fleet.seed, 5, "dcgm", slot.hostname)
            exporter_pod = f"{EXPORTER_NAME}-{suffix}"
            return (
                *gpu_labels,
                ("hostname", slot.hostname),
                ("exported_namespace", workload.namespace),
                ("exported_pod", replica.pod),
                ("exported_container", workload.container),
                ("namespace", EXPORTER_NAMESPACE),
                ("pod", exporter_pod),
                ("container", EXPORTER_NAME),
                ("service", EXPORTER_NAME),
                ("endpoint", "gpu-metrics"),
                ("job", EXPORTER_NAME),
                instance,
            )
        return (
            *gpu_labels,
            ("Hostname", slot.hostname),
            ("namespace", workload.namespace),
            ("pod", replica.pod),
            ("container", workload.container),
            ("job", DCGM_JOB),
            instance,
        )


# Each histogram and the prefix of its counters' names.
_HISTOGRAMS = ((TIME_TO_FIRST_TOKEN, "ttft"), (INTER_TOKEN_LATENCY, "itl"))
_SGLANG_HISTOGRAMS = ((SGLANG_TIME_TO_FIRST_TOKEN, "ttft"), (SGLANG_INTER_TOKEN_LATENCY, "itl"))


def _histograms(
    histograms: Sequence[tuple[Family, str]],
    index: int,
    labels: Labels,
    counters: Mapping[str, FloatArray],
    out: dict[str, list[Series]],
) -> None:
    """One replica's latency histograms from their per-bucket counters."""
    for family, prefix in histograms:
        name = f"{prefix}:{index}"
        bounds = (*family.buckets, math.inf)
        # Whole observations between consecutive bounds, then summed up to each bound:
        # every bucket's increase over any interval is then at least the one below's.
        between = np.diff(
            np.vstack([counters[f"{name}:{i}"] for i in range(len(bounds))]),
            axis=0,
            prepend=0.0,
        )
        cumulative = np.cumsum(np.floor(between), axis=0)
        for bound, values in zip(bounds, cumulative, strict=True):
            bucket = (*labels, ("le", bound_text(bound)))
            out[family.name].append(Series(family, bucket, values, "_bucket"))
        count = cumulative[-1]
        total = counters[f"{name}:sum"]
        out[family.name].append(Series(family, labels, total, "_sum"))
        out[family.name].append(Series(family, labels, count, "_count"))


def _rates(state: physics.State) -> dict[str, FloatArray]:
    """Counter rates per second: energy in joules (= watts), preemptions, and per histogram
    ``<prefix>:<replica>:<i>`` the observations at or below bound i (the last is +Inf: all
    of them) and ``<prefix>:<replica>:sum`` the seconds they add up to."""
    rates: dict[str, FloatArray] = {
        f"energy:{uuid}": power for uuid, power in state.power_watts.items()
    }
    for vllm in state.vllm:
        index = vllm.replica.index
        rates[f"preemptions:{index}"] = vllm.preemptions_per_second
        observed = (
            ("ttft", vllm.time_to_first_token, vllm.requests_per_second, physics.FIRST_TOKEN_SHAPE),
            ("itl", vllm.time_per_output_token, vllm.tokens_per_second, physics.INTER_TOKEN_SHAPE),
        )
        for (family, prefix), (_, median, per_second, shape) in zip(
            _HISTOGRAMS, observed, strict=True
        ):
            for i, bound in enumerate((*family.buckets, math.inf)):
                share = physics.latency_share_below(bound, median, shape)
                rates[f"{prefix}:{index}:{i}"] = per_second * share
            rates[f"{prefix}:{index}:sum"] = per_second * physics.latency_mean(median, shape)
    return rates
