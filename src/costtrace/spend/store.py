"""The ledger's transactions: idempotent batch writes, budget state, alert claims, budget definitions.

Every function takes an :class:`~sqlalchemy.engine.Engine`, runs one short transaction and retries it
when the database reports a transient conflict (SQLite busy, PostgreSQL deadlock or serialization
failure). No SQL is built by string formatting: every value is a bound parameter. Rows come from
:mod:`costtrace.spend.rows`; hard-cap reservations are taken by :mod:`costtrace.spend.reservations`.

Invariants the tests hold us to:

- a call row is inserted at most once (its ``call_id`` is the idempotency key); its cost is added to
  the spend of each budget it matches in the same transaction, and only when the row was new, so
  replaying a batch never counts twice and ``spent`` always equals the sum of the ledger's rows;
- a reservation is deleted in the same transaction that adds its call's real cost, so a budget's
  ``spent + reserved`` never dips below the truth while a call is in flight.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from costtrace._money import from_nano, to_nano
from costtrace.spend import rollups
from costtrace.spend import schema as s
from costtrace.spend.engine import upsert_insert
from costtrace.spend.rows import Row, clean_text, naive_utc

if TYPE_CHECKING:
    from costtrace.spend.budgets import Budget


# --- transactions with retry -------------------------------------------------------------------------

_TRANSIENT_PG_CODES = ("40001", "40P01")  # serialization failure, deadlock detected


def is_transient(exc: BaseException) -> bool:
    """A conflict worth retrying at once (not an unreachable database)."""
    if isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower():
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(exc, DBAPIError) and code in _TRANSIENT_PG_CODES


def is_unavailable(exc: BaseException) -> bool:
    """The database can't take writes now (down, locked, no tables): spool and retry, never drop."""
    if isinstance(exc, sa_exc.DBAPIError):
        return not isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.NotSupportedError))
    return isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError, OSError))


