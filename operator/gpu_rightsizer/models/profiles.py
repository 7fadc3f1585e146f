"""What a workload really used over a window: the usage profile.

One profile summarises one workload: per-GPU percentiles of memory, engine, tensor and DRAM
activity and power, and (for vLLM) KV-cache usage, capacity and preemptions. Values are those of
the workload's busiest GPU, so the profile errs on the side of need. The same shape is written to
``status.usage`` and read from ``--usage`` files (documented in ``docs/usage-profile.md``).
"""

from __future__ import annotations

import datetime
from typing import Any

import pydantic

from gpu_rightsizer.models import base, durations, engines


class Percentiles(base.Model):
    """Distribution of one signal over the window."""

    p50: float = pydantic.Field(ge=0)
    p95: float = pydantic.Field(ge=0)
    p99: float = pydantic.Field(ge=0)
    max: float = pydantic.Field(ge=0)
    mean: float | None = pydantic.Field(default=None, ge=0)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Percentiles:
        if not self.p50 <= self.p95 <= self.p99 <= self.max:
            raise ValueError("percentiles must satisfy p50 <= p95 <= p99 <= max")
        return self


class Fractions(Percentiles):
    """Percentiles of a 0..1 signal (engine activity, KV-cache usage)."""

    @pydantic.model_validator(mode="after")
    def _fraction(self) -> Fractions:
        if self.max > 1.0:
            raise ValueError("a fraction must be between 0 and 1")
        return self


