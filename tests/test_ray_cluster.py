"""A run spread over several Ray nodes: files shipped through the object store, multi-node
gangs, and a node lost while its job runs.

One `ray.cluster_utils.Cluster` serves the module: a head and two worker nodes, one CPU each,
all on this machine but each a separate raylet with its own node id. flowray treats every
node other than the coordinator's as another machine: jobs there run in a copy of the
workspace and of the actions, shipped through the object store, never through the paths
the coordinator sees. The node-loss test adds the nodes it removes, so it leaves the others.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, env_without_color, process_alive, wait_for
from gitfixtures import ADD_ACTION, ADD_PY, Forge, isolate

cluster_utils = pytest.importorskip(
    "ray.cluster_utils", reason="ray is not installed: the Ray dispatcher cannot be tested")


@dataclass
class Nodes:
    cluster: Any  # ray.cluster_utils.Cluster
    address: str
    ids: list[str]  # head first
    node_dir: Path  # FLOWRAY_NODE_DIR of every node
    git_trace: Path  # GIT_TRACE2_EVENT of every process: each git command run, by any node


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    base = tmp_path_factory.mktemp("ray-nodes")
    env = pytest.MonkeyPatch()
    env.setenv("RAY_AUTH_MODE", "disabled")
    env.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env.delenv("RAY_ADDRESS", raising=False)
    env.delenv("FLOWRAY_ADDRESS", raising=False)
    # Set before the nodes start, so their workers (and any git they ran) inherit them.
    env.setenv("FLOWRAY_NODE_DIR", str(base / "nodes"))
    env.setenv("GIT_TRACE2_EVENT", str(base / "git-trace.json"))
    # Notice a removed node within a second or two rather than Ray's default 15-55 s.
    system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
              "health_check_failure_threshold": 3, "health_check_timeout_ms": 300}
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": system})
    workers = [c.add_node(num_cpus=1), c.add_node(num_cpus=1)]
    c.wait_for_nodes()
    try:
        yield Nodes(c, c.address, [c.head_node.node_id, *(w.node_id for w in workers)],
                    base / "nodes", base / "git-trace.json")
    finally:
        c.shutdown()
        env.undo()


def _out(ws: Workspace) -> Path:
    """A folder every node sees (they all run on this machine), unlike the workspace."""
    out = ws.root.parent / "out"
    out.mkdir(exist_ok=True)
    return out


def _flow(ws: Workspace, text: str) -> None:
    ws.flow(text.replace("@OUT@", str(_out(ws))))


def _record(ws: Workspace) -> dict[str, Any]:
    run = next((ws.root / ".flowray" / "runs").iterdir())
    return json.loads((run / "record.json").read_text())


def _fetches(trace: Path) -> int:
    """`git fetch` commands run since the trace began, by any process on any node."""
    if not trace.exists():
        return 0
    count = 0
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "cmd_name" and event.get("name") == "fetch":
            count += 1
    return count


def test_twelve_jobs_on_three_nodes_fetch_the_action_once(
    ws: Workspace, nodes: Nodes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate(monkeypatch, tmp_path)
    forge = tmp_path / "forge" / "repos"
    sha = Forge(forge).publish("acme/add", {"action-datatorch.yaml": ADD_ACTION,
                                            "add.py": ADD_PY}, "v1")
    monkeypatch.setenv("FLOWRAY_ACTIONS_BASE", f"file://{forge}")
    (ws.root / "data").mkdir()
    (ws.root / "data" / "in.txt").write_text("data from the workspace\n")
    (ws.root / "greet").mkdir()
    (ws.root / "greet" / "action-datatorch.yaml").write_text(
        "name: greet\ninputs: {who: {type: string}}\n"
        "runs: {using: cmd, command: 'echo hello $INPUT_WHO from $FLOWRAY_ACTION_PATH'}\n")
    (ws.root / "run.env").write_text("FROM_ENV_FILE=given to every node\n")
    ws.flow("""
        name: spread
        jobs:
          sum:
            strategy:
              matrix:
                n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
            resources: {cpus: 1}
            artifacts: [made-*.txt]
            steps:
              - id: add
                action: acme/add@v1
                with: {a: "${{ matrix.n }}", b: 100}
              - action: ./greet
                with: {who: "cell ${{ matrix.n }}"}
              - run: |
                  cat data/in.txt
                  echo "sum ${{ steps.add.outputs.sum }} on $FLOWRAY_NODE_ID"
                  echo "env: $FROM_ENV_FILE"
                  echo "made by ${{ matrix.n }}" > made-${{ matrix.n }}.txt
                  sleep 0.3
    """)
    fetches = _fetches(nodes.git_trace)
    out = ws.run("flow.yaml", "--address", nodes.address, "--env-file", "run.env")
    out.assert_success()
    assert _fetches(nodes.git_trace) - fetches == 1  # one fetch, by the coordinator
    assert out.stderr.count("fetched acme/add@v1") == 1
    rec = _record(ws)
    assert rec["actions"] == {"acme/add@v1": sha}
    run_dir = ws.root / ".flowray" / "runs" / rec["id"]
    used = set()
    for n in range(1, 13):
        job = rec["jobs"][f"sum.{n}"]
        assert job["status"] == "success"
        node = next(i for i in nodes.ids if f"node {i[:8]}" in job["node"])
        used.add(node)
        logs = ws.cli("logs", rec["id"], f"sum.{n}")
        logs.assert_success()
        assert f"hello cell {n} from " in logs.stdout
        assert "data from the workspace" in logs.stdout
        assert f"sum {n + 100} on {node}" in logs.stdout
        assert "env: given to every node" in logs.stdout
        assert (run_dir / "artifacts" / f"sum.{n}" / f"made-{n}.txt").read_text() == \
            f"made by {n}\n"
    assert used == set(nodes.ids), "the jobs did not land on every node"
    # Jobs on the worker nodes ran the action from their own caches, unpacked from the
    # object store; the workspace copies went away with the run.
    for node in nodes.ids[1:]:
        entries = nodes.node_dir / node[:16] / "actions" / "entries"
        assert any(p.name == sha for p in entries.glob("*/*")), f"no action cache on {node}"
        assert not list((nodes.node_dir / node[:16] / "workspaces").glob(f"{rec['id']}-*"))
    # The coordinator's workspace did not get the files the jobs on other nodes made.
    assert len(list(ws.root.glob("made-*.txt"))) < 12


def test_workspace_too_large_to_ship_fails_with_the_way_out(
    ws: Workspace, nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWRAY_SHIP_LIMIT_MB", "0.5")
    (ws.root / "big.bin").write_bytes(b"\0" * 2**20)
    ws.flow("name: big\njobs: {a: {steps: [{run: 'true'}]}}\n")
    out = ws.run("flow.yaml", "--address", nodes.address)
    assert out.exit_code == 1, out
    error = _record(ws)["jobs"]["a"]["error"]
    assert error == (
        f"the workspace {ws.root} holds more than 0.5 MiB, which flowray ships to every Ray "
        "node through the object store: keep data out of the flow's folder (or in .git/ or "
        ".flowray/), raise FLOWRAY_SHIP_LIMIT_MB, or set FLOWRAY_SHARED_WORKSPACE=1 when every "
        f"node sees {ws.root} (a shared filesystem)"
    )
    monkeypatch.setenv("FLOWRAY_SHARED_WORKSPACE", "1")
    ws.run("flow.yaml", "--address", nodes.address).assert_success()


GANG = """
    name: gang
    jobs:
      train:
        resources: {nodes: 3}
        outputs:
          who: ${{ steps.hello.outputs.who }}
        steps:
          - id: hello
            run: |
              echo "rank $FLOWRAY_NODE_RANK of $FLOWRAY_NUM_NODES on $FLOWRAY_NODE_ID ips $FLOWRAY_NODE_IPS master $MASTER_ADDR:$MASTER_PORT" >> @OUT@/ranks.txt
              echo "::who::rank $FLOWRAY_NODE_RANK"
              if [ "$FLOWRAY_NODE_RANK" = 0 ]; then sleep 1; date +%s.%N > @OUT@/rank0-done; fi
          - run: date +%s.%N > @OUT@/step2-$FLOWRAY_NODE_RANK
          - name: rendezvous
            shell: python
            run: |
              import os, socket, time
              rank, size = int(os.environ["FLOWRAY_NODE_RANK"]), int(os.environ["FLOWRAY_NUM_NODES"])
              addr = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
              if rank == 0:
                  server = socket.create_server(addr)
                  got = sorted(int(server.accept()[0].recv(8)) for _ in range(size - 1))
                  print("rank 0 heard from", got)
              else:
                  for _ in range(200):
                      try:
                          socket.create_connection(addr).sendall(str(rank).encode())
                          break
                      except OSError:
                          time.sleep(0.05)
                  print("rank", rank, "reached", addr)
