"""Plain-data shapes of a validated flow and action: what ``Model.model_dump()`` returns.

The planner and executor read these, never the pydantic models, so a run whose flow is in the
validated-flow cache starts without importing pydantic. Keep in step with ``models.py``
(``tests/test_spec_types.py`` checks the keys match).
"""

from __future__ import annotations

from typing import Any, TypedDict


class ActionRefData(TypedDict):
    name: str
    tag: str | None
    git: str | None
    file: str | None


class ContainerData(TypedDict):
    image: str
    options: str | None
    env: dict[str, str]
    volumes: list[str]


class ResourcesData(TypedDict):
    cpus: float
    gpus: int | None
    memory: str | int | None
    accelerator: str | None
    labels: dict[str, float]
    nodes: int


class StrategyData(TypedDict):
    matrix: dict[str, Any]
    fail_fast: bool
    max_parallel: int | None


class StepData(TypedDict):
    id: str | None
    name: str | None
    action: str | ActionRefData | None
    run: str | None
    shell: str | None
    inputs: dict[str, Any]
    if_: str | None
    timeout: float | None
    continue_on_error: bool | str
    working_directory: str | None
    env: dict[str, str]
    cache: bool | None


class JobData(TypedDict):
    name: str | None
    steps: list[StepData]
    needs: list[str]
    if_: str | None
    resources: ResourcesData
    strategy: StrategyData | None
    timeout: float | None
    retries: int
    continue_on_error: bool
    working_directory: str | None
    env: dict[str, str]
    outputs: dict[str, Any]
    container: str | ContainerData | None
    artifacts: list[str]
    reports: list[str]


class FlowData(TypedDict):
    schema_: str | None
    name: str
    project: str | None
    description: str | None
    jobs: dict[str, JobData]
    env: dict[str, str]
    variables: dict[str, Any]
    triggers: dict[str, Any] | list[Any] | None
    concurrency: str | dict[str, Any] | None


class InputSpecData(TypedDict):
    type: str
    required: bool
    default: Any
    description: str | None


class OutputSpecData(TypedDict):
    type: str | None
    description: str | None


class RunsData(TypedDict):
    using: str
    main: str | None
    script: str | None
    command: str | None
    image: str | None
    dockerfile: str | None
    entrypoint: str | None
    args: list[str]
    env: dict[str, str]


class EnvSpecData(TypedDict):
    description: str | None
    required: bool


class BrandingData(TypedDict):
    icon: str | None
    color: str | None


class ActionData(TypedDict):
    schema_: str | None
    name: str
    description: str | None
    author: str | None
    branding: BrandingData | None
    env: dict[str, EnvSpecData]
    inputs: dict[str, InputSpecData]
    outputs: dict[str, OutputSpecData]
    runs: RunsData
    cache: bool
