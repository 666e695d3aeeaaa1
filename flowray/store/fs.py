"""Files written safely, in one place: atomic replacement, and tar archives packed and unpacked
without ever leaving their folder.

Atomic writes: readers see the old file or the new one, never a part (a temporary file beside
it, renamed over it). They do not ``fsync``: they protect readers, not against a power cut.

Archives: :func:`pack` writes only folders, regular files and symlinks (never hard links, device
files or FIFOs); :func:`unpack` accepts only those, refuses absolute names, ``..`` parts, writes
through a symlink and symlinks that point outside the destination (checked on the written tree,
so chains of links are seen), and never follows a link when it writes a file. Used for action
trees (the cache's ``pack``/``unpack`` and git's archives) and for what travels to and from Ray
nodes (workspaces, artifacts).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import stat
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tarfile

_CHUNK = 1 << 16

__all__ = [
    "ArchiveTooLarge",
    "TreeError",
    "disk_full",
    "make_read_only",
    "os_error_text",
    "pack",
    "remove_tree",
    "unpack",
    "write_bytes_atomic",
    "write_json_atomic",
]


# ----------------------------------------------------------------------------- errors

_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says that the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _FULL


def os_error_text(exc: OSError, what: str | None = None, *, doing: str = "write") -> str:
    """``exc`` in words for a person: ``cannot write WHAT: the disk is full (No space left on
    device)``; ``what`` defaults to the file the error names, ``doing`` says what could not
    be done to it (``make the folder``, ``read``, ...)."""
    name = what or (str(exc.filename) if exc.filename is not None else None)
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        reason = f"the disk is full ({reason})"
    return f"cannot {doing} {name}: {reason}" if name else reason


# ----------------------------------------------------------------------------- atomic writes


def _tmp_name(path: str) -> str:
    # pid and thread: two writers of one path (threads of a run, processes) never share one
    return f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"


def write_bytes_atomic(path: str, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data``; the temporary file is removed if anything fails.
    ``mode``: the new file's permissions from its creation on (e.g. ``0o600``), else the
    umask's."""
    tmp = _tmp_name(path)
    try:
        if mode is None:
            fh = open(tmp, "wb")  # noqa: SIM115  # closed by the with below
        else:
            with contextlib.suppress(FileNotFoundError):  # a crashed writer's, other mode
                os.unlink(tmp)
            fh = os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb")
        with fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, data: Any, *, indent: int | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON (compact unless ``indent``; values JSON cannot
    hold are written as their ``str``)."""
    if indent is None:
        # No indent: the C encoder is an order of magnitude faster on large records.
        text = json.dumps(data, default=str, separators=(",", ":"))
    else:
        text = json.dumps(data, default=str, indent=indent)
    write_bytes_atomic(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- trees


def make_read_only(root: str, executable: Collection[str] = ()) -> None:
    """Files under ``root`` 0444 (0555 for the paths in ``executable``), folders 0555."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555 if path in executable else 0o444)
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555)
    os.chmod(root, 0o555)


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


# ----------------------------------------------------------------------------- archives


class TreeError(Exception):
    """An archive that is refused; the message names the path inside it."""


