#!/usr/bin/env python3
"""Container steps (issue 5): a flowray container step against `docker run --rm` of the same
image and command, side by side.

Rows, alternating within each repetition, each run checked (exit 0, expected output):

- ``docker run --rm``: ``docker run --rm --network none IMAGE echo hi``, N times in a row from
  one shell (``--steps``, default 10);
- ``flowray docker://``: one flow of N steps ``action: docker://IMAGE`` with ``args: echo hi``;
- ``flowray container:``: one job with ``container: IMAGE`` and N steps ``run: echo hi``
  (each step is its own container).

Reported: the median wall time of each row, per container (÷ N), and flowray's ratio to
``docker run --rm``. The image is made from Debian's static busybox (no registry needed), as
tests/test_containers.py does. Needs a Docker engine and ``docker`` (the CLI) on PATH.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
from pathlib import Path

from _harness import DEFAULT_WORK, fmt_r, fmt_s, load_average, print_table, run_timed, write

IMAGE = "flowray-bench/busybox:1"


def make_image() -> None:
    import docker

    client = docker.from_env()
    try:
        client.images.get(IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("busybox is not installed (apt-get install busybox-static)")
    binary = Path(busybox).read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("bin", "tmp"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
        for applet in ("sh", "echo", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    repo, tag = IMAGE.split(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="containers per run (10)")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per row (7)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK / "containers")
    args = p.parse_args()
    if shutil.which("docker") is None:
        sys.exit("the docker CLI is not on PATH")
    make_image()
    work = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    n = args.steps
    write(work / "docker.sh", "set -e\n" + f"docker run --rm --network none {IMAGE} echo hi\n" * n)
    write(work / "image.yaml", "name: image-steps\njobs:\n  j:\n    steps:\n" + "".join(
        f"      - {{action: 'docker://{IMAGE}', with: {{args: echo hi}}}}\n" for _ in range(n)))
    write(work / "job.yaml", f"name: job-container\njobs:\n  j:\n    container: {IMAGE}\n"
          "    steps:\n" + "      - run: echo hi\n" * n)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["FLOWRAY_DOCKER_NETWORK"] = "none"
    flowray = [sys.executable, "-m", "flowray", "run", "-q"]
    rows = {
        "docker run --rm": ["bash", str(work / "docker.sh")],
        "flowray docker://": [*flowray, "image.yaml"],
        "flowray container:": [*flowray, "job.yaml"],
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for i in range(args.repeat + 1):  # the first round warms up (and fills the flow cache)
        for name, argv in rows.items():
            res = run_timed(argv, work, env, 300)
            if res.rc != 0 or (name == "docker run --rm" and res.text.count("hi") != n):
                print(f"{name}: FAILED (exit {res.rc}): {res.text[-500:]}", file=sys.stderr)
                return 1
            if i:
                times[name].append(res.elapsed)
    base = statistics.median(times["docker run --rm"])
    print(f"\ncontainer steps, {n} containers a run, median of {args.repeat}; "
          f"load {load_average()}")
    table = []
    for name, values in times.items():
        med = statistics.median(values)
        table.append([name, fmt_s(med), fmt_s(min(values)), fmt_s(med / n), fmt_r(med / base)])
    print_table(["row", "median", "min", "per container", "vs docker run --rm"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
