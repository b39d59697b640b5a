"""costtrace.spend.alerts: thresholds fire once per period across threads and processes, every sink gets the
alert, webhooks retry without blocking or leaking their URL, outcome rules compute exact figures."""

from __future__ import annotations

import http.server
import json
import logging
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace

import costtrace
from costtrace import _money
from costtrace import semconv as sc
from costtrace.errors import ConfigError
from costtrace.records import TaskEvent, TaskSummary, add_listener, remove_listener
from costtrace.spend import alerts, schema, store
from costtrace.spend.alerts import Alert, AlertDispatcher
from costtrace.spend.budgets import Budget
from costtrace.spend.engine import make_engine
from costtrace.spend.outcome_rules import OutcomeRule, evaluate_outcome_rules, outcome_stats
from costtrace.spend.rows import call_row, task_row
from costtrace.spend.webhooks import Webhook
from costtrace.testing import capture

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
SECRET = "T0000/B0000/s3cr3t-hook-token"


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_alert_state() -> Iterator[None]:
    alerts._reset_for_tests()
    yield
    alerts._reset_for_tests()


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/l.db")
    schema.migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def dispatcher() -> Iterator[tuple[AlertDispatcher, list[Alert]]]:
    d = AlertDispatcher()
    got: list[Alert] = []
    lock = threading.Lock()

    def collect(alert: Alert) -> None:
        with lock:
            got.append(alert)

    d.on_alert(collect)
    yield d, got
    d.shutdown(2.0)


def spend(engine, budget: Budget, usd: str, at: datetime = NOW) -> None:
    """Add ``usd`` of recorded spend to the budget's period containing ``at``."""
    start, end = budget.bucket(at)
    nano = _money.to_nano(Decimal(usd)) or 0
    store.run_transaction(
        engine,
        lambda conn: store._add_spend(conn, budget.name, start, end, start, spent=nano, reserved=0, calls=1),
    )


def fired_rows(engine) -> list[tuple[str, str]]:
    t = schema.alerts_fired
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(sa.select(t.c.rule_id, t.c.threshold).order_by(t.c.threshold))]


# --- budget thresholds -----------------------------------------------------------------------------


def test_thresholds_fire_once_each_per_period(engine, dispatcher):
    d, got = dispatcher
    b = Budget("support-daily", limit_usd=50, period="day", scope={"feature": "support"})
    spend(engine, b, "20")
    assert alerts.check_budgets(engine, [b], now=NOW, dispatcher=d) == []
    for add, expected in (("6", "0.5"), ("15", "0.8"), ("9", "1")):  # totals 26, 41, 50
        spend(engine, b, add)
        for _ in range(5):
            alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)
        assert [str(a.threshold) for a in got][-1] == expected
    assert [(a.kind, str(a.threshold), a.spent_usd) for a in got] == [
        ("budget_threshold", "0.5", Decimal(26)),
        ("budget_threshold", "0.8", Decimal(41)),
        ("budget_exhausted", "1", Decimal(50)),
    ]
    assert got[1].message == "budget 'support-daily' at 80% (spent $41.00 of $50.00; resets 2026-12-02T00:00:00+00:00)"
    assert got[2].message.startswith("budget 'support-daily' exhausted at 100% (spent $50.00 of $50.00;")
    a = got[1]
    assert a.rule == a.budget == "support-daily"
    assert a.limit_usd == Decimal(50) and a.utilisation == Decimal("0.82")
    assert a.period_start == datetime(2026, 12, 1, tzinfo=UTC)
    assert a.resets_at == datetime(2026, 12, 2, tzinfo=UTC)
    assert a.scope == {"feature": "support"}
    assert fired_rows(engine) == [("support-daily", "0.5"), ("support-daily", "0.8"), ("support-daily", "1")]


def test_concurrent_checks_from_four_threads_fire_each_threshold_once(engine, dispatcher):
    d, got = dispatcher
    b = Budget("shared", limit_usd=10, period="day")
    for step in ("5", "3", "2"):  # 50%, 80%, 100%
        spend(engine, b, step)
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                barrier.wait()
                for _ in range(10):
                    alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    assert sorted(str(a.threshold) for a in got) == ["0.5", "0.8", "1"]


def test_another_process_does_not_fire_a_claimed_threshold_again(engine, dispatcher):
    d, got = dispatcher
    b = Budget("b", limit_usd=10, period="day")
    spend(engine, b, "9")
    assert len(alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)) == 1
    alerts._reset_for_tests()  # a fresh process: no in-memory knowledge of the claims
    other = make_engine(str(engine.url))
    try:
        assert alerts.check_budgets(other, [b], now=NOW, dispatcher=d) == []
    finally:
        other.dispose()
    assert len(got) == 1


