"""The service's /metrics: scraped by a real Prometheus (Debian's prometheus) and checked by
promtool, after runs started through the API."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.servicefixtures import Served, free_port, push, wait_run
from tests.test_metrics import NO_PROMETHEUS, prometheus, query, wait_until


@pytest.mark.timeout(300)
def test_prometheus_scrapes_the_service(tmp_path: Path) -> None:
    server = Served(str(tmp_path / "data"), free_port()).start()
    try:
        with server.client() as admin:
            push(admin, "scraped", "name: scraped\njobs:\n  a:\n    steps:\n      - run: 'true'"
                                   "\n  b:\n    steps:\n      - run: exit 3\n")
            for _ in range(2):
                run_id = admin.post("/api/v1/flows/scraped/runs", json={}).json()["id"]
                assert wait_run(admin, run_id)["status"] == "failure"
        text = httpx.get(server.url + "/metrics").text
        if shutil.which("promtool") is None:
            pytest.skip(NO_PROMETHEUS)
        checked = subprocess.run(["promtool", "check", "metrics"], input=text,
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with prometheus(f"127.0.0.1:{server.port}") as url:
            result = wait_until(lambda: query(url, "flowray_runs_total")["result"])
            assert [(r["metric"]["flow"], r["metric"]["trigger"], r["metric"]["status"],
                     r["value"][1]) for r in result] == [("scraped", "manual", "failure", "2")]
            jobs = query(url, "sum by (status) (flowray_jobs_total)")["result"]
            assert sorted((r["metric"]["status"], r["value"][1]) for r in jobs) == [
                ("failure", "2"), ("success", "2")]
            running = query(url, 'flowray_runs{state="running"}')["result"]
            assert [r["value"][1] for r in running] == ["0"]
    finally:
        assert server.stop() == 0
