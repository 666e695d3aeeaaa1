"""What a job asks of a Ray cluster: its task's resources, and whether any node can hold them.

No ``ray`` import here: the Ray dispatcher turns a :class:`TaskShape` into task options, and
the CLI checks every job against the cluster's nodes before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowray.spec.types import ResourcesData
from flowray.spec.units import parse_memory

# Ray adds a resource ``accelerator_type:<X>`` (amount 1) to nodes with that accelerator; a job
# that asks for one takes a sliver of it, so every job on the node can hold it at once.
ACCELERATOR_SHARE = 0.001
_ACCELERATOR_PREFIX = "accelerator_type:"
_EPSILON = 1e-9

@dataclass(frozen=True)
class TaskShape:
    """A job's Ray task resources: ``num_cpus``, ``num_gpus``, ``memory`` and custom ones."""

    cpus: float
    gpus: int | None  # None: the job pins no GPU (and takes none)
    memory: int | None  # bytes
    custom: dict[str, float] = field(default_factory=dict)  # accelerator and labels
    nodes: int = 1

    def needs(self) -> dict[str, float]:
        """Every resource the task takes, by Ray's names (``CPU``, ``GPU``, ``memory``, ...)."""
        out = {"CPU": self.cpus}
        if self.gpus:
            out["GPU"] = float(self.gpus)
        if self.memory:
            out["memory"] = float(self.memory)
        for name, amount in self.custom.items():
            if amount > 0:
                out[name] = amount
        return out

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``RemoteFunction.options``."""
        opts: dict[str, Any] = {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus or 0,
            "resources": dict(self.custom),
        }
        if self.memory:
            opts["memory"] = self.memory
        return opts


def task_shape(res: ResourcesData) -> TaskShape:
    custom = {name: float(amount) for name, amount in res["labels"].items()}
    if res["accelerator"]:
        custom[_ACCELERATOR_PREFIX + res["accelerator"]] = ACCELERATOR_SHARE
    memory = parse_memory(res["memory"]) if res["memory"] is not None else None
    return TaskShape(cpus=res["cpus"], gpus=res["gpus"], memory=memory, custom=custom,
                     nodes=res["nodes"])


def fits(needs: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(amount <= free.get(name, 0.0) + _EPSILON for name, amount in needs.items())


def _amount(name: str, amount: float, *, bare: bool = False) -> str:
    """``amount`` of resource ``name`` in words; ``bare``: without the resource's name when it
    is not a unit (custom resources)."""
    if name == "CPU":
        return f"{amount:g} CPU{'s' if amount != 1 else ''}"
    if name == "GPU":
        return f"{amount:g} GPU{'s' if amount != 1 else ''}"
    if name == "memory":
        return f"{format_bytes(amount)} of memory"
    if name.startswith(_ACCELERATOR_PREFIX):
        return f"accelerator {name[len(_ACCELERATOR_PREFIX):]}"
    return f"{amount:g}" if bare else f"{amount:g} of resource '{name}'"


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g} B"


def describe(needs: Mapping[str, float]) -> str:
    """Resources in words: ``1 CPU, 2 GPUs, 1 of resource 'ssd'``."""
    return ", ".join(_amount(n, a) for n, a in needs.items())


def unfit(key: str, shape: TaskShape, nodes: Iterable[Mapping[str, float]]) -> str | None:
    """Why no node of the cluster can ever run job ``key`` (``None`` when one can).

    ``nodes``: each live node's total resources, as ``ray.nodes()`` reports them.
    """
    needs = shape.needs()
    nodes = list(nodes)
    fitting = sum(1 for node in nodes if fits(needs, node))
    if shape.nodes > 1 and fitting:
        if fitting >= shape.nodes:
            return None
        wanted = describe(needs)
        return (f"job '{key}' needs {shape.nodes} nodes (resources.nodes), each with {wanted}; "
                f"{fitting} node{' has' if fitting == 1 else 's have'} that much")
    if fitting:
        return None
    if not nodes:
        return f"job '{key}' cannot run: the Ray cluster has no live node"
    missing = []
    for name, amount in needs.items():
        best = max(node.get(name, 0.0) for node in nodes)
        if amount > best + _EPSILON:
            if name.startswith(_ACCELERATOR_PREFIX):
                missing.append(f"{_amount(name, amount)} (no node has one)")
            elif best <= 0:
                missing.append(f"{_amount(name, amount)} (no node has any)")
            else:
                missing.append(f"{_amount(name, amount)} (the most one node has is "
                               f"{_amount(name, best, bare=True)})")
    if missing:
        return f"job '{key}' needs {', '.join(missing)}"
    wanted = describe(needs)
    return f"job '{key}' needs {wanted} on one node; no node of the Ray cluster has all of them"
