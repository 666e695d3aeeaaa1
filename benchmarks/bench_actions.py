#!/usr/bin/env python3
"""Git actions benchmark (issue 3): a flow using 5 actions from git, first and second run,
against the same 5 actions as local actions and against ``datatorch pipeline run``.

Builds under ``benchmarks/.work/actions/`` (gitignored) five bare git repositories, each
holding one trivial action tagged ``v1`` (four ``cmd`` actions that echo their input, one
``python`` action that prints it), served over ``file://`` and, unless ``--transports file``,
also over ``git://`` from a ``git daemon`` this script starts on 127.0.0.1 (and stops).

Rows, interleaved within each repetition, median of ``--repeat`` runs:

- flowray first run: an empty action cache (a fresh ``FLOWRAY_CACHE_DIR`` for every run) and
  ``--no-cache`` (no validated-flow cache): every action is cloned;
- flowray second run: the action cache filled by the warm-up run; the run must fetch nothing
  (its stderr must hold no ``fetched `` line), with and without the validated-flow cache;
- flowray with the same 5 actions as local actions (``./actions/x``): the floor for action
  overhead; the table gives each git row's difference to it in milliseconds;
- datatorch first run (its runner's ``actions/`` folder emptied before every run) and second
  run (kept), on an equivalent flow that names the same repositories by URL.

Every run must exit 0 and print the five echoed values, and fetch exactly as often as its row
says (first runs 5, others 0), or the row is FAILED. Exit status 1 when a row failed.

Standard library only (plus ``git``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    DEFAULT_WORK,
    RunResult,
    Verdict,
    check_outputs,
    csv_choices,
    find_exe,
    fmt_r,
    fmt_s,
    load_average,
    print_table,
    run_timed,
    runner_env,
    tool_version,
    with_tail,
    write,
)

OWNER = "bench"
TAG = "v1"
N_CMD = 4

PY_MAIN = """\
import json
import sys

