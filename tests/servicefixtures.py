"""A real `flowray serve` process for tests: started on a free port with its own data dir,
reached over HTTP with httpx, stopped (or killed) by the test."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@contextlib.contextmanager
def serving(folder: Path, **options: Any) -> Iterator[Served]:
    """A started `flowray serve` with its data in ``folder/data`` (``options``: Served's
    ``env``, ``extra``, ``db``), stopped on the way out, and checked to have stopped
    cleanly. A module shares one through its ``served`` fixture; conftest's ``admin`` is a
    client of it with the admin token."""
    server = Served(str(folder / "data"), free_port(), **options).start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.output()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """One `flowray serve` process."""

    data_dir: str
    port: int
    db: str | None = None
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> Served:
        args = [sys.executable, "-m", "flowray", "serve", "--port", str(self.port),
                "--data-dir", self.data_dir, *self.extra]
        if self.db:
            args += ["--db", self.db]
        self.log_path = os.path.join(self.data_dir + "-logs",
                                     f"serve-{time.monotonic_ns()}.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115  (the process holds it)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("FLOWRAY_ADDRESS", None)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"flowray serve exited {self.proc.returncode}:\n"
                                     + self.output())
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("flowray serve did not answer:\n" + self.output())
        token_file = os.path.join(self.data_dir, "admin-token")
        if not self.token and os.path.exists(token_file):
            with open(token_file) as fh:
                self.token = fh.read().strip()

    def output(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={
            "Authorization": f"Bearer {self.token if token is None else token}"})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig) if sig == signal.SIGKILL else \
                self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the service alone (its runs' steps are in their own process groups and
        their watchdogs stop them)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def push(client: httpx.Client, name: str, text: str, *, files: dict[str, bytes] | None = None,
         path: str = "flow.yaml") -> httpx.Response:
    return client.put(f"/api/v1/flows/{name}", json={
        "text": text, "path": path,
        "files": {k: base64.b64encode(v).decode() for k, v in (files or {}).items()}})


def wait_run(client: httpx.Client, run_id: str, *, timeout: float = 120,
             status: tuple[str, ...] = ("success", "failure", "cancelled", "skipped")
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = client.get(f"/api/v1/runs/{run_id}")
        assert got.status_code == 200, got.text
        data: dict[str, Any] = got.json()
        if data["status"] in status:
            return data
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} is still {data['status']}")


def sse(client: httpx.Client, run_id: str, *, last_event_id: int | str | None = None,
        limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(id, event) of a run's event stream, as a browser's EventSource reads it."""
    headers = {"Last-Event-ID": str(last_event_id).encode()} \
        if last_event_id is not None else {}
    with client.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers,
                       timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = 0
        event_id, data = None, []
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                assert event_id is not None
                yield event_id, json.loads("\n".join(data))
                seen += 1
                event_id, data = None, []
                if limit is not None and seen >= limit:
                    return
