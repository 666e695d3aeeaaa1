"""`flowray submit` and the remote list/status/logs/cancel, on a real `ray start --head`
(the Ray Jobs API of its dashboard); and `flowray cancel` of a local run.

The head is started once for the module, bound to 127.0.0.1 with ports of its own, and stopped
without `ray stop` (which would stop every Ray on the machine): see :func:`_launch_head`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    SESSION_MARK,
    Outcome,
    Workspace,
    env_without_color,
    free_ports,
    kill_processes,
    process_alive,
    processes_of,
)

MARK = "FLOWRAY_TEST_RAY_HEAD"
# Ray's own log-tailing client passes ssl=None to aiohttp.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")

FLOW = """
name: greet
jobs:
  a:
    steps:
      - run: echo "hello from a, input ${{ inputs.who }}"
      - run: echo "the secret is $TOKEN"
        env:
          TOKEN: ${{ secrets.TOKEN }}
      - run: find . -type f -not -path './.flowray/*' | sort
  b:
    needs: a
    steps:
      - action: ./actions/greet
        with: {who: ray}
"""

GREET = """
name: greet
inputs:
  who: {type: string, default: world}
runs:
  using: cmd
  command: echo "hello, $INPUT_WHO, from a local action"
"""

LONG = """
name: long
jobs:
  sleeper:
    steps:
      - run: |
          echo sleeping
          sleep 300
"""


# ----------------------------------------------------------------------------- the head


@dataclass
class Head:
    url: str  # the dashboard
    temp_dir: str  # --temp-dir, and the value of MARK in every process of this head


def _marked(temp_dir: str) -> list[int]:
    """The processes of the head whose --temp-dir is ``temp_dir`` (all carry MARK, or hold
    files below it, or descend from one that does)."""
    return processes_of(temp_dir, f"{MARK}={temp_dir}")


def _cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def _sleepers(head: Head) -> list[int]:
    """`sleep 300` processes of this head's jobs that are still alive."""
    return [p for p in _marked(head.temp_dir)
            if process_alive(p) and any(c.strip() == "sleep 300" for c in _cmdlines([p]))]


def _launch_head(mode: str, token: str = "") -> tuple[Head, subprocess.Popen[str] | str]:
    """Start `ray start --head` on 127.0.0.1 (every port chosen free, in a temp dir of its
    own) without waiting for it; ``mode`` is RAY_AUTH_MODE (token: ``token`` is the token).

    Stopping it must not touch other Ray clusters on this machine: `ray stop` kills every Ray
    process it finds, including other test runs'. So every process of this head carries the
    environment variable MARK=<its temp dir>, which Ray's processes inherit from `ray start`
    (GCS, raylet, dashboard, agents, workers, job drivers and the steps they start);
    :func:`_stop_head` SIGKILLs exactly those processes, as `ray stop --force` would, and the
    ones that renamed themselves over it (whose files are below the temp dir, or whose parent
    carries it). HOME is the temp dir too, so no ~/.ray/auth_token of the user is read or written.
    """
    # A short path: Ray's unix sockets live under it (at most 107 characters). In the
    # session's folder (conftest), removed with it should a head not be stopped.
    temp_dir = tempfile.mkdtemp(prefix="frs-", dir=os.environ.get(SESSION_MARK, "/tmp"))
    head = Head(url="", temp_dir=temp_dir)
    ray = Path(sys.executable).with_name("ray")
    found = str(ray) if ray.exists() else shutil.which("ray")
    if found is None:
        return head, "the `ray` command is not installed: no Ray head can be started"
    # Job entrypoints run `python -m flowray`: make `python` this interpreter. A script that
    # runs it by its own path, not a link to it: a Python started through a link looks for
    # its virtual environment's pyvenv.cfg beside the link, finds none and runs as the base
    # Python the environment was made from, without the flowray installed here.
    bin_dir = Path(temp_dir) / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "FLOWRAY_ADDRESS", "RAY_AUTH_TOKEN",
                 "RAY_AUTH_TOKEN_PATH", "CUDA_VISIBLE_DEVICES"):
        env.pop(name, None)
    env.update({MARK: temp_dir, "RAY_AUTH_MODE": mode, "NO_COLOR": "1", "HOME": temp_dir,
                "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"})
    if token:
        env["RAY_AUTH_TOKEN"] = token
    (gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics, node_manager,
     object_manager) = free_ports(9)
    head.url = f"http://127.0.0.1:{dashboard}"
    args = [
        found, "start", "--head", "--node-ip-address", "127.0.0.1",
        "--dashboard-host", "127.0.0.1", "--port", str(gcs), "--dashboard-port", str(dashboard),
        "--ray-client-server-port", str(client), "--dashboard-agent-listen-port",
        str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics),
        "--node-manager-port", str(node_manager), "--object-manager-port", str(object_manager),
        "--num-cpus", "2", "--disable-usage-stats", "--temp-dir", temp_dir,
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return head, proc


