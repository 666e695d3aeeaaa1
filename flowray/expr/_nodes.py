"""The syntax tree. Every node is a frozen dataclass and evaluates itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ExprEvalError
from ._functions import FUNCTIONS
from ._values import (
    EvalState,
    Filtered,
    get_item,
    greater,
    greater_equal,
    less,
    less_equal,
    lookup,
    loose_equal,
    truthy,
)

__all__ = [
    "And",
    "Call",
    "Compare",
    "ContextAccess",
    "Expression",
    "Filter",
    "Index",
    "Literal",
    "Node",
    "Not",
    "Or",
    "Property",
    "Reference",
]


_MISSING: Any = object()


@dataclass(frozen=True)
class Reference:
    """One context access: `steps.a.outputs.n` is Reference('steps', ('a', 'outputs', 'n')).

    `path` holds the literal keys after the context name; a computed index or a `*` filter
    ends it with None. `offset` (not compared) is where the context name starts.
    """

    context: str
    path: tuple[str | int | None, ...]
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Node:
    """Base of the syntax tree. `offset` (not compared) is the node's position in the source."""

    offset: int = field(default=0, compare=False, repr=False, kw_only=True)

    def children(self) -> tuple[Node, ...]:
        return ()

    def run(self, st: EvalState) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any

    def run(self, st: EvalState) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class ContextAccess(Node):
    """A context name at the start of a path: `steps`, `matrix`, ..."""

    name: str

    def run(self, st: EvalState) -> Any:
        contexts = st.contexts
        if self.name in contexts:
            return contexts[self.name]
        found, value = lookup(contexts, self.name)
        if found:
            return value
        import difflib

        close = difflib.get_close_matches(self.name, [str(k) for k in contexts], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ExprEvalError(f"unknown context '{self.name}'{hint}", st.source, self.offset)


@dataclass(frozen=True, slots=True)
class Property(Node):
    """`target.name`; null when missing."""

    target: Node
    name: str

    def children(self) -> tuple[Node, ...]:
        return (self.target,)

    def run(self, st: EvalState) -> Any:
        obj = self.target.run(st)
        if type(obj) is dict:  # the common case, first
            value = obj.get(self.name, _MISSING)
            return lookup(obj, self.name)[1] if value is _MISSING else value
        if type(obj) is Filtered:
            out = Filtered()
            for item in obj:
                if isinstance(item, Mapping):
                    found, value = lookup(item, self.name)
                    if found:
                        out.append(value)
            return out
        if isinstance(obj, Mapping):
            return lookup(obj, self.name)[1]
        return None


@dataclass(frozen=True, slots=True)
class Index(Node):
    """`target[index]`; null when missing."""

    target: Node
    index: Node

    def children(self) -> tuple[Node, ...]:
        return (self.target, self.index)

    def run(self, st: EvalState) -> Any:
        obj = self.target.run(st)
        key = self.index.run(st)
        if type(obj) is Filtered:
            out = Filtered()
            for item in obj:
                found, value = get_item(item, key)
                if found:
                    out.append(value)
            return out
        return get_item(obj, key)[1]


@dataclass(frozen=True, slots=True)
class Filter(Node):
    """`target.*` or `target[*]`: the values of a map or the items of a list, as a list."""

    target: Node

    def children(self) -> tuple[Node, ...]:
        return (self.target,)

    def run(self, st: EvalState) -> Any:
        obj = self.target.run(st)
        out = Filtered()
        if type(obj) is Filtered:
            for item in obj:
                if isinstance(item, Mapping):
                    out.extend(item.values())
                elif isinstance(item, (list, tuple)):
                    out.extend(item)
        elif isinstance(obj, Mapping):
            out.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            out.extend(obj)
        return out


@dataclass(frozen=True, slots=True)
class Not(Node):
    operand: Node

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def run(self, st: EvalState) -> Any:
        return not truthy(self.operand.run(st))


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": loose_equal,
    "!=": lambda a, b: not loose_equal(a, b),
    "<": less,
    "<=": less_equal,
    ">": greater,
    ">=": greater_equal,
}


@dataclass(frozen=True, slots=True)
class Compare(Node):
    """`== != < <= > >=` with GitHub's loose semantics."""

    op: str
    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def run(self, st: EvalState) -> Any:
        return _COMPARE[self.op](self.left.run(st), self.right.run(st))


@dataclass(frozen=True, slots=True)
class And(Node):
    """`left && right`: left when it is falsy, else right."""

    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def run(self, st: EvalState) -> Any:
        value = self.left.run(st)
        return self.right.run(st) if truthy(value) else value


@dataclass(frozen=True, slots=True)
class Or(Node):
    """`left || right`: left when it is truthy, else right."""

    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def run(self, st: EvalState) -> Any:
        value = self.left.run(st)
        return value if truthy(value) else self.right.run(st)


@dataclass(frozen=True, slots=True)
class Call(Node):
    """A function call; `name` is lower case."""

    name: str
    args: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.args

    def run(self, st: EvalState) -> Any:
        spec = FUNCTIONS.get(self.name)
        if spec is None:  # only reachable for hand-built trees; parse() rejects these
            raise ExprEvalError(f"unknown function '{self.name}'", st.source, self.offset)
        return spec.impl(st, [a.run(st) for a in self.args], self.offset)


@dataclass(frozen=True, slots=True)
class Expression(Node):
    """What parse() returns: the tree of one expression with its source and facts about it."""

    body: Node
    source: str
    uses_status: bool = field(default=False, compare=False, repr=False)
    functions: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    refs: tuple[Reference, ...] = field(default=(), compare=False, repr=False)

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def run(self, st: EvalState) -> Any:
        return self.body.run(st)
