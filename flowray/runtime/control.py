"""A run's control channel: a FIFO named ``control`` in its run folder.

The process running the run holds the FIFO open for reading (and once for writing, so that it
never reads an end of file); ``flowray cancel RUN`` in another terminal opens it for writing
without blocking and writes one line. Opening a FIFO that nobody reads fails with ``ENXIO``:
so the canceller learns at once, without guessing at a pid, that the run's process is gone.
The FIFO is made ``0600``: only the run's user may write to it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from collections.abc import Callable

from flowray.store.records import CONTROL_FILE as CONTROL_FILE  # the FIFO's name

_MAX_LINE = 4096


class ControlChannel:
    """Reads commands for one run; ``on_cancel(reason)`` is called for ``cancel`` lines."""

    def __init__(self, run_dir: str, on_cancel: Callable[[str], None]) -> None:
        self.path = os.path.join(run_dir, CONTROL_FILE)
        self._on_cancel = on_cancel
        self._fds: list[int] = []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # left by a process that died
        os.mkfifo(self.path, 0o600)
        self._read = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._wake_r, self._wake_w = os.pipe()
        self._fds = [self._read, self._keep, self._wake_r, self._wake_w]
        self._thread = threading.Thread(target=self._loop, name="flowray-control", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        buffer = b""
        while True:
            ready, _, _ = select.select([self._read, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._read, _MAX_LINE)
            except BlockingIOError:
                continue
            except OSError:
                return
            buffer = (buffer + data)[-_MAX_LINE:]
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                command, _, arg = line.decode("utf-8", "replace").strip().partition(" ")
                if command == "cancel":
                    self._on_cancel(arg.strip() or "cancelled with flowray cancel")

    def close(self) -> None:
        """Stop reading and remove the FIFO: later cancels learn the run is gone."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if not self._fds:
            return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


class ChannelGone(Exception):
    """Nobody reads the run's control channel: its process is gone."""


def send_cancel(run_dir: str, reason: str) -> None:
    """Ask the run in ``run_dir`` to stop; raises :class:`ChannelGone` when its process no
    longer runs, and ``PermissionError`` for another user's run."""
    path = os.path.join(run_dir, CONTROL_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise ChannelGone(path) from exc
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise ChannelGone(path) from exc
        raise
    try:
        line = "cancel " + " ".join(reason.split()) + "\n"
        os.write(fd, line.encode("utf-8")[:_MAX_LINE])
    finally:
        os.close(fd)
