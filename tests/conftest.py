"""Test set-up: one in-memory TracerProvider and MeterProvider for the whole run.

OpenTelemetry allows a global provider to be set once per process, so the tests share these and
clear them per test. Internal errors re-raise under the test suite (see costtrace._internal).
"""

from __future__ import annotations

import os

os.environ["COSTTRACE_RAISE_INTERNAL_ERRORS"] = "1"

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def _loopback_only() -> None:
    """Tests never reach the network: resolving any non-loopback host fails at once."""
    import socket

    real_getaddrinfo = socket.getaddrinfo
    allowed = {"127.0.0.1", "localhost", "::1", None}

    def guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in allowed:
            raise OSError(f"network access blocked in tests: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = guarded_getaddrinfo


_loopback_only()

# Property tests must not depend on the machine's speed or on earlier runs: no per-example deadline
# (200 ms by default, missed on a loaded machine), no too-slow health check, the same examples every
# run (seeded from each test), and no example database replaying what another run found. A test's own
# @settings override only the fields it names.
settings.register_profile(
    "costtrace", deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("costtrace")

# The first token estimate in this process waits for tiktoken to load the bundled cl100k_base: 0.1 s on
# an idle machine, more than the 3 s default on a busy one, which would make that one test's estimate a
# "heuristic". Here it may take a minute (downloads still fail at once: the network is blocked above).
# tests/test_tokens.py tests the wait itself.
import costtrace.price.tokens  # noqa: E402

costtrace.price.tokens.DEFAULT_TIMEOUT_S = 60.0

_span_exporter = InMemorySpanExporter()
_tracer_provider = TracerProvider()
_tracer_provider.add_span_processor(SimpleSpanProcessor(_span_exporter))
trace.set_tracer_provider(_tracer_provider)

_metric_reader = InMemoryMetricReader(
    preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
)
metrics.set_meter_provider(MeterProvider(metric_readers=[_metric_reader]))


class Spans:
    """Finished spans of the current test."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    def tasks(self) -> list[ReadableSpan]:
        return [s for s in self.all() if (s.attributes or {}).get("gen_ai.operation.name") == "invoke_workflow"]

    def calls(self) -> list[ReadableSpan]:
        return [s for s in self.all() if s.kind == trace.SpanKind.CLIENT]

    def one_task(self, name: str | None = None) -> ReadableSpan:
        found = [s for s in self.tasks() if name is None or s.attributes["costtrace.task.name"] == name]
        assert len(found) == 1, f"expected one task span named {name!r}, got {len(found)}"
        return found[0]


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    from costtrace import _internal, span_options

    _span_exporter.clear()
    _metric_reader.get_metrics_data()  # drop what earlier tests recorded (delta temporality)
    _internal._reset_for_tests()
    span_options._reset_for_tests()
    yield


@pytest.fixture
def spans() -> Spans:
    return Spans(_span_exporter)


class Metrics:
    """Metric points recorded since the test started (delta temporality)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self._reader = reader

    def collect(self) -> dict[str, list[object]]:
        data = self._reader.get_metrics_data()
        out: dict[str, list[object]] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out.setdefault(m.name, []).extend(m.data.data_points)
        return out


@pytest.fixture
def metric_points() -> Metrics:
    metrics_ = Metrics(_metric_reader)
    metrics_.collect()  # counters and histograms are deltas: start them at this test
    return metrics_
