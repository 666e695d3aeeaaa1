"""flowray.service.secretbox: the key file, sealing and opening secrets, the canary, rotation.

Everything here is real: real AES-GCM, real files and modes, real processes racing to create the
key file.
"""

from __future__ import annotations

import base64
import os
import pickle
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flowray.service.secretbox import SecretBox, SecretKeyError, load_key, rotate

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
KEY_ID_A = SecretBox(KEY_A).key_id
KEY_ID_B = SecretBox(KEY_B).key_id
# The blob layout: version byte, 12-byte nonce, ciphertext, 16-byte tag.
HEADER, TAG = 13, 16


def not_encrypted(name: str, key_id: str) -> str:
    return (f"secret {name!r} was not encrypted with this key (key id {key_id}),"
            " or its stored value was changed")


# -- sealing and opening ----------------------------------------------------------------------

ONE_MIB = "".join(random.Random(7).choice("abcdefghijklmnopqrstuvwxyz0123456789\n")
                  for _ in range(1024 * 1024))


@pytest.mark.parametrize(
    "value",
    [
        "hunter2",
        "",
        "pässwörd ✓ 🔑 日本語 \u200b",
        "line one\nline two\r\n\ttabbed\n\n",
        "-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n",
        ONE_MIB,
    ],
    ids=["plain", "empty", "unicode", "multi-line", "pem", "1MiB"],
)
def test_round_trip(value: str) -> None:
    box = SecretBox(KEY_A)
    blob = box.seal("TOKEN", value)
    assert isinstance(blob, bytes)
    assert blob[0] == 1
    assert len(blob) == HEADER + len(value.encode("utf-8")) + TAG
    assert box.open("TOKEN", blob) == value
    # A second box on the same key (another process, a restart) opens it too.
    assert SecretBox(KEY_A).open("TOKEN", blob) == value


def test_open_takes_what_database_drivers_return() -> None:
    box = SecretBox(KEY_A)
    blob = box.seal("N", "v")
    assert box.open("N", memoryview(blob)) == "v"
    assert box.open("N", bytearray(blob)) == "v"
    with pytest.raises(TypeError) as info:
        box.open("N", blob.decode("latin-1"))  # type: ignore[arg-type]
    assert str(info.value) == "a sealed value is bytes, not str"


def test_ciphertext_holds_neither_the_value_nor_its_encodings() -> None:
    value = "correct horse battery staple " * 4
    raw = value.encode("utf-8")
    blob = SecretBox(KEY_A).seal("PASSWORD", value)
    for form in (raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode(),
                 b"correct horse", b"PASSWORD"):
        assert form not in blob
    # Nor does any piece of it, in base64 written at any of the three alignments.
    for start in range(3):
        assert base64.b64encode(raw[start:])[4:40] not in blob
    assert KEY_A not in blob


def test_wrong_key() -> None:
    blob = SecretBox(KEY_A).seal("DB_PASSWORD", "s3cret")
    with pytest.raises(SecretKeyError) as info:
        SecretBox(KEY_B).open("DB_PASSWORD", blob)
    assert str(info.value) == (
        f"secret 'DB_PASSWORD' was not encrypted with this key (key id {KEY_ID_B}),"
        " or its stored value was changed"
    )
    assert info.value.name == "DB_PASSWORD"
    assert info.value.path is None


def test_swapped_names_do_not_open() -> None:
    box = SecretBox(KEY_A)
    prod, dev = box.seal("PROD_KEY", "prod value"), box.seal("DEV_KEY", "dev value")
    # Someone with database access swaps the rows to make a dev flow read the production value.
    with pytest.raises(SecretKeyError) as info:
        box.open("DEV_KEY", prod)
    assert str(info.value) == not_encrypted("DEV_KEY", KEY_ID_A)
    with pytest.raises(SecretKeyError) as info:
        box.open("PROD_KEY", dev)
    assert str(info.value) == not_encrypted("PROD_KEY", KEY_ID_A)
    # Names differ by case or by a trailing byte: still different secrets.
    with pytest.raises(SecretKeyError):
        box.open("prod_key", prod)
    with pytest.raises(SecretKeyError):
        box.open("PROD_KEY\0", prod)


