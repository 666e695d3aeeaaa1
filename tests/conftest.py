"""Shared fixtures: the CLI run in-process, in a fresh workspace, and flow-writing helpers."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowray.cli import main


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def assert_success(self) -> Outcome:
        assert self.exit_code == 0, repr(self)
        return self

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return (f"Outcome(exit_code={self.exit_code})\n--- stdout ---\n{self.stdout}"
                f"\n--- stderr ---\n{self.stderr}")


class Workspace:
    """A temporary workspace folder with helpers to write flows and actions and run the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str, *, executable: bool = False) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        if executable:
            path.chmod(0o755)
        return path

    def flow(self, text: str, name: str = "flow.yaml") -> str:
        self.write(name, text)
        return name

    def action(self, rel: str, action_yaml: str, **files: str) -> None:
        self.write(f"{rel}/action-datatorch.yaml", action_yaml)
        for fname, body in files.items():
            self.write(f"{rel}/{fname.replace('__', '.')}", body)

    def cli(self, *args: str) -> Outcome:
        runner = CliRunner()
        res = runner.invoke(main, list(args), catch_exceptions=False)
        return Outcome(res.exit_code, res.stdout, res.stderr)

    def run(self, flow: str, *args: str) -> Outcome:
        return self.cli("run", flow, *args)

    def record(self, ref: str = "last") -> Any:
        out = self.cli("status", ref, "--json")
        assert out.exit_code == 0, out
        return out.json()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("FLOWRAY_RETRY_BACKOFF", "0.05")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FLOWRAY_GPUS", raising=False)
    yield Workspace(root)


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pids_with_env(assignment: str) -> list[int]:
    """The processes whose environment holds ``NAME=value`` (``assignment``)."""
    marker = assignment.encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def wait_for(path: Path, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


def env_without_color() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    return env
