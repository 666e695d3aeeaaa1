"""Pydantic v2 models of flow files and action files.

These models are the single source of truth for what a flow may say. They are used to
validate; everything downstream (plan, execute) works on the plain data that
``model_dump()`` produces, typed by the TypedDicts in :mod:`flowray.spec.types`, so that a run
whose flow was validated before need not import pydantic at all.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

JOB_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
INPUT_TYPES = ("string", "integer", "float", "boolean", "array", "object")

Scalar = StrictStr | StrictBool | StrictInt | StrictFloat
# Values a flow may put in an environment map: scalars become text (booleans `true`/`false`).
EnvMap = dict[StrictStr, Scalar | None]


def env_to_text(value: object) -> str:
    """How a scalar env value becomes the text a process sees."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _normalize_env(value: dict[str, Any]) -> dict[str, str]:
    return {str(k): env_to_text(v) for k, v in value.items()}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ActionRef(_Model):
    """The object form of ``steps[].action``."""

    name: StrictStr = Field(min_length=1, description="owner/repo of the action")
    tag: StrictStr | None = Field(default=None, description="tag, branch or commit")
    git: StrictStr | None = Field(default=None, description="any git URL of the repository")
    file: StrictStr | None = Field(default=None, description="action file name in the repository")


class ContainerSpec(_Model):
    image: StrictStr = Field(min_length=1)
    options: StrictStr | None = None
    env: EnvMap = Field(default_factory=dict)
    volumes: list[StrictStr] = Field(default_factory=list)

    @field_validator("env", mode="after")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        return _normalize_env(v)


class Resources(_Model):
    cpus: Annotated[float, Field(gt=0)] = Field(default=1.0, description="CPU slots the job takes")
    gpus: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="unset: no pinning; 0: no GPU visible; N: N GPUs pinned",
    )
    memory: StrictStr | StrictInt | None = Field(default=None, description="e.g. 8GiB or bytes")
    accelerator: StrictStr | None = Field(default=None, description="accelerator type, e.g. H100")
    labels: dict[StrictStr, float] = Field(default_factory=dict, description="custom resources")
    nodes: Annotated[int, Field(ge=1)] = Field(default=1, description="nodes of a multi-node gang")

    @field_validator("memory", mode="after")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, str):
            parse_memory(v)
        return v


_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}


