"""A run's watchdog: when the process running a run dies without ending it (SIGKILL, a crash),
the run's steps are stopped and its record says the run failed, and why.

Starting a run starts ``/bin/sh`` in a session of its own, reading a pipe whose other end only
the run's process holds (it is not inherited by steps). At the run's end the process writes
``done`` and the shell exits (a few milliseconds per run). If the process dies first, the
shell reads an end of file and only then starts Python (``python -m
flowray.runtime.watchdog``), which stops every process carrying the run's ``FLOWRAY_RUN_ID``
(SIGTERM, grace, SIGKILL: grandchildren and daemons that left the step's session included) and
settles the record
(:func:`flowray.store.records.settle_lost`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

_SCRIPT = 'read -r line; [ "$line" = done ] || exec "$0" -m flowray.runtime.watchdog "$@"'


class Watchdog:
    """The watchdog of one run; :meth:`done` once the run's record is final."""

    def __init__(self, run_dir: str, run_id: str, grace: float) -> None:
        self._pid = 0
        self._fd = -1
        read_end, write_end = os.pipe()  # neither end is inherited by steps (O_CLOEXEC)
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
            __file__))))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        try:
            self._pid = os.posix_spawn(
                "/bin/sh",
                ["sh", "-c", _SCRIPT, sys.executable, run_dir, run_id, str(grace),
                 str(os.getpid())],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_end, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,  # no terminal's signals (Ctrl-C, a closed terminal) reach it
            )
        except OSError:
            os.close(write_end)  # no /bin/sh: a lost run is still found by its readers
        else:
            self._fd = write_end
        finally:
            os.close(read_end)

    def done(self) -> None:
        """The run ended and its record says so: the watchdog goes, having done nothing."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, b"done\n")
        os.close(self._fd)
        self._fd = -1
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)


def main(argv: list[str]) -> int:
    """The run's process is gone: stop what it left and settle its record."""
    import time

    from flowray.execute.process import sweep_run_processes
    from flowray.store.records import RecordError, lost_reason, read_record, settle_lost

    run_dir, run_id, grace = argv[0], argv[1], float(argv[2])
    died = time.time()
    stopped = sweep_run_processes(run_id, grace=grace)
    try:
        data = read_record(run_dir, settle=False)
    except RecordError:
        return 0
    if data.get("status") == "running":
        data = _folded(run_dir) or data  # the record is written twice a second, events at once
    if data.get("status") == "running":
        reason = lost_reason(data)
        if stopped:
            reason += f"; its {stopped} remaining process{'es' if stopped != 1 else ''} " \
                      f"were stopped"
        settle_lost(run_dir, data, reason, ended=died)
    return 0


def _folded(run_dir: str) -> dict[str, Any] | None:
    """The record as the run's events tell it, up to the last one written."""
    from flowray.runtime.events import read_events
    from flowray.runtime.recorder import RecordFolder

    folder = RecordFolder()
    try:
        for event in read_events(run_dir):
            folder.apply(event)
    except Exception:  # a damaged events file: the record as written will do
        return None
    return folder.record if "id" in folder.record else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
