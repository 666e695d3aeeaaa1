"""flowray: run DataTorch-style flows on a laptop or a Ray cluster, from a shell or Python.

The Python API (docs/api.md)::

    import flowray

    run = flowray.start("flow.yaml", inputs={"lr": 0.1}, backend=None)   # or "ray", "HOST:PORT"
    for event in run.events():        # typed events, live; ends after run.finished
        print(event.seq, event.type)
    record = run.wait()               # a RunRecord
    flowray.validate("flow.yaml")     # list[Diagnostic]; empty when the flow is clean

Importing this package is cheap: it never imports ``ray``, ``docker`` or ``pydantic``; the
names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flowray.runtime.api import Run, prepare, start, validate
    from flowray.runtime.errors import PlanInvalid, RunInputError, SecretsMissing, StartError
    from flowray.runtime.events import Event
    from flowray.runtime.queries import events, record, runs
    from flowray.runtime.record import RunRecord
    from flowray.spec.diagnostics import Diagnostic, FlowError
    from flowray.status import Status
    from flowray.store.records import RecordError

_LAZY = {
    "Run": "flowray.runtime.api",
    "prepare": "flowray.runtime.api",
    "start": "flowray.runtime.api",
    "validate": "flowray.runtime.api",
    "PlanInvalid": "flowray.runtime.errors",
    "RunInputError": "flowray.runtime.errors",
    "SecretsMissing": "flowray.runtime.errors",
    "StartError": "flowray.runtime.errors",
    "RecordError": "flowray.store.records",
    "Event": "flowray.runtime.events",
    "events": "flowray.runtime.queries",
    "record": "flowray.runtime.queries",
    "runs": "flowray.runtime.queries",
    "RunRecord": "flowray.runtime.record",
    "Diagnostic": "flowray.spec.diagnostics",
    "FlowError": "flowray.spec.diagnostics",
    "Status": "flowray.status",
}

__all__ = [
    "Diagnostic", "Event", "FlowError", "PlanInvalid", "RecordError", "Run", "RunInputError",
    "RunRecord", "SecretsMissing", "StartError", "Status", "__version__", "events", "prepare",
    "record", "runs", "start", "validate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
