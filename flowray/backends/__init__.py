"""Where jobs run: the local pool (:mod:`flowray.backends.local`), Ray
(:mod:`flowray.backends.ray`), and the Ray Jobs API client (:mod:`flowray.backends.jobs_api`).

A backend gives the coordinator a :class:`Dispatcher`; it reports what happens through the
coordinator's :class:`RunEvents`. Backends never print: every word a person sees comes from
an event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from flowray.execute.job import JobEvents, JobRequest, JobResult
from flowray.plan.plan import JobPlan

# Set for the entrypoint of a run that `flowray submit` started: its submission id, and the
# dashboard it was submitted to (as the submitter wrote it), for the commands its output
# suggests.
SUBMISSION_ENV = "FLOWRAY_SUBMISSION_ID"
SUBMITTED_TO_ENV = "FLOWRAY_SUBMITTED_TO"


class RunEvents(JobEvents, Protocol):
    """What a dispatcher reports (from any thread), besides each step's events.

    A rank of a multi-node job reports as ``key[rank]``.
    """

    def job_started(self, job_key: str, *, node: str, host: str = "",
                    gpus: list[str] | None = None) -> None: ...

    def notice(self, text: str, job_key: str | None = None) -> None: ...


class Dispatcher(Protocol):
    """Runs jobs somewhere; calls ``done`` (from any thread) when a job ends."""

    def try_start(self, plan: JobPlan, request_for: Callable[[list[str] | None], JobRequest],
                  done: Callable[[JobResult], None]) -> bool: ...

    def cancel(self) -> None: ...

    def cancel_job(self, key: str) -> None: ...
