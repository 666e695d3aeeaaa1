"""DataTorch's flows and actions run unchanged: its keys, its contexts, action repositories in the
shape of the public ``datatorch-actions`` ones, and the flows of DataTorch's documentation.

The "GitHub" here is a folder of bare repositories made with tests/gitfixtures.py and reached over
file:// (FLOWRAY_ACTIONS_BASE); every cache and config folder is under the test's tmp_path.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Workspace
from gitfixtures import Forge, isolate


@pytest.fixture
def forge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Forge:
    isolate(monkeypatch, tmp_path)
    root = tmp_path / "forge" / "repos"
    root.mkdir(parents=True)
    monkeypatch.setenv("FLOWRAY_ACTIONS_BASE", f"file://{root}")
    monkeypatch.delenv("FLOWRAY_RUNNER_DIR", raising=False)
    return Forge(root)


def lines_of(stdout: str, prefix: str) -> dict[str, str]:
    """``key=value`` lines a step printed (after the ``job/step | `` prefix)."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith(prefix):
            key, _, value = line[len(prefix):].partition("=")
            out[key] = value
    return out


# ----------------------------------------------------------------------------- flow keys


FORM_FLOW = """
    $schema: http://datatorch.io/schema/pipeline.v1.json
    name: Form flow
    project: acme/cats
    triggers:
      manual:
        role: OWNER
        form:
          type: object
          required: [count]
          properties:
            count: {type: integer, title: How many}
            ratio: {type: number, default: 0.5}
            tags: {type: array, default: [a, b]}
      annotatorButton: {name: DEXTR, icon: brain, flow: 4-points}
    jobs:
      j:
        steps:
          - run: |
              echo "count=${{ inputs.count }}"
              echo "ratio=${{ inputs.ratio }}"
              echo "tags=${{ join(inputs.tags, '+') }}"
              echo "project=${{ pipeline.projectId }}"
              echo "alias=${{ input.count }}"
"""


def test_datatorch_flow_keys_are_accepted_and_the_form_types_manual_inputs(
    ws: Workspace, forge: Forge
) -> None:
    flow = ws.flow(FORM_FLOW)
    out = ws.run(flow, "--input", "count=4")
    out.assert_success()
    assert ("flow.yaml:14:3: warning: triggers.annotatorButton: 'annotatorButton' is a "
            "DataTorch platform trigger (a button in its annotator); flowray accepts it but it "
            "never starts this flow") in out.stderr
    got = lines_of(out.stdout, "j/1 | ")
    assert got == {"count": "4", "ratio": "0.5", "tags": "a+b",
                   "project": "acme/cats", "alias": "4"}
    # The form's types and its `required` hold for --input like triggers.manual.inputs.
    bad = ws.run(flow, "--input", "count=many")
    assert bad.exit_code == 2
    assert "input 'count' expects an integer, got 'many'" in bad.stderr
    missing = ws.run(flow)
    assert missing.exit_code == 2
    assert "input 'count' is required by this flow" in missing.stderr


def test_flow_key_mistakes_still_fail_with_did_you_mean(ws: Workspace) -> None:
    flow = ws.flow("""
        $schemas: x
        name: f
        projekt: p
        triggers:
          manual:
            role: [OWNER]
            form:
              properties:
                n: {type: int}
        jobs:
          j:
            steps:
              - run: echo ${{ directory.tmp }} ${{ pipline.name }} ${{ python.versoin }}
    """)
    out = ws.cli("validate", flow)
    assert out.exit_code == 2
    err = out.stderr
    assert ("flow.yaml:1:1: [\"$schemas\"]: unknown key '$schemas' (did you mean '$schema'?)"
            in err)
    assert "flow.yaml:3:1: projekt: unknown key 'projekt' (did you mean 'project'?)" in err
    assert "triggers.manual.role: expected a role name (text), got a list" in err
    assert ("triggers.manual.form.properties.n.type: unsupported form type 'int' (types: "
            "string, integer, number, boolean, array, object)") in err
    assert ("unknown key 'tmp' of context 'directory' (did you mean 'temp'?) in "
            "'directory.tmp'") in err
    assert "unknown context 'pipline' (did you mean 'pipeline'?) in 'pipline.name'" in err
    assert ("unknown key 'versoin' of context 'python' (did you mean 'version'?) in "
            "'python.versoin'") in err


