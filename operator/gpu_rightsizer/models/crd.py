"""The GPUWorkload custom resource: spec and status, exactly as they appear in the API.

These models are the single source of the CRD's schema (``hack/gen-crds.py`` turns them into
``crds/gpuworkloads.gpu-rightsizer.dev.yaml``); cross-field rules that the API server can check
are written next to the fields as CEL (``x-kubernetes-validations``).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pydantic

from gpu_rightsizer.models import base, durations, engines, precisions, profiles

GROUP = "gpu-rightsizer.dev"
VERSION = "v1alpha1"
KIND = "GPUWorkload"
PLURAL = "gpuworkloads"
SINGULAR = "gpuworkload"
SHORT_NAMES = ("gpuw",)
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# A GPU model as a user writes it: a catalog id, a GPU Feature Discovery product label value or
# a DCGM modelName (letters, digits, dashes, underscores, dots and spaces inside), 1 to 63
# characters. Bounded so the API server can estimate the cost of CEL rules over lists.
GPU_MODEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_. ]*[A-Za-z0-9])?$"
GPUModelName = Annotated[str, pydantic.Field(min_length=1, max_length=63, pattern=GPU_MODEL_NAME)]

# A duration (``24h``, ``1h30m``): bounded in length and in digits by the schema, so the API
# server rejects ``99999999999d``, and at most ``durations.MAX_DAYS`` here, so no sweep ever
# parses an absurd one.
Duration = Annotated[
    str,
    pydantic.Field(max_length=durations.MAX_LENGTH, pattern=durations.PATTERN),
    pydantic.AfterValidator(durations.bounded),
]


def _cel(*rules: tuple[str, str, str]) -> dict[str, Any]:
    """CEL rules as (rule, message, fieldPath): the API server's message names the field."""
    return {
        "x-kubernetes-validations": [{"rule": r, "message": m, "fieldPath": f} for r, m, f in rules]
    }


class Mode(enum.StrEnum):
    OFF = "Off"
    RECOMMEND = "Recommend"
    APPLY = "Apply"


class Approval(enum.StrEnum):
    MANUAL = "Manual"
    AUTOMATIC = "Automatic"


_API_VERSIONS = {"Rollout": "argoproj.io/v1alpha1", "InferenceService": "serving.kserve.io/v1beta1"}
_API_VERSION_MESSAGE = (
    "a Rollout is apiVersion argoproj.io/v1alpha1, an InferenceService "
    "serving.kserve.io/v1beta1; a Deployment or StatefulSet is apps/v1"
)


