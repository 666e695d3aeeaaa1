"""Side by side with the DataTorch CLI: the same flows and actions run by ``datatorch pipeline
run`` (DataTorch 0.8.0, in a virtualenv of its own) and by ``flowray run``, on this machine, with
each step's status and outputs compared.

Every flow either gives the same statuses and outputs under both, or its case names the entry of
docs/datatorch.md that explains the difference (and the test checks the difference is the one
described, and that the entry is there). The actions are real git repositories reached over
file:// in the object form (``{name, tag, git}``), which both tools clone. Both tools get the
same runner folder, so ``directory.*`` must be equal too.

DataTorch comes from the package index (``pip install datatorch==0.8.0``, once per session);
``FLOWRAY_TEST_DATATORCH=/path/to/datatorch`` uses an installed one instead. The test is skipped,
saying so, only when the index cannot be reached.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gitfixtures import ActionRepo

DATATORCH_VERSION = "0.8.0"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "datatorch.md"
_NETWORK = re.compile(
    r"(Temporary failure in name resolution|Name or service not known|Failed to establish a new "
    r"connection|Network is unreachable|ConnectionError|ProxyError|No matching distribution "
    r"found for datatorch|Could not find a version that satisfies the requirement datatorch)",
    re.IGNORECASE,
)


@pytest.fixture(scope="session")
def datatorch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``datatorch`` command of a DataTorch 0.8.0 in its own virtualenv."""
    given = os.environ.get("FLOWRAY_TEST_DATATORCH")
    if given:
        exe = given
    else:
        venv = tmp_path_factory.mktemp("datatorch-venv")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", f"datatorch=={DATATORCH_VERSION}"],
            capture_output=True, text=True, timeout=1200, check=False,
        )
        if proc.returncode != 0:
            if _NETWORK.search(proc.stderr):
                pytest.skip("the package index cannot be reached, so DataTorch "
                            f"{DATATORCH_VERSION} cannot be installed to compare with: "
                            + proc.stderr.strip().splitlines()[-1])
            raise AssertionError(f"pip install datatorch=={DATATORCH_VERSION} failed:\n"
                                 f"{proc.stderr}")
        exe = str(venv / "bin" / "datatorch")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == f"DataTorch, version {DATATORCH_VERSION}", out
    return exe


# ----------------------------------------------------------------------------- the actions

PROBE = """\
$schema: http://datatorch.io/schema/action.v1.json
name: Probe
description: Reports its inputs and what it sees.
author: flowray tests
branding: {icon: search, color: green}
cache: false
env:
  PROBE_TOKEN: a token it would send
  PROBE_MODE: {description: how to probe, required: false}
inputs:
  s: {type: string, default: plain}
  n: {type: integer, default: 3}
  f: {type: float, default: 1.5}
  b: {type: boolean, default: false}
  arr: {type: array, default: [1, 2]}
  lst: {type: list, default: [7]}
  obj: {type: object, default: {k: v}}
  opt: {type: string, description: no default}
  own: {type: string, default: "${{ input.s }}/${{ variable.n }}"}
  temp: {type: string, default: "${{ directory.temp }}/download-file"}
  dirs:
    type: string
    default: >-
      ${{ directory.runner }}|${{ directory.agent }}|${{ directory.actions }}|${{
      directory.logs }}|${{ directory.temp }}|${{ agent.directory }}|${{ runner.directory }}
  machine:
    type: string
    default: "${{ machine.name }}|${{ machine.os }}|${{ machine.version }}"
  py: {type: string, default: "${{ python.version }}|${{ python.implementation }}"}
  act:
    type: string
    default: "${{ action.name }}|${{ action.version }}|${{ action.tag }}|${{ action.description }}"
  actdir: {type: string, default: "${{ action.directory }}"}
  stepctx: {type: string, default: "${{ step.id }}|${{ step.name }}"}
runs:
  using: python
  main: probe.py
"""
PROBE_PY = """\
import json, os, sys
inputs = json.loads(sys.argv[1])
here = os.path.dirname(os.path.abspath(__file__))
actdir = inputs.pop("actdir")
inputs["actdir_is_mine"] = os.path.isdir(actdir) and os.path.samefile(actdir, here)
os.makedirs(inputs["temp"], exist_ok=True)
with open(os.path.join(inputs["temp"], "probe"), "w") as fh:
    fh.write("ok")
inputs["temp_written"] = True
inputs["token"] = os.environ.get("PROBE_TOKEN")
for key, value in sorted(inputs.items()):
    print("::%s::%s" % (key, json.dumps(value)))
"""

