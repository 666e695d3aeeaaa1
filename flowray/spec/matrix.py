"""Cells of a job's matrix: shared by validation (a matrix with no cells left is an error) and
the plan (one job per cell)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Hashable, Mapping
from typing import Any

# The most cells one job's matrix may have (docs/flow-syntax.md, "Limits"); the product of the
# axes is counted before anything is expanded.
MAX_MATRIX_CELLS = 10_000
# The most values `include` entries may put into cells, all cells together (each key an entry
# sets in each cell it extends counts once): what bounds the work of many entries on many cells.
MAX_INCLUDED_VALUES = 250_000
# The most text the values of all cells may hold together (JSON of each value, counted once in
# every cell that has it): each cell is a job that carries its values (events, record, name), so
# one long value on an axis beside 10,000 others would be copied 10,000 times.
MAX_MATRIX_TEXT = 8 * 2**20


class MatrixTooLarge(ValueError):
    """A matrix with more cells than :data:`MAX_MATRIX_CELLS` (``count`` is how many), or whose
    ``include`` entries set more than :data:`MAX_INCLUDED_VALUES` values (``count`` is 0)."""

    def __init__(self, count: int, message: str | None = None) -> None:
        self.count = count
        shown = f"{count:,}" if count < 10**30 else f"about 10^{len(str(count)) - 1}"
        super().__init__(message or (
            f"the matrix has {shown} cells, more than the limit of {MAX_MATRIX_CELLS:,} "
            "(one job per cell): use fewer axes or values"
        ))


def matrix_size(matrix: Mapping[str, Any]) -> int:
    """The number of cells of the axes' product (before ``exclude`` and ``include``)."""
    axes = [v for k, v in matrix.items() if k not in ("include", "exclude")]
    return math.prod(len(v) for v in axes) if axes else 0


def expand_matrix(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cells of a GitHub-style matrix: cartesian product, then ``exclude``, then ``include``.

    An ``include`` entry extends every product cell it can join without changing an original
    axis value; one that joins no cell becomes a cell of its own (which later entries do not
    extend). Raises :class:`MatrixTooLarge` (before expanding) past ``MAX_MATRIX_CELLS``.
    """
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    include = list(matrix.get("include") or [])
    exclude = list(matrix.get("exclude") or [])
    size = matrix_size(matrix)
    if size > MAX_MATRIX_CELLS:
        raise MatrixTooLarge(size)
    # Text of the cells' values: each value of an axis is in (product / its axis' length) cells.
    text = sum(sum(_text_size(v) for v in values) * (size // len(values))
               for values in axes.values())
    _check_text(text)
    cells: list[dict[str, Any]] = []
    if axes:
        keys = list(axes)
        cells = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes.values())]
    cells = _exclude(cells, exclude, list(axes))
    # Only the product's cells are candidates to extend; cells an include created are not.
    product_cells = list(cells)
    index: dict[tuple[str, ...], dict[tuple[Hashable, ...], list[int]]] = {}
    included = 0  # values the entries set in product cells so far
    for entry in include:
        on = tuple(k for k in axes if k in entry)  # the axes this entry names, in axis order
        if on not in index:
            by_values: dict[tuple[Hashable, ...], list[int]] = {}
            for i, cell in enumerate(product_cells):  # each cell's original axis values
                by_values.setdefault(tuple(_frozen(cell[k]) for k in on), []).append(i)
            index[on] = by_values
        matching = index[on].get(tuple(_frozen(entry[k]) for k in on), [])
        included += len(matching) * len(entry)
        text += max(len(matching), 1) * _text_size(entry)
        _check_text(text)
        if included > MAX_INCLUDED_VALUES:
            raise MatrixTooLarge(0, (
                f"the matrix's 'include' entries set more than {MAX_INCLUDED_VALUES:,} values "
                "in its cells (each key of an entry counts once in each cell it extends): use "
                "fewer or smaller entries, or put values shared by every cell in 'env' or "
                "'variables'"))
        for i in matching:
            product_cells[i].update(entry)
        if not matching:
            if len(cells) >= MAX_MATRIX_CELLS:
                raise MatrixTooLarge(len(cells) + 1)
            cells.append(dict(entry))
    return cells


def _exclude(
    cells: list[dict[str, Any]], exclude: list[Mapping[str, Any]], axes: list[str]
) -> list[dict[str, Any]]:
    """``cells`` without those an ``exclude`` entry matches: an entry matches a cell when each
    of its keys is an axis with the entry's value. Entries are hashed by the axes they name, so
    the cost is one lookup per cell and set of axes, not one comparison per cell and entry."""
    groups: dict[tuple[str, ...], set[tuple[Hashable, ...]]] = {}
    for entry in exclude:
        if not entry or any(k not in axes for k in entry):
            # An empty entry matches every cell; one naming a key that is no axis, none.
            if not entry:
                return []
            continue
        on = tuple(k for k in axes if k in entry)
        groups.setdefault(on, set()).add(tuple(_frozen(entry[k]) for k in on))
    if not groups:
        return cells
    return [
        c for c in cells
        if not any(tuple(_frozen(c[k]) for k in on) in values for on, values in groups.items())
    ]


def _text_size(value: Any) -> int:
    """Characters of ``value`` as compact JSON (how a cell's values are kept)."""
    if isinstance(value, str):
        return len(value) + 2
    try:
        return len(json.dumps(value, separators=(",", ":")))
    except (TypeError, ValueError):  # an integer past Python's digit limit
        return 4300


def _check_text(text: int) -> None:
    if text > MAX_MATRIX_TEXT:
        raise MatrixTooLarge(0, (
            f"the matrix's cells hold {text:,} characters of values together, more than the "
            f"limit of {MAX_MATRIX_TEXT // 2**20} MiB (each cell, a job, keeps its own copy of "
            "its values): use shorter values, or keep long ones in 'variables' and name them "
            "in the matrix"))


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for ``value`` that is equal to another's exactly when the values are
    equal (``==``): maps become frozensets of their items, lists tuples."""
    if isinstance(value, dict):
        return ("map", frozenset((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_frozen(v) for v in value))
    frozen: Hashable = value  # a scalar of a YAML or JSON document
    return frozen
