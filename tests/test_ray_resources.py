"""A job's resources as a Ray task's, and the check that some node can hold them (no Ray)."""

from __future__ import annotations

import pytest

from flowray.backends.ray.resources import TaskShape, parse_memory, task_shape, unfit
from flowray.spec.types import ResourcesData


def _res(**kw: object) -> ResourcesData:
    base: dict[str, object] = {"cpus": 1.0, "gpus": None, "memory": None, "accelerator": None,
                               "labels": {}, "nodes": 1}
    base.update(kw)
    return base  # type: ignore[return-value]


def test_task_options_carry_every_resource() -> None:
    shape = task_shape(_res(cpus=2.0, gpus=1, memory="512MiB", accelerator="A100",
                            labels={"ssd": 1.0}))
    assert shape.options() == {
        "num_cpus": 2.0,
        "num_gpus": 1,
        "memory": 512 * 2**20,
        "resources": {"ssd": 1.0, "accelerator_type:A100": 0.001},
    }
    assert shape.needs() == {"CPU": 2.0, "GPU": 1.0, "memory": 512 * 2**20, "ssd": 1.0,
                             "accelerator_type:A100": 0.001}
    assert task_shape(_res(gpus=0)).options() == {"num_cpus": 1.0, "num_gpus": 0,
                                                  "resources": {}}


@pytest.mark.parametrize(("text", "n"), [("8G", 8 * 10**9), ("1.5GiB", 3 * 2**29),
                                         ("1000", 1000), (2048, 2048)])
def test_memory_amounts(text: str | int, n: int) -> None:
    assert parse_memory(text) == n


NODES = [{"CPU": 4.0, "GPU": 2.0, "memory": 8 * 2**30, "accelerator_type:T4": 1.0},
         {"CPU": 8.0, "memory": 16 * 2**30, "ssd": 1.0}]


@pytest.mark.parametrize(("shape", "message"), [
    (TaskShape(cpus=2, gpus=2, memory=None), None),
    (TaskShape(cpus=1, gpus=4, memory=None),
     "job 'j' needs 4 GPUs (the most one node has is 2 GPUs)"),
    (TaskShape(cpus=16, gpus=None, memory=32 * 2**30),
     "job 'j' needs 16 CPUs (the most one node has is 8 CPUs), 32 GiB of memory (the most one "
     "node has is 16 GiB of memory)"),
    (TaskShape(cpus=1, gpus=None, memory=None, custom={"accelerator_type:H100": 0.001}),
     "job 'j' needs accelerator H100 (no node has one)"),
    (TaskShape(cpus=1, gpus=None, memory=None, custom={"fast": 1.0}),
     "job 'j' needs 1 of resource 'fast' (no node has any)"),
    (TaskShape(cpus=1, gpus=1, memory=None, custom={"ssd": 1.0}),
     "job 'j' needs 1 CPU, 1 GPU, 1 of resource 'ssd' on one node; no node of the Ray cluster "
     "has all of them"),
    (TaskShape(cpus=1, gpus=None, memory=None, nodes=2), None),
    (TaskShape(cpus=1, gpus=1, memory=None, nodes=2),
     "job 'j' needs 2 nodes (resources.nodes), each with 1 CPU, 1 GPU; 1 node has that much"),
    (TaskShape(cpus=2, gpus=None, memory=None, nodes=3),
     "job 'j' needs 3 nodes (resources.nodes), each with 2 CPUs; 2 nodes have that much"),
    (TaskShape(cpus=1, gpus=4, memory=None, nodes=2),
     "job 'j' needs 4 GPUs (the most one node has is 2 GPUs)"),
])
def test_jobs_no_node_can_hold(shape: TaskShape, message: str | None) -> None:
    assert unfit("j", shape, NODES) == message
