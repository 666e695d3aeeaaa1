"""The one place flowray talks to git.

``ls-remote`` (once per run and reference) is a plain ``git`` process: importing GitPython costs
more than the call itself. Fetching and materializing a commit go through GitPython, imported
the first time something must be fetched. Every call runs without prompts or credential
helpers, with ``--`` before URLs and refs, and with only the transports flowray supports;
credentials in an http(s) URL reach git through the environment (a credential helper that reads
them back), never on its command line. Nothing this module raises holds a credential.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from flowray.actions.names import scrub, split_credentials, strip_credentials


def _timeout_from_env() -> float:
    """FLOWRAY_GIT_TIMEOUT seconds (default 600); a value that is not a number of seconds more
    than 0 and at most a day is ignored rather than stopping every git operation."""
    try:
        value = float(os.environ.get("FLOWRAY_GIT_TIMEOUT", "600"))
    except ValueError:
        return 600.0
    return value if 0 < value <= 86_400 else 600.0  # NaN and infinity too


_TIMEOUT_S = _timeout_from_env()
_HEX = re.compile(r"^[0-9a-f]{40}$")
# Answers only "get", with what the environment holds; "store"/"erase" are ignored.
_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf "username=%s\\npassword=%s\\n" "$FLOWRAY_GIT_USERNAME" "$FLOWRAY_GIT_PASSWORD"; }; f'
)
# Variables that would point git at another repository or carry other configuration.
_PREFIXES = ("fatal", "error", "warning", "remote", "hint")
_BOILERPLATE = ("Could not read from remote repository", "Please make sure", "hint:")
_DROPPED = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
    "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_PREFIX", "GIT_QUARANTINE_PATH",
)


class GitFailure(Exception):
    """A git command failed; ``reason`` is git's own explanation with credentials removed."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "unreachable", "unknown-ref", "fetch", "archive", "missing-git"
        self.reason = reason


class _Remote:
    """A URL split into what git sees and the secrets it must not see on its command line."""

    def __init__(self, url: str) -> None:
        self.raw = url
        self.url, self.username, self.password = split_credentials(url)
        self.shown = strip_credentials(url)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ) if base is None else base
        for name in _DROPPED:
            env.pop(name, None)
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_ASKPASS="",
            SSH_ASKPASS="",
            GCM_INTERACTIVE="never",
            GIT_ALLOW_PROTOCOL="file:git:http:https:ssh",
            GIT_SSH_COMMAND=env.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes",
            LC_ALL="C",
            LANGUAGE="C",
        )
        # an empty value first: the user's own helpers are not asked
        config = [("credential.helper", "")]
        if self.username is not None:
            config.append(("credential.helper", _HELPER))
            env["FLOWRAY_GIT_USERNAME"] = self.username
            env["FLOWRAY_GIT_PASSWORD"] = self.password or ""
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    def explain(self, stderr: str | bytes | None) -> str:
        """git's message, the part that says why, with every credential removed."""
        text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr or ""
        text = text.replace(self.raw, self.shown).replace(self.url, self.shown)
        for secret in (self.password, self.username):
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
        messages: list[str] = []
        for raw in scrub(text).splitlines():
            line = raw.strip()
            if not line:
                continue
            word = line.split(":", 1)[0]
            if word in _PREFIXES or not messages:
                messages.append(line)
            else:  # git continues a message on the next line
                messages[-1] += " " + line
        seen: list[str] = []
        for message in messages:
            word, _, rest = message.partition(": ")
            if word in ("fatal", "error"):
                message = rest
            if word == "warning" or message.startswith(_BOILERPLATE) or message in seen:
                continue
            seen.append(message)
        return "; ".join(seen) or "git failed without saying why"


def ls_remote(url: str, tag: str | None) -> str:
    """The commit ``tag`` (a tag, else a branch; None: the default branch) names in the
    repository at ``url``: one round trip. Raises GitFailure."""
    remote = _Remote(url)
    if tag is None:
        wanted = ["HEAD"]
        patterns = ["HEAD"]
    else:
        wanted = [f"refs/tags/{tag}^{{}}", f"refs/tags/{tag}", f"refs/heads/{tag}"]
        patterns = wanted
    argv = ["git", "ls-remote", "--", remote.url, *patterns]
    try:
        proc = subprocess.run(
            argv, env=remote.env(), capture_output=True, timeout=_TIMEOUT_S,
            stdin=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
        )
    except FileNotFoundError:
        raise GitFailure("missing-git", "git is not installed (no 'git' on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitFailure("unreachable", f"no answer in {_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        raise GitFailure("unreachable", remote.explain(proc.stderr))
    found: dict[str, str] = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        sha, _, ref = line.partition("\t")
        if _HEX.match(sha):
            found.setdefault(ref, sha)
    for ref in wanted:
        if ref in found:
            return found[ref]
    raise GitFailure("unknown-ref", "no such tag or branch")


def fetch_tree(url: str, sha: str, *, workdir: str, refname: str | None) -> bytes:
    """The tree of commit ``sha`` as a tar archive, fetched shallowly (that commit only) into
    a bare repository made in ``workdir``. ``refname`` (``refs/tags/v1``, ``HEAD``) is fetched
    instead when the server refuses a commit id; it must then name ``sha``. Raises GitFailure;
    OSError where the disk is full."""
    import git as gitpython  # GitPython: only here, only when something must be fetched

    remote = _Remote(url)
    gitdir = os.path.join(workdir, "git")
    env = remote.env()
    env.update(
        GIT_DIR=gitdir,
        GIT_OBJECT_DIRECTORY=os.path.join(gitdir, "objects"),
        GIT_ALTERNATE_OBJECT_DIRECTORIES="",
    )
    cmd = gitpython.Git(workdir)

    def run(argv: Sequence[str], *, kind: str, binary: bool = False) -> Any:
        status, out, err = cmd.execute(
            ["git", *argv], with_extended_output=True, with_exceptions=False, env=env,
            stdout_as_string=not binary, kill_after_timeout=_TIMEOUT_S,
            istream=subprocess.DEVNULL,
        )
        if status != 0:
            raise GitFailure(kind, remote.explain(err))
        return out

    try:
        run(["init", "--quiet", "--bare", "--template=", gitdir], kind="fetch")
        base = ["-c", "gc.auto=0", "fetch", "--quiet", "--depth=1", "--no-tags",
                "--no-write-fetch-head", "--no-recurse-submodules", "--"]
        try:
            run([*base, remote.url, sha], kind="fetch")
            fetched = sha
        except GitFailure:
            if refname is None:
                raise
            run([*base, remote.url, f"+{refname}:refs/flowray/pinned"], kind="fetch")
            fetched = run(["rev-parse", "--verify", "refs/flowray/pinned^{commit}"],
                          kind="fetch").strip()
            if fetched != sha:
                raise GitFailure(
                    "fetch", f"{refname} moved to {fetched[:7]} while it was being fetched"
                ) from None
        data: bytes = run(["archive", "--format=tar", f"{fetched}^{{tree}}"],
                          kind="archive", binary=True)
        return data
    except gitpython.exc.GitCommandNotFound:
        raise GitFailure("missing-git", "git is not installed (no 'git' on PATH)") from None
