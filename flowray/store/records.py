"""Run records kept under ``<workspace>/.flowray/runs/<run id>/``.

Each run folder holds ``record.json`` (statuses, times, exit codes, outputs; folded from the
events and written atomically as the run goes), ``events.jsonl`` (every event, in order),
``control`` (the cancel channel, while the run goes on), ``logs/<job key>/<NN>-<step>.log``
(one file per step) and ``artifacts/``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flowray.store.fs import write_json_atomic as write_json_atomic  # records are written so

RECORD_FILE = "record.json"
# The run's control channel (runtime/control.py): a FIFO the run's process holds open while it
# runs. Opening it for writing fails with ENXIO once nobody reads it: the process is gone.
CONTROL_FILE = "control"
# Room kept aside in the run folder while the run goes on (a file of zeros, runtime/recorder.py),
# freed for the run record when the disk fills up: the record can still say how the run ended.
RESERVE_FILE = ".reserve"
# The version of record.json's format (its "schema" key); flowray.runtime.record reads it.
RECORD_SCHEMA = 1


class RecordError(LookupError):
    pass


def runs_dir(workspace: str) -> str:
    return os.path.join(workspace, ".flowray", "runs")


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: ``YYYYMMDD-HHMMSS-xxxxxx``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{os.urandom(3).hex()}"


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def run_id_problem(run_id: object) -> str | None:
    """Why ``run_id`` cannot name a run folder, or None: letters, digits, ``-`` and ``_``, at
    most 64, starting with a letter or digit."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        return (f"a run id is 1 to 64 letters, digits, '-' or '_', starting with a letter or "
                f"digit; got {run_id!r:.80}")
    return None


@dataclass
class RunSummary:
    id: str
    flow: str
    status: str
    started: float | None
    ended: float | None
    path: str

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


def run_folders(workspace: str) -> Iterator[str]:
    """The run folders of this workspace, newest first."""
    base = runs_dir(workspace)
    try:
        names = sorted(os.listdir(base), reverse=True)
    except FileNotFoundError:
        return
    for name in names:
        yield os.path.join(base, name)


# A record.json larger than this is not read (a run of 10,000 jobs writes about 10 MiB).
MAX_RECORD_BYTES = 256 << 20


