"""The run record (``record.json``) as a typed model, and the reader that checks it.

A run's record is written as a plain dict, so that writing stays cheap and free of pydantic;
this module is for readers only, and ``import flowray`` and ``flowray run`` never import it.
:func:`load_record` reads a run folder's record and returns a :class:`RunRecord`, or raises
:class:`RecordShapeError` (a :class:`~flowray.store.records.RecordError`) whose message names
the run and its first problems as ``key.path: message``.

Compatibility:

- The record names its format's version in ``schema`` (:data:`RECORD_SCHEMA`). A record with a
  greater ``schema`` was written by a newer flowray and is refused with a message that says
  so; one without ``schema`` was written by a flowray from before the record was versioned
  and is read as schema 1 if its shape fits.
- Keys this flowray does not know are ignored (a newer flowray may add keys without bumping
  ``schema``); keys every record has had since the first flowray are required, with their
  types. Keys added later (``pid``, ``host``, ``actions``, ``lost_attempts``, ``artifacts``,
  ``reports``, ``warnings``, ``ranks``, ``trigger``, ``backend``, a step's ``kind`` and
  ``cached``, an attempt's ``node`` and ``ranks``, the reports' ``cases`` and
  ``cases_omitted``) default to what is written when there is nothing to say (``None`` where
  nothing is known: a step's ``kind``, ``pid``, ``trigger``...).
- Values are checked strictly (a number is not a string, ``"3"`` is not an integer), except
  that an integer is a number.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from flowray.execute.artifacts import MAX_CASES, MAX_MESSAGE, MAX_NAME, MAX_TEXT
from flowray.spec.diagnostics import describe, format_path
from flowray.status import Status
from flowray.store.records import (
    RECORD_FILE,
    RECORD_SCHEMA,
    RecordError,
    read_record,
    run_folders,
)

__all__ = [
    "RECORD_SCHEMA",
    "AttemptRecord",
    "FlowRef",
    "JobRecord",
    "RankRecord",
    "RecordError",
    "RecordShapeError",
    "ReportsRecord",
    "RunHeader",
    "RunRecord",
    "StepRecord",
    "TestCaseRecord",
    "iter_records",
    "load_record",
    "record_schema",
    "validate_record",
]

# The version of the record's shape. Bump it when a reader of the old shape would misread a
# new record (a key changes meaning or type, a required key goes); adding keys needs no bump.

# Problems a message lists before it says how many more there are.
_SHOWN_PROBLEMS = 5

_STATUSES = tuple(s.value for s in Status)


def _attempt_status(value: Any) -> Status | Literal["lost"]:
    if value == "lost":
        return "lost"
    if isinstance(value, Status):
        return value
    if isinstance(value, str) and value in _STATUSES:
        return Status(value)
    raise PydanticCustomError(
        "enum", "Input should be {expected}",
        {"expected": ", ".join(f"'{s}'" for s in (*_STATUSES, "lost"))},
    )


# Statuses are strings in JSON: these fields take the value as well as the enum member.
StatusValue = Annotated[Status, Field(strict=False)]
# An earlier attempt also ends "lost": its node or worker was lost under it (Ray).
AttemptStatus = Annotated[Status | Literal["lost"], BeforeValidator(_attempt_status)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def _f(description: str, **kwargs: Any) -> Any:
    return Field(description=description, **kwargs)


class StepRecord(_Record):
    """One step of a job's attempt (``jobs.<key>.steps[i]``)."""

    index: int = _f("the step's position in the job, from 0")
    key: str = _f("unique in the job: the step's id or its 1-based position")
    id: str | None = _f("the step's id, if it has one")
    name: str = _f("the step's display name")
    status: StatusValue = _f("the step's status (success when continue-on-error let a "
                             "failure pass)")
    outcome: StatusValue | None = _f("the status before continue-on-error")
    exit_code: int | None = _f("the exit code of the step's process, once it ended")
    started: float | None = _f("when the step started (seconds since the epoch)")
    ended: float | None = _f("when the step ended (seconds since the epoch)")
    outputs: dict[str, Any] = _f("the step's outputs")
    log: str | None = _f("the step's log file, relative to the run folder")
    error: str | None = _f("why the step failed, when flowray knows more than its exit code")
    kind: str | None = _f(
        "run, cmd, script, python, node or docker ('action': the step's action was not "
        "loaded); absent in records of older flowray", default=None)
    cached: bool = _f(
        "the outputs came from the action result cache and the action did not run (its "
        "exit_code is null); absent (false) in records of older flowray", default=False)


class RankRecord(_Record):
    """One node of a multi-node job (``resources.nodes`` > 1) on Ray."""

    rank: int = _f("the node's rank in the job's gang, from 0")
    node: str = _f("the node the rank ran on")
    status: StatusValue = _f("the rank's status")
    error: str | None = _f("why the rank failed or was lost")
    steps: list[StepRecord] = _f("the rank's steps")


