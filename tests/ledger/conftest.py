"""Ledger fixtures shared by the ledger tests: a real SQLite file and a real PostgreSQL.

``ledger_url`` is parametrized: a SQLite file in ``tmp_path``, and PostgreSQL from
``COSTTRACE_TEST_POSTGRES_URL`` (skipped with the reason when unset). Each PostgreSQL test gets a schema
of its own (``?options=-csearch_path=...`` in the URL, so subprocesses given the URL see it too),
dropped afterwards; tests running at the same time on one server never see each other's rows.
``ledger_engine`` is that database's migrated engine, disposed after the test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costtrace.spend import schema
from costtrace.spend.engine import make_engine

PG_ENV = "COSTTRACE_TEST_POSTGRES_URL"


def postgres_base_url() -> str:
    """The PostgreSQL server URL of the test run, or skip the test with the reason."""
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        pytest.skip(f"{PG_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip(f"{PG_ENV} is set but psycopg is not installed (pip install 'psycopg[binary]')")
    return url


def _admin_engine(base: str) -> Engine:
    return sa.create_engine(sa.make_url(base).set(drivername="postgresql+psycopg"), poolclass=sa.pool.NullPool)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL of an empty ledger database (not migrated): a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    base = postgres_base_url()
    name = f"costtrace_test_{secrets.token_hex(6)}"
    admin = _admin_engine(base)
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


@pytest.fixture
def ledger_engine(ledger_url: str) -> Iterator[Engine]:
    """The migrated engine of ``ledger_url``, disposed after the test."""
    engine = make_engine(ledger_url)
    try:
        schema.migrate(engine)
        yield engine
    finally:
        engine.dispose()
