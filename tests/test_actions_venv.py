"""Virtual environments of python actions with a requirements.txt: created once per (commit,
Python), reused, optionally seeing the interpreter's packages; failures carry pip's words.
No network: the requirements point pip at a wheel the test builds."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from gitfixtures import ActionRepo, isolate

from flowray.actions import ActionCache, ActionError, ActionsConfig, PinnedAction, parse_ref
from flowray.actions.venv import ensure_venv

VERSION = ".".join(map(str, sys.version_info[:3]))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


def make_wheel(folder: Path, name: str = "tinypkg", version: str = "1.0") -> None:
    """A pure-Python wheel, written by hand (building one would need the network)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def pinned_action(tmp_path: Path, files: dict[str, str]) -> PinnedAction:
    remote = tmp_path / "remote"
    ActionRepo(remote, "acme/tool").commit(
        {"action-datatorch.yaml": "name: T\nruns: {using: python, main: main.py}\n", **files},
        tag="v1",
    )
    cfg = ActionsConfig(base=f"file://{remote}", cache_dir=str(tmp_path / "cache"))
    ref = parse_ref("acme/tool@v1", cfg)
    return ActionCache(cfg.cache_dir).resolve([ref])[ref.key]


def run_python(python: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-c", code], capture_output=True, text=True)


def test_created_once_and_reused(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    pinned = pinned_action(
        tmp_path, {"requirements.txt": f"--no-index\n--find-links {wheels}\ntinypkg==1.0\n"}
    )
    python = ensure_venv(pinned, python=sys.executable)
    assert python is not None
    assert python.startswith(os.path.join(pinned.entry_dir, "venvs") + os.sep)
    assert not python.startswith(pinned.path + os.sep)
    out = run_python(python, "import tinypkg, sys; print(tinypkg.VALUE, sys.prefix != sys.base_prefix)")
    assert out.stdout == "42 True\n", out.stderr
    ready = Path(python).parent.parent / ".flowray-ready"
    stamp = ready.stat().st_mtime_ns
    assert ensure_venv(pinned, python=sys.executable) == python
    assert ready.stat().st_mtime_ns == stamp  # not rebuilt
    # the system's packages are hidden unless asked for (pytest is installed in this Python)
    assert run_python(python, "import pytest").returncode == 1
    system = ensure_venv(pinned, python=sys.executable, system_site_packages=True)
    assert system is not None and system != python
    out = run_python(system, "import pytest, tinypkg; print(tinypkg.VALUE)")
    assert out.stdout == "42\n", out.stderr


def test_no_requirements_no_environment(tmp_path: Path) -> None:
    pinned = pinned_action(tmp_path, {"main.py": "print(1)\n"})
    assert ensure_venv(pinned, python=sys.executable) is None
    assert not Path(pinned.entry_dir, "venvs").exists()


def test_failed_install_carries_pips_words_and_leaves_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "wheels"
    empty.mkdir()
    pinned = pinned_action(
        tmp_path, {"requirements.txt": f"--no-index\n--find-links {empty}\nnopkg-xyz==1.0\n"}
    )
    with pytest.raises(ActionError) as info:
        ensure_venv(pinned, python=sys.executable)
    assert str(info.value) == (
        f"acme/tool@v1 ({pinned.sha[:7]}): cannot install requirements.txt for cpython "
        f"{VERSION}:\n"
        "ERROR: Could not find a version that satisfies the requirement nopkg-xyz==1.0 "
        "(from versions: none)\n"
        "ERROR: No matching distribution found for nopkg-xyz==1.0"
    )
    venvs = Path(pinned.entry_dir, "venvs")
    assert [p.suffix for p in venvs.iterdir()] == [".lock"]


def test_missing_interpreter(tmp_path: Path) -> None:
    pinned = pinned_action(tmp_path, {"requirements.txt": "\n"})
    with pytest.raises(ActionError) as info:
        ensure_venv(pinned, python="python-that-does-not-exist")
    assert str(info.value) == (
        f"acme/tool@v1 ({pinned.sha[:7]}): no Python interpreter 'python-that-does-not-exist' "
        "to create its environment"
    )


def test_system_site_packages_include_those_of_a_virtualenv_running_flowray(
    tmp_path: Path,
) -> None:
    # flowray itself often runs from a virtual environment where torch & co. were installed:
    # the option must reach that environment's packages, not only the base Python's.
    parent = tmp_path / "parent-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(parent)], check=True)
    parent_python = str(parent / "bin" / "python")
    site = subprocess.run(
        [parent_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(site, "parentonly.py").write_text("WHERE = 'parent venv'\n")
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    pinned = pinned_action(
        tmp_path, {"requirements.txt": f"--no-index\n--find-links {wheels}\ntinypkg==1.0\n"}
    )
    python = ensure_venv(pinned, python=parent_python, system_site_packages=True)
    assert python is not None
    out = run_python(python, "import parentonly, tinypkg; print(parentonly.WHERE, tinypkg.VALUE)")
    assert out.stdout == "parent venv 42\n", out.stderr
    hidden = ensure_venv(pinned, python=parent_python)
    assert hidden is not None
    assert run_python(hidden, "import parentonly").returncode == 1
