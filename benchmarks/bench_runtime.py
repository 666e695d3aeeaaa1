#!/usr/bin/env python3
"""`flowray run` before and after a change to the runtime, side by side.

Runs two trees of flowray (``--before PATH``, an older checkout, and ``--after PATH``, by
default this repository) as ``python -m flowray run`` with ``PYTHONPATH=<tree>``, alternating
before and after within each repetition (and swapping which goes first every other
repetition), so both sides see the same machine state. Cases:

- ``two-job``: 2 jobs x 1 step ``echo hello``, validated-flow cache warm;
- ``wide``: 50 jobs x 10 ``run:`` steps (``true`` and ``echo N`` alternating), cache warm;
- ``lines``: one step ``seq 100000``, with stdout to /dev/null, to a pipe (read by this
  script) and with ``--quiet`` (to a pipe);
- ``secrets``: one step printing 100,000 lines of text (``step N: loss=... lr=...``, from
  ``awk``; masking costs more on letters than on ``seq``'s digits), stdout to /dev/null, with
  3 secrets given (``--secret NAME=VALUE``: a token, a password and a multi-line PEM-like key
  of 27 lines), one read by the step, which prints it once after its lines: what masking
  every line costs;
- ``untrusted``: 50 jobs x 10 ``run:`` scripts of 4 lines, each with an untrusted template
  (``${{ inputs.msg }}``, given with ``--input``), warm and with ``--no-cache`` (validated
  every run): what placing untrusted values in scripts (the shell tokenizer) costs.

For every run: wall time, and the CPU time of the ``flowray`` process with everything it
waited for (the steps' shells and commands), from ``os.wait4``. Every run is checked (exit 0,
the expected output; for ``lines`` and ``secrets``: the step's log file holds every line in
order, so does ``events.jsonl`` where the tree writes one, and so does the terminal view on a
pipe; for ``secrets`` no secret's value, nor any line of the PEM-like one, is in the output, the
log or ``events.jsonl``) or the row is FAILED and not timed.

Standard library only; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    DEFAULT_WORK,
    REPO_ROOT,
    Verdict,
    check_outputs,
    csv_choices,
    fmt_r,
    indent,
    load_average,
    print_table,
    runner_env,
    with_tail,
    write,
)

CASES = ("two-job", "wide", "lines", "secrets", "untrusted")
SIDES = ("before", "after")


# --------------------------------------------------------------------------- flows


def two_job_flow() -> str:
    return (
        "name: bench-two-job\njobs:\n"
        "  a:\n    steps:\n      - name: s1\n        run: echo hello\n"
        "  b:\n    steps:\n      - name: s1\n        run: echo hello\n"
    )


def wide_tokens() -> list[str]:
    return [str(j * 10 + s + 1) for j in range(50) for s in range(10) if s % 2 == 1]


def wide_flow() -> str:
    lines = ["name: bench-wide", "jobs:"]
    for j in range(50):
        lines += [f"  j{j + 1:02d}:", "    steps:"]
        for s in range(10):
            cmd = f"echo {j * 10 + s + 1}" if s % 2 == 1 else '"true"'
            lines += [f"      - name: s{s + 1:02d}", f"        run: {cmd}"]
    return "\n".join(lines) + "\n"


def lines_flow(n: int) -> str:
    return f"name: bench-lines\njobs:\n  big:\n    steps:\n      - run: seq {n}\n"


def pem_like() -> str:
    """A multi-line secret shaped like a PEM private key: 25 lines of 64 base64 characters
    between the BEGIN and END lines (made up, the same every run)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = ["".join(alphabet[(i * 7 + j * 13) % 64] for j in range(64)) for i in range(25)]
    return "\n".join(["-----BEGIN PRIVATE KEY-----", *body, "-----END PRIVATE KEY-----"])


SECRETS = {
    "TOKEN": "fr_tok_5f2c9a1e7b3d4c8e9f0a1b2c3d4e5f60",
    "PASSWORD": "correct-horse-battery-staple",
    "PEM_KEY": pem_like(),
}


def secret_lines(n: int) -> list[str]:
    """What the secrets case's step prints: lines of text, like a training log (masking
    costs more on letters than on the digits of ``seq``), then the token, masked."""
    return [f"step {i}: loss=0.{i % 100000:05d} lr=3e-4 time 0.12s" for i in range(1, n + 1)]


