"""Throwaway PostgreSQL clusters for the tests of the service's database (``--db
postgresql://...``): real servers of Debian's ``postgresql`` package, each in a temporary
folder, listening on 127.0.0.1 only (and a unix socket in that folder), trusting local
connections only, stopped and removed at the end.

Fixtures (a test module that uses them says ``pytest_plugins = ["pgfixture"]``, which
registers them once for the session however many modules say it):

- ``postgres_factory`` (session): :class:`PostgresFactory`; ``postgres_factory()`` makes and
  starts a new :class:`PostgresCluster`. Every cluster it made is stopped and removed when the
  session ends.
- ``postgres`` (per test): a cluster of the test's own, so that the test may :meth:`stop
  <PostgresCluster.stop>` it and :meth:`start <PostgresCluster.start>` it again (same port, same
  data); ``postgres.url`` is its SQLAlchemy URL.
- ``postgres_url`` (per test): the SQLAlchemy URL of a new, empty database in a cluster that the
  session's tests share (cheaper: no cluster is made per test).

Without Debian's ``postgresql`` package (``initdb``) the tests skip saying so, except in CI
(CI=true), where `.ci/run` installs it and its absence fails.

PostgreSQL refuses to run as root: as root (CI), its programs run as the ``postgres`` user
(made with ``useradd --system`` if missing) through ``runuser`` (or ``setpriv``), and the
temporary folder belongs to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SKIP_REASON = "Debian's postgresql package is not installed (apt-get install postgresql)"
SERVICE_USER = "postgres"  # the system user PostgreSQL runs as when the tests run as root
DB_USER = "flowray"  # the cluster's superuser, in every URL
DB_NAME = "flowray"  # the database every cluster starts with
# Written after initdb's postgresql.conf: only 127.0.0.1, and speed over durability (the
# data is thrown away; a test that stops the server stops it cleanly, which flushes it).
_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 40
log_min_messages = warning
"""
_HBA = """\
# Trust connections from this machine only: the unix socket (in the cluster's folder) and
# 127.0.0.1. Nothing else is listened on.
local all all trust
host  all all 127.0.0.1/32 trust
"""


class PostgresError(Exception):
    """A PostgreSQL program failed; ``command`` and ``output`` say which and what it said."""

    def __init__(self, message: str, *, command: list[str], output: str) -> None:
        super().__init__(f"{message}: {' '.join(command)}\n{output}")
        self.command = command
        self.output = output


def find_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest ``/usr/lib/postgresql/N/bin``,
    else the one on PATH; None without one."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))

    if found:
        return Path(max(found, key=version)).parent
    which = shutil.which("initdb")
    if which and os.path.exists(os.path.join(os.path.dirname(which), "pg_ctl")):
        return Path(which).parent
    return None


def require_bindir() -> Path:
    """:func:`find_bindir`, or the test skips (fails in CI, which installs PostgreSQL)."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI must have PostgreSQL (.ci/run installs it): {SKIP_REASON}")
        pytest.skip(SKIP_REASON)
    return bindir


def _service_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL's programs run as: None (this process's own) unless this process is
    root; as root, ``postgres``, made if it does not exist."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        SERVICE_USER], check=True, capture_output=True)
        return pwd.getpwnam(SERVICE_USER)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Runner:
    """Runs PostgreSQL's programs as the service user, in a folder that user may enter."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _service_user()

    def command(self, cmd: list[str]) -> list[str]:
        """``cmd`` as the service user runs it."""
        if self.user is None:
            return cmd
        if shutil.which("runuser"):
            return ["runuser", "-u", self.user.pw_name, "--", *cmd]
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                "--init-groups", "--", *cmd]

    def tool(self, name: str) -> str:
        """The path of PostgreSQL's program ``name``."""
        return str(self.bindir / name)

    def run(self, program: str, *args: str, cwd: Path, what: str) -> str:
        """Run ``program`` (``cp``, or one of PostgreSQL's) with ``args``; its output, or
        :class:`PostgresError` saying ``what`` failed."""
        cmd = self.command([program if program == "cp" else self.tool(program), *args])
        env = {**os.environ, "TMPDIR": str(cwd), "LC_ALL": "C"}
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise PostgresError(what, command=cmd, output=proc.stdout + proc.stderr)
        return proc.stdout

    def own(self, path: Path) -> None:
        """Give ``path`` (made by this process) to the service user."""
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def make_dir(self) -> Path:
        # /tmp as root: the service user must be able to reach the folder, and a TMPDIR of
        # the test session (root's, mode 0700) would not let it.
        root = Path(tempfile.mkdtemp(prefix="frpg-", dir="/tmp" if self.user else None))
        self.own(root)
        return root


