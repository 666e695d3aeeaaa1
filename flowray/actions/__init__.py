"""Git-hosted actions: references, configuration, the SHA-keyed cache, shipping to nodes and
per-action virtual environments.

Importing this package imports no GitPython: only ``flowray.actions.git`` does, and only when a
commit must be fetched.
"""

from __future__ import annotations

from flowray.actions.cache import ActionCache, CacheEntry, PinnedAction
from flowray.actions.config import ActionsConfig, load_config
from flowray.actions.errors import ActionError
from flowray.actions.refs import ActionRef, is_git_ref, parse_ref
from flowray.actions.venv import ensure_venv
from flowray.spec.files import ACTION_FILES

__all__ = [
    "ACTION_FILES",
    "ActionCache",
    "ActionError",
    "ActionRef",
    "ActionsConfig",
    "CacheEntry",
    "PinnedAction",
    "ensure_venv",
    "is_git_ref",
    "load_config",
    "parse_ref",
]
