"""Commands against a flowray server (``flowray serve``): `flow push|list|rm`, `trigger`,
`rerun`, `secret set|list|rm`, `variable set|list|rm`, `token create`; and what `runs`,
`status`, `logs` and `cancel` (cli/records.py) share with them to talk to a server.

Every command takes ``--server URL`` (``FLOWRAY_SERVER``) and a token: ``FLOWRAY_TOKEN``
(preferred), ``--token-file PATH``, or ``--token T`` (visible to every user of the machine in
``ps`` while the command runs). The HTTP client (cli/client.py, and httpx with it) is imported
only when such a command runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click
from click.core import ParameterSource

from flowray.cli.app import main
from flowray.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    MAX_VALUES_FILE_BYTES,
    _fail,
    _fmt_time,
    _out_width,
    _pairs,
    _stderr_color,
    _table,
    read_values_file,
    require_extra,
)
from flowray.cli.display import one_line, output_line

if TYPE_CHECKING:
    from flowray.cli.client import Role, ServerClient

F = TypeVar("F", bound=Callable[..., Any])

_SERVER_HELP = "The flowray server, http://HOST:8420 (also FLOWRAY_SERVER)."
_TOKEN_HELP = ("The API token. Prefer FLOWRAY_TOKEN or --token-file: a token given here is "
               "visible to other users of this machine (in `ps`) while the command runs.")
_TOKEN_FILE_HELP = "Read the API token from this file (instead of FLOWRAY_TOKEN)."

# What `flowray flow push` sends of a local action's folder: not a repository's or Python's
# leftovers, and at most this many bytes for all of a flow's actions.
_SKIPPED_DIRS = frozenset({".git", ".flowray", "__pycache__"})
_MAX_ACTION_BYTES = 16 << 20


# ----------------------------------------------------------------------------- shared


def server_options(fn: F) -> F:
    """``--server``, ``--token`` and ``--token-file`` on a command (as ``server``, ``token``
    and ``token_file``)."""
    fn = click.option("--token-file", type=click.Path(dir_okay=False), default=None,
                      metavar="PATH", help=_TOKEN_FILE_HELP)(fn)
    fn = click.option("--token", default=None, metavar="TOKEN", help=_TOKEN_HELP)(fn)
    return click.option("--server", envvar="FLOWRAY_SERVER", default=None, metavar="URL",
                        help=_SERVER_HELP)(fn)


def server_of(server: str | None, *, others: Sequence[tuple[str, object]] = ()) -> str | None:
    """The server a command that also works without one (`runs`, `status`, ...) talks to:
    ``--server``; else ``FLOWRAY_SERVER``, unless one of ``others`` (an option that names
    another place, as (flag, value)) was given; None: not a server."""
    if not server:
        return None
    given = [flag for flag, value in others if value]
    if not given:
        return server
    source = click.get_current_context().get_parameter_source("server")
    if source is ParameterSource.ENVIRONMENT:
        return None  # the option given on the command line wins over the environment
    _fail(f"--server and {given[0]} name different places to read runs from: give one")
    raise AssertionError


def _token(token: str | None, token_file: str | None) -> str | None:
    if token and token_file:
        _fail("give --token or --token-file, not both")
    if token_file:
        text = read_values_file(token_file, "--token-file").strip()
        if not text:
            _fail(f"--token-file '{token_file}' is empty")
        return text
    return token or os.environ.get("FLOWRAY_TOKEN") or None


def connect(server: str | None, token: str | None, token_file: str | None) -> ServerClient:
    """The client of the server the options name (exit 2 when none is named)."""
    if not server:
        _fail("this command talks to a flowray server: give --server URL or set "
              "FLOWRAY_SERVER")
    require_extra("talking to a flowray server", "server", ["httpx"])
    from flowray.cli.client import ServerClient

    secret = _token(token, token_file)
    with server_errors():
        return ServerClient(str(server), token=secret)
    raise AssertionError


@contextlib.contextmanager
def server_errors() -> Iterator[None]:
    """A :class:`~flowray.cli.client.ServerError` becomes its message (and an invalid flow's
    diagnostics) and exit code; nothing else of it reaches the user."""
    from flowray.cli.client import ServerError

    try:
        yield
    except ServerError as exc:
        _print_server_diagnostics(exc.diagnostics)
        _fail(exc.message, exc.exit_code)


def _print_server_diagnostics(diagnostics: list[dict[str, Any]]) -> None:
    """Diagnostics the server sent, one line each as `flowray validate` prints them."""
    from flowray.spec.diagnostics import Diagnostic

    color = _stderr_color()
    for d in diagnostics:
        def num(key: str, d: dict[str, Any] = d) -> int:
            value = d.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        severity: Literal["error", "warning"] = \
            "warning" if d.get("severity") == "warning" else "error"
        diag = Diagnostic(file=one_line(str(d.get("file") or "?")), line=num("line"),
                          col=num("col"), path=one_line(str(d.get("path") or "")),
                          message=one_line(str(d.get("message") or "")), severity=severity)
        click.echo(diag.format(color=color), err=True)


def resolve_run(client: ServerClient, ref: str) -> dict[str, Any]:
    """The run ``ref`` names on the server (an id, or 'last': the newest): its summary and
    record."""
    return client.run(str(client.last_run().get("id")) if ref == "last" else ref)


_EXIT_OF_STATUS = {"success": EXIT_OK, "skipped": EXIT_OK, "failure": EXIT_FAILED,
                   "cancelled": EXIT_INTERRUPTED}


def follow_logs(client: ServerClient, run_id: str, *, job: str | None = None,
                step: str | None = None) -> dict[str, Any]:
    """Print the run's step logs from its start as they come, until it ends (only job
    ``job``, or only its step ``step``: the step's id or number); the run's
    ``run.finished`` event. Where the lines switch from one step to another a
    ``==> job/step <==`` line says whose they are (not when one step is asked for)."""
    keys: dict[tuple[Any, Any], str] = {}
    shown: tuple[Any, Any] | None = None
    one_step = bool(job and step)
    tty = sys.stdout.isatty()
    keep_color = not os.environ.get("NO_COLOR")
    for event in client.events(run_id):
        kind = event.get("type")
        if kind == "run.finished":
            return event
        where = (event.get("job"), event.get("step"))
        index = where[1] if isinstance(where[1], int) else -1
        if kind == "step.started":
            keys[where] = str(event.get("key") or index + 1)
            continue
        if kind != "step.log":
            continue
        key = keys.get(where) or str(index + 1)
        if (job and where[0] != job) or (step and key != step):
            continue
        if not one_step and shown != where:
            click.echo(one_line(f"==> {where[0]}/{key} <=="))
            shown = where
        line = str(event.get("line", ""))
        click.echo(output_line(line, keep_color=keep_color) if tty else line)
    raise AssertionError("the events end with run.finished")


def exit_code_of(finished: dict[str, Any]) -> int:
    """What `trigger --wait` exits with for a run that ended so: 0 success or skipped, 1
    failure, 130 cancelled."""
    return _EXIT_OF_STATUS.get(str(finished.get("status")), EXIT_FAILED)


@contextlib.contextmanager
def following(run_id: str, url: str) -> Iterator[None]:
    """Ctrl-C while following a run stops following, not the run: say so, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"\nstopped following {run_id}; the run goes on (`flowray cancel {run_id} "
                   f"--server {url}` stops it)", err=True)
        sys.exit(EXIT_INTERRUPTED)


