#!/usr/bin/env python3
"""The web page of `flowray serve` with a big run, in headless Chromium (issue goal: a run of
1,000 matrix cells renders its page in under 2 s).

Starts a real ``flowray serve`` (a free port, a temporary data dir), pushes a flow with one job
before a matrix job of ``--cells`` cells (``a`` × ``b``, each writing ``score=$((A*B))`` to
``$FLOWRAY_OUTPUT``) and one job after it, runs it through the API to its end, and a plain
one-job flow for comparison. Then, signed in through the page's own form in Debian's
``/usr/bin/chromium`` (Python Playwright), loads each page ``--repeat`` times (after one
warm-up load) and times it from navigation start (``performance.now()`` in the page) until it
shows everything:

- ``/runs/{id}`` of the plain run: its job's button and the header's badge ``success``;
- ``/runs/{id}`` of the big run: every cell ``s-success`` in the graph and the header's badge;
- ``/runs/{id}/sweep``: every row of the table with its badge ``success`` and the caption
  ``N cells of cells``;
- live: the run page opened on a second big run whose first job waits for a file, so the page
  is following before the cells start; the time from the run's last job's end (the record's
  ``ended``) to the page's badge saying ``success``.

Where each load's time went: when the page got the first and the last byte of the event
stream (Resource Timing), what came after it, and the main thread's busy, script, layout and
style time (CDP ``Performance.getMetrics``); and, without a browser, how long the service takes
to send the whole stream (``GET /runs/{id}/events`` read to its end with httpx).

``--before TREE`` measures the page of another flowray source tree too (a ``git worktree`` or
``git archive`` of main), interleaved load by load with this one on a copy of the same data,
with the ratio. ``--data-dir DIR`` keeps the service's data there and reuses the finished runs
it has (to measure a change to the page without running the flow again). Needs the ``server``
extra, Playwright (``pip install playwright``; its own browsers are not used) and Debian's
chromium.
"""

from __future__ import annotations

import argparse
import importlib.util
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
LOGS = REPO / "benchmarks" / ".work" / "web"  # the services' output, kept (gitignored)
CHROMIUM = Path("/usr/bin/chromium")
GOAL_S = 2.0
TERMINAL = {"success", "failure", "cancelled", "skipped"}
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
PLAIN = "name: plain\njobs:\n  only:\n    steps:\n      - run: echo hello\n"

# When the page got the first and the last byte of the run's event stream (ms since navigation
# start), whatever reads it (the stream ends after run.finished).
EVENT_TIMES = """() => {
  const got = performance.getEntriesByType("resource").filter((e) => e.name.includes("/events"));
  const last = got[got.length - 1];
  return last ? [last.responseStart, last.responseEnd] : [0, 0];
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_terminal(client: httpx.Client, run_id: str, *, poll: float) -> dict[str, Any]:
    """The run's summary once its status is terminal (at most 15 minutes)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        got: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}").json()
        if got["status"] in TERMINAL:
            return got
        time.sleep(poll)
    raise SystemExit(f"run {run_id} did not end in 15 minutes")