def test_a_jump_past_several_thresholds_delivers_only_the_highest(engine, dispatcher):
    d, got = dispatcher
    b = Budget("b", limit_usd=10, period="day")
    spend(engine, b, "12")
    alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)
    assert [(a.kind, str(a.threshold)) for a in got] == [("budget_exhausted", "1")]
    assert got[0].utilisation == Decimal("1.2")
    assert "exhausted at 100% (spent $12.00 of $10.00" in got[0].message
    # The lower ones are claimed (silently): they never fire later in this period.
    assert {t for _, t in fired_rows(engine)} == {"0.5", "0.8", "1"}
    spend(engine, b, "1")
    assert alerts.check_budgets(engine, [b], now=NOW, dispatcher=d) == []


def test_a_new_period_fires_again(engine, dispatcher):
    d, got = dispatcher
    b = Budget("b", limit_usd=10, period="day", thresholds=[0.5])
    spend(engine, b, "6")
    alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)
    next_day = NOW + timedelta(days=1)
    assert alerts.check_budgets(engine, [b], now=next_day, dispatcher=d) == []  # new period: nothing spent yet
    spend(engine, b, "7", at=next_day)
    alerts.check_budgets(engine, [b], now=next_day, dispatcher=d)
    assert [(a.period_start, a.spent_usd) for a in got] == [
        (datetime(2026, 12, 1, tzinfo=UTC), Decimal(6)),
        (datetime(2026, 12, 2, tzinfo=UTC), Decimal(7)),
    ]


def test_rolling_budget_fires_once_per_window_not_per_bucket(engine, dispatcher):
    d, got = dispatcher
    b = Budget("roll", limit_usd=10, period="rolling", window="24h", thresholds=[0.5])
    spend(engine, b, "6")
    alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)
    for hours in range(1, 5):  # later buckets of the same window: spend still counts, no re-fire
        alerts.check_budgets(engine, [b], now=NOW + timedelta(hours=hours), dispatcher=d)
    assert len(got) == 1


def test_zero_limit_budget_is_exhausted_by_any_spend(engine, dispatcher):
    d, got = dispatcher
    b = Budget("frozen", limit_usd=0, period="month")
    spend(engine, b, "0.000001")
    alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)
    assert [a.kind for a in got] == ["budget_exhausted"]
    assert got[0].utilisation == Decimal("Infinity")
    json.dumps(got[0].to_dict())  # JSON-safe even then


def test_touched_selects_the_budgets_to_check(engine, dispatcher):
    d, got = dispatcher
    a, b = Budget("a", limit_usd=1, period="day"), Budget("b", limit_usd=1, period="day")
    spend(engine, a, "1")
    spend(engine, b, "1")
    touched = [store.Touched("b", b.bucket(NOW)[0])]
    alerts.check_budgets(engine, [a, b], touched, now=NOW, dispatcher=d)
    assert [x.rule for x in got] == ["b"]
    assert alerts.check_budgets(engine, [a, b], [], now=NOW, dispatcher=d) == []


def test_late_records_of_a_closed_period_can_still_fire_it(engine, dispatcher):
    d, got = dispatcher
    b = Budget("b", limit_usd=10, period="day", thresholds=[1])
    yesterday = NOW - timedelta(days=1)
    spend(engine, b, "10", at=yesterday)
    alerts.check_budgets(engine, [b], [store.Touched("b", b.bucket(yesterday)[0])], now=NOW, dispatcher=d)
    assert [(a.kind, a.period_start) for a in got] == [("budget_exhausted", datetime(2026, 11, 30, tzinfo=UTC))]


def test_check_after_write_batch_with_real_call_records(engine, dispatcher):
    d, got = dispatcher
    b = Budget("support", limit_usd="0.0005", period="day", scope={"feature": "support"})
    with capture() as cap, costtrace.task("answer", feature="support"):
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=200)
    rows = [call_row(r) for r in cap.calls]
    touched = store.write_batch(engine, store.Batch(calls=rows, tasks=[], events=[], outcome_updates=[]), [b])
    assert [t.budget for t in touched] == ["support"]
    alerts.check_budgets(engine, [b], touched, dispatcher=d)
    assert [(a.kind, str(a.threshold), a.spent_usd) for a in got] == [("budget_threshold", "0.5", Decimal("0.00027"))]
    assert "spent $0.00027 of $0.0005" in got[0].message


def test_a_ledger_failure_is_logged_not_raised(tmp_path, dispatcher, caplog):
    d, got = dispatcher
    unmigrated = make_engine(f"sqlite:///{tmp_path}/empty.db")
    try:
        with caplog.at_level(logging.WARNING, logger="costtrace"):
            assert alerts.check_budgets(unmigrated, [Budget("b", limit_usd=1)], dispatcher=d) == []
            rule = OutcomeRule("r", min_success_rate=0.5, min_tasks=1)
            assert evaluate_outcome_rules(unmigrated, [rule], dispatcher=d) == []
    finally:
        unmigrated.dispose()
    assert "ledger database failed (OperationalError)" in caplog.text
    assert got == []


