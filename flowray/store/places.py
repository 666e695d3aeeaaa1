"""Where flowray keeps its own files on this machine (outside any workspace).

A module of its own, importing nothing of flowray: every run reads these places (the
``runner`` and ``directory`` contexts), and importing the git actions package for them would
cost every run its import.
"""

from __future__ import annotations

import os


def cache_home() -> str:
    """``$XDG_CACHE_HOME/flowray`` (``~/.cache/flowray`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "flowray")


def default_actions_dir() -> str:
    """The git action cache when nothing configures one: ``<cache_home>/actions``."""
    return os.path.join(cache_home(), "actions")
