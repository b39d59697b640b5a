"""The collector, Jaeger, Honeycomb and Tempo recipes (exporters/otel-collector, jaeger, honeycomb, tempo).

Fast tests for the default run (not marked ``e2e``):

- the recipe files parse, and are consistent: collector pipelines use only defined components, in a
  sensible order; the tail-sampling policies, Honeycomb derived columns, triggers and board, Tempo's
  TraceQL and Jaeger's tag searches reference only attribute names costtrace emits
  (``costtrace.semconv``) or the status fields the backend derives from the span; the compose files
  publish the ports; Tempo's configuration lets TraceQL metrics see costtrace's INTERNAL task spans.
- Honeycomb, Jaeger and Tempo cannot run here, so a child process configures costtrace exactly as the
  recipes say, pointed at a capture server on 127.0.0.1 (only the host is changed), records tasks and
  flushes. The capture servers check what each backend would receive: for Honeycomb, OTLP/HTTP protobuf
  POSTs to /v1/traces and /v1/metrics with the team header on both and the dataset header on metrics
  only; for Jaeger, OTLP/gRPC to the TraceService with the service name and costtrace's attributes and
  events; for Tempo, traces only.
- One fixed workload (tests/e2e/recipe_workload.py: successful, retried, escalated, failed,
  escalated_to_human and raised tasks) runs per recipe; each recipe's queries are evaluated on the spans
  received, as the backend would evaluate them (Honeycomb derived columns, board queries and Query
  Math; TraceQL selectors and metrics sums; Jaeger tag searches), and must give costtrace's own figures
  (task summaries and ledger) and the figures docs/backends.md quotes. Failed tasks arrive with status
  ERROR.

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
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from decimal import Decimal
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
# (semconv also holds attribute *values*: operation names, OpenInference span kinds, MIME types.)
ATTRIBUTE_NAMES = {
    value
    for name, value in vars(sc).items()
    if name.isupper()
    and isinstance(value, str)
    and not name.startswith(("METRIC_", "EVENT_", "OPERATION_", "OPENINFERENCE_KIND_", "MIME_TYPE_"))
    and name != "DIMENSION_PREFIX"
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


# Columns Honeycomb derives from the OTLP span itself, not from an attribute (honeycombio/husky):
# status_code (the status enum, 2 = ERROR), status_message, and error = true when the status is ERROR.
HONEYCOMB_SPAN_FIELDS = {"status_code", "status_message", "error"}


def _check_column(column: str) -> None:
    assert _is_costtrace_attribute(column) or column in _aliases() or column in HONEYCOMB_SPAN_FIELDS, (
        f"unknown column {column!r}"
    )


def test_derived_columns_have_the_api_shape_and_reference_only_costtrace_attributes():
    columns = _derived_columns()
    assert len({c["alias"] for c in columns}) == len(columns)
    assert {"ct.task_success", "ct.task_failed", "ct.task_retry_tax"} <= _aliases()
    for column in columns:
        assert set(column) == {"alias", "expression", "description"}, column
        expr = column["expression"]
        assert expr.count("(") == expr.count(")"), expr
        refs = re.findall(r"\$([A-Za-z_][\w.]*)", expr)
        assert refs, expr
        for ref in refs:
            assert _is_costtrace_attribute(ref) or ref in HONEYCOMB_SPAN_FIELDS, (
                f"{column['alias']}: ${ref} is not an attribute costtrace writes"
            )
        functions = set(re.findall(r"\b([A-Z_]+)\(", expr))
        assert functions <= HONEYCOMB_FUNCTIONS, functions - HONEYCOMB_FUNCTIONS
        for literal in re.findall(r'"([^"]*)"', expr):
            assert literal in {o.value for o in Outcome}, f"{column['alias']}: {literal!r} is not an outcome"
        # Numbers compared with status_code are OTLP status codes.
        for number in re.findall(r"EQUALS\(\$status_code, (\d+)\)", expr):
            assert int(number) == 2, "status_code 2 is ERROR (0 unset, 1 ok)"


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


def _run_script(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a workload script in a child with no OTEL_/COSTTRACE_ variables but ``env``; its last stdout line, parsed."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSTTRACE_"))}
    child_env.update(env)
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=child_env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["flushed"], done.stderr
    result["_stderr"] = done.stderr
    return result


def _run_workload(tmp_path: Path, configure_kwargs: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    return _run_script([str(script), json.dumps(configure_kwargs)], env)


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


# --- one fixed workload, each recipe's queries evaluated on what the backend would receive -------------
#
# tests/e2e/recipe_workload.py records six tasks (success first pass, retried, escalated, failed,
# escalated_to_human, raised) in a child configured exactly as a recipe says, and prints costtrace's own
# figures for them (task summaries and the ledger). The recipe's queries are then evaluated on the spans
# the capture server received, as the backend would: Honeycomb's derived columns and Query Math,
# TraceQL filters and TraceQL metrics sums, Jaeger tag searches. Each must give costtrace's figures.

WORKLOAD_SCRIPT = Path(__file__).with_name("recipe_workload.py")
TEMPO = EXPORTERS / "tempo"
JAEGER_README = EXPORTERS / "jaeger" / "README.md"
HONEYCOMB_README = HONEYCOMB / "README.md"
# Jaeger turns the OTLP status into these tags (OTLP -> Jaeger model translation).
JAEGER_STATUS_TAGS = {"error", "otel.status_code", "otel.status_description"}


@dataclass(frozen=True)
class Span:
    """A span as a backend stores it: what the recipes' queries can see."""

    name: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    kind: str  # "internal", "client", ...
    status: str  # "unset", "ok", "error"
    status_message: str
    attrs: dict[str, Any]
    resource: dict[str, Any]
    events: tuple[str, ...]

    @property
    def is_task(self) -> bool:
        return self.attrs.get(sc.GEN_AI_OPERATION_NAME) == sc.OPERATION_INVOKE_WORKFLOW


