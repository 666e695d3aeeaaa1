"""A worker node lost while a job runs on it (issue 16), on a real `ray start` cluster laid out
as `cluster/ray-gpu.yaml` and the KubeRay config recommend: a head with `--num-cpus 0`, so no
job lands on it, and two worker nodes with one CPU each. Every node is a separate `ray start`
with a temp dir of its own, on 127.0.0.1, without token authentication.

A node is lost the hard way: every process of it (raylet, agents, Ray workers and the steps
they started) gets SIGKILL at once, as when its machine goes away. A test that loses a worker
leaves a fresh one in its place (the next test starts one), so each test begins with two.

Every process of a node carries the environment variable MARK=<the node's temp dir>, which
Ray's processes (and the steps of the jobs they run) inherit from `ray start`: losing a node,
and stopping the cluster at the end, touch exactly those processes, never another Ray on the
machine (`ray stop` would stop them all). The cluster's temp dirs, FLOWRAY_NODE_DIR and HOME
are under one folder, removed at the end, and the module checks that no process of it is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import env_without_color, free_ports, kill_processes, process_alive

pytest.importorskip("ray", reason="ray is not installed: the Ray dispatcher cannot be tested")

MARK = "FLOWRAY_TEST_RAY_NODE"
# A case starts a node or two, one or two flowray runs and maybe a helper driver, and loses a
# node: about 20-40 s on two cores.
pytestmark = pytest.mark.timeout(300)


# ----------------------------------------------------------------------------- the cluster


def _marked(prefix: str) -> list[int]:
    """Live processes whose MARK starts with ``prefix`` (a node's temp dir, or the cluster's
    folder with a trailing slash)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(f"{MARK}={prefix}".encode()) for v in env) and \
                process_alive(int(entry.name)):
            out.append(int(entry.name))
    return out


def _kill_marked(prefix: str) -> None:
    # Ray's agents rename themselves (setproctitle) over their environment, which can lose the
    # mark: those are found by the files they hold below the node's folder, and their children.
    kill_processes(prefix.rstrip(os.sep), f"{MARK}={prefix.rstrip(os.sep)}")
    for _ in range(5):  # a process may start while the others are being killed
        pids = _marked(prefix)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(process_alive(p) for p in pids):
            time.sleep(0.02)
    assert not _marked(prefix), f"processes of {prefix} outlived SIGKILL"


@dataclass
class Node:
    name: str  # also a custom resource of the node (amount 1): a way to aim work at it
    temp_dir: str


