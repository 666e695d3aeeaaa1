"""Reading runs back: `flowray runs|list`, `status`, `logs`, `cancel`: the runs of this
workspace, of a Ray cluster's Jobs API (--address), or of a flowray server (--server)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from flowray.cli.app import main
from flowray.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    _fail,
    _fmt_dur,
    _fmt_time,
    _jobs_errors,
    _out_width,
    _remote,
    _table,
)
from flowray.cli.display import one_line, output_text
from flowray.cli.server import (
    connect,
    follow_logs,
    following,
    resolve_run,
    server_errors,
    server_of,
    server_options,
)
from flowray.spec.limits import MAX_CANCEL_WAIT_SECONDS, number_problem
from flowray.status import Status

if TYPE_CHECKING:
    from flowray.cli.client import ServerClient
    from flowray.runtime.record import JobRecord, RunRecord, StepRecord

_WORKDIR_HELP = ("The workspace whose runs (.flowray/runs/) to read (default: the current "
                 "directory).")
_ADDRESS_HELP = ("A Ray cluster's dashboard, http://HEAD:8265: the runs submitted there "
                 "(default: the runs recorded in this workspace).")


@main.command()
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help=_WORKDIR_HELP)
@click.option("--limit", "-n", type=int, default=20, show_default=True,
              help="List at most this many runs (the newest).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the runs as a JSON array instead of a table.")
@click.option("--address", default=None, metavar="URL", help=_ADDRESS_HELP)
@click.option("--all", "every_job", is_flag=True,
              help="With --address: every Ray job, not only those flowray submitted.")
@click.option("--flow", "flow_name", default=None, metavar="NAME",
              help="With --server: only the runs of this flow.")
@click.option("--status", "status_name", default=None,
              type=click.Choice(["queued", "running", "success", "failure", "cancelled",
                                 "skipped"]),
              help="With --server: only the runs with this status.")
@server_options
def runs(workdir: str | None, limit: int, as_json: bool, address: str | None,
         every_job: bool, flow_name: str | None, status_name: str | None,
         server: str | None, token: str | None, token_file: str | None) -> None:
    """List runs, newest first: those recorded in this workspace, with --address those
    submitted to a Ray cluster, or with --server those of a flowray server."""
    if limit < 1:
        _fail(f"--limit must be 1 or more, got {limit}")
    server = server_of(server, others=(("--address", address), ("--workdir", workdir)))
    if server:
        if every_job:
            _fail("--all goes with --address (every job of a Ray cluster); a server lists "
                  "only flowray's runs")
        _list_server(connect(server, token, token_file), limit, as_json, flow=flow_name,
                     status=status_name)
        return
    if flow_name or status_name:
        _fail("--flow and --status go with --server (or FLOWRAY_SERVER)")
    if address:
        _list_remote(address, limit, as_json, every_job)
        return
    from flowray.runtime.record import RecordError, iter_records

    items: list[dict[str, Any]] = []
    for path, rec in iter_records(os.path.abspath(workdir or os.getcwd())):
        if len(items) >= limit:
            break
        if isinstance(rec, RecordError):
            # One bad record does not hide the others: it is listed as unreadable.
            click.echo(f"warning: {rec}", err=True)
            items.append({"id": os.path.basename(path), "flow": None, "status": "unreadable",
                          "started": None, "ended": None, "error": str(rec)})
        else:
            items.append({"id": rec.id, "flow": rec.flow.name, "status": rec.status.value,
                          "started": rec.started, "ended": rec.ended})
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no runs yet")
        return
    rows = [[one_line(r["id"]), r["status"], _fmt_time(r["started"]),
             _fmt_dur(r["started"], r["ended"]), one_line(r["flow"] or "?")] for r in items]
    for line in _table(["RUN", "STATUS", "STARTED", "TOOK", "FLOW"], rows, right=[3],
                       optional=[2, 3], width=_out_width()):
        click.echo(line)


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
    rows = [[r.id, r.status, _fmt_time(r.started), _fmt_dur(r.started, r.ended),
             r.flow or ("-" if r.flowray else f"(not flowray: {r.entrypoint})")]
            for r in items]
    for line in _table(["ID", "STATUS", "STARTED", "TOOK", "FLOW"], rows, right=[3],
                       optional=[2, 3], width=_out_width()):
        click.echo(line)


def _list_server(client: ServerClient, limit: int, as_json: bool, *, flow: str | None = None,
                 status: str | None = None) -> None:
    with client, server_errors():
        items, _ = client.runs(limit=limit, flow=flow, status=status)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo(f"no runs on {client.url} yet")
        return

    def num(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            else None

    rows = [[one_line(str(r.get("id"))), one_line(str(r.get("status"))),
             _fmt_time(num(r.get("started"))), _fmt_dur(num(r.get("started")), num(r.get("ended"))),
             one_line(str(r.get("trigger") or "-")), one_line(str(r.get("flow") or "?"))]
            for r in items]
    for line in _table(["RUN", "STATUS", "STARTED", "TOOK", "TRIGGER", "FLOW"], rows,
                       right=[3], optional=[4, 2, 3], width=_out_width()):
        click.echo(line)


def _load_run(workdir: str | None, ref: str, *, settle: bool = True
              ) -> tuple[str, dict[str, Any]]:
    from flowray.store.records import RecordError, find_run, read_record

    try:
        path = find_run(os.path.abspath(workdir or os.getcwd()), ref)
        return path, read_record(path, settle=settle)
    except RecordError as exc:
        _fail(str(exc))
        raise AssertionError from exc


def _load_checked_run(workdir: str | None, ref: str
                      ) -> tuple[str, dict[str, Any], RunRecord]:
    """The run's folder, its record as read, and the record checked (or exit 2 saying what is
    wrong with it)."""
    from flowray.runtime.record import RecordError, validate_record
    from flowray.store.records import find_run, read_record

    try:
        path = find_run(os.path.abspath(workdir or os.getcwd()), ref)
        raw = read_record(path)
        return path, raw, validate_record(raw, path)
    except RecordError as exc:
        _fail(str(exc))
        raise AssertionError from exc


@main.command()
@click.argument("run_ref", metavar="[RUN]", default="last")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help=_WORKDIR_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print the run record (or the submitted run, with --address) as JSON.")
@click.option("--address", default=None, metavar="URL",
              help="A Ray cluster's dashboard, http://HEAD:8265: RUN is a run submitted there.")
@server_options
def status(run_ref: str, workdir: str | None, as_json: bool, address: str | None,
           server: str | None, token: str | None, token_file: str | None) -> None:
    """Show a run's jobs and steps (RUN: id, unique prefix, or 'last'; with --server: id or
    'last')."""
    server = server_of(server, others=(("--address", address), ("--workdir", workdir)))
    if server:
        _status_server(connect(server, token, token_file), run_ref, as_json)
        return
    if address:
        _status_remote(address, run_ref, as_json)
        return
    _, raw, rec = _load_checked_run(workdir, run_ref)
    if as_json:
        click.echo(json.dumps(raw, indent=2))  # as recorded, keys this flowray ignores included
        return
    _show_record(rec)


def _show_record(rec: RunRecord) -> None:
    """A run's record as `flowray status` shows it: the run, then each job and its steps."""
    # A run still going has no exit code yet: its time so far instead.
    code = "" if rec.exit_code is None else f"  exit {rec.exit_code}"
    took = _took(rec.started, rec.ended, rec.status)
    so_far = " so far" if rec.status is Status.RUNNING and rec.started else ""
    click.echo(f"run {rec.id}  flow {one_line(rec.flow.name)}  {rec.status.value}{code}  "
               f"{took}{so_far}")
    if rec.error:
        click.echo(f"  error: {one_line(rec.error)}")
    for key, job in rec.jobs.items():
        attempts = f"  attempts {job.attempts}" if job.attempts > 1 else ""
        err = f"  ({one_line(job.error)})" if job.error else ""
        # Where a job ran is news on Ray; on this machine it is this machine.
        on_ray = rec.backend not in (None, "local")
        node = f"  on {job.node}" if job.node and on_ray and not job.ranks else ""
        click.echo(f"  {one_line(key):<24} {job.status.value:<10} "
                   f"{_took(job.started, job.ended, job.status):>8}{attempts}{node}{err}")
        for prev in job.previous_attempts:
            where = f" on {prev.node}" if prev.node else ""
            why = f" ({one_line(prev.error)})" if prev.error else ""
            click.echo(f"    attempt {prev.attempt}: {_status_text(prev.status)}{where}{why}")
        for rank in job.ranks:
            why = f" ({one_line(rank.error)})" if rank.error else ""
            click.echo(f"    rank {rank.rank}: {rank.status.value} on {rank.node or '-'}{why}")
        for step in job.steps:
            code = "" if step.exit_code is None else f"  exit {step.exit_code}"
            if step.cached:
                code += "  cached"
            serr = f"  ({one_line(step.error)})" if step.error else ""
            click.echo(f"    {step.key:<22} {step.status.value:<10} "
                       f"{_took(step.started, step.ended, step.status):>8}{code}{serr}")
            if step.outputs:
                click.echo(f"      outputs: {json.dumps(step.outputs)}")
        if job.outputs:
            click.echo(f"    outputs: {json.dumps(job.outputs)}")


