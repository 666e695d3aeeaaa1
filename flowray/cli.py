"""The ``flowray`` command line: parses arguments, calls the API, maps errors to exit codes.

Exit codes: 0 every job succeeded or was skipped; 1 a job failed; 2 an invalid flow or bad
arguments; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, TypeVar

import click

from flowray import __version__

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def _stderr_color() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def _fail(message: str, code: int = EXIT_INVALID) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message
               if _stderr_color() else f"error: {message}", err=True)
    sys.exit(code)


def _pairs(values: Sequence[str], what: str, sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            _fail(f"{what} '{item}' is not {('KEY' + sep + 'VALUE')}")
        out[key.strip()] = value
    return out


def read_env_file(path: str, what: str) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments, blank lines, ``export`` and quotes allowed."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        _fail(f"{what} '{path}': {exc.strerror or exc}")
        raise AssertionError from exc
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        text = text.removeprefix("export ").strip()
        key, found, value = text.partition("=")
        if not found or not key.strip():
            _fail(f"{path}:{n}: {what} line is not KEY=VALUE: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _read_submit_bundle(path: str) -> dict[str, Any]:
    """The secrets, env and event that `flowray submit` shipped; the file is deleted once
    read, so that the values do not stay on the cluster's disk."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        _fail(f"--submit-bundle '{path}': {exc}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    if not isinstance(data, dict):
        _fail(f"--submit-bundle '{path}' is not a JSON object")
    return dict(data)


