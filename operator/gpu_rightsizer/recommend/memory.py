"""Memory model: how many bytes a workload needs per GPU at a given precision and GPU count.

Need = weights at the candidate precision + the rest (KV cache, activations) + runtime overhead
per GPU, times the policy's headroom. Formulas and figures: shared reference gpu-facts.md §3.

vLLM, SGLang and TensorRT-LLM pre-allocate most of every GPU whatever the load
(:mod:`gpu_rightsizer.models.engines`), so DCGM's FB_USED says nothing about their need; for
them the KV-cache usage tells the real need instead.
"""

from __future__ import annotations

import dataclasses

from gpu_rightsizer.models import crd, engines, gpus, precisions, profiles

GIB = float(2**30)

# Per GPU: CUDA context (~0.3-0.4 GiB with lazy loading, pytorch#107667), NCCL and cuBLAS
# workspaces, CUDA graphs; vLLM reported 2.53 GiB non-torch memory at TP8 (vllm#13074) and the
# reference's planning budget is 1-3 GiB per instance (gpu-facts.md §3.1). We plan 1.5 GiB.
RUNTIME_OVERHEAD_BYTES = 1.5 * GIB

# KV-cache usage at or above this (or any preemption) means the pool is full: the real need is
# unknown but at least the whole pool.
KV_SATURATED_FRACTION = 0.98


def weights_bytes(
    parameters: float, embedding_parameters: float | None, precision: precisions.Precision
) -> float:
    """Bytes of weights; embeddings and LM head stay in BF16 in quantized checkpoints."""
    embed = embedding_parameters or 0.0
    per_param = precisions.BYTES_PER_PARAMETER[precision]
    return (parameters - embed) * per_param + embed * max(per_param, 2.0)


@dataclasses.dataclass(frozen=True)
class MemoryDemand:
    """A workload's memory need, independent of the candidate it is compared with."""

    weights_total_bytes: dict[precisions.Precision, float]
    """Weights of one replica (all its GPUs) per precision option; 0 where unknown."""
    other_total_bytes: float
    """KV cache, activations and anything else of one replica, whatever the weights' precision."""
    overhead_total_bytes: float
    """Runtime memory of one replica as it runs now; never assumed to shrink with fewer GPUs."""
    pool_fraction: float
    """The serving engine's memory claim (vLLM's gpu_memory_utilization, SGLang's
    mem_fraction_static: of the GPU; TensorRT-LLM's free fraction: of what the weights and
    runtime leave); 1 for a workload that does not pre-allocate."""
    saturated: bool
    """The KV cache ran full: the real need is at least what it has now."""
    estimated: bool
    """The split between weights and the rest had to be guessed (lower confidence)."""
    explanation: str
    known: bool = True
    """False when no memory series exists: no allocation with less memory may be considered."""
    engine: engines.Engine | None = None
    """The pre-allocating engine, where the workload runs one."""
    kv_bytes_per_token: float | None = None
    """KV-cache bytes per token of one replica (all its GPUs), where known."""
    problem: str | None = None
    """Why the input is impossible or contradictory (then nothing is recommended)."""
    notes: tuple[str, ...] = ()
    """Things the reasons must say (e.g. unexplained memory counted as need)."""
    non_kv_total_bytes: float = 0.0
    """Part of ``other_total_bytes`` that is not KV cache (vLLM memory nothing else explains)."""

    @property
    def preallocates(self) -> bool:
        """Whether the workload runs a pre-allocating engine (vLLM, SGLang, TensorRT-LLM)."""
        return self.engine is not None

    @property
    def engine_name(self) -> str:
        return self.engine.name if self.engine is not None else "the engine"

    def need_per_gpu_bytes(self, precision: precisions.Precision, gpus: int) -> float:
        """Bytes one GPU of a replica needs, before headroom.

        The replica's total (weights + the rest + today's runtime overhead) is spread evenly,
        so consolidating onto fewer GPUs never plans less memory than was observed.
        """
        weights = self.weights_total_bytes.get(precision, 0.0)
        return (weights + self.other_total_bytes + self.overhead_total_bytes) / gpus


def slot_memory_bytes(gpu: gpus.GpuModel, mig_profile: str | None) -> float:
    """Usable framebuffer of a whole GPU or of one MIG instance (as nvidia-smi / -lgip list it)."""
    return float(gpu.slot_memory_bytes(mig_profile))


