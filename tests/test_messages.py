"""What a user is told: mistakes caught before anything runs (with "did you mean"), and
progress while a run goes on. Every test asserts the whole message, the exit code, and that
no Python traceback reaches the user."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from conftest import Outcome, Workspace, free_ports

import flowray
from flowray.cli import main
from flowray.cli.common import _table
from flowray.cli.view import Console
from flowray.runtime.errors import RunInputError
from flowray.runtime.events import Event, StepFinished, StepLog, StepStarted


def _no_traceback(out: Outcome) -> None:
    assert "Traceback" not in out.stdout + out.stderr


def _refused(out: Outcome, stderr: str) -> None:
    """Exit 2, nothing on stdout, exactly ``stderr``."""
    _no_traceback(out)
    assert (out.exit_code, out.stdout, out.stderr) == (2, "", stderr)


# ----------------------------------------------------------------------------- references


def test_a_misspelt_step_property_is_caught_with_did_you_mean(ws: Workspace) -> None:
    flow = ws.flow("""
        name: x
        jobs:
          a:
            outputs:
              v: ${{ steps.s.output.v }}
            steps:
              - id: s
                run: echo "::set-output name=v::1"
              - run: echo "${{ steps.s.outcom }}"
          b:
            needs: a
            steps:
              - run: echo "${{ needs.a.output.v }}"
    """)
    out = ws.cli("validate", flow)
    _refused(out, (
        "flow.yaml:5:10: jobs.a.outputs.v: unknown property 'output' of step 's' (did you "
        "mean 'outputs'?) in 'steps.s.output.v'\n"
        "flow.yaml:9:14: jobs.a.steps[1].run: unknown property 'outcom' of step 's' (did you "
        "mean 'outcome'?) in 'steps.s.outcom'\n"
        "flow.yaml:13:14: jobs.b.steps[0].run: unknown property 'output' of job 'a' (did you "
        "mean 'outputs'?) in 'needs.a.output.v'\n"))
    assert ws.cli("run", flow).exit_code == 2


def test_step_and_needs_properties_that_exist_are_accepted(ws: Workspace) -> None:
    flow = ws.flow("""
        name: x
        jobs:
          a:
            outputs:
              v: ${{ steps.s.outputs.v }}
            steps:
              - id: s
                run: echo "::set-output name=v::1"
              - run: echo "${{ steps.s.outcome }} ${{ steps.s.Conclusion }}"
          b:
            needs: a
            steps:
              - run: echo "${{ needs.a.outputs.v }} ${{ needs.a.result }}"
    """)
    out = ws.cli("validate", flow)
    assert (out.exit_code, out.stdout, out.stderr) == (0, "flow.yaml: ok (2 jobs)\n", "")


# ----------------------------------------------------------------------------- run inputs


_INPUTS_FLOW = """
    name: x
    triggers:
      manual:
        inputs:
          epochs: {type: integer, default: 1}
          model: {type: string, required: true}
    jobs:
      a:
        steps:
          - run: echo "${{ inputs.epochs }} ${{ inputs.model }}"
"""


def test_an_input_the_flow_does_not_declare_is_refused(ws: Workspace) -> None:
    flow = ws.flow(_INPUTS_FLOW)
    out = ws.run(flow, "--input", "epoch=3", "--input", "model=m")
    _refused(out, "error: --input: input 'epoch' is not declared by this flow (did you mean "
                  "'epochs'?) (declared by triggers.manual: epochs, model)\n")
    # The misspelt name is reported before the required input it hides.
    out = ws.run(flow, "--input", "modle=m")
    _refused(out, "error: --input: input 'modle' is not declared by this flow (did you mean "
                  "'model'?) (declared by triggers.manual: epochs, model)\n")
    ws.run(flow, "--input", "model=m").assert_success()
    with pytest.raises(RunInputError) as info:
        flowray.prepare(flow, workdir=ws.root, inputs={"epoch": 3, "model": "m"})
    assert (info.value.input, info.value.reason) == ("epoch", "unknown")


def test_without_declared_inputs_any_input_is_taken(ws: Workspace) -> None:
    flow = ws.flow("name: x\njobs: {a: {steps: [{run: 'echo ${{ inputs.free }}'}]}}\n")
    out = ws.run(flow, "--input", "free=yes")
    out.assert_success()
    assert "a/1 | yes" in out.stdout


# ----------------------------------------------------------------------------- secrets


_SECRETS_FLOW = """
    name: x
    jobs:
      deploy:
        steps:
          - run: echo "$TOKEN"
            env:
              TOKEN: ${{ secrets.TOKEN }}
          - if: secrets.SLACK != ''
            run: echo "notify ${{ secrets.SLACK }}"
      other:
        steps:
          - run: echo "${{ secrets.OTHER_KEY }}"
