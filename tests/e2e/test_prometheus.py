"""The Prometheus and Grafana recipes (exporters/prometheus, exporters/grafana).

The checks that need no server run in the default suite: ``promtool check rules`` / ``check config``,
``promtool test rules``, and that the rules and the dashboard only query metrics costtrace emits.
``test_budget_alert_goes_pending_then_firing`` (marked ``e2e``) runs the whole chain: a costtrace
process serving /metrics with the OpenTelemetry Prometheus exporter, a real Prometheus scraping it and
evaluating the rules, and the budget alert seen through Prometheus' HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from costtrace import semconv as sc

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "exporters" / "prometheus"
RULES = PROMETHEUS_DIR / "costtrace-rules.yml"
RULES_TEST = PROMETHEUS_DIR / "costtrace-rules.test.yml"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = ROOT / "exporters" / "grafana" / "dashboard.json"

# costtrace's instruments -> the metric family the OTel Prometheus exporter (0.66b2) exposes, and its
# type. Found by scraping a PrometheusMetricReader (the e2e test below checks it against a live scrape):
# dots -> underscores, unit "USD" -> "_USD" suffix, seconds -> "_seconds", units in braces dropped,
# counters -> "_total".
EMITTED: dict[str, tuple[str, str]] = {
    sc.METRIC_TOKEN_USAGE: ("gen_ai_client_token_usage", "histogram"),
    sc.METRIC_OPERATION_DURATION: ("gen_ai_client_operation_duration_seconds", "histogram"),
    sc.METRIC_CALL_COST: ("costtrace_llm_cost_USD_total", "counter"),
    sc.METRIC_UNPRICED_CALLS: ("costtrace_llm_unpriced_calls_total", "counter"),
    sc.METRIC_TASKS: ("costtrace_tasks_total", "counter"),
    sc.METRIC_TASK_COST: ("costtrace_task_cost_USD", "histogram"),
    sc.METRIC_TASK_WASTED_COST: ("costtrace_task_wasted_cost_USD_total", "counter"),
    sc.METRIC_TASK_TOKENS: ("costtrace_task_tokens", "histogram"),
    sc.METRIC_TASK_ATTEMPTS: ("costtrace_task_attempts", "histogram"),
    sc.METRIC_INTERNAL_ERRORS: ("costtrace_internal_errors_total", "counter"),
    sc.METRIC_LEDGER_LOST_RECORDS: ("costtrace_ledger_lost_records_total", "counter"),
    sc.METRIC_BUDGET_SPEND: ("costtrace_budget_spend_USD", "gauge"),
    sc.METRIC_BUDGET_LIMIT: ("costtrace_budget_limit_USD", "gauge"),
    sc.METRIC_BUDGET_UTILISATION: ("costtrace_budget_utilisation", "gauge"),
}
# Exposed only once costtrace has had an internal error or lost a record: absent from a healthy scrape.
ONLY_AFTER_ERRORS = {"costtrace_internal_errors_total", "costtrace_ledger_lost_records_total"}
RULE_COUNT = 17  # recording and alerting rules in costtrace-rules.yml (what `promtool check rules` reports)


def _series_names() -> set[str]:
    names = set()
    for family, kind in EMITTED.values():
        names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"} if kind == "histogram" else {family}
    return names


_PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (also resolves Grafana's ``$variables``)."""
    text = re.sub(r"#[^\n]*", " ", expr)  # comments
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals (label_replace arguments)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)", text):
        name = m.group(1)
        if name in _PROMQL_KEYWORDS or re.match(r"\s*\(", text[m.end() :]) or name.lower() in {"inf", "nan"}:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def _rule_exprs() -> dict[str, str]:
    """``{rule name: expr}`` of the rule file, read line by line (no YAML dependency).

    Handles the two forms the file uses: ``expr: <one line>`` and ``expr: |`` with an indented block.
    The count is checked against promtool's, so a rule this reader misses fails the test.
    """
    exprs: dict[str, str] = {}
    lines = RULES.read_text().splitlines()
    name = None
    for i, line in enumerate(lines):
        m = re.match(r"\s*- (?:record|alert): (\S+)$", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"(\s*)expr: (.*)$", line)
        if not m:
            continue
        assert name is not None and name not in exprs, f"line {i + 1}: expr without its rule"
        if m.group(2).strip() != "|":
            exprs[name] = m.group(2)
            continue
        indent = len(m.group(1))
        block = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following)
        exprs[name] = "\n".join(block)
    return exprs


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=PROMETHEUS_DIR)


# --- without a server ---------------------------------------------------------------------------