ADD = """\
$schema: http://datatorch.io/schema/action.v1.json
name: Python Add
description: Adds two numbers.
inputs:
  a: {type: integer, required: true, description: First number}
  b: {type: integer, required: true, description: Second number}
outputs:
  sum: {type: integer, description: a + b}
runs:
  using: python
  main: add.py
"""
ADD_PY = """\
import json, sys
inputs = json.loads(sys.argv[-1])
print("::sum::" + json.dumps(inputs["a"] + inputs["b"]))
"""

CMD = """\
$schema: http://datatorch.io/schema/action.v1.json
name: Command Probe
description: A command action.
inputs:
  x: {type: string, default: ex}
  n: {type: integer, default: 2}
runs:
  using: cmd
  command: >-
    echo "::ctx::\\"${{ step.id }}|${{ action.name }}|${{ action.tag }}|${{ python.version }}\\""
    && echo "::temp::\\"${{ directory.temp }}\\"" && echo "::x::\\"$INPUT_X\\"" && echo "::n::$INPUT_N"
"""

CMD_INPUT = """\
name: Command With Inputs
inputs:
  x: {type: string, default: ex}
runs:
  using: cmd
  command: echo "::x::\\"${{ input.x }}\\""
"""

SCRIPT = """\
$schema: http://datatorch.io/schema/action.v1.json
name: Script Probe
inputs:
  word: {type: string, default: w}
runs:
  using: script
  script: run.sh first second
"""
SCRIPT_SH = """\
#!/bin/sh
echo "::args::\\"$1,$2\\""
echo "::word::\\"$INPUT_WORD\\""
"""

FAIL = """\
name: Fails
inputs:
  code: {type: integer, default: 3}
runs:
  using: python
  main: fail.py
"""
FAIL_PY = """\
import json, sys
print("::partial::1")
sys.exit(json.loads(sys.argv[-1])["code"])
"""

TYPED = """\
name: Typed Output
outputs:
  n: {type: integer}
runs:
  using: python
  main: typed.py
"""
TYPED_PY = 'print(\'::n::"5"\')\n'

ENTRY = """\
$schema: http://datatorch.io/schema/action.v1.json
name: Templated Entry
inputs:
  entry: {type: string, default: b.py}
runs:
  using: python
  main: ${{ input.entry }}
"""

COUNT = """\
$schema: http://datatorch.io/schema/action.v1.json
name: Counter
description: Counts its runs (a file per tool in the runner's temp folder).
cache: true
inputs:
  key: {type: string, default: k}
  folder: {type: string, default: "${{ directory.temp }}"}
runs:
  using: python
  main: count.py
"""
COUNT_PY = """\
import json, os, sys
inputs = json.loads(sys.argv[-1])
tool = "flowray" if os.environ.get("FLOWRAY") else "datatorch"
path = os.path.join(inputs["folder"], inputs["key"] + "." + tool)
with open(path, "a") as fh:
    fh.write("run\\n")
with open(path) as fh:
    print("::runs::" + json.dumps(len(fh.read().splitlines())))
"""

NODE = """\
name: Node Probe
inputs:
  x: {type: string, default: nx}
runs:
  using: node
  main: index.js
"""
NODE_JS = """\
const inputs = JSON.parse(process.argv[process.argv.length - 1]);
console.log("::x::" + JSON.stringify(inputs.x));
"""

ACTIONS: dict[str, dict[str, str]] = {
    "probe": {"action-datatorch.yaml": PROBE, "probe.py": PROBE_PY},
    "add": {"action-datatorch.yaml": ADD, "add.py": ADD_PY},
    "cmd": {"action-datatorch.yaml": CMD},
    "cmd-input": {"action-datatorch.yaml": CMD_INPUT},
    "script": {"action-datatorch.yaml": SCRIPT, "run.sh": SCRIPT_SH},
    "fail": {"action-datatorch.yaml": FAIL, "fail.py": FAIL_PY},
    "typed": {"action-datatorch.yaml": TYPED, "typed.py": TYPED_PY},
    "entry": {"action-datatorch.yaml": ENTRY, "a.py": 'print(\'::which::"a"\')\n',
              "b.py": 'print(\'::which::"b"\')\n'},
    "node": {"action-datatorch.yaml": NODE, "index.js": NODE_JS},
    "count": {"action-datatorch.yaml": COUNT, "count.py": COUNT_PY},
}


