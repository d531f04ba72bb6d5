"""``python -m dragkit ...``: the command line (the same as the ``dragkit`` command)."""

from .interfaces.cli import main

if __name__ == "__main__":
    main()
