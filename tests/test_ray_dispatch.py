"""`flowray run --address/--ray`: jobs as Ray tasks on a real multi-node Ray cluster.

One `ray.cluster_utils.Cluster` (three raylets on this machine, one CPU each, fake GPUs on two)
serves the whole module; flows run through the real CLI, in-process or (where signals or live
output are under test) as a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Workspace, env_without_color, pids_with_env, process_alive, wait_for

cluster_utils = pytest.importorskip(
    "ray.cluster_utils", reason="ray is not installed: the Ray dispatcher cannot be tested")


@dataclass
class RayTestCluster:
    address: str
    head: str  # node ids
    gpu: str  # 2 fake GPUs
    t4: str  # 2 fake GPUs, accelerator T4, custom resource "ssd"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    env = pytest.MonkeyPatch()
    # A cluster without token authentication, which no test here must set up for itself.
    env.setenv("RAY_AUTH_MODE", "disabled")
    env.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env.delenv("RAY_ADDRESS", raising=False)
    env.delenv("FLOWRAY_ADDRESS", raising=False)
    # The nodes take this machine's address: Ray replaces 127.0.0.1 in an address given to
    # ray.init with it, so a cluster bound to 127.0.0.1 alone could not be joined.
    c = cluster_utils.Cluster(initialize_head=True,
                              head_node_args={"num_cpus": 1, "include_dashboard": False})
    gpu = c.add_node(num_cpus=1, num_gpus=2)
    t4 = c.add_node(num_cpus=1, num_gpus=2, resources={"accelerator_type:T4": 1, "ssd": 1})
    c.wait_for_nodes()
    try:
        yield RayTestCluster(c.address, c.head_node.node_id, gpu.node_id, t4.node_id)
    finally:
        c.shutdown()
        env.undo()


def _record(ws: Workspace) -> dict:
    run = next((ws.root / ".flowray" / "runs").iterdir())
    return json.loads((run / "record.json").read_text())


def _out(ws: Workspace) -> Path:
    """A folder every node sees (they all run on this machine): jobs on nodes other than the
    coordinator's run in a copy of the workspace, so what they write there stays there."""
    out = ws.root.parent / "out"
    out.mkdir(exist_ok=True)
    return out


def _flow(ws: Workspace, text: str) -> None:
    ws.flow(text.replace("@OUT@", str(_out(ws))))


def _lines(ws: Workspace, name: str) -> list[str]:
    return (_out(ws) / name).read_text().splitlines()


def test_steps_outputs_and_needs_across_jobs(ws: Workspace, cluster: RayTestCluster) -> None:
    _flow(ws, """
        name: chain
        jobs:
          make:
            outputs:
              n: ${{ steps.count.outputs.n }}
            steps:
              - run: echo one >> @OUT@/order.txt
              - id: count
                run: |
                  echo two >> @OUT@/order.txt
                  echo "::n::5"
              - run: echo three >> @OUT@/order.txt
          use:
            needs: make
            strategy:
              matrix:
                k: [1, 2, 3]
            steps:
              - run: |
                  echo "cell ${{ matrix.k }} got ${{ needs.make.outputs.n }} on $FLOWRAY_NODE_ID ${{ runner.id }}" > "@OUT@/use-${{ matrix.k }}.txt"
                  echo "${{ directory.runner }} ${{ directory.actions }}" > "@OUT@/dir-${{ matrix.k }}.txt"
    """)
    out = ws.run("flow.yaml", "--address", cluster.address)
    out.assert_success()
    assert _lines(ws, "order.txt") == ["one", "two", "three"]
    nodes = set()
    for k in (1, 2, 3):
        text = (_out(ws) / f"use-{k}.txt").read_text().split()
        assert text[:4] == ["cell", str(k), "got", "5"]
        assert text[-1] == text[-2]  # runner.id is the node the job ran on, not the coordinator
        nodes.add(text[-1])
        # directory.*: the node's own folders (the coordinator's machine keeps flowray's own)
        runner_dir, actions_dir = (_out(ws) / f"dir-{k}.txt").read_text().split()
        if text[-1] != cluster.head:
            assert runner_dir.endswith(text[-1][:16]) and actions_dir == runner_dir + "/actions"
        assert os.path.isdir(runner_dir) and os.path.isdir(actions_dir)
    assert nodes <= {cluster.head, cluster.gpu, cluster.t4}
    assert "make/count | ::n::5" in out.stdout  # step output reached the terminal
    assert f"Ray cluster {cluster.address}: 3 nodes, 3 CPUs, 4 GPUs" in out.stderr
    rec = _record(ws)
    assert rec["status"] == "success"
    assert rec["jobs"]["make"]["outputs"] == {"n": 5}
    assert [s["status"] for s in rec["jobs"]["make"]["steps"]] == ["success"] * 3
    assert {rec["jobs"][f"use.{i}"]["status"] for i in (1, 2, 3)} == {"success"}
    for k in (1, 2, 3):  # the record names the node each job ran on
        node_id = (_out(ws) / f"use-{k}.txt").read_text().split()[-1]
        assert f"node {node_id[:8]}" in rec["jobs"][f"use.{k}"]["node"]