def _received_spans(requests: list[Any]) -> list[Span]:
    from opentelemetry.proto.trace.v1 import trace_pb2

    kinds = {v: k.removeprefix("SPAN_KIND_").lower() for k, v in trace_pb2.Span.SpanKind.items()}
    statuses = {v: k.removeprefix("STATUS_CODE_").lower() for k, v in trace_pb2.Status.StatusCode.items()}
    spans = []
    for request in requests:
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans.append(
                        Span(
                            name=span.name,
                            trace_id=span.trace_id,
                            span_id=span.span_id,
                            parent_span_id=span.parent_span_id,
                            kind=kinds[span.kind],
                            status=statuses[span.status.code],
                            status_message=span.status.message,
                            attrs=_attrs(span.attributes),
                            resource=resource,
                            events=tuple(e.name for e in span.events),
                        )
                    )
    return spans


@dataclass(frozen=True)
class Run:
    """One run of the fixed workload: costtrace's own figures and what the capture server received."""

    result: dict[str, Any]
    spans: list[Span]
    paths: list[str]

    def task_span(self, kind: str) -> Span:
        (span,) = [s for s in self.spans if s.is_task and s.attrs[sc.TASK_ID] == self.result["task_ids"][kind]]
        return span

    def kinds(self, spans: list[Span]) -> set[str]:
        """The workload's names (first_pass, failed, ...) of the task spans among ``spans``."""
        by_id = {task_id: kind for kind, task_id in self.result["task_ids"].items()}
        return {by_id[s.attrs[sc.TASK_ID]] for s in spans if s.is_task}

    def trace_kinds(self, trace_ids: set[bytes]) -> set[str]:
        return self.kinds([s for s in self.spans if s.is_task and s.trace_id in trace_ids])


def _run_fixed_workload(workdir: Path, configure_kwargs: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    result = _run_script(
        [str(WORKLOAD_SCRIPT), json.dumps(configure_kwargs), f"sqlite:///{workdir / 'ledger.db'}"], env
    )
    assert "error" not in result["_stderr"].lower(), result["_stderr"]  # no export error logged
    return result


def _code_blocks(path: Path, language: str) -> list[str]:
    return [b.strip() for b in re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)]


def _tempo_env(port: int) -> dict[str, str]:
    """The environment the Tempo README exports, with only the host changed to the capture server."""
    (block,) = [b for b in _code_blocks(TEMPO / "README.md", "bash") if "OTEL_EXPORTER_OTLP_ENDPOINT" in b]
    env = dict(re.findall(r"^export (\w+)=(\S+)", block, re.M))
    endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.netloc == "localhost:4318"
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint._replace(netloc=f"127.0.0.1:{port}").geturl()
    return env


def _python_call(path: Path, contains: str) -> str:
    (block,) = [b for b in _code_blocks(path, "python") if contains in b]
    return block


@pytest.fixture(scope="module")
def honeycomb_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    assert "costtrace.configure()" in _python_call(HONEYCOMB_README, "costtrace.configure(")
    with _HTTPCapture() as capture:
        result = _run_fixed_workload(tmp_path_factory.mktemp("honeycomb"), {}, _honeycomb_env(capture.port))
    traces = [ExportTraceServiceRequest.FromString(r["body"]) for r in capture.requests if r["path"] == "/v1/traces"]
    return Run(result, _received_spans(traces), [r["path"] for r in capture.requests])