def _status_server(client: ServerClient, ref: str, as_json: bool) -> None:
    with client, server_errors():
        run = resolve_run(client, ref)
    if as_json:
        click.echo(json.dumps(run, indent=2))
        return
    raw = run.get("record")
    if raw is None:  # queued: nothing ran yet, so there is no record
        reason = run.get("reason")
        click.echo(f"run {one_line(str(run.get('id')))}  flow {one_line(str(run.get('flow')))}"
                   f"  {one_line(str(run.get('status')))}"
                   + (f"  ({one_line(str(reason))})" if reason else ""))
        return
    _show_record(_server_record(client, run, raw))


def _server_record(client: ServerClient, run: dict[str, Any], raw: Any) -> RunRecord:
    """The record the server sent, checked (or exit 1 saying what is wrong with it)."""
    from flowray.runtime.record import (
        RECORD_SCHEMA,
        RecordError,
        RecordShapeError,
        validate_record,
    )

    run_id = one_line(str(run.get("id")))
    try:
        return validate_record(raw, run_id)
    except RecordShapeError as exc:
        _fail(f"run {run_id}: the record {client.url} sent is not one this flowray can "
              f"read:\n  " + "\n  ".join(exc.problems[:10]), EXIT_FAILED)
    except RecordError:
        _fail(f"run {run_id}: {client.url} sent a record of a newer flowray (record schema "
              f"{raw.get('schema')}; this flowray reads schema {RECORD_SCHEMA}): upgrade "
              f"flowray to read it", EXIT_FAILED)
    raise AssertionError


