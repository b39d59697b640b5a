"""The ledger's transactions: idempotent batch writes, budget reservations, budget state, alert claims.

Every function takes an :class:`~sqlalchemy.engine.Engine`, runs one short transaction and retries it
when the database reports a transient conflict (SQLite busy, PostgreSQL deadlock or serialization
failure). No SQL is built by string formatting: every value is a bound parameter.

Invariants the tests hold us to:

- a call row is inserted at most once (its ``call_id`` is the idempotency key); its cost is added to
  the spend of each budget it matches in the same transaction, and only when the row was new, so
  replaying a batch never counts twice and ``spent`` always equals the sum of the ledger's rows;
- a reservation is deleted in the same transaction that adds its call's real cost, so a budget's
  ``spent + reserved`` never dips below the truth while a call is in flight;
- reservations for one budget are serialised by a lock row (``costtrace_budget_locks``), so
  concurrent reservers in many processes can never together exceed the limit.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from costtrace import semconv as sc
from costtrace._money import from_nano, to_nano
from costtrace.spend import schema as s

if TYPE_CHECKING:
    from costtrace.records import CallRecord, TaskSummary
    from costtrace.spend.budgets import Budget

_T = TypeVar("_T")
Row = dict[str, Any]

MAX_TEXT = 65_536
"""Free-text fields (reasons, details) are cut to this many characters; names to 255."""
_DATETIME_KEYS = ("started_at", "ended_at", "at", "outcome_updated_at")


# --- rows ------------------------------------------------------------------------------------------


def _clean(value: object, limit: int = 255) -> str | None:
    """Text for a column: NUL removed (PostgreSQL rejects it), lone surrogates replaced, length capped."""
    if value is None:
        return None
    text = str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if len(text) > limit:
        text = text[:limit]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _naive_utc(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


def _dimension_fields(dims: Mapping[str, str]) -> Row:
    return {
        "feature": _clean(dims.get(sc.FEATURE)),
        "team": _clean(dims.get(sc.TEAM)),
        "customer": _clean(dims.get(sc.CUSTOMER)),
        "user_id": _clean(dims.get(sc.USER)),
        "dimensions": json.dumps({_clean(k): _clean(v, MAX_TEXT) for k, v in dims.items()}, sort_keys=True)
        if dims
        else None,
    }


def call_row(record: CallRecord) -> Row:
    """The ``costtrace_calls`` row of a finished call."""
    u, c = record.usage, record.cost
    return {
        "call_id": record.call_id,
        "task_id": record.task_id,
        "task_name": _clean(record.task_name),
        **_dimension_fields(record.dimensions),
        "provider": _clean(record.provider) or "",
        "operation": _clean(record.operation, 64) or "",
        "request_model": _clean(record.request_model) or "",
        "response_model": _clean(record.response_model),
        "attempt": record.attempt,
        "error_type": _clean(record.error_type),
        "usage_source": u.source,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_write_input_tokens": u.cache_write_input_tokens,
        "cache_write_1h_input_tokens": u.cache_write_1h_input_tokens,
        "reasoning_output_tokens": u.reasoning_output_tokens,
        "priced": c.total_usd is not None,
        "cost_nano_usd": to_nano(c.total_usd),
        "input_nano_usd": to_nano(c.input_usd),
        "cache_read_nano_usd": to_nano(c.cache_read_usd),
        "cache_write_nano_usd": to_nano(c.cache_write_usd),
        "output_nano_usd": to_nano(c.output_usd),
        "reasoning_nano_usd": to_nano(c.reasoning_usd),
        "other_nano_usd": to_nano(c.other_usd),
        "cache_savings_nano_usd": to_nano(c.cache_savings_usd),
        "price_source": _clean(c.price_source),
        "price_date": _clean(c.price_date, 32),
        "price_model_id": _clean(c.model_id),
        "unpriced_reason": _clean(c.unpriced_reason, MAX_TEXT),
        "started_at": _naive_utc(record.start_time),
        "duration_s": record.duration_s,
    }


def task_row(summary: TaskSummary, ended_at: datetime) -> Row:
    """The ``costtrace_tasks`` row of a finished task (``ended_at``: when it ended)."""
    ended = _naive_utc(ended_at)
    duration = summary.duration_s or 0.0
    return {
        "task_id": summary.task_id,
        "name": _clean(summary.name) or "",
        "parent_id": summary.parent_id,
        **_dimension_fields(summary.dimensions),
        "route": _clean("->".join(summary.models), 1024) if summary.models else None,
        "outcome": summary.outcome,
        "outcome_reason": _clean(summary.outcome_reason, MAX_TEXT),
        "original_outcome": None,
        "outcome_updated_at": None,
        "first_pass": summary.first_pass,
        "cost_nano_usd": to_nano(summary.own_known_cost_usd),  # own calls: summing task rows counts each call once
        "wasted_nano_usd": to_nano(summary.wasted_cost_usd),
        "cache_savings_nano_usd": to_nano(summary.cache_savings_usd),
        "subtasks_cost_nano_usd": to_nano(summary.subtasks_cost_usd),
        "rework_nano_usd": None,
        "input_tokens": summary.input_tokens,
        "output_tokens": summary.output_tokens,
        "cache_read_input_tokens": summary.cache_read_input_tokens,
        "cache_write_input_tokens": summary.cache_write_input_tokens,
        "reasoning_output_tokens": summary.reasoning_output_tokens,
        "llm_calls": summary.llm_calls,
        "failed_calls": summary.failed_calls,
        "attempts": summary.attempts,
        "retries": summary.retries,
        "escalations": summary.escalations,
        "unpriced_calls": summary.unpriced_calls,
        "estimated_calls": summary.estimated_calls,
        "started_at": ended - timedelta(seconds=duration),
        "ended_at": ended,
        "duration_s": summary.duration_s,
    }


def event_row(
    *,
    event_id: str,
    task_id: str | None,
    kind: str,
    at: datetime,
    attempt: int | None = None,
    reason: object = None,
    details: object = None,
    from_model: object = None,
    to_model: object = None,
    outcome: str | None = None,
    amount_usd: Decimal | None = None,
    data: Mapping[str, Any] | None = None,
) -> Row:
    """A ``costtrace_events`` row. ``event_id`` is its idempotency key."""
    return {
        "event_id": event_id,
        "task_id": task_id,
        "kind": _clean(kind, 64) or "",
        "at": _naive_utc(at),
        "attempt": attempt,
        "reason": _clean(reason, MAX_TEXT),
        "details": _clean(details, MAX_TEXT),
        "from_model": _clean(from_model),
        "to_model": _clean(to_model),
        "outcome": _clean(outcome, 32),
        "amount_nano_usd": to_nano(amount_usd),
        "data": json.dumps(data, sort_keys=True, default=str) if data else None,
    }


def row_to_json(row: Row) -> dict[str, Any]:
    """A row as JSON-safe values (datetimes as ISO text), for the spool file."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def row_from_json(data: Mapping[str, Any]) -> Row:
    """A spool line's row back (datetimes parsed); check it with :func:`validate_row` before writing it."""
    row = dict(data)
    for key in _DATETIME_KEYS:
        value = row.get(key)
        if isinstance(value, str):
            try:
                row[key] = datetime.fromisoformat(value)
            except ValueError:
                pass  # left as text: validate_row refuses it
    return row


