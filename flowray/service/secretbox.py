"""Secrets encrypted at rest: the service's key file, and AES-GCM sealing of each value.

The database keeps only sealed blobs; the 32-byte key lives in a file of its own (by default
``<data-dir>/secret.key``, mode 0600), so a copy of the database alone reveals no value.

A sealed blob is ``version (1 byte) | nonce (12 random bytes) | AES-256-GCM ciphertext + tag``.
The associated data names the blob's purpose and the secret's name, so a blob copied into another
secret's row, or a secret passed off as the canary, does not open. Random 96-bit nonces keep one
key safe for about 2**32 seals (NIST SP 800-38D), far more than a service stores.

The canary (Woodpecker's habit) is a known text sealed with the key and kept in the database by
the caller: a service started with another key file finds out at start, not when a run first
needs a secret.

Only this module imports ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import shlex
import stat
from collections.abc import Iterable
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_BYTES", "Blob", "SecretBox", "SecretKeyError", "load_key", "rotate"]

KEY_BYTES = 32
_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _NONCE_BYTES
# A key file is 45 bytes; a bigger file is the wrong file, and reading it all would be pointless.
_MAX_KEY_FILE = 4096
# Labels keep the uses of the key apart: a secret's associated data can never equal the canary's
# (the NUL ends the label before the name), and the key id hashes a label no blob uses.
_SECRET_AAD = b"flowray/secret/v1\0"
_CANARY_AAD = b"flowray/canary/v1"
_CANARY_TEXT = b"flowray secret key canary"
_KEY_ID_LABEL = b"flowray/key-id/v1\0"
# Errors from os.link on file systems without hard links; the key file is then made in place.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})


class SecretKeyError(Exception):
    """The key file cannot be used, or a sealed value does not open with this key.

    ``message`` (also ``str(error)``) is meant for users: it names the key file or the secret,
    never key bytes or a value. ``path`` is the key file and ``name`` the secret, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.name = name

    def __reduce__(self) -> tuple[type[SecretKeyError], tuple[str], dict[str, str | None]]:
        return (type(self), (self.message,), {"path": self.path, "name": self.name})


def load_key(path: str, *, create: bool = True) -> bytes:
    """The 32-byte key kept as base64 text in the file at ``path``.

    A missing file is created (``create=True``) with a fresh random key, mode 0600, its folder
    made 0700 if new. Creation is atomic: processes starting together all end up with the one
    key that was linked into place first. Raises :class:`SecretKeyError` for a file that is not
    a key, one that other users may read or change, or a missing one with ``create=False``.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            raise SecretKeyError(f"the secret key file {path} does not exist", path=path) from None
    key = os.urandom(KEY_BYTES)
    if _create_key_file(path, key):
        return key
    # Another process made the file first: its key is the one, so read it back.
    try:
        return _read_key(path)
    except FileNotFoundError as exc:  # removed again at once: nothing sensible to fall back on
        _fail_os(path, "read", exc)


def _fail_os(path: str, doing: str, exc: OSError) -> NoReturn:
    reason = exc.strerror or type(exc).__name__
    message = f"cannot {doing} the secret key file {path}: {reason}"
    raise SecretKeyError(message, path=path) from None


def _read_key(path: str) -> bytes:
    """The key in ``path``; FileNotFoundError when there is no file."""
    try:
        # O_NONBLOCK: a FIFO put where the key belongs must not hang the service at start.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        _fail_os(path, "read", exc)
    try:
        # fstat on the open file, not stat on the name: what is checked is what gets read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretKeyError(f"the secret key file {path} is not a regular file", path=path)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SecretKeyError(
                f"the secret key file {path} is open to other users (mode {mode:04o});"
                f" run: chmod 600 {shlex.quote(path)}",
                path=path,
            )
        data = b""
        while len(data) <= _MAX_KEY_FILE:
            chunk = os.read(fd, _MAX_KEY_FILE + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        _fail_os(path, "read", exc)
    finally:
        os.close(fd)
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretKeyError(
            f"the secret key file {path} does not hold a key"
            f" (it must be {KEY_BYTES} random bytes written as base64)",
            path=path,
        )
    return key


def _create_key_file(path: str, key: bytes) -> bool:
    """Write ``key`` to ``path`` unless a file is there already; True when this call made it.

    The key is written to a private temporary file, flushed to disk, then hard-linked to
    ``path``: a link never replaces a file, and the name appears only once the key is complete,
    so a process that loses the race reads a whole key, never an empty file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    text = base64.b64encode(key) + b"\n"
    try:
        _make_private_folder(folder)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            _write_new(tmp, text)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                # No hard links here: create the name exclusively and write it. A process that
                # loses the race in the moment between the two can read an empty file, and
                # refuses it as not a key; it starts fine when run again.
                if not _write_new(path, text, exist_ok=True):
                    return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        _fail_os(path, "create", exc)
    _fsync_folder(folder)
    return True


