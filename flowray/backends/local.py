"""The local dispatcher: jobs in threads on this machine, within its CPUs and GPUs."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from flowray.backends import RunEvents
from flowray.execute.job import ActionLoader, JobRequest, JobResult, run_job
from flowray.execute.process import DEFAULT_GRACE_SECONDS, ProcessSupervisor, stop_groups
from flowray.execute.secrets import Masker
from flowray.plan.plan import JobPlan
from flowray.spec.limits import MAX_GPUS, gpu_ids_problem
from flowray.spec.types import ResourcesData
from flowray.status import Status
from flowray.store.fs import os_error_text


def detect_gpus() -> list[str]:
    """GPU ids this machine offers to jobs.

    ``FLOWRAY_GPUS`` (``0,1,2`` or a count) wins; then an inherited ``CUDA_VISIBLE_DEVICES``;
    then the NVIDIA driver's ``/proc/driver/nvidia/gpus``. Raises ValueError when
    ``FLOWRAY_GPUS`` asks for more than ``MAX_GPUS``.
    """
    forced = os.environ.get("FLOWRAY_GPUS")
    if forced is not None:
        forced = forced.strip()
        if forced.isascii() and forced.isdigit():
            if len(forced) > 6 or int(forced) > MAX_GPUS:
                shown = forced if len(forced) <= 20 else f"a number of {len(forced)} digits"
                raise ValueError(f"FLOWRAY_GPUS={shown}: more GPUs than the limit of {MAX_GPUS}")
            return [str(i) for i in range(int(forced))]
        ids = [g.strip() for g in forced.split(",") if g.strip()]
        if len(ids) > MAX_GPUS:
            raise ValueError(f"FLOWRAY_GPUS names {len(ids)} GPUs, more than the limit of "
                             f"{MAX_GPUS}")
        problem = gpu_ids_problem(ids)
        if problem:
            raise ValueError(f"FLOWRAY_GPUS: {problem}")
        return ids
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        count = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        count = 0
    return [str(i) for i in range(count)]


class Slots:
    """This machine's CPUs and GPU ids, taken by jobs while they run: one for a run's pool, or
    one shared by every run of a service process, so that two runs never get the same GPU
    nor more CPUs than there are between them."""

    def __init__(self, cpus: float, gpus: list[str]) -> None:
        self.total_cpus = cpus
        self.gpus = list(gpus)  # every id, in order
        self.free_cpus = cpus
        self.free_gpus = list(gpus)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def take(self, cpus: float, ngpus: int | None) -> tuple[bool, list[str] | None]:
        """(True, the GPU ids given or None) when ``cpus`` and ``ngpus`` GPUs are free (and
        now taken); (False, None) otherwise."""
        with self._lock:
            if cpus > self.free_cpus + 1e-9 or (ngpus and ngpus > len(self.free_gpus)):
                return False, None
            self.free_cpus -= cpus
            gpus: list[str] | None = None
            if ngpus is not None:
                gpus, self.free_gpus = self.free_gpus[:ngpus], self.free_gpus[ngpus:]
            return True, gpus

    def give(self, cpus: float, gpus: list[str] | None) -> None:
        """Free what :meth:`take` took, and tell whoever waits for room."""
        with self._lock:
            self.free_cpus += cpus
            if gpus:
                self.free_gpus.extend(gpus)
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` whenever room is freed (a run waiting for room); returns the
        function that stops it."""
        with self._lock:
            self._listeners.append(wake)

        def stop() -> None:
            with self._lock:
                if wake in self._listeners:
                    self._listeners.remove(wake)
        return stop


class LocalPool:
    """Starts a job when its ``resources.cpus`` and ``resources.gpus`` fit what is free (in
    its own :class:`Slots`, or in ``slots`` shared with other runs)."""

    def __init__(
        self,
        *,
        cpus: float,
        gpus: list[str],
        events: RunEvents,
        masker: Masker,
        load_action: ActionLoader,
        grace: float = DEFAULT_GRACE_SECONDS,
        slots: Slots | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.slots = slots if slots is not None else Slots(cpus, gpus)
        self.total_cpus = self.slots.total_cpus
        self._stop_listening = self.slots.listen(wake) if wake is not None and \
            slots is not None else None
        self.events = events
        self.host = socket.gethostname()
        self.masker = masker
        self.load_action = load_action
        self.grace = grace
        self._lock = threading.Lock()
        self._supervisors: dict[str, ProcessSupervisor] = {}
        self._cancelled = False

    def try_start(
        self,
        plan: JobPlan,
        request_for: Callable[[list[str] | None], JobRequest],
        done: Callable[[JobResult], None],
    ) -> bool:
        res = plan.data["resources"]
        if res["nodes"] > 1:
            now = time.time()
            done(JobResult(Status.FAILURE, [], {}, now, now, multi_node_refusal(plan.key, res)))
            return True
        cpus = min(res["cpus"], self.total_cpus)
        ngpus = res["gpus"]
        with self._lock:
            if self._cancelled:
                return False
            taken, gpus = self.slots.take(cpus, ngpus)
            if not taken:
                return False
            supervisor = ProcessSupervisor(grace=self.grace)
            self._supervisors[plan.key] = supervisor
        request = request_for(gpus)
        self.events.job_started(plan.key, node=self.host, host=self.host, gpus=gpus)
        thread = threading.Thread(
            target=self._run, args=(request, supervisor, cpus, gpus, done),
            name=f"flowray-job-{plan.key}", daemon=True,
        )
        thread.start()
        return True

    def _run(self, request: JobRequest, supervisor: ProcessSupervisor, cpus: float,
             gpus: list[str] | None, done: Callable[[JobResult], None]) -> None:
        started = time.time()
        try:
            result = run_job(request, supervisor=supervisor, events=self.events,
                             masker=self.masker, load_action=self.load_action)
        except OSError as exc:  # its log folder cannot be made: a full disk
            result = JobResult(Status.FAILURE, [], {}, started, time.time(), os_error_text(exc))
        except Exception as exc:  # a bug must fail the job, not hang the run
            result = JobResult(Status.FAILURE, [], {}, started, time.time(),
                               f"internal error in flowray: {exc!r}")
        finally:
            with self._lock:
                self._supervisors.pop(request.key, None)
            self.slots.give(cpus, gpus)
        result.node = result.node or self.host
        done(result)

    def close(self) -> None:
        """The run ended: stop listening for room in shared slots."""
        if self._stop_listening is not None:
            self._stop_listening()

    def cancel(self) -> None:
        """Stop every running job's processes: SIGTERM, grace, SIGKILL (blocks until done)."""
        with self._lock:
            self._cancelled = True
            sups = list(self._supervisors.values())
        pgids = [g for s in sups for g in s.mark_cancelled()]
        threads = [t for s in sups for t in s.start_stoppers()]  # containers
        stop_groups(pgids, grace=self.grace)
        for t in threads:
            t.join()

    def cancel_job(self, key: str) -> None:
        with self._lock:
            sup = self._supervisors.get(key)
        if sup is not None:
            threading.Thread(target=sup.cancel_all, daemon=True).start()


def multi_node_refusal(key: str, res: ResourcesData) -> str:
    """Why the local executor does not run a multi-node job."""
    return (f"job '{key}' asks for {res['nodes']} nodes (resources.nodes): multi-node jobs run "
            f"on a Ray cluster (flowray run --address HOST:PORT); this machine is one node")
