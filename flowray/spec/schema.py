"""JSON Schemas of flow and action files, for editors (``flowray schema flow``)."""

from __future__ import annotations

import copy
from typing import Any

from flowray.spec.models import Action, Flow

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _one_or_list(prop: dict[str, Any]) -> dict[str, Any]:
    """A list property that also takes a single string (``needs: build``)."""
    items = prop.get("items", {"type": "string"})
    rest = {k: v for k, v in prop.items() if k not in ("type", "items", "default")}
    return {**rest, "anyOf": [items, {"type": "array", "items": items}]}


def flow_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file, by YAML key names, with descriptions."""
    schema = Flow.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = _DIALECT
    schema["title"] = "flowray flow"
    defs = schema.get("$defs", {})
    step = defs.get("Step", {}).get("properties", {})
    job = defs.get("Job", {}).get("properties", {})
    # Keys the models take under a second name (renamed before validation).
    if "with" in step:
        step["inputs"] = copy.deepcopy(step["with"])
        step["inputs"]["description"] = "inputs of the action (alias: with)"
    for props in (step, job):
        if "timeout" in props:
            props["timeout-minutes"] = copy.deepcopy(props["timeout"])
            props["timeout-minutes"]["description"] = "minutes (alias: timeout)"
    for key in ("needs", "artifacts", "reports"):
        if key in job:
            job[key] = _one_or_list(job[key])
    return schema


def action_schema() -> dict[str, Any]:
    """The JSON Schema of an action file (``action-datatorch.yaml``)."""
    schema = Action.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = _DIALECT
    schema["title"] = "flowray action"
    return schema