def test_gpus_are_pinned_and_resources_place_jobs(
    ws: Workspace, cluster: RayTestCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "inherited")
    _flow(ws, """
        name: gpus
        jobs:
          two:
            resources: {gpus: 2}
            steps:
              - run: echo "$CUDA_VISIBLE_DEVICES" > @OUT@/two.txt
          none:
            resources: {gpus: 0}
            steps:
              - run: echo "[$CUDA_VISIBLE_DEVICES]" > @OUT@/none.txt
          unset:
            steps:
              - run: echo "[${CUDA_VISIBLE_DEVICES-unset}]" > @OUT@/unset.txt
          placed:
            resources: {gpus: 1, accelerator: T4, labels: {ssd: 1}, memory: 64MiB}
            steps:
              - run: echo "$FLOWRAY_NODE_ID $CUDA_VISIBLE_DEVICES" > @OUT@/placed.txt
    """)
    ws.run("flow.yaml", "--address", cluster.address).assert_success()
    two = (_out(ws) / "two.txt").read_text().strip().split(",")
    assert len(two) == 2 and len(set(two)) == 2 and set(two) <= {"0", "1"}
    assert (_out(ws) / "none.txt").read_text().strip() == "[]"
    # on a cluster a job without gpus holds none, so it sees none (not the worker's value)
    assert (_out(ws) / "unset.txt").read_text().strip() == "[]"
    node, gpu = (_out(ws) / "placed.txt").read_text().split()
    assert node == cluster.t4 and gpu in ("0", "1")


def test_jobs_no_node_can_hold_are_refused_before_running(
    ws: Workspace, cluster: RayTestCluster
) -> None:
    ws.flow("""
        name: big
        jobs:
          huge:
            resources: {gpus: 3}
            steps: [{run: touch ran}]
          h100:
            resources: {accelerator: H100}
            steps: [{run: touch ran}]
          ok:
            steps: [{run: touch ran}]
    """)
    out = ws.run("flow.yaml", "--address", cluster.address)
    assert out.exit_code == 2, out
    assert out.stderr == (
        f"connecting to the Ray cluster at {cluster.address}...\n"
        "error: job 'huge' needs 3 GPUs (the most one node has is 2 GPUs)\n"
        "job 'h100' needs accelerator H100 (no node has one)\n"
    )
    assert not (ws.root / "ran").exists()


