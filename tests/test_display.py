"""What the terminal view prints of step output: plain lines as they are, control characters
escaped on every line (the fast path for plain lines and the per-step label cache must not
change what is shown)."""

from __future__ import annotations

import io

from flowray.cli.display import output_line
from flowray.cli.view import Console
from flowray.runtime.events import StepLog, StepStarted


def test_plain_lines_are_printed_as_they_are() -> None:
    for line in ("", "epoch 1: loss=0.5", "a\tb\tc", "ünïcödé ✓ 日本", "x" * 10_000):
        for color in (False, True):
            assert output_line(line, keep_color=color) == line


def test_control_characters_are_escaped_in_every_line() -> None:
    assert output_line("a\rb", keep_color=False) == "a\\rb"
    assert output_line("\x1b[31mred\x1b[0m", keep_color=False) == "red"
    assert output_line("\x1b[31mred", keep_color=True) == "\x1b[31mred\x1b[0m"
    assert output_line("bell\x07\x9b", keep_color=True) == "bell\\x07\\x9b"


def test_each_line_of_a_step_gets_its_escaped_label() -> None:
    out = io.StringIO()
    console = Console(out, color=False)
    console.show(StepStarted(1, "", "r", job="a", step=0, name="s", key="k\x1bx"))
    for seq, line in enumerate(("one", "two\r", "three"), 2):
        console.show(StepLog(seq, "", "r", job="a", step=0, line=line))
    shown = out.getvalue().splitlines()[1:]
    assert shown == ["a/k\\x1bx | one", "a/k\\x1bx | two\\r", "a/k\\x1bx | three"]
