"""The ``flowray`` command line: thin commands over the runtime API.

Parses arguments, calls the API, turns its errors into messages and exit codes: 0 every job
succeeded or was skipped; 1 a job failed; 2 an invalid flow or bad arguments; 130 interrupted.
"""

from __future__ import annotations

from flowray.cli import actions, records, run, serve, server, validate  # noqa: F401  (they register commands)
from flowray.cli.app import main
from flowray.cli.common import read_env_file

__all__ = ["main", "read_env_file"]

if __name__ == "__main__":  # pragma: no cover
    main()
