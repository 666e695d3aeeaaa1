"""Secret values never appear in logs, outputs, messages or records: each is replaced by ``***``.

What is masked, for each secret (and each value a step adds with ``::add-mask::``):

- the value itself, and each line of a multi-line value (a PEM key, a JSON key file) that
  has :data:`MIN_LINE` characters or more once stripped, since steps print such values a
  line at a time;
- the value's base64 forms (standard and URL-safe, padded or not, and the part of the
  encoding that does not depend on where the value starts in a longer encoded text);
- the escaped forms a message or a JSON document gives the value or a line (Python's
  ``repr``, JSON strings);
- in messages (:meth:`Masker.message`), also the start of a value cut short with ``...``
  (a message that shows only the first characters of a long value).

A value shorter than :data:`MIN_LENGTH` characters is not masked (masking ``o`` would turn
every ``o`` of every line into ``***``): :meth:`Masker.add` refuses it and says so, and the
caller warns.

Matching: the forms are compiled once, when the masker is next used after values were added,
into one regex shaped as their prefix tree (the longest form wins where several start at one
place), behind a sieve: a regex of a 3-character anchor from each form, starting with few and
rare characters, so that a line holding no secret costs about one scan of it whatever the
number of secrets (``benchmarks/bench_masker.py``).
"""

from __future__ import annotations

import base64
import json
import re
import string
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

MASK = "***"
# The shortest value that is masked at all (GitHub does not mask shorter ones either).
MIN_LENGTH = 3
# The shortest line of a multi-line value that is masked on its own.
MIN_LINE = 4
# The shortest start of a value, cut short with "...", that a message has masked.
_MIN_PREFIX = 4
# The shortest base64 text masked for a value embedded in a longer encoded text.
_MIN_B64 = 6
_ELLIPSES = ("...", "\u2026")


