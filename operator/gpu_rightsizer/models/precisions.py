"""Numeric formats a model's weights can be served in, and their size per parameter."""

from __future__ import annotations

import enum


class Precision(str, enum.Enum):
    """Weight format. Values are the lower-case names used in the resource (``bf16``)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"

    def __str__(self) -> str:
        return self.value


# Bytes per parameter. FP32 4, BF16/FP16 2, FP8/INT8 1 (NVIDIA NIM LLM docs, bytes/param table);
# INT4 W4A16 with an FP16 scale per group of 128 weights is 4.125 bits = 0.515625 bytes
# (IST-DASLab/marlin README). See shared reference gpu-facts.md §2.1.
BYTES_PER_PARAMETER: dict[Precision, float] = {
    Precision.FP32: 4.0,
    Precision.BF16: 2.0,
    Precision.FP16: 2.0,
    Precision.FP8: 1.0,
    Precision.INT8: 1.0,
    Precision.INT4: 4.125 / 8,
}