class Service:
    """One ``flowray serve`` of the flowray in ``tree``, on a free port, its data in ``data``;
    its output in benchmarks/.work/web/."""

    def __init__(self, data: Path, *extra: str, tree: Path = REPO) -> None:
        self.data = data
        self.url = f"http://127.0.0.1:{free_port()}"
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = open(LOGS / f"serve-{self.url.rsplit(':', 1)[1]}.log", "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        # The flowray of ``tree``: first on the path (``-m`` puts the working folder first).
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowray", "serve", "--port", self.url.rsplit(":", 1)[1],
             "--data-dir", str(data), *extra], stdout=self.log, stderr=subprocess.STDOUT,
            env=env, cwd=tree)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"flowray serve exited {self.proc.returncode}: see "
                                 f"{self.log.name}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.proc.kill()
            self.proc.wait()
            raise SystemExit(f"flowray serve did not answer in 120 s: see {self.log.name}")
        self.token = (data / "admin-token").read_text().strip()
        self.client = httpx.Client(base_url=self.url, timeout=120,
                                   headers={"Authorization": f"Bearer {self.token}"})

    def push(self, name: str, text: str) -> None:
        got = self.client.put(f"/api/v1/flows/{name}", json={"text": text})
        if got.status_code not in (200, 201):
            raise SystemExit(f"pushing {name}: {got.status_code} {got.text}")

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def sweep_flow(a: int, b: int, gate: Path | None = None) -> str:
    """The flow with ``a * b`` matrix cells between a job before and a job after them; with a
    ``gate``, the job before waits until that file exists."""
    wait = f"while [ ! -e '{gate}' ]; do sleep 0.05; done; " if gate else ""
    return (
        f"name: sweep{'-live' if gate else ''}\n"
        "jobs:\n"
        "  prepare:\n"
        "    steps:\n"
        f"      - run: {wait}echo ready\n"
        "  cells:\n"
        "    needs: prepare\n"
        # Fractional CPUs: on a 2-core machine whole ones would run 2 cells at a time.
        "    resources: {cpus: 0.25}\n"
        "    strategy:\n"
        "      fail-fast: false\n"
        "      matrix:\n"
        f"        a: [{', '.join(str(i) for i in range(a))}]\n"
        f"        b: [{', '.join(str(i) for i in range(b))}]\n"
        "    env:\n"
        "      A: ${{ matrix.a }}\n"
        "      B: ${{ matrix.b }}\n"
        "    outputs:\n"
        "      score: ${{ steps.score.outputs.score }}\n"
        "    steps:\n"
        "      - id: score\n"
        "        run: echo \"score=$((A*B))\" >> \"$FLOWRAY_OUTPUT\"\n"
        "  report:\n"
        "    needs: cells\n"
        "    steps:\n"
        "      - run: echo done\n"
    )


def axes(cells: int) -> tuple[int, int]:
    """Two matrix axes whose product is ``cells`` (40 × 25 for 1,000)."""
    b = max(d for d in range(1, int(cells ** 0.5) + 1) if cells % d == 0)
    return cells // b, b


def start_run(service: Service, flow: str) -> str:
    got = service.client.post(f"/api/v1/flows/{flow}/runs", json={})
    if got.status_code not in (200, 201, 202):
        raise SystemExit(f"starting {flow}: {got.status_code} {got.text}")
    return str(got.json()["id"])


def finished_run(service: Service, flow: str, reuse: bool) -> tuple[str, float]:
    """A successful run of ``flow``: one the data dir has already (``reuse``), else a new one;
    its id and how long it took to run (0 when reused)."""
    if reuse:
        runs = service.client.get("/api/v1/runs", params={"flow": flow,
                                                          "status": "success"}).json()["runs"]
        if runs:
            return str(runs[0]["id"]), 0.0
    t0 = time.perf_counter()
    run_id = start_run(service, flow)
    done = wait_terminal(service.client, run_id, poll=0.5)
    if done["status"] != "success":
        raise SystemExit(f"run {run_id} of {flow} ended {done['status']}")
    return run_id, time.perf_counter() - t0


def stream_time(service: Service, run_id: str) -> tuple[float, int]:
    """Seconds to read the run's whole event stream (to ``run.finished``), and its events."""
    t0 = time.perf_counter()
    count = 0
    with service.client.stream("GET", f"/api/v1/runs/{run_id}/events") as answer:
        for line in answer.iter_lines():
            if line.startswith("data: "):
                count += 1
    return time.perf_counter() - t0, count


@contextmanager
def browser_pages(services: list[tuple[str, str]]) -> Iterator[list[Any]]:
    """A Chromium page for each (base URL, token), each in its own context (its own cookies:
    the services share the host 127.0.0.1), signed in through the page's own form."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            pages = []
            for base, token in services:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.set_default_timeout(300_000)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(base + "/sign-in")
                page.get_by_label("Token").fill(token)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(base + "/flows")
                pages.append(page)
            yield pages
        finally:
            browser.close()
    if errors:
        raise SystemExit(f"the page failed: {errors}")


def metrics(cdp: Any) -> dict[str, float]:
    got = cdp.send("Performance.getMetrics")["metrics"]
    return {m["name"]: float(m["value"]) for m in got}


def timed_load(page: Any, url: str, done: str) -> dict[str, float]:
    """Load ``url`` in ``page`` and wait until the expression ``done`` is true; the time that
    took from navigation start, and where it went (ms)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
    before = metrics(cdp)
    page.goto(url, wait_until="commit")
    shown = float(page.wait_for_function(
        f"() => ({done}) ? performance.now() : false", polling="raf").json_value())
    after = metrics(cdp)
    first, last = page.evaluate(EVENT_TIMES)
    cdp.detach()

    def spent(name: str) -> float:
        return (after.get(name, 0.0) - before.get(name, 0.0)) * 1000

    return {"shown": shown, "first_event": float(first), "last_event": float(last),
            "script": spent("ScriptDuration"),
            "layout": spent("LayoutDuration"), "style": spent("RecalcStyleDuration"),
            "busy": spent("TaskDuration")}


