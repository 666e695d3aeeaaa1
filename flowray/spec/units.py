"""Amounts written in flow files, read without pydantic (the cluster layer needs them on runs
whose flow came from the validated-flow cache)."""

from __future__ import annotations

import re

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}


def parse_memory(text: str | int) -> int:
    """Bytes in a memory amount such as ``512MiB``, ``8G`` or ``1000``."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _MEMORY_UNITS:
        raise ValueError(f"'{text}' is not a memory amount (examples: 512MiB, 8GiB, 2G, 1000000)")
    number = m.group(1)
    if len(number) > 30:  # more than any machine has; float() would make it infinite
        raise ValueError(f"'{text[:40]}...' is not a memory amount (too many digits)")
    return int(float(number) * _MEMORY_UNITS[m.group(2).lower()])