class UsageProfile(base.Model):
    """The observed usage of one workload (per GPU, busiest GPU of the workload)."""

    window: str = pydantic.Field(pattern=durations.PATTERN, description="look-back, e.g. 7d")
    end: datetime.datetime | None = pydantic.Field(default=None, description="end of the window")
    samples: int = pydantic.Field(ge=0, description="samples of the target's series in the window")
    coverage: float = pydantic.Field(
        ge=0, le=1, description="fraction of the window with samples (gaps, late start)"
    )
    observed_seconds: float | None = pydantic.Field(
        default=None, ge=0, description="history actually present; defaults to window x coverage"
    )
    gpu_model: str | None = pydantic.Field(
        default=None, description="GPU model seen by DCGM (modelName) or a catalog id"
    )
    mig_profile: str | None = None
    gpus: int | None = pydantic.Field(default=None, ge=1, description="GPUs seen per replica")
    memory_used_bytes: Percentiles | None = pydantic.Field(
        default=None,
        description="framebuffer used (DCGM FB_USED); unset when the exporter sends none "
        "(some MIG setups): memory is then unknown and no smaller-memory allocation is considered",
    )
    graphics_engine_active: Fractions
    tensor_active: Fractions | None = None
    dram_active: Fractions | None = None
    power_watts: Percentiles | None = None
    serving_engine: engines.ServingEngine | None = pydantic.Field(
        default=None,
        description="the pre-allocating engine whose metrics the pods send (vLLM, SGLang, "
        "TensorRT-LLM), where they send any",
    )
    kv_cache_usage: Fractions | None = pydantic.Field(
        default=None,
        description="vllm:kv_cache_usage_perc, sglang:token_usage, trtllm_kv_cache_utilization "
        "or Triton's nv_trt_llm_kv_cache_block_metrics fraction (0..1)",
    )
    kv_cache_capacity_bytes: int | None = pydantic.Field(
        default=None, ge=0, description="KV-cache pool size in bytes, where it is known"
    )
    kv_cache_capacity_tokens: int | None = pydantic.Field(
        default=None,
        ge=0,
        description="KV-cache pool in tokens of one engine (one replica, all its "
        "tensor-parallel GPUs together; each GPU holds its share of every token's KV heads): "
        "num_gpu_blocks x block_size of vllm:cache_config_info (joined on pod), "
        "sglang:max_total_num_tokens, or TensorRT-LLM's max blocks x tokens per block; 0 is "
        "reported as 0",
    )
    gpu_memory_utilization: float | None = pydantic.Field(
        default=None,
        gt=0,
        le=1,
        description="vLLM's gpu_memory_utilization as vllm:cache_config_info reports it",
    )
    time_per_output_token_seconds: Percentiles | None = pydantic.Field(
        default=None,
        description="from the vllm: or sglang:inter_token_latency_seconds histogram",
    )
    time_to_first_token_seconds: Percentiles | None = pydantic.Field(
        default=None,
        description="from the vllm: or sglang:time_to_first_token_seconds histogram",
    )
    preemptions: int | None = pydantic.Field(
        default=None, ge=0, description="increase of vllm:num_preemptions_total over the window"
    )
    requests_waiting: Percentiles | None = None

    @property
    def window_seconds(self) -> float:
        return durations.parse(self.window).total_seconds()

    @property
    def coverage_of_history(self) -> float:
        """Fraction of the observed history (first sample to the end) that has samples.

        ``coverage`` is over the whole window, so a workload that started three days into a
        seven-day window has at most 43 %; gaps are what this measures instead. Without
        ``observedSeconds`` the samples are taken to be spread over the whole window.
        """
        if self.observed_seconds is None:
            return self.coverage
        history = self.history_seconds
        if history <= 0:
            return 0.0
        return min(1.0, self.coverage * self.window_seconds / history)

    @property
    def history_seconds(self) -> float:
        """How much history the profile stands on."""
        if self.observed_seconds is not None:
            return self.observed_seconds
        return self.window_seconds * self.coverage

    def rounded(self) -> UsageProfile:
        """The profile rounded so that noise in the last digits does not churn a status.

        Memory to whole MiB, fractions to 0.001, power to whole watts, coverage to 0.01,
        history to 100 s, preemptions to two significant digits; ``end`` dropped (it moves
        with every evaluation).
        """

        def fractions(p: Percentiles | None, digits: int) -> Any:
            if p is None:
                return None
            return p.model_copy(update={k: round(v, digits) for k, v in _stats(p).items()})

        mib = float(2**20)
        memory = (
            self.memory_used_bytes.model_copy(
                update={
                    k: float(round(v / mib) * mib)
                    for k, v in _stats(self.memory_used_bytes).items()
                }
            )
            if self.memory_used_bytes is not None
            else None
        )
        return self.model_copy(
            update={
                "end": None,
                "coverage": round(self.coverage, 2),
                "observed_seconds": (
                    round(self.observed_seconds, -2) if self.observed_seconds is not None else None
                ),
                "memory_used_bytes": memory,
                "graphics_engine_active": fractions(self.graphics_engine_active, 3),
                "tensor_active": fractions(self.tensor_active, 3),
                "dram_active": fractions(self.dram_active, 3),
                "power_watts": fractions(self.power_watts, 0),
                "kv_cache_usage": fractions(self.kv_cache_usage, 3),
                "preemptions": _two_digits(self.preemptions),
                "requests_waiting": fractions(self.requests_waiting, 1),
                "time_per_output_token_seconds": fractions(self.time_per_output_token_seconds, 4),
                "time_to_first_token_seconds": fractions(self.time_to_first_token_seconds, 3),
            }
        )


def _two_digits(count: int | None) -> int | None:
    if count is None or count < 100:
        return count
    scale = 10 ** (len(str(count)) - 2)
    return int(round(count / scale) * scale)


def _stats(p: Percentiles) -> dict[str, float]:
    return {k: v for k, v in p.model_dump().items() if isinstance(v, float)}


class WorkloadUsage(base.Model):
    """A usage profile tied to the GPUWorkload it describes (one entry of a ``--usage`` file)."""

    namespace: str = "default"
    name: str
    usage: UsageProfile


class UsageFile(base.Model):
    """The ``--usage`` file: ``{"kind": "UsageProfileList", "items": [...]}``."""

    api_version: str = pydantic.Field(default="gpu-rightsizer.dev/v1alpha1")
    kind: str = pydantic.Field(default="UsageProfileList", pattern=r"^UsageProfileList$")
    items: tuple[WorkloadUsage, ...]