def run_page_done(cells: int) -> str:
    graph = (f"document.querySelectorAll('.graph .cell.s-success').length === {cells}"
             if cells else "document.querySelector('.graph .job-button.s-success')")
    return f"{graph} && document.querySelector('.run-head h1 .status.s-success')"


def sweep_done(cells: int, job: str) -> str:
    return (f"document.querySelectorAll('table.sweep tbody .status.s-success').length === {cells}"
            f" && document.querySelector('table.sweep caption')?.textContent === "
            f"'{cells} cells of {job}'")


def live_case(service: Service, page: Any, cells: int, gate: Path) -> dict[str, float]:
    """Open the run page while a big run goes: its first job waits for a file, so the page is
    open and following before the cells start. From the run's last job's end to the page's
    badge saying success (s), and the page's main-thread time while it followed the run."""
    service.push("sweep-live", sweep_flow(*axes(cells), gate=gate))
    run_id = start_run(service, "sweep-live")
    page.goto(f"{service.url}/runs/{run_id}", wait_until="commit")
    page.wait_for_selector(".graph .job-button.s-running")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
    before = metrics(cdp)
    gate.touch()
    shown_at = float(page.wait_for_function(
        f"() => ({run_page_done(cells)}) ? performance.timeOrigin + performance.now() : false",
        polling="raf", timeout=900_000).json_value()) / 1000
    after = metrics(cdp)
    cdp.detach()
    gate.unlink()
    record = wait_terminal(service.client, run_id, poll=0.2)
    if record["status"] != "success":
        raise SystemExit(f"the live run {run_id} ended {record['status']}")
    jobs = (service.client.get(f"/api/v1/runs/{run_id}").json()["record"] or {})["jobs"]
    last_job = max(float(job["ended"]) for job in jobs.values())
    return {"lag": shown_at - last_job, "run_lag": shown_at - float(record["ended"]),
            "script": (after["ScriptDuration"] - before["ScriptDuration"]) * 1000,
            "task": (after["TaskDuration"] - before["TaskDuration"]) * 1000,
            "took": float(record["ended"]) - float(record["started"])}


