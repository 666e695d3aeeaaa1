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
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

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


class Masker:
    """Replaces every registered secret (see the module's doc) in text and data.

    Values may be added while a run goes on (``::add-mask::`` lines); the class is thread-safe.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
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

    def _current(self) -> re.Pattern[str] | None:
        """The pattern of every value added so far (None: nothing to mask)."""
        if self._dirty:
            with self._lock:
                if self._dirty:
                    # Longest first, so a secret that contains another is masked whole.
                    ordered = sorted(self._values, key=len, reverse=True)
                    self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
                    self._dirty = False
        return self._pattern

    def __bool__(self) -> bool:
        return self._current() is not None

    def text(self, text: str) -> str:
        pattern = self._current()
        if pattern is None:
            return text
        return pattern.sub(MASK, text)

    def text_part(self, text: str) -> tuple[str, str]:
        """Mask a piece of a line that goes on in a later piece: (the masked piece, a tail
        held back unmasked, to be put before the next piece). The tail is what could be the
        start of a secret that the next piece completes, so no secret is split unmasked."""
        pattern = self._current()
        if pattern is None:
            return text, ""
        cut = max(0, len(text) - (self._longest - 1))
        for match in pattern.finditer(text):
            if match.start() < cut < match.end():
                cut = match.end()  # later matches start after this one
        return pattern.sub(MASK, text[:cut]), text[cut:]

    def message(self, text: str) -> str:
        """``text`` masked, and the start of a secret shown cut short (``abcd...``) masked
        too: messages shorten long values that way."""
        pattern = self._current()
        if pattern is None:
            return text
        text = pattern.sub(MASK, text)
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
