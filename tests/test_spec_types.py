"""The TypedDicts in flowray.spec.types match what the models' model_dump() returns."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from flowray.spec import models, types

ACTION: dict[str, Any] = {"name": "A", "runs": {"using": "cmd", "command": "echo"}}
FLOW: dict[str, Any] = {
    "name": "f",
    "jobs": {
        "a": {
            "steps": [{"run": "echo"}, {"action": {"name": "o/r", "tag": "v1"}}],
            "strategy": {"matrix": {"x": [1]}},
            "container": {"image": "python"},
        }
    },
}

CASES: list[tuple[type[BaseModel], Any, dict[str, Any]]] = [
    (models.Flow, types.FlowData, FLOW),
    (models.Job, types.JobData, {"steps": [{"run": "echo"}]}),
    (models.Step, types.StepData, {"run": "echo"}),
    (models.Resources, types.ResourcesData, {}),
    (models.Strategy, types.StrategyData, {}),
    (models.ActionRef, types.ActionRefData, {"name": "o/r"}),
    (models.ContainerSpec, types.ContainerData, {"image": "python"}),
    (models.Action, types.ActionData, ACTION),
    (models.Runs, types.RunsData, {"using": "cmd", "command": "echo"}),
    (models.InputSpec, types.InputSpecData, {}),
    (models.OutputSpec, types.OutputSpecData, {}),
    (models.EnvSpec, types.EnvSpecData, {}),
    (models.Branding, types.BrandingData, {}),
]


def keys(typed: Any) -> set[str]:
    return set(typed.__required_keys__) | set(typed.__optional_keys__)


@pytest.mark.parametrize(("model", "typed", "example"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_model_dump_keys_match_typed_dict(
    model: type[BaseModel], typed: Any, example: dict[str, Any]
) -> None:
    dumped = model.model_validate(example).model_dump()
    assert set(dumped) == keys(typed)
    assert set(model.model_fields) == keys(typed)


def test_nested_dumps_match() -> None:
    flow = models.Flow.model_validate(FLOW).model_dump()
    job = flow["jobs"]["a"]
    assert set(job) == keys(types.JobData)
    assert set(job["steps"][0]) == keys(types.StepData)
    assert set(job["steps"][1]["action"]) == keys(types.ActionRefData)
    assert set(job["resources"]) == keys(types.ResourcesData)
    assert set(job["strategy"]) == keys(types.StrategyData)
    assert set(job["container"]) == keys(types.ContainerData)
    action = models.Action.model_validate(
        {**ACTION, "inputs": {"a": {}}, "outputs": {"o": {}}}
    ).model_dump()
    assert set(action["runs"]) == keys(types.RunsData)
    assert set(action["inputs"]["a"]) == keys(types.InputSpecData)
    assert set(action["outputs"]["o"]) == keys(types.OutputSpecData)