class AttemptRecord(_Record):
    """An earlier attempt of a job that ran again (``jobs.<key>.previous_attempts[i]``)."""

    attempt: int = _f("the attempt's number, from 1")
    status: AttemptStatus = _f("how the attempt ended: a status, or 'lost' (its node or "
                               "worker was lost under it)")
    error: str | None = _f("why the attempt failed")
    node: str = _f("where the attempt ran, when the backend says", default="")
    started: float | None = _f("when the attempt started (seconds since the epoch)")
    ended: float | None = _f("when the attempt ended (seconds since the epoch)")
    steps: list[StepRecord] = _f("the attempt's steps (rank 0's)")
    ranks: list[RankRecord] = _f("each node of a multi-node job", default_factory=list)


class TestCaseRecord(_Record):
    """One test case of a job's JUnit reports (``jobs.<key>.reports.cases[i]``). Its strings
    are masked (a secret a test printed shows as ``***``), then cut to a cap with a marker
    that says how many characters were cut."""

    __test__ = False  # not a test class, although its name says Test (pytest collects those)

    suite: str = _f(f"the name of the <testsuite> the case is in ('' if it has none); at "
                    f"most {MAX_NAME:,} characters")
    classname: str = _f(f"the case's classname attribute ('' if it has none); at most "
                        f"{MAX_NAME:,} characters")
    name: str = _f(f"the case's name attribute ('' if it has none); at most {MAX_NAME:,} "
                   f"characters")
    status: Literal["passed", "failure", "error", "skipped"] = _f(
        "failure, error or skipped: the case holds that element (the first of them, in this "
        "order); passed: none of them")
    time: float | None = _f("the case's time attribute (seconds), if it has a number there")
    message: str | None = _f(
        f"the failure, error or skipped element's message attribute, else the first line of "
        f"its text; at most {MAX_MESSAGE:,} characters")
    text: str | None = _f(
        f"the failure, error or skipped element's text (a traceback, what the test printed); "
        f"at most {MAX_TEXT:,} characters")


class ReportsRecord(_Record):
    """The JUnit reports a job's ``reports`` globs matched: counts of all their test cases, and
    the cases themselves, the failed ones first, up to a cap that keeps a record small."""

    tests: int = _f("test cases")
    failures: int = _f("failed test cases")
    errors: int = _f("test cases that raised errors")
    skipped: int = _f("skipped test cases")
    files: int = _f("report files read")
    passed: int = _f("test cases that passed")
    cases: list[TestCaseRecord] = _f(
        f"the test cases: failures and errors, then skipped, then passed (each in the order "
        f"of the reports), at most {MAX_CASES}; absent (empty) in records of older flowray",
        default_factory=list)
    cases_omitted: int = _f(
        "test cases read but left out of cases (beyond its cap); a report that gives only "
        "counts on <testsuite> has no cases to keep, and none are omitted; absent (0) in "
        "records of older flowray", default=0)


class JobRecord(_Record):
    """One job (or matrix cell) of the run (``jobs.<key>``)."""

    key: str = _f("unique in the run: the job id, or <id>.<n> for the n-th matrix cell")
    id: str = _f("the job's id in the flow")
    name: str = _f("the job's display name")
    matrix: dict[str, Any] | None = _f("the matrix cell's values")
    needs: list[str] = _f("the ids of the jobs this job needs")
    status: StatusValue = _f("the job's status")
    started: float | None = _f("when the job's first attempt started (seconds since the "
                               "epoch)")
    ended: float | None = _f("when the job ended (seconds since the epoch)")
    attempts: int = _f("attempts started, the lost ones included")
    lost_attempts: int = _f("attempts lost with their node", default=0)
    node: str = _f("where the last attempt ran, when the backend says")
    outputs: dict[str, Any] = _f("the job's outputs")
    error: str | None = _f("why the job failed, was cancelled or skipped")
    steps: list[StepRecord] = _f("the last attempt's steps (rank 0's)")
    artifacts: list[str] = _f("artifact files kept, relative to the run folder",
                              default_factory=list)
    reports: ReportsRecord | None = _f("the job's JUnit reports: counts and test cases",
                                       default=None)
    warnings: list[str] = _f("things the job wants a person to know",
                             default_factory=list)
    ranks: list[RankRecord] = _f("each node of a multi-node job", default_factory=list)
    previous_attempts: list[AttemptRecord] = _f("the attempts before the last one")


class FlowRef(_Record):
    name: str = _f("the flow's name")
    file: str = _f("the flow file the run was started from")