"""


def test_a_secret_the_flow_reads_must_be_given(ws: Workspace) -> None:
    flow = ws.flow(_SECRETS_FLOW)
    out = ws.run(flow, "--secret", "OTHER_KEY=1")
    _refused(out, (
        "flow.yaml:7:18: jobs.deploy.steps[0].env.TOKEN: secret 'TOKEN' is not given\n"
        "flow.yaml:9:14: warning: jobs.deploy.steps[1].run: secret 'SLACK' is not given (it "
        "reads as empty; the 'if' of its step or job may skip this)\n"
        "error: secret 'TOKEN' is not given: pass --secret TOKEN with TOKEN in the "
        "environment, --secret TOKEN=VALUE, or a line TOKEN=VALUE in a --secret-file\n"))
    # Two missing: both named. A dry run checks the same.
    out = ws.run(flow, "--dry-run", "--secret", "SLACK=s")
    _refused(out, (
        "flow.yaml:7:18: jobs.deploy.steps[0].env.TOKEN: secret 'TOKEN' is not given\n"
        "flow.yaml:12:14: jobs.other.steps[0].run: secret 'OTHER_KEY' is not given\n"
        "error: secrets 'TOKEN', 'OTHER_KEY' are not given: pass --secret NAME (from the "
        "environment) or --secret NAME=VALUE for each, or lines NAME=VALUE in a "
        "--secret-file\n"))


def test_given_secrets_and_unselected_jobs_are_not_reported(ws: Workspace) -> None:
    flow = ws.flow(_SECRETS_FLOW)
    ws.write("s.env", "token=t0ken-value\n")  # names compare ignoring case, as templates do
    out = ws.run(flow, "--secret-file", "s.env", "--job", "deploy")
    _no_traceback(out)
    assert out.exit_code == 0, out
    # A use an `if:` guards is a warning: the run goes on (the condition skips the step).
    assert out.stderr == (
        "flow.yaml:9:14: warning: jobs.deploy.steps[1].run: secret 'SLACK' is not given (it "
        "reads as empty; the 'if' of its step or job may skip this)\n")
    assert "deploy/1 | ***" in out.stdout
    assert "deploy/2 - skipped" in out.stdout


def test_the_api_refuses_a_run_without_its_secrets(ws: Workspace) -> None:
    flow = ws.flow(_SECRETS_FLOW)
    with pytest.raises(flowray.SecretsMissing) as info:
        flowray.start(flow, workdir=ws.root, secrets={"OTHER_KEY": "1"})
    assert isinstance(info.value, flowray.FlowError)
    assert info.value.names == ["TOKEN"]
    assert [d.format() for d in info.value.errors] == [
        "flow.yaml:7:18: jobs.deploy.steps[0].env.TOKEN: secret 'TOKEN' is not given"]
    assert not (ws.root / ".flowray" / "runs").exists()  # nothing started


# ----------------------------------------------------------------------------- other tools' keys


def test_keys_of_other_tools_say_what_flowray_calls_them(ws: Workspace) -> None:
    flow = ws.flow("""
        name: x
        on: push
        timeout-minutes: 5
        jobs:
          a:
            runs-on: ubuntu-latest
            with: {x: 1}
            timeout-minutes: 3
            depends_on: b
            steps:
              - uses: actions/checkout@v4
              - run: echo
                timeout-minutes: 2
          b:
            image: python:3.12
            steps:
              - script: echo
    """)
    out = ws.cli("validate", flow)
    _refused(out, (
        "flow.yaml:2:1: on: unknown key 'on' (did you mean 'triggers'? 'on' is a key of GitHub "
        "Actions; flowray's is 'triggers')\n"
        "flow.yaml:3:1: timeout-minutes: unknown key 'timeout-minutes' (a key of GitHub Actions): "
        "set it on a job or a step\n"
        "flow.yaml:6:5: jobs.a.runs-on: unknown key 'runs-on' (a key of GitHub Actions): a job "
        "runs where its 'resources' (cpus, gpus, memory, accelerator, labels) fit, on this "
        "machine or on Ray\n"
        "flow.yaml:7:5: jobs.a.with: unknown key 'with' (a key of GitHub Actions): 'with' (or "
        "'inputs') gives an action its inputs and belongs to a step with 'action'; a job's "
        "environment is 'env'\n"
        "flow.yaml:9:5: jobs.a.depends_on: unknown key 'depends_on' (did you mean 'needs'? "
        "'depends_on' is a key of Drone/Woodpecker; flowray's is 'needs')\n"
        "flow.yaml:11:9: jobs.a.steps[0].uses: unknown key 'uses' (did you mean 'action'? "
        "'uses' is a key of GitHub Actions; flowray's is 'action')\n"
        "flow.yaml:15:5: jobs.b.image: unknown key 'image' (did you mean 'container'? 'image' "
        "is a key of GitLab CI; flowray's is 'container')\n"
        "flow.yaml:17:9: jobs.b.steps[0].script: unknown key 'script' (did you mean 'run'? "
        "'script' is a key of Azure Pipelines; flowray's is 'run')\n"))


# ----------------------------------------------------------------------------- actions


def test_local_action_paths_and_inputs_get_did_you_mean(ws: Workspace) -> None:
    ws.action("actions/greet", """
        name: greet
        inputs:
          who: {required: true}
          loud: {type: boolean, default: false}
        runs: {using: cmd, command: echo hi}
    """)
    ws.write("actions/other/README", "not an action\n")
    ws.action("tool", "name: tool\nruns: {using: cmd, command: echo tool}\n")
    flow = ws.flow("""
        name: x
        jobs:
          a:
            steps:
              - action: ./actions/gret
              - action: ./actions/greet
                with: {woh: me, loud: true}
              - action: actions/greet
              - action: ./nowhere/greet
              - action: tool
    """)
    out = ws.cli("validate", flow)
    _refused(out, (
        "flow.yaml:5:9: jobs.a.steps[0].action: local action './actions/gret' not found: "
        "there is no folder 'actions/gret' (did you mean './actions/greet'?)\n"
        "flow.yaml:7:9: jobs.a.steps[1].with: missing required input 'who' of action "
        "'greet'\n"
        "flow.yaml:7:16: warning: jobs.a.steps[1].with.woh: input 'woh' is not declared by "
        "action 'greet' (did you mean 'who'?) (declared: who, loud)\n"
        "flow.yaml:8:9: jobs.a.steps[2].action: 'actions/greet' is a folder of the workspace "
        "with an action file, but without './' it names a git repository (did you mean "
        "'./actions/greet'? a local action starts with './'; write 'actions/greet@TAG' for "
        "the repository)\n"
        "flow.yaml:9:9: jobs.a.steps[3].action: local action './nowhere/greet' not found: "
        "there is no folder 'nowhere/greet'\n"
        "flow.yaml:10:9: jobs.a.steps[4].action: invalid action 'tool': expected './path' (a "
        "local action), 'owner/repo@tag' or 'docker://image' (did you mean './tool'? a local "
        "action starts with './')\n"))


# ----------------------------------------------------------------------------- progress


def _help_problems() -> list[str]:
    """Options without help text, and arguments the command's help does not explain."""
    problems = []

    def walk(cmd: click.Command, path: str) -> None:
        doc = cmd.help or ""
        if not doc.strip():
            problems.append(f"{path}: no help text")
        for param in cmd.params:
            if isinstance(param, click.Option):
                if not param.hidden and not (param.help or "").strip():
                    problems.append(f"{path} {'/'.join(param.opts)}: no help text")
            else:
                metavar = param.make_metavar(click.Context(cmd))
                word = re.split(r"[\[\]./{|}]+", metavar.strip("[]. "))[0]
                if not word or word not in doc:
                    problems.append(f"{path} {metavar}: not explained in the command's help")
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(main, "flowray")
    return problems


