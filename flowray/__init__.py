"""flowray: run DataTorch-style flows on a laptop, on a Ray cluster, or as a service.

Importing this package is cheap: it never imports ``ray``, ``docker`` or ``pydantic``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
