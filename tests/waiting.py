"""Waiting in tests without depending on the scheduler: poll a condition under a generous deadline.

The suite must pass with the machine's cores busy, so a test never sleeps and hopes; it waits for the
condition it needs, and the deadline only catches a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable

HANG_S = 60.0
"""How long a condition may take before the test calls it a hang."""


def wait_for(predicate: Callable[[], object], what: str = "condition", timeout_s: float = HANG_S) -> None:
    """Poll ``predicate`` until it is true; fail the test naming ``what`` after ``timeout_s``.

    Example:
        >>> wait_for(lambda: True, "nothing")
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)
