"""The collector, Jaeger and Honeycomb recipes (exporters/otel-collector, exporters/jaeger, exporters/honeycomb).

Fast tests for the default run (not marked ``e2e``):

- the recipe files parse, and are consistent: collector pipelines use only defined components, in a
  sensible order; the tail-sampling policies, Honeycomb derived columns, triggers and board reference
  only attribute names costtrace emits (``costtrace.semconv``); the compose file publishes the ports.
- Honeycomb and Jaeger cannot run here, so a child process configures costtrace exactly as the recipes
  say, pointed at a capture server on 127.0.0.1 (only the host is changed), records tasks and flushes.
  The capture servers check what each backend would receive: for Honeycomb, OTLP/HTTP protobuf POSTs to
  /v1/traces and /v1/metrics with the team header on both and the dataset header on metrics only; for
  Jaeger, OTLP/gRPC to the TraceService with the service name and costtrace's attributes and events.

The workloads run in a subprocess: OpenTelemetry allows one global provider per process, and
tests/conftest.py installed the in-memory ones.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from costtrace import semconv as sc
from costtrace.tasks import Outcome

ROOT = Path(__file__).resolve().parents[2]
EXPORTERS = ROOT / "exporters"
COLLECTOR = EXPORTERS / "otel-collector" / "collector.yaml"
JAEGER_COMPOSE = EXPORTERS / "jaeger" / "compose.yaml"
HONEYCOMB = EXPORTERS / "honeycomb"
HONEYCOMB_ENV = HONEYCOMB / "honeycomb.env"
BACKENDS_DOC = ROOT / "docs" / "backends.md"

# Every attribute name costtrace can write (dimension keys are user-chosen: checked by prefix).
ATTRIBUTE_NAMES = {
    value
    for name, value in vars(sc).items()
    if name.isupper() and isinstance(value, str) and not name.startswith(("METRIC_", "EVENT_", "OPERATION_"))
}


def _is_costtrace_attribute(name: str) -> bool:
    return name in ATTRIBUTE_NAMES or (name.startswith(sc.DIMENSION_PREFIX) and len(name) > len(sc.DIMENSION_PREFIX))


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"not KEY=VALUE: {line!r}"
        env[key] = value
    return env


def _headers(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(","))


# --- the collector -----------------------------------------------------------------------------


def test_collector_pipelines_use_only_defined_components_and_every_component_is_used():
    config = _yaml(COLLECTOR)
    pipelines = config["service"]["pipelines"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}, name
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline {name} uses undefined {kind[:-1]} {component!r}"
                used[kind].add(component)
    for kind, names in used.items():
        assert names == set(config[kind]), f"{kind} defined but never used: {set(config[kind]) - names}"
    assert {n.split("/")[0] for n in pipelines} == {"traces", "metrics"}


def test_collector_receives_otlp_on_both_protocols():
    protocols = _yaml(COLLECTOR)["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_collector_memory_limiter_first_batch_last_and_metrics_never_sampled():
    config = _yaml(COLLECTOR)
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] and 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 90
    batch = config["processors"]["batch"]
    assert batch["send_batch_size"] <= batch["send_batch_max_size"]
    for name, pipeline in config["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name
        if name.startswith("metrics"):
            assert "tail_sampling" not in processors, "sampling must never touch the cost metrics"
    # Some pipeline samples (Jaeger), and some traces pipeline keeps everything (Honeycomb's sums).
    traces = [p for n, p in config["service"]["pipelines"].items() if n.startswith("traces")]
    assert any("tail_sampling" in p["processors"] for p in traces)
    assert any("tail_sampling" not in p["processors"] for p in traces)


def _ottl_attribute_names(condition: str) -> set[str]:
    return set(re.findall(r'attributes\["([^"]+)"\]', condition))


def test_tail_sampling_keeps_failed_and_expensive_tasks_using_costtrace_attribute_names():
    sampling = _yaml(COLLECTOR)["processors"]["tail_sampling"]
    policies = {p["name"]: p for p in sampling["policies"]}
    conditions = {name: p["ottl_condition"]["span"] for name, p in policies.items() if p["type"] == "ottl_condition"}
    for name, exprs in conditions.items():
        for expr in exprs:
            names = _ottl_attribute_names(expr)
            assert names, f"{name}: no attribute in {expr!r}"
            assert all(_is_costtrace_attribute(n) for n in names), f"{name}: unknown attribute in {expr!r}"
    # Failed: any outcome but success (failure, partial, escalated_to_human), never "success" itself.
    failed = " ".join(conditions["failed-tasks"])
    assert f'attributes["{sc.TASK_OUTCOME}"] != "{Outcome.SUCCESS.value}"' in failed
    assert f'attributes["{sc.TASK_OUTCOME}"] != nil' in failed
    # Expensive: a double threshold on the task's cost (numeric_attribute would read ints only).
    expensive = re.fullmatch(
        rf'attributes\["{re.escape(sc.TASK_COST_USD)}"\] > ([0-9.]+)', conditions["expensive-tasks"][0]
    )
    assert expensive and float(expensive.group(1)) > 0
    # No invert_match anywhere: an inverted "not sampled" decision overrides the keep policies.
    assert "invert_match" not in COLLECTOR.read_text()
    assert policies["errors"]["status_code"]["status_codes"] == ["ERROR"]
    assert sampling["decision_wait"].endswith("s") and int(sampling["decision_wait"][:-1]) >= 30


def test_collector_exporters_read_keys_from_the_environment_and_match_the_other_recipes():
    config = _yaml(COLLECTOR)
    exporters = config["exporters"]
    honeycomb_env = _env_file(HONEYCOMB_ENV)
    traces, metrics = exporters["otlp_http/honeycomb"], exporters["otlp_http/honeycomb-metrics"]
    for exporter in (traces, metrics):
        assert exporter["endpoint"] == honeycomb_env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert exporter["headers"]["x-honeycomb-team"] == "${env:HONEYCOMB_API_KEY}"
    assert "x-honeycomb-dataset" not in traces["headers"]
    assert metrics["headers"]["x-honeycomb-dataset"] == "${env:HONEYCOMB_METRICS_DATASET}"
    # Jaeger: the compose file's service name and its OTLP gRPC port.
    compose = _yaml(JAEGER_COMPOSE)
    host, port = exporters["otlp_grpc/jaeger"]["endpoint"].rsplit(":", 1)
    assert host in compose["services"] and f"{port}:{port}" in compose["services"][host]["ports"]
    assert exporters["otlp_grpc/jaeger"]["tls"]["insecure"] is True
    assert exporters["prometheus"]["endpoint"].endswith(":8889")


# --- Jaeger compose ------------------------------------------------------------------------------


def test_jaeger_compose_runs_jaeger_v2_with_otlp_and_the_ui():
    services = _yaml(JAEGER_COMPOSE)["services"]
    jaeger = services["jaeger"]
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", jaeger["image"]), jaeger["image"]
    assert {"4317:4317", "4318:4318", "16686:16686"} <= set(jaeger["ports"])


# --- Honeycomb definitions -------------------------------------------------------------------------

# Honeycomb calculated-field functions the definitions may use (docs: "Calculated Field functions").
HONEYCOMB_FUNCTIONS = {"IF", "EQUALS", "EXISTS", "NOT", "AND", "OR", "GT", "GTE", "LT", "LTE", "DIV", "MUL"}
HONEYCOMB_OPS = {"COUNT", "SUM", "AVG", "MAX", "MIN", "P50", "P90", "P95", "P99", "COUNT_DISTINCT"}


def _derived_columns() -> list[dict[str, str]]:
    return json.loads((HONEYCOMB / "derived-columns.json").read_text())


def _aliases() -> set[str]:
    return {c["alias"] for c in _derived_columns()}


def _check_column(column: str) -> None:
    assert _is_costtrace_attribute(column) or column in _aliases(), f"unknown column {column!r}"


def test_derived_columns_have_the_api_shape_and_reference_only_costtrace_attributes():
    columns = _derived_columns()
    assert len({c["alias"] for c in columns}) == len(columns)
    assert {"ct.task_success", "ct.task_retry_tax"} <= _aliases()
    for column in columns:
        assert set(column) == {"alias", "expression", "description"}, column
        expr = column["expression"]
        assert expr.count("(") == expr.count(")"), expr
        refs = re.findall(r"\$([A-Za-z_][\w.]*)", expr)
        assert refs, expr
        for ref in refs:
            assert _is_costtrace_attribute(ref), f"{column['alias']}: ${ref} is not an attribute costtrace writes"
        functions = set(re.findall(r"\b([A-Z_]+)\(", expr))
        assert functions <= HONEYCOMB_FUNCTIONS, functions - HONEYCOMB_FUNCTIONS
        for literal in re.findall(r'"([^"]*)"', expr):
            assert literal in {o.value for o in Outcome}, f"{column['alias']}: {literal!r} is not an outcome"


def _check_query(query: dict[str, Any], *, trigger: bool) -> None:
    assert set(query) <= {"time_range", "breakdowns", "calculations", "filters", "orders", "limit"}, query
    for column in query.get("breakdowns", []):
        _check_column(column)
    for calc in query["calculations"]:
        assert calc["op"] in HONEYCOMB_OPS
        assert ("column" in calc) == (calc["op"] != "COUNT"), calc
        if "column" in calc:
            _check_column(calc["column"])
    for flt in query.get("filters", []):
        _check_column(flt["column"])
        assert flt["op"] in {"=", "!=", ">", "<", "exists", "does-not-exist"}
    if trigger:
        assert len(query["calculations"]) == 1, "a trigger query has exactly one calculation"
        assert 0 < query["time_range"] <= 86400


def test_triggers_have_the_api_shape_and_cover_budget_burn_and_success_rate():
    triggers = json.loads((HONEYCOMB / "triggers.json").read_text())
    for trigger in triggers:
        assert {"name", "description", "query", "threshold", "frequency", "recipients"} <= set(trigger)
        assert 1 <= len(trigger["name"]) <= 120 and len(trigger["description"]) <= 1023
        assert trigger["threshold"]["op"] in {">", ">=", "<", "<="}
        assert isinstance(trigger["threshold"]["value"], int | float)
        assert 60 <= trigger["frequency"] <= 86400
        assert trigger["alert_type"] in {"on_change", "on_true"}
        assert trigger["recipients"]
        _check_query(trigger["query"], trigger=True)
    calcs = [(t["query"]["calculations"][0]["op"], t["query"]["calculations"][0]["column"]) for t in triggers]
    assert ("SUM", sc.CALL_COST_USD) in calcs  # per-feature spend (all calls, in tasks or not)
    assert ("AVG", "ct.task_success") in calcs  # success rate
    assert all(t["query"]["breakdowns"] == [sc.FEATURE] for t in triggers)


def test_board_is_a_flexible_board_of_valid_queries():
    board = json.loads((HONEYCOMB / "board.json").read_text())
    assert board["type"] == "flexible" and board["name"]
    assert board["panels"]
    for panel in board["panels"]:
        assert panel["type"] == "query" and panel["title"]
        assert panel["query_style"] in {"graph", "table", "combo"}
        _check_query(panel["query"], trigger=False)
    columns = {c.get("column") for p in board["panels"] for c in p["query"]["calculations"]}
    assert {sc.TASK_COST_USD, "ct.task_success", sc.TASK_WASTED_COST_USD} <= columns


def test_honeycomb_env_sets_endpoint_protocol_and_headers_per_signal():
    env = _env_file(HONEYCOMB_ENV)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://api.honeycomb.io"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    general, metrics = _headers(env["OTEL_EXPORTER_OTLP_HEADERS"]), _headers(env["OTEL_EXPORTER_OTLP_METRICS_HEADERS"])
    assert set(general) == {"x-honeycomb-team"}
    # Per-signal headers replace the general ones: the team header is repeated.
    assert set(metrics) == {"x-honeycomb-team", "x-honeycomb-dataset"}
    assert metrics["x-honeycomb-team"] == general["x-honeycomb-team"]


# --- capture servers ---------------------------------------------------------------------------------


class _HTTPCapture:
    """Records every request; answers 200 with an empty protobuf body, like an OTLP/HTTP backend."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        capture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                capture.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _HTTPCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def _grpc_capture() -> Iterator[tuple[int, list[tuple[Any, dict[str, str]]]]]:
    """An OTLP/gRPC TraceService on a free loopback port, recording each request and its metadata."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[tuple[Any, dict[str, str]]] = []

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.append((request, dict(context.invocation_metadata())))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, received
    finally:
        server.stop(grace=None)


# The child refuses any host but loopback, like tests/conftest.py: a wrong override never reaches the network.
WORKLOAD = textwrap.dedent(
    """
    import json, socket, sys
    _real = socket.getaddrinfo
    def _loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            raise OSError(f"network access blocked in tests: {host!r}")
        return _real(host, *args, **kwargs)
    socket.getaddrinfo = _loopback_only

    import costtrace
    costtrace.configure(**json.loads(sys.argv[1]))
    with costtrace.task("resolve_ticket", feature="support", team="cx") as t:
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=900, output_tokens=120)
        t.retry(reason="validation_failed", details="missing field 'amount'")
        t.escalate(to_model="gpt-4o", reason="low_confidence")
        costtrace.record_llm_call(provider="openai", model="gpt-4o", input_tokens=1200, output_tokens=300)
    print(json.dumps({"flushed": costtrace.flush(timeout_s=60), "task_id": t.id,
                      "cost_usd": float(t.summary.cost_usd)}))
    """
)


def _run_workload(tmp_path: Path, configure_kwargs: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    child_env.update(env)
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(configure_kwargs)],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["flushed"], done.stderr
    return result


def _attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field) if field else None
    return out


def _spans(requests: list[Any]) -> tuple[set[str], list[Any]]:
    services, spans = set(), []
    for request in requests:
        for rs in request.resource_spans:
            services.add(_attrs(rs.resource.attributes).get("service.name"))
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    return services, spans


def _check_task_trace(spans: list[Any], result: dict[str, Any]) -> None:
    tasks = [s for s in spans if _attrs(s.attributes).get(sc.TASK_OUTCOME) is not None]
    assert len(tasks) == 1
    task = tasks[0]
    attrs = _attrs(task.attributes)
    assert task.name == "invoke_workflow resolve_ticket"
    assert attrs[sc.TASK_ID] == result["task_id"] and attrs[sc.FEATURE] == "support"
    assert attrs[sc.TASK_OUTCOME] == "success" and attrs[sc.TASK_RETRIES] == 1 and attrs[sc.TASK_ESCALATIONS] == 1
    assert attrs[sc.TASK_COST_USD] == pytest.approx(result["cost_usd"])
    assert [e.name for e in task.events] == [sc.EVENT_RETRY, sc.EVENT_ESCALATION]
    assert _attrs(task.events[1].attributes)[sc.EVENT_ATTR_TO_MODEL] == "gpt-4o"
    calls = [s for s in spans if s.parent_span_id == task.span_id]
    assert sorted(s.name for s in calls) == ["chat gpt-4o", "chat gpt-4o-mini"]
    assert all(_attrs(c.attributes)[sc.CALL_COST_USD] > 0 for c in calls)


def _honeycomb_env(port: int) -> dict[str, str]:
    """honeycomb.env with only the host changed: https://api.honeycomb.io -> http://127.0.0.1:<port>."""
    env = _env_file(HONEYCOMB_ENV)
    endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.netloc == "api.honeycomb.io"
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint._replace(scheme="http", netloc=f"127.0.0.1:{port}").geturl()
    return env


