"""``costtrace ledger status|migrate|refresh|rebuild``: the ledger's schema and its rollups.

Reports read the ledger's rollups (:mod:`costtrace.spend.rollups`) where they are built and clean, and
raw rows elsewhere, so they are always exact; these commands decide how much of the ledger the fast path
covers. They are the only commands that write to the ledger (besides ``demo``).

- ``status``: the schema version, the cells per level, the periods waiting for a refresh; never writes.
- ``migrate``: upgrade an older ledger in place, then build every rollup cell it needs (progress bar).
- ``refresh``: recompute the periods marked dirty (the app's ledger writer does it in the background).
- ``rebuild``: drop every cell and rebuild them all from the raw rows: repair, or after rows were
  inserted around the ledger's API (a bulk import in SQL).

Example::

    costtrace ledger migrate --ledger postgresql://costtrace@db/costs
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from costtrace.cli import output as out
from costtrace.cli.exit_codes import EXIT_OK
from costtrace.cli.ledger import ledger_url, open_ledger, reading, shown_url
from costtrace.cli.options import format_parent, ledger_parent
from costtrace.cli.output import Column

ACTIONS = ("status", "migrate", "refresh", "rebuild")


def add_command(commands: Any) -> None:
    """Register ``costtrace ledger`` on the ``costtrace`` subparsers."""
    p = commands.add_parser(
        "ledger",
        parents=[ledger_parent(), format_parent()],
        help="the ledger's schema and rollups: status, migrate, refresh, rebuild",
        description=(
            "status: schema version, rollup cells, periods waiting for a refresh (read only). migrate: upgrade "
            "an older ledger in place and build its rollups. refresh: recompute the periods marked dirty. "
            "rebuild: drop and rebuild every rollup cell from the raw rows (repair, or after a bulk SQL import). "
            "Reports are exact whatever the rollups hold: where a period is not built or is dirty they read raw rows."
        ),
    )
    p.add_argument("action", choices=ACTIONS, help="what to do")
    p.set_defaults(handler=ledger_command)


def ledger_command(args: argparse.Namespace) -> int:
    from costtrace.spend import rollups, schema

    url = ledger_url(args)
    shown = shown_url(url)
    engine = open_ledger(url, writable=args.action != "status")
    try:
        with reading(shown):
            before = after = None
            done: rollups.Refreshed | None = None
            if args.action != "status":
                before = schema.migrate(engine)
                after = schema.SCHEMA_VERSION
                bar = out.Progress("building rollups (hours)")
                try:
                    if args.action == "rebuild":
                        done = rollups.rebuild(engine, progress=bar)
                    else:
                        done = rollups.refresh(engine, progress=bar)
                finally:
                    bar.close()
            status = _status(engine)
    finally:
        engine.dispose()
    row: dict[str, Any] = {"ledger": shown, **status}
    if done is not None:
        row.update(
            migrated_from=before if before != after else None,
            refreshed_hours=done.hours,
            refreshed_days=done.days,
            refreshed_months=done.months,
            cells_written=done.cells,
        )
    if args.format == "json":
        print(out.json_text(row))
        return EXIT_OK
    columns = [Column(name, name.replace("_", " "), "text") for name in row]
    if args.format == "csv":
        out.emit("csv", columns, [row])
        return EXIT_OK
    width = max(len(c.header) for c in columns)
    for c in columns:
        value = row[c.key]
        print(f"{c.header:<{width}}  {'-' if value is None else value}")
    if row["dirty_periods"]:
        print(
            "\nperiods marked dirty are read from raw rows (still exact, slower); the app's ledger writer "
            "refreshes them in the background, or run `costtrace ledger refresh`",
            file=sys.stderr,
        )
    return EXIT_OK


def _status(engine: Any) -> dict[str, Any]:
    import sqlalchemy as sa

    from costtrace.spend import rollups, schema

    with engine.connect() as conn:
        version = schema.current_version(conn)
        cells = dict(
            conn.execute(
                sa.select(schema.rollup_cells.c.level, sa.func.count()).group_by(schema.rollup_cells.c.level)
            ).all()
        )
        tasks = conn.execute(sa.select(sa.func.count()).select_from(schema.tasks)).scalar_one()
    dirty = rollups.dirty_count(engine)
    return {
        "schema_version": version,
        "tasks": int(tasks),
        **{f"{level}_cells": int(cells.get(level, 0)) for level in rollups.LEVELS},
        "dirty_periods": sum(dirty.values()),
        **{f"dirty_{level}s": dirty[level] for level in rollups.LEVELS},
    }
