"""Memory model: how many bytes a workload needs per GPU at a given precision and GPU count.

Need = weights at the candidate precision + the rest (KV cache, activations) + runtime overhead
per GPU, times the policy's headroom. Formulas and figures: shared reference gpu-facts.md §3.

vLLM pre-allocates ``gpu_memory_utilization`` of every GPU whatever the load, so DCGM's FB_USED
says nothing about its need; for vLLM the KV-cache usage tells the real need instead.
"""

from __future__ import annotations

import dataclasses

from gpu_rightsizer.models import crd, gpus, precisions, profiles

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
    """KV cache and activations of one replica, whatever the precision of the weights."""
    overhead_total_bytes: float
    """Runtime memory of one replica as it runs now; never assumed to shrink with fewer GPUs."""
    pool_fraction: float
    """Fraction of a GPU the serving engine lets itself use (vLLM's gpu_memory_utilization)."""
    saturated: bool
    """The KV cache ran full: the real need is at least what it has now."""
    estimated: bool
    """The split between weights and the rest had to be guessed (lower confidence)."""
    explanation: str

    def need_per_gpu_bytes(self, precision: precisions.Precision, gpus: int) -> float:
        """Bytes one GPU of a replica needs, before headroom.

        The replica's total (weights + the rest + today's runtime overhead) is spread evenly,
        so consolidating onto fewer GPUs never plans less memory than was observed.
        """
        weights = self.weights_total_bytes.get(precision, 0.0)
        return (weights + self.other_total_bytes + self.overhead_total_bytes) / gpus


def slot_memory_bytes(gpu: gpus.GpuModel, mig_profile: str | None) -> float:
    """Framebuffer of a whole GPU or of one MIG instance."""
    if mig_profile is None:
        return gpu.memory_gib * GIB
    profile = gpu.mig_profile(mig_profile)
    if profile is None:
        raise ValueError(f"{gpu.id} has no MIG profile {mig_profile}")
    return profile.memory_gib * GIB


def _is_vllm(spec: crd.GPUWorkloadSpec, usage: profiles.UsageProfile) -> bool:
    if spec.serving.engine is not None:
        return spec.serving.engine == crd.ServingEngine.VLLM
    return usage.kv_cache_usage is not None


def demand(
    spec: crd.GPUWorkloadSpec,
    usage: profiles.UsageProfile,
    current_precision: precisions.Precision,
    options: tuple[precisions.Precision, ...],
    current_gpus: int,
    current_slot_bytes: float,
) -> MemoryDemand:
    """Work out the memory need from the declared model (if any) and the observed usage."""
    model = spec.model
    weights = {
        p: (weights_bytes(model.parameters, model.embedding_parameters, p) if model else 0.0)
        for p in options
    }
    current_weights = weights.get(current_precision, 0.0)
    overhead = RUNTIME_OVERHEAD_BYTES
    # Memory unknown (no framebuffer series): assume the whole slot is needed (safe).
    observed_peak = (
        usage.memory_used_bytes.max if usage.memory_used_bytes is not None else current_slot_bytes
    )
    if _is_vllm(spec, usage):
        return _vllm_demand(
            spec, usage, weights, current_weights, current_gpus, current_slot_bytes, observed_peak
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


def _vllm_demand(
    spec: crd.GPUWorkloadSpec,
    usage: profiles.UsageProfile,
    weights: dict[precisions.Precision, float],
    current_weights: float,
    current_gpus: int,
    current_slot_bytes: float,
    observed_peak: float,
) -> MemoryDemand:
    pool = spec.serving.gpu_memory_utilization
    overhead = RUNTIME_OVERHEAD_BYTES
    kv = usage.kv_cache_usage
    preemptions = usage.preemptions or 0
    saturated = preemptions > 0 or (kv is not None and kv.max >= KV_SATURATED_FRACTION)
    if spec.model is None or kv is None:
        # Without the model's size the pre-allocated memory cannot be split into weights and KV
        # cache: keep the observed figure, which over-states the need (safe, not useful).
        other = observed_peak * current_gpus - overhead * current_gpus
        text = (
            f"vLLM pre-allocates memory, so the observed {observed_peak / GIB:.1f} GiB per GPU "
            "over-states its need; declare spec.model to see past it"
        )
        return MemoryDemand(
            weights, max(0.0, other), overhead * current_gpus, pool, saturated, True, text
        )
    if usage.kv_cache_capacity_bytes is not None:
        capacity_per_gpu = float(usage.kv_cache_capacity_bytes)
        estimated = False
    else:
        capacity_per_gpu = pool * current_slot_bytes - current_weights / current_gpus - overhead
        estimated = True
    capacity_per_gpu = max(0.0, capacity_per_gpu)
    fraction = 1.0 if saturated else kv.max
    kv_total = fraction * capacity_per_gpu * current_gpus
    why = (
        f"KV cache full (peak {kv.max:.0%}, {preemptions} preemptions): needs at least its "
        f"whole {capacity_per_gpu / GIB:.1f} GiB pool"
        if saturated
        else f"KV cache peaked at {kv.max:.0%} of its {capacity_per_gpu / GIB:.1f} GiB pool"
    )
    text = (
        f"vLLM pre-allocates {pool:.0%} of each GPU (DCGM shows {observed_peak / GIB:.1f} GiB "
        f"used); {why}: {current_weights / current_gpus / GIB:.1f} GiB weights + "
        f"{kv_total / current_gpus / GIB:.1f} GiB KV cache + {overhead / GIB:.1f} GiB runtime "
        "per GPU"
    )
    return MemoryDemand(
        weights, kv_total, overhead * current_gpus, pool, saturated, estimated, text
    )
