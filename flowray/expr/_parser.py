"""Tokenizer and recursive-descent (precedence-climbing) parser, plus tree analysis."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from ._errors import ExprSyntaxError
from ._functions import FUNCTIONS, STATUS_FUNCTIONS, FormatError, arity_problem, format_text
from ._nodes import (
    And,
    Call,
    Compare,
    ContextAccess,
    Expression,
    Filter,
    Index,
    Literal,
    Node,
    Not,
    Or,
    Property,
    Reference,
)
from ._values import int_value

__all__ = ["MAX_DEPTH", "MAX_NESTING", "parse", "tokenize"]

MAX_NESTING = 50  # parentheses, '!', '[ ]' and calls inside each other
MAX_DEPTH = 100  # levels of the tree, property chains included

_NUM = re.compile(
    r"-?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)", re.ASCII
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_STRING = re.compile(r"'[^']*(?:''[^']*)*'")
_SPACE = re.compile(r"\s+")
_NUM_TAIL = re.compile(r"[A-Za-z0-9_.]*", re.ASCII)
_OPS2 = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_OPS1 = frozenset("()[].,!<>*")
_HINTS = {
    "=": " (did you mean '=='?)",
    "&": " (did you mean '&&'?)",
    "|": " (did you mean '||'?)",
    '"': " (strings use single quotes)",
}
_KEYWORDS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": math.nan,
    "Infinity": math.inf,
}
_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4}

# token kinds
NUM, STR, IDENT, OP, END = "number", "string", "name", "op", "end"
Token = tuple[str, str, int]


def tokenize(src: str) -> list[Token]:
    """Split `src` into (kind, text, offset) tokens, ending with an END token."""
    tokens: list[Token] = []
    append = tokens.append
    i = 0
    n = len(src)
    prev = END
    while i < n:
        c = src[i]
        if c.isspace():
            m = _SPACE.match(src, i)
            i = m.end() if m else i + 1
            continue
        if c == "." and (prev in (IDENT, STR) or (prev == OP and tokens[-1][1] in ")]*")):
            append((OP, c, i))  # after a value '.' reads a property: `a.5` is not `a` `.5`
        elif (c.isascii() and c.isalpha()) or c == "_":
            m = _IDENT.match(src, i)
            assert m is not None
            append((IDENT, m.group(), i))
        elif c == "'":
            m = _STRING.match(src, i)
            if m is None:
                raise ExprSyntaxError("unterminated string literal", src, i)
            append((STR, m.group(), i))
        elif (m := _NUM.match(src, i)) is not None:
            tail = _NUM_TAIL.match(src, m.end())
            assert tail is not None
            if tail.end() > m.end():
                raise ExprSyntaxError(f"invalid number '{src[i : tail.end()]}'", src, i)
            append((NUM, m.group(), i))
        elif src[i : i + 2] in _OPS2:
            append((OP, src[i : i + 2], i))
        elif c in _OPS1:
            append((OP, c, i))
        else:
            raise ExprSyntaxError(f"unexpected character {c!r}{_HINTS.get(c, '')}", src, i)
        prev, text, _ = tokens[-1]
        i += len(text)
    append((END, "", n))
    return tokens


def _number(text: str) -> int | float:
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if body[:2] in ("0x", "0X"):
        return int_value(body[2:], 16, negative)
    if body[:2] in ("0o", "0O"):
        return int_value(body[2:], 8, negative)
    if body.isdigit() and len(body) <= 15:
        return -int(body) if negative else int(body)
    return float(text)


def _describe(token: Token) -> str:
    kind, text, _ = token
    if kind == END:
        return "end of expression"
    if kind == NUM:
        return f"number {text}"
    if kind == STR:
        return f"string {text if len(text) <= 30 else text[:26] + '...' + chr(39)}"
    return f"'{text}'"


class _Parser:
    __slots__ = ("i", "nesting", "src", "tokens")

    def __init__(self, src: str) -> None:
        self.src = src
        self.tokens = tokenize(src)
        self.i = 0
        self.nesting = 0

    def error(self, reason: str, offset: int) -> ExprSyntaxError:
        return ExprSyntaxError(reason, self.src, offset)

    def expected(self, what: str) -> ExprSyntaxError:
        token = self.tokens[self.i]
        found = "" if token[0] == END else f" but found {_describe(token)}"
        return self.error(f"expected {what}{found}", token[2])

    def enter(self, offset: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(
                f"expression is nested too deeply (more than {MAX_NESTING} levels)", offset
            )

    def at_op(self, text: str) -> bool:
        kind, t, _ = self.tokens[self.i]
        return kind == OP and t == text

    def parse(self) -> Node:
        if self.tokens[0][0] == END:
            raise self.error("empty expression", 0)
        node = self.binary(1, None)
        token = self.tokens[self.i]
        if token[0] != END:
            raise self.error(f"unexpected {_describe(token)}", token[2])
        return node

    def binary(self, min_prec: int, after: str | None) -> Node:
        left = self.unary(after)
        tokens = self.tokens
        while True:
            kind, text, offset = tokens[self.i]
            if kind != OP:
                return left
            prec = _PRECEDENCE.get(text)
            if prec is None or prec < min_prec:
                return left
            self.i += 1
            right = self.binary(prec + 1, text)
            if text == "&&":
                left = And(left, right, offset=offset)
            elif text == "||":
                left = Or(left, right, offset=offset)
            else:
                left = Compare(text, left, right, offset=offset)

    def unary(self, after: str | None) -> Node:
        kind, text, offset = self.tokens[self.i]
        if kind == OP and text == "!":
            self.i += 1
            self.enter(offset)
            operand = self.unary("!")
            self.nesting -= 1
            return Not(operand, offset=offset)
        return self.postfix(after)

    def postfix(self, after: str | None) -> Node:
        node = self.primary(after)
        tokens = self.tokens
        while True:
            kind, text, offset = tokens[self.i]
            if kind != OP:
                return node
            if text == ".":
                self.i += 1
                kind2, text2, offset2 = tokens[self.i]
                if kind2 == IDENT:
                    node = Property(node, text2, offset=offset2)
                elif kind2 == OP and text2 == "*":
                    node = Filter(node, offset=offset2)
                else:
                    raise self.expected("a property name after '.'")
                self.i += 1
            elif text == "[":
                self.i += 1
                self.enter(offset)
                if self.at_op("*"):
                    self.i += 1
                    node = Filter(node, offset=offset)
                else:
                    node = Index(node, self.binary(1, "["), offset=offset)
                if not self.at_op("]"):
                    raise self.expected("']'")
                self.i += 1
                self.nesting -= 1
            else:
                return node

    def primary(self, after: str | None) -> Node:
        kind, text, offset = self.tokens[self.i]
        if kind == NUM:
            self.i += 1
            return Literal(_number(text), offset=offset)
        if kind == STR:
            self.i += 1
            return Literal(text[1:-1].replace("''", "'"), offset=offset)
        if kind == IDENT:
            self.i += 1
            if text in _KEYWORDS:
                return Literal(_KEYWORDS[text], offset=offset)
            if self.at_op("("):
                return self.call(text, offset)
            return ContextAccess(text, offset=offset)
        if kind == OP and text == "(":
            self.i += 1
            self.enter(offset)
            node = self.binary(1, "(")
            if not self.at_op(")"):
                raise self.expected("')'")
            self.i += 1
            self.nesting -= 1
            return node
        if after is None:
            raise self.error(f"unexpected {_describe(self.tokens[self.i])}", offset)
        raise self.expected(f"a value after '{after}'")

    def call(self, name: str, offset: int) -> Node:
        spec = FUNCTIONS.get(name.lower())
        if spec is None:
            import difflib

            names = [s.name for s in FUNCTIONS.values()]
            by_lower = {n.lower(): n for n in names}
            close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
            hint = f" (did you mean '{by_lower[close[0]]}'?)" if close else ""
            raise self.error(f"unknown function '{name}'{hint}", offset)
        self.i += 1  # '('
        self.enter(offset)
        args: list[Node] = []
        if self.at_op(")"):
            self.i += 1
        else:
            after = "("
            while True:
                args.append(self.binary(1, after))
                if self.at_op(")"):
                    self.i += 1
                    break
                if not self.at_op(","):
                    raise self.expected(f"',' or ')' in the call to {spec.name}()")
                self.i += 1
                after = ","
        self.nesting -= 1
        problem = arity_problem(spec, len(args))
        if problem:
            raise self.error(problem, offset)
        first = args[0] if args else None
        if spec.name == "format" and isinstance(first, Literal) and isinstance(first.value, str):
            try:
                format_text(first.value, [None] * (len(args) - 1))
            except FormatError as e:
                raise self.error(str(e), first.offset) from None
        return Call(spec.name.lower(), tuple(args), offset=offset)


def _check_depth(root: Node, src: str) -> None:
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprSyntaxError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)", src, node.offset
            )
        stack.extend((child, depth + 1) for child in node.children())


def _literal_key(node: Node) -> str | int | None:
    if isinstance(node, Literal):
        value = node.value
        if isinstance(value, str):
            return value
        if type(value) is int:
            return value
        if type(value) is float and value.is_integer():
            return int(value)
    return None


def collect_references(node: Node, out: list[Reference]) -> None:
    """Append every context access under `node` to `out`, in source order."""
    if isinstance(node, (Property, Index, Filter)):
        path: list[str | int | None] = []
        indexes: list[Node] = []
        cur: Node = node
        while isinstance(cur, (Property, Index, Filter)):
            if isinstance(cur, Property):
                path.append(cur.name)
            elif isinstance(cur, Index):
                path.append(_literal_key(cur.index))
                indexes.append(cur.index)
            else:
                path.append(None)
            cur = cur.target
        path.reverse()
        if isinstance(cur, ContextAccess):
            if None in path:
                del path[path.index(None) + 1 :]
            out.append(Reference(cur.name, tuple(path), offset=cur.offset))
        else:
            collect_references(cur, out)
        for index in reversed(indexes):
            collect_references(index, out)
    elif isinstance(node, ContextAccess):
        out.append(Reference(node.name, (), offset=node.offset))
    else:
        for child in node.children():
            collect_references(child, out)


def collect_functions(node: Node) -> frozenset[str]:
    names: set[str] = set()
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, Call):
            names.add(cur.name)
        stack.extend(cur.children())
    return frozenset(names)


@lru_cache(maxsize=8192)
def parse(source: str) -> Expression:
    """Parse one expression (the text inside `${{ }}`). Cached by source text."""
    body = _Parser(source).parse()
    _check_depth(body, source)
    functions = collect_functions(body)
    refs: list[Reference] = []
    collect_references(body, refs)
    return Expression(
        body,
        source,
        uses_status=not functions.isdisjoint(STATUS_FUNCTIONS),
        functions=functions,
        refs=tuple(refs),
    )