def test_tampering_with_any_byte_is_caught() -> None:
    box = SecretBox(KEY_A)
    blob = box.seal("API", "a value of some length")
    regions = {"version": range(0, 1), "nonce": range(1, HEADER),
               "ciphertext": range(HEADER, len(blob) - TAG), "tag": range(len(blob) - TAG, len(blob))}
    assert [len(r) for r in regions.values()] == [1, 12, 22, 16]
    for region, positions in regions.items():
        for i in positions:
            for flip in (0x01, 0x80, 0xFF):
                changed = bytearray(blob)
                changed[i] ^= flip
                with pytest.raises(SecretKeyError) as info:
                    box.open("API", bytes(changed))
                if region == "version":
                    assert str(info.value) == (
                        f"secret 'API' is sealed in an unknown format (version {1 ^ flip});"
                        " a newer flowray may have written it"
                    )
                else:
                    assert str(info.value) == not_encrypted("API", KEY_ID_A), (region, i)


def test_truncated_and_extended_blobs() -> None:
    box = SecretBox(KEY_A)
    blob = box.seal("API", "value")
    for cut in range(HEADER + TAG):
        with pytest.raises(SecretKeyError) as info:
            box.open("API", blob[:cut])
        assert str(info.value) == f"secret 'API' is not a sealed value (it is only {cut} bytes)"
    for changed in (blob[:-1], blob + b"\0", blob[:HEADER] + blob[HEADER + 1:]):
        with pytest.raises(SecretKeyError) as info:
            box.open("API", changed)
        assert str(info.value) == not_encrypted("API", KEY_ID_A)


def test_every_seal_has_its_own_nonce() -> None:
    box = SecretBox(KEY_A)
    blobs = [box.seal("SAME", "same value") for _ in range(2000)]
    assert len({b[1:HEADER] for b in blobs}) == len(blobs)
    assert len(set(blobs)) == len(blobs)
    assert all(box.open("SAME", b) == "same value" for b in blobs[:50])


def test_a_value_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        SecretBox(KEY_A).seal("BROKEN", "half an emoji \ud83d")
    assert str(info.value) == (
        "the value of secret 'BROKEN' is not valid Unicode text (it holds a lone surrogate)"
    )


def test_names_of_any_text_seal_and_open() -> None:
    box = SecretBox(KEY_A)
    for name in ("", "ünï ✓", "odd \udc80 name", "x" * 10_000):
        assert box.open(name, box.seal(name, "v")) == "v"


def test_key_must_be_32_bytes() -> None:
    for key, shown in ((bytes(31), "31"), (bytes(33), "33"), (b"", "0")):
        with pytest.raises(ValueError) as info:
            SecretBox(key)
        assert str(info.value) == f"a secret key is 32 bytes, not {shown}"
    with pytest.raises(ValueError) as info:
        SecretBox(base64.b64encode(KEY_A).decode())  # type: ignore[arg-type]
    assert str(info.value) == "a secret key is 32 bytes, not str"
    assert SecretBox(bytearray(KEY_A)).key_id == KEY_ID_A


def test_key_id_is_a_short_public_fingerprint() -> None:
    assert len(KEY_ID_A) == 16
    assert int(KEY_ID_A, 16) >= 0
    assert SecretBox(KEY_A).key_id == KEY_ID_A
    assert KEY_ID_A != KEY_ID_B
    assert KEY_ID_A not in KEY_A.hex()
    assert repr(SecretBox(KEY_A)) == f"SecretBox(key_id={KEY_ID_A!r})"


def test_a_box_is_never_pickled() -> None:
    with pytest.raises(TypeError) as info:
        pickle.dumps(SecretBox(KEY_A))
    assert str(info.value) == "a SecretBox holds the secret key and is never pickled"


def test_error_keeps_its_data_through_pickle() -> None:
    error = SecretKeyError("message", path="/k", name="N")
    back = pickle.loads(pickle.dumps(error))
    assert (str(back), back.path, back.name) == ("message", "/k", "N")


# -- the canary -------------------------------------------------------------------------------

def test_canary() -> None:
    a, b = SecretBox(KEY_A), SecretBox(KEY_B)
    canary = a.canary()
    assert a.check_canary(canary)
    assert SecretBox(KEY_A).check_canary(canary)
    assert not b.check_canary(canary)
    assert a.canary() != canary  # a fresh nonce each time
    assert a.check_canary(memoryview(a.canary()))
    for i in range(len(canary)):
        changed = bytearray(canary)
        changed[i] ^= 0x01
        assert not a.check_canary(bytes(changed))
    for junk in (b"", b"\x01", canary[:-1], canary + b"x", bytes(64)):
        assert not a.check_canary(junk)


