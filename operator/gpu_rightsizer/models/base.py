"""Shared pydantic configuration: camelCase on the wire, snake_case in Python, frozen values."""

from __future__ import annotations

import pydantic
import pydantic.alias_generators


class Model(pydantic.BaseModel):
    """Base of every API-facing model: camelCase aliases, unknown fields rejected, immutable."""

    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
        allow_inf_nan=False,
    )

    def to_api(self) -> dict[str, object]:
        """The JSON-ready dict exactly as it appears in the Kubernetes API (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
