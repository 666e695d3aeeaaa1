"""Faults a run must survive and report plainly (issue 11, "Hardening"): background children
holding a step's output, endless lines, artifacts that lead out of the workspace, record files
of the wrong shape, a killed `flowray run`, a full disk; and what belongs to each job attempt
(artifacts and reports of matrix cells and of successive runs).

Everything here is real: processes, files, signals, a tmpfs where one can be mounted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, env_without_color, kill_processes, process_alive, wait_for

import flowray
from flowray.execute.process import MAX_LINE_BYTES

# ----------------------------------------------------------------------------- item 10


def test_a_step_ends_when_its_main_process_exits_though_a_child_keeps_writing(
        ws: Workspace) -> None:
    ws.flow("""
        name: chatty
        jobs:
          j:
            steps:
              - run: |
                  (while true; do echo tick; sleep 0.05; done) &
                  echo $! > chatty.pid
                  sleep 0.3
                  echo main-done
              - run: echo second step ran
    """)
    out = ws.run("flow.yaml", "--grace", "0.5")
    out.assert_success()
    assert "j/1 | main-done" in out.stdout
    assert "j/1 | tick" in out.stdout  # output read before the step ended is kept
    assert "j/2 | second step ran" in out.stdout
    assert not process_alive(int((ws.root / "chatty.pid").read_text()))
    rec = ws.record()
    assert [s["status"] for s in rec["jobs"]["j"]["steps"]] == ["success", "success"]
    log = (ws.root / ".flowray" / "runs" / rec["id"] / rec["jobs"]["j"]["steps"][0]["log"])
    assert "main-done" in log.read_text()


def test_a_quiet_child_holding_the_output_is_stopped_with_its_step(ws: Workspace) -> None:
    # Not redirected: it holds the step's output, which has no reader once the step ended.
    # One that let go of it (`> /dev/null`) lives on for later steps (tests/test_cancel.py).
    ws.flow("""
        name: quiet
        jobs:
          j:
            steps:
              - run: |
                  sleep 300 &
                  echo $! > quiet.pid
              - run: |
                  # (a stopped process may stay a zombie, if nothing reaps orphans here)
                  state=$(awk '/^State/ {print $2}' "/proc/$(cat quiet.pid)/status" 2>/dev/null)
                  if [ -z "$state" ] || [ "$state" = Z ]; then echo gone; else echo alive; fi
    """)
    out = ws.run("flow.yaml", "--grace", "0.5")
    out.assert_success()
    assert "j/2 | gone" in out.stdout


# ----------------------------------------------------------------------------- item 12


def test_an_endless_line_is_cut_for_the_view_kept_whole_in_the_log_in_bounded_memory(
        tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    size = 3 * MAX_LINE_BYTES  # several pieces
    secret = "s3cr3t-value-42"
    # The secret straddles the first piece's end: it must be masked all the same.
    before = MAX_LINE_BYTES - 5
    (ws / "flow.yaml").write_text(f"""