@dataclass
class LocalCluster:
    base: str  # the nodes' temp dirs, HOME and FLOWRAY_NODE_DIR are below it
    env: dict[str, str]  # what every node, helper and flowray run starts with
    port: int = 0
    workers: list[Node] = field(default_factory=list)  # the live ones
    nodes: list[Node] = field(default_factory=list)  # every node started, head first

    @property
    def drivers(self) -> str:
        """The MARK of the flowray runs and helpers the tests start (not a node's)."""
        return os.path.join(self.base, "drivers")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> Node:
        node = Node(name, os.path.join(self.base, name))
        self.nodes.append(node)
        why = None
        for _ in range(3):
            why = self._try_start(node, args)
            if why is None:
                return node
            # Ray gives a raylet 30 s to register, which a busy two-core machine can miss:
            # what started goes, and the node starts again.
            _kill_marked(node.temp_dir)
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        raise AssertionError(f"`ray start` of {name} failed 3 times; the last:\n{why}")

    def _try_start(self, node: Node, args: list[str]) -> str | None:
        os.makedirs(node.temp_dir)
        ray = Path(sys.executable).with_name("ray")
        exe = str(ray) if ray.exists() else shutil.which("ray")
        assert exe, "the `ray` command is not installed"
        # Every port chosen free: two nodes on one machine must not share Ray's defaults.
        agent_http, agent_grpc, runtime_env, metrics, node_manager, object_manager = \
            free_ports(6)
        cmd = [exe, "start", "--node-ip-address", "127.0.0.1", "--temp-dir", node.temp_dir,
               "--dashboard-agent-listen-port", str(agent_http),
               "--dashboard-agent-grpc-port", str(agent_grpc),
               "--runtime-env-agent-port", str(runtime_env),
               "--metrics-export-port", str(metrics), "--node-manager-port", str(node_manager),
               "--object-manager-port", str(object_manager), "--disable-usage-stats",
               "--num-gpus", "0", *args]
        try:
            proc = subprocess.run(cmd, env={**self.env, MARK: node.temp_dir},
                                  capture_output=True, text=True, timeout=120,
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            return "`ray start` did not finish within 120 s"
        return None if proc.returncode == 0 else (proc.stdout + proc.stderr)[-3000:]

    def start_head(self) -> None:
        gcs, client = free_ports(2)
        self.port = gcs
        self._start("head", ["--head", "--port", str(gcs), "--num-cpus", "0",
                             "--include-dashboard", "false",
                             "--ray-client-server-port", str(client)])

    def start_worker(self, *also: str) -> Node:
        """A worker with one CPU and a resource of its own name; ``also``: more resources
        (amount 1), e.g. a lost node's name, so that it takes the lost node's jobs."""
        name = f"w{len(self.nodes)}"
        resources = {name: 1, **dict.fromkeys(also, 1)}
        node = self._start(name, ["--address", self.address, "--num-cpus", "1",
                                  "--resources", json.dumps(resources)])
        self.workers.append(node)
        return node

    def ensure_workers(self, n: int = 2) -> None:
        """Start workers until ``n`` are live (one after the other: a busy machine may not
        start two raylets within Ray's 30 s)."""
        while len(self.workers) < n:
            self.start_worker()

    def node_of(self, mark: str) -> Node:
        return next(n for n in self.nodes if n.temp_dir == mark)

    def lose(self, node: Node) -> None:
        """SIGKILL every process of ``node`` at once: its machine is gone."""
        assert node in self.workers
        self.workers.remove(node)
        _kill_marked(node.temp_dir)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            _kill_marked(node.temp_dir)
        _kill_marked(self.base + os.sep)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # A short path: Ray's unix sockets live under it (at most 107 characters).
    base = tempfile.mkdtemp(prefix="frn-", dir="/tmp")
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "FLOWRAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                 "CUDA_VISIBLE_DEVICES", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    env.update({
        # No token authentication (Ray 2.60's default turns it on): nothing here needs one.
        "RAY_AUTH_MODE": "disabled", "NO_COLOR": "1",
        # No ~/.ray (auth token, cluster file) of the user is read or written.
        "HOME": base,
        # Where jobs on the workers unpack the workspace; removed with the cluster.
        "FLOWRAY_NODE_DIR": os.path.join(base, "flowray-nodes"),
        # The GCS marks a dead node dead within about two seconds rather than Ray's 15-55 s.
        "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
        "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "4",
    })
    c = LocalCluster(base=base, env=env)
    try:
        c.start_head()
        c.ensure_workers()
        yield c
    finally:
        c.stop()
        assert not _marked(base + os.sep), "processes of the test cluster are left"
        assert not os.path.exists(base)


@pytest.fixture
def two_workers(cluster: LocalCluster) -> LocalCluster:
    cluster.ensure_workers()
    return cluster


# ----------------------------------------------------------------------------- helpers


class Run:
    """``flowray run`` in a subprocess; threads read its output, so the test never blocks."""

    def __init__(self, cluster: LocalCluster, cwd: Path, *args: str) -> None:
        env = {**env_without_color(), "RAY_AUTH_MODE": "disabled", "HOME": cluster.env["HOME"],
               MARK: cluster.drivers}
        for name in ("RAY_ADDRESS", "FLOWRAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                     "FLOWRAY_NODE_DIR"):
            env.pop(name, None)
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowray.cli", "run", "flow.yaml", "--address",
             cluster.address, "--grace", "1", *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, out), daemon=True)
                         for stream, out in ((self.proc.stdout, self.stdout),
                                             (self.proc.stderr, self.stderr))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: Any, out: list[str]) -> None:
        for line in stream:
            out.append(line)

    def output(self) -> str:
        return "".join(self.stdout) + "--- stderr ---\n" + "".join(self.stderr)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"the run did not end within {timeout}s:\n{self.output()}") from None
        for t in self._readers:
            t.join(timeout=10)
        return code

    def stop(self) -> None:
        """Ctrl-C, then SIGKILL: no run outlives its test."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def run_dir(self) -> Path:
        return next((self.cwd / ".flowray" / "runs").iterdir())

    def record(self) -> dict[str, Any]:
        return json.loads((self.run_dir() / "record.json").read_text())

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = (self.run_dir() / "events.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, lines) if e.get("type") == kind]

    def cli(self, *args: str) -> str:
        """Another flowray command in the run's workspace (no Ray needed)."""
        out = subprocess.run([sys.executable, "-m", "flowray.cli", *args], cwd=self.cwd,
                             env=env_without_color(), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out
        return out.stdout


def _wait_file(path: Path, timeout: float, *runs: Run) -> str:
    """The first line of ``path`` once it is written, failing early if a run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().strip()
        for run in runs:
            if run.proc.poll() is not None:
                raise AssertionError(f"a run ended before {path} was written:\n{run.output()}")
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout}s:\n"
                         + "\n".join(r.output() for r in runs))


def _wait_output(run: Run, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in "".join(run.stdout) + "".join(run.stderr):
            return
        if run.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the run's output:\n{run.output()}")


# A job for one CPU. Attempt 1 writes where it runs (the node's id and temp dir) and waits for
# the test to lose that node; a later attempt finishes at once.
FLOW = """
name: @NAME@
jobs:
  train:
    resources: {cpus: 1@LABELS@}
@TIMEOUT@    steps:
      - run: echo "attempt ${{ job.attempt }} on $FLOWRAY_NODE_ID"
      - run: |
          if [ "${{ job.attempt }}" = 1 ]; then
            echo "$FLOWRAY_NODE_ID $@MARK@" > @OUT@/@NAME@-1
            sleep 240
          fi
          echo "done in attempt ${{ job.attempt }} on $FLOWRAY_NODE_ID"
"""


def _workspace(tmp: Path, name: str, *, label: str = "", timeout: str = "",
               flow: str = FLOW) -> Path:
    ws = tmp / name
    ws.mkdir()
    text = (flow.replace("@NAME@", name).replace("@MARK@", MARK).replace("@OUT@", str(tmp))
            .replace("@LABELS@", f", labels: {{{label}: 1}}" if label else "")
            .replace("@TIMEOUT@", f"    timeout-minutes: {timeout}\n" if timeout else ""))
    (ws / "flow.yaml").write_text(text.lstrip())
    return ws


# A helper driver that holds a worker's CPU (a task aimed at the node's own resource) until
# the file RELEASE exists, so that a job submitted meanwhile can only land on the other worker.
HOLDER = r"""
import os, sys, time
import ray
address, resource, release = sys.argv[1:]
ray.init(address=address, logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1, max_retries=0)
def hold() -> None:
    with open(release + ".held", "w") as fh:
        fh.write("held\n")
    deadline = time.time() + 200
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.05)

