"""Text from a run made safe to print on a terminal.

Names, errors and step output may hold text a flow's inputs or event chose (``name: "deploy
${{ inputs.x }}"``): a newline there would print a line that looks like flowray's own, and an
escape sequence would move the cursor or erase the ``job/step |`` prefix. What the terminal
view and ``flowray status``/``runs``/``logs`` print goes through here; log files and events
keep the raw text.
"""

from __future__ import annotations

import re

# C0 controls, DEL and the C1 controls (0x80-0x9f: some terminals read 0x9b as ESC [).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_TAB = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# A colour (SGR) sequence: ESC [ digits and semicolons m. Nothing else can move the cursor.
_SGR = re.compile(r"\x1b\[[0-9;]*m")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or f"\\x{ord(ch):02x}"


def one_line(text: str) -> str:
    """``text`` on one line with every control character shown as an escape (``\\n``,
    ``\\x1b``): for names, errors and other single-line fields."""
    return _CONTROL.sub(_visible, text)


def output_line(text: str, *, keep_color: bool) -> str:
    """A line of a step's output as a terminal may be given it: colour sequences (SGR,
    ``ESC[...m``) are kept when ``keep_color`` and removed otherwise; every other control
    character but TAB (CR, backspace, ESC of any other sequence) is shown as an escape.
    A line that sets a colour ends with a reset."""
    if _CONTROL_BUT_TAB.search(text) is None:
        return text  # most lines: nothing to show differently (a step may print 100,000 a second)
    parts = _SGR.split(text)
    sgrs = _SGR.findall(text) if keep_color else [""] * (len(parts) - 1)
    out = [_CONTROL_BUT_TAB.sub(_visible, parts[0])]
    for sgr, part in zip(sgrs, parts[1:], strict=True):
        out.append(sgr)
        out.append(_CONTROL_BUT_TAB.sub(_visible, part))
    if keep_color and sgrs:
        out.append("\x1b[0m")  # a colour left on does not spill into the lines that follow
    return "".join(out)


def output_text(text: str, *, keep_color: bool) -> str:
    """Several lines of output (a log file's text) line by line as :func:`output_line`."""
    return "\n".join(output_line(line, keep_color=keep_color) for line in text.split("\n"))
