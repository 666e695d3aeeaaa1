"""Model (pydantic) errors as located, human diagnostics: paths in flow syntax, no union noise."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowray.spec import FlowError, load_flow


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def errors(text: str, name: str = "flow.yaml") -> str:
    Path(name).write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(FlowError) as info:
        load_flow(name)
    return str(info.value)


def test_unknown_key_with_suggestion() -> None:
    text = """
        name: x
        jobs:
          a:
            neds: b
            steps: [{run: echo}]
    """
    assert errors(text) == "flow.yaml:4:5: jobs.a.neds: unknown key 'neds' (did you mean 'needs'?)"


def test_unknown_keys_suggest_aliases() -> None:
    text = """
        name: x
        jobs:
          a:
            timeout-minute: 3
            continue-on-eror: true
            working-dir: x
            steps:
              - run: echo
                wiht: {}
                iff: x
            strategy: {fail-fats: true}
        jbs: {}
    """
    assert errors(text) == (
        "flow.yaml:4:5: jobs.a.timeout-minute: unknown key 'timeout-minute' "
        "(did you mean 'timeout-minutes'?)\n"
        "flow.yaml:5:5: jobs.a.continue-on-eror: unknown key 'continue-on-eror' "
        "(did you mean 'continue-on-error'?)\n"
        "flow.yaml:6:5: jobs.a.working-dir: unknown key 'working-dir' "
        "(did you mean 'working-directory'?)\n"
        "flow.yaml:9:9: jobs.a.steps[0].wiht: unknown key 'wiht' (did you mean 'with'?)\n"
        "flow.yaml:10:9: jobs.a.steps[0].iff: unknown key 'iff' (did you mean 'if'?)\n"
        "flow.yaml:11:16: jobs.a.strategy.fail-fats: unknown key 'fail-fats' "
        "(did you mean 'fail-fast'?)\n"
        "flow.yaml:12:1: jbs: unknown key 'jbs' (did you mean 'jobs'?)"
    )


def test_python_field_names_are_not_keys() -> None:
    text = """
        name: x
        jobs:
          a:
            continue_on_error: true
            steps: [{run: echo, if_: x, working_directory: y}]
            strategy: {matrix: {x: [1]}, max_parallel: 2}
    """
    assert errors(text) == (
        "flow.yaml:4:5: jobs.a.continue_on_error: unknown key 'continue_on_error' "
        "(did you mean 'continue-on-error'?)\n"
        "flow.yaml:5:25: jobs.a.steps[0].if_: unknown key 'if_' (did you mean 'if'?)\n"
        "flow.yaml:5:33: jobs.a.steps[0].working_directory: unknown key 'working_directory' "
        "(did you mean 'working-directory'?)\n"
        "flow.yaml:6:34: jobs.a.strategy.max_parallel: unknown key 'max_parallel' "
        "(did you mean 'max-parallel'?)"
    )


def test_missing_keys_point_at_the_parent() -> None:
    assert errors("jobs:\n  a:\n    steps: [{run: echo}]\n") == (
        "flow.yaml:1:1: missing required key 'name'"
    )
    text = """
        name: x
        jobs:
          a:
            name: no steps
    """
    assert errors(text) == "flow.yaml:3:3: jobs.a: missing required key 'steps'"


def test_empty_jobs_and_steps() -> None:
    assert errors("name: x\njobs: {}\n") == "flow.yaml:2:1: jobs: a flow needs at least one job"
    assert errors("name: x\njobs: {a: {steps: []}}\n") == (
        "flow.yaml:2:12: jobs.a.steps: a job needs at least one step"
    )


def test_step_rules() -> None:
    text = """
        name: ''
        jobs:
          a:
            steps:
              - {run: a, action: ./x}
              - {}
              - {run: a, with: {x: 1}}
              - {run: a, inputs: {x: 1}, with: {y: 1}}
              - {run: a, timeout: 1, timeout-minutes: 2}
              - {id: 'bad id', run: a}
              - {run: a, shell: 3, working-directory: [1], continue-on-error: 3}
    """
    assert errors(text) == (
        "flow.yaml:1:1: name: must not be empty\n"
        "flow.yaml:5:9: jobs.a.steps[0]: a step needs exactly one of 'action' or 'run'\n"
        "flow.yaml:5:18: jobs.a.steps[0].action: local action './x' not found: "
        "there is no folder 'x'\n"
        "flow.yaml:6:9: jobs.a.steps[1]: a step needs exactly one of 'action' or 'run'\n"
        "flow.yaml:7:9: jobs.a.steps[2]: 'inputs'/'with' belong to 'action' steps, "
        "not 'run' steps\n"
        "flow.yaml:8:9: jobs.a.steps[3]: use either 'inputs' or 'with', not both\n"
        "flow.yaml:9:9: jobs.a.steps[4]: use either 'timeout' or 'timeout-minutes', not both\n"
        "flow.yaml:10:10: jobs.a.steps[5].id: invalid step id 'bad id': ids start with a letter "
        "or '_' and hold only letters, digits, '-' and '_'\n"
        "flow.yaml:11:18: jobs.a.steps[6].shell: expected a string, got 3\n"
        "flow.yaml:11:28: jobs.a.steps[6].working-directory: expected a string, got a list\n"
        "flow.yaml:11:52: jobs.a.steps[6].continue-on-error: "
        "expected a boolean or a string, got 3"
    )


def test_job_field_types_and_limits() -> None:
    text = """
        name: x
        jobs:
          a:
            steps: [{run: a}]
            needs: 3
            if: 1
            resources: {cpus: 0, gpus: 1.5, memory: 8XB, labels: {a: x}, accelerator: 1}
            strategy: {matrix: {x: []}, fail-fast: yes, max-parallel: 0}
            timeout: "10"
            retries: true
            continue-on-error: maybe
            outputs: []
            artifacts: 3
            reports: [1]
          b: []
          c: null
          d:
            steps: 3
          "b c": {steps: [{run: x}]}
    """
    assert errors(text) == (
        "flow.yaml:5:5: jobs.a.needs: expected a job id or a list of job ids, got 3\n"
        "flow.yaml:6:5: jobs.a.if: expected a string or a boolean, got 1\n"
        "flow.yaml:7:17: jobs.a.resources.cpus: must be greater than 0, got 0\n"
        "flow.yaml:7:26: jobs.a.resources.gpus: expected an integer, got 1.5\n"
        "flow.yaml:7:37: jobs.a.resources.memory: '8XB' is not a memory amount "
        "(examples: 512MiB, 8GiB, 2G, 1000000)\n"
        "flow.yaml:7:59: jobs.a.resources.labels.a: expected a number, got 'x'\n"
        "flow.yaml:7:66: jobs.a.resources.accelerator: expected a string, got 1\n"
        "flow.yaml:8:16: jobs.a.strategy.matrix: matrix axis 'x' must be a non-empty list "
        "of values\n"
        "flow.yaml:8:33: jobs.a.strategy.fail-fast: expected true or false, got 'yes'\n"
        "flow.yaml:8:49: jobs.a.strategy.max-parallel: must be at least 1, got 0\n"
        "flow.yaml:9:5: jobs.a.timeout: expected a number, got '10'\n"
        "flow.yaml:10:5: jobs.a.retries: expected an integer, got true\n"
        "flow.yaml:11:5: jobs.a.continue-on-error: expected true or false, got 'maybe'\n"
        "flow.yaml:12:5: jobs.a.outputs: expected a map, got a list\n"
        "flow.yaml:13:5: jobs.a.artifacts: expected a path (glob) or a list of them, got 3\n"
        "flow.yaml:14:15: jobs.a.reports[0]: expected a string, got 1\n"
        "flow.yaml:15:3: jobs.b: expected a map, got a list\n"
        "flow.yaml:16:3: jobs.c: expected a map, got null\n"
        "flow.yaml:18:5: jobs.d.steps: expected a list, got 3\n"
        "flow.yaml:19:3: jobs[\"b c\"]: invalid job id 'b c': ids start with a letter or '_' "
        "and hold only letters, digits, '-' and '_'"
    )


def test_union_errors_fold_into_one_message() -> None:
    text = """
        name: x
        jobs:
          a:
            steps:
              - action: 3
              - action: [a]
              - run: echo
                env: {A: [1], B: {x: 1}, C: 1, D: null}
                if: {x: 1}
            container: 3
        triggers: 3
    """
    assert errors(text) == (
        "flow.yaml:5:9: jobs.a.steps[0].action: expected an action ('./path', "
        "'owner/repo@tag' or 'docker://image') or a map with name/tag/git/file, got 3\n"
        "flow.yaml:6:9: jobs.a.steps[1].action: expected an action ('./path', "
        "'owner/repo@tag' or 'docker://image') or a map with name/tag/git/file, got a list\n"
        "flow.yaml:8:15: jobs.a.steps[2].env.A: expected a string, a number or a boolean, "
        "got a list\n"
        "flow.yaml:8:23: jobs.a.steps[2].env.B: expected a string, a number or a boolean, "
        "got a map\n"
        "flow.yaml:9:9: jobs.a.steps[2].if: expected a string or a boolean, got a map\n"
        "flow.yaml:10:5: jobs.a.container: expected an image name or a map with "
        "image/options/env/volumes, got 3\n"
        "flow.yaml:11:1: triggers: expected a map or a list, got 3"
    )


def test_map_form_errors_are_reported_inside_the_map() -> None:
    text = """
        name: x
        jobs:
          a:
            steps:
              - action: {name: a/b, tag: v1, gti: x}
              - action: {tag: v1}
            container: {imag: x}
    """
    assert errors(text) == (
        "flow.yaml:5:38: jobs.a.steps[0].action.gti: unknown key 'gti' (did you mean 'git'?)\n"
        "flow.yaml:6:9: jobs.a.steps[1].action: missing required key 'name'\n"
        "flow.yaml:7:5: jobs.a.container: missing required key 'image'\n"
        "flow.yaml:7:17: jobs.a.container.imag: unknown key 'imag' (did you mean 'image'?)"
    )


def test_renamed_keys_keep_their_names_in_errors() -> None:
    text = """
        name: x
        jobs:
          a:
            timeout-minutes: 0
            steps:
              - run: echo
                timeout-minutes: -1
              - action: ./act
                inputs: 3
    """
    Path("act").mkdir()
    Path("act/action-datatorch.yaml").write_text("name: A\nruns: {using: cmd, command: echo}\n")
    assert errors(text) == (
        "flow.yaml:4:5: jobs.a.timeout-minutes: must be greater than 0, got 0\n"
        "flow.yaml:7:9: jobs.a.steps[0].timeout-minutes: must be greater than 0, got -1\n"
        "flow.yaml:9:9: jobs.a.steps[1].inputs: expected a map, got 3"
    )


def test_valid_flow_dumps_the_typed_shape() -> None:
    Path("flow.yaml").write_text(textwrap.dedent("""
        name: x
        env: {A: 1}
        jobs:
          a:
            needs: b
            timeout-minutes: 5
            artifacts: out/*
            steps:
              - id: s
                run: echo
                continue-on-error: ${{ matrix.ok }}
                if: true
            strategy: {matrix: {ok: [true, false]}}
          b:
            steps: [{run: echo, timeout-minutes: 1.5}]
    """))
    data = load_flow("flow.yaml").data
    a = data["jobs"]["a"]
    assert a["needs"] == ["b"] and a["timeout"] == 5.0 and a["artifacts"] == ["out/*"]
    assert a["steps"][0]["if_"] == "true"
    assert a["steps"][0]["continue_on_error"] == "${{ matrix.ok }}"
    assert data["jobs"]["b"]["steps"][0]["timeout"] == 1.5
    assert data["env"] == {"A": "1"}
    assert a["strategy"] == {"matrix": {"ok": [True, False]}, "fail_fast": True,
                             "max_parallel": None}