class ArchiveTooLarge(Exception):
    """:func:`pack` met more than ``limit`` bytes of files."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"more than {limit} bytes of files")


def _walk(root: str, skip: Collection[str]) -> Iterator[str]:
    """Every folder, file and symlink below ``root`` (not ``root``), sorted, each folder
    before what it holds; the folders named in ``skip`` are left out at the top."""
    for folder, dirs, files in os.walk(root):
        if folder == root:
            dirs[:] = [d for d in dirs if d not in skip]
        dirs.sort()
        linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in sorted([*files, *linked]):
            yield os.path.join(folder, name)
        for name in dirs:
            if name not in linked:
                yield os.path.join(folder, name)


def pack(
    root: str,
    names: Iterable[str] | None = None,
    *,
    prefix: str = "",
    head: Sequence[tuple[str, bytes]] = (),
    skip: Collection[str] = (),
    limit: int | None = None,
    normalize: bool = False,
    compress: bool = False,
) -> bytes:
    """A tar of the folders, files and symlinks below ``root`` (or only ``names``, relative to
    it), named relative to ``root`` under ``prefix``; anything else (FIFOs, sockets, devices) is
    left out. ``head``: (name, bytes) members put first. ``skip``: top-level folders left out.
    ``limit``: ArchiveTooLarge once the files hold more bytes. ``normalize``: the same tree
    gives the same bytes (no times; modes 0644/0755); otherwise times and permission bits are
    kept. ``compress``: gzip'd. OSError when a file cannot be read.
    """
    import gzip
    import tarfile  # here: writing a record must not pay for it

    buf = io.BytesIO()
    with contextlib.ExitStack() as stack:
        out: Any = buf
        if compress:
            out = stack.enter_context(
                gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6))
        tar = stack.enter_context(tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT))
        for name, data in head:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        paths = _walk(root, skip) if names is None else (os.path.join(root, n) for n in names)
        total = 0
        for path in paths:
            st = os.lstat(path)
            info = tarfile.TarInfo(prefix + os.path.relpath(path, root))
            info.mtime = 0 if normalize else int(st.st_mtime)
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                info.mode = 0o777
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                info.mode = 0o755 if normalize else stat.S_IMODE(st.st_mode) & 0o777
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                if limit is not None and total > limit:
                    raise ArchiveTooLarge(limit)
                if normalize:
                    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                else:
                    info.mode = stat.S_IMODE(st.st_mode) & 0o777
                with open(path, "rb") as fh:
                    info.size = os.fstat(fh.fileno()).st_size  # what is read, not what was
                    tar.addfile(info, fh)
    return buf.getvalue()


def _relative(name: str, what: str) -> str:
    """A member name as a plain relative path, or TreeError when it would leave the tree."""
    if name.startswith("/") or "\x00" in name:
        raise TreeError(f"'{name}' is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TreeError(f"'{name}' leaves {what}")
    return "/".join(parts)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def unpack(
    source: bytes | tarfile.TarFile,
    dest: str,
    *,
    prefix: str = "",
    what: str = "the folder",
    read_only: bool = False,
    times: bool = False,
    replace: bool = False,
) -> None:
    """Write the members of ``source`` (a tar, gzip'd or not, or an open one) whose names start
    with ``prefix`` (the prefix removed) into the folder ``dest``, made if missing.

    TreeError (messages name ``what``, the tree as users know it) for anything but folders,
    regular files and symlinks inside ``dest``; tarfile.TarError for a damaged archive; OSError
    (a full disk) as it comes. The caller removes a half-written ``dest``. ``read_only``: the
    whole tree is made read-only at the end (executable files 0555); otherwise files keep their
    permission bits less group and other write. ``times``: files and folders keep their
    modification times. ``replace``: files and symlinks already in ``dest`` are replaced (an
    existing folder is otherwise an error).
    """
    import tarfile

    if isinstance(source, bytes):
        with tarfile.open(fileobj=io.BytesIO(source), mode="r:*") as tar:
            _unpack(tar, dest, prefix, what, read_only=read_only, times=times, replace=replace)
    else:
        _unpack(source, dest, prefix, what, read_only=read_only, times=times, replace=replace)


def _unpack(tar: tarfile.TarFile, dest: str, prefix: str, what: str, *, read_only: bool,
            times: bool, replace: bool) -> None:
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    links: list[tuple[str, str]] = []
    executable: set[str] = set()
    folders: list[tuple[str, float]] = []
    for member in tar:
        if prefix:
            if not member.name.startswith(prefix):
                continue
            name = member.name[len(prefix):]
        else:
            name = member.name
        rel = _relative(name, what)
        if not rel:
            continue
        target = os.path.join(root, rel)
        parent = os.path.dirname(target)
        if not _inside(root, os.path.realpath(parent)):
            raise TreeError(f"'{rel}' is reached through a symlink that points outside")
        os.makedirs(parent, exist_ok=True)
        if member.isdir():
            if os.path.islink(target):
                raise TreeError(f"'{rel}' is both a symlink and a folder")
            os.makedirs(target, exist_ok=True)
            folders.append((target, member.mtime))
            continue
        if replace and os.path.lexists(target) and not os.path.isdir(target):
            os.unlink(target)
        if member.isreg():
            source = tar.extractfile(member)
            assert source is not None  # a regular member always has data
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
                if not read_only:
                    os.fchmod(out.fileno(), member.mode & 0o755)
            if member.mode & 0o111:
                executable.add(target)
            if times:
                os.utime(target, (member.mtime, member.mtime))
        elif member.issym():
            if not member.linkname:
                raise TreeError(f"symlink '{rel}' has no target")
            os.symlink(member.linkname, target)
            links.append((rel, member.linkname))
        else:
            raise TreeError(f"'{rel}' is not a file, folder or symlink")
    for rel, link in sorted(links):
        if link.startswith("/") or not _inside(root, os.path.realpath(os.path.join(root, rel))):
            raise TreeError(f"symlink '{rel}' points outside {what} ('{link}')")
    if times:
        for folder, mtime in reversed(folders):  # after their contents were written
            os.utime(folder, (mtime, mtime))
    if read_only:
        make_read_only(root, executable)
