"""``python -m flowray``: the ``flowray`` command (what a submitted run's entrypoint calls)."""

from flowray.cli import main

if __name__ == "__main__":
    main(prog_name="flowray")
