"""Cells of a job's matrix: shared by validation (a matrix with no cells left is an error) and
the plan (one job per cell)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any


def expand_matrix(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cells of a GitHub-style matrix: cartesian product, then ``exclude``, then ``include``.

    An ``include`` entry extends every product cell it can join without changing an original
    axis value; one that joins no cell becomes a cell of its own (which later entries do not
    extend).
    """
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    include = list(matrix.get("include") or [])
    exclude = list(matrix.get("exclude") or [])
    cells: list[dict[str, Any]] = []
    if axes:
        keys = list(axes)
        cells = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes.values())]
    cells = [c for c in cells if not any(_matches(c, ex) for ex in exclude)]
    # Only the product's cells are candidates to extend; cells an include created are not.
    originals = [dict(c) for c in cells]
    product_cells = list(cells)
    for entry in include:
        joined = False
        for cell, original in zip(product_cells, originals, strict=True):
            if all(original.get(k, _MISSING) in (_MISSING, v) for k, v in entry.items()
                   if k in axes):
                cell.update(entry)
                joined = True
        if not joined:
            cells.append(dict(entry))
    return cells


_MISSING = object()


def _matches(cell: Mapping[str, Any], pattern: Mapping[str, Any]) -> bool:
    return all(k in cell and cell[k] == v for k, v in pattern.items())
