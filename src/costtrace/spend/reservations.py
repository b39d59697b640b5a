"""Hard-cap reservations: a call's worst-case cost held on its budgets, all or nothing, before it is sent.

:func:`reserve` runs on the app's thread (through :mod:`costtrace.spend.admission`) in one short
transaction; the reservation is deleted when the call's row is written
(:func:`costtrace.spend.store.write_batch`), by :func:`release` when the call is never sent, or when its
lease expires (swept by the next reserver). Reservations for one budget are serialised by a lock row
(``costtrace_budget_locks``), so concurrent reservers in many processes can never together exceed the
limit.

Example:
    >>> denied = reserve(engine, [(budget, 2_000_000)], call_id="c1", at=now)    # doctest: +SKIP
    >>> denied is None or denied.state.spent_usd
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from costtrace._money import from_nano, to_nano
from costtrace.spend import schema as s
from costtrace.spend.rows import naive_utc
from costtrace.spend.store import BudgetState, release_reservations, run_transaction

if TYPE_CHECKING:
    from costtrace.spend.budgets import Budget


@dataclass(frozen=True)
class Denied:
    """A reservation that would exceed ``budget``: the state at the moment it was refused."""

    budget: str
    state: BudgetState
    requested_nano_usd: int


# The reservation path runs on the app's thread before each hard-capped call, so its statements are
# built once: plain SQL that SQLite (>= 3.35) and PostgreSQL both accept, with typed bound parameters
# (DateTime binds store times exactly as the ORM-free Core statements elsewhere do).
_DT = sa.DateTime()
_LOCK_BUMP = sa.text("UPDATE costtrace_budget_locks SET version = version + 1 WHERE budget_id = :budget")
_LOCK_CREATE = sa.text(
    "INSERT INTO costtrace_budget_locks (budget_id, version) VALUES (:budget, 0) ON CONFLICT (budget_id) DO NOTHING"
)
_SWEEP = (
    sa.text(
        "DELETE FROM costtrace_reservations WHERE budget_id = :budget AND lease_expires_at < :now "
        "RETURNING period_start, amount_nano_usd"
    )
    .bindparams(sa.bindparam("now", type_=_DT))
    .columns(sa.column("period_start", _DT), sa.column("amount_nano_usd", sa.BigInteger()))
)
_FREE = sa.text(
    "UPDATE costtrace_budget_spend SET reserved_nano_usd = reserved_nano_usd - :amount "
    "WHERE budget_id = :budget AND period_start = :start"
).bindparams(sa.bindparam("start", type_=_DT))
_WINDOW = sa.text(
    "SELECT COALESCE(SUM(spent_nano_usd), 0), COALESCE(SUM(reserved_nano_usd), 0), COALESCE(SUM(calls), 0), "
    "COALESCE(SUM(unpriced_calls), 0) FROM costtrace_budget_spend "
    "WHERE budget_id = :budget AND period_start >= :first AND period_start <= :start"
).bindparams(sa.bindparam("first", type_=_DT), sa.bindparam("start", type_=_DT))
_HOLD = sa.text(
    "INSERT INTO costtrace_budget_spend (budget_id, period_start, period_end, spent_nano_usd, reserved_nano_usd, "
    "calls, unpriced_calls, fallback_priced_calls, updated_at) "
    "VALUES (:budget, :start, :end, 0, :amount, 0, 0, 0, :now) "
    "ON CONFLICT (budget_id, period_start) DO UPDATE SET "
    "reserved_nano_usd = costtrace_budget_spend.reserved_nano_usd + excluded.reserved_nano_usd, "
    "updated_at = excluded.updated_at"
).bindparams(*(sa.bindparam(k, type_=_DT) for k in ("start", "end", "now")))
_RESERVE = sa.text(
    "INSERT INTO costtrace_reservations (reservation_id, budget_id, period_start, call_id, amount_nano_usd, "
    "created_at, lease_expires_at) VALUES (:rid, :budget, :start, :call_id, :amount, :now, :expires)"
).bindparams(*(sa.bindparam(k, type_=_DT) for k in ("start", "now", "expires")))


def _lock_budget(conn: Connection, budget_id: str) -> None:
    if conn.execute(_LOCK_BUMP, {"budget": budget_id}).rowcount == 0:
        conn.execute(_LOCK_CREATE, {"budget": budget_id})
        conn.execute(_LOCK_BUMP, {"budget": budget_id})


def _sweep_expired(conn: Connection, budget_id: str, now: datetime) -> None:
    freed: dict[datetime, int] = defaultdict(int)
    for start, amount in conn.execute(_SWEEP, {"budget": budget_id, "now": now}):
        freed[start] += int(amount)
    for start, amount in sorted(freed.items()):
        conn.execute(_FREE, {"amount": amount, "budget": budget_id, "start": start})


def _window_totals(conn: Connection, budget: Budget, now: datetime) -> tuple[int, int, int, int, datetime]:
    start, _ = budget.bucket(now)
    row = conn.execute(_WINDOW, {"budget": budget.name, "first": budget.window_start(now), "start": start}).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3]), start


class _Refused(Exception):
    def __init__(self, denied: Denied) -> None:
        self.denied = denied


def reserve(
    engine: Engine,
    holds: Sequence[tuple[Budget, int]],
    *,
    call_id: str,
    at: datetime,
    unwritten: Mapping[str, int] | None = None,
) -> Denied | None:
    """Reserve ``amount`` nano-USD on each budget for call ``call_id``, all or nothing.

    ``unwritten``: nano-USD per budget name that this process has recorded but not yet written (its
    writer's queue and spool, see ``LedgerWriter.pending_nano``); it counts as spent. Returns None when
    every budget had room (the reservations are held until the call's record is written, or their lease
    expires), else the first budget that refused and its state (``spent_usd`` including ``unwritten``).
    """
    now = naive_utc(at)
    extra = unwritten or {}

    def work(conn: Connection) -> None:
        ordered = sorted(holds, key=lambda h: h[0].name)
        for budget, _ in ordered:  # lock rows in name order: no deadlock between reservers
            _lock_budget(conn, budget.name)
        for budget, amount in ordered:
            _sweep_expired(conn, budget.name, now)
            spent, held, calls, unpriced, start = _window_totals(conn, budget, now)
            spent += extra.get(budget.name, 0)
            if spent + held + amount > (to_nano(budget.limit) or 0):
                state = BudgetState(
                    budget=budget.name,
                    spent_usd=from_nano(spent) or Decimal(0),
                    reserved_usd=from_nano(held) or Decimal(0),
                    limit_usd=budget.limit,
                    calls=calls,
                    unpriced_calls=unpriced,
                    period_start=start,
                    resets_at=budget.resets_at(now),
                )
                raise _Refused(Denied(budget.name, state, amount))
        for budget, amount in ordered:
            start, end = budget.bucket(now)
            conn.execute(_HOLD, {"budget": budget.name, "start": start, "end": end, "amount": amount, "now": now})
            conn.execute(
                _RESERVE,
                {
                    "rid": f"{call_id}:{budget.name}"[:128],
                    "budget": budget.name,
                    "start": start,
                    "call_id": call_id,
                    "amount": amount,
                    "now": now,
                    "expires": now + timedelta(seconds=budget.lease_s),
                },
            )

    try:
        run_transaction(engine, work, attempts=2)  # on the app's thread: fail fast, fail_open decides
    except _Refused as refused:
        return refused.denied
    return None


def release(engine: Engine, call_ids: Sequence[str]) -> None:
    """Release reservations of calls that will never be recorded (e.g. blocked by a later budget check)."""
    if call_ids:
        run_transaction(engine, lambda conn: release_reservations(conn, list(call_ids)))


def outstanding_reservations(engine: Engine) -> int:
    """Number of reservations currently held (0 once every call in flight has been recorded)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(s.reservations)).scalar() or 0)
