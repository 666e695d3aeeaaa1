"""What the benchmark scripts share: finding the tools, the runners' environment, one timed run,
output checks and table printing. Standard library only.

Used by ``bench_local.py`` and ``bench_actions.py`` (run as scripts, so this folder is on
``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_WORK = BENCH_DIR / ".work"


# --------------------------------------------------------------------------- tools


def find_exe(name: str, override: str | None) -> list[str] | None:
    """The command prefix for a tool: the override, this interpreter's bin
    folder, the bench venv (benchmarks/.work/venv), then PATH. pyenv shims are
    avoided where possible: each one costs a `pyenv exec` (tens of ms)."""
    if override:
        return shlex.split(override)
    for folder in (Path(sys.executable).parent, DEFAULT_WORK / "venv" / "bin"):
        cand = folder / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    path = os.environ.get("PATH", "")
    no_shims = os.pathsep.join(p for p in path.split(os.pathsep) if not p.endswith("shims"))
    found = shutil.which(name, path=no_shims) or shutil.which(name)
    return [found] if found else None


def tool_version(argv: list[str] | None, *flag: str) -> str:
    if not argv:
        return "not installed"
    try:
        out = subprocess.run(
            [*argv, *flag],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text and out.returncode == 0 else f"unavailable (exit {out.returncode})"


def runner_env(keep_dont_write_bytecode: bool = False) -> dict[str, str]:
    """The environment every runner starts from. PYTHONDONTWRITEBYTECODE is
    dropped unless asked for: with it, every run of a Python tool (flowray,
    datatorch) recompiles all its modules, which a normal install never does
    and which costs them 0.1-0.3 s a run here; act (Go) is unaffected."""
    env = dict(os.environ)
    if not keep_dont_write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- one timed run


@dataclass
class RunResult:
    elapsed: float
    rc: int | None  # None: the process could not start
    stdout: str
    stderr: str  # "" when stderr was merged into stdout
    error: str = ""  # could not start, or timed out

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def run_timed(
    argv: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    *,
    merge_stderr: bool = True,
) -> RunResult:
    """Run ``argv`` once and time it, from just before the process starts to its exit.

    Output goes to temporary files (no pipe to drain, nothing read while timing).
    """
    with (
        tempfile.TemporaryFile(mode="w+b") as out,
        tempfile.TemporaryFile(mode="w+b") as err,
    ):
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if merge_stderr else err,
            )
        except OSError as exc:
            return RunResult(time.perf_counter() - start, None, "", "", f"could not start: {exc}")
        # Not subprocess.run(timeout=...): its wait polls with sleeps of up to 50 ms, which
        # rounds every measurement up to the next poll. A blocking wait returns at exit; a
        # timer kills the run if it goes past the timeout.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            rc = proc.wait()
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    error = f"timed out after {timeout:g} s" if elapsed >= timeout else ""
    return RunResult(elapsed, rc, stdout, stderr, error)


# --------------------------------------------------------------------------- output checks


@dataclass
class Verdict:
    ok: bool
    detail: str


def _output_tokens(text: str, expected: set[str]) -> list[str]:
    """The expected tokens that end an output line. A line that contains ``echo``
    is skipped: it displays a command (e.g. act's ``Run Main echo 7``), not its output."""
    found: list[str] = []
    for line in text.splitlines():
        if "echo" in line:
            continue
        parts = line.rsplit(None, 1)
        if parts and parts[-1] in expected:
            found.append(parts[-1])
    return found


def count_outputs(text: str, tokens: Sequence[str]) -> tuple[int, int]:
    """(distinct expected tokens seen, expected distinct) as echoed output lines."""
    expected = set(tokens)
    return len(set(_output_tokens(text, expected))), len(expected)


def count_lines_ending(text: str, tokens: Sequence[str]) -> int:
    """Total output lines carrying an expected token (duplicates counted)."""
    return len(_output_tokens(text, set(tokens)))


def check_outputs(rc: int | None, text: str, tokens: Sequence[str]) -> Verdict:
    """Exit code 0 and every token printed (as many lines as tokens, at least)."""
    if rc != 0:
        return Verdict(False, f"exit code {rc}")
    seen, expected = count_outputs(text, tokens)
    lines = count_lines_ending(text, tokens)
    if seen < expected or lines < len(tokens):
        return Verdict(
            False,
            f"exit 0 but only {seen}/{expected} distinct outputs, "
            f"{lines}/{len(tokens)} output lines seen",
        )
    return Verdict(True, f"{lines} output lines")


def with_tail(verdict: Verdict, text: str, n: int = 6) -> Verdict:
    """A failed verdict with the last ``n`` lines of output appended."""
    if verdict.ok:
        return verdict
    tail = "\n".join(text.rstrip().splitlines()[-n:])
    shown = f"output tail:\n{indent(tail)}" if tail else "no output at all"
    return Verdict(False, f"{verdict.detail}; {shown}")


def indent(text: str) -> str:
    return "\n".join("      | " + line for line in text.splitlines())


# --------------------------------------------------------------------------- reporting


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}s"


def fmt_r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, a rule under the header, trailing blanks stripped."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def csv_choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of some of ``allowed``."""

    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(allowed)}"
            )
        return items

    return parse