def _took(started: float | None, ended: float | None, status: Status) -> str:
    """How long something took, or while it runs, how long it has been running."""
    running = status is Status.RUNNING and not ended
    return _fmt_dur(started, time.time() if running else ended)


def _status_text(status: Status | str) -> str:
    return status.value if isinstance(status, Status) else status


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
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help=_WORKDIR_HELP)
@click.option("--address", default=None, metavar="URL",
              help="A Ray cluster's dashboard, http://HEAD:8265: RUN is a run submitted there.")
@click.option("--follow", "-f", is_flag=True,
              help="With --address or --server: go on printing the logs as they grow, until "
                   "the run ends.")
@server_options
def logs(run_ref: str, target: str | None, workdir: str | None, address: str | None,
         follow: bool, server: str | None, token: str | None, token_file: str | None) -> None:
    """Print the logs of a run, one job, or one step (RUN: id, prefix or 'last'; JOB or
    JOB/STEP: a job key and a step id or number, e.g. train/fit). The logs of a step still
    running are what it printed so far."""
    server = server_of(server, others=(("--address", address), ("--workdir", workdir)))
    if server:
        _logs_server(connect(server, token, token_file), run_ref, target, follow)
        return
    if address:
        _logs_remote(address, run_ref, target, follow)
        return
    if follow:
        _fail("--follow needs --address (a run submitted to a cluster) or --server; a local "
              "run prints its output in the terminal that started it")
    path, _, rec = _load_checked_run(workdir, run_ref)

    def read(job: str, step: StepRecord) -> str | None:
        try:
            with open(os.path.join(path, step.log or ""), encoding="utf-8",
                      errors="replace") as fh:
                return fh.read()
        except OSError:
            return None

    _show_logs(rec, target, read=read, sources=_log_sources)


