"""How load becomes memory, engine activity, power and vLLM state for one laid-out workload.

The rules, per GPU (or MIG instance) a replica holds:

- memory: weights at the workload's precision (split over the replica's GPUs) + a fixed runtime
  overhead + load-dependent KV cache / activations, never above the slot's framebuffer. Training
  holds weights, gradients and Adam state (16 bytes a parameter) plus activations. vLLM and
  SGLang instead claim ``gpu_memory_utilization`` of the framebuffer at start, whatever the
  load (TensorRT-LLM that share of what the weights and runtime leave); the KV-cache usage shows
  what they really need;
- activity: the graphics engine is busy in proportion to load; tensor cores and DRAM follow it
  in ratios typical of inference (memory-bound decode) or training (compute-bound);
- power: the GPU's idle power plus its dynamic range (TDP - idle) times a weighted activity;
  under MIG the physical GPU's power is the sum over its instances (idle instances add nothing);
- energy: the integral of that power (see :mod:`.series` for the counters);
- vLLM latency (platform-2026.md §1: decode is memory-bandwidth bound, prefill compute bound):
  a decode step reads this GPU's share of the weights and of the KV cache in use, so the time
  per output token is those bytes over the slot's bandwidth (the GPU's, or a MIG instance's
  share by memory) at :data:`DECODE_BANDWIDTH_EFFICIENCY`, plus a fixed step overhead; the
  time to first token is a prompt of :data:`PROMPT_TOKENS` (2 x parameters FLOPs a token, split
  over the tensor-parallel GPUs) at :data:`PREFILL_MFU` of the slot's dense BF16 TFLOPS,
  slowed by the running batch it shares steps with and by the requests queued ahead of it.
  Precision speed-ups are ignored. Individual requests spread around those medians
  log-logistically (:func:`latency_share_below`), which the histograms' buckets count.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gpu_rightsizer.fleetsim import fleets, layouts, signals
from gpu_rightsizer.models import precisions

FloatArray = signals.FloatArray
GIB = 2**30
MIB = 2**20

# CUDA context, allocator pools, cuBLAS workspaces, CUDA graphs: gpu-facts.md §3.1 gives 1-3 GiB
# as the planning budget per serving instance.
RUNTIME_OVERHEAD_BYTES = 1.5 * GIB
# Mixed-precision training with Adam: 2 (BF16 weights) + 2 (gradients) + 12 (FP32 master
# weights, first and second moments) bytes per parameter.
TRAINING_BYTES_PER_PARAMETER = 16.0
# vLLM's default KV-cache block size (tokens per block).
VLLM_BLOCK_SIZE = 16
# Never fill a slot completely: allocators keep some slack.
MAX_FILL = 0.97

# vLLM latency model (see the module docstring): a typical chat request, and the efficiencies
# a serving engine reaches. Planning figures, not measurements.
PROMPT_TOKENS = 1024
OUTPUT_TOKENS = 256
DECODE_BANDWIDTH_EFFICIENCY = 0.7
DECODE_STEP_OVERHEAD_SECONDS = 0.002
PREFILL_MFU = 0.5
# Log-logistic shapes of the per-request spread: p99 / p50 = 99 ** (1 / shape), so about 1.5
# for inter-token latency and 3 for the time to first token (prompts differ in length).
INTER_TOKEN_SHAPE = 12.0
FIRST_TOKEN_SHAPE = 4.0


def kv_bytes_per_token(workload: fleets.Workload) -> int:
    """KV-cache bytes per token over all layers, BF16 cache.

    Without a declared figure it is estimated from the parameter count with a power law through
    Llama-3.1-8B (128 KiB) and -70B (320 KiB) (gpu-facts.md §3.3).
    """
    if workload.kv_cache_bytes_per_token is not None:
        return workload.kv_cache_bytes_per_token
    billions = workload.parameters / 1e9
    return round(54_700.0 * math.pow(billions, 0.42) / 1024.0) * 1024


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """The fixed figures of one workload's memory, per GPU slot."""

    capacity_bytes: int
    weights_bytes: float  # this slot's share of the weights
    static_bytes: float  # used whatever the load
    dynamic_bytes: float  # added at full load (non-vLLM)
    num_gpu_blocks: int = 0  # vLLM: KV blocks per GPU


