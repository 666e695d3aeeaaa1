"""`flowray serve`: the long-running service (flowray.service.server does the work)."""

from __future__ import annotations

import logging
import os
import sys

import click

from flowray.cli.app import main
from flowray.cli.common import EXIT_FAILED, EXIT_INVALID, _fail, require_extra


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface: put TLS in front).")
@click.option("--port", type=click.IntRange(1, 65535), default=8420, show_default=True,
              help="Port to listen on.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where the service keeps its database, key, token and run workspaces "
                   "(default: $XDG_DATA_HOME/flowray, else ~/.local/share/flowray).")
@click.option("--db", default=None, metavar="URL", envvar="FLOWRAY_DB",
              help="Database URL: postgresql://USER@HOST:PORT/NAME for a shared one "
                   "(default: SQLite in the data dir; also FLOWRAY_DB).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              envvar="FLOWRAY_ADDRESS",
              help="Run the flows' jobs on this Ray cluster (HOST:PORT or ray://...; also "
                   "FLOWRAY_ADDRESS). Default: on this machine.")
@click.option("--secret-key-file", type=click.Path(dir_okay=False), default=None,
              help="The key secrets are encrypted with (default: <data-dir>/secret.key, "
                   "made on first start).")
@click.option("--keep-runs", type=click.IntRange(1, 10**9), default=None, metavar="N",
              help="Keep the newest N ended runs of each flow; remove older ones.")
@click.option("--keep-days", type=click.FloatRange(0, 36500, min_open=True), default=None,
              metavar="D", help="Remove ended runs older than D days.")
@click.option("--drain", type=click.FloatRange(0, 86400), default=30.0, show_default=True,
              help="Seconds running runs get to end on SIGTERM before they are cancelled.")
@click.option("--max-runs", type=click.IntRange(1, 10000), default=32, show_default=True,
              metavar="N", help="Runs this process runs at once; more wait in the queue.")
@click.option("--pass-env", "pass_env", multiple=True, metavar="NAME",
              help="Give the steps of runs this variable of the service's environment too "
                   "(repeatable). By default they get only the machine's basics (PATH, HOME, "
                   "LANG, proxies, CUDA_*, ...), never the service's credentials.")
@click.option("--rotate-secret-key", type=click.Path(dir_okay=False, exists=True),
              default=None, metavar="NEW_KEY_FILE",
              help="Re-encrypt every secret with the key in NEW_KEY_FILE, make it the "
                   "service's key, and exit. Stop every service process on the database "
                   "first.")
def serve(host: str, port: int, data_dir: str | None, db: str | None,
          ray_address: str | None, secret_key_file: str | None, keep_runs: int | None,
          keep_days: float | None, drain: float, max_runs: int, pass_env: tuple[str, ...],
          rotate_secret_key: str | None) -> None:
    """Serve flows: the HTTP API, triggers, run history, secrets and /metrics."""
    require_extra("flowray serve", "server", ["fastapi", "uvicorn", "sqlalchemy", "alembic",
                                              "cryptography"])
    from flowray.service.db import DatabaseError
    from flowray.service.server import (
        ServeError,
        ServeOptions,
        Service,
        default_data_dir,
        rotate_key,
    )
    from flowray.service.server import serve as run_service

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="flowray serve: %(message)s")
    options = ServeOptions(host=host, port=port,
                           data_dir=os.path.abspath(data_dir or default_data_dir()), db=db,
                           ray=ray_address, secret_key_file=secret_key_file,
                           keep_runs=keep_runs, keep_days=keep_days, drain=drain,
                           max_runs=max_runs, pass_env=tuple(pass_env))
    try:
        if rotate_secret_key:
            count = rotate_key(options, rotate_secret_key)
            click.echo(f"re-encrypted {count} secret(s) with the key in {rotate_secret_key}; "
                       "start the service again")
            return

        def ready(service: Service) -> None:
            if service.admin_token_file:
                click.echo(f"flowray serve: the admin token is in {service.admin_token_file} "
                           "(readable by you only)", err=True)
            click.echo(f"flowray serve: listening on {service.url} (data in "
                       f"{options.data_dir})", err=True)

        code = run_service(options, on_ready=ready)
    except (ServeError, DatabaseError) as exc:
        _fail(str(exc), EXIT_FAILED if isinstance(exc, DatabaseError) else EXIT_INVALID)
        return
    sys.exit(code)
