"""The exit statuses of the ``costtrace`` command, shared by :mod:`costtrace.cli.app` and the commands.

0 success; 1 ``phoenix prices`` left a model out (unpriced, or refused by Phoenix); 2 bad arguments or
configuration (one line on stderr saying what and how to fix it); 130 interrupted.
"""

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