@pytest.fixture(scope="module")
def tempo_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    assert "costtrace.configure()" in _python_call(TEMPO / "README.md", "costtrace.configure(")
    with _HTTPCapture() as capture:
        result = _run_fixed_workload(tmp_path_factory.mktemp("tempo"), {}, _tempo_env(capture.port))
    traces = [ExportTraceServiceRequest.FromString(r["body"]) for r in capture.requests if r["path"] == "/v1/traces"]
    return Run(result, _received_spans(traces), [r["path"] for r in capture.requests])


@pytest.fixture(scope="module")
def jaeger_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    call = _python_call(JAEGER_README, "costtrace.configure(")
    assert 'otlp_endpoint="http://localhost:4317"' in call and 'otlp_protocol="grpc"' in call
    assert "metrics=False" in call and 'service_name="support-bot"' in call
    with _grpc_capture() as (port, received):
        kwargs = {
            "service_name": "support-bot",
            "otlp_endpoint": f"http://127.0.0.1:{port}",
            "otlp_protocol": "grpc",
            "metrics": False,
        }
        result = _run_fixed_workload(tmp_path_factory.mktemp("jaeger"), kwargs, {})
    return Run(result, _received_spans([request for request, _ in received]), [])


def _expected(run: Run) -> dict[str, Any]:
    """costtrace's own figures for the workload; the summaries and the ledger must agree first."""
    summaries, ledger = run.result["summaries"], run.result["ledger"]
    for key in ("tasks", "successes", "cost_usd", "wasted_cost_usd", "cost_per_task_usd"):
        assert Decimal(str(summaries[key])) == Decimal(str(ledger[key])), key
    assert Decimal(summaries["cost_per_successful_task_usd"]) == Decimal(ledger["cost_per_successful_task_usd"])
    return {
        "tasks": summaries["tasks"],
        "successes": summaries["successes"],
        "cost_usd": float(summaries["cost_usd"]),
        "wasted_cost_usd": float(summaries["wasted_cost_usd"]),
        "cost_per_task_usd": float(summaries["cost_per_task_usd"]),
        "cost_per_successful_task_usd": float(summaries["cost_per_successful_task_usd"]),
        "success_rate": float(summaries["success_rate"]),
        "first_pass_rate": float(summaries["first_pass_rate"]),
        "retry_tax": float(Decimal(summaries["wasted_cost_usd"]) / Decimal(summaries["cost_usd"])),
    }


FAILED_LOOKING = {"failed", "to_human", "raised"}  # outcome failure / escalated_to_human, or raised
SUCCESSFUL = {"first_pass", "retried", "escalated"}


def test_the_fixed_workload_arrives_with_failed_tasks_in_error_status(jaeger_run: Run, honeycomb_run: Run):
    """Issue 12: a task ended by t.fail() or escalate_to_human() looked like a success in every backend."""
    for run in (jaeger_run, honeycomb_run):
        assert len([s for s in run.spans if s.is_task]) == 6
        statuses = {
            kind: (run.task_span(kind).status, run.task_span(kind).status_message) for kind in run.result["task_ids"]
        }
        assert statuses == {
            "first_pass": ("unset", ""),
            "retried": ("unset", ""),
            "escalated": ("unset", ""),
            "failed": ("error", "failure: validation_failed"),
            "to_human": ("error", "escalated_to_human: refund_over_limit"),
            "raised": ("error", "failure: ValueError"),
        }
        assert run.task_span("retried").events == (sc.EVENT_RETRY,)
        assert run.task_span("escalated").events == (sc.EVENT_ESCALATION,)
        calls = [s for s in run.spans if not s.is_task]
        assert len(calls) == 10 and all(c.status == "unset" and c.kind == "client" for c in calls)
        assert sum(c.attrs[sc.CALL_COST_USD] for c in calls) == pytest.approx(_expected(run)["cost_usd"])


# --- Honeycomb: derived columns, board queries and Query Math evaluated on the spans --------------------


def _honeycomb_tokens(expr: str) -> list[str]:
    tokens = re.findall(r'\s*(\$[A-Za-z_][\w.]*|"[^"]*"|-?\d+(?:\.\d+)?|[A-Z_]+|true|false|[(),])', expr)
    assert "".join(tokens).replace(" ", "") == expr.replace(" ", ""), f"cannot tokenize {expr!r}"
    return tokens


