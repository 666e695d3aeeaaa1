"""Property tests: whatever text a flow file or an expression holds, flowray answers with its
own typed errors (diagnostics, ExprError), never another exception and never a traceback.

Flow texts are valid flows mutated at random (tokens of YAML, JSON, templates, extreme numbers
and odd characters inserted, deleted or replaced), run through ``flowray.validate`` in-process and
a few through the ``flowray validate`` command. Expressions are built from the language's
grammar with extreme literals. FLOWRAY_FUZZ_EXAMPLES sets the number of examples (default 120).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowray
from flowray.expr import ExprError, evaluate, evaluate_condition, parse, render
from flowray.spec import Diagnostic

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("FLOWRAY_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

SEEDS = [
    """\
name: train
env: {DATA: /data, N: 3}
variables: {epochs: 3}
jobs:
  prepare:
    steps:
      - id: rows
        run: echo "rows=1000" >> "$FLOWRAY_OUTPUT"
    outputs:
      rows: ${{ steps.rows.outputs.rows }}
  train:
    needs: prepare
    resources: {cpus: 2, gpus: 1, memory: 8GiB, nodes: 1, labels: {tpu: 1}}
    strategy:
      matrix: {lr: [0.1, 0.01], os: [a, b], exclude: [{os: a, lr: 0.1}], include: [{x: 1}]}
      max-parallel: 2
      fail-fast: false
    timeout-minutes: 60
    retries: 2
    steps:
      - run: python train.py --lr ${{ matrix.lr }} --rows ${{ needs.prepare.outputs.rows }}
        if: ${{ success() && matrix.os == 'a' }}
        timeout: 5
        env: {LR: "${{ matrix.lr }}"}
      - action: ./act
        with: {a: 3}
""",
    """\
