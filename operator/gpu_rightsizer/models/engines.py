"""The inference engines that pre-allocate GPU memory, and the settings each takes.

vLLM, SGLang and TensorRT-LLM each claim most of a GPU at start and keep it whatever the load,
so DCGM's framebuffer figure is not their need: their KV-cache use is. They differ in how the
claim is set and in what it is a fraction of, and in the flags that say the served sequence
length and the tensor-parallel degree. This module holds those facts, each with its source; it
reads nothing and decides nothing.

Sources:

- vLLM: ``vllm serve --help`` (engine arguments): ``--gpu-memory-utilization`` (the fraction of
  the GPU's memory for weights, activations and the KV cache, default 0.9),
  ``--max-model-len``, ``--tensor-parallel-size`` / ``-tp``.
- SGLang: docs.sglang.io, advanced_features/server_arguments: ``--mem-fraction-static`` (the
  fraction of the GPU's memory for weights and the KV-cache pool; the docs give 0.9 as the
  default), ``--context-length``, ``--tp-size`` (also ``--tensor-parallel-size``, ``--tp``).
- TensorRT-LLM: nvidia.github.io/TensorRT-LLM commands/trtllm-serve:
  ``--kv_cache_free_gpu_memory_fraction`` ("free GPU memory fraction reserved for KV cache,
  after allocating model weights and buffers"; KvCacheConfig's free_gpu_memory_fraction
  defaults to 0.9, examples/kvcacheconfig), ``--max_seq_len``, ``--tp_size``. Served by Triton
  (``tritonserver``) the same settings live in the model repository's ``config.pbtxt``, not in
  the container's arguments.

Must never do I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence


class ServingEngine(enum.StrEnum):
    """The serving engine: one of the three that pre-allocate GPU memory, or Other."""

    VLLM = "vLLM"
    SGLANG = "SGLang"
    TENSORRT_LLM = "TensorRT-LLM"
    OTHER = "Other"


@dataclasses.dataclass(frozen=True)
class Engine:
    """One pre-allocating engine: how its memory claim, sequence length and sharding are set."""

    kind: ServingEngine
    memory_flag: str
    """The flag that sets the memory claim."""
    max_length_flag: str
    """The flag that sets the longest sequence served."""
    tensor_parallel_flags: tuple[str, ...]
    """The flags that set the GPUs one replica shards over, the one written first."""
    of_free_memory: bool
    """The claim is a fraction of the memory left after the weights and runtime (TensorRT-LLM),
    not of the whole GPU (vLLM, SGLang)."""
    commands: tuple[str, ...]
    """Words of a container's command or arguments that show it runs this engine."""
    default_memory_fraction: float = 0.9

    @property
    def name(self) -> str:
        return self.kind.value

    def kv_pool_bytes(self, fraction: float, slot_bytes: float, fixed_bytes: float) -> float:
        """The KV pool one GPU holds: ``fixed_bytes`` is what it holds besides (weights,
        runtime and anything else the claim must cover)."""
        if self.of_free_memory:
            return fraction * max(slot_bytes - fixed_bytes, 0.0)
        return fraction * slot_bytes - fixed_bytes

    def claimed_bytes(self, fraction: float, slot_bytes: float, fixed_bytes: float) -> float:
        """The memory one GPU of it holds at start: its fixed part and its KV pool."""
        if self.of_free_memory:
            return fixed_bytes + self.kv_pool_bytes(fraction, slot_bytes, fixed_bytes)
        return fraction * slot_bytes


VLLM = Engine(
    ServingEngine.VLLM,
    memory_flag="--gpu-memory-utilization",
    max_length_flag="--max-model-len",
    tensor_parallel_flags=("--tensor-parallel-size", "-tp"),
    of_free_memory=False,
    commands=("vllm", "vllm.entrypoints.openai.api_server"),
)
SGLANG = Engine(
    ServingEngine.SGLANG,
    memory_flag="--mem-fraction-static",
    max_length_flag="--context-length",
    tensor_parallel_flags=("--tp-size", "--tensor-parallel-size", "--tp"),
    of_free_memory=False,
    commands=("sglang", "sglang.launch_server"),
)
TENSORRT_LLM = Engine(
    ServingEngine.TENSORRT_LLM,
    memory_flag="--kv_cache_free_gpu_memory_fraction",
    max_length_flag="--max_seq_len",
    tensor_parallel_flags=("--tp_size",),
    of_free_memory=True,
    commands=("trtllm-serve",),
)
ENGINES = (VLLM, SGLANG, TENSORRT_LLM)
BY_KIND = {engine.kind: engine for engine in ENGINES}

TRITON_COMMAND = "tritonserver"
"""Triton's server: a TensorRT-LLM engine whose settings are in the model repository."""


def of(kind: ServingEngine | None) -> Engine | None:
    """The pre-allocating engine of ``kind``; None for Other or unknown."""
    return BY_KIND.get(kind) if kind is not None else None


def _basename(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def from_command(words: Sequence[str]) -> Engine | None:
    """The engine a container's command and arguments run, where a word names one: ``vllm
    serve``, ``python -m sglang.launch_server``, ``trtllm-serve``, ``tritonserver``."""
    for word in words:
        base = _basename(word)
        if base == TRITON_COMMAND:
            return TENSORRT_LLM
        for engine in ENGINES:
            if base in engine.commands:
                return engine
    return None


def is_triton(words: Sequence[str]) -> bool:
    """Whether a container runs Triton (whose engine settings are not arguments)."""
    return any(_basename(word) == TRITON_COMMAND for word in words)