def _honeycomb_parse(tokens: list[str]) -> Any:
    token = tokens.pop(0)
    if token.startswith("$"):
        return ("col", token[1:])
    if token.startswith('"'):
        return ("lit", token[1:-1])
    if token in ("true", "false"):
        return ("lit", token == "true")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", token):
        return ("lit", float(token))
    assert tokens.pop(0) == "(", token
    args = []
    while tokens[0] != ")":
        args.append(_honeycomb_parse(tokens))
        if tokens[0] == ",":
            tokens.pop(0)
    tokens.pop(0)
    return ("call", token, args)


def _honeycomb_eval(node: Any, row: dict[str, Any]) -> Any:
    """Honeycomb calculated-field semantics for the functions the recipe uses (null = missing column)."""
    if node[0] == "col":
        return row.get(node[1])
    if node[0] == "lit":
        return node[1]
    _, fn, args = node
    if fn == "IF":
        cond = _honeycomb_eval(args[0], row)
        branch = args[1] if cond is True or (cond not in (None, False) and cond != 0) else None
        if branch is None:
            return _honeycomb_eval(args[2], row) if len(args) > 2 else None
        return _honeycomb_eval(branch, row)
    values = [_honeycomb_eval(a, row) for a in args]
    if fn == "EXISTS":
        return values[0] is not None
    if fn == "NOT":
        return not values[0]
    if fn in ("AND", "OR"):
        return all(values) if fn == "AND" else any(values)
    if any(v is None for v in values):
        return None
    a, b = values
    return {
        "EQUALS": lambda: a == b,
        "GT": lambda: a > b,
        "GTE": lambda: a >= b,
        "LT": lambda: a < b,
        "LTE": lambda: a <= b,
        "MUL": lambda: a * b,
        "DIV": lambda: a / b if b else None,
    }[fn]()


def _honeycomb_rows(spans: list[Span]) -> list[dict[str, Any]]:
    """One Honeycomb event per span: its attributes, the status columns, then the derived columns."""
    codes = {"unset": 0, "ok": 1, "error": 2}
    rows = []
    for span in spans:
        row = dict(span.resource, **span.attrs, name=span.name, status_code=codes[span.status])
        if span.status_message:
            row["status_message"] = span.status_message
        if span.status == "error":
            row["error"] = True
        for column in _derived_columns():
            row[column["alias"]] = _honeycomb_eval(_honeycomb_parse(_honeycomb_tokens(column["expression"])), row)
        rows.append(row)
    return rows


def _honeycomb_query(query: dict[str, Any], rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[Any]]:
    """{breakdown values: [one result per calculation]}, as Honeycomb's query engine computes them."""

    def keep(row: dict[str, Any]) -> bool:
        for flt in query.get("filters", []):
            value = row.get(flt["column"])
            op = flt["op"]
            if (op == "exists" and value is None) or (op == "does-not-exist" and value is not None):
                return False
            if op in ("=", "!=", ">", "<"):
                if value is None:
                    return False
                ok = {"=": value == flt["value"], "!=": value != flt["value"]}.get(op)
                if ok is None:
                    ok = value > flt["value"] if op == ">" else value < flt["value"]
                if not ok:
                    return False
        return True

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in filter(keep, rows):
        groups.setdefault(tuple(row.get(c) for c in query.get("breakdowns", [])), []).append(row)
    results = {}
    for key, members in groups.items():
        out = []
        for calc in query["calculations"]:
            if calc["op"] == "COUNT":
                out.append(len(members))
                continue
            values = [r[calc["column"]] for r in members if r.get(calc["column"]) is not None]
            if calc["op"] == "SUM":
                out.append(sum(values))
            elif calc["op"] == "AVG":
                out.append(sum(values) / len(values) if values else None)
            else:
                raise AssertionError(f"evaluator lacks {calc['op']}")
        results[key] = out
    return results


def _query_math(panel: dict[str, Any], results: dict[tuple[Any, ...], list[Any]]) -> dict[tuple[Any, ...], float]:
    """The panel's Query Math formula, with step A = its first calculation, B = its second."""
    formula = re.search(r"Query Math: (\$[A-Z]) / (\$[A-Z])", panel["description"])
    assert formula, panel["description"]
    a, b = (ord(step[1]) - ord("A") for step in formula.groups())
    return {key: values[a] / values[b] for key, values in results.items()}


def _board_panel(title_start: str) -> dict[str, Any]:
    board = json.loads((HONEYCOMB / "board.json").read_text())
    (panel,) = [p for p in board["panels"] if p["title"].startswith(title_start)]
    return panel


