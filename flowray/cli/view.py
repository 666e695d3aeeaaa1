"""Live terminal output of a run: each line prefixed by ``job/step``, colored on a terminal."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from flowray.execute.job import StepResult
from flowray.status import Status

_COLORS = ("36", "35", "34", "33", "32", "96", "95", "94", "93", "92")
_STATUS_MARK = {
    Status.SUCCESS: ("✓", "32"),
    Status.FAILURE: ("✗", "31"),
    Status.CANCELLED: ("⊘", "33"),
    Status.SKIPPED: ("-", "90"),
}


class Console:
    """Thread-safe printer; ``quiet`` drops step output but keeps the summary and errors."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 color: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.color = bool(isatty and isatty()) if color is None else color
        self._lock = threading.Lock()
        self._job_color: dict[str, str] = {}

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _prefix(self, job_key: str, step_key: str) -> str:
        label = f"{job_key}/{step_key}"
        if not self.color:
            return label
        code = self._job_color.get(job_key)
        if code is None:
            code = self._job_color[job_key] = _COLORS[len(self._job_color) % len(_COLORS)]
        return self._paint(label, code)

    def write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def info(self, text: str) -> None:
        self.write(text + "\n")

    def error(self, text: str) -> None:
        """A message about the run itself (not a step's output): always to stderr."""
        with self._lock:
            sys.stderr.write(self._paint(text, "31") + "\n")
            sys.stderr.flush()

    def step_started(self, job_key: str, step: StepResult) -> None:
        if self.quiet:
            return
        self.write(f"{self._prefix(job_key, step.key)} {self._paint('▶ ' + step.name, '1')}\n")

    def step_line(self, job_key: str, step: StepResult, line: str) -> None:
        if self.quiet:
            return
        self.write(f"{self._prefix(job_key, step.key)} | {line}\n")

    def step_finished(self, job_key: str, step: StepResult) -> None:
        if step.status is Status.SUCCESS and step.outcome is not Status.FAILURE:
            return
        if self.quiet and step.status is not Status.FAILURE:
            return
        mark, code = _STATUS_MARK.get(step.status, ("?", "0"))
        what = step.status.value
        if step.outcome is Status.FAILURE and step.status is Status.SUCCESS:
            what = "failed (continue-on-error)"
        detail = f": {step.error}" if step.error else ""
        self.write(
            f"{self._prefix(job_key, step.key)} {self._paint(f'{mark} {what}{detail}', code)}\n"
        )

    def job_finished(self, key: str, name: str, status: Status, seconds: float,
                     error: str | None) -> None:
        if self.quiet and status is not Status.FAILURE:
            return
        mark, code = _STATUS_MARK.get(status, ("?", "0"))
        detail = f": {error}" if error else ""
        self.write(self._paint(f"{mark} job {name} {status.value} in {seconds:.2f}s{detail}",
                               code) + "\n")