ray.get(hold.options(resources={resource: 1}).remote())
"""


@contextlib.contextmanager
def _holding(cluster: LocalCluster, node: Node, tmp: Path) -> Iterator[Path]:
    """Hold ``node``'s CPU while the block runs, or until the file yielded is written."""
    release = tmp / f"release-{node.name}"
    env = {**cluster.env, MARK: cluster.drivers}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, cluster.address, node.name,
                             str(release)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not Path(f"{release}.held").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the holder did not start: {proc.communicate()[0]}")
            time.sleep(0.05)
        yield release
    finally:
        release.write_text("go\n")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _assert_lost_then_done(run: Run, victim_id: str) -> dict[str, Any]:
    """The run's job had one attempt lost with node ``victim_id`` and succeeded elsewhere;
    the record, the events and `flowray status` say so."""
    job = run.record()["jobs"]["train"]
    assert job["status"] == "success", (job, run.output())
    assert job["attempts"] == 2 and job["lost_attempts"] == 1
    [lost] = job["previous_attempts"]
    assert lost["status"] == "lost"
    assert f"node {victim_id[:8]}" in lost["node"]
    assert lost["error"].startswith(("the node running the job died on ",
                                     "the Ray worker running the job died on ",
                                     "the Ray worker running the job was stopped on ")), lost
    assert f"node {victim_id[:8]}" not in job["node"]
    assert "done in attempt 2 on " in "".join(run.stdout)
    assert f"done in attempt 2 on {victim_id}" not in "".join(run.stdout)
    assert f"↻ job train: {lost['error']}; running it again (attempt 2)" in "".join(run.stdout)
    [retry] = run.events("job.retrying")
    assert retry["status"] == "lost" and retry["attempt"] == 1
    assert f"node {victim_id[:8]}" in retry["node"]
    [finished] = run.events("job.finished")
    assert finished["status"] == "success" and finished["lost_attempts"] == 1
    status = run.cli("status", "last")
    assert f"    attempt 1: lost on {lost['node']} ({lost['error']})" in status, status
    return job


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("victim", [0, 1], ids=["first-worker", "second-worker"])
def test_losing_the_worker_a_job_runs_on_runs_it_again_on_the_other(
    two_workers: LocalCluster, tmp_path: Path, victim: int
) -> None:
    cluster = two_workers
    node, other = cluster.workers[victim], cluster.workers[1 - victim]
    ws = _workspace(tmp_path, "one")
    with _holding(cluster, other, tmp_path) as release:
        run = Run(cluster, ws)
        try:
            node_id, mark = _wait_file(tmp_path / "one-1", 120, run).split()
            assert cluster.node_of(mark) is node  # the only free CPU was there
            _wait_output(run, f"| attempt 1 on {node_id}", 30)
            cluster.lose(node)
            release.write_text("go\n")  # the other worker is free for the next attempt
            code = run.wait(120)
        finally:
            run.stop()
    assert code == 0, run.output()
    _assert_lost_then_done(run, node_id)


