"""``triggers.manual``: the typed inputs a person gives when starting a flow by hand.

flowray's own spelling is ``triggers.manual.inputs`` (typed like action inputs); DataTorch's is
``triggers.manual.form``, a JSON Schema of the start form. Both are read here into one map of
input specs, so that ``flowray run --input`` and validation treat them alike. Free of pydantic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flowray.spec.diagnostics import KeyPath, describe

# JSON Schema type -> flowray input type
FORM_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "float",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}


def manual_trigger(flow: Mapping[str, Any]) -> Mapping[str, Any]:
    triggers = flow.get("triggers")
    manual = triggers.get("manual") if isinstance(triggers, Mapping) else None
    return manual if isinstance(manual, Mapping) else {}


def form_inputs(form: Any) -> Iterator[tuple[str, dict[str, Any], KeyPath, str | None]]:
    """Each property of a JSON Schema form as (name, input spec, its key path under the form,
    a problem with it or None)."""
    if not isinstance(form, Mapping):
        return
    props = form.get("properties")
    if not isinstance(props, Mapping):
        return
    required = form.get("required")
    required = set(required) if isinstance(required, list) else set()
    for name, prop in props.items():
        path: KeyPath = ("properties", str(name))
        if not isinstance(prop, Mapping):
            yield str(name), {}, path, f"expected a JSON Schema map, got {describe(prop)}"
            continue
        kind: Any = prop.get("type", "string")
        if isinstance(kind, list):  # ["string", "null"]: the first that is not null
            kind = next((k for k in kind if k != "null"), "string")
        if kind not in FORM_TYPES:
            yield str(name), {}, (*path, "type"), (
                f"unsupported form type {describe(kind)} "
                f"(types: {', '.join(FORM_TYPES)})"
            )
            continue
        description = prop.get("description", prop.get("title"))
        yield str(name), {
            "type": FORM_TYPES[kind],
            "required": name in required,
            "default": prop.get("default"),
            "description": description if isinstance(description, str) else None,
        }, path, None


def manual_inputs(flow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The typed inputs of ``triggers.manual``: its ``form`` properties, then its ``inputs``
    (which win for a name in both). Specs that are not maps are left out (validation reports
    them)."""
    manual = manual_trigger(flow)
    out: dict[str, dict[str, Any]] = {}
    for name, spec, _, problem in form_inputs(manual.get("form")):
        if problem is None:
            out[name] = spec
    declared = manual.get("inputs")
    if isinstance(declared, Mapping):
        for name, raw in declared.items():
            if isinstance(raw, Mapping):
                out[str(name)] = {
                    "type": raw.get("type", "string"),
                    "required": bool(raw.get("required")),
                    "default": raw.get("default"),
                    "description": raw.get("description"),
                }
    return out