# ----------------------------------------------------------------------------- the cases

Result = list[tuple[str, Any]]  # per step: (status, outputs); outputs None unless success


@dataclass
class Case:
    name: str
    steps: str  # YAML of the job's steps; ACTION(x) is action x in the object form
    head: str = ""  # flow keys before `jobs:`
    differs: str | None = None  # the docs/datatorch.md entry (D<n>) that explains a difference
    alone: bool = False  # run as a flow of its own (see "running them")
    # For a documented difference: checks it is the one described (DataTorch's, flowray's).
    check: Callable[[Result, Result], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


def out(result: Result, step: int) -> dict[str, Any]:
    status, outputs = result[step]
    assert status == "success", result
    assert isinstance(outputs, dict)
    return outputs


def _bool_false(dt: Result, fr: Result) -> None:
    assert out(dt, 0)["b"] is True and out(fr, 0)["b"] is False


def _unnamed(dt: Result, fr: Result) -> None:
    assert out(dt, 0)["stepctx"] == "None|" and out(fr, 0)["stepctx"] == "1|acme/probe"


def _runner_id(dt: Result, fr: Result) -> None:
    assert out(dt, 0)["s"] == "None" and out(fr, 0)["s"] == os.uname().nodename


def _refused(dt: Result, fr: Result) -> None:
    # DataTorch runs the steps before and fails at the step; flowray refuses the flow first.
    assert dt[0][0] == "success" and dt[1][0] == "failure", dt
    assert all(status == "refused" for status, _ in fr), fr


def _undefined(dt: Result, fr: Result) -> None:
    assert dt[0][0] == "failure" and fr[0][0] == "success", (dt, fr)


def _variable(dt: Result, fr: Result) -> None:
    assert dt[1][0] == "failure" and out(fr, 1)["sum"] == 6, (dt, fr)


def _output_types(dt: Result, fr: Result) -> None:
    assert out(dt, 0) == {"n": "5"} and out(fr, 0) == {"n": 5}


def _cmd_input(dt: Result, fr: Result) -> None:
    assert dt[0][0] == "failure" and out(fr, 0) == {"x": "a'b"}


def _node(dt: Result, fr: Result) -> None:
    assert dt[0][0] == "failure"
    if shutil.which("node") is None:  # no Node.js here: flowray's step fails too, saying so
        assert fr[0][0] == "failure"
    else:
        assert out(fr, 0) == {"x": "nx"}


CASES = [
    Case("probe-defaults", """
      - id: p
        name: Probe
        action: ACTION(probe)
    """),
    Case("probe-given-values", """
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {s: 5, n: "7", f: "2.5", b: true, arr: "[3, 4]", lst: "[8, 9]", obj: {a: 1},
                 opt: given}
    """),
    Case("probe-given-yaml-false", """
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {b: false, f: 2, arr: [x, y]}
    """),
    Case("probe-boolean-text-false", """
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {b: "false"}
    """, differs="D1", check=_bool_false),
    Case("probe-unnamed-step", """
      - action: ACTION(probe)
    """, differs="D2", check=_unnamed),
    Case("flow-input-templates", """
      - id: p
        name: Templated
        action: ACTION(probe)
        inputs:
          s: "${{ step.id }}-${{ step.name }}-${{ machine.os }}-${{ python.implementation }}"
          opt: "${{ python.version }} ${{ machine.name }} ${{ machine.version }}"
    """),
    Case("flow-input-directories", """
      - id: p
        name: Dirs
        action: ACTION(probe)
        inputs:
          s: "${{ directory.temp }}/x"
          opt: "${{ agent.directory }} ${{ runner.directory }} ${{ directory.actions }}"
    """),
    Case("flow-runner-id", """
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {s: "${{ agent.id }}"}
    """, differs="D3", check=_runner_id),
    Case("env-declared-given", """
      - id: p
        name: Probe
        action: ACTION(probe)
    """, env={"PROBE_TOKEN": "tok-1"}, alone=True),
    Case("step-outputs-chain", """
      - id: first
        name: first
        action: ACTION(add)
        inputs: {a: 2, b: 3}
      - id: second
        name: second
        action: ACTION(add)
        inputs: {a: "${{ steps.first.outputs.sum }}", b: 1}
    """),
    Case("step-outputs-embedded", """
      - id: first
        name: first
        action: ACTION(add)
        inputs: {a: 20, b: 22}
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {s: "sum=${{ steps.first.outputs.sum }}"}
    """),
    Case("variable-in-flow", """
      - id: first
        name: first
        action: ACTION(add)
        inputs: {a: 2, b: 3}
      - id: second
        name: second
        action: ACTION(add)
        inputs: {a: "${{ variable.sum }}", b: 1}
    """, differs="D4", check=_variable),
    Case("add-integers-from-text", """
      - id: a
        name: a
        action: ACTION(add)
        inputs: {a: "40", b: 2}
    """),
    Case("required-input-missing", """
      - id: a
        name: a
        action: ACTION(add)
        inputs: {a: 1, b: 1}
      - id: b
        name: b
        action: ACTION(add)
        inputs: {a: 1}
    """, differs="D5", check=_refused, alone=True),
    Case("integer-input-not-a-number", """
      - id: a
        name: a
        action: ACTION(add)
        inputs: {a: 1, b: 1}
      - id: b
        name: b
        action: ACTION(add)
        inputs: {a: "3.5", b: 1}
    """, differs="D5", check=_refused, alone=True),
    Case("cmd-action", """
      - id: c
        name: Cmd
        action: ACTION(cmd)
        inputs: {x: "it is", n: 5}
    """),
    Case("cmd-action-defaults", """
      - id: c2
        name: Cmd
        action: ACTION(cmd)
    """),
    Case("cmd-action-input-in-command", """
      - id: c
        name: Cmd
        action: ACTION(cmd-input)
        inputs: {x: "a'b"}
    """, differs="D6", check=_cmd_input),
    Case("script-action-with-arguments", """
      - id: s
        name: Script
        action: ACTION(script)
        inputs: {word: hello}
    """),
    Case("failing-step-stops-the-job", """
      - id: ok
        name: ok
        action: ACTION(add)
        inputs: {a: 1, b: 2}
      - id: bad
        name: bad
        action: ACTION(fail)
      - id: after
        name: after
        action: ACTION(add)
        inputs: {a: 1, b: 2}
    """),
    Case("failing-step-exit-code", """
      - id: bad
        name: bad
        action: ACTION(fail)
        inputs: {code: 1}
    """),
    Case("typed-outputs", """
      - id: t
        name: t
        action: ACTION(typed)
    """, differs="D7", check=_output_types),
    Case("templated-main", """
      - id: e
        name: e
        action: ACTION(entry)
      - id: e2
        name: e2
        action: ACTION(entry)
        inputs: {entry: a.py}
    """),
    Case("pipeline-context-in-flow", """
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {s: "${{ pipeline.name }}"}
    """, differs="D8", check=_undefined),
    Case("run-context-in-flow", """
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {s: "${{ run.runNumber }}"}
    """, differs="D8", check=_undefined),
    Case("action-context-in-flow", """
      - id: p
        name: Probe
        action: ACTION(probe)
        inputs: {s: "${{ action.name }}"}
    """, differs="D9", check=_undefined),
    Case("default-branch-latest", """
      - id: p
        name: Probe
        action: ACTION(probe, latest)
    """),
    Case("several-actions-in-a-row", """
      - id: a
        name: a
        action: ACTION(add)
        inputs: {a: 1, b: 1}
      - id: c
        name: c
        action: ACTION(cmd)
      - id: s
        name: s
        action: ACTION(script)
      - id: p
        name: p
        action: ACTION(probe)
        inputs: {n: "${{ steps.a.outputs.sum }}"}
    """),
    Case("action-and-step-cache", """
      - id: first
        name: first
        action: ACTION(count)
        inputs: {key: cache-case}
      - id: again
        name: again
        action: ACTION(count)
        inputs: {key: cache-case}
      - id: uncached
        name: uncached
        action: ACTION(count)
        cache: false
        inputs: {key: cache-case}
      - id: other
        name: other
        action: ACTION(count)
        inputs: {key: other-case}
    """),
    Case("node-action", """
      - id: n
        name: n
        action: ACTION(node)
    """, differs="D10", check=_node),
]


# ----------------------------------------------------------------------------- running them
# The cases run as jobs of one flow (each tool runs its jobs in parallel), except those marked
# `alone`: a case flowray refuses before running would stop the others, and a case's process
# environment is its own. Each case's actions are cloned at a tag of its own (c00, c01, ...),
# so that DataTorch's log, which names the action and tag of each step's outputs but not the
# job, tells the cases apart.

_ACTION = re.compile(r"ACTION\((?P<name>[\w-]+)(?:, (?P<tag>\w+))?\)")


def tag_of(index: int) -> str:
    return f"c{index:02d}"


def job_text(index: int, case: Case, repos: dict[str, ActionRepo]) -> str:
    def ref(m: re.Match[str]) -> str:
        repo = repos[m.group("name")]
        tag = "" if m.group("tag") == "latest" else f", tag: {tag_of(index)}"
        return f"{{name: acme/{m.group('name')}{tag}, git: {json.dumps(repo.url)}}}"

    steps = textwrap.indent(textwrap.dedent(case.steps).strip("\n"), "      ")
    return _ACTION.sub(ref, f"  {tag_of(index)}:\n    name: {case.name}\n    steps:\n{steps}\n")


def flow_text(name: str, head: str, jobs: list[str]) -> str:
    head = textwrap.dedent(head).strip("\n")
    return (head + "\n" if head else "") + f"name: {name}\njobs:\n" + "".join(jobs)


def step_count(case: Case) -> int:
    return len(re.findall(r"^\s*- ", textwrap.dedent(case.steps), re.MULTILINE))


_DT_OUTPUTS = re.compile(r"DEBUG +Outputs for '.* (?P<tag>\S+)': (?P<json>\{.*\})$", re.MULTILINE)
_DT_FAILED = re.compile(r"ERROR +Job (?P<job>\S+) failed on step '(?P<step>[^']*)': (?P<error>.*)$",
                        re.MULTILINE)


def run_datatorch(exe: str, folder: Path, cases: dict[str, Case], env: dict[str, str]
                  ) -> dict[str, Result]:
    """Each job's result, from DataTorch's log (it exits 0 even when a job failed)."""
    proc = subprocess.run([exe, "pipeline", "run", "flow.yaml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    results: dict[str, Result] = {job: [] for job in cases}
    latest = next((j for j, c in cases.items() if "latest)" in c.steps), None)
    for m in _DT_OUTPUTS.finditer(text):
        job = m.group("tag") if m.group("tag") in cases else latest
        assert job is not None, m.group(0)
        results[job].append(("success", json.loads(m.group("json"))))
    failed = {m.group("job") for m in _DT_FAILED.finditer(text)}
    for job, case in cases.items():
        if job in failed:
            results[job].append(("failure", None))
        else:
            assert f"Successfully completed job '{job}'" in text, text
        results[job] += [("skipped", None)] * (step_count(case) - len(results[job]))
    return results


def run_flowray(folder: Path, cases: dict[str, Case], env: dict[str, str]
                ) -> dict[str, Result]:
    proc = subprocess.run([sys.executable, "-m", "flowray", "run", "flow.yaml", "--quiet",
                           "--cpus", "16"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if proc.returncode == 2:  # refused before anything ran
        return {job: [("refused", None)] * step_count(c) for job, c in cases.items()}
    records = sorted(glob.glob(str(folder / ".flowray" / "runs" / "*" / "record.json")))
    assert records, proc.stdout + proc.stderr
    with open(records[-1], encoding="utf-8") as fh:
        record = json.load(fh)
    results: dict[str, Result] = {}
    for job in cases:
        results[job] = [(step["status"], step["outputs"] if step["status"] == "success" else None)
                        for step in record["jobs"][job]["steps"]]
    return results


# Flow keys DataTorch's flows use, on the flow that holds the batched cases.
BATCH_HEAD = """
    $schema: http://datatorch.io/schema/pipeline.v1.json
    project: acme/cats
    triggers:
      manual:
        role: OWNER
        form:
          type: object
          properties:
            size: {type: integer, default: 3}
      annotatorButton: {name: Probe, icon: brain, flow: 4-points}
"""


@pytest.mark.timeout(1200)  # the first run of a session installs DataTorch (minutes)
def test_datatorch_and_flowray_agree_on_the_same_flows(
    datatorch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repos"
    repos = {}
    for name, files in ACTIONS.items():
        repo = ActionRepo(root, name)
        sha = repo.commit(files)
        for index, case in enumerate(CASES):
            if f"ACTION({name})" in case.steps:
                repo.tag(tag_of(index), sha, annotated=False)
        repos[name] = repo
    runner = tmp_path / "runner"  # one runner folder for both: directory.* must be equal
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("FLOWRAY_", "DATATORCH_", "PROBE_", "PYTHONDONTWRITEBYTECODE"))}
    base.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
                XDG_CACHE_HOME=str(tmp_path / "cache"), GIT_CONFIG_NOSYSTEM="1",
                GIT_CONFIG_GLOBAL=os.devnull)
    dt_env = {**base, "DATATORCH_DIR": str(tmp_path / "dt-app"),
              "DATATORCH_RUNNER_PATH": str(runner)}
    fr_env = {**base, "FLOWRAY_RUNNER_DIR": str(runner),
              "FLOWRAY_CACHE_DIR": str(runner / "actions")}
    # (folder name, head, the cases by job id, extra environment)
    groups: list[tuple[str, str, dict[str, Case], dict[str, str]]] = [
        ("batch", BATCH_HEAD,
         {tag_of(i): c for i, c in enumerate(CASES) if not c.alone}, {})]
    groups += [(c.name, "", {tag_of(i): c}, c.env) for i, c in enumerate(CASES) if c.alone]
    dt_results: dict[str, Result] = {}
    fr_results: dict[str, Result] = {}
    for folder_name, head, cases, env in groups:
        folder = tmp_path / "flows" / folder_name
        folder.mkdir(parents=True)
        jobs = [job_text(int(job[1:]), case, repos) for job, case in cases.items()]
        (folder / "flow.yaml").write_text(flow_text(folder_name, head, jobs))
        dt_results.update(run_datatorch(datatorch, folder, cases, {**dt_env, **env}))
        fr_results.update(run_flowray(folder, cases, {**fr_env, **env}))
    docs = DOCS.read_text(encoding="utf-8")
    same: list[str] = []
    documented: list[str] = []
    problems: list[str] = []
    for index, case in enumerate(CASES):
        dt, fr = dt_results[tag_of(index)], fr_results[tag_of(index)]
        if case.differs is None:
            if dt == fr:
                same.append(case.name)
            else:
                problems.append(f"{case.name}: datatorch {dt!r}\n  flowray {fr!r}")
            continue
        assert f"| {case.differs} |" in docs, f"{case.name}: {case.differs} not in {DOCS}"
        assert case.check is not None
        try:
            case.check(dt, fr)
        except AssertionError as exc:
            problems.append(f"{case.name} ({case.differs}): not the documented difference: "
                            f"{exc}\n  datatorch {dt!r}\n  flowray {fr!r}")
        else:
            documented.append(f"{case.name} ({case.differs})")
    print(f"\n{len(CASES)} flows and {len(ACTIONS)} actions compared in {len(groups)} runs of "
          f"each tool: {len(same)} the same, {len(documented)} documented differences: "
          f"{', '.join(documented)}")
    assert not problems, "\n".join(problems)
    assert len(CASES) + len(ACTIONS) >= 30
    # What "the same" compared: the probe's report, with the shared runner folder in it.
    probe = dict(dt_results[tag_of(0)][0][1] or {})
    assert probe["dirs"].split("|") == [str(runner), str(runner), str(runner / "actions"),
                                        str(runner / "logs"), str(runner / "temp"),
                                        str(runner), str(runner)]
    assert probe["act"] == f"Probe|{tag_of(0)}|{tag_of(0)}|Reports its inputs and what it sees."
    assert probe["own"] == "plain/3" and probe["actdir_is_mine"] is True
    # The cache case: the second step reused the first's outputs, `cache: false` ran again.
    cached = next(i for i, c in enumerate(CASES) if c.name == "action-and-step-cache")
    assert [o for _, o in fr_results[tag_of(cached)]] == [
        {"runs": 1}, {"runs": 1}, {"runs": 2}, {"runs": 1}]
