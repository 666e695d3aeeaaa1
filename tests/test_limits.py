"""Limits: what a flow, an option, an environment variable or an API argument may ask for, and
the clear error (exit 2, no traceback) past each limit (docs/flow-syntax.md, "Limits")."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace

import flowray
from flowray.execute.process import ProcessOutcome, ProcessRequest, ProcessSupervisor
from flowray.spec.matrix import MAX_MATRIX_CELLS, MatrixTooLarge, expand_matrix

REPO = Path(__file__).resolve().parent.parent


def cli(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`flowray ARGS` as a user runs it: a real process, its exit code, stdout and stderr."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "flowray", *args], cwd=ws.root, env=full,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


# ----------------------------------------------------------------------------- file size, aliases


def _long_text_bomb(ws: Workspace) -> None:
    """100 KB of flow whose aliases expand to 100 MB of environment text."""
    lines = ["name: bomb", "jobs:", "  j:", "    env:", f"      BIG: &b '{'x' * 50_000}'"]
    lines += [f"      K{i}: *b" for i in range(2000)]
    lines += ["    steps:", "      - run: echo hi", ""]
    (ws.root / "flow.yaml").write_text("\n".join(lines))


def test_an_alias_bomb_of_long_text_stops_at_the_alias(ws: Workspace) -> None:
    _long_text_bomb(ws)
    code, out, err = cli(ws, "validate", "flow.yaml")
    assert code == 2 and out == ""
    # 8 MiB / 50,000 characters: the 167th alias (line 6 + 166) crosses the limit
    assert err == ("flow.yaml:172:13: alias '*b' makes the document too large: expanding it "
                   "passes the limit of 8 MiB of text (aliases expanded)\n")
    out2 = ws.run("flow.yaml")
    assert out2.exit_code == 2
    assert "alias '*b' makes the document too large" in out2.stderr
    # nothing was cached (the validated-flow cache once grew to 200 MB from such a file)
    assert not (ws.root / ".flowray" / "cache" / "flows").exists() or not any(
        (ws.root / ".flowray" / "cache" / "flows").iterdir())


def test_an_alias_bomb_of_many_values_stops_at_the_alias(ws: Workspace) -> None:
    lines = ["name: x", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    ws.write("flow.yaml", "\n".join(lines) + "\n")
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    assert out.stderr == ("flow.yaml:7:15: alias '*a4' makes the document too large: expanding "
                          "it passes the limit of 250000 values (aliases expanded)\n")


def test_a_merge_of_a_large_map_is_linear() -> None:
    """`<<: *a` of a map of 20,000 keys (330 KB) took minutes: each key scanned every entry."""
    from flowray.spec.yamlpos import parse_yaml

    n = 20_000
    text = "\n".join(["base: &a", *(f"  k{i}: [{i}]" for i in range(n)), "other:", "  <<: *a",
                      "  k5: mine", ""])
    parsed = parse_yaml(text, "flow.yaml")
    assert len(parsed.data["other"]) == n and parsed.data["other"]["k5"] == "mine"
    assert parsed.data["other"]["k7"] == [7]
    # a merged value stands where it was written in the anchored map; its own keys stay theirs
    assert parsed.positions.value(("other", "k7", 0)) == (9, 8)
    assert parsed.positions.key(("other", "k5")) == (n + 4, 3)


def test_a_flow_file_over_4_mib_is_not_read(ws: Workspace) -> None:
    ws.write("flow.yaml", "name: big\njobs:\n  a:\n    steps:\n      - run: echo\n")
    with open(ws.root / "flow.yaml", "a") as fh:
        fh.write(("# " + "x" * 1021 + "\n") * 4097)  # 4 MiB + 1 KiB of comments
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    assert out.stderr == ("flow.yaml: the file is too large (more than 4 MiB; flow and action "
                          "files are limited to that size)\n")
    assert ws.run("flow.yaml").exit_code == 2


def test_action_files_are_read_through_the_same_limits(ws: Workspace) -> None:
    lines = ["name: A", "runs: {using: cmd, command: echo}", "a0: &a0 [x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 9)]
    ws.write("act/action-datatorch.yaml", "\n".join(lines) + "\n")
    ws.flow("name: f\njobs:\n  a:\n    steps:\n      - action: ./act\n")
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    assert ("act/action-datatorch.yaml:8:35: alias '*a4' makes the document too large: "
            "expanding it passes the limit of 250000 values (aliases expanded)") in out.stderr
    assert "flow.yaml:5:9: jobs.a.steps[0].action: local action './act' is invalid" in out.stderr


def test_json_errors_have_a_line_and_column_even_deep_down(ws: Workspace) -> None:
    ws.write("flow.json", '{"name": "x",\n' + '"v": 1,\n' * 300 + '"jobs": {"a": [1, 2,, 3]}}')
    out = ws.cli("validate", "flow.json")
    assert (out.exit_code, out.stderr) == (2, "flow.json:302:21: invalid JSON: Expecting value\n")
    # deeper than Python's json reader recurses: the nesting limit, where it is passed
    deep = '{"name": "x",\n "jobs": ' + "[" * 20_000 + "1, ]" + "]" * 19_999 + "}"
    ws.write("deep.json", deep)
    out = ws.cli("validate", "deep.json")
    assert out.exit_code == 2
    assert out.stderr == ("deep.json:2:137: the document is nested too deeply (more than 128 "
                          "levels)\n")


def test_json_that_yaml_cannot_read_still_has_positions(ws: Workspace) -> None:
    # a key of more than 1024 characters is valid JSON but not a YAML simple key
    flow = {"name": "t", "variables": {"k" * 2000: 1},
            "jobs": {"a": {"steps": [{"run": "x", "timeout": -1}]}}}
    ws.write("flow.json", json.dumps(flow, indent=2))
    out = ws.cli("validate", "flow.json")
    assert out.exit_code == 2
    assert out.stderr == ("flow.json:11:11: jobs.a.steps[0].timeout: must be greater than 0, "
                          "got -1\n")


def test_hints_and_listings_among_thousands_of_names_are_bounded(ws: Workspace) -> None:
    """1,000 references to unknown jobs among 1,000 needed jobs: a "did you mean" for each
    compared every name with every other (minutes for 3,000), and each message listed all the
    needs (a message of 10 KB each). Hints stop after a budget; listings show 20 names."""
    n = 1000
    lines = ["name: many", "jobs:"]
    for i in range(n):
        lines += [f"  job{i}:", "    steps: [{run: echo}]"]
    lines += ["  x:", "    needs: [" + ", ".join(f"job{i}" for i in range(n)) + "]", "    steps:"]
    lines += [f"      - run: echo ${{{{ needs.jbo{i}.outputs.a }}}}" for i in range(n)]
    ws.write("flow.yaml", "\n".join(lines) + "\n")
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    errors = out.stderr.splitlines()
    assert len(errors) == n
    assert errors[0] == ("flow.yaml:2006:14: jobs.x.steps[0].run: unknown job 'jbo0' (did you "
                         "mean 'job0'?) in 'needs.jbo0.outputs.a'")
    listed = ", ".join(f"job{i}" for i in range(20))
    assert errors[-1] == (f"flow.yaml:3005:14: jobs.x.steps[999].run: unknown job 'jbo999' "
                          f"(needs: {listed}, ... (1000 in all)) in 'needs.jbo999.outputs.a'")
    assert sum("did you mean" in e for e in errors) == 30  # 30,000 comparisons, 1,000 each


# ----------------------------------------------------------------------------- matrix


def _axes(n: int, values: int) -> str:
    return "".join(f"        a{i}: [{', '.join(str(v) for v in range(values))}]\n"
                   for i in range(n))


def test_a_matrix_past_the_cell_limit_is_refused_before_it_is_expanded(ws: Workspace) -> None:
    ws.write("flow.yaml", "name: m\njobs:\n  big:\n    strategy:\n      matrix:\n"
             + _axes(6, 100) + "    steps:\n      - run: echo\n")
    expected = ("flow.yaml:5:7: jobs.big.strategy.matrix: job 'big': the matrix has "
                "1,000,000,000,000 cells, more than the limit of 10,000 (one job per cell): use "
                "fewer axes or values\n")
    out = ws.cli("validate", "flow.yaml")
    assert (out.exit_code, out.stderr) == (2, expected)
    code, _, err = cli(ws, "run", "flow.yaml")
    assert code == 2 and err.endswith(expected)


def test_the_cell_limit_counts_the_product_and_the_cells_include_adds() -> None:
    assert MAX_MATRIX_CELLS == 10_000
    assert len(expand_matrix({"a": list(range(100)), "b": list(range(100))})) == 10_000
    with pytest.raises(MatrixTooLarge) as big:
        expand_matrix({"a": list(range(100)), "b": list(range(101))})
    assert big.value.count == 10_100
    # include entries that join no cell add cells of their own: they count too
    extra = [{"a": -i} for i in range(1, 3)]
    with pytest.raises(MatrixTooLarge) as grown:
        expand_matrix({"a": list(range(100)), "b": list(range(100)), "include": extra})
    assert grown.value.count == 10_001


def test_include_entries_extending_every_cell_are_bounded(ws: Workspace) -> None:
    """10,000 cells each extended by 26 entries: 260,000 values set, past the 250,000 the
    entries may set (otherwise their work grows as entries x cells)."""
    include = "".join(f"          - {{k{i}: {i}}}\n" for i in range(26))
    ws.write("flow.yaml", "name: m\njobs:\n  t:\n    strategy:\n      matrix:\n"
             + _axes(2, 100) + "        include:\n" + include
             + "    steps:\n      - run: echo\n")
    out = ws.cli("validate", "flow.yaml")
    assert (out.exit_code, out.stderr) == (2, (
        "flow.yaml:5:7: jobs.t.strategy.matrix: job 't': the matrix's 'include' entries set "
        "more than 250,000 values in its cells (each key of an entry counts once in each cell "
        "it extends): use fewer or smaller entries, or put values shared by every cell in 'env' "
        "or 'variables'\n"))
    cells = expand_matrix({"a": list(range(100)), "b": list(range(100)),
                           "include": [{f"k{i}": i} for i in range(25)]})
    assert len(cells) == 10_000 and cells[-1]["k24"] == 24


def test_a_long_value_copied_into_every_cell_is_bounded(ws: Workspace) -> None:
    """A 10,000-character value beside 1,000 others: 10 MB of values in 1,000 jobs (once 300 MB
    of events and records from a 60 KB flow, through an alias)."""
    ws.write("flow.yaml", "name: m\nvariables: {long: &long " + "y" * 10_000 + "}\njobs:\n"
             "  t:\n    strategy:\n      matrix:\n        a: [*long]\n"
             f"        b: [{', '.join(str(i) for i in range(1000))}]\n"
             "    steps:\n      - run: echo\n")
    out = ws.cli("validate", "flow.yaml")
    assert (out.exit_code, out.stderr) == (2, (
        "flow.yaml:6:7: jobs.t.strategy.matrix: job 't': the matrix's cells hold 10,004,890 "
        "characters of values together, more than the limit of 8 MiB (each cell, a job, keeps "
        "its own copy of its values): use shorter values, or keep long ones in 'variables' and "
        "name them in the matrix\n"))
    assert ws.run("flow.yaml").exit_code == 2
    assert not (ws.root / ".flowray" / "runs").exists() or not any(
        (ws.root / ".flowray" / "runs").iterdir())


def test_twenty_thousand_excludes_are_matched_by_hash(ws: Workspace) -> None:
    excludes = "".join(f"          - {{x: {i}, y: {i % 2}}}\n" for i in range(20_000))
    ws.write("flow.yaml", "name: m\njobs:\n  t:\n    strategy:\n      matrix:\n"
             f"        x: [{', '.join(str(i) for i in range(5000))}]\n        y: [0, 1]\n"
             "        exclude:\n" + excludes + "    steps:\n      - run: echo\n")
    out = ws.cli("run", "-n", "flow.yaml")
    assert out.exit_code == 0, out
    # 5000 x 2 cells, 5000 of them excluded (x even with y 0, x odd with y 1)
    jobs = [line for line in out.stdout.splitlines() if line.startswith("t.")]
    assert len(jobs) == 5000
    assert jobs[0].startswith("t.1: t (0, 1)") and jobs[-1].startswith("t.5000: t (4999, 0)")


@pytest.mark.parametrize(
    ("matrix", "cells"),
    [
        # an exclude may name a subset of the axes
        ({"x": [1, 2], "y": ["a", "b"], "exclude": [{"y": "a"}]},
         [{"x": 1, "y": "b"}, {"x": 2, "y": "b"}]),
        # values compare as == does: maps and lists by value, 1 and 1.0 alike
        ({"x": [{"k": [1, 2]}, {"k": [3]}], "y": [1.0, 2], "exclude": [{"x": {"k": [1, 2]}, "y": 1}]},
         [{"x": {"k": [1, 2]}, "y": 2}, {"x": {"k": [3]}, "y": 1.0}, {"x": {"k": [3]}, "y": 2}]),
        # an exclude naming a key that is no axis matches nothing; an empty one everything
        ({"x": [1, 2], "exclude": [{"z": 1}]}, [{"x": 1}, {"x": 2}]),
        ({"x": [1, 2], "exclude": [{}]}, []),
        # include: extends the cells it joins, else adds its own (which later ones do not extend)
        ({"x": [1, 2], "include": [{"x": 1, "e": "one"}, {"e2": "all"}, {"x": 3}, {"x": 3, "f": 1}]},
         [{"x": 1, "e": "one", "e2": "all"}, {"x": 2, "e2": "all"}, {"x": 3},
          {"x": 3, "f": 1}]),
        ({"include": [{"a": 1}, {"a": 2}]}, [{"a": 1}, {"a": 2}]),
    ],
)
def test_exclude_and_include_keep_their_meaning(matrix: dict[str, Any],
                                                cells: list[dict[str, Any]]) -> None:
    assert expand_matrix(matrix) == cells


# ----------------------------------------------------------------------------- numbers in flows


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("timeout: .inf", "jobs.a.timeout: expected a finite number, got inf"),
        ("timeout: .nan", "jobs.a.timeout: expected a finite number, got nan"),
        ("timeout-minutes: 1e12",
         "jobs.a.timeout-minutes: must be at most 43200, got 1000000000000.0"),
        ("timeout: 0", "jobs.a.timeout: must be greater than 0, got 0"),
        ("retries: 1000000", "jobs.a.retries: must be at most 100, got 1000000"),
        ("resources: {cpus: .nan}", "jobs.a.resources.cpus: expected a finite number, got nan"),
        ("resources: {cpus: 1e9}", "jobs.a.resources.cpus: must be at most 100000, got 1000000000.0"),
        ("resources: {gpus: 99999999999999999999}",
         "jobs.a.resources.gpus: must be at most 1024, got 99999999999999999999"),
        ("resources: {nodes: 5000}", "jobs.a.resources.nodes: must be at most 1024, got 5000"),
        ("resources: {memory: 99999999999999999999999999999999999G}",
         "jobs.a.resources.memory: '99999999999999999999999999999999999G...' is not a memory "
         "amount (too many digits)"),
        ("resources: {memory: 2EB}",
         "jobs.a.resources.memory: '2EB' is not a memory amount (examples: 512MiB, 8GiB, 2G, "
         "1000000)"),
        ("resources: {memory: 2000000TiB}",
         "jobs.a.resources.memory: memory must be more than 0 and at most 1 EiB, got "
         "'2000000TiB'"),
        ("resources: {memory: 0}",
         "jobs.a.resources.memory: memory must be more than 0 and at most 1 EiB, got 0"),
        ("resources: {labels: {tpu: .inf}}",
         "jobs.a.resources.labels.tpu: expected a finite number, got inf"),
        ("strategy: {matrix: {x: [1]}, max-parallel: 100000}",
         "jobs.a.strategy.max-parallel: must be at most 10000, got 100000"),
    ],
)
def test_every_number_in_a_flow_is_finite_and_in_range(ws: Workspace, job: str,
                                                        message: str) -> None:
    ws.flow(f"name: n\njobs:\n  a:\n    {job}\n    steps:\n      - run: echo\n")
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    assert out.stderr.split(": ", 1)[1] == message + "\n", out.stderr


def test_a_step_timeout_is_finite_and_in_range(ws: Workspace) -> None:
    ws.flow("""
        name: n
        jobs:
          a:
            steps:
              - run: echo
                timeout-minutes: .inf
              - run: echo
                timeout: 1e12
    """)
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    assert out.stderr == (
        "flow.yaml:6:9: jobs.a.steps[0].timeout-minutes: expected a finite number, got inf\n"
        "flow.yaml:8:9: jobs.a.steps[1].timeout: must be at most 43200, got 1000000000000.0\n"
    )


def test_a_timeout_at_the_limit_runs(ws: Workspace) -> None:
    ws.flow("""
        name: n
        jobs:
          a:
            timeout-minutes: 43200
            steps:
              - run: echo done
                timeout: 43200
    """)
    ws.run("flow.yaml", "-q").assert_success()


# ----------------------------------------------------------------------------- options, env, API


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grace", "inf"], "--grace must be a finite number from 0 to 3600, got inf"),
        (["--grace", "nan"], "--grace must be a finite number from 0 to 3600, got nan"),
        (["--grace", "1e6"], "--grace must be at most 3600, got 1e+06"),
        (["--grace", "-1"], "--grace must be 0 or more, got -1"),
        (["--cpus", "1e300"], "--cpus must be at most 100000, got 1e+300"),
        (["--cpus", "0"], "--cpus must be more than 0, got 0"),
        (["--cpus", "-inf"],
         "--cpus must be a finite number more than 0 and at most 100000, got -inf"),
        (["--gpus", ",".join(str(i) for i in range(2000))],
         "--gpus names 2000 GPUs, more than the limit of 1024"),
    ],
)
def test_numeric_options_are_checked(ws: Workspace, args: list[str], message: str) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: touch ran\n")
    for command in (["run", "flow.yaml"], ["run", "-n", "flow.yaml"]):
        out = ws.cli(*command, *args)
        assert (out.exit_code, out.stderr) == (2, f"error: {message}\n")
    assert not (ws.root / "ran").exists()


def test_submit_checks_grace_before_anything_is_shipped(ws: Workspace) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: echo\n")
    out = ws.cli("submit", "flow.yaml", "--address", "http://127.0.0.1:9", "--grace", "inf")
    assert (out.exit_code, out.stderr) == (
        2, "error: --grace must be a finite number from 0 to 3600, got inf\n")


def test_cancel_wait_and_prune_age_are_checked(ws: Workspace) -> None:
    out = ws.cli("cancel", "last", "--wait", "inf")
    assert (out.exit_code, out.stderr) == (
        2, "error: --wait must be a finite number from 0 to 86400, got inf\n")
    out = ws.cli("actions", "prune", "--older-than", "nan")
    assert (out.exit_code, out.stderr) == (
        2, "error: --older-than must be a finite number from 0 to 36500, got nan\n")


@pytest.mark.parametrize("value", ["99999999999999999999", "5000", ",".join(["0"] * 1025)])
def test_flowray_gpus_past_the_limit_is_an_error(ws: Workspace, value: str) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: touch ran\n")
    code, _, err = cli(ws, "run", "flow.yaml", env={"FLOWRAY_GPUS": value})
    assert code == 2
    if value.isdigit():
        assert err == f"error: FLOWRAY_GPUS={value}: more GPUs than the limit of 1024\n"
    else:
        assert err == "error: FLOWRAY_GPUS names 1025 GPUs, more than the limit of 1024\n"
    assert not (ws.root / "ran").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grace": math.inf}, "grace must be a finite number from 0 to 3600, got inf"),
        ({"grace": "5"}, "grace must be a number, got '5'"),
        ({"cpus": math.nan}, "cpus must be a finite number more than 0 and at most 100000, got nan"),
        ({"cpus": True}, "cpus must be a number, got True"),
        ({"cpus": 10**400}, "cpus must be at most 100000, got a number of 401 digits"),
        ({"gpus": 4}, "gpus must be a list of GPU ids (text, such as ['0', '1']), got int"),
        ({"gpus": ["0", ""]}, "gpus: '' is not a GPU id"),
        ({"gpus": [str(i) for i in range(1025)]},
         "gpus names 1025 GPUs, more than the limit of 1024"),
        ({"env": {"A=B": "x"}}, "env: environment variable name 'A=B' must not contain '='"),
        ({"env": {"A": "x\0y"}},
         "env: the value of environment variable 'A' must not contain a NUL character"),
        ({"env": {"A": 1}}, "env must map names to text, got str -> int"),
        ({"secrets": {"A": 1}}, "secrets must map names to text, got str -> int"),
    ],
)
def test_start_arguments_raise_start_error(ws: Workspace, kwargs: dict[str, Any],
                                           message: str) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: touch ran\n")
    with pytest.raises(flowray.StartError) as info:
        flowray.start("flow.yaml", workdir=ws.root, **kwargs)
    assert str(info.value) == message
    assert not (ws.root / "ran").exists()


@pytest.mark.parametrize("value", [10**5000, b"bytes", object()],
                         ids=["int-of-5001-digits", "bytes", "object"])
def test_inputs_that_are_no_json_value_are_input_errors(ws: Workspace, value: Any) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: touch ran\n")
    with pytest.raises(flowray.RunInputError) as info:
        flowray.start("flow.yaml", workdir=ws.root, inputs={"n": value})
    assert (info.value.input, info.value.reason) == ("n", "type")
    assert info.value.message == ("input 'n' is not a JSON value (text, a number of at most 4300 "
                                  "digits, true/false, null, or lists and maps of them)")
    with pytest.raises(flowray.StartError) as event:
        flowray.start("flow.yaml", workdir=ws.root, event={"n": value})
    assert str(event.value).startswith("event must be a JSON value")
    assert not (ws.root / "ran").exists()


def test_typed_inputs_too_large_to_convert_are_input_errors(ws: Workspace) -> None:
    ws.flow("""
        name: n
        triggers:
          manual:
            inputs:
              i: {type: integer}
              f: {type: float}
        jobs:
          a:
            steps:
              - run: echo
    """)
    with pytest.raises(flowray.RunInputError) as info:
        flowray.start("flow.yaml", workdir=ws.root, inputs={"i": "9" * 5000})
    assert info.value.message.startswith(
        "input 'i' expects an integer of at most 4300 digits, got '999")
    with pytest.raises(flowray.RunInputError) as big:
        flowray.start("flow.yaml", workdir=ws.root, inputs={"f": 10**400})
    assert big.value.message == ("input 'f' expects a number (this one is too large), got "
                                 + "1" + "0" * 400)
    out = ws.run("flow.yaml", "--input", "i=" + "9" * 5000)
    assert out.exit_code == 2 and "expects an integer of at most 4300 digits" in out.stderr


def test_run_wait_and_cancel_take_any_number(ws: Workspace) -> None:
    ws.flow("name: n\njobs:\n  a:\n    steps:\n      - run: echo hi\n")
    run = flowray.start("flow.yaml", workdir=ws.root)
    with pytest.raises(ValueError, match=r"^grace must be a finite number from 0 to 3600, got inf$"):
        run.cancel(grace=math.inf)
    assert run.wait(timeout=math.inf).status.value == "success"  # inf: no timeout
    with pytest.raises(ValueError, match="timeout must be a number of seconds or None, got nan"):
        run.wait(timeout=math.nan)


# ----------------------------------------------------------------------------- the watchdog


def test_one_unusable_timeout_does_not_stop_the_others() -> None:
    """A timeout of infinity (or one too far for the clock functions) once killed the
    watchdog thread, and every later timeout of the run was ignored."""
    sup = ProcessSupervisor(grace=0.5)
    outcomes: dict[str, ProcessOutcome] = {}

    def start(name: str, timeout: float) -> threading.Thread:
        req = ProcessRequest(argv=["sleep", "60"], env=dict(os.environ), cwd=".",
                             timeout=timeout)
        t = threading.Thread(target=lambda: outcomes.update({name: sup.run(req, print)}))
        t.start()
        return t

    far = [start("inf", math.inf), start("huge", 1e300), start("nan", math.nan)]
    near = start("near", 0.3)
    near.join(30)
    try:
        assert not near.is_alive()
        assert outcomes["near"].timed_out
    finally:
        sup.cancel_all()
        for t in far:
            t.join(30)
    assert not any(outcomes[n].timed_out for n in ("inf", "huge", "nan"))
    assert all(outcomes[n].cancelled for n in ("inf", "huge", "nan"))


# ----------------------------------------------------------------------------- outputs


def test_a_huge_output_file_fails_the_step_without_being_read_whole(ws: Workspace) -> None:
    # a sparse 400 MB file: reading it whole (as once) would take 400 MB of memory
    ws.flow("""
        name: o
        jobs:
          j:
            steps:
              - run: truncate -s 400M "$FLOWRAY_OUTPUT"
              - if: always()
                run: echo "small=1" >> "$FLOWRAY_OUTPUT"
    """)
    out = ws.run("flow.yaml", "-q")
    assert out.exit_code == 1
    steps = ws.record()["jobs"]["j"]["steps"]
    assert steps[0]["status"] == "failure" and steps[0]["outputs"] == {}
    assert steps[0]["error"] == ("the job's outputs are larger than 1 MiB (1048576 bytes: its "
                                 "steps' ::name:: lines and $FLOWRAY_OUTPUT files together)")
    assert steps[1]["status"] == "success" and steps[1]["outputs"] == {"small": "1"}


def test_output_lines_past_the_cap_fail_the_step(ws: Workspace) -> None:
    """`::name::` lines past the job's 1 MiB were dropped, and the step still succeeded."""
    ws.flow("""
        name: o
        jobs:
          j:
            steps:
              - run: |
                  python3 -c "print('::a::' + 'x' * 600000); print('::b::' + 'y' * 600000)"
              - run: python3 -c "print('::c::' + 'é' * 300000)"
    """)
    out = ws.run("flow.yaml", "-q")
    assert out.exit_code == 1
    steps = ws.record()["jobs"]["j"]["steps"]
    assert steps[0]["status"] == "failure" and steps[0]["outputs"] == {}
    assert steps[0]["error"].startswith("the job's outputs are larger than 1 MiB")