def _await_head(proc: subprocess.Popen[str] | str) -> str | None:
    """None once `ray start` has started the head, or why it did not."""
    if isinstance(proc, str):
        return proc
    try:
        output, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return "`ray start --head` did not finish within 90 s"
    if proc.returncode != 0:
        return f"`ray start --head` failed (exit {proc.returncode}): {output.strip()[-800:]}"
    return None


def _stop_head(head: Head) -> None:
    kill_processes(head.temp_dir, f"{MARK}={head.temp_dir}")
    shutil.rmtree(head.temp_dir, ignore_errors=True)


TOKEN = "flowray-test-" + os.urandom(16).hex()


@pytest.fixture(scope="module")
def heads() -> Iterator[dict[str, Head | str]]:
    """Two heads, started side by side: "disabled" (no token authentication, so that no test
    needs a token) and "token" (Ray 2.60's default, with the token TOKEN). A head that could
    not start is the reason why, and its tests are skipped with it."""
    pytest.importorskip("ray.job_submission",
                        reason="ray is not installed: `flowray submit` cannot be tested")
    pytest.importorskip("aiohttp", reason="ray[default] is not installed (no aiohttp): the "
                                          "Ray Jobs API client cannot be tested")
    env = pytest.MonkeyPatch()
    env.setenv("RAY_AUTH_MODE", "disabled")
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "FLOWRAY_ADDRESS", "RAY_AUTH_TOKEN",
                 "RAY_AUTH_TOKEN_PATH"):
        env.delenv(name, raising=False)
    launched = {"disabled": _launch_head("disabled"), "token": _launch_head("token", TOKEN)}
    try:
        out: dict[str, Head | str] = {}
        for mode, (h, proc) in launched.items():
            why = _await_head(proc)
            out[mode] = h if why is None else why
        yield out
    finally:
        for h, _ in launched.values():
            _stop_head(h)
        env.undo()


@pytest.fixture(scope="module")
def head(heads: dict[str, Head | str]) -> Head:
    h = heads["disabled"]
    if isinstance(h, str):
        pytest.skip(h)
    return h


@pytest.fixture(scope="module")
def token_head(heads: dict[str, Head | str]) -> Head:
    h = heads["token"]
    if isinstance(h, str):
        pytest.skip(h)
    return h


def _greet_workspace(ws: Workspace) -> None:
    ws.flow(FLOW)
    ws.write("actions/greet/action-datatorch.yaml", GREET)
    # not shipped: what .gitignore lists, local run records, the git database
    ws.write(".gitignore", "big/\n")
    ws.write("big/ignored.bin", "not shipped\n")
    ws.write(".flowray/runs/20260101-000000-aaaaaa/record.json", "{}")
    ws.write(".git/HEAD", "ref: refs/heads/main\n")


@dataclass
class Submitted:
    out: Outcome
    id: str
    root: Path