def secrets_flow(n: int) -> str:
    return (
        "name: bench-secrets\njobs:\n  big:\n    steps:\n"
        "      - run: |\n"
        f"          awk 'BEGIN {{ for (i = 1; i <= {n}; i++) "
        'printf "step %d: loss=0.%05d lr=3e-4 time 0.12s\\n", i, i % 100000 }\'\n'
        '          echo "token=$TOKEN"\n'
        "        env:\n          TOKEN: ${{ secrets.TOKEN }}\n"
    )


def secret_texts() -> list[str]:
    """What must never be shown: each value, and each line of the multi-line one."""
    out = list(SECRETS.values())
    for value in SECRETS.values():
        out += [ln for ln in value.splitlines() if len(ln) >= 8]
    return out


def untrusted_tokens() -> list[str]:
    return [f"hello-{j * 10 + s + 1}" for j in range(50) for s in range(10)]


def untrusted_flow() -> str:
    lines = ["name: bench-untrusted", "triggers:", "  manual:", "    inputs:",
             "      msg:", "        type: string", "jobs:"]
    for j in range(50):
        lines += [f"  j{j + 1:02d}:", "    steps:"]
        for s in range(10):
            lines += [f"      - name: s{s + 1:02d}", "        run: |",
                      f'          out="${{{{ inputs.msg }}}}-{j * 10 + s + 1}"',
                      '          if [ -n "$out" ]; then',
                      '            echo "$out"',
                      "          fi"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- one run


@dataclass
class Measured:
    elapsed: float
    cpu: float  # user + sys of the process and the children it waited for
    rc: int | None
    stdout: str  # "" when stdout went to /dev/null
    stderr: str
    error: str = ""

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def run_measured(argv: Sequence[str], cwd: Path, env: dict[str, str], timeout: float,
                 stdout_mode: str) -> Measured:
    """Run once: wall time from just before the start to the exit, CPU from ``os.wait4``.

    ``stdout_mode``: ``file`` (a temporary file, read afterwards), ``devnull``, or ``pipe``
    (drained by a thread of this process in 64 KiB reads, kept for the checks).
    """
    chunks: list[bytes] = []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        target = {"file": out, "devnull": subprocess.DEVNULL, "pipe": subprocess.PIPE}
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=target[stdout_mode], stderr=err)
        except OSError as exc:
            return Measured(time.perf_counter() - start, 0.0, None, "", "",
                            f"could not start: {exc}")
        reader = None
        if proc.stdout is not None:
            fd = proc.stdout.fileno()

            def drain() -> None:
                while True:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        return
                    chunks.append(chunk)

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if reader is not None:
            reader.join(timeout)
            assert proc.stdout is not None
            proc.stdout.close()
        out.seek(0)
        err.seek(0)
        data = b"".join(chunks) if stdout_mode == "pipe" else out.read()
        stdout = data.decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    error = f"timed out after {timeout:g} s" if elapsed >= timeout else ""
    return Measured(elapsed, usage.ru_utime + usage.ru_stime, proc.returncode, stdout,
                    stderr, error)


# --------------------------------------------------------------------------- checks


def only_run_dir(workspace: Path) -> Path | None:
    runs = workspace / ".flowray" / "runs"
    found = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    return found[0] if len(found) == 1 else None


def clear_runs(workspace: Path) -> None:
    shutil.rmtree(workspace / ".flowray" / "runs", ignore_errors=True)


def _first_mismatch(got: list[str], want: list[str]) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"line {i + 1} is {a!r}, expected {b!r}"
    return f"{len(got)} lines, expected {len(want)}"


