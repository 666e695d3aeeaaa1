"""The action result cache: the outputs of a successful action step, reused by a later step that
runs the same action commit with the same inputs (``cache: true``), without starting it.

One cache per node, on its disk (outputs may name that node's files), so it survives restarts.
Layout under its folder (``<action cache>/results`` here, ``<node dir>/results`` on Ray nodes)::

    key                   32 random bytes, 0600: this cache's HMAC key, made on first use
    entries/<hmac>.json   one result per key, 0600, written atomically

An entry's name is HMAC-SHA256, under the cache's own key, of what the result depends on (the
action's repository, commit, folder and file, its kind, its inputs after defaults and types, and
the environment the flow gives the step). Neither the inputs nor that environment are stored, so
a secret among them is neither kept nor guessable from a name: without the key a name cannot be
recomputed, even for a short secret. An entry holds the outputs (never outputs that held a
secret: the caller does not store those), the run that made it, the action and its commit.

Entries are bounded in number and bytes; the least recently used go first. A store scans the
folder for that only when what was there at the last scan plus what this process stored since
passes the bound, or every 64th store (other processes store there too). A missing, unreadable
or malformed entry is a miss (a malformed one is removed); a cache that cannot be written costs
only the reuse, never the step.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from flowray.execute.outputs import MAX_OUTPUT_BYTES
from flowray.store.fs import write_bytes_atomic

FORMAT = 1
KEY_FILE = "key"
ENTRIES = "entries"
MAX_ENTRIES = 5000
MAX_BYTES = 256 << 20
# An entry holds at most one step's outputs (bounded per job) and a few names.
MAX_ENTRY_BYTES = MAX_OUTPUT_BYTES + (64 << 10)
_KEY_BYTES = 32
_NAME = re.compile(r"^[0-9a-f]{64}$")
_STALE_TMP_SECONDS = 3600.0
# A process storing results scans the folder at least every this many stores, so that what
# other processes stored meanwhile is counted: runs at once pass the bound by at most this many
# entries each, for a while.
_RESCAN_EVERY = 64


class ResultCacheError(Exception):
    """The cache cannot be used (its folder or key cannot be made or read); the message says
    which file and why."""


@dataclass(frozen=True)
class CachedResult:
    outputs: dict[str, Any]
    run_id: str  # the run whose step produced them
    created: float  # when (epoch seconds)
    action: str  # owner/repo@tag as the flow wrote it (no credentials)
    sha: str  # the commit

    def to_entry(self, key: str) -> dict[str, Any]:
        return {"format": FORMAT, "key": key, "outputs": self.outputs, "run": self.run_id,
                "created": self.created, "action": self.action, "sha": self.sha}


def _from_entry(entry: Any, key: str) -> CachedResult | None:
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        return None
    outputs, run, created = entry.get("outputs"), entry.get("run"), entry.get("created")
    action, sha = entry.get("action"), entry.get("sha")
    if not (isinstance(outputs, dict) and isinstance(run, str) and isinstance(action, str)
            and isinstance(sha, str) and isinstance(created, int | float)
            and not isinstance(created, bool)):
        return None
    return CachedResult(outputs, run, float(created), action, sha)


def _private_dir(path: str) -> None:
    """``path`` made (0700) if missing; 0700 if it is this user's and more open."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)


