"""``costtrace whatif``: what the recorded tasks would have cost on another route.

Replays the ledger's tasks on one model (``--route gpt-4o``) or a cascade (``--route
'gpt-4o-mini->gpt-4o'``: cheap first, escalate on failure) with
:func:`costtrace.analysis.routing.whatif`, and prints recorded against projected, with the assumptions.

Example::

    costtrace whatif --route 'gpt-4o-mini->gpt-4o' --feature support --failure-rate gpt-4o=5%
    costtrace whatif --route gpt-4o --batch --price-change gpt-4o=+20%
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
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
    usd_amount,
    window_text,
)
from costtrace.cli.output import Column
from costtrace.errors import ConfigError


def _failure_rate_pair(text: str) -> tuple[str, Decimal]:
    """``--failure-rate MODEL=P``: a model's failure rate (0.12 or 12%) for ``whatif``."""
    model, sep, rate = text.partition("=")
    if not sep or not model.strip():
        raise argparse.ArgumentTypeError(f"expected MODEL=RATE such as gpt-4.1=0.1, got {text!r}")
    return model.strip(), failure_rate(rate)


def _price_change_pair(text: str) -> tuple[str, Decimal]:
    """``--price-change MODEL=+20%``: a model's relative price change, a percentage from -100% up."""
    model, sep, change = text.partition("=")
    number = change.strip()
    fix = "use MODEL=+20%, MODEL=-15% or MODEL=-100% (free): a signed or unsigned percentage"
    if not sep or not model.strip() or not number.endswith("%"):
        raise ConfigError(f"--price-change {text!r} is not MODEL=PERCENT; {fix}")
    try:
        value = Decimal(number[:-1].strip()) / 100
    except InvalidOperation:
        raise ConfigError(f"--price-change {text!r}: {number!r} is not a percentage; {fix}") from None
    if not value.is_finite():
        raise ConfigError(f"--price-change {text!r}: {number!r} is not a percentage; {fix}")
    if value < -1:
        raise ConfigError(f"--price-change {text!r}: a price cannot fall by more than 100%; {fix}")
    return model.strip(), value


def add_command(commands: Any) -> None:
    """Register ``costtrace whatif`` on the ``costtrace`` subparsers."""
    p = commands.add_parser(
        "whatif",
        parents=[ledger_parent(), filter_parent(route=False), format_parent()],
        help="replay recorded tasks on another route and project the cost",
        description=(
            "Project what the recorded tasks would have cost on another route: one model ('gpt-4o') or a "
            "cascade ('gpt-4o-mini->gpt-4o': cheap first, escalate on failure). The assumptions are printed."
        ),
    )
    p.add_argument(
        "--route",
        dest="to_route",
        required=True,
        metavar="ROUTE",
        help="the route to project: 'gpt-4o' (one model) or 'gpt-4o-mini->gpt-4o' (cheap first, escalate on failure)",
    )
    p.add_argument("--rework-cost", type=usd_amount, metavar="USD", help="cost of one failed task outside the model")
    p.add_argument(
        "--failure-rate",
        dest="failure_rates",
        type=_failure_rate_pair,
        action="append",
        default=[],
        metavar="MODEL=P",
        help="a model's failure rate per attempt (0.12 or 12%%) instead of the measured one; needed for a model "
        "with no recorded attempt; repeat for several models",
    )
    p.add_argument(
        "--price-change",
        dest="price_changes",
        action="append",
        default=[],
        metavar="MODEL=PCT",
        help="change every price of a model of the route by a percentage: gpt-4o=+20%%, gpt-4o=-15%%, "
        "-100%% makes it free; repeat for several models",
    )
    p.add_argument(
        "--batch",
        action="store_true",
        help="re-price at the providers' batch rates (work that can wait); a model without one is an error",
    )
    p.set_defaults(handler=whatif_command)


