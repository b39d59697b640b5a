"""The OpenTelemetry tracer and meter costtrace records with, taken from whatever providers the app set.

``trace.get_tracer`` and ``metrics.get_meter`` return proxies until a provider is installed, so
costtrace works with an app that sets its providers after importing us, and costs nothing when no
SDK is configured (the API's no-op span).
"""

from __future__ import annotations

from opentelemetry import metrics, trace

from costtrace._version import __version__

_SCOPE = "costtrace"

_tracer: trace.Tracer | None = None
_meter: metrics.Meter | None = None


def tracer() -> trace.Tracer:
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer(_SCOPE, __version__)
    return _tracer


def meter() -> metrics.Meter:
    global _meter
    if _meter is None:
        _meter = metrics.get_meter(_SCOPE, __version__)
    return _meter


def _reset_for_tests() -> None:
    """Forget cached tracer and meter so that a test's freshly set providers are used."""
    global _tracer, _meter
    _tracer = None
    _meter = None
