"""Whatever a flow file holds, load_flow either returns or raises FlowError, nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowray.spec import FlowError, load_action, load_flow

FLOW_KEYS = [
    "name", "jobs", "steps", "needs", "run", "action", "with", "inputs", "if", "env",
    "variables", "matrix", "strategy", "include", "exclude", "outputs", "resources", "cpus",
    "gpus", "nodes", "memory", "labels", "id", "timeout", "timeout-minutes", "continue-on-error",
    "working-directory", "container", "image", "triggers", "fail-fast", "max-parallel", "tag",
    "git", "file", "shell", "retries", "artifacts", "reports", "<<", "a", "b", "runs", "using",
    "main", "type", "default", "required",
]
TEMPLATES = [
    "${{ steps.a.outputs.x }}", "${{ matrix.x }}", "${{ needs.a.outputs.y }}", "${{",
    "${{ }}", "${{ contains(a, b) }}", "${{ variables.v }}", "./act", "./missing",
    "owner/repo@v1", "docker://x", "a", "b", "${{ foo( }}", "success()", "1:30",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TEMPLATES),
    st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(FLOW_KEYS), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=40,
)
flows = st.fixed_dictionaries(
    {"name": scalars, "jobs": st.dictionaries(keys, documents, max_size=3)},
    optional={"env": documents, "variables": documents},
)

FUZZ = settings(
    max_examples=int(os.environ.get("FLOWRAY_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    act = root / "act"
    act.mkdir()
    (act / "action-datatorch.yaml").write_text(
        "name: A\ninputs: {a: {type: integer, required: true}}\nruns: {using: cmd, command: x}\n"
    )
    return root


def attempt(path: Path, folder: Path) -> None:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        load_flow(path, workspace=str(folder))
    except FlowError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.format()
    finally:
        os.chdir(cwd)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text(folder: Path, text: str) -> None:
    path = folder / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    attempt(path, folder)


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes(folder: Path, data: bytes) -> None:
    path = folder / "flow.yml"
    path.write_bytes(data)
    attempt(path, folder)


@FUZZ
@given(doc=documents)
def test_any_yaml_document(folder: Path, doc: Any) -> None:
    path = folder / "flow.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    attempt(path, folder)


@FUZZ
@given(doc=flows)
def test_flow_shaped_documents(folder: Path, doc: Any) -> None:
    path = folder / "flow.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    attempt(path, folder)


@FUZZ
@given(doc=flows)
def test_flow_shaped_json(folder: Path, doc: Any) -> None:
    path = folder / "flow.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    attempt(path, folder)


@FUZZ
@given(doc=st.fixed_dictionaries({"name": scalars, "runs": documents},
                                 optional={"inputs": documents, "outputs": documents}))
def test_action_files(folder: Path, doc: Any) -> None:
    act = folder / "fuzzact"
    act.mkdir(exist_ok=True)
    (act / "action-datatorch.yaml").write_text(
        yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8"
    )
    try:
        load_action(act)
    except FlowError as exc:
        assert exc.diagnostics
