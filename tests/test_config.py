"""configure(): validation errors, real OTLP/HTTP export to a local receiver, bounded flush and shutdown.

Export runs in a subprocess because OpenTelemetry's global providers can be set once per process
(this test process already has the in-memory ones from conftest).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import costtrace


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"otlp_protocol": "http/json"}, "do not implement http/json"),
        ({"otlp_protocol": "udp"}, "otlp_protocol='udp' is not supported"),
        ({"otlp_endpoint": "localhost:4318"}, "is not an http(s) URL"),
        ({"headers": "x-api-key"}, "cannot parse 'x-api-key'"),
        ({"headers": 42}, "headers must be a dict"),
        ({"metric_export_interval_s": 0}, "must be > 0"),
    ],
)
def test_bad_configuration_raises_config_error_naming_the_value(kwargs, message):
    with pytest.raises(costtrace.ConfigError) as info:
        costtrace.configure(**kwargs)
    assert message in str(info.value)


def test_flush_returns_true_within_timeout():
    costtrace.record_llm_call("openai", "gpt-4o-mini", 1, 1)
    assert costtrace.flush(timeout_s=30.0) is True


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, body, dict(self.headers)))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _run(script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=timeout
    )


def test_configure_exports_task_and_call_spans_over_otlp_http(otlp_receiver):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    port = otlp_receiver.server_address[1]
    result = _run(
        f"""
        import costtrace
        costtrace.configure(service_name="svc-under-test", otlp_endpoint="http://127.0.0.1:{port}",
                            headers="x-team=secret-team-key")
        with costtrace.task("resolve_ticket", feature="support"):
            costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
        print(costtrace.flush(timeout_s=10))
        print(costtrace.shutdown(timeout_s=10))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]

    traces = [(p, b, h) for p, b, h in otlp_receiver.received if p == "/v1/traces"]
    assert traces, otlp_receiver.received
    assert all(h.get("x-team") == "secret-team-key" for _, _, h in traces)
    spans = {}
    for _, body, _ in traces:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
            assert service == "svc-under-test"
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans[span.name] = {a.key: a.value for a in span.attributes}
    assert set(spans) == {"invoke_workflow resolve_ticket", "chat gpt-4o-mini"}
    task_attrs = spans["invoke_workflow resolve_ticket"]
    assert task_attrs["costtrace.task.outcome"].string_value == "success"
    assert task_attrs["costtrace.task.cost_usd"].double_value > 0
    assert spans["chat gpt-4o-mini"]["gen_ai.usage.input_tokens"].int_value == 1000

    metric_names = set()
    for path, body, _ in otlp_receiver.received:
        if path == "/v1/metrics":
            req = ExportMetricsServiceRequest.FromString(body)
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    metric_names.update(m.name for m in sm.metrics)
    assert {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "costtrace.tasks",
    } <= metric_names


@pytest.fixture
def stalled_collector() -> Iterator[int]:
    """A port that accepts connections and never answers: the worst case for exporters."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("explicit_shutdown", [True, False])
def test_a_stalled_collector_cannot_hang_exit(stalled_collector, explicit_shutdown):
    shutdown_line = "costtrace.shutdown(timeout_s=1.0)" if explicit_shutdown else "pass  # atexit shuts down"
    started = time.monotonic()
    result = _run(
        f"""
        import faulthandler
        faulthandler.dump_traceback_later(90, exit=True)  # a hang shows every thread's stack in stderr
        import costtrace, costtrace.config
        costtrace.config.DEFAULT_SHUTDOWN_TIMEOUT_S = 1.0
        costtrace.configure(otlp_endpoint="http://127.0.0.1:{stalled_collector}", export_timeout_s=120)
        for i in range(50):
            with costtrace.task("t"):
                costtrace.record_llm_call("openai", "gpt-4o-mini", 10, 1)
        {shutdown_line}
        """,
        timeout=100,  # a hang fails the test after 100 s
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    # The exporter alone would wait 120 s for the stalled collector; exit is bounded by the 1 s shutdown
    # timeout plus interpreter start-up (seconds on a busy machine). 100 s tells the two apart.
    assert elapsed < 100, elapsed
