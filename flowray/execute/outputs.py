"""Step outputs: DataTorch ``::name::<json>`` lines and GitHub-style ``$FLOWRAY_OUTPUT`` files."""

from __future__ import annotations

import json
import re
from typing import Any

# A line `::sum::30` sets output `sum` to the JSON value 30 (text that is not JSON stays text).
_LINE = re.compile(r"::([A-Za-z_][A-Za-z0-9_-]*)::(.*)\Z", re.DOTALL)
# Lines that are commands to the runner, not outputs.
ADD_MASK = "add-mask"
# A step's outputs are capped (GitHub caps them at 1 MB a job); past that the step fails.
MAX_OUTPUT_BYTES = 1 << 20


class OutputError(ValueError):
    pass


def parse_output_line(line: str) -> tuple[str, Any] | None:
    """``(name, value)`` if ``line`` is an output line, else None."""
    if not line.startswith("::"):
        return None
    m = _LINE.match(line)
    if m is None:
        return None
    name, raw = m.group(1), m.group(2)
    if name == ADD_MASK:
        return name, raw
    try:
        return name, json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python can read
        return name, raw


def parse_output_file(text: str) -> dict[str, str]:
    """Parse ``name=value`` lines and ``name<<DELIM`` ... ``DELIM`` blocks."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i].removesuffix("\r")
        i += 1
        if not line.strip():
            continue
        heredoc = line.find("<<")
        equals = line.find("=")
        if heredoc > 0 and (equals < 0 or heredoc < equals):
            name, delim = line[:heredoc], line[heredoc + 2 :]
            if not delim:
                raise OutputError(f"output '{name}': '<<' needs a delimiter")
            body: list[str] = []
            while i < len(lines) and lines[i].removesuffix("\r") != delim:
                body.append(lines[i].removesuffix("\r"))
                i += 1
            if i >= len(lines):
                raise OutputError(f"output '{name}': no closing line '{delim}'")
            i += 1
            out[_check_name(name)] = "\n".join(body)
        elif equals > 0:
            out[_check_name(line[:equals])] = line[equals + 1 :]
        else:
            raise OutputError(
                f"line {i} of $FLOWRAY_OUTPUT is not 'name=value' or 'name<<DELIMITER': {line!r}"
            )
    return out


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise OutputError(f"'{name}' is not a valid output name")
    return name
