"""Python and node actions get their inputs the DataTorch way (``sys.argv[1]``/``[-1]``,
``import datatorch``, ``process.argv``) while no input value sits on a process's real command
line (``/proc/<pid>/cmdline``). Real git repositories, real runs through the CLI and the API.

No network: the action whose ``requirements.txt`` names ``datatorch`` installs a small wheel
named ``datatorch`` that the test writes (the package index is not reachable from tests); like
DataTorch CLI 0.8.0's, its ``get_inputs`` reads the JSON of ``sys.argv[-1]``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from conftest import Workspace, pids_with_env
from gitfixtures import Forge

ARGV_ACTION = """
name: Argv
inputs:
  a: {type: integer, required: true}
  b: {type: integer, default: 0}
  token: {type: string, default: ""}
outputs:
  sum: {type: integer}
runs: {using: python, main: main.py}
"""
ARGV_MAIN = """
import json, sys
first, last = json.loads(sys.argv[1]), json.loads(sys.argv[-1])
assert first == last and len(sys.argv) == 2 and sys.argv[0].endswith("main.py"), sys.argv
assert __name__ == "__main__"
from helper import double  # a module next to the main file
print("::sum::" + str(double(first["a"]) + first["b"]))
"""

DATATORCH_MAIN = """
import datatorch
inputs = datatorch.get_inputs()
print("inputs:", sorted(inputs), "from", getattr(datatorch, "WHERE", "flowray"))
datatorch.set_output("sum", datatorch.get_input("a") + datatorch.get_input("b"))
datatorch.set_output("missing", datatorch.get_input("nope"))
"""


def datatorch_wheel(folder: Path) -> Path:
    """A wheel named datatorch 0.8.0 holding the SDK's action helpers (written by hand: no
    network). ``WHERE`` tells the installed package from flowray's stand-in."""
    code = (
        "import json, sys\n"
        "WHERE = 'installed'\n"
        "def get_inputs():\n"
        "    try:\n"
        "        return json.loads(sys.argv[-1])\n"
        "    except Exception:\n"
        "        return {}\n"
        "def get_input(key):\n"
        "    return get_inputs().get(key)\n"
        "def set_output(var, value):\n"
        "    print(f'::{var}::{json.dumps(value)}')\n"
    )
    dist = "datatorch-0.8.0.dist-info"
    files = {
        "datatorch/__init__.py": code,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: datatorch\nVersion: 0.8.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "datatorch-0.8.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)
    return wheel


def test_git_action_reading_sys_argv_runs(ws: Workspace, forge: Forge) -> None:
    forge.publish("acme/argv", {"action-datatorch.yaml": ARGV_ACTION, "main.py": ARGV_MAIN,
                                "helper.py": "def double(x):\n    return 2 * x\n"}, "v1")
    flow = ws.flow("""
        name: argv
        jobs:
          j:
            steps:
              - id: s
                action: acme/argv@v1
                with: {a: 10, b: "5"}
              - run: echo "sum=${{ steps.s.outputs.sum }}"
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j/2 | sum=25\n" in out.stdout
    assert ws.record()["jobs"]["j"]["steps"][0]["outputs"] == {"sum": 25}


def test_import_datatorch_works_with_nothing_installed(ws: Workspace, forge: Forge) -> None:
    forge.publish("acme/dt", {"action-datatorch.yaml": ARGV_ACTION,
                              "main.py": DATATORCH_MAIN}, "v1")
    flow = ws.flow("""
        name: dt
        jobs:
          j:
            steps:
              - id: s
                action: acme/dt@v1
                with: {a: 2, b: 3}
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j/s | inputs: ['a', 'b', 'token'] from flowray\n" in out.stdout
    assert ws.record()["jobs"]["j"]["steps"][0]["outputs"] == {"sum": 5, "missing": None}


def test_an_installed_datatorch_package_wins(ws: Workspace, forge: Forge,
                                             tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    datatorch_wheel(wheels)
    forge.publish("acme/dtreal", {
        "action-datatorch.yaml": ARGV_ACTION, "main.py": DATATORCH_MAIN,
        "requirements.txt": f"--no-index\n--find-links {wheels}\ndatatorch==0.8.0\n",
    }, "v1")
    flow = ws.flow("""
        name: dtreal
        jobs:
          j:
            steps:
              - id: s
                action: acme/dtreal@v1
                with: {a: 20, b: 22}
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j/s | inputs: ['a', 'b', 'token'] from installed\n" in out.stdout
    assert ws.record()["jobs"]["j"]["steps"][0]["outputs"] == {"sum": 42, "missing": None}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed here")
def test_node_action_reads_process_argv(ws: Workspace) -> None:
    ws.action("actions/greet", """
        name: Greet
        inputs: {who: {type: string}}
        runs: {using: node, main: index.js}
    """, index__js=(
        "const last = JSON.parse(process.argv[process.argv.length - 1]);\n"
        "const second = JSON.parse(process.argv[2]);\n"
        "console.log(`argc=${process.argv.length} main=${require.main === module}`);\n"
        "console.log(`file left: ${require('fs').existsSync(process.env.FLOWRAY_INPUTS_FILE)}`);\n"
        "console.log(`::greeting::${JSON.stringify('hello, ' + last.who + second.who)}`);\n"))
    flow = ws.flow("""
        name: node
        jobs:
          j:
            steps:
              - id: g
                action: ./actions/greet
                with: {who: "it's \\"me\\""}
    """)
    out = ws.run(flow)
    out.assert_success()
    assert "j/g | argc=3 main=true\nj/g | file left: false\n" in out.stdout
    assert ws.record()["jobs"]["j"]["steps"][0]["outputs"] == {
        "greeting": "hello, it's \"me\"it's \"me\""}


def test_running_steps_have_no_input_or_secret_on_their_command_line(ws: Workspace) -> None:
    """While the steps run, read /proc/<pid>/cmdline of every process of the run."""
    import flowray

    secret = "proc-secret-Hq7Zt"
    plain = "plain-input-Wv3Kp"
    wait = ("import os, time\n"
            "open(os.environ['READY'], 'w').close()\n"
            "while not os.path.exists(os.environ['GO']):\n"
            "    time.sleep(0.02)\n")
    ws.action("actions/py", """
        name: Py
        inputs: {token: {type: string}, other: {type: string}}
        runs: {using: python, main: main.py}
    """, main__py="import json, sys\n" + wait +
        "print('got', json.loads(sys.argv[1])['other'] == 'plain-input-Wv3Kp')\n")
    ws.action("actions/js", """
        name: Js
        inputs: {token: {type: string}, other: {type: string}}
        runs: {using: node, main: main.js}
    """, main__js="const fs = require('fs');\n"
                  "fs.writeFileSync(process.env.READY, '');\n"
                  "const wait = () => fs.existsSync(process.env.GO) ? "
                  "console.log('got', JSON.parse(process.argv[2]).other) : "
                  "setTimeout(wait, 20);\nwait();\n")
    flow = ws.flow("""
        name: proc
        jobs:
          py:
            env: {READY: py.ready, GO: go}
            steps:
              - action: ./actions/py
                with: {token: "${{ secrets.TOKEN }}", other: plain-input-Wv3Kp}
          js:
            env: {READY: js.ready, GO: go}
            steps:
              - action: ./actions/js
                with: {token: "${{ secrets.TOKEN }}", other: plain-input-Wv3Kp}
    """)
    run = flowray.start(flow, secrets={"TOKEN": secret}, workdir=str(ws.root))
    try:
        deadline = time.monotonic() + 60
        while not ((ws.root / "py.ready").exists() and (ws.root / "js.ready").exists()):
            assert time.monotonic() < deadline and not run.done, "the steps did not start"
            time.sleep(0.02)
        cmdlines = {}
        for pid in pids_with_env(f"FLOWRAY_RUN_ID={run.id}"):
            try:
                cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
        environs = b""
        for pid in cmdlines:
            try:
                environs += Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
    finally:
        (ws.root / "go").touch()
        record = run.wait(timeout=60)
    assert record.status.value == "success"
    joined = b"\n".join(cmdlines.values())
    # The test sees the steps' processes: the python launcher and node with its preload.
    assert b"actions/py/main.py" in joined and b"actions/js/main.js" in joined, cmdlines
    assert secret.encode() not in joined and plain.encode() not in joined, cmdlines
    assert b"INPUT_TOKEN=" + secret.encode() in environs  # the environment has them
    # The inputs file is gone once the step ended.
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("flowray-step-*")
                if p.stat().st_uid == os.getuid() and _holds(p, secret)]


def _holds(folder: Path, text: str) -> bool:
    return any(text in f.read_text(errors="replace") for f in folder.rglob("*") if f.is_file())


def test_the_inputs_file_is_private_and_removed(ws: Workspace) -> None:
    ws.action("actions/py", """
        name: Py
        inputs: {token: {type: string}}
        runs: {using: python, main: main.py}
    """, main__py=(
        "import os, stat\n"
        "path = os.environ['FLOWRAY_INPUTS_FILE']\n"
        "print('file read and removed:', not os.path.exists(path),"
        " 'folder', oct(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)))\n"
        "open('inputs-path.txt', 'w').write(path)\n"))
    flow = ws.flow("""
        name: private
        jobs:
          j:
            steps:
              - action: ./actions/py
                with: {token: "${{ secrets.TOKEN }}"}
    """)
    out = ws.run(flow, "--secret", "TOKEN=private-file-secret")
    out.assert_success()
    assert "j/1 | file read and removed: True folder 0o700\n" in out.stdout
    path = Path((ws.root / "inputs-path.txt").read_text())
    assert not path.exists() and not path.parent.exists()


def test_the_launch_folder_and_file_are_private(tmp_path: Path) -> None:
    from flowray.execute.launch import INPUTS_ENV, Launch

    launch = Launch("node", "node", str(tmp_path / "main.js"), '{"token": "x"}')
    inputs = Path(launch.env[INPUTS_ENV])
    try:
        assert inputs.read_text() == '{"token": "x"}'
        assert inputs.stat().st_mode & 0o777 == 0o600
        assert inputs.parent.stat().st_mode & 0o777 == 0o700
        assert launch.argv == ["node", "--require", str(inputs.parent / "preload.cjs"),
                               str(tmp_path / "main.js")]
    finally:
        launch.close()
    assert not inputs.parent.exists()


def test_a_missing_main_file_is_a_clear_step_error(ws: Workspace) -> None:
    ws.action("actions/pick", """
        name: Pick
        inputs: {script: {type: string}}
        runs: {using: python, main: "${{ input.script }}"}
    """, real__py="print('real ran')\n")
    flow = ws.flow("""
        name: pick
        jobs:
          j:
            steps:
              - action: ./actions/pick
                with: {script: real.py}
              - action: ./actions/pick
                with: {script: nope.py}
    """)
    out = ws.run(flow)
    assert out.exit_code == 1, out
    assert "j/1 | real ran\n" in out.stdout
    assert "j/2 ✗ failure: action 'Pick': main file 'nope.py' not found\n" in out.stdout
