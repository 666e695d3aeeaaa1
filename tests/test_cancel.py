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
