"""What the job runner hands on to run one step: a process (:class:`ProcessRequest`, run by
``execute/process.py``) or a container (:class:`ContainerRun`, run by ``execute/container.py``).

Declared here, without ``docker``, so the runner builds and dispatches on one typed union
(:data:`StepRequest`) and only a container step imports the Docker SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from flowray.execute.process import ProcessRequest


@dataclass
class ContainerRun:
    """A container step: the image, its command, the step's own environment inside (which
    holds ``FLOWRAY_OUTPUT`` like a process step's), the folders to mount, user, network, GPUs."""

    image: str
    command: list[str] | None = None  # None: the image's CMD
    entrypoint: list[str] | None = None  # None: the image's ENTRYPOINT
    env: dict[str, str] = field(default_factory=dict, repr=False)
    workdir: str | None = None
    mounts: list[tuple[str, str, str]] = field(default_factory=list)  # (host, container, mode)
    user: str | None = None
    network: str | None = None  # None: the engine's default
    gpus: list[str] | None = None  # GPU ids pinned to the job: device requests
    labels: dict[str, str] = field(default_factory=dict)
    pull: str = "if-not-present"
    timeout: float | None = None  # seconds


StepRequest: TypeAlias = ProcessRequest | ContainerRun

__all__ = ["ContainerRun", "ProcessRequest", "StepRequest"]
