"""Git action references: ``owner/repo@tag`` and ``{name, tag, git, file}`` turned into the URL,
tag and folder git will be given (the checks themselves are in ``names.py``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowray.actions.config import ActionsConfig
from flowray.actions.errors import ActionError
from flowray.actions.names import (
    canonical_url,
    file_problem,
    name_problem,
    normal_path,
    scrub,
    strip_credentials,
    tag_problem,
    url_problem,
)

_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
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
    return _build(name, tag, git, normal_path(file) if file is not None else None, config)


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


def _show_map(value: Mapping[str, Any]) -> str:
    items = []
    for key, item in value.items():
        shown = strip_credentials(item) if key == "git" and isinstance(item, str) else item
        items.append(f"{key}: {scrub(str(shown))}")
    return "{" + ", ".join(items) + "}"
