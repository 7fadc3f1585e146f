"""The fleet description: which workloads run where, how big their model is, how busy they are.

A fleet file is YAML with camelCase keys (like the GPUWorkload resource)::

    seed: 7
    workloads:
      - name: chat
        namespace: ml
        modelName: meta-llama/Llama-3.1-8B-Instruct
        parameters: 8.03e9
        precision: bf16
        gpuModel: H100-80GB
        gpusPerReplica: 1
        replicas: 2
        engine: vllm
        traffic: {shape: diurnal, low: 0.05, high: 0.5}

Only the shape of the description is checked here; whether the model fits the GPU is checked
against the catalog when the fleet is laid out (:mod:`.layouts`).
"""

from __future__ import annotations

import enum
import pathlib
from typing import Any

import pydantic
import yaml

from gpu_rightsizer.models import base, precisions

# A Deployment name must leave room for "-<10-char hash>-<5-char suffix>" in a 63-char pod name.
DEPLOYMENT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,44}[a-z0-9])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class FleetError(ValueError):
    """A fleet file that cannot be read, parsed, validated or laid out (one-line message)."""


class Engine(enum.StrEnum):
    """What serves the model. vLLM, SGLang and TensorRT-LLM (``trtllm-serve``) publish their own
    metrics and pre-allocate GPU memory."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TRTLLM = "trtllm-serve"
    OTHER = "other"

    @property
    def preallocates(self) -> bool:
        return self is not Engine.OTHER


class TrafficShape(enum.StrEnum):
    """How a workload's load moves over time (see :mod:`.signals`)."""

    DIURNAL = "diurnal"
    BURSTY = "bursty"
    IDLE = "idle"
    CONSTANT = "constant"
    TRAINING = "training"


# Default (low, high) load levels per shape: fractions of what the allocation can serve.
DEFAULT_LEVELS: dict[TrafficShape, tuple[float, float]] = {
    TrafficShape.DIURNAL: (0.05, 0.55),
    TrafficShape.BURSTY: (0.03, 0.85),
    TrafficShape.IDLE: (0.0, 0.02),
    TrafficShape.CONSTANT: (0.35, 0.45),
    TrafficShape.TRAINING: (0.85, 0.97),
}


class Traffic(base.Model):
    """The load a workload sees: a shape and the levels it moves between (0-1 of capacity)."""

    shape: TrafficShape = TrafficShape.DIURNAL
    low: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="load at the quietest times (default per shape)"
    )
    high: float | None = pydantic.Field(
        default=None, ge=0, le=1, description="load at the busiest times (default per shape)"
    )
    peak_hour_utc: float = pydantic.Field(
        default=15.0, ge=0, lt=24, description="diurnal: hour of day (UTC) of the daily peak"
    )
    weekend_factor: float = pydantic.Field(
        default=0.6, ge=0, le=1, description="diurnal: share of the weekday swing on weekends"
    )
    bursts_per_day: float = pydantic.Field(
        default=8.0, ge=0, le=48, description="bursty: mean number of bursts a day"
    )

    @property
    def levels(self) -> tuple[float, float]:
        """(low, high), with the shape's defaults filled in; low never exceeds high."""
        default_low, default_high = DEFAULT_LEVELS[self.shape]
        low = default_low if self.low is None else self.low
        high = default_high if self.high is None else self.high
        return (min(low, high), max(low, high))


