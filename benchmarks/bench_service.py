#!/usr/bin/env python3
"""`flowray serve` measured (issue 12), each case side by side where it has a baseline:

- ``start``: a trivial flow (one job, ``true``) started through the API until its record is
  terminal (POST, then GET until the status is terminal), against ``flowray.start(...).wait()``
  in this process; goal <= 1.5x;
- ``list``: ``GET /api/v1/runs`` (a page of 50: newest, by flow, by status, and 100 pages
  deep with ``before``) with 10,000 runs in the history, p50 and p99, on SQLite and on
  PostgreSQL (a throwaway cluster of Debian's postgresql, as the tests make);
- ``webhooks``: 500 signed deliveries sent 50 at a time: all accepted, one run each, none
  lost (counted in the database), deliveries per second;
- ``schedules``: 1,000 flows scheduled every minute: the lag of each fire (run queued minus
  its scheduled time), p50/p99/max; goal p99 under 1 s;
- ``memory``: the service process's resident memory idle and with 100 runs going.

Every case checks what it measures (statuses, counts) or says FAILED. Needs the ``server``
extra (and, for PostgreSQL, Debian's postgresql and pytest, for the tests' fixture).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
TERMINAL = {"success", "failure", "cancelled", "skipped"}
TRIVIAL = "name: {name}\njobs:\n  a:\n    steps:\n      - run: 'true'\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


class Service:
    """One `flowray serve` process in a temporary data dir."""

    def __init__(self, root: Path, *extra: str, db: str | None = None) -> None:
        self.data = root / f"data-{time.monotonic_ns()}"
        self.port = free_port()
        args = [sys.executable, "-m", "flowray", "serve", "--port", str(self.port),
                "--data-dir", str(self.data), *extra]
        if db:
            args += ["--db", db]
        self.log = open(root / f"serve-{self.port}.log", "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"flowray serve exited {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.token = (self.data / "admin-token").read_text().strip()
        self.client = httpx.Client(base_url=self.url, timeout=120,
                                   headers={"Authorization": f"Bearer {self.token}"})

    def push(self, name: str, text: str) -> None:
        got = self.client.put(f"/api/v1/flows/{name}", json={"text": text})
        assert got.status_code in (200, 201), got.text

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_terminal(client: httpx.Client, run_id: str, poll: float = 0.01) -> dict[str, Any]:
    while True:
        got: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}").json()
        if got["status"] in TERMINAL:
            return got
        time.sleep(poll)


# --------------------------------------------------------------------------- cases

def case_start(root: Path, repeat: int) -> list[list[str]]:
    import flowray

    work = root / "direct"
    work.mkdir()
    flow = work / "trivial.yaml"
    flow.write_text(TRIVIAL.format(name="trivial"))
    service = Service(root)
    try:
        service.push("trivial", TRIVIAL.format(name="trivial"))
        api: list[float] = []
        direct: list[float] = []
        for i in range(repeat + 1):  # the first of each is a warm-up
            t0 = time.perf_counter()
            record = flowray.start(str(flow), workdir=str(work)).wait()
            d = time.perf_counter() - t0
            assert record.status.value == "success"
            t0 = time.perf_counter()
            run_id = service.client.post("/api/v1/flows/trivial/runs", json={}).json()["id"]
            done = wait_terminal(service.client, run_id)
            a = time.perf_counter() - t0
            assert done["status"] == "success", done
            if i:
                api.append(a)
                direct.append(d)
    finally:
        service.stop()
    ratio = statistics.median(api) / statistics.median(direct)
    return [["flowray.start(...).wait()", ms(statistics.median(direct)), "1.00x", ""],
            ["API: POST .../runs, GET until terminal", ms(statistics.median(api)),
             f"{ratio:.2f}x", "goal <= 1.5x: " + ("met" if ratio <= 1.5 else "NOT met")]]


def seed_runs(db_url: str, n: int) -> None:
    """``n`` ended runs of 10 flows written straight into the database (what 10,000 runs of
    history look like to ``GET /runs``)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_url)
    now = time.time()
    with engine.begin() as conn:
        for f in range(10):
            conn.execute(sqlalchemy.text(
                "UPDATE flows SET last_number = :n WHERE name = :f"), {"n": n, "f": f"f{f}"})
        rows = [{"id": f"seed-{i:06d}", "flow": f"f{i % 10}", "version": 1, "number": i + 1,
                 "status": "success" if i % 7 else "failure", "trigger": "manual",
                 "inputs": "{}", "event": "{}", "created": now - (n - i),
                 "started": now - (n - i), "ended": now - (n - i) + 1, "exit_code": 0,
                 "group_max": 1, "cancel_requested": False} for i in range(n)]
        conn.execute(sqlalchemy.text(
            "INSERT INTO runs (id, flow, version, number, status, trigger, inputs, event, "
            "created, started, ended, exit_code, group_max, cancel_requested) VALUES (:id, "
            ":flow, :version, :number, :status, :trigger, :inputs, :event, :created, "
            ":started, :ended, :exit_code, :group_max, :cancel_requested)"), rows)
    engine.dispose()