class TargetRef(base.Model):
    """The Deployment, StatefulSet, Argo Rollout or KServe InferenceService that runs the
    model."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=_cel(
            (
                " && ".join(
                    f"(self.kind == '{kind}') == (self.apiVersion == '{version}')"
                    for kind, version in _API_VERSIONS.items()
                ),
                _API_VERSION_MESSAGE,
                ".apiVersion",
            ),
        )
    )

    api_version: Literal["apps/v1", "argoproj.io/v1alpha1", "serving.kserve.io/v1beta1"] = "apps/v1"
    kind: Literal["Deployment", "StatefulSet", "Rollout", "InferenceService"] = "Deployment"
    name: str = pydantic.Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    container: str | None = pydantic.Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="container holding the GPUs; defaults to the first one that requests GPUs",
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> TargetRef:
        if any(
            (self.kind == kind) != (self.api_version == version)
            for kind, version in _API_VERSIONS.items()
        ):
            raise ValueError(_API_VERSION_MESSAGE)
        return self


class EnvVar(base.Model):
    name: str = pydantic.Field(min_length=1, max_length=256)
    value: str = pydantic.Field(default="", max_length=32768)


class ContainerPatch(base.Model):
    """What changes in the container to serve a variant (applied in Apply mode)."""

    image: str | None = pydantic.Field(default=None, min_length=1, max_length=1024)
    storage_uri: str | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="a KServe InferenceService's spec.predictor.model.storageUri (where the "
        "variant's weights are)",
    )
    args: tuple[Annotated[str, pydantic.Field(max_length=4096)], ...] | None = pydantic.Field(
        default=None, max_length=128
    )
    env: tuple[EnvVar, ...] | None = pydantic.Field(
        default=None,
        max_length=128,
        description="set in the container, by name (a name at most once)",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> ContainerPatch:
        names = [e.name for e in self.env or ()]
        if len(names) != len(set(names)):
            raise ValueError("env: an environment variable is named more than once")
        return self


class Variant(base.Model):
    """A quantized variant of the model the team has declared acceptable."""

    name: str = pydantic.Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    precision: precisions.Precision
    quality_recovery: float | None = pydantic.Field(
        default=None,
        gt=0,
        le=1,
        description="fraction of the baseline's quality it keeps; defaults from published evals",
    )
    container_patch: ContainerPatch | None = None


class ModelSpec(base.Model):
    """The model being served; enables memory modelling and quantized variants."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=_cel(
            (
                "!has(self.variants) || self.variants.all(v, self.variants.exists_one(w, "
                "w.name == v.name))",
                "variant names must be unique",
                ".variants",
            ),
            (
                "!has(self.variants) || self.variants.all(v, v.precision != self.precision)",
                "a variant must use a different precision than the model itself",
                ".variants",
            ),
            (
                "!has(self.embeddingParameters) || self.embeddingParameters < self.parameters",
                "embeddingParameters must be smaller than parameters",
                ".embeddingParameters",
            ),
        )
    )

    name: str | None = pydantic.Field(default=None, max_length=253)
    parameters: float = pydantic.Field(gt=0, le=1e13, description="parameter count, e.g. 8.03e9")
    embedding_parameters: float | None = pydantic.Field(
        default=None,
        ge=0,
        description="embedding + LM-head parameters, kept in BF16 by quantized checkpoints",
    )
    precision: precisions.Precision = precisions.Precision.BF16
    variants: tuple[Variant, ...] = pydantic.Field(default=(), max_length=16)
    max_model_len: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="longest sequence served (vLLM --max-model-len, SGLang --context-length, "
        "TensorRT-LLM --max_seq_len), when the container's arguments do not say; the engine "
        "refuses to start where one such sequence does not fit its KV pool",
    )
    kv_cache_bytes_per_token: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="KV-cache bytes per token of the whole model (2 x layers x KV heads x head "
        "dim x bytes); with vllm:cache_config_info it gives the KV pool in bytes",
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> ModelSpec:
        names = [v.name for v in self.variants]
        if len(names) != len(set(names)):
            raise ValueError("variant names must be unique")
        if any(v.precision == self.precision for v in self.variants):
            raise ValueError("a variant must use a different precision than the model itself")
        if self.embedding_parameters is not None and self.embedding_parameters >= self.parameters:
            raise ValueError("embeddingParameters must be smaller than parameters")
        return self


ServingEngine = engines.ServingEngine


class Serving(base.Model):
    """How the model is served, where it changes how memory use must be read."""

    engine: ServingEngine | None = pydantic.Field(
        default=None,
        description="vLLM, SGLang and TensorRT-LLM pre-allocate memory, so their KV-cache use "
        "is read instead of DCGM's figure; detected from their metrics (or the container's "
        "command) if unset; Other: never treated as pre-allocating",
    )
    gpu_memory_utilization: float = pydantic.Field(
        default=0.9,
        gt=0,
        le=1,
        description="the engine's memory claim where neither its metrics nor the container's "
        "arguments say: vLLM --gpu-memory-utilization, SGLang --mem-fraction-static (both of "
        "the GPU's memory), TensorRT-LLM --kv_cache_free_gpu_memory_fraction (of the memory "
        "left after the weights)",
    )


class LatencyGuard(enum.StrEnum):
    AUTO = "Auto"
    """On for serving workloads (an engine's metrics, or spec.serving.engine set), off
    otherwise."""
    ENFORCE = "Enforce"
    OFF = "Off"
    """Batch and training workloads: latency does not matter."""