print(json.loads(sys.argv[-1])["msg"])
"""


@dataclass(frozen=True)
class ActionDef:
    repo: str  # bench/a1
    files: dict[str, str]

    @property
    def short(self) -> str:
        return self.repo.split("/", 1)[1]

    @property
    def token(self) -> str:
        """The value the step passes and the action prints."""
        return f"hello-from-{self.short}"


def action_defs() -> list[ActionDef]:
    out: list[ActionDef] = []
    for i in range(1, N_CMD + 1):
        name = f"a{i}"
        out.append(
            ActionDef(
                f"{OWNER}/{name}",
                {
                    "action-datatorch.yaml": (
                        f"name: {name}\n"
                        "description: prints its input (benchmark action)\n"
                        "inputs:\n"
                        "  msg: {type: string, required: true}\n"
                        "runs:\n"
                        "  using: cmd\n"
                        '  command: echo "$INPUT_MSG"\n'
                    )
                },
            )
        )
    out.append(
        ActionDef(
            f"{OWNER}/py",
            {
                "action-datatorch.yaml": (
                    "name: py\n"
                    "description: prints its input from Python (benchmark action)\n"
                    "inputs:\n"
                    "  msg: {type: string, required: true}\n"
                    "runs:\n"
                    "  using: python\n"
                    "  main: main.py\n"
                ),
                "main.py": PY_MAIN,
            },
        )
    )
    return out


# --------------------------------------------------------------------------- git repositories


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@localhost",
    )
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def build_repos(root: Path, actions: list[ActionDef]) -> dict[str, str]:
    """Bare repositories ``root/repos/<owner>/<name>`` with ``v1`` tagged; repo -> SHA."""
    shutil.rmtree(root / "repos", ignore_errors=True)
    shutil.rmtree(root / "src", ignore_errors=True)
    shas: dict[str, str] = {}
    for a in actions:
        src = root / "src" / a.repo
        src.mkdir(parents=True)
        git("init", "-q", "-b", "main", ".", cwd=src)
        for name, text in a.files.items():
            write(src / name, text)
        git("add", "-A", cwd=src)
        git("commit", "-q", "-m", f"{a.short} {TAG}", cwd=src)
        git("tag", TAG, cwd=src)
        bare = root / "repos" / a.repo
        bare.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", "--bare", str(src), str(bare), cwd=root)
        shas[a.repo] = git("rev-parse", "HEAD", cwd=src)
    return shas


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(repos: Path, probe: str) -> tuple[subprocess.Popen[bytes] | None, str]:
    """``git daemon`` serving ``repos`` read-only on 127.0.0.1; (process, base URL) or
    (None, why not)."""
    port = free_port()
    argv = [
        "git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
        f"--port={port}", f"--base-path={repos}", str(repos),
    ]  # fmt: skip
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    except OSError as exc:
        return None, f"git daemon did not start: {exc}"
    base = f"git://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            return None, f"git daemon exited {proc.returncode}: {err}"
        ok = subprocess.run(
            ["git", "ls-remote", f"{base}/{probe}"],
            capture_output=True, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        if ok.returncode == 0:
            return proc, base
        time.sleep(0.1)
    stop_daemon(proc)
    return None, "git daemon did not answer within 10 s"


def stop_daemon(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- flows


def flowray_flow(actions: list[ActionDef], *, local: bool) -> str:
    lines = ["name: bench-actions", "jobs:", "  j:", "    steps:"]
    for a in actions:
        ref = f"./actions/{a.short}" if local else f"{a.repo}@{TAG}"
        lines += [
            f"      - name: {a.short}",
            f"        action: {ref}",
            "        with:",
            f"          msg: {a.token}",
        ]
    return "\n".join(lines) + "\n"


def datatorch_flow(actions: list[ActionDef], base: str) -> str:
    """datatorch has no base-URL setting: the object form names each repository's URL
    (``git clone --depth 1 --branch v1 <git> <runner>/actions/<name>/<tag>``)."""
    lines = ["name: bench-actions", "jobs:", "  j:", "    steps:"]
    for a in actions:
        lines += [
            f"      - name: {a.short}",
            "        action:",
            f"          name: {a.repo}",
            f"          tag: {TAG}",
            f"          git: {json.dumps(f'{base}/{a.repo}')}",
            "        inputs:",
            f"          msg: {a.token}",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- rows

FETCH_LINE = re.compile(r"^fetched \S+", re.MULTILINE)  # flowray, on stderr
DT_DOWNLOAD = re.compile(r"Downloading action \S+", re.MULTILINE)  # datatorch's debug log
DT_DONE = "Successfully completed job "


@dataclass
class Row:
    label: str
    runner: str  # flowray | datatorch
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    expect_fetches: int  # clones each run must do (first runs: 5; others: 0)
    tokens: list[str]
    warmup_fetches: int | None = None  # the untimed first run's (None: expect_fetches)
    reset: Callable[[int], None] | None = None  # before run i (untimed): empty a cache
    local_ref: str = ""  # label of the local-actions row to subtract
    peer_ref: str = ""  # label of the datatorch row to compare with
    note: str = ""
    skip: str = ""
    times: list[float] = field(default_factory=list)
    fetches: list[int] = field(default_factory=list)
    failure: str = ""

    def count_fetches(self, res: RunResult) -> int:
        if self.runner == "datatorch":
            return len(DT_DOWNLOAD.findall(res.text))
        return len(FETCH_LINE.findall(res.stderr))

    def verify(self, res: RunResult, *, warmup: bool = False) -> Verdict:
        if res.error:
            return Verdict(False, res.error)
        v = check_outputs(res.rc, res.text, self.tokens)
        if not v.ok:
            return v
        if self.runner == "datatorch":
            # exits 0 even when a job failed (and a failed clone is silent): read its log
            done = res.text.count(DT_DONE)
            if "failed on step" in res.text or done != 1:
                return Verdict(False, f"exit 0 but {done}/1 jobs completed (see log)")
        n = self.count_fetches(res)
        want = self.expect_fetches
        if warmup and self.warmup_fetches is not None:
            want = self.warmup_fetches
        if n != want:
            what = "'fetched ' lines on stderr" if self.runner == "flowray" else "downloads"
            return Verdict(False, f"{n} {what}, expected {want}")
        return Verdict(True, f"{v.detail}, {n} fetches")


def fresh(folder: Path) -> Callable[[int], None]:
    def reset(_: int) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    return reset


def build_rows(
    args: argparse.Namespace,
    work: Path,
    actions: list[ActionDef],
    bases: dict[str, str],
    skipped: dict[str, str],
) -> list[Row]:
    base_env = runner_env(args.no_bytecode_cache)
    for key in [k for k in base_env if k.startswith(("FLOWRAY_", "DATATORCH_"))]:
        del base_env[key]
    # no user flowray.toml (its base or owners map would apply)
    base_env["XDG_CONFIG_HOME"] = str(work / "xdg-config")
    tokens = [a.token for a in actions]
    flowray = find_exe("flowray", args.flowray_cmd)
    datatorch = find_exe("datatorch", args.datatorch_cmd)
    fr = flowray or ["flowray"]
    fr_skip = "" if flowray else "flowray not installed (pip install -e .)"
    no_cache = shlex.split(args.flowray_no_cache_flag)
    rows: list[Row] = []

    if "flowray" in args.runners:
        # The floor: the same actions as local actions, in a workspace of their own.
        ws = work / "flowray-local"
        shutil.rmtree(ws, ignore_errors=True)
        for a in actions:
            for name, text in a.files.items():
                write(ws / "actions" / a.short / name, text)
        write(ws / "flow.yaml", flowray_flow(actions, local=True))
        env = dict(base_env)
        env["FLOWRAY_CACHE_DIR"] = str(work / "flowray-cache-unused")
        for cold in (False, True):
            rows.append(
                Row(
                    label="flowray local" + (" --no-cache" if cold else ""),
                    runner="flowray",
                    argv=[*fr, "run", "flow.yaml", *(no_cache if cold else [])],
                    cwd=ws,
                    env=env,
                    expect_fetches=0,
                    tokens=tokens,
                    note="./actions/x" + (", flow validated every run" if cold else
                                          ", validated-flow cache warm"),
                    skip=fr_skip,
                )
            )

    for transport in args.transports:
        base = bases.get(transport)
        tname = f"{transport}://"
        if "flowray" in args.runners:
            ws = work / f"flowray-{transport}"
            shutil.rmtree(ws, ignore_errors=True)
            write(ws / "flow.yaml", flowray_flow(actions, local=False))
            first_cache = work / f"flowray-{transport}-cache-first"
            warm_cache = work / f"flowray-{transport}-cache-warm"
            shutil.rmtree(warm_cache, ignore_errors=True)
            # (label suffix, action cache, extra flags, fetches, local row, datatorch row, note)
            specs: list[tuple[str, Path, list[str], int, str, str, str]] = [
                ("first", first_cache, no_cache, 5, "flowray local --no-cache", "first",
                 "empty action cache every run, " + args.flowray_no_cache_flag),
                ("second", warm_cache, [], 0, "flowray local", "second",
                 "action cache warm, validated-flow cache warm"),
                ("second --no-cache", warm_cache, no_cache, 0, "flowray local --no-cache",
                 "second", "action cache warm, flow validated every run"),
                ("second --offline", warm_cache, ["--offline"], 0, "flowray local", "second",
                 "action cache warm, validated-flow cache warm, --offline: no ls-remote"),
            ]  # fmt: skip
            if transport != "file":
                specs = specs[:2]
            warmed: set[Path] = set()
            for which, cache, extra, fetches, local_ref, dt_which, note in specs:
                env = dict(base_env)
                env["FLOWRAY_ACTIONS_BASE"] = base or ""
                env["FLOWRAY_CACHE_DIR"] = str(cache)
                rows.append(
                    Row(
                        label=f"flowray {tname} {which}",
                        runner="flowray",
                        argv=[*fr, "run", "flow.yaml", *extra],
                        cwd=ws,
                        env=env,
                        expect_fetches=fetches,
                        tokens=tokens,
                        reset=fresh(cache) if fetches else None,
                        # the warm cache starts empty: the first "second" row's warm-up fills it
                        warmup_fetches=None if fetches or cache in warmed else 5,
                        local_ref=local_ref,
                        peer_ref=f"datatorch {tname} {dt_which}",
                        note=f"FLOWRAY_ACTIONS_BASE={base}, {note}",
                        skip=fr_skip or skipped.get(transport, ""),
                    )
                )
                warmed.add(cache)
        if "datatorch" in args.runners:
            ws = work / f"datatorch-{transport}"
            shutil.rmtree(ws, ignore_errors=True)
            write(ws / "flow.yaml", datatorch_flow(actions, base or "unavailable"))
            dt_skip = "" if datatorch else "datatorch not installed (pip install datatorch)"
            for which, fetches in (("first", 5), ("second", 0)):
                home = work / f"datatorch-home-{transport}-{which}"
                shutil.rmtree(home, ignore_errors=True)
                env = dict(base_env)
                env["DATATORCH_DIR"] = str(home)
                env["DATATORCH_RUNNER_PATH"] = str(home / "runner")
                rows.append(
                    Row(
                        label=f"datatorch {tname} {which}",
                        runner="datatorch",
                        argv=[*(datatorch or ["datatorch"]), "pipeline", "run", "flow.yaml"],
                        cwd=ws,
                        env=env,
                        expect_fetches=fetches,
                        tokens=tokens,
                        reset=fresh(home / "runner" / "actions") if fetches else None,
                        warmup_fetches=None if fetches else 5,
                        note=("runner actions/ folder emptied every run" if fetches else
                              "actions kept in the runner's actions/ folder")
                        + f"; object form, git: {base}/<repo>",
                        skip=dt_skip or skipped.get(transport, ""),
                    )
                )
    return rows


# --------------------------------------------------------------------------- running


def run_row(row: Row, i: int, timeout: float, keep: Path | None) -> Verdict:
    if row.reset is not None:
        row.reset(i)
    res = run_timed(row.argv, row.cwd, row.env, timeout, merge_stderr=False)
    if keep is not None:
        write(keep, f"$ {shlex.join(row.argv)}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}")
    verdict = with_tail(row.verify(res, warmup=i < 0), res.text)
    if verdict.ok and i >= 0:
        row.times.append(res.elapsed)
        row.fetches.append(row.count_fetches(res))
    return verdict


def run_all(rows: list[Row], repeat: int, timeout: float, work: Path, quiet: bool) -> None:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    active = [r for r in rows if not r.skip]
    # One untimed run per row: fills the caches the "second" rows use, checks the output.
    for r in active:
        keep = work / "logs" / (re.sub(r"[^A-Za-z0-9]+", "-", r.label).strip("-") + ".log")
        v = run_row(r, -1, timeout, keep)
        if not v.ok:
            r.failure = f"warm-up: {v.detail}"
            log(f"{r.label}: FAILED ({v.detail})")
        else:
            log(f"{r.label}: ok ({v.detail}); output in {keep}")
    for i in range(repeat):
        for r in active:
            if r.failure:
                continue
            v = run_row(r, i, timeout, None)
            if not v.ok:
                r.failure = f"run {i + 1}: {v.detail}"
                log(f"{r.label}: FAILED ({r.failure})")
        log(f"repetition {i + 1}/{repeat} done")


# --------------------------------------------------------------------------- reporting


def med(r: Row | None) -> float | None:
    if r is None or r.skip or r.failure or not r.times:
        return None
    return statistics.median(r.times)


def low(r: Row | None) -> float | None:
    return min(r.times) if med(r) is not None and r is not None else None


def by_label(rows: list[Row], label: str) -> Row | None:
    return next((r for r in rows if r.label == label), None)


def diff_ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a - b) * 1000


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f} ms"


def results(rows: list[Row]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for r in rows:
        local, peer = by_label(rows, r.local_ref), by_label(rows, r.peer_ref)
        out.append(
            {
                "label": r.label,
                "runner": r.runner,
                "argv": r.argv,
                "cwd": str(r.cwd),
                "note": r.note,
                "status": "skipped" if r.skip else "failed" if r.failure else "ok",
                "skip": r.skip,
                "failure": r.failure,
                "times": r.times,
                "median_s": med(r),
                "min_s": low(r),
                "max_s": max(r.times) if med(r) is not None else None,
                "fetches_per_run": r.fetches,
                "vs_local_ms_median": diff_ms(med(r), med(local)) if local else None,
                "vs_local_ms_min": diff_ms(low(r), low(local)) if local else None,
                "vs_datatorch": (m / p) if (m := med(r)) and (p := med(peer)) else None,
            }
        )
    return out


def report(rows: list[Row], env: dict[str, str]) -> None:
    print()
    print("flowray git actions benchmark — " + ", ".join(f"{k}: {v}" for k, v in env.items()))
    head = ["row", "median", "min", "max", "n", "fetches/run", "vs local (med)",
            "vs local (min)", "fr/datatorch"]  # fmt: skip
    table: list[list[str]] = []
    problems: list[str] = []
    for r in rows:
        local, peer = by_label(rows, r.local_ref), by_label(rows, r.peer_ref)
        m = med(r)
        if r.skip or r.failure:
            status = "SKIPPED" if r.skip else "FAILED"
            table.append([r.label, status, "", "", "", "", "", "", ""])
            problems.append(f"{r.label}: {status}: {r.skip or r.failure}")
            continue
        fetched = sorted(set(r.fetches))
        table.append(
            [
                r.label,
                fmt_s(m),
                fmt_s(low(r)),
                fmt_s(max(r.times)),
                str(len(r.times)),
                ",".join(map(str, fetched)),
                fmt_ms(diff_ms(m, med(local))) if r.local_ref else "",
                fmt_ms(diff_ms(low(r), low(local))) if r.local_ref else "",
                fmt_r(m / p if m and (p := med(peer)) else None) if r.peer_ref else "",
            ]
        )
    print_table(head, table)
    print()
    print("vs local = this row minus the flowray local-actions row with the same flow-cache")
    print("setting (`flowray local` for `second` and `second --offline`, `flowray local")
    print("--no-cache` for the others), by median and by minimum.")
    print("fr/datatorch = flowray median / datatorch median for the same transport and run")
    print("(first/second); below 1.00x flowray is faster.")
    print("fetches/run: flowray's 'fetched ' lines on stderr, datatorch's 'Downloading action'")
    print("log lines, per run (every value seen).")
    print("rows:")
    for r in rows:
        print(f"  {r.label}: {shlex.join(r.argv)}  [in {r.cwd}]")
        print(f"      ({r.note})")
    if problems:
        print("problems:")
        for line in problems:
            print("  " + line)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="flowray git actions, first and second run, against local actions and "
        "datatorch, side by side."
    )
    p.add_argument("--repeat", type=int, default=7, help="timed runs per row (default 7)")
    p.add_argument(
        "--transports",
        type=csv_choices(("file", "git")),
        default=["file", "git"],
        help="file (file:// URLs), git (git:// from a git daemon on 127.0.0.1); default both",
    )
    p.add_argument(
        "--runners",
        type=csv_choices(("flowray", "datatorch")),
        default=["flowray", "datatorch"],
        help="flowray,datatorch (default both)",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run (default 300)")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK / "actions",
        help="default benchmarks/.work/actions",
    )
    p.add_argument("--flowray-cmd", help="command prefix for flowray (e.g. 'python -m flowray')")
    p.add_argument("--datatorch-cmd", help="command prefix for datatorch")
    p.add_argument(
        "--flowray-no-cache-flag",
        default="--no-cache",
        help="flag that makes `flowray run` skip its validated-flow cache (default --no-cache)",
    )
    p.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE for the runners (default: unset it)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("git") is None:
        print("error: git is not installed; the benchmark needs it", file=sys.stderr)
        return 1
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    actions = action_defs()
    build_repos(work, actions)
    repos = work / "repos"
    bases = {"file": f"file://{repos}"}
    skipped: dict[str, str] = {}
    daemon: subprocess.Popen[bytes] | None = None
    try:
        if "git" in args.transports:
            daemon, where = start_daemon(repos, actions[0].repo)
            if daemon is None:
                skipped["git"] = where
            else:
                bases["git"] = where
        rows = build_rows(args, work, actions, bases, skipped)
        env = {
            "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "python": platform.python_version(),
            "load": load_average(),
            "repeat": str(args.repeat),
            "pyc": "off" if runner_env(args.no_bytecode_cache).get("PYTHONDONTWRITEBYTECODE")
            else "on",
            "git": tool_version(["git"], "--version"),
            "flowray": tool_version(find_exe("flowray", args.flowray_cmd), "--version")
            if "flowray" in args.runners
            else "-",
            "datatorch": tool_version(find_exe("datatorch", args.datatorch_cmd), "--version")
            if "datatorch" in args.runners
            else "-",
        }
        run_all(rows, args.repeat, args.timeout, work, args.quiet)
    finally:
        stop_daemon(daemon)
    env["load after"] = load_average()
    if args.json:
        json.dump({"environment": env, "results": results(rows)}, sys.stdout, indent=2)
        print()
    else:
        report(rows, env)
    return 1 if any(r.failure for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
