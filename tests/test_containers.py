"""Container steps on a real Docker engine: job containers, `docker://` steps, docker actions.

The image is made here (no registry is reachable): a root filesystem of Debian's static
busybox, imported into the engine. Where no engine answers, the module is skipped saying so,
except in CI (CI=true), where `.ci/run` starts one and a missing engine is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import containerfixtures
import pytest
from conftest import Workspace, env_without_color
from containerfixtures import IMAGE, left


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    yield containerfixtures.engine()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWRAY_DOCKER_NETWORK", "none")  # the engine has no bridge here
    monkeypatch.delenv("FLOWRAY_PULL", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)


def test_a_job_container_runs_every_run_step_in_the_image(
    ws: Workspace, engine: Any
) -> None:
    ws.flow(f"""
        name: boxed
        jobs:
          build:
            container:
              image: {IMAGE}
              env: {{WHERE: "inside ${{{{ matrix.n || 'box' }}}}"}}
            env: {{GREETING: hello}}
            outputs:
              n: ${{{{ steps.count.outputs.n }}}}
            steps:
              - run: echo "$GREETING from $WHERE, uid $(id -u), in $(pwd), bash? $(ls /bin/bash 2>&1 | head -c 13)"
              - id: count
                run: |
                  echo "::n::5"
                  echo "made in a container" > made.txt
                  echo "size=7" >> "$FLOWRAY_OUTPUT"
              - run: test -f /etc/debian_version
    """)
    out = ws.run("flow.yaml")
    assert out.exit_code == 1, out
    assert (f"build/1 | hello from inside box, uid {os.getuid()}, in {ws.root}, bash? ls: /bin/bash"
            in out.stdout)
    rec = ws.record()
    job = rec["jobs"]["build"]
    assert job["outputs"] == {"n": 5}
    assert job["steps"][1]["outputs"] == {"n": 5, "size": "7"}
    assert [s["status"] for s in job["steps"]] == ["success", "success", "failure"]
    assert job["steps"][2]["exit_code"] == 1  # the host has the file, the image does not
    made = ws.root / "made.txt"
    assert made.read_text() == "made in a container\n"
    assert made.stat().st_uid == os.getuid()
    assert left(engine, rec["id"]) == []


def test_docker_steps_get_inputs_args_entrypoint_and_exit_codes(
    ws: Workspace, engine: Any
) -> None:
    ws.flow(f"""
        name: image-step
        jobs:
          j:
            steps:
              - action: docker://{IMAGE}
                with:
                  entrypoint: sh
                  args: -c 'echo "who=$INPUT_WHO n=$INPUT_N"; echo "::said::$INPUT_WHO"; exit 3'
                  who: you
                  n: 2
                continue-on-error: true
              - action: docker://{IMAGE}
                with: {{args: echo plain args}}
                continue-on-error: true
    """)
    out = ws.run("flow.yaml")
    out.assert_success()
    step = ws.record()["jobs"]["j"]["steps"]
    assert step[0]["exit_code"] == 3 and step[0]["outcome"] == "failure"
    assert step[0]["outputs"] == {"said": "you"}
    assert "j/1 | who=you n=2" in out.stdout
    # Without an entrypoint the image's (none for an imported rootfs) runs the args.
    assert "j/2 | plain args" in out.stdout


def test_docker_actions_from_an_image_and_from_a_dockerfile(
    ws: Workspace, engine: Any
) -> None:
    ws.action("greet", f"""
        name: greet
        inputs:
          who: {{type: string, required: true}}
          times: {{type: integer, default: 1}}
        runs:
          using: docker
          image: docker://{IMAGE}
          entrypoint: sh
          args: ["-c", "for i in $(seq $INPUT_TIMES); do echo hello ${{{{ inputs.who }}}}; done"]
    """)
    ws.action("built", """
        name: built
        inputs:
          note: {type: string}
        outputs:
          made: {type: string}
        runs:
          using: docker
          dockerfile: Dockerfile
    """, **{"Dockerfile": f"FROM {IMAGE}\nCOPY run.sh /run.sh\nENTRYPOINT [\"sh\", \"/run.sh\"]\n",
            "run.sh": 'echo "built image says $INPUT_NOTE"\necho "::made::yes"\n'})
    ws.flow("""
        name: docker-actions
        jobs:
          j:
            steps:
              - action: ./greet
                with: {who: world, times: 2}
              - id: b
                action: ./built
                with: {note: hi}
              - run: echo "made ${{ steps.b.outputs.made }}"
    """)
    out = ws.run("flow.yaml")
    out.assert_success()
    assert out.stdout.count("j/1 | hello world") == 2
    assert "j/b | built image says hi" in out.stdout
    assert "j/3 | made yes" in out.stdout
    built = [t for i in engine.images.list() for t in i.tags if t.startswith("flowray-action-")]
    again = ws.run("flow.yaml")
    again.assert_success()
    assert [t for i in engine.images.list() for t in i.tags
            if t.startswith("flowray-action-")] == built  # built once, found again


def test_cancel_stops_the_container_and_removes_it(ws: Workspace, engine: Any) -> None:
    ws.flow(f"""
        name: long
        jobs:
          j:
            container: {IMAGE}
            steps:
              - run: echo started; sleep 300
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowray", "run", "flow.yaml", "--grace", "1"], cwd=ws.root,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_without_color())
    assert proc.stdout is not None
    for line in proc.stdout:
        if "j/1 | started" in line:
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 30
    rec = ws.record()
    assert rec["jobs"]["j"]["status"] == "cancelled"
    assert left(engine, rec["id"]) == []