class LatencyPolicy(base.Model):
    """How much slower a serving workload may become on the recommended allocation.

    Decode (time per output token) is memory-bandwidth bound: it scales with the bytes read per
    step (weights + KV cache in use) over the memory bandwidth. Prefill (time to first token) is
    compute bound: it scales with the compute of the allocation.
    """

    guard: LatencyGuard = LatencyGuard.AUTO
    max_time_per_output_token_slowdown: float = pydantic.Field(
        default=1.5, ge=1, le=100, description="highest projected decode slowdown (ratio)"
    )
    max_time_to_first_token_slowdown: float = pydantic.Field(
        default=2.0, ge=1, le=100, description="highest projected prefill slowdown (ratio)"
    )
    time_per_output_token_seconds: float | None = pydantic.Field(
        default=None,
        gt=0,
        le=60,
        description="p95 target: the observed p95 inter-token latency, projected, must stay below",
    )
    time_to_first_token_seconds: float | None = pydantic.Field(
        default=None,
        gt=0,
        le=3600,
        description="p95 target: the observed p95 time to first token, projected, must stay below",
    )


class Policy(base.Model):
    """The team's rules for what may be recommended."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=_cel(
            (
                "!has(self.allowedGPUModels) || self.allowedGPUModels.all(m, "
                "self.allowedGPUModels.exists_one(n, n == m))",
                "allowedGPUModels must not repeat a model",
                ".allowedGPUModels",
            ),
        )
    )

    memory_headroom_percent: int = pydantic.Field(
        default=20, ge=0, le=100, description="memory kept free above the observed peak need"
    )
    target_compute_utilization: float = pydantic.Field(
        default=0.7, gt=0, le=1, description="highest projected p95 engine activity allowed"
    )
    allowed_gpu_models: tuple[GPUModelName, ...] | None = pydantic.Field(
        default=None,
        alias="allowedGPUModels",
        min_length=1,
        max_length=32,
        description="GPU models the workload may move to (narrows the cluster's own GPU "
        "models); unset: every GPU model the cluster has. An empty list is rejected",
    )
    allow_mig: bool = pydantic.Field(default=True, alias="allowMIG")
    allow_mig_repartition: bool = pydantic.Field(
        default=False,
        alias="allowMIGRepartition",
        description="also recommend MIG profiles no node offers yet, on MIG-capable nodes of a "
        "GPU model the cluster has (a node must then be repartitioned)",
    )
    min_quality_recovery: float = pydantic.Field(
        default=0.99, ge=0, le=1, description="lowest quality a declared variant may keep"
    )
    min_observation: Duration = pydantic.Field(
        default="24h", description="history needed before recommending"
    )
    min_coverage: float = pydantic.Field(
        default=0.8, ge=0, le=1, description="fraction of the window that must have samples"
    )
    max_gpus_per_replica: int = pydantic.Field(default=8, ge=1, le=16)
    burst_compute_utilization: float = pydantic.Field(
        default=0.9,
        gt=0,
        le=1,
        description="highest projected p99 engine activity allowed (the max must stay <= 1)",
    )
    min_savings_percent: float = pydantic.Field(
        default=10,
        ge=0,
        le=100,
        description="no recommendation that saves less than this share of the current cost",
    )
    min_monthly_savings: float = pydantic.Field(
        default=0,
        ge=0,
        le=1e9,
        description="no recommendation that saves less than this, in the catalog currency",
    )
    latency: LatencyPolicy = LatencyPolicy()


class Weekday(enum.StrEnum):
    MON = "Mon"
    TUE = "Tue"
    WED = "Wed"
    THU = "Thu"
    FRI = "Fri"
    SAT = "Sat"
    SUN = "Sun"


ClockTime = Annotated[
    str, pydantic.Field(min_length=5, max_length=5, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
]


class ApplyWindow(base.Model):
    """When automatic changes may start (UTC); a window whose end is before its start spans
    midnight (``22:00``-``06:00``)."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=_cel(("self.start != self.end", "start and end must differ", ".end"))
    )

    start: ClockTime = pydantic.Field(description="HH:MM, UTC")
    end: ClockTime = pydantic.Field(description="HH:MM, UTC")
    days: tuple[Weekday, ...] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=7,
        description="days (of the window's start) it opens on, each at most once; unset: every day",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> ApplyWindow:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        if self.days is not None and len(self.days) != len(set(self.days)):
            raise ValueError("days: a day is named more than once")
        return self


