"""What validated data kept on disk depends on: the validation code itself."""

from __future__ import annotations

import os


def code_fingerprint() -> str:
    """The validation code: flowray's ``__init__.py`` (which holds its version) and every
    module of ``spec`` and ``expr``, by size and modification time. Data validated by other
    code (another flowray version, an edited checkout) must be validated again: its shape
    may differ (a key added to the action file model, say)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package
    init = os.stat(os.path.join(here, "__init__.py"))
    parts = [f"__init__.py:{init.st_mtime_ns}:{init.st_size}"]
    for sub in ("spec", "expr"):
        folder = os.path.join(here, sub)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                parts.append(f"{name}:{st.st_mtime_ns}:{st.st_size}")
    return "|".join(parts)
