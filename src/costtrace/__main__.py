"""``python -m costtrace``: the ``costtrace`` command."""

from costtrace.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
