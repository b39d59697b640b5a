"""The ledger's tables (SQLAlchemy Core) and their migrations.

One row per task (``costtrace_tasks``), per LLM call (``costtrace_calls``) and per lineage or outcome
event (``costtrace_events``); budget state lives in ``costtrace_budget_spend`` (spend and reservations
per budget and period), ``costtrace_reservations`` (in-flight worst-case holds with a lease),
``costtrace_budget_locks`` (one row per budget, locked while reserving) and ``costtrace_alerts_fired``
(each threshold fires once per period, across processes).

Money is stored as exact integers of nano-USD (1e-9 USD, columns ``*_nano_usd``): SQLite has no exact
decimal type, and integer sums are exact in every database. Times are naive UTC ``DATETIME``.

Migrations: ``costtrace_schema_version`` holds the applied version. An empty database gets the current
tables at once; an older one gets every newer step of ``_MIGRATIONS`` in order. Both happen inside one
transaction, serialised across processes (PostgreSQL advisory lock, SQLite write lock), so many
processes starting at once migrate exactly once. A new schema version changes the tables above and
adds its upgrade step to ``_MIGRATIONS``; nothing else changes.

- version 1: the first schema;
- version 2: ``costtrace_tasks.route``, the models a task called, in order of first use;
- version 3: ``costtrace_tasks.final_model`` (the model of the task's last call), and the rollups
  (:mod:`costtrace.spend.rollups`): ``costtrace_rollup_cells``, ``costtrace_rollup_models``,
  ``costtrace_rollup_periods`` and ``costtrace_rollup_marks``. The upgrade
  marks every period that has tasks dirty, so reports stay exact (they read raw rows there) until the
  cells are built: by the app's ledger writer in the background, or at once by ``costtrace ledger
  migrate`` (with a progress bar). Tasks written before version 3 have no final model (NULL).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

SCHEMA_VERSION = 3

metadata = sa.MetaData()

schema_version = sa.Table(
    "costtrace_schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

_TOKENS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
)


def _dimension_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("feature", sa.String(255)),
        sa.Column("team", sa.String(255)),
        sa.Column("customer", sa.String(255)),
        sa.Column("user_id", sa.String(255)),
        sa.Column("dimensions", sa.Text),  # JSON object of every dimension, custom ones included
    ]


def _token_columns() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger, nullable=False, default=0) for name in _TOKENS]


tasks = sa.Table(
    "costtrace_tasks",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("parent_id", sa.String(64)),
    *_dimension_columns(),
    sa.Column("route", sa.String(1024)),  # "gpt-4o-mini->gpt-4o": the models called, in order of first use
    sa.Column("final_model", sa.String(255)),  # the model the task's last call requested
    sa.Column("outcome", sa.String(32)),
    sa.Column("outcome_reason", sa.Text),
    sa.Column("original_outcome", sa.String(32)),
    sa.Column("outcome_updated_at", sa.DateTime),
    sa.Column("first_pass", sa.Boolean),
    sa.Column("cost_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("wasted_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("cache_savings_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("subtasks_cost_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("rework_nano_usd", sa.BigInteger),
    *_token_columns(),
    sa.Column("llm_calls", sa.Integer, nullable=False),
    sa.Column("failed_calls", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("escalations", sa.Integer, nullable=False),
    sa.Column("unpriced_calls", sa.Integer, nullable=False),
    sa.Column("estimated_calls", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("ended_at", sa.DateTime, nullable=False),
    sa.Column("duration_s", sa.Float),
    sa.Index("ix_costtrace_tasks_ended_at", "ended_at"),
    sa.Index("ix_costtrace_tasks_feature_ended", "feature", "ended_at"),
    sa.Index("ix_costtrace_tasks_name_ended", "name", "ended_at"),
)

calls = sa.Table(
    "costtrace_calls",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.String(64)),
    sa.Column("task_name", sa.String(255)),
    *_dimension_columns(),
    sa.Column("provider", sa.String(255), nullable=False),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("request_model", sa.String(255), nullable=False),
    sa.Column("response_model", sa.String(255)),
    sa.Column("attempt", sa.Integer),
    sa.Column("error_type", sa.String(255)),
    sa.Column("usage_source", sa.String(16), nullable=False),
    *_token_columns(),
    sa.Column("cache_write_1h_input_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("priced", sa.Boolean, nullable=False),
    sa.Column("cost_nano_usd", sa.BigInteger),  # NULL when unpriced: unknown, never zero
    sa.Column("input_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("cache_read_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("cache_write_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("output_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("reasoning_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("other_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("cache_savings_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("price_source", sa.String(255)),
    sa.Column("price_date", sa.String(32)),
    sa.Column("price_model_id", sa.String(255)),
    sa.Column("unpriced_reason", sa.Text),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("duration_s", sa.Float),
    sa.Index("ix_costtrace_calls_task_id", "task_id"),
    sa.Index("ix_costtrace_calls_started_at", "started_at"),
    sa.Index("ix_costtrace_calls_feature_started", "feature", "started_at"),
)

events = sa.Table(
    "costtrace_events",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.String(64)),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("attempt", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("details", sa.Text),
    sa.Column("from_model", sa.String(255)),
    sa.Column("to_model", sa.String(255)),
    sa.Column("outcome", sa.String(32)),
    sa.Column("amount_nano_usd", sa.BigInteger),
    sa.Column("data", sa.Text),  # JSON: anything else the event carries
    sa.Index("ix_costtrace_events_task_id", "task_id"),
    sa.Index("ix_costtrace_events_kind_at", "kind", "at"),
)

budgets = sa.Table(
    "costtrace_budgets",
    metadata,
    sa.Column("budget_id", sa.String(255), primary_key=True),
    sa.Column("definition", sa.Text, nullable=False),  # JSON of the Budget, for the CLI and other processes
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

budget_locks = sa.Table(
    "costtrace_budget_locks",
    metadata,
    sa.Column("budget_id", sa.String(255), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False, default=0),
)

budget_spend = sa.Table(
    "costtrace_budget_spend",
    metadata,
    sa.Column("budget_id", sa.String(255), primary_key=True),
    sa.Column("period_start", sa.DateTime, primary_key=True),
    sa.Column("period_end", sa.DateTime, nullable=False),
    sa.Column("spent_nano_usd", sa.BigInteger, nullable=False, default=0),
    sa.Column("reserved_nano_usd", sa.BigInteger, nullable=False, default=0),
    sa.Column("calls", sa.BigInteger, nullable=False, default=0),
    sa.Column("unpriced_calls", sa.BigInteger, nullable=False, default=0),
    sa.Column("fallback_priced_calls", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

reservations = sa.Table(
    "costtrace_reservations",
    metadata,
    sa.Column("reservation_id", sa.String(128), primary_key=True),
    sa.Column("budget_id", sa.String(255), nullable=False),
    sa.Column("period_start", sa.DateTime, nullable=False),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("amount_nano_usd", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("lease_expires_at", sa.DateTime, nullable=False),
    sa.Index("ix_costtrace_reservations_call_id", "call_id"),
    sa.Index("ix_costtrace_reservations_budget_lease", "budget_id", "lease_expires_at"),
)

alerts_fired = sa.Table(
    "costtrace_alerts_fired",
    metadata,
    sa.Column("rule_id", sa.String(255), primary_key=True),
    sa.Column("period_start", sa.DateTime, primary_key=True),
    sa.Column("threshold", sa.String(32), primary_key=True),
    sa.Column("fired_at", sa.DateTime, nullable=False),
    sa.Column("data", sa.Text),
)


ROLLUP_SUMS = (
    "tasks",
    "first_pass",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_nano_usd",
    "wasted_nano_usd",
    "cache_savings_nano_usd",
    "rework_nano_usd",
    "escalated",
    "escalated_cost_nano_usd",
    "llm_calls",
    "unpriced_calls",
    "estimated_calls",
    "timed",
)
"""The exact sums of a rollup cell (see :mod:`costtrace.spend.rollups`)."""
ROLLUP_SKETCHES = ("cost", "input_tokens", "output_tokens", "attempts", "latency")
"""The per-task values a rollup cell keeps a quantile sketch of (column ``sketch_<name>``)."""


def _cell_key_columns() -> list[sa.Column[object]]:
    """A rollup cell's period and key: level (hour | day | month, or ``hour:all``... for per-outcome
    totals), period start, and the task columns it groups by."""
    return [
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("period_start", sa.DateTime, nullable=False),
        sa.Column("feature", sa.String(255)),
        sa.Column("name", sa.String(255)),
        sa.Column("route", sa.String(1024)),
        sa.Column("final_model", sa.String(255)),
        sa.Column("team", sa.String(255)),
        sa.Column("outcome", sa.String(32)),
    ]


rollup_cells = sa.Table(
    "costtrace_rollup_cells",
    metadata,
    *_cell_key_columns(),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in ROLLUP_SUMS),
    *(sa.Column(f"sketch_{name}", sa.LargeBinary) for name in ROLLUP_SKETCHES),
    sa.Index("ix_costtrace_rollup_cells_level_start", "level", "period_start"),
)

CALL_TOKENS = (*_TOKENS, "cache_write_1h_input_tokens")
ROLLUP_MODEL_SUMS = (
    "calls",
    "unpriced_calls",
    "unknown_usage_calls",
    "uncached_input_calls",
    *CALL_TOKENS,
    "cost_nano_usd",
    "input_nano_usd",
    "cache_read_nano_usd",
    "cache_write_nano_usd",
    "output_nano_usd",
    "reasoning_nano_usd",
    "other_nano_usd",
    "first_calls",
    "first_unknown_usage_calls",
    *(f"first_{name}" for name in CALL_TOKENS),
    "attempts",
    "failed_attempts",
    "useful_tokens",
)
"""The exact sums of a rollup model cell: the calls of the cell's tasks on one (provider, requested model).
``uncached_input_calls``: calls with input beyond their cache reads and writes; ``first_*``: calls of
first attempts (``attempt == 1``); ``attempts``: distinct (task, attempt) on the model, ``failed_attempts``
those that are not the last attempt of a successful task; ``useful_tokens``: input + output tokens of
calls in the final attempt (``attempt == tasks.attempts``) of successful tasks."""

rollup_models = sa.Table(
    "costtrace_rollup_models",
    metadata,
    *_cell_key_columns(),
    sa.Column("provider", sa.String(255), nullable=False),
    sa.Column("request_model", sa.String(255), nullable=False),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in ROLLUP_MODEL_SUMS),
    sa.Index("ix_costtrace_rollup_models_level_start", "level", "period_start"),
)

rollup_periods = sa.Table(
    "costtrace_rollup_periods",
    metadata,
    sa.Column("level", sa.String(8), primary_key=True),
    sa.Column("period_start", sa.DateTime, primary_key=True),  # its cells were built (trusted unless marked)
)

rollup_marks = sa.Table(
    "costtrace_rollup_marks",
    metadata,
    sa.Column("level", sa.String(8), primary_key=True),
    sa.Column("period_start", sa.DateTime, primary_key=True),
    sa.Column("token", sa.BigInteger, nullable=False),  # replaced at every write: a refresh clears only what it read
)


def _create_current(conn: Connection) -> None:
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables if t is not schema_version])


def _upgrade_to_2(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE costtrace_tasks ADD COLUMN route VARCHAR(1024)"))


def _upgrade_to_3(conn: Connection) -> None:
    from costtrace.spend import rollups

    conn.execute(sa.text("ALTER TABLE costtrace_tasks ADD COLUMN final_model VARCHAR(255)"))
    metadata.create_all(conn, tables=[rollup_cells, rollup_models, rollup_periods, rollup_marks])
    rollups.mark_all(conn)


_MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _upgrade_to_2, 3: _upgrade_to_3}
"""``_MIGRATIONS[n]`` brings the schema from version n-1 to n."""
assert sorted(_MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))


def current_version(conn: Connection) -> int:
    """The schema version of the connected database (0 for an empty one)."""
    if not sa.inspect(conn).has_table(schema_version.name):
        return 0
    value = conn.execute(sa.select(schema_version.c.version).where(schema_version.c.id == 1)).scalar()
    return int(value or 0)


def migrate(engine: Engine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; safe to run from many processes at once.

    Returns the version the database had before. A database newer than this costtrace raises
    ``ConfigError`` (upgrade costtrace, or point it at another ledger).

    Example:
        >>> engine = sa.create_engine("sqlite://")
        >>> migrate(engine), migrate(engine)
        (0, 3)
    """
    from costtrace.errors import ConfigError

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7243010151)"))  # 'costtrace' schema lock
        metadata.create_all(conn, tables=[schema_version])
        if conn.dialect.name == "sqlite":
            # Take the write lock now: a second process waits here instead of racing the creates.
            conn.execute(schema_version.update().where(schema_version.c.id == -1).values(version=0))
        before = current_version(conn)
        if before > SCHEMA_VERSION:
            raise ConfigError(
                f"the ledger's schema is version {before}, newer than this costtrace understands "
                f"({SCHEMA_VERSION}); upgrade costtrace"
            )
        if before == 0:
            _create_current(conn)
        else:
            for version in range(before + 1, SCHEMA_VERSION + 1):
                _MIGRATIONS[version](conn)
        if before == 0:
            conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION))
        elif before < SCHEMA_VERSION:
            conn.execute(schema_version.update().where(schema_version.c.id == 1).values(version=SCHEMA_VERSION))
    return before