"""


def test_a_multi_node_job_runs_every_step_on_every_node_in_step(
    ws: Workspace, nodes: Nodes
) -> None:
    _flow(ws, GANG)
    out = ws.run("flow.yaml", "--address", nodes.address)
    out.assert_success()
    rec = _record(ws)
    job = rec["jobs"]["train"]
    assert job["outputs"] == {"who": "rank 0"}
    ranks = job["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1, 2]
    assert {r["status"] for r in ranks} == {"success"}
    placed = [next(i for i in nodes.ids if f"node {i[:8]}" in r["node"]) for r in ranks]
    assert sorted(placed) == sorted(nodes.ids)  # STRICT_SPREAD: one rank on each node
    lines = sorted((_out(ws) / "ranks.txt").read_text().splitlines())
    ips = lines[0].split(" ips ")[1].split(" master ")[0]
    master = ips.split(",")[0]
    port = lines[0].rsplit(":", 1)[1]
    assert lines == [f"rank {r} of 3 on {placed[r]} ips {ips} master {master}:{port}"
                     for r in range(3)]
    # Step 2 started on every node only once step 1 had ended on all of them.
    rank0_done = float((_out(ws) / "rank0-done").read_text())
    for r in range(3):
        assert float((_out(ws) / f"step2-{r}").read_text()) >= rank0_done
    assert "rank 0 heard from [1, 2]" in out.stdout
    run_dir = ws.root / ".flowray" / "runs" / rec["id"]
    for r, folder in enumerate(("train", "train.rank1", "train.rank2")):
        logs = run_dir / "logs" / folder
        assert f"rank {r}" in (logs / "01-hello.log").read_text()
        assert ranks[r]["steps"][0]["log"].startswith(f"logs/{folder}/")
    shown = ws.cli("logs", "last", "train/3").stdout
    assert "==> train/3 (success) <==\nrank 0 heard from [1, 2]\n" in shown
    assert "==> train/3 [rank 2] (success) <==\nrank 2 reached" in shown
    status = ws.cli("status", "last").stdout
    assert f"    rank 1: success on {ranks[1]['node']}\n" in status


def test_a_failed_rank_stops_the_others_and_fails_the_job(
    ws: Workspace, nodes: Nodes
) -> None:
    _flow(ws, """
        name: gang-fails
        jobs:
          train:
            resources: {nodes: 2}
            steps:
              - run: |
                  if [ "$FLOWRAY_NODE_RANK" = 1 ]; then
                    while [ ! -s @OUT@/rank0.pid ]; do sleep 0.05; done
                    exit 4
                  fi
                  sleep 300 &
                  echo $! > @OUT@/rank0.pid
                  wait
              - run: touch @OUT@/step2-ran
          after:
            needs: train
            steps: [{run: touch @OUT@/after-ran}]
    """)
    started = time.monotonic()
    out = ws.run("flow.yaml", "--address", nodes.address, "--grace", "1")
    assert out.exit_code == 1, out
    assert time.monotonic() - started < 60
    job = _record(ws)["jobs"]["train"]
    assert job["status"] == "failure"
    assert job["error"].startswith("rank 1 (of 2) on ")
    assert job["error"].endswith(": step 'if [ \"$FLOWRAY_NODE_RANK\" = 1 ]; then': exited with code 4")
    assert [r["status"] for r in job["ranks"]] == ["cancelled", "failure"]
    assert not process_alive(int((_out(ws) / "rank0.pid").read_text()))
    assert not (_out(ws) / "step2-ran").exists()
    assert not (_out(ws) / "after-ran").exists()


def test_a_gang_larger_than_the_cluster_is_refused_before_running(
    ws: Workspace, nodes: Nodes
) -> None:
    ws.flow("name: big\njobs: {a: {resources: {nodes: 5}, steps: [{run: 'true'}]}}\n")
    out = ws.run("flow.yaml", "--address", nodes.address)
    assert out.exit_code == 2, out
    assert out.stderr == (
        f"connecting to the Ray cluster at {nodes.address}...\n"
        "error: job 'a' needs 5 nodes (resources.nodes), each with 1 CPU; 3 nodes have that "
        "much\n")


def test_a_multi_node_job_is_refused_without_ray(ws: Workspace) -> None:
    ws.flow("name: big\njobs: {a: {resources: {nodes: 2}, steps: [{run: 'true'}]}}\n")
    out = ws.run("flow.yaml")
    assert out.exit_code == 2, out
    assert out.stderr == (
        "error: job 'a' asks for 2 nodes (resources.nodes): multi-node jobs run on a Ray "
        "cluster (flowray run --address HOST:PORT); this machine is one node\n")
    assert not (ws.root / ".flowray" / "runs").exists()


def test_container_steps_run_on_the_nodes_the_jobs_landed_on(
    ws: Workspace, nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import containerfixtures

    client = containerfixtures.engine()  # every node here shares this machine's engine
    monkeypatch.setenv("FLOWRAY_DOCKER_NETWORK", "none")
    ws.flow(f"""
        name: boxed-on-ray
        jobs:
          box:
            strategy:
              matrix:
                n: [1, 2, 3, 4, 5, 6]
            container: {containerfixtures.IMAGE}
            artifacts: [made-*.txt]
            steps:
              - run: |
                  echo "cell ${{{{ matrix.n }}}} on $FLOWRAY_NODE_ID in $(pwd), bash: $(ls /bin/bash 2>&1 | head -c 13)"
                  echo "made in a container" > made-${{{{ matrix.n }}}}.txt
                  sleep 0.5
    """)
    out = ws.run("flow.yaml", "--address", nodes.address)
    out.assert_success()
    rec = _record(ws)
    run_dir = ws.root / ".flowray" / "runs" / rec["id"]
    used = set()
    for n in range(1, 7):
        job = rec["jobs"][f"box.{n}"]
        node = next(i for i in nodes.ids if f"node {i[:8]}" in job["node"])
        used.add(node)
        logs = ws.cli("logs", rec["id"], f"box.{n}").stdout
        assert f"cell {n} on {node} in " in logs and "bash: ls: /bin/bash" in logs
        assert (run_dir / "artifacts" / f"box.{n}" / f"made-{n}.txt").read_text() == \
            "made in a container\n"
    assert len(used) > 1, "every job landed on one node"
    assert containerfixtures.left(client, rec["id"]) == []


def test_a_lost_node_runs_the_job_again_on_another(
    ws: Workspace, nodes: Nodes
) -> None:
    # Two nodes only this job can use; the one it lands on is removed while its step runs.
    lossy = [nodes.cluster.add_node(num_cpus=1, resources={"lossy": 1}) for _ in range(2)]
    nodes.cluster.wait_for_nodes()
    _flow(ws, """
        name: lossy
        jobs:
          train:
            resources: {labels: {lossy: 1}}
            steps:
              - run: echo "attempt ${{ job.attempt }} on $FLOWRAY_NODE_ID"
              - run: |
                  if [ "${{ job.attempt }}" = 1 ]; then
                    echo $FLOWRAY_NODE_ID > @OUT@/node-1
                    sleep 120
                  fi
                  echo "done in attempt ${{ job.attempt }}"
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowray.cli", "run", "flow.yaml", "--address", nodes.address,
         "--grace", "1"],
        cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_without_color(),
    )
    try:
        # Remove the node once its first lines reached the coordinator (the last tenth of a
        # second of a lost node's output may be lost with it; this test wants none lost).
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "| attempt 1 on " in line:
                break
        else:
            raise AssertionError(f"the first attempt did not start: {seen} {proc.communicate()}")
        wait_for(_out(ws) / "node-1", timeout=60)
        first = (_out(ws) / "node-1").read_text().strip()
        assert line.rstrip().endswith(f"attempt 1 on {first}")
        victim = next(n for n in lossy if n.node_id == first)
        nodes.cluster.remove_node(victim, allow_graceful=False)
        rest, stderr = proc.communicate(timeout=120)
        stdout = "".join(seen) + rest
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    job = _record(ws)["jobs"]["train"]
    assert proc.returncode == 0, (stdout, stderr, job)
    assert job["status"] == "success"
    assert job["attempts"] == 2 and job["lost_attempts"] == 1
    [lost] = job["previous_attempts"]
    assert lost["status"] == "lost"
    assert f"node {first[:8]}" in lost["node"]
    assert lost["error"].startswith(("the node running the job died on ",
                                     "the Ray worker running the job died on ",
                                     "the Ray worker running the job was stopped on "))
    assert f"node {first[:8]}" not in job["node"]
    assert f"↻ job train: {lost['error']}; running it again (attempt 2)" in stdout
    # Both attempts' logs are kept, written by the coordinator from the live lines.
    run_dir = ws.root / ".flowray" / "runs" / _record(ws)["id"]
    assert (run_dir / lost["steps"][0]["log"]).read_text() == f"attempt 1 on {first}\n"
    assert (run_dir / job["steps"][1]["log"]).read_text() == "done in attempt 2\n"
    assert ".attempt2" in job["steps"][1]["log"]
    status = ws.cli("status", "last")
    assert "attempts 2" in status.stdout
    assert f"    attempt 1: lost on {lost['node']} ({lost['error']})" in status.stdout
    logs = ws.cli("logs", "last", "train")
    assert f"==> train/1 [attempt 1: lost] (success) <==\nattempt 1 on {first}\n" in logs.stdout
    assert "==> train/2 [attempt 2] (success) <==\ndone in attempt 2\n" in logs.stdout
    for node in lossy:
        if node is not victim:
            nodes.cluster.remove_node(node)
