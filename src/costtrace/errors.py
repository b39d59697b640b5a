"""The exceptions costtrace raises, all while configuring, never while recording.

CosttraceError
 └── ConfigError      a bad setting: the message names the value and the fix
"""

from __future__ import annotations


class CosttraceError(Exception):
    """Base class of every exception costtrace raises on purpose."""


class ConfigError(CosttraceError, ValueError):
    """A configuration value is invalid or a needed optional package is missing.

    Raised by ``configure()``, price overrides and other set-up calls, never while recording calls.
    """
