"""Action trees on disk: written from a tar stream without ever leaving the destination,
refused when a symlink points outside, made read-only, and packed for shipping."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from flowray.actions.errors import TreeError

if TYPE_CHECKING:
    import tarfile

_CHUNK = 1 << 16
__all__ = ["TreeError", "extract", "make_read_only", "pack"]


def _relative(name: str) -> str:
    """A member name as a plain relative path, or TreeError when it would leave the tree."""
    if name.startswith("/") or "\x00" in name:
        raise TreeError(f"'{name}' is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TreeError(f"'{name}' leaves the repository")
    return "/".join(parts)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def extract(tar: tarfile.TarFile, dest: str, *, prefix: str = "") -> None:
    """Write the members of ``tar`` whose names start with ``prefix`` (the prefix removed)
    into the new folder ``dest``, then make the whole tree read-only.

    Only folders, regular files and symlinks are accepted; a symlink must point inside
    ``dest`` (checked on the written tree, so chains and ``..`` through links are seen).
    OSError (a full disk) propagates; the caller removes ``dest``.
    """
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    links: list[tuple[str, str]] = []
    executable: set[str] = set()
    for member in tar:
        if prefix:
            if not member.name.startswith(prefix):
                continue
            name = member.name[len(prefix):]
        else:
            name = member.name
        rel = _relative(name)
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
        elif member.isreg():
            source = tar.extractfile(member)
            assert source is not None  # a regular member always has data
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
            if member.mode & 0o111:
                executable.add(target)
        elif member.issym():
            if not member.linkname:
                raise TreeError(f"symlink '{rel}' has no target")
            os.symlink(member.linkname, target)
            links.append((rel, member.linkname))
        else:
            raise TreeError(f"'{rel}' is not a file, folder or symlink")
    for rel, link in sorted(links):
        if link.startswith("/") or not _inside(root, os.path.realpath(os.path.join(root, rel))):
            raise TreeError(f"symlink '{rel}' points outside the repository ('{link}')")
    make_read_only(root, executable)


def make_read_only(root: str, executable: set[str]) -> None:
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


def pack(tree: str, meta: bytes, *, meta_name: str, prefix: str) -> bytes:
    """A gzip'd tar of ``meta`` (first member) and every file, folder and symlink of ``tree``
    under ``prefix``; the same tree gives the same bytes (sorted, no times, no owners)."""
    import gzip
    import io
    import tarfile

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz, tarfile.open(
        fileobj=gz, mode="w", format=tarfile.PAX_FORMAT
    ) as tar:
        info = tarfile.TarInfo(meta_name)
        info.size = len(meta)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(meta))
        for folder, dirs, files in os.walk(tree):
            dirs.sort()
            rel_folder = os.path.relpath(folder, tree)
            base = prefix if rel_folder == "." else f"{prefix}{rel_folder}/"
            entries = sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            for name in sorted(entries):
                path = os.path.join(folder, name)
                st = os.lstat(path)
                info = tarfile.TarInfo(base + name)
                if stat.S_ISLNK(st.st_mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(path)
                    info.mode = 0o777
                    tar.addfile(info)
                else:
                    info.size = st.st_size
                    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
            for name in dirs:
                if not os.path.islink(os.path.join(folder, name)):
                    info = tarfile.TarInfo(base + name)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
    return buf.getvalue()
