"""The cost ledger: a durable record of tasks, calls, events and budget state, in SQLite or PostgreSQL.

Modules: ``schema`` (tables, migrations), ``engine`` (connecting), ``store`` (the transactions: writing
batches idempotently, reserving and releasing budget, reading budget state), ``writer`` (the
per-process background writer with its bounded queue and spool).

SQLAlchemy is imported only when the ledger is used, never at ``import costtrace``.
"""