def test_canary_and_secrets_cannot_stand_in_for_each_other() -> None:
    box = SecretBox(KEY_A)
    # A secret that holds the canary's text, under any name, is still not the canary.
    for name in ("", "canary", "flowray/canary/v1"):
        assert not box.check_canary(box.seal(name, "flowray secret key canary"))
        with pytest.raises(SecretKeyError) as info:
            box.open(name, box.canary())
        assert str(info.value) == not_encrypted(name, KEY_ID_A)


# -- rotation ---------------------------------------------------------------------------------

def test_rotate() -> None:
    old, new = SecretBox(KEY_A), SecretBox(KEY_B)
    values = {"A": "alpha", "B": "", "C": "ünï\ncode"}
    rows = [(name, old.seal(name, value)) for name, value in values.items()]
    rotated = rotate(iter(rows), old=old, new=new)
    assert [name for name, _ in rotated] == ["A", "B", "C"]
    for name, blob in rotated:
        assert new.open(name, blob) == values[name]
        with pytest.raises(SecretKeyError):
            old.open(name, blob)
    assert rotate([], old=old, new=new) == []


def test_rotate_names_the_first_secret_the_old_key_cannot_open() -> None:
    old, new, other = SecretBox(KEY_A), SecretBox(KEY_B), SecretBox(os.urandom(32))
    rows = [("GOOD", old.seal("GOOD", "1")), ("STRAY", other.seal("STRAY", "2")),
            ("ALSO_STRAY", other.seal("ALSO_STRAY", "3"))]
    with pytest.raises(SecretKeyError) as info:
        rotate(rows, old=old, new=new)
    assert str(info.value) == (
        "cannot rotate the secret key: secret 'STRAY' was not encrypted with this key"
        f" (key id {KEY_ID_A}), or its stored value was changed; nothing was changed"
    )
    assert info.value.name == "STRAY"
    # The rows given are untouched: the caller still has the blobs the old key made.
    assert old.open("GOOD", rows[0][1]) == "1"


# -- the key file -----------------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "flowray" / "secret.key"
    key = load_key(str(path))
    assert len(key) == 32
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    text = path.read_text()
    assert text.endswith("\n") and len(text) == 45
    assert base64.b64decode(text) == key
    assert sorted(os.listdir(path.parent)) == ["secret.key"]  # no temporary file left
    assert load_key(str(path)) == key
    assert load_key(str(path), create=False) == key


def test_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    load_key(str(tmp_path / "secret.key"))
    assert mode(tmp_path) == 0o755
    assert mode(tmp_path / "secret.key") == 0o600


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    for umask in (0o000, 0o277):
        path = tmp_path / f"u{umask:o}" / "secret.key"
        old = os.umask(umask)
        try:
            load_key(str(path))
        finally:
            os.umask(old)
        assert (mode(path), mode(path.parent)) == (0o600, 0o700)


def test_a_key_file_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    load_key(str(path))
    for bits in (0o644, 0o640, 0o604, 0o620, 0o660, 0o601, 0o777):
        path.chmod(bits)
        with pytest.raises(SecretKeyError) as info:
            load_key(str(path))
        assert str(info.value) == (
            f"the secret key file {path} is open to other users (mode {bits:04o});"
            f" run: chmod 600 {path}"
        )
        assert info.value.path == str(path)


def test_owner_only_modes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    key = load_key(str(path))
    for bits in (0o400, 0o600, 0o700):
        path.chmod(bits)
        assert load_key(str(path)) == key


def test_the_chmod_advice_quotes_the_path(tmp_path: Path) -> None:
    path = tmp_path / "my data" / "secret.key"
    load_key(str(path))
    path.chmod(0o644)
    with pytest.raises(SecretKeyError) as info:
        load_key(str(path))
    assert str(info.value) == (
        f"the secret key file {path} is open to other users (mode 0644);"
        f" run: chmod 600 '{path}'"
    )