def engine_of(
    spec: crd.GPUWorkloadSpec,
    usage: profiles.UsageProfile,
    container: crd.ServingEngine | None = None,
) -> engines.Engine | None:
    """The pre-allocating engine a workload runs: spec.serving.engine (Other: none), else the
    engine whose metrics its pods send, else the one its container's command names; a KV-cache
    or latency series of no known engine is read as vLLM's (the first that had them)."""
    if spec.serving.engine is not None:
        return engines.of(spec.serving.engine)
    found = engines.of(usage.serving_engine) or engines.of(container)
    if found is not None:
        return found
    if (
        usage.kv_cache_usage is not None
        or usage.kv_cache_capacity_tokens is not None
        or usage.time_per_output_token_seconds is not None
    ):
        return engines.VLLM
    return None


# Activity above this with no memory in use cannot be real (a broken exporter or attribution).
_ACTIVE = 0.01
# Tolerance when comparing declared sizes with what DCGM measured.
_TOLERANCE = 1.05
# Memory vLLM holds beyond weights, KV pool and runtime that is worth naming as need.
_UNEXPLAINED_NOTE_BYTES = 1 * GIB


def demand(
    spec: crd.GPUWorkloadSpec,
    usage: profiles.UsageProfile,
    current_precision: precisions.Precision,
    options: tuple[precisions.Precision, ...],
    current_gpus: int,
    current_slot_bytes: float,
    *,
    pool_fraction: float | None = None,
    container_engine: crd.ServingEngine | None = None,
) -> MemoryDemand:
    """Work out the memory need from the declared model (if any) and the observed usage.

    ``pool_fraction`` is the engine's memory claim as the container sets it (the one
    vllm:cache_config_info reports wins; spec.serving's is the fallback); ``container_engine``
    the engine the container's command names (see :func:`engine_of`).
    """
    model = spec.model
    weights = {
        p: (weights_bytes(model.parameters, model.embedding_parameters, p) if model else 0.0)
        for p in options
    }
    current_weights = weights.get(current_precision, 0.0)
    overhead = RUNTIME_OVERHEAD_BYTES
    memory = usage.memory_used_bytes
    active = usage.graphics_engine_active.max > _ACTIVE
    if memory is not None and memory.max <= 0 and active:
        return _impossible(
            weights,
            f"DCGM reports 0 bytes of GPU memory used while the engine is active (max "
            f"{usage.graphics_engine_active.max:.0%}): the memory series cannot be trusted",
        )
    engine = engine_of(spec, usage, container_engine)
    if engine is not None:
        pool = usage.gpu_memory_utilization or pool_fraction or spec.serving.gpu_memory_utilization
        return _preallocated_demand(
            engine, spec, usage, weights, current_weights, current_gpus, current_slot_bytes, pool
        )
    if memory is None:
        # No framebuffer series: plan the whole slot it has now and never less memory.
        other = max(0.0, (current_slot_bytes - overhead) * current_gpus - current_weights)
        text = (
            "GPU memory use is unknown (no DCGM_FI_DEV_FB_USED series for the target): no "
            "allocation with less memory than the current one is considered"
        )
        return MemoryDemand(
            weights, other, overhead * current_gpus, 1.0, False, True, text, known=False
        )
    observed_peak = memory.max
    if model is not None and current_weights / current_gpus > observed_peak * _TOLERANCE:
        return _impossible(
            weights,
            f"spec.model declares {current_weights / current_gpus / GIB:.1f} GiB of "
            f"{current_precision} weights per GPU, but at most {observed_peak / GIB:.1f} GiB "
            "was ever in use: the declared model does not match the workload",
        )
    other = max(0.0, observed_peak * current_gpus - current_weights - overhead * current_gpus)
    if model is None:
        text = (
            f"observed peak memory {observed_peak / GIB:.1f} GiB per GPU (max over {usage.window})"
        )
    else:
        text = (
            f"observed peak memory {observed_peak / GIB:.1f} GiB per GPU (max over "
            f"{usage.window}): {current_weights / current_gpus / GIB:.1f} GiB "
            f"{current_precision} weights, {other / current_gpus / GIB:.1f} GiB KV cache and "
            f"activations, {overhead / GIB:.1f} GiB runtime"
        )
    return MemoryDemand(weights, other, overhead * current_gpus, 1.0, False, False, text)


def _impossible(weights: dict[precisions.Precision, float], problem: str) -> MemoryDemand:
    return MemoryDemand(weights, 0.0, 0.0, 1.0, False, True, problem, problem=problem)