# ----------------------------------------------------------------------------- flows


@main.group()
def flow() -> None:
    """The flows a flowray server keeps: push, list, rm."""


@flow.command("push")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False),
                metavar="FILE...")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help="The workspace that local actions ('./path') are relative to (default: "
                   "here).")
@server_options
def flow_push(files: tuple[str, ...], workdir: str | None, server: str | None,
              token: str | None, token_file: str | None) -> None:
    """Store the flows in FILE... on the server, each as a new version, with the local
    actions ('./path') they use.

    The server validates each flow: an invalid one is stored nothing of, its problems are
    printed as file:line:col: key.path: message, and the command exits 2 (after pushing the
    others).
    """
    workspace = os.path.abspath(workdir or os.getcwd())
    if not os.path.isdir(workspace):
        _fail(f"--workdir '{workdir}' is not a directory")
    client = connect(server, token, token_file)
    bad = False
    from flowray.cli.client import ServerError

    with client, server_errors():
        for path in files:
            text = _flow_text(path)
            name, actions = _flow_parts(path, text, workspace)
            try:
                runnable = [rel for rel in actions
                            if os.access(os.path.join(workspace, rel), os.X_OK)]
                stored, new = client.push_flow(name, text=text, path=path, files=actions,
                                               executable=runnable)
            except ServerError as exc:
                if exc.status != 422:
                    raise
                bad = True
                _print_server_diagnostics(_as_given(exc.diagnostics, path))
                if not exc.diagnostics:
                    click.echo(f"{path}: {one_line(exc.message)}", err=True)
                continue
            warnings = stored.get("warnings")
            if isinstance(warnings, list):
                _print_server_diagnostics(_as_given(
                    [w for w in warnings if isinstance(w, dict)], path))
            extra = f", with {len(actions)} file{'s' if len(actions) != 1 else ''} of local " \
                    f"actions" if actions else ""
            click.echo(f"{path}: pushed {one_line(str(stored.get('name', name)))} version "
                       f"{stored.get('version', '?')}{' (a new flow)' if new else ''}{extra}")
    sys.exit(EXIT_INVALID if bad else EXIT_OK)


