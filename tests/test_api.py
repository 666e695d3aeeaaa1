"""The Python API: flowray.start() -> Run, its typed event stream, wait, cancel, and the
errors that carry data. Real runs, real processes; the Ray backend's events are checked in
test_ray_dispatch.py, which has a cluster."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest
from conftest import Workspace, process_alive, wait_for

import flowray
from flowray.runtime.events import (
    Event,
    JobFinished,
    JobQueued,
    JobStarted,
    RunFinished,
    RunStarted,
    StepFinished,
    StepLog,
    StepStarted,
    read_events,
)
from flowray.runtime.recorder import RecordFolder

SWEEP = """
name: sweep
jobs:
  prep:
    outputs:
      base: ${{ steps.b.outputs.base }}
    steps:
      - id: b
        run: |
          echo preparing
          echo "::base::10"
  train:
    needs: prep
    strategy:
      matrix:
        lr: [1, 2, 3]
    steps:
      - run: echo "lr ${{ matrix.lr }} base ${{ needs.prep.outputs.base }}"
      - id: score
        run: echo "::score::${{ matrix.lr }}"
  report:
    needs: train
    steps:
      - run: echo done
"""


def _all(run: flowray.Run) -> list[Event]:
    return list(run.events())


def _assert_gapless(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert len({e.run for e in events}) == 1


def test_events_of_a_matrix_and_needs_flow_are_ordered_without_gaps(ws: Workspace) -> None:
    ws.flow(SWEEP)
    run = flowray.start("flow.yaml", workdir=ws.root)
    events = _all(run)
    record = run.wait()
    _assert_gapless(events)
    assert record.status.value == "success" and run.exit_code == 0
    queued = [e.job for e in events if isinstance(e, JobQueued)]
    assert queued == ["prep", "train.1", "train.2", "train.3", "report"]
    cells = {e.job: e.matrix for e in events if isinstance(e, JobQueued)}
    assert cells["train.2"] == {"lr": 2}

    def first(cls: type[Event], job: str) -> int:
        return next(e.seq for e in events if isinstance(e, cls) and e.job == job)  # type: ignore[attr-defined]

    for job in queued:
        assert first(JobQueued, job) < first(JobStarted, job) < first(StepStarted, job) \
            < first(StepFinished, job) < first(JobFinished, job)
    for cell in ("train.1", "train.2", "train.3"):
        assert first(JobFinished, "prep") < first(JobStarted, cell)
        assert first(JobFinished, cell) < first(JobStarted, "report")
    lines = [(e.job, e.step, e.line) for e in events if isinstance(e, StepLog)]
    assert ("train.3", 0, "lr 3 base 10") in lines and ("prep", 0, "preparing") in lines
    finished = {e.job: e for e in events if isinstance(e, JobFinished)}
    assert finished["train.2"].status == "success" and finished["train.2"].attempt == 1
    steps = [e for e in events if isinstance(e, StepFinished) and e.job == "train.1"]
    assert [(s.step, s.kind, s.status, s.outputs) for s in steps] == [
        (0, "run", "success", {}), (1, "run", "success", {"score": 1})]
    started = next(e for e in events if isinstance(e, JobStarted) and e.job == "prep")
    assert started.attempt == 1 and started.node and started.gpus is None
    assert events[-1].to_dict() | {"time": "-"} == {
        "seq": len(events), "time": "-", "run": run.id, "type": "run.finished",
        "status": "success", "exit_code": 0, "cancel_reason": None,
        "ended": events[-1].ended}  # type: ignore[attr-defined]
    # The file holds the same stream, and the record is what the events say.
    on_disk = list(read_events(run.run_dir))
    assert [e.to_dict() for e in on_disk] == [e.to_dict() for e in events]
    folder = RecordFolder()
    for e in on_disk:
        folder.apply(e)
    saved = json.loads((Path(run.run_dir) / "record.json").read_text())
    assert folder.record == saved
    assert saved["schema"] == 1 and saved["jobs"]["train.3"]["steps"][1]["outputs"] == {
        "score": 3}


def test_two_readers_at_once_get_the_same_stream(ws: Workspace) -> None:
    ws.flow(SWEEP)
    run = flowray.start("flow.yaml", workdir=ws.root)
    got: dict[int, list[dict[str, object]]] = {}

    def read(n: int) -> None:
        got[n] = [e.to_dict() for e in run.events()]

    readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(30)
    run.wait(30)
    assert got[0] == got[1] and len(got[0]) > 20
    # a reader that comes after the end still gets everything, from the first event
    late = [e.to_dict() for e in run.events()]
    assert late == got[0]
    assert [e.to_dict() for e in run.events(after=5)] == got[0][5:]


def test_a_slow_reader_never_slows_the_run_and_loses_nothing(ws: Workspace) -> None:
    ws.flow("""
        name: chatty
        jobs:
          talk:
            steps:
              - run: seq 1 3000
    """)
    run = flowray.start("flow.yaml", workdir=ws.root)
    sub = run.events(maxsize=5)  # a tiny queue: this reader falls behind at once
    seen: list[Event] = []
    for event in sub:
        seen.append(event)
        if len(seen) < 50:
            time.sleep(0.02)  # slower than the step by far
        if len(seen) == 50:
            # The run went on without this reader: it ended while the reader was at 50.
            run.wait(30)
            assert run.done
    _assert_gapless(seen)
    assert sub.caught_up >= 1  # it fell behind and read the rest from events.jsonl
    lines = [e.line for e in seen if isinstance(e, StepLog)]
    assert lines == [str(n) for n in range(1, 3001)]


def test_secrets_are_masked_in_events_and_the_event_file(ws: Workspace) -> None:
    secret = "hunter2-very-secret"
    ws.flow("""
        name: leak
        triggers:
          manual:
            inputs:
              who: {type: string}
        jobs:
          j:
            outputs:
              o: ${{ steps.s.outputs.o }}
            steps:
              - id: s
                run: |
                  echo "token=${{ secrets.token }}"
                  echo "b64=$(printf %s "${{ secrets.token }}" | base64)"
                  echo "::o::${{ secrets.token }}"
                  exit 3
    """)
    run = flowray.start("flow.yaml", workdir=ws.root, secrets={"token": secret},
                        inputs={"who": secret})
    events = _all(run)
    run.wait(30)
    _assert_gapless(events)
    text = Path(run.run_dir, "events.jsonl").read_text()
    b64 = base64.b64encode(secret.encode()).decode()
    for blob in (text, json.dumps([e.to_dict() for e in events])):
        assert secret not in blob and b64 not in blob
    lines = [e.line for e in events if isinstance(e, StepLog)]
    assert lines == ["token=***", "b64=***", "::o::***"]
    started = events[0]
    assert isinstance(started, RunStarted) and started.inputs == {"who": "***"}
    failed = next(e for e in events if isinstance(e, StepFinished))
    assert failed.status == "failure" and failed.exit_code == 3


def test_cancel_through_the_handle_stops_every_process(ws: Workspace) -> None:
    ws.flow("""
        name: long
        jobs:
          sleeper:
            steps:
              - run: |
                  sleep 300 &
                  echo $! > sleep.pid
                  wait
          after:
            needs: sleeper
            steps:
              - run: touch should-not-run
    """)
    run = flowray.start("flow.yaml", workdir=ws.root, grace=5)
    wait_for(ws.root / "sleep.pid")
    pid = int((ws.root / "sleep.pid").read_text())
    run.cancel(grace=1, reason="enough")
    record = run.wait(30)
    assert run.status is flowray.Status.CANCELLED and run.exit_code == 130
    assert record.cancel_reason == "enough"
    assert not process_alive(pid)
    assert not (ws.root / "should-not-run").exists()
    events = _all(run)
    _assert_gapless(events)
    ends = {e.job: e.status for e in events if isinstance(e, JobFinished)}
    assert ends == {"sleeper": "cancelled", "after": "cancelled"}
    assert events[-1].to_dict()["status"] == "cancelled"
    assert not Path(run.run_dir, "control").exists()


def test_no_event_is_lost_on_failure_timeout_and_retry(ws: Workspace) -> None:
    ws.flow("""
        name: bad
        jobs:
          flaky:
            retries: 1
            steps:
              - run: echo try; exit 1
          slow:
            timeout: 0.02
            steps:
              - run: echo start; sleep 30
    """)
    run = flowray.start("flow.yaml", workdir=ws.root, grace=1)
    events = _all(run)
    record = run.wait(60)
    _assert_gapless(events)
    types = [e.type for e in events if getattr(e, "job", None) == "flaky"]
    assert types == ["job.queued", "job.started", "step.started", "step.log", "step.finished",
                     "job.retrying", "job.started", "step.started", "step.log",
                     "step.finished", "job.finished"]
    assert record.jobs["flaky"].attempts == 2
    assert len(record.jobs["flaky"].previous_attempts) == 1
    slow = [e for e in events if isinstance(e, StepFinished) and e.job == "slow"]
    assert slow[0].status == "failure" and "timed out" in (slow[0].error or "")
    assert record.status.value == "failure" and run.exit_code == 1


def test_start_takes_yaml_text_and_records_it(ws: Workspace) -> None:
    run = flowray.start("name: inline\njobs:\n  a:\n    steps:\n      - run: echo hi\n",
                        workdir=ws.root)
    record = run.wait(30)
    assert record.status.value == "success"
    assert record.flow.file.startswith(".flowray/flows/")
    assert [r.id for r in flowray.runs(ws.root)] == [run.id]
    assert flowray.record(run.id, ws.root).id == run.id
    assert [e.type for e in flowray.events(run.id, ws.root)][-1] == "run.finished"


def test_errors_carry_data_and_nothing_runs(ws: Workspace) -> None:
    ws.flow("""
        name: typed
        triggers:
          manual:
            inputs:
              epochs: {type: integer, required: true}
        jobs:
          train:
            steps:
              - run: touch ran
    """)
    with pytest.raises(flowray.RunInputError) as missing:
        flowray.start("flow.yaml", workdir=ws.root)
    assert (missing.value.input, missing.value.reason) == ("epochs", "required")
    assert str(missing.value.message) == "input 'epochs' is required by this flow"
    with pytest.raises(flowray.RunInputError) as typed:
        flowray.start("flow.yaml", workdir=ws.root, inputs={"epochs": "many"})
    assert (typed.value.input, typed.value.reason) == ("epochs", "type")
    with pytest.raises(flowray.PlanInvalid) as plan:
        flowray.start("flow.yaml", workdir=ws.root, inputs={"epochs": 1}, jobs=["nope"])
    assert "nope" in plan.value.message
    with pytest.raises(flowray.StartError) as bad:
        flowray.start("flow.yaml", workdir=ws.root, inputs={"epochs": 1}, cpus=0)
    assert str(bad.value) == "cpus must be more than 0, got 0"
    ws.flow("name: broken\njobs:\n  a:\n    stepz: []\n", name="broken.yaml")
    with pytest.raises(flowray.FlowError) as invalid:
        flowray.start("broken.yaml", workdir=ws.root)
    d = invalid.value.diagnostics[0]
    assert (d.file, d.line, d.col, d.severity) == ("broken.yaml", 3, 3, "error")
    assert flowray.validate("broken.yaml", workdir=ws.root) == invalid.value.diagnostics
    assert flowray.validate("flow.yaml", workdir=ws.root) == []
    assert not (ws.root / "ran").exists()
    assert not (ws.root / ".flowray" / "runs").exists()


def test_run_events_cli_prints_json_lines(ws: Workspace) -> None:
    ws.flow(SWEEP)
    out = ws.run("flow.yaml", "--events")
    out.assert_success()
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run.started" and events[0]["trigger"] == "cli"
    assert events[-1] == {**events[-1], "type": "run.finished", "status": "success",
                          "exit_code": 0}
    assert {"job.queued", "job.started", "step.started", "step.log", "step.finished",
            "job.finished"} <= {e["type"] for e in events}
    assert "▶" not in out.stdout  # no terminal view mixed in


def test_a_script_that_exits_without_waiting_leaves_no_process(ws: Workspace) -> None:
    import subprocess
    import sys

    ws.flow("""
        name: forgotten
        jobs:
          sleeper:
            steps:
              - run: |
                  sleep 300 &
                  echo $! > sleep.pid
                  wait
    """)
    ws.write("script.py", """
        import pathlib, time
        import flowray

        run = flowray.start("flow.yaml", grace=1)
        while not pathlib.Path("sleep.pid").exists():
            time.sleep(0.02)
        print(run.id)
        # the script ends here, without run.wait() or run.cancel()
    """)
    out = subprocess.run([sys.executable, "script.py"], cwd=ws.root, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert not process_alive(int((ws.root / "sleep.pid").read_text()))
    record = flowray.record(run_id, ws.root)
    assert record.status is flowray.Status.CANCELLED
    assert record.cancel_reason == "the Python process that started the run exited"
