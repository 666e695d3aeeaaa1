"""YAML (and JSON) to plain Python data, remembering where every key and value stands.

The document is built from libyaml's event stream with an explicit stack rather than through
``yaml.compose``: the composer recurses once per nesting level (libyaml's C composer crashes the
interpreter on ``[[[[...`` a hundred thousand deep), while here a nesting limit stops reading as
soon as it is passed. Aliases are expanded (with a budget, against "billion laughs"), ``<<``
merge keys are honoured, duplicate keys are reported, and mapping keys are always text: the
source spelling of the key, so ``on:`` is ``'on'``, not ``True``.

Plain scalars follow the YAML 1.2 core schema, as GitHub Actions does, not PyYAML's YAML 1.1:
only ``true``/``false`` are booleans (``yes``, ``no``, ``on``, ``off`` stay text), ``1:30`` and
``1_000`` are text, and dates are text.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from flowray.spec.diagnostics import Diagnostic, KeyPath, format_path

try:
    _Parser: type[Any] = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Parser = yaml.SafeLoader

# Limits on what one flow or action file may hold (docs/flow-syntax.md, "Limits"); the file's
# size (MAX_FILE_BYTES, in files.py) is checked by the loader. These are checked while it is
# read, so an alias bomb ("billion laughs") stops at the alias that crosses a limit.
MAX_DEPTH = 128
MAX_VALUES = 250_000  # keys and values, aliases expanded
MAX_TEXT_CHARS = 8 * 2**20  # characters of keys and scalar values, aliases expanded
_TOO_DEEP = f"the document is nested too deeply (more than {MAX_DEPTH} levels)"

_T = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = _T + "str", _T + "null", _T + "bool", _T + "int", _T + "float"
_TIMESTAMP, _MERGE, _MAP, _SEQ = _T + "timestamp", _T + "merge", _T + "map", _T + "seq"
_BOOLS = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}

# The YAML 1.2 core schema, for plain (unquoted, untagged) scalars.
_CORE_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_CORE_TRUE = frozenset({"true", "True", "TRUE"})
_CORE_FALSE = frozenset({"false", "False", "FALSE"})
_CORE_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_CORE_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_CORE_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_CORE_NAN = frozenset({".nan", ".NaN", ".NAN"})


def plain_scalar(text: str) -> Any:
    """The value of an unquoted scalar under the YAML 1.2 core schema."""
    if text in _CORE_NULL:
        return None
    if text in _CORE_TRUE:
        return True
    if text in _CORE_FALSE:
        return False
    if _CORE_INT.fullmatch(text):
        base = {"0o": 8, "0x": 16}.get(text[:2], 10)
        try:
            return int(text[2:] if base != 10 else text, base)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return text
    if _CORE_FLOAT.fullmatch(text):
        return float(text)
    if _CORE_INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if text in _CORE_NAN:
        return math.nan
    return text

Pos = tuple[int, int]


class YamlError(Exception):
    """The text cannot be read as data; ``diagnostic`` says where and why."""

    def __init__(self, diagnostic: Diagnostic, *, limit: bool = False) -> None:
        self.diagnostic = diagnostic
        self.limit = limit  # a size or depth limit was passed (not a syntax problem)
        super().__init__(diagnostic.format())


@dataclass
class Positions:
    """1-based (line, col) of each key and each value, by key path.

    A mapping entry has both (the key's and its value's); a list item has its value's only.
    Lookups fall back to the nearest enclosing entry, then to (0, 0).
    """

    keys: dict[KeyPath, Pos] = field(default_factory=dict)
    values: dict[KeyPath, Pos] = field(default_factory=dict)

    def key(self, path: KeyPath) -> Pos:
        """Where the entry at ``path`` starts: its key, or the item for a list item."""
        p = tuple(path)
        while True:
            if p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if not p:
                return (0, 0)
            p = p[:-1]

    def value(self, path: KeyPath) -> Pos:
        """Where the value at ``path`` starts (its key when the value has no place of its own)."""
        p = tuple(path)
        if p in self.values:
            return self.values[p]
        return self.key(p)


@dataclass
class Parsed:
    """The document's data, the positions of its parts, and non-fatal problems found reading it."""

    data: Any
    positions: Positions
    problems: list[Diagnostic]


