"""Reads the last gpu-matrix run's record: both cells succeeded, each saw one GPU, and with
one GPU in the machine their steps did not overlap. Prints what it found; exit 1 otherwise."""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    rec = json.loads(subprocess.run([sys.executable, "-m", "flowray", "status", "last", "--json"],
                                    check=True, capture_output=True, text=True).stdout)
    logs = subprocess.run([sys.executable, "-m", "flowray", "logs", "last"], check=True,
                          capture_output=True, text=True).stdout
    print(logs)
    spans = []
    ok = rec["status"] == "success"
    for key in ("matmul.1", "matmul.2"):
        job = rec["jobs"][key]
        print(f"{key}: {job['status']} on {job.get('node') or 'this machine'}")
        ok = ok and job["status"] == "success"
    for line in logs.splitlines():
        if line.startswith("span "):
            start, end = map(float, line.split()[1:3])
            spans.append((start, end))
    ok = ok and "torch.cuda.device_count()=1" in logs and len(spans) == 2
    gpus = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    if ok and gpus == 1:
        (a0, a1), (b0, b1) = sorted(spans)
        serial = b0 >= a1
        print(f"one GPU: the cells ran one after the other: {serial} "
              f"({a0:.2f}-{a1:.2f}, {b0:.2f}-{b1:.2f})")
        ok = serial
    print("GPU CHECK " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
