"""What a user is told: mistakes caught before anything runs (with "did you mean"), and
progress while a run goes on. Every test asserts the whole message, the exit code, and that
no Python traceback reaches the user."""

from __future__ import annotations

import pytest
from conftest import Outcome, Workspace

import flowray
from flowray.runtime.errors import RunInputError, SecretsMissing


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
                  "'epochs'?) (declared in triggers.manual.inputs: epochs, model)\n")
    # The misspelt name is reported before the required input it hides.
    out = ws.run(flow, "--input", "modle=m")
    _refused(out, "error: --input: input 'modle' is not declared by this flow (did you mean "
                  "'model'?) (declared in triggers.manual.inputs: epochs, model)\n")
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
    with pytest.raises(SecretsMissing) as info:
        flowray.start(flow, workdir=ws.root, secrets={"OTHER_KEY": "1"})
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
        "there is no folder 'nowhere/greet'\n"))