def describe_error(exc: BaseException) -> str:
    """A short, data-free description of a database error (no SQL, no parameters, no URL password)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}"


def run_transaction(engine: Engine, work: Any, *, attempts: int = 5) -> Any:
    """Run ``work(conn)`` in a transaction, retrying transient conflicts with jittered backoff."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return work(conn)
        except DBAPIError as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _insert_new(conn: Connection, table: sa.Table, rows: Sequence[Row], key: str) -> set[str]:
    """Insert rows whose key is not there yet; returns the keys actually inserted."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        return _insert_new_postgresql(conn, table, rows, key)
    stmt = upsert_insert(conn, table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
    inserted: set[str] = set()
    for chunk in _sqlite_chunks(rows):
        result = conn.execute(stmt, list(chunk))
        inserted.update(r[0] for r in result)
    return inserted


SQLITE_CHUNK_SIZES = (256, 128, 64, 32, 16, 8, 4, 2, 1)
"""Rows per multi-row ``INSERT`` on SQLite. Each number of rows is its own SQL text, prepared and kept
in the sqlite3 module's statement cache (128 per connection): one text per batch size filled that
cache with large statements used once (27 MB of SQLite heap and rising RSS in
``benchmarks/bench_soak.py``). Split into these sizes, a table has at most 9 texts, each reused."""


def _sqlite_chunks(rows: Sequence[Row]) -> Iterable[Sequence[Row]]:
    """``rows`` in consecutive chunks whose sizes are in :data:`SQLITE_CHUNK_SIZES` (largest first)."""
    start = 0
    for size in SQLITE_CHUNK_SIZES:
        while len(rows) - start >= size:
            yield rows[start : start + size]
            start += size


def _pg_array_type(column: sa.Column[Any]) -> str:
    t = column.type
    if isinstance(t, sa.Boolean):
        return "boolean[]"
    if isinstance(t, sa.BigInteger):
        return "bigint[]"
    if isinstance(t, sa.Integer):
        return "integer[]"
    if isinstance(t, sa.Float):
        return "double precision[]"
    if isinstance(t, sa.DateTime):
        return "timestamp[]"
    return "text[]"


_PG_UNNEST: dict[str, sa.TextClause] = {}


def _insert_new_postgresql(conn: Connection, table: sa.Table, rows: Sequence[Row], key: str) -> set[str]:
    """One ``INSERT ... SELECT FROM unnest(arrays)`` per batch: a short statement with one parameter per
    column, which the driver prepares once, instead of a multi-row VALUES list it re-parses per batch."""
    stmt = _PG_UNNEST.get(table.name)
    if stmt is None:
        names = [c.name for c in table.columns]
        arrays = ", ".join(f"CAST(:{n} AS {_pg_array_type(table.c[n])})" for n in names)
        stmt = sa.text(
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({key}) DO NOTHING RETURNING {key}"
        )
        _PG_UNNEST[table.name] = stmt
    params = {c.name: [row.get(c.name) for row in rows] for c in table.columns}
    return {r[0] for r in conn.execute(stmt, params)}


# --- writing a batch ---------------------------------------------------------------------------------


@dataclass
class Batch:
    """What the writer commits at once. Rows come from :func:`call_row`, :func:`task_row`, :func:`event_row`."""

    calls: list[Row]
    tasks: list[Row]
    events: list[Row]
    outcome_updates: list[Row]
    """Rows of ``outcome_updated`` events (also in ``events``): applied to their task row."""

    def __len__(self) -> int:
        return len(self.calls) + len(self.tasks) + len(self.events)


@dataclass(frozen=True)
class Touched:
    """A budget period whose spend a batch changed (for alert checks)."""

    budget: str
    period_start: datetime


def budget_spend_for_call(budget: Budget, row: Row) -> tuple[int, bool] | None:
    """What a call row adds to ``budget`` (nano-USD, fallback-priced?), or None if out of scope."""
    dims: Mapping[str, str] = json.loads(row["dimensions"]) if row.get("dimensions") else {}
    if not budget.matches(
        dims, task_name=row.get("task_name"), provider=row.get("provider"), model=row.get("request_model")
    ):
        return None
    cost = row.get("cost_nano_usd")
    if cost is not None:
        return int(cost), False
    fb = budget.fallback_price
    if fb is not None and row.get("usage_source") != "unknown" and not isinstance(fb, tuple):
        return to_nano(fb.cost_usd(int(row["input_tokens"]), int(row["output_tokens"]))) or 0, True
    return 0, False


def write_batch(engine: Engine, batch: Batch, budgets: Sequence[Budget]) -> list[Touched]:
    """Commit a batch idempotently (see the module docstring). Returns the budget periods it changed."""

    def work(conn: Connection) -> list[Touched]:
        now = datetime.now(UTC).replace(tzinfo=None)
        new_calls = _insert_new(conn, s.calls, batch.calls, "call_id")
        touched: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        ends: dict[tuple[str, datetime], datetime] = {}
        for row in batch.calls:
            if row["call_id"] not in new_calls:
                continue
            for budget in budgets:
                add = budget_spend_for_call(budget, row)
                if add is None:
                    continue
                start, end = budget.bucket(row["started_at"])
                key = (budget.name, start)
                ends[key] = end
                totals = touched[key]
                totals[0] += add[0]
                totals[1] += 1
                totals[2] += 1 if row.get("cost_nano_usd") is None else 0
                totals[3] += 1 if add[1] else 0
        for (budget_id, start), (spent, n, unpriced, fallback) in sorted(touched.items()):
            _add_spend(conn, budget_id, start, ends[(budget_id, start)], now, spent=spent, reserved=0,
                       calls=n, unpriced=unpriced, fallback=fallback)  # fmt: skip
        if batch.calls:
            release_reservations(conn, [r["call_id"] for r in batch.calls])
        new_tasks = _insert_new(conn, s.tasks, batch.tasks, "task_id")
        _insert_new(conn, s.events, batch.events, "event_id")
        restated = _apply_outcomes(conn, batch.outcome_updates, new_tasks)
        ended = [r["ended_at"] for r in batch.tasks if r["task_id"] in new_tasks]
        rollups.mark_dirty(conn, ended + restated + _late_calls_tasks(conn, batch.calls, new_calls, new_tasks))
        return [Touched(b, p) for (b, p) in sorted(touched)]

    result: list[Touched] = run_transaction(engine, work)
    return result


def _late_calls_tasks(
    conn: Connection, calls: Sequence[Row], new_calls: set[str], new_tasks: set[str]
) -> list[datetime]:
    """``ended_at`` of the tasks already in the ledger that new calls belong to (their rollups change)."""
    ids = sorted({r["task_id"] for r in calls if r["call_id"] in new_calls and r.get("task_id")} - new_tasks)
    t = s.tasks
    ended: list[datetime] = []
    for i in range(0, len(ids), 500):
        ended.extend(e for (e,) in conn.execute(sa.select(t.c.ended_at).where(t.c.task_id.in_(ids[i : i + 500]))))
    return ended


def _add_spend(
    conn: Connection,
    budget_id: str,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    spent: int,
    reserved: int,
    calls: int = 0,
    unpriced: int = 0,
    fallback: int = 0,
) -> None:
    t = s.budget_spend
    stmt = upsert_insert(conn, t).values(
        budget_id=budget_id,
        period_start=start,
        period_end=end,
        spent_nano_usd=spent,
        reserved_nano_usd=reserved,
        calls=calls,
        unpriced_calls=unpriced,
        fallback_priced_calls=fallback,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.budget_id, t.c.period_start],
        set_={
            "spent_nano_usd": t.c.spent_nano_usd + stmt.excluded.spent_nano_usd,
            "reserved_nano_usd": t.c.reserved_nano_usd + stmt.excluded.reserved_nano_usd,
            "calls": t.c.calls + stmt.excluded.calls,
            "unpriced_calls": t.c.unpriced_calls + stmt.excluded.unpriced_calls,
            "fallback_priced_calls": t.c.fallback_priced_calls + stmt.excluded.fallback_priced_calls,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(stmt)


def release_reservations(conn: Connection, call_ids: Sequence[str]) -> None:
    """Delete the reservations of these calls and take their amounts off ``reserved``."""
    r = s.reservations
    freed: dict[tuple[str, datetime], int] = defaultdict(int)
    for i in range(0, len(call_ids), 500):
        rows = conn.execute(
            r.delete()
            .where(r.c.call_id.in_(call_ids[i : i + 500]))
            .returning(r.c.budget_id, r.c.period_start, r.c.amount_nano_usd)
        )
        for budget_id, start, amount in rows:
            freed[(budget_id, start)] += int(amount)
    _subtract_reserved(conn, freed)


def _subtract_reserved(conn: Connection, freed: Mapping[tuple[str, datetime], int]) -> None:
    t = s.budget_spend
    for (budget_id, start), amount in sorted(freed.items()):
        conn.execute(
            t.update()
            .where(t.c.budget_id == budget_id, t.c.period_start == start)
            .values(reserved_nano_usd=t.c.reserved_nano_usd - amount)
        )


def _apply_outcomes(conn: Connection, updates: Sequence[Row], new_tasks: set[str]) -> list[datetime]:
    """Apply late outcomes; a task written after its late outcome (another process) gets it now.

    Returns the ``ended_at`` of the tasks changed (their rollup periods become dirty)."""
    t, e = s.tasks, s.events
    latest: dict[str, Row] = {}
    for row in updates:
        prev = latest.get(row["task_id"])
        if prev is None or (row["at"], row["event_id"]) >= (prev["at"], prev["event_id"]):
            latest[row["task_id"]] = row
    if new_tasks:
        pending = conn.execute(
            sa.select(e.c.event_id, e.c.task_id, e.c.at, e.c.outcome, e.c.reason, e.c.amount_nano_usd).where(
                e.c.kind == "outcome_updated", e.c.task_id.in_(sorted(new_tasks)[:10_000])
            )
        )
        for ev in pending.mappings():
            prev = latest.get(ev["task_id"])
            if prev is None or (ev["at"], ev["event_id"]) > (prev["at"], prev["event_id"]):
                latest[ev["task_id"]] = dict(ev)
    changed: list[datetime] = []
    for task_id, row in latest.items():
        values: dict[str, Any] = {
            "outcome": row["outcome"],
            "outcome_reason": row.get("reason"),
            "outcome_updated_at": row["at"],
            "original_outcome": sa.func.coalesce(t.c.original_outcome, t.c.outcome),
        }
        if row.get("amount_nano_usd") is not None:
            values["rework_nano_usd"] = row["amount_nano_usd"]
        changed.extend(
            r[0]
            for r in conn.execute(
                t.update()
                .where(t.c.task_id == task_id)
                .where(sa.or_(t.c.outcome_updated_at.is_(None), t.c.outcome_updated_at <= row["at"]))
                .values(**values)
                .returning(t.c.ended_at)
            )
        )
    return changed


# --- budgets: state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetState:
    """A budget's spend in its current period (or rolling window)."""

    budget: str
    spent_usd: Decimal
    reserved_usd: Decimal
    limit_usd: Decimal
    calls: int
    unpriced_calls: int
    period_start: datetime
    resets_at: datetime | None

    @property
    def utilisation(self) -> Decimal:
        """Spent / limit (reservations excluded); infinite for a zero limit with spend."""
        if self.limit_usd == 0:
            return Decimal("Infinity") if self.spent_usd > 0 else Decimal(0)
        return self.spent_usd / self.limit_usd


