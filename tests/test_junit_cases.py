"""A job's JUnit test cases in its run record: failed ones first with their messages, secrets
masked, within the caps that keep a record small (flowray/execute/artifacts.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from conftest import Workspace

from flowray.runtime.record import load_record

SECRET = "hunter22-secret-value"

# A step writes its report with a Python script (quoting XML in shell is its own test).
FLOW = f"""
    name: junit
    jobs:
      t:
        reports: reports/*.xml
        steps:
          - env:
              TOKEN: ${{{{ secrets.TOKEN }}}}
            run: mkdir -p reports && "{sys.executable}" write_report.py
"""


def _run_dir(ws: Workspace, run_id: str) -> Path:
    return ws.root / ".flowray" / "runs" / run_id


def _finished(ws: Workspace, run_id: str) -> dict[str, Any]:
    """The job.finished event of job t, as events.jsonl holds it."""
    lines = (_run_dir(ws, run_id) / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    [event] = [e for e in events if e["type"] == "job.finished"]
    return event  # type: ignore[no-any-return]


def _report(ws: Workspace, xml: str) -> None:
    """Make the step write ``xml`` (``{token}`` replaced by the step's secret)."""
    ws.write("write_report.py", f"""
        import os
        xml = {xml!r}
        with open("reports/junit.xml", "w") as fh:
            fh.write(xml.replace("{{token}}", os.environ["TOKEN"]))
    """)


def test_cases_are_recorded_failed_first_with_secrets_masked(ws: Workspace) -> None:
    _report(ws, """<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testsuite name="unit" tests="3">
    <testcase classname="tests.test_a" name="test_ok" time="0.5"/>
    <testcase classname="tests.test_a" name="test_token" time="0.25"><failure message="assert '{token}' == 'x'">Traceback (most recent call last):
  File "tests/test_a.py", line 7, in test_token
    assert token == 'x'
AssertionError: assert '{token}' == 'x'</failure></testcase>
    <testcase classname="tests.test_a" name="test_gpu"><skipped message="no GPU here"/></testcase>
  </testsuite>
  <testsuite name="integration" tests="2">
    <testcase classname="tests.test_b" name="test_setup" time="1.5"><error>
RuntimeError: setup broke
  while starting</error></testcase>
    <testcase classname="tests.test_b" name="test_later" time="oops"/>
  </testsuite>
</testsuites>
""")
    out = ws.run(ws.flow(FLOW), "--secret", f"TOKEN={SECRET}")
    out.assert_success()
    assert "✓ job t [tests: 2 passed, 2 failed, 1 skipped] success in" in out.stdout
    record = ws.record()
    reports = record["jobs"]["t"]["reports"]
    assert reports == {
        "tests": 5, "failures": 1, "errors": 1, "skipped": 1, "files": 1, "passed": 2,
        "cases": [
            {"suite": "unit", "classname": "tests.test_a", "name": "test_token",
             "status": "failure", "time": 0.25, "message": "assert '***' == 'x'",
             "text": "Traceback (most recent call last):\n"
                     '  File "tests/test_a.py", line 7, in test_token\n'
                     "    assert token == 'x'\n"
                     "AssertionError: assert '***' == 'x'"},
            {"suite": "integration", "classname": "tests.test_b", "name": "test_setup",
             "status": "error", "time": 1.5, "message": "RuntimeError: setup broke",
             "text": "\nRuntimeError: setup broke\n  while starting"},
            {"suite": "unit", "classname": "tests.test_a", "name": "test_gpu",
             "status": "skipped", "time": None, "message": "no GPU here", "text": None},
            {"suite": "unit", "classname": "tests.test_a", "name": "test_ok",
             "status": "passed", "time": 0.5, "message": None, "text": None},
            {"suite": "integration", "classname": "tests.test_b", "name": "test_later",
             "status": "passed", "time": None, "message": None, "text": None},
        ],
        "cases_omitted": 0,
    }
    # The event the service and `--events` readers get says the same.
    assert _finished(ws, record["id"])["reports"] == reports
    # The typed record reads them back as written (what GET /api/v1/runs/{id} serves).
    typed = load_record(str(_run_dir(ws, record["id"])))
    assert typed.model_dump(mode="json", by_alias=True)["jobs"]["t"]["reports"] == reports
    for path in _run_dir(ws, record["id"]).rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(), path


def test_a_big_report_keeps_200_cases_its_failures_first(ws: Workspace) -> None:
    failing = {41, 250, 499}
    cases = "".join(
        f'<testcase classname="c" name="t{i}"><failure message="m{i}"/></testcase>'
        if i in failing else f'<testcase classname="c" name="t{i}"/>'
        for i in range(500))
    _report(ws, f'<testsuite name="big">{cases}</testsuite>')
    out = ws.run(ws.flow(FLOW), "--secret", f"TOKEN={SECRET}")
    out.assert_success()
    assert "✓ job t [tests: 497 passed, 3 failed] success in" in out.stdout
    reports = ws.record()["jobs"]["t"]["reports"]
    passed = [i for i in range(500) if i not in failing][:197]
    assert reports == {
        "tests": 500, "failures": 3, "errors": 0, "skipped": 0, "files": 1, "passed": 497,
        "cases": [
            {"suite": "big", "classname": "c", "name": f"t{i}", "status": "failure",
             "time": None, "message": f"m{i}", "text": None} for i in sorted(failing)
        ] + [
            {"suite": "big", "classname": "c", "name": f"t{i}", "status": "passed",
             "time": None, "message": None, "text": None} for i in passed
        ],
        "cases_omitted": 300,
    }


def test_a_long_failure_text_and_message_are_cut_with_a_marker(ws: Workspace) -> None:
    text = "".join(f"{i % 10}" for i in range(10_000))
    message = "m" * 1_500
    _report(ws, f'<testsuite name="s"><testcase classname="c" name="long">'
                f'<failure message="{message}">{text}</failure></testcase></testsuite>')
    ws.run(ws.flow(FLOW), "--secret", f"TOKEN={SECRET}").assert_success()
    [case] = ws.record()["jobs"]["t"]["reports"]["cases"]
    assert case == {
        "suite": "s", "classname": "c", "name": "long", "status": "failure", "time": None,
        "message": "m" * 970 + " [... 530 more characters cut]",
        "text": text[:3_968] + " [... 6,032 more characters cut]",
    }
    assert (len(case["message"]), len(case["text"])) == (1_000, 4_000)


def test_a_record_of_an_older_flowray_without_cases_still_reads(ws: Workspace) -> None:
    _report(ws, '<testsuite name="s"><testcase name="a"/></testsuite>')
    ws.run(ws.flow(FLOW), "--secret", f"TOKEN={SECRET}").assert_success()
    record = ws.record()
    run_dir = _run_dir(ws, record["id"])
    del record["jobs"]["t"]["reports"]["cases"]
    del record["jobs"]["t"]["reports"]["cases_omitted"]
    (run_dir / "record.json").write_text(json.dumps(record))
    reports = load_record(str(run_dir)).jobs["t"].reports
    assert reports is not None
    assert (reports.tests, reports.passed, reports.cases, reports.cases_omitted) == (
        1, 1, [], 0)