def test_step_and_action_contexts_belong_to_steps(ws: Workspace) -> None:
    flow = ws.flow("""
        name: f
        env: {A: "${{ step.id }}"}
        jobs:
          j:
            outputs: {o: "${{ action.name }}"}
            steps:
              - run: echo
    """)
    out = ws.cli("validate", flow)
    assert out.exit_code == 2
    assert "env.A: 'step' belongs to a step and cannot be read here in 'step.id'" in out.stderr
    assert ("jobs.j.outputs.o: 'action' belongs to a step and cannot be read here in "
            "'action.name'") in out.stderr


# ----------------------------------------------------------------------------- contexts


def test_machine_contexts_are_real_folders_and_facts(
    ws: Workspace, forge: Forge, tmp_path: Path
) -> None:
    flow = ws.flow("""
        name: Machine facts
        project: proj-7
        jobs:
          j:
            steps:
              - id: facts
                name: Facts
                run: |
                  echo "runner.directory=${{ runner.directory }}"
                  echo "agent.directory=${{ agent.directory }}"
                  echo "agent.id=${{ agent.id }}"
                  echo "runner.id=${{ runner.id }}"
                  echo "machine.name=${{ machine.name }}"
                  echo "machine.os=${{ machine.os }}"
                  echo "machine.version=${{ machine.version }}"
                  echo "python.version=${{ python.version }}"
                  echo "python.implementation=${{ python.implementation }}"
                  echo "pipeline=${{ pipeline.id }}|${{ pipeline.name }}|${{ pipeline.projectId }}"
                  echo "lastRunNumber=${{ pipeline.lastRunNumber }}"
                  echo "creatorId=${{ pipeline.creatorId }}"
                  echo "run=${{ run.name }}|${{ run.runNumber }}|${{ run.config.project }}"
                  echo "config.step=${{ run.config.jobs.j.steps[0].id }}"
                  echo "step=${{ step.id }}|${{ step.name }}"
                  echo "directory.runner=${{ directory.runner }}"
                  echo "directory.agent=${{ directory.agent }}"
                  echo "directory.actions=${{ directory.actions }}"
                  echo "directory.logs=${{ directory.logs }}"
                  echo "directory.temp=${{ directory.temp }}"
                  touch "${{ directory.temp }}/written"
              - run: echo "step=${{ step.id }}|${{ step.name }}"
    """)
    out = ws.run(flow)
    out.assert_success()
    got = lines_of(out.stdout, "j/facts | ")
    home = tmp_path / "xdg-cache" / "flowray"
    assert got["runner.directory"] == got["agent.directory"] == str(home)
    assert got["agent.id"] == got["runner.id"] == os.uname().nodename
    assert got["machine.name"] == os.uname().nodename
    assert got["machine.os"] == os.uname().sysname
    assert got["machine.version"] == os.uname().version
    assert got["python.version"] == sys.version.split()[0]
    assert got["python.implementation"] == "CPython"
    assert got["pipeline"] == "Machine facts|Machine facts|proj-7"
    assert got["lastRunNumber"] == "1"
    assert got["creatorId"] == getpass.getuser()
    assert got["run"] == "Machine facts #1|1|proj-7"
    assert got["config.step"] == "facts"
    assert got["step"] == "facts|Facts"
    assert got["directory.runner"] == got["directory.agent"] == str(home)
    assert got["directory.actions"] == str(tmp_path / "cache")  # FLOWRAY_CACHE_DIR
    assert got["directory.logs"] == str(home / "logs")
    assert got["directory.temp"] == str(home / "temp")
    assert (home / "temp" / "written").is_file()
    assert (home / "logs").is_dir()
    assert "j/2 | step=2|" in out.stdout  # a step without id: its position, as FLOWRAY_STEP_ID
    again = ws.run(flow)
    again.assert_success()
    got = lines_of(again.stdout, "j/facts | ")
    assert got["run"] == "Machine facts #2|2|proj-7"
    assert got["lastRunNumber"] == "2"