@pytest.fixture(scope="module")
def submitted(head: Head, tmp_path_factory: pytest.TempPathFactory) -> Submitted:
    """One successful submission, shared by the tests that read it back."""
    root = tmp_path_factory.mktemp("greet")
    ws = Workspace(root)
    _greet_workspace(ws)
    old = os.getcwd()
    os.chdir(root)
    try:
        out = ws.cli("submit", "flow.yaml", "--address", head.url, "-i", "who=me",
                     "--secret", "TOKEN=hunter2-secret")
    finally:
        os.chdir(old)
    line = next(x for x in out.stderr.splitlines() if x.startswith("submitted "))
    return Submitted(out, line.split()[1], root)


# ----------------------------------------------------------------------------- submit


def test_submit_ships_the_workspace_streams_the_log_and_exits_0(
    submitted: Submitted, head: Head
) -> None:
    out = submitted.out
    assert out.exit_code == 0, out
    sid = submitted.id
    assert sid.startswith("flowray-greet-") and len(sid) == len("flowray-greet-") + 8
    # the run's own output, streamed to stdout: the step, the masked secret, the local action
    assert "a/1 | hello from a, input me" in out.stdout
    assert "a/2 | the secret is ***" in out.stdout
    assert "b/1 | hello, ray, from a local action" in out.stdout
    assert "hunter2-secret" not in out.stdout + out.stderr
    shipped = [line.split("| ", 1)[1] for line in out.stdout.splitlines()
               if line.startswith("a/3 | ")]
    assert shipped == ["./.gitignore", "./actions/greet/action-datatorch.yaml", "./flow.yaml"]
    # the file that carried the secret is gone, here and on the head (the run read it)
    assert not [p for p in submitted.root.iterdir() if p.name.startswith(".flowray-submit-")]
    assert out.stderr.splitlines()[:2] == [
        f"shipping {submitted.root} to {head.url}...",
        f"submitted {sid} (Ctrl-C stops it; --no-wait leaves a run going)",
    ]
    assert out.stderr.splitlines()[-1].startswith(f"run {sid} SUCCEEDED (exit 0) in ")


def test_submitted_run_is_in_list_status_and_logs(submitted: Submitted, head: Head,
                                                  ws: Workspace) -> None:
    sid = submitted.id
    listed = ws.cli("list", "--address", head.url).assert_success()
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "STARTED", "TOOK", "FLOW"]
    row = next(line for line in listed.stdout.splitlines() if line.startswith(sid))
    assert row.split()[1] == "SUCCEEDED" and row.split()[-1] == "greet"
    as_json = ws.cli("runs", "--address", head.url, "--json").assert_success().json()
    assert sid in [r["id"] for r in as_json]

    st = ws.cli("status", sid, "--address", head.url, "--json").assert_success().json()
    assert st["status"] == "SUCCEEDED" and st["exit_code"] == 0 and st["flow"] == "greet"
    # inputs are on the command line; secrets never are (they travel in a private file)
    assert st["entrypoint"].startswith(
        "python -m flowray run flow.yaml --address auto --input who=me --submit-bundle "
        ".flowray-submit-")
    assert "hunter2" not in json.dumps(st)
    text = ws.cli("status", sid[:18], "--address", head.url).assert_success().stdout
    assert text.splitlines()[0].startswith(f"run {sid}  flow greet  SUCCEEDED  exit 0  ")

    logs = ws.cli("logs", sid, "--address", head.url).assert_success().stdout
    assert "b/1 | hello, ray, from a local action" in logs
    assert "hunter2" not in logs
    followed = ws.cli("logs", "last", "--address", head.url, "-f").assert_success().stdout
    assert "a/1 | hello from a, input me" in followed
    # Local records are still read without --address.
    assert ws.cli("list").assert_success().stdout == "no runs yet\n"


