"""Triggers of `flowray serve` over real HTTP: schedules (their fire brought forward in the real
SQLite database, so that the test need not wait for a minute to turn), signed webhooks, flow
triggers, with the event and run.trigger contexts the runs see."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest

from flowray.service.hooks import sign
from tests.servicefixtures import Served, push, serving, sse, wait_run

HOOKED = """\
name: hooked
triggers:
  webhook:
    secret: HOOK_KEY
    if: ${{ event.ref == 'refs/heads/main' }}
jobs:
  a:
    steps:
      - run: echo "ref=${{ event.ref }} by ${{ event.pusher.name }} (${{ run.trigger }})"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("serve")) as server:
        yield server


def _lines(client: httpx.Client, run_id: str) -> list[str]:
    return [e["line"] for _, e in sse(client, run_id) if e["type"] == "step.log"]


def _deliver(served: Served, flow: str, payload: object, *, key: str = "hook-key-1",
             delivery: str | None = None, signature: str | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json",
               "X-Hub-Signature-256": signature if signature is not None else sign(key, body)}
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return httpx.post(f"{served.url}/hooks/{flow}", content=body, headers=headers)


def _metric(served: Served, name: str, **labels: str) -> float:
    text = httpx.get(served.url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1:line.index("}")]
            if ",".join(sorted(got.split(","))) == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_webhook_signature_filter_dedupe_and_size(served: Served, admin: httpx.Client) -> None:
    assert push(admin, "hooked", HOOKED).status_code == 201
    payload = {"ref": "refs/heads/main", "pusher": {"name": "ada"}}
    unset = _deliver(served, "hooked", payload)
    assert (unset.status_code, unset.json()) == (401, {
        "error": "the flow's webhook secret is not set on the server (flowray secret set "
                 "HOOK_KEY)"})
    assert admin.put("/api/v1/secrets/HOOK_KEY", json={"value": "hook-key-1"}).status_code \
        == 204
    wrong = _deliver(served, "hooked", payload, key="another-key")
    assert wrong.status_code == 401
    missing = _deliver(served, "hooked", payload, signature="")
    assert missing.status_code == 401
    filtered = _deliver(served, "hooked", {"ref": "refs/heads/dev", "pusher": {"name": "x"}})
    assert (filtered.status_code, filtered.json()) == (200, {"filtered": True})
    first = _deliver(served, "hooked", payload, delivery="d-1")
    assert first.status_code == 202, first.text
    again = _deliver(served, "hooked", payload, delivery="d-1")
    assert (again.status_code, again.json()) == (200, {"id": first.json()["id"],
                                                       "duplicate": True})
    run = wait_run(admin, first.json()["id"])
    assert (run["status"], run["trigger"]) == ("success", "webhook")
    assert _lines(admin, run["id"]) == ["ref=refs/heads/main by ada (webhook)"]
    big = httpx.post(f"{served.url}/hooks/hooked", content=b"x" * (1024 * 1024 + 1),
                     headers={"X-Hub-Signature-256": "sha256=00"})
    assert (big.status_code, big.json()) == (413, {"error": "the body is larger than 1048576 "
                                                             "bytes"})
    nobody = _deliver(served, "no-such-flow", payload)
    assert (nobody.status_code, nobody.json()) == (
        404, {"error": "no flow named 'no-such-flow' with a webhook trigger"})
    assert _metric(served, "flowray_webhook_deliveries_total", flow="hooked",
                   result="accepted") == 1
    assert _metric(served, "flowray_webhook_deliveries_total", flow="hooked",
                   result="duplicate") == 1
    assert _metric(served, "flowray_webhook_deliveries_total", flow="hooked",
                   result="filtered") == 1
    assert _metric(served, "flowray_webhook_deliveries_total", flow="hooked",
                   result="bad_signature") == 3
    assert _metric(served, "flowray_webhook_deliveries_total", flow="hooked",
                   result="too_large") == 1


def test_concurrent_deliveries_start_one_run_each(served: Served, admin: httpx.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    push(admin, "hooked", HOOKED)
    admin.put("/api/v1/secrets/HOOK_KEY", json={"value": "hook-key-1"})
    payload = {"ref": "refs/heads/main", "pusher": {"name": "p"}}
    deliveries = [f"burst-{i % 10}" for i in range(30)]  # each id three times
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda d: _deliver(served, "hooked", payload, delivery=d),
                                deliveries))
    assert sorted(a.status_code for a in answers) == [200] * 20 + [202] * 10
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 10
    for run_id in ids:
        assert wait_run(admin, run_id)["status"] == "success"