name: anchors
variables: {base: &base {cpus: 1, gpus: 0}}
jobs:
  a: &job
    resources:
      <<: *base
      cpus: 2
    steps:
      - &step {run: echo a, shell: bash, working-directory: sub}
  b:
    <<: *job
    needs: [a]
    continue-on-error: true
    container: {image: alpine, env: {A: "1"}, volumes: [/a:/b]}
    artifacts: [out/*.txt]
    steps:
      - *step
      - run: |
          echo "${{ toJSON(needs) }}"
        continue-on-error: ${{ failure() }}
""",
    """\
name: manual
triggers:
  manual:
    inputs:
      n: {type: integer, default: 3}
      s: {type: string, required: true}
jobs:
  j:
    if: inputs.n > 1
    steps:
      - run: echo ${{ format('{0}-{1}', inputs.s, inputs.n) }}
      - run: print(1)
        shell: python
""",
]
TOKENS = [
    ": ", "\n", "  ", "- ", "-", "&a ", "*a", "*job", "<<: *base\n", "<<", "${{", "}}", "${{ ",
    "[", "]", "{", "}", ",", '"', "'", "\\", ".inf", "-.inf", ".nan", "1e999", "-1", "0",
    "99999999999999999999999", "1e12", "\t", "\0", "\x85", "\ufeff", "é", "#", "---\n", "...\n",
    "!!int ", "!!binary ", "!!python/object ", "? ", "|", ">", "%YAML 1.1\n", "@", "`", "=",
    "matrix.", "steps.", "needs.", "jobs:", "steps:", "run: ", "timeout: ", "cpus: ", "env:",
    "\"A=B\": 1", "exclude: [{}]", "include: [{}]", "./", "../", "${{ fromJSON('[') }}",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str]) -> str:
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        token = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
        if op == "insert":
            text = text[:at] + token + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 12)):]
        else:
            text = text[:at] + token + text[at + len(token):]
    return text


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("fuzzflows")
    (root / "act").mkdir()
    (root / "act" / "action-datatorch.yaml").write_text(
        "name: A\ninputs: {a: {type: integer, required: true}}\nruns: {using: cmd, command: x}\n"
    )
    (root / "sub").mkdir()
    # git actions: an empty action cache (FLOWRAY_CACHE_DIR, which the session sets, first)
    names = ("XDG_CACHE_HOME", "FLOWRAY_CACHE_DIR")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    os.environ["FLOWRAY_CACHE_DIR"] = str(root / "cache" / "flowray" / "actions")
    try:
        yield root
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def validate(path: Path, folder: Path) -> list[Diagnostic]:
    """``flowray.validate`` on ``path``: it returns diagnostics, each with a message; any
    exception fails the test. Offline: a mutation that makes a git action fetches nothing."""
    diagnostics = flowray.validate(path, workdir=folder, offline=True)
    for d in diagnostics:
        assert d.message and d.format()
        assert d.severity in ("error", "warning")
    return diagnostics


def test_the_seeds_are_valid(folder: Path) -> None:
    for i, seed in enumerate(SEEDS):
        path = folder / f"seed{i}.yaml"
        path.write_text(seed, encoding="utf-8")
        assert [d for d in validate(path, folder) if d.severity == "error"] == []
        as_json = folder / f"seed{i}.json"
        as_json.write_text(json.dumps(_yaml(seed)), encoding="utf-8")
        assert [d for d in validate(as_json, folder) if d.severity == "error"] == []


def _yaml(text: str) -> Any:
    from flowray.spec.yamlpos import parse_yaml

    return parse_yaml(text, "seed").data


@FUZZ
@given(text=mutated(SEEDS))
def test_mutated_yaml_flows(folder: Path, text: str) -> None:
    path = folder / "flow.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    validate(path, folder)


JSON_SEEDS = [json.dumps(_yaml(s), indent=1) for s in SEEDS]


@FUZZ
@given(text=mutated(JSON_SEEDS))
def test_mutated_json_flows(folder: Path, text: str) -> None:
    path = folder / "flow.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    validate(path, folder)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=30,
)


@FUZZ
@given(value=json_values, indent=st.sampled_from([None, 0, 1, 2, "\t"]))
def test_json_positions_match_yaml_positions(value: Any, indent: Any) -> None:
    """JSON that PyYAML cannot read gets its positions from a JSON reader of flowray's own;
    where PyYAML can read it, both agree."""
    from flowray.spec.yamlpos import YamlError, _json_positions, parse_yaml

    text = json.dumps(value, indent=indent, ensure_ascii=False)
    try:
        expected = parse_yaml(text, "f.json").positions
    except YamlError:
        return
    got = _json_positions(text)
    assert (got.keys, got.values) == (expected.keys, expected.values)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 1, -1, 43200, 43201, 1024, 1025, 10**400, 2**63, 1e-300]),
    st.sampled_from(["1e999", "5GiB", "9" * 40 + "G", "", "x"]),
)


@FUZZ
@given(timeout=numbers, retries=numbers, cpus=numbers, gpus=numbers, nodes=numbers,
       memory=numbers, parallel=numbers, label=numbers, step_timeout=numbers,
       axis=st.integers(1, 30), axes=st.integers(1, 5))
def test_numbers_anywhere_are_checked(folder: Path, timeout: Any, retries: Any, cpus: Any,
                                      gpus: Any, nodes: Any, memory: Any, parallel: Any,
                                      label: Any, step_timeout: Any, axis: int,
                                      axes: int) -> None:
    flow = {
        "name": "n",
        "jobs": {"a": {
            "timeout": timeout, "retries": retries,
            "resources": {"cpus": cpus, "gpus": gpus, "nodes": nodes, "memory": memory,
                          "labels": {"x": label}},
            "strategy": {"matrix": {f"k{i}": list(range(axis)) for i in range(axes)},
                         "max-parallel": parallel},
            "steps": [{"run": "echo", "timeout": step_timeout}],
        }},
    }
    path = folder / "numbers.json"
    path.write_text(json.dumps(flow), encoding="utf-8")  # inf and nan as JSON's extensions
    errors = [d for d in validate(path, folder) if d.severity == "error"]
    if not errors:  # accepted: every number is usable (and a plan can be made of it)
        assert math.isfinite(float(timeout)) and 0 < timeout <= 43200
        flowray.prepare(path, workdir=folder, offline=True)


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated(SEEDS))
def test_the_command_never_shows_a_traceback(folder: Path, text: str) -> None:
    path = folder / "cli.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "flowray", "validate", "--offline", str(path)],
                          cwd=folder, env=env, capture_output=True, timeout=120)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode in (0, 2), stderr
    assert "Traceback" not in stderr
    if proc.returncode == 2:
        assert str(path) in stderr or "cli.yaml" in stderr


# ----------------------------------------------------------------------------- expressions

literals = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "Infinity", "0", "-0", "1.5e-3", "0xff",
                     "0o17", "1e308", "1e999", "9" * 400, "0x" + "f" * 300, "''", "'it''s'",
                     "'{0}'", "'{'", "'}}'", "'[1, {\"a\": 2}]'", "'" + "[" * 3000 + "'",
                     "'" + "9" * 5000 + "'", "'1e999'", "'\"\\ud800\"'", "success()", "always()",
                     "failure()", "cancelled()", "nope()", "toJSON()", "format()"]),
    st.integers(-(10**20), 10**20).map(str),
    st.text(max_size=8).map(lambda s: "'" + s.replace("'", "''") + "'"),
)
paths = st.sampled_from(["steps", "matrix", "needs", "env", "a", "a.b", "a.b[0]", "a.*",
                         "a.b.*.c", "steps.s.outputs.o", "a['b']", "a[1e999]", "a[-1]",
                         "a[NaN]", "github", "inputs.x"])
FUNCTIONS = ["contains", "startsWith", "endsWith", "format", "join", "toJSON", "fromJSON",
             "success", "failure", "always", "cancelled", "hashFiles", "nope"]


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&&", "||"]),
                      inner).map(" ".join),
            inner.map(lambda e: f"!{e}"),
            inner.map(lambda e: f"({e})"),
            st.tuples(inner, st.sampled_from([".x", "[0]", ".*", "['k']", "[1e999]"])).map(
                "".join),
            st.tuples(st.sampled_from(FUNCTIONS), st.lists(inner, min_size=1, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"),
        )

    return st.recursive(st.one_of(literals, paths), extend, max_leaves=12)


CONTEXTS: dict[str, Any] = {
    "a": {"b": [1, "x", None, {"c": math.inf}], "k": {"c": -0.0}},
    "steps": {"s": {"outputs": {"o": "1e999"}}},
    "matrix": {"x": [1, 2]}, "needs": {}, "env": {"E": "\0"}, "inputs": {"x": 10**30},
}


def _typed(action: Any) -> None:
    try:
        action()
    except ExprError as exc:
        assert exc.message and str(exc) == exc.message
        assert exc.offset >= 0


@settings(max_examples=EXAMPLES * 4, deadline=None)
@given(source=st.one_of(_expressions(), st.text(max_size=40)))
def test_expressions_raise_only_expression_errors(source: str) -> None:
    _typed(lambda: evaluate(parse(source), CONTEXTS))
    _typed(lambda: render("x ${{ " + source + " }} y", CONTEXTS))
    _typed(lambda: render({"k": ["${{ " + source + " }}"]}, CONTEXTS))
    _typed(lambda: evaluate_condition(source, CONTEXTS, failed=False, cancelled=False))


@FUZZ
@given(source=_expressions())
def test_expressions_in_flows_are_diagnostics(folder: Path, source: str) -> None:
    flow = {"name": "e", "jobs": {"j": {
        "if": source,
        "env": {"X": "${{ " + source + " }}"},
        "steps": [{"run": "echo ${{ " + source + " }}", "continue-on-error": source}],
    }}}
    path = folder / "expr.json"
    path.write_text(json.dumps(flow), encoding="utf-8")
    validate(path, folder)