def test_store_unavailable_alert_is_throttled_and_names_no_url(dispatcher):
    d, got = dispatcher
    b = Budget("capped", limit_usd=5, action="block", fail_open=False)
    error = ConnectionError("could not connect to postgresql://app:pw@db/costs")
    assert alerts.notify_store_unavailable(b, error, dispatcher=d) is not None
    assert alerts.notify_store_unavailable(b, error, dispatcher=d) is None
    assert [a.kind for a in got] == ["budget_store_unavailable"]
    assert got[0].message == (
        "budget 'capped': the budget store is unreachable (ConnectionError); "
        "calls in scope are blocked (fail_open=False)"
    )
    assert "pw" not in json.dumps(got[0].to_dict())


# --- gauges ----------------------------------------------------------------------------------------


def test_gauges_report_spend_limit_and_utilisation(engine, dispatcher, metric_points):
    d, _ = dispatcher
    b = Budget("gauge-budget", limit_usd=40, period="day")
    spend(engine, b, "10")
    alerts.check_budgets(engine, [b], now=NOW, dispatcher=d)
    points = metric_points.collect()

    def value(metric: str) -> float:
        found = [p for p in points[metric] if p.attributes.get(sc.BUDGET_NAME) == "gauge-budget"]
        assert len(found) == 1
        assert found[0].attributes.get(sc.BUDGET_PERIOD) == "day"
        return found[0].value

    assert value(sc.METRIC_BUDGET_SPEND) == 10.0
    assert value(sc.METRIC_BUDGET_LIMIT) == 40.0
    assert value(sc.METRIC_BUDGET_UTILISATION) == 0.25


# --- sinks -----------------------------------------------------------------------------------------


def _alert(**kw: Any) -> Alert:
    base: dict[str, Any] = dict(
        kind="budget_threshold",
        rule="support-daily",
        message="budget 'support-daily' at 80% (spent $40.00 of $50.00; resets 2026-12-02T00:00:00+00:00)",
        at=NOW,
        threshold=Decimal("0.8"),
        spent_usd=Decimal(40),
        limit_usd=Decimal(50),
        utilisation=Decimal("0.8"),
        period_start=datetime(2026, 12, 1, tzinfo=UTC),
        resets_at=datetime(2026, 12, 2, tzinfo=UTC),
        scope={"feature": "support"},
    )
    base.update(kw)
    return Alert(**base)


def test_alert_is_logged_at_warning(dispatcher, caplog):
    d, _ = dispatcher
    with caplog.at_level(logging.WARNING, logger="costtrace"):
        d.dispatch(_alert())
    [record] = [r for r in caplog.records if r.name == "costtrace"]
    assert record.levelno == logging.WARNING
    assert "budget 'support-daily' at 80%" in record.getMessage()


def test_span_event_on_the_current_span(dispatcher, spans):
    d, _ = dispatcher
    with trace.get_tracer("test").start_as_current_span("work"):
        d.dispatch(_alert())
    d.dispatch(_alert())  # no current span: nothing to attach to, no error
    [span] = spans.all()
    [event] = span.events
    assert event.name == sc.EVENT_BUDGET_ALERT
    attrs = dict(event.attributes or {})
    assert attrs[sc.BUDGET_NAME] == "support-daily"
    assert attrs[sc.ALERT_KIND] == "budget_threshold"
    assert attrs[sc.ALERT_THRESHOLD] == 0.8
    assert attrs[sc.BUDGET_SPENT_USD] == 40.0
    assert attrs[sc.BUDGET_LIMIT_USD] == 50.0
    assert attrs[sc.BUDGET_RESETS_AT] == "2026-12-02T00:00:00+00:00"


def test_ledger_receives_a_budget_alert_event(dispatcher):
    d, _ = dispatcher
    events: list[TaskEvent] = []

    class Listener:
        def on_call(self, record: object) -> None: ...

        def on_task(self, summary: object) -> None: ...

        def on_event(self, event: TaskEvent) -> None:
            events.append(event)

    listener = Listener()
    add_listener(listener)
    try:
        d.dispatch(_alert())
    finally:
        remove_listener(listener)
    [event] = events
    assert event.kind == "budget_alert"
    assert event.reason == "budget_threshold"
    assert event.amount_usd == Decimal(40)
    assert event.data["rule"] == "support-daily" and event.data["threshold"] == "0.8"


def test_callbacks_receive_the_alert_and_can_unsubscribe(dispatcher):
    d, got = dispatcher
    mine: list[Alert] = []
    unsubscribe = d.on_alert(mine.append)
    alert = _alert()
    d.dispatch(alert)
    unsubscribe()
    d.dispatch(alert)
    assert mine == [alert]
    assert got == [alert, alert]


