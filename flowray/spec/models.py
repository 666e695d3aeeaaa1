"""Pydantic v2 models of flow files and action files.

These models are the single source of truth for what a flow may say. They are used to
validate; everything downstream (plan, execute) works on the plain data that
``model_dump()`` produces, typed by the TypedDicts in :mod:`flowray.spec.types`, so that a run
whose flow was validated before need not import pydantic at all.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from flowray.expr import to_text
from flowray.spec.limits import (
    MAX_CPUS,
    MAX_GPUS,
    MAX_LABEL_AMOUNT,
    MAX_MEMORY_BYTES,
    MAX_NODES,
    MAX_PARALLEL,
    MAX_RETRIES,
    MAX_TIMEOUT_MINUTES,
)
from flowray.spec.units import parse_memory

JOB_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
INPUT_TYPES = ("string", "integer", "float", "boolean", "array", "object")

Scalar = StrictStr | StrictBool | StrictInt | StrictFloat
# Minutes of a job's or a step's timeout: finite, more than 0, at most 30 days.
Minutes = Annotated[StrictFloat, Field(gt=0, le=MAX_TIMEOUT_MINUTES, allow_inf_nan=False)]


def env_to_text(value: object) -> str:
    """How a scalar env value becomes the text a process sees: as a template result would
    (null is empty, booleans ``true``/``false``, ``1500.0`` is ``1500``)."""
    return to_text(value)


def _normalize_env(value: dict[str, Any]) -> dict[str, str]:
    return {str(k): env_to_text(v) for k, v in value.items()}


def _condition_text(value: str | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else value


# Values a flow may put in an environment map: scalars become text (booleans `true`/`false`).
EnvMap = Annotated[dict[StrictStr, Scalar | None], AfterValidator(_normalize_env)]
# An `if:` condition: an expression, or a YAML boolean kept as its text.
Condition = Annotated[StrictStr | StrictBool, AfterValidator(_condition_text)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True,
                              defer_build=True)


class ActionRef(_Model):
    """The object form of ``steps[].action``."""

    name: StrictStr = Field(min_length=1, description="owner/repo of the action")
    tag: StrictStr | None = Field(default=None, description="tag, branch or commit")
    git: StrictStr | None = Field(default=None, description="any git URL of the repository")
    file: StrictStr | None = Field(default=None, description="action file name in the repository")


class ContainerSpec(_Model):
    """The object form of ``jobs.<id>.container``."""

    image: StrictStr = Field(min_length=1, description="container image, e.g. python:3.11")
    options: StrictStr | None = Field(default=None, description="extra container options")
    env: EnvMap = Field(default_factory=dict, description="environment inside the container")
    volumes: list[StrictStr] = Field(default_factory=list, description="host:container mounts")



class Resources(_Model):
    """What one job (each node of it, for a multi-node job) takes from the machine or cluster."""

    cpus: Annotated[StrictFloat, Field(gt=0, le=MAX_CPUS, allow_inf_nan=False)] = Field(
        default=1.0, description="CPU slots the job takes"
    )
    gpus: Annotated[StrictInt, Field(ge=0, le=MAX_GPUS)] | None = Field(
        default=None,
        description="unset: no pinning; 0: no GPU visible; N: N GPUs pinned",
    )
    memory: StrictStr | StrictInt | None = Field(default=None, description="e.g. 8GiB or bytes")
    accelerator: StrictStr | None = Field(default=None, description="accelerator type, e.g. H100")
    labels: dict[
        StrictStr, Annotated[StrictFloat, Field(ge=0, le=MAX_LABEL_AMOUNT, allow_inf_nan=False)]
    ] = Field(
        default_factory=dict, description="custom Ray resources and the amount of each"
    )
    nodes: Annotated[StrictInt, Field(ge=1, le=MAX_NODES)] = Field(
        default=1, description="nodes of a multi-node gang"
    )

    @field_validator("memory", mode="after")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        amount = parse_memory(v) if isinstance(v, str) else v
        if amount is not None and not 0 < amount <= MAX_MEMORY_BYTES:
            shown = repr(v) if len(repr(v)) <= 40 else "more"
            raise ValueError(f"memory must be more than 0 and at most 1 EiB, got {shown}")
        return v


class Strategy(_Model):
    """How a job fans out over a matrix."""

    matrix: dict[StrictStr, Any] = Field(
        default_factory=dict,
        description="axes (lists of values) plus optional include/exclude lists of maps",
    )
    fail_fast: StrictBool = Field(
        default=True,
        alias="fail-fast",
        description="cancel the job's other matrix cells when one fails",
    )
    max_parallel: Annotated[StrictInt, Field(ge=1, le=MAX_PARALLEL)] | None = Field(
        default=None, alias="max-parallel", description="most matrix cells running at once"
    )

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
    """One step of a job: an ``action`` or a ``run`` command, run in its own process."""

    id: Annotated[StrictStr, Field(pattern=STEP_ID_PATTERN)] | None = Field(
        default=None, description="id for references: steps.<id>.outputs.<name>"
    )
    name: StrictStr | None = Field(default=None, description="display name")
    action: StrictStr | ActionRef | None = Field(
        default=None, description="'./path', 'owner/repo@tag', 'docker://image' or a map"
    )
    run: StrictStr | None = Field(default=None, description="shell command(s) to run")
    shell: StrictStr | None = Field(
        default=None, description="bash (default), sh, python, or a command with {0}"
    )
    inputs: dict[StrictStr, Any] = Field(
        default_factory=dict, alias="with", description="inputs of the action (alias: inputs)"
    )
    if_: Condition | None = Field(
        default=None, alias="if", description="run the step only when this expression is true"
    )
    timeout: Minutes | None = Field(
        default=None, description="minutes (alias: timeout-minutes)"
    )
    continue_on_error: StrictBool | StrictStr = Field(
        default=False,
        alias="continue-on-error",
        description="a failure of this step does not fail the job",
    )
    working_directory: StrictStr | None = Field(
        default=None, alias="working-directory", description="directory the step runs in"
    )
    env: EnvMap = Field(default_factory=dict, description="environment of this step")
    cache: StrictBool | None = Field(
        default=None,
        description="reuse the outputs of an earlier run of the same action commit with the "
        "same inputs (overrides the action's cache; unset: the action's)",
    )

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
        if self.cache is not None and self.run is not None:
            raise ValueError("'cache' belongs to 'action' steps, not 'run' steps")
        return self




class Job(_Model):
    """A job: steps run in order on one machine (one gang of machines for a multi-node job)."""

    name: StrictStr | None = Field(default=None, description="display name")
    steps: list[Step] = Field(min_length=1, description="run in order, each in its own process")
    needs: list[StrictStr] = Field(
        default_factory=list, description="jobs (one id or a list) that must finish first"
    )
    if_: Condition | None = Field(
        default=None,
        alias="if",
        description="run the job only when this is true (default: needed jobs succeeded)",
    )
    resources: Resources = Field(default_factory=Resources, description="CPUs, GPUs, memory")
    strategy: Strategy | None = Field(default=None, description="matrix fan-out")
    timeout: Minutes | None = Field(
        default=None, description="minutes (alias: timeout-minutes)"
    )
    retries: Annotated[StrictInt, Field(ge=0, le=MAX_RETRIES)] = Field(
        default=0, description="retries after a failure, with backoff"
    )
    continue_on_error: StrictBool = Field(
        default=False,
        alias="continue-on-error",
        description="a failure of this job does not fail the run",
    )
    working_directory: StrictStr | None = Field(
        default=None, alias="working-directory", description="directory the steps run in"
    )
    env: EnvMap = Field(default_factory=dict, description="environment of every step")
    outputs: dict[StrictStr, Any] = Field(
        default_factory=dict, description="values later jobs read as needs.<id>.outputs.<name>"
    )
    container: StrictStr | ContainerSpec | None = Field(
        default=None, description="image every run step of the job runs in"
    )
    artifacts: list[StrictStr] = Field(
        default_factory=list, description="paths or globs collected after the job"
    )
    reports: list[StrictStr] = Field(default_factory=list, description="JUnit XML globs")

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




class Flow(_Model):
    """A flow file: named jobs, run in parallel unless ``needs`` orders them."""

    schema_: StrictStr | None = Field(
        default=None, alias="$schema", description="JSON Schema URL of the file (DataTorch)"
    )
    name: StrictStr = Field(min_length=1, description="unique among a project's flows")
    project: StrictStr | None = Field(
        default=None, description="the project the flow belongs to (pipeline.projectId)"
    )
    description: StrictStr | None = Field(default=None, description="what the flow does")
    jobs: dict[Annotated[StrictStr, Field(pattern=JOB_ID_PATTERN)], Job] = Field(
        min_length=1, description="jobs by id"
    )
    env: EnvMap = Field(default_factory=dict, description="environment of every job")
    variables: dict[StrictStr, Any] = Field(
        default_factory=dict, description="values for templates: variables.<name>"
    )
    triggers: dict[StrictStr, Any] | list[Any] | None = Field(
        default=None,
        description="manual, schedule, webhook, flow, annotatorButton; ignored by 'flowray run'",
    )
    concurrency: StrictStr | dict[StrictStr, Any] | None = Field(
        default=None,
        description="group (text; templates may read inputs, flow, event, variables), max "
        "(runs at once in the group, default 1), cancel-in-progress (default false); a text "
        "alone is the group; read by the service, ignored by 'flowray run'",
    )



# ----------------------------------------------------------------------------- action files


def _input_type(value: Any) -> Any:
    # DataTorch's runner takes `list` for `array`.
    return "array" if value == "list" else value


class InputSpec(_Model):
    """One declared input of an action."""

    type: Annotated[
        Literal["string", "integer", "float", "boolean", "array", "object"],
        BeforeValidator(_input_type),
    ] = Field(
        default="string", description="the value is converted to this type before the step starts"
    )
    required: StrictBool = Field(default=False, description="a step must give it (or a default)")
    default: Any = Field(default=None, description="used when a step does not give it")
    description: StrictStr | None = Field(default=None, description="what the input is for")


class OutputSpec(_Model):
    """One declared output of an action."""

    type: Literal["string", "integer", "float", "boolean", "array", "object"] | None = Field(
        default=None, description="the output is converted to this type"
    )
    description: StrictStr | None = Field(default=None, description="what the output holds")


# DataTorch's other names for two kinds.
_USING_ALIASES = {"commandline": "cmd", "shell": "script"}


def _using(value: Any) -> Any:
    return _USING_ALIASES.get(value, value) if isinstance(value, str) else value


class Runs(_Model):
    """How an action runs."""

    using: Annotated[
        Literal["cmd", "script", "python", "node", "docker"], BeforeValidator(_using)
    ] = Field(description="cmd | script | python | node | docker")
    main: StrictStr | None = Field(default=None, description="python/node: entry file")
    script: StrictStr | None = Field(default=None, description="script: the script file")
    command: StrictStr | None = Field(default=None, description="cmd: the command")
    image: StrictStr | None = Field(default=None, description="docker: the image")
    dockerfile: StrictStr | None = Field(default=None, description="docker: build this instead")
    entrypoint: StrictStr | None = Field(default=None, description="docker: entrypoint override")
    args: list[StrictStr] = Field(default_factory=list, description="docker: arguments")
    env: EnvMap = Field(default_factory=dict, description="environment of the action")

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



class EnvSpec(_Model):
    """One environment variable an action declares (``env:`` of an action file)."""

    description: StrictStr | None = Field(default=None, description="what the variable is for")
    required: StrictBool = Field(
        default=True, description="validation warns when it is set nowhere"
    )


def _env_specs(value: Any) -> Any:
    # `NAME: text` is short for `NAME: {description: text}`; `NAME:` (null) declares it bare.
    if isinstance(value, dict):
        return {k: ({"description": v} if isinstance(v, str) else {} if v is None else v)
                for k, v in value.items()}
    return value


class Branding(_Model):
    """How DataTorch shows an action in its catalogue (kept, not used by flowray)."""

    icon: StrictStr | None = Field(default=None, description="icon name")
    color: StrictStr | None = Field(default=None, description="colour name")


class Action(_Model):
    """An action file (``action-datatorch.yaml``)."""

    schema_: StrictStr | None = Field(
        default=None, alias="$schema", description="JSON Schema URL of the file (DataTorch)"
    )
    name: StrictStr = Field(min_length=1, description="display name of the action")
    description: StrictStr | None = Field(default=None, description="what the action does")
    author: StrictStr | None = Field(default=None, description="who wrote it")
    branding: Branding | None = Field(default=None, description="icon and colour (DataTorch)")
    env: Annotated[dict[StrictStr, EnvSpec], BeforeValidator(_env_specs)] = Field(
        default_factory=dict,
        description="environment variables the action reads: NAME: description, or a map "
        "with description and required",
    )
    inputs: dict[StrictStr, InputSpec] = Field(default_factory=dict, description="inputs by name")
    outputs: dict[StrictStr, OutputSpec] = Field(
        default_factory=dict, description="outputs by name"
    )
    runs: Runs = Field(description="how the action runs")
    cache: StrictBool = Field(
        default=False,
        description="reuse the outputs of an earlier run of this commit with the same inputs "
        "instead of running (git actions; see docs/actions.md)",
    )
