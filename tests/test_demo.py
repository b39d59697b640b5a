"""`costtrace demo` and the `costtrace` command."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from costtrace import demo
from costtrace.cli import main
from costtrace.report import by_model, group_by, group_calls_by
from costtrace.testing import capture

ARGS = ["demo", "--tasks", "60", "--seed", "1"]


def run_demo(capsys, argv=ARGS):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def row(out: str, label: str) -> list[str]:
    """The cells of the table row whose first cell is ``label``."""
    for line in out.splitlines():
        if line.startswith(label + "  "):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_demo_prints_both_tables_and_findings(capsys):
    code, out, err = run_demo(capsys)
    assert code == 0, err
    assert "Per model" in out and "Per routing strategy" in out
    for strategy in demo.STRATEGIES:
        assert row(out, strategy.label)[0] == "60"
    for model in (demo.CHEAP_MODEL, demo.FRONTIER_MODEL):
        row(out, model)
    assert "Per token, gpt-4o-mini costs" in out
    assert "a successful ticket costs" in out
    assert err == ""


def test_demo_output_is_deterministic(capsys):
    _, first, _ = run_demo(capsys)
    _, second, _ = run_demo(capsys)
    assert first == second
    _, other_seed, _ = run_demo(capsys, ["demo", "--tasks", "60", "--seed", "2"])
    assert other_seed != first


def test_routing_table_agrees_with_the_captured_task_summaries(capsys):
    with capture() as got:
        code, out, _ = run_demo(capsys)
    assert code == 0
    assert len(got.tasks) == 60 * len(demo.STRATEGIES)
    for strategy in demo.STRATEGIES:
        tasks = [t for t in got.tasks if t.dimensions["costtrace.dimension.routing"] == strategy.key]
        spend = sum((t.cost_usd for t in tasks), Decimal(0))
        successes = sum(t.outcome == "success" for t in tasks)
        unresolved = len(tasks) - successes
        cells = row(out, strategy.label)
        tasks_, success, first_pass, retries, escalations, cost, per_task, per_success, tax, tco = cells
        assert int(tasks_) == len(tasks) == 60
        assert success == f"{successes / len(tasks):.1%}"
        assert first_pass == f"{sum(bool(t.first_pass) for t in tasks) / len(tasks):.1%}"
        assert int(retries) == sum(t.retries for t in tasks)
        assert int(escalations) == sum(t.escalations for t in tasks)
        assert cost == f"${spend:,.4f}"
        assert per_task == f"${spend / len(tasks):,.5f}"
        assert per_success == f"${spend / successes:,.5f}"
        assert tax == f"{sum((t.wasted_cost_usd for t in tasks), Decimal(0)) / spend:.1%}"
        assert tco == f"${(spend + unresolved * demo.DEFAULT_REWORK_COST_USD) / successes:,.5f}"


def test_model_table_agrees_with_the_captured_calls(capsys):
    with capture() as got:
        _, out, _ = run_demo(capsys)
    for model in (demo.CHEAP_MODEL, demo.FRONTIER_MODEL):
        calls = [c for c in got.calls if c.request_model == model]
        assert all(c.cost_usd is not None for c in calls)
        spend = sum((c.cost_usd for c in calls), Decimal(0))
        tokens = sum(c.usage.input_tokens + c.usage.output_tokens for c in calls)
        n, input_tokens, cached, output_tokens, cost, per_mtok = row(out, model)
        assert int(n) == len(calls)
        assert int(input_tokens.replace(",", "")) == sum(c.usage.input_tokens for c in calls)
        assert int(cached.replace(",", "")) == sum(c.usage.cache_read_input_tokens for c in calls)
        assert int(output_tokens.replace(",", "")) == sum(c.usage.output_tokens for c in calls)
        assert cost == f"${spend:,.4f}"
        assert per_mtok == f"${spend * 1_000_000 / tokens:,.3f}"


def test_run_returns_what_the_listeners_saw():
    with capture() as got:
        result = demo.run(tickets=60, seed=1)
    assert group_calls_by(got.calls, by_model) == result.per_model
    assert group_by(got.tasks, "routing", rework_cost_usd=demo.DEFAULT_REWORK_COST_USD) == result.per_routing
    assert list(result.per_routing) == [s.key for s in demo.STRATEGIES]


def test_the_same_tickets_meet_the_same_luck_under_every_strategy():
    result = demo.run(tickets=60, seed=1)
    cheap_only, escalate, frontier_only = (result.per_routing[s.key] for s in demo.STRATEGIES)
    # Both start with the same cheap attempt, so the same tickets pass first time.
    assert cheap_only.first_pass == escalate.first_pass
    assert escalate.escalations == escalate.tasks - escalate.first_pass
    assert cheap_only.escalations == frontier_only.escalations == 0


def test_findings_are_computed_from_the_numbers():
    result = demo.run(tickets=60, seed=1)
    cheap, frontier = result.per_model[demo.CHEAP_MODEL], result.per_model[demo.FRONTIER_MODEL]
    ratio = frontier.cost_per_mtok_usd / cheap.cost_per_mtok_usd
    text = " ".join(demo.findings(result))
    assert f"costs {ratio:.1f}x less than gpt-4o" in text
    for s in demo.STRATEGIES:
        assert f"${result.per_routing[s.key].cost_per_successful_task_usd:,.5f} with '{s.label}'" in text


def test_no_rework_cost_is_said_not_hidden(capsys):
    code, out, _ = run_demo(capsys, [*ARGS, "--rework-cost", "0"])
    assert code == 0
    assert "With no rework cost" in out
    assert "rework cost per unresolved ticket: $0.00" in out


def test_a_strategy_without_any_success_shows_na_instead_of_dividing_by_zero(capsys, monkeypatch):
    monkeypatch.setitem(demo.VALIDATION_FAILURE_RATE, demo.CHEAP_MODEL, 1.0)
    code, out, _ = run_demo(capsys, ["demo", "--tasks", "5"])
    assert code == 0
    cells = row(out, "cheap only")
    assert cells[1] == "0.0%"
    assert cells[7] == "n/a" and cells[9] == "n/a"  # cost per successful ticket, TCO per successful ticket
    assert "'cheap only' resolved no ticket" in out


def test_the_demo_models_are_priced():
    assert demo.unpriced_models() == []


@pytest.mark.parametrize("tasks", ["0", "-3", "abc", "1.5", str(demo.MAX_TICKETS + 1)])
def test_a_bad_task_count_is_a_usage_error(capsys, tasks):
    code, out, err = run_demo(capsys, ["demo", "--tasks", tasks])
    assert code == 2
    assert "argument --tasks" in err
    assert out == ""


@pytest.mark.parametrize("cost", ["-1", "abc", "nan", "inf"])
def test_a_bad_rework_cost_is_a_usage_error(capsys, cost):
    code, _, err = run_demo(capsys, ["demo", "--rework-cost", cost])
    assert code == 2
    assert "argument --rework-cost" in err


def test_a_rework_cost_may_carry_a_dollar_sign(capsys):
    code, out, _ = run_demo(capsys, [*ARGS, "--rework-cost", "$2.50"])
    assert code == 0
    assert "rework cost per unresolved ticket: $2.50" in out


def test_a_bad_otlp_endpoint_is_one_line_on_stderr_and_configures_nothing(capsys):
    from opentelemetry import trace

    from costtrace import config

    provider = trace.get_tracer_provider()
    code, out, err = run_demo(capsys, [*ARGS, "--otlp-endpoint", "localhost:4318"])
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("costtrace demo: error: otlp_endpoint='localhost:4318'")
    assert trace.get_tracer_provider() is provider
    assert not config._configured


def test_help_lists_the_demo_command(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    assert "--rework-cost" in capsys.readouterr().out


def test_no_command_prints_help_and_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_python_m_costtrace_demo_runs():
    out = subprocess.run(
        [sys.executable, "-m", "costtrace", "demo", "--tasks", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Per routing strategy" in out.stdout
    assert "20 simulated support tickets" in out.stdout


def test_the_demo_installs_no_opentelemetry_provider_unless_asked():
    code = (
        "import sys\n"
        "from opentelemetry import metrics, trace\n"
        "from costtrace.cli import main\n"
        "assert main(['demo', '--tasks', '3']) == 0\n"
        "print(type(trace.get_tracer_provider()).__name__, type(metrics.get_meter_provider()).__name__,"
        " 'opentelemetry.sdk' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.split() == ["ProxyTracerProvider", "_ProxyMeterProvider", "False"]


def test_console_prints_the_spans():
    out = subprocess.run(
        [sys.executable, "-m", "costtrace", "demo", "--tasks", "1", "--console"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"name": "invoke_workflow resolve_ticket"' in out.stdout
    assert '"costtrace.dimension.routing": "cheap_then_frontier"' in out.stdout
    assert '"service.name": "costtrace-demo"' in out.stdout
    assert "Per routing strategy" in out.stdout


def test_otlp_endpoint_exports_spans_and_metrics_to_a_local_collector():
    """A stand-in OTLP/HTTP collector on localhost receives what the demo exports."""
    import http.server
    import threading

    received: list[tuple[str, int]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, len(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        out = subprocess.run(
            [sys.executable, "-m", "costtrace", "demo", "--tasks", "2", "--otlp-endpoint", endpoint],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    assert "Per routing strategy" in out.stdout
    assert f"flushed spans and metrics to {endpoint}" in out.stderr
    paths = {path for path, size in received if size > 0}
    assert {"/v1/traces", "/v1/metrics"} <= paths