# --- validation: one check for live rows and replayed spool lines -----------------------------------

MAX_NANO_USD = 10**18
"""$1,000,000,000: the largest amount one row may hold (a guard against corrupt or forged spool lines)."""
MAX_COUNT = 2**53
"""Token and call counts above this are refused."""
MAX_JSON_TEXT = 16 * MAX_TEXT
"""The ``dimensions`` and ``data`` JSON columns (many values of up to ``MAX_TEXT`` each)."""
_SIGNED_MONEY = frozenset({"cache_savings_nano_usd"})
"""Savings are a difference of prices: the only money column that may be negative (bounded all the same)."""
_TABLES = {"call": s.calls, "task": s.tasks, "event": s.events}


_BOOL, _INT, _FLOAT, _TIME, _TEXT = range(5)


def _column_spec(column: sa.Column[Any]) -> tuple[str, int, bool, int, int]:
    """(name, type code, nullable, low, high): low/high bound an integer, or give a text's length."""
    t, name = column.type, column.name
    nullable = bool(column.nullable) and not column.primary_key
    if isinstance(t, sa.Boolean):
        return name, _BOOL, nullable, 0, 0
    if isinstance(t, sa.Integer):  # BigInteger included
        if name.endswith("_nano_usd"):
            return name, _INT, nullable, -MAX_NANO_USD if name in _SIGNED_MONEY else 0, MAX_NANO_USD
        return name, _INT, nullable, 0, MAX_COUNT
    if isinstance(t, sa.Float):
        return name, _FLOAT, nullable, 0, 0
    if isinstance(t, sa.DateTime):
        return name, _TIME, nullable, 0, 0
    length = getattr(t, "length", None)
    limit = length if length is not None else MAX_JSON_TEXT if name in ("dimensions", "data") else MAX_TEXT
    return name, _TEXT, nullable, 0, limit


_SPECS = {kind: tuple(_column_spec(c) for c in table.columns) for kind, table in _TABLES.items()}
_INF = float("inf")


def _value_error(code: int, low: int, high: int, value: Any) -> str | None:
    """Why ``value`` can't go in a column of this spec (a short reason naming no value), or None."""
    if code == _TEXT:
        if not isinstance(value, str):
            return "not text"
        if len(value) > high:
            return "too long"
        return "NUL character" if "\x00" in value else None
    if code == _INT:
        if not isinstance(value, int) or isinstance(value, bool):
            return "not an integer"
        if low <= value <= high:
            return None
        return "money out of range" if high == MAX_NANO_USD else "count out of range"
    if code == _BOOL:
        return None if isinstance(value, bool) else "not a boolean"
    if code == _TIME:
        return None if isinstance(value, datetime) and value.tzinfo is None else "not a naive UTC datetime"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "not a number"
    return None if 0 <= value < _INF else "out of range"


