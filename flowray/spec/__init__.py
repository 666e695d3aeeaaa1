"""Flow and action files: loading with positions, validation, and errors people can act on.

Importing this package is cheap: pydantic and yaml are imported only when a file is loaded or a
schema is built, so ``flowray.spec.types`` (the plain-data shapes the executor reads) and the
diagnostics can be used without them.

- :func:`load_flow` / :func:`load_action` read, validate and check a file, or raise
  :class:`FlowError`, whose ``diagnostics`` say ``file:line:col: key.path: message``.
- :func:`coerce_input` converts a value to an action input's declared type.
- :func:`flow_schema` / :func:`action_schema` are JSON Schemas for editors.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from flowray.spec.diagnostics import Diagnostic, FlowError, LoadedFlow
from flowray.spec.inputs import InputError, coerce_input
from flowray.spec.types import ActionData

if TYPE_CHECKING:
    from flowray.spec.validate import GitActionLoader

__all__ = [
    "Diagnostic",
    "FlowError",
    "InputError",
    "LoadedFlow",
    "action_schema",
    "coerce_input",
    "flow_schema",
    "load_action",
    "load_flow",
]


def load_flow(
    path: str | os.PathLike[str],
    *,
    workspace: str | None = None,
    git_action: GitActionLoader | None = None,
    variables: Collection[str] = (),
) -> LoadedFlow:
    """Read, validate and check a flow file; raises :class:`FlowError` with every problem.

    ``workspace`` is the folder local actions (``./path``) are relative to (default: the current
    directory). ``git_action`` fetches a git action for checking (see
    :data:`flowray.spec.validate.GitActionLoader`); without it git actions are checked for
    syntax only. ``variables``: names of ``variables.NAME`` given from outside the flow (the
    service's variables), known beside the flow's own.
    """
    from flowray.spec.loader import load_flow as load

    return load(path, workspace=workspace, git_action=git_action, variables=variables)


def load_action(
    path: str | os.PathLike[str], *, file: str | None = None, shown: str | None = None
) -> ActionData:
    """Read and validate the action in folder ``path`` (its ``action-datatorch.yaml``, or
    ``.yml``, or ``file``); raises :class:`FlowError` located in the action file (named
    ``shown`` in messages, default the folder)."""
    from flowray.spec.loader import load_action as load

    return load(path, file=file, shown=shown)


def flow_schema() -> dict[str, Any]:
    """The JSON Schema of flow files."""
    from flowray.spec.schema import flow_schema as build

    return build()


def action_schema() -> dict[str, Any]:
    """The JSON Schema of action files."""
    from flowray.spec.schema import action_schema as build

    return build()
