"""`flowray run` end to end, through the real CLI, with real subprocesses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import Workspace


def test_hello_example_runs_and_passes_outputs_between_jobs(ws: Workspace) -> None:
    # A copy of the examples, so that the run's record is kept in the test's workspace and
    # not in the repository.
    repo = Path(__file__).resolve().parent.parent
    shutil.copytree(repo / "examples", ws.root / "examples")
    out = ws.cli("run", "examples/hello.yaml")
    out.assert_success()
    assert "add/2 | 10 + 20 = 30" in out.stdout
    assert "hello, flowray" in out.stdout
    rec = ws.record()
    assert rec["jobs"]["add"]["outputs"] == {"sum": 30}
    assert rec["status"] == "success"
    assert not (repo / ".flowray" / "runs" / rec["id"]).exists()


def test_steps_run_in_order_jobs_in_parallel_and_exit_zero(ws: Workspace) -> None:
    flow = ws.flow("""
        name: order
        jobs:
          a:
            steps:
              - run: echo one >> a.txt
              - run: echo two >> a.txt
          b:
            needs: a
            steps:
              - run: cat a.txt
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "b/1 | one\n" in out.stdout and "b/1 | two\n" in out.stdout
    assert (ws.root / "a.txt").read_text() == "one\ntwo\n"


def test_failed_job_exits_1_and_skips_dependents(ws: Workspace) -> None:
    flow = ws.flow("""
        name: fails
        jobs:
          bad:
            steps:
              - run: exit 3
              - run: echo never
          after:
            needs: bad
            steps:
              - run: echo never
          always:
            needs: bad
            if: always()
            steps:
              - run: echo cleanup
    """)
    out = ws.run(flow)
    assert out.exit_code == 1, out
    assert "bad/1 ✗ failure: exited with code 3" in out.stdout
    rec = ws.record()
    assert rec["status"] == "failure" and rec["exit_code"] == 1
    bad = rec["jobs"]["bad"]
    assert [s["status"] for s in bad["steps"]] == ["failure", "skipped"]
    assert bad["steps"][0]["exit_code"] == 3
    assert rec["jobs"]["after"]["status"] == "skipped"
    assert rec["jobs"]["always"]["status"] == "success"


def test_step_if_conditions_and_failure_function(ws: Workspace) -> None:
    flow = ws.flow("""
        name: ifs
        variables:
          mode: fast
        jobs:
          j:
            steps:
              - if: variables.mode == 'slow'
                run: echo slow
              - id: broken
                run: "false"
                continue-on-error: true
              - if: steps.broken.outcome == 'failure'
                run: echo saw-failure
              - run: exit 1
              - if: failure()
                run: echo on-failure
              - run: echo not-reached
    """)
    out = ws.run(flow)
    assert out.exit_code == 1
    rec = ws.record()
    statuses = [s["status"] for s in rec["jobs"]["j"]["steps"]]
    assert statuses == ["skipped", "success", "success", "failure", "success", "skipped"]
    assert rec["jobs"]["j"]["steps"][1]["outcome"] == "failure"
    assert "j/3 | saw-failure" in out.stdout and "j/5 | on-failure" in out.stdout


