"""configure(): validation errors, real OTLP/HTTP export to a local receiver, bounded flush and shutdown,
and what a plain install gives: the README's quickstart runs as written, with only the packages its install
line brings (other modules of this environment are made unimportable in the subprocess).

Export runs in a subprocess because OpenTelemetry's global providers can be set once per process
(this test process already has the in-memory ones from conftest).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
        ({"metric_export_interval_s": 0}, "must be a number of seconds > 0"),
        ({"metric_export_interval_s": float("nan")}, "metric_export_interval_s=nan must be a number of seconds > 0"),
        ({"metric_export_interval_s": 1e12}, "metric_export_interval_s=1000000000000.0 must be <= 86,400 seconds"),
        ({"export_timeout_s": -1}, "export_timeout_s=-1 must be a number of seconds > 0"),
        ({"export_timeout_s": float("inf")}, "export_timeout_s=inf must be <= 3,600 seconds"),
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


# --- what a plain install gives: the README's quickstart, configure() on core dependencies -------------

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _installed_by(extras: frozenset[str]) -> set[str]:
    """The distributions ``pip install 'costtrace[extras]'`` brings (costtrace's requirements, recursively)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [("costtrace", extras)]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python (its marker excluded it)
        found.add(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in wanted | {""}):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return found


def _modules_not_installed_by(extras: frozenset[str]) -> list[str]:
    """Modules of this environment that ``pip install 'costtrace[extras]'`` would not have installed."""
    from packaging.utils import canonicalize_name

    allowed = _installed_by(extras)
    blocked: set[str] = set()
    for dist in importlib.metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) in allowed:
            continue
        for file in dist.files or []:
            parts = file.parts
            if not parts or parts[0] in ("..", "bin") or parts[0].endswith((".dist-info", ".data")):
                continue
            if file.suffix == ".py":
                module = ".".join((*parts[:-1], file.stem))
            elif file.suffix in (".so", ".pyd"):
                module = ".".join((*parts[:-1], file.name.split(".")[0]))
            else:
                continue
            blocked.add(module.removesuffix(".__init__"))
    return sorted(blocked)


_BLOCKER = """
import json, sys
_blocked = frozenset(json.load(open(sys.argv[1])))
class _NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in _blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by the install line)", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled)
"""


def _run_installed_by(
    extras: frozenset[str], code: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that can import only what ``costtrace[extras]`` installs."""
    blocked = tmp_path / "blocked.json"
    blocked.write_text(json.dumps(_modules_not_installed_by(extras)))
    script = tmp_path / "app.py"
    script.write_text(_BLOCKER + "\n" + code, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSTTRACE_", "OPENAI_"))}
    clean = {k: v for k, v in clean.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return subprocess.run(
        [sys.executable, str(script), str(blocked)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
        cwd=tmp_path,
    )


def _exported_spans(received: list[tuple[str, bytes, dict[str, str]]]) -> dict[str, dict[str, Any]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans: dict[str, dict[str, Any]] = {}
    for path, body, _ in received:
        if path != "/v1/traces":
            continue
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans[span.name] = {a.key: a.value for a in span.attributes}
    return spans


def test_the_otlp_http_exporter_is_a_core_dependency_and_grpc_the_otlp_extra():
    from packaging.requirements import Requirement

    requires = [Requirement(r) for r in importlib.metadata.requires("costtrace") or []]
    http = [r for r in requires if r.name == "opentelemetry-exporter-otlp-proto-http"]
    assert [r.marker for r in http] == [None]  # installed by a plain `pip install costtrace`
    grpc = [r for r in requires if r.name == "opentelemetry-exporter-otlp-proto-grpc"]
    assert [str(r.marker) for r in grpc] == ['extra == "otlp"']
    assert "opentelemetry-exporter-otlp-proto-http" in _installed_by(frozenset())
    assert "opentelemetry-exporter-otlp-proto-grpc" not in _installed_by(frozenset())


def test_the_readme_quickstart_runs_as_written_after_its_install_line(otlp_receiver, tmp_path):
    """Issue 10: the quickstart raised ConfigError after the README's own install line."""
    from tests.instrumentation.fake_server import FakeLLMServer

    quickstart = _section("## Quickstart")
    install = _code_blocks(quickstart, "bash")[0]  # the section's first command and first code block
    [extras_text] = re.findall(r"pip install -e '\.\[([a-z,]+)\]'", install)
    code = _code_blocks(quickstart, "python")[0]
    assert "costtrace.configure(service_name=" in code

    def answer(content: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1735689600,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
        }

    openai_server = FakeLLMServer()
    try:
        openai_server.json(answer(""))  # fails the quickstart's check: one retry
        openai_server.json(answer("Refund issued: you were charged twice."))
        result = _run_installed_by(
            frozenset(extras_text.split(",")),
            code,
            tmp_path,
            env={
                "OPENAI_API_KEY": "test-not-a-key",
                "OPENAI_BASE_URL": f"{openai_server.url}/v1",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_receiver.server_address[1]}",
            },
        )
    finally:
        openai_server.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Refund issued: you were charged twice.\n"
    assert len(openai_server.requests) == 2
    spans = _exported_spans(otlp_receiver.received)  # exported at exit by configure()'s shutdown
    task = spans["invoke_workflow resolve_ticket"]
    assert task["costtrace.task.outcome"].string_value == "success"
    assert task["costtrace.task.retries"].int_value == 1
    assert task["costtrace.task.cost_usd"].double_value > 0
    assert spans["chat gpt-4o-mini"]["gen_ai.usage.input_tokens"].int_value == 30