def test_a_raising_callback_is_logged_and_does_not_propagate(dispatcher, caplog):
    d, got = dispatcher

    def broken(alert: Alert) -> None:
        raise RuntimeError("boom")

    d.on_alert(broken)
    after: list[Alert] = []
    d.on_alert(after.append)
    with caplog.at_level(logging.WARNING, logger="costtrace"):
        d.dispatch(_alert())
    assert len(got) == 1 and len(after) == 1
    assert "callback" in caplog.text and "RuntimeError" in caplog.text


def test_a_failing_sink_is_reported_and_the_others_still_run(dispatcher, monkeypatch, caplog):
    d, got = dispatcher
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")  # as in production

    def broken(alert: Alert) -> None:
        raise RuntimeError("bug in a sink")

    monkeypatch.setattr(AlertDispatcher, "_span_event", staticmethod(broken))
    with caplog.at_level(logging.WARNING, logger="costtrace"):
        d.dispatch(_alert())  # does not raise
    assert len(got) == 1
    assert "costtrace internal error in alerts.span_event" in caplog.text


def test_module_level_on_alert_uses_the_default_dispatcher(engine):
    got: list[Alert] = []
    unsubscribe = alerts.on_alert(got.append)
    try:
        b = Budget("default-d", limit_usd=1, period="day", thresholds=[1])
        spend(engine, b, "1")
        alerts.check_budgets(engine, [b], now=NOW)
    finally:
        unsubscribe()
    assert [a.rule for a in got] == ["default-d"]
    assert alerts.default_dispatcher().webhooks == ()


def test_on_alert_rejects_a_non_callable():
    with pytest.raises(ConfigError):
        AlertDispatcher().on_alert("not a function")  # type: ignore[arg-type]


# --- webhooks --------------------------------------------------------------------------------------