def _as_given(diagnostics: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """The server's diagnostics with the flow file named as it was given here (the server
    knows its file name only)."""
    base = os.path.basename(path)
    return [{**d, "file": path} if d.get("file") == base else d for d in diagnostics]


def _flow_text(path: str) -> str:
    from flowray.spec.files import MAX_FILE_BYTES

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")
        raise AssertionError from exc
    if len(raw) > MAX_FILE_BYTES:
        _fail(f"{path}: a flow file may hold at most {MAX_FILE_BYTES >> 20} MiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        raise AssertionError from exc


def _flow_parts(path: str, text: str, workspace: str) -> tuple[str, dict[str, str]]:
    """The flow's name (its ``name:``, else the file's stem) and the files of the local
    actions it uses (workspace-relative path -> base64). A flow that does not parse is sent
    as it is: the server's diagnostics say what is wrong with it."""
    import yaml

    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return stem, {}
    if not isinstance(data, dict):
        return stem, {}
    name = data.get("name")
    name = name.strip() if isinstance(name, str) and name.strip() else stem
    return name, _action_files(data, workspace)


def _local_refs(data: dict[str, Any]) -> list[str]:
    refs: list[str] = []
    jobs = data.get("jobs")
    for job in jobs.values() if isinstance(jobs, dict) else ():
        steps = job.get("steps") if isinstance(job, dict) else None
        for step in steps if isinstance(steps, list) else ():
            ref = step.get("action") if isinstance(step, dict) else None
            if isinstance(ref, str) and ref.startswith("./") and ref not in refs:
                refs.append(ref)
    return refs


def _action_files(data: dict[str, Any], workspace: str) -> dict[str, str]:
    """The files of the flow's local action folders, by their path in the workspace. A
    folder that is missing or outside the workspace is left out: the server's validation
    reports it at the step."""
    from flowray.spec.files import local_action_folder, outside_problem

    out: dict[str, str] = {}
    total = 0
    real_root = os.path.realpath(workspace)
    for ref in _local_refs(data):
        folder = local_action_folder(workspace, ref)
        if outside_problem(workspace, folder) is not None or not os.path.isdir(folder):
            continue
        for here, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
            for fname in sorted(names):
                full = os.path.join(here, fname)
                rel = os.path.relpath(full, workspace).replace(os.sep, "/")
                if rel in out or not os.path.isfile(full):
                    continue
                real = os.path.realpath(full)
                if not real.startswith(real_root + os.sep):
                    _fail(f"{rel} (of the local action {ref}) leads through a symbolic link "
                          f"outside the workspace {workspace}: `flow push` sends only files "
                          f"of the workspace")
                try:
                    with open(full, "rb") as fh:
                        content = fh.read(_MAX_ACTION_BYTES + 1)
                except OSError as exc:
                    _fail(f"{rel}: {exc.strerror or exc}")
                    raise AssertionError from exc
                total += len(content)
                if total > _MAX_ACTION_BYTES:
                    _fail(f"the local actions of this flow hold more than "
                          f"{_MAX_ACTION_BYTES >> 20} MiB (at {rel}), the most `flow push` "
                          f"sends: keep data out of action folders")
                out[rel] = base64.b64encode(content).decode("ascii")
    return out


@flow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the server's list as JSON.")
@server_options
def flow_list(as_json: bool, server: str | None, token: str | None,
              token_file: str | None) -> None:
    """List the server's flows: version, last run, next scheduled start, triggers."""
    client = connect(server, token, token_file)
    with client, server_errors():
        items = client.flows()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo(f"no flows on {client.url} yet")
        return
    rows = []
    for f in items:
        last = f.get("last_run")
        last_text = (f"{last.get('id')} {last.get('status')}" if isinstance(last, dict)
                     else "-")
        triggers = f.get("triggers")
        rows.append([one_line(str(f.get("name"))), str(f.get("version", "-")),
                     one_line(last_text), _fmt_time(_number(f.get("next_fire"))),
                     _fmt_time(_number(f.get("updated"))),
                     one_line(", ".join(str(t) for t in triggers)
                              if isinstance(triggers, list) and triggers else "-")])
    for line in _table(["FLOW", "VERSION", "LAST RUN", "NEXT", "UPDATED", "TRIGGERS"], rows,
                       right=[1], optional=[4, 3], width=_out_width()):
        click.echo(line)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


@flow.command("rm")
@click.argument("name")
@server_options
def flow_rm(name: str, server: str | None, token: str | None, token_file: str | None) -> None:
    """Remove the flow NAME from the server (its runs' history stays)."""
    client = connect(server, token, token_file)
    with client, server_errors():
        client.remove_flow(name)
    click.echo(f"removed flow {one_line(name)}")


# ----------------------------------------------------------------------------- runs


@main.command()
@click.argument("flow_name", metavar="FLOW")
@click.option("--input", "-i", "inputs", multiple=True, metavar="KEY=VALUE",
              help="An input of the flow's manual trigger (repeatable).")
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="Start at most one run for KEY: given again, the same run is answered.")
@click.option("--wait", is_flag=True,
              help="Print the run's logs as it goes and exit with its exit code: 0 success "
                   "or skipped, 1 failure, 130 cancelled.")
@server_options
def trigger(flow_name: str, inputs: tuple[str, ...], idempotency_key: str | None, wait: bool,
            server: str | None, token: str | None, token_file: str | None) -> None:
    """Start a run of the stored flow FLOW on the server; print its id (with --wait, its
    logs, then exit as it ended)."""
    values = _pairs(inputs, "--input")
    client = connect(server, token, token_file)
    with client, server_errors():
        started, new = client.trigger(flow_name, inputs=values, idempotency_key=idempotency_key)
        run_id = str(started.get("id"))
        state = started.get("status", "queued")
        if not new:
            click.echo(f"the idempotency key was given before: run {run_id} is the run it "
                       f"started ({state})", err=True)
        if not wait:
            click.echo(run_id)
            return
        click.echo(f"run {run_id} of flow {one_line(flow_name)} {state}; waiting for it to "
                   f"end (Ctrl-C stops waiting, not the run)", err=True)
        with following(run_id, client.url):
            finished = follow_logs(client, run_id)
    code = exit_code_of(finished)
    click.echo(f"run {run_id} {finished.get('status')} (exit {finished.get('exit_code')})",
               err=True)
    sys.exit(code)


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--failed", is_flag=True, help="Only the jobs that failed (and what needs them).")
@click.option("--job", "jobs", multiple=True, metavar="KEY",
              help="Only this job (its key, e.g. train.3; repeatable).")
@server_options
def rerun(run_ref: str, failed: bool, jobs: tuple[str, ...], server: str | None,
          token: str | None, token_file: str | None) -> None:
    """Run jobs of RUN again on the server, with its flow version and inputs: the jobs that
    failed (--failed) or the jobs given (--job; the outputs of the others are reused); print
    the new run's id."""
    if failed and jobs:
        _fail("give --failed or --job, not both")
    if not failed and not jobs:
        _fail("say which jobs to run again: --failed, or --job KEY (`flowray trigger FLOW` "
              "starts a new run of all of a flow)")
    client = connect(server, token, token_file)
    with client, server_errors():
        run_id = str(resolve_run(client, run_ref).get("id"))
        started = client.rerun(run_id, failed=failed, jobs=list(jobs))
    what = "the failed jobs" if failed else f"job{'s' if len(jobs) > 1 else ''} " \
        f"{', '.join(jobs)}"
    click.echo(f"rerunning {what} of run {run_id}", err=True)
    click.echo(str(started.get("id")))


# ----------------------------------------------------------------------------- secrets


@main.group()
def secret() -> None:
    """The secrets a flowray server keeps (encrypted) for runs: set, list, rm."""


@secret.command("set")
@click.argument("name")
@click.option("--value-from-env", "env_var", default=None, metavar="VAR",
              help="Take the value from the environment variable VAR.")
@click.option("--from-file", "file", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help="Take the value from the file PATH.")
@server_options
def secret_set(name: str, env_var: str | None, file: str | None, server: str | None,
               token: str | None, token_file: str | None) -> None:
    """Set the secret NAME. Its value is read from standard input (a prompt that does not
    echo on a terminal), --from-file or --value-from-env; never from the command line,
    which other users of the machine see. One newline at its end is dropped."""
    if env_var and file:
        _fail("give --value-from-env or --from-file, not both")
    client = connect(server, token, token_file)
    value = _secret_value(name, env_var, file)
    with client, server_errors():
        client.set_secret(name, value)
    click.echo(f"secret {one_line(name)} set")


def _secret_value(name: str, env_var: str | None, file: str | None) -> str:
    if env_var:
        value = os.environ.get(env_var)
        if value is None:
            _fail(f"--value-from-env: the environment variable {env_var} is not set")
            raise AssertionError
    elif file:
        value = read_values_file(file, "--from-file")
    elif sys.stdin.isatty():
        value = click.prompt(f"value of secret {name}", hide_input=True, err=True)
    else:
        value = sys.stdin.read(MAX_VALUES_FILE_BYTES + 1)
        if len(value) > MAX_VALUES_FILE_BYTES:
            _fail(f"the value on standard input is larger than {MAX_VALUES_FILE_BYTES >> 20} "
                  f"MiB")
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        _fail(f"the value of secret {name} is empty")
    return value


@secret.command("list")
@server_options
def secret_list(server: str | None, token: str | None, token_file: str | None) -> None:
    """List the secrets' names and when they were set (never their values)."""
    client = connect(server, token, token_file)
    with client, server_errors():
        items = client.secrets()
    if not items:
        click.echo(f"no secrets on {client.url}")
        return
    rows = [[one_line(str(s.get("name"))), _fmt_time(_number(s.get("updated"))),
             _fmt_time(_number(s.get("created")))] for s in items]
    for line in _table(["SECRET", "UPDATED", "CREATED"], rows, width=_out_width()):
        click.echo(line)


@secret.command("rm")
@click.argument("name")
@server_options
def secret_rm(name: str, server: str | None, token: str | None,
              token_file: str | None) -> None:
    """Remove the secret NAME."""
    client = connect(server, token, token_file)
    with client, server_errors():
        client.remove_secret(name)
    click.echo(f"removed secret {one_line(name)}")


# ----------------------------------------------------------------------------- variables


@main.group()
def variable() -> None:
    """The variables a flowray server gives runs (variables.NAME): set, list, rm."""


@variable.command("set")
@click.argument("name")
@click.argument("value")
@server_options
def variable_set(name: str, value: str, server: str | None, token: str | None,
                 token_file: str | None) -> None:
    """Set the variable NAME to VALUE (a plain value: use `secret set` for what must stay
    secret)."""
    client = connect(server, token, token_file)
    with client, server_errors():
        client.set_variable(name, value)
    click.echo(f"variable {one_line(name)} set")


@variable.command("list")
@server_options
def variable_list(server: str | None, token: str | None, token_file: str | None) -> None:
    """List the variables and their values."""
    client = connect(server, token, token_file)
    with client, server_errors():
        items = client.variables()
    if not items:
        click.echo(f"no variables on {client.url}")
        return
    rows = [[one_line(str(v.get("name"))), _fmt_time(_number(v.get("updated"))),
             one_line(str(v.get("value")))] for v in items]
    for line in _table(["VARIABLE", "UPDATED", "VALUE"], rows, width=_out_width()):
        click.echo(line)


@variable.command("rm")
@click.argument("name")
@server_options
def variable_rm(name: str, server: str | None, token: str | None,
                token_file: str | None) -> None:
    """Remove the variable NAME."""
    client = connect(server, token, token_file)
    with client, server_errors():
        client.remove_variable(name)
    click.echo(f"removed variable {one_line(name)}")


# ----------------------------------------------------------------------------- tokens


@main.group("token")
def token_group() -> None:
    """The API tokens of a flowray server: create, list, rm."""


@token_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "runner", "admin"]), required=True,
              help="viewer: read; runner: also start, cancel and rerun runs; admin: also "
                   "flows, secrets, variables and tokens.")