def test_failing_flow_exits_with_the_runs_code(head: Head, ws: Workspace) -> None:
    ws.flow("""
        name: failing
        jobs:
          bad:
            steps:
              - run: echo about to fail; exit 3
    """)
    out = ws.cli("submit", "flow.yaml", "--address", head.url)
    assert out.exit_code == 1, out
    assert "bad/1 | about to fail" in out.stdout
    sid = next(x for x in out.stderr.splitlines() if x.startswith("submitted ")).split()[1]
    assert out.stderr.splitlines()[-1].startswith(f"run {sid} FAILED (exit 1) in ")
    # Every command the output suggests works from here: it names the submission and address.
    hint = f"; logs: flowray logs {sid} --address {head.url}"
    assert out.stderr.splitlines()[-1].endswith(hint)
    assert re.match(rf"run \S+ failure in [\d.]+s \(1 failure\){re.escape(hint)}$",
                    out.stdout.splitlines()[-1]), out.stdout
    st = ws.cli("status", sid, "--address", head.url, "--json").assert_success().json()
    assert (st["status"], st["exit_code"], st["driver_exit_code"]) == ("FAILED", 1, 1)


def test_cancel_stops_a_submitted_run_and_its_steps(head: Head, ws: Workspace) -> None:
    ws.flow(LONG)
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "--no-wait", "--grace", "1")
    assert out.exit_code == 0, out
    sid = out.stdout.strip()
    assert out.stderr.splitlines()[-1] == (
        f"submitted {sid}; follow it with `flowray logs {sid} --address {head.url} -f`")
    deadline = time.monotonic() + 60
    while not _sleepers(head):
        assert time.monotonic() < deadline, ws.cli("logs", sid, "--address", head.url)
        time.sleep(0.2)
    assert ws.cli("status", sid, "--address", head.url, "--json").json()["status"] == "RUNNING"
    out = ws.cli("cancel", sid, "--address", head.url)
    assert out.exit_code == 0, out
    assert out.stdout == f"run {sid} STOPPED\n"
    assert out.stderr == f"stopping {sid} on {head.url}...\n"
    st = ws.cli("status", sid, "--address", head.url, "--json").json()
    assert st["status"] == "STOPPED" and st["exit_code"] == 130
    deadline = time.monotonic() + 10
    while _sleepers(head) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleepers(head) == []
    # flowray stopped its steps itself, and recorded so
    logs = ws.cli("logs", sid, "--address", head.url).stdout
    assert "SIGTERM: stopping every step (SIGTERM, then SIGKILL after 1s)..." in logs
    again = ws.cli("cancel", sid, "--address", head.url)
    assert (again.exit_code, again.stderr) == (1, f"error: run {sid} already ended: STOPPED\n")


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_submitted_run(head: Head, ws: Workspace) -> None:
    ws.flow(LONG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowray", "submit", "flow.yaml", "--address", head.url,
         "--grace", "1"],
        cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_without_color(),
        # As from a terminal: SIGINT not ignored. A process inherits an ignored SIGINT (a
        # shell's background job has one), and late in a full run this pytest process had
        # one: the submit process then never saw the Ctrl-C and the test hung.
        preexec_fn=_sigint_as_from_a_terminal,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the step has started when its first line streams in
        if line.startswith("sleeper/1 | sleeping"):
            break
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (stdout, stderr)
    sid = next(x for x in stderr.splitlines() if x.startswith("submitted ")).split()[1]
    assert (f"interrupted: stopping {sid} on the cluster (its steps get SIGTERM, then "
            f"SIGKILL after 1s)...") in stderr
    assert stderr.splitlines()[-1] == f"run {sid} STOPPED: stopped on the cluster"
    assert _sleepers(head) == []


# ----------------------------------------------------------------------------- errors


