"""The action files of a run: each folder's file validated once (``flowray.spec.load_action``,
the one loader of action files), then served from memory to every step that uses it."""

from __future__ import annotations

import threading

from flowray.spec.types import ActionData


class ActionTable:
    """Validated actions of a run by folder; loads (with pydantic) only those not already known
    (the validated-flow cache hands over the local ones it holds). Thread-safe: job threads
    share one."""

    def __init__(self, known: dict[str, ActionData] | None = None) -> None:
        self._known = dict(known or {})
        self._lock = threading.Lock()

    def __call__(self, path: str, file: str | None) -> ActionData:
        with self._lock:
            hit = self._known.get(path)
            if hit is not None:
                return hit
            from flowray.spec import load_action  # pydantic: only for an action not seen yet

            data = load_action(path, file=file)
            self._known[path] = data
            return data