class ApplySpec(base.Model):
    """How Apply mode changes the target."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=_cel(
            (
                "!has(self.window) || self.approval == 'Automatic'",
                "window only applies to approval Automatic (a Manual approval starts a change "
                "when a person approves it)",
                ".window",
            ),
        )
    )

    approval: Approval = pydantic.Field(
        default=Approval.MANUAL,
        description="Manual: a person approves each recommendation id (the annotation "
        "gpu-rightsizer.dev/approve or `gpu-rightsizer approve`); Automatic: applied when "
        "confidence, savings and the window allow",
    )
    cooldown: Duration = pydantic.Field(
        default="24h", description="time after a change (or a rollback) before the next one"
    )
    rollout_timeout: Duration = pydantic.Field(
        default="15m", description="a rollout not complete by then is rolled back"
    )
    rollback_on_failure: bool = True
    window: ApplyWindow | None = pydantic.Field(
        default=None, description="Automatic only: when changes may start; unset: any time"
    )
    min_confidence: float = pydantic.Field(
        default=0.8, ge=0, le=1, description="Automatic only: lowest confidence applied"
    )
    min_monthly_savings: float = pydantic.Field(
        default=0,
        ge=0,
        le=1e9,
        description="Automatic only: lowest projected monthly saving applied",
    )
    verification_window: Duration = pydantic.Field(
        default="1h",
        description="how long the new allocation runs before its realized savings are measured",
    )
    realized_tolerance_percent: float = pydantic.Field(
        default=20,
        ge=0,
        le=100,
        description="realized savings further than this from the projection set "
        "SavingsRealized=False",
    )
    tensor_parallel_flag: str | None = pydantic.Field(
        default=None,
        min_length=2,
        max_length=63,
        pattern=r"^--?[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="the container argument that sets the GPUs one replica shards over; "
        "rewritten when GPUs per replica change; unset: the engine's (vLLM "
        "--tensor-parallel-size or -tp, SGLang --tp-size, --tensor-parallel-size or --tp, "
        "TensorRT-LLM --tp_size)",
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> ApplySpec:
        if self.window is not None and self.approval != Approval.AUTOMATIC:
            raise ValueError("window only applies to approval Automatic")
        return self


class GPUWorkloadSpec(base.Model):
    """spec of a GPUWorkload."""

    target_ref: TargetRef
    mode: Mode = Mode.RECOMMEND
    gpu_model: GPUModelName | None = pydantic.Field(
        default=None,
        description="GPU the target runs on, when neither its node selector nor metrics tell",
    )
    model: ModelSpec | None = None
    serving: Serving = Serving()
    policy: Policy = Policy()
    apply: ApplySpec = ApplySpec()


# ---------------------------------------------------------------------------------------------
# status


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(base.Model):
    """metav1.Condition."""

    type: str = pydantic.Field(max_length=316, pattern=r"^([a-z0-9.-]+/)?[A-Za-z][A-Za-z0-9]*$")
    status: ConditionStatus
    observed_generation: int | None = pydantic.Field(default=None, ge=0)
    last_transition_time: str = pydantic.Field(json_schema_extra={"format": "date-time"})
    reason: str = pydantic.Field(min_length=1, max_length=1024, pattern=CONDITION_REASON)
    message: str = pydantic.Field(default="", max_length=32768)


class Allocation(base.Model):
    """GPUs of one replica and how many replicas: what runs now, or what to run instead."""

    gpu_model: str
    mig_profile: str | None = None
    gpus_per_replica: int = pydantic.Field(ge=1)
    replicas: int = pydantic.Field(ge=0)
    precision: precisions.Precision | None = None
    variant: str | None = None
    hourly_cost: float = pydantic.Field(ge=0, description="per replica, in the catalog currency")

    def describe(self) -> str:
        """Compact form for tables: ``1x H100-80GB``, ``1x A100-80GB/3g.40gb``, ``+fp8``."""
        unit = f"{self.gpu_model}/{self.mig_profile}" if self.mig_profile else self.gpu_model
        text = f"{self.gpus_per_replica}x {unit}"
        if self.variant:
            text += f" {self.variant}"
        return text


class Availability(enum.StrEnum):
    IN_CLUSTER = "InCluster"
    """A node of the cluster offers it and has it free."""
    NO_FREE_CAPACITY = "NoFreeCapacity"
    """The cluster has this hardware, but no node has it free now."""
    NEEDS_REPARTITION = "NeedsRepartition"
    """A MIG profile no node offers yet; a MIG-capable node must be repartitioned."""
    NOT_IN_CLUSTER = "NotInCluster"
    """Hardware the cluster does not have: informational (the before-you-buy question)."""
    UNKNOWN = "Unknown"
    """No inventory was known (the whole catalog was considered)."""


class Candidate(Allocation):
    """A candidate allocation with the numbers that justify it."""

    memory_need_bytes: int = pydantic.Field(ge=0, description="per GPU, headroom included")
    memory_available_bytes: int = pydantic.Field(ge=0, description="usable per GPU or slice")
    projected_compute_utilization: float | None = pydantic.Field(
        default=None, ge=0, description="projected p95 engine activity on the candidate"
    )
    quality_recovery: float = pydantic.Field(default=1.0, ge=0, le=1)
    availability: Availability | None = None
    projected_time_per_output_token_slowdown: float | None = pydantic.Field(
        default=None, ge=0, description="decode time ratio, candidate over current"
    )
    projected_time_to_first_token_slowdown: float | None = pydantic.Field(
        default=None, ge=0, description="prefill time ratio, candidate over current"
    )


class EngineSettings(base.Model):
    """The serving engine's settings to run with on the recommended allocation."""

    engine: ServingEngine | None = pydantic.Field(
        default=None, description="whose flags these are (absent: vLLM's)"
    )
    gpu_memory_utilization: float | None = pydantic.Field(
        default=None,
        gt=0,
        le=1,
        description="the memory claim: vLLM --gpu-memory-utilization, SGLang "
        "--mem-fraction-static, TensorRT-LLM --kv_cache_free_gpu_memory_fraction",
    )
    max_model_len: int | None = pydantic.Field(
        default=None,
        ge=1,
        description="the longest sequence: vLLM --max-model-len, SGLang --context-length, "
        "TensorRT-LLM --max_seq_len",
    )