def test_outputs_are_counted_in_bytes(ws: Workspace) -> None:
    ws.flow("""
        name: o
        jobs:
          j:
            steps:
              - run: python3 -c "print('::a::' + 'x' * 600000)"
              - run: python3 -c "print('c=' + 'é' * 300000)" >> "$FLOWRAY_OUTPUT"
    """)
    out = ws.run("flow.yaml", "-q")
    assert out.exit_code == 1  # 600,005 + 600,003 bytes (300,000 characters of 2 bytes)
    steps = ws.record()["jobs"]["j"]["steps"]
    assert steps[0]["status"] == "success" and len(steps[0]["outputs"]["a"]) == 600000
    assert steps[1]["status"] == "failure"


# ----------------------------------------------------------------------------- environment names


def test_env_names_with_equals_or_nul_are_flow_errors(ws: Workspace) -> None:
    ws.write("flow.yaml", 'name: e\nenv:\n  "A=B": 1\njobs:\n  a:\n'
             '    env: {"X\\0Y": 1, OK: "a\\0b"}\n'
             '    container: {image: alpine, env: {"C=D": 1}}\n'
             '    steps:\n      - run: echo\n        env: {"": 2}\n')
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    assert out.stderr == (
        "flow.yaml:3:3: env[\"A=B\"]: environment variable name 'A=B' must not contain '='\n"
        "flow.yaml:6:11: jobs.a.env[\"X\\u0000Y\"]: environment variable name 'X\\x00Y' must "
        "not contain "
        "a NUL character\n"
        "flow.yaml:6:22: jobs.a.env.OK: the value of environment variable 'OK' must not "
        "contain a NUL character\n"
        "flow.yaml:7:38: jobs.a.container.env[\"C=D\"]: environment variable name 'C=D' must "
        "not contain '='\n"
        "flow.yaml:10:15: jobs.a.steps[0].env[\"\"]: an environment variable name must not be "
        "empty\n"
    )


