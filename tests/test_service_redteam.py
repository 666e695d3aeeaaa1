"""Defects a review of `flowray serve` found, each held by a test against the real service
(uvicorn on a free port, SQLite)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.servicefixtures import Served, push, serving, sse, wait_run

TRUE = "name: {name}\njobs:\n  a:\n    steps:\n      - run: 'true'\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("serve"),
                 env={"PGPASSWORD": "pg-pass-4411", "FLOWRAY_TOKEN": "frt_leaky",
                      "CLOUD_API_KEY": "cloud-key-9", "FLOWRAY_SHOWN": "shown",
                      "EXTRA_PASSED": "passed-on"},
                 extra=["--pass-env", "EXTRA_PASSED"]) as server:
        yield server


def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size


def test_bodies_are_bounded_however_they_are_sent(served: Served) -> None:
    # no token: refused before the body is read
    got = httpx.post(served.url + "/api/v1/validate", content=_chunks(64 << 20))
    assert (got.status_code, got.json()) == (
        401, {"error": "a token is needed: Authorization: Bearer <token>"})
    # a token (even a wrong one): a chunked body is counted as it comes, and refused
    for token in (served.token, "frt_wrong"):
        got = httpx.post(served.url + "/api/v1/validate", content=_chunks(64 << 20),
                         headers={"Authorization": f"Bearer {token}",
                                  "content-type": "application/json"})
        assert (got.status_code, got.json()) == (
            413, {"error": "the body is larger than 16777216 bytes"})
    assert httpx.get(served.url + "/healthz").status_code == 200


def test_malformed_headers_and_numbers_are_client_errors(admin: httpx.Client) -> None:
    push(admin, "plain", TRUE.format(name="plain"))
    run_id = admin.post("/api/v1/flows/plain/runs", json={}).json()["id"]
    wait_run(admin, run_id)
    for last in ("²", "9" * 5000, "9" * 20, "-1", "3x"):
        events = [e for _, e in sse(admin, run_id, last_event_id=last)]
        assert events[-1]["type"] == "run.finished", last
    big = admin.get("/api/v1/flows/plain", params={"version": 10**20})
    assert big.status_code == 422
    for path in ("/api/v1/runs?flow=a%00b", "/api/v1/flows/a%00", "/hooks/a%00"):
        got = admin.get(path) if not path.startswith("/hooks") else admin.post(path)
        assert (got.status_code, got.json()) == (
            400, {"error": "a NUL character is not allowed in a path or query"}), path


def test_a_finished_run_s_stream_ends_when_resumed_at_its_end(admin: httpx.Client) -> None:
    push(admin, "plain", TRUE.format(name="plain"))
    run_id = admin.post("/api/v1/flows/plain/runs", json={}).json()["id"]
    last = [i for i, _ in sse(admin, run_id)][-1]
    time.sleep(2.5)
    started = time.monotonic()
    assert list(sse(admin, run_id, last_event_id=last)) == []
    assert list(sse(admin, run_id, last_event_id=last + 100)) == []
    assert time.monotonic() - started < 60  # ended, rather than kept open for ever


def test_pushed_files_that_cannot_be_written_are_refused(admin: httpx.Client) -> None:
    flow = "name: files\njobs:\n  a:\n    steps:\n      - run: 'true'\n"
    b64 = base64.b64encode(b"x").decode()
    cases = [
        ({"x": b64, "x/y": b64}, "files: 'x/y' cannot be written: "),
        ({"flow.yaml": b64}, "files: 'flow.yaml' is the flow's own file in the run's folder"),
        ({"a" * 300: b64}, "files: '" + "a" * 98),
    ]
    for files, message in cases:
        got = admin.put("/api/v1/flows/files", json={"text": flow, "files": files})
        assert got.status_code == 422, got.text
        assert got.json()["error"].startswith(message), got.json()


def test_pushed_executables_keep_their_mode(admin: httpx.Client) -> None:
    action = b"name: hello\nruns:\n  using: cmd\n  command: $FLOWRAY_ACTION_PATH/hello.sh\n"
    script = b"#!/bin/sh\necho hello from a script\n"
    flow = "name: runnable\njobs:\n  a:\n    steps:\n      - action: ./act\n"
    got = admin.put("/api/v1/flows/runnable", json={
        "text": flow, "executable": ["act/hello.sh"],
        "files": {"act/action-datatorch.yaml": base64.b64encode(action).decode(),
                  "act/hello.sh": base64.b64encode(script).decode()}})
    assert got.status_code in (200, 201), got.text
    run_id = admin.post("/api/v1/flows/runnable/runs", json={}).json()["id"]
    assert [e["line"] for _, e in sse(admin, run_id) if e["type"] == "step.log"] == [
        "hello from a script"]


def test_concurrent_pushes_of_one_flow_each_get_a_version(admin: httpx.Client,
                                                          served: Served) -> None:
    def one(i: int) -> int:
        with served.client() as c:
            return push(c, f"racy-{i % 3}", TRUE.format(name=f"racy-{i % 3}")).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(24)))
    assert sorted(set(codes)) == [200, 201] and codes.count(201) == 3
    for k in range(3):
        versions = admin.get(f"/api/v1/flows/racy-{k}").json()["versions"]
        assert [v["version"] for v in versions] == list(range(8, 0, -1))


def test_steps_get_the_machine_s_basics_not_the_service_s_credentials(
        admin: httpx.Client) -> None:
    flow = ("name: envy\njobs:\n  a:\n    steps:\n      - run: env | sort\n")
    push(admin, "envy", flow)
    run_id = admin.post("/api/v1/flows/envy/runs", json={}).json()["id"]
    names = {e["line"].split("=", 1)[0]: e["line"].split("=", 1)[1]
             for _, e in sse(admin, run_id) if e["type"] == "step.log" and "=" in e["line"]}
    for held in ("PGPASSWORD", "FLOWRAY_TOKEN", "CLOUD_API_KEY"):
        assert held not in names
    assert names["FLOWRAY_SHOWN"] == "shown" and names["EXTRA_PASSED"] == "passed-on"
    assert "PATH" in names and "HOME" in names


def test_deep_inputs_are_refused_and_every_run_stays_readable(admin: httpx.Client) -> None:
    push(admin, "plain", TRUE.format(name="plain"))
    deep: object = "leaf"
    for _ in range(150):
        deep = [deep]
    got = admin.post("/api/v1/flows/plain/runs", json={"inputs": {"x": deep}})
    assert (got.status_code, got.json()) == (
        422, {"error": "input 'x' is nested more than 100 levels deep"})


def test_one_flow_s_backlog_does_not_hold_up_the_others(admin: httpx.Client,
                                                        tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    push(admin, "backlog", f"name: backlog\nconcurrency: {{group: one}}\njobs:\n  a:\n"
                           f"    steps:\n      - run: while [ ! -e {gate} ]; do sleep 0.05; done\n")
    push(admin, "other", TRUE.format(name="other"))
    ids = [admin.post("/api/v1/flows/backlog/runs", json={}).json()["id"] for _ in range(105)]
    other = admin.post("/api/v1/flows/other/runs", json={}).json()["id"]
    assert wait_run(admin, other, timeout=60)["status"] == "success"
    for run_id in ids[1:]:
        admin.post(f"/api/v1/runs/{run_id}/cancel")
    gate.touch()
    assert wait_run(admin, ids[0])["status"] == "success"


def test_rerun_keeps_the_manual_role_and_explains_runs_that_never_ran(
        served: Served, admin: httpx.Client, tmp_path: Path) -> None:
    push(admin, "guarded-rerun", "name: guarded-rerun\ntriggers:\n  manual: {role: admin}\n"
                                 "jobs:\n  a:\n    steps:\n      - run: exit 1\n")
    run_id = admin.post("/api/v1/flows/guarded-rerun/runs", json={}).json()["id"]
    wait_run(admin, run_id)
    token = admin.post("/api/v1/tokens", json={"name": "rerunner", "role": "runner"})
    with served.client(token.json()["token"]) as runner:
        got = runner.post(f"/api/v1/runs/{run_id}/rerun", json={"failed": True})
        assert (got.status_code, got.json()["error"]) == (
            403, "flow 'guarded-rerun' may be started by hand only with the role admin "
                 "(triggers.manual.role); the token 'rerunner' has the role runner")
    gate = tmp_path / "gate"
    push(admin, "held", f"name: held\nconcurrency: {{group: held}}\njobs:\n  a:\n    steps:\n"
                        f"      - run: while [ ! -e {gate} ]; do sleep 0.05; done\n")
    first = admin.post("/api/v1/flows/held/runs", json={}).json()["id"]
    queued = admin.post("/api/v1/flows/held/runs", json={}).json()["id"]
    admin.post(f"/api/v1/runs/{queued}/cancel")
    got = admin.post(f"/api/v1/runs/{queued}/rerun", json={"failed": True})
    assert (got.status_code, got.json()) == (409, {
        "error": f"run {queued} never ran (cancelled before it started: cancelled); start "
                 "the flow again instead"})
    gate.touch()
    wait_run(admin, first)


def test_artifacts_and_logs_are_served_only_from_real_folders(served: Served,
                                                              admin: httpx.Client) -> None:
    flow = """\
name: linker
jobs:
  a:
    steps:
      - run: |
          d=".flowray/runs/$FLOWRAY_RUN_ID"
          mkdir -p out && echo fine > out/ok.txt
          echo started
    artifacts: [out/ok.txt]
  b:
    needs: [a]
    steps:
      - run: |
          d=".flowray/runs/$FLOWRAY_RUN_ID"
          rm -rf "$d/artifacts/a/out" && ln -s "$PWD/../.." "$d/artifacts/a/out"
"""
    push(admin, "linker", flow)
    run_id = admin.post("/api/v1/flows/linker/runs", json={}).json()["id"]
    done = wait_run(admin, run_id)
    assert done["status"] == "success", done
    data = os.path.basename(served.data_dir)
    for path in (f"a/out/{data}/admin-token", f"a/out/{data}/secret.key", "a/out/ok.txt",
                 "a/../../record.json"):
        got = admin.get(f"/api/v1/runs/{run_id}/artifacts/{path}")
        assert got.status_code == 404, (path, got.text[:80])
    assert os.path.islink(os.path.join(served.data_dir, "workspaces", run_id, ".flowray",
                                       "runs", run_id, "artifacts", "a", "out"))
