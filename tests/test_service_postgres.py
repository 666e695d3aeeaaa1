"""`flowray serve` on a real PostgreSQL 15 (a throwaway cluster of Debian's postgresql):
runs, secrets absent from a dump, two service processes firing one run per schedule fire,
the database going away and coming back."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import sqlalchemy

from tests.servicefixtures import Served, free_port, push, sse, wait_run

if TYPE_CHECKING:
    from pgfixture import PostgresCluster

pytest_plugins = ["pgfixture"]


def _plain(url: str) -> str:
    """The URL as a user writes it (postgresql://), which the service gives its driver."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture()
def two(tmp_path: Path, postgres: PostgresCluster) -> Iterator[tuple[Served, Served]]:
    """Two service processes with their own data dirs (and one key) on one database."""
    first = Served(str(tmp_path / "a"), free_port(), db=_plain(postgres.url)).start()
    os.makedirs(tmp_path / "b", mode=0o700)
    key = tmp_path / "a" / "secret.key"
    second = Served(str(tmp_path / "b"), free_port(), db=_plain(postgres.url),
                    extra=["--secret-key-file", str(key)])
    second.token = first.token
    second.start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_runs_and_sealed_secrets_on_postgres(tmp_path: Path, postgres: PostgresCluster) -> None:
    server = Served(str(tmp_path / "data"), free_port(), db=_plain(postgres.url)).start()
    value = "pg-secret-Value-7731"
    try:
        with server.client() as admin:
            assert admin.put("/api/v1/secrets/TOKEN", json={"value": value}).status_code == 204
            flow = ("name: pg\njobs:\n  a:\n    steps:\n      - run: echo "
                    "\"t=${{ secrets.TOKEN }}\"\n")
            assert push(admin, "pg", flow).status_code == 201
            run_id = admin.post("/api/v1/flows/pg/runs", json={}).json()["id"]
            assert [e["line"] for _, e in sse(admin, run_id) if e["type"] == "step.log"] \
                == ["t=***"]
            assert wait_run(admin, run_id)["status"] == "success"
    finally:
        assert server.stop() == 0
    dump = subprocess.run(["pg_dump", "--no-password", "-h", "127.0.0.1", "-p",
                           str(postgres.port), "-U", "flowray", "flowray"],
                          capture_output=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert b"CREATE TABLE public.secrets" in dump.stdout
    assert value.encode() not in dump.stdout
    import base64

    assert base64.b64encode(value.encode()) not in dump.stdout
    for root, _, files in os.walk(server.data_dir):
        for name in files:
            assert value.encode() not in (Path(root) / name).read_bytes()


def test_two_services_on_one_database_fire_one_run_per_schedule(
        two: tuple[Served, Served], postgres: PostgresCluster) -> None:
    first, _ = two  # the second process only competes for the fires
    flows = [f"every-{i}" for i in range(12)]
    with first.client() as admin:
        for name in flows:
            # Once a year (the test brings each fire forward itself): no real fire comes
            # while it runs, whatever the time.
            text = (f"name: {name}\ntriggers:\n  schedule:\n    - cron: '0 0 1 1 *'\n"
                    "jobs:\n  a:\n    steps:\n      - run: 'true'\n")
            assert push(admin, name, text).status_code == 201
    engine = sqlalchemy.create_engine(postgres.url)
    fired: dict[str, int] = {}
    try:
        for _ in range(3):  # three rounds of fires, each brought forward to now
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text("UPDATE schedules SET next_fire = :t"),
                             {"t": time.time() - 1})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    due = conn.execute(sqlalchemy.text(
                        "SELECT count(*) FROM schedules WHERE next_fire < :t"),
                        {"t": time.time()}).scalar_one()
                if due == 0:
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        with engine.connect() as conn:
            for name, count, owners in conn.execute(sqlalchemy.text(
                    "SELECT flow, count(*), count(DISTINCT owner) FROM runs "
                    "WHERE trigger = 'schedule' GROUP BY flow")):
                fired[name] = count
                assert owners >= 1
            per_owner = dict(conn.execute(sqlalchemy.text(
                "SELECT owner, count(*) FROM runs GROUP BY owner")).all())
    finally:
        engine.dispose()
    assert fired == {name: 3 for name in flows}
    assert len(per_owner) == 2  # both processes started some of the runs
    with first.client() as admin:
        for run in admin.get("/api/v1/runs", params={"limit": 100}).json()["runs"]:
            wait_run(admin, run["id"])


def test_two_services_start_each_queued_run_once(two: tuple[Served, Served]) -> None:
    first, second = two
    with first.client() as a, second.client() as b:
        push(a, "quick", "name: quick\njobs:\n  a:\n    steps:\n      - run: echo once\n")
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(
                lambda i: (a if i % 2 else b).post("/api/v1/flows/quick/runs",
                                                   json={}).json()["id"], range(24)))
        for run_id in ids:
            done = wait_run(a, run_id)
            assert done["status"] == "success"
            lines = [e["line"] for _, e in sse(b, run_id) if e["type"] == "step.log"]
            assert lines == ["once"]  # started once: one run.started, one line