def _escaped(value: str) -> set[str]:
    """How ``value`` reads inside a Python ``repr``, a JSON string, or a shell's single quotes
    (``set -x`` traces)."""
    return {
        value.replace("'", "'\\''"),
        repr(value)[1:-1],
        repr('"' + value)[2:-1],  # inside single quotes, with ' escaped
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def _base64_forms(value: str) -> set[str]:
    """The base64 encodings of ``value``: whole (padded and not, standard and URL-safe), and
    for each of the three alignments the value can have inside a longer encoded text, the
    characters that depend on the value's bytes alone."""
    raw = value.encode()
    out: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        out.add(whole)
        out.add(whole.rstrip("="))
        for offset, skip in ((0, 0), (1, 2), (2, 3)):
            data = b"\0" * offset + raw
            encoded = encode(data).decode()
            inner = encoded[skip : (8 * len(data)) // 6]
            if len(inner) >= _MIN_B64:
                out.add(inner)
    return out


def _variants(value: str) -> set[str]:
    """Every text to mask for the secret ``value`` (see the module's doc)."""
    out = _escaped(value) | {value} | _base64_forms(value)
    if "\n" in value or "\r" in value:
        for line in re.split(r"\r\n|\r|\n", value):
            line = line.strip()
            if len(line) >= MIN_LINE:
                out |= {line} | _escaped(line)
    return {v for v in out if len(v) >= MIN_LENGTH}


def _compile(values: Iterable[str]) -> re.Pattern[str]:
    """One pattern matching each of ``values``, the longest where several match at one place
    (so a secret that contains another is masked whole), shaped as the values' prefix tree:
    the regex engine follows one branch a character instead of trying every value at every
    place (N values cost about what one does). A tree too deep for the regex parser (values
    that are prefixes of each other, hundreds deep) falls back to a plain alternation, longest
    first."""
    ordered = sorted(values)
    try:
        return re.compile(_tree(ordered, 0, len(ordered), 0, 0))
    except (RecursionError, re.error, OverflowError):  # not seen; a plain alternation then
        return re.compile(_flat(ordered, 0))


# The deepest the tree's groups nest; below that, a plain alternation (the regex parser
# recurses for each level).
_MAX_DEPTH = 48


def _flat(values: list[str], at: int) -> str:
    """An alternation of ``values`` from character ``at`` on, the longest first."""
    return "|".join(re.escape(v[at:]) for v in sorted(values, key=len, reverse=True))


def _tree(values: list[str], lo: int, hi: int, at: int, depth: int) -> str:
    """The regex for ``values[lo:hi]`` (sorted, distinct, sharing their first ``at``
    characters, each longer than that) from character ``at`` on; ``depth``: groups around."""
    if depth >= _MAX_DEPTH:  # values nested in values, this deep: the rest plainly
        return "(?:" + _flat(values[lo:hi], at) + ")"
    first, last = values[lo], values[hi - 1]
    end = at
    limit = min(len(first), len(last))
    while end < limit and first[end] == last[end]:  # the run's common prefix
        end += 1
    prefix = re.escape(first[at:end])
    ends_here = len(first) == end  # the shortest, sorted first
    if ends_here:
        lo += 1
    if lo == hi:
        return prefix
    branches = []
    while lo < hi:  # one branch for each next character
        c = values[lo][end]
        nxt = lo + 1
        while nxt < hi and values[nxt][end] == c:
            nxt += 1
        branches.append(_tree(values, lo, nxt, end, depth + 1))
        lo = nxt
    rest = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if ends_here:  # greedy: the longer values are tried first, then this one
        return f"{prefix}(?:{rest})?"
    return prefix + rest


# Characters of an anchor (see _anchors): each value's anchor is this long.
_ANCHOR = 3


def _commonness(c: str) -> int:
    """How often ``c`` is seen in logs, roughly (lower is rarer): lower-case letters and
    spaces are everywhere, digits and ASCII punctuation often, capitals less, the rest seldom."""
    if (c.islower() and c.isascii()) or c == " ":
        return 10
    if (c.isdigit() and c.isascii()) or c in string.punctuation:
        return 6
    if c.isupper() and c.isascii():
        return 3
    return 1


def _anchors(values: Iterable[str]) -> set[str]:
    """A text of :data:`_ANCHOR` characters from each of ``values``, starting with few
    distinct and rare characters (a greedy cover: the rarest character held by the most
    values first). A text holding none of them holds none of the values, and the regex
    engine finds them fast: it only starts matching at those few characters."""
    left = {v for v in values if len(v) >= _ANCHOR}
    out = {v for v in values if len(v) < _ANCHOR}  # not reached: values are longer
    while left:
        counts: Counter[str] = Counter()
        for v in left:
            counts.update(set(v[: len(v) - _ANCHOR + 1]))
        c = max(counts, key=lambda c: (counts[c] / _commonness(c), c))
        for v in [v for v in left if c in v[: len(v) - _ANCHOR + 1]]:
            at = v.index(c)
            out.add(v[at : at + _ANCHOR])
            left.discard(v)
    return out


class _Patterns(NamedTuple):
    values: re.Pattern[str]  # every value (see _compile)
    sieve: re.Pattern[str]  # their anchors: where it finds none, there is nothing to mask

    def sub(self, text: str) -> str:
        if self.sieve.search(text) is None:
            return text
        return self.values.sub(MASK, text)


class Masker:
    """Replaces every registered secret (see the module's doc) in text and data.

    Values may be added while a run goes on (``::add-mask::`` lines); the class is thread-safe.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: _Patterns | None = None
        self._dirty = False  # values were added since the pattern was compiled
        self._starts: dict[str, list[str]] = {}  # first characters -> values (for prefixes)
        self.refused = 0  # values too short to mask
        self._longest = 0
        for v in values:
            self.add(v)

    def add(self, value: str) -> bool:
        """Mask ``value`` from now on; False (and nothing masked) if it is too short to mask
        (fewer than :data:`MIN_LENGTH` characters): the caller warns. An empty value is
        nothing to mask (True)."""
        value = value.strip("\r\n")
        if not value.strip():
            return True
        if len(value.strip()) < MIN_LENGTH:
            self.refused += 1
            return False
        with self._lock:
            new = _variants(value) - self._values
            if not new:
                return True
            self._values |= new
            self._longest = max(self._longest, *(len(v) for v in new))
            for v in new:
                if len(v) > _MIN_PREFIX:
                    self._starts.setdefault(v[:_MIN_PREFIX], []).append(v)
            # Compiled when next used, not here: recompiling the whole pattern on every add
            # made N secrets cost O(N^2) (200 secrets took 17 s before the first step).
            self._dirty = True
        return True

    def _current(self) -> _Patterns | None:
        """The patterns of every value added so far (None: nothing to mask)."""
        if self._dirty:
            with self._lock:
                if self._dirty:
                    self._pattern = _Patterns(_compile(self._values),
                                              _compile(_anchors(self._values)))
                    self._dirty = False
        return self._pattern

    def __bool__(self) -> bool:
        return self._current() is not None

    def text(self, text: str) -> str:
        pattern = self._current()
        if pattern is None:
            return text
        return pattern.sub(text)

    def text_part(self, text: str) -> tuple[str, str]:
        """Mask a piece of a line that goes on in a later piece: (the masked piece, a tail
        held back unmasked, to be put before the next piece). The tail is what could be the
        start of a secret that the next piece completes, so no secret is split unmasked."""
        pattern = self._current()
        if pattern is None:
            return text, ""
        cut = max(0, len(text) - (self._longest - 1))
        if pattern.sieve.search(text) is None:
            return text[:cut], text[cut:]
        for match in pattern.values.finditer(text):
            if match.start() < cut < match.end():
                cut = match.end()  # later matches start after this one
        return pattern.values.sub(MASK, text[:cut]), text[cut:]

    def message(self, text: str) -> str:
        """``text`` masked, and the start of a secret shown cut short (``abcd...``) masked
        too: messages shorten long values that way."""
        pattern = self._current()
        if pattern is None:
            return text
        text = pattern.sub(text)
        if not any(e in text for e in _ELLIPSES):
            return text
        with self._lock:
            starts = {k: list(v) for k, v in self._starts.items()}
        cuts: list[tuple[int, int]] = []
        for start, values in starts.items():
            i = text.find(start)
            while i >= 0:
                for v in values:
                    n = _common_prefix(text, i, v)
                    if n >= _MIN_PREFIX and text.startswith(_ELLIPSES, i + n):
                        cuts.append((i, i + n))
                        break
                i = text.find(start, i + 1)
        if not cuts:
            return text
        merged: list[list[int]] = []
        for begin, end in sorted(cuts):
            if merged and begin <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([begin, end])
        for begin, end in reversed(merged):
            text = text[:begin] + MASK + text[end:]
        return text

    def data(self, value: Any) -> Any:
        """``value`` with secrets masked in every string inside it (lists, dicts: keys and
        values)."""
        if self._current() is None:
            return value
        if isinstance(value, str):
            return self.message(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            # Keys too: an output or matrix key a step or a person made may hold a secret.
            return {(self.message(k) if isinstance(k, str) else k): self.data(v)
                    for k, v in value.items()}
        return value

    def event_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """An event's fields with secrets masked in what steps and people wrote (outputs,
        messages, names, inputs, matrix values), but not in the record's own fields
        (statuses, keys, paths, times, hosts): those are flowray's, and masking them would
        only break them (a secret that happens to be ``success``)."""
        if self._current() is None:
            return dict(values)
        out: dict[str, Any] = {}
        for k, v in values.items():
            if k in RECORD_FIELDS:
                out[k] = v
            elif k in _NESTED_RECORDS and isinstance(v, list):
                out[k] = [self.event_fields(x) if isinstance(x, dict) else self.data(x)
                          for x in v]
            else:
                out[k] = self.data(v)
        return out


# The fields of events and records that flowray itself writes: never masked.
RECORD_FIELDS = frozenset({
    "seq", "time", "run", "type", "job", "step", "index", "key", "id", "status", "outcome",
    "conclusion", "exit_code", "kind", "log", "started", "ended", "attempt", "attempts",
    "rank", "stream", "node", "host", "pid", "workspace", "file", "trigger", "backend",
    "hosts", "actions", "artifacts", "needs", "resources", "gpus", "delay", "retries",
    "lost_attempts", "reports",
})
# Fields that hold a list of records (a job's steps, a multi-node job's ranks).
_NESTED_RECORDS = frozenset({"steps", "ranks"})


def _common_prefix(text: str, at: int, value: str) -> int:
    n = 0
    limit = min(len(value), len(text) - at)
    while n < limit and text[at + n] == value[n]:
        n += 1
    return n
