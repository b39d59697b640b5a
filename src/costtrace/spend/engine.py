"""Connecting to the ledger database: URL resolution, SQLite tuning, PostgreSQL timeouts, fork safety.

- ``COSTTRACE_LEDGER_URL`` or ``configure_ledger(url=...)`` picks the database; without either, a SQLite
  file at ``$XDG_DATA_HOME/costtrace/ledger.db`` (``~/.local/share/costtrace/ledger.db``).
- SQLite runs in WAL mode with a busy timeout, and every transaction starts with ``BEGIN IMMEDIATE``
  so that writers queue for the lock instead of failing half-way with "database is locked".
- PostgreSQL gets a connect timeout and a statement timeout, so an unreachable or stuck server is an
  error within seconds, never a hang (budgets then fail open or closed as configured).
- In a forked child the inherited pool is disposed without closing the parent's connections.
- URLs are only ever shown with their password hidden (:func:`safe_url`).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from costtrace.errors import ConfigError
from costtrace.spend import ENV_LEDGER_URL

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's lock before the attempt fails (and is retried)."""
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 10_000
_POSTGRES_INSTALL_HINT = "install a PostgreSQL driver with: pip install 'costtrace[postgres]'"

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def default_url() -> str:
    """The ledger URL used when none is given: ``COSTTRACE_LEDGER_URL``, else the per-user SQLite file."""
    env = os.environ.get(ENV_LEDGER_URL, "").strip()
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return f"sqlite:///{Path(base) / 'costtrace' / 'ledger.db'}"


def safe_url(url: str | sa.URL) -> str:
    """The URL as text with any password replaced by ``***`` (for messages and logs).

    Example:
        >>> safe_url("postgresql://app:s3cret@db:5432/costs")
        'postgresql://app:***@db:5432/costs'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable ledger URL>"


_URL_FORMS = "use e.g. 'sqlite:///costtrace.db' or 'postgresql://user@host:5432/dbname'"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
"""The databases the ledger runs on."""


def _normalise(url: str) -> sa.URL:
    """Parse and check a ledger URL: a SQLite or PostgreSQL URL, else ConfigError (password hidden)."""
    if not isinstance(url, str):
        raise ConfigError(f"the ledger URL must be a string, got {type(url).__name__}; {_URL_FORMS}")
    if not url.strip():
        raise ConfigError(f"the ledger URL is empty; {_URL_FORMS}, or pass None for the default ledger")
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"ledger URL {safe_url(url)!r} is not a database URL; {_URL_FORMS}") from exc
    backend = parsed.drivername.partition("+")[0]
    if backend == "postgres":
        backend = "postgresql"
    if backend not in SUPPORTED_BACKENDS:
        raise ConfigError(
            f"ledger URL {safe_url(parsed)!r} is not a database costtrace supports "
            f"({', '.join(SUPPORTED_BACKENDS)}); {_URL_FORMS}"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(
    url: str | None = None, *, sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S, read_only: bool = False
) -> Engine:
    """Create the ledger's engine for ``url`` (default: :func:`default_url`).

    ``read_only=True`` (reports, the CLI): a SQLite file is opened read-only (``mode=ro``: never
    created, never written, not even its header), transactions start deferred (``BEGIN``) with
    ``PRAGMA query_only``, so a long report never holds the write lock the app's writers need; on
    PostgreSQL sessions default to read-only transactions.

    Raises:
        ConfigError: The URL is empty, not a database URL or not SQLite/PostgreSQL, its driver is not
            installed, or the SQLite file's folder cannot be created.

    Example:
        >>> engine = make_engine("sqlite://")          # in-memory, for a quick look
        >>> engine.dialect.name
        'sqlite'
    """
    parsed = _normalise(default_url() if url is None else url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        database = parsed.database or ""
        on_disk = bool(database) and database != ":memory:" and not database.startswith("file:")
        if on_disk and read_only:
            kwargs["creator"] = _read_only_sqlite(Path(database).expanduser(), sqlite_busy_timeout_s)
        elif on_disk:
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the folder of the SQLite ledger {database!r}: {exc}") from exc
        else:
            kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
        kwargs["connect_args"] = {"timeout": sqlite_busy_timeout_s, "check_same_thread": False}
    elif backend == "postgresql":
        # connect_args replace the URL's own query arguments: keep the URL's ``options`` (e.g.
        # ``?options=-csearch_path%3Dcosts``), after ours so that the URL's settings win.
        user_options = parsed.query.get("options")
        if isinstance(user_options, tuple):
            user_options = " ".join(user_options)
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
        if read_only:
            options += " -c default_transaction_read_only=on"
        kwargs["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"{options} {user_options}" if user_options else options,
        }
        kwargs["pool_pre_ping"] = True
        kwargs["pool_timeout"] = 10
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        hint = _POSTGRES_INSTALL_HINT if backend == "postgresql" else f"install the {exc.name!r} package"
        raise ConfigError(f"the ledger at {safe_url(parsed)!r} needs {exc.name!r}; {hint}") from exc
    if backend == "sqlite":
        _tune_sqlite(engine, sqlite_busy_timeout_s, read_only=read_only)
    _engines.add(engine)
    return engine


def _read_only_sqlite(path: Path, busy_timeout_s: float) -> Any:
    """A connection factory opening the SQLite file with ``mode=ro``: a missing file is an error, not created."""
    import sqlite3
    import urllib.parse

    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)

    return connect


def _tune_sqlite(engine: Engine, busy_timeout_s: float, *, read_only: bool = False) -> None:
    """WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for every transaction (the SQLAlchemy recipe);
    read-only engines begin deferred and refuse writes."""

    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if engine.url.database not in (None, "", ":memory:") and not read_only:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
            cursor.execute("PRAGMA foreign_keys = ON")
            if read_only:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()

    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    @sa.event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_DEFERRED) else begin)


_DEFERRED = "costtrace_deferred_begin"
"""Execution option of :func:`read_connection` on SQLite: begin with a plain ``BEGIN``."""


def read_connection(engine: Engine) -> Connection:
    """A connection of ``engine`` whose transactions read one snapshot and never block writers.

    The engine's own connections begin with ``BEGIN IMMEDIATE`` on SQLite (the write lock, held to
    the end of the transaction); this one begins deferred, so in WAL mode it reads the snapshot of
    its first query while writers commit. On PostgreSQL its transactions are ``REPEATABLE READ``
    (one snapshot for every query) and read-only. Used by the rollup refresh's compute phase.

    Example:
        >>> engine = make_engine("sqlite://")
        >>> with read_connection(engine) as conn:
        ...     conn.exec_driver_sql("SELECT 1").scalar_one()
        1
    """
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return conn.execution_options(**{_DEFERRED: True})


def _after_fork_in_child() -> None:
    # The parent's pooled connections must not be used (or closed) by the child: drop them unclosed.
    for engine in list(_engines):
        try:
            engine.dispose(close=False)
        except Exception:  # pragma: no cover - disposing a pool never fails in practice
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def upsert_insert(conn: Connection, table: sa.Table) -> Any:
    """``INSERT`` of the connection's dialect, so ``on_conflict_do_nothing`` / ``_do_update`` are available."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)