def check_lines(want: list[str], workspace: Path, res: Measured, mode: str, quiet: bool,
                hidden: Sequence[str] = ()) -> Verdict:
    """Exit 0; the step's log file holds the lines ``want`` in order; events.jsonl (where
    written) holds step.log events with those lines, its seq gapless; a pipe shows every line
    (not with --quiet); none of ``hidden`` is in the output, the log file or events.jsonl."""
    if res.rc != 0:
        return Verdict(False, f"exit code {res.rc}")
    for text in hidden:
        if text in res.text:
            return Verdict(False, "a secret is in flowray's output")
    run_dir = only_run_dir(workspace)
    if run_dir is None:
        return Verdict(False, "not exactly one run folder")
    logs = sorted((run_dir / "logs").rglob("*.log"))
    if len(logs) != 1:
        return Verdict(False, f"{len(logs)} step log files, expected 1")
    log_text = logs[0].read_text(encoding="utf-8")
    if any(text in log_text for text in hidden):
        return Verdict(False, f"a secret is in the log file {logs[0].name}")
    got = log_text.splitlines()
    if got != want:
        return Verdict(False, f"log file {logs[0].name}: {_first_mismatch(got, want)}")
    detail = [f"log file {len(want)} lines"]
    events = run_dir / "events.jsonl"
    if events.is_file():
        events_text = events.read_text(encoding="utf-8")
        if any(text in events_text for text in hidden):
            return Verdict(False, "a secret is in events.jsonl")
        seqs: list[int] = []
        lines: list[str] = []
        with events.open(encoding="utf-8") as fh:
            for raw in fh:
                ev = json.loads(raw)
                seqs.append(ev["seq"])
                if ev["type"] == "step.log":
                    lines.append(ev["line"])
        if seqs != list(range(1, len(seqs) + 1)):
            return Verdict(False, "events.jsonl: seq not gapless from 1")
        if lines != want:
            return Verdict(False, f"events.jsonl step.log: {_first_mismatch(lines, want)}")
        detail.append(f"events.jsonl {len(lines)} step.log of {len(seqs)} events")
    if mode == "pipe":
        shown = [ln.rsplit(" | ", 1)[1] for ln in res.stdout.splitlines() if " | " in ln]
        if quiet:
            if shown:
                return Verdict(False, f"--quiet but {len(shown)} step lines shown")
            detail.append("view: no step lines (--quiet)")
        elif shown != want:
            return Verdict(False, f"view: {_first_mismatch(shown, want)}")
        else:
            detail.append(f"view {len(shown)} lines")
    if hidden:
        detail.append("no secret shown")
    return Verdict(True, ", ".join(detail))


# --------------------------------------------------------------------------- rows


@dataclass
class Side:
    name: str
    tree: Path
    env: dict[str, str]
    commit: str = ""
    times: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    failure: str = ""
    check: str = ""


@dataclass
class Row:
    case: str
    label: str
    flow_text: str
    extra: list[str]
    stdout_mode: str
    verify: Callable[[Path, Measured], Verdict]
    lines: int = 0  # lines the step prints (for lines/s)
    sides: dict[str, Side] = field(default_factory=dict)

    def workspace(self, work: Path, side: str) -> Path:
        slug = "-".join("".join(c if c.isalnum() else " " for c in self.label).split())
        return work / slug / side


def make_rows(cases: list[str], n_lines: int) -> list[Row]:
    rows: list[Row] = []
    if "two-job" in cases:
        rows.append(Row("two-job", "two-job warm", two_job_flow(), [], "file",
                        lambda ws, r: check_outputs(r.rc, r.text, ["hello", "hello"])))
    if "wide" in cases:
        rows.append(Row("wide", "wide 50x10 warm", wide_flow(), [], "file",
                        lambda ws, r: check_outputs(r.rc, r.text, wide_tokens())))
    numbers = [str(i) for i in range(1, n_lines + 1)]
    if "lines" in cases:
        for label, extra, mode in (
            ("lines >/dev/null", [], "devnull"),
            ("lines | pipe", [], "pipe"),
            ("lines --quiet | pipe", ["--quiet"], "pipe"),
        ):
            def verify(ws: Path, r: Measured, mode: str = mode, quiet: bool = bool(extra)
                       ) -> Verdict:
                return check_lines(numbers, ws, r, mode, quiet)

            rows.append(Row("lines", label, lines_flow(n_lines), extra, mode, verify,
                            lines=n_lines))
    if "secrets" in cases:
        printed = [*secret_lines(n_lines), "token=***"]
        given = [arg for name, value in SECRETS.items() for arg in ("--secret", f"{name}={value}")]

        def verify_secrets(ws: Path, r: Measured) -> Verdict:
            return check_lines(printed, ws, r, "devnull", False, hidden=secret_texts())

        rows.append(Row("secrets", "secrets 3, text >/dev/null", secrets_flow(n_lines), given,
                        "devnull", verify_secrets, lines=n_lines))
    if "untrusted" in cases:
        for label, extra in (("untrusted 50x10 warm", []),
                             ("untrusted 50x10 --no-cache", ["--no-cache"])):
            rows.append(Row("untrusted", label, untrusted_flow(),
                            ["--input", "msg=hello", *extra], "file",
                            lambda ws, r: check_outputs(r.rc, r.text, untrusted_tokens())))
    return rows


