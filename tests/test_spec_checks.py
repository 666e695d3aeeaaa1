"""Checks across the flow: needs, step ids, ${{ }} expressions and their references."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowray.spec import FlowError, LoadedFlow, load_flow


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def errors(text: str, name: str = "flow.yaml") -> str:
    Path(name).write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(FlowError) as info:
        load_flow(name)
    return str(info.value)


def load(text: str) -> LoadedFlow:
    Path("flow.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return load_flow("flow.yaml")


# ----------------------------------------------------------------------------- needs


def test_needs_unknown_job_and_itself() -> None:
    text = """
        name: x
        jobs:
          build:
            steps: [{run: echo}]
          test:
            needs: [biuld, test, deploy-it]
            steps: [{run: echo}]
          deploy:
            needs: tset
            steps: [{run: echo}]
    """
    assert errors(text) == (
        "flow.yaml:6:13: jobs.test.needs[0]: unknown job 'biuld' (did you mean 'build'?)\n"
        "flow.yaml:6:20: jobs.test.needs[1]: job 'test' needs itself\n"
        "flow.yaml:6:26: jobs.test.needs[2]: unknown job 'deploy-it' (did you mean 'deploy'?)\n"
        "flow.yaml:9:5: jobs.deploy.needs: unknown job 'tset' (did you mean 'test'?)"
    )


def test_needs_cycle_is_named() -> None:
    text = """
        name: x
        jobs:
          a: {needs: c, steps: [{run: echo}]}
          b: {needs: a, steps: [{run: echo}]}
          c: {needs: [b], steps: [{run: echo}]}
          d: {needs: [a], steps: [{run: echo}]}
    """
    assert errors(text) == (
        "flow.yaml:3:7: jobs.a.needs: jobs form a cycle through 'needs': a -> c -> b -> a"
    )


def test_needs_in_order_is_fine() -> None:
    loaded = load("""
        name: x
        jobs:
          a: {steps: [{run: echo}]}
          b: {needs: a, steps: [{run: echo}]}
          c: {needs: [a, b], steps: [{run: echo}]}
    """)
    assert loaded.data["jobs"]["c"]["needs"] == ["a", "b"]


# ----------------------------------------------------------------------------- steps


def test_duplicate_step_ids_ignore_case() -> None:
    text = """
        name: x
        jobs:
          a:
            steps:
              - {id: build, run: echo}
              - {id: test, run: echo}
              - {id: Build, run: echo}
    """
    assert errors(text) == (
        "flow.yaml:7:10: jobs.a.steps[2].id: duplicate step id 'Build' (also jobs.a.steps[0])"
    )


def test_step_references() -> None:
    text = """
        name: x
        jobs:
          x:
            if: steps.a.outputs.ok
            env:
              EARLY: ${{ steps.a.outputs.n }}
            steps:
              - id: a
                run: echo ${{ steps.b.outputs.n }} ${{ steps.a.outputs.n }}
              - id: b
                run: echo ${{ steps.a.outputs.n }} ${{ steps.zz.outputs.n }} ${{ steps.B.outputs.x }}
            outputs:
              n: ${{ steps.b.outputs.n }}
              m: ${{ steps.bb.outputs.n }}
    """
    assert errors(text) == (
        "flow.yaml:4:9: jobs.x.if: step 'a' has not run yet (job-level values are read before "
        "any step) in 'steps.a.outputs.ok'\n"
        "flow.yaml:6:14: jobs.x.env.EARLY: step 'a' has not run yet (job-level values are read "
        "before any step) in 'steps.a.outputs.n'\n"
        "flow.yaml:9:14: jobs.x.steps[0].run: step 'b' has not run yet (it is jobs.x.steps[1]) "
        "in 'steps.b.outputs.n'\n"
        "flow.yaml:9:14: jobs.x.steps[0].run: step 'a' cannot read its own outputs "
        "in 'steps.a.outputs.n'\n"
        "flow.yaml:11:14: jobs.x.steps[1].run: unknown step 'zz' in 'steps.zz.outputs.n'\n"
        "flow.yaml:11:14: jobs.x.steps[1].run: step 'B' cannot read its own outputs "
        "in 'steps.B.outputs.x'\n"
        "flow.yaml:14:10: jobs.x.outputs.m: unknown step 'bb' (did you mean 'b'?) "
        "in 'steps.bb.outputs.n'"
    )


def test_step_references_in_every_templated_field() -> None:
    text = """
        name: x
        jobs:
          x:
            steps:
              - id: a
                name: ${{ steps.q.outputs.n }}
                if: ${{ steps.q.outputs.n }}
                working-directory: ${{ steps.q.outputs.n }}
                continue-on-error: ${{ steps.q.outputs.n }}
                env: {E: "${{ steps.q.outputs.n }}"}
                run: echo
    """
    where = ["name", "if", "working-directory", "continue-on-error", "env.E"]
    lines = [
        f"flow.yaml:{6 + i}:{col}: jobs.x.steps[0].{key}: unknown step 'q' "
        "in 'steps.q.outputs.n'"
        for i, (key, col) in enumerate(zip(where, [15, 13, 28, 28, 18], strict=True))
    ]
    assert errors(text) == "\n".join(lines)


# ----------------------------------------------------------------------------- contexts


def test_unknown_context_and_other_contexts() -> None:
    text = """
        name: x
        variables: {lr: 0.1}
        jobs:
          a:
            steps:
              - run: >-
                  echo ${{ stpes.a }} ${{ inputs.x }} ${{ event.y }} ${{ env.Z }}
                  ${{ secrets.T }} ${{ job.id }} ${{ run.id }} ${{ flow.name }} ${{ runner.os }}
                  ${{ machine.version }} ${{ variable.k }} ${{ variables.lr }} ${{ Github.sha }}
    """
    assert errors(text) == (
        "flow.yaml:6:14: jobs.a.steps[0].run: unknown context 'stpes' (did you mean 'steps'?) "
        "in 'stpes.a'\n"
        "flow.yaml:6:14: jobs.a.steps[0].run: unknown context 'Github' in 'Github.sha'"
    )


def test_needs_references() -> None:
    text = """
        name: x
        jobs:
          a:
            steps: [{run: echo}]
          b:
            steps: [{run: echo}]
          c:
            needs: a
            steps:
              - run: echo ${{ needs.a.outputs.x }} ${{ needs.b.outputs.x }} ${{ needs.zz.x }}
                env: {A: "${{ needs.A.outputs.x }}"}
    """
    assert errors(text) == (
        "flow.yaml:10:14: jobs.c.steps[0].run: job 'b' is not in this job's needs (needs: a) "
        "in 'needs.b.outputs.x'\n"
        "flow.yaml:10:14: jobs.c.steps[0].run: unknown job 'zz' (needs: a) in 'needs.zz.x'"
    )


def test_matrix_references() -> None:
    text = """
        name: x
        env: {A: "${{ matrix.os }}", S: "${{ steps.a.outputs.x }}", N: "${{ needs.b.x }}"}
        jobs:
          a:
            strategy:
              matrix:
                os: [linux]
                include: [{os: linux, extra: 1}]
            steps:
              - run: echo ${{ matrix.os }} ${{ matrix.extra }} ${{ matrix.oss }} ${{ matrix }}
          b:
            steps:
              - run: echo ${{ matrix.os }}
    """
    assert errors(text) == (
        "flow.yaml:2:10: env.A: 'matrix' cannot be read at flow level (it belongs to a job) "
        "in 'matrix.os'\n"
        "flow.yaml:2:33: env.S: 'steps' cannot be read at flow level (it belongs to a job) "
        "in 'steps.a.outputs.x'\n"
        "flow.yaml:2:64: env.N: 'needs' cannot be read at flow level (it belongs to a job) "
        "in 'needs.b.x'\n"
        "flow.yaml:10:14: jobs.a.steps[0].run: unknown matrix key 'oss' (did you mean 'os'?) "
        "in 'matrix.oss'\n"
        "flow.yaml:13:14: jobs.b.steps[0].run: unknown matrix key 'os' (job 'b' has no matrix) "
        "in 'matrix.os'"
    )


def test_variables_references() -> None:
    text = """
        name: x
        variables: {lr: 0.1, epochs: 3}
        jobs:
          a:
            steps:
              - run: echo ${{ variables.lr }} ${{ variables.lrr }} ${{ variables.batch }}
    """
    assert errors(text) == (
        "flow.yaml:6:14: jobs.a.steps[0].run: unknown variable 'lrr' (did you mean 'lr'?) "
        "in 'variables.lrr'\n"
        "flow.yaml:6:14: jobs.a.steps[0].run: unknown variable 'batch' (variables: lr, epochs) "
        "in 'variables.batch'"
    )
    assert errors("name: x\njobs: {a: {steps: [{run: '${{ variables.v }}'}]}}\n") == (
        "flow.yaml:2:26: jobs.a.steps[0].run: unknown variable 'v' (the flow defines no "
        "variables) in 'variables.v'"
    )


def test_computed_references_are_not_checked() -> None:
    loaded = load("""
        name: x
        jobs:
          a:
            steps:
              - id: s
                run: echo
              - run: echo ${{ steps[format('{0}', 's')].outputs.x }} ${{ steps.*.outputs }}
    """)
    assert len(loaded.data["jobs"]["a"]["steps"]) == 2


# ----------------------------------------------------------------------------- syntax


def test_expression_syntax_errors() -> None:
    text = """
        name: x
        jobs:
          a:
            if: a ==
            steps:
              - run: echo ${{ 1 + 2 }}
              - run: echo ${{ contain('a', 'b') }}
              - run: echo ${{ unclosed
              - run: echo
                if: ${{ true }} && ${{ false }}
              - run: echo
                if: "${{ success() ) }}"
    """
    assert errors(text) == (
        "flow.yaml:4:9: jobs.a.if: invalid expression: expected a value after '==' "
        "at position 4 in 'a =='\n"
        "flow.yaml:6:14: jobs.a.steps[0].run: invalid expression: unexpected character '+' "
        "at position 2 in '1 + 2'\n"
        "flow.yaml:7:14: jobs.a.steps[1].run: invalid expression: unknown function 'contain' "
        "(did you mean 'contains'?) at position 0 in \"contain('a', 'b')\"\n"
        "flow.yaml:8:14: jobs.a.steps[2].run: invalid template: unclosed '${{' (no matching "
        "'}}') at position 5 in 'echo ${{ unclosed'\n"
        "flow.yaml:10:13: jobs.a.steps[3].if: a condition must be one expression, bare or "
        "inside a single '${{ }}', got '${{ true }} && ${{ false }}'\n"
        "flow.yaml:12:13: jobs.a.steps[4].if: invalid expression: unexpected ')' at position "
        "10 in 'success() )'"
    )


def test_expressions_in_inputs_are_checked_recursively() -> None:
    Path("act").mkdir()
    Path("act/action-datatorch.yaml").write_text(
        "name: A\ninputs: {cfg: {type: object}}\nruns: {using: cmd, command: echo}\n"
    )
    text = """
        name: x
        jobs:
          a:
            steps:
              - action: ./act
                with:
                  cfg:
                    list: [1, "${{ steps.nope.outputs.x }}"]
    """
    assert errors(text) == (
        "flow.yaml:8:23: jobs.a.steps[0].with.cfg.list[1]: unknown step 'nope' "
        "in 'steps.nope.outputs.x'"
    )


def test_good_expressions_pass() -> None:
    loaded = load("""
        name: x
        variables: {lr: 0.1}
        env: {LR: "${{ variables.lr }}", WHO: "${{ inputs.who || 'me' }}"}
        jobs:
          prep:
            outputs: {n: "${{ steps.count.outputs.n }}"}
            steps:
              - id: count
                run: echo "::n::3"
          train:
            needs: prep
            if: needs.prep.outputs.n > 2 && !cancelled()
            strategy: {matrix: {lr: [0.1, 0.2]}}
            steps:
              - id: fit
                run: echo ${{ matrix.lr }} ${{ needs.prep.outputs.n }} ${{ toJSON(matrix) }}
              - run: echo ${{ steps.fit.outputs.loss }}
                if: ${{ always() }}
                continue-on-error: ${{ matrix.lr == 0.2 }}
    """)
    assert loaded.warnings == []
    assert loaded.data["jobs"]["train"]["if_"] == "needs.prep.outputs.n > 2 && !cancelled()"


# ----------------------------------------------------------------------------- resources


def test_model_and_semantic_errors_come_together() -> None:
    text = """
        name: x
        jobs:
          a:
            neds: b
            steps:
              - run: echo ${{ steps.later.outputs.x }}
              - id: later
                run: echo
          b:
            needs: [c]
            retries: -1
            steps: [{run: echo}]
    """
    assert errors(text) == (
        "flow.yaml:4:5: jobs.a.neds: unknown key 'neds' (did you mean 'needs'?)\n"
        "flow.yaml:6:14: jobs.a.steps[0].run: step 'later' has not run yet "
        "(it is jobs.a.steps[1]) in 'steps.later.outputs.x'\n"
        "flow.yaml:10:13: jobs.b.needs[0]: unknown job 'c'\n"
        "flow.yaml:11:5: jobs.b.retries: must be at least 0, got -1"
    )


def test_shell_and_continue_on_error_conditions() -> None:
    text = """
        name: x
        jobs:
          a:
            steps:
              - {run: echo, shell: "bash -c 'x"}
              - {run: echo, shell: " "}
              - {run: echo, shell: "pwsh -File {0}", continue-on-error: "${{ matrix.x }} or"}
              - {run: echo, continue-on-error: "${{ steps.a.outputs.ok }}"}
              - {run: echo, shell: python, continue-on-error: "true"}
    """
    assert errors(text) == (
        "flow.yaml:5:28: jobs.a.steps[0].shell: invalid shell command \"bash -c 'x\": "
        "No closing quotation\n"
        "flow.yaml:6:28: jobs.a.steps[1].shell: shell must not be empty (bash, sh, python, or a "
        "command with {0})\n"
        "flow.yaml:7:65: jobs.a.steps[2].continue-on-error: a condition must be one expression, "
        "bare or inside a single '${{ }}', got '${{ matrix.x }} or'\n"
        "flow.yaml:8:40: jobs.a.steps[3].continue-on-error: unknown step 'a' "
        "in 'steps.a.outputs.ok'"
    )


def test_manual_trigger_inputs_are_typed() -> None:
    text = """
        name: x
        triggers:
          manual:
            inputs:
              epochs: {type: integr, default: 3}
              lr: {type: float, default: fast}
              who: {default: me}
              n: {type: integer, default: "${{ variables.n }}"}
              bad: 3
        jobs: {a: {steps: [{run: echo}]}}
    """
    assert errors(text) == (
        "flow.yaml:5:16: triggers.manual.inputs.epochs.type: expected one of string, integer, "
        "float, boolean, array, object, got 'integr' (did you mean 'integer'?)\n"
        "flow.yaml:6:25: triggers.manual.inputs.lr.default: bad default: input 'lr' expects a "
        "number, got 'fast'\n"
        "flow.yaml:9:7: triggers.manual.inputs.bad: expected a map with "
        "type/default/required/description, got 3"
    )