def test_timeout_stops_the_container(ws: Workspace, engine: Any) -> None:
    ws.flow(f"""
        name: slow
        jobs:
          j:
            container: {IMAGE}
            steps:
              - run: sleep 300
                timeout-minutes: 0.02
    """)
    out = ws.run("flow.yaml", "--grace", "1")
    assert out.exit_code == 1, out
    rec = ws.record()
    step = rec["jobs"]["j"]["steps"][0]
    assert step["status"] == "failure"
    assert "timed out" in (step["error"] or ""), step
    assert left(engine, rec["id"]) == []


def test_ten_megabytes_of_output_from_a_container(ws: Workspace, engine: Any) -> None:
    ws.flow(f"""
        name: loud
        jobs:
          j:
            container: {IMAGE}
            steps:
              - run: yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -n 80000
    """)
    out = ws.run("flow.yaml", "-q")
    out.assert_success()
    rec = ws.record()
    run_dir = ws.root / ".flowray" / "runs" / rec["id"]
    log = (run_dir / rec["jobs"]["j"]["steps"][0]["log"]).read_text()
    lines = log.splitlines()
    assert len(lines) == 80000 and len(log) == 80000 * 125
    assert set(lines) == {"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def test_network_option_and_missing_images(
    ws: Workspace, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWRAY_DOCKER_NETWORK")
    ws.flow(f"""
        name: net
        jobs:
          none:
            container: {{image: {IMAGE}, options: --network none}}
            steps:
              - run: |
                  cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '
          bad-option:
            container: {{image: {IMAGE}, options: --privileged}}
            steps: [{{run: "true"}}]
          missing:
            steps:
              - action: docker://flowray-test/not-there:1
    """)
    out = ws.run("flow.yaml")
    assert out.exit_code == 1
    rec = ws.record()
    assert rec["jobs"]["none"]["status"] == "success"
    assert "none/1 | lo\n" in out.stdout
    assert rec["jobs"]["bad-option"]["steps"][0]["error"] == (
        "container: option '--privileged' is not one flowray passes to Docker (it understands "
        "--network, --user, --env/-e, --volume/-v, --workdir/-w)")
    error = rec["jobs"]["missing"]["steps"][0]["error"]
    assert error.startswith("image 'flowray-test/not-there:1' is not on this Docker engine "
                            "and cannot be pulled: "), error
    monkeypatch.setenv("FLOWRAY_PULL", "never")
    ws.run("flow.yaml", "-j", "missing")
    assert ws.record()["jobs"]["missing"]["steps"][0]["error"] == (
        "image 'flowray-test/not-there:1' is not on this Docker engine and FLOWRAY_PULL is "
        "'never': build or load it first (`docker build -t flowray-test/not-there:1 .`, "
        "`docker load`)")


NO_ENGINE = (
    "no Docker engine answers at unix:///nonexistent/docker.sock: there is no socket there; "
    "start one (as root: `dockerd &`, or `sudo systemctl start docker`), or set DOCKER_HOST to "
    "an engine that runs (e.g. unix:///var/run/docker.sock or tcp://host:2375)"
)


def test_without_an_engine_container_steps_fail_when_they_run(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation never asks for an engine; each container step does, as it is about to run.
    pytest.importorskip("docker", reason="the Docker SDK is not installed")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    ws.action("img", f"name: I\nruns: {{using: docker, image: {IMAGE}}}\n")
    ws.action("built", "name: B\nruns: {using: docker, dockerfile: Dockerfile}\n",
              Dockerfile=f"FROM {IMAGE}\n")
    ws.flow(f"""
        name: x
        jobs:
          first: {{steps: [{{run: echo before}}]}}
          j: {{needs: first, container: {IMAGE}, steps: [{{run: 'true'}}]}}
          k:
            needs: first
            steps:
              - action: docker://{IMAGE}
              - {{action: ./img, if: always()}}
              - {{action: ./built, if: always()}}
    """)
    ws.cli("validate", "flow.yaml").assert_success()
    out = ws.run("flow.yaml")
    assert out.exit_code == 1, out
    jobs = ws.record()["jobs"]
    assert jobs["first"]["status"] == "success"
    assert [s["error"] for s in jobs["j"]["steps"]] == [NO_ENGINE]
    assert [s["error"] for s in jobs["k"]["steps"]] == [
        NO_ENGINE, NO_ENGINE, "action 'B': " + NO_ENGINE]


def test_pinned_gpus_become_a_device_request(ws: Workspace, engine: Any) -> None:
    # There is no GPU (nor the NVIDIA runtime) here: the engine refusing the request for
    # exactly the pinned device is what shows flowray asked for it.
    ws.flow(f"""
        name: gpu
        jobs:
          j:
            container: {IMAGE}
            resources: {{gpus: 1}}
            steps: [{{run: "true"}}]
    """)
    out = ws.run("flow.yaml", "--gpus", "3")
    assert out.exit_code == 1
    rec = ws.record()
    error = rec["jobs"]["j"]["steps"][0]["error"]
    assert error.startswith(f"container for '{IMAGE}' did not start: "), error
    assert 'could not select device driver "nvidia"' in error, error
    assert left(engine, rec["id"]) == []


def test_pull_always_goes_to_the_registry_even_for_a_local_image(
    ws: Workspace, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No registry is reachable here: `always` failing while the image is on the engine shows
    # that it asked the registry; the default policy used the local copy.
    ws.flow(f"name: p\njobs: {{j: {{container: {IMAGE}, steps: [{{run: echo local}}]}}}}\n")
    ws.run("flow.yaml").assert_success()
    monkeypatch.setenv("FLOWRAY_PULL", "always")
    out = ws.run("flow.yaml")
    assert out.exit_code == 1
    error = ws.record()["jobs"]["j"]["steps"][0]["error"]
    assert error.startswith(f"image '{IMAGE}' cannot be pulled (FLOWRAY_PULL is 'always'): "
                            ), error
    assert error.endswith(" and use FLOWRAY_PULL=if-not-present"), error
    monkeypatch.setenv("FLOWRAY_PULL", "sometimes")
    out = ws.run("flow.yaml")
    assert ws.record()["jobs"]["j"]["steps"][0]["error"] == (
        "container: FLOWRAY_PULL is 'sometimes'; use one of if-not-present, always, never")


def test_user_option_and_volumes(ws: Workspace, engine: Any, tmp_path: Path) -> None:
    # flowray maps the container's user to its own (root here); `--user` in options picks
    # another, and files it writes in the mounted workspace are that user's.
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from a volume\n")
    (ws.root / "out").mkdir(mode=0o777)
    (ws.root / "out").chmod(0o777)
    ws.flow(f"""
        name: user
        jobs:
          j:
            container:
              image: {IMAGE}
              options: --user 1234:1234 -e FROM_OPTION=yes
              volumes: ["{shared}:/shared:ro", "./out:/out2"]
            steps:
              - run: |
                  echo "uid $(id -u) gid $(id -g) $FROM_OPTION $(cat /shared/in.txt)"
                  echo hi > out/by-1234.txt
                  touch /shared/nope 2>/dev/null || echo "read-only volume"
                  ls /out2
    """)
    out = ws.run("flow.yaml")
    out.assert_success()
    assert "j/1 | uid 1234 gid 1234 yes from a volume" in out.stdout
    assert "j/1 | read-only volume" in out.stdout
    assert "j/1 | by-1234.txt" in out.stdout  # ./out, relative to the workspace
    made = ws.root / "out" / "by-1234.txt"
    assert (made.stat().st_uid, made.stat().st_gid) == (1234, 1234)