def _state(conn: Connection, budget: Budget, now: datetime) -> BudgetState:
    t = s.budget_spend
    start, _ = budget.bucket(now)
    row = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(t.c.spent_nano_usd), 0),
            sa.func.coalesce(sa.func.sum(t.c.reserved_nano_usd), 0),
            sa.func.coalesce(sa.func.sum(t.c.calls), 0),
            sa.func.coalesce(sa.func.sum(t.c.unpriced_calls), 0),
        ).where(t.c.budget_id == budget.name, t.c.period_start >= budget.window_start(now), t.c.period_start <= start)
    ).one()
    return BudgetState(
        budget=budget.name,
        spent_usd=from_nano(int(row[0])) or Decimal(0),
        reserved_usd=from_nano(int(row[1])) or Decimal(0),
        limit_usd=budget.limit,
        calls=int(row[2]),
        unpriced_calls=int(row[3]),
        period_start=start,
        resets_at=budget.resets_at(now),
    )


def budget_states(engine: Engine, budgets: Iterable[Budget], at: datetime | None = None) -> list[BudgetState]:
    """Each budget's current spend, reservations and limit (read-only)."""
    now = naive_utc(at or datetime.now(UTC))
    with engine.connect() as conn:
        return [_state(conn, b, now) for b in budgets]


