"""examples/api.py, the Python API's example, runs as its docstring says (`python3
examples/api.py` from a folder holding `examples/`) and prints what docs/api.md shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_api_example_runs_and_cancels(tmp_path: Path) -> None:
    # A copy of examples/, so that the example's runs land in tmp_path/.flowray, not the repo's.
    shutil.copytree(REPO / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("FLOWRAY_GPUS", None)
    done = subprocess.run([sys.executable, "examples/api.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for expected in [
        "examples/hello.yaml is valid",
        "  add      started",
        "  add      | 10 + 20 = 30",
        "  report   | hello, flowray",
        "  report   | hello: 1 files here, sum 30",  # the one file: examples/
        "  report   success",
        "run success (exit 0)",
        '  count    success  outputs {"files": "1"}',
        '  add      success  outputs {"sum": 30}',
        "  report   success  outputs {}",
        "second run: step 'sleep' started; cancelling",
        "second run cancelled (exit 130): cancelled by examples/api.py",
        "  wait     steps: nap cancelled, 2 cancelled",
    ]:
        assert expected in lines, f"{expected!r} not in:\n{done.stdout}"
    assert lines[1].startswith("run ") and lines[1].endswith(" on this machine: "
                                                              f"{os.cpu_count()} CPUs, 0 GPUs")
    # The live view comes before the record, and the second run after both.
    assert lines.index("  report   success") < lines.index("run success (exit 0)") \
        < lines.index("second run: step 'sleep' started; cancelling")
    assert "never printed" not in done.stdout
    assert len(os.listdir(tmp_path / ".flowray" / "runs")) == 2