class _RunFields(_Record):
    # "schema" would shadow BaseModel.schema(): the field has another name, the key is kept.
    schema_version: int = _f(
        f"the record format's version ({RECORD_SCHEMA}); records of flowray from before it "
        f"was versioned lack it and are read as 1",
        default=RECORD_SCHEMA, alias="schema", ge=1, le=RECORD_SCHEMA)
    id: str = _f("the run's id")
    flow: FlowRef = _f("the flow that ran")
    workspace: str = _f("the workspace folder")
    pid: int | None = _f("the process that ran the run",
                         default=None)
    host: str | None = _f("the host the run's process is on", default=None)
    status: StatusValue = _f("the run's status")
    exit_code: int | None = _f("the run's exit code, once it ended")
    started: float = _f("when the run started (seconds since the epoch)")
    ended: float | None = _f("when the run ended (seconds since the epoch)")
    inputs: dict[str, Any] = _f("the flow's inputs (secrets masked)")
    actions: dict[str, str] = _f("the commit each git action (owner/repo@ref) ran at",
                                 default_factory=dict)
    cancel_reason: str | None = _f("why the run was stopped")
    error: str | None = _f("why the run failed when its jobs do not tell: its process was "
                           "gone before it ended, the disk was full", default=None)
    trigger: str | None = _f("what started the run (manual, ...)", default=None)
    backend: str | None = _f("where jobs ran: local, ray (embedded) or a Ray address",
                             default=None)
    run_number: int | None = _f("the flow's run number in the workspace (run.runNumber); "
                                "records of flowray from before it was kept lack it",
                                default=None)


class RunRecord(_RunFields):
    """A run's record: ``<workspace>/.flowray/runs/<run id>/record.json``."""

    jobs: dict[str, JobRecord] = _f("the run's jobs by key, in the flow's order")


class RunHeader(_RunFields):
    """A record with its jobs unchecked: what listing runs needs, at a fraction of the cost
    (checking a 10,000-job record takes the better part of a second)."""

    jobs: dict[str, Any] = _f("the run's jobs by key (not checked)")


# ----------------------------------------------------------------------------- reading


class RecordShapeError(RecordError):
    """A run's record is not of the shape this flowray reads; ``problems`` says why."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


def _shown(path: str) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


_NOUNS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
}


def _problem(err: Any) -> str:
    loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
    path = format_path(loc) or "(record)"
    kind = err["type"]
    got = describe(err.get("input"), json=True)
    ctx = err.get("ctx") or {}
    if kind == "missing":
        message = "missing (a required key)"
    elif kind in _NOUNS:
        message = f"expected {_NOUNS[kind]}, got {got}"
    elif kind == "enum":
        choices = str(ctx.get("expected", "")).replace("' or '", "', '").replace("'", "")
        message = f"expected one of {choices}, got {got}"
    elif kind == "greater_than_equal":
        message = f"must be at least {ctx.get('ge')}, got {got}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx.get('le')}, got {got}"
    else:
        msg = str(err.get("msg", "invalid value"))
        message = (msg[:1].lower() + msg[1:]) + f", got {got}"
    return f"{path}: {message}"


R = TypeVar("R", bound=_RunFields)


def validate_record(data: Any, run_path: str, model: type[R] = RunRecord) -> R:  # type: ignore[assignment]
    """``data`` (a record as read from ``run_path``'s ``record.json``) as a :class:`RunRecord`
    (or ``model``); :class:`RecordError` if a newer flowray wrote it or its shape is wrong."""
    run_id = os.path.basename(os.path.normpath(run_path))
    where = _shown(os.path.join(run_path, RECORD_FILE))
    if not isinstance(data, dict):
        got = describe(data, json=True)
        raise RecordShapeError(
            f"run {run_id}: {where} is not a run record: expected an object, got {got}",
            [f"(record): expected an object, got {got}"])
    schema = data.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > RECORD_SCHEMA:
        raise RecordError(
            f"run {run_id}: {where} was written by a newer flowray (record schema {schema}; "
            f"this flowray reads schema {RECORD_SCHEMA}): upgrade flowray to read it")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors(include_url=False)]
    more = len(problems) - _SHOWN_PROBLEMS
    lines = problems[:_SHOWN_PROBLEMS]
    if more > 0:
        lines.append(f"... and {more} more problem{'s' if more != 1 else ''}")
    raise RecordShapeError(
        f"run {run_id}: {where} is not a run record this flowray can read:\n  "
        + "\n  ".join(lines), problems)


def load_record(run_path: str) -> RunRecord:
    """The record of the run folder ``run_path``, checked; :class:`RecordError` if it cannot be
    read, is of a wrong shape, or was written by a newer flowray."""
    return validate_record(read_record(run_path), run_path)


def iter_records(workspace: str) -> Iterator[tuple[str, RunHeader | RecordError]]:
    """The runs of ``workspace``, newest first: each run folder with its record (its jobs not
    checked), or the error that tells why it cannot be read. A folder without a record but
    with events (the record was removed or lost) is such an error; one with neither (a run
    that is starting) is left out."""
    for path in run_folders(workspace):
        if not os.path.isfile(os.path.join(path, RECORD_FILE)):
            if os.path.isfile(os.path.join(path, "events.jsonl")):
                yield path, RecordError(
                    f"the record of run at {path} is missing, but its events.jsonl is there "
                    f"(the record was removed, or the run is only starting)")
            continue
        try:
            yield path, validate_record(read_record(path), path, RunHeader)
        except RecordError as exc:
            yield path, exc


def record_schema() -> dict[str, Any]:
    """The JSON Schema of ``record.json`` (``flowray schema record``)."""
    schema = RunRecord.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"flowray run record (schema {RECORD_SCHEMA})"
    return schema