class Hook:
    """A local HTTP server answering with scripted statuses (the last one repeats)."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.gate = gate  # if given, requests are answered only once the test sets it
        self.answered = 0
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.requests.append((self.path, dict(self.headers), json.loads(body)))
                    status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                if hook.delay_s:
                    time.sleep(hook.delay_s)
                if hook.gate is not None:
                    hook.gate.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with hook.lock:
                    hook.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def hook_factory(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    made: list[Hook] = []

    def make(statuses: list[int], delay_s: float = 0.0, gate: threading.Event | None = None) -> Hook:
        h = Hook(statuses, delay_s, gate)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_webhook_posts_the_alert_as_json(dispatcher, hook_factory):
    d, _ = dispatcher
    hook = hook_factory([200])
    d.add_webhook(Webhook(hook.url, headers={"Authorization": "Bearer abc"}))
    d.dispatch(_alert())
    assert d.flush(60.0)
    [(path, headers, body)] = hook.requests
    assert path == f"/services/{SECRET}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer abc"
    assert body["kind"] == "budget_threshold"
    assert body["rule"] == "support-daily"
    assert body["spent_usd"] == "40" and body["limit_usd"] == "50" and body["threshold"] == "0.8"
    assert body["resets_at"] == "2026-12-02T00:00:00+00:00"
    assert body["scope"] == {"feature": "support"}
    assert d.stats() == {"sent": 1, "failed": 0, "retried": 0, "dropped": 0}


def test_slack_webhook_gets_slacks_shape(dispatcher, hook_factory):
    d, _ = dispatcher
    hook = hook_factory([200])
    d.add_webhook(Webhook(hook.url, slack=True))
    d.dispatch(_alert(rule="<b&c>", message="budget '<b&c>' at 80%"))
    assert d.flush(60.0)
    [(_, _, body)] = hook.requests
    assert body["text"] == "budget '<b&c>' at 80%"
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert body["blocks"][1]["text"] == {"type": "mrkdwn", "text": "budget '&lt;b&amp;c&gt;' at 80%"}


def test_webhook_retries_a_500_then_succeeds(dispatcher, hook_factory):
    d, _ = dispatcher
    hook = hook_factory([500, 200])
    d.add_webhook(Webhook(hook.url, retries=3, backoff_s=0.01))
    d.dispatch(_alert())
    assert d.flush(60.0)
    assert len(hook.requests) == 2
    assert d.stats() == {"sent": 1, "failed": 0, "retried": 1, "dropped": 0}


def test_webhook_gives_up_after_its_retries_and_logs_host_only(dispatcher, hook_factory, caplog):
    d, _ = dispatcher
    hook = hook_factory([503])
    webhook = Webhook(hook.url, retries=2, backoff_s=0.01)
    d.add_webhook(webhook)
    with caplog.at_level(logging.DEBUG, logger="costtrace"):
        d.dispatch(_alert())
        assert d.flush(60.0)
    assert len(hook.requests) == 3
    assert d.stats()["failed"] == 1
    assert f"webhook {webhook.target} failed (HTTP 503) after 3 attempt(s)" in caplog.text
    assert SECRET not in caplog.text and "s3cr3t" not in caplog.text


def test_webhook_does_not_retry_a_4xx(dispatcher, hook_factory, caplog):
    d, _ = dispatcher
    hook = hook_factory([404, 200])
    d.add_webhook(Webhook(hook.url, retries=3, backoff_s=0.01))
    with caplog.at_level(logging.DEBUG, logger="costtrace"):
        d.dispatch(_alert())
        assert d.flush(60.0)
    assert len(hook.requests) == 1
    assert d.stats() == {"sent": 0, "failed": 1, "retried": 0, "dropped": 0}
    assert "HTTP 404" in caplog.text and "s3cr3t" not in caplog.text


def test_webhook_connection_error_is_retried_then_dropped_quietly(dispatcher, caplog):
    d, _ = dispatcher
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    d.add_webhook(Webhook(f"http://127.0.0.1:{port}/hooks/{SECRET}", retries=1, backoff_s=0.01, timeout_s=1))
    with caplog.at_level(logging.DEBUG, logger="costtrace"):
        d.dispatch(_alert())
        assert d.flush(60.0)
    assert d.stats()["failed"] == 1 and d.stats()["retried"] == 1
    assert "connection error" in caplog.text and "s3cr3t" not in caplog.text


def test_dispatch_never_waits_on_a_slow_webhook(dispatcher, hook_factory):
    d, got = dispatcher
    gate = threading.Event()
    hook = hook_factory([200], gate=gate)  # the server answers nothing until the gate opens
    d.add_webhook(Webhook(hook.url))
    try:
        d.dispatch(_alert())
        d.dispatch(_alert())
        # Both returned while no request could be answered: dispatch never waits for the webhook.
        assert hook.answered == 0
        assert len(got) == 2
    finally:
        gate.set()
    assert d.flush(60.0)
    assert d.stats()["sent"] == 2


def test_webhook_queue_is_bounded_and_counts_drops(hook_factory):
    d = AlertDispatcher(queue_size=2)
    try:
        hook = hook_factory([200], delay_s=0.2)
        d.add_webhook(Webhook(hook.url))
        for _ in range(10):
            d.dispatch(_alert())
        assert d.stats()["dropped"] == 8
        assert d.flush(60.0)
        assert d.stats()["sent"] == 2
        assert len(hook.requests) == 2
    finally:
        d.shutdown(2.0)


def test_webhook_url_secret_stays_out_of_repr_and_errors():
    w = Webhook(f"https://hooks.slack.com/services/{SECRET}", slack=True)
    assert repr(w) == "Webhook('https://hooks.slack.com', slack=True)"
    assert w.target == "https://hooks.slack.com"
    with pytest.raises(ConfigError) as info:
        Webhook(f"ftp://files.example/{SECRET}")
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError):
        Webhook("https://hooks.slack.com/x", retries=-1)
    with pytest.raises(ConfigError):
        Webhook("not a url")


def test_remove_webhook(dispatcher, hook_factory):
    d, _ = dispatcher
    hook = hook_factory([200])
    remove = d.add_webhook(Webhook(hook.url))
    remove()
    d.dispatch(_alert())
    assert d.flush(60.0)
    assert hook.requests == []


class SlowLoris:
    """A local server that reads the request, then answers one byte every ``interval_s`` and never finishes.

    ``head`` is sent first (e.g. complete headers announcing a body, to drip the body instead of the
    status line). Records, per connection the client hung up on, how many bytes it had dripped.
    """

    def __init__(self, interval_s: float = 0.5, head: bytes = b"") -> None:
        self.interval_s = interval_s
        self.head = head
        self.cond = threading.Condition()
        self.accepted = 0
        self.abandoned: list[int] = []  # drips sent on each connection before the client hung up
        self.closing = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hooks/{SECRET}"
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed by close()
                return
            with self.cond:
                self.accepted += 1
                self.cond.notify_all()
            thread = threading.Thread(target=self._drip, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _drip(self, conn: socket.socket) -> None:
        drips, hung_up, pending = 0, False, self.head
        with conn:
            try:
                while not self.closing.is_set():
                    readable, _, _ = select.select([conn], [], [], 0 if pending else self.interval_s)
                    if readable:
                        if not conn.recv(65_536):
                            hung_up = True
                            break
                        continue  # more of the request
                    if pending:
                        conn.sendall(pending)
                        pending = b""
                        continue
                    conn.sendall(b"a")
                    drips += 1
            except OSError:  # reset by the client
                hung_up = True
        if hung_up:
            with self.cond:
                self.abandoned.append(drips)
                self.cond.notify_all()

    def wait(self, predicate: Any, timeout_s: float = 60.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout_s)

    def close(self) -> None:
        self.closing.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close() alone does not)
        except OSError:
            pass
        self.listener.close()
        for thread in self.threads:
            thread.join()


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def slow_loris(no_proxy):
    made: list[SlowLoris] = []

    def make(**kw: Any) -> SlowLoris:
        server = SlowLoris(**kw)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def _wait_for_requests(hook: Hook, n: int, timeout_s: float = 60.0) -> bool:
    done = threading.Event()

    def check() -> None:
        while not done.is_set():
            with hook.lock:
                if len(hook.requests) >= n:
                    done.set()
                    return
            done.wait(0.01)

    watcher = threading.Thread(target=check, daemon=True)
    watcher.start()
    ok = done.wait(timeout_s)
    done.set()
    watcher.join()
    return ok


def test_a_slow_loris_webhook_never_delays_another(hook_factory, slow_loris):
    """Issue 10: one endpoint trickling a byte every 0.5 s used to hold the only sender thread forever."""
    slow, healthy = slow_loris(interval_s=0.5), hook_factory([200])
    d = AlertDispatcher()
    try:
        d.add_webhook(Webhook(slow.url, timeout_s=2, retries=3, backoff_s=1))
        d.add_webhook(Webhook(healthy.url))
        for i in range(5):
            d.dispatch(_alert(message=f"alert {i}"))
        assert _wait_for_requests(healthy, 5)
        # The slow destination is still on its first alert: 4 attempts of 2 s and >= 3.5 s of backoff.
        assert len(slow.abandoned) < 4
        assert [body["message"] for _, _, body in healthy.requests] == [f"alert {i}" for i in range(5)]
        # Each attempt on the slow one is abandoned by the client within its timeout_s (2 s = ~4 drips),
        # although the server never stopped sending: generous bound, 20 drips = 10 s.
        assert slow.wait(lambda: len(slow.abandoned) >= 2)
        assert all(drips <= 20 for drips in slow.abandoned), slow.abandoned
        targets = {Webhook(slow.url).target, Webhook(healthy.url).target}
        threads = [t for t in threading.enumerate() if t.name.removeprefix("costtrace-alerts ") in targets]
        assert len(threads) == 2 and all(t.daemon for t in threads)  # one sender thread per webhook
    finally:
        assert not d.shutdown(0.1)  # the slow alerts were still waiting: dropped, counted
    for t in threads:
        t.join(60)  # the attempt in flight ends within its timeout_s; then its thread exits
        assert not t.is_alive()
    stats = d.stats()
    assert stats["sent"] == 5
    assert stats["sent"] + stats["failed"] + stats["dropped"] == 10  # every delivery counted once


@pytest.mark.parametrize("where", ["status_line", "body"])
def test_timeout_bounds_the_whole_delivery_however_slowly_the_server_answers(dispatcher, slow_loris, caplog, where):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" if where == "body" else b""
    slow = slow_loris(interval_s=0.2, head=head)
    d, _ = dispatcher
    d.add_webhook(Webhook(slow.url, timeout_s=1, retries=0))
    with caplog.at_level(logging.DEBUG, logger="costtrace"):
        d.dispatch(_alert())
        assert d.flush(60.0)  # would wait forever if timeout_s bounded each read only
    assert d.stats() == {"sent": 0, "failed": 1, "retried": 0, "dropped": 0}
    assert slow.wait(lambda: len(slow.abandoned) == 1)
    assert slow.abandoned[0] <= 50  # ~5 drips in 1 s; generous bound
    assert "failed (timed out: timeout_s=1 per attempt) after 1 attempt(s)" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_timeout_bounds_the_name_lookup_too(dispatcher, no_proxy, monkeypatch, caplog):
    lookup_released = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def stuck_resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.example":
            lookup_released.wait(60)
            raise socket.gaierror("released by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", stuck_resolver)
    d, _ = dispatcher
    d.add_webhook(Webhook(f"http://hooks.example/{SECRET}", timeout_s=0.5, retries=0))
    try:
        with caplog.at_level(logging.DEBUG, logger="costtrace"):
            d.dispatch(_alert())
            assert d.flush(60.0)
        assert d.stats()["failed"] == 1
        assert "timed out: timeout_s=0.5 per attempt" in caplog.text
    finally:
        lookup_released.set()


def test_exit_is_not_held_by_a_stuck_webhook(slow_loris, tmp_path):
    slow = slow_loris()
    script = tmp_path / "app.py"
    script.write_text(
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from costtrace.spend import alerts\n"
        "from costtrace.spend.webhooks import Webhook\n"
        f"alerts.add_webhook(Webhook({slow.url!r}, timeout_s=3600, retries=0))\n"
        "alerts.default_dispatcher().dispatch(alerts.Alert('outcome_rule', 'r', 'm', datetime.now(UTC)))\n"
        "sys.stdin.readline()\n"  # the test lets the app exit once its alert is in flight
    )
    app = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE)
    try:
        assert slow.wait(lambda: slow.accepted == 1)  # the delivery is stuck on the slow-loris now
        app.communicate(b"exit\n", timeout=60)  # an hour-long webhook timeout does not hold exit
        assert app.returncode == 0
    finally:
        app.kill()
        app.wait()


# --- outcome rules ---------------------------------------------------------------------------------

_task_seq = iter(range(1_000_000))


def _summary(
    outcome: str,
    cost: str,
    wasted: str = "0",
    *,
    first_pass: bool = False,
    escalations: int = 0,
    retries: int = 0,
    feature: str | None = "support",
    name: str = "answer",
) -> TaskSummary:
    return TaskSummary(
        task_id=f"t{next(_task_seq)}",
        name=name,
        parent_id=None,
        outcome=outcome,
        outcome_reason=None,
        first_pass=first_pass,
        own_known_cost_usd=Decimal(cost),
        wasted_cost_usd=Decimal(wasted),
        cache_savings_usd=Decimal(0),
        subtasks_cost_usd=Decimal(0),
        input_tokens=0,
        output_tokens=0,
        cache_read_input_tokens=0,
        cache_write_input_tokens=0,
        reasoning_output_tokens=0,
        llm_calls=1,
        failed_calls=0,
        attempts=1 + retries + escalations,
        retries=retries,
        escalations=escalations,
        unpriced_calls=0,
        estimated_calls=0,
        duration_s=1.0,
        dimensions={sc.FEATURE: feature} if feature else {},
    )


def insert_tasks(engine, summaries: list[TaskSummary], ended_at: datetime) -> None:
    rows = [task_row(s, ended_at - timedelta(seconds=i)) for i, s in enumerate(summaries)]
    with engine.begin() as conn:
        conn.execute(schema.tasks.insert(), rows)


def support_window() -> list[TaskSummary]:
    """10 support tasks: 7 successes, 4 first-pass, 2 escalated; $0.21 spent, $0.10 of it wasted."""
    return [
        *[_summary("success", "0.01", first_pass=True) for _ in range(4)],
        *[_summary("success", "0.03", "0.01", retries=1) for _ in range(2)],
        _summary("success", "0.05", "0.02", escalations=1),
        *[_summary("failure", "0.02", "0.02") for _ in range(2)],
        _summary("escalated_to_human", "0.02", "0.02", escalations=1),
    ]


@pytest.fixture
def outcome_ledger(engine):
    insert_tasks(engine, support_window(), NOW - timedelta(minutes=5))
    # Noise the rules must ignore: another feature in the window, and support tasks before the window.
    insert_tasks(engine, [_summary("failure", "9", "9", feature="sales") for _ in range(5)], NOW - timedelta(minutes=1))
    insert_tasks(engine, [_summary("failure", "9", "9") for _ in range(5)], NOW - timedelta(hours=2))
    return engine


def test_outcome_stats_are_exact(outcome_ledger):
    rule = OutcomeRule("support-quality", feature="support", window="1h", min_success_rate=0.5)
    stats = outcome_stats(outcome_ledger, rule, NOW)
    assert (stats.tasks, stats.successes, stats.first_pass, stats.escalated) == (10, 7, 4, 2)
    assert stats.cost_usd == Decimal("0.21") and stats.wasted_usd == Decimal("0.10")
    assert stats.cost_per_success_usd == Decimal("0.03")  # all spend, failures included / successes
    assert stats.first_pass_rate == Decimal("0.4")
    assert stats.success_rate == Decimal("0.7")
    assert stats.retry_tax == Decimal("0.10") / Decimal("0.21")
    assert stats.escalation_rate == Decimal("0.2")


def test_outcome_rule_runs_one_aggregate_query(outcome_ledger):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(outcome_ledger, "before_cursor_execute", count)
    try:
        outcome_stats(outcome_ledger, OutcomeRule("r", feature="support", min_success_rate=0.1), NOW)
    finally:
        sa.event.remove(outcome_ledger, "before_cursor_execute", count)
    selects = [s for s in statements if "costtrace_tasks" in s]
    assert len(selects) == 1
    assert "sum(" in selects[0].lower() and "count(" in selects[0].lower()


def test_outcome_rule_fires_broken_conditions_once_per_window(outcome_ledger, dispatcher):
    d, got = dispatcher
    rule = OutcomeRule(
        "support-quality",
        feature="support",
        window="1h",
        min_tasks=10,
        max_cost_per_success_usd="0.02",  # 0.03: fires
        min_first_pass_rate=0.5,  # 0.4: fires
        min_success_rate=0.7,  # 0.7: holds (bounds are inclusive)
        max_retry_tax=0.5,  # 0.476: holds
        max_escalation_rate=0.1,  # 0.2: fires
    )
    fired = evaluate_outcome_rules(outcome_ledger, [rule], NOW, dispatcher=d)
    assert [(a.metric, a.value) for a in fired] == [
        ("cost_per_success_usd", Decimal("0.03")),
        ("first_pass_rate", Decimal("0.4")),
        ("escalation_rate", Decimal("0.2")),
    ]
    assert got == fired
    assert all(a.kind == "outcome_rule" and a.tasks == 10 and a.scope == {"feature": "support"} for a in fired)
    assert fired[0].message == (
        "outcome rule 'support-quality': cost per successful task $0.03 is above $0.02 "
        "(10 tasks in the last 1h, feature 'support')"
    )
    assert fired[1].message.startswith("outcome rule 'support-quality': first-pass rate 40% is below 50%")
    assert fired[0].resets_at == datetime(2026, 12, 1, 13, tzinfo=UTC)
    # Same window bucket: nothing again, from this process or another.
    assert evaluate_outcome_rules(outcome_ledger, [rule], NOW + timedelta(minutes=10), dispatcher=d) == []
    alerts._reset_for_tests()
    assert evaluate_outcome_rules(outcome_ledger, [rule], NOW + timedelta(minutes=29), dispatcher=d) == []
    # The next bucket (13:00-14:00) with the tasks still inside the sliding hour: fires again.
    again = evaluate_outcome_rules(outcome_ledger, [rule], NOW + timedelta(minutes=31), dispatcher=d)
    assert [a.metric for a in again] == ["cost_per_success_usd", "first_pass_rate", "escalation_rate"]


def test_outcome_rule_respects_min_tasks_and_window(outcome_ledger, dispatcher):
    d, got = dispatcher
    too_few = OutcomeRule("r", feature="support", min_tasks=11, min_first_pass_rate=0.9)
    assert evaluate_outcome_rules(outcome_ledger, [too_few], NOW, dispatcher=d) == []
    # A 1-minute window holds none of the support tasks (they ended 5 minutes before NOW).
    short = OutcomeRule("short", feature="support", window="1m", min_tasks=1, min_first_pass_rate=0.9)
    assert outcome_stats(outcome_ledger, short, NOW).tasks == 0
    assert evaluate_outcome_rules(outcome_ledger, [short], NOW, dispatcher=d) == []
    # A 3-hour window also holds the 5 older failures.
    wide = OutcomeRule("wide", feature="support", window="3h", min_success_rate=0.9)
    assert outcome_stats(outcome_ledger, wide, NOW).tasks == 15
    assert got == []


def test_outcome_rule_filters_by_task_name(engine):
    insert_tasks(engine, [_summary("success", "0.01", name="a"), _summary("failure", "0.05", name="b")], NOW)
    stats = outcome_stats(engine, OutcomeRule("r", task="b", min_success_rate=0.5), NOW)
    assert (stats.tasks, stats.successes, stats.cost_usd) == (1, 0, Decimal("0.05"))


def test_no_success_makes_cost_per_success_infinite(engine, dispatcher):
    d, _ = dispatcher
    insert_tasks(engine, [_summary("failure", "0.05", "0.05") for _ in range(3)], NOW)
    rule = OutcomeRule("r", min_tasks=3, max_cost_per_success_usd=1)
    [alert] = evaluate_outcome_rules(engine, [rule], NOW, dispatcher=d)
    assert alert.value == Decimal("Infinity")
    assert "infinite (no task succeeded)" in alert.message
    json.dumps(alert.to_dict())


def test_outcome_rule_alert_goes_to_the_span_as_an_outcome_event(engine, dispatcher, spans):
    d, _ = dispatcher
    insert_tasks(engine, [_summary("failure", "0.05") for _ in range(3)], NOW)
    with trace.get_tracer("test").start_as_current_span("evaluate"):
        evaluate_outcome_rules(engine, [OutcomeRule("r", min_tasks=3, min_success_rate=0.5)], NOW, dispatcher=d)
    [event] = spans.all()[0].events
    assert event.name == sc.EVENT_OUTCOME_ALERT
    assert event.attributes[sc.ALERT_METRIC] == "success_rate"
    assert event.attributes[sc.ALERT_VALUE] == 0.0


def test_outcome_rule_from_dict_and_config_errors():
    rule = OutcomeRule.from_dict(
        {"name": "q", "feature": "support", "window": "24h", "min_tasks": 50, "max_cost_per_success_usd": "0.05"}
    )
    assert rule.window == timedelta(hours=24)
    assert rule.conditions() == {"cost_per_success_usd": ("max", Decimal("0.05"))}
    bad: list[dict[str, Any]] = [
        {"name": "q"},  # no condition
        {"name": "q", "min_success_rate": 1.5},
        {"name": "q", "max_retry_tax": -0.1},
        {"name": "q", "min_success_rate": 0.5, "min_tasks": 0},
        {"name": "q", "min_success_rate": 0.5, "window": "soon"},
        {"name": "q", "min_success_rate": 0.5, "colour": "red"},
        {"name": "q", "max_cost_per_success_usd": "cheap"},
        {"name": "", "min_success_rate": 0.5},
        {"min_success_rate": 0.5},
    ]
    for data in bad:
        with pytest.raises(ConfigError):
            OutcomeRule.from_dict(data)