# --- alert claims and budget definitions -----------------------------------------------------------


def claim_alert(engine: Engine, rule_id: str, period_start: datetime, threshold: str, data: Mapping[str, Any]) -> bool:
    """Claim the right to fire ``rule_id`` at ``threshold`` for a period: True exactly once, across processes."""

    def work(conn: Connection) -> bool:
        result = conn.execute(
            upsert_insert(conn, s.alerts_fired)
            .values(
                rule_id=clean_text(rule_id),
                period_start=period_start,
                threshold=threshold,
                fired_at=datetime.now(UTC).replace(tzinfo=None),
                data=json.dumps(data, sort_keys=True, default=str),
            )
            .on_conflict_do_nothing()
        )
        return bool(result.rowcount)

    claimed: bool = run_transaction(engine, work)
    return claimed


def save_budget_definitions(engine: Engine, budgets: Sequence[Budget]) -> None:
    """Store the definitions (for ``costtrace budgets`` and other processes)."""

    def work(conn: Connection) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        for b in budgets:
            stmt = upsert_insert(conn, s.budgets).values(budget_id=b.name, definition=b.to_json(), updated_at=now)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[s.budgets.c.budget_id],
                    set_={"definition": stmt.excluded.definition, "updated_at": stmt.excluded.updated_at},
                )
            )

    run_transaction(engine, work)


def load_budget_definitions(engine: Engine) -> list[Budget]:
    """The budget definitions stored in the ledger (callable hooks are not stored)."""
    from costtrace.spend.budgets import Budget

    with engine.connect() as conn:
        rows = conn.execute(sa.select(s.budgets.c.definition).order_by(s.budgets.c.budget_id)).all()
    return [Budget.from_json(r[0]) for r in rows]
