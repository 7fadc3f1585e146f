"""Numeric formats a model's weights can be served in, and their size per parameter."""

from __future__ import annotations

import enum

import pydantic

from gpu_rightsizer.models import base


class Precision(enum.StrEnum):
    """Weight format. Values are the lower-case names used in the resource (``bf16``)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


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


class PrecisionFacts(base.Model):
    """Published figures about one weight format, with their sources (data/precisions.yaml)."""

    precision: Precision
    quality_recovery: float = pydantic.Field(
        gt=0, le=1, description="default fraction of BF16 quality kept, when a variant omits it"
    )
    quality_source: str
    native_speedup: float = pydantic.Field(
        ge=1, description="throughput factor over BF16 where the GPU has tensor cores for it"
    )
    speedup_source: str


class PrecisionTable(base.Model):
    """All formats' facts; every format must be present exactly once."""

    precisions: tuple[PrecisionFacts, ...]

    @pydantic.model_validator(mode="after")
    def _complete(self) -> PrecisionTable:
        seen = [p.precision for p in self.precisions]
        if sorted(seen) != sorted(Precision) or len(seen) != len(set(seen)):
            raise ValueError("precisions: list every format exactly once")
        return self

    def get(self, precision: Precision) -> PrecisionFacts:
        return next(p for p in self.precisions if p.precision == precision)