def side_env(tree: Path, work: Path, keep_bytecode: bool) -> dict[str, str]:
    env = runner_env(keep_bytecode)
    for key in [k for k in env if k.startswith("FLOWRAY_")]:
        del env[key]
    env["PYTHONPATH"] = str(tree)
    env["XDG_CONFIG_HOME"] = str(work / "xdg-config")  # no user flowray.toml
    env.pop("NO_COLOR", None)
    return env


def imported_from(python: str, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run([python, "-c", "import flowray; print(flowray.__file__)"], cwd=cwd,
                         env=env, capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def tree_commit(tree: Path) -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                             check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "flowray")
    return commit + (" + uncommitted changes in flowray/" if dirty else "")


# --------------------------------------------------------------------------- running


def cpu_busy() -> float:
    """Busy CPU-seconds of the whole machine so far (/proc/stat), or 0 where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            parts = fh.readline().split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def run_all(rows: list[Row], args: argparse.Namespace, work: Path) -> dict[str, str]:
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    busy0, own0, wall0 = cpu_busy(), own_cpu(), time.monotonic()
    for row in rows:
        for side in row.sides.values():
            ws = row.workspace(work, side.name)
            shutil.rmtree(ws, ignore_errors=True)
            write(ws / "flow.yaml", row.flow_text)
            where = imported_from(args.python, ws, side.env)
            if not where.startswith(str(side.tree) + os.sep):
                sys.exit(f"{side.name}: `import flowray` in {ws} with PYTHONPATH={side.tree} "
                         f"loads {where!r}, not the tree")
    argv_of = {s: [args.python, "-m", "flowray", "run", "flow.yaml"] for s in SIDES}

    def once(row: Row, side: Side) -> tuple[Measured, Verdict]:
        ws = row.workspace(work, side.name)
        clear_runs(ws)
        res = run_measured([*argv_of[side.name], *row.extra], ws, side.env, args.timeout,
                           row.stdout_mode)
        if res.error:
            verdict = Verdict(False, res.error)
        else:
            verdict = with_tail(row.verify(ws, res), res.text)
        clear_runs(ws)
        return res, verdict

    # One untimed run per row and side: fills the validated-flow cache (every row is
    # "warm"), the page cache and the .pyc files, and checks the run.
    for row in rows:
        for side in row.sides.values():
            _, verdict = once(row, side)
            side.check = verdict.detail
            if not verdict.ok:
                side.failure = f"warm-up: {verdict.detail}"
            log(f"[{row.label}] {side.name}: {'ok' if verdict.ok else 'FAILED'} "
                f"({verdict.detail})")
    for i in range(args.repeat):
        order = SIDES if i % 2 == 0 else tuple(reversed(SIDES))
        for row in rows:
            for name in order:
                side = row.sides[name]
                if side.failure:
                    continue
                res, verdict = once(row, side)
                if not verdict.ok:
                    side.failure = f"run {i + 1}: {verdict.detail}"
                    log(f"[{row.label}] {name}: FAILED ({side.failure})")
                    continue
                side.times.append(res.elapsed)
                side.cpus.append(res.cpu)
        log(f"repetition {i + 1}/{args.repeat} done (load {load_average()})")
    wall = time.monotonic() - wall0
    other = max(0.0, (cpu_busy() - busy0) - (own_cpu() - own0))
    return {
        "wall": f"{wall:.0f}s",
        "other_cpu": f"{other:.1f} CPU-s of {wall * (os.cpu_count() or 1):.0f} available",
    }


# --------------------------------------------------------------------------- report


def stats(xs: list[float]) -> tuple[float, float, float] | None:
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def cell(xs: list[float], fmt: Callable[[float], str]) -> str:
    s = stats(xs)
    return "-" if s is None else f"{fmt(s[0])} ({fmt(s[1])}-{fmt(s[2])})"


def ratio(a: list[float], b: list[float]) -> float | None:
    return statistics.median(b) / statistics.median(a) if a and b else None


def table(rows: list[Row]) -> tuple[list[str], list[list[str]], list[str]]:
    head = ["case", "metric", "before median (min-max)", "after median (min-max)",
            "after/before"]
    out: list[list[str]] = []
    notes: list[str] = []

    for row in rows:
        b, a = row.sides["before"], row.sides["after"]
        for side in (b, a):
            if side.failure:
                notes.append(f"{row.label} / {side.name}: FAILED: {side.failure}")
        bt = [] if b.failure else b.times
        at = [] if a.failure else a.times
        bc = [] if b.failure else b.cpus
        ac = [] if a.failure else a.cpus
        out.append([row.label, "wall", cell(bt, lambda x: f"{x:.3f}s"),
                    cell(at, lambda x: f"{x:.3f}s"), fmt_r(ratio(bt, at))])
        out.append(["", "CPU", cell(bc, lambda x: f"{x:.3f}s"),
                    cell(ac, lambda x: f"{x:.3f}s"), fmt_r(ratio(bc, ac))])
        if row.lines:
            br = [row.lines / t for t in bt]
            ar = [row.lines / t for t in at]
            out.append(["", "lines/s", cell(br, lambda x: f"{x / 1000:.1f}k"),
                        cell(ar, lambda x: f"{x / 1000:.1f}k"), fmt_r(ratio(br, ar))])
    return head, out, notes


def results_json(rows: list[Row]) -> list[dict[str, object]]:
    res: list[dict[str, object]] = []
    for row in rows:
        entry: dict[str, object] = {"case": row.label, "lines": row.lines or None}
        for side in row.sides.values():
            s, c = stats(side.times), stats(side.cpus)
            entry[side.name] = {
                "status": "failed" if side.failure else "ok", "failure": side.failure,
                "check": side.check, "times_s": side.times, "cpu_s": side.cpus,
                "median_s": s[0] if s else None, "cpu_median_s": c[0] if c else None,
            }
        b, a = row.sides["before"], row.sides["after"]
        entry["ratio_wall"] = ratio(b.times, a.times)
        entry["ratio_cpu"] = ratio(b.cpus, a.cpus)
        res.append(entry)
    return res


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="`flowray run` before and after, side by side.")
    p.add_argument("--before", type=Path, required=True,
                   help="a tree (checkout) of the older flowray, e.g. a git worktree")
    p.add_argument("--after", type=Path, default=REPO_ROOT,
                   help="the tree of the newer flowray (default: this repository)")
    p.add_argument("--repeat", type=int, default=9, help="timed runs per row and side (9)")
    p.add_argument("--only", type=csv_choices(CASES), default=list(CASES),
                   help="cases, comma separated: " + ",".join(CASES) + " (default all)")
    p.add_argument("--lines", type=int, default=100_000,
                   help="lines the `lines` step prints (default 100000)")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter both sides run with (default: this one)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run (300)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK / "runtime",
                   help="default benchmarks/.work/runtime")
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.add_argument("--json-file", type=Path, default=None,
                   help="also write the results as JSON to this file")
    p.add_argument("--no-bytecode-cache", action="store_true",
                   help="keep PYTHONDONTWRITEBYTECODE for the runs (default: unset it)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.lines < 1:
        p.error("--lines must be at least 1")
    for name in SIDES:
        tree = getattr(args, name).resolve()
        if not (tree / "flowray" / "__init__.py").is_file():
            p.error(f"--{name} {tree}: no flowray/__init__.py there")
        setattr(args, name, tree)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = make_rows(args.only, args.lines)
    for row in rows:
        for name in SIDES:
            tree = getattr(args, name)
            row.sides[name] = Side(name, tree, side_env(tree, work, args.no_bytecode_cache),
                                   commit=tree_commit(tree))
    env = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "python": platform.python_version(),
        "load": load_average(),
        "repeat": str(args.repeat),
        "pyc": "off" if args.no_bytecode_cache else "on",
        "before": f"{args.before} ({tree_commit(args.before)})",
        "after": f"{args.after} ({tree_commit(args.after)})",
    }
    env.update(run_all(rows, args, work))
    env["load at end"] = load_average()
    results = {"environment": env, "results": results_json(rows)}
    if args.json_file is not None:
        write(args.json_file, json.dumps(results, indent=2) + "\n")
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print()
        print("flowray run, before/after — " + ", ".join(f"{k}: {v}" for k, v in env.items()))
        head, out, notes = table(rows)
        print_table(head, out)
        print()
        print("wall: from starting `python -m flowray run flow.yaml` to its exit. CPU: user+sys "
              "of that process and of the steps it waited for (os.wait4). lines/s: lines / wall.")
        print("after/before: the after side's median over the before side's (wall, CPU: "
              "above 1.00x, after is slower; lines/s: below 1.00x, after is slower).")
        print("checks (last warm-up):")
        for row in rows:
            for side in row.sides.values():
                if not side.failure:
                    print(f"  {row.label} / {side.name}: {side.check}")
        if notes:
            print("problems:")
            for n in notes:
                print(indent(n))
    return 1 if any(s.failure for r in rows for s in r.sides.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
