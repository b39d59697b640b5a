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
