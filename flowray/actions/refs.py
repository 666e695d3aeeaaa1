"""Git action references: ``owner/repo@tag`` and ``{name, tag, git, file}``, checked before git
ever sees them, and git URLs shown without their credentials."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowray.actions.errors import ActionError

if TYPE_CHECKING:
    from flowray.actions.config import ActionsConfig

# The action file a repository (or its sub-folder) must hold when ``file:`` does not say otherwise.
ACTION_FILES = ("action-datatorch.yaml", "action-datatorch.yml")

_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_PART = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_TAG = re.compile(r"^[A-Za-z0-9_][^\s~^:?*\[\\\x00-\x1f\x7f]*$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
_TRANSPORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP = re.compile(r"^(?:[^@/:\s]+@)?[^@/:\s]+:")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
_SCHEMES = ("https", "http", "git", "ssh", "git+ssh", "ssh+git", "file")
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
_OBJECT_KEYS = ("name", "tag", "git", "file")
_LATEST = "latest"


def is_sha(value: str) -> bool:
    """A full 40-hex commit id, taken as the commit itself without asking the server."""
    return bool(_SHA.match(value))


@dataclass(frozen=True)
class ActionRef:
    """A git action as a step names it, with the URL git will be given."""

    name: str  # as written: "owner/repo" (a sub-folder too: "owner/repo/path")
    repo: str  # after the per-owner map: "datatorch-actions/python"
    tag: str | None  # None: the default branch (``@latest`` or no tag)
    url: str = field(repr=False)  # full git URL; may hold credentials, never shown
    file: str | None  # action file name (a path inside the action folder), None: the default
    key: str  # canonical and credential-free; one per (url, tag, sub-folder, file)
    subdir: str | None = None  # the action folder inside the repository, None: its root
    git_form: bool = False  # the object form with ``git:``: shown by its URL

    @property
    def safe_url(self) -> str:
        """The repository URL without user, password, token or query."""
        return strip_credentials(self.url)

    def display(self) -> str:
        """``owner/repo@tag``, or for the object form with ``git:`` the URL without credentials
        and ``@tag``."""
        base = self.safe_url if self.git_form else self.name
        if self.git_form and self.subdir:
            base = f"{base}/{self.subdir}"
        return f"{base}@{self.tag}" if self.tag else base

    def repo_display(self) -> str:
        """The repository alone (no tag): ``owner/repo`` or the URL without credentials."""
        return self.safe_url if self.git_form else self.repo_name()

    def repo_name(self) -> str:
        parts = self.name.split("/")
        return "/".join(parts[:2])

    def where(self) -> str:
        """``display()`` followed by the URL it stands for, when the URL is not shown already."""
        return self.display() if self.git_form else f"{self.display()} ({self.safe_url})"


def is_git_ref(value: object) -> bool:
    """Whether a step's ``action`` names a git action (not ``./local`` nor ``docker://``)."""
    if isinstance(value, Mapping):
        return True
    return isinstance(value, str) and not value.startswith(("./", "docker://"))


def parse_ref(value: str | Mapping[str, Any], config: ActionsConfig) -> ActionRef:
    """Check a git action reference and turn it into the URL, tag and folder git will be given.

    Raises ActionError for anything that could reach git as an option, leave the repository,
    or is not a valid name, tag, URL or file.
    """
    if isinstance(value, str):
        return _parse_string(value, config)
    if isinstance(value, Mapping):
        return _parse_map(value, config)
    raise ActionError(
        f"invalid action {value!r}: expected 'owner/repo@tag' or a map with name, tag, git, file"
    )


def _parse_string(value: str, config: ActionsConfig) -> ActionRef:
    shown = f"'{scrub(value)}'"
    if value.startswith(("./", "docker://")):
        raise ActionError(f"invalid action {shown}: not a git action")
    name, sep, tag_text = value.partition("@")
    problem = name_problem(name)
    if problem is None and sep:
        problem = tag_problem(tag_text, after_at=True)
    if problem:
        raise ActionError(f"invalid action {shown}: {problem}")
    tag = None if not sep or tag_text == _LATEST else tag_text
    return _build(name, tag, None, None, config)


