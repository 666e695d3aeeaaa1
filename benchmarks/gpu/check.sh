#!/usr/bin/env bash
# Issue 4's GPU check, for a machine with an NVIDIA GPU and torch (the device tool's machine):
# the two-cell gpu-matrix flow with the local executor, then, where Ray can be imported, on an
# embedded Ray (`--ray`). Run from the repository root: bash benchmarks/gpu/check.sh
set -uo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd)${PYTHONPATH:+:$PYTHONPATH}"
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
echo "== $(nvidia-smi -L 2>/dev/null | head -1) ($gpus GPU(s)); python $(python3 -V 2>&1)"
rc=0
echo "== local executor"
python3 -m flowray run gpu-matrix.yaml && python3 check.py "$gpus" || rc=1
if python3 -c 'import ray' 2>/dev/null; then
  echo "== embedded Ray (--ray)"
  python3 -m flowray run gpu-matrix.yaml --ray && python3 check.py "$gpus" || rc=1
else
  echo "== Ray is not importable here: the Ray run is skipped"
fi
exit $rc