def whatif_command(args: argparse.Namespace) -> int:
    from costtrace.analysis import routing

    target = str(args.to_route).strip()
    if not target or any(not m.strip() for m in target.split("->")):
        raise ConfigError(
            f"--route {args.to_route!r} is not a route; use 'gpt-4o' (one model) or 'gpt-4o-mini->gpt-4o' (cascade)"
        )
    changes: dict[str, Decimal] = {}
    for text in args.price_changes:
        model, change = _price_change_pair(text)
        if model in changes:
            raise ConfigError(f"--price-change gives {model!r} twice; give one change per model")
        changes[model] = change
    outside = sorted(set(changes) - set(routing.parse_route(target)))
    if outside:
        raise ConfigError(
            f"--price-change names {', '.join(map(repr, outside))}, not a model of --route {target!r}; "
            "change the price of a model the route uses"
        )
    filters = build_filters(args)
    url = ledger_url(args)
    shown = shown_url(url)
    engine = open_ledger(url)
    try:
        try:
            with reading(shown):
                result = routing.whatif(
                    engine,
                    route=target,
                    filters=filters,
                    rework_cost_usd=args.rework_cost,
                    failure_rates=dict(args.failure_rates),
                    price_changes=changes,
                    batch=args.batch,
                )
        except routing.UnknownFailureRate as exc:
            raise ConfigError(
                f"model {exc.model!r} has no recorded attempt in the ledger's tasks (for these filters): its "
                f"failure rate is unknown; give one with --failure-rate {exc.model}=0.1 (or record tasks on it first)"
            ) from None
        if result.tasks == 0:
            raise no_tasks_error(engine, shown, filters)
    finally:
        engine.dispose()
    # Recorded costs miss the unpriced calls: lower bounds, shown ">=" (projected ones are priced whole).
    recorded_cost = out.at_least(result.recorded_cost_usd, result.recorded_cost_complete)
    recorded_per_success = out.at_least(result.recorded_cost_per_success_usd, result.recorded_cost_complete)
    row = {
        "feature": result.feature,
        "route": result.route,
        "tasks": result.tasks,
        "recorded_cost_usd": recorded_cost,
        "projected_cost_usd": result.projected_cost_usd,
        "projected_successes": result.projected_successes,
        "projected_cost_per_success_usd": result.projected_cost_per_success_usd,
        "recorded_successes": result.recorded_successes,
        "recorded_cost_per_success_usd": recorded_per_success,
        "recorded_cost_complete": result.recorded_cost_complete,
        "rework_cost_usd": result.rework_cost_usd,
        "recorded_tco_per_task_usd": result.recorded_tco_per_task_usd,
        "projected_tco_per_task_usd": result.projected_tco_per_task_usd,
        "assumptions": list(result.assumptions),
        "batch": result.batch,
        "price_changes": dict(result.price_changes),
    }
    if args.format == "json":
        print(out.json_text(row))
        return EXIT_OK
    columns = [
        Column("feature", "feature"),
        Column("route", "route"),
        Column("tasks", "tasks", "int"),
        Column("recorded_cost_usd", "recorded cost", "usd"),
        Column("projected_cost_usd", "projected cost", "usd"),
        Column("projected_successes", "projected successes", "num"),
        Column("projected_cost_per_success_usd", "projected cost/success", "usd"),
    ]
    if args.format == "csv":  # every key of the JSON object; the ones added after assumptions go last
        csv_columns = [*columns, Column("assumptions", "assumptions")]
        csv_columns += [Column(k, k) for k in row if k not in {c.key for c in csv_columns}]
        print(out.csv_text(csv_columns, [row]))
        return EXIT_OK
    scope = f"feature {result.feature!r}" if result.feature else "all features"
    print(f"What if the {result.tasks:,} recorded task(s) of {scope} had run on {result.route!r}")
    print(f"({window_text(filters)}, ledger {shown})")
    side: list[tuple[str, out.Kind, Decimal | int | None, Decimal | None]] = [
        ("total cost", "usd", recorded_cost, result.projected_cost_usd),
        ("successes", "num", result.recorded_successes, result.projected_successes),
        ("success rate", "pct", _ratio(result.recorded_successes, result.tasks), result.projected_success_rate),
        (
            "cost per successful task",
            "usd",
            recorded_per_success,
            result.projected_cost_per_success_usd,
        ),
    ]
    if result.rework_cost_usd is not None:
        side.append(("TCO per task", "usd", result.recorded_tco_per_task_usd, result.projected_tco_per_task_usd))
    side_cols = [
        Column("metric", ""),
        Column("recorded", "recorded", "rtext"),
        Column("projected", "projected", "rtext"),
    ]
    side_rows = [
        {"metric": label, "recorded": out.display(rec, kind), "projected": out.display(proj, kind)}
        for label, kind, rec, proj in side
    ]
    print(out.table(side_cols, side_rows))
    if not result.recorded_cost_complete:
        print("note: some recorded calls had no price: the recorded cost is a lower bound")
    delta = result.projected_cost_usd - result.recorded_cost_usd
    sign = "more" if delta > 0 else "less"
    print(f"projected: {usd(abs(delta))} {sign} than recorded ({usd(result.recorded_cost_usd)})")
    if result.assumptions:
        print("assumptions:")
        for a in result.assumptions:
            print(f"  - {a}")
    return EXIT_OK


def _ratio(n: int, d: int) -> Decimal | None:
    return Decimal(n) / d if d else None