# ----------------------------------------------------------------------------- actions

SCHEMA_ACTION = """\
$schema: http://datatorch.io/schema/action.v1.json

name: Python Add
description: Adds two numbers, as the public add action does.
inputs:
  a:
    type: integer
    required: true
    description: First number
  b:
    type: integer
    required: true
    description: Second number
outputs:
  sum:
    type: integer
    description: a + b
runs:
  using: python
  main: add.py
"""
SCHEMA_PY = """\
import json, sys
inputs = json.loads(sys.argv[-1])
print("::sum::" + json.dumps(inputs["a"] + inputs["b"]))
"""

DOWNLOAD_ACTION = """\
$schema: http://datatorch.io/schema/action.v1.json

name: Download File
description: Saves a file under the runner's temp folder.
author: acme
branding: {icon: download, color: blue}

# As the public download-file action: it keeps its own cache.
cache: false

env:
  DATATORCH_API_KEY: key of the DataTorch account the file belongs to
  DOWNLOAD_MODE:
    description: how to fetch
    required: false

inputs:
  fileId:
    type: string
    required: true
    description: Id of file to download
  directory:
    type: string
    default: ${{ directory.temp }}/download-file
    description: Path of where to save the downloaded file
  name:
    type: string
    default: ''
  overwrite:
    type: boolean
    default: false

outputs:
  path:
    type: string

runs:
  using: python
  main: download_file.py
"""
DOWNLOAD_PY = """\
import json, os, sys
inputs = json.loads(sys.argv[-1])
os.makedirs(inputs["directory"], exist_ok=True)
path = os.path.join(inputs["directory"], (inputs["name"] or inputs["fileId"]) + ".txt")
with open(path, "w") as fh:
    fh.write(os.environ.get("DOWNLOAD_MODE", "copy") + " " + os.environ.get("DATATORCH_API_KEY", "-"))
print("::path::" + json.dumps(path))
print("overwrite is", json.dumps(inputs["overwrite"]))
"""

COMMAND_ACTION = """\
$schema: http://datatorch.io/schema/action.v1.json
name: Echo Inputs
description: A command action that reads its own inputs and folder.
inputs:
  x:
    type: string
    required: true
  times:
    type: integer
    default: 2
  label:
    type: string
    default: ${{ input.x }} x${{ input.times }}
runs:
  using: cmd
  command: >-
    echo "input=${{ input.x }} variable=${{ variable.x }} label=${{ input.label }}"
    && echo "dir=${{ action.directory }} name=${{ action.name }} tag=${{ action.tag }}"
    && echo "version=${{ action.version }} description=${{ action.description }}"
    && echo "step=${{ step.id }}|${{ step.name }}" && cat "${{ action.directory }}/data.txt"
"""


