"""Rollups: per-period summaries of the ledger's tasks, so reports read thousands of rows, not millions.

What a rollup holds
    One *cell* per period and per combination of the task's ``feature``, ``name``, ``route``,
    ``final_model``, ``team`` and ``outcome`` that had tasks in it. Periods are UTC hours, days and
    months (``level``). A cell holds exact integer sums and counts (tasks, first-pass tasks, attempts,
    tokens, cost, wasted cost, cache savings, rework, escalations, calls, unpriced and estimated
    calls, timed tasks) and one :class:`~costtrace.spend.sketch.QuantileSketch` per per-task value
    (cost, input tokens, output tokens, attempts, wall time), so percentiles merge across cells within
    the sketch's stated relative error (see :data:`ACCURACY`). ``costtrace_rollup_periods`` lists the
    periods whose cells were built. ``customer``, ``user_id`` and custom dimensions are not in
    the cells (one customer per cell would make the cells as many as the tasks): reports that filter
    or group by them read the raw rows.

How cells stay exact: dirty marks
    Every transaction that inserts a task row, or restates a task's outcome (``record_outcome``, even
    days later), also marks the task's hour, day and month *dirty* in ``costtrace_rollup_marks`` (a
    random token per mark, replaced at every write). :func:`refresh` recomputes a dirty hour from its
    raw task rows, a day from its 24 clean hours, a month from its clean days, reading the marks'
    tokens and then the rows in a read transaction that does not block writers; then, in a short write
    transaction, it replaces the cells of the periods whose token is still the one it read and deletes
    those marks: a write that raced the refresh keeps its mark. A reader trusts a cell only when its
    period was built and has no mark in the reader's snapshot, and reads the raw rows of the other
    periods instead (:func:`read_groups`), so a report always equals a recomputation from the raw rows,
    whatever the refresh has reached. Rows inserted around the ledger's API (a bulk import in SQL) make no mark: a
    period never built is read raw, but a built one goes stale; run ``costtrace ledger rebuild`` after
    such an import.

Who refreshes
    The app's ledger writer, in a thread of its own (``costtrace-ledger-rollups``), every
    :data:`REFRESH_INTERVAL_S` seconds, :data:`REFRESH_HOURS_PER_ROUND` hours at a time, only the hours
    that ended :data:`SETTLE_S` seconds ago or more (the open hour stays dirty and is read raw);
    ``costtrace ledger rebuild`` (all cells, from scratch, with a progress bar) and ``costtrace ledger
    refresh`` (every dirty period). Reports never write.

Example:
    >>> from costtrace.spend.engine import make_engine
    >>> from costtrace.spend.schema import migrate
    >>> engine = make_engine("sqlite://"); _ = migrate(engine)
    >>> refresh(engine).hours
    0
"""

from __future__ import annotations

import calendar
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from costtrace.spend import schema as s
from costtrace.spend.engine import read_connection, upsert_insert
from costtrace.spend.sketch import MAX_VALUE, MIN_POSITIVE, QuantileSketch

__all__ = [
    "ACCURACY",
    "CELL_KEYS",
    "LEVELS",
    "MODEL_KEYS",
    "MODEL_SUMS",
    "REFRESH_HOURS_PER_ROUND",
    "REFRESH_INTERVAL_S",
    "SETTLE_S",
    "SKETCHES",
    "SUMS",
    "Cell",
    "Refreshed",
    "all_level",
    "dirty_count",
    "mark_dirty",
    "period_marks",
    "read_groups",
    "read_model_groups",
    "rebuild",
    "refresh",
]

LEVELS = ("hour", "day", "month")
CELL_KEYS = ("feature", "name", "route", "final_model", "team", "outcome")
"""The task columns a cell is keyed by (besides its period)."""
SUMS = s.ROLLUP_SUMS
"""The exact integer columns of a cell, in order."""
SKETCHES = s.ROLLUP_SKETCHES
"""The per-task values a cell keeps a sketch of: cost (nano-USD), input and output tokens, attempts and
latency (seconds, timed tasks only)."""
ACCURACY = 0.005
"""The relative accuracy of the cells' sketches: 0.5%, so that a percentile stays within 1% of the exact
nearest-rank value after reports round it (to a whole token, nano-USD or attempt: at most 0.5 away, and
values up to 100 have a bucket of their own; seconds to 4 significant digits)."""
REFRESH_INTERVAL_S = 30.0
"""The ledger writer refreshes dirty cells at most this often."""
REFRESH_HOURS_PER_ROUND = 48
"""... and at most this many dirty hours per round, so a migrated ledger fills in the background a
part at a time."""
SETTLE_S = 120.0
"""The ledger writer's refresh leaves an hour dirty until this many seconds after it ended (reports read
its raw rows meanwhile, exactly). An open hour is dirty at every batch: recomputing it every round made
the refresh's work grow with the hour (quadratic) and the writer fall behind. A settled hour is
recomputed about once, the delay letting the records queued at its end land first (a later write just
marks it again)."""

