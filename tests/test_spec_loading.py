"""load_flow: files, extensions, encodings, YAML/JSON syntax, positions, YAML details."""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

import pytest

from flowray.spec import FlowError, LoadedFlow, load_flow

OK_JOBS = "jobs: {a: {steps: [{run: echo hi}]}}\n"


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(text: str | bytes, name: str = "flow.yaml") -> str:
    if isinstance(text, bytes):
        Path(name).write_bytes(text)
    else:
        Path(name).write_text(textwrap.dedent(text).lstrip("\n"))
    return name


def errors(text: str | bytes, name: str = "flow.yaml") -> str:
    write(text, name)
    with pytest.raises(FlowError) as info:
        load_flow(name)
    return str(info.value)


def load(text: str, name: str = "flow.yaml") -> LoadedFlow:
    return load_flow(write(text, name))


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("flow.txt", "flow.txt: flow files must end in .yml, .yaml or .json (got '.txt')"),
        ("flow", "flow: flow files must end in .yml, .yaml or .json (got no extension)"),
        ("flow.yaml.bak", "flow.yaml.bak: flow files must end in .yml, .yaml or .json "
                          "(got '.bak')"),
    ],
)
def test_extension_must_be_yaml_or_json(name: str, message: str) -> None:
    assert errors("name: x\n" + OK_JOBS, name) == message


@pytest.mark.parametrize("name", ["flow.yml", "flow.yaml", "flow.json", "FLOW.YAML"])
def test_accepted_extensions(name: str) -> None:
    text = '{"name": "x", "jobs": {"a": {"steps": [{"run": "echo hi"}]}}}'
    assert load(text, name).data["name"] == "x"


def test_missing_file() -> None:
    with pytest.raises(FlowError) as info:
        load_flow("nope.yaml")
    assert str(info.value) == "nope.yaml: file not found"


def test_folder_instead_of_file() -> None:
    os.mkdir("dir.yaml")
    with pytest.raises(FlowError) as info:
        load_flow("dir.yaml")
    assert str(info.value) == "dir.yaml: is a folder, not a file"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file() -> None:
    write("name: x\n" + OK_JOBS)
    os.chmod("flow.yaml", 0)
    with pytest.raises(FlowError) as info:
        load_flow("flow.yaml")
    assert str(info.value) == "flow.yaml: permission denied"


def test_not_utf8() -> None:
    assert errors(b"name: x\njobs: \xff\n") == (
        "flow.yaml:2:7: the file is not UTF-8 text (byte 0xff cannot be decoded)"
    )


def test_utf8_bom_is_fine() -> None:
    assert load_flow(write(b"\xef\xbb\xbfname: x\n" + OK_JOBS.encode())).data["name"] == "x"


def test_path_like_and_result_fields(tmp_path: Path) -> None:
    text = "name: x\n" + OK_JOBS
    write(text)
    loaded = load_flow(tmp_path / "flow.yaml")
    assert loaded.path == str(tmp_path / "flow.yaml")
    assert loaded.source_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert loaded.warnings == []


def test_empty_file() -> None:
    assert errors("") == "flow.yaml: the file is empty (a flow needs 'name' and 'jobs')"
    assert errors("# nothing\n") == "flow.yaml: the file is empty (a flow needs 'name' and 'jobs')"


@pytest.mark.parametrize(
    ("text", "got"), [("- a\n", "a list"), ("hello\n", "'hello'"), ("3\n", "3")]
)
def test_document_must_be_a_map(text: str, got: str) -> None:
    assert errors(text) == f"flow.yaml:1:1: a flow must be a map with 'name' and 'jobs', got {got}"


# ----------------------------------------------------------------------------- YAML syntax


def test_yaml_syntax_error_points_at_the_problem() -> None:
    assert errors("name: x\njobs: [a\n") == (
        "flow.yaml:3:1: invalid YAML: did not find expected ',' or ']' "
        "(while parsing a flow sequence at line 2)"
    )


def test_yaml_bad_indentation() -> None:
    text = """
        name: x
        jobs:
          a:
            steps:
              - run: echo
             oops: 1
    """
    assert errors(text) == (
        "flow.yaml:6:6: invalid YAML: did not find expected key "
        "(while parsing a block mapping at line 4)"
    )


def test_control_character() -> None:
    assert errors("name: x\x01\n") == (
        "flow.yaml:1:8: invalid YAML: control characters are not allowed (character 0x01)"
    )


