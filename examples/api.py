"""flowray's Python API in one script: validate a flow, start it, watch its events, read its
record, and cancel a second run once its first step started.

Run it from the repository root (the flow's ``./examples/actions/...`` are found from there,
and the runs are recorded under ``.flowray/runs/``)::

    python3 examples/api.py

See docs/api.md.
"""

from __future__ import annotations

import json
import sys

import flowray
from flowray.runtime.events import JobFinished, JobStarted, StepLog, StepStarted

FLOW = "examples/hello.yaml"

# A flow may also be given as YAML text: flowray keeps it in .flowray/flows/ for the record.
SLOW = """\
name: slow
jobs:
  wait:
    steps:
      - id: nap
        name: sleep
        run: echo "sleeping"; sleep 60
      - run: echo "never printed"
"""


def watch(run: flowray.Run) -> flowray.RunRecord:
    """Print a compact live view of ``run`` from its events; its record once it ended.
    Ctrl-C cancels it (the API installs no signal handler: this script decides)."""
    try:
        for event in run.events():
            if isinstance(event, JobStarted):
                print(f"  {event.job:<8} started")
            elif isinstance(event, StepLog):
                print(f"  {event.job:<8} | {event.line}")
            elif isinstance(event, JobFinished):
                print(f"  {event.job:<8} {event.status}")
        return run.wait()
    except KeyboardInterrupt:
        run.cancel(reason="interrupted by Ctrl-C")
        return run.wait()


def main() -> int:
    problems = flowray.validate(FLOW)
    if problems:
        for d in problems:
            print(d, file=sys.stderr)
        return 2
    print(f"{FLOW} is valid")

    # 1. A run, watched live, then its record.
    try:
        run = flowray.start(FLOW)
    except (flowray.FlowError, flowray.StartError) as exc:
        print(f"cannot start {FLOW}:\n{exc}", file=sys.stderr)
        return 2
    print(f"run {run.id} on {run.summary}")
    record = watch(run)
    print(f"run {record.status.value} (exit {run.exit_code})")
    for key, job in record.jobs.items():
        print(f"  {key:<8} {job.status.value:<8} outputs {json.dumps(job.outputs, sort_keys=True)}")

    # 2. A second run, cancelled once its first step started.
    slow = flowray.start(SLOW, grace=1)
    for event in slow.events():
        if isinstance(event, StepStarted):
            print(f"second run: step '{event.name}' started; cancelling")
            slow.cancel(reason="cancelled by examples/api.py")
            break
    cancelled = slow.wait(timeout=30)
    steps = ", ".join(f"{s.key} {s.status.value}" for s in cancelled.jobs["wait"].steps)
    print(f"second run {cancelled.status.value} (exit {slow.exit_code}): {cancelled.cancel_reason}")
    print(f"  wait     steps: {steps}")

    ok = record.status == "success" and cancelled.status == "cancelled"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
