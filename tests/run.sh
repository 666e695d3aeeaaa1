#!/usr/bin/env bash
# Installs flowray with its test dependencies and runs the test suite (the README's command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e '.[test]'
# pytest runs in a Python that leaves without tearing itself down once pytest is done (its
# result and output are final by then): Ray's C++ threads, loaded by the Ray tests, have crashed
# in that teardown now and then (std::bad_alloc in its log sink, then SIGSEGV), which would turn
# a green run red.
exec python3 -c 'import os, sys, pytest
code = pytest.main(sys.argv[1:])
sys.stdout.flush()
sys.stderr.flush()
os._exit(int(code))' -q -p no:cacheprovider "$@"