def test_failing_step_exits_1_and_fail_fast_cancels_running_cells(
    ws: Workspace, cluster: RayTestCluster
) -> None:
    _flow(ws, """
        name: failing
        jobs:
          cells:
            strategy:
              matrix:
                n: [1, 2]
            steps:
              - run: |
                  if [ ${{ matrix.n }} = 1 ]; then
                    while [ ! -s @OUT@/slow.pid ]; do sleep 0.05; done
                    exit 3
                  fi
                  sleep 300 &
                  echo $! > @OUT@/slow.pid
                  wait
    """)
    started = time.monotonic()
    out = ws.run("flow.yaml", "--address", cluster.address, "--grace", "1")
    assert out.exit_code == 1, out
    assert time.monotonic() - started < 60
    rec = _record(ws)
    assert rec["jobs"]["cells.1"]["status"] == "failure"
    assert rec["jobs"]["cells.1"]["steps"][0]["error"] == "exited with code 3"
    assert rec["jobs"]["cells.2"]["status"] == "cancelled"
    assert not process_alive(int((_out(ws) / "slow.pid").read_text()))


def _run_in_subprocess(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowray.cli", "run", "flow.yaml", *args],
        cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_without_color(),
    )


def test_step_events_stream_while_the_job_runs(ws: Workspace, cluster: RayTestCluster) -> None:
    # The step goes on only once the test has seen its first line on the terminal: if lines
    # came back only when the task ended, the step would give up waiting and fail.
    _flow(ws, """
        name: live
        jobs:
          talk:
            steps:
              - run: |
                  echo first
                  for i in $(seq 600); do [ -e @OUT@/go ] && break; sleep 0.1; done
                  [ -e @OUT@/go ] && echo second
    """)
    proc = _run_in_subprocess(ws, "--address", cluster.address)
    assert proc.stdout is not None
    before_go = []
    for line in proc.stdout:
        before_go.append(line.rstrip("\n"))
        if line.startswith("talk/1 | first"):
            break
    (_out(ws) / "go").touch()
    rest, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, (before_go, rest, stderr)
    assert before_go == ["talk/1 ▶ echo first", "talk/1 | first"]
    assert rest.splitlines()[0] == "talk/1 | second"


def test_interrupt_stops_every_step_process_on_every_node(
    ws: Workspace, cluster: RayTestCluster
) -> None:
    _flow(ws, """
        name: long
        jobs:
          sleeper:
            steps:
              - run: |
                  sleep 300 &
                  echo $! > @OUT@/group.pid
                  setsid sleep 300 &
                  echo $! > @OUT@/session.pid
                  python3 -c 'import signal, time, os; signal.signal(signal.SIGTERM, signal.SIG_IGN); open("@OUT@/stubborn.pid", "w").write(str(os.getpid())); time.sleep(300)' &
                  wait
          other:
            steps:
              - run: |
                  sleep 300 &
                  echo $! > @OUT@/other.pid
                  wait
          queued:
            needs: sleeper
            steps:
              - run: touch @OUT@/should-not-run
    """)
    proc = _run_in_subprocess(ws, "--address", cluster.address, "--grace", "1")
    names = ("group.pid", "session.pid", "stubborn.pid", "other.pid")
    for name in names:
        wait_for(_out(ws) / name, timeout=60)
    pids = [int((_out(ws) / n).read_text()) for n in names]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    for pid in pids:
        assert not process_alive(pid), f"process {pid} outlived the run"
    rec = _record(ws)
    assert pids_with_env(f"FLOWRAY_RUN_ID={rec['id']}") == []
    assert rec["status"] == "cancelled" and rec["exit_code"] == 130
    assert {rec["jobs"][k]["status"] for k in ("sleeper", "other", "queued")} == {"cancelled"}
    # The nodes stopped the steps themselves (the job runner saw them end), rather than
    # ray.cancel interrupting the tasks.
    assert rec["jobs"]["sleeper"]["steps"][0]["exit_code"] is not None
    assert rec["jobs"]["other"]["steps"][0]["exit_code"] is not None
    assert not (_out(ws) / "should-not-run").exists()


