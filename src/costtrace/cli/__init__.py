"""The ``costtrace`` command line: ``costtrace <command>`` or ``python -m costtrace``.

:mod:`costtrace.cli.app` builds the parser and runs a command; each command's work lives in its own
module here, and :mod:`costtrace.cli.output` writes their tables, JSON and CSV. Nothing under ``cli/``
is imported by the rest of costtrace: it reads the ledger through :mod:`costtrace.analysis`.

Example:
    >>> from costtrace.cli import main
    >>> main(["demo", "--tasks", "20", "--seed", "1"])        # doctest: +SKIP
    0
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``costtrace`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    The parser and the commands are imported here, not with the package, so ``import costtrace`` never
    pays for them.
    """
    from costtrace.cli.app import main as run

    return run(argv)