def test_honeycomb_env_sends_traces_and_metrics_with_the_headers_honeycomb_expects(tmp_path: Path):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    recipe = _env_file(HONEYCOMB_ENV)
    team = _headers(recipe["OTEL_EXPORTER_OTLP_HEADERS"])["x-honeycomb-team"]
    dataset = _headers(recipe["OTEL_EXPORTER_OTLP_METRICS_HEADERS"])["x-honeycomb-dataset"]
    with _HTTPCapture() as capture:
        # The README's call: everything else comes from the environment.
        result = _run_workload(tmp_path, {}, _honeycomb_env(capture.port))
    by_path: dict[str, list[dict[str, Any]]] = {}
    for request in capture.requests:
        by_path.setdefault(request["path"], []).append(request)
    assert set(by_path) == {"/v1/traces", "/v1/metrics"}
    for request in capture.requests:
        assert request["headers"]["content-type"] == "application/x-protobuf"
        assert request["headers"]["x-honeycomb-team"] == team
    assert all("x-honeycomb-dataset" not in r["headers"] for r in by_path["/v1/traces"])
    assert all(r["headers"]["x-honeycomb-dataset"] == dataset for r in by_path["/v1/metrics"])

    traces = [ExportTraceServiceRequest.FromString(r["body"]) for r in by_path["/v1/traces"]]
    services, spans = _spans(traces)
    assert services == {recipe["OTEL_SERVICE_NAME"]}  # Honeycomb's trace dataset
    _check_task_trace(spans, result)
    metric_names = set()
    for r in by_path["/v1/metrics"]:
        for rm in ExportMetricsServiceRequest.FromString(r["body"]).resource_metrics:
            metric_names |= {m.name for sm in rm.scope_metrics for m in sm.metrics}
    assert {sc.METRIC_TASKS, sc.METRIC_TASK_COST, sc.METRIC_CALL_COST} <= metric_names