def test_invalid_or_missing_flow_is_refused_before_anything_is_shipped(
    head: Head, ws: Workspace
) -> None:
    ws.flow("name: broken\njobs:\n  a:\n    stepz: []\n")
    out = ws.cli("submit", "flow.yaml", "--address", head.url)
    assert out.exit_code == 2
    assert out.stderr == (
        "flow.yaml:3:3: jobs.a: missing required key 'steps'\n"
        "flow.yaml:4:5: jobs.a.stepz: unknown key 'stepz' (did you mean 'steps'?)\n")
    out = ws.cli("submit", "nope.yaml", "--address", head.url)
    assert (out.exit_code, out.stderr) == (2, "nope.yaml: file not found\n")
    ws.flow("name: ok\njobs: {a: {steps: [{run: 'true'}]}}\n")
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "-j", "nope")
    assert out.exit_code == 2
    assert out.stderr.startswith("error: ")
    listed = ws.cli("list", "--address", head.url, "--json").json()
    assert not [r for r in listed if r["flow"] in ("broken", "ok")]


def test_files_the_run_needs_must_be_shipped(head: Head, ws: Workspace) -> None:
    _greet_workspace(ws)
    ws.write("actions/.gitignore", "greet/\n")
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "-s", "TOKEN=x")
    assert (out.exit_code, out.stderr.splitlines()[-1]) == (
        2, "error: 'actions/greet/action-datatorch.yaml' would not be shipped: the workspace's "
           ".gitignore or .rayignore (or flowray, for .flowray/ and .git/) leaves it out, and "
           "the run needs it")
    ws.write(".rayignore", ".flowray-*\n")
    (ws.root / "actions" / ".gitignore").unlink()
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "-s", "TOKEN=x")
    assert (out.exit_code, out.stderr.splitlines()[-1]) == (
        2, "error: the workspace's .gitignore or .rayignore leaves out '.flowray-submit-"
           f"{out.stderr.split('.flowray-submit-')[1][:8]}', the file that carries the run's "
           "secrets, env files and event to the cluster: add the line '!/.flowray-submit-*' "
           "to it")
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".flowray-submit-")]


def test_a_python_the_head_lacks_gets_rays_reason(head: Head, ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "--python", "no-such-python")
    assert out.exit_code == 127, out
    assert "no-such-python: not found" in out.stdout
    sid = next(x for x in out.stderr.splitlines() if x.startswith("submitted ")).split()[1]
    assert f"run {sid} FAILED (exit 127) in " in out.stderr
    assert out.stderr.splitlines()[-1] == "error: Job entrypoint command failed with exit code 127"


def test_a_head_python_without_flowray_gets_told_to_install_it(
    head: Head, ws: Workspace
) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    # -S: no site-packages, so this Python cannot import the flowray installed in them.
    python = shlex.join([sys.executable, "-S"])
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "--python", python)
    assert out.exit_code == 1, out
    said = f"{sys.executable}: No module named flowray"
    assert said in out.stdout.splitlines()  # the job's log, streamed
    sid = next(x for x in out.stderr.splitlines() if x.startswith("submitted ")).split()[1]
    assert out.stderr.splitlines()[-2].startswith(f"run {sid} FAILED (exit 1) in ")
    assert out.stderr.splitlines()[-1] == (
        f"error: the cluster's Python cannot import flowray ({said}): install flowray on the "
        f"cluster's Python (pip install 'flowray[ray]' on every node, in the Python "
        f"environment Ray runs there), or give --python the command of a Python on the head "
        f"that has it (this run's: '{python}')")
    st = ws.cli("status", sid, "--address", head.url, "--json").assert_success().json()
    assert st["entrypoint"].startswith(f"{python} -m flowray run flow.yaml --address auto")


def test_python_must_be_a_command(head: Head, ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    before = [r["id"] for r in ws.cli("list", "--address", head.url, "--json").json()]
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "--python", " ")
    assert (out.exit_code, out.stderr.splitlines()[-1]) == (
        2, "error: --python is empty: give the command of the cluster's Python")
    out = ws.cli("submit", "flow.yaml", "--address", head.url, "--python", "'python")
    assert (out.exit_code, out.stderr.splitlines()[-1]) == (
        2, "error: --python ''python' cannot be split like a command line: No closing quotation")
    after = [r["id"] for r in ws.cli("list", "--address", head.url, "--json").json()]
    assert after == before  # nothing was submitted