class PostgresCluster:
    """One PostgreSQL server with its own data folder, port and socket folder.

    ``url`` is its SQLAlchemy URL (``postgresql+psycopg://flowray@127.0.0.1:PORT/flowray``);
    :meth:`stop` and :meth:`start` take the server away and bring it back with its data, on
    the same port; :meth:`create_database` makes another database; :meth:`close` stops it and
    removes its folder.
    """

    def __init__(self, runner: _Runner, template: Path) -> None:
        self._runner = runner
        self.root = runner.make_dir()
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.running = False
        try:
            runner.run("cp", "-a", str(template), str(self.data), cwd=self.root,
                       what="cannot copy the template cluster")
            self.sockets.mkdir()
            runner.own(self.sockets)
            for attempt in range(3):  # the free port may be taken before the server binds it
                self.port = _free_port()
                self._configure()
                try:
                    self.start()
                    break
                except PostgresError:
                    if attempt == 2 or "could not bind" not in self.log_text():
                        raise
            runner.run("createdb", "-h", str(self.sockets), "-p", str(self.port),
                       "-U", DB_USER, DB_NAME, cwd=self.root, what="cannot create the database")
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return self.url_of(DB_NAME)

    def url_of(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` in this cluster."""
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def _configure(self) -> None:
        conf = self.data / "postgresql.conf"
        text = conf.read_text().split("\n# -- flowray tests --\n")[0]
        conf.write_text(text + "\n# -- flowray tests --\n"
                        + _SETTINGS.format(port=self.port, sockets=self.sockets))
        (self.data / "pg_hba.conf").write_text(_HBA)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server (its data as it was when it stopped); returns once it accepts
        connections."""
        try:
            self._runner.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                             "-t", "120", "start", cwd=self.root,
                             what="PostgreSQL did not start")
        except PostgresError as exc:
            raise PostgresError(str(exc).split(":", 1)[0], command=exc.command,
                                output=exc.output + "\n" + self.log_text()[-4000:]) from None
        self.running = True

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``: connections are cut, data is kept);
        returns once it is gone."""
        self._runner.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "120",
                         "stop", cwd=self.root, what="PostgreSQL did not stop")
        self.running = False

    def create_database(self, name: str) -> str:
        """Make the database ``name``; its SQLAlchemy URL."""
        self._runner.run("createdb", "-h", str(self.sockets), "-p", str(self.port),
                         "-U", DB_USER, name, cwd=self.root, what="cannot create a database")
        return self.url_of(name)

    def postmaster_pid(self) -> int | None:
        """The server's process id while its data folder says one runs."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        return None

    def close(self) -> None:
        """Stop the server if it runs (killing it if a stop fails) and remove its folder."""
        if self.running:
            try:
                self.stop()
            except PostgresError:
                pid = self.postmaster_pid()
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                    _wait_gone(pid)
                self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_gone(pid: int) -> None:
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)


class PostgresFactory:
    """Makes :class:`PostgresCluster` s from one cluster initialized once (``initdb`` takes
    seconds; a copy of its result takes a fraction of one), and closes them all at the end."""

    def __init__(self, bindir: Path) -> None:
        self._runner = _Runner(bindir)
        self._clusters: list[PostgresCluster] = []
        self._shared: PostgresCluster | None = None
        self._databases = 0
        self._root = self._runner.make_dir()
        self._template = self._root / "template"
        try:
            self._runner.run("initdb", "-D", str(self._template), "-U", DB_USER,
                             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
                             cwd=self._root, what="initdb failed")
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            raise

    def __call__(self) -> PostgresCluster:
        """A new cluster, started, with an empty database ``flowray``."""
        cluster = PostgresCluster(self._runner, self._template)
        self._clusters.append(cluster)
        return cluster

    def shared(self) -> PostgresCluster:
        """The cluster the session's tests share (made on first use; started again if a
        test left it stopped)."""
        if self._shared is None:
            self._shared = self()
        elif not self._shared.running:
            self._shared.start()
        return self._shared

    def new_database(self) -> str:
        """The URL of a new, empty database in the shared cluster."""
        self._databases += 1
        return self.shared().create_database(f"test{self._databases}")

    def close(self) -> None:
        for cluster in self._clusters:
            cluster.close()
        self._clusters.clear()
        shutil.rmtree(self._root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_factory() -> Iterator[PostgresFactory]:
    factory = PostgresFactory(require_bindir())
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def postgres(postgres_factory: PostgresFactory) -> Iterator[PostgresCluster]:
    cluster = postgres_factory()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_url(postgres_factory: PostgresFactory) -> str:
    return postgres_factory.new_database()