# ----------------------------------------------------------------------------- building


@dataclass
class _Anchor:
    value: Any
    entries: list[tuple[KeyPath, str, Pos]]  # relative to the anchored node
    text: str | None  # the source text, when the anchored node is a scalar
    complete: bool = True
    chars: int = 0  # characters of text in the node, its aliases expanded


@dataclass
class _Frame:
    path: KeyPath
    is_map: bool
    anchor: str | None
    first_entry: int  # index in the entry list where this node's entries start
    pos: Pos
    first_chars: int = 0  # the builder's text count when this node started
    items: list[Any] = field(default_factory=list)
    explicit: dict[str, Any] = field(default_factory=dict)
    merged: dict[str, Any] = field(default_factory=dict)
    key_lines: dict[str, Pos] = field(default_factory=dict)
    pending_key: str | None = None
    pending_merge: bool = False


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


def _mark(mark: Any) -> Pos:
    if mark is None:
        return (0, 0)
    return (int(mark.line) + 1, int(mark.column) + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.entries: list[tuple[KeyPath, str, Pos]] = []
        self.anchors: dict[str, _Anchor] = {}
        self.stack: list[_Frame] = []
        self.problems: list[Diagnostic] = []
        self.root: Any = None
        self.have_root = False
        self.documents = 0
        self.chars = 0  # characters of keys and scalar values so far, aliases expanded

    # -- errors

    def fatal(
        self, pos: Pos, message: str, path: KeyPath = (), *, limit: bool = False
    ) -> YamlError:
        diagnostic = Diagnostic(self.file, pos[0], pos[1], format_path(path), message)
        return YamlError(diagnostic, limit=limit)

    def problem(self, pos: Pos, path: KeyPath, message: str) -> None:
        self.problems.append(Diagnostic(self.file, pos[0], pos[1], format_path(path), message))

    # -- where the next node goes

    def child_path(self) -> KeyPath | None:
        """The path of the next node, or None when the next node is a mapping key."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if top.is_map:
            if top.pending_key is None:
                return None
            return (*top.path, top.pending_key)
        return (*top.path, len(top.items))

    def record(self, path: KeyPath, kind: str, pos: Pos) -> None:
        self.entries.append((path, kind, pos))
        if len(self.entries) > MAX_VALUES:
            raise self.fatal(
                pos, f"the document is too large (more than {MAX_VALUES} values, aliases expanded)",
                limit=True,
            )

    def count_text(self, chars: int, pos: Pos, alias: str | None = None) -> None:
        self.chars += chars
        if self.chars > MAX_TEXT_CHARS:
            limit = f"{MAX_TEXT_CHARS // 2**20} MiB of text"
            if alias is None:
                message = f"the document is too large (more than {limit}, aliases expanded)"
            else:
                message = (f"alias '*{alias}' makes the document too large: expanding it "
                           f"passes the limit of {limit} (aliases expanded)")
            raise self.fatal(pos, message, limit=True)

    # -- events

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fatal(
                    _mark(event.start_mark),
                    "expected one YAML document, found a second one ('---')",
                )
        elif isinstance(event, yaml.ScalarEvent):
            self.scalar(event)
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self.start(event, isinstance(event, yaml.MappingStartEvent))
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self.end()

    def scalar(self, event: Any) -> None:
        pos = _mark(event.start_mark)
        path = self.child_path()
        text = str(event.value)
        self.count_text(len(text), pos)
        if path is None:
            self.key(text, pos, event)
            if event.anchor is not None:
                self.anchors[event.anchor] = _Anchor(text, [], text, chars=len(text))
            return
        value = self.construct(event, pos, path)
        self.record(path, "v", pos)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, [((), "v", pos)], text, chars=len(text))
        self.add(value, path, pos)

    def alias(self, event: Any) -> None:
        pos = _mark(event.start_mark)
        anchor = self.anchors.get(event.anchor)
        if anchor is None:
            raise self.fatal(pos, f"unknown alias '*{event.anchor}' (no '&{event.anchor}' before)")
        if not anchor.complete:
            raise self.fatal(pos, f"alias '*{event.anchor}' is used inside its own anchor")
        path = self.child_path()
        self.count_text(anchor.chars, pos, event.anchor)
        if path is None:
            if anchor.text is None:
                raise self.fatal(pos, "a mapping key must be a plain value, not a list or a map")
            self.key(anchor.text, pos, None)
            return
        if len(self.entries) + len(anchor.entries) > MAX_VALUES:
            raise self.fatal(
                pos,
                f"alias '*{event.anchor}' makes the document too large: expanding it passes "
                f"the limit of {MAX_VALUES} values (aliases expanded)",
                limit=True,
            )
        for rel, kind, where in anchor.entries:
            # the alias itself stands where the anchored value would
            self.record((*path, *rel), kind, pos if not rel else where)
        self.add(anchor.value, path, pos)

    def start(self, event: Any, is_map: bool) -> None:
        pos = _mark(event.start_mark)
        path = self.child_path()
        if path is None:
            raise self.fatal(pos, "a mapping key must be a plain value, not a list or a map")
        if len(self.stack) >= MAX_DEPTH:
            raise self.fatal(pos, _TOO_DEEP, limit=True)
        tag = event.tag
        if tag not in (None, "!", _MAP if is_map else _SEQ):
            self.problem(pos, path, f"unsupported YAML tag '{_short_tag(tag)}'")
        self.record(path, "v", pos)
        frame = _Frame(path, is_map, event.anchor, len(self.entries) - 1, pos, self.chars)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(None, [], None, complete=False)
        self.stack.append(frame)

    def end(self) -> None:
        frame = self.stack.pop()
        value: Any = {**frame.merged, **frame.explicit} if frame.is_map else frame.items
        if frame.anchor is not None:
            cut = len(frame.path)
            rel = [(p[cut:], k, w) for p, k, w in self.entries[frame.first_entry :]]
            self.anchors[frame.anchor] = _Anchor(
                value, rel, None, chars=self.chars - frame.first_chars
            )
        self.add(value, frame.path, frame.pos)

    def key(self, text: str, pos: Pos, event: Any) -> None:
        top = self.stack[-1]
        merge = (
            event is not None
            and text == "<<"
            and event.tag in (None, _MERGE)
            and event.implicit[0]
        )
        if not merge:
            first = top.key_lines.get(text)
            if first is not None:
                self.problem(
                    pos,
                    (*top.path, text),
                    f"duplicate key '{text}' (first defined at line {first[0]})",
                )
            top.key_lines[text] = pos
            self.record((*top.path, text), "k", pos)
        top.pending_key = text
        top.pending_merge = merge

    def add(self, value: Any, path: KeyPath, pos: Pos) -> None:
        if not self.stack:
            self.root = value
            self.have_root = True
            return
        top = self.stack[-1]
        if not top.is_map:
            top.items.append(value)
            return
        key = top.pending_key
        assert key is not None
        top.pending_key = None
        if top.pending_merge:
            top.pending_merge = False
            self.merge(top, value, path, pos)
        else:
            top.explicit[key] = value

    def merge(self, top: _Frame, value: Any, path: KeyPath, pos: Pos) -> None:
        """``<<: *base`` (or a list of them): copy keys the mapping does not set itself."""
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(s, dict) for s in sources):
            raise self.fatal(pos, "a '<<' merge needs a map or a list of maps", top.path)
        # The entries recorded while reading the merge value sit under `<<`; move them up.
        start = len(self.entries) - 1
        while start > top.first_entry and self.entries[start][:2] != (path, "v"):
            start -= 1
        if self.entries[start][:2] != (path, "v"):
            start = len(self.entries)
        moved = self.entries[start:]
        del self.entries[start:]
        cut = len(path) + (1 if isinstance(value, list) else 0)
        # The moved entries by (source map, key), so that each key's are found at once (a
        # scan of them all for each key made a merge of a large map quadratic).
        by_key: dict[tuple[str | int, str | int], list[tuple[KeyPath, str, Pos]]] = {}
        for p, kind, where in moved:
            if isinstance(value, list):
                if len(p) <= len(path):
                    continue
                source_index: str | int = p[len(path)]
            else:
                source_index = 0
            rel = p[cut:]
            if rel:
                by_key.setdefault((source_index, rel[0]), []).append((rel, kind, where))
        for i, source in enumerate(sources):
            for k, v in source.items():
                if k in top.merged:
                    continue  # earlier maps in the list win
                top.merged[k] = v
                if k in top.explicit:
                    continue
                for rel, kind, where in by_key.get((i, k), ()):
                    self.record((*top.path, *rel), kind, where)

    # -- scalars

    def construct(self, event: Any, pos: Pos, path: KeyPath) -> Any:
        text = str(event.value)
        tag = event.tag
        if tag is None:
            return plain_scalar(text) if event.implicit[0] else text
        if tag in ("!", _STR, _TIMESTAMP):  # dates stay text: flows want names, not dates
            return text
        if tag == _NULL:
            return None
        if tag == _BOOL:
            if text.lower() in _BOOLS:
                return _BOOLS[text.lower()]
            self.problem(pos, path, f"'{text}' is not a boolean")
            return text
        if tag in (_INT, _FLOAT):
            value = plain_scalar(text.strip())
            if tag == _FLOAT and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if tag == _INT and isinstance(value, int) and not isinstance(value, bool):
                return value
            if tag == _FLOAT and isinstance(value, float):
                return value
            kind = "an integer" if tag == _INT else "a number"
            self.problem(pos, path, f"'{text}' is not {kind}")
            return text
        self.problem(pos, path, f"unsupported YAML tag '{_short_tag(tag)}'")
        return text

    def finish(self) -> Parsed:
        keys: dict[KeyPath, Pos] = {}
        values: dict[KeyPath, Pos] = {}
        for path, kind, pos in self.entries:
            (keys if kind == "k" else values)[path] = pos
        return Parsed(self.root, Positions(keys, values), self.problems)


# ----------------------------------------------------------------------------- entry points


def _reader_pos(text: str, exc: yaml.reader.ReaderError) -> Pos:
    """Line and column of a reader error (libyaml counts UTF-8 bytes, PyYAML characters)."""
    offset = int(exc.position)
    if _Parser is not yaml.SafeLoader:
        raw = text.encode("utf-8", "surrogatepass")
        if not 0 <= offset <= len(raw):
            return (0, 0)
        before = raw[:offset].decode("utf-8", "replace")
    else:
        if not 0 <= offset <= len(text):
            return (0, 0)
        before = text[:offset]
    line = before.count("\n") + 1
    return (line, offset_col(before))


def offset_col(before: str) -> int:
    """1-based column of the character that follows ``before``."""
    return len(before) - (before.rfind("\n") + 1) + 1


def _yaml_problem(file: str, exc: yaml.YAMLError, text: str) -> Diagnostic:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        context = ""
        if exc.context and exc.problem and exc.context_mark is not None:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        line, col = _mark(mark)
        return Diagnostic(file, line, col, "", f"invalid YAML: {problem}{context}")
    if isinstance(exc, yaml.reader.ReaderError):
        line, col = _reader_pos(text, exc)
        char = exc.character
        shown = f"{char:#04x}" if isinstance(char, int) else repr(char)
        return Diagnostic(file, line, col, "", f"invalid YAML: {exc.reason} (character {shown})")
    return Diagnostic(file, 0, 0, "", f"invalid YAML: {exc}")


def _python_depth(text: str, file: str) -> None:
    """Raise the :class:`YamlError` that passing MAX_DEPTH in ``text`` gives, read by PyYAML's
    pure-Python parser (no limit of its own); nothing if that reader finds no such place."""
    builder = _Builder(file)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            builder.feed(event)
    except YamlError as exc:
        if exc.limit:
            raise
    except (yaml.YAMLError, RecursionError, UnicodeError, ValueError):
        pass


def parse_yaml(text: str, file: str) -> Parsed:
    """The single document in ``text``; raises :class:`YamlError` when it is not YAML."""
    builder = _Builder(file)
    try:
        for event in yaml.parse(text, Loader=_Parser):
            builder.feed(event)
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None \
                and exc.problem == "exceeded maximum nesting depth":
            # libyaml's own depth limit (1000 levels, in the libyaml of newer PyYAML wheels:
            # 6.0.4, not 6.0.3): it scans a flow collection ahead, so it can come first. Read
            # again with PyYAML's own parser, which hands on events as it goes, so that the
            # error names where the nesting passes MAX_DEPTH whatever libyaml is installed.
            _python_depth(text, file)
            line, col = _mark(exc.problem_mark)
            raise YamlError(Diagnostic(file, line, col, "", _TOO_DEEP), limit=True) from None
        raise YamlError(_yaml_problem(file, exc, text)) from None
    except (UnicodeError, ValueError) as exc:  # e.g. lone surrogates the C reader cannot encode
        raise YamlError(Diagnostic(file, 0, 0, "", f"invalid YAML: {exc}")) from None
    return builder.finish()


def _long_number(text: str, reason: str) -> Pos:
    """Where the first number with more digits than Python converts starts, or (0, 0)."""
    m = re.search(r"limit \((\d+)\)", reason)
    longest = int(m.group(1)) if m else 4300
    for found in re.finditer(rf"\d{{{longest + 1},}}", text):
        before = text[: found.start()]
        return (before.count("\n") + 1, offset_col(before))
    return (0, 0)


_JSON_ATOM = re.compile(
    r"-?(?:Infinity|[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)|true|false|null|NaN"
)


_DECODER = json.JSONDecoder()


def _skip(text: str, i: int) -> int:
    """The offset of the first character from ``i`` on that is not JSON whitespace."""
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i


def _json_positions(text: str) -> Positions:
    """Where each key and value of ``text`` (valid JSON) starts, read without recursion."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def at(i: int) -> Pos:
        line = bisect.bisect_right(starts, i)
        return (line, offset_col(text[starts[line - 1] : i]))

    keys: dict[KeyPath, Pos] = {}
    values: dict[KeyPath, Pos] = {}
    stack: list[tuple[KeyPath, bool, list[int]]] = []  # (path, is_map, [items so far])
    i = _skip(text, 0)
    path: KeyPath = ()
    while True:
        # a value starts at i, at `path`
        values[path] = at(i)
        c = text[i]
        if c in "{[":
            i = _skip(text, i + 1)
            if text[i] in "}]":
                i += 1
            else:
                stack.append((path, c == "{", [0]))
                if c == "{":
                    key_at = i
                    key, i = _DECODER.raw_decode(text, i)
                    i = _skip(text, i) + 1
                    path = (*path, key)
                    keys[path] = at(key_at)
                else:
                    path = (*path, 0)
                i = _skip(text, i)
                continue
        elif c == '"':
            i = _DECODER.raw_decode(text, i)[1]
        else:
            m = _JSON_ATOM.match(text, i)
            if m is None:
                raise ValueError(f"unexpected {c!r} at offset {i}")
            i = m.end()
        # after a value: the next item, or the end of containers
        while True:
            if not stack:
                return Positions(keys, values)
            i = _skip(text, i)
            base, is_map, count = stack[-1]
            if text[i] == ",":
                i = _skip(text, i + 1)
                count[0] += 1
                if is_map:
                    key_at = i
                    key, i = _DECODER.raw_decode(text, i)
                    i = _skip(text, i) + 1
                    path = (*base, key)
                    keys[path] = at(key_at)
                    i = _skip(text, i)
                else:
                    path = (*base, count[0])
                break
            i += 1  # '}' or ']'
            stack.pop()


def parse_json(text: str, file: str) -> Parsed:
    """``text`` read as JSON; positions come from reading it again as YAML (JSON is YAML)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = Diagnostic(file, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")
        raise YamlError(problem) from None
    except RecursionError:
        parse_yaml(text, file)  # says where the nesting passes MAX_DEPTH (JSON is YAML)
        raise YamlError(Diagnostic(file, 0, 0, "", _TOO_DEEP), limit=True) from None
    except ValueError as exc:  # an integer with more digits than Python converts
        line, col = _long_number(text, str(exc))
        problem = Diagnostic(file, line, col, "", "invalid JSON: a number is too long")
        raise YamlError(problem) from None
    try:
        as_yaml = parse_yaml(text, file)
    except YamlError as exc:
        if exc.limit:
            raise
        # Valid JSON that PyYAML cannot read (a key over 1024 characters, say): positions
        # from JSON's own grammar instead.
        try:
            return Parsed(data, _json_positions(text), [])
        except (ValueError, IndexError):
            return Parsed(data, Positions(), [])
    dupes = [p for p in as_yaml.problems if p.message.startswith("duplicate key")]
    return Parsed(data, as_yaml.positions, dupes)
