"""The ``flowray serve`` process: open (and migrate) the database, check the secret key,
make the first admin token, settle what a previous process left, then serve the API with
uvicorn while the run manager's loop starts runs. SIGTERM (or SIGINT) drains: no new work,
running runs get ``--drain`` seconds to end, then they are cancelled.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from flowray.service.db import DatabaseError, connect, database_url, migrate, shown_url
from flowray.service.runs import Options, RunManager
from flowray.service.secretbox import SecretBox, SecretKeyError, load_key
from flowray.service.store import Store

log = logging.getLogger("flowray.service")

CANARY = "secret-canary"


class ServeError(Exception):
    """Why the service cannot start (a port in use, a wrong key, a database it cannot
    use): one line for the user."""


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8420
    data_dir: str = ""
    db: str | None = None
    ray: str | None = None
    secret_key_file: str | None = None
    keep_runs: int | None = None
    keep_days: float | None = None
    drain: float = 30.0
    max_runs: int = 32
    pass_env: tuple[str, ...] = ()


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                           ".local", "share")
    return os.path.join(base, "flowray")


@dataclass
class Service:
    """The parts of a started service (tests and ``serve`` hold one)."""

    store: Store
    manager: RunManager
    app: Any
    url: str
    admin_token_file: str | None  # written by this start (the first one)


def _key_file(options: ServeOptions) -> str:
    return options.secret_key_file or os.path.join(options.data_dir, "secret.key")


def open_store(options: ServeOptions) -> Store:
    os.makedirs(options.data_dir, mode=0o700, exist_ok=True)
    url = database_url(options.db, options.data_dir)
    engine = connect(url)
    try:
        migrate(engine)
    except DatabaseError:
        engine.dispose()
        raise
    return Store(engine)


def check_key(store: Store, options: ServeOptions) -> SecretBox:
    """The secret box of the key file, checked against the database's canary (a wrong key
    would make every secret unreadable: better to refuse to start)."""
    path = _key_file(options)
    try:
        box = SecretBox(load_key(path, create=options.secret_key_file is None))
    except SecretKeyError as exc:
        raise ServeError(str(exc)) from None
    canary = store.set_meta_once(CANARY, box.canary())
    if not box.check_canary(canary):
        raise ServeError(f"the secret key in {path} is not the key this database's secrets "
                         "were sealed with (use the right --secret-key-file, or rotate with "
                         "--rotate-secret-key while you still have the old one)")
    return box


def rotate_key(options: ServeOptions, new_key_file: str) -> int:
    """Re-seal every secret with the key in ``new_key_file`` and make it the service's key;
    the number of secrets re-sealed. Stop every service process on the database first."""
    from flowray.service.secretbox import rotate
    from flowray.store.fs import write_bytes_atomic

    store = open_store(options)
    try:
        old = check_key(store, options)
        try:
            new = SecretBox(load_key(new_key_file, create=False))
        except SecretKeyError as exc:
            raise ServeError(str(exc)) from None
        try:
            blobs = rotate(store.secret_blobs(), old=old, new=new)
        except SecretKeyError as exc:
            raise ServeError(str(exc)) from None
        store.replace_secret_blobs(blobs, new.key_id, new.canary())
        path = _key_file(options)
        if os.path.abspath(path) != os.path.abspath(new_key_file):
            with open(new_key_file, "rb") as fh:
                write_bytes_atomic(path, fh.read(), mode=0o600)
        return len(blobs)
    finally:
        store.engine.dispose()


def build(options: ServeOptions, *, metrics: Any = None) -> Service:
    """Open the database, check the key, make the first token, settle orphaned runs, and
    make the app and the run manager (not started)."""
    from flowray.runtime.metrics import Metrics
    from flowray.service.app import create_app

    store = open_store(options)
    box = check_key(store, options)
    token_file = None
    if not store.has_tokens():
        token_file = _first_admin_token(store, options.data_dir)
    try:
        manager = RunManager(store, box, metrics or Metrics(), Options(
            data_dir=options.data_dir, backend=options.ray, keep_runs=options.keep_runs,
            keep_days=options.keep_days, drain=options.drain, max_runs=options.max_runs,
            pass_env=options.pass_env))
    except ValueError as exc:  # FLOWRAY_GPUS naming no GPUs
        store.engine.dispose()
        raise ServeError(str(exc)) from None
    settled = manager.settle_orphans()
    if settled:
        log.warning("%d run(s) were running when a previous service process stopped; they are "
                    "marked failure", len(settled))
    from flowray.service.app import MAX_BODY
    from flowray.service.guard import Guard

    app = Guard(create_app(store, manager), limit=MAX_BODY)
    return Service(store=store, manager=manager, app=app,
                   url=f"http://{options.host}:{options.port}", admin_token_file=token_file)


def _first_admin_token(store: Store, data_dir: str) -> str | None:
    from flowray.service.store import Conflict

    try:
        token = store.create_token("admin", "admin")
    except Conflict:  # another process made it at the same moment
        return None
    path = os.path.join(data_dir, "admin-token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def serve(options: ServeOptions, *, on_ready: Callable[[Service], None] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; the exit code."""
    import uvicorn

    # Ray's core worker (connected for each run on --ray) installs absl's failure signal
    # handler, which takes SIGTERM from Python's and dies of it: no drain. Without it, Ray's
    # crashes are still logged by Ray; the service's signals stay the service's.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    sock = _bind(options.host, options.port)
    try:
        service = build(options)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(service.app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="off")
    server = uvicorn.Server(config)
    loop_thread = threading.Thread(target=service.manager.loop, name="flowray-service-loop",
                                   daemon=True)
    http_thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                   name="flowray-service-http", daemon=True)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT,
                                                         signal.SIGHUP)}
    try:
        loop_thread.start()
        http_thread.start()
        if on_ready is not None:
            on_ready(service)
        while not stopping.wait(0.5):
            if not http_thread.is_alive():
                raise ServeError("the HTTP server stopped")
            # A Ray library connected for a run may have set its own disposition for these
            # signals below Python's: ours are set again, so that SIGTERM still drains.
            for s in previous:
                signal.signal(s, on_signal)
        log.warning("stopping: no new runs; running runs have %gs to end", options.drain)
        service.manager.stop()
        server.should_exit = True
        http_thread.join(15)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        service.store.engine.dispose()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response's headers and body go out at once, not
    # 40 ms apart (Nagle's algorithm waiting for the client's delayed ACK on keep-alive).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


__all__ = ["DatabaseError", "ServeError", "ServeOptions", "Service", "build", "default_data_dir",
           "rotate_key", "serve", "shown_url"]
