#!/usr/bin/env python3
"""The size of the web page's assets (``flowray/web/static/``, recursively): each file raw and
gzipped (level 9, what a server compressing them would send at best), then

- the **page without the editor**: every file the page loads except ``vendor/editor.js``
  (the page's own JS/CSS/HTML, ``vendor/plot.js``, ``vendor/uplot.css``); the goal is under
  300 kB gzipped (kB = 1,000 bytes);
- the **editor bundle** (``vendor/editor.js``, CodeMirror 6) on its own: loaded by the flow
  editor, and large for what CodeMirror is, so counted apart.

Files the page never loads (``*.txt``, ``*.md``: ``vendor/LICENSES.txt``) are listed but left
out of both totals.

Usage: ``python benchmarks/bench_web_assets.py [--static DIR] [--check]``; ``--check`` exits 1
when the page without the editor is over the goal. Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "flowray" / "web" / "static"
EDITOR = Path("vendor") / "editor.js"
NOT_LOADED = {".txt", ".md"}
GOAL_GZIP = 300_000


@dataclass(frozen=True)
class Size:
    """One file: its path below the static folder, its size and its gzip -9 size."""

    path: Path
    raw: int
    gzipped: int


def measure(root: Path) -> list[Size]:
    """Every file below ``root``, sorted by path."""
    sizes = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        # mtime=0: the gzip header's timestamp is 4 bytes either way; fixed for repeatable output.
        sizes.append(Size(path.relative_to(root), len(data), len(gzip.compress(data, 9, mtime=0))))
    return sizes


def kb(n: int) -> str:
    return f"{n / 1000:,.1f} kB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--static", type=Path, default=STATIC, help="the static folder")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the page without the editor is over the goal")
    args = parser.parse_args()
    if not args.static.is_dir():
        print(f"{args.static} is not a folder", file=sys.stderr)
        return 2

    sizes = measure(args.static)
    width = max([len(str(s.path)) for s in sizes] + [len("page without the editor")])
    print(f"{'file':<{width}} {'raw':>12} {'gzip -9':>12}")
    for s in sizes:
        note = "  (not loaded by the page)" if s.path.suffix in NOT_LOADED else ""
        print(f"{s.path!s:<{width}} {kb(s.raw):>12} {kb(s.gzipped):>12}{note}")

    loaded = [s for s in sizes if s.path.suffix not in NOT_LOADED]
    page = [s for s in loaded if s.path != EDITOR]
    editor = [s for s in loaded if s.path == EDITOR]
    page_gz = sum(s.gzipped for s in page)
    verdict = "within" if page_gz < GOAL_GZIP else "OVER"
    print()
    print(f"{'page without the editor':<{width}} {kb(sum(s.raw for s in page)):>12} "
          f"{kb(page_gz):>12}  ({len(page)} files; goal < {kb(GOAL_GZIP)} gzipped: {verdict})")
    if editor:
        print(f"{'editor bundle':<{width}} {kb(editor[0].raw):>12} {kb(editor[0].gzipped):>12}")
    else:
        print(f"editor bundle: {EDITOR} not found (run web/build.sh)")
    return 1 if args.check and page_gz >= GOAL_GZIP else 0


if __name__ == "__main__":
    sys.exit(main())