def plan_memory(placement: layouts.Placement) -> MemoryPlan:
    """Work out the memory figures, or raise FleetError if the model does not fit the slot."""
    workload = placement.workload
    capacity = placement.slot_memory_bytes
    where = f"workload {workload.namespace}/{workload.name}"
    slot_name = placement.gpu.id + (f" {placement.mig.name}" if placement.mig else "")
    tp = workload.gpus_per_replica
    training = workload.traffic.shape is fleets.TrafficShape.TRAINING
    per_parameter = (
        TRAINING_BYTES_PER_PARAMETER
        if training
        else precisions.BYTES_PER_PARAMETER[workload.precision]
    )
    weights = workload.parameters * per_parameter / tp
    static = weights + RUNTIME_OVERHEAD_BYTES
    if workload.engine.preallocates:
        fraction = workload.gpu_memory_utilization
        if workload.engine is fleets.Engine.TRTLLM:
            # TensorRT-LLM claims a share of what the weights and runtime leave.
            budget = static + fraction * max(capacity - static, 0.0)
        else:
            budget = fraction * capacity
        kv_budget = budget - static
        if kv_budget < GIB:
            raise fleets.FleetError(
                f"{where}: {weights / GIB:.1f} GiB of weights per GPU leave no KV cache in "
                f"{workload.gpu_memory_utilization:.0%} of {slot_name} ({capacity / GIB:.1f} GiB)"
            )
        block_bytes = VLLM_BLOCK_SIZE * kv_bytes_per_token(workload) / tp
        return MemoryPlan(
            capacity_bytes=capacity,
            weights_bytes=weights,
            static_bytes=budget,
            dynamic_bytes=0.0,
            num_gpu_blocks=int(kv_budget // block_bytes),
        )
    room = MAX_FILL * capacity - static
    if room < 0:
        raise fleets.FleetError(
            f"{where}: needs {static / GIB:.1f} GiB per GPU but {slot_name} has "
            f"{capacity / GIB:.1f} GiB usable"
        )
    if workload.activation_memory_gib is not None:
        dynamic = workload.activation_memory_gib * GIB
    elif training:
        dynamic = 0.25 * capacity
    else:
        dynamic = max(GIB, 0.2 * weights)
    return MemoryPlan(
        capacity_bytes=capacity,
        weights_bytes=weights,
        static_bytes=static,
        dynamic_bytes=min(dynamic, room),
    )


@dataclasses.dataclass(frozen=True)
class SlotState:
    """One GPU slot's gauges at each timestamp."""

    replica: layouts.Replica
    slot: layouts.GpuSlot
    memory_used_bytes: FloatArray
    graphics_active: FloatArray  # 0-1
    tensor_active: FloatArray  # 0-1
    dram_active: FloatArray  # 0-1
    gpu_util_percent: FloatArray  # whole GPUs only; 0-100, integers


@dataclasses.dataclass(frozen=True)
class VllmState:
    """One vLLM server's (replica's) gauges at each timestamp."""

    replica: layouts.Replica
    kv_cache_usage: FloatArray  # 0-1
    requests_running: FloatArray
    requests_waiting: FloatArray
    preemptions_per_second: FloatArray
    time_per_output_token: FloatArray  # seconds, median of the requests at that time
    time_to_first_token: FloatArray  # seconds, median
    tokens_per_second: FloatArray  # output tokens (inter-token latency observations)
    requests_per_second: FloatArray  # requests served (time-to-first-token observations)


def latency_share_below(bound: float, median: FloatArray, shape: float) -> FloatArray:
    """Share of observations at or below ``bound`` when they spread log-logistically around
    ``median`` (the CDF ``1 / (1 + (bound / median) ** -shape)``)."""
    if math.isinf(bound):
        return np.ones_like(median)
    ratio = np.maximum(median, 1e-12) / bound
    return 1.0 / (1.0 + ratio**shape)


def latency_mean(median: FloatArray, shape: float) -> FloatArray:
    """Mean of that spread: ``median x (pi / shape) / sin(pi / shape)`` (shape > 1)."""
    angle = math.pi / shape
    return median * (angle / math.sin(angle))


@dataclasses.dataclass(frozen=True)
class State:
    """Everything about one workload at an array of timestamps."""

    slots: tuple[SlotState, ...]
    power_watts: dict[str, FloatArray]  # by physical GPU UUID
    vllm: tuple[VllmState, ...]


class Behaviour:
    """One placement's physics, evaluated for any array of timestamps."""

    def __init__(self, seed: int, placement: layouts.Placement) -> None:
        self.seed = seed
        self.placement = placement
        self.memory = plan_memory(placement)
        workload = placement.workload
        self._workload_key = signals.key(seed, "workload", *workload.key)
        self._training = workload.traffic.shape is fleets.TrafficShape.TRAINING
        self._vllm = workload.engine.preallocates

    def _replica_key(self, replica: layouts.Replica) -> int:
        # By index, not pod name: a renamed pod carries on its predecessor's signal.
        return signals.key(self.seed, "replica", *self.placement.workload.key, replica.index)

    def _slot_key(self, replica: layouts.Replica, position: int) -> int:
        return signals.key(self.seed, "slot", *self.placement.workload.key, replica.index, position)

    def state(self, times: FloatArray) -> State:
        placement = self.placement
        workload = placement.workload
        gpu = placement.gpu
        plan = self.memory
        slots: list[SlotState] = []
        vllm: list[VllmState] = []
        utilisation: dict[str, FloatArray] = {}
        for replica in placement.replicas:
            load = signals.load(
                workload.traffic, self._workload_key, self._replica_key(replica), times
            )
            for position, slot in enumerate(replica.gpus):
                slot_key = self._slot_key(replica, position)
                jitter = signals.value_noise(slot_key, times, 300.0)
                slot_load = np.clip(load * (0.97 + 0.06 * jitter), 0.0, 1.0)
                graphics = np.clip(0.01 + 0.97 * slot_load, 0.0, 1.0)
                if self._training:
                    tensor = graphics * (0.75 + 0.1 * jitter)
                    dram = graphics * (0.45 + 0.1 * jitter)
                else:
                    tensor = graphics * (0.5 + 0.1 * jitter)
                    dram = graphics * (0.65 + 0.1 * jitter)
                if self._vllm:
                    offset = float(signals.key(slot_key, "context") % 64) * MIB
                    used = np.full(times.shape, plan.static_bytes + offset)
                elif self._training:
                    used = plan.static_bytes + plan.dynamic_bytes * (0.9 + 0.1 * jitter)
                else:
                    used = plan.static_bytes + plan.dynamic_bytes * slot_load
                used = np.minimum(np.floor(used / MIB) * MIB, plan.capacity_bytes)
                util: FloatArray = np.rint(np.clip(100.0 * (1.2 * graphics + 0.02), 0.0, 100.0))
                slots.append(
                    SlotState(
                        replica=replica,
                        slot=slot,
                        memory_used_bytes=used,
                        graphics_active=graphics,
                        tensor_active=tensor,
                        dram_active=dram,
                        gpu_util_percent=util,
                    )
                )
                weighted = slot.compute_fraction * (0.35 * graphics + 0.4 * tensor + 0.25 * dram)
                previous = utilisation.get(slot.uuid)
                utilisation[slot.uuid] = weighted if previous is None else previous + weighted
            if self._vllm:
                vllm.append(self._vllm_state(replica, load, times))
        dynamic_range = gpu.tdp_watts - gpu.idle_watts
        power = {
            uuid: np.clip(
                gpu.idle_watts
                + dynamic_range
                * np.clip(used_share, 0.0, 1.0)
                * (0.98 + 0.04 * signals.value_noise(signals.key(uuid), times, 60.0)),
                gpu.idle_watts,
                gpu.tdp_watts,
            )
            for uuid, used_share in utilisation.items()
        }
        return State(slots=tuple(slots), power_watts=power, vllm=tuple(vllm))

    def _vllm_state(
        self, replica: layouts.Replica, load: FloatArray, times: FloatArray
    ) -> VllmState:
        workload = self.placement.workload
        noise = signals.value_noise(self._replica_key(replica) ^ 0x77, times, 180.0)
        demand = workload.kv_cache_usage_at_peak * load * (0.9 + 0.2 * noise)
        kv = np.clip(demand, 0.0, 1.0)
        over = np.maximum(demand - 1.0, 0.0)
        concurrency = float(workload.max_concurrent_requests)
        running = np.round(concurrency * load / np.maximum(demand, 1.0))
        waiting = np.round(concurrency * (2.0 * np.maximum(load - 0.9, 0.0) + over * load))
        preemptions = 0.05 * np.clip((demand - 0.97) / 0.03, 0.0, None)
        tpot, ttft = self._latency(replica, kv, running, waiting)
        return VllmState(
            replica=replica,
            kv_cache_usage=kv,
            requests_running=running,
            requests_waiting=waiting,
            preemptions_per_second=preemptions,
            time_per_output_token=tpot,
            time_to_first_token=ttft,
            tokens_per_second=running / tpot,
            requests_per_second=running / (ttft + OUTPUT_TOKENS * tpot),
        )

    def _latency(
        self,
        replica: layouts.Replica,
        kv_usage: FloatArray,
        running: FloatArray,
        waiting: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """Median time per output token and time to first token (seconds) at each instant."""
        placement = self.placement
        workload = placement.workload
        gpu = placement.gpu
        tp = workload.gpus_per_replica
        memory_share = placement.mig.memory_gib / gpu.memory_gib if placement.mig else 1.0
        compute_share = replica.gpus[0].compute_fraction
        bandwidth = gpu.memory_bandwidth_gb_per_s * 1e9 * memory_share
        pool_bytes = self.memory.num_gpu_blocks * VLLM_BLOCK_SIZE * kv_bytes_per_token(workload)
        read_bytes = self.memory.weights_bytes + kv_usage * pool_bytes / tp
        tpot = read_bytes / (bandwidth * DECODE_BANDWIDTH_EFFICIENCY) + DECODE_STEP_OVERHEAD_SECONDS
        flops = 2.0 * workload.parameters * PROMPT_TOKENS / tp
        prefill = flops / (gpu.bf16_dense_tflops * 1e12 * compute_share * PREFILL_MFU)
        share_of_batch = running / float(workload.max_concurrent_requests)
        ttft = prefill * (1.0 + share_of_batch) + waiting * prefill
        return tpot, ttft