def test_every_option_and_argument_of_every_command_has_help() -> None:
    assert _help_problems() == []


def test_the_help_walk_finds_an_option_without_help() -> None:
    @main.command("zz-undocumented")
    @click.argument("thing")
    @click.option("--bare", is_flag=True)
    def undocumented(thing: str, bare: bool) -> None:
        """Has a docstring that does not name its argument."""

    try:
        assert _help_problems() == [
            "flowray zz-undocumented THING: not explained in the command's help",
            "flowray zz-undocumented --bare: no help text"]
    finally:
        del main.commands["zz-undocumented"]


def _event(kind: type[Event], **fields: object) -> Event:
    return kind(0, "", "r1", **fields)


def test_a_silent_step_is_said_to_be_still_running() -> None:
    now = [100.0]
    out = io.StringIO()
    console = Console(out, color=False, heartbeat=30, clock=lambda: now[0])
    console.show(_event(StepStarted, job="train", step=0, key="fit", name="fit"))
    console.show(_event(StepStarted, job="test", step=1, key="2", name="check"))

    def at(t: float) -> None:
        now[0] = 100.0 + t
        console.tick()

    at(10)
    console.show(_event(StepLog, job="test", step=1, line="still here"))
    at(30)  # train/fit silent for 30s; test/2 printed 20s ago
    at(31)
    at(45)
    at(60)  # both silent for 30s since their last line
    console.show(_event(StepFinished, job="train", step=0, status="success", key="fit"))
    at(200)  # train/fit ended: no more lines for it
    assert out.getvalue() == (
        "train/fit ▶ fit\n"
        "test/2 ▶ check\n"
        "test/2 | still here\n"
        "train/fit … still running after 30s\n"
        "test/2 … still running after 45s\n"
        "train/fit … still running after 1m00s\n"
        "test/2 … still running after 3m20s\n")


