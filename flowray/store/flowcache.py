"""Moved; this module only forwards the old names until the modules being rewritten now
(``flowray/runtime/api.py``, ``flowray/cli/run.py``) import from the new places. Delete it then.

- ``load_flow`` (the cached wrapper): ``flowray.plan.flowcache.load_flow_cached``
- ``CachedFlow``, ``local_action_dirs``: ``flowray.plan.flowcache``
- ``ActionTable``: ``flowray.plan.actions``
- ``LazyGitActions``: ``flowray.plan.pins``
- ``action_file``: ``flowray.spec.files``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowray.plan.actions import ActionTable as ActionTable
from flowray.plan.flowcache import CachedFlow as CachedFlow
from flowray.plan.flowcache import load_flow_cached as load_flow
from flowray.plan.flowcache import local_action_dirs as local_action_dirs
from flowray.spec.files import action_file as action_file

if TYPE_CHECKING:
    from flowray.plan.pins import LazyGitActions as LazyGitActions

__all__ = ["ActionTable", "CachedFlow", "LazyGitActions", "action_file", "load_flow",
           "local_action_dirs"]


def __getattr__(name: str) -> Any:
    if name == "LazyGitActions":  # on use: it imports the actions package
        from flowray.plan.pins import LazyGitActions

        return LazyGitActions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
