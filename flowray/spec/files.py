"""Which file in an action folder is its action file (one definition for the loader,
validation, the action cache and the validated-flow cache)."""

from __future__ import annotations

import os

# The largest flow or action file read (docs/flow-syntax.md, "Limits"); larger ones are refused
# before they are parsed. The limits on what a file holds are in yamlpos.py.
MAX_FILE_BYTES = 4 * 2**20

# The action file a folder must hold when a reference's ``file:`` does not say otherwise.
ACTION_FILES = ("action-datatorch.yaml", "action-datatorch.yml")


def find_action_file(folder: str, file: str | None = None) -> str | None:
    """The name of the action file in ``folder`` (``file``, else the first of ACTION_FILES
    there), or None when there is none."""
    names = (file,) if file else ACTION_FILES
    return next((n for n in names if os.path.isfile(os.path.join(folder, n))), None)


def action_file(folder: str, file: str | None = None) -> str:
    """The path of the action file of ``folder``: the one there, else where it would be."""
    return os.path.join(folder, find_action_file(folder, file) or file or ACTION_FILES[0])
