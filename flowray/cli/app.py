"""The ``flowray`` command group; each command lives in the module of its noun."""

from __future__ import annotations

import click

from flowray import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowray")
def main() -> None:
    """Run DataTorch-style flows: on this machine, or on a Ray cluster (`run --ray`,
    `run --address HOST:6379`, `submit --address http://HEAD:8265`)."""

