"""Actions: local action files, step inputs against them, and refs this version cannot run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowray.spec import FlowError, LoadedFlow, load_action, load_flow

ADD = """
name: Add
description: Adds two numbers
inputs:
  a: {type: integer, required: true, description: first}
  b: {type: integer, default: 0}
  flag: {type: boolean, required: true, default: false}
outputs:
  sum: {type: integer}
runs:
  using: python
  main: add.py
"""


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(rel: str, text: str) -> None:
    path = Path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def add_action(folder: str = "actions/add") -> None:
    write(f"{folder}/action-datatorch.yaml", ADD)
    write(f"{folder}/add.py", "print('::sum::3')\n")


def errors(text: str, **kwargs: str) -> str:
    write("flow.yaml", text)
    with pytest.raises(FlowError) as info:
        load_flow("flow.yaml", **kwargs)
    return str(info.value)


def load(text: str, **kwargs: str) -> LoadedFlow:
    write("flow.yaml", text)
    return load_flow("flow.yaml", **kwargs)


# ----------------------------------------------------------------------------- load_action


def test_load_action_returns_plain_data() -> None:
    add_action()
    data = load_action("actions/add")
    assert data["name"] == "Add"
    assert data["inputs"]["a"] == {
        "type": "integer", "required": True, "default": None, "description": "first"
    }
    assert data["outputs"]["sum"] == {"type": "integer", "description": None}
    assert data["runs"]["using"] == "python" and data["runs"]["main"] == "add.py"


def test_load_action_yml_and_file_override() -> None:
    write("a/action-datatorch.yml", "name: A\nruns: {using: cmd, command: echo}\n")
    assert load_action("a")["name"] == "A"
    write("a/other.yaml", "name: B\nruns: {using: cmd, command: echo}\n")
    assert load_action("a", file="other.yaml")["name"] == "B"
    assert load_action(Path("a"))["name"] == "A"


def test_load_action_errors_are_located_in_the_action_file() -> None:
    write("a/action-datatorch.yaml", """
        name: A
        inputs:
          n: {type: int, default: x}
          m: {type: integer, default: abc, requird: true}
          t: {type: integer, default: "${{ env.N }}"}
        outputs:
          o: {typ: string}
        runs:
          using: pyton
    """)
    with pytest.raises(FlowError) as info:
        load_action("a")
    assert str(info.value) == (
        "a/action-datatorch.yaml:3:7: inputs.n.type: expected one of string, integer, float, "
        "boolean, array, object, got 'int' (did you mean 'integer'?)\n"
        "a/action-datatorch.yaml:4:22: inputs.m.default: bad default: input 'm' expects "
        "an integer, got 'abc'\n"
        "a/action-datatorch.yaml:4:36: inputs.m.requird: unknown key 'requird' "
        "(did you mean 'required'?)\n"
        "a/action-datatorch.yaml:7:7: outputs.o.typ: unknown key 'typ' (did you mean 'type'?)\n"
        "a/action-datatorch.yaml:9:3: runs.using: expected one of cmd, script, python, node, "
        "docker, got 'pyton' (did you mean 'python'?)"
    )


def test_load_action_entry_points_must_exist() -> None:
    write("a/action-datatorch.yaml", "name: A\nruns: {using: python, main: missing.py}\n")
    with pytest.raises(FlowError) as info:
        load_action("a")
    assert str(info.value) == (
        "a/action-datatorch.yaml:2:23: runs.main: 'missing.py' not found in the action folder a"
    )
    write("b/action-datatorch.yaml", "name: B\nruns: {using: script}\n")
    with pytest.raises(FlowError) as info:
        load_action("b")
    assert str(info.value) == "b/action-datatorch.yaml:2:1: runs: runs.using 'script' needs 'script'"


def test_load_action_missing_things() -> None:
    with pytest.raises(FlowError) as info:
        load_action("nowhere")
    assert str(info.value) == "nowhere: action folder not found"
    Path("empty").mkdir()
    with pytest.raises(FlowError) as info:
        load_action("empty")
    assert str(info.value) == (
        "empty: no action file action-datatorch.yaml (or action-datatorch.yml) in this folder"
    )
    with pytest.raises(FlowError) as info:
        load_action("empty", file="act.yaml")
    assert str(info.value) == "empty: no action file 'act.yaml' in this folder"
    write("empty/act.txt", "name: x\n")
    with pytest.raises(FlowError) as info:
        load_action("empty", file="act.txt")
    assert str(info.value) == (
        "empty/act.txt: action files must end in .yml, .yaml or .json (got '.txt')"
    )


def test_load_action_yaml_errors() -> None:
    write("a/action-datatorch.yaml", "name: [x\n")
    with pytest.raises(FlowError) as info:
        load_action("a")
    assert str(info.value) == (
        "a/action-datatorch.yaml:2:1: invalid YAML: did not find expected ',' or ']' "
        "(while parsing a flow sequence at line 1)"
    )
    write("a/action-datatorch.yaml", "- x\n")
    with pytest.raises(FlowError) as info:
        load_action("a")
    assert str(info.value) == (
        "a/action-datatorch.yaml:1:1: an action must be a map with 'name' and 'runs', got a list"
    )


# ----------------------------------------------------------------------------- local actions


def test_step_inputs_are_checked_against_the_action() -> None:
    add_action()
    text = """
        name: x
        jobs:
          j:
            steps:
              - action: ./actions/add
                with: {a: abc, b: "3", c: 1, flag: "no"}
              - action: ./actions/add
                with: {b: 1}
              - action: ./actions/add
              - action: ./actions/add
                inputs: {a: null, b: 2.5}
              - action: ./actions/add
                with: {a: "${{ env.A }}", b: ["${{ env.B }}"]}
    """
    assert errors(text) == (
        "flow.yaml:6:16: jobs.j.steps[0].with.a: input 'a' expects an integer, got 'abc' "
        "(action 'Add')\n"
        "flow.yaml:6:32: warning: jobs.j.steps[0].with.c: input 'c' is not declared by "
        "action 'Add' (declared: a, b, flag)\n"
        "flow.yaml:8:9: jobs.j.steps[1].with: missing required input 'a' of action 'Add'\n"
        "flow.yaml:9:9: jobs.j.steps[2]: missing required input 'a' of action 'Add'\n"
        "flow.yaml:11:18: jobs.j.steps[3].inputs.a: input 'a' is required, got null "
        "(action 'Add')\n"
        "flow.yaml:11:27: jobs.j.steps[3].inputs.b: input 'b' expects an integer, got 2.5 "
        "(action 'Add')"
    )


def test_valid_local_action_and_warnings() -> None:
    add_action()
    loaded = load("""
        name: x
        jobs:
          j:
            steps:
              - action: ./actions/add
                with: {a: 1, extra: yes}
    """)
    assert [w.format() for w in loaded.warnings] == [
        "flow.yaml:6:22: warning: jobs.j.steps[0].with.extra: input 'extra' is not declared "
        "by action 'Add' (declared: a, b, flag)"
    ]
    assert loaded.data["jobs"]["j"]["steps"][0]["action"] == "./actions/add"


def test_missing_action_folder_or_file() -> None:
    Path("actions/empty").mkdir(parents=True)
    text = """
        name: x
        jobs:
          j:
            steps:
              - action: ./actions/nope
              - action: ./actions/empty
    """
    assert errors(text) == (
        "flow.yaml:5:9: jobs.j.steps[0].action: local action './actions/nope' not found: "
        "there is no folder 'actions/nope'\n"
        "flow.yaml:6:9: jobs.j.steps[1].action: local action './actions/empty' has no action "
        "file: expected 'actions/empty/action-datatorch.yaml' (or .yml)"
    )


def test_invalid_action_file_is_reported_once_with_its_own_positions() -> None:
    write("act/action-datatorch.yaml", "name: A\nruns:\n  using: cmd\n  comand: echo\n")
    text = """
        name: x
        jobs:
          j:
            steps:
              - action: ./act
              - action: ./act
    """
    assert errors(text) == (
        "flow.yaml:5:9: jobs.j.steps[0].action: local action './act' is invalid "
        "(see the errors in 'act')\n"
        "flow.yaml:6:9: jobs.j.steps[1].action: local action './act' is invalid "
        "(see the errors in 'act')\n"
        "act/action-datatorch.yaml:4:3: runs.comand: unknown key 'comand' "
        "(did you mean 'command'?)"
    )


def test_validation_never_asks_for_a_docker_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    # No engine at DOCKER_HOST: container steps still validate (the step asks for an engine
    # when it is about to run; tests/test_containers.py), only a malformed one is an error.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    write("d/action-datatorch.yaml", "name: D\nruns: {using: docker, image: alpine}\n")
    text = """
        name: x
        jobs:
          j:
            steps: [{action: ./d}, {action: "docker://alpine:3"}, {action: "docker://"}]
          k:
            container: alpine:3
            steps: [{run: echo}]
    """
    assert errors(text) == (
        "flow.yaml:4:60: jobs.j.steps[2].action: 'docker://' names no image: write "
        "docker://IMAGE[:TAG]"
    )


def test_workspace_argument(tmp_path: Path) -> None:
    add_action("ws/actions/add")
    text = """
        name: x
        jobs:
          j:
            steps: [{action: ./actions/add, with: {a: 1}}]
    """
    assert load(text, workspace=str(tmp_path / "ws")).warnings == []
    assert errors(text) == (
        "flow.yaml:4:14: jobs.j.steps[0].action: local action './actions/add' not found: "
        "there is no folder 'actions/add'"
    )
    assert errors(text.replace("./actions/add", "./actions/nope"),
                  workspace=str(tmp_path / "ws")) == (
        "flow.yaml:4:14: jobs.j.steps[0].action: local action './actions/nope' not found: "
        "there is no folder 'ws/actions/nope'"
    )


# ----------------------------------------------------------------------------- other refs


def test_git_refs_pass_a_syntax_only_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    text = """
        name: x
        jobs:
          j:
            steps:
              - action: datatorch/python@v1
              - action: owner/repo
              - action: owner/repo/sub/dir@main
              - action: {name: datatorch/python, tag: v1}
              - action: docker://alpine:3
    """
    # Without a git loader (nothing fetched), git actions are checked for syntax only (and
    # docker:// ones never ask for an engine).
    assert load(text).data["jobs"]["j"]["steps"][4]["action"] == "docker://alpine:3"


def test_malformed_refs() -> None:
    text = """
        name: x
        jobs:
          j:
            steps:
              - action: owner/repo@-rf
              - action: owner/repo@a..b
              - action: owner/repo@
              - action: just-a-name
              - action: ../outside
              - action: ../../x/y@v1
              - action: owner/repo@v 1
              - action: {name: a/b, tag: --upload-pack=x}
    """
    expected = (
        "flow.yaml:5:9: jobs.j.steps[0].action: invalid action 'owner/repo@-rf': "
        "a tag must not start with '-'\n"
        "flow.yaml:6:9: jobs.j.steps[1].action: invalid action 'owner/repo@a..b': "
        "a tag must not contain '..'\n"
        "flow.yaml:7:9: jobs.j.steps[2].action: invalid action 'owner/repo@': "
        "the tag after '@' is empty\n"
        "flow.yaml:8:9: jobs.j.steps[3].action: invalid action 'just-a-name': expected './path' "
        "(a local action), 'owner/repo@tag' or 'docker://image'\n"
        "flow.yaml:9:9: jobs.j.steps[4].action: invalid action '../outside': expected './path' "
        "(a local action), 'owner/repo@tag' or 'docker://image'\n"
        "flow.yaml:10:9: jobs.j.steps[5].action: invalid action '../../x/y@v1': expected "
        "'./path' (a local action), 'owner/repo@tag' or 'docker://image'\n"
        "flow.yaml:11:9: jobs.j.steps[6].action: invalid action 'owner/repo@v 1': "
        "'v 1' is not a valid git tag or branch name\n"
        "flow.yaml:12:29: jobs.j.steps[7].action.tag: a tag must not start with '-'"
    )
    assert errors(text) == expected


def test_a_missing_action_used_twice_gets_the_same_error() -> None:
    text = """
        name: x
        jobs:
          j:
            steps: [{action: ./gone}, {action: ./gone}]
    """
    assert errors(text) == (
        "flow.yaml:4:14: jobs.j.steps[0].action: local action './gone' not found: "
        "there is no folder 'gone'\n"
        "flow.yaml:4:32: jobs.j.steps[1].action: local action './gone' not found: "
        "there is no folder 'gone'"
    )