def test_configure_with_a_service_name_needs_only_core_dependencies(otlp_receiver, tmp_path):
    port = otlp_receiver.server_address[1]
    result = _run_installed_by(
        frozenset(),
        f"""
import costtrace
costtrace.configure(service_name="support-bot", otlp_endpoint="http://127.0.0.1:{port}")
with costtrace.task("resolve_ticket", feature="support"):
    costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
print(costtrace.shutdown(timeout_s=10))
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    assert set(_exported_spans(otlp_receiver.received)) == {"invoke_workflow resolve_ticket", "chat gpt-4o-mini"}


def test_configure_console_alone_prints_spans_and_exports_nothing(tmp_path):
    result = _run_installed_by(
        frozenset(),
        """
import costtrace
from opentelemetry import trace
costtrace.configure(console=True)
with costtrace.task("resolve_ticket"):
    costtrace.record_llm_call("openai", "gpt-4o-mini", 10, 1)
processors = trace.get_tracer_provider()._active_span_processor._span_processors
print("PROCESSORS", [type(p).__name__ for p in processors])
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "task resolve_ticket  success" in result.stdout  # the human console (tests/test_console.py)
    assert "PROCESSORS ['ConsoleSpanProcessor']" in result.stdout
    assert "4318" not in result.stderr  # no attempt to reach a collector nobody configured


def test_grpc_without_the_otlp_extra_names_the_extra(tmp_path):
    result = _run_installed_by(
        frozenset(),
        """
import costtrace
try:
    costtrace.configure(service_name="s", otlp_protocol="grpc")
except costtrace.ConfigError as exc:
    print(exc)
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "opentelemetry-exporter-otlp-proto-grpc" in result.stdout
    assert "pip install 'costtrace[otlp]'" in result.stdout


# --- OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER (issue 12) --------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER='zipkin': exporter 'zipkin' is not supported"),
        ("OTEL_METRICS_EXPORTER", "prometheus", "metric_reader=PrometheusMetricReader()"),
        ("OTEL_METRICS_EXPORTER", "logging", "the spec deprecates 'logging': use console"),
        ("OTEL_TRACES_EXPORTER", "otlp,jaegr", "OTEL_TRACES_EXPORTER='otlp,jaegr': exporter 'jaegr'"),
        ("OTEL_METRICS_EXPORTER", "none,otlp", "'none' cannot be combined with other exporters"),
    ],
)
def test_an_unsupported_exporter_variable_raises_config_error_naming_it(monkeypatch, variable, value, message):
    from opentelemetry import trace

    from costtrace import config

    provider = trace.get_tracer_provider()
    monkeypatch.setenv(variable, value)
    with pytest.raises(costtrace.ConfigError) as info:
        costtrace.configure(service_name="s")
    assert message in str(info.value)
    assert trace.get_tracer_provider() is provider and not config._configured


_NO_ENV: dict[str, str] = {}


@pytest.mark.parametrize(
    ("env", "kwargs", "expected"),
    [
        # (traces_otlp, traces_console, metrics, metrics_otlp, metrics_console)
        (_NO_ENV, {}, (True, False, True, True, False)),
        ({"OTEL_METRICS_EXPORTER": "none"}, {}, (True, False, False, False, False)),
        ({"OTEL_METRICS_EXPORTER": "NONE"}, {}, (True, False, False, False, False)),  # case-insensitive enum
        ({"OTEL_TRACES_EXPORTER": "none"}, {}, (False, False, True, True, False)),
        ({"OTEL_TRACES_EXPORTER": "console"}, {}, (False, True, True, True, False)),  # metrics: default otlp
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, {}, (True, True, True, True, False)),
        ({"OTEL_METRICS_EXPORTER": "console"}, {}, (True, False, True, False, True)),
        # Explicit arguments win over the variables.
        ({"OTEL_METRICS_EXPORTER": "none"}, {"metrics": True}, (True, False, True, True, False)),
        ({"OTEL_METRICS_EXPORTER": "otlp"}, {"metrics": False}, (True, False, False, False, False)),
        ({"OTEL_TRACES_EXPORTER": "none"}, {"otlp": True}, (True, False, True, True, False)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, {"otlp": False}, (False, False, True, False, False)),
        ({"OTEL_TRACES_EXPORTER": "console"}, {"console": False}, (False, False, True, True, False)),
        # metrics=none keeps the app's own reader.
        ({"OTEL_METRICS_EXPORTER": "none"}, {"metric_reader": object()}, (False, False, True, False, False)),
        (_NO_ENV, {"console": True}, (False, True, True, False, False)),
        (_NO_ENV, {"console": True, "otlp_endpoint": "http://c:4318"}, (True, True, True, True, False)),
    ],
)
def test_exporters_follow_the_otel_variables_and_explicit_arguments_win(monkeypatch, env, kwargs, expected):
    from costtrace import config

    for variable in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", *config._ENDPOINT_VARIABLES):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    args: dict[str, Any] = {"otlp": None, "otlp_endpoint": None, "console": None, "metrics": None, **kwargs}
    plan = config._export_plan(**args)
    assert (plan.traces_otlp, plan.traces_console, plan.metrics, plan.metrics_otlp, plan.metrics_console) == expected


def _run_env(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300, env=child_env
    )


_EXPORT_ONE_TASK = """
    import costtrace
    costtrace.configure(**{kwargs})
    with costtrace.task("resolve_ticket", feature="support"):
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
    print(costtrace.shutdown(timeout_s=30))
"""


def test_otel_metrics_exporter_none_sends_traces_only(otlp_receiver):
    endpoint = f"http://127.0.0.1:{otlp_receiver.server_address[1]}"
    result = _run_env(
        _EXPORT_ONE_TASK.format(kwargs="{}"),
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_METRICS_EXPORTER": "none", "OTEL_SERVICE_NAME": "svc"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    assert {path for path, _, _ in otlp_receiver.received} == {"/v1/traces"}
    assert set(_exported_spans(otlp_receiver.received)) == {"invoke_workflow resolve_ticket", "chat gpt-4o-mini"}


def test_an_explicit_metrics_true_wins_over_otel_metrics_exporter_none(otlp_receiver):
    endpoint = f"http://127.0.0.1:{otlp_receiver.server_address[1]}"
    result = _run_env(
        _EXPORT_ONE_TASK.format(kwargs=f"{{'otlp_endpoint': '{endpoint}', 'metrics': True}}"),
        {"OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"},
    )
    assert result.returncode == 0, result.stderr
    # metrics=True beats OTEL_METRICS_EXPORTER=none; nothing explicit beats OTEL_TRACES_EXPORTER=none.
    assert {path for path, _, _ in otlp_receiver.received} == {"/v1/metrics"}


def test_otel_traces_exporter_console_prints_spans_and_metrics_console_prints_metrics():
    result = _run_env(
        _EXPORT_ONE_TASK.format(kwargs="{}"),
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"},
    )
    assert result.returncode == 0, result.stderr
    assert '"name": "invoke_workflow resolve_ticket"' in result.stdout
    assert '"name": "costtrace.tasks"' in result.stdout  # ConsoleMetricExporter's JSON
    assert "4318" not in result.stderr  # no OTLP exporter: nothing tried a collector
