"""`flowray serve --ray ADDRESS`: the service's runs become Ray tasks on a real multi-node
cluster (ray.cluster_utils, with fake GPUs: no GPU exists here); no step runs in the service
process or its children."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servicefixtures import Served, free_port, push, sse, wait_run

cluster_utils = pytest.importorskip(
    "ray.cluster_utils", reason="ray is not installed: the service on Ray cannot be tested")

FLOW = """\
name: on-ray
jobs:
  prep:
    steps:
      - run: echo "prep pid $$ parent $PPID"
  train:
    needs: [prep]
    resources: {gpus: 1}
    strategy:
      matrix: {lr: [1, 2]}
    steps:
      - run: echo "cell ${{ matrix.lr }} gpu $CUDA_VISIBLE_DEVICES pid $$"
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    env = pytest.MonkeyPatch()
    env.setenv("RAY_AUTH_MODE", "disabled")
    env.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env.delenv("RAY_ADDRESS", raising=False)
    env.delenv("FLOWRAY_ADDRESS", raising=False)
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1, num_gpus=1)
    c.add_node(num_cpus=1, num_gpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()
        env.undo()


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


@pytest.mark.timeout(300)
def test_runs_of_the_service_run_on_the_ray_cluster(tmp_path: Path, cluster: Any) -> None:
    server = Served(str(tmp_path / "data"), free_port(),
                    extra=["--ray", cluster.address]).start()
    try:
        with server.client() as admin:
            assert push(admin, "on-ray", FLOW).status_code == 201
            run_id = admin.post("/api/v1/flows/on-ray/runs", json={}).json()["id"]
            lines: list[str] = []
            service_tree: set[int] = set()
            for _, event in sse(admin, run_id):
                if event["type"] == "step.log":
                    lines.append(event["line"])
                    assert server.proc is not None
                    service_tree |= _descendants(server.proc.pid)
            done = wait_run(admin, run_id)
            assert done["status"] == "success", done
            record = done["record"]
            assert record["backend"] == cluster.address
            gpus = {record["jobs"][k]["node"] for k in ("train.1", "train.2")}
            assert len(gpus) == 2  # one GPU each, on the two GPU nodes
            step_pids = {int(line.split(" pid ")[1].split()[0]) for line in lines}
            assert server.proc is not None
            assert not step_pids & (service_tree | {server.proc.pid})
            assert sorted(line.split(" gpu ")[0] for line in lines if line.startswith("cell")) \
                == ["cell 1", "cell 2"]
    finally:
        assert server.stop() == 0, server.output()
