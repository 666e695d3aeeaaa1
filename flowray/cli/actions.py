"""`flowray actions fetch|list|prune`: the cache of git-hosted actions."""

from __future__ import annotations

import json
import os
import sys

import click

from flowray.cli.app import main
from flowray.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    _actions_config,
    _fail,
    _fmt_time,
    _lazy_pinner,
    _out_width,
    _print_diagnostics,
    _size,
    _table,
)
from flowray.spec.limits import MAX_AGE_DAYS, number_problem

_CONFIG_HELP = ("The workspace whose flowray.toml says where the action cache is (default: "
                "the current directory).")


@main.group()
def actions() -> None:
    """Manage the cache of git-hosted actions."""


@actions.command("fetch")
@click.argument("flows", nargs=-1, required=True, type=click.Path(dir_okay=False),
                metavar="FLOW...")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help="The workspace: './' actions and flowray.toml are found there (default: "
                   "the current directory).")
def actions_fetch(flows: tuple[str, ...], workdir: str | None) -> None:
    """Resolve and fetch every git action the flow files FLOW... use, and make the
    requirements environments of their python actions (for later --offline runs)."""
    from flowray.actions import ActionError, ensure_venv
    from flowray.plan.pins import LazyGitActions
    from flowray.plan.plan import git_refs_of
    from flowray.spec import FlowError, load_flow

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



@actions.command("list")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help=_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print the entries as a JSON array instead of a table.")
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
    rows = [[e.repo, e.sha[:12], _size(e.size), _fmt_time(e.last_used), ", ".join(e.tags)]
            for e in entries]
    for line in _table(["REPOSITORY", "COMMIT", "SIZE", "LAST USED", "TAGS"], rows, right=[2],
                       optional=[3, 2], width=_out_width()):
        click.echo(line)


@actions.command("prune")
@click.option("--workdir", "-C", type=click.Path(file_okay=False), default=None,
              help=_CONFIG_HELP)
@click.option("--older-than", type=float, default=None, metavar="DAYS",
              help="Remove only entries unused for this many days (default: remove all).")
def actions_prune(workdir: str | None, older_than: float | None) -> None:
    """Remove cached actions (all, or those unused for --older-than DAYS)."""
    from flowray.actions import ActionCache

    if older_than is not None:
        problem = number_problem(older_than, low=0, high=MAX_AGE_DAYS)
        if problem:
            _fail(f"--older-than {problem}")
    if older_than is not None:
        problem = number_problem(older_than, low=0, high=MAX_AGE_DAYS)
        if problem:
            _fail(f"--older-than {problem}")
    config = _actions_config(os.path.abspath(workdir or os.getcwd()))
    removed = ActionCache(config.cache_dir).prune(
        older_than=None if older_than is None else older_than * 86400
    )
    total = sum(e.size for e in removed)
    click.echo(f"removed {len(removed)} cached action(s), {_size(total)}")

