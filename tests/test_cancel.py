"""Ctrl-C and SIGTERM: every step process tree stops, the run is recorded cancelled, exit 130.

These run the real `flowray` command in a subprocess, since signals are what is under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import Workspace, env_without_color, process_alive, wait_for

FLOW = """
name: long
jobs:
  sleeper:
    steps:
      - run: |
          # a child in the step's group, and one that starts its own session
          sleep 300 &
          echo $! > group.pid
          setsid sleep 300 &
          echo $! > session.pid
          # a process that ignores SIGTERM: only SIGKILL after the grace period stops it
          python3 -c 'import signal, time, os; signal.signal(signal.SIGTERM, signal.SIG_IGN); open("stubborn.pid", "w").write(str(os.getpid())); time.sleep(300)' &
          wait
  queued:
    needs: sleeper
    steps:
      - run: touch should-not-run
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_process_and_exits_130(ws: Workspace, sig: signal.Signals) -> None:
    ws.flow(FLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowray.cli", "run", "flow.yaml", "--grace", "1"],
        cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_without_color(),
    )
    for name in ("group.pid", "session.pid", "stubborn.pid"):
        wait_for(ws.root / name)
    pids = [int((ws.root / n).read_text()) for n in ("group.pid", "session.pid", "stubborn.pid")]
    time.sleep(0.2)
    started = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 130, (stdout, stderr)
    assert f"{sig.name}: stopping every step (SIGTERM, then SIGKILL after 1s)..." in stderr
    for pid in pids:
        assert not process_alive(pid), f"process {pid} outlived the run"
    assert took >= 0.9  # the stubborn process was given its grace period
    assert not (ws.root / "should-not-run").exists()
    rec = json.loads(
        next((ws.root / ".flowray" / "runs").iterdir()).joinpath("record.json").read_text())
    assert rec["status"] == "cancelled" and rec["exit_code"] == 130
    assert rec["jobs"]["sleeper"]["status"] == "cancelled"
    assert rec["jobs"]["queued"]["status"] == "cancelled"
    assert rec["cancel_reason"] == f"interrupted by {sig.name}"


def test_background_processes_stop_when_the_job_ends(ws: Workspace) -> None:
    ws.flow("""
        name: bg
        jobs:
          j:
            steps:
              - run: |
                  sleep 300 > /dev/null 2>&1 &
                  echo $! > bg.pid
              - run: kill -0 "$(cat bg.pid)" && echo still-alive-for-next-step
    """)
    out = ws.run("flow.yaml", "--grace", "0.5")
    out.assert_success()
    assert "j/2 | still-alive-for-next-step" in out.stdout
    assert not process_alive(int((ws.root / "bg.pid").read_text()))


def test_daemonized_process_is_swept_at_run_end(ws: Workspace) -> None:
    ws.flow("""
        name: daemon
        jobs:
          j:
            steps:
              - run: |
                  # double fork + setsid: the grandchild is orphaned and in no step group
                  python3 -c 'import os, time
                  if os.fork() == 0:
                      os.setsid()
                      if os.fork() == 0:
                          open("daemon.pid", "w").write(str(os.getpid()))
                          time.sleep(300)
                      os._exit(0)
                  os.wait()'
                  while [ ! -s daemon.pid ]; do sleep 0.01; done
    """)
    out = ws.run("flow.yaml", "--grace", "0.5")
    out.assert_success()
    pid = int((ws.root / "daemon.pid").read_text())
    deadline = time.monotonic() + 5
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(pid)
    assert os.path.exists(ws.root / "daemon.pid")


def _write_record(ws: Workspace, run_id: str, **fields: object) -> None:
    rec = {"id": run_id, "flow": {"name": "x", "file": "flow.yaml"}, "status": "running",
           "started": time.time(), "ended": None, "jobs": {}, **fields}
    path = ws.root / ".flowray" / "runs" / run_id
    path.mkdir(parents=True)
    (path / "record.json").write_text(json.dumps(rec))


def test_cancel_stops_a_local_run_from_another_terminal(ws: Workspace) -> None:
    ws.flow("""
        name: long
        jobs:
          sleeper:
            steps:
              - run: |
                  sleep 300 &
                  echo $! > sleep.pid
                  wait
          queued:
            needs: sleeper
            steps:
              - run: touch should-not-run
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowray", "run", "flow.yaml", "--grace", "1"],
        cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_without_color(),
    )
    wait_for(ws.root / "sleep.pid")
    sleeper = int((ws.root / "sleep.pid").read_text())
    run_id = ws.record()["id"]
    control = ws.root / ".flowray" / "runs" / run_id / "control"
    assert oct(control.stat().st_mode & 0o777) == "0o600"  # only the run's user may write
    out = ws.cli("cancel", "last")
    stdout, stderr = proc.communicate(timeout=30)
    assert out.exit_code == 0, out
    assert out.stdout == f"run {run_id} cancelled\n"
    assert out.stderr == (
        f"cancelling run {run_id}: its steps get SIGTERM, then SIGKILL after the grace "
        "period...\n")
    assert proc.returncode == 130, (stdout, stderr)
    assert not process_alive(sleeper)
    rec = ws.record()
    assert rec["status"] == "cancelled"
    assert rec["cancel_reason"] == "cancelled with flowray cancel"
    assert not (ws.root / "should-not-run").exists()
    assert not control.exists()  # the channel goes with the run
    again = ws.cli("cancel", run_id[:15])
    assert (again.exit_code, again.stderr) == (
        1, f"error: run {run_id} already ended: cancelled\n")


def test_cancel_a_run_of_another_host_or_whose_process_is_gone(ws: Workspace) -> None:
    import socket

    _write_record(ws, "20260101-000000-aaaaaa", pid=os.getpid(), host="elsewhere")
    out = ws.cli("cancel", "20260101-000000-aaaaaa")
    assert (out.exit_code, out.stderr) == (
        1, f"error: run 20260101-000000-aaaaaa runs on host 'elsewhere', not on this one "
           f"('{socket.gethostname()}'): run `flowray cancel 20260101-000000-aaaaaa` there\n")
    lost = ("error: run {} was lost: the flowray process that ran it ended before the run "
            "did: it was killed (SIGKILL?) or crashed, so the run could not finish its record. "
            "Its record now says failure; there is nothing left to cancel\n")
    # no control channel at all (the process died and its FIFO is gone)
    _write_record(ws, "20260101-000001-bbbbbb", host=socket.gethostname())
    out = ws.cli("cancel", "last")
    assert (out.exit_code, out.stderr) == (1, lost.format("20260101-000001-bbbbbb"))
    # a FIFO left behind that nobody reads: the run's process died without removing it
    _write_record(ws, "20260101-000002-cccccc", host=socket.gethostname())
    os.mkfifo(ws.root / ".flowray/runs/20260101-000002-cccccc/control", 0o600)
    out = ws.cli("cancel", "last")
    assert (out.exit_code, out.stderr) == (1, lost.format("20260101-000002-cccccc"))
    record = json.loads((ws.root / ".flowray/runs/20260101-000002-cccccc/record.json")
                        .read_text())
    assert record["status"] == "failure"  # settled, saying why
    assert record["error"].startswith("the flowray process that ran it ended before the run")
    out = ws.cli("cancel", "nope")
    assert (out.exit_code, out.stderr) == (2, "error: no run 'nope' (see 'flowray runs')\n")
