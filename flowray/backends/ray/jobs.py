"""What the Ray Jobs API client (``flowray/backends/jobs_api.py``) takes from the Ray libraries:
the submission client, and Ray's own rule for which workspace files a job's working_dir holds.
Here because only ``flowray.backends.ray`` imports ``ray``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def submission_client_class() -> Any:
    """Ray's ``JobSubmissionClient``; ImportError (naming the module) where Ray or its client
    libraries are not installed."""
    import aiohttp  # noqa: F401  (the client needs them; say so before it is used)
    import requests  # noqa: F401
    from ray.job_submission import JobSubmissionClient

    # Ray logs every upload and websocket at INFO (its modules set their own levels);
    # flowray says what matters itself. Warnings (a very large file shipped) still show.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("ray.dashboard", "ray._private.runtime_env")):
            logging.getLogger(name).setLevel(logging.WARNING)
    return JobSubmissionClient


def ray_ships(workspace: str, rel: str, excludes: Sequence[str]) -> bool:
    """Whether Ray ships the file ``rel`` of ``workspace`` in a job's working_dir: not left
    out by ``excludes`` or by the .gitignore and .rayignore files of its folders (Ray reads
    those of every folder it walks through, as it zips)."""
    try:
        from ray._private.runtime_env.packaging import (
            _get_excludes,
            get_excludes_from_ignore_files,
        )
    except ImportError:  # pragma: no cover - another Ray: assume it ships the file
        return True
    root = Path(workspace).absolute()
    path = root / rel
    log = logging.getLogger(__name__)
    checks = [_get_excludes(root, list(excludes)),
              *get_excludes_from_ignore_files(root, include_gitignore=True, logger=log)]
    folder = root
    for name in path.relative_to(root).parts[:-1]:
        folder = folder / name
        if any(check(folder) for check in checks):
            return False
        checks += get_excludes_from_ignore_files(folder, include_gitignore=True, logger=log)
    return not any(check(path) for check in checks)
