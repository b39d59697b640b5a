"""``costtrace budgets``: each budget stored in the ledger, with its period's spend, limit and reset time.

Reads the budget definitions your app stored (``costtrace.configure_ledger(budgets=[...])``) and their
current state (:func:`costtrace.spend.store.budget_states`); never writes.

Example::

    costtrace budgets --format json
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from costtrace.cli import output as out
from costtrace.cli.exit_codes import EXIT_OK
from costtrace.cli.ledger import ledger_url, open_ledger, reading, shown_url
from costtrace.cli.options import format_parent, ledger_parent
from costtrace.cli.output import Column
from costtrace.errors import ConfigError


def add_command(commands: Any) -> None:
    """Register ``costtrace budgets`` on the ``costtrace`` subparsers."""
    p = commands.add_parser(
        "budgets",
        parents=[ledger_parent(), format_parent()],
        help="each budget's spend, limit, utilisation and reset time",
        description="The budgets stored in the ledger with their current period's spend and reservations.",
    )
    p.set_defaults(handler=budgets_command)


def _duration(td: timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def budgets_command(args: argparse.Namespace) -> int:
    from costtrace.spend import store

    url = ledger_url(args)
    shown = shown_url(url)
    engine = open_ledger(url)
    try:
        with reading(shown):
            try:
                budgets = store.load_budget_definitions(engine)
            except ConfigError as exc:  # stored by an older costtrace that did not check it
                raise ConfigError(
                    f"the ledger at {shown} holds a budget definition this costtrace refuses ({exc}); "
                    "fix it in your app's budgets and restart the app to store it again"
                ) from None
            states = store.budget_states(engine, budgets)
    finally:
        engine.dispose()
    columns = [
        Column("budget", "budget"),
        Column("scope", "scope"),
        Column("period", "period"),
        Column("action", "action"),
        Column("spent_usd", "spent", "usd"),
        Column("reserved_usd", "reserved", "usd"),
        Column("limit_usd", "limit", "usd"),
        Column("utilisation", "used", "pct"),
        Column("resets_at", "resets at"),
        Column("calls", "calls", "int", table=False),
        Column("unpriced_calls", "unpriced", "int"),
    ]
    rows: list[dict[str, Any]] = []
    for b, st in zip(budgets, states, strict=True):
        period = str(b.period)
        if b.period == "rolling" and isinstance(b.window, timedelta):
            period = f"rolling {_duration(b.window)}"
        elif b.period not in ("total", "rolling") and b.timezone != "UTC":
            period = f"{period} ({b.timezone})"
        rows.append(
            {
                "budget": b.name,
                "scope": ", ".join(f"{k}={v}" for k, v in b.scope.items()) or "all calls",
                "period": period,
                "action": b.action,
                "spent_usd": out.at_least(st.spent_usd, not st.unpriced_calls),
                "reserved_usd": st.reserved_usd,
                "limit_usd": st.limit_usd,
                "utilisation": st.utilisation,
                "resets_at": st.resets_at,
                "calls": st.calls,
                "unpriced_calls": st.unpriced_calls,
            }
        )
    if not rows and args.format == "table":
        print(
            f"no budgets are stored in the ledger at {shown}; define them with "
            "costtrace.configure_ledger(budgets=[costtrace.Budget(...)]) (see docs/budgets.md)",
            file=sys.stderr,
        )
        return EXIT_OK
    out.emit(args.format, columns, rows, title=f"Budgets (ledger {shown}, now {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    unpriced = sum(r["unpriced_calls"] for r in rows)
    if unpriced and args.format == "table":
        print(f"note: {unpriced:,} unpriced call(s) are not in the spend figures (no price: see docs/pricing.md)")
    return EXIT_OK