def test_outputs_from_lines_and_output_file_with_typed_templates(ws: Workspace) -> None:
    flow = ws.flow("""
        name: outs
        jobs:
          produce:
            steps:
              - id: a
                run: |
                  echo '::n::30'
                  echo '::obj::{"k": [1, 2]}'
                  echo 'word=plain text' >> "$FLOWRAY_OUTPUT"
                  printf 'multi<<EOF\\nline 1\\nline 2\\nEOF\\n' >> "$FLOWRAY_OUTPUT"
              - id: b
                run: |
                  echo "n+1 via shell: $(( ${{ steps.a.outputs.n }} + 1 ))"
                  echo "obj=${{ steps.a.outputs.obj }}"
                  echo "multi=${{ steps.a.outputs.multi }}"
            outputs:
              n: ${{ steps.a.outputs.n }}
              obj: ${{ steps.a.outputs.obj }}
              word: ${{ steps.a.outputs.word }}
          consume:
            needs: produce
            steps:
              - run: echo "got ${{ needs.produce.outputs.n }} ${{ needs.produce.outputs.word }}"
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "produce/b | n+1 via shell: 31" in out.stdout
    assert 'produce/b | obj={"k":[1,2]}' in out.stdout
    assert "produce/b | multi=line 1\nproduce/b | line 2" in out.stdout
    assert "consume/1 | got 30 plain text" in out.stdout
    rec = ws.record()
    assert rec["jobs"]["produce"]["outputs"] == {"n": 30, "obj": {"k": [1, 2]}, "word": "plain text"}
    assert rec["jobs"]["produce"]["steps"][0]["outputs"]["multi"] == "line 1\nline 2"


def test_untrusted_values_never_become_shell_code(ws: Workspace) -> None:
    flow = ws.flow("""
        name: inject
        jobs:
          j:
            steps:
              - id: evil
                run: echo '::payload::"$(touch pwned1); touch pwned2 `touch pwned3`'"'"'; touch pwned4'"'"'"'
              - run: |
                  echo unquoted ${{ steps.evil.outputs.payload }}
                  echo "double ${{ steps.evil.outputs.payload }}"
                  echo 'single ${{ steps.evil.outputs.payload }}'
                  echo input ${{ inputs.name }}
                  echo $'ansi ${{ steps.evil.outputs.payload }}'
    """)
    out = ws.run(flow, "--input", "name=$(touch pwned5)")
    out.assert_success()
    assert not list(ws.root.glob("pwned*")), out
    payload = "$(touch pwned1); touch pwned2 `touch pwned3`'; touch pwned4'"
    assert f"j/2 | unquoted {payload}\n" in out.stdout
    assert f"j/2 | double {payload}\n" in out.stdout
    assert f"j/2 | single {payload}\n" in out.stdout
    assert "j/2 | input $(touch pwned5)\n" in out.stdout
    assert f"j/2 | ansi {payload}\n" in out.stdout


def test_matrix_values_are_spliced_as_commands(ws: Workspace) -> None:
    flow = ws.flow("""
        name: m
        jobs:
          j:
            strategy:
              matrix:
                cmd: ["echo first", "echo second"]
            steps:
              - run: ${{ matrix.cmd }}
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j.1/1 | first" in out.stdout and "j.2/1 | second" in out.stdout


def test_env_merges_flow_job_step_and_does_not_leak_between_steps(ws: Workspace) -> None:
    ws.write("vars.env", "FROM_FILE=file-value\n# comment\nexport QUOTED='q v'\n")
    flow = ws.flow("""
        name: env
        env:
          LEVEL: flow
          FLOW_ONLY: f
          FLAG: true
        jobs:
          j:
            env:
              LEVEL: job
              DERIVED: ${{ env.FLOW_ONLY }}-derived
            steps:
              - env:
                  LEVEL: step
                run: |
                  echo "$LEVEL $FLOW_ONLY $DERIVED $FLAG $FROM_FILE $QUOTED"
                  export LEAK=1
              - run: echo "level=$LEVEL leak=${LEAK:-none} job=$FLOWRAY_JOB_ID step=$FLOWRAY_STEP_ID"
    """)
    out = ws.run(flow, "--env-file", "vars.env")
    out.assert_success()
    assert "j/1 | step f f-derived true file-value q v\n" in out.stdout
    assert "j/2 | level=job leak=none job=j step=2\n" in out.stdout


def test_working_directory_job_and_step(ws: Workspace) -> None:
    (ws.root / "sub" / "deeper").mkdir(parents=True)
    flow = ws.flow("""
        name: wd
        jobs:
          j:
            working-directory: sub
            steps:
              - run: basename "$PWD"
              - working-directory: deeper
                run: basename "$PWD"
              - working-directory: missing
                run: echo never
    """)
    out = ws.run(flow)
    assert out.exit_code == 1
    assert "j/1 | sub\n" in out.stdout and "j/2 | deeper\n" in out.stdout
    rec = ws.record()
    step = rec["jobs"]["j"]["steps"][2]
    assert step["error"] == f"working directory '{ws.root / 'sub' / 'missing'}' does not exist"


def test_step_timeout_stops_the_process_tree(ws: Workspace) -> None:
    flow = ws.flow("""
        name: slow
        jobs:
          j:
            steps:
              - timeout: 0.01
                run: |
                  sleep 30 &
                  echo $! > child.pid
                  sleep 30
    """)
    out = ws.run(flow, "--grace", "0.5")
    assert out.exit_code == 1
    rec = ws.record()
    assert rec["jobs"]["j"]["steps"][0]["error"] == "timed out after 0.6s"
    pid = int((ws.root / "child.pid").read_text())
    from conftest import process_alive

    assert not process_alive(pid)


def test_job_timeout_fails_the_job(ws: Workspace) -> None:
    flow = ws.flow("""
        name: slowjob
        jobs:
          j:
            timeout-minutes: 0.01
            steps:
              - run: sleep 30
              - run: echo never
    """)
    out = ws.run(flow, "--grace", "0.2")
    assert out.exit_code == 1
    rec = ws.record()
    job = rec["jobs"]["j"]
    assert job["status"] == "failure"
    assert job["steps"][0]["error"] == "the job timed out after 0.6s"
    assert job["steps"][1]["status"] == "cancelled"


def test_large_output_does_not_deadlock_and_is_logged(ws: Workspace) -> None:
    flow = ws.flow("""
        name: big
        jobs:
          j:
            steps:
              - run: python3 -c "import sys; [print('x' * 99) for _ in range(50000)]; print('end', file=sys.stderr)"
    """)
    out = ws.run(flow, "--quiet")
    out.assert_success()
    log = ws.cli("logs", "last", "j/1")
    lines = log.stdout.splitlines()
    assert len(lines) == 50001 and lines[-1] == "end" and lines[0] == "x" * 99


def test_secrets_are_masked_in_logs_outputs_and_records(ws: Workspace) -> None:
    ws.write("secrets.env", "API_KEY=s3cr3t-value\n")
    flow = ws.flow("""
        name: secrets
        jobs:
          j:
            steps:
              - id: s
                env:
                  TOKEN: ${{ secrets.TOKEN }}
                  KEY: ${{ secrets.API_KEY }}
                run: |
                  echo "token=$TOKEN key=$KEY"
                  echo "b64=$(printf %s "$TOKEN" | base64)"
                  echo "::leak::$TOKEN"
                  echo "::add-mask::runtime-secret"
                  echo "later runtime-secret"
            outputs:
              leak: ${{ steps.s.outputs.leak }}
    """)
    out = ws.run(flow, "--secret", "TOKEN=hunter22", "--secret-file", "secrets.env", "--json")
    out.assert_success()
    everything = out.stdout + out.stderr
    for root, _, files in os.walk(ws.root / ".flowray" / "runs"):
        for f in files:
            everything += Path(root, f).read_text()
    assert "hunter22" not in everything
    assert "s3cr3t-value" not in everything
    assert "aHVudGVyMjI" not in everything  # base64 of hunter22
    assert "runtime-secret" not in everything
    assert "j/s | token=*** key=***" in out.stderr
    assert "j/s | b64=***" in out.stderr
    assert out.json()["jobs"]["j"]["outputs"] == {"leak": "***"}


def test_datatorch_style_flow_runs_unchanged(ws: Workspace) -> None:
    ws.action("actions/add", """
        name: Add
        inputs:
          a: {type: integer, required: true}
          b: {type: integer, default: 0}
        outputs:
          sum: {type: integer}
        runs:
          using: python
          main: main.py
    """, main__py="import json, sys\nargs = json.loads(sys.argv[-1])\n"
                  "print('::sum::' + str(args['a'] + args['b']))\n")
    ws.action("actions/flag", """
        name: Flag
        inputs:
          enabled: {type: boolean, default: true}
        runs:
          using: python
          main: main.py
    """, main__py="import json, sys\nargs = json.loads(sys.argv[-1])\n"
                  "print('enabled is', repr(args['enabled']))\n")
    flow = ws.flow("""
        name: datatorch
        jobs:
          add:
            steps:
              - name: first
                action: ./actions/add
                inputs: {a: 10, b: 20}
              - name: second
                action: ./actions/add
                inputs:
                  a: ${{ variable.sum }}
                  b: "5"
              - action: ./actions/flag
                inputs: {enabled: "false"}
              - run: echo "sum is ${{ variable.sum }}"
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "add/4 | sum is 35" in out.stdout
    assert "add/3 | enabled is False" in out.stdout


def test_action_kinds_get_input_variables(ws: Workspace) -> None:
    ws.action("actions/cmd", """
        name: Cmd
        inputs:
          name: {type: string}
          list: {type: array}
        runs:
          using: cmd
          command: echo "cmd $INPUT_NAME $INPUT_LIST ${{ inputs.name }}"
    """)
    ws.action("actions/script", """
        name: Script
        inputs:
          count: {type: integer, default: 2}
        runs:
          using: script
          script: run.sh
    """, run__sh='echo "script count=$INPUT_COUNT action=$(basename $FLOWRAY_ACTION_PATH)"\n')
    flow = ws.flow("""
        name: kinds
        jobs:
          j:
            steps:
              - action: ./actions/cmd
                with:
                  name: "it's $(date)"
                  list: [1, "two"]
              - action: ./actions/script
    """)
    out = ws.run(flow)
    out.assert_success()
    assert """j/1 | cmd it's $(date) [1,"two"] it's $(date)\n""" in out.stdout
    assert "j/2 | script count=2 action=script\n" in out.stdout


def test_wrong_input_type_at_run_time_fails_the_step_naming_the_input(ws: Workspace) -> None:
    ws.action("actions/add", """
        name: Add
        inputs:
          a: {type: integer, required: true}
        runs:
          using: python
          main: main.py
    """, main__py="print('ran')\n")
    flow = ws.flow("""
        name: badinput
        jobs:
          j:
            steps:
              - id: w
                run: echo '::word::abc'
              - action: ./actions/add
                with:
                  a: ${{ steps.w.outputs.word }}
    """)
    out = ws.run(flow)
    assert out.exit_code == 1
    rec = ws.record()
    assert rec["jobs"]["j"]["steps"][1]["error"] == (
        "action 'Add': input 'a' expects an integer, got 'abc'")


def test_matrix_include_exclude_filter_and_names(ws: Workspace) -> None:
    flow = ws.flow("""
        name: matrix
        jobs:
          t:
            name: test ${{ matrix.py }}
            strategy:
              matrix:
                py: ["3.10", "3.11"]
                os: [linux, mac]
                exclude:
                  - {py: "3.10", os: mac}
                include:
                  - {py: "3.11", os: linux, extra: yes}
                  - {py: "3.12", os: bsd}
            steps:
              - run: echo "${{ matrix.py }} ${{ matrix.os }} ${{ matrix.extra }}"
    """)
    out = ws.run(flow, "--json")
    out.assert_success()
    rec = out.json()
    cells = {k: v["matrix"] for k, v in rec["jobs"].items()}
    assert cells == {
        "t.1": {"py": "3.10", "os": "linux"},
        "t.2": {"py": "3.11", "os": "linux", "extra": "yes"},
        "t.3": {"py": "3.11", "os": "mac"},
        "t.4": {"py": "3.12", "os": "bsd"},
    }
    assert "t.2/1 | 3.11 linux yes" in out.stderr
    picked = ws.run(flow, "--matrix", "os:linux", "--json")
    picked.assert_success()
    assert sorted(picked.json()["jobs"]) == ["t.1", "t.2"]
    bad = ws.run(flow, "--matrix", "gpu:a100")
    assert bad.exit_code == 2
    assert bad.stderr == "error: --matrix gpu: no matrix job of this flow has that key\n"


def test_fail_fast_cancels_other_cells_and_max_parallel(ws: Workspace) -> None:
    flow = ws.flow("""
        name: ff
        jobs:
          t:
            strategy:
              matrix:
                n: [1, 2, 3, 4]
              max-parallel: 1
            steps:
              - run: |
                  echo "start ${{ matrix.n }}" >> order.txt
                  test ${{ matrix.n }} -ne 2
    """)
    out = ws.run(flow, "--cpus", "4")
    assert out.exit_code == 1
    rec = ws.record()
    assert [rec["jobs"][f"t.{i}"]["status"] for i in range(1, 5)] == [
        "success", "failure", "cancelled", "cancelled"]
    assert rec["jobs"]["t.3"]["error"] == "fail-fast: t.2 failed"
    assert (ws.root / "order.txt").read_text() == "start 1\nstart 2\n"


def test_fail_fast_false_keeps_going(ws: Workspace) -> None:
    flow = ws.flow("""
        name: noff
        jobs:
          t:
            strategy:
              fail-fast: false
              matrix:
                n: [1, 2, 3]
            steps:
              - run: test ${{ matrix.n }} -ne 1
    """)
    out = ws.run(flow)
    assert out.exit_code == 1
    rec = ws.record()
    assert [rec["jobs"][f"t.{i}"]["status"] for i in (1, 2, 3)] == [
        "failure", "success", "success"]


def test_retries_rerun_a_failed_job_and_keep_each_attempt(ws: Workspace) -> None:
    flow = ws.flow("""
        name: retry
        jobs:
          flaky:
            retries: 2
            steps:
              - run: |
                  echo "try ${{ job.attempt }}" >> tries.txt
                  test "$(wc -l < tries.txt)" -ge 3
    """)
    out = ws.run(flow)
    out.assert_success()
    assert (ws.root / "tries.txt").read_text() == "try 1\ntry 2\ntry 3\n"
    rec = ws.record()
    job = rec["jobs"]["flaky"]
    assert job["attempts"] == 3 and job["status"] == "success"
    assert [a["status"] for a in job["previous_attempts"]] == ["failure", "failure"]
    assert "↻ job flaky failed (attempt 1 of 3); retrying in 0.05s" in out.stdout


def test_job_outputs_and_needs_result(ws: Workspace) -> None:
    flow = ws.flow("""
        name: needs
        jobs:
          a:
            continue-on-error: true
            steps:
              - run: exit 1
          b:
            needs: a
            if: always()
            steps:
              - run: echo "a was ${{ needs.a.result }}"
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "b/1 | a was failure" in out.stdout


def test_gpu_pinning_with_declared_gpus(ws: Workspace) -> None:
    # No GPU exists here: FLOWRAY_GPUS names fake ids; pinning is what is under test.
    flow = ws.flow("""
        name: gpus
        jobs:
          two:
            resources: {gpus: 2}
            steps:
              - run: echo "two=[$CUDA_VISIBLE_DEVICES]" >> gpus.txt; sleep 0.3
          one:
            resources: {gpus: 1}
            steps:
              - run: echo "one=[$CUDA_VISIBLE_DEVICES]" >> gpus.txt; sleep 0.3
          none:
            resources: {gpus: 0}
            steps:
              - run: echo "none=[${CUDA_VISIBLE_DEVICES-unset}]" >> gpus.txt
          free:
            steps:
              - run: echo "free=[${CUDA_VISIBLE_DEVICES-unset}]" >> gpus.txt
    """)
    out = ws.run(flow, "--gpus", "0,1,2", "--cpus", "4")
    out.assert_success()
    seen = dict(line.split("=", 1) for line in (ws.root / "gpus.txt").read_text().split())
    assert seen["none"] == "[]" and seen["free"] == "[unset]"
    two = seen["two"].strip("[]").split(",")
    one = seen["one"].strip("[]").split(",")
    assert len(two) == 2 and len(one) == 1
    assert set(two) | set(one) == {"0", "1", "2"}


def test_gpu_jobs_queue_when_gpus_are_busy(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    # FLOWRAY_GPUS=1 declares one (fake) GPU: both 1-GPU cells must take turns on GPU 0.
    flow = ws.flow("""
        name: gpuq
        jobs:
          t:
            strategy:
              matrix: {n: [1, 2]}
            resources: {gpus: 1}
            steps:
              - run: |
                  echo "start ${{ matrix.n }} $CUDA_VISIBLE_DEVICES" >> log.txt
                  sleep 0.3
                  echo "end ${{ matrix.n }}" >> log.txt
    """)
    monkeypatch.setenv("FLOWRAY_GPUS", "1")
    out = ws.run(flow, "--cpus", "4")
    out.assert_success()
    assert (ws.root / "log.txt").read_text() == "start 1 0\nend 1\nstart 2 0\nend 2\n"


def test_too_many_gpus_is_refused_before_running(ws: Workspace) -> None:
    flow = ws.flow("""
        name: big
        jobs:
          j:
            resources: {gpus: 4}
            steps:
              - run: touch ran
    """)
    out = ws.run(flow, "--gpus", "0")
    assert out.exit_code == 2
    assert out.stderr == ("error: job 'j' needs 4 GPUs; this machine has 1 "
                          "(set --gpus or FLOWRAY_GPUS to name them)\n")
    assert not (ws.root / "ran").exists()


def test_cpu_slots_bound_parallelism(ws: Workspace) -> None:
    flow = ws.flow("""
        name: cpus
        jobs:
          t:
            strategy:
              matrix: {n: [1, 2, 3, 4]}
            steps:
              - run: |
                  mkdir lock.d 2>/dev/null || { echo overlap >> bad.txt; exit 1; }
                  sleep 0.1
                  rmdir lock.d
    """)
    ws.run(flow, "--cpus", "1").assert_success()
    assert not (ws.root / "bad.txt").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(ws: Workspace) -> None:
    flow = ws.flow("""
        name: plan
        jobs:
          build:
            steps:
              - run: touch built
          test:
            needs: build
            resources: {cpus: 2, gpus: 1}
            strategy:
              matrix: {py: ["3.10", "3.11"]}
            steps:
              - name: unit
                run: pytest -q
    """)
    out = ws.run(flow, "--dry-run", "--gpus", "0")
    out.assert_success()
    assert out.stdout == (
        "flow plan: 3 job(s)\n"
        "build: build [cpus=1]\n"
        "  1. step 1: touch built\n"
        "test.1: test (3.10) [cpus=2 gpus=1 needs=build]\n"
        "  1. unit: pytest -q\n"
        "test.2: test (3.11) [cpus=2 gpus=1 needs=build]\n"
        "  1. unit: pytest -q\n"
    )
    assert not (ws.root / "built").exists()


def test_job_selection_runs_needed_jobs_only(ws: Workspace) -> None:
    flow = ws.flow("""
        name: sel
        jobs:
          a: {steps: [{run: echo a}]}
          b: {needs: a, steps: [{run: echo b}]}
          c: {steps: [{run: echo c}]}
    """)
    out = ws.run(flow, "-j", "b", "--json")
    out.assert_success()
    assert sorted(out.json()["jobs"]) == ["a", "b"]
    bad = ws.run(flow, "-j", "zz")
    assert bad.exit_code == 2
    assert bad.stderr == "error: no job 'zz' in flow 'sel' (jobs: a, b, c)\n"


def test_inputs_typed_by_manual_trigger(ws: Workspace) -> None:
    flow = ws.flow("""
        name: inputs
        triggers:
          manual:
            inputs:
              epochs: {type: integer, default: 1}
              fast: {type: boolean, default: false}
        jobs:
          j:
            steps:
              - run: echo "epochs=${{ inputs.epochs }} next=${{ inputs.epochs == 3 }} fast=${{ inputs.fast }}"
    """)
    out = ws.run(flow, "--input", "epochs=3", "--input", "fast=no")
    out.assert_success()
    assert "j/1 | epochs=3 next=true fast=false" in out.stdout
    bad = ws.run(flow, "--input", "epochs=many")
    assert bad.exit_code == 2
    assert bad.stderr == "error: --input: input 'epochs' expects an integer, got 'many'\n"


def test_bad_arguments_exit_2(ws: Workspace) -> None:
    flow = ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    out = ws.run(flow, "--secret", "FLOWRAY_TEST_UNSET_NAME")
    assert out.exit_code == 2
    assert out.stderr == (
        "error: --secret FLOWRAY_TEST_UNSET_NAME: the environment variable "
        "FLOWRAY_TEST_UNSET_NAME is not set (give --secret FLOWRAY_TEST_UNSET_NAME=VALUE, set "
        "FLOWRAY_TEST_UNSET_NAME, or use --secret-file)\n")
    out = ws.run(flow, "--secret", "hunter2-typed-without-a-name")
    assert out.exit_code == 2
    assert out.stderr == (
        "error: --secret NAME: the environment variable NAME is not set (give --secret "
        "NAME=VALUE, set NAME, or use --secret-file)\n")
    unclosed = ws.write("bad.env", "OK=1\nKEY=\"starts here\nand never ends\n")
    out = ws.run(flow, "--secret-file", str(unclosed))
    assert out.exit_code == 2
    assert out.stderr == (f"error: {unclosed}:2: --secret-file: the value of KEY opens a \" "
                          "quote that is never closed\n")
    pasted = ws.write("pasted.env", "OK=1\nhunter2-pasted-without-a-name\n")
    out = ws.run(flow, "--secret-file", str(pasted))
    assert out.exit_code == 2
    assert out.stderr == f"error: {pasted}:2: --secret-file line is not KEY=VALUE\n"
    missing = ws.run(flow, "--env-file", "nope.env")
    assert missing.exit_code == 2
    assert missing.stderr == "error: --env-file 'nope.env': No such file or directory\n"


def test_multi_line_secrets_from_a_file_and_from_the_environment(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PEM key and a JSON service-account file reach the step whole, from a dotenv-style
    --secret-file (quotes spanning lines) and from --secret NAME (the environment variable)."""
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n" \
        "-----END PRIVATE KEY-----"
    account = '{"type": "service_account",\n  "private_key_id": "k-123-\\"quoted\\""}'
    ws.write("secrets.env", f'PEM="{pem}"\nACCOUNT=\'{account}\'\n')
    monkeypatch.setenv("FROM_ENV", "line one\nline two")
    flow = ws.flow("""
        name: multi
        jobs:
          j:
            steps:
              - env:
                  PEM: ${{ secrets.PEM }}
                  ACCOUNT: ${{ secrets.ACCOUNT }}
                  FROM_ENV: ${{ secrets.FROM_ENV }}
                run: |
                  printf '%s' "$PEM" > pem.out
                  printf '%s' "$ACCOUNT" > account.out
                  printf '%s' "$FROM_ENV" > env.out
    """)
    out = ws.run(flow, "--secret-file", "secrets.env", "--secret", "FROM_ENV")
    out.assert_success()
    assert (ws.root / "pem.out").read_text() == pem
    assert (ws.root / "account.out").read_text() == account
    assert (ws.root / "env.out").read_text() == "line one\nline two"


def test_runs_status_and_logs_read_the_record(ws: Workspace) -> None:
    flow = ws.flow("""
        name: rec
        jobs:
          j:
            steps:
              - id: hi
                run: echo hello-log
              - run: echo second
    """)
    ws.run(flow).assert_success()
    listing = ws.cli("runs")
    assert listing.exit_code == 0
    rec = ws.record()
    assert rec["id"] in listing.stdout and "success" in listing.stdout and "rec" in listing.stdout
    step = ws.cli("logs", rec["id"][:15], "j/hi")
    assert step.stdout == "hello-log\n"
    whole = ws.cli("logs", "last")
    assert whole.stdout == ("==> j/hi (success) <==\nhello-log\n"
                            "==> j/2 (success) <==\nsecond\n")
    st = ws.cli("status", "last")
    assert "j" in st.stdout and "hi" in st.stdout
    nojob = ws.cli("logs", "last", "zz")
    assert nojob.exit_code == 2
    assert nojob.stderr == f"error: run {rec['id']} has no job 'zz' (jobs: j)\n"
    norun = ws.cli("status", "nonexistent")
    assert norun.stderr == "error: no run 'nonexistent' (see 'flowray runs')\n"


def test_validated_flow_cache_is_used_and_invalidated(ws: Workspace) -> None:
    ws.action("act", "name: A\nruns: {using: cmd, command: echo one}\n")
    flow = ws.flow("name: c\njobs: {j: {steps: [{action: ./act}]}}\n")
    ws.run(flow).assert_success()
    entries = list((ws.root / ".flowray" / "cache" / "flows").iterdir())
    assert len(entries) == 1
    ws.action("act", "name: A\nruns: {using: cmd, command: echo two-changed}\n")
    out = ws.run(flow)
    out.assert_success()
    assert "j/1 | two-changed" in out.stdout


def test_artifacts_are_copied_and_junit_reports_counted(ws: Workspace) -> None:
    flow = ws.flow("""
        name: art
        variables: {dir: build}
        jobs:
          t:
            working-directory: ${{ variables.dir }}
            artifacts: [out/*.txt, missing/*.bin]
            reports: [reports/*.xml, nothing/*.xml]
            steps:
              - run: |
                  mkdir -p out reports
                  echo model > out/model.txt
                  cat > reports/junit.xml <<'EOF'
                  <testsuites>
                    <testsuite name="a">
                      <testcase name="ok1"/><testcase name="ok2"/>
                      <testcase name="bad"><failure message="boom"/></testcase>
                      <testcase name="skip"><skipped/></testcase>
                    </testsuite>
                  </testsuites>
                  EOF
    """)
    (ws.root / "build").mkdir()
    out = ws.run(flow)
    out.assert_success()
    assert "✓ job t [tests: 2 passed, 1 failed, 1 skipped] success in" in out.stdout
    assert "! job t: artifacts: nothing matches 'missing/*.bin'" in out.stdout
    assert "! job t: reports: nothing matches 'nothing/*.xml'" in out.stdout
    rec = ws.record()
    job = rec["jobs"]["t"]
    assert job["artifacts"] == ["artifacts/t/out/model.txt"]
    case = {"suite": "a", "classname": "", "time": None, "text": None}
    assert job["reports"] == {
        "tests": 4, "failures": 1, "errors": 0, "skipped": 1, "files": 1, "passed": 2,
        "cases": [{**case, "name": "bad", "status": "failure", "message": "boom"},
                  {**case, "name": "skip", "status": "skipped", "message": None},
                  {**case, "name": "ok1", "status": "passed", "message": None},
                  {**case, "name": "ok2", "status": "passed", "message": None}],
        "cases_omitted": 0}
    run_dir = ws.root / ".flowray" / "runs" / rec["id"]
    assert (run_dir / "artifacts" / "t" / "out" / "model.txt").read_text() == "model\n"
    assert (ws.root / "build" / "out" / "model.txt").exists()


def test_env_values_from_inputs_are_not_shell_code(ws: Workspace) -> None:
    flow = ws.flow("""
        name: envinject
        jobs:
          j:
            env:
              X: ${{ inputs.x }}
            steps:
              - run: echo "x is ${{ env.X }}"
    """)
    out = ws.run(flow, "--input", "x=$(touch pwned)")
    out.assert_success()
    assert "j/1 | x is $(touch pwned)\n" in out.stdout
    assert not (ws.root / "pwned").exists()


def test_untrusted_template_in_a_python_shell_is_refused(ws: Workspace) -> None:
    flow = ws.flow("""
        name: pyshell
        jobs:
          j:
            steps:
              - shell: python
                run: print("${{ inputs.x }}")
    """)
    out = ws.run(flow, "--input", "x=\\\"); import os; os.system('touch pwned'); (\\\"")
    assert out.exit_code == 2
    assert not (ws.root / "pwned").exists()
    assert out.stderr == (
        "flow.yaml:6:14: jobs.j.steps[0].run: '${{ inputs.x }}' reads data from outside the "
        "flow and shell 'python' is not a POSIX shell, so it cannot be passed safely inside the "
        "script; set it in the step's 'env:' and read the environment variable instead\n")


def test_trusted_template_in_a_python_shell_runs(ws: Workspace) -> None:
    flow = ws.flow("""
        name: pyshell
        jobs:
          j:
            steps:
              - shell: python
                run: print("flow ${{ flow.name }}")
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j/1 | flow pyshell" in out.stdout


def test_fail_fast_flag_cancels_the_rest_and_exits_1(ws: Workspace) -> None:
    flow = ws.flow("""
        name: ffrun
        jobs:
          bad:
            steps:
              - run: exit 1
          slow:
            steps:
              - run: sleep 30
          later:
            needs: slow
            steps:
              - run: echo never
    """)
    out = ws.run(flow, "--fail-fast", "--grace", "0.5", "--cpus", "2")
    assert out.exit_code == 1, out
    rec = ws.record()
    assert rec["status"] == "failure"
    assert rec["cancel_reason"] == "job bad failed and --fail-fast is set"
    assert rec["jobs"]["slow"]["status"] == "cancelled"
    assert rec["jobs"]["later"]["status"] == "cancelled"


def test_job_names_with_templates_are_rendered(ws: Workspace) -> None:
    flow = ws.flow("""
        name: names
        variables: {suite: unit}
        jobs:
          t:
            name: test ${{ matrix.py }} ${{ variables.suite }}
            strategy:
              matrix: {py: ["3.11"]}
            steps:
              - name: run ${{ job.name }}
                run: echo "${{ job.name }}"
    """)
    out = ws.run(flow, "--json")
    out.assert_success()
    rec = out.json()
    assert rec["jobs"]["t.1"]["name"] == "test 3.11 unit"
    assert rec["jobs"]["t.1"]["steps"][0]["name"] == "run test 3.11 unit"
    assert "t.1/1 | test 3.11 unit" in out.stderr


def test_output_of_the_wrong_declared_type_fails_the_step(ws: Workspace) -> None:
    ws.action("actions/bad", """
        name: Bad
        outputs:
          n: {type: integer}
        runs:
          using: cmd
          command: echo "::n::not-a-number"
    """)
    flow = ws.flow("name: o\njobs: {j: {steps: [{action: ./actions/bad}]}}\n")
    out = ws.run(flow)
    assert out.exit_code == 1
    rec = ws.record()
    step = rec["jobs"]["j"]["steps"][0]
    assert step["status"] == "failure" and step["exit_code"] == 0
    assert step["error"] == "action 'Bad': output 'n' expects an integer, got 'not-a-number'"


def test_outputs_are_capped_per_job_including_the_output_file(ws: Workspace) -> None:
    flow = ws.flow("""
        name: cap
        jobs:
          j:
            steps:
              - run: python3 -c "print('big=' + 'x' * 600000)" >> "$FLOWRAY_OUTPUT"
              - run: python3 -c "print('big2=' + 'x' * 600000)" >> "$FLOWRAY_OUTPUT"
              - if: always()
                run: echo "small=1" >> "$FLOWRAY_OUTPUT"
    """)
    out = ws.run(flow, "-q")
    assert out.exit_code == 1
    steps = ws.record()["jobs"]["j"]["steps"]
    assert steps[0]["status"] == "success" and len(steps[0]["outputs"]["big"]) == 600000
    assert steps[1]["status"] == "failure" and steps[1]["outputs"] == {}
    assert steps[1]["error"] == ("the job's outputs are larger than 1 MiB (1048576 bytes: its "
                                 "steps' ::name:: lines and $FLOWRAY_OUTPUT files together)")
    # the step that overflowed lost its outputs; a later cleanup step is not blamed for it
    assert steps[2]["status"] == "success" and steps[2]["outputs"] == {"small": "1"}


def test_job_continue_on_error_lets_dependents_run(ws: Workspace) -> None:
    flow = ws.flow("""
        name: coe
        jobs:
          optional:
            continue-on-error: true
            steps:
              - run: exit 1
          next:
            needs: optional
            steps:
              - run: echo ran
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "next/1 | ran" in out.stdout
    assert ws.record()["jobs"]["optional"]["status"] == "failure"


def test_matrix_with_every_cell_excluded_is_refused(ws: Workspace) -> None:
    flow = ws.flow("""
        name: empty
        jobs:
          t:
            strategy:
              matrix:
                a: [1]
                exclude: [{a: 1}]
            steps:
              - run: touch ran
    """)
    out = ws.run(flow)
    assert out.exit_code == 2
    assert out.stderr == (
        "flow.yaml:5:7: jobs.t.strategy.matrix: the matrix has no cells left after 'exclude'\n")
    assert not (ws.root / "ran").exists()


def test_bad_retry_backoff_setting_falls_back(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWRAY_RETRY_BACKOFF", "soon")
    flow = ws.flow("""
        name: rb
        jobs:
          j:
            retries: 1
            steps:
              - run: test -f tried || { touch tried; exit 1; }
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "retrying in 1s" in out.stdout


def test_last_is_the_newest_run_even_within_one_second(tmp_path: Path) -> None:
    from flowray.store.records import find_run, runs_dir, write_json_atomic

    base = Path(runs_dir(str(tmp_path)))
    # Two runs started in the same second; the later one's random suffix sorts first.
    for name, started in (("20261127-101010-ffffff", 100.0), ("20261127-101010-000000", 100.5),
                          ("20261127-101009-zzzzzz", 200.0)):
        (base / name).mkdir(parents=True)
        write_json_atomic(str(base / name / "record.json"), {"id": name, "started": started})
    assert find_run(str(tmp_path), "last") == str(base / "20261127-101010-000000")
