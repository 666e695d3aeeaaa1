"""The commands against a flowray server (cli/server.py, cli/client.py, and `runs`, `status`,
`logs`, `cancel` with --server): what they send, what they print, how they exit.

Most tests talk to a stand-in for the service: a real HTTP server on a free port, in a
thread, answering the routes of the service's API (SPEC "The service") with canned data, so
that a test can make it misbehave as the real one cannot be made to on cue (drop an event
stream mid-event, ignore Last-Event-ID, answer 403) and see every byte it was sent. Its runs
are real ones: flows run in the test's workspace, their record, events and logs served as
the service serves them. The last test runs the same commands against `flowray serve` itself.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from click.testing import CliRunner
from conftest import Outcome, Workspace, free_ports

from flowray.cli import main

TOKENS = {"admin-token": "admin", "runner-token": "runner", "viewer-token": "viewer"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Run:
    summary: dict[str, Any]
    record: dict[str, Any] | None
    events: list[dict[str, Any]]
    logs: dict[tuple[str, int], str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes a kept-alive connection while its thread waits for the next
        # request (or a stream it stopped reading) is no error of the server's.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StandIn:
    """The stand-in flowray server: its state, what it was asked, and how it misbehaves
    (``drop``: how the next event stream of a run breaks off after ``n`` events)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.flows: dict[str, list[dict[str, Any]]] = {}
        self.runs: dict[str, Run] = {}
        self.templates: dict[str, Run] = {}  # flow name -> the run a trigger starts
        self.secrets: dict[str, str] = {}
        self.variables: dict[str, str] = {"REGION": "eu-west"}
        self.keys: dict[str, str] = {}
        self.drop: dict[str, tuple[int, str]] = {}  # run id -> (after n events, how)
        self.resend: set[str] = set()  # runs whose next stream ignores Last-Event-ID
        self.streams = 0
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def add_run(self, run: Run) -> str:
        self.runs[run.summary["id"]] = run
        return str(run.summary["id"])

    def asked(self, method: str, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(prefix)]

    # ------------------------------------------------------------------ routes

    def route(self, method: str, parts: list[str], body: Any, query: dict[str, list[str]],
              headers: dict[str, str]) -> tuple[int, Any]:
        """(status, JSON body or text) for a request to /api/v1/<parts>."""
        match (method, *parts):
            case ("PUT", "flows", name):
                if "bogus:" in body["text"]:
                    line = body["text"].splitlines().index("    bogus: 1") + 1
                    return 422, {"error": f"flow {name} is invalid", "diagnostics": [
                        {"file": body["path"], "line": line, "col": 5, "path": "jobs.a.bogus",
                         "message": "unknown key 'bogus'", "severity": "error"}]}
                versions = self.flows.setdefault(name, [])
                versions.append(body)
                return (201 if len(versions) == 1 else 200), {
                    "name": name, "version": len(versions), "created": 1796000000.0}
            case ("GET", "flows"):
                return 200, {"flows": [
                    {"name": n, "version": len(v), "updated": 1796000000.0,
                     "triggers": ["manual", "schedule"] if n == "nightly" else ["manual"],
                     "last_run": {"id": "r-1", "status": "success", "created": 1796000000.0}
                     if n == "nightly" else None,
                     "next_fire": 1796003600.0 if n == "nightly" else None}
                    for n, v in self.flows.items()]}
            case ("DELETE", "flows", name):
                if self.flows.pop(name, None) is None:
                    return 404, {"error": f"no flow named '{name}'"}
                return 204, None
            case ("POST", "flows", name, "runs"):
                key = headers.get("idempotency-key")
                if key in self.keys:
                    return 200, {"id": self.keys[key], "status": "queued"}
                run_id = f"r-{len(self.runs) + 1}"
                self.runs[run_id] = self._copy(self.templates[name], run_id)
                if key:
                    self.keys[key] = run_id
                return 201, {"id": run_id, "status": "queued"}
            case ("GET", "runs"):
                limit = int(query.get("limit", ["20"])[0])
                return 200, {"runs": [r.summary for r in reversed(self.runs.values())][:limit],
                             "next": None}
            case ("GET", "runs", run_id) if run_id in self.runs:
                run = self.runs[run_id]
                return 200, {**run.summary, "record": run.record}
            case ("GET", "runs", run_id, "logs", job, step) if run_id in self.runs:
                return 200, self.runs[run_id].logs.get((job, int(step)), "")
            case ("POST", "runs", run_id, "cancel") if run_id in self.runs:
                if self.runs[run_id].summary["status"] != "running":
                    return 409, {"error": f"run {run_id} already ended"}
                self.runs[run_id].summary["status"] = "cancelled"  # seen on the next read
                return 202, {"id": run_id, "status": "running"}
            case ("POST", "runs", run_id, "rerun") if run_id in self.runs:
                new = f"r-{len(self.runs) + 1}"
                self.runs[new] = self._copy(self.runs[run_id], new)
                return 201, {"id": new}
            case ("PUT", "secrets", name):
                self.secrets[name] = body["value"]
                return 204, None
            case ("GET", "secrets"):
                return 200, {"secrets": [{"name": n, "created": 1796000000.0,
                                          "updated": 1796000060.0} for n in self.secrets]}
            case ("DELETE", "secrets" | "variables" as kind, name):
                table = self.secrets if kind == "secrets" else self.variables
                if table.pop(name, None) is None:
                    return 404, {"error": f"no {kind[:-1]} named '{name}'"}
                return 204, None
            case ("PUT", "variables", name):
                self.variables[name] = body["value"]
                return 204, None
            case ("GET", "variables"):
                return 200, {"variables": [{"name": n, "value": v, "updated": 1796000000.0}
                                           for n, v in self.variables.items()]}
            case ("POST", "tokens"):
                return 201, {**body, "token": "frt_new_token_value"}
        return 404, {"error": f"no run named '{parts[-1]}'" if parts[:1] == ["runs"]
                     else f"no route {method} /{'/'.join(parts)}"}

    @staticmethod
    def _copy(run: Run, run_id: str) -> Run:
        summary = {**run.summary, "id": run_id}
        record = {**run.record, "id": run_id} if run.record else None
        events = [{**e, "run": run_id} for e in run.events]
        return Run(summary, record, events, dict(run.logs))

    @staticmethod
    def role_needed(method: str, path: str) -> str:
        if path.startswith(("/api/v1/secrets", "/api/v1/tokens")) or (
                method != "GET" and path.startswith(("/api/v1/flows/", "/api/v1/variables"))
                and not path.endswith("/runs")):
            return "admin"
        return "runner" if method == "POST" and path != "/api/v1/validate" else "viewer"

    def _events(self, handler: BaseHTTPRequestHandler, run: Run) -> None:
        """The run's events after Last-Event-ID as Server-Sent Events (chunked, as uvicorn
        sends them), broken off as ``drop`` says once."""
        self.streams += 1
        run_id = run.summary["id"]
        after = int(handler.headers.get("Last-Event-ID", "0"))
        if run_id in self.resend:
            self.resend.discard(run_id)
            after = 0  # a server that ignores Last-Event-ID: the client skips the repeats
        cut = self.drop.pop(run_id, None)
        if cut and cut[1] == "resends":
            self.resend.add(run_id)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def chunk(data: bytes) -> None:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()

        chunk(b": keep-alive\n\n")
        sent = 0
        for event in run.events:
            if event["seq"] <= after:
                continue
            text = f"id: {event['seq']}\ndata: {json.dumps(event)}\n\n".encode()
            if cut and sent == cut[0]:
                chunk(text[: len(text) // 2])  # half an event, then the connection breaks
                if cut[1] == "ends":
                    handler.wfile.write(b"0\r\n\r\n")  # a stream that ends early, cleanly
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            chunk(text)
            sent += 1
        handler.wfile.write(b"0\r\n\r\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                standin.seen.append(Seen(self.command, url.path, parse_qs(url.query),
                                         headers, body))
                auth = headers.get("authorization", "")
                role = TOKENS.get(auth.removeprefix("Bearer ")) if auth.startswith(
                    "Bearer ") else None
                need = standin.role_needed(self.command, url.path)
                order = ["viewer", "runner", "admin"]
                parts = [unquote(p) for p in url.path.split("/")[3:]]
                if role is None:
                    status, out = 401, {"error": "missing or unknown token"}
                elif order.index(role) < order.index(need):
                    status, out = 403, {"error": f"the token has the role {role}; this needs "
                                                 f"{need}"}
                elif parts[-1:] == ["events"] and parts[1] in standin.runs:
                    standin._events(self, standin.runs[parts[1]])
                    return
                else:
                    status, out = standin.route(self.command, parts, body,
                                                parse_qs(url.query), headers)
                data = b"" if out is None else (
                    out.encode() if isinstance(out, str) else json.dumps(out).encode())
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(out, str)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = answer

        return Handler


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _no_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOWRAY_SERVER", "FLOWRAY_TOKEN", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Outcome:
    res = CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)
    out = Outcome(res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in out.stdout + out.stderr
    return out


def on(standin: StandIn, *args: str, token: str = "admin-token", **kw: Any) -> Outcome:
    """The command with ``--server`` the stand-in and ``token`` (from FLOWRAY_TOKEN)."""
    env = {"FLOWRAY_TOKEN": token, **kw.pop("env", {})}
    return cli(*args, "--server", standin.url, env=env, **kw)


OK_FLOW = """
    name: sample
    jobs:
      train:
        steps:
          - id: fit
            run: echo hello; echo world
          - run: echo second
"""


def local_run(ws: Workspace, text: str, name: str) -> Run:
    """A real run of the flow ``text`` in the workspace, as the service would keep it."""
    ws.run(ws.flow(text, name))
    record = ws.record()
    folder = ws.root / ".flowray" / "runs" / record["id"]
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    logs = {(key, step["index"]): (folder / step["log"]).read_text()
            for key, job in record["jobs"].items() for step in job["steps"] if step["log"]}
    summary = {"id": record["id"], "flow": record["flow"]["name"], "version": 1,
               "number": record["run_number"], "status": record["status"],
               "trigger": "manual", "created": record["started"] - 1,
               "started": record["started"], "ended": record["ended"],
               "exit_code": record["exit_code"], "reason": None}
    return Run(summary, record, events, logs)


@pytest.fixture
def runs(ws: Workspace, standin: StandIn) -> dict[str, Run]:
    """Real runs (success, failure) and one cancelled (the success run's events up to its
    first step, then a cancelled end), which the stand-in starts when their flow is
    triggered."""
    ok = local_run(ws, OK_FLOW, "sample.yaml")
    bad = local_run(ws, "name: broken\njobs: {a: {steps: [{run: 'echo oops; exit 3'}]}}\n",
                    "broken.yaml")
    events = [e for e in ok.events if e["seq"] <= 6]
    events.append({**ok.events[-1], "seq": 7, "status": "cancelled", "exit_code": 130})
    stopped = Run({**ok.summary, "status": "cancelled"}, None, events)
    standin.templates.update(sample=ok, broken=bad, stopped=stopped)
    return {"ok": ok, "bad": bad, "stopped": stopped}


def t(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


# ----------------------------------------------------------------------------- errors


def test_a_server_that_does_not_answer_is_one_line_and_exit_1(ws: Workspace) -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    for args in (["flow", "list"], ["runs"], ["status", "last"], ["trigger", "x"],
                 ["secret", "list"], ["logs", "r-1", "-f"]):
        out = cli(*args, "--server", url)
        assert (out.exit_code, out.stdout, out.stderr) == (
            1, "", f"error: cannot reach the flowray server at {url}: Connection refused\n"), args


def test_a_command_without_a_server_or_with_a_bad_url_says_so(ws: Workspace) -> None:
    out = cli("flow", "list")
    assert (out.exit_code, out.stderr) == (
        2, "error: this command talks to a flowray server: give --server URL or set "
           "FLOWRAY_SERVER\n")
    out = cli("rerun", "r-1", "--failed", "--server", "head:8420")
    assert (out.exit_code, out.stderr) == (
        2, "error: --server 'head:8420' is not an http:// or https:// URL (the flowray "
           "server's address, e.g. http://HOST:8420)\n")


def test_a_missing_or_wrong_token_is_401(standin: StandIn) -> None:
    message = "error: the server refused the token (401): set FLOWRAY_TOKEN or --token\n"
    out = cli("flow", "list", "--server", standin.url)
    assert (out.exit_code, out.stdout, out.stderr) == (2, "", message)
    assert "authorization" not in standin.seen[-1].headers
    out = on(standin, "runs", token="stolen")
    assert (out.exit_code, out.stdout, out.stderr) == (2, "", message)


def test_a_token_of_too_small_a_role_is_403_naming_the_role(standin: StandIn,
                                                            ws: Workspace) -> None:
    ws.flow(OK_FLOW)
    out = on(standin, "flow", "push", "flow.yaml", token="runner-token")
    assert (out.exit_code, out.stdout, out.stderr) == (
        2, "", "error: the token may not push flows (403): the token has the role runner; this "
               "needs admin\n")
    out = on(standin, "trigger", "sample", token="viewer-token")
    assert (out.exit_code, out.stdout, out.stderr) == (
        2, "", "error: the token may not start runs (403): the token has the role viewer; this "
               "needs runner\n")
    assert standin.flows == {}


def test_the_token_comes_from_the_environment_a_file_or_the_command_line(
        standin: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("viewer-token\n")
    out = cli("secret", "list", "--server", standin.url, "--token", "admin-token")
    assert (out.exit_code, out.stdout) == (0, f"no secrets on {standin.url}\n")
    out = cli("variable", "list", "--server", standin.url, "--token-file", str(path),
              env={"FLOWRAY_TOKEN": "admin-token"})
    assert out.exit_code == 0
    assert [s.headers["authorization"] for s in standin.seen] == [
        "Bearer admin-token", "Bearer viewer-token"]  # the file wins over the environment
    out = cli("runs", "--server", standin.url, "--token", "a", "--token-file", str(path))
    assert (out.exit_code, out.stderr) == (2, "error: give --token or --token-file, not both\n")
    out = cli("runs", env={"FLOWRAY_SERVER": standin.url, "FLOWRAY_TOKEN": "viewer-token"})
    assert (out.exit_code, out.stdout) == (0, f"no runs on {standin.url} yet\n")


def test_the_servers_error_message_is_shown_as_it_is(standin: StandIn) -> None:
    out = on(standin, "flow", "rm", "nope")
    assert (out.exit_code, out.stdout, out.stderr) == (2, "", "error: no flow named 'nope'\n")
    out = on(standin, "status", "r-404")
    assert (out.exit_code, out.stdout, out.stderr) == (2, "", "error: no run named 'r-404'\n")


# ----------------------------------------------------------------------------- flows


def test_push_sends_the_flow_its_name_and_its_local_actions(standin: StandIn,
                                                            ws: Workspace) -> None:
    ws.action("actions/prep", "name: prep\nruns: {using: python, main: main.py}\n",
              main__py="print('prep')\n")
    ws.write("actions/prep/lib/util.py", "X = 1\n")
    ws.write("actions/prep/__pycache__/main.cpython-311.pyc", "junk")
    ws.write("elsewhere.txt", "not sent\n")
    text = ws.write("flows/train.yaml", """
        name: train
        jobs:
          a:
            steps:
              - action: ./actions/prep
              - action: ./actions/prep
              - action: ./actions/missing
    """).read_text()
    out = on(standin, "flow", "push", "flows/train.yaml")
    assert (out.exit_code, out.stdout, out.stderr) == (
        0, "flows/train.yaml: pushed train version 1 (a new flow), with 3 files of local "
           "actions\n", "")
    (push,) = standin.asked("PUT", "/api/v1/flows/")
    assert push.path == "/api/v1/flows/train"
    assert {k: base64.b64decode(v).decode() for k, v in push.body["files"].items()} == {
        "actions/prep/action-datatorch.yaml": "name: prep\nruns: {using: python, main: "
                                              "main.py}\n",
        "actions/prep/main.py": "print('prep')\n",
        "actions/prep/lib/util.py": "X = 1\n"}
    assert (push.body["text"], push.body["path"]) == (text, "flows/train.yaml")

    ws.write("nameless.yaml", "jobs: {a: {steps: [{run: 'true'}]}}\n")
    out = on(standin, "flow", "push", "flows/train.yaml", "nameless.yaml")
    assert (out.exit_code, out.stdout) == (
        0, "flows/train.yaml: pushed train version 2, with 3 files of local actions\n"
           "nameless.yaml: pushed nameless version 1 (a new flow)\n")


def test_an_invalid_flow_prints_the_servers_diagnostics_stores_nothing_exits_2(
        standin: StandIn, ws: Workspace) -> None:
    ws.flow("name: bad\njobs:\n  a:\n    bogus: 1\n    steps: [{run: 'true'}]\n", "bad.yaml")
    ws.flow(OK_FLOW, "good.yaml")
    out = on(standin, "flow", "push", "bad.yaml", "good.yaml")
    assert (out.exit_code, out.stdout, out.stderr) == (
        2, "good.yaml: pushed sample version 1 (a new flow)\n",
        "bad.yaml:4:5: jobs.a.bogus: unknown key 'bogus'\n")
    assert list(standin.flows) == ["sample"]


def test_flow_list_and_rm(standin: StandIn, ws: Workspace) -> None:
    out = on(standin, "flow", "list")
    assert (out.exit_code, out.stdout) == (0, f"no flows on {standin.url} yet\n")
    standin.flows.update(nightly=[{}, {}], adhoc=[{}])
    out = on(standin, "flow", "list")
    header = ["FLOW", "VERSION", "LAST RUN", "NEXT", "UPDATED", "TRIGGERS"]
    rows = [["nightly", "2", "r-1 success", t(1796003600.0), t(1796000000.0),
             "manual, schedule"],
            ["adhoc", "1", "-", "-", t(1796000000.0), "manual"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i == 1 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r[:-1], widths, strict=False))) \
            + "  " + r[-1]

    assert (out.exit_code, out.stdout) == (0, "".join(line(r) + "\n" for r in [header, *rows]))
    assert json.loads(on(standin, "flow", "list", "--json").stdout)[1]["name"] == "adhoc"
    out = on(standin, "flow", "rm", "adhoc")
    assert (out.exit_code, out.stdout) == (0, "removed flow adhoc\n")
    assert list(standin.flows) == ["nightly"]


# ----------------------------------------------------------------------------- runs


def test_trigger_prints_the_run_id_and_sends_inputs_and_the_idempotency_key(
        standin: StandIn, runs: dict[str, Run]) -> None:
    out = on(standin, "trigger", "sample", "--input", "lr=0.1", "-i", "model=big")
    assert (out.exit_code, out.stdout, out.stderr) == (0, "r-1\n", "")
    assert standin.seen[-1].body == {"inputs": {"lr": "0.1", "model": "big"}}
    out = on(standin, "trigger", "sample", "--idempotency-key", "push-42")
    assert (out.exit_code, out.stdout, out.stderr) == (0, "r-2\n", "")
    assert standin.seen[-1].headers["idempotency-key"] == "push-42"
    out = on(standin, "trigger", "sample", "--idempotency-key", "push-42")
    assert (out.exit_code, out.stdout, out.stderr) == (
        0, "r-2\n", "the idempotency key was given before: run r-2 is the run it started "
                    "(queued)\n")
    out = on(standin, "trigger", "sample", "--input", "lr")
    assert (out.exit_code, out.stderr) == (2, "error: --input 'lr' is not KEY=VALUE\n")


@pytest.mark.parametrize(("flow", "code", "stdout", "status"), [
    ("sample", 0, "==> train/fit <==\nhello\nworld\n==> train/2 <==\nsecond\n", "success (exit 0)"),
    ("broken", 1, "==> a/1 <==\noops\n", "failure (exit 1)"),
    ("stopped", 130, "==> train/fit <==\nhello\nworld\n", "cancelled (exit 130)"),
])
def test_trigger_wait_prints_the_logs_and_exits_as_the_run_ended(
        standin: StandIn, runs: dict[str, Run], flow: str, code: int, stdout: str,
        status: str) -> None:
    out = on(standin, "trigger", flow, "--wait")
    assert (out.exit_code, out.stdout, out.stderr) == (
        code, stdout, f"run r-1 of flow {flow} queued; waiting for it to end (Ctrl-C stops "
                      f"waiting, not the run)\nrun r-1 {status}\n")


@pytest.mark.parametrize("how", ["breaks", "ends", "resends"])
def test_logs_follow_resumes_a_dropped_stream_without_losing_or_repeating_a_line(
        standin: StandIn, runs: dict[str, Run], how: str) -> None:
    # The connection breaks in the middle of the 5th event (the first log line): cut off
    # mid-chunk, ended cleanly before the run did, or resumed by a server that ignores
    # Last-Event-ID and sends everything again.
    run_id = standin.add_run(runs["ok"])
    standin.drop[run_id] = (4, how)
    out = on(standin, "logs", run_id, "-f")
    assert (out.exit_code, out.stdout, out.stderr) == (
        0, "==> train/fit <==\nhello\nworld\n==> train/2 <==\nsecond\n", "")
    streams = standin.asked("GET", f"/api/v1/runs/{run_id}/events")
    assert [s.headers.get("last-event-id") for s in streams] == [None, "4"]
    out = on(standin, "logs", run_id, "train/fit", "--follow")
    assert (out.exit_code, out.stdout) == (0, "hello\nworld\n")


def test_status_and_logs_from_a_server_print_what_they_print_for_the_local_record(
        standin: StandIn, runs: dict[str, Run], ws: Workspace) -> None:
    run_id = standin.add_run(runs["ok"])
    for args in (["status", run_id], ["logs", run_id], ["logs", run_id, "train/fit"],
                 ["logs", run_id, "train"]):
        local = ws.cli(*args)
        out = on(standin, *args)
        assert (out.exit_code, out.stdout, out.stderr) == (
            0, local.stdout, local.stderr), args
    assert on(standin, "status", "last").stdout == ws.cli("status", run_id).stdout
    assert json.loads(on(standin, "status", run_id, "--json").stdout)["record"] == \
        runs["ok"].record
    out = on(standin, "logs", run_id, "train/nope")
    assert (out.exit_code, out.stderr) == (
        2, "error: job 'train' has no step 'nope' (steps: fit, 2)\n")


def test_status_of_a_queued_run_and_a_record_of_the_wrong_shape(standin: StandIn,
                                                                 runs: dict[str, Run]) -> None:
    standin.add_run(Run({**runs["ok"].summary, "id": "r-q", "status": "queued",
                         "reason": "waiting for group train-big"}, None, []))
    out = on(standin, "status", "r-q")
    assert (out.exit_code, out.stdout) == (
        0, "run r-q  flow sample  queued  (waiting for group train-big)\n")
    out = on(standin, "logs", "r-q")
    assert (out.exit_code, out.stdout, out.stderr) == (
        0, "", "run r-q is queued: no step of it ran yet\n")
    broken = {**runs["ok"].record, "jobs": {"train": {"key": 3}}}  # type: ignore[dict-item]
    standin.add_run(Run({**runs["ok"].summary, "id": "r-x"}, broken, []))
    out = on(standin, "status", "r-x")
    assert out.exit_code == 1
    assert out.stderr.startswith(
        f"error: run r-x: the record {standin.url} sent is not one this flowray can read:\n"
        "  jobs.train.key: expected a string, got 3\n")


def test_runs_lists_the_servers_runs_as_a_table(standin: StandIn,
                                                runs: dict[str, Run]) -> None:
    out = on(standin, "runs")
    assert (out.exit_code, out.stdout) == (0, f"no runs on {standin.url} yet\n")
    for run in (runs["ok"], runs["bad"]):
        standin.add_run(run)
    out = on(standin, "runs", "-n", "5")
    rows = [[r.summary["id"], r.summary["status"], t(r.summary["started"]),
             f"{r.summary['ended'] - r.summary['started']:.2f}s", "manual", r.summary["flow"]]
            for r in (runs["bad"], runs["ok"])]
    header = ["RUN", "STATUS", "STARTED", "TOOK", "TRIGGER", "FLOW"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]
    expected = "".join("  ".join([*(c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in
                                    enumerate(zip(r[:-1], widths, strict=False))), r[-1]])
                       + "\n" for r in [header, *rows])
    assert (out.exit_code, out.stdout) == (0, expected)
    assert standin.asked("GET", "/api/v1/runs")[-1].query == {"limit": ["5"]}
    assert [r["id"] for r in json.loads(on(standin, "runs", "--json").stdout)] == [
        runs["bad"].summary["id"], runs["ok"].summary["id"]]


def test_cancel_waits_until_the_server_says_cancelled(standin: StandIn,
                                                      runs: dict[str, Run]) -> None:
    standin.add_run(Run({**runs["ok"].summary, "id": "r-live", "status": "running"}, None, []))
    out = on(standin, "cancel", "r-live", token="runner-token")
    assert (out.exit_code, out.stdout, out.stderr) == (
        0, "run r-live cancelled\n",
        f"cancelling run r-live on {standin.url}: its steps get SIGTERM, then SIGKILL after "
        "the grace period...\n")
    out = on(standin, "cancel", "r-live")
    assert (out.exit_code, out.stdout, out.stderr) == (
        1, "", "error: run r-live already ended: cancelled\n")


def test_rerun_sends_what_to_run_again(standin: StandIn, runs: dict[str, Run]) -> None:
    run_id = standin.add_run(runs["bad"])
    for args, body, what in ((["--failed"], {"failed": True}, "the failed jobs"),
                             (["--job", "a", "--job", "b.2"], {"jobs": ["a", "b.2"]},
                              "jobs a, b.2")):
        out = on(standin, "rerun", run_id, *args, token="runner-token")
        new = f"r-{len(standin.runs)}"
        assert (out.exit_code, out.stdout, out.stderr) == (
            0, f"{new}\n", f"rerunning {what} of run {run_id}\n")
        assert standin.asked("POST", "/api/v1/runs/")[-1].body == body
    out = on(standin, "rerun", run_id, "--failed", "--job", "a")
    assert (out.exit_code, out.stderr) == (2, "error: give --failed or --job, not both\n")
    out = on(standin, "rerun", run_id)
    assert (out.exit_code, out.stderr) == (
        2, "error: say which jobs to run again: --failed, or --job KEY (`flowray trigger FLOW` "
           "starts a new run of all of a flow)\n")


def test_flowray_server_in_the_environment_leaves_local_options_local(
        standin: StandIn, runs: dict[str, Run], ws: Workspace) -> None:
    env = {"FLOWRAY_SERVER": standin.url, "FLOWRAY_TOKEN": "viewer-token"}
    out = cli("runs", "-C", str(ws.root), env=env)
    assert out.exit_code == 0 and "sample" in out.stdout and "broken" in out.stdout
    assert standin.seen == []
    out = cli("runs", "-C", str(ws.root), "--server", standin.url)
    assert (out.exit_code, out.stderr) == (
        2, "error: --server and --workdir name different places to read runs from: give one\n")


# ----------------------------------------------------------------------------- secrets


def test_a_secret_is_set_from_stdin_a_file_or_the_environment_never_argv(
        standin: StandIn, tmp_path: Path) -> None:
    out = on(standin, "secret", "set", "API_KEY", input="s3cr3t-from-stdin\n")
    assert (out.exit_code, out.stdout, out.stderr) == (0, "secret API_KEY set\n", "")
    assert standin.secrets == {"API_KEY": "s3cr3t-from-stdin"}
    (tmp_path / "pem").write_text("-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
    out = on(standin, "secret", "set", "PEM", "--from-file", str(tmp_path / "pem"))
    assert out.exit_code == 0
    assert standin.secrets["PEM"] == "-----BEGIN KEY-----\nabc\n-----END KEY-----"
    out = on(standin, "secret", "set", "HOOK", "--value-from-env", "MY_HOOK",
             env={"MY_HOOK": "from-env"})
    assert (out.exit_code, standin.secrets["HOOK"]) == (0, "from-env")
    out = on(standin, "secret", "set", "HOOK", "--value-from-env", "UNSET_VAR_X")
    assert (out.exit_code, out.stderr) == (
        2, "error: --value-from-env: the environment variable UNSET_VAR_X is not set\n")
    out = on(standin, "secret", "set", "X", input="")
    assert (out.exit_code, out.stderr) == (2, "error: the value of secret X is empty\n")
    # there is no way to give the value on the command line
    out = on(standin, "secret", "set", "LEAK", "value-on-argv")
    assert out.exit_code == 2
    assert "Got unexpected extra argument (value-on-argv)" in out.stderr
    assert "LEAK" not in standin.secrets
    out = on(standin, "secret", "list")
    assert (out.exit_code, out.stdout) == (0, (
        f"SECRET   {'UPDATED':<19}  CREATED\n"
        f"API_KEY  {t(1796000060.0)}  {t(1796000000.0)}\n"
        f"PEM      {t(1796000060.0)}  {t(1796000000.0)}\n"
        f"HOOK     {t(1796000060.0)}  {t(1796000000.0)}\n"))
    assert "s3cr3t" not in out.stdout
    out = on(standin, "secret", "rm", "PEM")
    assert (out.exit_code, out.stdout, sorted(standin.secrets)) == (
        0, "removed secret PEM\n", ["API_KEY", "HOOK"])


def test_secret_set_in_a_real_process_reads_stdin(standin: StandIn, tmp_path: Path) -> None:
    env = {**os.environ, "FLOWRAY_TOKEN": "admin-token", "FLOWRAY_SERVER": standin.url}
    proc = subprocess.run([sys.executable, "-m", "flowray", "secret", "set", "DB_PASSWORD"],
                          input="hunter2\n", env=env, capture_output=True, text=True,
                          cwd=tmp_path, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "secret DB_PASSWORD set\n", "")
    assert standin.secrets == {"DB_PASSWORD": "hunter2"}


def test_variables_and_tokens(standin: StandIn) -> None:
    out = on(standin, "variable", "set", "BUCKET", "s3://data")
    assert (out.exit_code, out.stdout) == (0, "variable BUCKET set\n")
    out = on(standin, "variable", "list", token="viewer-token")
    assert (out.exit_code, out.stdout) == (0, (
        f"VARIABLE  {'UPDATED':<19}  VALUE\n"
        f"REGION    {t(1796000000.0)}  eu-west\n"
        f"BUCKET    {t(1796000000.0)}  s3://data\n"))
    out = on(standin, "variable", "rm", "REGION")
    assert (out.exit_code, out.stdout, list(standin.variables)) == (
        0, "removed variable REGION\n", ["BUCKET"])
    out = on(standin, "token", "create", "ci", "--role", "runner")
    assert (out.exit_code, out.stdout, out.stderr) == (
        0, "frt_new_token_value\n",
        "token ci (runner) created; it is shown only now: keep it, e.g. in FLOWRAY_TOKEN\n")
    assert standin.seen[-1].body == {"name": "ci", "role": "runner"}


def test_flowray_run_and_import_flowray_do_not_load_httpx(ws: Workspace) -> None:
    ws.flow("name: x\njobs: {a: {steps: [{run: 'true'}]}}\n")
    code = ("import sys\nfrom flowray.cli import main\n"
            "for argv in (['run', 'flow.yaml', '-q'], ['--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('httpx', "
            "'flowray.cli.client'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ws.root, capture_output=True,
                          text=True, check=True)
    assert proc.stdout.splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------- the real service


def test_the_commands_against_a_real_flowray_serve(ws: Workspace, tmp_path: Path) -> None:
    # The same commands against `flowray serve` itself (tests/servicefixtures.py): a real
    # uvicorn, a real SQLite database, real runs.
    from tests.servicefixtures import Served
    from tests.servicefixtures import free_port as service_port

    served = Served(str(tmp_path / "data"), service_port()).start()
    try:
        def srv(*args: str, token: str | None = None, input: str | None = None) -> Outcome:
            env = {"FLOWRAY_SERVER": served.url, "FLOWRAY_TOKEN": token or served.token}
            return cli(*args, env=env, input=input)

        ws.action("actions/shout", "name: shout\ninputs:\n  text: {type: string, "
                  "required: true}\nruns:\n  using: cmd\n  command: echo \"$INPUT_TEXT!\"\n")
        ws.write("flows/hello.yaml", """
            name: hello
            triggers:
              manual:
                inputs:
                  who: {type: string, default: world}
            jobs:
              greet:
                steps:
                  - id: say
                    run: echo "hello ${{ inputs.who }}"
                  - action: ./actions/shout
                    with: {text: "${{ secrets.NOISE }}"}
        """)
        ws.write("flows/broken.yaml", "name: broken\njobs:\n  a:\n    steps:\n"
                                      "      - runn: echo hi\n")
        out = srv("secret", "set", "NOISE", input="loud\n")
        assert (out.exit_code, out.stdout) == (0, "secret NOISE set\n"), out
        out = srv("flow", "push", "flows/hello.yaml", "flows/broken.yaml")
        assert (out.exit_code, out.stdout) == (
            2, "flows/hello.yaml: pushed hello version 1 (a new flow), with 1 file of local "
               "actions\n"), out
        assert out.stderr.startswith("flows/broken.yaml:5:9: jobs.a.steps[0]"), out
        out = srv("flow", "list")
        assert out.exit_code == 0 and out.stdout.splitlines()[1].startswith("hello "), out

        out = srv("trigger", "hello", "--input", "who=you", "--wait")
        assert (out.exit_code, out.stdout) == (
            0, "==> greet/say <==\nhello you\n==> greet/2 <==\n***!\n"), out
        run_id = out.stderr.split()[1]
        assert out.stderr.splitlines()[-1] == f"run {run_id} success (exit 0)"
        out = srv("status", run_id)
        assert out.exit_code == 0 and out.stdout.startswith(
            f"run {run_id}  flow hello  success  exit 0  "), out
        assert [line.split()[:2] for line in out.stdout.splitlines()[1:]] == [
            ["greet", "success"], ["say", "success"], ["2", "success"]], out
        out = srv("logs", run_id)
        assert (out.exit_code, out.stdout) == (
            0, "==> greet/say (success) <==\nhello you\n==> greet/2 (success) <==\n***!\n"), out
        out = srv("logs", run_id, "-f", "greet/say")
        assert (out.exit_code, out.stdout) == (0, "hello you\n"), out
        out = srv("runs")
        assert out.exit_code == 0 and out.stdout.splitlines()[1].split()[:2] == [
            run_id, "success"], out
        out = srv("rerun", run_id, "--job", "greet")
        assert out.exit_code == 0 and out.stderr == f"rerunning job greet of run {run_id}\n", out

        out = srv("token", "create", "watcher", "--role", "viewer")
        assert out.exit_code == 0, out
        viewer = out.stdout.strip()
        out = srv("trigger", "hello", token=viewer)
        assert (out.exit_code, out.stderr) == (
            2, "error: the token may not start runs (403): the token 'watcher' has the role "
               "viewer; this needs runner or admin\n"), out
        out = srv("secret", "list")
        assert out.exit_code == 0 and out.stdout.splitlines()[1].startswith("NOISE "), out
        assert "loud" not in out.stdout
        out = srv("status", "r-nope")
        assert (out.exit_code, out.stderr) == (2, "error: no run with id 'r-nope'\n"), out

        ws.write("slow.yaml", "name: slow\njobs: {a: {steps: [{run: 'sleep 120'}]}}\n")
        assert srv("flow", "push", "slow.yaml").exit_code == 0
        slow = srv("trigger", "slow").stdout.strip()
        out = srv("cancel", slow)
        assert (out.exit_code, out.stdout) == (0, f"run {slow} cancelled\n"), out
        out = srv("cancel", slow)
        assert (out.exit_code, out.stderr) == (
            1, f"error: run {slow} already ended: cancelled\n"), out
    finally:
        assert served.stop() == 0, served.output()