def test_a_schedule_fires_once_with_its_event(served: Served, admin: httpx.Client) -> None:
    flow = """\
name: nightly
triggers:
  schedule:
    - cron: "30 2 29 2 *"
      timezone: Europe/Berlin
jobs:
  a:
    steps:
      - run: echo "at ${{ event.scheduled_time }} by ${{ event.cron }}"
"""
    assert push(admin, "nightly", flow).status_code == 201
    listed = {f["name"]: f for f in admin.get("/api/v1/flows").json()["flows"]}
    next_fire = listed["nightly"]["next_fire"]
    assert next_fire > time.time()
    # 02:30 in Berlin on 29 February (no real fire comes while the test runs) is 01:30 UTC
    fire = time.gmtime(next_fire)
    assert (fire.tm_mon, fire.tm_mday, fire.tm_hour, fire.tm_min) == (2, 29, 1, 30)
    assert _metric(served, "flowray_schedule_next_fire_timestamp_seconds",
                   flow="nightly") == next_fire
    due = time.time() - 2
    db = sqlite3.connect(os.path.join(served.data_dir, "flowray.db"))
    with db:
        db.execute("UPDATE schedules SET next_fire = ? WHERE flow = 'nightly'", (due,))
    db.close()
    deadline = time.monotonic() + 60
    runs: list[dict[str, object]] = []
    while time.monotonic() < deadline and not runs:
        runs = admin.get("/api/v1/runs", params={"flow": "nightly"}).json()["runs"]
        time.sleep(0.1)
    assert len(runs) == 1 and runs[0]["trigger"] == "schedule"
    run = wait_run(admin, str(runs[0]["id"]))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due))
    assert _lines(admin, run["id"]) == [f"at {stamp}.{int(due * 1000) % 1000:03d}Z by "
                                        "30 2 29 2 *"]
    time.sleep(1)  # more passes of the loop: still one run
    assert len(admin.get("/api/v1/runs", params={"flow": "nightly"}).json()["runs"]) == 1
    later = {f["name"]: f for f in admin.get("/api/v1/flows").json()["flows"]}
    assert later["nightly"]["next_fire"] > time.time()


def test_flow_triggers_follow_statuses_and_refuse_cycles(admin: httpx.Client) -> None:
    prepare = ("name: prepare\njobs:\n  a:\n    outputs: {size: '${{ steps.s.outputs.size }}'}"
               "\n    steps:\n      - id: s\n        run: echo size=42 >> \"$FLOWRAY_OUTPUT\"\n")
    train = """\
name: train
triggers:
  flow:
    - name: prepare
      status: [success]
jobs:
  a:
    steps:
      - run: echo "after ${{ event.flow }} ${{ event.status }} size ${{ event.outputs.size }}"
"""
    assert push(admin, "prepare", prepare).status_code == 201
    assert push(admin, "train", train).status_code == 201
    first = admin.post("/api/v1/flows/prepare/runs", json={}).json()["id"]
    wait_run(admin, first)
    deadline = time.monotonic() + 60
    runs: list[dict[str, object]] = []
    while time.monotonic() < deadline and not runs:
        runs = admin.get("/api/v1/runs", params={"flow": "train"}).json()["runs"]
        time.sleep(0.1)
    assert [r["trigger"] for r in runs] == ["flow"]
    assert _lines(admin, str(runs[0]["id"])) == ["after prepare success size 42"]
    cyclic = prepare.replace("jobs:", "triggers:\n  flow:\n    - name: train\njobs:", 1)
    got = push(admin, "prepare", cyclic, path="prepare.yaml")
    assert got.status_code == 422
    [diag] = got.json()["diagnostics"]
    assert (diag["file"], diag["line"], diag["col"], diag["path"]) == (
        "prepare.yaml", 3, 3, "triggers.flow")
    assert diag["message"] == ("flow triggers would form a cycle: prepare <- train <- prepare "
                               "(a run of each would start the next for ever)")
