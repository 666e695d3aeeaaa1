"""JSON Schemas for editors: by YAML key names, with descriptions, and true to the loader."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowray.spec import action_schema, flow_schema


def test_flow_schema_uses_yaml_keys_and_describes_them() -> None:
    schema = flow_schema()
    json.dumps(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "flowray flow"
    assert schema["required"] == ["name", "jobs"]
    assert schema["additionalProperties"] is False
    step = schema["$defs"]["Step"]["properties"]
    assert {"with", "inputs", "if", "timeout", "timeout-minutes", "continue-on-error",
            "working-directory"} <= set(step)
    assert "if_" not in step and "continue_on_error" not in step
    job = schema["$defs"]["Job"]["properties"]
    assert {"needs", "if", "timeout-minutes", "continue-on-error"} <= set(job)
    assert job["needs"]["anyOf"][0] == {"type": "string"}
    strategy = schema["$defs"]["Strategy"]["properties"]
    assert {"fail-fast", "max-parallel"} == set(strategy) - {"matrix"}
    for name, definition in schema["$defs"].items():
        for key, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{key} has no description"


def test_action_schema() -> None:
    schema = action_schema()
    json.dumps(schema)
    assert schema["title"] == "flowray action"
    assert schema["required"] == ["name", "runs"]
    using = schema["$defs"]["Runs"]["properties"]["using"]
    assert using["enum"] == ["cmd", "script", "python", "node", "docker"]


FLOW_EXAMPLE: dict[str, Any] = {
    "name": "example",
    "env": {"A": 1},
    "jobs": {
        "build": {
            "needs": "prep",
            "timeout-minutes": 5,
            "steps": [
                {"id": "s", "action": "./act", "inputs": {"a": 1}, "timeout-minutes": 1},
                {"run": "echo", "if": "${{ always() }}", "continue-on-error": True},
            ],
            "strategy": {"matrix": {"x": [1, 2]}, "fail-fast": False},
        },
        "prep": {"steps": [{"run": "echo"}], "resources": {"cpus": 2, "gpus": 0}},
    },
}


def test_schema_accepts_what_the_loader_accepts() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(FLOW_EXAMPLE, flow_schema())
    bad = {**FLOW_EXAMPLE, "jbos": {}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, flow_schema())
    jsonschema.validate(
        {"name": "A", "inputs": {"a": {"type": "integer"}}, "runs": {"using": "python",
                                                                     "main": "a.py"}},
        action_schema(),
    )