class Workload(base.Model):
    """One Deployment serving (or training) one model on GPUs."""

    name: str = pydantic.Field(pattern=DEPLOYMENT_NAME_PATTERN)
    namespace: str = pydantic.Field(default="default", pattern=DNS_LABEL_PATTERN)
    container: str = pydantic.Field(default="server", pattern=DNS_LABEL_PATTERN)
    model_name: str | None = pydantic.Field(
        default=None, description="served model name (vLLM's model_name label); default: name"
    )
    parameters: float = pydantic.Field(gt=0, description="model size in parameters")
    precision: precisions.Precision = precisions.Precision.BF16
    gpu_model: str = pydantic.Field(description="catalog id, e.g. H100-80GB")
    gpus_per_replica: int = pydantic.Field(default=1, ge=1, le=8)
    replicas: int = pydantic.Field(default=1, ge=1, le=64)
    mig_profile: str | None = pydantic.Field(default=None, pattern=r"^[1-7]g\.[0-9]+gb(\+me)?$")
    engine: Engine = Engine.OTHER
    traffic: Traffic = pydantic.Field(default_factory=Traffic)
    kv_cache_usage_at_peak: float = pydantic.Field(
        default=0.45, gt=0, le=1.2, description="vLLM: KV-cache usage at full load (>1 preempts)"
    )
    kv_cache_bytes_per_token: int | None = pydantic.Field(
        default=None, gt=0, description="vLLM: KV bytes per token, all layers (default: estimate)"
    )
    max_concurrent_requests: int = pydantic.Field(
        default=64, ge=1, description="vLLM: requests running at full load"
    )
    gpu_memory_utilization: float = pydantic.Field(
        default=0.9,
        gt=0,
        le=0.99,
        description="vLLM, SGLang: share of GPU memory it pre-allocates; trtllm-serve: share of "
        "what the weights and runtime leave",
    )
    activation_memory_gib: float | None = pydantic.Field(
        default=None, ge=0, description="other engines: memory beyond weights at full load"
    )
    framebuffer_metrics: bool = pydantic.Field(
        default=True,
        description="DCGM sends DCGM_FI_DEV_FB_USED/FREE for these GPUs; false: a driver that "
        "sends a MIG instance's engine activity but no framebuffer series",
    )
    image: str | None = None
    max_model_len: int | None = pydantic.Field(
        default=None, ge=1, description="vLLM: --max-model-len in the container's arguments"
    )
    variants: tuple[dict[str, Any], ...] = pydantic.Field(
        default=(), description="the GPUWorkload's spec.model.variants, as written there"
    )
    policy: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="the GPUWorkload's spec.policy, as written there"
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def served_model_name(self) -> str:
        return self.model_name or self.name

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Workload:
        if self.mig_profile is not None and self.gpus_per_replica != 1:
            raise ValueError(f"{self.name}: a MIG workload uses one instance per replica")
        return self


class DcgmLabels(enum.StrEnum):
    """How the pod labels on DCGM series look once Prometheus has scraped them."""

    DIRECT = "direct"  # namespace/pod/container, Hostname (honorLabels or a plain scrape)
    EXPORTED = "exported"  # exported_namespace/…, hostname (ServiceMonitor without honorLabels)


class Fleet(base.Model):
    """The whole simulated fleet."""

    seed: int = 0
    dcgm_labels: DcgmLabels = DcgmLabels.DIRECT
    workloads: tuple[Workload, ...] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _unique(self) -> Fleet:
        seen: set[tuple[str, str]] = set()
        for workload in self.workloads:
            if workload.key in seen:
                raise ValueError(f"workload {workload.namespace}/{workload.name} appears twice")
            seen.add(workload.key)
        return self

    def workload(self, namespace: str, name: str) -> Workload:
        for workload in self.workloads:
            if workload.key == (namespace, name):
                return workload
        raise KeyError(f"no workload {namespace}/{name} in the fleet")


def parse(text: str, source: str) -> Fleet:
    """Parse and validate fleet YAML; ``source`` names the file in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetError(f"{source}: malformed YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise FleetError(f"{source}: expected a mapping at the top level")
    try:
        return Fleet.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            message = " ".join(error["msg"].split()).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise FleetError(f"{source}: {'; '.join(problems)}") from None


def load(path: pathlib.Path) -> Fleet:
    """Read a fleet file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"{path}: cannot read: {exc}") from None
    return parse(text, str(path))