def test_unknown_submission_id(head: Head, ws: Workspace) -> None:
    for command in ("status", "logs", "cancel"):
        out = ws.cli(command, "flowray-nope-00000000", "--address", head.url)
        assert out.exit_code == 2, out
        assert out.stderr == (
            f"error: no submitted run 'flowray-nope-00000000' at {head.url} (see `flowray list "
            f"--address {head.url}`)\n")


def test_nothing_answers_at_the_address(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    (port,) = free_ports(1)
    out = ws.cli("submit", "flow.yaml", "--address", f"http://127.0.0.1:{port}")
    assert out.exit_code == 2
    assert out.stderr == (
        f"error: no Ray dashboard answers at http://127.0.0.1:{port} (Connection refused). "
        "flowray talks to the Ray Jobs API of the cluster's dashboard, http://HEAD:8265 (8265 "
        "unless `ray start --dashboard-port` chose another port); start the head with `ray "
        "start --head --dashboard-host 0.0.0.0` so that other machines can reach it\n")
    out = ws.cli("list", "--address", f"http://127.0.0.1:{port}")
    assert out.exit_code == 2 and "no Ray dashboard answers at" in out.stderr


def test_a_gcs_address_is_refused_with_the_dashboard_to_use(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    out = ws.cli("submit", "flow.yaml", "--address", "10.0.0.5:6379")
    assert out.exit_code == 2
    assert out.stderr == (
        "error: --address '10.0.0.5:6379' is not an http:// URL but HOST:PORT, the form of a "
        "cluster's GCS address, which `flowray run --address` takes; the Ray Jobs API that "
        "`flowray submit` (and list, status, logs, cancel with --address) uses is served by "
        "the dashboard on the cluster's head: give --address http://10.0.0.5:8265 (8265 "
        "unless `ray start --dashboard-port` chose another port)\n")
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWRAY_ADDRESS", "10.0.0.5:6379")
    out = ws.cli("submit", "flow.yaml")
    assert out.exit_code == 2
    assert out.stderr == (
        "error: `flowray submit` needs the address of the Ray cluster's dashboard: give "
        "--address http://HEAD:8265, or set FLOWRAY_ADDRESS or RAY_API_SERVER_ADDRESS to it "
        "(FLOWRAY_ADDRESS is '10.0.0.5:6379', a GCS address for `flowray run`, not a "
        "dashboard address)\n")


def test_a_cluster_that_wants_a_token_gets_a_clear_error(
    token_head: Head, ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    url = token_head.url
    out = ws.cli("list", "--address", url)
    assert out.exit_code == 2
    assert out.stderr == (
        f"error: the Ray cluster at {url} requires token authentication and no token was "
        "found. Give flowray the cluster's token: set RAY_AUTH_TOKEN to it (or "
        "RAY_AUTH_TOKEN_PATH to a file that holds it), or put it in ~/.ray/auth_token; "
        "`ray get-auth-token` on the head node prints it\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    out = ws.cli("list", "--address", url)
    assert out.exit_code == 2
    assert out.stderr == (
        f"error: the Ray cluster at {url} refused the token from RAY_AUTH_TOKEN (token "
        "authentication). Give flowray the cluster's token: set RAY_AUTH_TOKEN to it (or "
        "RAY_AUTH_TOKEN_PATH to a file that holds it), or put it in ~/.ray/auth_token; "
        "`ray get-auth-token` on the head node prints it\n")
    # the token where `ray start` leaves it is sent once the cluster asks for one
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(TOKEN + "\n")
    out = ws.cli("list", "--address", url).assert_success()
    assert out.stdout == f"no runs submitted to {url} yet\n"


# ----------------------------------------------------------------------------- local cancel