def _preallocated_demand(
    engine: engines.Engine,
    spec: crd.GPUWorkloadSpec,
    usage: profiles.UsageProfile,
    weights: dict[precisions.Precision, float],
    current_weights: float,
    current_gpus: int,
    current_slot_bytes: float,
    pool: float,
) -> MemoryDemand:
    overhead = RUNTIME_OVERHEAD_BYTES
    kv = usage.kv_cache_usage
    preemptions = usage.preemptions or 0
    saturated = preemptions > 0 or (kv is not None and kv.max >= KV_SATURATED_FRACTION)
    memory = usage.memory_used_bytes
    name = engine.name
    weights_per_gpu = current_weights / current_gpus
    fixed = weights_per_gpu + overhead
    claimed = engine.claimed_bytes(pool, current_slot_bytes, fixed)
    observed_peak = memory.max if memory is not None else claimed
    shown = f"{observed_peak / GIB:.1f} GiB" if memory is not None else "no figure"
    tokens = usage.kv_cache_capacity_tokens
    if tokens == 0 or usage.kv_cache_capacity_bytes == 0:
        return _impossible(
            weights,
            f"{name}'s metrics report a KV-cache pool of 0 tokens: {name} cannot serve with "
            "that, so the metrics cannot be trusted",
        )
    declared = spec.model.kv_cache_bytes_per_token if spec.model else None
    per_token = float(declared) if declared else None
    if spec.model is None or kv is None:
        # Without the model's size the pre-allocated memory cannot be split into weights and KV
        # cache: keep the observed figure, which over-states the need (safe, not useful).
        other = observed_peak * current_gpus - overhead * current_gpus
        text = (
            f"{name} pre-allocates memory, so the observed {shown} per GPU "
            "over-states its need; declare spec.model to see past it"
        )
        return MemoryDemand(
            weights,
            max(0.0, other),
            overhead * current_gpus,
            pool,
            saturated,
            True,
            text,
            known=memory is not None,
            engine=engine,
            kv_bytes_per_token=per_token,
        )
    if per_token is not None and tokens is not None:
        # The pool in tokens (per GPU: each GPU of a tensor-parallel replica holds its share of
        # every token) times the model's bytes per token, split over the GPUs.
        capacity_per_gpu = tokens * per_token / current_gpus
        estimated = False
    elif usage.kv_cache_capacity_bytes is not None:
        capacity_per_gpu = float(usage.kv_cache_capacity_bytes)
        estimated = False
    else:
        capacity_per_gpu = engine.kv_pool_bytes(pool, current_slot_bytes, fixed)
        estimated = True
    capacity_per_gpu = max(0.0, capacity_per_gpu)
    if per_token is None and tokens:
        per_token = capacity_per_gpu * current_gpus / tokens
    notes: list[str] = []
    unexplained = 0.0
    if not estimated and memory is not None:
        explained = weights_per_gpu + capacity_per_gpu
        if observed_peak * _TOLERANCE < explained:
            return _impossible(
                weights,
                f"{name} uses {observed_peak / GIB:.1f} GiB per GPU, less than its declared "
                f"weights ({weights_per_gpu / GIB:.1f} GiB) and KV pool "
                f"({capacity_per_gpu / GIB:.1f} GiB) alone: check spec.model",
            )
        unexplained = max(0.0, observed_peak - explained - overhead)
        if unexplained >= _UNEXPLAINED_NOTE_BYTES:
            notes.append(
                f"{unexplained / GIB:.1f} GiB per GPU that the weights, KV pool and runtime do "
                "not explain (activations, a draft model, a vision tower…) is counted as need"
            )
    fraction = 1.0 if saturated else kv.max
    kv_total = fraction * capacity_per_gpu * current_gpus
    why = (
        f"KV cache full (peak {kv.max:.0%}, {preemptions} preemptions): needs at least its "
        f"whole {capacity_per_gpu / GIB:.1f} GiB pool"
        if saturated
        else f"KV cache peaked at {kv.max:.0%} of its {capacity_per_gpu / GIB:.1f} GiB pool"
    )
    extra = (
        f" + {unexplained / GIB:.1f} GiB other" if unexplained >= _UNEXPLAINED_NOTE_BYTES else ""
    )
    claim = (
        f"{pool:.0%} of the memory its weights leave on each GPU"
        if engine.of_free_memory
        else f"{pool:.0%} of each GPU"
    )
    text = (
        f"{name} pre-allocates {claim} (DCGM shows {shown} used); {why}: "
        f"{weights_per_gpu / GIB:.1f} GiB weights + {kv_total / current_gpus / GIB:.1f} GiB KV "
        f"cache{extra} + {overhead / GIB:.1f} GiB runtime per GPU"
    )
    return MemoryDemand(
        weights,
        kv_total + unexplained * current_gpus,
        overhead * current_gpus,
        pool,
        saturated,
        estimated,
        text,
        # Without a framebuffer series what the weights and KV pool do not explain is unknown.
        known=memory is not None,
        engine=engine,
        kv_bytes_per_token=per_token,
        notes=tuple(notes),
        non_kv_total_bytes=unexplained * current_gpus,
    )