def _print_diagnostics(exc: Exception) -> None:
    diagnostics = getattr(exc, "diagnostics", None)
    color = _stderr_color()
    if diagnostics:
        for d in diagnostics:
            click.echo(d.format(color=color), err=True)
    else:
        click.echo(str(exc), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowray")
def main() -> None:
    """Run DataTorch-style flows: on this machine, on a Ray cluster, or as a service."""


# ----------------------------------------------------------------------------- validate


@main.command()
@click.argument("flows", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help="Workspace that local actions ('./path') are relative to (default: here).")
@click.option("--offline", is_flag=True,
              help="Check git actions from the action cache only (also FLOWRAY_OFFLINE=1).")
def validate(flows: tuple[str, ...], workdir: str | None, offline: bool) -> None:
    """Check flow files; report every error as file:line:col: key.path: message.

    Git actions are fetched (or taken from the action cache) so that their action files and
    the inputs steps give them are checked too.
    """
    from flowray.spec import FlowError, load_flow

    workspace = os.path.abspath(workdir or os.getcwd())
    bad = False
    color = _stderr_color()
    from flowray.store.flowcache import LazyGitActions

    for path in flows:
        pinner = _lazy_pinner(workspace, True if offline else None, path)
        try:
            loaded = load_flow(path, workspace=workspace, git_action=LazyGitActions(pinner))
        except FlowError as exc:
            bad = True
            _print_diagnostics(exc)
            continue
        for w in loaded.warnings:
            click.echo(w.format(color=color), err=True)
        n = len(loaded.data["jobs"])
        click.echo(f"{path}: ok ({n} job{'s' if n != 1 else ''})")
    sys.exit(EXIT_INVALID if bad else EXIT_OK)


@main.command()
@click.argument("kind", type=click.Choice(["flow", "action"]))
def schema(kind: str) -> None:
    """Print the JSON Schema of flow or action files (for editors)."""
    from flowray.spec import action_schema, flow_schema

    click.echo(json.dumps(flow_schema() if kind == "flow" else action_schema(), indent=2))


# ----------------------------------------------------------------------------- actions


def _lazy_pinner(workspace: str, offline: bool | None, flow: str | None = None) -> Any:
    """A function returning the run's one ActionPinner, made on first use (it imports the
    actions package, which flows without git actions never need). ``offline``: True or False
    overrides the configuration; None keeps it."""
    made: list[Any] = []

    def get() -> Any:
        if not made:
            from flowray.plan.pins import ActionPinner

            config = _actions_config(workspace, offline)
            made.append(ActionPinner(config, on_event=lambda line: click.echo(line, err=True),
                                     flow=flow))
        return made[0]

    return get


def _actions_config(workspace: str, offline: bool | None = None) -> Any:
    from flowray.actions import ActionError, load_config

    try:
        return load_config(workspace, offline=offline)
    except ActionError as exc:
        _fail(str(exc))


def _step_actions(cached: Any, pinner: Any) -> dict[str, dict[int, Any]]:
    """Each job's pinned git actions by step index, with requirements environments made."""
    if not cached.git:
        return {}
    from flowray.actions import ActionError, ensure_venv
    from flowray.execute.job import StepAction
    from flowray.plan.plan import is_git_action

    pythons: dict[str, str | None] = {}
    out: dict[str, dict[int, Any]] = {}
    for job_id, job in cached.data["jobs"].items():
        for i, step in enumerate(job["steps"]):
            if step["action"] is None or not is_git_action(step["action"]):
                continue
            g = cached.git.get(pinner().key_of(step["action"]))
            if g is None:
                continue
            if g.key not in pythons:
                pythons[g.key] = None
                if g.data["runs"]["using"] == "python":
                    try:
                        pythons[g.key] = ensure_venv(
                            pinner().pins[g.key], python=sys.executable,
                            system_site_packages=pinner().config.system_site_packages,
                        )
                    except ActionError as exc:
                        _fail(str(exc))
            out.setdefault(job_id, {})[i] = StepAction(
                g.path, g.data, pythons[g.key], pin=pinner().pins[g.key],
                system_site_packages=pinner().config.system_site_packages)
    return out


@contextlib.contextmanager
def _hold_actions(cached: Any, pinner: Any) -> Iterator[None]:
    """Keep `flowray actions prune` away from the cache entries this run uses."""
    if not cached.git:
        yield
        return
    with pinner().cache.hold([pinner().pins[key] for key in cached.git]):
        yield


@main.group()
def actions() -> None:
    """Manage the cache of git-hosted actions."""


@actions.command("fetch")
@click.argument("flows", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None)
def actions_fetch(flows: tuple[str, ...], workdir: str | None) -> None:
    """Resolve and fetch every git action the flows use, and make the requirements
    environments of their python actions (for later --offline runs)."""
    from flowray.actions import ActionError, ensure_venv
    from flowray.plan.plan import git_refs_of
    from flowray.spec import FlowError, load_flow
    from flowray.store.flowcache import LazyGitActions

    workspace = os.path.abspath(workdir or os.getcwd())
    bad = False
    for path in flows:
        pinner = _lazy_pinner(workspace, False, path)  # fetching is never offline
        try:
            loaded = load_flow(path, workspace=workspace, git_action=LazyGitActions(pinner))
            written = git_refs_of(loaded.data)
            pinned = pinner().resolve(written) if written else {}
            for g in pinner().loaded.values() if written else ():
                if g.data["runs"]["using"] == "python":
                    ensure_venv(pinned[g.key], python=sys.executable,
                                system_site_packages=pinner().config.system_site_packages)
        except FlowError as exc:
            _print_diagnostics(exc)
            bad = True
            continue
        except ActionError as exc:
            click.echo(f"error: {exc}", err=True)
            bad = True
            continue
        for p in pinned.values():
            click.echo(f"{p.ref.display()}  {p.sha}  {p.path}")
        if not written:
            click.echo(f"{path}: no git actions")
    sys.exit(EXIT_INVALID if bad else EXIT_OK)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@actions.command("list")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
def actions_list(workdir: str | None, as_json: bool) -> None:
    """List cached actions: repository, commit, size, tags, last use."""
    from flowray.actions import ActionCache

    config = _actions_config(os.path.abspath(workdir or os.getcwd()))
    entries = ActionCache(config.cache_dir).entries()
    if as_json:
        click.echo(json.dumps([{"repo": e.repo, "sha": e.sha, "size": e.size,
                                "last_used": e.last_used, "tags": list(e.tags),
                                "path": e.path} for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no actions cached in {config.cache_dir}")
        return
    click.echo(f"{'REPOSITORY':<36} {'COMMIT':<12} {'SIZE':>9}  {'LAST USED':<19}  TAGS")
    for e in entries:
        click.echo(f"{e.repo:<36} {e.sha[:12]:<12} {_size(e.size):>9}  "
                   f"{_fmt_time(e.last_used):<19}  {', '.join(e.tags)}")


@actions.command("prune")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None)
@click.option("--older-than", type=float, default=None, metavar="DAYS",
              help="Remove only entries unused for this many days (default: remove all).")
def actions_prune(workdir: str | None, older_than: float | None) -> None:
    """Remove cached actions (all, or those unused for --older-than DAYS)."""
    from flowray.actions import ActionCache

    config = _actions_config(os.path.abspath(workdir or os.getcwd()))
    removed = ActionCache(config.cache_dir).prune(
        older_than=None if older_than is None else older_than * 86400
    )
    total = sum(e.size for e in removed)
    click.echo(f"removed {len(removed)} cached action(s), {_size(total)}")


# ----------------------------------------------------------------------------- run


def _coerce_run_inputs(flow: dict[str, Any], raw: dict[str, str]) -> dict[str, Any]:
    """Apply the types and defaults that ``triggers.manual.inputs`` declares, if any."""
    triggers = flow.get("triggers")
    manual = triggers.get("manual") if isinstance(triggers, dict) else None
    declared = manual.get("inputs") if isinstance(manual, dict) else None
    if not isinstance(declared, dict):
        return dict(raw)
    from flowray.spec.inputs import InputError, coerce_input

    out: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec if isinstance(spec, dict) else {}
        full = {"type": spec.get("type", "string"), "required": bool(spec.get("required")),
                "default": spec.get("default"), "description": spec.get("description")}
        if name in raw:
            value: Any = raw[name]
        elif full["default"] is not None:
            value = full["default"]
        elif full["required"]:
            _fail(f"input '{name}' is required by this flow (--input {name}=VALUE)")
            raise AssertionError
        else:
            continue
        try:
            out[name] = coerce_input(name, full, value)  # type: ignore[arg-type]
        except InputError as exc:
            _fail(f"--input: {exc}")
    for name, value in raw.items():
        out.setdefault(name, value)
    return out


def _run_values(secrets: Sequence[str], secret_files: Sequence[str], env_files: Sequence[str],
                event_file: str | None, bundle: dict[str, Any]
                ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The run's secrets, --env-file values and event, from the options (over what a submitted
    run's ``bundle`` brought)."""
    secret_values: dict[str, str] = dict(bundle.get("secrets", {}))
    for f in secret_files:
        secret_values.update(read_env_file(f, "--secret-file"))
    secret_values.update(_pairs(secrets, "--secret"))
    env: dict[str, str] = dict(bundle.get("env", {}))
    for f in env_files:
        env.update(read_env_file(f, "--env-file"))
    event: dict[str, Any] = dict(bundle.get("event", {}))
    if event_file:
        try:
            with open(event_file, encoding="utf-8") as fh:
                event = json.load(fh)
        except (OSError, ValueError) as exc:
            _fail(f"--event '{event_file}': {exc}")
    return secret_values, env, event


F = TypeVar("F", bound=Callable[..., Any])


def _run_input_options(*, submit: bool) -> Callable[[F], F]:
    """The options that give a run its inputs and pick its jobs, shared by `run` and `submit`
    (which reads the files here and ships what they hold)."""
    here = " (read here)" if submit else ""
    options = [
        click.option("--input", "-i", "inputs", multiple=True, metavar="KEY=VALUE",
                     help="A run input, read as ${{ inputs.KEY }}."),
        click.option("--secret", "-s", "secrets", multiple=True, metavar="NAME=VALUE",
                     help="A secret; shipped in a private file, never on the job's command line."
                     if submit else
                     "A secret, read as ${{ secrets.NAME }}; masked as *** everywhere."),
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
@click.option("--quiet", "-q", is_flag=True, help="Show no step output, only failures.")
@click.option("--fail-fast", is_flag=True, help="Cancel the run as soon as a job fails.")
@click.option("--cpus", type=float, default=None,
              help="CPU slots for jobs (default: this machine's CPU count).")
@click.option("--gpus", default=None, metavar="IDS",
              help="GPU ids jobs may use, e.g. 0,1 (default: detected).")
@click.option("--grace", type=float, default=None,
              help="Seconds between SIGTERM and SIGKILL when stopping steps (default 5).")
@click.option("--no-cache", is_flag=True, help="Validate the flow again even if unchanged.")
@click.option("--offline", is_flag=True,
              help="Use git actions from the action cache only (also FLOWRAY_OFFLINE=1).")
@click.option("--ray", "use_ray", is_flag=True,
              help="Run each job as a Ray task on a local Ray started for the run "
                   "(--cpus and --gpus size it).")
@click.option("--address", default=None, envvar="FLOWRAY_ADDRESS", metavar="ADDR",
              help="Run each job as a Ray task on the Ray cluster at ADDR: its GCS HOST:PORT "
                   "or ray://HOST:PORT (also FLOWRAY_ADDRESS).")
@click.option("--submit-bundle", default=None, hidden=True, type=click.Path(dir_okay=False),
              help="The file `flowray submit` ships with secrets, env and event; read once "
                   "and deleted.")
def run(flow_path: str, inputs: tuple[str, ...], secrets: tuple[str, ...],
        secret_file: tuple[str, ...], env_file: tuple[str, ...], event_file: str | None,
        matrix: tuple[str, ...], jobs: tuple[str, ...], workdir: str | None, dry_run: bool,
        as_json: bool, quiet: bool, fail_fast: bool, cpus: float | None, gpus: str | None,
        grace: float | None, no_cache: bool, offline: bool, use_ray: bool,
        address: str | None, submit_bundle: str | None) -> None:
    """Run a flow on this machine, or with --ray/--address on Ray."""
    sys.exit(run_flow_command(**locals()))


def run_flow_command(*, flow_path: str, inputs: tuple[str, ...], secrets: tuple[str, ...],
                     secret_file: tuple[str, ...], env_file: tuple[str, ...],
                     event_file: str | None, matrix: tuple[str, ...], jobs: tuple[str, ...],
                     workdir: str | None, dry_run: bool, as_json: bool, quiet: bool,
                     fail_fast: bool, cpus: float | None, gpus: str | None,
                     grace: float | None, no_cache: bool, offline: bool = False,
                     use_ray: bool = False, address: str | None = None,
                     submit_bundle: str | None = None) -> int:
    from flowray.cluster.coordinator import Coordinator, RunOptions
    from flowray.cluster.local import LocalPool, detect_gpus
    from flowray.console import Console
    from flowray.execute.process import DEFAULT_GRACE_SECONDS
    from flowray.plan.graph import CycleError
    from flowray.plan.plan import PlanError, build_plan
    from flowray.store.flowcache import ActionTable, load_flow

    workspace = os.path.abspath(workdir or os.getcwd())
    if not os.path.isdir(workspace):
        _fail(f"--workdir '{workdir}' is not a directory")
    bundle = _read_submit_bundle(submit_bundle) if submit_bundle else {}
    secret_values, env, event = _run_values(secrets, secret_file, env_file, event_file,
                                            bundle)
    matrix_filter = _pairs(matrix, "--matrix", sep=":")
    raw_inputs = _pairs(inputs, "--input")
    if cpus is not None and cpus <= 0:
        _fail("--cpus must be more than 0")

    pinner = _lazy_pinner(workspace, True if offline else None, flow_path)
    try:
        cached = load_flow(flow_path, workspace, use_cache=not no_cache, pinner=pinner)
    except Exception as exc:
        if type(exc).__name__ != "FlowError":
            raise
        _print_diagnostics(exc)
        return EXIT_INVALID
    color = _stderr_color()
    for w in cached.warnings:
        click.echo(click.style(w, fg="yellow") if color else w, err=True)
    flow = cached.data
    try:
        plan = build_plan(flow, matrix_filter=matrix_filter, only_jobs=jobs)
    except (PlanError, CycleError) as exc:
        _fail(str(exc))
        raise AssertionError from exc
    gpu_ids = [g for g in gpus.split(",") if g.strip()] if gpus is not None else None
    total_cpus = cpus if cpus is not None else float(os.cpu_count() or 1)
    on_ray = use_ray or bool(address)
    if not on_ray:  # Ray's nodes are checked once connected
        gpu_ids = gpu_ids if gpu_ids is not None else detect_gpus()
        for j in plan.jobs:
            if j.data["resources"]["nodes"] > 1:
                from flowray.cluster.local import multi_node_refusal

                _fail(multi_node_refusal(j.key, j.data["resources"]))
            want = j.data["resources"]["gpus"]
            if want and want > len(gpu_ids):
                _fail(f"job '{j.key}' needs {want} GPU{'s' if want > 1 else ''}; this machine "
                      f"has {len(gpu_ids)} (set --gpus or FLOWRAY_GPUS to name them)")
    if dry_run:
        click.echo(f"flow {flow['name']}: {len(plan.jobs)} job(s)")
        for line in plan.describe():
            click.echo(line)
        return EXIT_OK
    run_inputs = _coerce_run_inputs(dict(flow), raw_inputs)

    console = Console(sys.stderr if as_json else sys.stdout, quiet=quiet,
                      color=None if not os.environ.get("NO_COLOR") else False)
    options = RunOptions(
        workspace=workspace, flow_path=os.path.relpath(os.path.abspath(flow_path), workspace),
        inputs=run_inputs, secrets=secret_values, env=env, event=event, fail_fast=fail_fast,
        grace=grace if grace is not None else DEFAULT_GRACE_SECONDS,
        step_actions=_step_actions(cached, pinner),
        action_commits={g.display: g.sha for g in cached.git.values()},
    )
    actions = ActionTable(cached.actions)
    cluster = _ray_cluster(address or None, cpus, gpu_ids, plan, quiet) if on_ray else None
    coordinator = Coordinator(
        plan, options, console=console,
        gpu_count=cluster.gpus if cluster else len(gpu_ids or []),
        dispatcher_factory=(
            functools.partial(cluster.dispatcher, console=console, load_action=actions)
            if cluster else lambda c: LocalPool(
                cpus=total_cpus, gpus=gpu_ids or [], console=console, masker=c.masker,
                load_action=actions, grace=options.grace,
            )
        ),
    )

    interrupted = {"n": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted["n"] += 1
        name = signal.Signals(signum).name
        if interrupted["n"] == 1:
            console.error(f"{name}: stopping every step (SIGTERM, then SIGKILL after "
                          f"{options.grace:g}s)...")
        coordinator.cancel(f"interrupted by {name}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _hold_actions(cached, pinner):
            result = coordinator.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if cluster:
            cluster.close()
    _print_summary(console, result.record)
    if as_json:
        click.echo(json.dumps(result.record, indent=2, default=str))
    if interrupted["n"]:
        return EXIT_INTERRUPTED
    return result.exit_code


def _ray_cluster(address: str | None, cpus: float | None, gpus: list[str] | None, plan: Any,
                 quiet: bool) -> Any:
    """The Ray of `run --ray` (embedded) or `--address`, with every job checked against it."""
    from flowray.cluster.raydispatch import RayCluster, RayConnectError

    if address and (cpus is not None or gpus is not None):
        _fail("--cpus and --gpus size the local Ray of --ray; the cluster at --address "
              "(or FLOWRAY_ADDRESS) has its own")
    try:
        cluster = RayCluster.connect(address, cpus=cpus, gpus=gpus)
    except RayConnectError as exc:
        _fail(str(exc))
        raise AssertionError from exc
    problems = cluster.unfit(plan.jobs)
    if problems:
        cluster.close()
        _fail("\n".join(problems))
    if not quiet:
        click.echo(cluster.summary(), err=True)
    return cluster


def _print_summary(console: Any, record: dict[str, Any]) -> None:
    jobs = record["jobs"]
    counts: dict[str, int] = {}
    for j in jobs.values():
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    took = (record["ended"] or 0) - (record["started"] or 0)
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.info(f"run {record['id']} {record['status']} in {took:.2f}s ({parts}); "
                 f"logs: flowray logs {record['id']}")


# ----------------------------------------------------------------------------- submit


def _jobs_api(address: str) -> Any:
    """The Jobs API of the cluster whose dashboard is at ``address`` (exit 2 if it fails)."""
    from flowray.cluster.jobs_api import JobsApi, JobsApiError

    try:
        return JobsApi.connect(address)
    except JobsApiError as exc:
        _fail(str(exc), exc.code)


def _remote(address: str) -> Any:
    from flowray.cluster.jobs_api import JobsApiError, check_address

    try:
        return _jobs_api(check_address(address, "--address"))
    except JobsApiError as exc:
        _fail(str(exc), exc.code)


@contextlib.contextmanager
def _jobs_errors() -> Iterator[None]:
    """A Jobs API error becomes its message and exit code."""
    from flowray.cluster.jobs_api import JobsApiError

    try:
        yield
    except JobsApiError as exc:
        _fail(str(exc), exc.code)


def _validated_flow(flow_path: str, workspace: str, offline: bool) -> Any:
    """The flow as `flowray validate` checks it; None (diagnostics printed) if invalid."""
    from flowray.spec import FlowError, load_flow
    from flowray.store.flowcache import LazyGitActions

    pinner = _lazy_pinner(workspace, True if offline else None, flow_path)
    try:
        loaded = load_flow(flow_path, workspace=workspace, git_action=LazyGitActions(pinner))
    except FlowError as exc:
        _print_diagnostics(exc)
        return None
    color = _stderr_color()
    for w in loaded.warnings:
        click.echo(w.format(color=color), err=True)
    return loaded.data


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
@click.option("--no-wait", "--detach", "no_wait", is_flag=True,
              help="Print the submission id and return; the run goes on on the cluster.")
@click.option("--python", "python", default="python", show_default=True, metavar="CMD",
              help="The Python on the cluster's head that has flowray installed.")
def submit(flow_path: str, address: str | None, inputs: tuple[str, ...],
           secrets: tuple[str, ...], secret_file: tuple[str, ...], env_file: tuple[str, ...],
           event_file: str | None, matrix: tuple[str, ...], jobs: tuple[str, ...],
           workdir: str | None, quiet: bool, fail_fast: bool, grace: float | None,
           offline: bool, no_wait: bool, python: str) -> None:
    """Run a flow on a Ray cluster through its Jobs API: ship the workspace, stream the
    logs, exit with the run's exit code. Ctrl-C stops the run on the cluster."""
    from flowray.cluster.jobs_api import (
        JobsApiError,
        Submission,
        new_submission_id,
        resolve_address,
    )
    from flowray.execute.process import DEFAULT_GRACE_SECONDS
    from flowray.plan.graph import CycleError
    from flowray.plan.plan import PlanError, build_plan
    from flowray.store.flowcache import action_file, local_action_dirs

    with _jobs_errors():
        url = resolve_address(address)
    workspace = os.path.abspath(workdir or os.getcwd())
    if not os.path.isdir(workspace):
        _fail(f"--workdir '{workdir}' is not a directory")
    flow_file = os.path.relpath(os.path.abspath(flow_path), workspace)
    if flow_file == os.pardir or flow_file.startswith(os.pardir + os.sep):
        _fail(f"the flow file '{flow_path}' is not in the workspace {workspace}, which is "
              f"what is shipped: move it there or give the workspace with -C")
    if grace is not None and grace < 0:
        _fail("--grace must be 0 or more")
    # Everything that can be checked here is checked before anything is shipped.
    secret_values, env, event = _run_values(secrets, secret_file, env_file, event_file, {})
    raw_inputs = _pairs(inputs, "--input")
    matrix_filter = _pairs(matrix, "--matrix", sep=":")
    flow = _validated_flow(flow_path, workspace, offline)
    if flow is None:
        sys.exit(EXIT_INVALID)
    try:
        build_plan(flow, matrix_filter=matrix_filter, only_jobs=jobs)
    except (PlanError, CycleError) as exc:
        _fail(str(exc))
    _coerce_run_inputs(dict(flow), raw_inputs)

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
    from flowray.cluster.jobs_api import JobsApiError, stop_wait_seconds

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
    click.echo(f"run {sid} {run.status} (exit {run.exit_code}) in {took}", err=True)
    if run.status == "FAILED" and run.exit_code not in (EXIT_FAILED, EXIT_INVALID) \
            and run.message:
        # Not flowray's own failure (its log says what failed): Ray's reason, e.g. a runtime
        # environment that could not be set up, or no flowray on the cluster. (Ray adds the
        # end of the log, which was streamed already.)
        reason = run.message.splitlines()[0].split(", last available logs")[0]
        click.echo(f"error: {reason}", err=True)
    return int(run.exit_code)


# ----------------------------------------------------------------------------- records


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _fmt_dur(start: float | None, end: float | None) -> str:
    if not start or not end:
        return "-"
    return f"{end - start:.2f}s"


_ADDRESS_HELP = ("A Ray cluster's dashboard, http://HEAD:8265: the runs submitted there "
                 "(default: the runs recorded in this workspace).")


@main.command()
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None)
@click.option("--limit", "-n", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--address", default=None, metavar="URL", help=_ADDRESS_HELP)
@click.option("--all", "every_job", is_flag=True,
              help="With --address: every Ray job, not only those flowray submitted.")
def runs(workdir: str | None, limit: int, as_json: bool, address: str | None,
         every_job: bool) -> None:
    """List runs, newest first: those recorded in this workspace, or with --address those
    submitted to a Ray cluster."""
    if address:
        _list_remote(address, limit, as_json, every_job)
        return
    from flowray.store.records import iter_runs

    items = []
    for i, r in enumerate(iter_runs(os.path.abspath(workdir or os.getcwd()))):
        if i >= limit:
            break
        items.append(r)
    if as_json:
        click.echo(json.dumps([{"id": r.id, "flow": r.flow, "status": r.status,
                                "started": r.started, "ended": r.ended} for r in items],
                              indent=2))
        return
    if not items:
        click.echo("no runs yet")
        return
    click.echo(f"{'RUN':<24} {'STATUS':<10} {'STARTED':<20} {'TOOK':>8}  FLOW")
    for r in items:
        click.echo(f"{r.id:<24} {r.status:<10} {_fmt_time(r.started):<20} "
                   f"{_fmt_dur(r.started, r.ended):>8}  {r.flow}")


main.add_command(runs, name="list")


def _list_remote(address: str, limit: int, as_json: bool, every_job: bool) -> None:
    api = _remote(address)
    with _jobs_errors():
        items = api.runs(everything=every_job)[:limit]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in items], indent=2))
        return
    if not items:
        click.echo(f"no runs submitted to {api.address} yet")
        return
    width = max(24, *(len(r.id) for r in items))
    click.echo(f"{'ID':<{width}} {'STATUS':<10} {'STARTED':<20} {'TOOK':>8}  FLOW")
    for r in items:
        flow = r.flow or ("-" if r.flowray else f"(not flowray: {r.entrypoint})")
        click.echo(f"{r.id:<{width}} {r.status:<10} {_fmt_time(r.started):<20} "
                   f"{_fmt_dur(r.started, r.ended):>8}  {flow}")


def _load_run(workdir: str | None, ref: str) -> tuple[str, dict[str, Any]]:
    from flowray.store.records import RecordError, find_run, read_record

    try:
        path = find_run(os.path.abspath(workdir or os.getcwd()), ref)
        return path, read_record(path)
    except RecordError as exc:
        _fail(str(exc))
        raise AssertionError from exc


@main.command()
@click.argument("run_ref", metavar="[RUN]", default="last")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--address", default=None, metavar="URL",
              help="A Ray cluster's dashboard, http://HEAD:8265: RUN is a run submitted there.")
def status(run_ref: str, workdir: str | None, as_json: bool, address: str | None) -> None:
    """Show a run's jobs and steps (RUN: id, unique prefix, or 'last')."""
    if address:
        _status_remote(address, run_ref, as_json)
        return
    _, rec = _load_run(workdir, run_ref)
    if as_json:
        click.echo(json.dumps(rec, indent=2))
        return
    click.echo(f"run {rec['id']}  flow {rec['flow']['name']}  {rec['status']}"
               f"  exit {rec.get('exit_code')}  {_fmt_dur(rec['started'], rec['ended'])}")
    for key, job in rec["jobs"].items():
        attempts = f"  attempts {job['attempts']}" if job.get("attempts", 0) > 1 else ""
        err = f"  ({job['error']})" if job.get("error") else ""
        node = f"  on {job['node']}" if job.get("node") and not job.get("ranks") else ""
        click.echo(f"  {key:<24} {job['status']:<10} "
                   f"{_fmt_dur(job['started'], job['ended']):>8}{attempts}{node}{err}")
        for prev in job.get("previous_attempts") or ():
            where = f" on {prev['node']}" if prev.get("node") else ""
            why = f" ({prev['error']})" if prev.get("error") else ""
            click.echo(f"    attempt {prev['attempt']}: {prev['status']}{where}{why}")
        for rank in job.get("ranks") or ():
            why = f" ({rank['error']})" if rank.get("error") else ""
            click.echo(f"    rank {rank['rank']}: {rank['status']} on {rank['node'] or '-'}{why}")
        for step in job["steps"]:
            code = "" if step.get("exit_code") is None else f"  exit {step['exit_code']}"
            serr = f"  ({step['error']})" if step.get("error") else ""
            click.echo(f"    {step['key']:<22} {step['status']:<10} "
                       f"{_fmt_dur(step.get('started'), step.get('ended')):>8}{code}{serr}")
            if step.get("outputs"):
                click.echo(f"      outputs: {json.dumps(step['outputs'])}")
        if job.get("outputs"):
            click.echo(f"    outputs: {json.dumps(job['outputs'])}")


def _status_remote(address: str, ref: str, as_json: bool) -> None:
    api = _remote(address)
    with _jobs_errors():
        run = api.find(ref)
    if as_json:
        click.echo(json.dumps(run.to_json(), indent=2))
        return
    code = f"  exit {run.exit_code}" if run.ended_status else ""
    click.echo(f"run {run.id}  flow {run.flow or '-'}  {run.status}{code}  "
               f"{_fmt_dur(run.started, run.ended or (time.time() if run.started else None))}")
    click.echo(f"  started     {_fmt_time(run.started)}")
    click.echo(f"  ended       {_fmt_time(run.ended)}")
    click.echo(f"  entrypoint  {run.entrypoint}")
    if run.message:
        click.echo(f"  message     {run.message}")
    click.echo(f"  logs        flowray logs {run.id} --address {api.address}")


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("target", metavar="[JOB[/STEP]]", required=False)
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None)
@click.option("--address", default=None, metavar="URL",
              help="A Ray cluster's dashboard, http://HEAD:8265: RUN is a run submitted there.")
@click.option("--follow", "-f", is_flag=True,
              help="With --address: go on printing the log as it grows, until the run ends.")
def logs(run_ref: str, target: str | None, workdir: str | None, address: str | None,
         follow: bool) -> None:
    """Print the logs of a run, one job, or one step (RUN: id, prefix or 'last')."""
    if address:
        _logs_remote(address, run_ref, target, follow)
        return
    if follow:
        _fail("--follow needs --address (a run submitted to a cluster); a local run prints "
              "its output in the terminal that started it")
    path, rec = _load_run(workdir, run_ref)
    job_key, _, step_key = (target or "").partition("/")
    jobs = rec["jobs"]
    if job_key and job_key not in jobs:
        _fail(f"run {rec['id']} has no job '{job_key}' (jobs: {', '.join(jobs)})")
    shown = 0
    for key, job in jobs.items():
        if job_key and key != job_key:
            continue
        steps = job["steps"]
        if step_key and not any(s["key"] == step_key for s in steps):
            _fail(f"job '{key}' has no step '{step_key}' "
                  f"(steps: {', '.join(s['key'] for s in steps)})")
        sources = _log_sources(job)
        for where, source in sources:
            for step in source:
                if step_key and step["key"] != step_key:
                    continue
                if not step.get("log"):
                    continue
                try:
                    with open(os.path.join(path, step["log"]), encoding="utf-8",
                              errors="replace") as fh:
                        text = fh.read()
                except OSError:
                    continue
                if not (job_key and step_key and len(sources) == 1):
                    click.echo(f"==> {key}/{step['key']}{where} ({step['status']}) <==")
                click.echo(text, nl=False)
                shown += 1
    if not shown and step_key:
        click.echo(f"(step {job_key}/{step_key} wrote no log: it did not run)", err=True)


def _log_sources(job: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """A job's step lists whose logs `flowray logs` shows: earlier attempts first, then the
    last one, then the other ranks of a multi-node job; each with its label."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    previous = job.get("previous_attempts") or []
    for prev in previous:
        out.append((f" [attempt {prev['attempt']}: {prev['status']}]", prev.get("steps") or []))
    last = f" [attempt {job.get('attempts', 1)}]" if previous else ""
    out.append((last, job["steps"]))
    for rank in (job.get("ranks") or [])[1:]:
        label = f" [{last[2:-1]}, rank {rank['rank']}]" if last else f" [rank {rank['rank']}]"
        out.append((label, rank.get("steps") or []))
    return out


def _logs_remote(address: str, ref: str, target: str | None, follow: bool) -> None:
    if target:
        _fail(f"a submitted run's log is one stream: JOB[/STEP] ('{target}') selects from "
              f"the records of local runs only")
    api = _remote(address)
    with _jobs_errors():
        run = api.find(ref)
        if not follow:
            click.echo(api.logs(run.id), nl=False)
            return
        try:
            api.follow(run.id, lambda chunk: click.echo(chunk, nl=False))
        except KeyboardInterrupt:
            click.echo(f"\nstopped following {run.id}; the run goes on (`flowray cancel "
                       f"{run.id} --address {api.address}` stops it)", err=True)
            sys.exit(EXIT_INTERRUPTED)


# ----------------------------------------------------------------------------- cancel


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None)
@click.option("--address", default=None, metavar="URL",
              help="A Ray cluster's dashboard, http://HEAD:8265: RUN is a run submitted there.")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS",
              help="How long to wait for the run to stop (default: 15 here, 60 on a cluster).")
def cancel(run_ref: str, workdir: str | None, address: str | None,
           wait_s: float | None) -> None:
    """Cancel a running run (RUN: id, unique prefix, or 'last') and wait until it stopped.

    A local run's process gets SIGTERM, as with Ctrl-C: every step gets SIGTERM, then SIGKILL
    after the grace period. With --address, Ray stops the submitted run the same way.
    """
    if wait_s is not None and wait_s < 0:
        _fail("--wait must be 0 or more")
    if address:
        _cancel_remote(address, run_ref, 60.0 if wait_s is None else wait_s)
    else:
        _cancel_local(workdir, run_ref, 15.0 if wait_s is None else wait_s)


def _cancel_remote(address: str, ref: str, wait_s: float) -> None:
    api = _remote(address)
    with _jobs_errors():
        run = api.find(ref)
        if run.ended_status:
            _fail(f"run {run.id} already ended: {run.status}", EXIT_FAILED)
        api.stop(run.id)
        click.echo(f"stopping {run.id} on {api.address}...", err=True)
        run = api.wait(run.id, timeout=wait_s)
    if not run.ended_status:
        _fail(f"run {run.id} is still {run.status} after {wait_s:g}s; Ray goes on stopping "
              f"it (see `flowray status {run.id} --address {api.address}`)", EXIT_FAILED)
    if run.status != "STOPPED":
        _fail(f"run {run.id} ended before it could be stopped: {run.status}", EXIT_FAILED)
    click.echo(f"run {run.id} {run.status}")


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch); None if it is gone (or a
    zombie). Where /proc is missing: the current time if the process exists."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return time.time()
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    if fields[0] == "Z":
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _cancel_local(workdir: str | None, ref: str, wait_s: float) -> None:
    import socket

    from flowray.store.records import RecordError, read_record

    path, rec = _load_run(workdir, ref)
    run_id, state = rec.get("id", ref), rec.get("status")
    if state != "running":
        _fail(f"run {run_id} already ended: {state}", EXIT_FAILED)
    pid, host = rec.get("pid"), rec.get("host")
    if not isinstance(pid, int) or not host:
        _fail(f"run {run_id} was recorded by a flowray that did not record its process: stop "
              f"it with Ctrl-C in the terminal where it runs", EXIT_FAILED)
        raise AssertionError
    here = socket.gethostname()
    if host != here:
        _fail(f"run {run_id} runs on host '{host}', not on this one ('{here}'): run "
              f"`flowray cancel {run_id}` there", EXIT_FAILED)
    started = _process_started(pid)
    # A process that started after the run did is another one that got the same pid.
    if started is None or (rec.get("started") and started > float(rec["started"]) + 2):
        _fail(f"run {run_id} is recorded as running, but its process (pid {pid}) is gone: "
              f"the run was lost (stopped before it could record its end); there is nothing "
              f"to cancel", EXIT_FAILED)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _fail(f"run {run_id} ended as it was being cancelled (its process, pid {pid}, is "
              f"gone)", EXIT_FAILED)
    except PermissionError:
        _fail(f"not allowed to signal the process of run {run_id} (pid {pid}): cancel it as "
              f"the user who started it", EXIT_FAILED)
    click.echo(f"cancelling run {run_id}: sent SIGTERM to its process (pid {pid}); its steps "
               f"get SIGTERM, then SIGKILL after the grace period...", err=True)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            rec = read_record(path)
        except RecordError:
            rec = {"status": "running"}
        state = rec.get("status")
        if state != "running":
            break
        if _process_started(pid) is None:
            _fail(f"the process of run {run_id} (pid {pid}) ended without recording the "
                  f"run's end: the run was lost", EXIT_FAILED)
        if time.monotonic() >= deadline:
            _fail(f"run {run_id} did not stop within {wait_s:g}s (its process, pid {pid}, is "
                  f"still stopping its steps); check again with `flowray status {run_id}`, "
                  f"or wait longer with --wait", EXIT_FAILED)
        time.sleep(0.1)
    if state != "cancelled":
        _fail(f"run {run_id} ended before it could be cancelled: {state}", EXIT_FAILED)
    click.echo(f"run {run_id} {state}")


if __name__ == "__main__":  # pragma: no cover
    main()
