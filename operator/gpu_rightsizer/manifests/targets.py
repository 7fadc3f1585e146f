"""The current GPU allocation of a workload target, read from its manifest."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from gpu_rightsizer.models import engines

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
PRODUCT_LABEL = "nvidia.com/gpu.product"
MIG_RESOURCE = re.compile(r"^nvidia\.com/mig-(?P<profile>[1-7]g\.[0-9]+gb(\+me)?)$")


class TargetError(ValueError):
    """The target's manifest does not say what GPUs it holds; the message names the field."""

    reason = "TargetHasNoGPUs"
    """The condition reason for it."""


class ContainerNotFoundError(TargetError):
    """``spec.targetRef.container`` names a container the target does not have."""

    reason = "ContainerNotFound"


@dataclasses.dataclass(frozen=True)
class TargetGPUs:
    """What one replica of a target holds, as its manifest says."""

    container: str
    gpus_per_replica: int
    mig_profile: str | None
    gpu_product: str | None
    """The ``nvidia.com/gpu.product`` value the pods are pinned to, if any."""
    replicas: int
    max_model_len: int | None = None
    """The engine's longest sequence (vLLM ``--max-model-len``, SGLang ``--context-length``,
    TensorRT-LLM ``--max_seq_len``) from the container's command or args."""
    gpu_memory_utilization: float | None = None
    """The engine's memory claim (vLLM ``--gpu-memory-utilization``, SGLang
    ``--mem-fraction-static``, TensorRT-LLM ``--kv_cache_free_gpu_memory_fraction``)."""
    engine: engines.ServingEngine | None = None
    """The pre-allocating engine the container's command runs, where a word names one."""


def read(target: Mapping[str, Any], container: str | None = None) -> TargetGPUs:
    """Read a Deployment's or StatefulSet's GPUs; ``container`` picks one by name."""
    spec = target.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    if container is not None:
        chosen = [c for c in containers if c.get("name") == container]
        if not chosen:
            names = ", ".join(str(c.get("name")) for c in containers) or "none"
            raise ContainerNotFoundError(
                f"spec.template.spec.containers: no container named {container!r} "
                f"(containers: {names})"
            )
    else:
        chosen = [c for c in containers if gpu_limits(c)]
        if not chosen:
            raise TargetError(
                "spec.template.spec.containers: no container requests nvidia.com/gpu or "
                "nvidia.com/mig-* resources"
            )
    box = chosen[0]
    name = str(box.get("name", ""))
    limits = gpu_limits(box)
    field = f"spec.template.spec.containers[{name}].resources.limits"
    if not limits:
        raise TargetError(f"{field}: requests no nvidia.com/gpu or nvidia.com/mig-* resource")
    if len(limits) > 1:
        raise TargetError(f"{field}: mixes GPU resources ({', '.join(sorted(limits))})")
    resource, amount = next(iter(limits.items()))
    count = _count(amount, f"{field}[{resource}]")
    match = MIG_RESOURCE.match(resource)
    if resource != GPU_RESOURCE and match is None:
        raise TargetError(f"{field}: unrecognised GPU resource {resource!r}")
    if match is not None and count != 1:
        raise TargetError(
            f"{field}[{resource}]: {count} MIG instances per replica; gpu-rightsizer "
            "handles one MIG instance per replica"
        )
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        raise TargetError(f"spec.replicas: {replicas!r} is not a replica count")
    return TargetGPUs(
        container=name,
        gpus_per_replica=count,
        mig_profile=match["profile"] if match else None,
        gpu_product=gpu_product(pod),
        replicas=replicas,
        **engine_flags(box),
    )


def engine_flags(container: Mapping[str, Any]) -> dict[str, Any]:
    """The engine a container runs and the memory claim and sequence length its arguments set;
    an engine its command does not name is read with each engine's flags, vLLM's first."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    engine = engines.from_command(words)
    out: dict[str, Any] = {"engine": engine.kind if engine is not None else None}
    for candidate in (engine,) if engine is not None else engines.ENGINES:
        length = _int_flag(container, candidate.max_length_flag)
        fraction = _fraction_flag(container, candidate.memory_flag)
        if length is not None or fraction is not None:
            out.update(max_model_len=length, gpu_memory_utilization=fraction)
            break
    return out


def flag(container: Mapping[str, Any], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a container's command and args."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    value = None
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith(name + "="):
            value = word[len(name) + 1 :]
    return value


def _int_flag(container: Mapping[str, Any], name: str) -> int | None:
    text = flag(container, name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _fraction_flag(container: Mapping[str, Any], name: str) -> float | None:
    text = flag(container, name)
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 < value <= 1 else None


def gpu_product(pod_spec: Mapping[str, Any]) -> str | None:
    """The GPU product a pod template pins to, by node selector or required node affinity."""
    selector = pod_spec.get("nodeSelector") or {}
    if PRODUCT_LABEL in selector:
        return str(selector[PRODUCT_LABEL])
    affinity = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in affinity.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            values = expr.get("values") or []
            if expr.get("key") == PRODUCT_LABEL and expr.get("operator") == "In" and values:
                return str(values[0])
    return None


def is_gpu_resource(name: str) -> bool:
    """``nvidia.com/gpu`` or an ``nvidia.com/mig-<profile>`` extended resource."""
    return name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


def gpu_limits(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's GPU resources (requests and limits merged, limits winning)."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    return {k: v for k, v in merged.items() if is_gpu_resource(k)}


def _count(amount: Any, field: str) -> int:
    try:
        value = int(str(amount))
    except ValueError:
        raise TargetError(f"{field}: {amount!r} is not a whole number of GPUs") from None
    if value < 1:
        raise TargetError(f"{field}: {value} GPUs; expected at least 1")
    return value