def case_list(root: Path, db_name: str, db: str | None, n: int, requests: int
              ) -> list[list[str]]:
    service = Service(root, db=db)
    try:
        for f in range(10):
            service.push(f"f{f}", TRIVIAL.format(name=f"f{f}"))
        url = db.replace("postgresql://", "postgresql+psycopg://") if db else \
            f"sqlite:///{service.data / 'flowray.db'}"
        seed_runs(url, n)
        total = len(service.client.get("/api/v1/runs", params={"limit": 1000}).json()["runs"])
        assert total == 1000
        cursor = None
        for _ in range(100):  # a cursor 100 pages of 50 deep
            page = service.client.get("/api/v1/runs", params={
                "limit": 50, **({"before": cursor} if cursor else {})}).json()
            cursor = page["next"]
        rows = []
        for label, params in (("newest 50", {"limit": 50}),
                              ("flow=f3", {"flow": "f3", "limit": 50}),
                              ("status=failure", {"status": "failure", "limit": 50}),
                              ("100 pages deep", {"limit": 50, "before": cursor})):
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                got = service.client.get("/api/v1/runs", params=params)
                times.append(time.perf_counter() - t0)
                assert got.status_code == 200 and len(got.json()["runs"]) == 50
            rows.append([f"GET /runs {label} ({db_name}, {n} runs)", ms(pct(times, 50)),
                         ms(pct(times, 99)), ""])
    finally:
        service.stop()
    return rows


def case_webhooks(root: Path, total: int, at_once: int) -> list[list[str]]:
    import hashlib
    import hmac

    service = Service(root, "--max-runs", "8")
    try:
        service.client.put("/api/v1/secrets/HOOK", json={"value": "bench-hook-key"})
        service.push("hooked", "name: hooked\ntriggers:\n  webhook: {secret: HOOK}\n"
                               "jobs:\n  a:\n    steps:\n      - run: 'true'\n")
        bodies = [json.dumps({"n": i}).encode() for i in range(total)]

        def send(i: int) -> int:
            sig = "sha256=" + hmac.new(b"bench-hook-key", bodies[i], hashlib.sha256).hexdigest()
            with httpx.Client(timeout=120) as c:
                return c.post(f"{service.url}/hooks/hooked", content=bodies[i], headers={
                    "X-Hub-Signature-256": sig, "X-GitHub-Delivery": f"d-{i}",
                    "content-type": "application/json"}).status_code

        t0 = time.perf_counter()
        with ThreadPoolExecutor(at_once) as pool:
            codes = list(pool.map(send, range(total)))
        took = time.perf_counter() - t0
        accepted = codes.count(202)
        runs = []
        cursor = None
        while True:
            page = service.client.get("/api/v1/runs", params={
                "flow": "hooked", "limit": 1000, **({"before": cursor} if cursor else {})})
            runs += page.json()["runs"]
            cursor = page.json()["next"]
            if not cursor:
                break
        ok = accepted == total and len(runs) == total
    finally:
        service.stop()
    return [[f"{total} signed deliveries, {at_once} at a time",
             f"{total / took:.0f}/s", f"{took:.2f} s",
             f"{accepted} accepted, {len(runs)} runs" + ("" if ok else "  FAILED")]]


