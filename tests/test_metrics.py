"""Prometheus metrics (SPEC "Metrics"): real runs folded into `flowray.runtime.metrics.Metrics`,
`flowray run --metrics-port` scraped over real HTTP, the exposition and the files in cluster/
checked by Debian's promtool, a real Prometheus scraping flowray, and the Grafana dashboard's
queries checked against what flowray exposes.

No GPU exists here: the GPU test hands the local pool a GPU id ("0") that nothing uses, which is
all the metrics see of a GPU (the id in job.started).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Workspace, free_ports
from gitfixtures import Forge

import flowray
from flowray.runtime.metrics import WEBHOOK_RESULTS, Metrics, MetricsServerError, serve_metrics

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
NO_PROMETHEUS = "Debian's prometheus package is not installed (promtool, prometheus)"

# A step that waits until the test creates the file `go` in the workspace.
WAIT_FOR_GO = "while [ ! -e go ]; do sleep 0.05; done"

FLOW = f"""
    name: metrics-demo
    jobs:
      build:
        steps:
          - run: echo built
          - run: exit 3
            continue-on-error: true
      test:
        needs: build
        strategy: {{matrix: {{n: [1, 2]}}, fail-fast: false}}
        steps:
          - run: {WAIT_FOR_GO}
          - run: test ${{{{ matrix.n }}}} = 1
      never:
        if: false
        steps: [{{run: 'true'}}]
"""


# ----------------------------------------------------------------------------- helpers


def samples(text: str) -> dict[str, float]:
    """The exposition's samples as ``name{label="value",...}`` (labels sorted) -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs else "")
        out[key] = float(value)
    return out