def test_action_whose_file_starts_with_schema(ws: Workspace, forge: Forge) -> None:
    forge.publish("acme/add", {"action-datatorch.yaml": SCHEMA_ACTION, "add.py": SCHEMA_PY},
                  "v1")
    flow = ws.flow("""
        name: Add Example
        jobs:
          add:
            steps:
              - name: Add Two Numbers
                action: acme/add@v1
                inputs: {a: 5, b: 5}
              - run: echo "sum=${{ variable.sum }}"
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "add/2 | sum=10" in out.stdout


def test_action_with_cache_false_env_declarations_and_directory_temp_default(
    ws: Workspace, forge: Forge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge.publish("acme/download-file",
                  {"action-datatorch.yaml": DOWNLOAD_ACTION, "download_file.py": DOWNLOAD_PY},
                  "v1")
    monkeypatch.delenv("DATATORCH_API_KEY", raising=False)
    flow = ws.flow("""
        name: download
        jobs:
          j:
            steps:
              - id: dl
                action: acme/download-file@v1
                inputs: {fileId: f-1}
              - run: cat "${{ steps.dl.outputs.path }}"
    """)
    # The declared variable is set nowhere: validation names it, as a warning.
    warned = ws.cli("validate", flow)
    assert warned.exit_code == 0, warned
    assert ("flow.yaml:6:9: warning: jobs.j.steps[0].action: action 'Download File' reads "
            "environment variable 'DATATORCH_API_KEY' (key of the DataTorch account the file "
            "belongs to), which is not set: give it in the step's, job's or flow's 'env:' "
            "(or flowray's environment)") in warned.stderr
    assert "DOWNLOAD_MODE" not in warned.stderr  # not required
    out = ws.run(flow)
    out.assert_success()
    temp = tmp_path / "xdg-cache" / "flowray" / "temp" / "download-file"
    assert (temp / "f-1.txt").read_text() == "copy -"
    assert "j/dl | overwrite is false" in out.stdout
    assert "j/2 | copy -" in out.stdout
    # Given in the flow's env, the warning goes and the action reads it.
    flow = ws.flow("""
        name: download
        env: {DATATORCH_API_KEY: k-123}
        jobs:
          j:
            steps:
              - action: acme/download-file@v1
                inputs: {fileId: f-2, name: named, overwrite: "false"}
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "DATATORCH_API_KEY" not in out.stderr
    assert (temp / "named.txt").read_text() == "copy k-123"


def test_command_action_reads_input_variable_and_action_directory(
    ws: Workspace, forge: Forge
) -> None:
    forge.publish("acme/echo", {"action-datatorch.yaml": COMMAND_ACTION, "data.txt": "data!\n"},
                  "v2")
    flow = ws.flow("""
        name: echo
        jobs:
          j:
            steps:
              - id: e
                name: Echo it
                action: acme/echo@v2
                inputs: {x: "it's $(touch pwned) `x`"}
    """)
    out = ws.run(flow)
    out.assert_success()
    lines = [ln.removeprefix("j/e | ") for ln in out.stdout.splitlines()
             if ln.startswith("j/e | ")]
    assert lines[0] == ("input=it's $(touch pwned) `x` variable=it's $(touch pwned) `x` "
                        "label=it's $(touch pwned) `x` x2")
    assert lines[1].startswith("dir=") and lines[1].endswith(" name=Echo Inputs tag=v2")
    directory = lines[1][len("dir="):-len(" name=Echo Inputs tag=v2")]
    assert Path(directory, "action-datatorch.yaml").is_file()
    assert lines[2] == ("version=v2 description=A command action that reads its own inputs "
                        "and folder.")
    assert lines[3] == "step=e|Echo it"
    assert lines[4] == "data!"
    assert not (ws.root / "pwned").exists()  # inputs are data, never shell code


def test_datatorch_names_of_action_kinds(ws: Workspace) -> None:
    ws.action("cl", """\
        name: Commandline
        inputs:
          x: {default: from-default}
        runs: {using: commandline, command: 'echo "::x::\\"$INPUT_X\\""'}
    """)
    ws.action("sh", """\
        name: Shell
        runs: {using: shell, script: run.sh --fast}
    """, run__sh='echo "args: $*"\n')
    flow = ws.flow("""
        name: kinds
        jobs:
          j:
            steps:
              - id: cl
                action: ./cl
              - id: sh
                action: ./sh
              - run: echo "x=${{ steps.cl.outputs.x }}"
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j/sh | args: --fast" in out.stdout
    assert "j/3 | x=from-default" in out.stdout
    steps = ws.record()["jobs"]["j"]["steps"]
    assert [s["kind"] for s in steps] == ["cmd", "script", "run"]


def test_action_file_template_mistakes_are_validation_errors(ws: Workspace) -> None:
    ws.action("act", """\
        name: Bad
        inputs:
          p: {type: string, default: "${{ directory.tmp }}/x"}
          q: {type: string, default: "${{ inputz.p }}"}
        runs:
          using: cmd
          command: echo ${{ steps.a.outputs.b }}
    """)
    flow = ws.flow("""
        name: f
        jobs:
          j:
            steps:
              - action: ./act
    """)
    out = ws.cli("validate", flow)
    assert out.exit_code == 2
    err = out.stderr
    assert ("act/action-datatorch.yaml:3:30: inputs.p.default: unknown key 'tmp' of context "
            "'directory' (did you mean 'temp'?) in 'directory.tmp'") in err
    assert ("inputs.q.default: unknown context 'inputz' (did you mean 'input'?) in "
            "'inputz.p'") in err
    assert "runs.command: unknown context 'steps'" in err


# ----------------------------------------------------------------------------- docs' flows

# DataTorch's documentation (datatorch/documentation, docs/dev/pipelines/variables.md and
# actions.md), as written there.
DEXTR_FLOW = """\
# DataTorch Pipeline file
# This is NOT an action-datatorch.yaml file

name: DEXTR

triggers:
  # Adds a button to the annotator.
  annotatorButton:
    name: "DEXTR"
    icon: brain
    # Annotator will prompt the user for 4 points before triggering the pipeline
    flow: 4-points

jobs:
  predict:
    # Properties about the trigger event can be accessed at 'event' property
    steps:
      - name: Download File
        action: datatorch/download-file@v1
        inputs:
          # Get the file id for the event that triggered this.
          fileId: ${{ event.fileId }}

      - name: Predict Segmentation
        action: datatorch/dextr@latest
        inputs:
          # Download file path from the previous action.
          imagePath: ${{ variable.path }}
          # Get the 4 points the user clicked
          points: ${{ event.flowData.points }}
          # Annotation created by the four points. We will insert the
          # segmentation into this annotation
          annotationId: ${{ event.annotationId }}
"""
ADD_EXAMPLE_FLOW = """\
# DataTorch Pipeline yaml
# This is NOT an action-datatorch.yaml file

name: 'Add Example'
jobs:
  add:
    steps:
      - name: Add Two Numbers
        action: myorg/add
        inputs:
          a: 5
          b: 5
"""
DEXTR_ACTION = """\
$schema: http://datatorch.io/schema/action.v1.json
name: DEXTR
description: Segments the object four points mark.
inputs:
  imagePath: {type: string, required: true}
  points: {type: array, required: true}
  url: {type: string, default: http://localhost:3445}
  annotationId: {type: string, default: null}
  simplify: {type: float, default: 1.5}
outputs:
  segmentation: {type: array}
runs:
  using: python
  main: entry.py
"""
DEXTR_PY = """\
import json, sys
inputs = json.loads(sys.argv[-1])
xs = [p[0] for p in inputs["points"]]
print("image", inputs["imagePath"].rsplit("/", 1)[-1], "annotation", inputs.get("annotationId"))
print("::segmentation::" + json.dumps([min(xs), max(xs)]))
"""


def test_documentation_flows_validate_and_run_as_written(ws: Workspace, forge: Forge) -> None:
    # `datatorch/x` is `datatorch-actions/x`, as on DataTorch; `@latest` and no tag are the
    # default branch.
    forge.publish("datatorch-actions/download-file",
                  {"action-datatorch.yaml": DOWNLOAD_ACTION, "download_file.py": DOWNLOAD_PY},
                  "v1")
    forge.publish("datatorch-actions/dextr",
                  {"action-datatorch.yaml": DEXTR_ACTION, "entry.py": DEXTR_PY}, "v3")
    forge.publish("myorg/add", {"action-datatorch.yaml": SCHEMA_ACTION, "add.py": SCHEMA_PY},
                  "v1")
    dextr = ws.flow(DEXTR_FLOW, "dextr.yaml")
    add = ws.flow(ADD_EXAMPLE_FLOW, "add.yaml")
    out = ws.cli("validate", dextr, add)
    assert out.exit_code == 0, out
    assert "warning: triggers.annotatorButton" in out.stderr
    assert "error" not in out.stderr
    event = ws.write("event.json", json.dumps(
        {"fileId": "img-9", "annotationId": "ann-1",
         "flowData": {"points": [[3, 1], [9, 2], [5, 0], [4, 8]]}}))
    run = ws.run(dextr, "--event", str(event))
    run.assert_success()
    assert "predict/2 | image img-9.txt annotation ann-1" in run.stdout
    steps = ws.record()["jobs"]["predict"]["steps"]
    assert steps[1]["outputs"] == {"segmentation": [3, 9]}
    added = ws.run(add)
    added.assert_success()
    assert ws.record()["jobs"]["add"]["steps"][0]["outputs"] == {"sum": 10}


# ----------------------------------------------------------------------------- run numbers


def _numbered(ws: Workspace, name: str) -> tuple[int, str]:
    """Run flow ``name`` (one step printing its run.runNumber): its number, and what flowray
    said besides the step's output."""
    ws.flow(f"""
        name: {name}
        jobs:
          j:
            steps:
              - run: echo "n=${{{{ run.runNumber }}}}"
    """, f"{name}.yaml")
    out = ws.run(f"{name}.yaml")
    assert out.exit_code == 0, out
    number = int(lines_of(out.stdout, "j/1 | ")["n"])
    assert ws.record()["run_number"] == number
    return number, out.stdout + out.stderr


def test_run_numbers_are_recovered_from_the_runs_when_their_file_is_damaged_or_gone(
        ws: Workspace) -> None:
    assert [_numbered(ws, "a")[0] for _ in range(3)] == [1, 2, 3]
    assert _numbered(ws, "b")[0] == 1
    numbers = ws.root / ".flowray" / "run-numbers.json"
    numbers.write_text('{"a": 3, "b"')  # cut short
    number, said = _numbered(ws, "a")
    assert number == 4
    assert ("! .flowray/run-numbers.json was not JSON (cut short, or damaged): run numbers were "
            "recovered from the runs kept in .flowray/runs, so this run of 'a' is #4") in said
    number, said = _numbered(ws, "b")  # the other flow's number was recovered too
    assert number == 2 and "run-numbers.json" not in said
    numbers.unlink()
    number, said = _numbered(ws, "a")
    assert number == 5 and "run-numbers.json was missing" in said
    numbers.write_text('{"a": "five", "b": 4}')
    number, said = _numbered(ws, "a")
    assert number == 6 and "a number that is not a whole number" in said
    assert json.loads(numbers.read_text()) == {"a": 6, "b": 4}


def test_runs_of_a_flowray_that_kept_no_number_are_counted(ws: Workspace) -> None:
    for _ in range(2):
        _numbered(ws, "old")
    for events in (ws.root / ".flowray" / "runs").glob("*/events.jsonl"):
        lines = events.read_text().splitlines(keepends=True)
        first = json.loads(lines[0])
        del first["run_number"]  # as a flowray from before the number was recorded wrote it
        events.write_text(json.dumps(first) + "\n" + "".join(lines[1:]))
    (ws.root / ".flowray" / "run-numbers.json").unlink()
    number, said = _numbered(ws, "old")
    assert number == 3 and "this run of 'old' is #3" in said


def test_runs_started_at_once_in_one_folder_get_different_numbers(ws: Workspace) -> None:
    ws.flow("""
        name: together
        jobs:
          j:
            steps:
              - run: echo "${{ run.runNumber }}" > "n-$FLOWRAY_RUN_ID"
    """)
    procs = [subprocess.Popen([sys.executable, "-m", "flowray", "run", "flow.yaml"],
                              cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
    got = sorted(int(p.read_text()) for p in ws.root.glob("n-*"))
    assert got == [1, 2, 3, 4]
    assert json.loads((ws.root / ".flowray" / "run-numbers.json").read_text()) == {"together": 4}