ProgressCallback = Callable[[int, int], None]

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_TASK_COLUMNS = (
    "ended_at",
    *CELL_KEYS,
    "first_pass",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_nano_usd",
    "wasted_nano_usd",
    "cache_savings_nano_usd",
    "rework_nano_usd",
    "escalations",
    "llm_calls",
    "unpriced_calls",
    "estimated_calls",
    "duration_s",
)


# --------------------------------------------------------------------------------------------------
# Periods


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def month_of(at: datetime) -> datetime:
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_end(level: str, start: datetime) -> datetime:
    """The first instant after the period that starts at ``start``."""
    if level == "hour":
        return start + _HOUR
    if level == "day":
        return start + _DAY
    days = calendar.monthrange(start.year, start.month)[1]
    return start + timedelta(days=days)


def all_level(level: str) -> str:
    """The level name of a period's per-outcome total cells (``"day:all"``)."""
    return f"{level}:all"


def period_marks(at: datetime) -> list[tuple[str, datetime]]:
    """The (level, start) of the hour, day and month that contain ``at`` (naive UTC)."""
    return [("hour", hour_of(at)), ("day", day_of(at)), ("month", month_of(at))]


# --------------------------------------------------------------------------------------------------
# Cells


@dataclass
class Cell:
    """The figures of a set of tasks: exact sums (:data:`SUMS`) and one sketch per :data:`SKETCHES`."""

    sums: list[int] = field(default_factory=lambda: [0] * len(SUMS))
    sketches: dict[str, QuantileSketch] = field(default_factory=lambda: {k: QuantileSketch(ACCURACY) for k in SKETCHES})

    def add_task(self, row: Mapping[Any, Any]) -> None:
        """Add one ``costtrace_tasks`` row."""
        sums = self.sums
        cost = int(row["cost_nano_usd"])
        attempts = int(row["attempts"])
        escalated = int(row["escalations"]) > 0
        duration = row["duration_s"]
        sums[0] += 1
        sums[1] += 1 if row["first_pass"] else 0
        sums[2] += attempts
        sums[3] += int(row["input_tokens"])
        sums[4] += int(row["output_tokens"])
        sums[5] += cost
        sums[6] += int(row["wasted_nano_usd"])
        sums[7] += int(row["cache_savings_nano_usd"])
        sums[8] += int(row["rework_nano_usd"] or 0)
        sums[9] += 1 if escalated else 0
        sums[10] += cost if escalated else 0
        sums[11] += int(row["llm_calls"])
        sums[12] += int(row["unpriced_calls"])
        sums[13] += int(row["estimated_calls"])
        sketches = self.sketches
        sketches["cost"].add(max(cost, 0))
        sketches["input_tokens"].add(max(int(row["input_tokens"]), 0))
        sketches["output_tokens"].add(max(int(row["output_tokens"]), 0))
        sketches["attempts"].add(max(attempts, 0))
        if duration is not None:
            sums[14] += 1
            sketches["latency"].add(_sketchable_seconds(float(duration)))

    def merge(self, other: Cell) -> None:
        self.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
        for name, sketch in other.sketches.items():
            self.sketches[name].merge(sketch)

    def merge_row(self, row: Mapping[Any, Any]) -> None:
        """Add a stored ``costtrace_rollup_cells`` row."""
        self.sums = [a + int(row[name]) for a, name in zip(self.sums, SUMS, strict=True)]
        for name in SKETCHES:
            data = row[f"sketch_{name}"]
            if data:
                self.sketches[name].merge(QuantileSketch.from_bytes(bytes(data)))

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, sketches_too: bool = True) -> Cell:
        """The cell of a stored row: ``Cell().merge_row(row)``, without merging each sketch into an empty one.

        ``sketches_too=False``: the sums only (the sketches stay empty, none is decoded).
        """
        if not sketches_too:
            return cls(sums=[int(row[name]) for name in SUMS])
        sketches: dict[str, QuantileSketch] = {}
        for name in SKETCHES:
            data = row[f"sketch_{name}"]
            sketch = QuantileSketch.from_bytes(bytes(data)) if data else None
            if sketch is None or sketch.min is None or sketch.relative_accuracy != ACCURACY:
                empty = QuantileSketch(ACCURACY)
                if sketch is not None:
                    empty.merge(sketch)  # another accuracy raises, as in merge_row
                sketch = empty
            sketches[name] = sketch
        return cls(sums=[int(row[name]) for name in SUMS], sketches=sketches)

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = dict(zip(SUMS, self.sums, strict=True))
        for name, sketch in self.sketches.items():
            row[f"sketch_{name}"] = sketch.to_bytes() if sketch.count else None
        return row


