#!/usr/bin/env python3
"""The secret masker (``flowray/execute/secrets.py``): how long it takes to build, and what it
costs per line masked, for one or more versions of that file side by side.

- **build**: ``Masker(values)`` and its first use (the pattern may be compiled lazily) for 1, 10,
  100 and 500 secrets (random 32-character tokens);
- **lines**: ``Masker.text`` over 20,000 log-like lines (none holding a secret) with no secret,
  one token, and seven secrets (a PEM private key, a JSON service-account file, five tokens);
  ``hits``: the same with one line in ten holding a token.

Every version is checked to mask the same lines the same way as the first one given (or the row
says DIFFERS). A version whose build of N secrets is expected to take too long is skipped with
``--max-build`` (seconds; a build slower than that skips the larger counts).

Usage: ``python benchmarks/bench_masker.py [--module NAME=PATH ...] [--repeat 5]`` (default:
this repository's ``flowray/execute/secrets.py``). Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import random
import re
import statistics
import string
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "flowray" / "execute" / "secrets.py"


def load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"masker_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def token(rng: random.Random, n: int = 32) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def pem(rng: random.Random) -> str:
    body = base64.b64encode(rng.randbytes(1190)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"


def service_account(rng: random.Random) -> str:
    return json.dumps({
        "type": "service_account", "project_id": "demo-project-123456",
        "private_key_id": token(rng, 40), "private_key": pem(rng),
        "client_email": "runner@demo-project-123456.iam.gserviceaccount.com",
        "client_id": "".join(rng.choice(string.digits) for _ in range(21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }, indent=2)


def log_lines(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(f"Epoch {i % 50}/50 - step {i} - loss: {rng.random():.4f} - "
                       f"acc: {rng.random():.4f} - lr: 0.000{rng.randint(1, 9)}")
        elif kind == 1:
            out.append(f"INFO 2026-12-03 15:{i % 60:02d}:{i % 57:02d} worker-{i % 8} "
                       f"processed /data/images/batch_{i:06d}/img_{rng.randint(0, 999)}.png")
        elif kind == 2:
            out.append("".join(rng.choice(string.ascii_letters + " ") for _ in range(80)))
        else:
            out.append(f"+ python train.py --config configs/run{i}.yaml --seed {i}")
    return out


def best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", default=[],
                        help="NAME=PATH of a secrets.py to measure (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--max-build", type=float, default=30.0)
    args = parser.parse_args()
    specs = [m.split("=", 1) for m in args.module] or [["this", str(DEFAULT)]]
    modules = [(name, load(name, path)) for name, path in specs]

    rng = random.Random(7)
    tokens = [token(rng) for _ in range(500)]
    seven = [pem(rng), service_account(rng), *tokens[:5]]
    lines = log_lines(rng, args.lines)
    hits = [f"{line} {tokens[0]}" if i % 10 == 0 else line for i, line in enumerate(lines)]

    print(f"python {sys.version.split()[0]}, median of {args.repeat}")
    print("\nbuild: Masker(values) and its first text() (seconds)")
    print(f"{'version':<14}" + "".join(f"{n:>12}" for n in (1, 10, 100, 500)))
    for name, mod in modules:
        row = f"{name:<14}"
        slow = False
        for n in (1, 10, 100, 500):
            if slow:
                row += f"{'skipped':>12}"
                continue
            values = tokens[:n]

            def build(mod: ModuleType = mod, values: list[str] = values) -> None:
                re.purge()  # re caches compiled patterns: each build compiles afresh
                mod.Masker(values).text("x")

            t = best(build, args.repeat if n < 500 else 1)
            slow = t > args.max_build / 5
            row += f"{t:>12.4f}"
        print(row)

    print(f"\nlines: Masker.text over {len(lines):,} lines (seconds; microseconds a line)")
    cases = [("0 secrets", [], lines), ("1 token", tokens[:1], lines),
             ("7 (PEM+SA+5)", seven, lines), ("7, hits", seven, hits)]
    print(f"{'version':<14}" + "".join(f"{c[0]:>22}" for c in cases))
    reference: dict[str, list[str]] = {}
    for name, mod in modules:
        row = f"{name:<14}"
        for label, values, text in cases:
            m = mod.Masker(values)
            m.text("warm up")
            t = best(lambda m=m, text=text: [m.text(x) for x in text], args.repeat)
            got = [m.text(x) for x in text]
            same = reference.setdefault(label, got) == got
            cell = f"{t:.3f} ({t / len(text) * 1e6:.1f} us)"
            row += f"{cell if same else 'DIFFERS':>22}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
