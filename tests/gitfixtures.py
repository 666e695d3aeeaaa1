"""Real git repositories for the action tests: bare repositories with tagged commits, moved
tags, and a ``git daemon`` on 127.0.0.1; plus the environment that keeps tests out of the
real home cache."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ACTION_YAML = textwrap.dedent(
    """\
    name: Hello
    description: says hello
    inputs:
      who: {type: string, default: world}
    runs:
      using: python
      main: main.py
    """
)
MAIN_PY = "import json, sys\nprint('::greeting::' + json.dumps('hello ' + json.loads(sys.argv[-1])['who']))\n"

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point every cache and config location at ``tmp_path`` and forget the caller's flowray
    and git settings; returns the cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("FLOWRAY_CACHE_DIR", str(cache))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for name in ("FLOWRAY_ACTIONS_BASE", "FLOWRAY_OFFLINE", "FLOWRAY_ACTIONS_SYSTEM_SITE_PACKAGES",
                 "GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(name, raising=False)
    return cache


def git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    full = {**os.environ, **_GIT_ENV, **(env or {})}
    proc = subprocess.run(["git", *args], cwd=cwd, env=full, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Symlink:
    """A symlink to commit: ``files={"link": Symlink("target")}``."""

    target: str


class ActionRepo:
    """A bare repository at ``<root>/<owner>/<repo>`` (so ``file://<root>`` is a base URL)
    with a scratch work tree to commit from."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.bare = root / name
        self.work = root.parent / f"{root.name}-work" / name
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        self._count = 0

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def _git(self, *args: str) -> str:
        return git(f"--git-dir={self.bare}", f"--work-tree={self.work}", *args, cwd=self.work)

    def commit(
        self,
        files: Mapping[str, str | bytes | Symlink] | None = None,
        *,
        tag: str | None = None,
        annotated: bool = True,
        clear: bool = False,
    ) -> str:
        """Commit ``files`` (default: a valid action) on ``main``, tag it; returns the SHA."""
        if clear:
            for child in self.work.iterdir():
                subprocess.run(["rm", "-rf", str(child)], check=True)
        if files is None:
            files = {"action-datatorch.yaml": ACTION_YAML, "main.py": MAIN_PY}
        for rel, content in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            if isinstance(content, Symlink):
                path.symlink_to(content.target)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        self._count += 1
        self._git("add", "--all")
        self._git("commit", "--quiet", "--allow-empty", "-m", f"commit {self._count}")
        sha = self._git("rev-parse", "HEAD")
        if tag:
            self.tag(tag, sha, annotated=annotated)
        return sha

    def tag(self, name: str, sha: str, *, annotated: bool = True) -> None:
        """Create or move tag ``name`` to ``sha``."""
        args = ["tag", "--force"]
        if annotated:
            args += ["-a", "-m", name]
        self._git(*args, name, sha)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def git_daemon(base_path: Path, *, timeout: float = 10.0) -> Iterator[str]:
    """Serve every repository under ``base_path`` over ``git://127.0.0.1:<port>``; yields that
    base URL, and stops the daemon afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", f"--base-path={base_path}", "--export-all",
         "--informative-errors", "--listen=127.0.0.1", f"--port={port}", str(base_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, **_GIT_ENV},
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"git daemon exited with {proc.returncode}: {err}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"git daemon did not listen on port {port}")
            time.sleep(0.02)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@contextlib.contextmanager
def http_git_server(base_path: Path, *, user: str, password: str) -> Iterator[str]:
    """Serve the repositories under ``base_path`` over smart HTTP (``git http-backend``) on
    127.0.0.1, behind basic authentication; yields the base URL (without credentials)."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.backend()

        def do_POST(self) -> None:
            self.backend()

        def backend(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {
                **os.environ, **_GIT_ENV,
                "GIT_PROJECT_ROOT": str(base_path), "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": user,
                "REMOTE_ADDR": "127.0.0.1",
                "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            out = subprocess.run(["git", "http-backend"], input=body, env=env,
                                 capture_output=True).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(": ")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# An action "owner/repo@tag" tests publish: adds two integers, DataTorch style.
ADD_ACTION = """\
name: Add
inputs:
  a: {type: integer, required: true}
  b: {type: integer, default: 0}
outputs:
  sum: {type: integer}
runs:
  using: python
  main: add.py
"""
ADD_PY = "import json, sys\nargs = json.loads(sys.argv[-1])\nprint('::sum::' + str(args['a'] + args['b']))\n"


class Forge:
    """Bare repositories under ``root/<owner>/<repo>``, written through a work tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, repo: str, files: dict[str, str], tag: str) -> str:
        bare = self.root / repo
        work = self.root.parent / "work" / repo
        if not bare.exists():
            bare.mkdir(parents=True)
            git("init", "-q", "--bare", "-b", "main", cwd=bare)
            work.mkdir(parents=True)
            git("init", "-q", "-b", "main", cwd=work)
            git("remote", "add", "origin", str(bare), cwd=work)
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        git("add", "-A", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"{tag}",
            cwd=work)
        git("tag", "-f", tag, cwd=work)
        git("push", "-q", "-f", "origin", "main", f"refs/tags/{tag}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)
