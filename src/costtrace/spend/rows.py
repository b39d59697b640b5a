"""Ledger rows: a finished call, task or task event as the dict its table takes, checked before it is written.

The writer turns each record into its row here (:func:`record_row`), on its thread or, with write-through,
on the app's; a row is written to the database by :func:`costtrace.spend.store.write_batch` or kept as a
spool line (:func:`row_to_json`, :func:`row_from_json`). Every row, built here or read back from a spool
file, passes :func:`validate_row` first.

Example:
    >>> row = event_row(event_id="e1", task_id=None, kind="note", at=datetime(2025, 1, 1, tzinfo=UTC))
    >>> row["at"], validate_row(EVENT, row)
    (datetime.datetime(2025, 1, 1, 0, 0), None)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from costtrace import semconv as sc
from costtrace._money import to_nano
from costtrace.spend import schema as s

if TYPE_CHECKING:
    from costtrace.records import CallRecord, TaskEvent, TaskSummary

Row = dict[str, Any]

CALL, TASK, EVENT = "call", "task", "event"
"""Row kinds: the table a row goes to (``costtrace_calls``, ``_tasks``, ``_events``), and a spool line's ``t``."""
KINDS = (CALL, TASK, EVENT)

MAX_TEXT = 65_536
"""Free-text fields (reasons, details) are cut to this many characters; names to 255."""
_DATETIME_KEYS = ("started_at", "ended_at", "at", "outcome_updated_at")


# --- rows ------------------------------------------------------------------------------------------


def clean_text(value: object, limit: int = 255) -> str | None:
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


def naive_utc(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


def _dimension_fields(dims: Mapping[str, str]) -> Row:
    return {
        "feature": clean_text(dims.get(sc.FEATURE)),
        "team": clean_text(dims.get(sc.TEAM)),
        "customer": clean_text(dims.get(sc.CUSTOMER)),
        "user_id": clean_text(dims.get(sc.USER)),
        "dimensions": json.dumps({clean_text(k): clean_text(v, MAX_TEXT) for k, v in dims.items()}, sort_keys=True)
        if dims
        else None,
    }


def call_row(record: CallRecord) -> Row:
    """The ``costtrace_calls`` row of a finished call."""
    u, c = record.usage, record.cost
    return {
        "call_id": record.call_id,
        "task_id": record.task_id,
        "task_name": clean_text(record.task_name),
        **_dimension_fields(record.dimensions),
        "provider": clean_text(record.provider) or "",
        "operation": clean_text(record.operation, 64) or "",
        "request_model": clean_text(record.request_model) or "",
        "response_model": clean_text(record.response_model),
        "attempt": record.attempt,
        "error_type": clean_text(record.error_type),
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
        "price_source": clean_text(c.price_source),
        "price_date": clean_text(c.price_date, 32),
        "price_model_id": clean_text(c.model_id),
        "unpriced_reason": clean_text(c.unpriced_reason, MAX_TEXT),
        "started_at": naive_utc(record.start_time),
        "duration_s": record.duration_s,
    }


def task_row(summary: TaskSummary, ended_at: datetime) -> Row:
    """The ``costtrace_tasks`` row of a finished task (``ended_at``: when it ended)."""
    ended = naive_utc(ended_at)
    duration = summary.duration_s or 0.0
    return {
        "task_id": summary.task_id,
        "name": clean_text(summary.name) or "",
        "parent_id": summary.parent_id,
        **_dimension_fields(summary.dimensions),
        "route": clean_text("->".join(summary.models), 1024) if summary.models else None,
        "final_model": clean_text(summary.final_model),
        "outcome": summary.outcome,
        "outcome_reason": clean_text(summary.outcome_reason, MAX_TEXT),
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
        "kind": clean_text(kind, 64) or "",
        "at": naive_utc(at),
        "attempt": attempt,
        "reason": clean_text(reason, MAX_TEXT),
        "details": clean_text(details, MAX_TEXT),
        "from_model": clean_text(from_model),
        "to_model": clean_text(to_model),
        "outcome": clean_text(outcome, 32),
        "amount_nano_usd": to_nano(amount_usd),
        "data": json.dumps(data, sort_keys=True, default=str) if data else None,
    }


def record_row(kind: str, obj: Any, ended_at: Any) -> Row:
    """The row of a record: a :class:`~costtrace.records.CallRecord` (``CALL``), a
    :class:`~costtrace.records.TaskSummary` that ended at ``ended_at`` (``TASK``) or a
    :class:`~costtrace.records.TaskEvent` (``EVENT``). Not validated: see :func:`validate_row`."""
    if kind == CALL:
        return call_row(obj)
    if kind == TASK:
        return task_row(obj, ended_at)
    event: TaskEvent = obj
    return event_row(
        event_id=event.event_id,
        task_id=event.task_id,
        kind=event.kind,
        at=event.at,
        attempt=event.attempt,
        reason=event.reason,
        details=event.details,
        from_model=event.from_model,
        to_model=event.to_model,
        outcome=event.outcome,
        amount_usd=event.amount_usd,
        data=dict(event.data) if event.data else None,
    )


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
    if "task_id" in row and "ended_at" in row and "route" in row:
        row.setdefault("final_model", None)  # spooled by a costtrace before schema 3: no final model known
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
_TABLES = {CALL: s.calls, TASK: s.tasks, EVENT: s.events}


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
