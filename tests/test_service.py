"""`flowray serve` over real HTTP: a real uvicorn on a free port, a real SQLite database,
runs started through flowray.start by the service's run manager."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servicefixtures import Served, free_port, push, serving, sse, wait_run

HELLO = """\
name: hello
triggers:
  manual:
    inputs:
      who: {type: string, default: world}
      times: {type: integer, default: 1}
jobs:
  greet:
    steps:
      - run: |
          for i in $(seq ${{ inputs.times }}); do echo "hello ${{ inputs.who }} $i"; done
          mkdir -p out && echo result > out/r.txt
    artifacts: [out/r.txt]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("serve")) as server:
        yield server


def test_first_start_writes_a_private_admin_token_and_answers_health(served: Served) -> None:
    path = os.path.join(served.data_dir, "admin-token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(served.data_dir, "secret.key")).st_mode) == 0o600
    assert f"the admin token is in {path} (readable by you only)" in served.output()
    got = httpx.get(served.url + "/healthz")
    assert got.json() == {"status": "ok", "draining": False}


def test_roles_and_tokens(served: Served, admin: httpx.Client) -> None:
    assert push(admin, "hello", HELLO).status_code in (200, 201)
    anonymous = httpx.get(served.url + "/api/v1/flows")
    assert (anonymous.status_code, anonymous.json()) == (
        401, {"error": "a token is needed: Authorization: Bearer <token>"})
    with served.client("frt_not-a-token") as wrong:
        got = wrong.get("/api/v1/flows")
        assert (got.status_code, got.json()) == (401, {"error": "the token is not valid"})
    tokens = {}
    for role in ("viewer", "runner"):
        made = admin.post("/api/v1/tokens", json={"name": f"t-{role}", "role": role})
        assert made.status_code == 201, made.text
        assert made.json()["role"] == role
        tokens[role] = made.json()["token"]
    again = admin.post("/api/v1/tokens", json={"name": "t-viewer", "role": "viewer"})
    assert (again.status_code, again.json()) == (
        409, {"error": "a token named 't-viewer' exists already"})
    with served.client(tokens["viewer"]) as viewer:
        assert viewer.get("/api/v1/flows").status_code == 200
        got = viewer.post("/api/v1/flows/hello/runs", json={})
        assert (got.status_code, got.json()) == (403, {
            "error": "the token 't-viewer' has the role viewer; this needs runner or admin"})
    with served.client(tokens["runner"]) as runner:
        started = runner.post("/api/v1/flows/hello/runs", json={})
        assert started.status_code == 201
        guarded = HELLO.replace("name: hello", "name: guarded").replace(
            "  manual:\n", "  manual:\n    role: admin\n")
        assert push(admin, "guarded", guarded).status_code == 201
        refused = runner.post("/api/v1/flows/guarded/runs", json={})
        assert (refused.status_code, refused.json()) == (403, {
            "error": "flow 'guarded' may be started by hand only with the role admin "
                     "(triggers.manual.role); the token 't-runner' has the role runner"})
        assert admin.post("/api/v1/flows/guarded/runs", json={}).status_code == 201
        got = runner.put("/api/v1/secrets/X", json={"value": "v"})
        assert (got.status_code, got.json()) == (403, {
            "error": "the token 't-runner' has the role runner; this needs admin"})
        wait_run(runner, started.json()["id"])
    # only a hash of each token is kept
    db = sqlite3.connect(os.path.join(served.data_dir, "flowray.db"))
    hashes = [r[0] for r in db.execute("SELECT hash FROM tokens")]
    db.close()
    assert tokens["viewer"] not in hashes and len(hashes) == 3
    listed = admin.get("/api/v1/tokens").json()["tokens"]
    assert [(t["name"], t["role"]) for t in listed] == [
        ("admin", "admin"), ("t-runner", "runner"), ("t-viewer", "viewer")]
    assert tokens["viewer"] not in admin.get("/api/v1/tokens").text
    cli = subprocess.run([sys.executable, "-m", "flowray", "token", "list"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FLOWRAY_SERVER": served.url,
                              "FLOWRAY_TOKEN": served.token})
    assert cli.returncode == 0, cli.stderr
    assert [line.split()[:2] for line in cli.stdout.splitlines()] == [
        ["TOKEN", "ROLE"], ["admin", "admin"], ["t-runner", "runner"], ["t-viewer", "viewer"]]
    self_revoke = admin.delete("/api/v1/tokens/admin")
    assert (self_revoke.status_code, self_revoke.json()) == (409, {
        "error": "the token 'admin' is the one making this call; revoke it with another "
                 "admin token"})
    assert admin.delete("/api/v1/tokens/t-viewer").status_code == 204
    with served.client(tokens["viewer"]) as revoked:
        assert revoked.get("/api/v1/flows").status_code == 401
    assert admin.delete("/api/v1/tokens/t-viewer").json() == {
        "error": "no token named 't-viewer'"}


def test_push_an_invalid_flow_gives_diagnostics_and_stores_nothing(admin: httpx.Client) -> None:
    bad = "name: broken\njobs:\n  a:\n    steps:\n      - runn: echo hi\n"
    got = push(admin, "broken", bad, path="broken.yaml")
    assert got.status_code == 422
    body = got.json()
    assert body["error"] == "broken.yaml: 1 error(s); the flow was not stored"
    [diag] = body["diagnostics"]
    assert (diag["file"], diag["line"], diag["col"], diag["path"], diag["severity"]) == (
        "broken.yaml", 5, 9, "jobs.a.steps[0].runn", "error")
    assert "did you mean 'run'" in diag["message"]
    assert admin.get("/api/v1/flows/broken").status_code == 404
    renamed = push(admin, "other", "name: mine\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
    assert renamed.status_code == 422
    assert renamed.json()["diagnostics"][0]["message"] == (
        "the flow's name is 'mine' but it was pushed as 'other' (push it as 'mine', or "
        "rename it)")


def test_push_versions_list_get_and_remove(admin: httpx.Client) -> None:
    text = "name: versioned\njobs:\n  a:\n    steps:\n      - run: 'true'\n"
    first = push(admin, "versioned", text)
    assert (first.status_code, first.json()["version"]) == (201, 1)
    second = push(admin, "versioned", text.replace("'true'", "echo two"))
    assert (second.status_code, second.json()["version"]) == (200, 2)
    got = admin.get("/api/v1/flows/versioned").json()
    assert got["version"] == 2 and "echo two" in got["text"]
    assert [v["version"] for v in got["versions"]] == [2, 1]
    old = admin.get("/api/v1/flows/versioned", params={"version": 1}).json()
    assert "'true'" in old["text"]
    names = [f["name"] for f in admin.get("/api/v1/flows").json()["flows"]]
    assert "versioned" in names
    assert admin.delete("/api/v1/flows/versioned").status_code == 204
    assert admin.get("/api/v1/flows/versioned").json() == {
        "error": "no flow named 'versioned'"}
    assert admin.delete("/api/v1/flows/versioned").status_code == 404


def test_local_actions_are_pushed_and_run_in_a_fresh_workspace(admin: httpx.Client) -> None:
    action = (b"name: shout\ninputs:\n  text: {type: string, required: true}\n"
              b"runs:\n  using: cmd\n  command: echo \"$INPUT_TEXT!\"\n")
    flow = ("name: with-action\njobs:\n  a:\n    steps:\n      - action: ./actions/shout\n"
            "        inputs: {text: loud}\n")
    broken = push(admin, "with-action", flow, files={
        "actions/shout/action-datatorch.yaml": action.replace(b"command", b"main")})
    assert broken.status_code == 422
    assert [(d["file"], d["line"], d["message"]) for d in broken.json()["diagnostics"]] == [
        ("flow.yaml", 5, "local action './actions/shout' is invalid (see the errors in "
                         "'actions/shout')"),
        ("actions/shout/action-datatorch.yaml", 4, "runs.using 'cmd' needs 'command'")]
    got = push(admin, "with-action", flow,
               files={"actions/shout/action-datatorch.yaml": action})
    assert got.status_code == 201, got.text
    run_id = admin.post("/api/v1/flows/with-action/runs", json={}).json()["id"]
    done = wait_run(admin, run_id)
    assert done["status"] == "success", done
    log = admin.get(f"/api/v1/runs/{run_id}/logs/a/0")
    assert log.status_code == 200 and "loud!" in log.text


def test_manual_trigger_with_typed_inputs_events_logs_and_artifacts(
        admin: httpx.Client) -> None:
    push(admin, "hello", HELLO)
    bad = admin.post("/api/v1/flows/hello/runs", json={"inputs": {"times": "many"}})
    assert bad.status_code == 422
    assert bad.json() == {"error": "input 'times' expects an integer, got 'many'"}
    unknown = admin.post("/api/v1/flows/hello/runs", json={"inputs": {"whom": "x"}})
    assert unknown.json() == {"error": "input 'whom' is not declared by this flow (did you "
                              "mean 'who'?) (declared by triggers.manual: who, times)"}
    started = admin.post("/api/v1/flows/hello/runs",
                         json={"inputs": {"who": "ada", "times": 3}})
    assert started.status_code == 201
    run_id = started.json()["id"]
    events = [e for _, e in sse(admin, run_id)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run.started" and events[0]["trigger"] == "manual"
    assert events[-1]["type"] == "run.finished" and events[-1]["status"] == "success"
    lines = [e["line"] for e in events if e["type"] == "step.log"]
    assert lines == ["hello ada 1", "hello ada 2", "hello ada 3"]
    run = wait_run(admin, run_id)
    assert run["inputs"] == {"who": "ada", "times": 3}
    assert run["record"]["jobs"]["greet"]["status"] == "success"
    log = admin.get(f"/api/v1/runs/{run_id}/logs/greet/0")
    assert log.text.splitlines() == lines
    artifact = admin.get(f"/api/v1/runs/{run_id}/artifacts/greet/out/r.txt")
    assert (artifact.status_code, artifact.text) == (200, "result\n")
    escape = admin.get(f"/api/v1/runs/{run_id}/artifacts/greet/..%2F..%2Frecord.json")
    assert escape.status_code == 404
    # resuming: every event after the one given, none before, none twice
    resumed = [i for i, _ in sse(admin, run_id, last_event_id=3)]
    assert resumed == list(range(4, len(events) + 1))


def test_idempotency_key_starts_one_run(admin: httpx.Client) -> None:
    push(admin, "hello", HELLO)
    headers = {"Idempotency-Key": "deploy-42"}
    first = admin.post("/api/v1/flows/hello/runs", json={}, headers=headers)
    second = admin.post("/api/v1/flows/hello/runs", json={}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    wait_run(admin, first.json()["id"])


def test_runs_list_filters_and_pages(admin: httpx.Client) -> None:
    push(admin, "pager", "name: pager\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
    ids = [admin.post("/api/v1/flows/pager/runs", json={}).json()["id"] for _ in range(5)]
    for run_id in ids:
        wait_run(admin, run_id)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"flow": "pager", "limit": 2, **({"before": cursor} if cursor else {})}
        page = admin.get("/api/v1/runs", params=params).json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    ok = admin.get("/api/v1/runs", params={"flow": "pager", "status": "success"}).json()
    assert len(ok["runs"]) == 5
    env = {**os.environ, "FLOWRAY_SERVER": str(admin.base_url).rstrip("/"),
           "FLOWRAY_TOKEN": admin.headers["Authorization"].split()[1]}
    cli = subprocess.run([sys.executable, "-m", "flowray", "runs", "--flow", "pager",
                          "--status", "success", "-n", "3", "--json"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert cli.returncode == 0, cli.stderr
    assert [r["id"] for r in json.loads(cli.stdout)] == list(reversed(ids))[:3]
    refused = subprocess.run([sys.executable, "-m", "flowray", "runs", "--all"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert (refused.returncode, refused.stderr) == (2, (
        "error: --all goes with --address (every job of a Ray cluster); a server lists only "
        "flowray's runs\n"))
    bad = admin.get("/api/v1/runs", params={"status": "sleeping"})
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("query.status: String should match pattern")


def test_cancel_a_running_run(admin: httpx.Client) -> None:
    push(admin, "sleepy", "name: sleepy\njobs:\n  a:\n    steps:\n      - run: "
                          "echo started; sleep 60\n")
    run_id = admin.post("/api/v1/flows/sleepy/runs", json={}).json()["id"]
    for _, event in sse(admin, run_id):
        if event["type"] == "step.log":
            break
    got = admin.post(f"/api/v1/runs/{run_id}/cancel")
    assert got.status_code == 202
    run = wait_run(admin, run_id)
    assert run["status"] == "cancelled"
    assert admin.post("/api/v1/runs/nope/cancel").status_code == 404


def test_secrets_are_sealed_never_returned_and_masked(served: Served,
                                                      admin: httpx.Client) -> None:
    value = "s3cr3t-Value-0042"
    assert admin.put("/api/v1/secrets/API_KEY", json={"value": value}).status_code == 204
    listing = admin.get("/api/v1/secrets")
    assert [s["name"] for s in listing.json()["secrets"]] == ["API_KEY"]
    assert value not in listing.text
    one = admin.get("/api/v1/secrets/API_KEY")
    assert one.status_code == 200 and set(one.json()) == {"name", "created", "updated"}
    assert value not in one.text
    flow = ("name: uses-secret\njobs:\n  a:\n    steps:\n      - run: echo \"key="
            "${{ secrets.API_KEY }}\"\n")
    assert push(admin, "uses-secret", flow).status_code == 201
    run_id = admin.post("/api/v1/flows/uses-secret/runs", json={}).json()["id"]
    events = [e for _, e in sse(admin, run_id)]
    assert [e["line"] for e in events if e["type"] == "step.log"] == ["key=***"]
    run = admin.get(f"/api/v1/runs/{run_id}")
    assert value not in run.text
    # nothing in the data dir holds the value in clear (database, workspaces, logs)
    for root, _, files in os.walk(served.data_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                assert value.encode() not in fh.read(), os.path.join(root, name)
    bad = admin.put("/api/v1/secrets/9bad", json={"value": "x"})
    assert bad.json() == {"error": "'9bad' is not a name: letters, digits and '_', not "
                                   "starting with a digit"}
    assert admin.delete("/api/v1/secrets/API_KEY").status_code == 204


def test_variables_are_read_as_variables(admin: httpx.Client) -> None:
    assert admin.put("/api/v1/variables/REGION", json={"value": "eu-1"}).status_code == 204
    flow = ("name: uses-var\nvariables:\n  OWN: mine\njobs:\n  a:\n    steps:\n"
            "      - run: echo ${{ variables.REGION }} ${{ variables.OWN }}\n")
    assert push(admin, "uses-var", flow).status_code == 201
    run_id = admin.post("/api/v1/flows/uses-var/runs", json={}).json()["id"]
    lines = [e["line"] for _, e in sse(admin, run_id) if e["type"] == "step.log"]
    assert lines == ["eu-1 mine"]
    listed = admin.get("/api/v1/variables").json()["variables"]
    assert [(v["name"], v["value"]) for v in listed] == [("REGION", "eu-1")]


def test_bad_input_gets_json_errors_and_leaves_the_service_healthy(
        served: Served, admin: httpx.Client) -> None:
    cases = [
        ("put", "/api/v1/flows/x", {"content": b"{not json",
                                    "headers": {"content-type": "application/json"}}, 422,
         {"error": "body: the body is not JSON"}),
        ("put", "/api/v1/flows/x", {"json": {"text": 5}}, 422,
         {"error": "text: Input should be a valid string"}),
        ("put", "/api/v1/flows/x", {"json": {"text": "name: x", "bogus": 1}}, 422,
         {"error": "bogus: Extra inputs are not permitted"}),
        ("post", "/api/v1/flows/nope/runs", {"json": {}}, 404,
         {"error": "no flow named 'nope' (push it first)"}),
        ("post", "/api/v1/flows/hello/runs", {"json": {"inputs": []}}, 422,
         {"error": "inputs: Input should be a valid dictionary"}),
        ("get", "/api/v1/runs/nope", {}, 404, {"error": "no run with id 'nope'"}),
        ("get", "/api/v1/nowhere", {}, 404, {"error": "not found"}),
        ("put", "/api/v1/flows/x", {"content": b"x" * (17 * 1024 * 1024),
                                    "headers": {"content-type": "application/json"}}, 413,
         {"error": "the body is larger than 16777216 bytes"}),
    ]
    for method, url, kwargs, status, body in cases:
        got = getattr(admin, method)(url, **kwargs)
        assert (got.status_code, got.json()) == (status, body), (method, url)
    assert httpx.get(served.url + "/healthz").status_code == 200


def test_openapi_describes_every_route(served: Served, admin: httpx.Client) -> None:
    assert httpx.get(served.url + "/api/v1/openapi.json").status_code == 401
    spec = admin.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = set(spec["paths"])
    for path in ("/api/v1/flows", "/api/v1/flows/{name}", "/api/v1/validate",
                 "/api/v1/flows/{name}/runs", "/api/v1/runs", "/api/v1/runs/{run_id}",
                 "/api/v1/runs/{run_id}/events", "/api/v1/runs/{run_id}/cancel",
                 "/api/v1/runs/{run_id}/rerun", "/api/v1/secrets/{name}",
                 "/api/v1/variables/{name}", "/api/v1/tokens", "/hooks/{flow}"):
        assert path in paths, path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_validate_endpoint(admin: httpx.Client) -> None:
    got = admin.post("/api/v1/validate", json={"text": "name: v\njobs: {}\n"})
    assert got.status_code == 200
    [diag] = got.json()["diagnostics"]
    assert (diag["file"], diag["line"], diag["path"]) == ("flow.yaml", 2, "jobs")
    clean = admin.post("/api/v1/validate", json={"text": HELLO})
    assert clean.json() == {"diagnostics": []}


def test_serve_refuses_a_port_in_use(tmp_path: os.PathLike[str], served: Served) -> None:
    got = subprocess.run([sys.executable, "-m", "flowray", "serve", "--port",
                          str(served.port), "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 2
    assert got.stderr == (f"error: cannot listen on 127.0.0.1:{served.port}: Address "
                          "already in use\n")


def test_rerun_failed_jobs_reuses_the_outputs_of_the_others(admin: httpx.Client,
                                                            tmp_path: os.PathLike[str]) -> None:
    marker = os.path.join(str(tmp_path), "fixed")
    flow = f"""\
name: flaky
jobs:
  make:
    outputs: {{value: "${{{{ steps.v.outputs.value }}}}"}}
    steps:
      - id: v
        run: echo "value=$RANDOM$RANDOM" >> "$FLOWRAY_OUTPUT"
  use:
    needs: [make]
    steps:
      - run: test -e {marker} && echo "got ${{{{ needs.make.outputs.value }}}}"
"""
    assert push(admin, "flaky", flow).status_code == 201, push(admin, "flaky", flow).text
    first = admin.post("/api/v1/flows/flaky/runs", json={}).json()["id"]
    done = wait_run(admin, first)
    assert done["status"] == "failure"
    value = done["record"]["jobs"]["make"]["outputs"]["value"]
    open(marker, "w").close()
    rerun = admin.post(f"/api/v1/runs/{first}/rerun", json={"failed": True})
    assert rerun.status_code == 201, rerun.text
    again = wait_run(admin, rerun.json()["id"])
    assert again["status"] == "success"
    assert again["rerun_of"] == first
    assert again["record"]["jobs"]["make"]["outputs"]["value"] == value  # not run again
    lines = [e["line"] for _, e in sse(admin, again["id"]) if e["type"] == "step.log"]
    assert lines == [f"got {value}"]
    nothing = admin.post(f"/api/v1/runs/{again['id']}/rerun", json={"failed": True})
    assert (nothing.status_code, nothing.json()) == (
        409, {"error": f"run {again['id']} has no failed or cancelled job"})


def test_concurrency_group_queues_runs(admin: httpx.Client, tmp_path: os.PathLike[str]) -> None:
    gate = os.path.join(str(tmp_path), "gate")
    flow = f"""\
name: grouped
triggers:
  manual:
    inputs: {{model: {{type: string}}}}
concurrency:
  group: train-${{{{ inputs.model }}}}
jobs:
  a:
    steps:
      - run: while [ ! -e {gate} ]; do sleep 0.05; done
"""
    assert push(admin, "grouped", flow).status_code == 201
    a1 = admin.post("/api/v1/flows/grouped/runs", json={"inputs": {"model": "a"}}).json()["id"]
    a2 = admin.post("/api/v1/flows/grouped/runs", json={"inputs": {"model": "a"}}).json()["id"]
    b1 = admin.post("/api/v1/flows/grouped/runs", json={"inputs": {"model": "b"}}).json()["id"]
    wait_run(admin, a1, status=("running",))
    wait_run(admin, b1, status=("running",))
    time.sleep(1)  # the loop had several passes to start a2 and did not
    assert admin.get(f"/api/v1/runs/{a2}").json()["status"] == "queued"
    open(gate, "w").close()
    for run_id in (a1, a2, b1):
        assert wait_run(admin, run_id)["status"] == "success"


def test_cancel_in_progress_cancels_the_running_run_of_the_group(
        admin: httpx.Client, tmp_path: os.PathLike[str]) -> None:
    flow = """\
name: latest-only
concurrency:
  group: deploy
  cancel-in-progress: true
jobs:
  a:
    steps:
      - run: echo go; sleep 60
"""
    assert push(admin, "latest-only", flow).status_code == 201
    first = admin.post("/api/v1/flows/latest-only/runs", json={}).json()["id"]
    for _, event in sse(admin, first):
        if event["type"] == "step.log":
            break
    second = admin.post("/api/v1/flows/latest-only/runs", json={}).json()["id"]
    done = wait_run(admin, first)
    assert done["status"] == "cancelled"
    assert done["record"]["cancel_reason"] == done["reason"] == (
        f"cancelled by run {second} in concurrency group 'deploy'")
    wait_run(admin, second, status=("running",))
    admin.post(f"/api/v1/runs/{second}/cancel")
    assert wait_run(admin, second)["status"] == "cancelled"


def test_rerun_one_matrix_cell_and_junit_reports(admin: httpx.Client) -> None:
    flow = """\
name: sweep
jobs:
  train:
    strategy:
      matrix: {lr: [1, 2, 3]}
      max-parallel: 1  # one junit.xml in the shared workspace at a time
    outputs: {score: "${{ steps.s.outputs.score }}"}
    reports: [junit.xml]
    steps:
      - id: s
        run: |
          echo "score=${{ matrix.lr }}$RANDOM" >> "$FLOWRAY_OUTPUT"
          cat > junit.xml <<'XML'
          <testsuite name="t" tests="2" failures="1"><testcase name="ok"/><testcase name="bad"><failure message="boom"/></testcase></testsuite>
          XML
"""
    assert push(admin, "sweep", flow).status_code == 201, push(admin, "sweep", flow).text
    first = admin.post("/api/v1/flows/sweep/runs", json={}).json()["id"]
    done = wait_run(admin, first)
    jobs = done["record"]["jobs"]
    assert sorted(jobs) == ["train.1", "train.2", "train.3"]
    assert jobs["train.1"]["reports"]["failures"] == 1
    unknown = admin.post(f"/api/v1/runs/{first}/rerun", json={"jobs": ["train.9"]})
    assert (unknown.status_code, unknown.json()) == (422, {
        "error": f"run {first} has no job 'train.9' (its jobs: train.1, train.2, train.3)"})
    both = admin.post(f"/api/v1/runs/{first}/rerun", json={"failed": True, "jobs": ["x"]})
    assert both.json() == {"error": 'give either {"failed": true} or {"jobs": [...]}'}
    rerun = admin.post(f"/api/v1/runs/{first}/rerun", json={"jobs": ["train.2"]})
    again = wait_run(admin, rerun.json()["id"])
    new_jobs = again["record"]["jobs"]
    for kept in ("train.1", "train.3"):
        assert new_jobs[kept]["outputs"] == jobs[kept]["outputs"]
        assert new_jobs[kept]["warnings"] == [f"not run again: its outputs are those of run "
                                              f"{first}"]
    assert new_jobs["train.2"]["outputs"] != jobs["train.2"]["outputs"]
    assert new_jobs["train.2"]["warnings"] == []


def test_retention_keeps_the_newest_runs(tmp_path: os.PathLike[str]) -> None:
    server = Served(os.path.join(str(tmp_path), "data"), free_port(),
                    extra=["--keep-runs", "2"]).start()
    try:
        with server.client() as admin:
            push(admin, "kept", "name: kept\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            ids = []
            for _ in range(4):
                ids.append(admin.post("/api/v1/flows/kept/runs", json={}).json()["id"])
                wait_run(admin, ids[-1])
            listed = [r["id"] for r in admin.get("/api/v1/runs").json()["runs"]]
            assert listed == [ids[3], ids[2]]
            assert sorted(os.listdir(os.path.join(server.data_dir, "workspaces"))) == \
                sorted(ids[2:])
            assert admin.get(f"/api/v1/runs/{ids[0]}").status_code == 404
    finally:
        assert server.stop() == 0


def test_no_request_gets_a_500(served: Served, admin: httpx.Client) -> None:
    """Every route of the OpenAPI description, with malformed paths, queries and bodies."""
    spec = admin.get("/api/v1/openapi.json").json()
    junk_bodies: list[bytes] = [b"", b"null", b"[]", b"{}", b'{"text": null}', b"\xff\xfe",
                                b'{"inputs": {"a": 1e999}}', b'{"value": "' + b"x" * 5000 + b'"}',
                                b"[" * 5000, b'{"name": "a", "role": "god"}',
                                b'{"jobs": [1, 2]}', b'{"failed": "yes"}']
    odd = ["x", "..", "%00", "a" * 300, "%F0%9F%92%A5", "0", "-1", "1e9"]
    for path, methods in spec["paths"].items():
        for method in methods:
            for name in odd:
                url = path.replace("{name}", name).replace("{run_id}", name) \
                    .replace("{flow}", name).replace("{job}", name).replace("{step}", name) \
                    .replace("{path}", name)
                has_body = method in ("put", "post")
                if has_body and name not in odd[:3]:
                    continue  # every body with a few names; every name without a body
                for body in junk_bodies if has_body else [b""]:
                    got = admin.request(method.upper(), url, content=body,
                                        params={"limit": name, "before": name,
                                                "version": name},
                                        headers={"content-type": "application/json",
                                                 "Last-Event-ID": name})
                    assert got.status_code < 500, (method, url, body[:40], got.text)
                    if got.status_code >= 400:
                        assert set(got.json()) >= {"error"}, (method, url)
    assert httpx.get(served.url + "/healthz").status_code == 200


def test_required_inputs_and_automatic_triggers_warn_at_push(admin: httpx.Client) -> None:
    flow = """\
name: needs-input
triggers:
  manual:
    inputs:
      model: {type: string, required: true}
  schedule:
    - cron: "0 3 * * *"
jobs:
  a:
    steps:
      - run: echo ${{ inputs.model }}
"""
    got = push(admin, "needs-input", flow, path="needs-input.yaml")
    assert got.status_code == 201
    [warning] = got.json()["warnings"]
    assert warning == {
        "file": "needs-input.yaml", "line": 5, "col": 7,
        "path": "triggers.manual.inputs.model", "severity": "warning",
        "message": "input 'model' is required and has no default, so the schedule trigger(s) "
                   "cannot start this flow (they give no inputs): give it a default"}
    listed = {f["name"]: f for f in admin.get("/api/v1/flows").json()["flows"]}
    assert listed["needs-input"]["triggers"] == ["manual", "schedule"]
    admin.delete("/api/v1/flows/needs-input")


def test_a_run_cancelled_while_queued_ends_its_stream_and_starts_its_followers(
        admin: httpx.Client, tmp_path: os.PathLike[str]) -> None:
    gate = os.path.join(str(tmp_path), "gate")
    blocker = f"""\
name: blocker
concurrency: {{group: only-one}}
jobs:
  a:
    steps:
      - run: while [ ! -e {gate} ]; do sleep 0.05; done
"""
    follower = """\
name: after-cancel
triggers:
  flow:
    - name: blocker
      status: [cancelled]
jobs:
  a:
    steps:
      - run: echo "${{ event.flow }} ended ${{ event.status }}"
"""
    assert push(admin, "blocker", blocker).status_code == 201
    assert push(admin, "after-cancel", follower).status_code == 201
    running = admin.post("/api/v1/flows/blocker/runs", json={}).json()["id"]
    wait_run(admin, running, status=("running",))
    queued = admin.post("/api/v1/flows/blocker/runs", json={}).json()["id"]
    got = admin.post(f"/api/v1/runs/{queued}/cancel")
    assert got.json() == {"id": queued, "status": "cancelled"}
    events = [e for _, e in sse(admin, queued)]
    assert [(e["seq"], e["type"]) for e in events] == [(1, "run.started"), (2, "run.finished")]
    assert (events[1]["status"], events[1]["reason"]) == ("cancelled", "cancelled")
    deadline = time.monotonic() + 60
    runs: list[dict[str, object]] = []
    while time.monotonic() < deadline and not runs:
        runs = admin.get("/api/v1/runs", params={"flow": "after-cancel"}).json()["runs"]
        time.sleep(0.1)
    [after] = runs
    lines = [e["line"] for _, e in sse(admin, str(after["id"])) if e["type"] == "step.log"]
    assert lines == ["blocker ended cancelled"]
    open(gate, "w").close()
    assert wait_run(admin, running)["status"] == "success"


def test_runs_of_the_service_share_the_machine_s_gpus(tmp_path: os.PathLike[str]) -> None:
    """Two runs each wanting the one GPU (a fake one: FLOWRAY_GPUS names it; no GPU here)
    take turns instead of both getting it."""
    gate = os.path.join(str(tmp_path), "gate")
    server = Served(os.path.join(str(tmp_path), "data"), free_port(),
                    env={"FLOWRAY_GPUS": "1"}).start()
    try:
        with server.client() as admin:
            flow = ("name: gpu\njobs:\n  a:\n    resources: {gpus: 1}\n    steps:\n"
                    f"      - run: echo gpu=$CUDA_VISIBLE_DEVICES; while [ ! -e {gate} ]; "
                    "do sleep 0.05; done\n")
            push(admin, "gpu", flow)
            first = admin.post("/api/v1/flows/gpu/runs", json={}).json()["id"]
            for _, event in sse(admin, first):
                if event["type"] == "step.log":
                    assert event["line"] == "gpu=0"
                    break
            second = admin.post("/api/v1/flows/gpu/runs", json={}).json()["id"]
            wait_run(admin, second, status=("running",))
            time.sleep(1)  # the second run's job had time to start, and did not
            record = admin.get(f"/api/v1/runs/{second}").json()["record"]
            assert record["jobs"]["a"]["status"] == "queued"
            open(gate, "w").close()
            for run_id in (first, second):
                assert wait_run(admin, run_id)["status"] == "success"
            lines = [e["line"] for _, e in sse(admin, second) if e["type"] == "step.log"]
            assert lines == ["gpu=0"]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(("argv", "hidden", "message"), [
    (["serve"], ["sqlalchemy", "alembic"],
     "error: flowray serve needs sqlalchemy, alembic, which are not installed here: pip install "
     "'flowray[server]'\n"),
    (["flow", "list", "--server", "http://127.0.0.1:9"], ["httpx"],
     "error: talking to a flowray server needs httpx, which is not installed here: pip install "
     "'flowray[server]'\n"),
])
def test_without_the_server_extra_the_commands_say_how_to_install_it(
        argv: list[str], hidden: list[str], message: str) -> None:
    """The extra's libraries hidden from the import system (as if not installed)."""
    code = ("import sys\n"
            + "".join(f"sys.modules[{name!r}] = None\n" for name in hidden)
            + f"sys.argv = ['flowray', *{argv!r}]\n"
            + "from flowray.cli import main\nmain()\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert (got.returncode, got.stderr) == (2, message)
