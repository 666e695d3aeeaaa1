"""Pinning a flow's git actions: each tag resolved to a commit once per run, fetched, loaded.

:class:`ActionPinner` is what validation calls for every git action it meets (see
``flowray.spec.validate.GitActionLoader``): it parses the reference with the project's actions
configuration, resolves and fetches it through the SHA-keyed cache (one round trip per distinct
reference), and loads its action file, whose validated data is kept beside the cache entry so
that later runs read it without pydantic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flowray.actions import (
    ActionCache,
    ActionError,
    ActionRef,
    ActionsConfig,
    PinnedAction,
    parse_ref,
)
from flowray.spec.diagnostics import Diagnostic
from flowray.spec.fingerprint import code_fingerprint
from flowray.spec.types import ActionData
from flowray.store.fs import write_json_atomic


@dataclass(frozen=True)
class GitAction:
    """A pinned git action, ready to run: where its files are and what its action file says."""

    written: Any  # the reference as the flow wrote it (string or map)
    key: str
    display: str
    sha: str
    path: str
    data: ActionData


def _cached_data_file(pinned: PinnedAction) -> str:
    """Where the validated action file of ``pinned`` is kept: one per (sub-folder, file) of
    the commit, since actions in several folders of one repository share the entry, and per
    validation code: data another flowray validated may lack keys this one reads."""
    ref = pinned.ref
    which = hashlib.sha256(f"{ref.subdir or ''}\0{ref.file or ''}".encode()).hexdigest()[:16]
    code = hashlib.sha256(code_fingerprint().encode()).hexdigest()[:12]
    return os.path.join(pinned.entry_dir, f"action.{which}.{code}.json")


class ActionPinner:
    """Resolves, fetches and loads git actions for one run (or one ``validate``)."""

    def __init__(
        self,
        config: ActionsConfig,
        *,
        on_event: Callable[[str], None] | None = None,
        flow: str | None = None,
    ) -> None:
        self.config = config
        self.cache = ActionCache(config.cache_dir)
        self.on_event = on_event
        self.flow = flow  # named in the hint of an offline miss
        self.pins: dict[str, PinnedAction] = {}
        self.failed: dict[str, ActionError] = {}  # a reference that failed is not tried again
        self.loaded: dict[str, GitAction] = {}

    def key_of(self, written: Any) -> str:
        """The cache key of a reference as written (equal for forms naming the same thing)."""
        return parse_ref(written, self.config).key

    def resolve(self, written: Sequence[Any]) -> dict[str, PinnedAction]:
        """Pin every reference in ``written`` at once (distinct ones resolved in parallel)."""
        refs = [parse_ref(w, self.config) for w in written]
        for r in refs:
            if r.key in self.failed:
                raise self.failed[r.key]
        todo = list({r.key: r for r in refs if r.key not in self.pins}.values())
        if len(todo) > 1:
            # Together first (in parallel); on a failure, one by one below to tell them apart.
            with contextlib.suppress(ActionError):
                self._resolve(todo)
        for r in todo:
            if r.key not in self.pins:
                try:
                    self._resolve([r])
                except ActionError as exc:
                    self.failed[r.key] = exc
                    raise
        return {r.key: self.pins[r.key] for r in refs}

    def _resolve(self, refs: Sequence[ActionRef]) -> None:
        self.pins.update(self.cache.resolve(
            refs, offline=self.config.offline, on_event=self.on_event, flow=self.flow
        ))

    def prefetch(self, written: Sequence[Any]) -> None:
        """Resolve these references together, ahead of validation; failures are kept for the
        step that uses them to report."""
        valid = []
        for w in written:
            try:
                parse_ref(w, self.config)
            except ActionError:
                continue
            valid.append(w)
        with contextlib.suppress(ActionError):
            self.resolve(valid)

    def __call__(self, written: Any) -> tuple[ActionData | None, str | None, list[Diagnostic]]:
        """The loader validation calls: (action data or None, why not, the action's problems)."""
        try:
            ref = parse_ref(written, self.config)
            pinned = self.resolve([written])[ref.key]
        except ActionError as exc:
            return None, str(exc), []
        return self.load(written, pinned)

    def load(
        self, written: Any, pinned: PinnedAction
    ) -> tuple[ActionData | None, str | None, list[Diagnostic]]:
        ref = pinned.ref
        cached = _cached_data_file(pinned)
        try:
            with open(cached, encoding="utf-8") as fh:
                data: ActionData = json.load(fh)
        except (OSError, ValueError):
            data_or_none, problem, diagnostics = self._validate(pinned)
            if data_or_none is None:
                return None, problem, diagnostics
            data = data_or_none
            _write_json(cached, data)
        self.loaded[ref.key] = GitAction(written, ref.key, ref.display(), pinned.sha,
                                         pinned.path, data)
        return data, None, []

    def _validate(
        self, pinned: PinnedAction
    ) -> tuple[ActionData | None, str | None, list[Diagnostic]]:
        from flowray.spec import FlowError, load_action

        ref = pinned.ref
        # (the cache already refused a commit without the action file)
        shown = f"{ref.display()}@{pinned.sha[:7]}" if ref.tag is None else ref.display()
        try:
            data = load_action(pinned.path, file=ref.file, shown=shown)
        except FlowError as exc:
            return None, f"action '{ref.display()}' is invalid (see the errors in '{shown}')", [
                d for d in exc.diagnostics
            ]
        return data, None, []


class LazyGitActions:
    """The validation hook for git actions (``flowray.spec.validate.GitActionLoader``), making
    the run's pinner (and so reading the actions configuration) only if the flow has git
    actions."""

    def __init__(self, get_pinner: Callable[[], ActionPinner]) -> None:
        self.get_pinner = get_pinner

    def __call__(self, written: Any) -> tuple[ActionData | None, str | None, list[Diagnostic]]:
        return self.get_pinner()(written)

    def prefetch(self, written: list[Any]) -> None:
        if written:
            self.get_pinner().prefetch(written)


def _write_json(path: str, data: Any) -> None:
    with contextlib.suppress(OSError):  # only costs speed next time
        write_json_atomic(path, data)
