"""`costtrace demo`: the real OpenAI SDK against the built-in local server, recorded in a ledger."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from costtrace import _money, demo
from costtrace.cli import main
from costtrace.demo import server as demo_server
from costtrace.demo import summary, support_bot, tickets
from costtrace.spend import schema
from costtrace.spend.engine import make_engine

pytest.importorskip("openai")

TICKETS = 40


@pytest.fixture
def ledger(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def run_demo(capsys, ledger, *extra):
    code = main(["demo", "--tasks", str(TICKETS), "--seed", "1", "--ledger", ledger, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def row(out: str, label: str) -> list[str]:
    """The cells of the table row whose first cell is ``label``."""
    for line in out.splitlines():
        if line.startswith(label + "  "):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{out}")


def money(cell: str) -> Decimal:
    return Decimal(cell.removeprefix("$").replace(",", ""))


def test_demo_prints_the_tables_findings_and_advice(capsys, ledger):
    code, out, err = run_demo(capsys, ledger)
    assert code == 0, err
    for strategy in support_bot.STRATEGIES:
        assert row(out, strategy.label)[0] == str(TICKETS)
    for model in (support_bot.CHEAP_MODEL, support_bot.FRONTIER_MODEL):
        row(out, model)
    assert "Cheap per token: gpt-4o-mini costs" in out
    assert "Routing advice for 'support': use" in out
    assert "costtrace.analysis.routing.advise" in out
    assert err.startswith("costtrace demo: run ") and err.count("\n") == 1


def test_same_seed_same_output_other_seed_other_output(capsys, ledger):
    _, first, _ = run_demo(capsys, ledger)
    _, second, _ = run_demo(capsys, ledger)  # the same ledger: the report is scoped to its own run
    assert first == second
    code = main(["demo", "--tasks", str(TICKETS), "--seed", "2", "--ledger", ledger])
    assert code == 0
    assert capsys.readouterr().out != first


def test_the_ledger_holds_every_task_and_call_of_the_run(capsys, ledger):
    code, out, err = run_demo(capsys, ledger)
    assert code == 0, err
    run_id = err.split()[3]
    engine = make_engine(ledger)
    try:
        with engine.connect() as conn:
            tasks = conn.execute(sa.select(schema.tasks)).mappings().all()
            calls = conn.execute(sa.select(schema.calls)).mappings().all()
    finally:
        engine.dispose()
    assert len(tasks) == TICKETS * len(support_bot.STRATEGIES)
    assert all(json.loads(t["dimensions"])["costtrace.dimension.demo_run"] == run_id for t in tasks)
    assert {t["feature"] for t in tasks} == {"support"}
    assert {t["name"] for t in tasks} == {s.task_name for s in support_bot.STRATEGIES}
    assert len(calls) == sum(t["llm_calls"] for t in tasks)
    assert {c["request_model"] for c in calls} == {support_bot.CHEAP_MODEL, support_bot.FRONTIER_MODEL}
    assert {c["usage_source"] for c in calls} == {"provider"}  # tokens from the server's usage, via the SDK
    assert all(c["priced"] for c in calls)
    # What the report prints is what the ledger holds.
    assert f"{len(tasks):,} tasks and {len(calls):,} calls of this run" in out
    for strategy in support_bot.STRATEGIES:
        rows = [t for t in tasks if t["name"] == strategy.task_name]
        spend = sum(_money.from_nano(t["cost_nano_usd"]) for t in rows)
        successes = sum(t["outcome"] == "success" for t in rows)
        cells = row(out, strategy.label)
        assert cells[5] == f"${spend:,.4f}"
        assert cells[7] == f"${spend / successes:,.5f}"
        rework = (len(rows) - successes) * demo.DEFAULT_REWORK_COST_USD
        assert cells[9] == f"${(spend + rework) / successes:,.5f}"
        assert {t["route"] for t in rows} <= {"gpt-4o-mini", "gpt-4o", "gpt-4o-mini->gpt-4o"}


def test_cheap_is_cheaper_per_token_but_dearer_per_successful_ticket(capsys, ledger):
    code, out, _ = run_demo(capsys, ledger)
    assert code == 0
    cheap, frontier = row(out, support_bot.CHEAP_MODEL), row(out, support_bot.FRONTIER_MODEL)
    assert money(cheap[4]) < money(frontier[4])  # $/1M tok
    assert money(cheap[4]) <= money(cheap[5])  # useful tokens cost more than tokens
    cheap_only, cascade = row(out, "cheap only"), row(out, "cascade")
    assert money(cheap_only[6]) < money(cascade[6])  # cheaper per token ...
    assert money(cheap_only[9]) > money(cascade[9])  # ... dearer per successful ticket, rework counted
    assert float(cheap_only[2].rstrip("%")) < float(row(out, "frontier only")[2].rstrip("%"))  # first pass


def test_the_advice_names_the_cheapest_route_per_successful_ticket(capsys, ledger):
    code, out, _ = run_demo(capsys, ledger)
    assert code == 0
    tco = {s.label: money(row(out, s.label)[9]) for s in support_bot.STRATEGIES}
    best = min(tco, key=lambda label: tco[label])
    assert f"Routing advice for 'support': use '{best}'" in out


def test_with_no_rework_cost_the_advice_follows_token_spend(capsys, ledger):
    code, out, _ = run_demo(capsys, ledger, "--rework-cost", "0")
    assert code == 0
    per_success = {s.label: money(row(out, s.label)[7]) for s in support_bot.STRATEGIES}
    best = min(per_success, key=lambda label: per_success[label])
    assert f"Routing advice for 'support': use '{best}'" in out
    assert "ranks by cost per successful task" in out


def test_the_demo_touches_no_address_but_loopback(capsys, ledger, monkeypatch):
    """Every socket the run connects goes to 127.0.0.1 (getaddrinfo is blocked off-loopback suite-wide)."""
    peers: list[object] = []
    real_connect = socket.socket.connect

    def connect(self, address):
        peers.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    code, _, err = run_demo(capsys, ledger)
    assert code == 0, err
    assert peers, "the demo made no HTTP call"
    assert {p[0] for p in peers if isinstance(p, tuple)} == {"127.0.0.1"}


def test_the_validator_rejects_each_broken_contract():
    ticket = tickets.make_tickets(1, seed=1)[0]
    good = {"category": ticket.category, "resolution": "x", "refund_usd": 0, "reply": "ok"}
    assert support_bot.validate(json.dumps(good), ticket) is None
    assert support_bot.validate("Sorry!", ticket).startswith("not JSON")
    assert (
        support_bot.validate(json.dumps({**good, "refund_usd": "5"}), ticket) == "schema: 'refund_usd' is not a number"
    )
    over = float(ticket.refund_limit_usd + 1)
    assert support_bot.validate(json.dumps({**good, "refund_usd": over}), ticket).startswith("policy: refund")
    missing = {k: v for k, v in good.items() if k != "resolution"}
    assert support_bot.validate(json.dumps(missing), ticket) == "schema: missing field 'resolution'"
    other = next(c for c in demo_server.CATEGORIES if c != ticket.category)
    assert support_bot.validate(json.dumps({**good, "category": other}), ticket).startswith("wrong category")


def test_the_simulated_model_reads_every_ticket_as_its_category():
    for ticket in tickets.make_tickets(300, seed=3):
        assert demo_server._category_of(ticket.message) == ticket.category


def test_the_server_answers_like_the_chat_completions_api():
    ticket = tickets.make_tickets(1, seed=1)[0]
    body = {"model": "gpt-4o", "messages": support_bot._first_messages(ticket)}
    with demo_server.DemoServer(seed=1) as server:
        assert server.url.startswith("http://127.0.0.1:")

        def post(payload):
            req = urllib.request.Request(
                server.url + "/chat/completions", json.dumps(payload).encode(), {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, first = post(body)
        _, again = post(body)
        status_unknown, unknown = post({**body, "model": "gpt-9"})
    assert status == 200 and first["object"] == "chat.completion"
    assert first["model"] == "gpt-4o-2024-08-06"
    usage = first["usage"]
    assert usage["prompt_tokens"] == demo_server.count_tokens(body["messages"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    # The same prompt again: the same answer, its prefix now read from the prompt cache.
    assert again["choices"] == first["choices"]
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == demo_server.cached_prefix_tokens(usage["prompt_tokens"] - 3) and cached >= 1024
    assert status_unknown == 404 and unknown["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("tasks", ["0", "-3", "abc", "10001"])
def test_a_bad_ticket_count_is_a_usage_error(capsys, tasks):
    assert main(["demo", "--tasks", tasks]) == 2
    out, err = capsys.readouterr()
    assert "argument --tasks" in err and out == ""


@pytest.mark.parametrize("cost", ["-1", "abc", "nan", "inf"])
def test_a_bad_rework_cost_is_a_usage_error(capsys, cost):
    assert main(["demo", "--rework-cost", cost]) == 2
    assert "argument --rework-cost" in capsys.readouterr().err


def test_a_rework_cost_may_carry_a_dollar_sign(capsys, ledger):
    code, out, _ = run_demo(capsys, ledger, "--rework-cost", "$2.50")
    assert code == 0
    assert "rework cost per unresolved ticket: $2.50" in out


def test_a_bad_ledger_url_is_one_line_on_stderr(capsys):
    assert main(["demo", "--tasks", "2", "--ledger", "not a url"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("costtrace demo: error: ledger URL")


def test_without_the_openai_sdk_the_demo_exits_2_with_the_install_hint(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['openai'] = None  # as if not installed\n"
        "from costtrace.cli import main\n"
        f"sys.exit(main(['demo', '--tasks', '2', '--ledger', 'sqlite:///{tmp_path / 'l.db'}']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == f"costtrace demo: error: {demo.INSTALL_HINT}\n"
    assert "pip install 'costtrace[demo]'" in out.stderr


def test_help_lists_the_demo_command(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--rework-cost" in help_text and "--ledger" in help_text


def test_python_m_costtrace_demo_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "costtrace", "demo", "--tasks", "10", "--ledger", f"sqlite:///{tmp_path / 'l.db'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Per route" in out.stdout
    assert "10 support tickets" in out.stdout


def test_the_demo_installs_no_opentelemetry_provider_unless_asked(tmp_path):
    code = (
        "import sys\n"
        "from opentelemetry import metrics, trace\n"
        "from costtrace.cli import main\n"
        f"assert main(['demo', '--tasks', '3', '--ledger', 'sqlite:///{tmp_path / 'l.db'}']) == 0\n"
        "print(type(trace.get_tracer_provider()).__name__, type(metrics.get_meter_provider()).__name__,"
        " 'opentelemetry.sdk' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr.split()[-3:] == ["ProxyTracerProvider", "_ProxyMeterProvider", "False"]


def _demo_with_console(tmp_path, *console: str) -> str:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "costtrace", "demo", "--tasks", "1", *console),
            *("--ledger", f"sqlite:///{tmp_path / 'l.db'}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Per route" in out.stdout
    return out.stdout


def test_console_prints_each_task_as_a_readable_block(tmp_path):
    stdout = _demo_with_console(tmp_path, "--console")
    blocks = [line for line in stdout.splitlines() if line.startswith("task resolve_ticket.")]
    assert [b.split()[1] for b in blocks] == [
        "resolve_ticket.cheap_only", "resolve_ticket.frontier_only", "resolve_ticket.cascade"
    ]  # fmt: skip
    assert all("feature=support" in b and "routing=" in b for b in blocks)
    assert re.search(r"^  chat gpt-4o-mini  [\d,]+ in( \(.*\))? / [\d,]+ out +\$0\.\d+$", stdout, re.MULTILINE)
    assert re.search(r"^  cost \$0\.\d+  wasted \$", stdout, re.MULTILINE)
    assert '"name":' not in stdout


def test_console_json_prints_the_task_and_sdk_call_spans(tmp_path):
    stdout = _demo_with_console(tmp_path, "--console", "json")
    assert '"name": "invoke_workflow resolve_ticket.cascade"' in stdout
    assert '"costtrace.dimension.routing": "cascade"' in stdout
    assert '"name": "chat gpt-4o-mini"' in stdout
    assert '"service.name": "costtrace-demo"' in stdout


def test_a_bad_otlp_endpoint_is_one_line_on_stderr_and_configures_nothing(capsys, ledger):
    from opentelemetry import trace

    from costtrace import config

    provider = trace.get_tracer_provider()
    code, out, err = run_demo(capsys, ledger, "--otlp-endpoint", "localhost:4318")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("costtrace demo: error: otlp_endpoint='localhost:4318'")
    assert trace.get_tracer_provider() is provider
    assert not config._configured


def test_otlp_endpoint_exports_spans_and_metrics_to_a_local_collector(tmp_path):
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
            [
                *(sys.executable, "-m", "costtrace", "demo", "--tasks", "2", "--otlp-endpoint", endpoint),
                *("--ledger", f"sqlite:///{tmp_path / 'l.db'}"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    assert "Per route" in out.stdout
    assert f"flushed spans and metrics to {endpoint}" in out.stderr
    paths = {path for path, size in received if size > 0}
    assert {"/v1/traces", "/v1/metrics"} <= paths


class _PhoenixLikeCollector:
    """OTLP/HTTP on 127.0.0.1 that takes traces and answers 405 on /v1/metrics, as Phoenix does."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.paths: list[str] = []
        received = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(self.path)
                self.send_response(405 if self.path == "/v1/metrics" else 200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _demo_subprocess(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    child_env.update(env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "costtrace",
            "demo",
            "--tasks",
            "2",
            "--ledger",
            f"sqlite:///{tmp_path / 'l.db'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env,
    )


@pytest.mark.parametrize(
    ("how", "args", "env"),
    [
        ("--no-metrics", ["--no-metrics"], {}),
        ("OTEL_METRICS_EXPORTER=none", [], {"OTEL_METRICS_EXPORTER": "none"}),
        ("only OTEL_* variables", [], {"OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "{endpoint}"}),
    ],
)
def test_traces_only_to_a_backend_without_metrics_makes_no_metrics_request_and_logs_no_error(tmp_path, how, args, env):
    """Issue 12: `costtrace demo --otlp-endpoint` at Phoenix logged "Failed to export metrics batch code: 405"."""
    with _PhoenixLikeCollector() as collector:
        env = {k: v.format(endpoint=collector.endpoint) for k, v in env.items()}
        if "OTEL_EXPORTER_OTLP_ENDPOINT" not in env:
            args = [*args, "--otlp-endpoint", collector.endpoint]
        out = _demo_subprocess(tmp_path, args, env)
    assert out.returncode == 0, out.stderr
    assert "Per route" in out.stdout
    assert "/v1/traces" in collector.paths
    assert "/v1/metrics" not in collector.paths, how
    assert "metrics" not in out.stderr.lower(), out.stderr  # no 405 error, no warning, no claim of metrics
    assert f"flushed spans to {collector.endpoint} (service.name=costtrace-demo)" in out.stderr


def test_by_default_the_demo_says_metrics_go_to_the_endpoint_and_how_to_send_traces_only(tmp_path):
    with _PhoenixLikeCollector() as collector:
        out = _demo_subprocess(tmp_path, ["--otlp-endpoint", collector.endpoint], {})
    assert out.returncode == 0, out.stderr
    assert {"/v1/traces", "/v1/metrics"} <= set(collector.paths)
    assert f"flushed spans and metrics to {collector.endpoint}" in out.stderr
    assert "send traces only with --no-metrics or OTEL_METRICS_EXPORTER=none" in out.stderr


def test_the_demo_takes_the_service_name_and_traces_endpoint_from_the_otel_variables(tmp_path):
    with _PhoenixLikeCollector() as collector:
        out = _demo_subprocess(
            tmp_path,
            ["--no-metrics"],
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector.endpoint}/v1/traces", "OTEL_SERVICE_NAME": "my-demo"},
        )
    assert out.returncode == 0, out.stderr
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    assert f"flushed spans to {collector.endpoint}/v1/traces (service.name=my-demo)" in out.stderr


def test_an_unsupported_otel_exporter_is_one_line_on_stderr(capsys, ledger, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    code, out, err = run_demo(capsys, ledger)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("costtrace demo: error: OTEL_TRACES_EXPORTER='zipkin': exporter 'zipkin' is not supported")


# --- the demo's own ledger, and the docs' figures -------------------------------------------------------


def _printed_commands(out: str) -> list[str]:
    """The report commands the demo printed at its end."""
    return [line.strip() for line in out.splitlines() if line.startswith("  costtrace ")]


def _tasks_by_name(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            t = schema.tasks
            rows = conn.execute(sa.select(t.c.name, sa.func.count()).group_by(t.c.name)).all()
    finally:
        engine.dispose()
    return {name: n for name, n in rows}


def test_the_demo_records_in_a_fresh_ledger_of_its_own_and_prints_how_to_report_on_it(capsys, tmp_path, monkeypatch):
    """Issue 10: the demo wrote into the default ledger (or COSTTRACE_LEDGER_URL), mixing runs and apps."""
    app_ledger = tmp_path / "app.db"
    monkeypatch.setenv("COSTTRACE_LEDGER_URL", f"sqlite:///{app_ledger}")  # an app's ledger: not the demo's
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    own = tmp_path / "data" / "costtrace" / "demo.db"
    for _ in range(2):
        stale = own.with_name("demo.db.spool")
        if own.exists():
            stale.mkdir(exist_ok=True)
            (stale / "spool-1-x.jsonl").write_text("left over by an earlier run\n")
        assert main(["demo", "--tasks", "3", "--seed", "1"]) == 0
        out, err = capsys.readouterr()
        assert not stale.exists()
    assert not app_ledger.exists()
    assert not (tmp_path / "data" / "costtrace" / "ledger.db").exists()
    assert demo.default_ledger_path() == own
    # Replaced at each run: it holds the last run only (3 tickets x 3 routes).
    assert _tasks_by_name(f"sqlite:///{own}") == {s.task_name: 3 for s in support_bot.STRATEGIES}
    assert f"recorded in sqlite:///{own} " in err
    assert "Report on this run's ledger (it holds this run only; the next `costtrace demo` replaces it):" in out
    report, compare = _printed_commands(out)
    assert report == f"costtrace report --ledger sqlite:///{own} --by task"
    assert compare == f"costtrace compare --ledger sqlite:///{own} --feature support"
    # The printed commands run as printed, and show the run's figures.
    assert main(shlex.split(report)[1:]) == 0
    table, _ = capsys.readouterr()
    for strategy in support_bot.STRATEGIES:
        assert row(table, strategy.task_name)[0] == "3"
    assert main(shlex.split(compare)[1:]) == 0
    assert "Feature 'support': routes side by side" in capsys.readouterr()[0]


def test_every_report_command_takes_a_ledger_option(capsys):
    for command in ("report", "compare", "whatif", "tco", "budgets"):
        assert main([command, "--help"]) == 0
        assert "--ledger URL" in capsys.readouterr()[0], command


REPO = Path(__file__).resolve().parents[1]
_MARKER = "<!-- figures: costtrace demo"


def _normalised(text: str) -> str:
    """The demo's output without what depends on the machine: SDK version, price data version, ledger path."""
    text = re.sub(r"OpenAI SDK \S+", "OpenAI SDK <version>", text)
    text = re.sub(r"from genai-prices \S+\)", "from genai-prices <version>)", text)
    return re.sub(r"sqlite:///\S+?\.db", "<ledger>", text)


def _figures(text: str) -> list[str]:
    """The numbers in ``text``: money, ratios, percentages, counts (``$0.00052``, ``20.0x``, ``26.7%``, ``200``)."""
    return [m.rstrip(".,") for m in re.findall(r"\$?\d[\d,]*(?:\.\d+)?(?:x|%)?", text.replace("\u00d7", "x"))]


def test_the_figures_the_docs_quote_are_the_ones_the_demo_computes(tmp_path, monkeypatch):
    """The demo is deterministic per seed: the sample output and every figure quoted from it must match it."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    out = summary.render(demo.run())  # the defaults: 200 tickets, seed 7, $2.00 rework, its own ledger

    sample = (REPO / "docs" / "demo.md").read_text(encoding="utf-8").split("## Sample output", 1)[1]
    block = re.findall(r"```text\n(.*?)```", sample, flags=re.DOTALL)[0]
    assert _normalised(block) == _normalised(out) + "\n"

    quoted = 0
    tokens = set(_figures(out))
    for doc in ("README.md", "docs/concepts.md", "docs/demo.md"):
        text = (REPO / doc).read_text(encoding="utf-8")
        passages = [part.split("\n\n", 1)[0] for part in text.split(_MARKER)[1:]]
        assert passages, f"{doc} quotes no demo figures under a {_MARKER!r} marker"
        for passage in passages:
            figures = _figures(passage.split("-->", 1)[1])
            assert figures, passage
            missing = [f for f in figures if f not in tokens]
            assert not missing, f"{doc} quotes {missing}, which the demo does not print:\n{passage}"
            quoted += len(figures)
    assert quoted >= 10
