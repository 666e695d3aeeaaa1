"""`flowray run` (this machine or Ray) and `flowray submit` (a Ray cluster's Jobs API)."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from flowray.cli.app import main
from flowray.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    _fail,
    _fmt_dur,
    _jobs_api,
    _jobs_errors,
    _pairs,
    _print_diagnostics,
    _read_submit_bundle,
    _stderr_color,
    read_env_file,
    read_values_file,
)
from flowray.cli.view import Console
from flowray.runtime.api import Prepared, Run, check_run_numbers, check_secrets, local_gpus
from flowray.runtime.errors import PlanInvalid, RunInputError, SecretsMissing, StartError
from flowray.spec.diagnostics import FlowError
from flowray.spec.limits import MAX_HEARTBEAT_SECONDS, number_problem

if TYPE_CHECKING:
    from flowray.runtime.metrics import Metrics

# ----------------------------------------------------------------------------- run


def _start_failure(exc: FlowError | StartError) -> NoReturn:
    """Why a run could not start, as the CLI says it (exit 2)."""
    if isinstance(exc, RunInputError):
        _input_failure(exc)
    if isinstance(exc, SecretsMissing):
        _print_diagnostics(exc)
        names = exc.names
        if len(names) == 1:
            _fail(f"secret '{names[0]}' is not given: pass --secret {names[0]} with "
                  f"{names[0]} in the environment, --secret {names[0]}=VALUE, or a line "
                  f"{names[0]}=VALUE in a --secret-file")
        listed = ", ".join(f"'{n}'" for n in names)
        _fail(f"secrets {listed} are not given: pass --secret NAME (from the environment) or "
              f"--secret NAME=VALUE for each, or lines NAME=VALUE in a --secret-file")
    if isinstance(exc, PlanInvalid):
        _fail(exc.message)
    if isinstance(exc, FlowError):
        _print_diagnostics(exc)
        sys.exit(EXIT_INVALID)
    _fail(str(exc))
    raise AssertionError


def _prepared(flow_path: str, workspace: str, *, inputs: dict[str, str],
              jobs: Sequence[str], matrix: dict[str, str], offline: bool,
              use_cache: bool, secrets: Collection[str]) -> Prepared:
    """The flow loaded, checked and planned for run and submit, with the ``secrets`` it
    reads given, its warnings shown; or the reason it cannot run (exit 2)."""
    from flowray.runtime.api import prepare

    try:
        prepared = prepare(flow_path, workdir=workspace, inputs=inputs, jobs=jobs,
                           matrix=matrix, offline=True if offline else None,
                           use_cache=use_cache,
                           on_action_event=lambda line: click.echo(line, err=True))
        secret_warnings = check_secrets(prepared, secrets)
    except (FlowError, StartError) as exc:
        _start_failure(exc)
    color = _stderr_color()
    for w in prepared.warnings:
        click.echo(click.style(w, fg="yellow") if color else w, err=True)
    for d in secret_warnings:
        click.echo(d.format(color=color), err=True)
    return prepared


def _input_failure(exc: RunInputError) -> NoReturn:
    if exc.reason == "required":
        _fail(f"input '{exc.input}' is required by this flow (--input {exc.input}=VALUE)")
    _fail(f"--input: {exc.message}")
    raise AssertionError


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


def _secret_pairs(values: Sequence[str]) -> dict[str, str]:
    """``--secret NAME=VALUE``, or ``--secret NAME``: the value of the environment variable
    NAME (which keeps the value off flowray's own command line, and may span lines)."""
    out: dict[str, str] = {}
    for item in values:
        name, found, value = item.partition("=")
        name = name.strip()
        if not name:
            _fail("--secret needs NAME or NAME=VALUE")
        if not found:
            if name not in os.environ:
                # The word may be the secret itself, given without NAME=: it is named only
                # when it looks like an environment variable's name.
                shown = name if _ENV_NAME.fullmatch(name) else "NAME"
                _fail(f"--secret {shown}: the environment variable {shown} is not set "
                      f"(give --secret {shown}=VALUE, set {shown}, or use --secret-file)")
            value = os.environ[name]
        out[name] = value
    return out


def _run_values(secrets: Sequence[str], secret_files: Sequence[str], env_files: Sequence[str],
                event_file: str | None, bundle: dict[str, Any]
                ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The run's secrets, --env-file values and event, from the options (over what a submitted
    run's ``bundle`` brought)."""
    secret_values: dict[str, str] = dict(bundle.get("secrets", {}))
    for f in secret_files:
        secret_values.update(read_env_file(f, "--secret-file"))
    secret_values.update(_secret_pairs(secrets))
    env: dict[str, str] = dict(bundle.get("env", {}))
    for f in env_files:
        env.update(read_env_file(f, "--env-file"))
    event: dict[str, Any] = dict(bundle.get("event", {}))
    if event_file:
        text = read_values_file(event_file, "--event")
        try:
            event = json.loads(text)
        except ValueError as exc:
            _fail(f"--event '{event_file}': {exc}")
        except RecursionError:
            _fail(f"--event '{event_file}': the JSON is nested too deeply")
    return secret_values, env, event


F = TypeVar("F", bound=Callable[..., Any])


def _run_input_options(*, submit: bool) -> Callable[[F], F]:
    """The options that give a run its inputs and pick its jobs, shared by `run` and `submit`
    (which reads the files here and ships what they hold)."""
    here = " (read here)" if submit else ""
    options = [
        click.option("--input", "-i", "inputs", multiple=True, metavar="KEY=VALUE",
                     help="A run input, read as ${{ inputs.KEY }}."),
        click.option("--secret", "-s", "secrets", multiple=True, metavar="NAME[=VALUE]",
                     help="A secret; shipped in a private file, never on the job's command line;"
                     " NAME alone reads the environment variable NAME."
                     if submit else
                     "A secret, read as ${{ secrets.NAME }}; masked as *** everywhere. NAME "
                     "alone reads the environment variable NAME (keeps the value off this "
                     "command line)."),
        click.option("--secret-file", type=click.Path(dir_okay=False), multiple=True,
                     help=f"A file of NAME=VALUE secret lines{here}."),
        click.option("--env-file", type=click.Path(dir_okay=False), multiple=True,
                     help=f"A file of KEY=VALUE lines added to every step's environment{here}."),
        click.option("--event", "event_file", type=click.Path(dir_okay=False), default=None,
                     help=f"A JSON file with the trigger payload, read as ${{{{ event }}}}{here}."),
        click.option("--matrix", "matrix", multiple=True, metavar="KEY:VALUE",
                     help="Run only the matrix cells where KEY is VALUE."),
        click.option("--job", "-j", "jobs", multiple=True, metavar="JOB",
                     help="Run only this job (and the jobs it needs)."),
    ]

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@main.command()
@click.argument("flow_path", metavar="FLOW", type=click.Path(dir_okay=False))
@_run_input_options(submit=False)
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help="Workspace the steps run in (default: the current directory).")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan; run nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run record as JSON at the end (progress goes to stderr).")
@click.option("--events", is_flag=True,
              help="Print the run's events as JSON lines on stdout instead of the terminal "
                   "view.")
@click.option("--quiet", "-q", is_flag=True, help="Show no step output, only failures.")
@click.option("--fail-fast", is_flag=True, help="Cancel the run as soon as a job fails.")
@click.option("--cpus", type=float, default=None,
              help="CPU slots for jobs (default: this machine's CPU count).")
@click.option("--gpus", default=None, metavar="IDS",
              help="GPU ids jobs may use, e.g. 0,1 (default: detected).")
@click.option("--grace", type=float, default=None,
              help="Seconds between SIGTERM and SIGKILL when stopping steps (default 5).")
@click.option("--no-cache", is_flag=True,
              help="Use no cache: validate the flow again even if unchanged, and run the "
                   "steps whose action results are cached (what they give is cached anew).")
@click.option("--offline", is_flag=True,
              help="Use git actions from the action cache only (also FLOWRAY_OFFLINE=1).")
@click.option("--ray", "use_ray", is_flag=True,
              help="Run each job as a Ray task on a local Ray started for the run "
                   "(--cpus and --gpus size it).")
@click.option("--address", default=None, envvar="FLOWRAY_ADDRESS", metavar="ADDR",
              help="Run each job as a Ray task on the Ray cluster at ADDR: its GCS HOST:PORT "
                   "or ray://HOST:PORT (also FLOWRAY_ADDRESS).")
@click.option("--metrics-port", type=int, default=None, metavar="PORT",
              help="Serve the run's Prometheus metrics on http://127.0.0.1:PORT/metrics "
                   "while it runs.")
@click.option("--submit-bundle", default=None, hidden=True, type=click.Path(dir_okay=False),
              help="The file `flowray submit` ships with secrets, env and event; read once "
                   "and deleted.")
def run(flow_path: str, inputs: tuple[str, ...], secrets: tuple[str, ...],
        secret_file: tuple[str, ...], env_file: tuple[str, ...], event_file: str | None,
        matrix: tuple[str, ...], jobs: tuple[str, ...], workdir: str | None, dry_run: bool,
        as_json: bool, events: bool, quiet: bool, fail_fast: bool, cpus: float | None,
        gpus: str | None, grace: float | None, no_cache: bool, offline: bool, use_ray: bool,
        address: str | None, metrics_port: int | None, submit_bundle: str | None) -> None:
    """Run the flow in FLOW (a .yaml, .yml or .json file) on this machine, or with
    --ray/--address on Ray."""
    from flowray.runtime.api import start

    workspace = os.path.abspath(workdir or os.getcwd())
    if not os.path.isdir(workspace):
        _fail(f"--workdir '{workdir}' is not a directory")
    if as_json and events:
        _fail("--json and --events both print to stdout: choose one")
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        _fail(f"--metrics-port must be a TCP port from 1 to 65535, got {metrics_port}")
    heartbeat = None if events else _heartbeat((sys.stderr if as_json else sys.stdout).isatty())
    bundle = _read_submit_bundle(submit_bundle) if submit_bundle else {}
    secret_values, env, event = _run_values(secrets, secret_file, env_file, event_file,
                                            bundle)
    matrix_filter = _pairs(matrix, "--matrix", sep=":")
    raw_inputs = _pairs(inputs, "--input")
    cpus, grace, gpu_ids = _run_numbers(cpus, grace, gpus)
    backend = address or ("ray" if use_ray else None)
    prepared = _prepared(flow_path, workspace, inputs=raw_inputs, jobs=jobs,
                         matrix=matrix_filter, offline=offline, use_cache=not no_cache,
                         secrets=list(secret_values))
    metrics: Metrics | None = None
    stop_metrics: Callable[[], None] | None = None
    try:
        try:
            if dry_run:
                if backend is None:
                    local_gpus(prepared, gpu_ids)
                for line in prepared.describe():
                    click.echo(line)
                sys.exit(EXIT_OK)
            if metrics_port is not None:  # before the run starts: a port in use starts none
                metrics, stop_metrics = _serve_metrics(metrics_port)
                if backend is None:
                    metrics.track_gpu_slots(len(local_gpus(prepared, gpu_ids)))
            if backend is not None and not backend.strip().startswith(("http://", "https://")):
                # Ray can take many seconds to start or answer: say what is going on (not for
                # a dashboard address, refused at once).
                click.echo("starting Ray (local)..." if backend == "ray" else
                           f"connecting to the Ray cluster at {backend}...", err=True)
            handle = start(flow_path, prepared=prepared, secrets=secret_values, env=env,
                           event=event, backend=backend, fail_fast=fail_fast, grace=grace,
                           cpus=cpus, gpus=gpu_ids, trigger="cli")
        except (FlowError, StartError) as exc:
            _start_failure(exc)
        watcher = metrics.watch(handle, flow=str(prepared.flow["name"])) if metrics else None
        code = _watch(handle, as_json=as_json, events=events, quiet=quiet,
                      show_backend=backend is not None, heartbeat=heartbeat)
        if watcher is not None:
            watcher.join()  # the run ended: its last events are in the metrics
    finally:
        if stop_metrics is not None:
            stop_metrics()
    sys.exit(code)


def _serve_metrics(port: int) -> tuple[Metrics, Callable[[], None]]:
    """The run's metrics and the function that stops serving them on 127.0.0.1:``port``;
    exit 2 when the port cannot be had. (prometheus_client is imported here only.)"""
    from flowray.runtime.metrics import Metrics, MetricsServerError, serve_metrics

    metrics = Metrics()
    try:
        return metrics, serve_metrics(metrics, port)
    except MetricsServerError as exc:
        _fail(f"--metrics-port {port}: {exc}")
        raise AssertionError from exc


def _submitted_logs_hint() -> str | None:
    """In a run that `flowray submit` started: the command that shows its log from where it
    was submitted (the run's own record stays on the cluster's head)."""
    from flowray.backends import SUBMISSION_ENV, SUBMITTED_TO_ENV

    sid, url = os.environ.get(SUBMISSION_ENV), os.environ.get(SUBMITTED_TO_ENV)
    return f"flowray logs {sid} --address {url}" if sid and url else None


def _heartbeat(tty: bool) -> float | None:
    """Seconds of silence after which a running step gets a "still running" line:
    ``FLOWRAY_HEARTBEAT`` (0 turns them off), else 15 on a terminal and 60 in a file or a
    pipe (a CI log gets a line a minute, not a flood)."""
    value = os.environ.get("FLOWRAY_HEARTBEAT", "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            _fail(f"FLOWRAY_HEARTBEAT must be a number of seconds, got '{value}'")
            raise AssertionError from None
        problem = number_problem(seconds, low=0, high=MAX_HEARTBEAT_SECONDS)
        if problem:
            _fail(f"FLOWRAY_HEARTBEAT {problem} (0 turns the lines off)")
        return seconds if seconds > 0 else None
    return 15.0 if tty else 60.0


def _run_numbers(cpus: float | None, grace: float | None, gpus: str | None
                 ) -> tuple[float | None, float | None, list[str] | None]:
    """--cpus, --grace and --gpus checked (finite, in range: docs/flow-syntax.md, "Limits");
    exit 2 with the option's name otherwise."""
    try:
        return check_run_numbers(cpus, grace, gpus)
    except StartError as exc:
        _fail(f"--{exc}")
        raise  # not reached: _fail exits


def _watch(handle: Run, *, as_json: bool, events: bool, quiet: bool,
           show_backend: bool, heartbeat: float | None) -> int:
    """Show the run (terminal view, or its events as JSON lines) until it ends; Ctrl-C and
    SIGTERM cancel it through its handle. The run's exit code."""
    console = Console(sys.stderr if as_json else sys.stdout, quiet=quiet,
                      color=None if not os.environ.get("NO_COLOR") else False,
                      heartbeat=heartbeat, logs_hint=_submitted_logs_hint())
    if show_backend and not quiet:
        click.echo(handle.summary, err=True)
    interrupted = {"n": 0}
    grace = handle.grace

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted["n"] += 1
        name = signal.Signals(signum).name
        if interrupted["n"] == 1:
            with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) takes no output
                console.error(f"{name}: stopping every step (SIGTERM, then SIGKILL after "
                              f"{grace:g}s)...")
        handle.cancel(reason=f"interrupted by {name}")

    in_main = threading.current_thread() is threading.main_thread()
    # SIGHUP (the terminal was closed) stops the run like SIGTERM: its steps run in sessions of
    # their own and would not get it.
    old = {s: signal.signal(s, on_signal)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)} if in_main else {}
    try:
        # Room for a second of a very chatty step before the view reads from the file.
        sub = handle.events(maxsize=100_000,
                            skip=("step.log",) if quiet and not events else ())
        out = sys.stdout
        try:
            while True:
                event = sub.get(0)
                if event is None:
                    # Nothing waiting: show what was written, then wait (with a timeout, so
                    # that signal handlers run while nothing happens).
                    (out if events else console).flush()
                    event = sub.get(0.5)
                if event is None:
                    if sub.done:
                        break
                    console.tick()
                    continue
                if events:
                    out.write(event.to_json() + "\n")
                else:
                    console.show(event)
                    console.tick()
            if events:
                out.flush()
        except OSError as exc:
            # Whoever read the output went away (`| head`, EPIPE; a closed terminal, EIO):
            # stop the run rather than leave its steps without a watcher; the record still
            # tells how it ended.
            if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EIO:
                raise
            sub.close()
            handle.cancel(reason="the output of `flowray run` was closed")
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            interrupted["n"] += 1
        record = handle.wait_record()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    problem = handle.record_error
    if problem:
        console.error(f"warning: {problem}")
    if as_json and record is not None:
        click.echo(json.dumps(record, indent=2, default=str))
    if interrupted["n"]:
        return EXIT_INTERRUPTED
    code = handle.exit_code
    return EXIT_FAILED if code is None else code


