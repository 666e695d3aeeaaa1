#!/usr/bin/env python3
"""Side-by-side Ray benchmark (issue 4): flowray's Ray dispatcher against plain Ray tasks.

Each scenario starts its own multi-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``: 3 raylets, token authentication off, no dashboard) once, and
times every row on that same cluster, rows alternating within each repetition:

- ``tasks``: N one-step jobs (``run: "true"``, no needs; default 200) through
  ``flowray run FLOW --address ADDR``, against a driver that submits N ``@ray.remote`` tasks
  each running the same command as flowray's step (``bash --noprofile --norc -eo pipefail -c
  true``, flowray's default shell) with ``subprocess.run`` and waits for them all.
- ``gpu-sweep``: a matrix of 8 jobs, each ``resources: {gpus: 1}`` running ``sleep 1``, on
  two nodes with 2 fake GPUs each (4 GPUs): makespan against the ideal 2 s; the same 8 tasks
  with ``num_gpus=1`` in plain Ray.
- ``throughput``: a generated flow of 10,000 one-step jobs (``--jobs``) through the Ray
  dispatcher: jobs/s sustained and the coordinator's peak RSS; the same flow with the local
  executor (no Ray), and the same tasks in plain Ray.

Every row runs as a fresh subprocess (a small driver script written under
``benchmarks/.work/ray/``) and is timed twice: **end to end** (process start to exit, measured
here: Python start-up, imports, ``ray.init``, the run, ``ray.shutdown``) and **after
connect** (measured in the driver, from the moment ``ray.init`` returned, or flowray's
``RayCluster.connect``, to the end, ``ray.shutdown`` included). The flowray driver calls the
real CLI (``flowray run``) in-process; it only wraps ``RayCluster.connect`` and ``close`` to
note the time.

Every run is checked: exit code 0, every job (or task) succeeded, as many as expected. A row
that fails is reported FAILED and never timed. Standard library only, plus Ray and flowray
(``pip install -e '.[ray]'``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    DEFAULT_WORK,
    csv_choices,
    fmt_r,
    fmt_s,
    indent,
    load_average,
    print_table,
    run_timed,
    runner_env,
    write,
)

SCENARIOS = ("tasks", "gpu-sweep", "throughput")
MARK = "BENCH_RESULT "
IDEAL_SWEEP_S = 2.0  # 8 one-second jobs on 4 GPUs: two waves
TARGET_TASKS = 1.5  # flowray / raw Ray, after connect
TARGET_SWEEP = 1.3  # makespan / ideal
# What a flowray step `run: "true"` executes (flowray's default shell, bash): raw Ray tasks run
# the same command, so both sides pay for the same process.
STEP_COMMAND = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", "true"]

# ----------------------------------------------------------------------------- drivers

# Reads /proc/self/status at the end of a run: VmHWM is the process's peak resident set.
_PEAK_RSS = '''
def peak_rss_mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
'''

# Plain Ray: N tasks, each one process, all submitted at once, then waited for.
RAW_DRIVER = '''"""bench_ray.py: N plain Ray tasks, each running one command."""
import json, logging, subprocess, sys, time
T0 = time.perf_counter()
''' + _PEAK_RSS + '''

def main():
    address, n, gpus, argv = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
    import ray

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    connected, connected_wall = time.perf_counter(), time.time()

    @ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)
    def step(cmd):
        start = time.time()
        subprocess.run(cmd, check=True)
        return start, time.time()

    spans = ray.get([step.remote(argv) for _ in range(n)])
    closing = time.perf_counter()
    ray.shutdown()
    done = time.perf_counter()
    first = min(s for s, _ in spans)
    out = {
        "rc": 0, "connect": connected - T0, "after_connect": done - connected,
        "jobs": n, "success": len(spans),
        "first_start": first - connected_wall,
        "makespan": max(e for _, e in spans) - first,
        "shutdown": done - closing,
        "rss_mb": peak_rss_mb(),
    }
    print("''' + MARK + '''" + json.dumps(out), flush=True)


main()
'''

# flowray: the real CLI, in-process; RayCluster.connect is wrapped to note when it returned.
FLOWRAY_DRIVER = '''"""bench_ray.py: `flowray run ARGS...` in-process, timed after connecting."""
import json, os, sys, time
T0 = time.perf_counter()
''' + _PEAK_RSS + '''

def main():
    marks = {}
    runs = os.path.join(os.getcwd(), ".flowray", "runs")
    before = set(os.listdir(runs)) if os.path.isdir(runs) else set()
    try:
        from flowray.backends.ray import cluster as raydispatch

        connect = raydispatch.RayCluster.connect.__func__

        close = raydispatch.RayCluster.close

        def timed_connect(cls, *args, **kwargs):
            cluster = connect(cls, *args, **kwargs)
            marks["connected"] = time.perf_counter()
            marks["connected_wall"] = time.time()
            return cluster

        def timed_close(self):
            marks["closing"] = time.perf_counter()
            try:
                return close(self)
            finally:
                marks["closed"] = time.perf_counter()

        raydispatch.RayCluster.connect = classmethod(timed_connect)
        raydispatch.RayCluster.close = timed_close
    except (ImportError, AttributeError) as exc:  # the Ray layer moved: end to end only
        marks["patch_error"] = repr(exc)
    from flowray.cli import main as cli

    rc = 0
    try:
        cli(args=["run", *sys.argv[1:]], prog_name="flowray", standalone_mode=False)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    done = time.perf_counter()
    rss = peak_rss_mb()
    out = {"rc": rc, "rss_mb": rss}
    if "patch_error" in marks:
        out["patch_error"] = marks["patch_error"]
    if "connected" in marks:
        out["connect"] = marks["connected"] - T0
        out["after_connect"] = done - marks["connected"]
    if "closed" in marks:
        out["shutdown"] = marks["closed"] - marks["closing"]
    new = sorted(set(os.listdir(runs)) - before) if os.path.isdir(runs) else []
    if len(new) == 1:
        with open(os.path.join(runs, new[0], "record.json")) as fh:
            jobs = json.load(fh)["jobs"]
        # A job's `started` is when the coordinator handed it to Ray; its steps' times are
        # taken on the node, around the step's process, as the raw driver's are.
        steps = [st for j in jobs.values() for st in j.get("steps") or []]
        starts = [st["started"] for st in steps if st.get("started")]
        ends = [st["ended"] for st in steps if st.get("ended")]
        out["jobs"] = len(jobs)
        out["success"] = sum(1 for j in jobs.values() if j["status"] == "success")
        out["makespan"] = max(ends) - min(starts) if starts and ends else None
        handed = [j["started"] for j in jobs.values() if j.get("started")]
        finished = [j["ended"] for j in jobs.values() if j.get("ended")]
        out["record_makespan"] = max(finished) - min(handed) if handed and finished else None
        if starts and "connected_wall" in marks:
            out["first_start"] = min(starts) - marks["connected_wall"]
        out["run_dir"] = os.path.join(runs, new[0])
        out["nodes"] = len({j.get("node") for j in jobs.values() if j.get("node")})
    else:
        out["runs_found"] = len(new)
    print("''' + MARK + '''" + json.dumps(out), flush=True)
    return rc


sys.exit(main())
'''


# ----------------------------------------------------------------------------- flows


def tasks_flow(n: int) -> str:
    lines = [f"name: bench-ray-tasks-{n}", "jobs:"]
    for i in range(n):
        lines += [f"  j{i:05d}:", "    steps:", '      - run: "true"']
    return "\n".join(lines) + "\n"


def sweep_flow(cells: int) -> str:
    return (
        "name: bench-ray-gpu-sweep\n"
        "jobs:\n"
        "  train:\n"
        "    strategy:\n"
        "      fail-fast: false\n"
        "      matrix:\n"
        f"        i: [{', '.join(str(i + 1) for i in range(cells))}]\n"
        "    resources:\n"
        "      gpus: 1\n"
        "    steps:\n"
        "      - run: sleep 1\n"
    )


# ----------------------------------------------------------------------------- rows


@dataclass
class Sample:
    e2e: float  # process start to exit
    after: float | None  # connected to the end, shutdown included
    first_start: float | None  # connected to the first step's (task's) command starting
    makespan: float | None  # first command start to last command end, on the nodes
    shutdown: float | None  # ray.shutdown (flowray: RayCluster.close)
    jobs: int
    rss_mb: float | None


@dataclass
class Row:
    scenario: str
    label: str  # "raw Ray", "flowray --address", "flowray local"
    kind: str  # raw | flowray | local
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    expect: int  # jobs (tasks) that must succeed
    note: str = ""
    samples: list[Sample] = field(default_factory=list)
    failure: str = ""


def measure(row: Row, timeout: float) -> Sample | str:
    """One run of ``row``: its sample, or why it failed."""
    res = run_timed(row.argv, row.cwd, row.env, timeout)
    tail = "\n".join(res.text.rstrip().splitlines()[-8:])
    if res.error:
        return f"{res.error}; output tail:\n{indent(tail)}"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(MARK)]
    if not lines:
        return f"exit {res.rc}, no result line; output tail:\n{indent(tail)}"
    out: dict[str, Any] = json.loads(lines[-1][len(MARK):])
    if out.get("run_dir"):
        shutil.rmtree(out["run_dir"], ignore_errors=True)  # 10,000 jobs' logs add up
    if res.rc != 0 or out.get("rc") != 0:
        return f"exit {res.rc}; output tail:\n{indent(tail)}"
    if out.get("jobs") != row.expect or out.get("success") != row.expect:
        return (f"exit 0 but {out.get('success')}/{out.get('jobs')} jobs succeeded, expected "
                f"{row.expect} (runs found: {out.get('runs_found', 1)})")
    if row.kind == "flowray" and "after_connect" not in out:
        return f"no connect time: {out.get('patch_error', 'RayCluster.connect never called')}"
    return Sample(res.elapsed, out.get("after_connect"), out.get("first_start"),
                  out.get("makespan"), out.get("shutdown"), row.expect, out.get("rss_mb"))


def build_rows(args: argparse.Namespace, scenario: str, work: Path, address: str,
               drivers: dict[str, Path]) -> list[Row]:
    env = runner_env(args.no_bytecode_cache)
    for key in ("FLOWRAY_ADDRESS", "RAY_ADDRESS", "CUDA_VISIBLE_DEVICES"):
        env.pop(key, None)
    env["RAY_AUTH_MODE"] = "disabled"
    py = args.python
    sdir = work / scenario
    shutil.rmtree(sdir, ignore_errors=True)
    rows: list[Row] = []
    if scenario == "tasks":
        n = args.tasks
        write(sdir / "flowray" / "flow.yaml", tasks_flow(n))
        rows.append(Row(scenario, "raw Ray", "raw", [py, str(drivers["raw"]), address, str(n),
                                                     "0", *STEP_COMMAND], sdir, env, n,
                        note=f"{n} tasks (num_cpus=1) each subprocess.run({STEP_COMMAND})"))
        rows.append(Row(scenario, "flowray --address", "flowray",
                        [py, str(drivers["flowray"]), "flow.yaml", "--address", address],
                        sdir / "flowray", env, n,
                        note=f'{n} jobs x 1 step run: "true" (bash), validated-flow cache warm'))
    elif scenario == "gpu-sweep":
        n = 8
        write(sdir / "flowray" / "flow.yaml", sweep_flow(n))
        rows.append(Row(scenario, "raw Ray", "raw", [py, str(drivers["raw"]), address, str(n),
                                                     "1", "sleep", "1"], sdir, env, n,
                        note=f"{n} tasks num_gpus=1 each subprocess.run(['sleep', '1'])"))
        rows.append(Row(scenario, "flowray --address", "flowray",
                        [py, str(drivers["flowray"]), "flow.yaml", "--address", address],
                        sdir / "flowray", env, n,
                        note=f"matrix of {n} jobs, resources: {{gpus: 1}}, run: sleep 1"))
    else:
        n = args.jobs
        write(sdir / "flowray" / "flow.yaml", tasks_flow(n))
        rows.append(Row(scenario, "raw Ray", "raw", [py, str(drivers["raw"]), address, str(n),
                                                     "0", *STEP_COMMAND], sdir, env, n,
                        note=f"{n} tasks each subprocess.run({STEP_COMMAND}), all submitted "
                             f"at once"))
        rows.append(Row(scenario, "flowray --address", "flowray",
                        [py, str(drivers["flowray"]), "flow.yaml", "--address", address],
                        sdir / "flowray", env, n,
                        note=f'{n} jobs x 1 step run: "true", validated-flow cache warm'))
        rows.append(Row(scenario, "flowray local", "local",
                        [py, str(drivers["flowray"]), "flow.yaml"], sdir / "flowray", env, n,
                        note=f"the same flow, local executor ({os.cpu_count()} CPU slots)"))
    return rows


# ----------------------------------------------------------------------------- clusters


def cluster_nodes(scenario: str, node_cpus: int) -> list[dict[str, Any]]:
    """Head first. gpu-sweep: 4 fake GPUs on two worker nodes; the others: no GPU."""
    gpus = [0, 2, 2] if scenario == "gpu-sweep" else [0, 0, 0]
    return [{"num_cpus": node_cpus, "num_gpus": g} for g in gpus]


def describe(nodes: list[dict[str, Any]]) -> str:
    return ", ".join(f"{n['num_cpus']} CPU/{n['num_gpus']} GPU" for n in nodes)


@contextlib.contextmanager
def address_file_kept() -> Iterator[None]:
    """``Cluster()`` writes its address to /tmp/ray/ray_current_cluster, where ``ray.init()``
    and ``--address auto`` of anyone on this machine would find it, and ``shutdown()``
    deletes that file: put back whatever was there before."""
    from ray._common.utils import get_ray_address_file

    path = get_ray_address_file(None)
    try:
        with open(path) as fh:
            before: str | None = fh.read()
    except OSError:
        before = None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if before is None:
                os.unlink(path)
            else:
                with open(path, "w") as fh:
                    fh.write(before)


@contextlib.contextmanager
def ray_cluster(nodes: list[dict[str, Any]]) -> Iterator[str]:
    """A multi-node Ray on this machine (its processes are this process's children); its
    GCS address. Stopped on the way out, whatever happens."""
    from ray import cluster_utils

    with address_file_kept():
        c = cluster_utils.Cluster(
            initialize_head=True, head_node_args={**nodes[0], "include_dashboard": False})
    try:
        for spec in nodes[1:]:
            c.add_node(**spec)
        c.wait_for_nodes()
        yield c.address
    finally:
        with address_file_kept():
            c.shutdown()


# ----------------------------------------------------------------------------- running


def run_scenario(args: argparse.Namespace, scenario: str, work: Path,
                 drivers: dict[str, Path], log: Any) -> tuple[list[Row], dict[str, Any]]:
    nodes = cluster_nodes(scenario, args.node_cpus)
    started = time.perf_counter()
    info: dict[str, Any] = {"nodes": nodes}
    with ray_cluster(nodes) as address:
        info["address"] = address
        info["cluster_start_s"] = time.perf_counter() - started
        log(f"[{scenario}] cluster {address}: {len(nodes)} nodes ({describe(nodes)}), "
            f"up in {info['cluster_start_s']:.1f}s")
        rows = build_rows(args, scenario, work, address, drivers)
        repeat = args.throughput_repeat if scenario == "throughput" else args.repeat
        # Untimed first: the validated-flow cache, and a check that each row works. The
        # throughput flow is only validated (`--dry-run`): a full warm-up run is as long as
        # a timed one.
        for row in rows:
            if scenario == "throughput" and row.kind != "raw":
                res = run_timed([*row.argv, "--dry-run"], row.cwd, row.env, args.timeout)
                ok = res.rc == 0 and not res.error
                if not ok:
                    row.failure = f"--dry-run exit {res.rc}: {res.text[-400:]}"
            elif scenario == "throughput":
                continue  # a warm-up of 10,000 raw tasks would double the scenario's time
            else:
                got = measure(row, args.timeout)
                if isinstance(got, str):
                    row.failure = f"warm-up: {got}"
            log(f"[{scenario}] {row.label}: "
                f"{'FAILED (' + row.failure + ')' if row.failure else 'ok'}")
        for i in range(repeat):
            # Alternate the order, so drift in the machine's load does not favour one row.
            for row in rows if i % 2 == 0 else list(reversed(rows)):
                if row.failure:
                    continue
                got = measure(row, args.timeout)
                if isinstance(got, str):
                    row.failure = f"run {i + 1}: {got}"
                    log(f"[{scenario}] {row.label}: FAILED ({row.failure})")
                else:
                    row.samples.append(got)
                    log(f"[{scenario}] {row.label} run {i + 1}/{repeat}: "
                        f"e2e {got.e2e:.2f}s"
                        + (f", after connect {got.after:.2f}s" if got.after else "")
                        + (f", makespan {got.makespan:.2f}s" if got.makespan else ""))
    return rows, info


# ----------------------------------------------------------------------------- reporting


def med(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def row_stats(row: Row) -> dict[str, float | None]:
    s = row.samples
    after = med([x.after for x in s])
    makespan = med([x.makespan for x in s])
    return {
        "e2e": med([x.e2e for x in s]),
        "after": after,
        "first_start": med([x.first_start for x in s]),
        "makespan": makespan,
        "shutdown": med([x.shutdown for x in s]),
        "jobs_per_s": (s[0].jobs / makespan) if s and makespan else None,
        "rss_mb": med([x.rss_mb for x in s]),
    }


def fmt_n(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} MB"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def report(all_rows: list[Row], infos: dict[str, dict[str, Any]], env: dict[str, str]) -> None:
    print()
    print("flowray Ray benchmark — " + ", ".join(f"{k}: {v}" for k, v in env.items()))
    head = ["scenario", "row", "end to end", "after conn", "1st start", "makespan", "shutdown",
            "jobs/s", "peak RSS", "n", "fr/raw e2e", "after", "makespan"]
    rows: list[list[str]] = []
    problems: list[str] = []
    for r in all_rows:
        st = row_stats(r)
        raw = next((x for x in all_rows if x.scenario == r.scenario and x.kind == "raw"), None)
        rs = row_stats(raw) if raw and raw.samples and not raw.failure else {}
        if r.failure:
            rows.append([r.scenario, r.label, "FAILED", *[""] * (len(head) - 3)])
            problems.append(f"{r.scenario} / {r.label}: {r.failure}")
            continue
        fr = r.kind != "raw"
        on_ray = r.kind == "flowray"
        rows.append([
            r.scenario, r.label, fmt_s(st["e2e"]), fmt_s(st["after"]), fmt_s(st["first_start"]),
            fmt_s(st["makespan"]), fmt_s(st["shutdown"]), fmt_n(st["jobs_per_s"]),
            fmt_mb(st["rss_mb"]), str(len(r.samples)),
            fmt_r(ratio(st["e2e"], rs.get("e2e"))) if fr else "",
            fmt_r(ratio(st["after"], rs.get("after"))) if on_ray else "",
            fmt_r(ratio(st["makespan"], rs.get("makespan"))) if fr else "",
        ])
    print_table(head, rows)
    print()
    print("""\
end to end: process start to exit (Python, imports, ray.init, the run, shutdown).
after conn: from ray.init (flowray: RayCluster.connect) returning to the end, shutdown included;
  1st start: from there to the first step's (task's) command starting on a node (Ray starts
  the driver's worker processes meanwhile); makespan: from the first command's start to the
  last one's end, as the nodes saw them; shutdown: ray.shutdown (flowray: RayCluster.close,
  which also sweeps the nodes).
