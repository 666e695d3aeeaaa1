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


def local_action_folder(workspace: str, ref: str) -> str:
    """The folder a local action reference (``./path``) names, in ``workspace``."""
    return os.path.normpath(os.path.join(workspace, ref))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def outside_problem(workspace: str, folder: str) -> str | None:
    """Why the local action folder ``folder`` may not be used (the end of a sentence starting
    with the reference), or None: a local action must lie inside the working directory, as
    written and once symbolic links are resolved, so a flow cannot run code from elsewhere on
    the machine (use a git action for that)."""
    if not _inside(os.path.normpath(folder), os.path.normpath(workspace)):
        where = "is outside the working directory"
    elif not _inside(os.path.realpath(folder), os.path.realpath(workspace)):
        where = "leads (through a symbolic link) outside the working directory"
    else:
        return None
    return (f"{where}: a local action must be a folder inside it "
            "(an action from elsewhere is a git action: owner/repo@tag)")
