"""`flowray validate` and `flowray schema`."""

from __future__ import annotations

import json
import os
import sys

import click

from flowray.cli.app import main
from flowray.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    _lazy_pinner,
    _print_diagnostics,
    _stderr_color,
)

# ----------------------------------------------------------------------------- validate


@main.command()
@click.argument("flows", nargs=-1, required=True, type=click.Path(dir_okay=False),
                metavar="FLOW...")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help="Workspace that local actions ('./path') are relative to (default: here).")
@click.option("--offline", is_flag=True,
              help="Check git actions from the action cache only (also FLOWRAY_OFFLINE=1).")
def validate(flows: tuple[str, ...], workdir: str | None, offline: bool) -> None:
    """Check the flow files FLOW...; report every error as file:line:col: key.path: message.

    Git actions are fetched (or taken from the action cache) so that their action files and
    the inputs steps give them are checked too.
    """
    from flowray.spec import FlowError, load_flow

    workspace = os.path.abspath(workdir or os.getcwd())
    bad = False
    color = _stderr_color()
    from flowray.plan.pins import LazyGitActions

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
@click.argument("kind", type=click.Choice(["flow", "action", "record"]), metavar="KIND")
def schema(kind: str) -> None:
    """Print the JSON Schema of KIND: flow or action (files, for editors), or record (run
    records, .flowray/runs/<run id>/record.json)."""
    if kind == "record":
        from flowray.runtime.record import record_schema

        click.echo(json.dumps(record_schema(), indent=2))
        return
    from flowray.spec import action_schema, flow_schema

    click.echo(json.dumps(flow_schema() if kind == "flow" else action_schema(), indent=2))