class Recommendation(Candidate):
    id: str | None = pydantic.Field(
        default=None,
        max_length=32,
        description="stable id of this recommendation for this target generation: what "
        "gpu-rightsizer.dev/approve names",
    )
    confidence: float = pydantic.Field(ge=0, le=1)
    reasons: tuple[str, ...] = ()
    engine_settings: EngineSettings | None = None


class RealizedSavings(base.Model):
    """What an applied change really saves, measured after it ran for the verification window."""

    candidate: str = pydantic.Field(description="the applied change it measures, as printed")
    recommendation_id: str
    monthly_cost: float = pydantic.Field(description="money saved per month, measured")
    percent: float
    gpu_hours_per_month: float
    energy_kwh_per_month: float | None = pydantic.Field(
        default=None, alias="energyKWhPerMonth", description="None: power was not measured"
    )
    co2_kg_per_month: float | None = None
    projected_monthly_cost: float = pydantic.Field(description="the projection it is compared to")
    replicas: int = pydantic.Field(ge=0, description="replicas that ran on the new allocation")
    gpus: float = pydantic.Field(ge=0, description="GPUs (or MIG slices) those replicas held")
    hourly_cost: float = pydantic.Field(ge=0, description="what they cost per hour, all replicas")
    power_watts: float | None = pydantic.Field(default=None, ge=0, description="measured, all")
    window: str
    measured_time: str = pydantic.Field(json_schema_extra={"format": "date-time"})


class Savings(base.Model):
    """What moving from current to recommended saves per month (all replicas)."""

    currency: str
    monthly_cost: float = pydantic.Field(description="money saved per month")
    percent: float
    gpu_hours_per_month: float
    energy_kwh_per_month: float = pydantic.Field(alias="energyKWhPerMonth")
    co2_kg_per_month: float
    assumptions: tuple[str, ...] = ()
    realized: RealizedSavings | None = pydantic.Field(
        default=None, description="measured after the change was applied (Apply mode)"
    )


class Summary(base.Model):
    """Short texts for ``kubectl get`` columns (which cannot format numbers themselves)."""

    current: str = ""
    recommended: str = ""
    monthly_savings: str = ""


