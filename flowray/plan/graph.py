"""The ``needs`` graph: ordering and cycle detection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CycleError(ValueError):
    """Raised when ``needs`` forms a cycle; ``cycle`` lists it, first node repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("jobs form a cycle through 'needs': " + " -> ".join(cycle))


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in ``edges`` (node -> the nodes it needs) as ``[a, b, ..., a]``, or None.

    Edges to nodes that are not keys of ``edges`` are ignored (unknown ids are reported elsewhere).
    The search visits nodes in key order so the reported cycle is stable.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for root in edges:
        if color[root] != white:
            continue
        path: list[str] = [root]
        iters = [iter(sorted(n for n in edges[root] if n in color))]
        color[root] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = black
                iters.pop()
                continue
            if color[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            if color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                iters.append(iter(sorted(n for n in edges[nxt] if n in color)))
    return None


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