def _parse_map(value: Mapping[str, Any], config: ActionsConfig) -> ActionRef:
    shown = _show_map(value)

    def fail(problem: str) -> ActionError:
        return ActionError(f"invalid action {shown}: {problem}")

    unknown = [str(k) for k in value if k not in _OBJECT_KEYS]
    if unknown:
        raise fail(
            f"unknown key {', '.join(repr(k) for k in unknown)} (expected name, tag, git, file)"
        )
    for key in _OBJECT_KEYS:
        item = value.get(key)
        if item is not None and not isinstance(item, str):
            raise fail(f"'{key}' must be a string, not {type(item).__name__}")
    name = value.get("name")
    if not name:
        raise fail("'name' is required (owner/repo)")
    problem = name_problem(name)
    tag: str | None = value.get("tag")
    if problem is None and tag is not None:
        problem = tag_problem(tag, after_at=False)
    git: str | None = value.get("git")
    if problem is None and git is not None:
        problem = url_problem(git)
    file: str | None = value.get("file")
    if problem is None and file is not None:
        problem = file_problem(file)
    if problem:
        raise fail(problem)
    if tag == _LATEST:
        tag = None
    return _build(name, tag, git, _normal_path(file) if file is not None else None, config)


def _build(
    name: str, tag: str | None, git: str | None, file: str | None, config: ActionsConfig
) -> ActionRef:
    parts = name.split("/")
    owner, repo_part, sub = parts[0], parts[1], parts[2:]
    repo = f"{config.owners.get(owner, owner)}/{repo_part}"
    url = git if git is not None else f"{config.base.rstrip('/')}/{repo}"
    subdir = "/".join(sub) or None
    key = f"{canonical_url(url)} @{tag or _LATEST}"
    if subdir:
        key += f" path={subdir}"
    if file:
        key += f" file={file}"
    return ActionRef(
        name=name, repo=repo, tag=tag, url=url, file=file, key=key, subdir=subdir,
        git_form=git is not None,
    )


# -- checks, shared with the configuration


def name_problem(name: str) -> str | None:
    """Why ``name`` is not ``owner/repo`` (with an optional ``/sub/folder``), or None."""
    if not name:
        return "the name is empty (expected owner/repo)"
    if name.startswith("-"):
        return "a name must not start with '-'"
    if name.startswith("/"):
        return "a name must be owner/repo, not an absolute path"
    parts = name.split("/")
    if len(parts) < 2:
        return "expected owner/repo"
    for part in parts:
        if part == "":
            return "a name must not have empty parts ('//' or a trailing '/')"
        if part in (".", ".."):
            return "a name must not contain '.' or '..' parts"
        if not _PART.match(part):
            return (
                f"'{part}' may hold only letters, digits, '_', '.' and '-' "
                "(and must not start with '-')"
            )
    return None


def owner_problem(owner: str) -> str | None:
    """Why ``owner`` (a value of the per-owner map) cannot stand for an owner, or None."""
    problem = name_problem(f"{owner}/x")
    return problem.replace("a name", "an owner") if problem else None


def tag_problem(tag: str, *, after_at: bool) -> str | None:
    """Why ``tag`` (a tag, branch or commit) cannot be handed to git, or None."""
    if not tag:
        return "the tag after '@' is empty" if after_at else "the tag is empty"
    if tag.startswith("-"):
        return "a tag must not start with '-'"
    if ".." in tag:
        return "a tag must not contain '..'"
    if (
        not _TAG.match(tag)
        or "@{" in tag
        or "//" in tag
        or tag.endswith((".lock", "/", "."))
    ):
        return f"'{tag}' is not a valid git tag or branch name"
    return None


