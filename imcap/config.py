"""What every `params.yaml` section model is built from: a strict, frozen pydantic model, and the
constrained field types the sections share.

Each section model lives beside the code that reads it (`imcap/features/config.py`, ...);
`imcap.params` assembles them and turns pydantic's errors into one clear line. Strict mode: YAML's
`epochs: ten` or `epochs: true` fail instead of being coerced (an int is still accepted where a
float is meant, `learning_rate: 1`). No field has a default: `params.yaml` is the one place where
defaults live.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Sha256 = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{64})?$")]  # "" = not checked


class Section(BaseModel):
    """A `params.yaml` section: unknown keys, wrong types and missing keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def choice(values: Iterable[str]) -> object:
    """A string field that must be one of `values` (a registry's names, read once here)."""
    valid = tuple(values)

    def check(value: str) -> str:
        if value not in valid:
            raise PydanticCustomError("choice", "unknown value {value}; valid choices: {valid}",
                                      {"value": repr(value), "valid": ", ".join(valid)})
        return value

    return Annotated[str, AfterValidator(check)]