def honeycomb_figures(run: Run) -> dict[str, Any]:
    """What a Honeycomb user reads from the board on this run, per feature (one feature here)."""
    rows = _honeycomb_rows(run.spans)
    cost = _board_panel("Cost per successful task")
    cost_results = _honeycomb_query(cost["query"], rows)
    rates = _board_panel("Success, first-pass and failure rate")
    rate_results = _honeycomb_query(rates["query"], rows)
    retry = _board_panel("Retry tax")
    retry_results = _honeycomb_query(retry["query"], rows)
    failed = _board_panel("Failed tasks")
    failed_results = _honeycomb_query(failed["query"], rows)
    key = ("support",)
    success_rate, first_pass_rate, failure_rate, tasks = rate_results[key]
    return {
        "tasks": tasks,
        "successes": cost_results[key][1],
        "cost_usd": cost_results[key][0],
        "cost_per_task_usd": cost_results[key][0] / tasks,
        "cost_per_successful_task_usd": _query_math(cost, cost_results)[key],
        "success_rate": success_rate,
        "first_pass_rate": first_pass_rate,
        "failure_rate": failure_rate,
        "retry_tax": _query_math(retry, retry_results)[key],
        "failed_tasks": {k[1:]: v[0] for k, v in failed_results.items()},
    }


