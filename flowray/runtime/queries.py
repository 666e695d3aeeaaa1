"""Reading runs back: the runs of a workspace, one run's record, its events."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flowray.store.records import RecordError, RunSummary, find_run

if TYPE_CHECKING:
    from flowray.runtime.events import Event
    from flowray.runtime.record import RunRecord


def runs(workdir: str | os.PathLike[str] = ".", *, limit: int | None = None
         ) -> list[RunSummary]:
    """The runs recorded in ``workdir``, newest first (id, flow, status, times, folder)."""
    from flowray.runtime.record import iter_records

    out: list[RunSummary] = []
    for path, header in iter_records(os.path.abspath(os.fspath(workdir))):
        if limit is not None and len(out) >= limit:
            break
        if isinstance(header, RecordError):
            continue  # as `flowray runs` shows it: unreadable
        out.append(RunSummary(id=header.id, flow=header.flow.name, status=header.status.value,
                              started=header.started, ended=header.ended, path=path))
    return out


def record(run_id: str = "last", workdir: str | os.PathLike[str] = ".") -> RunRecord:
    """The record of run ``run_id`` (an id, a unique prefix, or ``last``), checked;
    :class:`~flowray.store.records.RecordError` names the run when it cannot be read."""
    from flowray.runtime.record import load_record

    return load_record(find_run(os.path.abspath(os.fspath(workdir)), run_id))


def events(run_id: str = "last", workdir: str | os.PathLike[str] = ".", *,
           after: int = 0) -> Iterator[Event]:
    """The events run ``run_id`` has recorded so far (those with ``seq > after``)."""
    from flowray.runtime.events import read_events

    return read_events(find_run(os.path.abspath(os.fspath(workdir)), run_id), after=after)
