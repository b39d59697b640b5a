"""The Arize Phoenix recipe (exporters/phoenix), end to end against a real ``phoenix serve`` on loopback.

Phoenix has heavy dependencies that conflict with ours, so it lives in its own virtualenv and the tests
find its executable through ``COSTTRACE_TEST_PHOENIX`` (they skip when it is unset)::

    python3 -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix
    COSTTRACE_TEST_PHOENIX=$PWD/.venv-phoenix/bin/phoenix python -m pytest -m e2e tests/e2e/test_phoenix.py

The workload runs in a subprocess (OpenTelemetry allows one global TracerProvider per process, and
tests/conftest.py set ours). The tests read the spans back through Phoenix's REST API
(``GET /v1/projects/{project}/spans``) and Phoenix's own cost numbers through its GraphQL API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

ENV_PHOENIX = "COSTTRACE_TEST_PHOENIX"
STARTUP_TIMEOUT_S = 90.0  # `phoenix serve` takes ~17 s here, most of it importing


def _phoenix_executable() -> str:
    path = os.environ.get(ENV_PHOENIX, "").strip()
    if not path:
        pytest.skip(
            f"{ENV_PHOENIX} is unset: set it to the `phoenix` executable of a virtualenv with arize-phoenix "
            "(python3 -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix)"
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"{ENV_PHOENIX}={path!r} is not an executable")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Phoenix:
    """One ``phoenix serve`` on 127.0.0.1 with its own working directory (SQLite), offline."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        self.http_port = _free_port()
        self.grpc_port = _free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_url = f"http://127.0.0.1:{self.grpc_port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._starts = 0

    def start(self) -> None:
        env = dict(
            os.environ,
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(self.http_port),
            PHOENIX_GRPC_PORT=str(self.grpc_port),
            PHOENIX_WORKING_DIR=str(self.workdir),
            # Offline: no telemetry pixels, no web fonts, no WASM sandbox download.
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        )
        self._starts += 1
        self._log = open(self.workdir / f"phoenix-{self._starts}.log", "wb")
        self._proc = subprocess.Popen(
            [self.executable, "serve"], env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"phoenix serve exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"phoenix serve not ready after {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.workdir.glob("phoenix-*.log"))
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""

    # --- APIs ---------------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.load(r)

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span of ``project`` through ``GET /v1/projects/{project}/spans`` ([] if no such project)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            try:
                page = self._get(f"/v1/projects/{urllib.parse.quote(project)}/spans?{urllib.parse.urlencode(query)}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # the project appears with its first span
                    return []
                raise
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def graphql(self, query: str, **variables: Any) -> Any:
        body = json.dumps({"query": query, "variables": variables}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.load(r)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.25)
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{self.log_tail()}")


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    server = Phoenix(_phoenix_executable(), tmp_path_factory.mktemp("phoenix"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COSTTRACE_RAISE_INTERNAL_ERRORS", None)
    for key in [k for k in env if k.startswith("OTEL_")]:
        del env[key]
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export every 100 ms, not every 5 s
    env["OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"] = "true"  # the SDK's own export/drop counters
    return env


# --- tree, dimensions, tokens and cost ---------------------------------------------------------

BATCH_WORKLOAD = textwrap.dedent(
    """
    import json, sys
    import costtrace

    protocol, endpoint, project = sys.argv[1:4]
    costtrace.configure(service_name="costtrace-e2e", otlp_endpoint=endpoint, otlp_protocol=protocol,
                        metrics=False, resource_attributes={"openinference.project.name": project})
    tasks = []
    with costtrace.task("triage", feature="support", team="cx", customer="acme", region="eu") as t:
        calls = [
            costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=200),
            costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=3000, output_tokens=100,
                                      cache_read_input_tokens=2048, reasoning_output_tokens=50),
        ]
    tasks.append((t, calls))
    with costtrace.task("summarise", feature="digest", team="growth", customer="globex") as t:
        calls = [costtrace.record_llm_call(provider="openai", model="gpt-4o", input_tokens=12000, output_tokens=800)]
    tasks.append((t, calls))
    ok = costtrace.flush(timeout_s=60)
    print(json.dumps({"flushed": ok, "tasks": [
        {"id": t.id, "name": t.name, "cost_usd": str(t.summary.cost_usd),
         "input_tokens": t.summary.input_tokens, "output_tokens": t.summary.output_tokens,
         "calls": [{"id": c.call_id, "cost_usd": str(c.cost_usd), "input_tokens": c.usage.input_tokens,
                    "output_tokens": c.usage.output_tokens,
                    "cache_read_input_tokens": c.usage.cache_read_input_tokens,
                    "reasoning_output_tokens": c.usage.reasoning_output_tokens} for c in calls]}
        for t, calls in tasks]}))
    """
)

DIMENSIONS = {
    "triage": {
        "costtrace.feature": "support",
        "costtrace.team": "cx",
        "costtrace.customer": "acme",
        "costtrace.dimension.region": "eu",
    },
    "summarise": {"costtrace.feature": "digest", "costtrace.team": "growth", "costtrace.customer": "globex"},
}
# Per-Mtok USD prices of the price data (genai-prices): the expected costs are computed by hand here.
EXPECTED_TASK_COST = {
    # 1000 in x 0.15 + 200 out x 0.60; then 952 uncached x 0.15 + 2048 cached x 0.075 + 100 out x 0.60
    "triage": sum(map(Decimal, ["0.00015", "0.00012", "0.0001428", "0.0001536", "0.00006"]), Decimal(0)),
    "summarise": Decimal("0.03") + Decimal("0.008"),  # 12000 in x 2.50 + 800 out x 10.00
}

SPAN_COSTS = """
query ($id: ID!) {
  node(id: $id) {
    ... on Span {
      spanKind
      cumulativeTokenCountPrompt
      cumulativeTokenCountCompletion
      costSummary { prompt { tokens cost } completion { tokens cost } total { tokens cost } }
    }
  }
}
"""
PROJECT_COSTS = """
query { projects { edges { node { name costSummary { total { tokens cost } } } } } }
"""


def _run_batch(tmp_path: Path, protocol: str, endpoint: str, project: str) -> dict[str, Any]:
    script = tmp_path / "workload.py"
    script.write_text(BATCH_WORKLOAD)
    done = subprocess.run(
        [sys.executable, str(script), protocol, endpoint, project],
        capture_output=True,
        text=True,
        timeout=300,
        env=_child_env(),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["flushed"], done.stderr
    return result


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_task_tree_dimensions_tokens_and_cost_arrive_exactly(phoenix: Phoenix, tmp_path: Path, protocol: str) -> None:
    project = f"costtrace-e2e-{protocol.replace('/', '-')}"
    endpoint = phoenix.url if protocol == "http/protobuf" else phoenix.grpc_url
    sent = _run_batch(tmp_path, protocol, endpoint, project)
    phoenix.wait_for("5 spans in Phoenix", lambda: len(phoenix.spans(project)) >= 5)
    spans = phoenix.spans(project)
    assert len(spans) == 5, [s["name"] for s in spans]

    by_task_id = {s["attributes"]["costtrace.task.id"]: s for s in spans if s["name"].startswith("invoke_workflow ")}
    assert len(by_task_id) == 2
    project_cost = Decimal(0)
    for task in sent["tasks"]:
        name = task["name"]
        assert Decimal(task["cost_usd"]) == EXPECTED_TASK_COST[name]
        project_cost += Decimal(task["cost_usd"])
        root = by_task_id[task["id"]]
        assert root["name"] == f"invoke_workflow {name}"
        assert root["parent_id"] is None
        attrs = root["attributes"]
        assert {k: attrs.get(k) for k in DIMENSIONS[name]} == DIMENSIONS[name]
        assert attrs["costtrace.task.outcome"] == "success"
        assert attrs["costtrace.task.cost_usd"] == float(EXPECTED_TASK_COST[name])
        assert attrs["costtrace.task.llm_calls"] == len(task["calls"])
        assert attrs["costtrace.task.input_tokens"] == task["input_tokens"]
        # No token or cost attribute Phoenix sums is on the task span: its totals come from the calls only.
        assert not [k for k in attrs if k.startswith(("llm.token_count", "llm.cost", "gen_ai.usage"))]

        children = [s for s in spans if s["parent_id"] == root["context"]["span_id"]]
        assert len(children) == len(task["calls"])
        assert {c["context"]["trace_id"] for c in children} == {root["context"]["trace_id"]}
        by_call_id = {c["attributes"]["costtrace.call.id"]: c for c in children}
        for call in task["calls"]:
            span = by_call_id[call["id"]]
            a = span["attributes"]
            assert span["span_kind"] == "LLM"
            assert span["name"] == f"chat {a['gen_ai.request.model']}"
            assert {k: a.get(k) for k in DIMENSIONS[name]} == DIMENSIONS[name]
            assert a["costtrace.task.id"] == task["id"]
            # costtrace's exact numbers (USD doubles from the Decimal), and the OpenInference view Phoenix made.
            assert a["costtrace.call.cost_usd"] == float(Decimal(call["cost_usd"]))
            assert a["gen_ai.usage.input_tokens"] == a["llm.token_count.prompt"] == call["input_tokens"]
            assert a["gen_ai.usage.output_tokens"] == a["llm.token_count.completion"] == call["output_tokens"]
            assert a["llm.token_count.total"] == call["input_tokens"] + call["output_tokens"]
            assert a["llm.model_name"] == a["gen_ai.request.model"]
            if call["cache_read_input_tokens"]:
                assert a["llm.token_count.prompt_details.cache_read"] == call["cache_read_input_tokens"]
            if call["reasoning_output_tokens"]:
                assert a["gen_ai.usage.reasoning.output_tokens"] == call["reasoning_output_tokens"]
            # Phoenix prices calls itself, from its own model table (it does not read a cost attribute).
            costs = phoenix.graphql(SPAN_COSTS, id=span["id"])["node"]
            assert costs["costSummary"]["total"]["tokens"] == call["input_tokens"] + call["output_tokens"]
            assert costs["costSummary"]["total"]["cost"] == pytest.approx(float(Decimal(call["cost_usd"])), rel=1e-9)

        # The task span: Phoenix's cumulative tokens are its calls' (counted once), it has no cost of its own.
        root_costs = phoenix.graphql(SPAN_COSTS, id=root["id"])["node"]
        assert root_costs["costSummary"] is None
        assert root_costs["cumulativeTokenCountPrompt"] == task["input_tokens"]
        assert root_costs["cumulativeTokenCountCompletion"] == task["output_tokens"]

    projects = {e["node"]["name"]: e["node"] for e in phoenix.graphql(PROJECT_COSTS)["projects"]["edges"]}
    total = projects[project]["costSummary"]["total"]
    assert total["cost"] == pytest.approx(float(project_cost), rel=1e-9)  # no double counting of task rollups
    assert total["tokens"] == sum(t["input_tokens"] + t["output_tokens"] for t in sent["tasks"])


# --- costtrace's prices in Phoenix, outcomes, filters, the trace page ------------------------------
#
# One workload (tasks that succeed, fail, escalate and raise; standard, batch and flex calls; an alias,
# a self-priced model and an unpriced one) after `costtrace phoenix prices`, then checked through
# Phoenix's GraphQL API the way its UI reads it. exporters/phoenix/README.md and docs/backends.md quote
# these figures.

PRICES_TOML = textwrap.dedent(
    """
    [[prices]]
    model = "e2e-tuned-model"
    provider = "openai"
    input_per_mtok = 0.8
    output_per_mtok = 3.2
    cache_read_per_mtok = 0.2

    [aliases]
    "support-gpt" = "openai/gpt-4o"
    """
)
REGISTERED = ["gpt-4o-mini", "gpt-4o", "o4-mini", "support-gpt", "e2e-tuned-model"]
UNPRICED_MODEL = "acme-support-llm"

OUTCOMES_WORKLOAD = textwrap.dedent(
    """
    import json, sys
    import costtrace
    from costtrace.integrations.phoenix import OutcomeAnnotations

    endpoint, project = sys.argv[1:3]
    annotations = OutcomeAnnotations(endpoint)
    costtrace.configure(service_name="costtrace-e2e", otlp_endpoint=endpoint, metrics=False,
                        span_exporter=annotations, resource_attributes={"openinference.project.name": project})
    tasks = []

    def call(model, tier=None, **kw):
        rec = costtrace.record_llm_call(provider="openai", model=model, batch=tier == "batch",
                                        service_tier="flex" if tier == "flex" else None, **kw)
        return rec, tier

    with costtrace.task("resolve_ticket", feature="support", team="cx") as t:
        calls = [call("gpt-4o-mini", input_tokens=1200, output_tokens=300),
                 call("support-gpt", input_tokens=3000, output_tokens=400, cache_read_input_tokens=1024)]
    tasks.append((t, calls))
    with costtrace.task("resolve_ticket", feature="support", team="cx") as t:
        calls = [call("gpt-4o-mini", input_tokens=900, output_tokens=150)]
        t.fail("validation_failed")
    tasks.append((t, calls))
    with costtrace.task("resolve_ticket", feature="support", team="cx") as t:
        calls = [call("gpt-4o-mini", input_tokens=800, output_tokens=100),
                 call("gpt-4o", input_tokens=2000, output_tokens=250)]
        t.escalate_to_human("customer asked for an agent")
    tasks.append((t, calls))
    try:
        with costtrace.task("resolve_ticket", feature="support", team="cx") as t:
            calls = [call("gpt-4o-mini", input_tokens=500, output_tokens=50)]
            raise TimeoutError("upstream timed out")
    except TimeoutError:
        pass
    tasks.append((t, calls))
    with costtrace.task("tag_ticket", feature="support", team="cx") as t:
        calls = [call("e2e-tuned-model", input_tokens=4000, output_tokens=20, cache_read_input_tokens=2000)]
    tasks.append((t, calls))
    with costtrace.task("nightly_digest", feature="digest", team="growth") as t:
        calls = [call("gpt-4o-mini", "batch", input_tokens=2000, output_tokens=300),
                 call("o4-mini", "flex", input_tokens=1000, output_tokens=500, reasoning_output_tokens=200)]
    tasks.append((t, calls))
    with costtrace.task("classify", feature="digest", team="growth") as t:
        calls = [call("acme-support-llm", input_tokens=700, output_tokens=70)]
    tasks.append((t, calls))
    ok = costtrace.flush(timeout_s=60)

    def usd(v):
        return None if v is None else str(v)

    print(json.dumps({"flushed": ok, "annotations": {"sent": annotations.sent, "failed": annotations.failed},
        "tasks": [{"id": t.id, "name": t.name, "outcome": t.summary.outcome, "cost_usd": usd(t.summary.cost_usd),
                   "calls": [{"id": c.call_id, "model": c.request_model, "tier": tier, "cost_usd": usd(c.cost_usd),
                              "input_tokens": c.usage.input_tokens, "output_tokens": c.usage.output_tokens,
                              "cache_read_input_tokens": c.usage.cache_read_input_tokens,
                              "reasoning_output_tokens": c.usage.reasoning_output_tokens} for c, tier in calls]}
                  for t, calls in tasks]}))
    """
)
OUTCOMES_PROJECT = "costtrace-e2e-outcomes"
PROBE_PROJECT = "costtrace-e2e-probe"
README = Path(__file__).resolve().parents[2] / "exporters" / "phoenix" / "README.md"

PROJECTS = "query { projects { edges { node { id name } } } }"
FILTERED_SPANS = """
query ($id: ID!, $filter: String) {
  node(id: $id) { ... on Project {
    spans(first: 1000, filterCondition: $filter) { edges { node {
      id spanId name spanKind statusCode statusMessage
      costSummary { total { cost } }
      trace { traceId costSummary { total { cost } } }
      spanAnnotations { name label score annotatorKind explanation }
    } } }
  } }
}
"""
ANNOTATION_SUMMARY = """
query ($id: ID!) { node(id: $id) { ... on Project {
  spanAnnotationSummary(annotationName: "outcome") { count meanScore labelFractions { label fraction } }
} } }
"""
FILTERED_PROJECT_COST = """
query ($id: ID!, $filter: String) { node(id: $id) { ... on Project {
  costSummary(filterCondition: $filter) { total { cost } }
} } }
"""
CUSTOM_MODELS = """
query { generativeModels(first: 1000) { edges { node { name kind namePattern provider
  tokenPrices { tokenType costPerMillionTokens } } } } }
"""


def _project_id(phoenix: Phoenix, name: str) -> str | None:
    for edge in phoenix.graphql(PROJECTS)["projects"]["edges"]:
        if edge["node"]["name"] == name:
            return str(edge["node"]["id"])
    return None


def _filtered(phoenix: Phoenix, project_id: str, condition: str | None = None) -> list[dict[str, Any]]:
    answer = phoenix.graphql(FILTERED_SPANS, id=project_id, filter=condition)
    return [e["node"] for e in answer["node"]["spans"]["edges"]]


def _prices_command(phoenix: Phoenix, prices: Path) -> subprocess.CompletedProcess[str]:
    models = [arg for m in [*REGISTERED, UNPRICED_MODEL] for arg in ("--model", f"openai:{m}")]
    command = [sys.executable, "-m", "costtrace", "phoenix", "prices", "--endpoint", phoenix.url]
    return subprocess.run(
        [*command, "--prices-file", str(prices), *models],
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_env(),
    )


def _send_probe(phoenix: Phoenix) -> None:
    """One call span of the self-priced model, to see when Phoenix prices with the registered table."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"openinference.project.name": PROBE_PROJECT}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces")))
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "e2e-tuned-model",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 0,
        "openinference.span.kind": "LLM",
    }
    provider.get_tracer("probe").start_span("chat e2e-tuned-model", attributes=attributes).end()
    provider.shutdown()


@dataclass
class OutcomesRun:
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    sent: dict[str, Any]
    project_id: str
    spans: list[dict[str, Any]]  # REST, with attributes
    nodes: dict[str, dict[str, Any]]  # GraphQL, by span id

    def tasks(self) -> list[dict[str, Any]]:
        return list(self.sent["tasks"])

    def call_node(self, call_id: str) -> dict[str, Any]:
        (span,) = [s for s in self.spans if s["attributes"].get("costtrace.call.id") == call_id]
        return self.nodes[span["context"]["span_id"]]

    def task_node(self, task_id: str) -> dict[str, Any]:
        """The task span (call spans carry their task's id too, but no outcome)."""
        (span,) = [
            s
            for s in self.spans
            if s["attributes"].get("costtrace.task.id") == task_id and "costtrace.task.outcome" in s["attributes"]
        ]
        return self.nodes[span["context"]["span_id"]]


@pytest.fixture(scope="module")
def outcomes(phoenix: Phoenix, tmp_path_factory: pytest.TempPathFactory) -> OutcomesRun:
    tmp = tmp_path_factory.mktemp("outcomes")
    prices = tmp / "prices.toml"
    prices.write_text(PRICES_TOML)
    first = _prices_command(phoenix, prices)
    second = _prices_command(phoenix, prices)  # idempotent: updates in place, never duplicates

    # Phoenix reloads its model table every 5 s and prices a span once, when it arrives: wait until a
    # probe span of the self-priced model (unknown to Phoenix's built-in table) gets a cost.
    def probe_priced() -> bool:
        _send_probe(phoenix)
        project = _project_id(phoenix, PROBE_PROJECT)
        if project is None:  # it appears with its first span
            return False
        # An unpriced span has costSummary {"total": {"cost": null}}: only a cost says the table is in use.
        return any(n["costSummary"] and n["costSummary"]["total"]["cost"] for n in _filtered(phoenix, project))

    phoenix.wait_for("Phoenix to price with the registered models", probe_priced, timeout_s=60)

    script = tmp / "outcomes.py"
    script.write_text(OUTCOMES_WORKLOAD)
    done = subprocess.run(
        [sys.executable, str(script), phoenix.url, OUTCOMES_PROJECT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_child_env(), "COSTTRACE_PRICES_FILE": str(prices)},
    )
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout.strip().splitlines()[-1])
    assert sent["flushed"], done.stderr
    n_spans = sum(1 + len(t["calls"]) for t in sent["tasks"])
    phoenix.wait_for(f"{n_spans} spans", lambda: len(phoenix.spans(OUTCOMES_PROJECT)) >= n_spans)
    project_id = _project_id(phoenix, OUTCOMES_PROJECT)
    assert project_id is not None

    def annotated() -> bool:  # annotations are queued by Phoenix until their span is stored
        summary = phoenix.graphql(ANNOTATION_SUMMARY, id=project_id)["node"]["spanAnnotationSummary"]
        return summary is not None and summary["count"] >= len(sent["tasks"])

    phoenix.wait_for("an outcome annotation per task", annotated)
    spans = phoenix.spans(OUTCOMES_PROJECT)
    assert len(spans) == n_spans
    nodes = {n["spanId"]: n for n in _filtered(phoenix, project_id)}
    return OutcomesRun(first, second, sent, project_id, spans, nodes)


def _standard_cost(call: dict[str, Any]) -> Decimal:
    """What the call costs at the model's standard price (what Phoenix charges for any tier)."""
    from costtrace.price.catalog import PriceCatalog
    from costtrace.usage import Usage

    usage = Usage(
        input_tokens=call["input_tokens"],
        output_tokens=call["output_tokens"],
        cache_read_input_tokens=call["cache_read_input_tokens"],
        reasoning_output_tokens=call["reasoning_output_tokens"],
    )
    cost = PriceCatalog().cost(usage, provider="openai", model=call["model"])
    assert cost.total_usd is not None
    return cost.total_usd


@pytest.mark.e2e
def test_prices_command_registers_costtraces_prices_once(phoenix: Phoenix, outcomes: OutcomesRun) -> None:
    first, second = outcomes.first, outcomes.second
    # The unpriced model is flagged and skipped: exit 1, the others registered.
    assert first.returncode == 1 and second.returncode == 1, first.stderr + second.stderr
    assert f"UNPRICED   openai/{UNPRICED_MODEL}" in first.stdout
    for model in REGISTERED:
        assert re.search(rf"^  created +openai/{re.escape(model)} ", first.stdout, re.M), first.stdout
        assert re.search(rf"^  unchanged +openai/{re.escape(model)} ", second.stdout, re.M), second.stdout
    custom = [
        e["node"] for e in phoenix.graphql(CUSTOM_MODELS)["generativeModels"]["edges"] if e["node"]["kind"] == "CUSTOM"
    ]
    assert sorted(m["name"] for m in custom) == sorted(f"costtrace openai/{m}" for m in REGISTERED)
    alias = next(m for m in custom if m["name"] == "costtrace openai/support-gpt")
    assert alias["namePattern"] == "(?i)^support\\-gpt$" and alias["provider"] == "openai"
    assert {p["tokenType"]: p["costPerMillionTokens"] for p in alias["tokenPrices"]} == {
        "input": 2.5,
        "output": 10.0,
        "cache_read": 1.25,
    }  # gpt-4o's prices: the alias is priced as the model it stands for


@pytest.mark.e2e
def test_phoenix_prices_each_call_as_costtrace_does(outcomes: OutcomesRun) -> None:
    seen = set()
    for task in outcomes.tasks():
        for call in task["calls"]:
            node = outcomes.call_node(call["id"])
            assert node["spanKind"] == "llm"
            phoenix_cost = node["costSummary"]["total"]["cost"] if node["costSummary"] else None
            if call["cost_usd"] is None:  # unpriced in costtrace: no cost in Phoenix either, never $0
                assert call["model"] == UNPRICED_MODEL and phoenix_cost is None
                seen.add("unpriced")
            elif call["tier"] is None:
                assert phoenix_cost == pytest.approx(float(Decimal(call["cost_usd"])), rel=1e-9), call
                seen.add("standard")
            else:
                # The documented limit: one price per model name in Phoenix, the standard one. Batch and
                # flex cost half of it in costtrace (and at the provider).
                assert phoenix_cost == pytest.approx(float(_standard_cost(call)), rel=1e-9), call
                assert Decimal(call["cost_usd"]) * 2 == _standard_cost(call)
                seen.add(call["tier"])
    assert seen == {"standard", "batch", "flex", "unpriced"}


@pytest.mark.e2e
def test_trace_cost_is_the_task_cost_when_every_call_is_standard(phoenix: Phoenix, outcomes: OutcomesRun) -> None:
    # The figures exporters/phoenix/README.md and docs/backends.md quote.
    figures = [
        (t["name"], t["outcome"], t["cost_usd"] and str(Decimal(t["cost_usd"]).normalize())) for t in outcomes.tasks()
    ]
    assert figures == [
        ("resolve_ticket", "success", "0.01058"),
        ("resolve_ticket", "failure", "0.000225"),
        ("resolve_ticket", "escalated_to_human", "0.00768"),
        ("resolve_ticket", "failure", "0.000105"),  # the body raised TimeoutError
        ("tag_ticket", "success", "0.002064"),
        ("nightly_digest", "success", "0.00189"),
        ("classify", "success", None),  # unpriced model: unknown, not $0
    ]
    known = sum(Decimal(t["cost_usd"]) for t in outcomes.tasks() if t["cost_usd"] is not None)
    assert known == Decimal("0.022544")  # costtrace: a lower bound (one unpriced call)
    project = phoenix.graphql(FILTERED_PROJECT_COST, id=outcomes.project_id, filter=None)["node"]
    assert project["costSummary"]["total"]["cost"] == pytest.approx(0.024434, rel=1e-9)  # batch + flex at list

    for task in outcomes.tasks():
        node = outcomes.task_node(task["id"])
        assert node["costSummary"] is None  # the task span itself costs nothing: no double counting
        trace_cost = node["trace"]["costSummary"]["total"]["cost"]
        tiers = {c["tier"] for c in task["calls"]}
        if task["cost_usd"] is None:
            assert trace_cost == 0  # Phoenix shows $0 for a trace of unpriced calls
        elif tiers == {None}:
            assert trace_cost == pytest.approx(float(Decimal(task["cost_usd"])), rel=1e-9), task
        else:
            assert trace_cost == pytest.approx(float(sum(map(_standard_cost, task["calls"]))), rel=1e-9)


@pytest.mark.e2e
def test_failed_tasks_have_error_status_and_task_spans_are_chains(outcomes: OutcomesRun) -> None:
    reasons = {
        ("failure", "validation_failed"): "failure: validation_failed",
        ("escalated_to_human", "customer asked for an agent"): "escalated_to_human: customer asked for an agent",
        ("failure", "TimeoutError"): "failure: TimeoutError",
    }
    statuses = []
    for task in outcomes.tasks():
        node = outcomes.task_node(task["id"])
        assert node["spanKind"] == "chain"
        if task["outcome"] == "success":
            assert node["statusCode"] == "UNSET"
        else:
            assert node["statusCode"] == "ERROR"
            statuses.append(node["statusMessage"])
    assert sorted(statuses) == sorted(reasons.values())


def _expected_rows(run: OutcomesRun) -> dict[str, set[str]]:
    """Every filter the README documents, and the span ids it must return here."""

    def ids(keep: Callable[[dict[str, Any]], bool]) -> set[str]:
        return {s["context"]["span_id"] for s in run.spans if keep(s["attributes"])}

    def is_task(a: dict[str, Any]) -> bool:
        return "costtrace.task.outcome" in a

    outcome = {t["id"]: t["outcome"] for t in run.tasks()}

    def task_outcome(a: dict[str, Any]) -> str | None:
        return outcome.get(a.get("costtrace.task.id", "")) if is_task(a) else None

    return {
        'costtrace.feature == "support"': ids(lambda a: a.get("costtrace.feature") == "support"),
        'span_kind == "CHAIN"': ids(is_task),
        'span_kind == "CHAIN" and costtrace.feature == "support"': ids(
            lambda a: is_task(a) and a.get("costtrace.feature") == "support"
        ),
        'span_kind == "LLM" and costtrace.feature == "digest"': ids(
            lambda a: not is_task(a) and a.get("costtrace.feature") == "digest"
        ),
        'span_kind == "LLM"': ids(lambda a: not is_task(a)),
        "parent_id is None": ids(is_task),  # no subtasks here: the roots are the tasks
        'costtrace.task.outcome == "success"': ids(lambda a: task_outcome(a) == "success"),
        'costtrace.task.outcome == "failure"': ids(lambda a: task_outcome(a) == "failure"),
        'costtrace.task.outcome == "escalated_to_human"': ids(lambda a: task_outcome(a) == "escalated_to_human"),
        'status_code == "ERROR"': ids(lambda a: task_outcome(a) in ("failure", "escalated_to_human")),
        'annotations["outcome"].label == "success"': ids(lambda a: task_outcome(a) == "success"),
        'annotations["outcome"].score == 0': ids(lambda a: is_task(a) and task_outcome(a) != "success"),
        'costtrace.task.name == "resolve_ticket"': ids(lambda a: a.get("costtrace.task.name") == "resolve_ticket"),
        # The syntax the recipe used to document: matches nothing in Phoenix 20.26.
        'attributes["costtrace.feature"] == "support"': set(),
    }


@pytest.mark.e2e
def test_every_documented_filter_returns_the_expected_rows(phoenix: Phoenix, outcomes: OutcomesRun) -> None:
    expected_rows = _expected_rows(outcomes)
    # Every filter the README gives (a code span with a comparison) is one of these, and each of these is there.
    documented = set(re.findall(r"`([^`{}]*(?:==|!=| is None)[^`{}]*)`", README.read_text()))
    assert documented == set(expected_rows)
    for condition, expected in expected_rows.items():
        got = {n["spanId"] for n in _filtered(phoenix, outcomes.project_id, condition)}
        assert got == expected, condition
        assert expected or condition.startswith("attributes["), condition

    # The project's Total Cost under a filter sums the cost of the spans it matches: the calls'. A filter
    # on task spans alone gives no cost (task spans carry none, so nothing is counted twice).
    def project_cost(condition: str) -> Any:
        node = phoenix.graphql(FILTERED_PROJECT_COST, id=outcomes.project_id, filter=condition)["node"]
        return node["costSummary"]["total"]["cost"]

    assert project_cost('span_kind == "CHAIN"') is None
    support = sum(Decimal(t["cost_usd"]) for t in outcomes.tasks() if t["name"] in ("resolve_ticket", "tag_ticket"))
    assert support == Decimal("0.020654")  # exporters/phoenix/README.md quotes it
    assert project_cost('costtrace.feature == "support"') == pytest.approx(float(support), rel=1e-9)


@pytest.mark.e2e
def test_outcome_annotations_give_phoenix_a_success_rate(phoenix: Phoenix, outcomes: OutcomesRun) -> None:
    tasks = outcomes.tasks()
    assert outcomes.sent["annotations"] == {"sent": len(tasks), "failed": 0}
    for task in tasks:
        node = outcomes.task_node(task["id"])
        ((a),) = node["spanAnnotations"]
        assert (a["name"], a["label"], a["annotatorKind"]) == ("outcome", task["outcome"], "CODE")
        assert a["score"] == (1.0 if task["outcome"] == "success" else 0.0)
    summary = phoenix.graphql(ANNOTATION_SUMMARY, id=outcomes.project_id)["node"]["spanAnnotationSummary"]
    successes = sum(t["outcome"] == "success" for t in tasks)
    assert summary["count"] == len(tasks) == 7
    assert summary["meanScore"] == pytest.approx(successes / len(tasks)) == pytest.approx(4 / 7)  # success rate
    fractions = {f["label"]: f["fraction"] for f in summary["labelFractions"]}
    assert fractions == pytest.approx({"success": 4 / 7, "failure": 2 / 7, "escalated_to_human": 1 / 7})


def _chromium(chromium: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1600,1000",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",  # let the page run its GraphQL queries and render
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _page_text(dom: str) -> str:
    import html

    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.mark.e2e
def test_the_trace_page_shows_the_tasks_cost_and_status(
    phoenix: Phoenix, outcomes: OutcomesRun, tmp_path: Path
) -> None:
    import shutil

    from costtrace._money import usd

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); it renders Phoenix's trace page")
    failed = next(t for t in outcomes.tasks() if t["outcome"] == "failure" and len(t["calls"]) == 1)
    node = outcomes.task_node(failed["id"])
    url = f"{phoenix.url}/projects/{outcomes.project_id}/traces/{node['trace']['traceId']}"
    cost = usd(Decimal(failed["cost_usd"]))
    wanted = ["Status Error", "failure: validation_failed", f"failure (validation_failed) · {cost} · 1 LLM call"]
    text = ""

    def rendered() -> bool:
        nonlocal text
        text = _page_text(_chromium(chromium, tmp_path / "profile", url, "--dump-dom").stdout)
        return all(w in text for w in wanted)

    phoenix.wait_for(f"the trace page to show {wanted}", rendered, timeout_s=90)
    assert "invoke_workflow resolve_ticket" in text and "chat gpt-4o-mini" in text
    png = tmp_path / "phoenix-trace.png"
    _chromium(chromium, tmp_path / "profile", url, f"--screenshot={png}")
    assert png.is_file() and png.stat().st_size > 10_000
    print(f"Phoenix trace page of a failed task: {png}")

    # The project's Spans tab (default filter `parent_id is None`: the tasks) shows the success rate as
    # the outcome annotation's mean, and, as the README warns, Total Cost $0: cost is on the calls.
    project_url = f"{phoenix.url}/projects/{outcomes.project_id}/spans"
    wanted = ["parent_id is None", "Span Annotations outcome μ 0.57", "Total Traces 7 Total Cost $0 "]

    def project_rendered() -> bool:
        nonlocal text
        text = _page_text(_chromium(chromium, tmp_path / "profile", project_url, "--dump-dom").stdout)
        return all(w in text for w in wanted)

    phoenix.wait_for(f"the project page to show {wanted}", project_rendered, timeout_s=90)


# --- backend stopped mid-run -------------------------------------------------------------------

LOOP_WORKLOAD = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Which thread makes each export while the loop runs: the app's own thread must never wait on one.
    export_threads, looping, real_export = [], True, OTLPSpanExporter.export

    def export(self, spans):
        if looping:
            export_threads.append("app" if threading.current_thread() is threading.main_thread() else "other")
        return real_export(self, spans)

    OTLPSpanExporter.export = export
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    # The SDK's own counters (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) go to the global MeterProvider
    # that exists when the exporter and span processor are built: install one before configure().
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    import costtrace

    endpoint, project, progress, stop = sys.argv[1:5]
    costtrace.configure(service_name="costtrace-e2e", otlp_endpoint=endpoint, metrics=False, export_timeout_s=1,
                        resource_attributes={"openinference.project.name": project})
    i, spans, max_gap, last = 0, 0, 0.0, time.monotonic()
    with open(progress, "w") as out:
        while not Path(stop).exists():
            with costtrace.task("tick", feature="loop", attributes={"e2e.seq": i}):
                costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=10)
                costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=200, output_tokens=20)
            spans += 3
            now = time.monotonic()
            max_gap, last = max(max_gap, now - last), now
            out.write(f"{i}\\n")
            out.flush()
            i += 1
            time.sleep(0.05)
    looping = False
    flushed = costtrace.flush(timeout_s=60)

    def points(name):
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        yield from m.data.data_points

    exported = {}
    for p in points("otel.sdk.exporter.span.exported"):
        key = p.attributes.get("error.type", "ok")
        exported[key] = exported.get(key, 0) + p.value
    dropped = {}
    for p in points("otel.sdk.processor.span.processed"):
        if "error.type" in p.attributes:
            dropped[p.attributes["error.type"]] = dropped.get(p.attributes["error.type"], 0) + p.value
    print(json.dumps({"iterations": i, "spans": spans, "max_gap_s": max_gap, "flushed": flushed,
                      "exported": exported, "dropped": dropped,
                      "export_threads": {t: export_threads.count(t) for t in set(export_threads)}}))
    """
)


@pytest.mark.e2e
def test_backend_stopped_mid_run_app_keeps_going_and_export_resumes(phoenix: Phoenix, tmp_path: Path) -> None:
    project = "costtrace-e2e-outage"
    script, progress, stop = tmp_path / "loop.py", tmp_path / "progress", tmp_path / "stop"
    script.write_text(LOOP_WORKLOAD)
    child = subprocess.Popen(
        [sys.executable, str(script), phoenix.url, project, str(progress), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )

    def seq_now() -> int:
        lines = progress.read_text().split() if progress.exists() else []
        return int(lines[-1]) if lines else -1

    def task_seqs() -> set[int]:
        return {s["attributes"]["e2e.seq"] for s in phoenix.spans(project) if s["name"] == "invoke_workflow tick"}

    try:
        phoenix.wait_for("tasks exported before the stop", lambda: len(task_seqs()) >= 10)
        seq_at_stop, arrived_before_stop = seq_now(), task_seqs()
        phoenix.stop()
        time.sleep(3)  # the exporter fails for a while (connection refused, retries until its timeout)
        # The app keeps going with Phoenix down, however slowly a busy machine runs it.
        phoenix.wait_for("20 app iterations with Phoenix down", lambda: seq_now() > seq_at_stop + 20)
        seq_during = seq_now()
        phoenix.start()  # same ports, same working directory (its SQLite database)
        seq_at_restart = seq_now()
        phoenix.wait_for("tasks recorded after the restart", lambda: any(s > seq_at_restart for s in task_seqs()))
        stop.touch()
        out, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()

    assert child.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["flushed"], err
    # The app never waited on the backend: every export ran on the SDK's thread, never the app's, and its
    # loop ran through the outage (each iteration is two calls and a 50 ms sleep) without stalling.
    assert report["export_threads"].get("other", 0) > 0 and "app" not in report["export_threads"], report
    assert seq_during > seq_at_stop + 20 and seq_at_restart > seq_during
    assert report["max_gap_s"] < 10, report  # a stall of seconds; scheduling on a busy machine adds tenths
    assert "Traceback" not in err

    # Phoenix ingests asynchronously: wait until it holds every span the SDK says it delivered.
    delivered = report["exported"].get("ok", 0)
    phoenix.wait_for(f"{delivered} delivered spans in Phoenix", lambda: len(phoenix.spans(project)) >= delivered)
    seqs = task_seqs()
    assert min(seqs) == 0 and any(s <= seq_at_stop for s in seqs) and max(seqs) == report["iterations"] - 1
    in_phoenix = len(phoenix.spans(project))
    # What was lost is counted: the SDK's exporter counter (otel.sdk.exporter.span.exported with
    # error.type) and the processor's drop counter (queue full). Spans Phoenix received plus spans the
    # SDK reports lost add up to every span the app made.
    failed = sum(v for k, v in report["exported"].items() if k != "ok")
    dropped = sum(report["dropped"].values())
    assert failed > 0, report
    assert delivered + failed + dropped == report["spans"], report
    assert in_phoenix == delivered, (in_phoenix, report)
    lost_seqs = set(range(report["iterations"])) - seqs
    # Lost: tasks still queued or in flight when Phoenix stopped, through those made while it was down.
    first_pending = min(set(range(seq_at_stop + 2)) - arrived_before_stop)
    # Exports are in order on one thread: once one arrives after the outage, nothing made after it is lost.
    resumed = min(s for s in seqs if s > seq_during)
    window = (first_pending, seq_at_stop, seq_at_restart, resumed)
    assert lost_seqs and all(first_pending <= s < resumed for s in lost_seqs), (window, sorted(lost_seqs))
    print(f"outage: tasks {window}, lost {len(lost_seqs)} tasks / {failed + dropped} spans, report {report}")
