"""`flowray serve` killed, stopped and restarted (real processes, real SQLite): nothing it
acknowledged is lost, no run is left `running`, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.servicefixtures import Served, free_port, push, sse, wait_run

GATED = """\
name: gated
concurrency:
  group: one-at-a-time
jobs:
  a:
    steps:
      - run: echo started; while [ ! -e "{gate}" ]; do sleep 0.05; done; echo done
"""


def _step_started(client: object, run_id: str) -> None:
    for _, event in sse(client, run_id):  # type: ignore[arg-type]
        if event["type"] == "step.log":
            return
    raise AssertionError("the run ended before its step printed")


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_kill_9_and_restart_marks_running_runs_failed_and_starts_queued_ones(
        tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = Served(str(tmp_path / "data"), free_port()).start()
    try:
        with server.client() as admin:
            assert push(admin, "gated", GATED.format(gate=gate)).status_code == 201
            running = admin.post("/api/v1/flows/gated/runs", json={}).json()["id"]
            queued = admin.post("/api/v1/flows/gated/runs", json={}).json()["id"]
            _step_started(admin, running)
            assert admin.get(f"/api/v1/runs/{queued}").json()["status"] == "queued"
            record = admin.get(f"/api/v1/runs/{running}").json()["record"]
            assert record["status"] == "running"
        server.kill()
        # The run's watchdog stops its steps once the service is gone.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _pid_gone(record["pid"]):
            time.sleep(0.1)
        gate.touch()
        server.start()
        with server.client() as admin:
            lost = wait_run(admin, running)
            assert (lost["status"], lost["reason"]) == (
                "failure", "the flowray service running this run stopped before it ended")
            events = [e for _, e in sse(admin, running)]
            assert events[-1]["type"] == "run.finished"
            assert events[-1]["status"] == "failure"
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            later = wait_run(admin, queued)
            assert later["status"] == "success", later
            assert "flowray serve: 1 run(s) were running when a previous service process " \
                   "stopped; they are marked failure" in server.output()
    finally:
        server.stop(signal.SIGKILL)


def test_sigterm_lets_running_runs_finish_within_the_drain(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = Served(str(tmp_path / "data"), free_port(), extra=["--drain", "60"]).start()
    try:
        with server.client() as admin:
            push(admin, "gated", GATED.format(gate=gate))
            run_id = admin.post("/api/v1/flows/gated/runs", json={}).json()["id"]
            _step_started(admin, run_id)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert server.proc.poll() is None  # draining: the run still goes
        gate.touch()
        assert server.proc.wait(60) == 0
        server.start()
        with server.client() as admin:
            assert wait_run(admin, run_id)["status"] == "success"
    finally:
        server.stop(signal.SIGKILL)


def test_sigterm_cancels_runs_still_going_after_the_drain(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = Served(str(tmp_path / "data"), free_port(), extra=["--drain", "1"]).start()
    try:
        with server.client() as admin:
            push(admin, "gated", GATED.format(gate=gate))
            run_id = admin.post("/api/v1/flows/gated/runs", json={}).json()["id"]
            _step_started(admin, run_id)
        assert server.stop(signal.SIGTERM) == 0
        server.start()
        with server.client() as admin:
            run = wait_run(admin, run_id)
            assert run["status"] == "cancelled"
            assert run["record"]["cancel_reason"] == ("the flowray service stopped (its drain "
                                                      "time passed)")
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    data = tmp_path / "data"
    server = Served(str(data), free_port()).start()
    server.stop()
    os.chmod(data / "secret.key", mode)
    server.start(wait=False)
    assert server.proc is not None
    assert server.proc.wait(60) == 2
    assert "chmod 600" in server.output()


def test_a_wrong_key_is_refused_and_rotation_reseals_every_secret(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "data"
    server = Served(str(data), free_port()).start()
    with server.client() as admin:
        admin.put("/api/v1/secrets/ONE", json={"value": "first-value"})
        admin.put("/api/v1/secrets/TWO", json={"value": "second-value"})
    server.stop()
    other = tmp_path / "other.key"
    wrong = subprocess.run([sys.executable, "-m", "flowray", "serve", "--data-dir", str(data),
                            "--port", str(free_port()), "--secret-key-file", str(other)],
                           capture_output=True, text=True, timeout=60)
    assert (wrong.returncode, wrong.stderr) == (
        2, f"error: the secret key file {other} does not exist\n")
    from flowray.service.secretbox import load_key

    load_key(str(other))  # makes a new key there
    wrong = subprocess.run([sys.executable, "-m", "flowray", "serve", "--data-dir", str(data),
                            "--port", str(free_port()), "--secret-key-file", str(other)],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert wrong.stderr == (
        f"error: the secret key in {other} is not the key this database's secrets were "
        "sealed with (use the right --secret-key-file, or rotate with --rotate-secret-key "
        "while you still have the old one)\n")
    rotated = subprocess.run([sys.executable, "-m", "flowray", "serve", "--data-dir",
                              str(data), "--rotate-secret-key", str(other)],
                             capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout == (f"re-encrypted 2 secret(s) with the key in {other}; start the "
                              "service again\n")
    assert (data / "secret.key").read_bytes() == other.read_bytes()
    server.start()
    try:
        with server.client() as admin:
            flow = ("name: both\njobs:\n  a:\n    steps:\n      - run: echo "
                    "${{ secrets.ONE }} ${{ secrets.TWO }} $((6*7))\n")
            push(admin, "both", flow)
            run_id = admin.post("/api/v1/flows/both/runs", json={}).json()["id"]
            lines = [e["line"] for _, e in sse(admin, run_id) if e["type"] == "step.log"]
            assert lines == ["*** *** 42"]
            assert wait_run(admin, run_id)["status"] == "success"
    finally:
        server.stop()
