"""Faults a run must survive and report plainly (issue 11, "Hardening"): background children
holding a step's output, endless lines, artifacts that lead out of the workspace, record files
of the wrong shape, a killed `flowray run`, a full disk; and what belongs to each job attempt
(artifacts and reports of matrix cells and of successive runs).

Everything here is real: processes, files, signals, a tmpfs where one can be mounted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import Workspace, env_without_color, process_alive

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
    proc = subprocess.Popen([sys.executable, "-m", "flowray", "run", "flow.yaml", "-q"],
                            cwd=ws, env=env_without_color(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err
    # ru_maxrss is in KiB: the largest of flowray and the step's processes. Holding the line
    # would take at least its 400 MiB.
    assert usage.ru_maxrss < 200 * 1024, usage.ru_maxrss
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