def read_record(run_path: str, *, settle: bool = True) -> dict[str, Any]:
    """The record of the run folder ``run_path``, as written. A record that says ``running``
    while the process running it is gone is settled first (:func:`settle_lost`): it is read,
    and stored, as a failure that says why; ``settle=False`` reads it as it is."""
    try:
        with open(os.path.join(run_path, RECORD_FILE), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_RECORD_BYTES:
                raise RecordError(
                    f"cannot read the record of run at {run_path}: it is {size >> 20} MiB, more "
                    f"than flowray reads ({MAX_RECORD_BYTES >> 20} MiB)")
            data = json.loads(fh.read())
    except OSError as exc:
        raise RecordError(f"cannot read the record of run at {run_path}: "
                          f"{exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecordError(f"the record of run at {run_path} is not JSON: not UTF-8 text"
                          ) from None
    except ValueError as exc:
        raise RecordError(f"the record of run at {run_path} is not JSON (cut short, or "
                          f"damaged): {exc}") from None
    except RecursionError:
        raise RecordError(f"the record of run at {run_path} is not a run record: nested too "
                          f"deeply") from None
    if not isinstance(data, dict):
        raise RecordError(f"the record at {run_path} is not a run record")
    if settle and data.get("status") == "running" and owner_gone(run_path, data):
        settle_lost(run_path, data, lost_reason(data))
    return data


def owner_gone(run_path: str, data: dict[str, Any]) -> bool:
    """Whether the process that runs the run of ``run_path`` is gone (False when it cannot be
    told: the run is on another host, or another user's)."""
    host = data.get("host")
    if isinstance(host, str) and host and host != socket.gethostname():
        return False
    try:
        fd = os.open(os.path.join(run_path, CONTROL_FILE), os.O_WRONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        pass  # removed at the run's end, or never made (no FIFOs here): ask for the pid
    except OSError as exc:
        return exc.errno == errno.ENXIO  # nobody reads it
    else:
        os.close(fd)
        return False
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    return pid_gone(pid)


def pid_gone(pid: int) -> bool:
    """Whether no process of this machine has ``pid`` (False when that cannot be told: one
    of another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def lost_reason(data: dict[str, Any]) -> str:
    pid, host = data.get("pid"), data.get("host")
    who = "the flowray process that ran it"
    if isinstance(pid, int):
        who += f" (pid {pid}" + (f" on {host})" if isinstance(host, str) and host else ")")
    return (f"{who} ended before the run did: it was killed (SIGKILL?) or crashed, so the run "
            f"could not finish its record")


def settle_lost(run_path: str, data: dict[str, Any], reason: str, *,
                ended: float | None = None) -> None:
    """Mark the record ``data`` of a run whose process is gone as failed with ``reason``
    (unfinished jobs and steps too), and store it; in place. Best effort: a record that cannot
    be written (read-only, a full disk) is still returned settled. ``ended``: when the
    process died, if known (else the run's last write)."""
    for name in ("events.jsonl", RECORD_FILE) if ended is None else ():  # last sign of life
        with contextlib.suppress(OSError):
            mtime = os.path.getmtime(os.path.join(run_path, name))
            ended = mtime if ended is None else max(ended, mtime)
    data["status"] = "failure"
    data["exit_code"] = 1
    data["ended"] = ended if ended is not None else time.time()
    data["error"] = reason
    jobs = data.get("jobs")
    for job in jobs.values() if isinstance(jobs, dict) else ():
        if not isinstance(job, dict) or job.get("status") not in ("running", "queued"):
            continue
        job["error"] = "the run's process was gone" if job["status"] == "running" else \
            "not run: the run's process was gone"
        job["status"] = "failure" if job["status"] == "running" else "cancelled"
        job["ended"] = data["ended"]
        for step in job.get("steps") or ():
            if isinstance(step, dict) and step.get("status") in ("running", "queued"):
                step["status"] = "failure" if step["status"] == "running" else "cancelled"
                step["error"] = step.get("error") or "the run's process was gone"
    with contextlib.suppress(OSError, TypeError, ValueError):
        write_json_atomic(os.path.join(run_path, RECORD_FILE), data)
    # What the dead process would have removed: unread step output files (they may hold
    # secrets in clear: they are masked only when read) and the disk reserve.
    outputs = os.path.join(run_path, "outputs")
    with contextlib.suppress(OSError):
        for name in os.listdir(outputs):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(outputs, name))
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(run_path, RESERVE_FILE))


def _newest(base: str, names: list[str]) -> str:
    """The newest of ``names`` (sorted): ids order runs by the second they started; runs that
    started in the same second are told apart by their records' start times."""
    stamp = names[-1][:15]
    same = [n for n in names if n[:15] == stamp]
    if len(same) == 1:
        return same[0]

    def started(name: str) -> float:
        try:
            return float(read_record(os.path.join(base, name)).get("started") or 0.0)
        except (RecordError, TypeError, ValueError):
            return 0.0

    return max(same, key=lambda n: (started(n), n))


def find_run(workspace: str, ref: str) -> str:
    """The folder of run ``ref``: a run id, a unique prefix of one, or ``last``."""
    base = runs_dir(workspace)
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        names = []
    if not names:
        raise RecordError(f"no runs recorded in {os.path.join('.flowray', 'runs')} yet")
    if ref in ("last", "latest", "-1"):
        return os.path.join(base, _newest(base, names))
    if ref in names:
        return os.path.join(base, ref)
    hits = [n for n in names if n.startswith(ref) or n.endswith(ref)]
    if len(hits) == 1:
        return os.path.join(base, hits[0])
    if not hits:
        raise RecordError(f"no run '{ref}' (see 'flowray runs')")
    raise RecordError(f"'{ref}' matches {len(hits)} runs: {', '.join(hits[:5])}")


RUN_NUMBERS_FILE = "run-numbers.json"
_FIRST_LINE_LIMIT = 1 << 20  # run.started is the first line of events.jsonl; inputs make it long


@dataclass(frozen=True)
class RunNumber:
    """A new run's number; ``notice``: why it was recovered from the runs kept, if it was."""

    number: int
    notice: str | None = None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _numbers_of_runs(workspace: str) -> dict[str, int]:
    """Each flow's last run number as the runs under ``.flowray/runs`` tell it: the largest
    ``run_number`` their ``run.started`` events carry, or how many runs of the flow there are
    (runs of a flowray from before the number was recorded), whichever is more."""
    largest: dict[str, int] = {}
    counts: dict[str, int] = {}
    base = runs_dir(workspace)
    try:
        names = os.listdir(base)
    except OSError:
        return {}
    for name in names:
        try:
            with open(os.path.join(base, name, "events.jsonl"), "rb") as fh:
                first = json.loads(fh.readline(_FIRST_LINE_LIMIT))
        except (OSError, ValueError):
            continue  # not a run folder, or a damaged one: nothing to learn from it
        if not isinstance(first, dict) or first.get("type") != "run.started" \
                or not isinstance(first.get("flow"), str):
            continue
        flow = first["flow"]
        counts[flow] = counts.get(flow, 0) + 1
        number = first.get("run_number")
        if isinstance(number, int) and _whole(number):
            largest[flow] = max(largest.get(flow, 0), number)
    return {flow: max(count, largest.get(flow, 0)) for flow, count in counts.items()}


def next_run_number(workspace: str, flow: str) -> RunNumber:
    """The number of a new run of flow ``flow`` in this workspace: 1, 2, ... (DataTorch's
    ``run.runNumber``). Kept in ``.flowray/run-numbers.json``, under a lock, so runs that start
    at once get different numbers. When that file is missing or damaged, every flow's last
    number is recovered from the runs kept (:func:`_numbers_of_runs`), and the result says so
    where runs were found."""
    import fcntl

    base = os.path.dirname(runs_dir(workspace))
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, RUN_NUMBERS_FILE)
    shown = os.path.join(".flowray", RUN_NUMBERS_FILE)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem: str | None = None
        numbers: Any = {}
        try:
            with open(path, encoding="utf-8") as fh:
                numbers = json.load(fh)
        except FileNotFoundError:
            problem = "missing"
        except OSError as exc:
            problem = f"unreadable ({exc.strerror or exc})"
        except ValueError:
            problem = "not JSON (cut short, or damaged)"
        if problem is None and not isinstance(numbers, dict):
            problem, numbers = "not a JSON object", {}
        if problem is None and not all(_whole(v) for v in numbers.values()):
            problem = "damaged (a number that is not a whole number)"
        notice = None
        found: dict[str, int] = {}
        if problem is not None:
            kept = {k: v for k, v in numbers.items() if _whole(v)} if isinstance(numbers, dict) \
                else {}
            found = _numbers_of_runs(workspace)
            numbers = {**found, **{k: max(v, found.get(k, 0)) for k, v in kept.items()}}
        number = numbers.get(flow, 0) + 1
        if problem is not None and found:
            notice = (f"{shown} was {problem}: run numbers were recovered from the runs kept "
                      f"in .flowray/runs, so this run of '{flow}' is #{number}")
        numbers[flow] = number
        write_json_atomic(path, numbers)
    return RunNumber(number, notice)