name: endless
jobs:
  j:
    steps:
      - run: |
          head -c {before} /dev/zero | tr '\\0' 'a'
          printf '%s' "$TOKEN"
          head -c {size} /dev/zero | tr '\\0' 'b'
          echo
          echo after
        env:
          TOKEN: ${{{{ secrets.TOKEN }}}}
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowray", "run", "flow.yaml", "--secret", f"TOKEN={secret}"],
        cwd=ws, env=env_without_color(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    lines = stdout.decode().splitlines()
    cut = [line for line in lines if line.startswith("j/1 | aaa")]
    assert len(cut) == 1
    assert cut[0].endswith("[... line cut at 65536 characters; the whole line is in the "
                           "step's log file]")
    assert len(cut[0]) < 70_000
    assert "j/1 | after" in lines
    run = next((ws / ".flowray" / "runs").iterdir())
    log = run / "logs" / "j" / "01-1.log"
    assert log.stat().st_size == before + len("***") + size + 1 + len("after\n")
    with open(log, "rb") as fh:
        fh.seek(before - 10)
        assert fh.read(30) == b"a" * 10 + b"***" + b"b" * 17
    assert secret.encode() not in stdout


def test_flowray_memory_stays_bounded_under_an_endless_line(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    size = 400 * 1024 * 1024
    (ws / "flow.yaml").write_text(f"""
name: endless
jobs:
  j:
    steps:
      - run: head -c {size} /dev/zero | tr '\\0' 'x'
""")
    # flowray is started by a small Python that reports its child's peak memory: a child
    # forked straight from this pytest process would count pytest's own memory at the fork
    # (Linux keeps the larger of the pre-exec and post-exec peaks in ru_maxrss).
    launcher = ("import os, sys\n"
                "pid = os.fork()\n"
                "if pid == 0:\n"
                "    os.execv(sys.argv[1], sys.argv[1:])\n"
                "_, status, usage = os.wait4(pid, 0)\n"
                "print(usage.ru_maxrss)\n"
                "sys.exit(os.waitstatus_to_exitcode(status))\n")
    proc = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-m", "flowray",
                           "run", "flow.yaml", "-q"], cwd=ws, env=env_without_color(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # ru_maxrss is in KiB: the largest of flowray and the step's processes. Holding the line
    # would take at least its 400 MiB.
    peak = int(proc.stdout.split()[-1])
    assert peak < 200 * 1024, peak
    log = next((ws / ".flowray" / "runs").iterdir()) / "logs" / "j" / "01-1.log"
    assert log.stat().st_size == size + 1


# ----------------------------------------------------------------------------- item 15


def test_artifacts_never_follow_links_out_of_the_workspace_nor_copy_the_records(
        ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("not for the flow\n")
    ws.flow(f"""
        name: links
        jobs:
          j:
            artifacts: [".", "out/**", "loop/**"]
            steps:
              - run: |
                  mkdir -p out loop
                  echo kept > out/kept.txt
                  ln -s {outside} out/away
                  ln -s {outside}/private.txt out/private.txt
                  ln -s kept.txt out/alias.txt
                  ln -s .. loop/up
                  ln -s ../loop loop/self
    """)
    out = ws.run("flow.yaml")
    out.assert_success()
    assert "Traceback" not in out.stdout + out.stderr
    rec = ws.record()
    run = ws.root / ".flowray" / "runs" / rec["id"]
    arts = run / "artifacts" / "j"
    assert (arts / "out" / "kept.txt").read_text() == "kept\n"
    assert (arts / "out" / "alias.txt").read_text() == "kept\n"  # a link inside: its file
    assert not (arts / "out" / "private.txt").exists()
    assert not (arts / "out" / "away").exists()
    assert not (arts / ".flowray").exists()  # "." never copies the run records
    assert not list(arts.rglob("private.txt"))
    warnings = rec["jobs"]["j"]["warnings"]
    assert "artifacts: 'out/private.txt' is a link to outside the workspace; not collected" \
        in warnings
    assert "artifacts: 'out/away' is a link to outside the workspace; not collected" in warnings
    assert "artifacts: 'loop/up' is a link to a folder (links are not followed); " \
        "not collected" in warnings
    assert all(not a.startswith("artifacts/j/.flowray") for a in rec["jobs"]["j"]["artifacts"])


def test_reports_outside_the_workspace_are_not_read(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text('<testsuite tests="9"/>')
    ws.flow(f"""
        name: rep
        jobs:
          j:
            reports: ["../junit.xml", "r/*.xml"]
            steps:
              - run: mkdir -p r && ln -s {tmp_path}/junit.xml r/link.xml
    """)
    out = ws.run("flow.yaml")
    out.assert_success()
    job = ws.record()["jobs"]["j"]
    assert job["reports"]["tests"] == 0
    assert "reports: '../junit.xml' is outside the workspace; not read" in job["warnings"]
    assert "reports: 'r/link.xml' is a link to outside the workspace; not read" \
        in job["warnings"]


# ----------------------------------------------------------------------------- item 19


def test_each_matrix_cell_and_each_run_collects_only_its_own_files(ws: Workspace) -> None:
    ws.flow("""
        name: cells
        jobs:
          t:
            strategy:
              matrix:
                n: [1, 2]
            artifacts: "out/*.txt"
            reports: "reports/junit-${{ matrix.n }}.xml"
            steps:
              - run: |
                  mkdir -p out reports
                  echo "${{ matrix.n }}" > "out/cell-${{ matrix.n }}-$FLOWRAY_RUN_ID.txt"
                  tests=$(( ${{ matrix.n }} * 10 ))
                  echo "<testsuite tests=\\"$tests\\"/>" > "reports/junit-${{ matrix.n }}.xml"
    """)
    ws.run("flow.yaml", "--cpus", "1").assert_success()
    first = ws.record()
    ws.run("flow.yaml", "--cpus", "1").assert_success()
    second = ws.record()
    assert first["id"] != second["id"]
    for rec in (first, second):
        for n in (1, 2):
            job = rec["jobs"][f"t.{n}"]
            # Cells ran one after the other: the second does not collect the first's file,
            # and no run collects the files of the run before it.
            assert job["artifacts"] == [f"artifacts/t.{n}/out/cell-{n}-{rec['id']}.txt"], job
            assert job["reports"]["tests"] == 10 * n and job["reports"]["files"] == 1


def test_cells_running_at_once_are_told_when_they_collect_each_others_files(
        ws: Workspace) -> None:
    ws.flow("""
        name: at-once
        jobs:
          t:
            strategy:
              matrix:
                n: [1, 2]
            artifacts: "out/*.txt"
            reports: "reports/*.xml"
            steps:
              - run: |
                  mkdir -p out reports
                  echo "${{ matrix.n }}" > "out/${{ matrix.n }}.txt"
                  echo '<testsuite tests="1"/>' > "reports/${{ matrix.n }}.xml"
                  # both cells wrote theirs before either collects
                  touch "ready-${{ matrix.n }}"
                  for i in $(seq 600); do [ -e ready-1 ] && [ -e ready-2 ] && break; sleep 0.05; done
    """)
    out = ws.run("flow.yaml", "--cpus", "2")
    out.assert_success()
    rec = ws.record()
    warnings = rec["jobs"]["t.1"]["warnings"] + rec["jobs"]["t.2"]["warnings"]
    first, later = sorted(("t.1", "t.2"), key=lambda k: rec["jobs"][k]["ended"])
    for kind, path in (("artifacts", "out/1.txt"), ("artifacts", "out/2.txt"),
                       ("reports", "reports/1.xml"), ("reports", "reports/2.xml")):
        assert (f"{kind}: '{path}' was also collected by job {first}, which ran at the same "
                f"time: jobs share the workspace (name such files after the matrix cell, e.g. "
                f"out-${{{{ matrix.n }}}}.xml, and the globs too)") in warnings, warnings
    assert f"! job {later}: artifacts: 'out/1.txt' was also collected by job {first}" \
        in out.stdout


def test_a_file_left_by_an_earlier_run_is_not_an_artifact(ws: Workspace) -> None:
    ws.write("out/old.txt", "from before\n")
    ws.flow("""
        name: old
        jobs:
          j:
            artifacts: [out/old.txt]
            reports: [old.xml]
            steps:
              - run: echo nothing written
    """)
    ws.write("old.xml", '<testsuite tests="3"/>')
    out = ws.run("flow.yaml")
    out.assert_success()
    job = ws.record()["jobs"]["j"]
    assert job["artifacts"] == []
    assert job["reports"]["tests"] == 0
    assert ("artifacts: nothing this job wrote matches 'out/old.txt' (older files are not "
            "collected)") in job["warnings"]


# ----------------------------------------------------------------------------- item 13

KILLED_FLOW = """
name: killme
jobs:
  j:
    steps:
      - run: |
          # a grandchild in a session of its own, and the step itself
          setsid sleep 300 &
          echo $! > grandchild.pid
          echo $$ > step.pid
          sleep 300
  later:
    needs: j
    steps:
      - run: touch should-not-run
"""


def _start_run(root: Path) -> subprocess.Popen[bytes]:
    (root / "flow.yaml").write_text(KILLED_FLOW)
    proc = subprocess.Popen([sys.executable, "-m", "flowray", "run", "flow.yaml"], cwd=root,
                            env=env_without_color(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for(root / "grandchild.pid")
        wait_for(root / "step.pid")
    except AssertionError:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the run did not start its step:\n{out!r}\n{err!r}") from None
    return proc


def _settled(root: Path, timeout: float = 60.0) -> dict[str, Any]:
    """The run's record once it no longer says running (as written on disk, not settled by
    this reader)."""
    record = next((root / ".flowray" / "runs").iterdir()) / "record.json"
    deadline = time.monotonic() + timeout
    while True:
        rec: dict[str, Any] = json.loads(record.read_text())
        if rec["status"] != "running" or time.monotonic() > deadline:
            return rec
        time.sleep(0.1)


def _gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)


def test_sigkill_of_flowray_run_stops_its_steps_and_fails_the_record(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    proc = _start_run(root)
    pids = [int((root / name).read_text()) for name in ("grandchild.pid", "step.pid")]
    try:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        rec = _settled(root)  # the watchdog did it: nothing else read the record
        assert rec["status"] == "failure" and rec["exit_code"] == 1, rec
        assert rec["error"].startswith(f"the flowray process that ran it (pid {proc.pid} on ")
        assert "ended before the run did: it was killed (SIGKILL?) or crashed" in rec["error"]
        assert rec["jobs"]["j"]["status"] == "failure"
        assert rec["jobs"]["later"]["status"] == "cancelled"
        for pid in pids:
            assert _gone(pid), f"step process {pid} outlived its run"
        assert not (root / "should-not-run").exists()
    finally:
        kill_processes(str(root), f"FLOWRAY_RUN_ID={rec_id(root)}")
    shown = subprocess.run([sys.executable, "-m", "flowray", "status", "last"], cwd=root,
                           env=env_without_color(), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "  failure  exit 1" in shown.stdout.splitlines()[0]
    assert "  error: the flowray process that ran it (pid" in shown.stdout


def rec_id(root: Path) -> str:
    return next((root / ".flowray" / "runs").iterdir()).name


def test_sighup_stops_the_run_like_sigterm(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    proc = _start_run(root)
    pids = [int((root / name).read_text()) for name in ("grandchild.pid", "step.pid")]
    try:
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (out, err)
        assert b"SIGHUP: stopping every step" in out + err
        assert b"Traceback" not in out + err
        rec = _settled(root)
        assert rec["status"] == "cancelled" and rec["cancel_reason"] == "interrupted by SIGHUP"
        for pid in pids:
            assert _gone(pid)
    finally:
        kill_processes(str(root), f"FLOWRAY_RUN_ID={rec_id(root)}")


def _listed(table: str) -> dict[str, str]:
    """`flowray runs`: the status of each run id."""
    return {row.split()[0]: row.split()[1] for row in table.splitlines()[1:]}


def _lost_run(ws: Workspace) -> tuple[str, Path]:
    """A run recorded as running whose process is gone and left no watchdog (both killed at
    once): its control channel has no reader. A sleeper carries its run id."""
    ws.flow("""
        name: ok
        jobs:
          j:
            steps:
              - run: echo fine
    """)
    ws.run("flow.yaml").assert_success()
    run = next((ws.root / ".flowray" / "runs").iterdir())
    rec = json.loads((run / "record.json").read_text())
    dead = subprocess.Popen(["true"])
    dead.wait()
    rec.update(status="running", exit_code=None, ended=None, pid=dead.pid)
    rec["jobs"]["j"].update(status="running", ended=None)
    (run / "record.json").write_text(json.dumps(rec))
    os.mkfifo(run / "control", 0o600)
    return rec["id"], run


def test_a_lost_run_is_shown_and_stored_as_failure_by_every_reader(ws: Workspace) -> None:
    run_id, run = _lost_run(ws)
    listed = ws.cli("runs")
    assert listed.exit_code == 0, listed
    assert _listed(listed.stdout)[run_id] == "failure"
    stored = json.loads((run / "record.json").read_text())
    assert stored["status"] == "failure" and stored["jobs"]["j"]["status"] == "failure"
    assert "ended before the run did" in stored["error"]
    assert flowray.record(run_id, ws.root).status == "failure"
    assert flowray.record(run_id, ws.root).error == stored["error"]
    assert [r.status for r in flowray.runs(ws.root)] == ["failure"]


def test_cancel_of_a_lost_run_stops_what_it_left_and_fixes_the_record(ws: Workspace) -> None:
    run_id, run = _lost_run(ws)
    left = subprocess.Popen(["sleep", "300"], env={**os.environ, "FLOWRAY_RUN_ID": run_id},
                            start_new_session=True)
    try:
        out = ws.cli("cancel", run_id)
        assert out.exit_code == 1, out
        assert out.stderr.startswith(f"error: run {run_id} was lost: the flowray process that "
                                     f"ran it (pid ")
        assert "its 1 remaining process were stopped. Its record now says failure; there is " \
            "nothing left to cancel" in out.stderr
        left.wait(timeout=30)
        assert json.loads((run / "record.json").read_text())["status"] == "failure"
    finally:
        left.kill()
        left.wait()


# ----------------------------------------------------------------------------- item 14


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and a kernel that lets this process mount)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill it up: {done.stderr.strip()}")
    try:
        yield where
    finally:
        kill_processes(str(where), f"FLOWRAY_TEST_DISK={where}")
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_disk_fails_the_run_saying_so_and_leaves_no_temp_files(
        small_disk: Path) -> None:
    (small_disk / "flow.yaml").write_text("""
name: full
jobs:
  j:
    steps:
      - run: for i in $(seq 100000); do echo "line $i of output that fills the disk up"; done
      - run: echo never
  k:
    needs: j
    steps:
      - run: echo never
""")
    done = subprocess.run([sys.executable, "-m", "flowray", "run", "flow.yaml", "-q"],
                          cwd=small_disk, capture_output=True, text=True,
                          env={**env_without_color(), "FLOWRAY_TEST_DISK": str(small_disk)})
    assert done.returncode == 1, done
    assert "Traceback" not in done.stdout + done.stderr, done
    assert ("j/1 ✗ failure: cannot write the step's log logs/j/01-1.log: the disk is full "
            "(No space left on device)") in done.stdout, done
    run = next((small_disk / ".flowray" / "runs").iterdir())
    rec = json.loads((run / "record.json").read_text())  # the final record was written
    assert rec["status"] == "failure" and rec["exit_code"] == 1, (rec, done)
    assert rec["jobs"]["j"]["steps"][0]["error"] == (
        "cannot write the step's log logs/j/01-1.log: the disk is full (No space left on device)")
    assert rec["jobs"]["k"]["status"] == "skipped"
    assert "the disk is full" in rec["error"]
    leftovers = [p.name for p in small_disk.rglob("*")
                 if p.name.endswith(".tmp") or (p.name.startswith(".") and p.name != ".flowray")]
    assert leftovers == [], done  # no temporary files, no room kept aside (.reserve)


# ----------------------------------------------------------------------------- item 16

BAD_RECORDS = {
    "not-json": b"not json",
    "a-list": b"[1, 2]",
    "missing-keys": b'{"id": "x"}',
    "wrong-types": b'{"id": 5, "status": 7, "flow": "x", "started": "now", "jobs": []}',
    "wrong-job": b'{"id": "a", "flow": {"name": "n", "file": "f"}, "status": "success",'
                 b' "started": 1.0, "jobs": {"j": 5}}',
    "truncated": b'{"schema": 1, "id": "20990101-000006-aaaaaa", "flow": {"name": "n", "fi',
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "not-utf8": b'{"id": "\xff\xfe"}',
}


def _healthy_run(ws: Workspace) -> Path:
    """The folder of one successful run of a one-step flow in ``ws``."""
    ws.flow("""
        name: healthy
        jobs:
          j:
            steps:
              - run: echo fine
    """)
    ws.run("flow.yaml").assert_success()
    return next((ws.root / ".flowray" / "runs").iterdir())


def _bad_runs(ws: Workspace) -> list[str]:
    _healthy_run(ws)
    ids = []
    for n, (name, data) in enumerate(BAD_RECORDS.items()):
        run_id = f"20990101-0000{n:02d}-{name}"
        folder = ws.root / ".flowray" / "runs" / run_id
        (folder / "logs" / "j").mkdir(parents=True)
        (folder / "record.json").write_bytes(data)
        ids.append(run_id)
    huge = ws.root / ".flowray" / "runs" / "20990101-000099-huge"
    huge.mkdir()
    with open(huge / "record.json", "wb") as fh:
        fh.truncate(300 << 20)  # sparse: larger than flowray reads
    ids.append(huge.name)
    return ids


def test_records_of_the_wrong_shape_do_not_hide_the_healthy_runs(ws: Workspace) -> None:
    ids = _bad_runs(ws)
    listed = ws.cli("runs")
    assert listed.exit_code == 0, listed
    assert "Traceback" not in listed.stdout + listed.stderr
    assert "success" in listed.stdout and "healthy" in listed.stdout
    shown = _listed(listed.stdout)
    for run_id in ids:
        assert shown[run_id] == "unreadable"
    as_json = ws.cli("runs", "--json")
    assert as_json.exit_code == 0, as_json
    assert [r.flow for r in flowray.runs(ws.root)] == ["healthy"]


def test_status_and_logs_of_a_bad_record_say_what_is_wrong(ws: Workspace) -> None:
    ids = _bad_runs(ws)
    for run_id in ids:
        for command in ("status", "logs"):
            out = ws.cli(command, run_id)
            assert out.exit_code == 2, (command, run_id, out)
            assert out.stderr.startswith("error: "), out
            assert run_id in out.stderr
            assert "Traceback" not in out.stdout + out.stderr
        with pytest.raises(flowray.RecordError, match=run_id):
            flowray.record(run_id, ws.root)
    assert "is not JSON (cut short, or damaged)" in ws.cli("status", ids[0]).stderr
    assert "is 300 MiB, more than flowray reads (256 MiB)" in ws.cli("status", ids[-1]).stderr
    assert "nested too deeply" in ws.cli("status", "20990101-000006").stderr


def test_damaged_lines_of_the_events_file_are_left_out(ws: Workspace) -> None:
    run = _healthy_run(ws)
    events = run / "events.jsonl"
    good = [e.type for e in flowray.events("last", ws.root)]
    lines = events.read_bytes().splitlines(keepends=True)
    damaged = [lines[0], b"garbage\n", b"[1]\n", b'{"seq": "x"}\n', lines[1][:20] + b"\n",
               b'{"seq": 99, "type": "from.the.future", "time": "t", "run": "r"}\n', *lines[1:],
               b'{"seq": 1000, "type": "run.fini']  # cut short: no newline
    events.write_bytes(b"".join(damaged))
    assert [e.type for e in flowray.events("last", ws.root)] == good
    assert good[-1] == "run.finished"


def test_a_record_that_cannot_be_opened_is_named(ws: Workspace) -> None:
    run = _healthy_run(ws)
    record = run / "record.json"
    if os.geteuid() == 0:
        # root reads files whatever their mode: a folder in its place cannot be read either.
        record.unlink()
        record.mkdir()
        why = "Is a directory"
    else:
        record.chmod(0)
        why = "Permission denied"
    out = ws.cli("status", "last")
    assert out.exit_code == 2, out
    assert out.stderr == f"error: cannot read the record of run at {run}: {why}\n"
    listed = ws.cli("runs")
    assert listed.exit_code == 0 and "Traceback" not in listed.stdout + listed.stderr
    assert flowray.runs(ws.root) == []


# ----------------------------------------------------------------------------- item 18


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Any:
    import containerfixtures

    monkeypatch.setenv("FLOWRAY_DOCKER_NETWORK", "none")  # the engine has no bridge here
    monkeypatch.delenv("FLOWRAY_PULL", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return containerfixtures.engine()


def test_env_file_values_reach_container_steps(ws: Workspace, engine: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from containerfixtures import IMAGE, left

    monkeypatch.setenv("HOME_ON_HOST", "flowray's own environment stays out")

    ws.write("vars.env", "FROM_FILE=file value\nOVERRIDDEN=from the file\n")
    ws.flow(f"""
        name: env-file
        env: {{OVERRIDDEN: from the flow}}
        jobs:
          boxed:
            container: {IMAGE}
            steps:
              - run: |
                  echo "job container: $FROM_FILE / $OVERRIDDEN / ${{HOME_ON_HOST:-unset}}"
          image:
            steps:
              - action: docker://{IMAGE}
                with:
                  entrypoint: sh
                  args: >-
                    -c 'echo "image step: $FROM_FILE / $OVERRIDDEN"'
    """)
    out = ws.run("flow.yaml", "--env-file", "vars.env")
    out.assert_success()
    assert "boxed/1 | job container: file value / from the flow / unset" in out.stdout
    assert "image/1 | image step: file value / from the flow" in out.stdout
    assert left(engine, ws.record()["id"]) == []


def test_closing_the_terminal_stops_the_run(tmp_path: Path) -> None:
    """A real terminal (a pty) that goes away: the kernel sends SIGHUP to flowray, and writing
    to the terminal fails from then on (EIO)."""
    import pty

    root = tmp_path / "ws"
    root.mkdir()
    (root / "flow.yaml").write_text(KILLED_FLOW)
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        try:
            os.chdir(root)
            os.execve(sys.executable, [sys.executable, "-m", "flowray", "run", "flow.yaml"],
                      env_without_color())
        finally:
            os._exit(127)
    try:
        wait_for(root / "grandchild.pid")
        wait_for(root / "step.pid")
        pids = [int((root / name).read_text()) for name in ("grandchild.pid", "step.pid")]
        os.close(master)  # the terminal is closed
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 130
        rec = _settled(root)
        assert rec["status"] == "cancelled" and rec["cancel_reason"] == "interrupted by SIGHUP"
        for step_pid in pids:
            assert _gone(step_pid)
    finally:
        kill_processes(str(root), f"FLOWRAY_RUN_ID={rec_id(root)}")
        with contextlib.suppress(ChildProcessError, ProcessLookupError):  # when it failed
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


# ----------------------------------------------------------------------------- no writable home


def _unwritable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME below which no folder can be made (a file stands where the folder would be),
    and no flowray folder or cache named elsewhere: ~/.cache/flowray is where they would go."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CACHE_HOME", "FLOWRAY_RUNNER_DIR", "FLOWRAY_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_a_run_needs_no_writable_home_when_its_flow_reads_no_folder(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _unwritable_home(tmp_path, monkeypatch)
    ws.flow("""
        name: plain
        jobs:
          j:
            steps:
              - run: echo "hi from ${{ runner.os }} with ${{ python.implementation }}"
    """)
    out = ws.run("flow.yaml")
    assert out.exit_code == 0, out
    assert f"hi from {os.uname().sysname} with CPython" in out.stdout


def test_a_folder_that_cannot_be_made_fails_the_step_that_reads_it(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _unwritable_home(tmp_path, monkeypatch)
    ws.flow("""
        name: reads a folder
        jobs:
          j:
            steps:
              - run: echo first
              - run: echo "logs in ${{ directory.logs }}"
              - if: always()
                run: echo "still here"
    """)
    out = ws.run("flow.yaml")
    assert out.exit_code == 1, out
    folder = home / ".cache" / "flowray" / "logs"
    assert (f"directory.logs: cannot make the folder {folder}: Not a directory"
            in out.stdout + out.stderr), out
    assert "j/1 | first" in out.stdout and "j/3 | still here" in out.stdout
    assert "j/2 | logs in" not in out.stdout and "Traceback" not in out.stdout + out.stderr
    steps = ws.record()["jobs"]["j"]["steps"]
    assert [s["status"] for s in steps] == ["success", "failure", "success"]


def test_flowrays_folders_are_made_only_when_a_template_reads_them(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner, cache = tmp_path / "runner", tmp_path / "actions"
    monkeypatch.setenv("FLOWRAY_RUNNER_DIR", str(runner))
    monkeypatch.setenv("FLOWRAY_CACHE_DIR", str(cache))
    ws.flow("""
        name: no folders
        jobs:
          j:
            steps:
              - run: echo "${{ runner.name }}"
    """)
    assert ws.run("flow.yaml").exit_code == 0
    assert not runner.exists() and not cache.exists()
    ws.flow("""
        name: every folder
        jobs:
          j:
            steps:
              - run: echo '${{ toJSON(directory) }}' > dirs.json
    """)
    out = ws.run("flow.yaml")
    assert out.exit_code == 0, out
    dirs = json.loads((ws.root / "dirs.json").read_text())
    assert dirs == {"runner": str(runner), "agent": str(runner), "actions": str(cache),
                    "logs": str(runner / "logs"), "temp": str(runner / "temp")}
    assert all(Path(p).is_dir() for p in dirs.values())


def test_a_run_whose_files_cannot_be_made_says_which_and_why(ws: Workspace) -> None:
    """A folder where flowray's run-number lock file goes: the run cannot start, and the error
    names the file and the OS's reason, not the backend and a Python class name."""
    ws.flow("""
        name: plain
        jobs:
          j:
            steps:
              - run: echo hi
    """)
    lock = ws.root / ".flowray" / "run-numbers.json.lock"
    lock.mkdir(parents=True)
    out = ws.run("flow.yaml")
    assert out.exit_code == 2, out
    assert out.stderr.strip() == f"error: cannot start the run: cannot write {lock}: Is a directory"
    assert "j/1 | hi" not in out.stdout
    assert not list((ws.root / ".flowray" / "runs").iterdir())  # nothing ran: no record


def test_a_secret_in_an_output_file_is_private_and_gone_when_the_run_is_killed(
        tmp_path: Path) -> None:
    """A step's $FLOWRAY_OUTPUT holds what it wrote in clear until flowray reads it: the folder
    is 0700 and the file 0600 whatever the step's umask, and when flowray is SIGKILLed before
    reading it, the watchdog's settling of the record removes it."""
    root = tmp_path / "ws"
    root.mkdir()
    secret = "hunter2-output-secret"
    (root / "flow.yaml").write_text("""
name: out
jobs:
  a:
    steps:
      - env: {T: "${{ secrets.TOK }}"}
        run: |
          umask 000
          echo "tok=$T" >> "$FLOWRAY_OUTPUT"
          echo $$ > step.pid
          sleep 60
""")
    env = env_without_color()
    env["TOK"] = secret
    proc = subprocess.Popen([sys.executable, "-m", "flowray", "run", "flow.yaml",
                             "--secret", "TOK"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(root / "step.pid")
        outputs = next((root / ".flowray" / "runs").iterdir()) / "outputs"
        files = list(outputs.iterdir())
        assert len(files) == 1 and secret in files[0].read_text()
        assert outputs.stat().st_mode & 0o777 == 0o700
        assert files[0].stat().st_mode & 0o777 == 0o600
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        rec = _settled(root)
        assert rec["status"] == "failure", rec
        assert _gone(int((root / "step.pid").read_text()))
        assert list(outputs.iterdir()) == []
        for path in (root / ".flowray").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    finally:
        proc.kill()
        proc.communicate()
        kill_processes(str(root), f"FLOWRAY_RUN_ID={rec_id(root)}")
