"""The context tax per scope and route: scope_stats' figures and every CLI output, on SQLite and PostgreSQL.

Prices are set in the test (default catalog, reset around each test), so every figure is by hand:

- ``ctx-cached``: $2 input, $0.50 cache read, $2.50 cache write, $8 output per MTok: caching saves
  $1.50 per MTok of uncached input (1,500 nano-USD per token);
- ``ctx-nocache``: $1 input, $2 output, no cache price: its saving is unknown;
- ``ctx-unpriced``: no price at all.

Calls (feature ``support`` unless said; costs in nano-USD):

====  ====  ============  ======  =====  =====  ======  ============================================
call  task  model         input   read   write  output  cost parts
====  ====  ============  ======  =====  =====  ======  ============================================
c1    T1    ctx-cached    10,000  4,000  1,000  500     input 10M, read 2M, write 2.5M, output 4M
c2    T1    ctx-cached    2,000   0      0      100     input 4M, output 0.8M, other 0.2M
c3    T2    ctx-nocache   3,000   1,000  0      200     input 3M (reads at the input rate), output 0.4M
c4    T2    ctx-nocache   500     500    0      0       input 0.5M (no uncached input: not unknown)
c5    T3    ctx-unpriced  1,000   0      0      10      unpriced
c6    T4    ctx-cached    1,000   0      0      0       input 2M
c7    T4    ctx-unpriced  100     0      0      0       unpriced
c8    -     ctx-cached    5,000   0      0      0       input 10M (no task: in no scope)
c9    T5    ctx-cached    7,000   0      0      0       input 14M (feature billing)
====  ====  ============  ======  =====  =====  ======  ============================================
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from costtrace.analysis.stats import Filters, scope_stats
from costtrace.cli import main
from costtrace.price import catalog as pricing
from costtrace.price import lookup
from costtrace.spend import schema
from tests.ledger.test_analytics import call_row, insert, task_row

CACHED, NOCACHE, UNPRICED = "ctx-cached", "ctx-nocache", "ctx-unpriced"
MIXED = f"{CACHED}->{UNPRICED}"


@pytest.fixture(autouse=True)
def _prices() -> Iterator[None]:
    lookup._reset_unpriced_for_tests()
    pricing._reset_default_catalog_for_tests()
    pricing.set_price(
        CACHED, input_per_mtok="2", output_per_mtok="8", cache_read_per_mtok="0.5", cache_write_per_mtok="2.5"
    )
    pricing.set_price(NOCACHE, input_per_mtok="1", output_per_mtok="2")
    yield
    lookup._reset_unpriced_for_tests()
    pricing._reset_default_catalog_for_tests()


AT = datetime(2024, 5, 6, 12)
TASKS = [
    task_row("T1", AT, route=CACHED, input_tokens=12_000, llm_calls=2),
    task_row("T2", AT, route=NOCACHE, input_tokens=3_500, llm_calls=2),
    task_row("T3", AT, route=UNPRICED, input_tokens=1_000, unpriced_calls=1),
    task_row("T4", AT, route=MIXED, input_tokens=1_100, llm_calls=2, unpriced_calls=1),
    task_row("T5", AT, route=CACHED, input_tokens=7_000, feature="billing"),
]


def _call(call_id: str, task_id: str | None, model: str, inp: int, **kw: object) -> dict[str, object]:
    parts = [k for k in kw if k.endswith("_nano_usd")]
    cost = sum(int(kw[k]) for k in parts)  # type: ignore[call-overload]
    return call_row(call_id, task_id, model, 1, input_tokens=inp, cost_nano_usd=cost, **kw)


UNPRICED_KW = {"priced": False, "cost_nano_usd": None, "unpriced_reason": "unknown model"}
CALLS = [
    _call("c1", "T1", CACHED, 10_000, cache_read_input_tokens=4_000, cache_write_input_tokens=1_000,
          output_tokens=500, reasoning_output_tokens=100, input_nano_usd=10_000_000,
          cache_read_nano_usd=2_000_000, cache_write_nano_usd=2_500_000, output_nano_usd=4_000_000),
    _call("c2", "T1", CACHED, 2_000, output_tokens=100, input_nano_usd=4_000_000, output_nano_usd=800_000,
          other_nano_usd=200_000),
    _call("c3", "T2", NOCACHE, 3_000, cache_read_input_tokens=1_000, output_tokens=200,
          input_nano_usd=3_000_000, output_nano_usd=400_000),
    _call("c4", "T2", NOCACHE, 500, cache_read_input_tokens=500, input_nano_usd=500_000),
    {**_call("c5", "T3", UNPRICED, 1_000, output_tokens=10), **UNPRICED_KW},
    _call("c6", "T4", CACHED, 1_000, input_nano_usd=2_000_000),
    {**_call("c7", "T4", UNPRICED, 100), **UNPRICED_KW},
    _call("c8", None, CACHED, 5_000, input_nano_usd=10_000_000),
    _call("c9", "T5", CACHED, 7_000, input_nano_usd=14_000_000, feature="billing"),
]  # fmt: skip
for _row in CALLS:
    for _key in ("cache_read_input_tokens", "cache_write_input_tokens", "output_tokens", "reasoning_output_tokens"):
        _row.setdefault(_key, 0)

T1_TOTAL = 23_500_000  # 14M input + 2M read + 2.5M write + 4.8M output + 0.2M other
NANO = Decimal("0.000000001")


def usd(nanos: int) -> Decimal:
    return Decimal(nanos) * NANO


@pytest.fixture
def ledger(ledger_engine: sa.Engine) -> sa.Engine:
    insert(ledger_engine, schema.tasks, TASKS)
    insert(ledger_engine, schema.calls, CALLS)
    return ledger_engine


def by_route(engine: sa.Engine) -> dict[str | None, object]:
    return {s.key["route"]: s.context for s in scope_stats(engine, by=("route",), filters=Filters(feature="support"))}


# --- scope_stats ------------------------------------------------------------------------------------


def test_cached_route_shares_tokens_and_upper_bound_are_exact(ledger):
    ct = by_route(ledger)[CACHED]
    assert (ct.input_usd, ct.cache_read_usd, ct.cache_write_usd) == (usd(14_000_000), usd(2_000_000), usd(2_500_000))
    assert (ct.output_usd, ct.other_usd, ct.priced_cost_usd) == (usd(4_800_000), usd(200_000), usd(T1_TOTAL))
    assert ct.input_cost_share == Decimal(14_000_000) / T1_TOTAL
    assert ct.cache_read_cost_share == Decimal(2_000_000) / T1_TOTAL
    assert ct.cache_write_cost_share == Decimal(2_500_000) / T1_TOTAL
    assert ct.output_cost_share == Decimal(4_800_000) / T1_TOTAL
    assert (ct.input_tokens, ct.cache_read_tokens, ct.cache_write_tokens) == (12_000, 4_000, 1_000)
    assert (ct.uncached_input_tokens, ct.output_tokens, ct.reasoning_tokens) == (7_000, 600, 100)
    assert ct.cache_read_token_share == Decimal(1) / 3  # 4,000 of 12,000 input tokens
    # 7,000 uncached tokens x ($2 - $0.50) / 1M = $0.0105, at most
    assert ct.caching_savings_upper_bound_usd == Decimal("0.0105")
    assert ct.caching_savings_upper_bound_share == Decimal(10_500_000) / T1_TOTAL
    assert ct.caching_unknown_calls == 0 and ct.caching_savings_complete


def test_a_model_without_cache_price_is_unknown_and_flagged_never_zero(ledger):
    ct = by_route(ledger)[NOCACHE]
    assert ct.input_cost_share == Decimal(3_500_000) / 3_900_000
    assert ct.cache_read_cost_share == 0  # its cache reads were charged as input
    assert ct.cache_read_token_share == Decimal(1_500) / 3_500
    assert ct.caching_savings_upper_bound_usd is None
    assert ct.caching_unknown_calls == 1  # c3; c4 had no uncached input


def test_an_unpriced_model_has_tokens_but_no_shares_and_an_unknown_saving(ledger):
    ct = by_route(ledger)[UNPRICED]
    assert ct.priced_cost_usd == 0 and ct.input_cost_share is None and ct.output_cost_share is None
    assert (ct.input_tokens, ct.output_tokens, ct.cache_read_token_share) == (1_000, 10, 0)
    assert ct.caching_savings_upper_bound_usd is None and ct.caching_unknown_calls == 1


def test_a_partly_known_saving_covers_the_known_calls_and_counts_the_others(ledger):
    ct = by_route(ledger)[MIXED]
    assert ct.caching_savings_upper_bound_usd == usd(1_500_000)  # c6: 1,000 x $1.50 / 1M
    assert ct.caching_unknown_calls == 1 and not ct.caching_savings_complete  # c7


def test_calls_belong_to_scopes_through_their_task_and_its_filters(ledger):
    (support,) = scope_stats(ledger, by=("feature",), filters=Filters(feature="support"))
    ct = support.context
    assert ct.input_tokens == 12_000 + 3_500 + 1_000 + 1_100  # neither c8 (no task) nor c9 (billing)
    assert ct.caching_savings_upper_bound_usd == usd(12_000_000) and ct.caching_unknown_calls == 3
    routes = {s.key["route"]: s.context for s in scope_stats(ledger, by=("route",))}
    assert routes[CACHED].input_tokens == 12_000 + 7_000  # T5 (billing) has the same route
    assert routes[CACHED].caching_savings_upper_bound_usd == usd(10_500_000 + 10_500_000)
    (everything,) = scope_stats(ledger, by=(), filters=Filters(until=datetime(2024, 5, 6, 12, 0, 1)))
    assert everything.context.input_tokens == 12_000 + 3_500 + 1_000 + 1_100 + 7_000
    assert scope_stats(ledger, by=(), filters=Filters(until=AT)) == []  # the tasks' window decides


def test_a_scope_without_calls_has_an_empty_context(ledger_engine):
    insert(ledger_engine, schema.tasks, [task_row("X", AT, llm_calls=0)])
    (s,) = scope_stats(ledger_engine, by=("feature",))
    assert s.context.input_tokens == 0 and s.context.input_cost_share is None
    assert s.context.caching_savings_upper_bound_usd == 0 and s.context.caching_savings_complete


# --- the CLI ----------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


KEYS = (
    "input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd", "reasoning_cost_usd",
    "other_cost_usd", "input_cost_share", "cache_read_cost_share", "cache_write_cost_share", "output_cost_share",
    "other_cost_share", "input_tokens", "cache_read_tokens", "cache_write_tokens", "uncached_input_tokens",
    "output_tokens", "reasoning_tokens", "cache_read_token_share", "cache_write_token_share",
    "caching_savings_upper_bound_usd", "caching_savings_upper_bound_share", "caching_unknown_calls",
    "caching_savings_complete",
)  # fmt: skip


def test_report_json_and_csv_hold_the_context_tax_with_the_same_text(ledger_url, ledger, capsys):
    args = ("report", "--ledger", ledger_url, "--by", "route", "--feature", "support")
    rows = {r["route"]: r for r in json.loads(run(capsys, *args, "--format", "json"))}
    cached = rows[CACHED]
    assert all(k in cached for k in KEYS)
    assert Decimal(cached["caching_savings_upper_bound_usd"]) == Decimal("0.0105")
    assert Decimal(cached["input_cost_share"]) == Decimal(14_000_000) / T1_TOTAL
    assert Decimal(cached["cache_read_token_share"]) == Decimal(1) / 3
    assert (cached["uncached_input_tokens"], cached["caching_unknown_calls"]) == (7_000, 0)
    assert cached["caching_savings_complete"] is True
    assert rows[NOCACHE]["caching_savings_upper_bound_usd"] is None and rows[NOCACHE]["caching_unknown_calls"] == 1
    assert rows[UNPRICED]["input_cost_share"] is None
    assert "input_tokens_per_task" not in cached  # the table's reading aid is not data
    table = {r["route"]: r for r in csv.DictReader(io.StringIO(run(capsys, *args, "--format", "csv")))}
    for route, row in rows.items():
        for key in KEYS:
            value = row[key]
            text = "" if value is None else json.dumps(value) if isinstance(value, (bool, int)) else value
            assert table[route][key] == text, (route, key)


def test_report_table_prints_the_context_tax_under_the_main_table(ledger_url, ledger, capsys):
    text = run(capsys, "report", "--ledger", ledger_url, "--by", "route", "--feature", "support")
    main_table, context = text.split("\n\n", 1)
    assert "caching saves" not in main_table
    title, header, _rule, *rest = context.splitlines()
    assert title.startswith("Context tax by route:") and "UPPER BOUND" in title
    assert "caching saves (upper bound)" in header and "cached input" in header
    lines = {line.split()[0]: line for line in rest if not line.startswith("note:")}
    assert "<=$0.0105" in lines[CACHED] and "59.6%" in lines[CACHED]  # input: 14 / 23.5
    assert "33.3%" in lines[CACHED]  # cached input
    assert "<=$0.00150" in lines[MIXED]
    nocache = lines[NOCACHE].split()
    assert nocache[-1] == "1" and nocache[-3:-1] == ["-", "-"]  # unknown saving, one call without cache price
    notes = [line for line in rest if line.startswith("note:")]
    assert any("3 call(s) with uncached input have no price or no cache-read price" in n for n in notes)


def test_report_html_has_a_context_tax_section_labelled_upper_bound(ledger_url, ledger, capsys, tmp_path: Path):
    page_path = tmp_path / "r.html"
    run(capsys, "report", "--ledger", ledger_url, "--by", "route", "--html", str(page_path))
    page = page_path.read_text(encoding="utf-8")
    section = page.split("<h2>Context tax</h2>", 1)[1].split("</section>", 1)[0]
    assert "upper bound" in section and "\u2264" in section
    assert "caching saves (upper bound)" in section and "&lt;=$0.0210" in section  # both ctx-cached tasks


def test_compare_shows_the_context_tax_per_route(ledger_url, ledger, capsys):
    args = ("compare", "--ledger", ledger_url, "--feature", "support")
    lines = {line.split("  ")[0]: line for line in run(capsys, *args).splitlines()}
    assert "<=$0.0105" in lines["caching saves (upper bound)"]
    assert "calls without a cache price" in lines and "cached share of input tokens" in lines
    assert "12,000" in lines["input tokens per task (p50)"]  # T1, the route's one task in support
    routes = {r["route"]: r for r in json.loads(run(capsys, *args, "--format", "json"))["routes"]}
    assert Decimal(routes[CACHED]["caching_savings_upper_bound_usd"]) == Decimal("0.0105")
    assert routes[NOCACHE]["caching_unknown_calls"] == 1
    rows = {r["route"]: r for r in csv.DictReader(io.StringIO(run(capsys, *args, "--format", "csv")))}
    assert rows[CACHED]["caching_savings_upper_bound_usd"] == routes[CACHED]["caching_savings_upper_bound_usd"]
