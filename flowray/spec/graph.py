"""The ``needs`` graph's one check that validation needs: finding a cycle (ordering is the
plan's, in ``flowray.plan.graph``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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
