"""The ``needs`` graph: ordering, refused with a CycleError naming the cycle (found by
``flowray.spec.graph.find_cycle``, which validation shares)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flowray.spec.graph import find_cycle


class CycleError(ValueError):
    """Raised when ``needs`` forms a cycle; ``cycle`` lists it, first node repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("jobs form a cycle through 'needs': " + " -> ".join(cycle))


def topological_order(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """Nodes ordered so that every node comes after the nodes it needs (stable by key order)."""
    cycle = find_cycle(edges)
    if cycle is not None:
        raise CycleError(cycle)
    done: set[str] = set()
    order: list[str] = []

    def visit(node: str) -> None:
        if node in done:
            return
        done.add(node)
        for dep in edges[node]:
            if dep in edges:
                visit(dep)
        order.append(node)

    for node in edges:
        visit(node)
    return order
