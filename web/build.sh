#!/usr/bin/env bash
# Rebuilds flowray/web/static/vendor/ (editor.js, plot.js, uplot.css, LICENSES.txt) from the
# versions locked in package-lock.json. Needs node >= 18 and npm; nothing else in flowray does.
# Usage: web/build.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")"

# Exactly the locked tree (no version drift). No install script needs to run: esbuild's binary
# comes as an optional dependency (@esbuild/<platform>) and its postinstall only checks it.
npm ci --ignore-scripts --no-audit --no-fund

# Bundles the modules, copies uplot.css, and writes LICENSES.txt from the packages esbuild's
# metafile says are in the bundles (all in build.mjs, which has the metafile in hand).
node build.mjs

vendor=../flowray/web/static/vendor
printf '%-14s %10s %10s\n' file raw gzip-9
for f in "$vendor"/*; do
  printf '%-14s %10d %10d\n' "$(basename "$f")" "$(wc -c <"$f")" "$(gzip -9 -c "$f" | wc -c)"
done
