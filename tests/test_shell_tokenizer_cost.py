"""The shell tokenizer's cost grows with the length of a ``run:`` script, not with the square of
its templates (a flow author, or a flow pushed to a service, must not stall validation), and a
script nested deeper than it follows gets a refusal, not a traceback.

The cost is measured without a clock: the characters the tokenizer reads from the script (a
``str`` that counts its indexing, slicing, ``find`` and ``startswith``), the characters of the
words it normalises (``_plain``, which a re-scan of a command's earlier words calls for each of
them), and the characters of the reasons it gives. Ten times the templates must cost about ten
times as much; a re-scan per template costs about a hundred times as much.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import SupportsIndex

import pytest
from conftest import Workspace

from flowray.spec import shells
from flowray.spec.shells import MAX_NESTING, STEP_ADVICE, script_problems, template_slots

S = shells.SENTINEL  # an untrusted template, as the tokenizer sees it
X = "${{ inputs.x }}"


class _Counted(str):
    """A script that counts the characters read from it."""

    read = 0

    def __getitem__(self, key: SupportsIndex | slice) -> str:
        out = str.__getitem__(self, key)
        _Counted.read += max(len(out), 1)
        return out

    def find(self, sub: str, start: SupportsIndex | None = None,
             end: SupportsIndex | None = None) -> int:
        at = str.find(self, sub, start, end)
        first = 0 if start is None else int(start)
        stop = len(self) if end is None else min(int(end), len(self))
        _Counted.read += max((at + len(sub) if at >= 0 else stop) - first, 1)
        return at

    def startswith(self, prefix: str | tuple[str, ...], start: SupportsIndex | None = None,
                   end: SupportsIndex | None = None) -> bool:
        _Counted.read += max(len(p) for p in prefix) if isinstance(prefix, tuple) else len(prefix)
        return str.startswith(self, prefix, start, end)


def cost(script: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """The work of placing the templates of ``script`` (SENTINEL for each)."""
    plain = shells._plain
    normalised = 0

    def counted_plain(word: str) -> str:
        nonlocal normalised
        normalised += len(word)
        return plain(word)

    with monkeypatch.context() as patch:
        patch.setattr(shells, "_plain", counted_plain)
        _Counted.read = 0
        slots = template_slots(_Counted(script))
    assert len(slots) == script.count(S)
    return _Counted.read + normalised + sum(len(slot.reason) for slot in slots)


SHAPES: dict[str, Callable[[int], str]] = {
    "arguments of one command": lambda n: "echo " + " ".join(f'"{S}"' for _ in range(n)),
    "one command a line": lambda n: "".join(f'echo "{S}"\n' for _ in range(n)),
    "one word": lambda n: 'echo "' + "-".join(S for _ in range(n)) + '"',
    "operands after a script": lambda n: "python3 train.py " + " ".join(S for _ in range(n)),
    "an interpreter's option word": lambda n: "python3 --x" + S * n,
    "a shell's code option word": lambda n: "bash -c" + S * n,
    "an interpreter's options": lambda n: "python3 " + " ".join(S for _ in range(n)),
    "names declared": lambda n: "declare " + " ".join(S for _ in range(n)) + " y=1",
    "a declared value": lambda n: 'declare x="' + S * n + '"',
    "open subscripts": lambda n: " ".join("a[" for _ in range(n)) + f" echo {S}",
    "open compound subscripts": lambda n: "a=( " + " ".join("[x" for _ in range(n)) + f" ) {S}",
    "refused on every line": lambda n: "".join(f'eval "{S}"\n' for _ in range(n)),
    "a here-document": lambda n: "cat <<EOF\n" + "".join(f"{S}\n" for _ in range(n)) + "EOF\n",
    "a [[ ]] test": lambda n: "[[ " + " && ".join(f'"{S}" -eq 1' for _ in range(n)) + " ]]",
    "arithmetic": lambda n: "echo $(( " + " + ".join(S for _ in range(n)) + " ))",
    "sed's program": lambda n: "sed -e " + " -e ".join(f"'s/{S}/x/'" for _ in range(n)) + " f",
    "a declare -i name": lambda n: "declare -i k\n" + "".join(f'k="{S}"\n' for _ in range(n)),
    "defaults": lambda n: "echo " + " ".join(f'"${{v:-{S}}}"' for _ in range(n)),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_cost_grows_with_the_script_not_its_square(
        shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    small = cost(SHAPES[shape](100), monkeypatch)
    large = cost(SHAPES[shape](1000), monkeypatch)
    # linear: about 10 (less where a fixed part weighs); a re-scan per template: about 100
    assert large <= 13 * small, (shape, small, large)


def test_a_code_option_is_named_without_what_follows_it() -> None:
    """bash -c${{ a }}${{ b }}: the second template's reason names 'bash -c', not the first
    template's placeholder after it (nor grows with the word)."""
    problems = script_problems(f"bash -c{X}{X}{X}")
    reason = "in the code that 'bash -c' runs"
    assert problems == [f"'{X}' (line 1 of the script) reads data from outside the flow and "
                        f"stands {reason}: flowray cannot pass it there safely; {STEP_ADVICE}"
                        ] * 3


DEEP = ("after more than 100 levels of $( ), ( ), ${...} or $(( )) in one another, where "
        "flowray cannot follow how the shell reads the rest of the script")


@pytest.mark.parametrize(("opening", "closing"), [
    ("$(", ")"), ("<(", ")"), ('"${x:-', '}"'), ('"$(echo ', ')"')])
def test_nesting_deeper_than_the_limit_is_refused(opening: str, closing: str) -> None:
    def script(levels: int) -> str:
        return "echo " + opening * levels + X + closing * levels

    assert MAX_NESTING == 100
    assert script_problems(script(MAX_NESTING)) == []
    expected = (f"'{X}' (line 1 of the script) reads data from outside the flow and stands "
                f"{DEEP}: flowray cannot pass it there safely; {STEP_ADVICE}")
    assert script_problems(script(MAX_NESTING + 1)) == [expected]
    assert script_problems(script(5000)) == [expected]  # was a RecursionError


def test_a_deeply_nested_run_script_is_a_validation_error(ws: Workspace) -> None:
    flow = ws.flow("""
        name: deep
        jobs:
          j:
            steps:
              - run: echo %s
    """ % ("$(" * 3000 + X + ")" * 3000))
    out = ws.cli("validate", flow)
    assert (out.exit_code, out.stderr) == (
        2, f"flow.yaml:5:14: jobs.j.steps[0].run: '{X}' (line 1 of the script) reads data from "
           f"outside the flow and stands {DEEP}: flowray cannot pass it there safely; "
           f"{STEP_ADVICE}\n")
    assert "Traceback" not in out.stdout + out.stderr
