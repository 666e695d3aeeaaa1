"""One virtual environment per (action commit, action folder, Python), for python actions with a
``requirements.txt``; created once, under the cache entry's lock, and reused.

The environment is built at its final path (virtual environments cannot be moved) and is
marked ready last: a folder without the marker is removed and built again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

from flowray.actions.cache import PinnedAction
from flowray.actions.errors import ActionError
from flowray.actions.lock import locked
from flowray.store.fs import remove_tree, write_bytes_atomic

REQUIREMENTS = "requirements.txt"
VENVS = "venvs"
_READY = ".flowray-ready"
_TAIL = 12
_PROBE = (
    "import sys; print(sys.implementation.name, "
    "'.'.join(map(str, sys.version_info[:3])), sys.base_prefix, sep='\\n')"
)
_identities: dict[tuple[str, float], tuple[str, str, str]] = {}


def ensure_venv(
    pinned: PinnedAction, *, python: str, system_site_packages: bool = False
) -> str | None:
    """The Python of the action's virtual environment, made with ``python`` and its
    ``requirements.txt`` installed the first time; None when the action has no
    ``requirements.txt``. ``system_site_packages``: the environment also sees the packages
    of ``python`` (an installed torch, say). Raises ActionError with pip's last lines."""
    requirements = os.path.join(pinned.path, REQUIREMENTS)
    if not os.path.isfile(requirements):
        return None
    head = f"{pinned.ref.display()} ({pinned.sha[:7]})"
    exe = _executable(python, head)
    impl, version, label = _identity(exe, head)
    tree_rel = os.path.relpath(pinned.path, os.path.join(pinned.entry_dir, "tree"))
    name = label
    if tree_rel != ".":
        name += "-" + hashlib.sha256(tree_rel.encode()).hexdigest()[:8]
    if system_site_packages:
        name += "-system"
    venvs = os.path.join(pinned.entry_dir, VENVS)
    folder = os.path.join(venvs, name)
    venv_python = os.path.join(folder, "bin", "python")
    ready = os.path.join(folder, _READY)
    if os.path.exists(ready):
        return venv_python
    os.makedirs(venvs, exist_ok=True)
    with locked(os.path.join(venvs, f"{name}.lock")):
        if os.path.exists(ready):
            return venv_python
        remove_tree(folder)
        try:
            _build(exe, folder, requirements, pinned.path,
                   system_site_packages=system_site_packages,
                   what=f"{head}: cannot create a virtual environment for {impl} {version}")
            write_bytes_atomic(ready, f"{impl} {version}\n".encode())
        except BaseException:
            remove_tree(folder)
            raise
    return venv_python


def _build(
    exe: str, folder: str, requirements: str, cwd: str, *, system_site_packages: bool, what: str
) -> None:
    venv_python = os.path.join(folder, "bin", "python")
    # pip of this interpreter installs into the new environment (``pip --python``): creating it
    # without its own pip is ten times faster. Without pip here, the environment gets its own.
    own_pip = importlib.util.find_spec("pip") is not None
    create = [exe, "-m", "venv", *(["--without-pip"] if own_pip else [])]
    if system_site_packages:
        create.append("--system-site-packages")
    _run([*create, folder], cwd=cwd, what=what)
    if system_site_packages:
        _see_parent_packages(exe, venv_python)
    pip = (
        [sys.executable, "-m", "pip", "--python", venv_python]
        if own_pip
        else [venv_python, "-m", "pip"]
    )
    _run(
        [*pip, "install", "--disable-pip-version-check", "--no-input", "--quiet",
         "--requirement", requirements],
        cwd=cwd,
        what=what.replace("cannot create a virtual environment", f"cannot install {REQUIREMENTS}"),
    )


def _see_parent_packages(exe: str, venv_python: str) -> None:
    """Let the environment see the packages of ``exe`` itself, not only of its base Python.

    ``--system-site-packages`` reaches the base interpreter's site-packages; when flowray runs
    from a virtual environment (where torch was installed, say), those are not enough. A
    ``.pth`` file appends ``exe``'s own site folders after the environment's, so the action's
    requirements still win.
    """
    query = "import json, site; print(json.dumps(site.getsitepackages()))"
    parent = subprocess.run([exe, "-c", query], capture_output=True, text=True, check=False)
    target = subprocess.run(
        [venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=False,
    )
    if parent.returncode != 0 or target.returncode != 0:
        return  # --system-site-packages alone still applies
    paths = [p for p in json.loads(parent.stdout) if os.path.isdir(p)]
    with open(os.path.join(target.stdout.strip(), "flowray-parent-site.pth"), "w") as fh:
        fh.write("".join(f"{p}\n" for p in paths))


def _run(argv: list[str], *, cwd: str, what: str) -> None:
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV", "PIP_USER"):
        env.pop(name, None)
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        )
    except OSError as exc:
        raise ActionError(f"{what}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        lines = [ln.rstrip() for ln in proc.stdout.splitlines() if ln.strip()]
        tail = "\n".join(lines[-_TAIL:]) or f"exit code {proc.returncode}"
        raise ActionError(f"{what}:\n{tail}")


def _executable(python: str, head: str) -> str:
    found = python if os.sep in python else shutil.which(python)
    if not found or not os.access(found, os.X_OK):
        raise ActionError(f"{head}: no Python interpreter '{python}' to create its environment")
    return os.path.abspath(found)


def _identity(exe: str, head: str) -> tuple[str, str, str]:
    """(implementation, version, folder label) of an interpreter; asked once per process."""
    real = os.path.realpath(exe)
    try:
        stamp = os.stat(real).st_mtime
    except OSError:
        stamp = 0.0
    known = _identities.get((real, stamp))
    if known is not None:
        return known
    if real == os.path.realpath(sys.executable):
        impl = sys.implementation.name
        version = ".".join(map(str, sys.version_info[:3]))
        base = sys.base_prefix
    else:
        try:
            out = subprocess.run(
                [exe, "-c", _PROBE], capture_output=True, text=True, check=True,
                stdin=subprocess.DEVNULL,
            ).stdout.splitlines()
            impl, version, base = out[0], out[1], out[2]
        except (OSError, subprocess.CalledProcessError, IndexError):
            raise ActionError(f"{head}: '{exe}' does not run as a Python interpreter") from None
    digest = hashlib.sha256(f"{base}\n{real}".encode()).hexdigest()[:8]
    found = (impl, version, f"{impl}{version}-{digest}")
    _identities[(real, stamp)] = found
    return found
