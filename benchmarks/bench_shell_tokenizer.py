#!/usr/bin/env python3
"""The shell tokenizer (``flowray.spec.shells``) of two trees of flowray on ``run:`` scripts
with many untrusted templates, side by side: what validating such a script costs.

For each tree (``--before PATH``, an older checkout; ``--after PATH``, by default this
repository) and each case, a fresh ``python`` with ``PYTHONPATH=<tree>`` times
``script_problems`` on the script (best of ``--repeat``), or says TIMEOUT after ``--timeout``
seconds. Cases, each with N templates (``--sizes``, default 2000, 20000, 60000):

- ``one line``: ``echo "${{ inputs.x }}" "${{ inputs.x }}" ...``, one command line;
- ``many lines``: ``echo "${{ inputs.x }}"`` on N lines;
- ``option word``: ``python3 --x${{ inputs.x }}${{ inputs.x }}...``, one word (refused);
- ``code word``: ``bash -c${{ inputs.x }}...``, one word (refused; the reasons' total length);
- ``names``: ``declare ${{ inputs.x }} ... y=1`` (refused);
- ``subscripts``: N words ``a[`` without their ``]``, then one template.

Standard library only; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

T = "${{ inputs.x }}"
CASES = {
    "one line": lambda n: "echo " + " ".join(f'"{T}"' for _ in range(n)),
    "many lines": lambda n: "".join(f'echo "{T}"\n' for _ in range(n)),
    "option word": lambda n: "python3 --x" + T * n,
    "code word": lambda n: "bash -c" + T * n,
    "names": lambda n: "declare " + " ".join(T for _ in range(n)) + " y=1",
    "subscripts": lambda n: " ".join("a[" for _ in range(n)) + f" echo {T}",
}
TIMER = """
import sys, time
from flowray.spec.shells import script_problems
script = sys.stdin.read()
best = min(
    (lambda t: (script_problems(script), time.perf_counter() - t)[1])(time.perf_counter())
    for _ in range(int(sys.argv[1])))
problems = script_problems(script)
print(f"{best:.3f} {len(problems)} {sum(map(len, problems))}")
"""


def timed(tree: Path, script: str, repeat: int, timeout: float) -> str:
    try:
        out = subprocess.run([sys.executable, "-c", TIMER, str(repeat)], input=script,
                             env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                             cwd=tree,  # python -c imports from its directory first
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"TIMEOUT (> {timeout:g} s)"
    if out.returncode != 0:
        return "FAILED: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    seconds, problems, chars = out.stdout.split()
    return f"{float(seconds):8.3f} s  ({problems} refused, {int(chars):,} chars of messages)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="an older flowray tree")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--only", choices=("before", "after"), help="time one tree only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 60000])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    for case in args.cases:
        for n in args.sizes:
            script = CASES[case](n)
            print(f"{case:12} N={n:6,} ({len(script):9,} chars)", flush=True)
            for side, tree in (("before", args.before.resolve()), ("after", args.after)):
                if args.only and side != args.only:
                    continue
                print(f"    {side:6} {timed(tree, script, args.repeat, args.timeout)}",
                      flush=True)


if __name__ == "__main__":
    main()
