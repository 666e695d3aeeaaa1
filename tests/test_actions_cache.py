"""The action cache against real git repositories over file:// and git://: pinning, fetching
once, moved tags, offline use, refusals, concurrency, shipping to nodes, list and prune."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gitfixtures import (
    ActionRepo,
    Symlink,
    free_port,
    git,
    git_daemon,
    http_git_server,
    isolate,
)

from flowray.actions import (
    ActionCache,
    ActionError,
    ActionRef,
    ActionsConfig,
    PinnedAction,
    parse_ref,
)

ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote"
    path.mkdir()
    return path


@pytest.fixture
def cfg(tmp_path: Path, remote: Path) -> ActionsConfig:
    return ActionsConfig(base=f"file://{remote}", cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def cache(cfg: ActionsConfig) -> ActionCache:
    return ActionCache(cfg.cache_dir)


def resolve_one(
    cache: ActionCache, ref: ActionRef, *, offline: bool = False
) -> tuple[PinnedAction, list[str]]:
    events: list[str] = []
    pinned = cache.resolve([ref], offline=offline, on_event=events.append)
    assert list(pinned) == [ref.key]
    return pinned[ref.key], events


def resolve_error(cache: ActionCache, *refs: ActionRef, offline: bool = False) -> str:
    events: list[str] = []
    with pytest.raises(ActionError) as info:
        cache.resolve(refs, offline=offline, on_event=events.append)
    for line in events:
        assert "s3cret" not in line
    return str(info.value)


def leftovers(cache: ActionCache) -> list[str]:
    """Everything under the cache root but locks and the empty top folders."""
    found = []
    for folder, _dirs, files in os.walk(cache.root):
        rel = os.path.relpath(folder, cache.root)
        if rel.split(os.sep)[0] == "locks":
            continue
        found += [os.path.join(rel, f) for f in files]
        if rel.count(os.sep) >= 1:
            found.append(rel + "/")
    return sorted(found)


# -- pinning and fetching


def test_fetches_once_then_resolves_from_the_cache(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    repo = ActionRepo(remote, "datatorch-actions/python")
    sha = repo.commit({"action-datatorch.yaml": "name: A\n", "bin/run.sh": "echo hi\n"}, tag="v1")
    ref = parse_ref("datatorch/python@v1", cfg)
    pinned, events = resolve_one(cache, ref)
    assert events == [f"fetched datatorch/python@v1 ({sha[:7]})"]
    assert pinned.sha == sha and pinned.moved_from is None and pinned.ref == ref
    assert Path(pinned.path, "action-datatorch.yaml").read_text() == "name: A\n"
    assert sorted(os.listdir(pinned.path)) == ["action-datatorch.yaml", "bin"]
    assert not os.access(Path(pinned.path, "bin", "run.sh"), os.W_OK) or os.geteuid() == 0
    assert stat.S_IMODE(os.stat(Path(pinned.path, "bin", "run.sh")).st_mode) == 0o444
    assert stat.S_IMODE(os.stat(Path(pinned.path, "bin")).st_mode) == 0o555
    assert not pinned.path.startswith(pinned.entry_dir + "/venvs")
    assert os.path.dirname(pinned.path) == pinned.entry_dir
    Path(pinned.entry_dir, "derived.json").write_text("{}")  # the entry folder is writable

    again, events = resolve_one(ActionCache(cache.root), ref)
    assert events == []
    assert again == pinned


def test_git_daemon_transport_and_parallel_resolution(
    remote: Path, tmp_path: Path
) -> None:
    repos = {}
    for i in range(3):
        repo = ActionRepo(remote, f"acme/tool{i}")
        repos[i] = repo.commit(tag="v1")
    with git_daemon(remote) as base:
        cfg = ActionsConfig(base=base, cache_dir=str(tmp_path / "cache"))
        refs = [parse_ref(f"acme/tool{i}@v1", cfg) for i in range(3)]
        refs.append(parse_ref({"name": "acme/tool0", "tag": "v1", "git": f"{base}/acme/tool0.git"}, cfg))
        events: list[str] = []
        pinned = ActionCache(cfg.cache_dir).resolve(refs, on_event=events.append)
    assert sorted(events) == sorted(
        [f"fetched acme/tool{i}@v1 ({repos[i][:7]})" for i in range(3)]
    )  # tool0.git is the same repository: fetched once
    assert [pinned[r.key].sha for r in refs] == [repos[0], repos[1], repos[2], repos[0]]
    assert pinned[refs[0].key].path == pinned[refs[3].key].path


def test_lightweight_tag_branch_commit_and_default_branch(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    repo = ActionRepo(remote, "acme/tool")
    first = repo.commit(tag="v1", annotated=False)
    second = repo.commit({"extra.txt": "x"})
    git(f"--git-dir={repo.bare}", "branch", "stable", first)
    assert resolve_one(cache, parse_ref("acme/tool@v1", cfg))[0].sha == first
    assert resolve_one(cache, parse_ref("acme/tool@stable", cfg))[0].sha == first
    latest, events = resolve_one(cache, parse_ref("acme/tool@latest", cfg))
    assert latest.sha == second
    assert events == [
        f"fetched acme/tool ({second[:7]})",
        f"acme/tool: no tag, using the default branch at {second[:7]}; it can change "
        "between runs (pin a tag)",
    ]
    # a full commit id needs no round trip: it resolves with the repository gone
    os.rename(repo.bare, str(repo.bare) + ".gone")
    pinned, events = resolve_one(cache, parse_ref(f"acme/tool@{first}", cfg))
    assert (pinned.sha, events) == (first, [])


def test_sub_folder_actions_and_file_override(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    repo = ActionRepo(remote, "acme/tools")
    sha = repo.commit({"lint/action-datatorch.yml": "name: L\n", "fmt/flow.yaml": "name: F\n"},
                      tag="v1")
    lint = parse_ref("acme/tools/lint@v1", cfg)
    fmt = parse_ref({"name": "acme/tools/fmt", "tag": "v1", "file": "flow.yaml"}, cfg)
    events: list[str] = []
    pinned = cache.resolve([lint, fmt], on_event=events.append)
    assert events == [f"fetched acme/tools/lint@v1 ({sha[:7]})"]
    assert pinned[lint.key].path.endswith("/tree/lint")
    assert pinned[fmt.key].path.endswith("/tree/fmt")
    assert pinned[lint.key].entry_dir == pinned[fmt.key].entry_dir


def test_tag_moved_since_cached(remote: Path, cfg: ActionsConfig, cache: ActionCache) -> None:
    repo = ActionRepo(remote, "acme/tool")
    old = repo.commit(tag="v1")
    ref = parse_ref("acme/tool@v1", cfg)
    first, _ = resolve_one(cache, ref)
    new = repo.commit({"main.py": "print('v1.1')\n"})
    repo.tag("v1", new)
    moved, events = resolve_one(cache, ref)
    assert events == [
        f"fetched acme/tool@v1 ({new[:7]})",
        f"tag v1 of acme/tool moved: {old[:7]} -> {new[:7]}",
    ]
    assert (moved.sha, moved.moved_from) == (new, old)
    assert Path(moved.path, "main.py").read_text() == "print('v1.1')\n"
    assert Path(first.path, "main.py").exists()  # the old commit stays until pruned
    assert resolve_one(cache, ref) == (
        PinnedAction(ref, new, moved.path, moved.entry_dir), []
    )


# -- offline


def test_offline_uses_the_last_resolved_commit(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    repo = ActionRepo(remote, "acme/tool")
    sha = repo.commit(tag="v1")
    ref = parse_ref("acme/tool@v1", cfg)
    online, _ = resolve_one(cache, ref)
    os.rename(repo.bare, str(repo.bare) + ".gone")  # no network: not even a failing one
    offline, events = resolve_one(cache, ref, offline=True)
    assert (offline, events) == (online, [])
    assert offline.sha == sha
    assert resolve_error(cache, parse_ref("acme/tool@v2", cfg), offline=True) == (
        "acme/tool@v2 is not in the action cache and flowray is offline; fetch it with "
        "`flowray actions fetch FLOW` (or run without --offline)"
    )
    with pytest.raises(ActionError) as info:
        cache.resolve([parse_ref("acme/other@v1", cfg), ref], offline=True, flow="flows/x.yaml")
    assert str(info.value) == (
        "acme/other@v1 is not in the action cache and flowray is offline; fetch it with "
        "`flowray actions fetch flows/x.yaml` (or run without --offline)"
    )
    # a commit id that is not cached is no better offline
    assert resolve_error(cache, parse_ref("acme/tool@" + "a" * 40, cfg), offline=True) == (
        f"acme/tool@{'a' * 40} is not in the action cache and flowray is offline; fetch it "
        "with `flowray actions fetch FLOW` (or run without --offline)"
    )


# -- refusals, each leaving nothing behind


def test_unreachable_file_url(tmp_path: Path, cache: ActionCache) -> None:
    cfg = ActionsConfig(base="file:///nonexistent", cache_dir=cache.root)
    assert resolve_error(cache, parse_ref("datatorch/python@v1", cfg)) == (
        "datatorch/python@v1 (file:///nonexistent/datatorch-actions/python): cannot read the "
        "repository: '/nonexistent/datatorch-actions/python' does not appear to be a git repository"
    )
    assert leftovers(cache) == []


def test_unreachable_git_port(cache: ActionCache) -> None:
    port = free_port()  # nobody listens there
    cfg = ActionsConfig(base=f"git://127.0.0.1:{port}", cache_dir=cache.root)
    assert resolve_error(cache, parse_ref("acme/tool@v1", cfg)) == (
        f"acme/tool@v1 (git://127.0.0.1:{port}/acme/tool): cannot read the repository: unable "
        f"to connect to 127.0.0.1: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused"
    )
    assert leftovers(cache) == []


def test_unknown_tag_over_both_transports(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    ActionRepo(remote, "acme/tool").commit(tag="v1")
    assert resolve_error(cache, parse_ref("acme/tool@v9", cfg)) == (
        f"acme/tool@v9 (file://{remote}/acme/tool): the repository has no tag or branch 'v9'"
    )
    assert resolve_error(cache, parse_ref("acme/tool@3f2a1b0", cfg)) == (
        f"acme/tool@3f2a1b0 (file://{remote}/acme/tool): the repository has no tag or branch "
        "'3f2a1b0' (a commit must be given in full: 40 hex digits)"
    )
    with git_daemon(remote) as base:
        ref = parse_ref({"name": "acme/tool", "tag": "v9", "git": f"{base}/acme/tool"}, cfg)
        assert resolve_error(cache, ref) == (
            f"{base}/acme/tool@v9: the repository has no tag or branch 'v9'"
        )
        missing = parse_ref("acme/nothing@v1", ActionsConfig(base=base))
        assert resolve_error(cache, missing) == (
            f"acme/nothing@v1 ({base}/acme/nothing): cannot read the repository: remote "
            "error: no such repository: /acme/nothing"
        )
    assert leftovers(cache) == []


def test_credentials_in_urls_are_never_shown(cfg: ActionsConfig, cache: ActionCache) -> None:
    port = free_port()
    ref = parse_ref(
        {"name": "acme/tool", "tag": "v1", "git": f"https://bob:s3cret@127.0.0.1:{port}/x.git"},
        cfg,
    )
    message = resolve_error(cache, ref)
    assert re.sub(r"after \d+ ms", "after N ms", message) == (
        f"https://127.0.0.1:{port}/x.git@v1: cannot read the repository: unable to access "
        f"'https://127.0.0.1:{port}/x.git/': Failed to connect to 127.0.0.1 port {port} after "
        "N ms: Couldn't connect to server"
    )
    assert "s3cret" not in message and "bob" not in message
    assert leftovers(cache) == []


def test_http_credentials_are_used_but_never_shown(remote: Path, cache: ActionCache) -> None:
    """Smart HTTP behind basic authentication: the right password fetches, a wrong one or none
    fails without a prompt, and neither the password nor the user shows anywhere."""
    sha = ActionRepo(remote, "acme/tool").commit(tag="v1")
    with http_git_server(remote, user="bob", password="s3cret") as base:
        host = base.removeprefix("http://")

        def ref(userinfo: str) -> ActionRef:
            git_url = f"http://{userinfo}{host}/acme/tool"
            return parse_ref({"name": "acme/tool", "tag": "v1", "git": git_url}, ActionsConfig())

        pinned, events = resolve_one(cache, ref("bob:s3cret@"))
        assert (pinned.sha, events) == (sha, [f"fetched {base}/acme/tool@v1 ({sha[:7]})"])
        assert resolve_error(ActionCache(cache.root + "2"), ref("bob:wrong-s3cret@")) == (
            f"{base}/acme/tool@v1: cannot read the repository: Authentication failed for "
            f"'{base}/acme/tool/'"
        )
        assert resolve_error(ActionCache(cache.root + "3"), ref("")) == (
            f"{base}/acme/tool@v1: cannot read the repository: could not read Username for "
            f"'{base}': terminal prompts disabled"
        )


def test_credentials_reach_git_through_the_environment_only(
    remote: Path, tmp_path: Path
) -> None:
    """A token in a file:// URL must not be needed, but must never be on git's command line:
    a fake git on PATH records its arguments."""
    ActionRepo(remote, "acme/tool").commit(tag="v1")
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    log = tmp_path / "argv.log"
    real = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    fake.chmod(0o755)
    code = textwrap.dedent(f"""
        import os
        os.environ["PATH"] = {str(fake.parent)!r} + ":" + os.environ["PATH"]
        from flowray.actions import ActionCache, ActionsConfig, ActionError, parse_ref
        cfg = ActionsConfig(cache_dir={str(tmp_path / "cache")!r})
        ref = parse_ref({{"name": "a/b", "tag": "v1",
                         "git": "https://bob:s3cret@127.0.0.1:{free_port()}/x.git"}}, cfg)
        try:
            ActionCache(cfg.cache_dir).resolve([ref])
        except ActionError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert "s3cret" not in out.stdout + out.stderr
    argv = log.read_text()
    assert "ls-remote -- https://127.0.0.1:" in argv
    assert "s3cret" not in argv and "bob" not in argv


