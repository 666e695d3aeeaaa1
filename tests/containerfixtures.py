"""The image the container tests use, made here (no registry is reachable): a root filesystem
of Debian's static busybox, imported into the engine. Where no engine answers the tests skip
saying so, except in CI (CI=true), where `.ci/run` starts one and a missing engine fails.

Each test session imports an image of its own (tagged with its process id, so that two sessions
on one engine never remove each other's), labelled LABEL=SESSION; images built FROM it (the
Dockerfile actions of the tests) inherit the label, and so do the containers of both. When the
session ends, conftest's ``pytest_sessionfinish`` calls :func:`remove_session_objects`.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

SESSION = str(os.getpid())
LABEL = "flowray.test-session"
IMAGE = f"flowray-test/busybox:s{SESSION}"
used = False  # engine() answered in this session: there may be something to remove
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "env", "id", "pwd", "true", "false", "printf",
           "mkdir", "touch", "head", "tail", "cut", "tr", "seq", "yes", "wc", "kill", "stat")


def engine() -> Any:
    """The Docker engine's client, with the test image in it (or the test skips)."""
    docker = pytest.importorskip("docker", reason="the Docker SDK is not installed")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise AssertionError(
                f"CI must have a Docker engine (.ci/run starts one): {exc}") from None
        pytest.skip(f"no Docker engine answers here ({exc}); start one with `dockerd &`")
    global used
    used = True
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        _import_image(client)
    out = client.containers.run(IMAGE, ["echo", "ok"], remove=True, network_mode="none")
    if out.strip() != b"ok":  # a busybox that is not static cannot run alone in an image
        pytest.skip(f"the busybox image does not run: {out!r}")
    return client


def _import_image(client: Any) -> None:
    found = shutil.which("busybox")
    if found is None:
        pytest.skip("busybox is not installed: the test image is made from Debian's "
                    "busybox-static (apt-get install busybox-static)")
    binary = Path(found).read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    repo, tag = IMAGE.split(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,
                                      changes=[f"LABEL {LABEL}={SESSION}"])


def left(client: Any, run_id: str) -> list[Any]:
    """The containers of run ``run_id`` still on the engine."""
    return client.containers.list(all=True, filters={"label": f"flowray.run={run_id}"})


def remove_session_objects() -> list[str]:
    """Remove this session's containers and images (the test image and those built from it);
    what was left behind: the containers still there (flowray removes its containers itself)
    and what could not be removed."""
    if not used:
        return []
    import docker

    left_behind: list[str] = []
    client = docker.from_env(timeout=60)
    mine = {"label": f"{LABEL}={SESSION}"}
    for container in client.containers.list(all=True, filters=mine):
        left_behind.append(f"container {container.short_id} of "
                           f"{container.attrs['Config']['Image']} ({container.status}), "
                           f"labels {container.labels}")
        try:
            container.remove(force=True)
        except docker.errors.APIError as exc:
            left_behind.append(f"container {container.short_id} cannot be removed: {exc}")
    # Images built from the test image first: an image with children cannot be removed.
    images = sorted(client.images.list(filters=mine), key=lambda i: IMAGE in i.tags)
    for image in images:
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.APIError as exc:
            left_behind.append(f"image {image.tags or image.short_id} cannot be removed: {exc}")
    return left_behind