class PlanChange(base.Model):
    """One field of the target that the plan changes; values are JSON, null when absent."""

    path: str = pydantic.Field(description="JSON pointer into the target, containers by name")
    before: str | None = None
    after: str | None = None


class Plan(base.Model):
    """Exactly what applying the recommendation changes on the target."""

    recommendation_id: str
    target: str = pydantic.Field(description="Kind namespace/name")
    changes: tuple[PlanChange, ...] = ()
    diff: str = pydantic.Field(
        default="", description="unified diff of the target, as kubectl diff"
    )
    patch: str = pydantic.Field(
        default="",
        description="the change as a strategic-merge patch in YAML, ready to commit (kustomize "
        "patches, kubectl patch --type strategic)",
    )


class ApplyPhase(enum.StrEnum):
    PATCHING = "Patching"
    """The rollback record is written; the target is being patched."""
    ROLLING_OUT = "RollingOut"
    VERIFYING = "Verifying"
    """Rolled out; running for the verification window before savings are measured."""
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    """The patch could not be applied (nothing changed on the target)."""


class RecordedField(base.Model):
    """A target field's value (JSON) before or after the change; present=False: it was absent."""

    path: str
    value: str | None = None
    present: bool = True


class Baseline(base.Model):
    """What ran before the change, to measure realized savings against."""

    allocation: Allocation
    hourly_cost: float = pydantic.Field(ge=0, description="all replicas")
    power_watts: float | None = pydantic.Field(default=None, ge=0, description="all replicas")
    gpu_equivalents: float = pydantic.Field(ge=0, description="physical GPUs held, all replicas")
    time_per_output_token_seconds: float | None = pydantic.Field(
        default=None, ge=0, description="p95 before the change"
    )
    preemptions: int | None = pydantic.Field(default=None, ge=0, description="in the window")


class ApplyState(base.Model):
    """Apply mode's state machine, persisted on the object: each sweep does the next step."""

    phase: ApplyPhase
    recommendation_id: str
    candidate: str = pydantic.Field(description="the allocation applied, as printed")
    allocation: Candidate | None = pydantic.Field(default=None, description="the one applied")
    target_generation: int | None = pydantic.Field(
        default=None, ge=0, description="the target's generation once patched"
    )
    revision: str | None = pydantic.Field(
        default=None, description="the new ReplicaSet's pod-template-hash or StatefulSet revision"
    )
    started_time: str = pydantic.Field(json_schema_extra={"format": "date-time"})
    patched_time: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    applied_time: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}, description="rollout complete"
    )
    finished_time: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    message: str = pydantic.Field(default="", max_length=4096)
    previous: tuple[RecordedField, ...] = pydantic.Field(
        default=(), description="the rollback record: every field the patch touches, before"
    )
    desired: tuple[RecordedField, ...] = pydantic.Field(
        default=(), description="the same fields as the patch sets them"
    )
    baseline: Baseline | None = None
    projected: Savings | None = pydantic.Field(default=None, description="when it was applied")
    realized: RealizedSavings | None = None


class BlockedCandidate(base.Model):
    """An allocation not to apply again before ``until`` (it was rolled back or failed)."""

    candidate: str
    until: str = pydantic.Field(json_schema_extra={"format": "date-time"})
    reason: str = pydantic.Field(default="", max_length=4096)


class GPUWorkloadStatus(base.Model):
    """status of a GPUWorkload: what runs, what it uses, what to run instead, what it saves."""

    observed_generation: int | None = pydantic.Field(default=None, ge=0)
    conditions: tuple[Condition, ...] = pydantic.Field(
        default=(),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    last_evaluation_time: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    current: Allocation | None = None
    usage: profiles.UsageProfile | None = None
    recommendation: Recommendation | None = None
    alternatives: tuple[Candidate, ...] = ()
    savings: Savings | None = None
    summary: Summary | None = pydantic.Field(default=None, description="for printer columns")
    plan: Plan | None = pydantic.Field(
        default=None, description="Apply mode: what applying the recommendation changes"
    )
    apply: ApplyState | None = pydantic.Field(
        default=None, description="Apply mode: the change in progress, or the last one"
    )
    blocked: tuple[BlockedCandidate, ...] = pydantic.Field(default=(), max_length=64)