def _show_logs(rec: RunRecord, target: str | None, *,
               read: Callable[[str, StepRecord], str | None],
               sources: Callable[[JobRecord], list[tuple[str, list[StepRecord]]]]) -> None:
    """Print the logs of the run's steps (of ``target``: JOB or JOB/STEP), each after a
    ``==> job/step (status) <==`` line unless one step is asked for; ``read`` gives a step's
    log (job key, step; None: there is none), ``sources`` a job's lists of steps with their
    labels."""
    job_key, _, step_key = (target or "").partition("/")
    jobs = rec.jobs
    if job_key and job_key not in jobs:
        _fail(f"run {rec.id} has no job '{job_key}' (jobs: {', '.join(jobs)})")
    shown = 0
    tty = sys.stdout.isatty()
    for key, job in jobs.items():
        if job_key and key != job_key:
            continue
        steps = job.steps
        if step_key and not any(s.key == step_key for s in steps):
            _fail(f"job '{key}' has no step '{step_key}' "
                  f"(steps: {', '.join(s.key for s in steps)})")
        job_sources = sources(job)
        for where, source in job_sources:
            for step in source:
                if step_key and step.key != step_key:
                    continue
                if not step.log:
                    continue
                text = read(key, step)
                if text is None:
                    continue
                if not (job_key and step_key and len(job_sources) == 1):
                    click.echo(one_line(f"==> {key}/{step.key}{where} ({step.status.value}) <=="))
                if tty:  # on a terminal, the log cannot move the cursor or rewrite lines
                    text = output_text(text, keep_color=not os.environ.get("NO_COLOR"))
                click.echo(text, nl=False)
                shown += 1
    if not shown and step_key:
        click.echo(f"(step {job_key}/{step_key} wrote no log: it did not run)", err=True)


def _logs_server(client: ServerClient, ref: str, target: str | None, follow: bool) -> None:
    """A server's run's logs: each step's (its last attempt's), or with ``follow`` its
    ``step.log`` events from the start until the run ends."""
    with client, server_errors():
        run = resolve_run(client, ref)
        run_id = str(run.get("id"))
        if follow:
            job, _, step = (target or "").partition("/")
            with following(run_id, client.url):
                follow_logs(client, run_id, job=job or None, step=step or None)
            return
        raw = run.get("record")
        if raw is None:
            click.echo(f"run {one_line(run_id)} is {one_line(str(run.get('status')))}: no step "
                       f"of it ran yet", err=True)
            return
        rec = _server_record(client, run, raw)
        _show_logs(rec, target, sources=lambda job: [("", job.steps)],
                   read=lambda job, step: client.log(run_id, job, step.index))


def _log_sources(job: JobRecord) -> list[tuple[str, list[StepRecord]]]:
    """A job's step lists whose logs `flowray logs` shows: earlier attempts first, then the
    last one, then the other ranks of a multi-node job; each with its label."""
    out: list[tuple[str, list[StepRecord]]] = []
    previous = job.previous_attempts
    for prev in previous:
        out.append((f" [attempt {prev.attempt}: {_status_text(prev.status)}]", prev.steps))
    last = f" [attempt {job.attempts}]" if previous else ""
    out.append((last, job.steps))
    for rank in job.ranks[1:]:
        label = f" [{last[2:-1]}, rank {rank.rank}]" if last else f" [rank {rank.rank}]"
        out.append((label, rank.steps))
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
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help=_WORKDIR_HELP)
@click.option("--address", default=None, metavar="URL",
              help="A Ray cluster's dashboard, http://HEAD:8265: RUN is a run submitted there.")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS",
              help="How long to wait for the run to stop (default: 15 here, 60 on a cluster "
                   "or a server).")
@server_options
def cancel(run_ref: str, workdir: str | None, address: str | None,
           wait_s: float | None, server: str | None, token: str | None,
           token_file: str | None) -> None:
    """Cancel a running run (RUN: id, unique prefix, or 'last') and wait until it stopped.

    A local run is reached through the control channel in its run folder and stops as with
    Ctrl-C: every step gets SIGTERM, then SIGKILL after the grace period. With --address, Ray
    stops the submitted run the same way; with --server, the server stops it (a queued run
    never starts).
    """
    if wait_s is not None:
        problem = number_problem(wait_s, low=0, high=MAX_CANCEL_WAIT_SECONDS)
        if problem:
            _fail(f"--wait {problem}")
    server = server_of(server, others=(("--address", address), ("--workdir", workdir)))
    if server:
        _cancel_server(connect(server, token, token_file), run_ref,
                       60.0 if wait_s is None else wait_s)
    elif address:
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