@main.command()
@click.argument("flow_path", metavar="FLOW", type=click.Path(dir_okay=False))
@click.option("--address", default=None, metavar="URL",
              help="The Ray cluster's dashboard, http://HEAD:8265 (also FLOWRAY_ADDRESS when "
                   "it is an http:// URL, or RAY_API_SERVER_ADDRESS).")
@_run_input_options(submit=True)
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help="The workspace to ship, which holds FLOW (default: the current directory).")
@click.option("--quiet", "-q", is_flag=True, help="Show no step output, only failures.")
@click.option("--fail-fast", is_flag=True, help="Cancel the run as soon as a job fails.")
@click.option("--grace", type=float, default=None,
              help="Seconds between SIGTERM and SIGKILL when stopping steps (default 5).")
@click.option("--offline", is_flag=True,
              help="Check git actions from this machine's action cache only.")
@click.option("--no-cache", is_flag=True,
              help="Use no cache, here and on the cluster (see `flowray run --no-cache`).")
@click.option("--no-wait", "--detach", "no_wait", is_flag=True,
              help="Print the submission id and return; the run goes on on the cluster.")
@click.option("--python", "python", default="python", show_default=True, metavar="CMD",
              help="The Python on the cluster's head that has flowray installed.")
def submit(flow_path: str, address: str | None, inputs: tuple[str, ...],
           secrets: tuple[str, ...], secret_file: tuple[str, ...], env_file: tuple[str, ...],
           event_file: str | None, matrix: tuple[str, ...], jobs: tuple[str, ...],
           workdir: str | None, quiet: bool, fail_fast: bool, grace: float | None,
           offline: bool, no_cache: bool, no_wait: bool, python: str) -> None:
    """Run the flow in FLOW on a Ray cluster through its Jobs API: ship the workspace, stream
    the logs, exit with the run's exit code. Ctrl-C stops the run on the cluster."""
    from flowray.backends.jobs_api import (
        JobsApiError,
        Submission,
        new_submission_id,
        resolve_address,
    )
    from flowray.execute.process import DEFAULT_GRACE_SECONDS
    from flowray.plan.flowcache import local_action_dirs
    from flowray.spec.files import action_file

    with _jobs_errors():
        url = resolve_address(address)
    workspace = os.path.abspath(workdir or os.getcwd())
    if not os.path.isdir(workspace):
        _fail(f"--workdir '{workdir}' is not a directory")
    flow_file = os.path.relpath(os.path.abspath(flow_path), workspace)
    if flow_file == os.pardir or flow_file.startswith(os.pardir + os.sep):
        _fail(f"the flow file '{flow_path}' is not in the workspace {workspace}, which is "
              f"what is shipped: move it there or give the workspace with -C")
    grace = _run_numbers(None, grace, None)[1]
    # Everything that can be checked here is checked before anything is shipped.
    secret_values, env, event = _run_values(secrets, secret_file, env_file, event_file, {})
    raw_inputs = _pairs(inputs, "--input")
    matrix_filter = _pairs(matrix, "--matrix", sep=":")
    prepared = _prepared(flow_path, workspace, inputs=raw_inputs, jobs=jobs,
                         matrix=matrix_filter, offline=offline, use_cache=not no_cache,
                         secrets=list(secret_values))
    flow = prepared.cached.data

    run_args: list[str] = []
    for item in inputs:
        run_args += ["--input", item]
    for item in matrix:
        run_args += ["--matrix", item]
    for job in jobs:
        run_args += ["--job", job]
    if fail_fast:
        run_args.append("--fail-fast")
    if grace is not None:
        run_args += ["--grace", f"{grace:g}"]
    if quiet:
        run_args.append("--quiet")
    if no_cache:
        run_args.append("--no-cache")
    carried = {k: v for k, v in (("secrets", secret_values), ("env", env), ("event", event))
               if v}
    needed = [os.path.relpath(action_file(folder), workspace)
              for folder in local_action_dirs(flow, workspace)]
    sub = Submission(
        id=new_submission_id(str(flow["name"])), workspace=workspace, flow_file=flow_file,
        flow_name=str(flow["name"]), run_args=run_args, bundle=carried or None,
        grace=grace if grace is not None else DEFAULT_GRACE_SECONDS, python=python,
        needed=[n for n in needed if n != os.pardir and not n.startswith(os.pardir + os.sep)],
    )
    api = _jobs_api(url)
    click.echo(f"shipping {workspace} to {url}...", err=True)
    try:
        with _jobs_errors():
            sid = api.submit(sub)
    except KeyboardInterrupt:
        # The id is flowray's own: a run that was started all the same is stopped.
        with contextlib.suppress(JobsApiError):
            api.stop(sub.id)
        click.echo("\ninterrupted while submitting: no run was left going", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if no_wait:
        click.echo(sid)
        click.echo(f"submitted {sid}; follow it with `flowray logs {sid} --address {url} -f`",
                   err=True)
        sys.exit(EXIT_OK)
    click.echo(f"submitted {sid} (Ctrl-C stops it; --no-wait leaves a run going)", err=True)
    sys.exit(_follow_submitted(api, sid, sub.grace))


def _follow_submitted(api: Any, sid: str, grace: float) -> int:
    """Stream the run's log until it ends; its exit code. Ctrl-C stops it on the cluster."""
    from flowray.backends.jobs_api import JobsApiError, stop_wait_seconds

    try:
        try:
            api.follow(sid, lambda chunk: click.echo(chunk, nl=False))
        except JobsApiError as exc:
            click.echo(f"warning: the log stream broke off ({exc}); waiting for the run to "
                       f"end", err=True)
        with _jobs_errors():
            run = api.wait(sid, timeout=math.inf)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: stopping {sid} on the cluster (its steps get SIGTERM, "
                   f"then SIGKILL after {grace:g}s)...", err=True)
        with _jobs_errors():
            api.stop(sid)
            try:
                run = api.wait(sid, timeout=stop_wait_seconds(grace) + 5)
            except KeyboardInterrupt:
                click.echo(f"not waiting: {sid} goes on stopping on the cluster", err=True)
                return EXIT_INTERRUPTED
        if run.ended_status:
            click.echo(f"run {sid} {run.status}: stopped on the cluster", err=True)
        else:
            click.echo(f"run {sid} is still {run.status}: Ray goes on stopping it (see "
                       f"`flowray status {sid} --address {api.address}`)", err=True)
        return EXIT_INTERRUPTED
    took = _fmt_dur(run.started, run.ended)
    click.echo(f"run {sid} {run.status} (exit {run.exit_code}) in {took}; logs: flowray logs "
               f"{sid} --address {api.address}", err=True)
    missing = api.missing_flowray(run)  # the cluster's Python has no flowray
    if missing is not None:
        click.echo(f"error: {missing}", err=True)
    elif run.status == "FAILED" and run.exit_code not in (EXIT_FAILED, EXIT_INVALID) \
            and run.message:
        # Not flowray's own failure (its log says what failed): Ray's reason, e.g. a runtime
        # environment that could not be set up, or no --python of that name there. (Ray adds the
        # end of the log, which was streamed already.)
        reason = run.message.splitlines()[0].split(", last available logs")[0]
        click.echo(f"error: {reason}", err=True)
    return int(run.exit_code)


