"""Budget periods in the ledger at offset changes, on SQLite and PostgreSQL.

Spend is stored per (budget, period start). For every change 1970-2040 of a few zones whose changes skip
or repeat local midnight (and of Lord Howe's 30-minute changes, and Samoa's skipped day), calls are
written just before and at the change, and where that midnight would be on the old and on the new offset,
against day, week and month budgets (and hour ones in Lord Howe). Then each stored period row must be the
period the definition gives (computed from the offsets alone, tests/tzdb.py), holding exactly the spend of
the calls in ``[start, end)``; and ``budget_states`` and ``reserve`` must see that period at each change.

The ledger only stores what ``Budget.bucket`` says, so a few zones suffice here:
tests/test_budget_periods.py checks every period at every change of every zone without a database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa

from costtrace import _money
from costtrace import semconv as sc
from costtrace.spend import reservations, schema, store
from costtrace.spend.budgets import Budget
from tests import tzdb

US = timedelta(microseconds=1)
ZONES = (
    "America/Santiago",  # midnight skipped (00:00 -> 01:00) and set back to 23:00
    "America/Havana",  # midnight read twice (01:00 -> 00:00)
    "Asia/Beirut",  # midnight skipped, and set back to 23:00
    "America/Sao_Paulo",  # midnight skipped, 1985-2019
    "Australia/Lord_Howe",  # 30-minute changes at 02:00
    "Pacific/Apia",  # 30 December 2011 skipped
)
RESERVE_ZONES = ("America/Santiago", "America/Havana")
"""Zones whose changes are also checked through ``budget_states`` and ``reserve``."""
PERIODS = ("hour", "day", "week", "month")


def _instants(zone: str) -> list[datetime]:
    """Just before and at each change, and where the local midnight the change touches (or the one of
    the day it lands in) would be on the old and on the new offset."""
    out: set[datetime] = set()
    for change, old, new in tzdb.transitions(zone):
        reading = change + timedelta(seconds=max(old, new))
        midnight = datetime(reading.year, reading.month, reading.day)
        out |= {change - US, change, midnight - timedelta(seconds=old), midnight - timedelta(seconds=new)}
    return sorted(out)


def _call_row(call_id: str, zone: str, started_at: datetime, cost: int) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: (None if c.nullable else 0) for c in schema.calls.columns}
    row.update(
        call_id=call_id,
        feature=zone,
        dimensions=json.dumps({sc.FEATURE: zone}),
        provider="openai",
        operation="chat",
        request_model="gpt-4o-mini",
        usage_source="provider",
        priced=True,
        cost_nano_usd=cost,
        started_at=started_at,
    )
    return row


def _budgets(zone: str) -> list[Budget]:
    """Day, week and month budgets; hours too for Lord Howe (elsewhere an hour budget adds a row per call)."""
    periods = PERIODS if zone == "Australia/Lord_Howe" else PERIODS[1:]
    return [Budget(f"{zone}:{p}", limit_usd=1000, period=p, timezone=zone, scope={"feature": zone}) for p in periods]


def test_period_rows_states_and_reservations_at_offset_changes(ledger_engine):
    # The calls, one transaction per zone; each costs a different amount.
    calls: dict[str, list[tuple[datetime, int]]] = {}
    n = 0
    for zone in ZONES:
        calls[zone] = [(at, n + i) for i, at in enumerate(_instants(zone), start=1)]
        n += len(calls[zone])
        rows = [_call_row(f"c{cost}", zone, at, cost) for at, cost in calls[zone]]
        batch = store.Batch(calls=rows, tasks=[], events=[], outcome_updates=[])
        store.write_batch(ledger_engine, batch, _budgets(zone))
    assert n > 1500  # about 2 000 calls

    # Each stored period is the defined one and holds exactly the spend of its calls.
    s = schema.budget_spend
    with ledger_engine.connect() as conn:
        stored = {
            (r.budget_id, r.period_start): (r.period_end, int(r.spent_nano_usd), int(r.calls))
            for r in conn.execute(
                sa.select(s.c.budget_id, s.c.period_start, s.c.period_end, s.c.spent_nano_usd, s.c.calls)
            )
        }
    expected: dict[tuple[str, datetime], list[Any]] = {}
    periods: dict[tuple[str, datetime], tuple[datetime, datetime]] = {}
    for zone, zone_calls in calls.items():
        z = tzdb.zone_offsets(zone)
        reach = cache(z.first_reaching)
        for budget in _budgets(zone):
            for at, cost in zone_calls:
                start, end = tzdb.expected_period(z, reach, at, budget.period)
                periods[(budget.name, at)] = (start, end)
                entry = expected.setdefault((budget.name, start), [end, 0, 0])
                entry[1] += cost
                entry[2] += 1
    assert stored == {k: tuple(v) for k, v in expected.items()}

    # budget_states and reserve see the period of the change, and its spend.
    for zone in RESERVE_ZONES:
        budgets = _budgets(zone)
        day = next(b for b in budgets if b.period == "day")
        for change, _, _ in tzdb.transitions(zone):
            for at in (change - US, change):
                for budget, state in zip(budgets, store.budget_states(ledger_engine, budgets, at), strict=True):
                    start, end = periods[(budget.name, at)]
                    assert (state.period_start, state.resets_at) == (start, end.replace(tzinfo=UTC)), (budget, at)
                    assert _money.to_nano(state.spent_usd) == expected[(budget.name, start)][1], (budget, at)
            start, end = periods[(day.name, change)]
            spent = expected[(day.name, start)][1]
            cap = Budget(day.name, limit_usd=_money.from_nano(spent + 10), period="day", timezone=zone, action="block")
            assert reservations.reserve(ledger_engine, [(cap, 10)], call_id=f"r{change}", at=change) is None
            denied = reservations.reserve(ledger_engine, [(cap, 1)], call_id=f"x{change}", at=change)
            assert denied is not None
            assert (denied.state.period_start, _money.to_nano(denied.state.spent_usd)) == (start, spent)
            assert denied.state.reserved_usd == _money.from_nano(10)
            with ledger_engine.connect() as conn:
                held = conn.execute(
                    sa.select(schema.reservations.c.period_start).where(schema.reservations.c.call_id == f"r{change}")
                ).scalar_one()
            assert held == start
            reservations.release(ledger_engine, [f"r{change}"])