TWO = """
name: other
jobs:
  steady:
    resources: {cpus: 1, labels: {@NODE@: 1}}
    steps:
      - run: echo "steady on $FLOWRAY_NODE_ID" > @OUT@/other-1
      - run: |
          while [ ! -e @OUT@/go-on ]; do sleep 0.05; done
          echo "steady went on"
"""


def test_two_runs_at_once_both_succeed_when_one_loses_the_worker_of_its_job(
    two_workers: LocalCluster, tmp_path: Path
) -> None:
    cluster = two_workers
    node, other = cluster.workers
    # Run "other" holds the other worker's CPU (its job asks for that node's resource), so
    # run "one"'s job lands on `node`. Both runs share the event hub on the head.
    steady = Run(cluster, _workspace(tmp_path, "other", flow=TWO.replace("@NODE@", other.name)))
    runs = [steady]
    try:
        _wait_file(tmp_path / "other-1", 120, steady)
        run = Run(cluster, _workspace(tmp_path, "one"))
        runs.append(run)
        node_id, mark = _wait_file(tmp_path / "one-1", 120, run, steady).split()
        assert cluster.node_of(mark) is node
        _wait_output(run, f"| attempt 1 on {node_id}", 30)
        cluster.lose(node)
        _wait_output(run, "↻ job train: ", 60)
        (tmp_path / "go-on").write_text("go\n")  # the steady job ends, freeing its CPU
        assert steady.wait(120) == 0, steady.output()
        assert run.wait(120) == 0, run.output()
    finally:
        for r in runs:
            r.stop()
    assert "steady went on" in "".join(steady.stdout)
    job = steady.record()["jobs"]["steady"]
    assert job["status"] == "success" and job["attempts"] == 1 and job["lost_attempts"] == 0
    _assert_lost_then_done(run, node_id)


def test_a_job_whose_only_node_is_lost_waits_for_a_replacement_and_says_so(
    two_workers: LocalCluster, tmp_path: Path
) -> None:
    cluster = two_workers
    node = cluster.workers[0]
    ws = _workspace(tmp_path, "one", label=node.name)  # no timeout: it waits on
    run = Run(cluster, ws)
    try:
        node_id, _ = _wait_file(tmp_path / "one-1", 120, run).split()
        _wait_output(run, f"| attempt 1 on {node_id}", 30)
        cluster.lose(node)
        _wait_output(run, "↻ job train: ", 60)
        _wait_output(run, "! job train: has waited 1", 60)
        assert run.proc.poll() is None
        cluster.start_worker(node.name)  # as KubeRay replaces a lost pod
        code = run.wait(120)
    finally:
        run.stop()
    assert code == 0, run.output()
    _assert_lost_then_done(run, node_id)
    notice = next(e for e in run.events("run.notice") if e["job"] == "train")
    assert notice["message"].startswith("has waited 1")
    assert notice["message"].endswith(
        f"s for a Ray node with 1 CPU, 1 of resource '{node.name}' free (no live node has "
        "that much); it has no timeout, so it waits on (cancel the run to stop it)")


def test_a_job_no_live_node_can_take_fails_at_its_timeout_naming_what_it_waits_for(
    two_workers: LocalCluster, tmp_path: Path
) -> None:
    cluster = two_workers
    node = cluster.workers[0]
    ws = _workspace(tmp_path, "one", label=node.name, timeout="0.25")
    run = Run(cluster, ws)
    try:
        node_id, _ = _wait_file(tmp_path / "one-1", 120, run).split()
        _wait_output(run, f"| attempt 1 on {node_id}", 30)
        cluster.lose(node)
        lost_at = time.monotonic()
        code = run.wait(120)
    finally:
        run.stop()
    assert code == 1, run.output()
    assert time.monotonic() - lost_at < 60
    job = run.record()["jobs"]["train"]
    assert job["status"] == "failure" and job["attempts"] == 2 and job["lost_attempts"] == 1
    assert job["previous_attempts"][0]["status"] == "lost"
    assert job["error"] == (
        f"no Ray node took the job within its timeout (0.25 min): it waited for a Ray node "
        f"with 1 CPU, 1 of resource '{node.name}' free (no live node has that much)")
    assert "! job train: has waited 1" in run.output()


def test_the_hub_is_pinned_to_the_coordinators_node_and_asks_for_no_resource() -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from flowray.backends.ray.node import hub_options

    home = "ab" * 28
    options = hub_options(home)
    strategy = options["scheduling_strategy"]
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert (strategy.node_id, strategy.soft) == (home, False)
    assert (options["num_cpus"], options["num_gpus"], options["resources"]) == (0, 0, {})
    assert "memory" not in options and options["lifetime"] == "detached"
    assert options["name"].endswith(f"@{home}")  # one hub per coordinator node