def file_problem(file: str) -> str | None:
    """Why ``file`` (the action file, relative to the action folder) is not a plain path
    inside the repository, or None."""
    if not file:
        return "'file' is empty"
    if file.startswith("-"):
        return "'file' must not start with '-'"
    if file.startswith("/"):
        return f"'file' must be a path inside the repository, not the absolute path '{file}'"
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in file):
        return "'file' must not contain spaces or control characters"
    if ".." in file.split("/"):
        return f"'file' must not leave the repository ('{file}')"
    if not _normal_path(file):
        return "'file' names no file"
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a git URL flowray will hand to git, or None."""
    shown = scrub(url)
    if not url:
        return "the git URL is empty"
    if url.startswith("-"):
        return f"a git URL must not start with '-' ('{shown}')"
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in url):
        return f"a git URL must not contain spaces or control characters ('{shown}')"
    m = _URL.match(url)
    if m:
        if m.group("scheme").lower() not in _SCHEMES:
            return (
                f"unsupported git URL scheme '{m.group('scheme')}' in '{shown}' "
                f"(expected {', '.join(s + '://' for s in _SCHEMES)})"
            )
        if not m.group("rest").strip("/"):
            return f"the git URL '{shown}' names no repository"
        return None
    if _TRANSPORT.match(url):
        return f"git transports like '{url.split('::', 1)[0]}::' are not allowed ('{shown}')"
    if url.startswith("/") or _SCP.match(url):
        return None
    return (
        f"'{shown}' is not a git URL (expected https://, git://, ssh://, file://, "
        "user@host:path or an absolute path)"
    )


def _normal_path(path: str) -> str:
    return "/".join(p for p in path.split("/") if p not in ("", "."))


# -- credentials


def strip_credentials(url: str) -> str:
    """``url`` with no password, no token, no query: safe to show and to use as a cache key.

    ``https://user:token@host/x?t=1`` becomes ``https://host/x``; an ssh user (``ssh://git@host``,
    ``git@host:x``) is kept, as it is no secret.
    """
    m = _URL.match(url)
    if not m:
        return url
    scheme, rest = m.group("scheme"), m.group("rest")
    auth, slash, path = rest.partition("/")
    if "@" in auth:
        userinfo, _, hostport = auth.rpartition("@")
        if scheme.lower() in _SSH_SCHEMES:
            auth = f"{userinfo.split(':', 1)[0]}@{hostport}"
        else:
            auth = hostport
    path = path.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{auth}{slash}{path}"


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(URL to hand to git, user name, password) for an http(s) URL with credentials; other
    URLs come back with only the password removed."""
    m = _URL.match(url)
    if not m:
        return url, None, None
    scheme, rest = m.group("scheme"), m.group("rest")
    auth, slash, path = rest.partition("/")
    if "@" not in auth:
        return url, None, None
    userinfo, _, hostport = auth.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    if scheme.lower() in ("http", "https"):
        from urllib.parse import unquote

        return (
            f"{scheme}://{hostport}{slash}{path}",
            unquote(user),
            unquote(password) if has_password else "",
        )
    if scheme.lower() in _SSH_SCHEMES:
        return f"{scheme}://{user}@{hostport}{slash}{path}", None, None
    return f"{scheme}://{hostport}{slash}{path}", None, None


def canonical_url(url: str) -> str:
    """The credential-free URL that identifies a repository in the cache (no trailing ``/`` or
    ``.git``, scheme and host in lower case)."""
    clean = strip_credentials(url).rstrip("/")
    if clean.endswith(".git"):
        clean = clean[: -len(".git")]
    m = _URL.match(clean)
    if m:
        auth, slash, path = m.group("rest").partition("/")
        user, at, host = auth.rpartition("@")
        clean = f"{m.group('scheme').lower()}://{user}{at}{host.lower()}{slash}{path}"
    return clean


def scrub(text: str) -> str:
    """``text`` with the user information of every URL in it removed."""
    return _USERINFO.sub(r"\g<scheme>", text)


def _show_map(value: Mapping[str, Any]) -> str:
    items = []
    for key, item in value.items():
        shown = strip_credentials(item) if key == "git" and isinstance(item, str) else item
        items.append(f"{key}: {scrub(str(shown))}")
    return "{" + ", ".join(items) + "}"