def test_honeycomb_board_and_query_math_give_costtraces_figures(honeycomb_run: Run):
    expected = _expected(honeycomb_run)
    got = honeycomb_figures(honeycomb_run)
    for key in ("tasks", "successes", "success_rate", "first_pass_rate"):
        assert got[key] == pytest.approx(expected[key]), key
    for key in ("cost_usd", "cost_per_task_usd", "cost_per_successful_task_usd", "retry_tax"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    # Status ERROR shows the tasks that failed or went to a human: 3 of 6 here (no partial).
    assert got["failure_rate"] == pytest.approx(0.5)
    assert got["failed_tasks"] == {
        ("failure", "validation_failed"): 1,
        ("escalated_to_human", "refund_over_limit"): 1,
        ("failure", honeycomb_run.task_span("raised").attrs.get(sc.TASK_OUTCOME_REASON)): 1,
    }


def test_honeycomb_trigger_queries_evaluate_on_the_workload(honeycomb_run: Run):
    rows = _honeycomb_rows(honeycomb_run.spans)
    triggers = {t["name"]: t for t in json.loads((HONEYCOMB / "triggers.json").read_text())}
    (spend,) = [t for name, t in triggers.items() if "spend" in name]
    (success,) = [t for name, t in triggers.items() if "success rate" in name]
    expected = _expected(honeycomb_run)
    assert _honeycomb_query(spend["query"], rows)[("support",)][0] == pytest.approx(expected["cost_usd"], rel=1e-12)
    assert _honeycomb_query(success["query"], rows)[("support",)][0] == pytest.approx(expected["success_rate"])


# --- Tempo: the recipe's files and its TraceQL, evaluated on the spans ------------------------------------


def test_tempo_config_receives_otlp_and_computes_traceql_metrics_over_every_span_kind():
    config = _yaml(TEMPO / "tempo.yaml")
    protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317" and protocols["http"]["endpoint"] == "0.0.0.0:4318"
    local_blocks = config["metrics_generator"]["processor"]["local_blocks"]
    # costtrace's task spans are INTERNAL: the default (server spans only) would hide them from TraceQL metrics.
    assert local_blocks["filter_server_spans"] is False
    assert "local-blocks" in config["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert config["storage"]["trace"]["backend"] == "local"
    port = config["server"]["http_listen_port"]

    compose = _yaml(TEMPO / "compose.yaml")["services"]
    assert re.fullmatch(r"grafana/tempo:2\.10\.\d+", compose["tempo"]["image"])
    assert {"4317:4317", "4318:4318", f"{port}:{port}"} <= set(compose["tempo"]["ports"])
    config_file = compose["tempo"]["command"][0].split("=", 1)[1]
    assert f"./tempo.yaml:{config_file}:ro" in compose["tempo"]["volumes"]
    volume = next(v for v in compose["tempo"]["volumes"] if v.startswith("tempo-data:"))
    assert config["storage"]["trace"]["wal"]["path"].startswith(volume.split(":")[1])

    datasource = _yaml(TEMPO / "grafana-datasource.yaml")["datasources"][0]
    assert datasource["type"] == "tempo" and datasource["url"] == f"http://tempo:{port}"
    mounted = [v for v in compose["grafana"]["volumes"] if v.startswith("./grafana-datasource.yaml:")]
    assert mounted and "/etc/grafana/provisioning/datasources/" in mounted[0]


_TRACEQL = re.compile(
    r"^\{\s*(?P<filter>.*?)\s*\}"
    r"(?:\s*\|\s*(?P<fn>count_over_time|sum_over_time)\((?P<arg>[\w.]*)\)(?:\s*by\s*\((?P<by>[\w., ]+)\))?)?$"
)
_TRACEQL_TERM = re.compile(r'^(?P<field>[\w.:]+)\s*(?P<op>=~|!~|!=|>=|<=|=|>|<)\s*(?P<value>"[^"]*"|[\w.\-]+)$')


def _traceql_field(span: Span, field: str) -> Any:
    if field.startswith("span."):
        return span.attrs.get(field.removeprefix("span."))
    if field.startswith("resource."):
        return span.resource.get(field.removeprefix("resource."))
    intrinsic = field.removeprefix("span:")
    if intrinsic in ("name", "status", "kind"):
        return getattr(span, intrinsic)
    raise AssertionError(f"the evaluator does not know TraceQL field {field!r}")


def _traceql_term(term: str) -> Callable[[Span], bool]:
    m = _TRACEQL_TERM.match(term.strip())
    assert m, f"not a TraceQL comparison: {term!r}"
    field, op, raw = m["field"], m["op"], m["value"]
    value: Any
    if raw.startswith('"'):
        value = raw[1:-1]
    elif raw in ("true", "false"):
        value = raw == "true"
    elif raw == "nil":
        value = None
    elif re.fullmatch(r"-?\d+(\.\d+)?", raw):
        value = float(raw)
    else:
        assert field in ("status", "kind", "span:status", "span:kind"), f"bare value {raw!r} for {field}"
        value = raw

    def predicate(span: Span) -> bool:
        actual = _traceql_field(span, field)
        if op == "!=":
            return actual != value
        if actual is None:
            return False
        if op == "=":
            return actual == value
        if op in ("=~", "!~"):
            return bool(re.fullmatch(value, actual)) == (op == "=~")
        return {">": actual > value, ">=": actual >= value, "<": actual < value, "<=": actual <= value}[op]

    return predicate


def _traceql_filter(text: str) -> Callable[[Span], bool]:
    """A span selector: comparisons joined by && (binding tighter) and ||."""
    alternatives = [[_traceql_term(t) for t in part.split("&&")] for part in text.split("||")]
    return lambda span: any(all(p(span) for p in terms) for terms in alternatives)


def traceql(query: str, spans: list[Span]) -> Any:
    """Search: the matching spans. Metrics: {by-values: sum or count} over the whole range."""
    m = _TRACEQL.match(query)
    assert m, f"not a TraceQL query the recipe should use: {query!r}"
    matched = [s for s in spans if _traceql_filter(m["filter"])(s)]
    if not m["fn"]:
        return matched
    by = [f.strip() for f in (m["by"] or "").split(",") if f.strip()]
    series: dict[tuple[Any, ...], float] = {}
    for span in matched:
        key = tuple(_traceql_field(span, f) for f in by)
        if m["fn"] == "count_over_time":
            series[key] = series.get(key, 0) + 1
        else:
            value = _traceql_field(span, m["arg"])
            if value is not None:
                series[key] = series.get(key, 0.0) + value
    return series


def _traceql_queries() -> list[str]:
    return [q for q in _code_blocks(TEMPO / "README.md", "traceql")] + [
        re.search(r"'q=(.*?)'", b, re.S)[1]  # type: ignore[index]
        for b in _code_blocks(TEMPO / "README.md", "bash")
        if "q=" in b
    ]


def test_every_traceql_query_parses_and_names_only_costtrace_attributes():
    queries = _traceql_queries()
    assert len(queries) >= 10
    for query in queries:
        m = _TRACEQL.match(query)
        assert m, f"the evaluator (and the docs) only use simple selectors and metrics: {query!r}"
        fields = [t.split()[0] for part in m["filter"].split("||") for t in part.split("&&")]
        fields += [m["arg"]] if m["arg"] else []
        fields += [f.strip() for f in (m["by"] or "").split(",") if f.strip()]
        for field in fields:
            if field.startswith("span."):
                assert _is_costtrace_attribute(field.removeprefix("span.")), f"{query}: {field}"
            else:
                assert field in ("name", "status", "kind"), f"{query}: {field}"
    # The queries the issue names.
    assert '{ span.costtrace.task.outcome = "failure" }' in queries
    assert '{ status = error && name =~ "invoke_workflow.*" }' in queries


def _one(queries: list[str], *parts: str) -> str:
    found = [q for q in queries if all(p in q for p in parts)]
    assert len(set(found)) == 1, (parts, found)
    return found[0]


def _exact(queries: list[str], query: str) -> str:
    assert query in queries, f"the README lost {query!r}"
    return query


def tempo_figures(run: Run) -> dict[str, Any]:
    """What a Tempo user reads with the recipe's queries on this run (sums over the whole range)."""
    queries = _traceql_queries()
    spend = traceql(_one(queries, "sum_over_time(span.costtrace.task.cost_usd)"), run.spans)
    tasks = traceql(_one(queries, '{ span.gen_ai.operation.name = "invoke_workflow" } | count_over_time()'), run.spans)
    successes = traceql(_one(queries, '"success" } | count_over_time()'), run.spans)
    errors = traceql(_one(queries, "status = error && span.gen_ai", "count_over_time()"), run.spans)
    wasted = traceql(
        _one(queries, "sum_over_time(span.costtrace.task.cost_usd)").replace("cost_usd", "wasted_cost_usd"), run.spans
    )
    key = ("support",)
    return {
        "tasks": tasks[key],
        "successes": successes[key],
        "cost_usd": spend[key],
        "cost_per_task_usd": spend[key] / tasks[key],
        "cost_per_successful_task_usd": spend[key] / successes[key],
        "success_rate": successes[key] / tasks[key],
        "failure_rate": errors[key] / tasks[key],
        "retry_tax": wasted[key] / spend[key],
        "status_error_traces": run.trace_kinds(
            {s.trace_id for s in traceql(_one(queries, "status = error && name"), run.spans)}
        ),
    }


def test_tempo_recipe_sends_traces_only(tempo_run: Run):
    assert set(tempo_run.paths) == {"/v1/traces"}  # OTEL_METRICS_EXPORTER=none: no /v1/metrics request
    assert {s.resource["service.name"] for s in tempo_run.spans} == {"support-bot"}


def test_tempo_traceql_gives_costtraces_figures(tempo_run: Run):
    expected = _expected(tempo_run)
    got = tempo_figures(tempo_run)
    for key in ("tasks", "successes", "success_rate"):
        assert got[key] == pytest.approx(expected[key]), key
    for key in ("cost_usd", "cost_per_task_usd", "cost_per_successful_task_usd", "retry_tax"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    assert got["failure_rate"] == pytest.approx(0.5)
    assert got["status_error_traces"] == FAILED_LOOKING

    queries = _traceql_queries()
    run = tempo_run
    assert run.kinds(traceql(_exact(queries, '{ span.costtrace.task.outcome = "failure" }'), run.spans)) == {
        "failed",
        "raised",
    }
    assert run.kinds(traceql(_one(queries, '"escalated_to_human" && span.costtrace.feature'), run.spans)) == {
        "to_human"
    }
    assert run.kinds(traceql(_one(queries, "cost_usd > "), run.spans)) == {"escalated", "to_human"}
    assert len(traceql(_exact(queries, '{ span.gen_ai.operation.name = "invoke_workflow" }'), run.spans)) == 6
    assert traceql(_one(queries, "call.priced = false"), run.spans) == []  # every call of the workload is priced


# --- Jaeger: the tag searches of the README, evaluated on the spans ---------------------------------------


def _jaeger_searches() -> list[str]:
    section = JAEGER_README.read_text().split("## Find tasks by tag", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


def _jaeger_tags(span: Span) -> dict[str, str]:
    """Span tags as Jaeger shows and searches them: strings, plus the status tags."""
    tags = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in span.attrs.items()}
    if span.status == "error":
        tags.update({"error": "true", "otel.status_code": "ERROR", "otel.status_description": span.status_message})
    return tags


def jaeger_search(tags: str, spans: list[Span]) -> set[bytes]:
    """The traces Jaeger's search returns for a logfmt Tags string (all key=value pairs on one span)."""
    import shlex

    wanted = dict(pair.split("=", 1) for pair in shlex.split(tags))
    return {s.trace_id for s in spans if all(_jaeger_tags(s).get(k) == v for k, v in wanted.items())}


def test_jaeger_searches_name_only_costtrace_attributes_and_find_the_right_tasks(jaeger_run: Run):
    searches = _jaeger_searches()
    assert len(searches) >= 5
    for search in searches:
        for pair in search.split():
            key = pair.split("=", 1)[0]
            assert _is_costtrace_attribute(key) or key in JAEGER_STATUS_TAGS, f"{search}: {key}"
    run = jaeger_run
    found = {search: run.trace_kinds(jaeger_search(search, run.spans)) for search in searches}
    assert found["error=true"] == FAILED_LOOKING
    assert found["costtrace.task.outcome=failure"] == {"failed", "raised"}
    assert found["costtrace.task.outcome=escalated_to_human"] == {"to_human"}
    assert found["costtrace.feature=support costtrace.task.outcome=success"] == SUCCESSFUL
    assert found["costtrace.task.outcome_reason=validation_failed"] == {"failed"}
    assert found["costtrace.call.priced=false"] == set()
    # One task, one trace: its cost is on the root span, equal to costtrace's own.
    for kind, task_id in run.result["task_ids"].items():
        span = run.task_span(kind)
        assert span.parent_span_id == b""
        assert span.attrs[sc.TASK_COST_USD] == pytest.approx(float(run.result["task_cost_usd"][task_id]))


# --- docs/backends.md: the figures it quotes are the ones the fixed workload produces ----------------------


def _markdown_table(text: str, header_start: str) -> dict[str, list[str]]:
    """{first cell: other cells} of the table whose header row starts with ``header_start``."""
    lines = text.split(f"| {header_start} |", 1)[1].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _usd(value: float) -> str:
    return f"${value:.6f}"


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def test_the_backends_page_shows_the_fixed_workloads_figures(honeycomb_run: Run, tempo_run: Run, jaeger_run: Run):
    text = BACKENDS_DOC.read_text()
    expected = _expected(honeycomb_run)
    assert _expected(tempo_run) == pytest.approx(expected) and _expected(jaeger_run) == pytest.approx(expected)

    # The workload table: each task's cost, outcome and span status.
    kinds = {
        "first pass": "first_pass",
        "retried": "retried",
        "escalated": "escalated",
        "failed": "failed",
        "to a human": "to_human",
        "raised": "raised",
    }
    workload = _markdown_table(text, "task")
    assert set(workload) == set(kinds)
    for label, kind in kinds.items():
        _calls, outcome, cost, status = workload[label]
        span = jaeger_run.task_span(kind)
        assert outcome == span.attrs[sc.TASK_OUTCOME], label
        assert cost == _usd(span.attrs[sc.TASK_COST_USD]), label
        assert status == ("unset" if span.status == "unset" else f"error `{span.status_message}`"), label

    honeycomb, tempo = honeycomb_figures(honeycomb_run), tempo_figures(tempo_run)
    errors = {
        "costtrace report": sum(1 for o in honeycomb_run.result["outcomes"].values() if o != "success"),
        "Honeycomb": honeycomb["failure_rate"] * honeycomb["tasks"],
        "Tempo": len(tempo["status_error_traces"]),
        "Jaeger": len(jaeger_run.trace_kinds(jaeger_search("error=true", jaeger_run.spans))),
    }
    shown = _markdown_table(text, "figure")
    columns = ["costtrace report", "Honeycomb", "Tempo", "Jaeger"]
    for name, figures in (("costtrace report", expected), ("Honeycomb", honeycomb), ("Tempo", tempo)):
        column = columns.index(name)
        assert shown["tasks"][column] == str(round(figures["tasks"])), name
        assert shown["successful tasks"][column] == str(round(figures["successes"])), name
        assert shown["spend on tasks"][column] == _usd(figures["cost_usd"]), name
        assert shown["cost per task"][column] == _usd(figures["cost_per_task_usd"]), name
        assert shown["cost per successful task"][column] == _usd(figures["cost_per_successful_task_usd"]), name
        assert shown["success rate"][column] == _pct(figures["success_rate"]), name
        assert shown["retry tax"][column] == _pct(figures["retry_tax"]), name
    for name, count in errors.items():
        assert shown["tasks with status error"][columns.index(name)] == str(round(count)), name
    jaeger = columns.index("Jaeger")
    assert shown["tasks"][jaeger] == str(len({s.trace_id for s in jaeger_run.spans if s.is_task}))
    assert all(shown[row][jaeger] == "—" for row in shown if row not in ("tasks", "tasks with status error"))
    # The prose quotes the same numbers.
    assert f"= {_usd(expected['cost_usd'])} over 6 tasks" in text
    assert f"Query Math `$A / $B` = {_usd(expected['cost_per_successful_task_usd'])}" in text
    assert f"({_usd(expected['wasted_cost_usd'])} / {_usd(expected['cost_usd'])})" in text
    escalated = jaeger_run.task_span("escalated").attrs[sc.TASK_COST_USD]
    assert f"`costtrace.task.cost_usd={escalated:g}`" in text