def test_missing_file_without_create(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "secret.key"
    with pytest.raises(SecretKeyError) as info:
        load_key(str(path), create=False)
    assert str(info.value) == f"the secret key file {path} does not exist"
    assert not path.parent.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"not base64 at all!\n", base64.b64encode(bytes(16)) + b"\n",
     base64.b64encode(bytes(33)), base64.b64encode(bytes(32))[:-2], b"\xff\xfe" * 30,
     base64.urlsafe_b64encode(b"\xfb" * 32), bytes(range(32)),
     base64.b64encode(bytes(32)) * 200],
    ids=["empty", "newline", "text", "16-bytes", "33-bytes", "cut", "binary", "urlsafe",
         "raw-key", "huge"],
)
def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(SecretKeyError) as info:
        load_key(str(path))
    assert str(info.value) == (
        f"the secret key file {path} does not hold a key"
        " (it must be 32 random bytes written as base64)"
    )
    assert path.read_bytes() == content  # never overwritten


def test_key_text_may_be_surrounded_by_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("  \n" + base64.b64encode(KEY_A).decode() + "\r\n\n")
    path.chmod(0o600)
    assert load_key(str(path)) == KEY_A


def test_something_else_at_the_key_path(tmp_path: Path) -> None:
    folder = tmp_path / "secret.key"
    folder.mkdir(mode=0o700)
    with pytest.raises(SecretKeyError) as info:
        load_key(str(folder))
    assert str(info.value) == f"the secret key file {folder} is not a regular file"

    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)  # opening it must not wait for a writer
    with pytest.raises(SecretKeyError) as info:
        load_key(str(fifo))
    assert str(info.value) == f"the secret key file {fifo} is not a regular file"

    plain = tmp_path / "a-file"
    plain.write_text("")
    inside = plain / "secret.key"
    with pytest.raises(SecretKeyError) as info:
        load_key(str(inside))
    assert str(info.value) == f"cannot read the secret key file {inside}: Not a directory"


def test_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    # The key's folder is a symlink to nowhere: nothing to read, and nothing can be created.
    (tmp_path / "data").symlink_to(tmp_path / "gone" / "data")
    path = tmp_path / "data" / "secret.key"
    with pytest.raises(SecretKeyError) as info:
        load_key(str(path))
    assert str(info.value) == (
        f"cannot create the secret key file {path}: No such file or directory"
    )
    assert info.value.path == str(path)
    assert not (tmp_path / "gone").exists()


def test_file_systems_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some file systems (FAT, some network mounts) refuse hard links; none is mounted here, so
    # os.link is replaced by one that fails as they do.
    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "a" / "secret.key"
    key = load_key(str(path))
    assert base64.b64decode(path.read_text()) == key
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    assert sorted(os.listdir(path.parent)) == ["secret.key"]
    assert load_key(str(path)) == key

    # Another process writes the file between this one's look and its own write: its key wins.
    other = tmp_path / "b" / "secret.key"

    def link_lost(src: str, dst: str) -> None:
        other.write_text(base64.b64encode(KEY_B).decode() + "\n")
        other.chmod(0o600)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", link_lost)
    assert load_key(str(other)) == KEY_B
    assert sorted(os.listdir(other.parent)) == ["secret.key"]


def test_a_symlinked_key_file_is_read(tmp_path: Path) -> None:
    # Mounted secrets (Kubernetes) are symlinks to the real file.
    real = tmp_path / "real.key"
    key = load_key(str(real))
    link = tmp_path / "secret.key"
    link.symlink_to(real)
    assert load_key(str(link)) == key


def test_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    key = load_key("secret.key")
    assert base64.b64decode((tmp_path / "secret.key").read_text()) == key


RACERS, ROUNDS = 4, 25
# A racing process: imports first and says so, then for each folder the test sends it (the same
# line to all racers at once) loads (creates) the key there and answers with it.
RACER = """
import sys
from flowray.service.secretbox import load_key
print("ready", flush=True)
for line in sys.stdin:
    try:
        print(load_key(line.strip()).hex(), flush=True)
    except Exception as exc:
        print("error:", repr(exc), flush=True)
"""


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", RACER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(RACERS)]
    try:
        assert [p.stdout.readline() for p in procs if p.stdout] == ["ready\n"] * RACERS
        for n in range(ROUNDS):
            path = tmp_path / str(n) / "secret.key"
            # All racers are blocked reading; the line reaches each within microseconds.
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{path}\n")
                p.stdin.flush()
            keys = {p.stdout.readline().strip() for p in procs if p.stdout}
            assert keys == {base64.b64decode(path.read_text()).hex()}, n
            assert sorted(os.listdir(path.parent)) == ["secret.key"]
            assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
        for p in procs:
            p.wait()
            if p.stdout:
                p.stdout.close()
    assert [p.returncode for p in procs] == [0] * RACERS
