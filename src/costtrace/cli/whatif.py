"""``costtrace whatif``: what the recorded tasks would have cost on another route.

Replays the ledger's tasks on one model (``--route gpt-4o``) or a cascade (``--route
'gpt-4o-mini->gpt-4o'``: cheap first, escalate on failure) with
:func:`costtrace.analysis.routing.whatif`, and prints recorded against projected, with the assumptions.

Example::

    costtrace whatif --route 'gpt-4o-mini->gpt-4o' --feature support --failure-rate gpt-4o=5%
    costtrace whatif --route gpt-4o --batch --price-change gpt-4o=+20%
    costtrace whatif --route gpt-4o --self-host-monthly 2000 --self-host-per-mtok-out 0.4
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

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
    usd_amount,
    window_text,
)
from costtrace.cli.output import Column
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from costtrace.analysis.self_hosting import SelfHosting

_ZERO = Decimal(0)


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
    g = p.add_argument_group(
        "self-hosting",
        "re-price the route as self-hosted (its models on your hardware, failing at the route's rates) and print "
        "the monthly task volume at which that breaks even with the API",
    )
    g.add_argument(
        "--self-host-monthly",
        type=usd_amount,
        metavar="USD",
        help="self-hosting's fixed cost in USD a month (GPUs, ops; 0 allowed): turns the self-hosting projection on",
    )
    g.add_argument(
        "--self-host-per-mtok",
        type=price_per_mtok,
        metavar="USD",
        help="self-hosting's cost per million tokens, input and output alike (default 0)",
    )
    g.add_argument(
        "--self-host-per-mtok-in",
        type=price_per_mtok,
        metavar="USD",
        help="the same for input tokens only (instead of --self-host-per-mtok)",
    )
    g.add_argument(
        "--self-host-per-mtok-out",
        type=price_per_mtok,
        metavar="USD",
        help="the same for output tokens only (instead of --self-host-per-mtok)",
    )
    p.set_defaults(handler=whatif_command)


def _self_host_rates(args: argparse.Namespace) -> tuple[Decimal | None, Decimal | None]:
    """(input, output) USD per million tokens from the ``--self-host-per-mtok*`` flags."""
    both, rate_in, rate_out = args.self_host_per_mtok, args.self_host_per_mtok_in, args.self_host_per_mtok_out
    if both is not None and (rate_in is not None or rate_out is not None):
        raise ConfigError(
            "--self-host-per-mtok sets input and output alike; give it alone, or --self-host-per-mtok-in and/or "
            "--self-host-per-mtok-out instead"
        )
    if both is not None:
        rate_in = rate_out = both
    if args.self_host_monthly is None and (rate_in is not None or rate_out is not None):
        raise ConfigError(
            "a --self-host-per-mtok* cost needs --self-host-monthly USD: self-hosting's fixed cost a month "
            "(GPUs, ops; 0 if none)"
        )
    return rate_in, rate_out


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
    self_host_in, self_host_out = _self_host_rates(args)
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
                    self_host_monthly_usd=args.self_host_monthly,
                    self_host_input_per_mtok=self_host_in,
                    self_host_output_per_mtok=self_host_out,
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
        "self_hosting": _self_hosting_json(result.self_hosting),
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
    if result.self_hosting is not None:
        _print_self_hosting(result.self_hosting, result.route)
    if result.assumptions:
        print("assumptions:")
        for a in result.assumptions:
            print(f"  - {a}")
    return EXIT_OK


def _ratio(n: int, d: int) -> Decimal | None:
    return Decimal(n) / d if d else None


def _self_hosting_json(s: SelfHosting | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "monthly_usd": s.price.monthly_usd,
        "input_per_mtok": s.price.input_per_mtok,
        "output_per_mtok": s.price.output_per_mtok,
        "attempts_per_task": s.attempts_per_task,
        "input_tokens_per_task": s.input_tokens_per_task,
        "output_tokens_per_task": s.output_tokens_per_task,
        "cost_per_task_usd": s.cost_per_task_usd,
        "api_cost_per_task_usd": s.api_cost_per_task_usd,
        "verdict": s.verdict,
        "break_even_tasks_per_month": s.break_even_tasks_per_month,
        "first_task_ended_at": s.first_ended_at,
        "last_task_ended_at": s.last_ended_at,
        "span_days": s.span_days,
        "volume_measured": s.tasks_per_month is not None,
        "tasks_per_month": s.tasks_per_month,
        "api_monthly_cost_usd": s.api_monthly_cost_usd,
        "monthly_cost_usd": s.monthly_cost_usd,
        "api_cost_per_success_usd": s.api_cost_per_success_usd,
        "cost_per_success_usd": s.cost_per_success_usd,
    }


def _print_self_hosting(s: SelfHosting, route: str) -> None:
    from costtrace.analysis.self_hosting import break_even_text, duration_text, volume_figure

    p = s.price
    per_mtok = f"${p.input_per_mtok.normalize():f}/${p.output_per_mtok.normalize():f} per MTok input/output"
    if s.tasks_per_month is None:
        volume = "the monthly volume is not measured (see the note)"
    else:
        volume = f"at the measured {volume_figure(s.tasks_per_month)} tasks a month"
    print()
    print(f"Self-hosting {route!r}: {usd(p.monthly_usd)} a month + {per_mtok}; {volume}")
    rows = [
        ("fixed cost a month", _ZERO, p.monthly_usd),
        ("token cost per task", s.api_cost_per_task_usd, s.cost_per_task_usd),
        ("cost a month", s.api_monthly_cost_usd, s.monthly_cost_usd),
        ("cost per successful task", s.api_cost_per_success_usd, s.cost_per_success_usd),
    ]
    columns = [Column("metric", ""), Column("api", "API route", "rtext"), Column("self", "self-hosted", "rtext")]
    print(
        out.table(
            columns,
            [{"metric": m, "api": out.display(a, "usd"), "self": out.display(h, "usd")} for m, a, h in rows],
        )
    )
    print(break_even_text(s))
    if s.tasks_per_month is None:
        print(
            f"note: the {s.tasks} task(s) span {duration_text(s.span)}, under a day: too short to measure a monthly "
            "volume, so the monthly figures ('-') are left out rather than extrapolated (see the assumptions)"
        )
