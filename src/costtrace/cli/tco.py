"""``costtrace tco``: total cost of ownership per task, TCO = token cost C + failure rate p x rework cost L.

Three ways in: the calculator (two models' prices, tokens per attempt and failure rates), ``--feature F``
(each of the feature's routes as measured in the ledger, :func:`costtrace.analysis.tco.compare_models`),
or ``--example`` (the worked example of the docs). Each prints the break-even failure-rate gap.

Example::

    costtrace tco --example
    costtrace tco --feature support --hourly-rate 40 --hours 0.25
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

from costtrace._money import usd
from costtrace.cli import output as out
from costtrace.cli.exit_codes import EXIT_OK
from costtrace.cli.ledger import ledger_url, no_tasks_error, open_ledger, reading, shown_url
from costtrace.cli.options import (
    build_filters,
    failure_rate,
    filter_parent,
    format_parent,
    ledger_parent,
    price_per_mtok,
    rework_hours,
    token_count,
    token_multiplier,
    usd_amount,
    window_text,
)
from costtrace.cli.output import Column
from costtrace.errors import ConfigError


def add_command(commands: Any) -> None:
    """Register ``costtrace tco`` on the ``costtrace`` subparsers."""
    p = commands.add_parser(
        "tco",
        parents=[ledger_parent(), filter_parent(), format_parent()],
        help="total cost of ownership per task: cheap vs frontier model, and the break-even failure rate",
        description=(
            "TCO per task = token cost C + failure rate p x rework cost L. Give the two models' prices, the "
            "tokens per attempt and the failure rates to compare them; or --feature to use the figures "
            "measured in the ledger for each of the feature's routes."
        ),
    )
    g = p.add_argument_group("calculator")
    g.add_argument("--example", action="store_true", help="print the worked example of docs (no other flag needed)")
    g.add_argument("--input-tokens", type=token_count, metavar="N", help="input tokens per attempt")
    g.add_argument("--output-tokens", type=token_count, metavar="N", help="output tokens per attempt")
    g.add_argument(
        "--cheap-input-price", type=price_per_mtok, metavar="USD", help="cheap model: USD per million input tokens"
    )
    g.add_argument(
        "--cheap-output-price", type=price_per_mtok, metavar="USD", help="cheap model: USD per million output tokens"
    )
    g.add_argument(
        "--frontier-input-price", type=price_per_mtok, metavar="USD", help="frontier model: USD per MTok input"
    )
    g.add_argument(
        "--frontier-output-price", type=price_per_mtok, metavar="USD", help="frontier model: USD per MTok output"
    )
    g.add_argument(
        "--cheap-failure-rate", type=failure_rate, metavar="P", help="cheap model's failure rate (0.12 or 12%%)"
    )
    g.add_argument("--frontier-failure-rate", type=failure_rate, metavar="P", help="frontier model's failure rate")
    g.add_argument(
        "--frontier-token-multiplier",
        type=token_multiplier,
        default=Decimal(1),
        metavar="X",
        help="frontier tokens per cheap token, e.g. 1.3 for a more verbose model (default: 1)",
    )
    g.add_argument("--rework-cost", type=usd_amount, metavar="USD", help="cost of one failure outside the model")
    g.add_argument("--hourly-rate", type=usd_amount, metavar="USD", help="with --hours: rework = rate x hours")
    g.add_argument("--hours", type=rework_hours, metavar="H", help="hours of human rework per failure")
    p.set_defaults(handler=tco_command)


_CALC_FLAGS = (
    "cheap_input_price",
    "cheap_output_price",
    "frontier_input_price",
    "frontier_output_price",
    "input_tokens",
    "output_tokens",
    "cheap_failure_rate",
    "frontier_failure_rate",
)
TCO_COLUMNS = [
    Column("model", "model"),
    Column("token_cost_usd", "token cost C", "usd"),
    Column("failure_rate", "failure rate p", "pct"),
    Column("rework_cost_usd", "rework L", "usd"),
    Column("expected_rework_usd", "p x L", "usd"),
    Column("tco_per_task_usd", "TCO per task", "usd"),
]


def _rework(args: argparse.Namespace) -> Decimal | None:
    from costtrace.analysis import tco

    if args.rework_cost is not None and (args.hourly_rate is not None or args.hours is not None):
        raise ConfigError("give either --rework-cost or --hourly-rate with --hours, not both")
    if (args.hourly_rate is None) != (args.hours is None):
        raise ConfigError("--hourly-rate and --hours go together: rework cost = hourly rate x hours")
    if args.hourly_rate is not None:
        value: Decimal = tco.rework_cost(args.hourly_rate, args.hours)
        return value
    rework: Decimal | None = args.rework_cost
    return rework


def tco_command(args: argparse.Namespace) -> int:
    from costtrace.analysis import tco

    if args.example:
        return _print_comparison(args, tco.worked_example())
    rework = _rework(args)
    if args.feature or any(key == "feature" for key, _ in args.where):  # --where feature=F is --feature F
        return _tco_measured(args, rework)
    missing = [f for f in _CALC_FLAGS if getattr(args, f) is None]
    if missing:
        flags = ", ".join("--" + f.replace("_", "-") for f in missing)
        raise ConfigError(
            f"tco needs {flags} (or --feature F for the ledger's measured figures, or --example for a worked example)"
        )
    if rework is None:
        raise ConfigError("tco needs the cost of a failure: --rework-cost USD, or --hourly-rate USD with --hours H")
    comparison = tco.calculate(
        args.cheap_input_price,
        args.cheap_output_price,
        args.frontier_input_price,
        args.frontier_output_price,
        args.input_tokens,
        args.output_tokens,
        args.cheap_failure_rate,
        args.frontier_failure_rate,
        args.rework_cost,  # None with --hourly-rate/--hours: calculate() then shows how L was made
        hourly_rate_usd=args.hourly_rate,
        hours=args.hours,
        frontier_token_multiplier=args.frontier_token_multiplier,
    )
    return _print_comparison(args, comparison)


def _tco_row(name: str, t: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": name,
        **extra,
        "token_cost_usd": t.token_cost_usd,
        "failure_rate": t.failure_rate,
        "rework_cost_usd": t.rework_cost_usd,
        "expected_rework_usd": t.expected_rework_usd,
        "tco_per_task_usd": t.tco_per_task_usd,
    }


def _break_even_payload(be: Any) -> dict[str, Any]:
    return {
        "delta_cost_usd": be.delta_cost_usd,
        "rework_cost_usd": be.rework_cost_usd,
        "break_even_failure_rate_delta": be.break_even_failure_rate_delta,
        "failure_rate_delta": be.failure_rate_delta,
        "cheaper": be.cheaper,
        "tco_ratio": be.tco_ratio,
    }


def _break_even_lines(
    be: Any, cheap_name: str = "the cheap model", frontier_name: str = "the frontier model"
) -> list[str]:
    lines = []
    if be.cheaper is not None and be.cheap is not None and be.frontier is not None:
        if be.cheaper == "equal":
            lines.append(f"cheaper per finished task: neither ({usd(be.cheap.tco_per_task_usd)} each)")
        else:
            winner, loser = (be.frontier, be.cheap) if be.cheaper == "frontier" else (be.cheap, be.frontier)
            name = frontier_name if be.cheaper == "frontier" else cheap_name
            ratio = f", {be.tco_ratio:.1f}x less" if be.tco_ratio is not None else ""
            lines.append(
                f"cheaper per finished task: {name} ({usd(winner.tco_per_task_usd)} vs "
                f"{usd(loser.tco_per_task_usd)}{ratio})"
            )
    d = be.break_even_failure_rate_delta
    if d is None:
        lines.append("break-even: undefined without a rework cost (L = $0: only token cost counts)")
    elif d <= 0:
        lines.append(f"break-even: {frontier_name} costs no more in tokens ({usd(be.delta_cost_usd)} per task)")
    else:
        gap = be.failure_rate_delta
        measured = f"; here it fails {gap * 100:.2f} pp less" if gap is not None else ""
        lines.append(
            f"break-even: {frontier_name} pays off when it fails more than {d * 100:.2f} percentage points less "
            f"often (dC {usd(be.delta_cost_usd)} / L {usd(be.rework_cost_usd)}){measured}"
        )
    return lines


def _print_comparison(args: argparse.Namespace, c: Any) -> int:
    rows = [
        _tco_row("cheap", c.cheap, attempt_cost_usd=c.cheap_attempt_cost_usd),
        _tco_row("frontier", c.frontier, attempt_cost_usd=c.frontier_attempt_cost_usd),
    ]
    if args.format == "json":
        payload = {
            "models": rows,
            "break_even": _break_even_payload(c.break_even),
            "sensitivity": [_break_even_payload(b) for b in c.sensitivity],
            "assumptions": list(c.assumptions),
        }
        print(out.json_text(payload))
        return EXIT_OK
    if args.format == "csv":  # the keys of the JSON's models, attempt_cost_usd last
        print(out.csv_text([*TCO_COLUMNS, Column("attempt_cost_usd", "attempt cost", "usd")], rows))
        return EXIT_OK
    print("Total cost of ownership per task: TCO = C + p x L")
    print(out.table(TCO_COLUMNS, rows))
    for line in _break_even_lines(c.break_even):
        print(line)
    for b in c.sensitivity:
        d = b.break_even_failure_rate_delta
        print(f"  at L = {usd(b.rework_cost_usd)}: break-even gap {'-' if d is None else f'{d * 100:.2f} pp'}")
    if c.assumptions:
        print("assumptions:")
        for a in c.assumptions:
            print(f"  - {a}")
    return EXIT_OK


def _tco_measured(args: argparse.Namespace, rework: Decimal | None) -> int:
    """Per route of the feature: measured cost per task and failure rate (tco.compare_models)."""
    from costtrace.analysis import tco

    filters = build_filters(args)
    url = ledger_url(args)
    shown = shown_url(url)
    engine = open_ledger(url)
    try:
        with reading(shown):
            comparisons = tco.compare_models(
                engine, filters=filters, rework_cost_usd=rework if rework is not None else 0
            )
        if not comparisons:
            raise no_tasks_error(engine, shown, filters)
    finally:
        engine.dispose()
    columns = [
        Column("feature", "feature"),
        Column("route", "route"),
        Column("tasks", "tasks", "int"),
        *TCO_COLUMNS[1:],
        Column("cost_per_successful_task_usd", "cost/success", "usd"),
        Column("unpriced_calls", "unpriced", "int"),
    ]
    rows = [
        {
            **_tco_row("", r.tco, feature=r.feature, route=r.route, tasks=r.tasks),
            "cost_per_successful_task_usd": out.at_least(r.cost_per_successful_task_usd, not r.unpriced_calls),
            "unpriced_calls": r.unpriced_calls,
        }
        for f in comparisons
        for r in f.routes
    ]
    for row, r in zip(rows, (r for f in comparisons for r in f.routes), strict=True):
        for key in ("token_cost_usd", "tco_per_task_usd"):  # measured from the route's priced calls only
            row[key] = out.at_least(row[key], not r.unpriced_calls)
    for row in rows:
        del row["model"]
    if args.format == "json":
        payload = [
            {
                "feature": f.feature,
                "baseline": f.baseline,
                "best": f.best.route if f.best else None,
                "routes": [row for row in rows if row["feature"] == f.feature],
                "break_evens": {route: _break_even_payload(b) for route, b in f.break_evens.items()},
            }
            for f in comparisons
        ]
        print(out.json_text(payload))
        return EXIT_OK
    if args.format == "csv":
        print(out.csv_text(columns, rows))
        return EXIT_OK
    print(f"TCO per task = C + p x L, measured per route ({window_text(filters)}, ledger {shown})")
    print(out.table(columns, rows))
    if rework is None:
        print("note: no --rework-cost (or --hourly-rate/--hours): L = $0, so TCO is the token cost alone")
    for f in comparisons:
        if f.best is not None and len(f.routes) > 1:
            print(f"{f.feature or '(no feature)'}: lowest TCO per task: {f.best.route}")
        for route, b in f.break_evens.items():
            for line in _break_even_lines(b, cheap_name=str(f.baseline), frontier_name=route):
                print(f"  {line}")
    if any(r["unpriced_calls"] for r in rows):
        print("note: some calls had no price: those routes' costs are lower bounds (see docs/pricing.md)")
    return EXIT_OK
