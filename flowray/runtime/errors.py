"""What can stop a run from starting, as exceptions that carry data (only ``cli/`` turns them
into text and exit codes, only the service into HTTP answers)."""

from __future__ import annotations

from flowray.spec.diagnostics import Diagnostic, FlowError


class StartError(Exception):
    """A run cannot start: a bad argument, a backend that cannot be reached or cannot hold a
    job, an action environment that cannot be made. ``str()`` says why and what to do."""


class PlanInvalid(FlowError):
    """The flow is valid but what was asked of it is not: an unknown ``jobs`` or ``matrix``
    filter, a ``needs`` cycle."""

    def __init__(self, flow_file: str, message: str) -> None:
        self.message = message
        super().__init__([Diagnostic(file=flow_file, line=0, col=0, path="", message=message)])


class RunInputError(FlowError):
    """A run input is missing, unknown or has the wrong type. ``input`` names it; ``reason``
    is ``required``, ``unknown`` or ``type``; ``message`` says what is wrong."""

    def __init__(self, name: str, message: str, *, reason: str, flow_file: str = "") -> None:
        self.input = name
        self.reason = reason
        self.message = message
        super().__init__([Diagnostic(file=flow_file, line=0, col=0,
                                     path=f"triggers.manual.inputs.{name}", message=message)])


class SecretsMissing(FlowError):
    """Secrets the flow reads (outside an ``if:``) were not given. ``names``: each secret
    once, as the flow writes it; the diagnostics say where each is read."""

    def __init__(self, names: list[str], diagnostics: list[Diagnostic]) -> None:
        self.names = names
        super().__init__(diagnostics)