def test_no_still_running_lines_when_quiet_or_switched_off() -> None:
    now = [0.0]
    for quiet, heartbeat in ((True, 1.0), (False, None)):
        out = io.StringIO()
        console = Console(out, color=False, quiet=quiet, heartbeat=heartbeat,
                          clock=lambda: now[0])
        console.show(_event(StepStarted, job="a", step=0, key="s", name="s"))
        now[0] += 1000.0
        console.tick()
        assert "still running" not in out.getvalue()


def test_flowray_run_says_a_silent_step_is_alive(ws: Workspace) -> None:
    flow = ws.flow("""
        name: slow
        jobs:
          a:
            steps:
              - id: wait
                run: echo begun; sleep 1.5
    """)
    env = {**os.environ, "FLOWRAY_HEARTBEAT": "0.3"}
    done = subprocess.run([sys.executable, "-m", "flowray", "run", flow], cwd=ws.root, env=env,
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[:2] == ["a/wait ▶ wait", "a/wait | begun"]
    alive = [line for line in lines if "still running" in line]
    assert alive and all(re.fullmatch(r"a/wait … still running after (\d+m)?\d+s", x) for x in alive)
    assert lines[2:2 + len(alive)] == alive
    events = subprocess.run([sys.executable, "-m", "flowray", "run", flow, "--events"],
                            cwd=ws.root, env=env, capture_output=True, text=True, check=False)
    assert events.returncode == 0 and "still running" not in events.stdout
    bad = subprocess.run([sys.executable, "-m", "flowray", "run", flow], cwd=ws.root,
                         env={**env, "FLOWRAY_HEARTBEAT": "soon"}, capture_output=True,
                         text=True, check=False)
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        2, "", "error: FLOWRAY_HEARTBEAT must be a number of seconds, got 'soon'\n")


def test_status_and_logs_of_a_running_run(ws: Workspace) -> None:
    flow = ws.flow("""
        name: slow
        jobs:
          a:
            steps:
              - id: wait
                run: |
                  echo begun
                  while [ ! -e go ]; do sleep 0.05; done
                  echo ended
    """)
    run = flowray.start(flow, workdir=ws.root)
    try:
        log = Path(run.run_dir) / "logs" / "a" / "01-wait.log"
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text() == "begun\n"):
            assert time.monotonic() < deadline, "the step's first line never reached its log"
            time.sleep(0.05)
        while (ws.record(run.id)["jobs"].get("a", {}).get("steps") or [{}])[0].get(
                "status") != "running":
            assert time.monotonic() < deadline, "the record never showed the step running"
            time.sleep(0.05)
        status = ws.cli("status", run.id)
        assert status.exit_code == 0, status
        assert re.fullmatch(
            rf"run {run.id}  flow slow  running  \d+\.\d\ds so far\n"
            r"  a +running +\d+\.\d\ds\n"
            r"    wait +running +\d+\.\d\ds\n", status.stdout), status.stdout
        logs = ws.cli("logs", run.id)
        assert (logs.exit_code, logs.stdout) == (0, "==> a/wait (running) <==\nbegun\n")
        assert ws.cli("logs", run.id, "a/wait").stdout == "begun\n"
    finally:
        (ws.root / "go").touch()
        run.wait(timeout=60)
    status = ws.cli("status", run.id)
    assert re.match(rf"run {run.id}  flow slow  success  exit 0  \d+\.\d\ds\n", status.stdout)


