"""The action cache: one read-only tree per (repository, commit), built once however many
processes ask at the same time, shipped to nodes as an archive.

Layout under the cache root::

    entries/<repo>/<sha>/      one entry (``PinnedAction.entry_dir``), writable
        tree/                  the repository at that commit, read-only (``PinnedAction.path``)
        meta.json              repository URL (no credentials), commit, name
        ready                  written last: an entry without it does not exist
        used                   touched on every use (``flowray actions list``)
        venvs/                 virtual environments of the action (see ``venv.py``)
    tags/<repo>.json           the commit each tag had at its last resolve (offline mode)
    locks/<repo>@<sha>.lock    flock: held to build or remove an entry, shared while in use
    locks/<repo>.tags.lock     flock: held to update the tag index of a repository
    tmp/                       entries being built; renamed into ``entries/`` when complete

Building an entry: take its lock, look again, build in ``tmp/``, rename into place, write
``ready``. A failure (a full disk included) removes the temporary folder, so no half entry stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from flowray.actions import git as gitcmd
from flowray.actions.errors import ActionError
from flowray.actions.lock import locked, touch
from flowray.actions.names import (
    canonical_url,
    file_problem,
    name_problem,
    tag_problem,
    url_problem,
)
from flowray.actions.refs import ActionRef, is_sha
from flowray.spec.files import ACTION_FILES, find_action_file
from flowray.store.fs import TreeError, pack, remove_tree, unpack, write_bytes_atomic

READY = "ready"
USED = "used"
META = "meta.json"
TREE = "tree"
PACK_META = "flowray-action.json"
PACK_FORMAT = 1
_LATEST = "latest"  # the tag index's name for the default branch
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

Event = Callable[[str], None]
K = TypeVar("K")
R = TypeVar("R")


@dataclass(frozen=True)
class PinnedAction:
    """A git action pinned to a commit and present in the cache."""

    ref: ActionRef
    sha: str  # the 40-hex commit
    path: str  # the action folder inside the read-only tree
    entry_dir: str  # writable folder of the cache entry, for derived data; outside ``path``
    moved_from: str | None = None  # the commit the tag had at its last resolve, if it moved

    @property
    def short(self) -> str:
        return self.sha[:7]

    @property
    def identity(self) -> str:
        """What the action's results depend on, as far as its code goes: the repository
        (canonical URL, no credentials), the commit, the action's folder and file in it."""
        ref = self.ref
        return json.dumps([_repo_id(ref), self.sha, ref.subdir or "", ref.file or ""])


@dataclass(frozen=True)
class CacheEntry:
    """One (repository, commit) in the cache, for ``flowray actions list`` and ``prune``."""

    repo: str  # repository URL without credentials
    sha: str
    size: int  # bytes on disk (tree and virtual environments)
    last_used: float  # epoch seconds
    path: str  # the entry folder
    tags: tuple[str, ...]  # known tags that point at this commit ("latest": default branch)
    name: str = ""  # owner/repo of the first action fetched from it


def _slug(repo_id: str) -> str:
    readable = _SLUG.sub("_", repo_id.split("://", 1)[-1]).strip("_.")[-48:] or "repo"
    return f"{readable}-{hashlib.sha256(repo_id.encode()).hexdigest()[:12]}"


def _repo_id(ref: ActionRef) -> str:
    return canonical_url(ref.url)


