"""File locks the cache protocol is built from (atomic writes and removing read-only trees are
in ``flowray.store.fs``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


@contextlib.contextmanager
def locked(path: str, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Yields False, holding nothing, when ``blocking`` is False and another process holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            flags |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def touch(path: str) -> None:
    """Set the modification time of ``path`` to now, creating it if missing."""
    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError), open(path, "ab"):
            pass