def test_list_fits_the_terminal_width(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = ws.flow("name: a-flow-with-a-rather-long-name-indeed\n"
                   "jobs: {a: {steps: [{run: 'true'}]}}\n")
    ws.run(flow).assert_success()
    rid = ws.record()["id"]
    monkeypatch.setenv("COLUMNS", "200")
    wide = ws.cli("list").stdout.splitlines()
    assert wide[0].split() == ["RUN", "STATUS", "STARTED", "TOOK", "FLOW"]
    monkeypatch.setenv("COLUMNS", "60")  # STARTED and TOOK are left out, FLOW is cut
    narrow = ws.cli("list").assert_success().stdout
    assert narrow == (
        "RUN                     STATUS   FLOW\n"
        f"{rid}  success  a-flow-with-a-rather-lon...\n")
    monkeypatch.delenv("COLUMNS")
    piped = ws.cli("list").stdout  # not a terminal, no COLUMNS: nothing is cut
    assert piped.splitlines()[1].endswith("  a-flow-with-a-rather-long-name-indeed")


def test_tables_drop_optional_columns_then_cut_the_last() -> None:
    header = ["REPOSITORY", "COMMIT", "SIZE", "LAST USED", "TAGS"]
    rows = [["acme/add", "0123456789ab", "1.2 KiB", "2026-12-01 10:00:00", "v1, v1.2, main"]]
    full = _table(header, rows, right=[2], optional=[3, 2])
    assert full == [
        "REPOSITORY  COMMIT           SIZE  LAST USED            TAGS",
        "acme/add    0123456789ab  1.2 KiB  2026-12-01 10:00:00  v1, v1.2, main"]
    assert _table(header, rows, right=[2], optional=[3, 2], width=50) == [
        "REPOSITORY  COMMIT           SIZE  TAGS",
        "acme/add    0123456789ab  1.2 KiB  v1, v1.2, main"]
    assert _table(header, rows, right=[2], optional=[3, 2], width=30) == [
        "REPOSITORY  COMMIT        TAGS",
        "acme/add    0123456789ab  v..."]


def test_a_submitted_run_names_its_logs_on_the_cluster(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `flowray submit` sets for the run it starts on the cluster (test_submit.py checks
    # that it does); the run's closing line then names a command that works from there.
    monkeypatch.setenv("FLOWRAY_SUBMISSION_ID", "flowray-x-12345678")
    monkeypatch.setenv("FLOWRAY_SUBMITTED_TO", "http://head:8265")
    out = ws.run(ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")).assert_success()
    assert out.stdout.splitlines()[-1].endswith(
        "; logs: flowray logs flowray-x-12345678 --address http://head:8265")


def test_run_on_ray_says_where_it_connects(ws: Workspace) -> None:
    pytest.importorskip("ray", reason="the Ray backend needs the ray package")
    (port,) = free_ports(1)  # nothing listens there
    flow = ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    out = ws.run(flow, "--address", f"127.0.0.1:{port}")
    _refused(out, f"connecting to the Ray cluster at 127.0.0.1:{port}...\n"
                  f"error: no Ray cluster answers at 127.0.0.1:{port}: Connection refused\n")


def test_a_secret_with_a_fallback_is_optional(ws: Workspace) -> None:
    # `secrets.X || default` is how a flow says a secret is optional: not reported, and the
    # run uses the fallback. The last operand of an `||` chain is still required.
    flow = ws.flow("""
        name: x
        jobs:
          a:
            steps:
              - env: {TOKEN: "${{ secrets.hf_token || '' }}"}
                run: echo "token=[$TOKEN]"
              - run: echo "${{ secrets.A || (secrets.B || 'none') }}"
              - run: echo "${{ secrets.C || secrets.D }}"
    """)
    out = ws.run(flow)
    _refused(out, (
        "flow.yaml:8:14: jobs.a.steps[2].run: secret 'D' is not given\n"
        "error: secret 'D' is not given: pass --secret D with D in the environment, "
        "--secret D=VALUE, or a line D=VALUE in a --secret-file\n"))
    out = ws.run(flow, "--secret", "D=dee-value")
    _no_traceback(out)
    assert out.exit_code == 0, out
    assert out.stderr == ""
    assert "a/1 | token=[]\n" in out.stdout and "a/2 | none\n" in out.stdout
    assert "a/3 | ***\n" in out.stdout
