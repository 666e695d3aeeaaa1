"""Environment variable names and values a process can be given (no pydantic, no yaml: the
runtime checks ``env`` given to a run with it, on every run)."""

from __future__ import annotations

from flowray.spec.diagnostics import describe

_SHOWN = 60


def env_problem(name: object, value: object = None) -> str | None:
    """Why ``name`` (with ``value``) cannot be put in a process's environment, or None."""
    if not isinstance(name, str):
        return None  # the model reports it
    if not name:
        return "an environment variable name must not be empty"
    shown = describe(name, limit=_SHOWN)
    if "=" in name:
        return f"environment variable name {shown} must not contain '='"
    if "\0" in name:
        return f"environment variable name {shown} must not contain a NUL character"
    if isinstance(value, str) and "\0" in value:
        return f"the value of environment variable {shown} must not contain a NUL character"
    return None
