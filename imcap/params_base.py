"""What every `params.yaml` model is built from (a strict, frozen pydantic model and the
constrained field types the sections share) and how a stage loads the sections it reads.

Each section model lives beside the code that reads it (`imcap/features/params.py`, ...), and so
does each stage's model, the sections that stage reads (`FeatureStageParams`, ...): a stage
imports, and so depends on, only its own sections' code. `imcap.params` assembles every stage's
model into the whole file, which the pipeline's first stage (`check`) validates whenever
`params.yaml` changes. Strict mode: YAML's `epochs: ten` or `epochs: true` fail instead of being
coerced (an int is still accepted where a float is meant, `learning_rate: 1`); `.inf` and `.nan`
fail wherever a number is meant. No field has a
default: `params.yaml` is the one place where defaults live.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Sha256 = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{64})?$")]  # "" = not checked
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what numpy's and torch's generators take
# Bounds far above any real setting that refuse a typo (`processes: 1000`, `image_size: 100000`)
# before it starts a thousand processes or allocates gigabytes per image.
MAX_PROCESSES = 64  # processes or workers of one machine (one process per GPU)
MAX_PIXELS = 1024  # the side of an image generated or fed to an encoder
MAX_BATCH = 65536  # captions or images in one batch
MAX_WORDS = 500  # words in a caption
Processes = Annotated[int, Field(gt=0, le=MAX_PROCESSES)]
Workers = Annotated[int, Field(ge=0, le=MAX_PROCESSES)]  # 0: the process itself
Pixels = Annotated[int, Field(gt=0, le=MAX_PIXELS)]
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH)]
Words = Annotated[int, Field(gt=0, le=MAX_WORDS)]

PARAMS_FILE = Path("params.yaml")


class SpeedOnly:
    """Marks a field that changes how fast a stage runs and never what it computes
    (`Annotated[int, SPEED_ONLY]`, each proven by a test that runs twice and compares): it is
    not among its stage's `dvc.yaml` params, so changing it reruns nothing, nor in the train
    stage's resume fingerprint."""


SPEED_ONLY = SpeedOnly()


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: YAML 1.1 reads `1e-3`, `1E-3` and `5e-05`
    (how `dvc exp run -S x=0.00005` writes the value back; DVC itself reads YAML 1.2) as
    strings."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def load_yaml(text: str) -> Any:
    """`text` parsed as params.yaml is: every number DVC or a user writes is a number."""
    return yaml.load(text, Loader=ParamsLoader)  # a SafeLoader


class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


class Section(BaseModel):
    """A `params.yaml` section: unknown keys, wrong types and missing keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    def as_flat_dict(self) -> dict[str, Any]:
        """`{"train.epochs": 20, ...}`: the form MLflow params and DVC `-S` use."""
        return flatten(self.model_dump(by_alias=True))

    def result_params(self) -> dict[str, Any]:
        """`as_flat_dict` without the speed-only keys: what can change a result."""
        fast = speed_only_keys(type(self))
        return {key: value for key, value in self.as_flat_dict().items() if key not in fast}


def speed_only_keys(model: type[Section], prefix: str = "") -> set[str]:
    """The flat keys (`train.num_workers`) of `model`'s fields marked `SPEED_ONLY`, in nested
    sections too."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        if any(isinstance(meta, SpeedOnly) for meta in field.metadata):
            keys.add(key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            keys |= speed_only_keys(field.annotation, key + ".")
    return keys


def choice(values: Iterable[str]) -> object:
    """A string field that must be one of `values` (a registry's names, read once here)."""
    valid = tuple(values)

    def check(value: str) -> str:
        if value not in valid:
            raise PydanticCustomError("choice", "unknown value {value}; valid choices: {valid}",
                                      {"value": repr(value), "valid": ", ".join(valid)})
        return value

    return Annotated[str, AfterValidator(check)]


Model = TypeVar("Model", bound=Section)


def read_params_file(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The params file as a nested dict; `ParamError` naming the file if it is unreadable."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ParamError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamError(f"{path}: expected a mapping at the top level")
    return raw


def load_stage_params(model: type[Model], path: str | Path = PARAMS_FILE) -> Model:
    """The sections of the params file that `model` (one stage's) declares, validated; the
    other sections are the `check` stage's to validate."""
    raw = read_params_file(path)
    return validate_params(model, {k: v for k, v in raw.items() if k in model.model_fields},
                           source=str(path))


def validate_params(model: type[Model], raw: Any, source: str = "params") -> Model:
    """Build `model` from a nested dict, rejecting unknown keys, wrong types and bad values
    with a `ParamError` naming the first bad value and what was expected."""
    if not isinstance(raw, dict):
        raise ParamError(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ParamError(f"{source}: {_describe(model, err.errors()[0])}") from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"epochs": 20}}` -> `{"train.epochs": 20}`."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def _describe(model: type[Section], error: dict[str, Any]) -> str:
    """One pydantic error as a line that names the key, the value and what was expected."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                  for part in error["loc"]  # not a union's member tags ("constrained-int")
                  if isinstance(part, int) or part.isidentifier()).removeprefix(".")  # beams[1]
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        section = key.rpartition(".")[0]
        fields = _section_fields(model, section)
        where = f"section {section!r}" if section else "the top level"
        return (f"unknown key {key.rpartition('.')[2]!r} in {where}; "
                f"valid keys: {', '.join(fields)}")
    if kind == "missing":
        return f"{key} is missing (params.yaml sets every key; see the repository's params.yaml)"
    if kind == "choice":
        return f"{key}: {error['msg']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "dict_type"):
        return f"{key} must be a section (mapping), got {value!r}"
    bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
              "less_than_equal": "<= {le}", "too_short": "a non-empty list",
              "string_too_short": "a non-empty string"}
    if kind in bounds:
        return f"{key} must be {bounds[kind].format(**ctx)}, got {value!r}"
    names = {"int_type": "int", "float_type": "float", "finite_number": "a finite number",
             "string_type": "str",
             "bool_type": "bool", "list_type": "a list", "string_pattern_mismatch":
             "empty or 64 hex digits"}
    return f"{key} must be {names.get(kind, error['msg'])}, got {value!r}"


def _section_fields(model: type[Section], section: str) -> list[str]:
    for name in filter(None, section.split(".")):
        model = model.model_fields[name].annotation
    return [field.alias or name for name, field in model.model_fields.items()]