def test_embedded_ray_pins_the_gpus_it_was_given(ws: Workspace) -> None:
    ws.flow("""
        name: embedded
        jobs:
          pick:
            strategy:
              matrix:
                n: [1, 2]
            resources: {gpus: 1}
            steps:
              # Both cells hold their GPU at once (each waits for the other to start): one
              # ending before the other started could hand the same GPU to both.
              - run: |
                  echo "$CUDA_VISIBLE_DEVICES" > "gpu-${{ matrix.n }}.txt"
                  for i in $(seq 600); do [ -e gpu-1.txt ] && [ -e gpu-2.txt ] && break; sleep 0.1; done
    """)
    proc = _run_in_subprocess(ws, "--ray", "--cpus", "2", "--gpus", "5,7")
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, (stdout, stderr)
    assert "embedded Ray: 1 node, 2 CPUs, 2 GPUs" in stderr
    # said before the seconds Ray takes to start, then what it got
    assert stderr.index("starting Ray (local)...\n") < stderr.index("embedded Ray: ")
    got = {(ws.root / f"gpu-{n}.txt").read_text().strip() for n in (1, 2)}
    assert got == {"5", "7"}


def test_dashboard_address_is_refused_with_a_hint(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    out = ws.run("flow.yaml", "--address", "http://head:8265")
    assert out.exit_code == 2
    assert out.stderr == (
        "error: --address 'http://head:8265' is a dashboard (Jobs API) address; `flowray run` "
        "needs the cluster's GCS address HOST:PORT (port 6379 unless `ray start --port` chose "
        "another) or a Ray Client address ray://HOST:10001\n"
    )


def test_cluster_that_wants_a_token_gets_a_clear_error(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    from flowray.backends.ray import cluster as raydispatch

    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()
    port = server.getsockname()[1]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(raydispatch, "_refuses_us", lambda address: True)
    try:
        out = ws.run("flow.yaml", "--address", f"127.0.0.1:{port}")
    finally:
        server.close()
    assert out.exit_code == 2
    assert out.stderr == (
        f"connecting to the Ray cluster at 127.0.0.1:{port}...\n"
        f"error: the Ray cluster at 127.0.0.1:{port} requires token authentication and no "
        "token was found. Give flowray the cluster's token: set RAY_AUTH_TOKEN to it (or "
        "RAY_AUTH_TOKEN_PATH to a file that holds it), or put it in ~/.ray/auth_token; "
        "`ray get-auth-token` on the head node prints it\n"
    )


def test_the_api_on_ray_gives_the_same_event_types(ws: Workspace,
                                                   cluster: RayTestCluster) -> None:
    import flowray
    from flowray.runtime.events import JobStarted, StepFinished, StepLog

    ws.flow("""
        name: sweep
        jobs:
          cell:
            strategy:
              matrix:
                k: [1, 2]
            resources: {gpus: 1}
            steps:
              - run: echo "k=${{ matrix.k }} gpu=$CUDA_VISIBLE_DEVICES"
          after:
            needs: cell
            steps:
              - run: echo after
    """)
    run = flowray.start("flow.yaml", workdir=ws.root, backend=cluster.address)
    events = list(run.events())
    record = run.wait(120)
    assert record.status.value == "success"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    local = flowray.start("flow.yaml", workdir=ws.root, gpus=["0", "1"])
    local_events = list(local.events())
    local.wait(60)
    shape = [(e.type, getattr(e, "job", None)) for e in events]
    local_shape = [(e.type, getattr(e, "job", None)) for e in local_events]
    assert sorted(shape) == sorted(local_shape)  # the same events, whatever the backend
    started = {e.job: e for e in events if isinstance(e, JobStarted)}
    for key in ("cell.1", "cell.2"):
        node = started[key].node
        assert cluster.gpu[:8] in node or cluster.t4[:8] in node  # the node it ran on
        assert started[key].gpus is not None and len(started[key].gpus or []) == 1
        assert started[key].attempt == 1
    lines = sorted(e.line.split(" gpu=")[0] for e in events if isinstance(e, StepLog))
    assert lines == ["after", "k=1", "k=2"]
    ends = [e for e in events if isinstance(e, StepFinished)]
    assert {(e.job, e.status, e.kind) for e in ends} == {
        ("cell.1", "success", "run"), ("cell.2", "success", "run"), ("after", "success", "run")}


def test_runs_of_one_process_share_its_ray_connection(ws: Workspace,
                                                      cluster: RayTestCluster) -> None:
    import ray

    import flowray

    ws.flow("name: a\njobs:\n  j:\n    steps:\n      - run: sleep 1; echo one\n", name="a.yaml")
    ws.flow("name: b\njobs:\n  j:\n    steps:\n      - run: echo two\n", name="b.yaml")
    first = flowray.start("a.yaml", workdir=ws.root, backend=cluster.address)
    second = flowray.start("b.yaml", workdir=ws.root, backend=cluster.address)
    with pytest.raises(flowray.StartError) as other:
        flowray.start("b.yaml", workdir=ws.root, backend="ray")
    assert str(other.value) == (
        f"this process is connected to {cluster.address} for another run; Ray allows one "
        f"connection a process: run this one in another process (or wait)")
    assert second.wait(120).status.value == "success"
    assert ray.is_initialized()  # the first run still uses the connection
    assert first.wait(120).status.value == "success"
    assert not ray.is_initialized()  # flowray made it, and left it with the last run
    # A connection the caller made is used as it is, and left open.
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        third = flowray.start("b.yaml", workdir=ws.root, backend=cluster.address)
        assert third.wait(120).status.value == "success"
        assert ray.is_initialized()
    finally:
        ray.shutdown()


def test_action_results_are_cached_on_the_node_that_ran_the_step(
    ws: Workspace, cluster: RayTestCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cache: true` on Ray: the node keeps the result (in its FLOWRAY_NODE_DIR, not the
    coordinator's action cache), and a second run on that node does not start the action."""
    from gitfixtures import Forge

    root = tmp_path / "forge" / "repos"
    root.mkdir(parents=True)
    monkeypatch.setenv("FLOWRAY_ACTIONS_BASE", f"file://{root}")
    monkeypatch.setenv("FLOWRAY_CACHE_DIR", str(tmp_path / "action-cache"))
    sha = Forge(root).publish("acme/mark", {
        "action-datatorch.yaml": "name: Mark\ncache: true\ninputs: {n: {type: integer}}\n"
                                 "outputs: {twice: {type: integer}}\n"
                                 "runs: {using: cmd, command: 'echo \"$INPUT_N\" >> \"$MARK\"; "
                                 "echo \"::twice::$((INPUT_N * 2))\"'}\n",
    }, "v1")
    _flow(ws, """
        name: cached-on-ray
        jobs:
          j:
            resources: {labels: {ssd: 1}}   # the T4 node, not the coordinator's
            steps:
              - id: mark
                action: acme/mark@v1
                with: {n: 21}
                env: {MARK: "@OUT@/marks.txt"}
              - run: echo "twice is ${{ steps.mark.outputs.twice }}"
    """)
    ws.run("flow.yaml", "--address", cluster.address).assert_success()
    again = ws.run("flow.yaml", "--address", cluster.address)
    again.assert_success()
    assert _lines(ws, "marks.txt") == ["21"]  # started once
    assert "j/2 | twice is 42" in again.stdout
    assert f"j/mark | cached: outputs of acme/mark@v1 ({sha[:7]}) from run " in again.stdout
    run = sorted((ws.root / ".flowray" / "runs").iterdir())[-1]
    step = json.loads((run / "record.json").read_text())["jobs"]["j"]["steps"][0]
    assert (step["cached"], step["outputs"]) == (True, {"twice": 42})
    assert not (tmp_path / "action-cache" / "results").exists()  # kept on the node
    node_results = Path(os.environ["FLOWRAY_NODE_DIR"]) / cluster.t4[:16] / "results"
    assert len(list((node_results / "entries").glob("*.json"))) == 1
