"""A workload as the engine sees it: the GPUWorkload's spec, what it runs on now, what it used."""

from __future__ import annotations

import pydantic

from gpu_rightsizer.models import base, crd, precisions, profiles


class CurrentAllocation(base.Model):
    """What one replica of the target holds now (read from its manifest, node or metrics)."""

    gpu_model: str = pydantic.Field(description="catalog id")
    mig_profile: str | None = None
    gpus_per_replica: int = pydantic.Field(ge=1)
    replicas: int = pydantic.Field(ge=0)
    precision: precisions.Precision = precisions.Precision.BF16


class WorkloadRef(base.Model):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Workload(base.Model):
    """Everything the engine needs about one GPUWorkload; no I/O has to happen afterwards."""

    ref: WorkloadRef
    spec: crd.GPUWorkloadSpec
    current: CurrentAllocation
    usage: profiles.UsageProfile | None = None
    previous: crd.Recommendation | None = None
    """The recommendation on status now: kept while a new best is not clearly cheaper."""
    max_model_len: int | None = None
    """The engine's longest sequence as the target's container sets it (vLLM
    --max-model-len, SGLang --context-length, TensorRT-LLM --max_seq_len), if it does."""
    gpu_memory_utilization: float | None = None
    """The engine's memory claim as the target's container sets it (vLLM
    --gpu-memory-utilization, SGLang --mem-fraction-static, TensorRT-LLM
    --kv_cache_free_gpu_memory_fraction), if it does."""
    serving_engine: crd.ServingEngine | None = None
    """The pre-allocating engine the target's container runs, where its command names one."""