def test_symlinks_outside_the_tree_are_refused(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    repo = ActionRepo(remote, "acme/tool")
    ok = repo.commit({"action-datatorch.yaml": "name: A\n", "lib/real.py": "x = 1\n",
                      "lib/alias.py": Symlink("real.py"), "up": Symlink("lib/..")}, tag="v1")
    pinned, _ = resolve_one(cache, parse_ref("acme/tool@v1", cfg))
    assert os.readlink(Path(pinned.path, "lib", "alias.py")) == "real.py" and pinned.sha == ok
    cases = {
        "v2": ({"escape": Symlink("../../../etc/passwd")},
               "symlink 'escape' points outside the repository ('../../../etc/passwd')"),
        "v3": ({"abs": Symlink("/etc/passwd")},
               "symlink 'abs' points outside the repository ('/etc/passwd')"),
        # each link alone looks inside; followed, 'lib/out' leaves the tree
        "v4": ({"lib/parent": Symlink(".."), "lib/out": Symlink("parent/..")},
               "symlink 'lib/out' points outside the repository ('parent/..')"),
    }
    for tag, (files, why) in cases.items():
        sha = repo.commit({"action-datatorch.yaml": "name: A\n", **files}, tag=tag, clear=True)
        ref = parse_ref(f"acme/tool@{tag}", cfg)
        assert resolve_error(cache, ref) == (
            f"acme/tool@{tag} ({sha[:7]}): refusing the action: {why}"
        )
    assert [e.sha for e in cache.entries()] == [ok]
    assert leftovers(cache) == leftovers_of_one_entry(cache)


def leftovers_of_one_entry(cache: ActionCache) -> list[str]:
    return [p for p in leftovers(cache) if p.startswith(("entries/", "tags/"))]


def test_repository_without_action_file(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    sha = ActionRepo(remote, "acme/tool").commit({"README.md": "no action\n"}, tag="v1")
    assert resolve_error(cache, parse_ref("acme/tool@v1", cfg)) == (
        f"acme/tool@v1 ({sha[:7]}): the repository has no action-datatorch.yaml"
    )
    assert resolve_error(cache, parse_ref({"name": "acme/tool", "tag": "v1", "file": "a.yaml"},
                                          cfg)) == (
        f"acme/tool@v1 ({sha[:7]}): the repository has no a.yaml"
    )
    assert resolve_error(cache, parse_ref("acme/tool/sub@v1", cfg)) == (
        f"acme/tool/sub@v1 ({sha[:7]}): the repository has no folder 'sub'"
    )


def full_disk_repo(remote: Path) -> tuple[str, str]:
    """Tag 'zeros': 4 MiB of zeros (git stores almost nothing, flowray writes 4 MiB); tag
    'noise': 1 MiB of random bytes (git itself writes 1 MiB)."""
    repo = ActionRepo(remote, "acme/tool")
    zeros = repo.commit({"action-datatorch.yaml": "name: A\n", "big.bin": b"\0" * (4 << 20)},
                        tag="zeros")
    noise = repo.commit({"big.bin": os.urandom(1 << 20)}, tag="noise")
    return zeros, noise


def assert_nothing_half_written(cache: ActionCache) -> None:
    assert cache.entries() == []
    assert os.listdir(os.path.join(cache.root, "tmp")) == []
    assert os.listdir(os.path.join(cache.root, "entries")) == []
    assert leftovers(cache) == []


def test_full_disk_during_fetch_rlimit(remote: Path, cfg: ActionsConfig, cache: ActionCache) -> None:
    """RLIMIT_FSIZE in a child process: every write past 256 KiB fails, in git's own writes
    and in flowray's."""
    zeros, noise = full_disk_repo(remote)
    code = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        from flowray.actions import ActionCache, ActionError, ActionsConfig, parse_ref
        cfg = ActionsConfig(base={cfg.base!r}, cache_dir={cache.root!r})
        for tag in ("zeros", "noise"):
            try:
                ActionCache(cfg.cache_dir).resolve([parse_ref("acme/tool@" + tag, cfg)])
            except ActionError as exc:
                print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.splitlines() == [
        f"acme/tool@zeros ({zeros[:7]}): cannot write to the action cache: File too large",
        # git's child processes get the default SIGXFSZ action back (Python restores it)
        f"acme/tool@noise (file://{remote}/acme/tool): cannot fetch commit {noise[:7]}: "
        "--shallow-file died of signal 25; unpack-objects failed",
    ]
    assert_nothing_half_written(cache)
    # with room again, the same cache works
    assert resolve_one(cache, parse_ref("acme/tool@zeros", cfg))[0].sha == zeros


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only), unmounted afterwards."""
    path = tmp_path / "tiny"
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def test_full_disk_during_fetch_tmpfs(remote: Path, cfg: ActionsConfig, tiny_disk: Path) -> None:
    zeros, noise = full_disk_repo(remote)
    cache = ActionCache(str(tiny_disk / "cache"))
    assert resolve_error(cache, parse_ref("acme/tool@zeros", cfg)) == (
        f"acme/tool@zeros ({zeros[:7]}): cannot write to the action cache: "
        "No space left on device"
    )
    assert_nothing_half_written(cache)
    assert resolve_error(cache, parse_ref("acme/tool@noise", cfg)) == (
        f"acme/tool@noise (file://{remote}/acme/tool): cannot fetch commit {noise[:7]}: "
        "unable to write loose object file: No space left on device; unpack-objects failed"
    )
    assert_nothing_half_written(cache)


# -- many processes at once


def test_eight_processes_fetch_once(remote: Path, cfg: ActionsConfig, tmp_path: Path) -> None:
    sha = ActionRepo(remote, "datatorch-actions/python").commit(tag="v1")
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, time
        from flowray.actions import ActionCache, ActionsConfig, parse_ref
        cfg = ActionsConfig(base={cfg.base!r}, cache_dir={cfg.cache_dir!r})
        ref = parse_ref("datatorch/python@v1", cfg)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        pinned = ActionCache(cfg.cache_dir).resolve([ref], on_event=lambda l: print("event", l))
        print("path", pinned[ref.key].path, pinned[ref.key].sha)
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    time.sleep(0.3)
    go.write_text("go")
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outs
    lines = [line for out, _err in outs for line in out.splitlines()]
    assert [ln for ln in lines if ln.startswith("event")] == [
        f"event fetched datatorch/python@v1 ({sha[:7]})"
    ]
    paths = {ln for ln in lines if ln.startswith("path")}
    assert len(paths) == 1
    assert paths.pop().endswith(f"/{sha}/tree {sha}")


# -- shipping to nodes


def test_pack_and_unpack_in_a_process_that_shares_no_cache(
    remote: Path, cfg: ActionsConfig, cache: ActionCache, tmp_path: Path
) -> None:
    repo = ActionRepo(remote, "acme/tools")
    sha = repo.commit({"py/action-datatorch.yaml": "name: P\n", "py/run.sh": "echo\n",
                       "py/link": Symlink("run.sh"), "empty/.keep": ""}, tag="v1")
    os.chmod(repo.work / "py" / "run.sh", 0o755)
    sha = repo.commit({}, tag="v1")  # the executable bit, committed
    ref = parse_ref("acme/tools/py@v1", cfg)
    pinned, _ = resolve_one(cache, ref)
    data = cache.pack(pinned)
    assert data == cache.pack(pinned)  # the same tree gives the same bytes
    assert len(data) < 2048
    archive = tmp_path / "action.tar.gz"
    archive.write_bytes(data)
    node_cache = tmp_path / "node" / "cache"
    code = textwrap.dedent(f"""
        import json, os, sys
        os.environ["PATH"] = ""  # no git on this node
        from flowray.actions import ActionCache
        cache = ActionCache({str(node_cache)!r})
        data = open({str(archive)!r}, "rb").read()
        first = cache.unpack(data)
        second = cache.unpack(data)
        assert first == second
        assert not any(m == "git" or m.startswith("git.") for m in sys.modules)
        print(json.dumps({{"key": first.ref.key, "sha": first.sha, "path": first.path,
                          "display": first.ref.display(),
                          "files": sorted(os.listdir(first.path)),
                          "link": os.readlink(os.path.join(first.path, "link")),
                          "exec": os.access(os.path.join(first.path, "run.sh"), os.X_OK)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "FLOWRAY_CACHE_DIR": "/nonexistent"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == {
        "key": ref.key, "sha": sha, "display": "acme/tools/py@v1",
        "path": got["path"], "files": ["action-datatorch.yaml", "link", "run.sh"],
        "link": "run.sh", "exec": True,
    }
    assert got["path"].startswith(str(node_cache) + "/entries/")
    assert got["path"].endswith(f"/{sha}/tree/py")
    assert [e.sha for e in ActionCache(str(node_cache)).entries()] == [sha]


def test_unpack_refuses_archives_that_escape(tmp_path: Path, cache: ActionCache) -> None:
    import io
    import tarfile

    def archive(members: list[tuple[str, bytes | str]]) -> bytes:
        meta = {"format": 1, "sha": "b" * 40, "name": "a/b", "repo": "a/b", "tag": "v1",
                "url": "https://example.com/a/b", "file": None, "subdir": None,
                "git_form": False, "key": "https://example.com/a/b @v1"}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, body in [("flowray-action.json", json.dumps(meta).encode()), *members]:
                info = tarfile.TarInfo(name)
                if isinstance(body, str):
                    info.type, info.linkname = tarfile.SYMTYPE, body
                    tar.addfile(info)
                else:
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
        return buf.getvalue()

    cases: list[tuple[list[tuple[str, bytes | str]], str]] = [
        ([("tree/../../../evil", b"x")], "a/b@v1 (bbbbbbb): refusing the action: '../../../evil' leaves the repository"),
        ([("tree/l", "/etc"), ("tree/l/passwd", b"x")],
         "a/b@v1 (bbbbbbb): refusing the action: 'l/passwd' is reached through a symlink that points outside"),
        ([("tree/up", "..")], "a/b@v1 (bbbbbbb): refusing the action: symlink 'up' points outside the repository ('..')"),
    ]
    for members, message in cases:
        with pytest.raises(ActionError) as info:
            cache.unpack(archive(members))
        assert str(info.value) == message
    assert not (tmp_path / "evil").exists()
    with pytest.raises(ActionError) as info:
        cache.unpack(b"not an archive")
    assert str(info.value) == "not an action archive from 'pack': not a gzip file"
    assert cache.entries() == []
    assert leftovers(cache) == []


# -- list and prune


def test_list_and_prune(remote: Path, cfg: ActionsConfig, cache: ActionCache) -> None:
    repo = ActionRepo(remote, "acme/tool")
    v1 = repo.commit({"action-datatorch.yaml": "name: A\n", "data.txt": "x" * 1000}, tag="v1")
    v2 = repo.commit({"data.txt": "y" * 10}, tag="v2")
    repo.tag("stable", v2, annotated=False)
    for tag in ("v1", "v2", "stable"):
        resolve_one(cache, parse_ref(f"acme/tool@{tag}", cfg))
    entries = {e.sha: e for e in cache.entries()}
    assert set(entries) == {v1, v2}
    assert entries[v1].tags == ("v1",) and entries[v2].tags == ("stable", "v2")
    assert entries[v1].repo == f"file://{remote}/acme/tool"
    assert entries[v1].name == "acme/tool"
    assert entries[v1].size > 1000 > entries[v2].size > 10
    old = time.time() - 3600
    os.utime(Path(entries[v1].path, "used"), (old, old))
    assert [e.last_used for e in cache.entries() if e.sha == v1] == [old]

    expected = [e for e in cache.entries() if e.sha == v1]
    assert cache.prune(older_than=600) == expected
    assert [e.sha for e in cache.entries()] == [v2]
    # offline, the pruned tag is gone, the others still resolve
    assert resolve_error(cache, parse_ref("acme/tool@v1", cfg), offline=True).startswith(
        "acme/tool@v1 is not in the action cache"
    )
    pinned, _ = resolve_one(cache, parse_ref("acme/tool@v2", cfg), offline=True)
    # an entry in use is kept; keep_shas is honoured; then everything goes
    with cache.hold([pinned]):
        assert cache.prune() == []
    assert cache.prune(keep_shas=[v2[:7]]) == []
    assert [e.sha for e in cache.prune()] == [v2]
    assert cache.entries() == []
    assert leftovers(cache) == []


def test_prune_removes_what_a_killed_build_left(
    remote: Path, cfg: ActionsConfig, cache: ActionCache
) -> None:
    repo = ActionRepo(remote, "acme/tool")
    repo.commit(tag="v1")
    pinned, _ = resolve_one(cache, parse_ref("acme/tool@v1", cfg))
    # a builder killed after the rename but before 'ready', and one killed mid-build
    os.unlink(Path(pinned.entry_dir, "ready"))
    slug = Path(pinned.entry_dir).parent.name
    half = Path(cache.root, "tmp", f"{slug}@{'c' * 40}.abcd1234")
    (half / "tree").mkdir(parents=True)
    assert cache.entries() == []
    # the next resolve rebuilds the entry that has no 'ready'
    again, events = resolve_one(cache, parse_ref("acme/tool@v1", cfg))
    assert events == [f"fetched acme/tool@v1 ({pinned.sha[:7]})"]
    assert again.path == pinned.path
    cache.prune(older_than=3600)
    assert not half.exists()
    assert [e.sha for e in cache.entries()] == [pinned.sha]


@pytest.fixture
def five_actions(remote: Path, cfg: ActionsConfig) -> Iterator[list[ActionRef]]:
    refs = []
    for i in range(5):
        ActionRepo(remote, f"acme/a{i}").commit(tag="v1")
        refs.append(parse_ref(f"acme/a{i}@v1", cfg))
    yield refs


def test_resolving_five_cached_actions_fetches_nothing(
    five_actions: list[ActionRef], cache: ActionCache
) -> None:
    # Speed is measured in benchmarks/bench_actions.py; here only that nothing is fetched.
    first = cache.resolve(five_actions)
    events: list[str] = []
    again = cache.resolve(five_actions, on_event=events.append)
    assert events == []
    assert {k: p.sha for k, p in again.items()} == {k: p.sha for k, p in first.items()}