def _cancel_server(client: ServerClient, ref: str, wait_s: float) -> None:
    with client, server_errors():
        run = resolve_run(client, ref)
        run_id, state = one_line(str(run.get("id"))), str(run.get("status"))
        if _ended(state):
            _fail(f"run {run_id} already ended: {state}", EXIT_FAILED)
        state = str(client.cancel(run_id).get("status", state))
        if not _ended(state):
            click.echo(f"cancelling run {run_id} on {client.url}: its steps get SIGTERM, then "
                       f"SIGKILL after the grace period...", err=True)
        deadline = time.monotonic() + wait_s
        while not _ended(state):
            if time.monotonic() >= deadline:
                _fail(f"run {run_id} is still {state} after {wait_s:g}s; the server goes on "
                      f"stopping it (see `flowray status {run_id} --server {client.url}`)",
                      EXIT_FAILED)
            time.sleep(0.5)
            state = str(client.run(run_id).get("status"))
    if state != "cancelled":
        _fail(f"run {run_id} ended before it could be cancelled: {state}", EXIT_FAILED)
    click.echo(f"run {run_id} {state}")


def _ended(state: str) -> bool:
    return state in {s.value for s in Status if s.is_terminal()}


def _lost(path: str, rec: dict[str, Any]) -> None:
    """The run's process is gone: stop what its steps left, settle the record, say so."""
    from flowray.execute.process import sweep_run_processes
    from flowray.store.records import lost_reason, settle_lost

    run_id = rec.get("id") or os.path.basename(path)
    stopped = sweep_run_processes(str(run_id), grace=2.0) if isinstance(run_id, str) else 0
    reason = lost_reason(rec)
    if stopped:
        reason += f"; its {stopped} remaining process{'es' if stopped != 1 else ''} were stopped"
    settle_lost(path, rec, reason)
    _fail(f"run {run_id} was lost: {reason}. Its record now says failure; there is nothing "
          f"left to cancel", EXIT_FAILED)


def _cancel_local(workdir: str | None, ref: str, wait_s: float) -> None:
    """Ask a run of this workspace to stop through its control channel (a FIFO in its run
    folder that the run's process reads), then wait for its record to say it ended."""
    import socket

    from flowray.runtime.control import CONTROL_FILE, ChannelGone, send_cancel
    from flowray.store.records import RecordError, read_record

    path, rec = _load_run(workdir, ref, settle=False)
    run_id, state = rec.get("id", ref), rec.get("status")
    if state != "running":
        _fail(f"run {run_id} already ended: {state}", EXIT_FAILED)
    host, here = rec.get("host"), socket.gethostname()
    if host and host != here:
        _fail(f"run {run_id} runs on host '{host}', not on this one ('{here}'): run "
              f"`flowray cancel {run_id}` there", EXIT_FAILED)
    try:
        send_cancel(path, "cancelled with flowray cancel")
    except ChannelGone:
        _lost(path, rec)
    except PermissionError:
        _fail(f"not allowed to cancel run {run_id}: it was started by another user",
              EXIT_FAILED)
    except OSError as exc:
        _fail(f"cannot reach run {run_id}: {exc.strerror or exc}", EXIT_FAILED)
    click.echo(f"cancelling run {run_id}: its steps get SIGTERM, then SIGKILL after the grace "
               f"period...", err=True)
    deadline = time.monotonic() + wait_s
    channel = os.path.join(path, CONTROL_FILE)
    while True:
        try:
            rec = read_record(path)
        except RecordError:
            rec = {"status": "running"}
        state = rec.get("status")
        if state != "running":
            break
        if not os.path.exists(channel):
            time.sleep(0.5)  # the channel closes just before the final record is written
            with contextlib.suppress(RecordError):
                state = read_record(path).get("status")
            if state == "running":
                _lost(path, read_record(path, settle=False))
            break
        if time.monotonic() >= deadline:
            _fail(f"run {run_id} did not stop within {wait_s:g}s (its process is still "
                  f"stopping its steps); check again with `flowray status {run_id}`, or wait "
                  f"longer with --wait", EXIT_FAILED)
        time.sleep(0.1)
    if state != "cancelled":
        _fail(f"run {run_id} ended before it could be cancelled: {state}", EXIT_FAILED)
    click.echo(f"run {run_id} {state}")