def case_schedules(root: Path, flows: int) -> list[list[str]]:
    service = Service(root, "--drain", "0", "--max-runs", "4")
    try:
        t0 = time.perf_counter()
        for i in range(flows):
            service.push(f"s{i:04d}", f"name: s{i:04d}\ntriggers:\n  schedule:\n"
                                      "    - cron: '* * * * *'\njobs:\n  a:\n    steps:\n"
                                      "      - run: 'true'\n")
        pushed = time.perf_counter() - t0
        if 60 - time.time() % 60 < 5:  # too close to the minute: wait for the next one
            time.sleep(6)
        minute = (int(time.time() // 60) + 1) * 60
        time.sleep(max(0.0, minute - time.time() + 3))
        runs: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = service.client.get("/api/v1/runs", params={
                "trigger": "schedule", "limit": 1000, **({"before": cursor} if cursor else {})})
            runs += page.json()["runs"]
            cursor = page.json()["next"]
            if not cursor:
                break
        fired = [r for r in runs if abs(r["created"] - minute) < 30]
        lags = [r["created"] - minute for r in fired]
    finally:
        service.stop()
    ok = len(fired) == flows and len({r["flow"] for r in fired}) == flows
    p99 = pct(lags, 99) if lags else float("nan")
    return [[f"{flows} flows every minute: fire lag", ms(pct(lags, 50)) if lags else "-",
             ms(p99), f"max {ms(max(lags)) if lags else '-'}; {len(fired)} runs; goal p99 "
             f"< 1 s: {'met' if p99 < 1 else 'NOT met'}" + ("" if ok else "  FAILED")],
            [f"pushing {flows} flows (validate + store)", f"{flows / pushed:.0f}/s",
             f"{pushed:.1f} s", ""]]


def case_memory(root: Path, runs: int) -> list[list[str]]:
    gate = root / "gate"
    service = Service(root, "--max-runs", str(runs), "--drain", "0")
    try:
        service.push("hold", "name: hold\njobs:\n  a:\n    steps:\n      - run: while [ ! -e "
                             f"{gate} ]; do sleep 0.5; done\n")
        idle = service.rss_mb()
        ids = [service.client.post("/api/v1/flows/hold/runs", json={}).json()["id"]
               for _ in range(runs)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            page = service.client.get("/api/v1/runs", params={"status": "running",
                                                              "limit": 1000}).json()
            if len(page["runs"]) == runs:
                break
            time.sleep(0.5)
        time.sleep(2)
        busy = service.rss_mb()
        gate.touch()
        for run_id in ids:
            assert wait_terminal(service.client, run_id, poll=0.2)["status"] == "success"
        after = service.rss_mb()
    finally:
        service.stop()
    return [["service RSS idle", f"{idle:.0f} MB", "", ""],
            [f"service RSS with {runs} runs going", f"{busy:.0f} MB", "",
             f"{(busy - idle) / runs:.2f} MB a run"],
            ["service RSS after they ended", f"{after:.0f} MB", "", ""]]


@contextmanager
def postgres() -> Iterator[str | None]:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from pgfixture import PostgresFactory, find_bindir
    except ImportError:
        yield None
        return
    bindir = find_bindir()
    if bindir is None:
        yield None
        return
    factory = PostgresFactory(bindir)
    try:
        cluster = factory()
        yield cluster.url.replace("postgresql+psycopg://", "postgresql://")
    finally:
        factory.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="start,list,webhooks,schedules,memory")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10000)
    args = parser.parse_args()
    cases = args.cases.split(",")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    root = Path(tempfile.mkdtemp(prefix="flowray-bench-service-"))
    rows: list[list[str]] = []
    steps: dict[str, Callable[[], list[list[str]]]] = {
        "start": lambda: case_start(root, args.repeat),
        "webhooks": lambda: case_webhooks(root, 500, 50),
        "schedules": lambda: case_schedules(root, 1000),
        "memory": lambda: case_memory(root, 100),
    }
    try:
        for case in cases:
            if case == "list":
                rows += case_list(root, "SQLite", None, args.runs, 200)
                with postgres() as url:
                    if url is None:
                        rows.append(["GET /runs (PostgreSQL)", "-", "-",
                                     "skipped: Debian's postgresql is not installed"])
                    else:
                        rows += case_list(root, "PostgreSQL", url, args.runs, 200)
            else:
                rows += steps[case]()
            print(f"  {case} done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    widths = [max(len(r[i]) for r in [["case", "p50 / median / rate", "p99 / time", "notes"],
                                      *rows]) for i in range(4)]
    for row in [["case", "p50 / median / rate", "p99 / time", "notes"], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