class ResultCache:
    """The result cache in folder ``root`` (made on first use)."""

    def __init__(self, root: str, *, max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_BYTES) -> None:
        self.root = os.path.abspath(root)
        self.entries = os.path.join(self.root, ENTRIES)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._secret: bytes | None = None
        self._lock = threading.Lock()
        # What the folder held at the last scan plus what this process stored since (None: not
        # scanned yet): put() scans again only when that passes a bound (see _over()).
        self._estimate: tuple[int, int] | None = None
        self._puts_since_scan = 0

    # -- the key

    def _key(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = self._load_key()
            return self._secret

    def _load_key(self) -> bytes:
        path = os.path.join(self.root, KEY_FILE)
        try:
            _private_dir(self.root)
            for _ in range(3):
                with contextlib.suppress(FileNotFoundError):
                    with open(path, "rb") as fh:
                        data = fh.read(_KEY_BYTES + 1)
                    if len(data) == _KEY_BYTES:
                        if os.stat(path).st_mode & 0o077:
                            os.chmod(path, 0o600)
                        return data
                    # Not a key (cut short, edited): a new one; the old entries are unreachable
                    # and age out.
                    os.unlink(path)
                # Made aside and linked into place: two processes making it at once agree on
                # whichever came first, and nobody reads a half-written key.
                tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
                try:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(secrets.token_bytes(_KEY_BYTES))
                    with contextlib.suppress(FileExistsError):
                        os.link(tmp, path)
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
        except OSError as exc:
            raise ResultCacheError(
                f"cannot use the action result cache in {self.root}: "
                f"{exc.strerror or exc}") from None
        raise ResultCacheError(f"cannot use the action result cache in {self.root}: its key "
                               f"file {path} keeps changing")

    def key_for(self, material: Any) -> str:
        """The entry name for ``material`` (JSON data): HMAC-SHA256 under this cache's key."""
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self._key(), text.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- entries

    def _path(self, key: str) -> str:
        if not _NAME.match(key):
            raise ValueError(f"not a result cache key: {key!r}")
        return os.path.join(self.entries, f"{key}.json")

    def get(self, key: str) -> CachedResult | None:
        """The result stored under ``key``, or None (a malformed entry is removed)."""
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_ENTRY_BYTES + 1)
        except OSError:
            return None
        found = None
        if len(data) <= MAX_ENTRY_BYTES:
            with contextlib.suppress(ValueError):  # JSON and UTF-8 errors alike
                found = _from_entry(json.loads(data), key)
        if found is None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return found

    def put(self, key: str, result: CachedResult) -> str | None:
        """Store ``result`` under ``key``; None, or why it was not stored."""
        path = self._path(key)
        data = json.dumps(result.to_entry(key), separators=(",", ":"), default=str).encode()
        if len(data) > MAX_ENTRY_BYTES:
            return None  # cannot happen with capped outputs; not worth a warning
        try:
            self._key()  # the folder is made and private
            _private_dir(self.entries)
            write_bytes_atomic(path, data, mode=0o600)
        except (OSError, ResultCacheError) as exc:
            text = str(exc) if isinstance(exc, ResultCacheError) else (exc.strerror or str(exc))
            return f"cannot write the action result cache in {self.root}: {text}"
        if self._over(len(data)):
            self.evict()
        return None

    def _over(self, size: int) -> bool:
        """Count an entry of ``size`` bytes just stored; True when the folder must be scanned
        (and trimmed): on this process's first store, when the entries and bytes seen at the
        last scan plus those stored since pass a bound, and every :data:`_RESCAN_EVERY`th
        store (other processes store into the same folder). So a store costs a scan of the
        folder (up to ``max_entries`` files) once in many, not each time."""
        with self._lock:
            self._puts_since_scan += 1
            if self._estimate is None:
                return True
            count, total = self._estimate
            count, total = count + 1, total + size  # as if new (a replaced entry is not)
            self._estimate = (count, total)
            return (count > self.max_entries or total > self.max_bytes
                    or self._puts_since_scan >= _RESCAN_EVERY)

    def evict(self) -> int:
        """Remove the least recently used entries while there are more than ``max_entries``
        or they hold more than ``max_bytes`` (down to 90% of both); also temporary files of
        writers that died. How many entries were removed."""
        found: list[tuple[float, int, str]] = []
        total = 0
        now = time.time()
        try:
            with os.scandir(self.entries) as it:
                for item in it:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if item.name.endswith(".json"):
                        found.append((st.st_mtime, st.st_size, item.path))
                        total += st.st_size
                    elif item.name.endswith(".tmp") and now - st.st_mtime > _STALE_TMP_SECONDS:
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)
        except OSError:
            return 0
        if len(found) <= self.max_entries and total <= self.max_bytes:
            self._scanned(len(found), total)
            return 0
        found.sort()
        keep_n, keep_bytes = int(self.max_entries * 0.9), int(self.max_bytes * 0.9)
        count, removed = len(found), 0
        for _mtime, size, path in found:
            if count <= keep_n and total <= keep_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed += 1
            count -= 1
            total -= size
        self._scanned(count, total)
        return removed

    def _scanned(self, count: int, total: int) -> None:
        with self._lock:
            self._estimate = (count, total)
            self._puts_since_scan = 0


_OPEN: dict[str, ResultCache] = {}
_OPEN_LOCK = threading.Lock()


def open_cache(root: str) -> ResultCache:
    """The process's one :class:`ResultCache` for ``root`` (its key read once)."""
    root = os.path.abspath(root)
    with _OPEN_LOCK:
        cache = _OPEN.get(root)
        if cache is None:
            cache = _OPEN[root] = ResultCache(root)
        return cache
