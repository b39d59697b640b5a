"""PostgreSQL for the benchmarks: a fresh schema per run, and why a server can't be used."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import sqlalchemy as sa

PG_ENV = "COSTTRACE_TEST_POSTGRES_URL"


@contextmanager
def postgres_url(base: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped on exit."""
    name = f"costtrace_bench_{secrets.token_hex(6)}"
    admin = sa.create_engine(sa.make_url(base).set(drivername="postgresql+psycopg"), poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        url = sa.make_url(base).set(drivername="postgresql")
        sep = "&" if url.query else "?"
        yield url.render_as_string(hide_password=False) + f"{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        try:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        finally:
            admin.dispose()


def postgres_unavailable(base: str) -> str | None:
    """Why PostgreSQL cannot be benchmarked, or None when it can."""
    if not base:
        return f"--postgres-url and {PG_ENV} are not set"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    engine = sa.create_engine(
        sa.make_url(base).set(drivername="postgresql+psycopg"),
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc
        return f"cannot connect to {sa.make_url(base).render_as_string()}: {(str(cause).splitlines() or [''])[0]}"
    finally:
        engine.dispose()
    return None