def exposed_names(text: str) -> set[str]:
    """Every series name the exposition declares (histograms with their three suffixes)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def rendered(metrics: Metrics) -> str:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return body.decode()


def wait_until(check: Any) -> Any:
    """Call ``check`` until it returns something true (the test's timeout bounds it)."""
    while True:
        value = check()
        if value:
            return value
        time.sleep(0.05)


def scrape(port: int) -> tuple[str, str] | None:
    """GET /metrics on 127.0.0.1:``port``: (body, content type), None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
            return resp.read().decode(), resp.headers["Content-Type"]
    except (urllib.error.URLError, ConnectionError):
        return None


def start_demo(ws: Workspace, metrics: Metrics, **kwargs: Any) -> tuple[flowray.Run, Any]:
    ws.flow(FLOW)
    # CPU slots for both matrix cells at once, whatever this machine has.
    run = flowray.start("flow.yaml", workdir=ws.root, backend="local", cpus=4, **kwargs)
    return run, metrics.watch(run, flow="metrics-demo")


def finish(ws: Workspace, run: flowray.Run, watcher: Any) -> None:
    (ws.root / "go").touch()
    run.wait()
    watcher.join()


# ----------------------------------------------------------------------------- unit


def test_a_runs_events_fold_into_counts_histograms_and_gauges(ws: Workspace) -> None:
    metrics = Metrics()
    run, watcher = start_demo(ws, metrics)
    # Mid-run: both matrix cells of `test` wait for the file; build ended, `never` skipped.
    mid = wait_until(lambda: (s := samples(rendered(metrics)))
                     and s['flowray_jobs{state="running"}'] == 2 and s)
    assert mid['flowray_runs{state="running"}'] == 1
    assert mid['flowray_jobs{state="queued"}'] == 0
    assert mid['flowray_jobs_total{flow="metrics-demo",status="success"}'] == 1
    assert mid['flowray_jobs_total{flow="metrics-demo",status="skipped"}'] == 1
    assert 'flowray_runs_total{flow="metrics-demo",status="failure",trigger="api"}' not in mid
    finish(ws, run, watcher)

    text = rendered(metrics)
    got = samples(text)
    flow = 'flow="metrics-demo"'
    assert got[f'flowray_runs_total{{{flow},status="failure",trigger="api"}}'] == 1
    assert got[f'flowray_jobs_total{{{flow},status="success"}}'] == 2  # build, test.1
    assert got[f'flowray_jobs_total{{{flow},status="failure"}}'] == 1  # test.2
    assert got[f'flowray_jobs_total{{{flow},status="skipped"}}'] == 1  # never
    # build's two steps (continue-on-error keeps the second a success), test.1's two, and
    # test.2's wait; its `test 2 = 1` fails.
    assert got['flowray_steps_total{kind="run",status="success"}'] == 5
    assert got['flowray_steps_total{kind="run",status="failure"}'] == 1
    assert got[f'flowray_run_duration_seconds_count{{{flow}}}'] == 1
    assert got[f'flowray_run_duration_seconds_sum{{{flow}}}'] > 0
    assert got[f'flowray_run_duration_seconds_bucket{{{flow},le="+Inf"}}'] == 1
    assert got[f'flowray_job_duration_seconds_count{{{flow}}}'] == 3  # the skipped job never ran
    assert got['flowray_step_duration_seconds_count{kind="run"}'] == 6
    assert got['flowray_job_queue_wait_seconds_count{resource="cpu"}'] == 3
    assert got['flowray_job_queue_wait_seconds_count{resource="gpu"}'] == 0
    assert got['flowray_action_cache_requests_total{result="hit"}'] == 0
    assert got['flowray_action_cache_requests_total{result="miss"}'] == 0
    assert f'flowray_gpu_seconds_total{{{flow}}}' not in got  # no job held a GPU
    # Back to zero once the run ended.
    for state in ("queued", "running"):
        assert got[f'flowray_runs{{state="{state}"}}'] == 0
        assert got[f'flowray_jobs{{state="{state}"}}'] == 0
    assert got[f'flowray_build_info{{version="{flowray.__version__}"}}'] == 1
    # No label holds a run id, a job key or a step.
    labels = {k for key in got for k in re.findall(r'(\w+)="', key)}
    assert labels <= {"flow", "trigger", "status", "kind", "result", "resource", "state",
                      "version", "le"}
    assert run.id not in text and "test.2" not in text
    assert all(name.startswith("flowray_") for name in exposed_names(text))


def test_gpu_jobs_count_gpu_seconds_gpu_queue_wait_and_slots(ws: Workspace) -> None:
    ws.flow(f"""
        name: gpu-demo
        jobs:
          train:
            resources: {{gpus: 1}}
            steps:
              - run: |
                  echo "cuda $CUDA_VISIBLE_DEVICES"
                  {WAIT_FOR_GO}
                  sleep 0.2
    """)
    metrics = Metrics()
    metrics.track_gpu_slots(1)
    # The GPU id is made up (no GPU here): the pool hands it to the job, which ignores it.
    run = flowray.start("flow.yaml", workdir=ws.root, backend="local", gpus=["0"])
    watcher = metrics.watch(run, flow="gpu-demo")
    mid = wait_until(lambda: (s := samples(rendered(metrics)))
                     and s['flowray_jobs{state="running"}'] == 1 and s)
    assert mid['flowray_gpu_slots{state="busy"}'] == 1
    assert mid['flowray_gpu_slots{state="free"}'] == 0
    finish(ws, run, watcher)
    got = samples(rendered(metrics))
    assert got['flowray_runs_total{flow="gpu-demo",status="success",trigger="api"}'] == 1
    assert got['flowray_job_queue_wait_seconds_count{resource="gpu"}'] == 1
    assert got['flowray_job_queue_wait_seconds_count{resource="cpu"}'] == 0
    # One GPU held for at least the step's 0.2 s sleep, and no longer than the job took.
    gpu_seconds = got['flowray_gpu_seconds_total{flow="gpu-demo"}']
    assert 0.2 <= gpu_seconds <= got['flowray_job_duration_seconds_sum{flow="gpu-demo"}']
    assert got['flowray_gpu_slots{state="busy"}'] == 0
    assert got['flowray_gpu_slots{state="free"}'] == 1


CACHED_ACTION = textwrap.dedent("""\
    name: Add
    cache: true
    inputs:
      a: {type: integer, required: true}
    outputs:
      sum: {type: integer}
    runs:
      using: python
      main: add.py
""")


def test_action_result_cache_hits_and_misses(ws: Workspace, forge: Forge) -> None:
    forge.publish("acme/add", {
        "action-datatorch.yaml": CACHED_ACTION,
        "add.py": "import json, os\nprint('::sum::' + json.dumps(int(os.environ['INPUT_A']) + 1))\n",
    }, "v1")
    ws.flow("""
        name: cached
        jobs:
          j:
            steps:
              - {id: add, action: acme/add@v1, with: {a: 1}}
              - run: echo "${{ steps.add.outputs.sum }}"
    """)
    metrics = Metrics()
    for _ in range(2):  # the first run fills the cache, the second reads it
        run = flowray.start("flow.yaml", workdir=ws.root, backend="local")
        watcher = metrics.watch(run, flow="cached")
        run.wait()
        watcher.join()
    got = samples(rendered(metrics))
    assert got['flowray_action_cache_requests_total{result="miss"}'] == 1
    assert got['flowray_action_cache_requests_total{result="hit"}'] == 1
    assert got['flowray_steps_total{kind="python",status="success"}'] == 2
    assert got['flowray_steps_total{kind="run",status="success"}'] == 2
    assert got['flowray_runs_total{flow="cached",status="success",trigger="api"}'] == 2


def test_runs_at_once_feed_one_metrics(ws: Workspace) -> None:
    metrics = Metrics()
    first, first_watcher = start_demo(ws, metrics)
    second = flowray.start("flow.yaml", workdir=ws.root, backend="local", cpus=4)
    second_watcher = metrics.watch(second, flow="metrics-demo")
    mid = wait_until(lambda: (s := samples(rendered(metrics)))
                     and s['flowray_jobs{state="running"}'] == 4 and s)
    assert mid['flowray_runs{state="running"}'] == 2
    finish(ws, first, first_watcher)
    second.wait()
    second_watcher.join()
    got = samples(rendered(metrics))
    assert got['flowray_runs_total{flow="metrics-demo",status="failure",trigger="api"}'] == 2
    assert got['flowray_jobs_total{flow="metrics-demo",status="success"}'] == 4
    assert got['flowray_runs{state="running"}'] == 0
    assert got['flowray_jobs{state="running"}'] == 0
    assert got['flowray_jobs{state="queued"}'] == 0


def test_what_the_service_sets() -> None:
    metrics = Metrics()
    metrics.queued_run(1)
    metrics.queued_run(1)
    metrics.queued_run(-1)
    metrics.webhook_delivery("deploy", "accepted")
    metrics.webhook_delivery("deploy", "bad_signature")
    metrics.webhook_delivery("deploy", "accepted")
    metrics.schedule_next_fire("nightly", 1_900_000_000.0)
    metrics.schedule_next_fire("hourly", 1_900_000_100.0)
    metrics.schedule_next_fire("hourly", None)  # no schedule any more: the series goes
    metrics.schedule_next_fire("never-had-one", None)
    metrics.gpu_slots(free=3, busy=5)
    got = samples(rendered(metrics))
    assert got['flowray_runs{state="queued"}'] == 1
    assert got['flowray_webhook_deliveries_total{flow="deploy",result="accepted"}'] == 2
    assert got['flowray_webhook_deliveries_total{flow="deploy",result="bad_signature"}'] == 1
    assert got['flowray_schedule_next_fire_timestamp_seconds{flow="nightly"}'] == 1.9e9
    assert not any("hourly" in key or "never-had-one" in key for key in got)
    assert got['flowray_gpu_slots{state="free"}'] == 3
    assert got['flowray_gpu_slots{state="busy"}'] == 5
    with pytest.raises(ValueError) as info:
        metrics.webhook_delivery("deploy", "teapot")
    assert str(info.value) == ("webhook result 'teapot' is not one of accepted, duplicate, "
                               "bad_signature, filtered, too_large, bad_request")
    assert WEBHOOK_RESULTS == ("accepted", "duplicate", "bad_signature", "filtered",
                               "too_large", "bad_request")


def test_a_forgotten_run_leaves_the_gauges(ws: Workspace) -> None:
    metrics = Metrics()
    run, watcher = start_demo(ws, metrics)
    wait_until(lambda: samples(rendered(metrics))['flowray_jobs{state="running"}'] == 2)
    metrics.forget(run.id)  # e.g. the service gave up watching it
    got = samples(rendered(metrics))
    assert got['flowray_runs{state="running"}'] == 0
    assert got['flowray_jobs{state="running"}'] == 0
    finish(ws, run, watcher)
    got = samples(rendered(metrics))  # its later events are left out
    assert got['flowray_runs{state="running"}'] == 0
    assert got['flowray_jobs{state="running"}'] == 0
    assert not any(key.startswith("flowray_runs_total") for key in got)


def test_serve_metrics_answers_scrapes_and_stops(ws: Workspace) -> None:
    metrics = Metrics()
    (port,) = free_ports(1)
    stop = serve_metrics(metrics, port)
    try:
        got = scrape(port)
        assert got is not None
        body, content_type = got
        assert body == rendered(metrics)
        assert content_type == metrics.render()[1]
        # The port is taken now: a second server says so.
        with pytest.raises(MetricsServerError) as info:
            serve_metrics(Metrics(), port)
        assert str(info.value) == f"cannot serve metrics on 127.0.0.1:{port}: the port is in use"
        assert (info.value.host, info.value.port) == ("127.0.0.1", port)
    finally:
        stop()
    stop()  # a second call does nothing
    assert scrape(port) is None
    with pytest.raises(MetricsServerError) as info:
        serve_metrics(metrics, 0)
    assert str(info.value) == ("cannot serve metrics on 127.0.0.1:0: the port must be a number "
                               "from 1 to 65535")


# ----------------------------------------------------------------------------- the CLI


def test_flowray_run_serves_its_metrics_while_it_runs(ws: Workspace) -> None:
    ws.flow(f"""
        name: served
        jobs:
          wait:
            steps:
              - run: {WAIT_FOR_GO}
    """)
    (port,) = free_ports(1)
    # Two made-up GPU ids (no GPU here): the GPU slots the run's metrics show.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowray", "run", "flow.yaml", "--metrics-port", str(port),
         "--gpus", "0,1"],
        cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_COLOR": "1"})
    try:
        body, content_type = wait_until(
            lambda: (got := scrape(port)) and 'flowray_jobs{state="running"} 1.0' in got[0]
            and got)
        assert content_type.startswith("text/plain")
        got = samples(body)
        assert got['flowray_runs{state="running"}'] == 1
        assert got[f'flowray_build_info{{version="{flowray.__version__}"}}'] == 1
        assert got['flowray_gpu_slots{state="free"}'] == 2
        assert got['flowray_gpu_slots{state="busy"}'] == 0
        (ws.root / "go").touch()
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (stdout, stderr)
    assert scrape(port) is None  # the run ended: so did its metrics


def test_a_metrics_port_in_use_starts_no_run(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: touch ran}]}}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = ws.run("flow.yaml", "--metrics-port", str(port))
    assert out.exit_code == 2, out
    assert out.stderr == (f"error: --metrics-port {port}: cannot serve metrics on "
                          f"127.0.0.1:{port}: the port is in use\n")
    assert not (ws.root / "ran").exists()
    runs = ws.root / ".flowray" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_a_metrics_port_out_of_range_is_refused(ws: Workspace, port: str) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: touch ran}]}}\n")
    out = ws.run("flow.yaml", f"--metrics-port={port}")
    assert out.exit_code == 2, out
    assert out.stderr == f"error: --metrics-port must be a TCP port from 1 to 65535, got {port}\n"
    assert not (ws.root / "ran").exists()


def test_prometheus_client_is_loaded_only_to_serve_metrics(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    code = textwrap.dedent("""
        import sys
        import flowray
        assert "prometheus_client" not in sys.modules, "import flowray"
        from flowray.cli import main
        try:
            main(["run", "flow.yaml", "-q"])
        except SystemExit as e:
            assert e.code == 0, e.code
        assert "prometheus_client" not in sys.modules, "flowray run"
    """)
    subprocess.run([sys.executable, "-c", code], cwd=ws.root, check=True)


# ----------------------------------------------------------------------------- promtool


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip(NO_PROMETHEUS)
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT)


def test_promtool_accepts_the_exposition(ws: Workspace) -> None:
    if shutil.which("promtool") is None:
        pytest.skip(NO_PROMETHEUS)
    metrics = Metrics()
    metrics.track_gpu_slots(1)
    run, watcher = start_demo(ws, metrics, gpus=["0"])
    finish(ws, run, watcher)
    metrics.webhook_delivery("metrics-demo", "accepted")
    metrics.schedule_next_fire("metrics-demo", time.time() + 60)
    text = rendered(metrics)
    out = promtool("check", "metrics", stdin=text)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_promtool_accepts_the_alert_rules() -> None:
    out = promtool("check", "rules", "cluster/flowray-alerts.yml")
    assert out.returncode == 0, out
    assert "SUCCESS: 4 rules found" in out.stdout


def test_promtool_accepts_the_scrape_config() -> None:
    out = promtool("check", "config", "cluster/prometheus.yml")
    assert out.returncode == 0, out
    assert "SUCCESS: 1 rule files found" in out.stdout
    assert "cluster/prometheus.yml is valid prometheus config file syntax" in out.stdout


# ----------------------------------------------------------------------------- Prometheus


@contextlib.contextmanager
def prometheus(target: str) -> Iterator[str]:
    """A real Prometheus scraping ``target`` (HOST:PORT) every second, with flowray's alert
    rules; yields its base URL. Stopped, and its storage removed, on the way out."""
    if shutil.which("prometheus") is None:
        pytest.skip(NO_PROMETHEUS)
    folder = tempfile.mkdtemp(prefix="flowray-prometheus-")
    (port,) = free_ports(1)
    shutil.copy(CLUSTER / "flowray-alerts.yml", folder)
    config = Path(folder, "prometheus.yml")
    config.write_text(textwrap.dedent(f"""
        global: {{scrape_interval: 1s, evaluation_interval: 1s}}
        rule_files: [flowray-alerts.yml]
        scrape_configs:
          - job_name: flowray
            metrics_path: /metrics
            static_configs: [{{targets: ["{target}"]}}]
    """))
    log = open(Path(folder, "prometheus.log"), "w")  # noqa: SIM115
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={folder}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, Path(folder, "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/-/ready") as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, ConnectionError):
                return False
        wait_until(ready)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder)


def query(url: str, expr: str) -> dict[str, Any]:
    with urllib.request.urlopen(
            f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}") as resp:
        answer: dict[str, Any] = json.load(resp)
    assert answer["status"] == "success", answer
    return answer["data"]  # type: ignore[no-any-return]


@pytest.mark.timeout(300)
def test_a_real_prometheus_scrapes_flowray(ws: Workspace) -> None:
    metrics = Metrics()
    run, watcher = start_demo(ws, metrics)
    finish(ws, run, watcher)
    # A schedule that should have fired 10 minutes ago: FlowrayScheduleStopped.
    metrics.schedule_next_fire("nightly", time.time() - 600)
    (port,) = free_ports(1)
    stop = serve_metrics(metrics, port)
    try:
        with prometheus(f"127.0.0.1:{port}") as url:
            result = wait_until(lambda: query(url, "flowray_runs_total")["result"])
            assert [(r["metric"], r["value"][1]) for r in result] == [
                ({"__name__": "flowray_runs_total", "flow": "metrics-demo",
                  "instance": f"127.0.0.1:{port}", "job": "flowray", "status": "failure",
                  "trigger": "api"}, "1")]
            up = query(url, 'up{job="flowray"}')["result"]
            assert [r["value"][1] for r in up] == ["1"]
            # Every query of the dashboard is PromQL this Prometheus takes.
            for expr in dashboard_queries():
                query(url, expr.replace("$__rate_interval", "1m").replace("$flow", ".*"))
            # The alert rules loaded and evaluate (none fires: the service is up, the flow
            # failed once).
            with urllib.request.urlopen(f"{url}/api/v1/rules") as resp:
                groups = json.load(resp)["data"]["groups"]
            assert sorted(r["name"] for g in groups for r in g["rules"]) == [
                "FlowrayFlowFailingRepeatedly", "FlowrayJobQueueWaitHigh",
                "FlowrayScheduleStopped", "FlowrayServiceDown"]

            def alerts() -> list[dict[str, Any]]:
                with urllib.request.urlopen(f"{url}/api/v1/alerts") as resp:
                    found: list[dict[str, Any]] = json.load(resp)["data"]["alerts"]
                return found

            # Pending (it must hold for 1m to fire); the only alert, the flow failed once.
            (alert,) = wait_until(alerts)
            assert (alert["labels"]["alertname"], alert["labels"]["flow"], alert["state"]) == \
                ("FlowrayScheduleStopped", "nightly", "pending")
    finally:
        stop()


# ----------------------------------------------------------------------------- dashboard

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset"}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CLUSTER / "grafana-dashboard.json").read_text())
    exprs = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        exprs += [t["expr"] for t in panel.get("targets", [])]
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        if m.group() in PROMQL_WORDS or expr[m.end():].lstrip().startswith("("):
            continue  # a keyword, or a function
        names.add(m.group())
    return names


def test_the_dashboard_reads_only_metrics_flowray_exposes(ws: Workspace) -> None:
    metrics = Metrics()
    run, watcher = start_demo(ws, metrics)
    finish(ws, run, watcher)
    exposed = exposed_names(rendered(metrics))
    dashboard = json.loads((CLUSTER / "grafana-dashboard.json").read_text())
    used: set[str] = set()
    for expr in dashboard_queries():
        names = metric_names(expr)
        assert names, expr
        used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            used |= set(re.findall(r"label_values\((\w+)\s*,", variable["definition"]))
    assert used - exposed == set()
    # Every metric of SPEC's table is on the dashboard.
    stems = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert stems >= {
        "flowray_runs_total", "flowray_jobs_total", "flowray_steps_total",
        "flowray_webhook_deliveries_total", "flowray_action_cache_requests_total",
        "flowray_gpu_seconds_total", "flowray_run_duration_seconds",
        "flowray_job_duration_seconds", "flowray_step_duration_seconds",
        "flowray_job_queue_wait_seconds", "flowray_runs", "flowray_jobs", "flowray_gpu_slots",
        "flowray_schedule_next_fire_timestamp_seconds", "flowray_build_info"}


def test_metric_names_reads_promql() -> None:
    assert metric_names('histogram_quantile(0.9, sum by (flow, le) (rate('
                        'flowray_run_duration_seconds_bucket{flow=~"$flow"}[5m])))') == {
        "flowray_run_duration_seconds_bucket"}
    assert metric_names('sum(rate(a_total{result="hit"}[1m])) / sum(rate(b_total[1m])) * 1e3'
                        ) == {"a_total", "b_total"}
    assert metric_names("x unless on (flow) y > bool 3") == {"x", "y"}


# ----------------------------------------------------------------------------- cluster files


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (Debian's systemd package) is not installed")
    # The unit names the installed flowray (/opt/flowray/bin/flowray): an executable that
    # exists here stands in for it, so that verify checks everything else.
    unit = (CLUSTER / "flowray.service").read_text()
    assert "ExecStart=/opt/flowray/bin/flowray serve " in unit
    copy = tmp_path / "flowray.service"
    copy.write_text(unit.replace("/opt/flowray/bin/flowray", shutil.which("true") or "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                         text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_the_kubernetes_service_runs_on_the_kuberay_cluster() -> None:
    docs = list(yaml.safe_load_all((CLUSTER / "flowray-service.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Deployment", "Service"]
    ray = next(yaml.safe_load_all((CLUSTER / "kuberay-raycluster.yaml").read_text()))
    pod = docs[1]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # KubeRay names the head's Service <cluster>-head-svc; its GCS is on 6379.
    assert f"--ray={ray['metadata']['name']}-head-svc:6379" in container["command"]
    head_image = ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert container["image"] == head_image.removesuffix("-gpu")  # same Ray and Python
    assert docs[2]["spec"]["ports"][0]["port"] == 8420
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == \
        docs[0]["metadata"]["name"]
