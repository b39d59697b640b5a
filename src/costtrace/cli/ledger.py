"""The ledger as the commands read it: found from ``--ledger``, opened read-only, errors as one line.

:func:`open_ledger` never creates a database and refuses one without costtrace's tables or with another
schema version; :func:`reading` turns a database error into a :class:`~costtrace.errors.ConfigError`
naming the ledger (``costtrace report: error: cannot read the ledger at ...``); :func:`no_tasks_error`
says why a query found no task and which filter values the ledger does hold.

Example:
    >>> url = ledger_url(args)                                   # doctest: +SKIP
    >>> engine = open_ledger(url)                                # doctest: +SKIP
    >>> with reading(shown_url(url)), engine.connect() as conn:  # doctest: +SKIP
    ...     ...
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from costtrace.cli.options import FILTER_FLAGS, filter_text, window_text
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.analysis.stats import Filters

NO_LEDGER_HINT = "run your app with costtrace.configure_ledger() or `costtrace demo` first"


def ledger_url(args: argparse.Namespace) -> str:
    from costtrace.spend.engine import default_url

    url: str | None = getattr(args, "ledger", None)
    return url.strip() if url and url.strip() else default_url()


def open_ledger(url: str, *, writable: bool = False) -> Engine:
    """The engine of an existing ledger; never creates one.

    ``writable=True`` (``costtrace ledger``): a read-write engine, and an older schema is accepted (the
    command migrates it).

    Raises:
        ConfigError: The URL is bad, the SQLite file does not exist, or the database has no costtrace
            tables, or it cannot be reached.
    """
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from costtrace.spend import schema
    from costtrace.spend.engine import make_engine, safe_url

    shown = safe_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None  # make_engine raises the ConfigError that explains the URL forms
    if parsed is not None and parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ConfigError(f"--ledger {shown!r} is an in-memory database; give the URL of a ledger file")
        path = Path(database).expanduser()
        if not path.is_file():
            raise ConfigError(f"no ledger at {path}; {NO_LEDGER_HINT}")
        if path.stat().st_size == 0:
            raise ConfigError(f"no ledger at {path} (the file is empty); {NO_LEDGER_HINT}")
        shown = str(path)
    # Read-only: a SQLite file is opened with mode=ro (never written, never created), and a long
    # report never holds the write lock the app's writers need.
    engine = make_engine(url, read_only=not writable)
    try:
        with reading(shown), engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            version = schema.current_version(conn) if "costtrace_tasks" in tables else 0
    except BaseException:
        engine.dispose()
        raise
    if "costtrace_tasks" not in tables:
        engine.dispose()
        raise ConfigError(f"no ledger at {shown} (no costtrace tables there); {NO_LEDGER_HINT}")
    if version != schema.SCHEMA_VERSION and not (writable and version < schema.SCHEMA_VERSION):
        engine.dispose()
        if version > schema.SCHEMA_VERSION:
            raise ConfigError(
                f"the ledger at {shown} has schema version {version}, newer than this costtrace understands "
                f"({schema.SCHEMA_VERSION}); upgrade costtrace (pip install -U costtrace)"
            )
        raise ConfigError(
            f"the ledger at {shown} has schema version {version}, older than this costtrace's "
            f"({schema.SCHEMA_VERSION}); reports never write: upgrade it with `costtrace ledger migrate`, "
            "or let your app (costtrace.configure_ledger) do it"
        )
    return engine


@contextmanager
def reading(shown: str) -> Iterator[None]:
    """Database errors while reading -> one-line ConfigError naming the ledger."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(f"cannot read the ledger at {shown}: {reason}") from exc


def shown_url(url: str) -> str:
    """The ledger as messages name it: a SQLite file's path, else the URL without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from costtrace.spend.engine import safe_url

    try:
        parsed = make_url(url)
    except ArgumentError:
        return safe_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return str(Path(parsed.database).expanduser())
    return safe_url(url)


def no_tasks_error(engine: Engine, shown: str, filters: Filters) -> ConfigError:
    """The error for an empty result: an empty ledger, an empty window, or filters matching nothing."""
    import sqlalchemy as sa

    from costtrace.analysis.stats import dimension_text
    from costtrace.spend import schema

    t = schema.tasks
    with reading(shown), engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
        if total == 0:
            window = "" if window_text(filters) == "all time" else f" (in the window {window_text(filters)})"
            return ConfigError(f"the ledger at {shown} has no tasks yet{window}; {NO_LEDGER_HINT}")
        hints = []
        for k in FILTER_FLAGS:
            wanted = getattr(filters, k)
            if wanted is None:
                continue
            col = t.c.name if k == "task" else t.c[k]
            values = [
                r[0]
                for r in conn.execute(sa.select(col).where(col.is_not(None)).distinct().order_by(col).limit(21)).all()
            ]
            if wanted not in values:
                listed = ", ".join(repr(v) for v in values[:20]) + (", ..." if len(values) > 20 else "")
                hints.append(f"{k}s in the ledger: {listed or 'none'}")
        for name, wanted in filters.dimensions:
            value = dimension_text(t.c.dimensions, name)
            found = (
                conn.execute(sa.select(value).where(value.is_not(None)).distinct().order_by(value).limit(21))
                .scalars()
                .all()
            )
            if wanted not in found:
                listed = ", ".join(repr(v) for v in found[:20]) + (", ..." if len(found) > 20 else "")
                hints.append(
                    f"{name!r} values in the ledger: {listed}" if found else f"no task has a dimension {name!r}"
                )
    what = filter_text(filters)
    window = window_text(filters)
    if not what:
        return ConfigError(
            f"the ledger at {shown} has no tasks in the window {window} ({total:,} in all); "
            "widen the window with --since/--until"
        )
    where = "" if window == "all time" else f" in the window {window}"
    return ConfigError(
        f"no tasks in the ledger at {shown} match {what}{where}"
        + (f" ({'; '.join(hints)})" if hints else "; widen the window with --since/--until or drop a filter")
    )