def test_emitted_list_covers_every_costtrace_metric():
    declared = {v for k, v in vars(sc).items() if k.startswith("METRIC_") and isinstance(v, str)}
    assert set(EMITTED) == declared


def test_metric_name_extraction():
    expr = 'sum by (costtrace_feature) (rate(costtrace_task_cost_USD_sum{costtrace_feature=~"$f"}[$__rate_interval]))'
    assert metric_names_in(expr) == {"costtrace_task_cost_USD_sum"}
    expr = "a:b:c * on (x) group_left costtrace_tasks_total > 0.8 and vector(1) # costtrace_nope"
    assert metric_names_in(expr) == {"a:b:c", "costtrace_tasks_total"}


def test_promtool_check_rules_passes():
    result = _run(_promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {RULE_COUNT} rules found" in result.stdout


def test_promtool_check_config_passes_on_the_example_config():
    result = _run(_promtool(), "check", "config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    result = _run(_promtool(), "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_query_only_metrics_costtrace_emits():
    exprs = _rule_exprs()
    assert len(exprs) == RULE_COUNT
    recorded = {name for name in exprs if ":" in name}  # recording rules are named level:metric:operation
    for name, expr in exprs.items():
        unknown = metric_names_in(expr) - _series_names() - recorded
        assert not unknown, f"rule {name} queries metrics costtrace does not emit: {sorted(unknown)}"


def test_dashboard_queries_only_metrics_costtrace_emits():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = _dashboard_exprs()
    assert exprs
    used = set()
    for title, expr in exprs:
        names = metric_names_in(expr)
        assert names, f"panel {title!r} queries no metric"
        unknown = names - _series_names()
        assert not unknown, f"panel {title!r} queries metrics costtrace does not emit: {sorted(unknown)}"
        used |= names
    # The four views: cost per successful task, tokens per task, retry tax, budget utilisation.
    for needed in (
        "costtrace_task_cost_USD_sum",
        "costtrace_task_tokens_sum",
        "costtrace_task_wasted_cost_USD_total",
        "costtrace_budget_utilisation",
    ):
        assert needed in used


# --- end to end ---------------------------------------------------------------------------------

# The costtrace process: its own MeterProvider with a PrometheusMetricReader (the test process already
# has the suite's in-memory provider, and OpenTelemetry allows one per process). It spends half of the
# "support" budget, prints its /metrics port, waits for "go", spends past 80%, then serves until stdin
# closes.
WORKLOAD = textwrap.dedent(
    """
    import sys
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server
    import costtrace

    costtrace.configure(service_name="costtrace-e2e", otlp=False, metric_reader=PrometheusMetricReader())
    server, _ = start_http_server(0, addr="127.0.0.1")
    costtrace.configure_ledger("sqlite:///" + sys.argv[1], budgets=[
        costtrace.Budget("support", limit_usd="0.01", period="total", scope={"feature": "support"}),
    ])

    def call(model="gpt-4o-mini"):
        costtrace.record_llm_call("openai", model, input_tokens=1000, output_tokens=200, duration_s=0.2)

    def utilisation():
        costtrace.flush_ledger(5)
        return float(costtrace.budget_status("support")[0].utilisation)

    def spend_until(target):
        while utilisation() < target:
            with costtrace.task("resolve_ticket", feature="support"):
                call()

    # Every kind of measurement once, so the scrape shows every metric family.
    with costtrace.task("resolve_ticket", feature="support") as t:
        call()
        t.retry("bad_output")
        call()
    with costtrace.task("resolve_ticket", feature="support") as t:
        call()
        t.fail("gave up")
    with costtrace.task("search", feature="search"):
        call()
        call("no-such-model-e2e")
    spend_until(0.5)
    print(server.server_port, flush=True)
    assert sys.stdin.readline().strip() == "go"
    spend_until(0.85)
    print(f"utilisation {utilisation():.3f}", flush=True)
    sys.stdin.read()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _query(base: str, expr: str) -> dict[str, Any]:
    return _get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _wait(what: str, check: Any, timeout_s: float, proc: subprocess.Popen[Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            got = check()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _scraped_families(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def _test_rules(tmp_path: Path) -> Path:
    """The rules with every ``for:`` shortened to 3 s, so pending and firing happen within the test."""
    text = re.sub(r"^(\s+for:) \S+$", r"\1 3s", RULES.read_text(), flags=re.MULTILINE)
    path = tmp_path / "costtrace-rules.yml"
    path.write_text(text)
    return path


def _budget_alert_state(base: str) -> str | None:
    alerts = _get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
    states = [
        a["state"]
        for a in alerts
        if a["labels"].get("alertname") == "CosttraceBudgetNearlyExhausted"
        and a["labels"].get("costtrace_budget_name") == "support"
    ]
    return states[0] if states else None


@pytest.mark.e2e
def test_budget_alert_goes_pending_then_firing(tmp_path: Path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus)")
    pytest.importorskip("opentelemetry.exporter.prometheus", reason="pip install opentelemetry-exporter-prometheus")

    workload = tmp_path / "workload.py"
    workload.write_text(WORKLOAD)
    with contextlib.ExitStack() as stack:
        _run_e2e(stack, tmp_path, workload, prometheus)


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run_e2e(stack: contextlib.ExitStack, tmp_path: Path, workload: Path, prometheus: str) -> None:
    # Exit order (last in, first out): stop the process, then Popen's exit closes its pipes, then the log.
    app_log = stack.enter_context((tmp_path / "workload.log").open("w"))
    app = stack.enter_context(
        subprocess.Popen(
            [sys.executable, str(workload), str(tmp_path / "ledger.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=app_log,
            text=True,
        )
    )
    stack.callback(_stop, app)
    assert app.stdout is not None and app.stdin is not None
    line = app.stdout.readline()
    assert line.strip().isdigit(), f"workload failed: {(tmp_path / 'workload.log').read_text()}"
    app_port = int(line)

    # The names the rules and the dashboard use are the ones the exporter really produces.
    families = _scraped_families(app_port)
    ours = {name: kind for name, kind in families.items() if name.startswith(("costtrace_", "gen_ai_"))}
    assert ours == {name: kind for name, kind in EMITTED.values() if name not in ONLY_AFTER_ERRORS}

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            rule_files:
              - {_test_rules(tmp_path)}
            scrape_configs:
              - job_name: costtrace-e2e
                static_configs:
                  - targets: ["127.0.0.1:{app_port}"]
            """
        )
    )
    server_log = stack.enter_context((tmp_path / "prometheus.log").open("w"))
    server = stack.enter_context(
        subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=server_log,
        )
    )
    stack.callback(_stop, server)
    _wait("Prometheus ready", lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200, 120, server)

    # Prometheus loaded every rule and evaluates them without errors; they only query emitted metrics.
    rules = [r for g in _get_json(f"{base}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    assert len(rules) == RULE_COUNT
    recorded = {r["name"] for r in rules if r["type"] == "recording"}
    for rule in rules:
        assert not metric_names_in(rule["query"]) - _series_names() - recorded, rule["name"]

    def utilisation() -> float | None:
        result = _query(base, 'costtrace_budget_utilisation{costtrace_budget_name="support"}')["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    below = _wait("the first scrape of the budget gauge", utilisation, 120, server)
    assert 0.5 <= below < 0.8
    assert _budget_alert_state(base) is None

    app.stdin.write("go\n")
    app.stdin.flush()
    assert app.stdout.readline().startswith("utilisation 0.8")

    seen: list[str] = []

    def firing() -> bool:
        state = _budget_alert_state(base)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state == "firing"

    _wait("the budget alert to fire", firing, 180, server)
    assert seen in (["pending", "firing"], ["firing"])  # polling can miss the 3 s of pending on a busy machine

    # Prometheus keeps each state of the alert as an ALERTS series: it was pending, then firing.
    def first_seen_by_state() -> dict[str, float] | None:
        alerts = 'ALERTS{alertname="CosttraceBudgetNearlyExhausted",costtrace_budget_name="support"}[1h]'
        first = {
            series["metric"]["alertstate"]: min(float(t) for t, _ in series["values"])
            for series in _query(base, alerts)["data"]["result"]
        }
        return first if set(first) == {"pending", "firing"} else None

    first = _wait("the pending and firing ALERTS series", first_seen_by_state, 60, server)
    assert first["pending"] < first["firing"]
    value = _query(base, 'costtrace:budget_utilisation:max{costtrace_budget_name="support"}')["data"]["result"]
    assert 0.8 <= float(value[0]["value"][1]) < 1
    health = {
        r["name"]: (r["health"], r.get("lastError", ""))
        for g in _get_json(f"{base}/api/v1/rules")["data"]["groups"]
        for r in g["rules"]
    }
    assert all(h == "ok" for h, _ in health.values()), health

    # Every dashboard query is valid PromQL for this Prometheus and finds data.
    for title, expr in _dashboard_exprs():
        query = expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$feature", ".*")
        answer = _query(base, query)
        assert answer["status"] == "success", (title, answer)
        if not metric_names_in(expr) <= ONLY_AFTER_ERRORS:
            assert answer["data"]["result"], f"panel {title!r} found no data: {query}"
