"""The run record as a typed model: real records validate, wrong ones are refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace

from flowray.runtime.record import (
    RECORD_SCHEMA,
    AttemptRecord,
    JobRecord,
    RankRecord,
    RecordError,
    ReportsRecord,
    RunRecord,
    StepRecord,
    TestCaseRecord,
    load_record,
    record_schema,
)
from flowray.status import Status

FLOW = """
    name: shapes
    jobs:
      cells:
        strategy:
          matrix:
            n: [1, 2]
        steps:
          - id: out
            run: echo "n=${{ matrix.n }}" >> "$FLOWRAY_OUTPUT"
        outputs:
          n: ${{ steps.out.outputs.n }}
      flaky:
        retries: 1
        reports: junit.xml
        steps:
          - run: echo '<testsuite><testcase name="a"/></testsuite>' > junit.xml
          - run: test -f tried || { touch tried; exit 1; }
          - run: exit 3
            continue-on-error: true
      never:
        needs: flaky
        if: ${{ false }}
        steps:
          - run: echo never
"""


def _run_dir(ws: Workspace) -> Path:
    return max((ws.root / ".flowray" / "runs").iterdir())


def _raw(ws: Workspace) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_run_dir(ws) / "record.json").read_text())
    return data


def _rewrite(ws: Workspace, data: Any) -> str:
    """Replace the last run's record; returns the run's id."""
    run = _run_dir(ws)
    (run / "record.json").write_text(json.dumps(data))
    return run.name


def _keys(model: type[Any]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.fixture
def ran(ws: Workspace) -> Workspace:
    ws.run(ws.flow(FLOW)).assert_success()
    return ws


def test_a_real_runs_record_validates_and_the_model_knows_every_key(ran: Workspace) -> None:
    raw = _raw(ran)
    rec = load_record(str(_run_dir(ran)))
    assert isinstance(rec, RunRecord)
    assert rec.schema_version == RECORD_SCHEMA
    assert rec.status is Status.SUCCESS and rec.exit_code == 0
    assert list(rec.jobs) == ["cells.1", "cells.2", "flaky", "never"]
    assert rec.jobs["cells.2"].matrix == {"n": 2}
    assert rec.jobs["cells.2"].outputs == {"n": "2"}
    flaky = rec.jobs["flaky"]
    assert flaky.attempts == 2
    assert [a.status for a in flaky.previous_attempts] == [Status.FAILURE]
    assert flaky.previous_attempts[0].steps[1].exit_code == 1
    assert flaky.reports == ReportsRecord(
        tests=1, failures=0, errors=0, skipped=0, files=1, passed=1,
        cases=[TestCaseRecord(suite="", classname="", name="a", status="passed", time=None,
                              message=None, text=None)],
        cases_omitted=0)
    third = flaky.steps[2]
    assert (third.status, third.outcome, third.exit_code) == (
        Status.SUCCESS, Status.FAILURE, 3)
    assert rec.jobs["never"].status is Status.SKIPPED
    # What the model reads back is what was written, key for key: the model knows every key
    # the coordinator writes (a new one needs a field, or a note here why not).
    assert set(raw) == _keys(RunRecord)
    for job in raw["jobs"].values():
        assert set(job) == _keys(JobRecord)
        for step in job["steps"]:
            assert set(step) == _keys(StepRecord)
        for attempt in job["previous_attempts"]:
            assert set(attempt) == _keys(AttemptRecord)
        if job["reports"] is not None:
            assert set(job["reports"]) == _keys(ReportsRecord)
            for case in job["reports"]["cases"]:
                assert set(case) == _keys(TestCaseRecord)
    assert rec.model_dump(mode="json", by_alias=True) == raw


def test_ray_fields_ranks_and_lost_attempts_validate_and_show(ran: Workspace) -> None:
    raw = _raw(ran)
    job = raw["jobs"]["flaky"]
    steps = job["steps"]
    # As the Ray dispatcher writes them (backends/ray/dispatcher.py, _gang_result).
    ranks = [{"rank": r, "node": f"10.0.0.{r + 1} (node{r})", "status": "success",
              "error": None, "steps": steps} for r in range(2)]
    job["previous_attempts"].append({
        "attempt": 2, "status": "lost", "error": "its node was lost", "node": "10.0.0.9",
        "started": 1.0, "ended": 2.0, "steps": steps, "ranks": ranks})
    job.update(attempts=3, lost_attempts=1, ranks=ranks, node="10.0.0.1 (node0)")
    run_id = _rewrite(ran, raw)
    rec = load_record(str(_run_dir(ran)))
    flaky = rec.jobs["flaky"]
    assert [a.status for a in flaky.previous_attempts] == [Status.FAILURE, "lost"]
    assert flaky.previous_attempts[1].ranks[1] == RankRecord.model_validate(ranks[1])
    out = ran.cli("status", run_id).assert_success()
    assert "    attempt 2: lost on 10.0.0.9 (its node was lost)\n" in out.stdout
    assert "    rank 1: success on 10.0.0.2 (node1)\n" in out.stdout
    logs = ran.cli("logs", run_id, "flaky/3").assert_success()
    assert logs.stdout == ("==> flaky/3 [attempt 2: lost] (success) <==\n"
                           "==> flaky/3 [attempt 3] (success) <==\n"
                           "==> flaky/3 [attempt 3, rank 1] (success) <==\n")


def test_schema_record_prints_the_json_schema_of_records(ran: Workspace) -> None:
    out = ran.cli("schema", "record").assert_success()
    schema = out.json()
    assert schema == json.loads(json.dumps(record_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == f"flowray run record (schema {RECORD_SCHEMA})"
    version = schema["properties"]["schema"]
    assert (version["type"], version["minimum"], version["maximum"], version["default"]) == (
        "integer", 1, RECORD_SCHEMA, RECORD_SCHEMA)
    assert "jobs" in schema["required"] and "schema" not in schema["required"]
    for name, definition in schema["$defs"].items():
        for key, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{key} has no description"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_raw(ran), schema)
    bad = _raw(ran)
    bad["jobs"]["flaky"]["status"] = "done"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _refused(ws: Workspace, run_id: str, *problems: str) -> str:
    head = (f"error: run {run_id}: .flowray/runs/{run_id}/record.json is not a run record "
            f"this flowray can read:\n")
    return head + "".join(f"  {p}\n" for p in problems)


@pytest.mark.parametrize(("change", "problems"), [
    (lambda r: r.update(jobs=[]), ["jobs: expected an object, got an array"]),
    (lambda r: r.pop("jobs"), ["jobs: missing (a required key)"]),
    (lambda r: r.update(status="done"),
     ["status: expected one of queued, running, success, failure, cancelled, skipped, "
      "got 'done'"]),
    (lambda r: r["jobs"]["flaky"]["steps"][1].update(exit_code="0", started=None, log=7),
     ["jobs.flaky.steps[1].exit_code: expected an integer, got '0'",
      "jobs.flaky.steps[1].log: expected a string, got 7"]),
    (lambda r: r["jobs"]["cells.1"]["previous_attempts"].append(
        {"attempt": 1, "status": "gone", "error": None, "started": 1, "ended": 2,
         "steps": []}),
     ['jobs["cells.1"].previous_attempts[0].status: expected one of queued, running, success, '
      "failure, cancelled, skipped, lost, got 'gone'"]),
    (lambda r: r.update(schema="1", pid=True),
     ["schema: expected an integer, got '1'", "pid: expected an integer, got true"]),
], ids=["jobs-list", "jobs-missing", "status-done", "step-types", "attempt-status", "scalars"])
def test_status_and_logs_refuse_a_record_of_a_wrong_shape(
        ran: Workspace, change: Any, problems: list[str]) -> None:
    raw = _raw(ran)
    change(raw)
    run_id = _rewrite(ran, raw)
    for args in (("status", run_id), ("status", "last", "--json"), ("logs", run_id)):
        out = ran.cli(*args)
        assert (out.exit_code, out.stdout) == (2, ""), (args, out)
        assert out.stderr == _refused(ran, run_id, *problems), args
        assert "Traceback" not in out.stderr and "pydantic" not in out.stderr


def test_many_problems_are_cut_to_the_first_five(ran: Workspace) -> None:
    raw = _raw(ran)
    for job in raw["jobs"].values():
        job["status"] = 1
    raw["status"] = None
    run_id = _rewrite(ran, raw)
    out = ran.cli("logs", "last")
    choices = "queued, running, success, failure, cancelled, skipped"
    assert (out.exit_code, out.stderr) == (2, _refused(
        ran, run_id,
        f"status: expected one of {choices}, got null",
        f'jobs["cells.1"].status: expected one of {choices}, got 1',
        f'jobs["cells.2"].status: expected one of {choices}, got 1',
        f"jobs.flaky.status: expected one of {choices}, got 1",
        f"jobs.never.status: expected one of {choices}, got 1"))
    raw["jobs"]["never"]["steps"] = {}
    raw["pid"] = "1"
    _rewrite(ran, raw)
    out = ran.cli("status")
    assert out.exit_code == 2
    assert out.stderr.endswith("got 1\n  ... and 2 more problems\n")


def test_a_record_that_is_not_an_object_or_not_json(ran: Workspace) -> None:
    run_id = _rewrite(ran, ["a", "list"])
    out = ran.cli("status")
    assert (out.exit_code, out.stderr) == (
        2, f"error: the record at {_run_dir(ran)} is not a run record\n")
    (_run_dir(ran) / "record.json").write_text('{"id": ')
    out = ran.cli("logs", run_id)
    assert out.exit_code == 2
    assert out.stderr.startswith(f"error: the record of run at {_run_dir(ran)} is not JSON (cut "
                                 f"short, or damaged): ")


def test_a_record_of_a_newer_flowray_is_refused(ran: Workspace) -> None:
    raw = _raw(ran)
    raw["schema"] = RECORD_SCHEMA + 1
    raw["jobs"] = "whatever a newer flowray writes"
    run_id = _rewrite(ran, raw)
    message = (f"error: run {run_id}: .flowray/runs/{run_id}/record.json was written by a "
               f"newer flowray (record schema {RECORD_SCHEMA + 1}; this flowray reads schema "
               f"{RECORD_SCHEMA}): upgrade flowray to read it\n")
    for args in (("status", run_id), ("logs", "last")):
        out = ran.cli(*args)
        assert (out.exit_code, out.stdout, out.stderr) == (2, "", message)
    with pytest.raises(RecordError) as info:
        load_record(str(_run_dir(ran)))
    assert f"{info.value}\n" == message[len("error: "):]


def test_a_record_of_an_older_flowray_without_schema_is_read_as_schema_1(
        ran: Workspace) -> None:
    raw = _raw(ran)
    # The first records had neither a version nor the keys added since.
    for key in ("schema", "pid", "host", "actions", "trigger", "backend"):
        raw.pop(key, None)
    for job in raw["jobs"].values():
        for key in ("lost_attempts", "artifacts", "reports", "warnings", "ranks"):
            job.pop(key)
        for step in job["steps"]:
            step.pop("kind", None)
        for attempt in job["previous_attempts"]:
            attempt.pop("node")
            attempt.pop("ranks")
    raw["jobs"]["flaky"]["some_future_key"] = {"ignored": True}
    run_id = _rewrite(ran, raw)
    rec = load_record(str(_run_dir(ran)))
    assert rec.schema_version == 1 and rec.pid is None and rec.actions == {}
    assert rec.jobs["flaky"].reports is None and rec.jobs["flaky"].steps[0].kind is None
    out = ran.cli("status", run_id).assert_success()
    assert out.stdout.startswith(f"run {run_id}  flow shapes  success  exit 0  ")
    # --json prints the record as written, keys this flowray does not know included
    assert ran.cli("status", "--json").assert_success().json() == raw
    assert ran.cli("logs", run_id, "cells.2").assert_success().stdout == (
        "==> cells.2/out (success) <==\n")


def test_runs_lists_the_others_when_one_record_is_bad(ws: Workspace) -> None:
    flow = ws.flow("name: fine\njobs: {a: {steps: [{run: 'true'}]}}\n")
    ws.run(flow).assert_success()
    first = _run_dir(ws).name
    runs = ws.root / ".flowray" / "runs"
    bad = runs / "20000101-000000-bad000"
    bad.mkdir()
    (bad / "record.json").write_text('{"id": "x", "flow": "fine", "status": "success"}')
    broken = runs / "20000101-000001-bad111"
    broken.mkdir()
    (broken / "record.json").write_text("{not json")
    (runs / "20000101-000002-empty0").mkdir()  # a run that has no record yet: left out
    ws.run(flow).assert_success()
    second = ws.record()["id"]
    out = ws.cli("runs").assert_success()
    lines = out.stdout.splitlines()
    # (two runs of one second are listed in the order of their ids' random part)
    good = sorted([first, second], reverse=True)
    assert [line.split()[:2] for line in lines] == [
        ["RUN", "STATUS"], [good[0], "success"], [good[1], "success"],
        ["20000101-000001-bad111", "unreadable"], ["20000101-000000-bad000", "unreadable"]]
    assert lines[1].endswith("  fine") and lines[-1].endswith("  ?")
    assert out.stderr == (
        f"warning: the record of run at {broken} is not JSON (cut short, or damaged): "
        f"Expecting property name enclosed in double quotes: line 1 column 2 (char 1)\n"
        f"warning: run 20000101-000000-bad000: .flowray/runs/20000101-000000-bad000/"
        f"record.json is not a run record this flowray can read:\n"
        f"  flow: expected an object, got 'fine'\n"
        f"  workspace: missing (a required key)\n"
        f"  exit_code: missing (a required key)\n"
        f"  started: missing (a required key)\n"
        f"  ended: missing (a required key)\n"
        f"  ... and 3 more problems\n")
    listed = ws.cli("runs", "--json", "-n", "3").assert_success().json()
    assert [(r["id"], r["status"]) for r in listed] == [
        (good[0], "success"), (good[1], "success"), ("20000101-000001-bad111", "unreadable")]
    assert listed[2]["error"].startswith("the record of run at ")


def test_import_flowray_and_flowray_run_leave_the_record_model_out(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    code = (
        "import sys\n"
        "import flowray\n"
        "assert 'flowray.runtime.record' not in sys.modules\n"
        "from flowray.cli import main\n"
        "try:\n"
        "    main(['run', 'flow.yaml', '-q'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "assert 'flowray.runtime.record' not in sys.modules, 'flowray run imported it'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ws.root, check=True)