def _write_new(path: str, data: bytes, *, exist_ok: bool = False) -> bool:
    """Create ``path`` (mode 0600) holding ``data``, flushed to disk; False if it exists and
    ``exist_ok``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        if exist_ok:
            return False
        raise
    try:
        # The umask may have taken the owner's bits away; the file must be exactly 0600.
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # Losing the key loses every secret: it must be on disk before anyone relies on it.
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _make_private_folder(folder: str) -> None:
    """Make ``folder`` with mode 0700 when it does not exist; an existing one is left as it is."""
    if os.path.isdir(folder):
        return
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        return
    os.chmod(folder, 0o700)  # mkdir's mode passes through the umask


def _fsync_folder(folder: str) -> None:
    # Makes the new name durable; some file systems cannot fsync a folder, which is no error.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# What database drivers hand back for a binary column (psycopg, sqlite3, SQLAlchemy).
Blob = bytes | bytearray | memoryview


def _as_bytes(blob: Blob) -> bytes:
    # Database drivers may hand back a memoryview or bytearray; bytes(5) would make zeros.
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError(f"a sealed value is bytes, not {type(blob).__name__}")
    return bytes(blob)


def _secret_aad(name: str) -> bytes:
    # surrogatepass: any str names a secret here; which names are allowed is the caller's rule.
    return _SECRET_AAD + name.encode("utf-8", "surrogatepass")


class SecretBox:
    """Seals and opens secret values with one 32-byte key (AES-256-GCM)."""

    def __init__(self, key: bytes | bytearray) -> None:
        """Raises ValueError unless ``key`` is 32 bytes (see :func:`load_key`)."""
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
            raise ValueError(f"a secret key is {KEY_BYTES} bytes, not {size}")
        self._aead = AESGCM(bytes(key))
        self._key_id = hashlib.sha256(_KEY_ID_LABEL + bytes(key)).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self._key_id!r})"

    def __reduce__(self) -> NoReturn:
        # A pickled box would carry the key into caches, object stores or logs.
        raise TypeError("a SecretBox holds the secret key and is never pickled")

    @property
    def key_id(self) -> str:
        """A short public fingerprint of the key (16 hex digits), safe to show and store: it
        tells keys apart without revealing anything about them."""
        return self._key_id

    def seal(self, name: str, value: str) -> bytes:
        """``value`` encrypted for the secret ``name``, with a fresh random nonce.

        Raises ValueError when ``value`` is not Unicode text (a lone surrogate), which no step
        could be given as an environment variable.
        """
        try:
            plain = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"the value of secret {name!r} is not valid Unicode text"
                " (it holds a lone surrogate)"
            ) from None
        return self._seal(plain, _secret_aad(name))

    def open(self, name: str, blob: Blob) -> str:
        """The value sealed in ``blob`` for the secret ``name``.

        Raises :class:`SecretKeyError` when the blob was sealed with another key, for another
        name, or was changed since.
        """
        data = _as_bytes(blob)
        if len(data) < _HEADER_BYTES + _TAG_BYTES:
            raise SecretKeyError(
                f"secret {name!r} is not a sealed value (it is only {len(data)} bytes)", name=name
            )
        if data[0] != _VERSION:
            raise SecretKeyError(
                f"secret {name!r} is sealed in an unknown format (version {data[0]});"
                " a newer flowray may have written it",
                name=name,
            )
        plain = self._open(data, _secret_aad(name))
        if plain is None:
            raise SecretKeyError(
                f"secret {name!r} was not encrypted with this key (key id {self._key_id}),"
                " or its stored value was changed",
                name=name,
            )
        return plain.decode("utf-8")

    def canary(self) -> bytes:
        """A known text sealed with this key, for the caller to keep beside the secrets."""
        return self._seal(_CANARY_TEXT, _CANARY_AAD)

    def check_canary(self, blob: Blob) -> bool:
        """True when ``blob`` is a canary made with this key; False for any other bytes."""
        data = _as_bytes(blob)
        if len(data) < _HEADER_BYTES + _TAG_BYTES or data[0] != _VERSION:
            return False
        return self._open(data, _CANARY_AAD) == _CANARY_TEXT

    def _seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return bytes([_VERSION]) + nonce + self._aead.encrypt(nonce, plain, aad)

    def _open(self, data: bytes, aad: bytes) -> bytes | None:
        """The plain text of a version-1 blob; None when it does not authenticate."""
        try:
            return self._aead.decrypt(data[1:_HEADER_BYTES], data[_HEADER_BYTES:], aad)
        except InvalidTag:
            return None


def rotate(
    rows: Iterable[tuple[str, Blob]], *, old: SecretBox, new: SecretBox
) -> list[tuple[str, bytes]]:
    """Every ``(name, blob)`` opened with ``old`` and sealed again with ``new``, in order.

    All rows are opened before anything is sealed: when one does not open, this raises
    :class:`SecretKeyError` naming that secret and returns nothing, so the caller writes nothing.
    """
    values: list[tuple[str, str]] = []
    for name, blob in rows:
        try:
            values.append((name, old.open(name, blob)))
        except SecretKeyError as exc:
            raise SecretKeyError(
                f"cannot rotate the secret key: {exc.message}; nothing was changed", name=name
            ) from None
    return [(name, new.seal(name, value)) for name, value in values]
