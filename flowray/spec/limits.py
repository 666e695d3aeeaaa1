"""The numeric limits of flows and runs, in one place (docs/flow-syntax.md, "Limits").

Every number a flow, a command-line option, an environment variable or an API argument gives
is checked against these where it comes in, so that no later arithmetic (a deadline, a wait, a
list of GPU ids) meets an infinity, a NaN or a number too large to act on. Importing this module
is cheap (no pydantic, no yaml).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# Flow keys.
MAX_TIMEOUT_MINUTES = 43_200  # 30 days: `timeout`/`timeout-minutes` of a job or a step
MAX_RETRIES = 100  # a job's `retries`
MAX_CPUS = 100_000  # `resources.cpus` of a job; --cpus
MAX_GPUS = 1_024  # `resources.gpus` of a job; --gpus and FLOWRAY_GPUS
MAX_NODES = 1_024  # `resources.nodes` of a multi-node job
MAX_MEMORY_BYTES = 2**60  # `resources.memory` (1 EiB)
MAX_LABEL_AMOUNT = 1_000_000  # each amount of `resources.labels`
MAX_PARALLEL = 10_000  # `strategy.max-parallel` (as many as a matrix can have cells)

# Run options.
MAX_GRACE_SECONDS = 3_600  # --grace, and the grace of flowray.start(...) and Run.cancel(...)
MAX_CANCEL_WAIT_SECONDS = 86_400  # `flowray cancel --wait`
MAX_HEARTBEAT_SECONDS = 86_400  # FLOWRAY_HEARTBEAT: a day of silence
MAX_AGE_DAYS = 36_500  # `flowray actions prune --older-than`


def number_problem(value: object, *, low: float, high: float, low_open: bool = False,
                   integer: bool = False) -> str | None:
    """Why ``value`` is not a finite number in ``[low, high]`` (``(low, high]`` when
    ``low_open``; a whole number when ``integer``), or None when it is: a phrase that follows
    the value's name ("must be at most 3600, got 1e+06")."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
        return f"must be {kind}, got {shown}"
    if isinstance(value, float) and not math.isfinite(value):
        span = (f"more than {low:g} and at most {high:g}" if low_open
                else f"from {low:g} to {high:g}")
        return f"must be a finite number {span}, got {value!r}"
    if value < low or (low_open and value == low):
        bound = f"more than {low:g}" if low_open else f"{low:g} or more"
        return f"must be {bound}, got {_shown(value)}"
    if value > high:
        return f"must be at most {high:g}, got {_shown(value)}"
    return None


def _shown(value: float) -> str:
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"a number of {len(str(abs(value)))} digits"
    return f"{value:g}"


_GPU_ID = re.compile(r"[0-9]+|(?:GPU|MIG)-[A-Za-z0-9][A-Za-z0-9_./:-]*")


def gpu_ids_problem(ids: Sequence[str]) -> str | None:
    """What is wrong with a list of GPU ids (--gpus, FLOWRAY_GPUS, ``start(gpus=)``), or None.
    An id is what ``CUDA_VISIBLE_DEVICES`` takes: an index (``0``) or a UUID (``GPU-...``,
    ``MIG-...``); each at most once, or two jobs would be given the same GPU."""
    seen: set[str] = set()
    for g in ids:
        if not _GPU_ID.fullmatch(g) or (g.isdigit() and len(g) > 6):
            return (f"{g!r} is not a GPU id (an index such as '0', or a UUID such as "
                    f"'GPU-...' or 'MIG-...')")
        key = str(int(g)) if g.isdigit() else g  # '00' is GPU 0
        if key in seen:
            return f"{g!r} is named twice (two jobs would be given the same GPU)"
        seen.add(key)
    return None

