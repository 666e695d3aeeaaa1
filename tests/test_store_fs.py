"""flowray.store.fs: atomic writes, and the one safe tar pack/unpack (action trees, workspaces
and artifacts shipped to and from Ray nodes)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from flowray.store.fs import (
    ArchiveTooLarge,
    TreeError,
    pack,
    remove_tree,
    unpack,
    write_bytes_atomic,
    write_json_atomic,
)


def test_atomic_writes_replace_the_file_and_leave_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    write_json_atomic(str(path), {"a": 1, "when": tmp_path})
    assert json.loads(path.read_text()) == {"a": 1, "when": str(tmp_path)}
    write_json_atomic(str(path), [1, 2], indent=1)
    assert path.read_text() == "[\n 1,\n 2\n]"
    write_bytes_atomic(str(path), b"x")
    assert path.read_bytes() == b"x"
    assert sorted(os.listdir(tmp_path)) == ["record.json"]
    with pytest.raises(TypeError):
        write_bytes_atomic(str(path), "not bytes")  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["record.json"] and path.read_bytes() == b"x"


def _tree(root: Path) -> None:
    (root / "sub" / "empty").mkdir(parents=True)
    (root / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (root / "sub" / "run.sh").chmod(0o755)
    (root / "data.txt").write_text("data")
    (root / "link").symlink_to("sub/run.sh")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    os.utime(root / "data.txt", (1_000_000, 1_000_000))


def _listing(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out.append(f"{rel} -> {os.readlink(path)}")
        elif path.is_dir():
            out.append(f"{rel}/")
        else:
            out.append(f"{rel} {stat.S_IMODE(path.stat().st_mode):o} {path.read_text()!r}")
    return out


def test_pack_and_unpack_keep_folders_files_symlinks_modes_and_times(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _tree(src)
    unpack(pack(str(src), skip=(".git",)), str(dest), times=True)
    assert _listing(dest) == [
        "data.txt 644 'data'", "link -> sub/run.sh", "sub/", "sub/empty/",
        "sub/run.sh 755 '#!/bin/sh\\n'",
    ]
    assert (dest / "data.txt").stat().st_mtime == 1_000_000


def test_normalized_packs_are_the_same_bytes_and_unpack_read_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    first = pack(str(src), prefix="tree/", head=[("meta.json", b"{}")], normalize=True,
                 compress=True)
    os.utime(src / "data.txt", (2_000_000, 2_000_000))
    assert pack(str(src), prefix="tree/", head=[("meta.json", b"{}")], normalize=True,
                compress=True) == first
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert tar.getnames() == [
            "meta.json", "tree/data.txt", "tree/link", "tree/.git", "tree/sub",
            "tree/.git/HEAD", "tree/sub/run.sh", "tree/sub/empty",
        ]
        unpack(tar, str(tmp_path / "dest"), prefix="tree/", read_only=True)
    dest = tmp_path / "dest"
    assert "sub/run.sh 555 '#!/bin/sh\\n'" in _listing(dest)
    assert "data.txt 444 'data'" in _listing(dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o555
    remove_tree(str(dest))
    assert not dest.exists()


def test_pack_stops_at_the_limit(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(ArchiveTooLarge):
        pack(str(tmp_path), limit=99)
    assert len(pack(str(tmp_path), limit=100)) > 100


def test_unpack_replaces_files_only_when_asked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "artifacts").mkdir(parents=True)
    (src / "artifacts" / "out.txt").write_text("new")
    data = pack(str(src), ["artifacts/out.txt"])
    dest = tmp_path / "run"
    (dest / "artifacts").mkdir(parents=True)
    (dest / "artifacts" / "out.txt").write_text("old")
    with pytest.raises(FileExistsError):
        unpack(data, str(dest))
    unpack(data, str(dest), replace=True)
    assert (dest / "artifacts" / "out.txt").read_text() == "new"


def _archive(members: list[tuple[str, bytes | str]], kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if isinstance(body, str):
                info.type, info.linkname = kind if kind != tarfile.REGTYPE else tarfile.SYMTYPE, body
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.mark.parametrize("members, kind, message", [
    ([("/etc/evil", b"x")], tarfile.REGTYPE, "'/etc/evil' is an absolute path"),
    ([("a/../../evil", b"x")], tarfile.REGTYPE, "'a/../../evil' leaves the workspace"),
    ([("l", "/etc"), ("l/passwd", b"x")], tarfile.REGTYPE,
     "'l/passwd' is reached through a symlink that points outside"),
    ([("up", "..")], tarfile.REGTYPE, "symlink 'up' points outside the workspace ('..')"),
    ([("abs", "/etc/passwd")], tarfile.REGTYPE,
     "symlink 'abs' points outside the workspace ('/etc/passwd')"),
    ([("lib/parent", ".."), ("lib/out", "parent/..")], tarfile.REGTYPE,
     "symlink 'lib/out' points outside the workspace ('parent/..')"),
    ([("hard", "data.txt")], tarfile.LNKTYPE, "'hard' is not a file, folder or symlink"),
])
def test_unpack_refuses_what_leaves_the_folder(
    tmp_path: Path, members: list[tuple[str, bytes | str]], kind: bytes, message: str
) -> None:
    dest = tmp_path / "inner" / "dest"
    with pytest.raises(TreeError) as info:
        unpack(_archive(members, kind), str(dest), what="the workspace")
    assert str(info.value) == message
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        {"inner", "dest", *(p.name for p in dest.rglob("*"))})
    assert not (tmp_path / "evil").exists()
