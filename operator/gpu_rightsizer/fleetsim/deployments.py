"""The Deployments whose pods the simulated series describe (apps/v1 manifests as dicts).

Each asks for what the workload holds: ``nvidia.com/gpu: N``, or ``nvidia.com/mig-<profile>: 1``
under the GPU Operator's mixed MIG strategy; selects nodes of its GPU model by GPU Feature
Discovery's ``nvidia.com/gpu.product`` label; and tolerates the taint on kwok's fake nodes
(``kwok.x-k8s.io/node=fake:NoSchedule``) so the local control plane can schedule it.
"""

from __future__ import annotations

from typing import Any

from gpu_rightsizer.fleetsim import fleets, layouts, physics

VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
DEFAULT_IMAGE = "nvcr.io/nvidia/pytorch:25.01-py3"
SGLANG_IMAGE = "lmsysorg/sglang:v0.5.4"
TRTLLM_IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:1.0.0"
PRODUCT_LABEL = "nvidia.com/gpu.product"
KWOK_TAINT = {
    "key": "kwok.x-k8s.io/node",
    "operator": "Equal",
    "value": "fake",
    "effect": "NoSchedule",
}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SIMULATED_LABEL = "gpu-rightsizer.dev/simulated"


def gpu_resources(placement: layouts.Placement) -> dict[str, str]:
    """The extended resources one pod asks for."""
    if placement.mig is not None:
        return {placement.mig.resource_name: "1"}
    return {"nvidia.com/gpu": str(placement.workload.gpus_per_replica)}


def _container(placement: layouts.Placement) -> dict[str, Any]:
    workload = placement.workload
    resources = gpu_resources(placement)
    container: dict[str, Any] = {"name": workload.container}
    if workload.engine is fleets.Engine.VLLM:
        container["image"] = workload.image or VLLM_IMAGE
        container["args"] = [
            "--model",
            workload.served_model_name,
            "--tensor-parallel-size",
            str(workload.gpus_per_replica),
            "--gpu-memory-utilization",
            f"{workload.gpu_memory_utilization:g}",
            "--block-size",
            str(physics.VLLM_BLOCK_SIZE),
        ]
        if workload.max_model_len is not None:
            container["args"] += ["--max-model-len", str(workload.max_model_len)]
        container["ports"] = [{"name": "metrics", "containerPort": 8000}]
    elif workload.engine is fleets.Engine.SGLANG:
        # docs.sglang.io server arguments; metrics need --enable-metrics.
        container["image"] = workload.image or SGLANG_IMAGE
        container["command"] = ["python3", "-m", "sglang.launch_server"]
        container["args"] = [
            "--model-path",
            workload.served_model_name,
            "--tp-size",
            str(workload.gpus_per_replica),
            "--mem-fraction-static",
            f"{workload.gpu_memory_utilization:g}",
            "--enable-metrics",
        ]
        if workload.max_model_len is not None:
            container["args"] += ["--context-length", str(workload.max_model_len)]
        container["ports"] = [{"name": "metrics", "containerPort": 30000}]
    elif workload.engine is fleets.Engine.TRTLLM:
        # trtllm-serve MODEL [OPTIONS] (nvidia.github.io/TensorRT-LLM, commands/trtllm-serve).
        container["image"] = workload.image or TRTLLM_IMAGE
        container["command"] = ["trtllm-serve"]
        container["args"] = [
            workload.served_model_name,
            "--tp_size",
            str(workload.gpus_per_replica),
            "--kv_cache_free_gpu_memory_fraction",
            f"{workload.gpu_memory_utilization:g}",
        ]
        if workload.max_model_len is not None:
            container["args"] += ["--max_seq_len", str(workload.max_model_len)]
        container["ports"] = [{"name": "metrics", "containerPort": 8000}]
    else:
        container["image"] = workload.image or DEFAULT_IMAGE
        container["env"] = [{"name": "MODEL_NAME", "value": workload.served_model_name}]
    container["resources"] = {"limits": dict(resources), "requests": dict(resources)}
    return container


def deployment(placement: layouts.Placement) -> dict[str, Any]:
    """The Deployment manifest of a laid-out workload."""
    workload = placement.workload
    labels = {"app.kubernetes.io/name": workload.name, SIMULATED_LABEL: "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": workload.name, "namespace": workload.namespace, "labels": labels},
        "spec": {
            "replicas": workload.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": workload.name}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "nodeSelector": {PRODUCT_LABEL: layouts.product_label(placement.gpu)},
                    "tolerations": [dict(KWOK_TAINT), dict(GPU_TAINT)],
                    "containers": [_container(placement)],
                },
            },
        },
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