def validate_row(kind: str, row: object) -> str | None:
    """Check a row against its table before it is written, live or replayed from a spool file.

    Every column must be present (and no other key), of its column's type, within its size; money is a
    non-negative integer of nano-USD up to :data:`MAX_NANO_USD` (cache savings may be negative), token
    and call counts non-negative. Returns None for a good row, else a reason such as
    ``"cost_nano_usd: money out of range"``, which names the column, never the value: a bad row may hold
    anything, and the reason is logged.

    Example:
        >>> validate_row("event", {"event_id": "e1"})
        'missing column(s): 11'
    """
    specs = _SPECS.get(kind)
    if specs is None:
        return "unknown row kind"
    if not isinstance(row, dict):
        return "not an object"
    if len(row) != len(specs) or not all(spec[0] in row for spec in specs):
        missing = sum(1 for spec in specs if spec[0] not in row)
        return f"missing column(s): {missing}" if missing else f"unknown key(s): {len(row) - len(specs)}"
    for name, code, nullable, low, high in specs:
        value = row[name]
        if value is None:
            if nullable:
                continue
            return f"{name}: missing"
        error = _value_error(code, low, high, value)
        if error is not None:
            return f"{name}: {error}"
    return None


# --- transactions with retry -------------------------------------------------------------------------

_TRANSIENT_PG_CODES = ("40001", "40P01")  # serialization failure, deadlock detected


def is_transient(exc: BaseException) -> bool:
    """A conflict worth retrying at once (not an unreachable database)."""
    if isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower():
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(exc, DBAPIError) and code in _TRANSIENT_PG_CODES


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


def _insert(conn: Connection, table: sa.Table) -> Any:
    """``INSERT`` of the connection's dialect, so ``on_conflict_do_nothing`` is available."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _insert_new(conn: Connection, table: sa.Table, rows: Sequence[Row], key: str) -> set[str]:
    """Insert rows whose key is not there yet; returns the keys actually inserted."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        return _insert_new_postgresql(conn, table, rows, key)
    stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
    inserted: set[str] = set()
    for chunk_start in range(0, len(rows), 500):
        chunk = rows[chunk_start : chunk_start + 500]
        result = conn.execute(stmt, list(chunk))
        inserted.update(r[0] for r in result)
    return inserted


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
            _release(conn, [r["call_id"] for r in batch.calls])
        new_tasks = _insert_new(conn, s.tasks, batch.tasks, "task_id")
        _insert_new(conn, s.events, batch.events, "event_id")
        _apply_outcomes(conn, batch.outcome_updates, new_tasks)
        return [Touched(b, p) for (b, p) in sorted(touched)]

    result: list[Touched] = run_transaction(engine, work)
    return result


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
    stmt = _insert(conn, t).values(
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


def _release(conn: Connection, call_ids: Sequence[str]) -> None:
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


def _apply_outcomes(conn: Connection, updates: Sequence[Row], new_tasks: set[str]) -> None:
    """Apply late outcomes; a task written after its late outcome (another process) gets it now."""
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
    for task_id, row in latest.items():
        values: dict[str, Any] = {
            "outcome": row["outcome"],
            "outcome_reason": row.get("reason"),
            "outcome_updated_at": row["at"],
            "original_outcome": sa.func.coalesce(t.c.original_outcome, t.c.outcome),
        }
        if row.get("amount_nano_usd") is not None:
            values["rework_nano_usd"] = row["amount_nano_usd"]
        conn.execute(
            t.update()
            .where(t.c.task_id == task_id)
            .where(sa.or_(t.c.outcome_updated_at.is_(None), t.c.outcome_updated_at <= row["at"]))
            .values(**values)
        )


# --- budgets: reservations and state ---------------------------------------------------------------


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


@dataclass(frozen=True)
class Denied:
    """A reservation that would exceed ``budget``: the state at the moment it was refused."""

    budget: str
    state: BudgetState
    requested_nano_usd: int


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
    now = _naive_utc(at or datetime.now(UTC))
    with engine.connect() as conn:
        return [_state(conn, b, now) for b in budgets]


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
    now = _naive_utc(at)
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
        run_transaction(engine, lambda conn: _release(conn, list(call_ids)))


def outstanding_reservations(engine: Engine) -> int:
    """Number of reservations currently held (0 once every call in flight has been recorded)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(s.reservations)).scalar() or 0)


def claim_alert(engine: Engine, rule_id: str, period_start: datetime, threshold: str, data: Mapping[str, Any]) -> bool:
    """Claim the right to fire ``rule_id`` at ``threshold`` for a period: True exactly once, across processes."""

    def work(conn: Connection) -> bool:
        result = conn.execute(
            _insert(conn, s.alerts_fired)
            .values(
                rule_id=_clean(rule_id),
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
            stmt = _insert(conn, s.budgets).values(budget_id=b.name, definition=b.to_json(), updated_at=now)
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