def test_tabs_for_indentation() -> None:
    assert errors("name: x\njobs:\n\ta: 1\n") == (
        "flow.yaml:3:1: invalid YAML: found character that cannot start any token "
        "(while scanning for the next token at line 3)"
    )


def test_second_document() -> None:
    assert errors("name: x\n" + OK_JOBS + "---\nname: y\n") == (
        "flow.yaml:3:1: expected one YAML document, found a second one ('---')"
    )


def test_duplicate_keys_are_errors_everywhere() -> None:
    text = """
        name: x
        jobs:
          a:
            steps: [{run: echo}]
            env: {A: 1, A: 2}
          a:
            steps: [{run: echo}]
        name: y
    """
    assert errors(text) == (
        "flow.yaml:5:17: jobs.a.env.A: duplicate key 'A' (first defined at line 5)\n"
        "flow.yaml:6:3: jobs.a: duplicate key 'a' (first defined at line 3)\n"
        "flow.yaml:8:1: name: duplicate key 'name' (first defined at line 1)"
    )


def test_unsupported_tags() -> None:
    text = """
        name: !!binary aGVsbG8=
        jobs:
          a:
            steps: [{run: !shell echo}]
    """
    assert errors(text) == (
        "flow.yaml:1:7: name: unsupported YAML tag '!!binary'\n"
        "flow.yaml:4:19: jobs.a.steps[0].run: unsupported YAML tag '!shell'"
    )


def test_bad_explicit_scalar_tags() -> None:
    text = """
        name: x
        variables: {a: !!int abc, b: !!float x, c: !!bool maybe, d: !!str 3, e: !!float 3}
        jobs: {a: {steps: [{run: echo hi}]}}
    """
    assert errors(text) == (
        "flow.yaml:2:16: variables.a: 'abc' is not an integer\n"
        "flow.yaml:2:30: variables.b: 'x' is not a number\n"
        "flow.yaml:2:44: variables.c: 'maybe' is not a boolean"
    )


def test_unknown_and_recursive_aliases() -> None:
    assert errors("name: *x\n") == "flow.yaml:1:7: unknown alias '*x' (no '&x' before)"
    assert errors("name: x\nvariables: &v {a: *v}\n") == (
        "flow.yaml:2:19: alias '*v' is used inside its own anchor"
    )


def test_complex_keys_are_refused() -> None:
    assert errors("? [a, b]\n: 1\n") == (
        "flow.yaml:1:3: a mapping key must be a plain value, not a list or a map"
    )


def test_deep_nesting_is_refused_without_crashing() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    # flowray stops at the 129th level (column 142), unless the libyaml of the PyYAML wheel
    # has a limit of its own (1000 levels) and stops first, scanning ahead: its column then.
    location, message = errors(f"name: x\nvariables: {{v: {deep}}}\n").split(": ", 1)
    assert location in ("flow.yaml:2:142", "flow.yaml:2:1014")
    assert message == "the document is nested too deeply (more than 128 levels)"
    block = "".join("  " * i + f"k{i}:\n" for i in range(200))
    assert errors("name: x\n" + block) == (
        "flow.yaml:130:257: the document is nested too deeply (more than 128 levels)"
    )


