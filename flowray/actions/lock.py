"""File locks and the small file operations the cache protocol is built from."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
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


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def touch(path: str) -> None:
    """Set the modification time of ``path`` to now, creating it if missing."""
    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError), open(path, "ab"):
            pass


def remove_tree(path: str) -> None:
    """Remove a folder even where its folders were made read-only (files need no write bit)."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, _files in os.walk(path):
            for name in (root, *(os.path.join(root, d) for d in dirs)):
                if os.path.islink(name):
                    continue
                with contextlib.suppress(OSError):
                    mode = os.lstat(name).st_mode
                    if mode & 0o700 != 0o700:
                        os.chmod(name, mode | stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