@server_options
def token_create(name: str, role: str, server: str | None, token: str | None,
                 token_file: str | None) -> None:
    """Create the token NAME with ROLE and print it: the only time it is shown."""
    client = connect(server, token, token_file)
    with client, server_errors():
        made = client.create_token(name, role=cast("Role", role))
    click.echo(f"token {one_line(name)} ({role}) created; it is shown only now: keep it, "
               f"e.g. in FLOWRAY_TOKEN", err=True)
    click.echo(str(made.get("token")))


@token_group.command("list")
@server_options
def token_list(server: str | None, token: str | None, token_file: str | None) -> None:
    """List the tokens' names, roles and creation times (never the tokens)."""
    client = connect(server, token, token_file)
    with client, server_errors():
        items = client.tokens()
    rows = [[one_line(str(t.get("name"))), one_line(str(t.get("role"))),
             _fmt_time(_number(t.get("created")))] for t in items]
    for line in _table(["TOKEN", "ROLE", "CREATED"], rows, width=_out_width()):
        click.echo(line)


@token_group.command("rm")
@click.argument("name")
@server_options
def token_rm(name: str, server: str | None, token: str | None, token_file: str | None) -> None:
    """Revoke the token NAME: calls with it are refused (401) from now on."""
    client = connect(server, token, token_file)
    with client, server_errors():
        client.remove_token(name)
    click.echo(f"revoked token {one_line(name)}")