def test_alias_bombs_are_refused() -> None:
    lines = ["name: x", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    # the alias that crosses the limit is named, where it stands
    assert errors("\n".join(lines) + "\n") == (
        "flow.yaml:7:15: alias '*a4' makes the document too large: expanding it passes the "
        "limit of 250000 values (aliases expanded)"
    )


def test_deep_json_is_refused() -> None:
    deep = "[" * 500 + "]" * 500
    assert errors('{"name": "x", "v": ' + deep + "}", "flow.json") == (
        "flow.json:1:147: the document is nested too deeply (more than 128 levels)"
    )
    deeper = "[" * 50_000 + "]" * 50_000  # deeper than json's recursion: still located
    assert errors('{"name": "x", "v": ' + deeper + "}", "flow.json") == (
        "flow.json:1:147: the document is nested too deeply (more than 128 levels)"
    )
    huge = "1" * 5000
    assert errors('{"name": "x", "v": ' + huge + "}", "flow.json") == (
        "flow.json:1:20: invalid JSON: a number is too long"
    )


# ----------------------------------------------------------------------------- YAML values


def test_yaml_12_scalars() -> None:
    loaded = load("""
        name: 1:30
        variables:
          a: yes
          b: on
          c: 010
          d: 0x1f
          e: 1_000
          f: 2024-01-01
          g: .inf
          h: ~
          i: 1.5e3
          j: True
          k: '3'
          l: 0o17
          m: .nan
          n: -3
          o: NO
        jobs: {a: {steps: [{run: echo hi}]}}
    """)
    v = loaded.data["variables"]
    assert loaded.data["name"] == "1:30"
    assert {k: v[k] for k in "abcdefhijklno"} == {
        "a": "yes", "b": "on", "c": 10, "d": 31, "e": "1_000", "f": "2024-01-01",
        "h": None, "i": 1500.0, "j": True, "k": "3", "l": 15, "n": -3, "o": "NO",
    }
    assert v["g"] == float("inf") and v["m"] != v["m"]


def test_keys_are_their_source_text() -> None:
    loaded = load("""
        name: x
        variables: {on: 1, 3: a, null: b, true: c}
        jobs: {a: {steps: [{run: echo hi}]}}
    """)
    assert loaded.data["variables"] == {"on": 1, "3": "a", "null": "b", "true": "c"}


def test_env_values_become_text() -> None:
    loaded = load("""
        name: x
        env: {A: 1, B: 2.5, C: true, D: ~, E: 1500.0, F: off}
        jobs: {a: {steps: [{run: echo hi}]}}
    """)
    assert loaded.data["env"] == {
        "A": "1", "B": "2.5", "C": "true", "D": "", "E": "1500", "F": "off"
    }


def test_anchors_aliases_and_merge_keys() -> None:
    loaded = load("""
        name: x
        variables:
          list: &l [1, 2]
          copy: *l
        jobs:
          a:
            env: &env {A: one, B: b}
            steps: [{run: echo}]
          b:
            env:
              B: two
              <<: *env
            resources:
              <<: [{cpus: 4}, {cpus: 8, memory: 1GiB}]
              gpus: 0
            steps: [{run: echo}]
    """)
    data = loaded.data
    assert data["variables"] == {"list": [1, 2], "copy": [1, 2]}
    assert data["jobs"]["b"]["env"] == {"A": "one", "B": "two"}
    res = data["jobs"]["b"]["resources"]
    assert (res["cpus"], res["memory"], res["gpus"]) == (4.0, "1GiB", 0)


def test_merge_keys_and_positions_of_merged_values() -> None:
    text = """
        name: x
        common: &defaults
          steps: [{run: echo}]
          neds: x
        jobs:
          a:
            <<: *defaults
            env: {A: one}
    """
    assert errors(text) == (
        "flow.yaml:2:1: common: unknown key 'common'\n"
        "flow.yaml:4:3: jobs.a.neds: unknown key 'neds' (did you mean 'needs'?)"
    )


def test_merge_values_must_be_maps() -> None:
    assert errors("name: x\njobs:\n  <<: [1]\n") == (
        "flow.yaml:3:7: jobs: a '<<' merge needs a map or a list of maps"
    )


# ----------------------------------------------------------------------------- JSON


def test_json_flow_loads() -> None:
    loaded = load('{"name": "x", "jobs": {"a": {"steps": [{"run": "echo", "with": {}}]}}}',
                  "flow.json")
    assert loaded.data["jobs"]["a"]["steps"][0]["run"] == "echo"


def test_json_errors_have_positions() -> None:
    text = '{\n  "name": "x",\n  "jobs": {"a": {"steps": [{"rn": "x"}], "retries": -1}}\n}'
    assert errors(text, "flow.json") == (
        "flow.json:3:29: jobs.a.steps[0].rn: unknown key 'rn' (did you mean 'run'?)\n"
        "flow.json:3:42: jobs.a.retries: must be at least 0, got -1"
    )


def test_invalid_json() -> None:
    assert errors('{"name": "x",\n "jobs": }', "flow.json") == (
        "flow.json:2:10: invalid JSON: Expecting value"
    )
    assert errors("name: x\n" + OK_JOBS, "flow.json") == (
        "flow.json:1:1: invalid JSON: Expecting value"
    )


def test_json_duplicate_keys() -> None:
    text = '{"name": "x",\n "jobs": {"a": {"steps": [{"run": "x"}]}},\n "name": "y"}'
    assert errors(text, "flow.json") == (
        "flow.json:3:2: name: duplicate key 'name' (first defined at line 1)"
    )


def test_json_with_tabs() -> None:
    text = '{\t"name": "x",\n\t"jobs": {"a": {"steps": [{"run": "x"}]}}}'
    assert load(text, "flow.json").data["name"] == "x"