def test_honeycomb_configure_arguments_put_the_same_headers_on_both_signals(tmp_path: Path):
    """``configure(headers=...)`` applies to traces and metrics alike: no dataset for metrics (README warns)."""
    with _HTTPCapture() as capture:
        _run_workload(
            tmp_path,
            {
                "service_name": "support-bot",
                "otlp_endpoint": f"http://127.0.0.1:{capture.port}",
                "headers": {"x-honeycomb-team": "KEY"},
            },
            {},
        )
    assert {r["path"] for r in capture.requests} == {"/v1/traces", "/v1/metrics"}
    for request in capture.requests:
        assert request["headers"]["x-honeycomb-team"] == "KEY"
        assert request["headers"]["content-type"] == "application/x-protobuf"
        assert "x-honeycomb-dataset" not in request["headers"]


def test_jaeger_receives_the_task_trace_over_otlp_grpc(tmp_path: Path):
    with _grpc_capture() as (port, received):
        # The Jaeger README's call (Jaeger stores traces only: metrics off).
        result = _run_workload(
            tmp_path,
            {
                "service_name": "support-bot",
                "otlp_endpoint": f"http://127.0.0.1:{port}",
                "otlp_protocol": "grpc",
                "metrics": False,
            },
            {},
        )
    assert received
    for _, metadata in received:
        assert metadata.get("user-agent", "").startswith("OTel-OTLP-Exporter-Python")
    services, spans = _spans([request for request, _ in received])
    assert services == {"support-bot"}
    _check_task_trace(spans, result)


# --- docs/backends.md --------------------------------------------------------------------------------


def test_backends_page_links_every_recipe_and_every_link_resolves():
    text = BACKENDS_DOC.read_text()
    links = re.findall(r"\]\((\.\./[^)#\s]+)", text)
    for link in links:
        assert (BACKENDS_DOC.parent / link).resolve().exists(), f"broken link {link}"
    linked = {m.group(1) for link in links if (m := re.match(r"\.\./exporters/([^/]+)/", link))}
    assert linked >= {p.name for p in EXPORTERS.iterdir() if p.is_dir()}
