"""What a git action reference may hand to git, checked before git ever sees it (names,
owners, tags, files, URLs), and git URLs shown without their credentials.

Shared by the references (``refs.py``), the configuration (``config.py``), the cache and the
git module; it imports nothing of flowray, so none of them depends on another for these.
"""

from __future__ import annotations

import re

_PART = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_TAG = re.compile(r"^[A-Za-z0-9_][^\s~^:?*\[\\\x00-\x1f\x7f]*$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
_TRANSPORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP = re.compile(r"^(?:[^@/:\s]+@)?[^@/:\s]+:")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
_SCHEMES = ("https", "http", "git", "ssh", "git+ssh", "ssh+git", "file")
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")


# -- checks


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
    if not normal_path(file):
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


def normal_path(path: str) -> str:
    """``path`` without empty and ``.`` parts."""
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
