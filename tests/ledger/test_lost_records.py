"""Nothing recorded goes missing unnoticed: dead processes' spools are replayed at start-up,
``flush_ledger()`` says what was lost, and a full disk raises an alert, a metric and a ledger event."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

import costtrace
from costtrace import records
from costtrace.spend import rows, runtime, schema
from costtrace.spend.engine import make_engine
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_ledger_left_open():
    yield
    costtrace.close_ledger()


def _count(url: str, table: sa.Table, *where: object) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())
    finally:
        engine.dispose()


def _calls(n: int) -> list[records.CallRecord]:
    got: list[records.CallRecord] = []

    class Keep:
        def on_call(self, record: records.CallRecord) -> None:
            got.append(record)

    keep = Keep()
    records.add_listener(keep)  # type: ignore[arg-type]
    try:
        for i in range(n):
            costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10 + i, output_tokens=3)
    finally:
        records.remove_listener(keep)  # type: ignore[arg-type]
    return got


def test_configure_ledger_replays_a_dead_process_spool_without_waiting_for_a_record(ledger_url, tmp_path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [json.dumps({"t": "call", "r": rows.row_to_json(rows.call_row(c))}) for c in _calls(40)]
    (spool / "spool-999999999-deadbeef.jsonl").write_text("\n".join(lines) + "\n")  # its process is gone
    costtrace.configure_ledger(ledger_url, spool_path=spool)
    # Nothing is recorded in this process: the replay starts with the ledger.
    wait_for(lambda: _count(ledger_url, schema.calls) == 40 and not list(spool.glob("*.jsonl")), "the replay")


def test_flush_ledger_is_false_and_says_what_was_lost(ledger_url, tmp_path, monkeypatch) -> None:
    costtrace.configure_ledger(ledger_url, spool_path=tmp_path / "spool", max_queue=5)
    writer = runtime.current.writer
    monkeypatch.setattr(writer, "_flush_interval_s", 3600.0)  # records wait in the queue until a flush
    for i in range(8):
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10 + i, output_tokens=3)
    result = costtrace.flush_ledger(30)
    assert not result  # falsy, like the bool it used to be
    assert result.complete and dict(result.lost) == {"queue_full": 3} and result.lost_total == 3
    assert result.pending == 0
    assert _count(ledger_url, schema.calls) == 5
    again = costtrace.flush_ledger(30)
    assert again and dict(again.lost) == {}  # lost counts are reported once, since the previous flush
    assert costtrace.flush(30) is True  # costtrace.flush() still returns a bool


_DISK_FULL = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    import sqlalchemy as sa
    import costtrace
    from costtrace.spend import alerts
    from costtrace.spend import runtime
    from costtrace.spend import schema
    from costtrace.spend.losses import LOST_RECORDS_METRIC
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    url, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reader = InMemoryMetricReader()
    from opentelemetry import metrics
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    alerted = []
    alerts.on_alert(lambda a: alerted.append(a.kind))
    fwd = None
    if url.startswith("postgresql"):  # the database goes too: a TCP forwarder we cut
        from tests.ledger.test_writer import Forwarder
        fwd = Forwarder(sa.make_url(url).port or 5432)
        url = fwd.url(url)
    costtrace.configure_ledger(url, spool_path=spool)
    costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1, output_tokens=1)
    assert costtrace.flush_ledger(60)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))  # the disk is full
    if fwd is not None:
        fwd.cut()
    for i in range(n):
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=100 + i, output_tokens=5)
    full = costtrace.flush_ledger(60)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
    if fwd is not None:
        fwd.restore()
    for i in range(10):
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=7, output_tokens=5)
    engine = runtime.current.engine
    e = schema.events
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the writer retries the database with backoff
        costtrace.flush_ledger(5)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(e.c.data).where(e.c.kind == "ledger_records_lost")).scalars().all()
        if rows and not runtime.current.writer._drops.unrecorded:
            break
        time.sleep(0.1)
    metric = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == LOST_RECORDS_METRIC:
                    metric = {p.attributes["costtrace.reason"]: p.value for p in m.data.data_points}
    st = runtime.current.writer.stats()
    print(json.dumps({"full": bool(full), "lost": dict(full.lost), "dropped": st.dropped, "alerts": alerted,
                      "events": [json.loads(r)["lost"] for r in rows], "metric": metric}))
    """
)


@pytest.mark.slow
def test_disk_full_losses_are_counted_alerted_and_recorded_when_the_ledger_is_back(ledger_url, tmp_path) -> None:
    n = 3600
    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, ledger_url, str(tmp_path / "spool"), str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    lost = sum(out["dropped"].values())
    written = _count(ledger_url, schema.calls) - 1 - 10  # the warm-up call and the 10 after recovery
    assert lost > 0 and set(out["dropped"]) <= {"spool_error", "spool_full"}
    assert written + lost == n  # every call either in the ledger or counted lost: none unaccounted
    assert not out["full"] and sum(out["lost"].values()) == lost  # flush_ledger() said so
    assert "ledger_records_lost" in out["alerts"]  # through the alert dispatcher (log, callbacks, webhooks)
    assert out["metric"] == out["dropped"]  # costtrace.ledger.lost_records
    assert sum(sum(e.values()) for e in out["events"]) == lost  # the ledger says so, once it is back
    assert _count(ledger_url, schema.calls, schema.calls.c.input_tokens == 7) == 10  # and works again