def summary(loads: list[dict[str, float]]) -> dict[str, float]:
    """The median of each measure of ``loads``, and the max of the time shown."""
    got = {key: statistics.median(x[key] for x in loads) for key in loads[0]}
    got["max"] = max(x["shown"] for x in loads)
    return got


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--max-runs", type=int, default=4)
    parser.add_argument("--before", type=Path, metavar="TREE",
                        help="a flowray source tree (e.g. a git worktree of main) whose page "
                             "is measured too, side by side, on a copy of the same data")
    parser.add_argument("--data-dir", type=Path,
                        help="keep the service's data here and reuse its finished runs")
    parser.add_argument("--no-live", action="store_true", help="leave out the live case")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} not found (Debian's chromium package)")
    if importlib.util.find_spec("playwright") is None:
        raise SystemExit("Python Playwright is not installed (pip install playwright)")
    if args.before and not (args.before / "flowray" / "web" / "static").is_dir():
        raise SystemExit(f"{args.before} is not a flowray tree with the web page")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}; "
          + subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True,
                           check=False).stdout.strip())
    root = Path(tempfile.mkdtemp(prefix="flowray-bench-web-"))
    data = args.data_dir.resolve() if args.data_dir else root / "data"
    trees = [("this tree", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    services: list[Service] = []
    a, b = axes(args.cells)
    try:
        # The runs, made (or found) by this tree's service; a tree measured beside it gets a
        # copy of the data dir, so both pages read the same events.
        service = Service(data, "--max-runs", str(args.max_runs))
        try:
            service.push("sweep", sweep_flow(a, b))
            service.push("plain", PLAIN)
            plain_id, _ = finished_run(service, "plain", args.data_dir is not None)
            big_id, took = finished_run(service, "sweep", args.data_dir is not None)
            if took:
                print(f"the {args.cells}-cell run took {took:.1f} s", file=sys.stderr)
        finally:
            service.stop()
        for name, tree in trees:
            copy = data
            if name != "this tree":
                copy = root / "data-before"
                shutil.copytree(data, copy, ignore=shutil.ignore_patterns("workspaces"))
            services.append(Service(copy, "--max-runs", str(args.max_runs), tree=tree))
            served = services[-1].client.get("/static/js/runstate.js").content
            if served != (tree / "flowray/web/static/js/runstate.js").read_bytes():
                raise SystemExit(f"the service of {tree} does not serve that tree's page")
        streams = [stream_time(services[0], big_id) for _ in range(5)]
        plain_stream = stream_time(services[0], plain_id)
        cases = [("plain run: /runs/{id}", f"/runs/{plain_id}", run_page_done(0)),
                 (f"{args.cells} cells: /runs/{{id}}", f"/runs/{big_id}",
                  run_page_done(args.cells)),
                 (f"{args.cells} cells: /runs/{{id}}/sweep", f"/runs/{big_id}/sweep",
                  sweep_done(args.cells, "cells"))]
        results: dict[tuple[str, str], dict[str, float]] = {}
        lives: dict[str, dict[str, float]] = {}
        with browser_pages([(s.url, s.token) for s in services]) as pages:
            for case, path, done in cases:
                loads: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
                for i in range(args.repeat + 1):  # the first: a warm-up, the files cached
                    for (name, _), service, page in zip(trees, services, pages, strict=True):
                        got = timed_load(page, service.url + path, done)
                        if i:
                            loads[name].append(got)
                for name, _ in trees:
                    results[case, name] = summary(loads[name])
                print(f"  {case} done", file=sys.stderr)
            if not args.no_live:
                for (name, _), service, page in zip(trees, services, pages, strict=True):
                    lives[name] = live_case(service, page, args.cells,
                                            root / f"gate-{len(lives)}")
    finally:
        for service in services:
            service.stop()
        shutil.rmtree(root, ignore_errors=True)

    header = ["page", "tree", "median", "max", "/goal", "1st event", "last event",
              "after it", "busy", "script", "layout", "style"]
    if args.before:
        header.append("this/before")
    rows = [header]
    for case, _, _ in cases:
        for name, _ in trees:
            r = results[case, name]
            line = [case, name, f"{r['shown'] / 1000:.2f} s", f"{r['max'] / 1000:.2f} s",
                    f"{r['shown'] / 1000 / GOAL_S:.2f}x", f"{r['first_event']:.0f} ms",
                    f"{r['last_event']:.0f} ms", f"{r['shown'] - r['last_event']:.0f} ms",
                    f"{r['busy']:.0f} ms", f"{r['script']:.0f} ms", f"{r['layout']:.0f} ms",
                    f"{r['style']:.0f} ms"]
            if args.before:
                ratio = r["shown"] / results[case, "before"]["shown"]
                line.append(f"{ratio:.2f}x" if name == "this tree" else "")
            rows.append(line)
    print(f"{args.repeat} loads each, median; goal: under {GOAL_S:.0f} s (met when the max is)")
    print_table(rows)
    print()
    med = statistics.median(s for s, _ in streams)
    print(f"the service alone: the {streams[0][1]} events of the {args.cells}-cell run streamed"
          f" to their end in {med * 1000:.0f} ms (median of {len(streams)}, httpx); the plain "
          f"run's {plain_stream[1]} in {plain_stream[0] * 1000:.0f} ms")
    for name, live in lives.items():
        print(f"live ({name}): a {args.cells}-cell run ({live['took']:.1f} s) followed by an "
              f"open page: its last job's end to the badge saying success {live['lag']:.2f} s "
              f"(the run's end to it {live['run_lag']:.2f} s; goal {GOAL_S:.0f} s: "
              f"{'met' if live['lag'] < GOAL_S else 'NOT met'}); the page's main thread was "
              f"busy {live['task']:.0f} ms while it followed ({live['script']:.0f} ms script)")


if __name__ == "__main__":
    main()
