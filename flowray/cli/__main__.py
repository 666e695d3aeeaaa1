"""``python -m flowray.cli``: the same as the ``flowray`` command."""

from flowray.cli import main

if __name__ == "__main__":
    main()
