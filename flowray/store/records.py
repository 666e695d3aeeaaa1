"""Run records kept under ``<workspace>/.flowray/runs/<run id>/``.

Each run folder holds ``record.json`` (statuses, times, exit codes, outputs; folded from the
events and written atomically as the run goes), ``events.jsonl`` (every event, in order),
``control`` (the cancel channel, while the run goes on), ``logs/<job key>/<NN>-<step>.log``
(one file per step) and ``artifacts/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flowray.store.fs import write_json_atomic as write_json_atomic  # records are written so

RECORD_FILE = "record.json"
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


def iter_runs(workspace: str) -> Iterator[RunSummary]:
    """Runs of this workspace, newest first."""
    for path in run_folders(workspace):
        name = os.path.basename(path)
        try:
            rec = read_record(path)
        except RecordError:
            continue
        yield RunSummary(
            id=rec.get("id", name),
            flow=rec.get("flow", {}).get("name", "?"),
            status=rec.get("status", "?"),
            started=rec.get("started"),
            ended=rec.get("ended"),
            path=path,
        )


def read_record(run_path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(run_path, RECORD_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read the record of run at {run_path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RecordError(f"the record at {run_path} is not a run record")
    return data


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


def next_run_number(workspace: str, flow: str) -> int:
    """The number of a new run of flow ``flow`` in this workspace: 1, 2, ... (DataTorch's
    ``run.runNumber``). Kept in ``.flowray/run-numbers.json``, under a lock, so runs that start
    at once get different numbers."""
    import fcntl

    base = os.path.dirname(runs_dir(workspace))
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, RUN_NUMBERS_FILE)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8") as fh:
                numbers = json.load(fh)
        except (OSError, ValueError):
            numbers = {}
        if not isinstance(numbers, dict):
            numbers = {}
        last = numbers.get(flow)
        number = (last if isinstance(last, int) and not isinstance(last, bool) else 0) + 1
        numbers[flow] = number
        write_json_atomic(path, numbers)
    return number