def _sketchable_seconds(seconds: float) -> float:
    """A duration the sketches take (0, or :data:`~costtrace.spend.sketch.MIN_POSITIVE` ..
    :data:`~costtrace.spend.sketch.MAX_VALUE`). A task row may hold any finite duration >= 0 (a spool
    line, an import): one outside that range is clamped to it, so it fails neither a report nor the
    refresh of every later hour; its task still counts, only its own percentile is off."""
    if seconds < MIN_POSITIVE:
        return 0.0
    return min(seconds, MAX_VALUE)


CellKey = tuple[Any, ...]
"""(feature, name, route, final_model, team, outcome)."""


def _cells_from_tasks(
    rows: Iterable[Mapping[Any, Any]], level_of: Callable[[datetime], datetime]
) -> dict[tuple[datetime, CellKey], Cell]:
    cells: dict[tuple[datetime, CellKey], Cell] = {}
    for row in rows:
        key = (level_of(row["ended_at"]), tuple(row[k] for k in CELL_KEYS))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell()
        cell.add_task(row)
    return cells


def _task_select(conditions: Sequence[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    t = s.tasks
    return sa.select(*(t.c[name] for name in _TASK_COLUMNS)).where(*conditions)


def _raw_cells(
    conn: Connection, start: datetime, end: datetime, conditions: Sequence[sa.ColumnElement[bool]] = ()
) -> dict[tuple[datetime, CellKey], Cell]:
    """Hour cells computed from the raw task rows that ended in ``[start, end)``."""
    t = s.tasks
    query = _task_select([t.c.ended_at >= start, t.c.ended_at < end, *conditions])
    return _cells_from_tasks(conn.execute(query).mappings(), hour_of)


MODEL_KEYS = (*CELL_KEYS, "provider", "request_model")
"""A model cell's key: its tasks' cell key, then the (provider, requested model) of their calls."""
MODEL_SUMS = s.ROLLUP_MODEL_SUMS
_M = {name: i for i, name in enumerate(MODEL_SUMS)}
_CALL_NANOS = ("input_nano_usd", "cache_read_nano_usd", "cache_write_nano_usd", "output_nano_usd",
               "reasoning_nano_usd", "other_nano_usd")  # fmt: skip


def _raw_model_cells(
    conn: Connection, start: datetime, end: datetime, conditions: Sequence[sa.ColumnElement[bool]] = ()
) -> dict[tuple[datetime, tuple[Any, ...]], list[int]]:
    """Hour model cells (sums per :data:`MODEL_SUMS`) of the calls of the tasks that ended in ``[start, end)``."""
    t, c = s.tasks, s.calls
    query = (
        sa.select(
            t.c.ended_at,
            t.c.task_id,
            *(t.c[k] for k in CELL_KEYS),
            t.c.attempts.label("task_attempts"),
            c.c.provider,
            c.c.request_model,
            c.c.attempt,
            c.c.usage_source,
            c.c.cost_nano_usd,
            *(c.c[name] for name in s.CALL_TOKENS),
            *(c.c[name] for name in _CALL_NANOS),
        )
        .select_from(c.join(t, c.c.task_id == t.c.task_id))
        .where(t.c.ended_at >= start, t.c.ended_at < end, *conditions)
        .order_by(t.c.task_id)  # a task's calls arrive together: one task in memory at a time, not the hour's calls
    )
    cells: dict[tuple[datetime, tuple[Any, ...]], list[int]] = {}
    width = len(MODEL_SUMS)
    for _task_id, rows in itertools.groupby(conn.execute(query).mappings(), key=lambda row: row["task_id"]):
        calls = list(rows)
        first = calls[0]
        hour = hour_of(first["ended_at"])
        base = tuple(first[k] for k in CELL_KEYS)
        success = first["outcome"] == "success"
        numbered = [call["attempt"] for call in calls if call["attempt"] is not None]
        last = max(numbered) if numbered else None
        counted: set[tuple[str, int]] = set()
        # An attempt on a model counts once, in the cell of the first provider (by name) among its calls:
        # the same cells whatever order the database returns the rows in.
        for call in sorted(calls, key=lambda call: call["provider"]):
            key = (hour, (*base, call["provider"], call["request_model"]))
            sums = cells.get(key)
            if sums is None:
                sums = cells[key] = [0] * width
            attempt = call["attempt"]
            unknown = 1 if call["usage_source"] == "unknown" else 0
            sums[_M["calls"]] += 1
            sums[_M["unpriced_calls"]] += 1 if call["cost_nano_usd"] is None else 0
            sums[_M["unknown_usage_calls"]] += unknown
            uncached = (
                int(call["input_tokens"]) - int(call["cache_read_input_tokens"]) - int(call["cache_write_input_tokens"])
            )
            sums[_M["uncached_input_calls"]] += 1 if uncached > 0 else 0
            sums[_M["cost_nano_usd"]] += int(call["cost_nano_usd"] or 0)
            for name in s.CALL_TOKENS:
                sums[_M[name]] += int(call[name])
            for name in _CALL_NANOS:
                sums[_M[name]] += int(call[name])
            if attempt == 1:
                sums[_M["first_calls"]] += 1
                sums[_M["first_unknown_usage_calls"]] += unknown
                for name in s.CALL_TOKENS:
                    sums[_M[f"first_{name}"]] += int(call[name])
            if attempt is not None and (call["request_model"], attempt) not in counted:
                counted.add((call["request_model"], attempt))
                sums[_M["attempts"]] += 1
                sums[_M["failed_attempts"]] += 0 if (success and attempt == last) else 1
            if success and attempt is not None and attempt == first["task_attempts"]:
                sums[_M["useful_tokens"]] += int(call["input_tokens"]) + int(call["output_tokens"])
    return cells


# --------------------------------------------------------------------------------------------------
# Dirty marks (written by the ledger's write transactions)


def mark_dirty(conn: Connection, ended_ats: Iterable[datetime]) -> None:
    """Mark the hour, day and month of each time dirty, with a fresh token (inside the writer's transaction)."""
    periods = sorted({mark for at in ended_ats for mark in period_marks(at)})
    if not periods:
        return
    m = s.rollup_marks
    stmt = upsert_insert(conn, m)
    stmt = stmt.on_conflict_do_update(index_elements=[m.c.level, m.c.period_start], set_={"token": stmt.excluded.token})
    conn.execute(
        stmt,
        [{"level": level, "period_start": start, "token": random.getrandbits(62)} for level, start in periods],
    )


def _marks(conn: Connection, level: str | None = None) -> dict[tuple[str, datetime], int]:
    m = s.rollup_marks
    query = sa.select(m.c.level, m.c.period_start, m.c.token)
    if level is not None:
        query = query.where(m.c.level == level)
    return {(row.level, row.period_start): int(row.token) for row in conn.execute(query)}


def dirty_count(engine: Engine) -> dict[str, int]:
    """How many periods of each level wait for a refresh, e.g. ``{"hour": 2, "day": 1, "month": 1}``."""
    m = s.rollup_marks
    with engine.connect() as conn:
        rows = conn.execute(sa.select(m.c.level, sa.func.count()).group_by(m.c.level)).all()
    counts = dict.fromkeys(LEVELS, 0)
    counts.update({str(level): int(n) for level, n in rows})
    return counts


# --------------------------------------------------------------------------------------------------
# Refresh and rebuild


@dataclass(frozen=True)
class Refreshed:
    """What :func:`refresh` or :func:`rebuild` did."""

    hours: int
    days: int
    months: int
    cells: int
    """Cells written (all levels)."""
    still_dirty: int
    """Periods still marked dirty afterwards (a write raced the refresh, or ``max_hours`` was reached)."""


def _lock(conn: Connection) -> None:
    """One refresher at a time (on SQLite the transaction's write lock already serialises them)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7243010152)"))  # 'costtrace' rollup lock


def _replace(
    conn: Connection,
    level: str,
    starts: Sequence[datetime],
    cells: Mapping[tuple[datetime, CellKey], Cell],
    models: Mapping[tuple[datetime, tuple[Any, ...]], list[int]],
    tokens: Mapping[tuple[str, datetime], int],
) -> int:
    """Replace the cells of these periods and clear their marks if still the ones read."""
    r, rm, m, p = s.rollup_cells, s.rollup_models, s.rollup_marks, s.rollup_periods
    for table in (r, rm, p):
        conn.execute(table.delete().where(table.c.level == level, table.c.period_start.in_(list(starts))))
    conn.execute(r.delete().where(r.c.level == all_level(level), r.c.period_start.in_(list(starts))))
    conn.execute(p.insert(), [{"level": level, "period_start": start} for start in starts])
    rows = [
        {"level": level, "period_start": start, **dict(zip(CELL_KEYS, key, strict=True)), **cell.to_row()}
        for (start, key), cell in cells.items()
    ]
    # The period's cells merged per outcome (level "<level>:all", other keys NULL): what a report with no
    # key but time reads, one cell per outcome instead of one per combination of keys.
    totals: dict[tuple[datetime, Any], Cell] = {}
    for (start, key), cell in cells.items():
        outcome = key[CELL_KEYS.index("outcome")]
        total = totals.get((start, outcome))
        if total is None:
            total = totals[(start, outcome)] = Cell()
        total.merge(cell)
    rows += [
        {
            "level": all_level(level),
            "period_start": start,
            **dict.fromkeys(CELL_KEYS),
            "outcome": outcome,
            **total.to_row(),
        }
        for (start, outcome), total in totals.items()
    ]
    model_rows = [
        {
            "level": level,
            "period_start": start,
            **dict(zip(MODEL_KEYS, key, strict=True)),
            **dict(zip(MODEL_SUMS, sums, strict=True)),
        }
        for (start, key), sums in models.items()
    ]
    for table, batch in ((r, rows), (rm, model_rows)):
        for i in range(0, len(batch), 500):
            conn.execute(table.insert(), batch[i : i + 500])
    for start in starts:
        token = tokens.get((level, start))
        if token is not None:
            conn.execute(m.delete().where(m.c.level == level, m.c.period_start == start, m.c.token == token))
    return len(rows) + len(model_rows)


def _stored_cells(
    conn: Connection, level: str, start: datetime, end: datetime
) -> Iterator[tuple[datetime, CellKey, Mapping[Any, Any]]]:
    r = s.rollup_cells
    query = sa.select(r).where(r.c.level == level, r.c.period_start >= start, r.c.period_start < end)
    for row in conn.execute(query).mappings():
        yield row["period_start"], tuple(row[k] for k in CELL_KEYS), row


@dataclass
class _Computed:
    """A refresh's compute phase for some periods of one level: the marks' tokens it read (before the
    rows), and the cells it built from what it read."""

    level: str
    starts: list[datetime]
    tokens: dict[tuple[str, datetime], int]
    cells: dict[tuple[datetime, CellKey], Cell]
    models: dict[tuple[datetime, tuple[Any, ...]], list[int]]


def _compute_hours(conn: Connection, hours: Sequence[datetime]) -> _Computed:
    """Dirty hours (all in one day) recomputed from their raw task rows, the marks' tokens read first."""
    wanted = set(hours)
    tokens = {k: v for k, v in _marks(conn, "hour").items() if k[1] in wanted}
    cells = {k: v for k, v in _raw_cells(conn, min(hours), max(hours) + _HOUR).items() if k[0] in wanted}
    models = {k: v for k, v in _raw_model_cells(conn, min(hours), max(hours) + _HOUR).items() if k[0] in wanted}
    return _Computed("hour", list(hours), tokens, cells, models)


def _compute_parent(conn: Connection, level: str, start: datetime) -> _Computed | None:
    """A day recomputed from its stored hours, or a month from its days; None while a child is dirty."""
    child = "hour" if level == "day" else "day"
    end = period_end(level, start)
    tokens = {k: v for k, v in _marks(conn, level).items() if k[1] == start}
    m = s.rollup_marks
    dirty_child = conn.execute(
        sa.select(sa.func.count()).where(m.c.level == child, m.c.period_start >= start, m.c.period_start < end)
    ).scalar_one()
    if dirty_child:
        return None
    cells: dict[tuple[datetime, CellKey], Cell] = {}
    for _period, key, row in _stored_cells(conn, child, start, end):
        cell = cells.get((start, key))
        if cell is None:
            cell = cells[(start, key)] = Cell()
        cell.merge_row(row)
    models: dict[tuple[datetime, tuple[Any, ...]], list[int]] = {}
    rm = s.rollup_models
    query = sa.select(rm).where(rm.c.level == child, rm.c.period_start >= start, rm.c.period_start < end)
    for row in conn.execute(query).mappings():
        mkey = (start, tuple(row[k] for k in MODEL_KEYS))
        sums = models.get(mkey)
        if sums is None:
            sums = models[mkey] = [0] * len(MODEL_SUMS)
        for i, name in enumerate(MODEL_SUMS):
            sums[i] += int(row[name])
    return _Computed(level, [start], tokens, cells, models)


def _store(conn: Connection, computed: _Computed) -> int | None:
    """The write phase: replace the cells of the periods whose mark still holds the token the compute
    phase read (no write touched them since), and clear those marks. A period whose token changed (a
    write raced) or whose mark is gone (another refresher stored it from its own, maybe newer, read) is
    left as it is: its mark stays, or its newer cells do. Returns the cells written, None if none was."""
    _lock(conn)
    level = computed.level
    current = _marks(conn, level)
    unchanged = [
        start
        for start in computed.starts
        if (token := computed.tokens.get((level, start))) is not None and current.get((level, start)) == token
    ]
    if not unchanged:
        return None
    keep = set(unchanged)
    cells = {k: v for k, v in computed.cells.items() if k[0] in keep}
    models = {k: v for k, v in computed.models.items() if k[0] in keep}
    return _replace(conn, level, unchanged, cells, models, computed.tokens)


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


def refresh(
    engine: Engine,
    *,
    max_hours: int | None = None,
    progress: ProgressCallback | None = None,
    settled_before: datetime | None = None,
    read_engine: Engine | None = None,
) -> Refreshed:
    """Recompute dirty periods (hours first, then their days and months); safe from many processes.

    Each batch of periods is computed in a read transaction that does not block the ledger's writers
    (:func:`~costtrace.spend.engine.read_connection`: the marks' tokens, then the rows), then stored in
    a short write transaction that clears a mark only if its token is unchanged: a write that landed
    in between keeps its mark, and the next refresh recomputes that period.

    Args:
        engine: The ledger's (writable) engine.
        max_hours: Recompute at most this many dirty hours (oldest first); None for all.
        progress: ``progress(done, total)`` in hours, called with 0 first.
        settled_before: Recompute only the dirty hours that ended by then (aware, or naive UTC); the
            others stay dirty (reports read their raw rows). None: every dirty hour. The ledger
            writer passes now minus :data:`SETTLE_S`, so that the open hour is not recomputed every
            round.
        read_engine: An engine of the same database for the compute phase (the ledger writer's is
            read-only, with a connection of its own); default: ``engine``.

    Example:
        >>> refresh(engine).still_dirty          # doctest: +SKIP
        0
        >>> refresh(engine, settled_before=datetime.now(UTC) - timedelta(seconds=SETTLE_S))  # doctest: +SKIP
    """
    from costtrace.spend.store import run_transaction

    reader = engine if read_engine is None else read_engine
    with read_connection(reader) as conn:
        marks = _marks(conn)
    hours = sorted(start for level, start in marks if level == "hour")
    if settled_before is not None:
        settled = _naive_utc(settled_before)
        hours = [hour for hour in hours if hour + _HOUR <= settled]
    if max_hours is not None:
        hours = hours[:max_hours]
    by_day: dict[datetime, list[datetime]] = {}
    for hour in hours:
        by_day.setdefault(day_of(hour), []).append(hour)
    total, done, cells = len(hours), 0, 0
    if progress is not None:
        progress(0, total)
    for day_hours in by_day.values():
        with read_connection(reader) as conn:
            computed = _compute_hours(conn, day_hours)
        cells += run_transaction(engine, lambda conn, computed=computed: _store(conn, computed)) or 0
        done += len(day_hours)
        if progress is not None:
            progress(done, total)
    counts = {"day": 0, "month": 0}
    for level in ("day", "month"):
        with read_connection(reader) as conn:
            starts = sorted(start for (lv, start) in _marks(conn, level))
        for start in starts:
            with read_connection(reader) as conn:
                parent = _compute_parent(conn, level, start)
            if parent is None:
                continue
            written = run_transaction(engine, lambda conn, parent=parent: _store(conn, parent))
            if written is not None:
                counts[level] += 1
                cells += written
    with read_connection(reader) as conn:
        still = int(conn.execute(sa.select(sa.func.count()).select_from(s.rollup_marks)).scalar_one())
    return Refreshed(hours=total, days=counts["day"], months=counts["month"], cells=cells, still_dirty=still)


def mark_all(conn: Connection) -> int:
    """Mark every period that has tasks dirty (the migration and :func:`rebuild`); returns the hours marked."""
    t = s.tasks
    hour_text = _hour_text(t.c.ended_at, conn.dialect.name)
    hours = [datetime.strptime(h, "%Y-%m-%dT%H") for (h,) in conn.execute(sa.select(hour_text).distinct())]
    for i in range(0, len(hours), 1000):
        mark_dirty(conn, hours[i : i + 1000])
    return len(hours)


def _hour_text(at: sa.ColumnElement[datetime], dialect: str) -> sa.ColumnElement[str]:
    if dialect == "postgresql":
        return sa.func.to_char(at, 'YYYY-MM-DD"T"HH24', type_=sa.String)
    return sa.func.strftime("%Y-%m-%dT%H", at, type_=sa.String)


def rebuild(engine: Engine, *, progress: ProgressCallback | None = None) -> Refreshed:
    """Drop every cell and rebuild them all from the raw rows (repair, or after a bulk import).

    Reports stay exact meanwhile: every period is dirty until rebuilt, so they read raw rows there.

    Example:
        >>> rebuild(engine, progress=lambda done, total: None).still_dirty     # doctest: +SKIP
        0
    """
    from costtrace.spend.store import run_transaction

    def reset(conn: Connection) -> int:
        _lock(conn)
        conn.execute(s.rollup_cells.delete())
        conn.execute(s.rollup_models.delete())
        conn.execute(s.rollup_periods.delete())
        conn.execute(s.rollup_marks.delete())
        return mark_all(conn)

    run_transaction(engine, reset)
    return refresh(engine, progress=progress)


# --------------------------------------------------------------------------------------------------
# Reading


GRAIN = {"hour": "hour", "day": "day", "week": "day", "month": "month", None: "month"}
"""The coarsest cell level a time key can use (weeks straddle months, so they are built from days)."""


@dataclass
class Group:
    """The merged figures of one report group, by outcome class."""

    all: Cell = field(default_factory=Cell)
    success: Cell = field(default_factory=Cell)
    failed: Cell = field(default_factory=Cell)


@dataclass(frozen=True)
class Plan:
    """Which periods a read takes from which cells, and which raw ranges it reads instead."""

    cells: dict[str, list[datetime]]
    raw: list[tuple[datetime, datetime]]


def plan(start: datetime, end: datetime, grain: str, usable: set[tuple[str, datetime]]) -> Plan:
    """Cover ``[start, end)`` with the coarsest usable cells the grain allows, raw ranges elsewhere."""
    allowed = LEVELS[: LEVELS.index(grain) + 1]
    cells: dict[str, list[datetime]] = {level: [] for level in LEVELS}
    raw: list[tuple[datetime, datetime]] = []

    def add_raw(a: datetime, b: datetime) -> None:
        if raw and raw[-1][1] == a:
            raw[-1] = (raw[-1][0], b)
        else:
            raw.append((a, b))

    def cover(level: str, a: datetime, b: datetime) -> None:
        """Cover [a, b), which lies inside one period of ``level``'s parent (or is the whole range)."""
        first = {"hour": hour_of, "day": day_of, "month": month_of}[level](a)
        at = first
        while at < b:
            nxt = period_end(level, at)
            inside = at >= a and nxt <= b
            if inside and level in allowed and (level, at) in usable:
                cells[level].append(at)
            elif level == "hour":
                add_raw(max(at, a), min(nxt, b))
            else:
                cover("day" if level == "month" else "hour", max(at, a), min(nxt, b))
            at = nxt

    cover("month", start, end)
    return Plan(cells, raw)


def _read_plan(conn: Connection, start: datetime, end: datetime, grain: str) -> Plan:
    """The plan of a read, from the periods built and not marked in the reader's snapshot."""
    periods = s.rollup_periods
    built = conn.execute(
        sa.select(periods.c.level, periods.c.period_start).where(
            periods.c.period_start >= month_of(start), periods.c.period_start < end
        )
    )
    usable = {(level, at) for level, at in built} - set(_marks(conn))
    return plan(start, end, grain, usable)


def read_model_groups(
    conn: Connection,
    *,
    start: datetime,
    end: datetime,
    group_of: Callable[[datetime, Mapping[str, Any]], tuple[Any, ...] | None],
    key_filters: Mapping[str, str],
    grain: str = "month",
) -> dict[tuple[Any, ...], dict[str, int]]:
    """Sum model cells (and raw rows where cells can't be used) into groups: ``{group: {sum name: value}}``.

    ``group_of(period_start, keys)`` gives a cell's group from its period and its :data:`MODEL_KEYS`
    (None: leave the cell out); ``key_filters`` restricts :data:`CELL_KEYS` columns to exact values.
    """
    p = _read_plan(conn, start, end, grain)
    groups: dict[tuple[Any, ...], list[int]] = {}

    def put(period: datetime, keys: Mapping[str, Any], sums: Sequence[int]) -> None:
        group = group_of(period, keys)
        if group is None:
            return
        total = groups.get(group)
        if total is None:
            total = groups[group] = [0] * len(MODEL_SUMS)
        for i, value in enumerate(sums):
            total[i] += value

    rm = s.rollup_models
    for level, starts in p.cells.items():
        runs = _runs(level, starts)  # only the periods the plan takes (see read_groups)
        for i in range(0, len(runs), 100):
            query = sa.select(rm).where(
                rm.c.level == level,
                sa.or_(*(sa.and_(rm.c.period_start >= a, rm.c.period_start < b) for a, b in runs[i : i + 100])),
                *(rm.c[name] == value for name, value in key_filters.items()),
            )
            for row in conn.execute(query).mappings():
                put(row["period_start"], {k: row[k] for k in MODEL_KEYS}, [int(row[name]) for name in MODEL_SUMS])
    t = s.tasks
    conditions = [t.c[name] == value for name, value in key_filters.items()]
    for a, b in p.raw:
        for (hour, key), sums in _raw_model_cells(conn, a, b, conditions).items():
            put(hour, dict(zip(MODEL_KEYS, key, strict=True)), sums)
    return {group: dict(zip(MODEL_SUMS, sums, strict=True)) for group, sums in groups.items()}


def _runs(level: str, starts: Sequence[datetime]) -> list[tuple[datetime, datetime]]:
    """Consecutive periods of ``level`` (``starts`` ascending) as [start, end) ranges."""
    runs: list[tuple[datetime, datetime]] = []
    for at in starts:
        end = period_end(level, at)
        if runs and runs[-1][1] == at:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((at, end))
    return runs


def read_groups(
    conn: Connection,
    *,
    start: datetime,
    end: datetime,
    grain: str,
    group_of: Callable[[datetime, Mapping[str, Any]], tuple[Any, ...]],
    key_filters: Mapping[str, str],
    failed_outcomes: Sequence[str],
    sketches_too: bool = True,
    totals: bool = False,
) -> dict[tuple[Any, ...], Group]:
    """Merge cells (and raw rows of dirty or partial periods) into report groups.

    ``group_of(period_start, keys)`` gives a cell's group from its period and its key columns;
    ``key_filters`` restricts :data:`CELL_KEYS` columns to exact values; ``sketches_too=False`` merges
    the sums only (no sketch is decoded: about 5 times faster per cell); ``totals=True`` reads each
    period's per-outcome totals instead of its cells (for groups by time alone, with no key filter).
    """
    p = _read_plan(conn, start, end, grain)
    # Each cell is merged once, into its group's success, failed or other part; a group's ``all`` is the
    # merge of its parts at the end (merging is exact in any order: the same sums and sketches as merging
    # every cell into ``all`` too, for half the merges). A part starts as its first cell (fresh objects).
    parts: dict[tuple[Any, ...], list[Cell | None]] = {}

    def put(period: datetime, keys: Mapping[str, Any], cell: Cell) -> None:
        group = group_of(period, keys)
        slots = parts.get(group)
        if slots is None:
            slots = parts[group] = [None, None, None]
        outcome = keys["outcome"]
        i = 0 if outcome == "success" else 1 if outcome in failed_outcomes else 2
        part = slots[i]
        if part is None:
            slots[i] = cell
        else:
            part.merge(cell)

    r = s.rollup_cells
    for level, starts in p.cells.items():
        # Only the runs of periods the plan takes at this level: one range from the first to the last
        # would read every finer cell of the window (the hours of days and months read whole) too.
        runs = _runs(level, starts)
        for i in range(0, len(runs), 100):
            query = sa.select(r).where(
                r.c.level == (all_level(level) if totals else level),
                sa.or_(*(sa.and_(r.c.period_start >= a, r.c.period_start < b) for a, b in runs[i : i + 100])),
                *(r.c[name] == value for name, value in key_filters.items()),
            )
            for row in conn.execute(query).mappings():
                keys = {name: row[name] for name in CELL_KEYS}
                put(row["period_start"], keys, Cell.from_row(dict(row), sketches_too=sketches_too))
    t = s.tasks
    conditions = [t.c[name] == value for name, value in key_filters.items()]
    for a, b in p.raw:
        for (hour, key), cell in _raw_cells(conn, a, b, conditions).items():
            put(hour, dict(zip(CELL_KEYS, key, strict=True)), cell)
    groups: dict[tuple[Any, ...], Group] = {}
    for group, (success, failed, other) in parts.items():
        g = groups[group] = Group(success=success or Cell(), failed=failed or Cell())
        for part in (success, failed, other):
            if part is not None:
                g.all.merge(part)
    return groups