def test_the_database_going_away_gives_503_and_nothing_is_lost(
        tmp_path: Path, postgres: PostgresCluster) -> None:
    gate = tmp_path / "gate"
    server = Served(str(tmp_path / "data"), free_port(), db=_plain(postgres.url)).start()
    try:
        with server.client() as admin:
            flow = ("name: outage\njobs:\n  a:\n    steps:\n      - run: |\n"
                    "          echo before\n"
                    f"          while [ ! -e {gate} ]; do sleep 0.05; done\n"
                    "          echo after\n")
            push(admin, "outage", flow)
            run_id = admin.post("/api/v1/flows/outage/runs", json={}).json()["id"]
            for _, event in sse(admin, run_id):
                if event["type"] == "step.log":
                    break
            postgres.stop()
            health = httpx.get(server.url + "/healthz", timeout=30)
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            got = admin.get("/api/v1/runs")
            assert got.status_code == 503
            assert got.json()["error"].startswith("the database is not answering: ")
            assert got.headers["retry-after"] == "5"
            gate.touch()  # the run ends while the database is away
            time.sleep(2)
            postgres.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if httpx.get(server.url + "/healthz", timeout=30).status_code == 200:
                    break
                time.sleep(0.2)
            done = wait_run(admin, run_id)
            assert done["status"] == "success"
            events = [e for _, e in sse(admin, run_id)]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert [e["line"] for e in events if e["type"] == "step.log"] == [
                "before", "after"]
            again = admin.post("/api/v1/flows/outage/runs", json={})
            assert again.status_code == 201
            admin.post(f"/api/v1/runs/{again.json()['id']}/cancel")
            wait_run(admin, again.json()["id"])
    finally:
        assert server.stop() == 0, server.output()


def test_a_concurrency_group_holds_across_two_services(
        two: tuple[Served, Served], postgres: PostgresCluster, tmp_path: Path) -> None:
    first, second = two
    flow = ("name: serial\nconcurrency:\n  group: one\njobs:\n  a:\n    steps:\n"
            "      - run: sleep 0.3\n")
    engine = sqlalchemy.create_engine(postgres.url)
    try:
        with first.client() as a, second.client() as b:
            push(a, "serial", flow)
            ids = [(a if i % 2 else b).post("/api/v1/flows/serial/runs", json={}).json()["id"]
                   for i in range(6)]
            most = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    rows = conn.execute(sqlalchemy.text(
                        "SELECT status, owner FROM runs WHERE flow = 'serial'")).all()
                running = [r for r in rows if r.status == "running"]
                most = max(most, len(running))
                if all(r.status == "success" for r in rows):
                    break
                time.sleep(0.02)
            for run_id in ids:
                assert wait_run(a, run_id)["status"] == "success"
    finally:
        engine.dispose()
    assert most == 1  # never two at once, whichever process claimed them