class ActionCache:
    """The SHA-keyed action cache under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._entries = os.path.join(self.root, "entries")
        self._tags = os.path.join(self.root, "tags")
        self._locks = os.path.join(self.root, "locks")
        self._tmp = os.path.join(self.root, "tmp")
        self._made = False

    # -- resolving

    def resolve(
        self,
        refs: Sequence[ActionRef],
        *,
        offline: bool = False,
        on_event: Event | None = None,
        flow: str | None = None,
    ) -> dict[str, PinnedAction]:
        """Pin every reference to a commit and make sure its tree is in the cache.

        One ``git ls-remote`` per distinct (repository, tag), run in parallel; a 40-hex tag is
        taken as the commit. Missing commits are fetched (depth 1) and materialized, one
        process per entry. ``offline``: no network; each tag's commit from its last resolve.
        Keyed by ``ref.key``. Raises ActionError naming every failing action (one a line).
        ``flow`` names the flow file in the offline hint.
        """
        emit: Event = on_event or (lambda _line: None)
        unique: dict[str, ActionRef] = {}
        for ref in refs:
            unique.setdefault(ref.key, ref)
        if not unique:
            return {}
        self._ensure_dirs()
        errors: dict[str, str] = {}
        indexes: dict[str, dict[str, str]] = {}

        # 1. each distinct (repository, tag) to a commit
        pins: dict[tuple[str, str | None], list[ActionRef]] = {}
        for ref in unique.values():
            pins.setdefault((_repo_id(ref), ref.tag), []).append(ref)
        shas: dict[tuple[str, str | None], str] = {}
        previous: dict[tuple[str, str | None], str | None] = {}
        remote: list[tuple[str, str | None]] = []
        for pin, group in pins.items():
            repo_id, tag = pin
            if repo_id not in indexes:
                indexes[repo_id] = self._read_tags(repo_id)
            known = indexes[repo_id].get(tag or _LATEST)
            previous[pin] = known
            if tag is not None and is_sha(tag):
                shas[pin] = tag.lower()
            elif offline:
                if known is None:
                    for ref in group:
                        errors[ref.key] = self._offline_message(ref, flow)
                else:
                    shas[pin] = known
            else:
                remote.append(pin)
        for pin, outcome in _parallel(
            remote, lambda p: gitcmd.ls_remote(pins[p][0].url, p[1])
        ).items():
            if isinstance(outcome, str):
                shas[pin] = outcome
            else:
                for ref in pins[pin]:
                    errors[ref.key] = _ls_remote_message(ref, outcome)

        # 2. each distinct (repository, commit) present: fetched once if missing
        wanted: dict[tuple[str, str], ActionRef] = {}
        for pin, sha in shas.items():
            for ref in pins[pin]:
                wanted.setdefault((pin[0], sha), ref)
        missing: list[tuple[str, str]] = []
        for item in wanted:
            if not os.path.exists(os.path.join(self._entry_dir(*item), READY)):
                missing.append(item)
        if offline:
            for item in missing:
                for pin, sha in shas.items():
                    if (pin[0], sha) == item:
                        for ref in pins[pin]:
                            errors.setdefault(ref.key, self._offline_message(ref, flow))
            missing = []
        built = _parallel(missing, lambda item: self._fetch(wanted[item], item[1]))
        broken: set[tuple[str, str]] = set()
        for item, made in built.items():  # events from this thread only, in a stable order
            if made is True:
                emit(f"fetched {wanted[item].display()} ({item[1][:7]})")
            elif isinstance(made, Exception):
                broken.add(item)
                for pin, sha in shas.items():
                    if (pin[0], sha) == item:
                        for ref in pins[pin]:
                            errors.setdefault(ref.key, _fetch_message(ref, sha, made))

        # 3. remember where each tag pointed; say so when it moved
        moved: dict[tuple[str, str | None], str] = {}
        changed: dict[str, dict[str, str]] = {}
        for pin in remote:
            if pin not in shas or (pin[0], shas[pin]) in broken:
                continue
            sha = shas[pin]
            old = previous[pin]
            if old != sha:
                changed.setdefault(pin[0], {})[pin[1] or _LATEST] = sha
                if old is not None:
                    moved[pin] = old
                    ref = pins[pin][0]
                    what = f"tag {pin[1]}" if pin[1] else "the default branch"
                    emit(f"{what} of {ref.repo_display()} moved: {old[:7]} -> {sha[:7]}")
            if pin[1] is None:
                emit(
                    f"{pins[pin][0].display()}: no tag, using the default branch at {sha[:7]}; "
                    "it can change between runs (pin a tag)"
                )
        for repo_id, tags in changed.items():
            self._update_tags(repo_id, tags)

        # 4. one pinned action per reference, its folder and action file checked
        pinned: dict[str, PinnedAction] = {}
        for pin, sha in shas.items():
            entry = self._entry_dir(pin[0], sha)
            if (pin[0], sha) in broken:
                continue
            touch(os.path.join(entry, USED))
            for ref in pins[pin]:
                if ref.key in errors:
                    continue
                try:
                    path = _action_folder(ref, entry, sha)
                except ActionError as exc:
                    errors[ref.key] = str(exc)
                    continue
                pinned[ref.key] = PinnedAction(
                    ref=ref, sha=sha, path=path, entry_dir=entry, moved_from=moved.get(pin)
                )
        if errors:
            ordered = [errors[k] for k in unique if k in errors]
            raise ActionError("\n".join(dict.fromkeys(ordered)))
        return pinned

    def _fetch(self, ref: ActionRef, sha: str) -> bool:
        """Build the entry of (repository of ``ref``, ``sha``); False if another process did."""
        refname = None
        if ref.tag is None:
            refname = "HEAD"
        elif not is_sha(ref.tag):
            refname = f"refs/tags/{ref.tag}"

        def build(tree: str, workdir: str) -> None:
            data = gitcmd.fetch_tree(ref.url, sha, workdir=workdir, refname=refname)
            remove_tree(os.path.join(workdir, "git"))
            unpack(data, tree, what="the repository", read_only=True)

        return self._install(_repo_id(ref), sha, ref.repo_name(), build)[1]

    def _offline_message(self, ref: ActionRef, flow: str | None) -> str:
        return (
            f"{ref.display()} is not in the action cache and flowray is offline; "
            f"fetch it with `flowray actions fetch {flow or 'FLOW'}` (or run without --offline)"
        )

    # -- entries: the lock protocol

    def _ensure_dirs(self) -> None:
        if not self._made:
            for folder in (self._entries, self._tags, self._locks, self._tmp):
                os.makedirs(folder, exist_ok=True)
            self._made = True

    def _entry_dir(self, repo_id: str, sha: str) -> str:
        return os.path.join(self._entries, _slug(repo_id), sha)

    def _lock_path(self, repo_id: str, sha: str) -> str:
        return os.path.join(self._locks, f"{_slug(repo_id)}@{sha}.lock")

    def _install(
        self, repo_id: str, sha: str, name: str, build: Callable[[str, str], None]
    ) -> tuple[str, bool]:
        """The entry of (repository, commit), built by ``build(tree, workdir)`` unless another
        process has built it; True when this call built it."""
        self._ensure_dirs()
        entry = self._entry_dir(repo_id, sha)
        ready = os.path.join(entry, READY)
        if os.path.exists(ready):
            return entry, False
        prefix = f"{_slug(repo_id)}@{sha}."
        with locked(self._lock_path(repo_id, sha)):
            if os.path.exists(ready):
                return entry, False
            # what a killed builder left: only the lock holder builds this entry
            remove_tree(entry)
            for name_ in os.listdir(self._tmp):
                if name_.startswith(prefix):
                    remove_tree(os.path.join(self._tmp, name_))
            work = tempfile.mkdtemp(prefix=prefix, dir=self._tmp)
            os.chmod(work, 0o755)
            try:
                build(os.path.join(work, TREE), work)
                meta = {"repo": repo_id, "sha": sha, "name": name, "created": time.time()}
                with open(os.path.join(work, META), "w") as fh:
                    json.dump(meta, fh)
                for attempt in (1, 2):
                    os.makedirs(os.path.dirname(entry), exist_ok=True)
                    try:
                        os.rename(work, entry)
                        break
                    except FileNotFoundError:  # prune removed the empty parent just now
                        if attempt == 2:
                            raise
            except BaseException:
                remove_tree(work)
                raise
            try:
                write_bytes_atomic(ready, sha.encode())
            except BaseException:
                remove_tree(entry)
                raise
        return entry, True

    # -- the tag index

    def _tags_path(self, repo_id: str) -> str:
        return os.path.join(self._tags, f"{_slug(repo_id)}.json")

    def _read_tags(self, repo_id: str) -> dict[str, str]:
        try:
            with open(self._tags_path(repo_id), "rb") as fh:
                data = json.load(fh)
            tags = data.get("tags", {})
            return {str(k): str(v) for k, v in tags.items() if is_sha(str(v))}
        except (OSError, ValueError, AttributeError):
            return {}

    def _update_tags(self, repo_id: str, tags: Mapping[str, str | None]) -> None:
        """Set (a SHA) or forget (None) tags of a repository, under its lock."""
        path = self._tags_path(repo_id)
        with locked(os.path.join(self._locks, f"{_slug(repo_id)}.tags.lock")):
            current: dict[str, str | None] = dict(self._read_tags(repo_id))
            current.update(tags)
            kept = {k: v for k, v in sorted(current.items()) if v is not None}
            if kept:
                data = {"repo": repo_id, "tags": kept}
                write_bytes_atomic(path, json.dumps(data, indent=1).encode())
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    # -- listing and pruning

    def entries(self) -> list[CacheEntry]:
        """Every ready entry, by repository then commit."""
        found: list[CacheEntry] = []
        if not os.path.isdir(self._entries):
            return found
        for slug in sorted(os.listdir(self._entries)):
            folder = os.path.join(self._entries, slug)
            tag_map: dict[str, str] | None = None
            try:
                shas = sorted(os.listdir(folder))
            except OSError:  # pruned meanwhile
                continue
            for sha in shas:
                entry = os.path.join(folder, sha)
                meta = _read_meta(entry)
                if meta is None:
                    continue
                repo_id = str(meta.get("repo", ""))
                if tag_map is None:
                    tag_map = self._read_tags(repo_id)
                found.append(
                    CacheEntry(
                        repo=repo_id, sha=sha, size=_size(entry), last_used=_last_used(entry),
                        path=entry, tags=tuple(t for t, s in sorted(tag_map.items()) if s == sha),
                        name=str(meta.get("name", "")),
                    )
                )
        return found

    def prune(
        self, *, older_than: float | None = None, keep_shas: Collection[str] = ()
    ) -> list[CacheEntry]:
        """Remove entries unused for ``older_than`` seconds (all when None), except commits in
        ``keep_shas`` (full or abbreviated) and entries another process holds; also removes
        what builds that died left behind. Returns the removed entries."""
        keep = [k.lower() for k in keep_shas if k]
        now = time.time()
        removed: list[CacheEntry] = []
        forget: dict[str, dict[str, str | None]] = {}
        for entry in self.entries():
            if any(entry.sha.startswith(k) for k in keep):
                continue
            if older_than is not None and now - entry.last_used < older_than:
                continue
            with locked(self._lock_path(entry.repo, entry.sha), blocking=False) as got:
                if not got:
                    continue  # in use or being rebuilt
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(entry.path, READY))
                trash = tempfile.mkdtemp(prefix="trash.", dir=self._tmp)
                os.rename(entry.path, os.path.join(trash, "entry"))
                remove_tree(trash)
            removed.append(entry)
            for tag in entry.tags:
                forget.setdefault(entry.repo, {})[tag] = None
        for repo_id, tags in forget.items():
            self._update_tags(repo_id, tags)
        for entry in removed:
            with contextlib.suppress(OSError):  # not empty: other commits of the repository
                os.rmdir(os.path.dirname(entry.path))
        self._prune_leftovers()
        return removed

    def _prune_leftovers(self) -> None:
        if not os.path.isdir(self._tmp):
            return
        for name in os.listdir(self._tmp):
            path = os.path.join(self._tmp, name)
            if name.startswith("trash."):
                remove_tree(path)
                continue
            owner, sep, _rand = name.rpartition(".")
            if not sep:
                continue
            with locked(os.path.join(self._locks, f"{owner}.lock"), blocking=False) as got:
                if got:
                    remove_tree(path)

    @contextlib.contextmanager
    def hold(self, pinned: Iterable[PinnedAction]) -> Iterator[None]:
        """Keep ``prune`` away from these entries while the ``with`` block uses them."""
        with contextlib.ExitStack() as stack:
            for p in pinned:
                repo_id = _repo_id(p.ref)
                stack.enter_context(locked(self._lock_path(repo_id, p.sha), shared=True))
            yield

    # -- shipping to nodes

    def pack(self, pinned: PinnedAction) -> bytes:
        """A gzip'd tar of the action's tree and what a node needs to use it (repository URL
        without credentials, commit, tag, folder, file): for ``unpack`` on another machine."""
        ref = pinned.ref
        meta = {
            "format": PACK_FORMAT, "sha": pinned.sha, "name": ref.name, "repo": ref.repo,
            "tag": ref.tag, "url": ref.safe_url, "file": ref.file, "subdir": ref.subdir,
            "git_form": ref.git_form, "key": ref.key,
        }
        tree = os.path.join(pinned.entry_dir, TREE)
        if not os.path.exists(os.path.join(pinned.entry_dir, READY)):
            raise ActionError(f"{ref.display()} ({pinned.short}) is not in the cache at {tree}")
        data = json.dumps(meta, sort_keys=True).encode()
        return pack(tree, prefix=f"{TREE}/", head=[(PACK_META, data)], normalize=True,
                    compress=True)

    def unpack(self, data: bytes) -> PinnedAction:
        """Materialize an archive from ``pack`` into this cache (same lock protocol); no git,
        no network. Unpacking what is already here only marks it used."""
        import io
        import tarfile

        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                member = tar.extractfile(PACK_META)
                if member is None:
                    raise KeyError(PACK_META)
                meta = json.loads(member.read())
                ref, sha = _ref_from_meta(meta)
                repo_id = _repo_id(ref)

                def build(tree: str, _work: str) -> None:
                    unpack(tar, tree, prefix=f"{TREE}/", what="the repository", read_only=True)

                try:
                    entry, _made = self._install(repo_id, sha, ref.repo_name(), build)
                except TreeError as exc:
                    raise ActionError(
                        f"{ref.display()} ({sha[:7]}): refusing the action: {exc}"
                    ) from None
                except OSError as exc:
                    raise ActionError(
                        f"{ref.display()} ({sha[:7]}): cannot write to the action cache "
                        f"({self.root}): {exc.strerror or exc}"
                    ) from None
        except (tarfile.TarError, KeyError, ValueError, EOFError, OSError) as exc:
            raise ActionError(f"not an action archive from 'pack': {exc}") from None
        touch(os.path.join(entry, USED))
        return PinnedAction(ref=ref, sha=sha, path=_action_folder(ref, entry, sha),
                            entry_dir=entry)


# -- helpers for one noun: the cache


def _parallel(items: Sequence[K], func: Callable[[K], R]) -> dict[K, R | Exception]:
    """``func`` of each item, in threads when there are several; exceptions as values."""
    results: dict[K, R | Exception] = {}

    def call(item: K) -> R | Exception:
        try:
            return func(item)
        except Exception as exc:  # reported per item by the caller
            return exc

    if len(items) == 1:
        results[items[0]] = call(items[0])
    elif items:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            for item, outcome in zip(items, pool.map(call, items), strict=True):
                results[item] = outcome
    return results


def _ls_remote_message(ref: ActionRef, exc: object) -> str:
    if isinstance(exc, gitcmd.GitFailure):
        if exc.kind == "unknown-ref":
            what = f"tag or branch '{ref.tag}'" if ref.tag else "default branch"
            hint = ""
            if ref.tag and re.fullmatch(r"[0-9a-fA-F]{7,39}", ref.tag):
                hint = " (a commit must be given in full: 40 hex digits)"
            return f"{ref.where()}: the repository has no {what}{hint}"
        if exc.kind == "missing-git":
            return f"{ref.display()}: {exc.reason}"
        return f"{ref.where()}: cannot read the repository: {exc.reason}"
    return f"{ref.where()}: cannot read the repository: {exc}"


def _fetch_message(ref: ActionRef, sha: str, exc: object) -> str:
    head = f"{ref.display()} ({sha[:7]})"
    if isinstance(exc, gitcmd.GitFailure):
        if exc.kind == "missing-git":
            return f"{head}: {exc.reason}"
        return f"{ref.where()}: cannot fetch commit {sha[:7]}: {exc.reason}"
    if isinstance(exc, TreeError):
        return f"{head}: refusing the action: {exc}"
    if isinstance(exc, OSError):
        return f"{head}: cannot write to the action cache: {exc.strerror or exc}"
    return f"{head}: {exc}"


def _action_folder(ref: ActionRef, entry: str, sha: str) -> str:
    """The action folder of ``ref`` in an entry, with its action file; ActionError if not."""
    tree = os.path.join(entry, TREE)
    folder = os.path.join(tree, ref.subdir) if ref.subdir else tree
    head = f"{ref.display()} ({sha[:7]})"
    if not os.path.isdir(folder):
        return _raise(f"{head}: the repository has no folder '{ref.subdir}'")
    if find_action_file(folder, ref.file) is None:
        name = ref.file or ACTION_FILES[0]
        shown = f"{ref.subdir}/{name}" if ref.subdir else name
        return _raise(f"{head}: the repository has no {shown}")
    return folder


def _raise(message: str) -> str:
    raise ActionError(message)


def _ref_from_meta(meta: object) -> tuple[ActionRef, str]:
    if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT:
        raise ValueError("unknown archive format")
    sha, name, url, key = (meta.get(k) for k in ("sha", "name", "url", "key"))
    tag, file, subdir, repo = (meta.get(k) for k in ("tag", "file", "subdir", "repo"))
    if not (isinstance(sha, str) and is_sha(sha) and isinstance(name, str)
            and isinstance(url, str) and isinstance(key, str) and isinstance(repo, str)):
        raise ValueError("incomplete metadata")
    problem = (
        name_problem(name) or url_problem(url) or name_problem(repo)
        or (tag_problem(tag, after_at=False) if isinstance(tag, str) else None)
        or (file_problem(file) if isinstance(file, str) else None)
        or (name_problem(f"x/y/{subdir}") if isinstance(subdir, str) else None)
    )
    if problem:
        raise ValueError(problem)
    ref = ActionRef(
        name=name, repo=repo, tag=tag if isinstance(tag, str) else None, url=url,
        file=file if isinstance(file, str) else None, key=key,
        subdir=subdir if isinstance(subdir, str) else None, git_form=bool(meta.get("git_form")),
    )
    return ref, sha.lower()


def _read_meta(entry: str) -> dict[str, object] | None:
    if not os.path.exists(os.path.join(entry, READY)):
        return None
    try:
        with open(os.path.join(entry, META), "rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _size(folder: str) -> int:
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in (*files, *(d for d in dirs if os.path.islink(os.path.join(root, d)))):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _last_used(entry: str) -> float:
    for name in (USED, READY):
        with contextlib.suppress(OSError):
            return os.stat(os.path.join(entry, name)).st_mtime
    return 0.0
