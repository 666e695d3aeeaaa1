"""Secret values never appear in logs, outputs or records: each is replaced by ``***``."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "***"


def _variants(value: str) -> set[str]:
    """The value and its base64 forms (padded and unpadded)."""
    out = {value}
    encoded = base64.b64encode(value.encode()).decode()
    out.add(encoded)
    out.add(encoded.rstrip("="))
    return {v for v in out if v}


class Masker:
    """Replaces every registered secret (exact value and base64) in text and data.

    Values may be added while a run goes on (``::add-mask::`` lines); the class is thread-safe.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._longest = 0
        for v in values:
            self.add(v)

    def add(self, value: str) -> None:
        value = value.strip("\r\n")
        if not value:
            return
        with self._lock:
            new = _variants(value) - self._values
            if not new:
                return
            self._values |= new
            self._longest = max(self._longest, *(len(v) for v in new))
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(MASK, text)

    def text_part(self, text: str) -> tuple[str, str]:
        """Mask a piece of a line that goes on in a later piece: (the masked piece, a tail
        held back unmasked, to be put before the next piece). The tail is what could be the
        start of a secret that the next piece completes, so no secret is split unmasked."""
        pattern = self._pattern
        if pattern is None:
            return text, ""
        cut = max(0, len(text) - (self._longest - 1))
        for match in pattern.finditer(text):
            if match.start() < cut < match.end():
                cut = match.end()  # later matches start after this one
        return pattern.sub(MASK, text[:cut]), text[cut:]

    def data(self, value: Any) -> Any:
        """``value`` with secrets masked in every string inside it (lists, dicts)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        return value
