#!/usr/bin/env bash
# Installs flowray with its test dependencies and runs the test suite (the README's command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider "$@"