jobs/s: jobs / makespan. peak RSS: the driver's (the coordinator's) VmHWM. Medians over n runs.
fr/raw e2e, after, makespan: flowray's median / raw Ray's on the same cluster (below 1.00x:
  flowray is faster).""")
    print()
    print("targets:")
    for r in all_rows:
        if r.failure or r.kind == "raw":
            continue
        st = row_stats(r)
        raw = next((x for x in all_rows if x.scenario == r.scenario and x.kind == "raw"), None)
        rs = row_stats(raw) if raw and raw.samples and not raw.failure else {}
        if r.scenario == "tasks":
            x = ratio(st["after"], rs.get("after"))
            verdict = "-" if x is None else ("met" if x <= TARGET_TASKS else "NOT met")
            print(f"  tasks: flowray / raw Ray after connect {fmt_r(x)} "
                  f"(target <= {TARGET_TASKS:.2f}x): {verdict}; end to end "
                  f"{fmt_r(ratio(st['e2e'], rs.get('e2e')))}; makespan alone "
                  f"{fmt_r(ratio(st['makespan'], rs.get('makespan')))}")
        elif r.scenario == "gpu-sweep":
            x = ratio(st["makespan"], IDEAL_SWEEP_S)
            verdict = "-" if x is None else ("met" if x <= TARGET_SWEEP else "NOT met")
            print(f"  gpu-sweep: flowray makespan {fmt_s(st['makespan'])} = {fmt_r(x)} the "
                  f"ideal {IDEAL_SWEEP_S:g}s (target <= {TARGET_SWEEP:.2f}x): {verdict}; after "
                  f"connect {fmt_s(st['after'])} = {fmt_r(ratio(st['after'], IDEAL_SWEEP_S))}; "
                  f"raw Ray makespan {fmt_s(rs.get('makespan'))}")
        elif r.scenario == "throughput":
            print(f"  throughput ({r.label}): {fmt_n(st['jobs_per_s'])} jobs/s sustained, "
                  f"peak RSS {fmt_mb(st['rss_mb'])} (no target; raw Ray: "
                  f"{fmt_n(rs.get('jobs_per_s'))} tasks/s, {fmt_mb(rs.get('rss_mb'))})")
    print("clusters:")
    for name, info in infos.items():
        print(f"  {name}: {info.get('address', '-')}, {len(info['nodes'])} nodes "
              f"({describe(info['nodes'])}), "
              f"started in {info.get('cluster_start_s', 0):.1f}s")
    print("rows:")
    for r in all_rows:
        print(f"  {r.scenario} / {r.label}: {r.note}")
    if problems:
        print("problems:")
        for p in problems:
            print("  " + p)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare flowray's Ray dispatcher with plain Ray tasks, side by side, "
                    "on a multi-node Ray cluster started on this machine.")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed runs per row of tasks and gpu-sweep (default 5; --quick: 2)")
    p.add_argument("--throughput-repeat", type=int, default=None,
                   help="timed runs per row of throughput (default 1)")
    p.add_argument("--only", type=csv_choices(SCENARIOS), default=list(SCENARIOS),
                   help="scenarios, comma separated: tasks,gpu-sweep,throughput (default all)")
    p.add_argument("--tasks", type=int, default=200, help="jobs in the tasks scenario (200)")
    p.add_argument("--jobs", type=int, default=None,
                   help="jobs in the throughput flow (default 10000; --quick: 1000)")
    p.add_argument("--node-cpus", type=int, default=2,
                   help="CPUs each of the 3 Ray nodes offers (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="a short check: --repeat 2, --jobs 1000 (unless given)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds per run (default 1800)")
    p.add_argument("--python", default=sys.executable,
                   help="the Python that runs the drivers; it must import flowray and ray "
                        "(default: this one)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK / "ray",
                   help="default benchmarks/.work/ray")
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.add_argument("--no-bytecode-cache", action="store_true",
                   help="keep PYTHONDONTWRITEBYTECODE for the drivers")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.throughput_repeat is None:
        args.throughput_repeat = 1
    if args.jobs is None:
        args.jobs = 1000 if args.quick else 10000
    for name in ("repeat", "throughput_repeat", "tasks", "jobs", "node_cpus"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    # The clusters' nodes, and every driver, run without token authentication; nothing
    # outside this process tree may join them by accident.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    for key in ("RAY_ADDRESS", "FLOWRAY_ADDRESS", "CUDA_VISIBLE_DEVICES"):
        os.environ.pop(key, None)
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # Where the nodes unpack shipped workspaces: here, removed at the end.
    node_dir = work / "nodes"
    os.environ["FLOWRAY_NODE_DIR"] = str(node_dir)
    drivers = {"raw": write(work / "raw_ray_driver.py", RAW_DRIVER),
               "flowray": write(work / "flowray_driver.py", FLOWRAY_DRIVER)}
    try:
        import ray
    except ImportError:
        print("bench_ray.py needs Ray: pip install -e '.[ray]'", file=sys.stderr)
        return 2
    env = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "python": platform.python_version(),
        "ray": ray.__version__,
        "load": load_average(),
        "repeat": f"{args.repeat} (throughput {args.throughput_repeat})",
        "tasks": str(args.tasks),
        "throughput jobs": str(args.jobs),
        "node cpus": str(args.node_cpus),
    }
    all_rows: list[Row] = []
    infos: dict[str, dict[str, Any]] = {}
    try:
        for scenario in args.only:
            rows, info = run_scenario(args, scenario, work, drivers, log)
            all_rows += rows
            infos[scenario] = info
    finally:
        shutil.rmtree(node_dir, ignore_errors=True)
    env["load after"] = load_average()
    if args.json:
        out = []
        for r in all_rows:
            out.append({"scenario": r.scenario, "row": r.label, "note": r.note,
                        "status": "failed" if r.failure else "ok", "failure": r.failure,
                        "samples": [vars(s) for s in r.samples], **row_stats(r)})
        json.dump({"environment": env, "clusters": infos, "results": out}, sys.stdout,
                  indent=2)
        print()
    else:
        report(all_rows, infos, env)
    return 1 if any(r.failure for r in all_rows) else 0


if __name__ == "__main__":
    sys.exit(main())