def test_env_names_in_action_files_and_env_files(ws: Workspace) -> None:
    ws.action("act", 'name: A\nruns:\n  using: cmd\n  command: echo\n  env: {"A=B": 1}\n')
    ws.flow("name: f\njobs:\n  a:\n    steps:\n      - action: ./act\n")
    out = ws.cli("validate", "flow.yaml")
    assert out.exit_code == 2
    assert ("act/action-datatorch.yaml:5:9: runs.env[\"A=B\"]: environment variable name 'A=B' "
            "must not contain '='") in out.stderr
    ws.flow("name: f\njobs:\n  a:\n    steps:\n      - run: touch ran\n")
    (ws.root / "bad.env").write_bytes(b"A\0B=1\n")
    code, _, err = cli(ws, "run", "flow.yaml", "--env-file", "bad.env")
    assert code == 2
    assert err == ("error: env: environment variable name 'A\\x00B' must not contain a NUL "
                   "character\n")
    assert not (ws.root / "ran").exists()


def test_validate_api_never_raises_on_odd_text(ws: Workspace) -> None:
    # a lone surrogate cannot be written as UTF-8; a NUL cannot be in a path
    for text in ("name: \ud800\njobs: {}\n", "flow\0.yaml", "{\"name\": 1e999}"):
        diagnostics = flowray.validate(text, workdir=ws.root)
        assert diagnostics and all(d.format() for d in diagnostics)
    assert json.loads(json.dumps([d.message for d in flowray.validate("x\0.yaml")]))