def parse_memory(text: str | int) -> int:
    """Bytes in a memory amount such as ``512MiB``, ``8G`` or ``1000``."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _MEMORY_UNITS:
        raise ValueError(f"'{text}' is not a memory amount (examples: 512MiB, 8GiB, 2G, 1000000)")
    return int(float(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()])


class Strategy(_Model):
    matrix: dict[StrictStr, Any] = Field(
        default_factory=dict,
        description="axes (lists of values) plus optional include/exclude lists of maps",
    )
    fail_fast: StrictBool = Field(default=True, alias="fail-fast")
    max_parallel: Annotated[int, Field(ge=1)] | None = Field(default=None, alias="max-parallel")

    @field_validator("matrix", mode="after")
    @classmethod
    def _matrix(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, values in v.items():
            if key in ("include", "exclude"):
                if not isinstance(values, list) or not all(isinstance(x, dict) for x in values):
                    raise ValueError(f"matrix.{key} must be a list of maps")
            elif not isinstance(values, list) or not values:
                raise ValueError(f"matrix axis '{key}' must be a non-empty list of values")
        return v


class Step(_Model):
    id: Annotated[StrictStr, Field(pattern=STEP_ID_PATTERN)] | None = None
    name: StrictStr | None = None
    action: StrictStr | ActionRef | None = None
    run: StrictStr | None = None
    shell: StrictStr | None = Field(
        default=None, description="bash (default), sh, python, or a command with {0}"
    )
    inputs: dict[StrictStr, Any] = Field(default_factory=dict, alias="with")
    if_: StrictStr | StrictBool | None = Field(default=None, alias="if")
    timeout: Annotated[float, Field(gt=0)] | None = Field(default=None, description="minutes")
    continue_on_error: StrictBool | StrictStr = Field(default=False, alias="continue-on-error")
    working_directory: StrictStr | None = Field(default=None, alias="working-directory")
    env: EnvMap = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "inputs" in data and "with" in data:
                raise ValueError("use either 'inputs' or 'with', not both")
            if "inputs" in data:
                data = {("with" if k == "inputs" else k): v for k, v in data.items()}
            if "timeout-minutes" in data:
                if "timeout" in data:
                    raise ValueError("use either 'timeout' or 'timeout-minutes', not both")
                data = {("timeout" if k == "timeout-minutes" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _one_of(self) -> Step:
        if (self.action is None) == (self.run is None):
            raise ValueError("a step needs exactly one of 'action' or 'run'")
        if self.inputs and self.run is not None:
            raise ValueError("'inputs'/'with' belong to 'action' steps, not 'run' steps")
        return self

    @field_validator("if_", mode="after")
    @classmethod
    def _if(cls, v: str | bool | None) -> str | None:
        if isinstance(v, bool):
            return "true" if v else "false"
        return v

    @field_validator("env", mode="after")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        return _normalize_env(v)


class Job(_Model):
    name: StrictStr | None = None
    steps: list[Step] = Field(min_length=1)
    needs: list[StrictStr] = Field(default_factory=list)
    if_: StrictStr | StrictBool | None = Field(default=None, alias="if")
    resources: Resources = Field(default_factory=Resources)
    strategy: Strategy | None = None
    timeout: Annotated[float, Field(gt=0)] | None = Field(default=None, description="minutes")
    retries: Annotated[int, Field(ge=0)] = 0
    continue_on_error: StrictBool = Field(default=False, alias="continue-on-error")
    working_directory: StrictStr | None = Field(default=None, alias="working-directory")
    env: EnvMap = Field(default_factory=dict)
    outputs: dict[StrictStr, Any] = Field(default_factory=dict)
    container: StrictStr | ContainerSpec | None = None
    artifacts: list[StrictStr] = Field(default_factory=list)
    reports: list[StrictStr] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and "timeout-minutes" in data:
            if "timeout" in data:
                raise ValueError("use either 'timeout' or 'timeout-minutes', not both")
            data = {("timeout" if k == "timeout-minutes" else k): v for k, v in data.items()}
        return data

    @field_validator("needs", mode="before")
    @classmethod
    def _needs(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("artifacts", "reports", mode="before")
    @classmethod
    def _globs(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("if_", mode="after")
    @classmethod
    def _if(cls, v: str | bool | None) -> str | None:
        if isinstance(v, bool):
            return "true" if v else "false"
        return v

    @field_validator("env", mode="after")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        return _normalize_env(v)


class Flow(_Model):
    name: StrictStr = Field(min_length=1)
    description: StrictStr | None = None
    jobs: dict[Annotated[StrictStr, Field(pattern=JOB_ID_PATTERN)], Job] = Field(min_length=1)
    env: EnvMap = Field(default_factory=dict)
    variables: dict[StrictStr, Any] = Field(default_factory=dict)
    triggers: dict[StrictStr, Any] | list[Any] | None = None

    @field_validator("env", mode="after")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        return _normalize_env(v)


# ----------------------------------------------------------------------------- action files


class InputSpec(_Model):
    type: Literal["string", "integer", "float", "boolean", "array", "object"] = "string"
    required: StrictBool = False
    default: Any = None
    description: StrictStr | None = None


class OutputSpec(_Model):
    type: Literal["string", "integer", "float", "boolean", "array", "object"] | None = None
    description: StrictStr | None = None


class Runs(_Model):
    using: Literal["cmd", "script", "python", "node", "docker"]
    main: StrictStr | None = None
    script: StrictStr | None = None
    command: StrictStr | None = None
    image: StrictStr | None = None
    dockerfile: StrictStr | None = None
    entrypoint: StrictStr | None = None
    args: list[StrictStr] = Field(default_factory=list)
    env: EnvMap = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_entry(self) -> Runs:
        need = {
            "python": ("main",),
            "node": ("main",),
            "script": ("script",),
            "cmd": ("command",),
            "docker": ("image", "dockerfile"),
        }[self.using]
        if not any(getattr(self, k) for k in need):
            raise ValueError(
                f"runs.using '{self.using}' needs "
                + " or ".join(f"'{k}'" for k in need)
            )
        return self

    @field_validator("env", mode="after")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        return _normalize_env(v)


class Action(_Model):
    name: StrictStr = Field(min_length=1)
    description: StrictStr | None = None
    author: StrictStr | None = None
    inputs: dict[StrictStr, InputSpec] = Field(default_factory=dict)
    outputs: dict[StrictStr, OutputSpec] = Field(default_factory=dict)
    runs: Runs
