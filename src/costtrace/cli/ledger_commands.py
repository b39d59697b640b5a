"""The ``costtrace`` commands that read the ledger: report, compare, tco, whatif, budgets.

:mod:`costtrace.cli` owns the command line and registers these with :func:`add_commands`; this module
holds their options and handlers so that ``cli.py`` stays small. Every handler opens the ledger
read-only (:func:`open_ledger` never creates a database), builds rows, and prints them with the
writers of :mod:`costtrace.cli.output`. Bad input raises :class:`~costtrace.errors.ConfigError`, which
``cli.main`` prints as one line and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costtrace import _validate
from costtrace._money import usd
from costtrace.cli import output as out
from costtrace.cli.output import Column
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.analysis.stats import Filters, ScopeStats

EXIT_OK = 0

NO_LEDGER_HINT = "run your app with costtrace.configure_ledger() or `costtrace demo` first"
FILTER_FLAGS = ("feature", "task", "route", "team", "customer")


# --- arguments ---------------------------------------------------------------------------------------


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a :mod:`costtrace._validate` parser: its ConfigError becomes a usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text.strip().replace(",", "").replace("_", ""))
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value=", "", 1)) from None

    convert.__name__ = parse.__name__
    return convert


def _usd(text: str) -> Decimal:
    return _validate.usd(text.removeprefix("$"), "value")


def _price(text: str) -> Decimal:
    return _validate.price_per_mtok(text.removeprefix("$"), "value")


def _hours(text: str) -> Decimal:
    return _validate.number(text, "value", maximum=MAX_REWORK_HOURS)


def _tokens(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"value={text!r} is not a whole number of tokens") from None
    return _validate.count(n, "value", maximum=_validate.MAX_TOKENS)


def _min_tasks(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"value={text!r} is not a whole number of tasks") from None
    return _validate.count(n, "value", minimum=1)


def _multiplier(text: str) -> Decimal:
    return _validate.number(text, "value", maximum=MAX_TOKEN_MULTIPLIER, above_minimum=True)


def _share(text: str) -> Decimal:
    """A failure rate: ``0.12`` or ``12%``, between 0 and 1."""
    if text.endswith("%"):
        try:
            text = str(Decimal(text[:-1]) / 100)
        except InvalidOperation:
            raise ConfigError(f"value={text!r} is not a rate such as 0.12 or 12%") from None
    return _validate.fraction(text, "value", hint="a rate such as 0.12 or 12%")


MAX_REWORK_HOURS = Decimal(1_000_000)
MAX_TOKEN_MULTIPLIER = Decimal(1_000)
usd_amount = _arg(_usd)
"""A USD amount argument such as ``2.50`` or ``$2.50`` (``--rework-cost``, ``--hourly-rate``), 0 to 1e9."""
_number = _arg(_price)
_hours_arg = _arg(_hours)
_count = _arg(_tokens)
_positive = _arg(_multiplier)
_rate = _arg(_share)
_min_tasks_arg = _arg(_min_tasks)


def _failure_rate_pair(text: str) -> tuple[str, Decimal]:
    """``--failure-rate MODEL=P``: a model's failure rate (0.12 or 12%) for ``whatif``."""
    model, sep, rate = text.partition("=")
    if not sep or not model.strip():
        raise argparse.ArgumentTypeError(f"expected MODEL=RATE such as gpt-4.1=0.1, got {text!r}")
    return model.strip(), _rate(rate)


def _ledger_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--ledger",
        metavar="URL",
        help="ledger database URL (default: $COSTTRACE_LEDGER_URL, else ~/.local/share/costtrace/ledger.db)",
    )
    return p


def _format_parent(*, html: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--format",
        choices=out.FORMATS,
        default="table",
        help="table for reading (rounded), json or csv with exact values (default: %(default)s)",
    )
    return p


def _filter_parent(*, feature_required: bool = False, route: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("filters")
    g.add_argument("--feature", required=feature_required, help="only tasks of this feature")
    g.add_argument("--task", help="only tasks with this name")
    if route:
        g.add_argument("--route", help="only tasks with this route, e.g. 'gpt-4o-mini->gpt-4o'")
    g.add_argument("--team", help="only tasks of this team")
    g.add_argument("--customer", help="only tasks of this customer")
    g.add_argument("--since", metavar="WHEN", help="tasks ended since: 7d, 24h, 30m, 2w or an ISO date/time (UTC)")
    g.add_argument("--until", metavar="WHEN", help="tasks ended before: same forms as --since")
    return p


def add_commands(commands: Any) -> None:
    """Register report, compare, tco, whatif and budgets on the ``costtrace`` subparsers."""
    ledger, fmt = _ledger_parent(), _format_parent()

    p = commands.add_parser(
        "report",
        parents=[ledger, _filter_parent(), fmt],
        help="cost per successful task, success rate, retry tax... per feature (or any grouping)",
        description=(
            "Read the ledger and print, per group: tasks, success and first-pass rates, attempts, cost per "
            "task (mean, p95), cost per successful task (all spend, failures included, / successes), total "
            "cost, retry tax and escalations. --html writes a self-contained page with charts."
        ),
    )
    p.add_argument(
        "--by",
        default="feature",
        metavar="KEYS",
        help="comma-separated grouping: feature, task, route, team, customer, hour, day, week, month "
        "(default: %(default)s)",
    )
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with charts to FILE")
    p.set_defaults(handler=report_command)

    p = commands.add_parser(
        "compare",
        parents=[ledger, _filter_parent(feature_required=True), fmt],
        help="one feature's routes side by side, and which route to use",
        description="Per-route figures of one feature side by side, with the routing advice when there is one.",
    )
    p.add_argument("--rework-cost", type=usd_amount, metavar="USD", help="cost of one failed task outside the model")
    p.add_argument(
        "--min-tasks",
        type=_min_tasks_arg,
        default=30,
        metavar="N",
        help="tasks a route needs for advice (default: %(default)s)",
    )
    p.set_defaults(handler=compare_command)

    p = commands.add_parser(
        "whatif",
        parents=[ledger, _filter_parent(route=False), fmt],
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
    p.set_defaults(handler=whatif_command)

    p = commands.add_parser(
        "tco",
        parents=[ledger, _filter_parent(), fmt],
        help="total cost of ownership per task: cheap vs frontier model, and the break-even failure rate",
        description=(
            "TCO per task = token cost C + failure rate p x rework cost L. Give the two models' prices, the "
            "tokens per attempt and the failure rates to compare them; or --feature to use the figures "
            "measured in the ledger for each of the feature's routes."
        ),
    )
    g = p.add_argument_group("calculator")
    g.add_argument("--example", action="store_true", help="print the worked example of docs (no other flag needed)")
    g.add_argument("--input-tokens", type=_count, metavar="N", help="input tokens per attempt")
    g.add_argument("--output-tokens", type=_count, metavar="N", help="output tokens per attempt")
    g.add_argument("--cheap-input-price", type=_number, metavar="USD", help="cheap model: USD per million input tokens")
    g.add_argument(
        "--cheap-output-price", type=_number, metavar="USD", help="cheap model: USD per million output tokens"
    )
    g.add_argument("--frontier-input-price", type=_number, metavar="USD", help="frontier model: USD per MTok input")
    g.add_argument("--frontier-output-price", type=_number, metavar="USD", help="frontier model: USD per MTok output")
    g.add_argument("--cheap-failure-rate", type=_rate, metavar="P", help="cheap model's failure rate (0.12 or 12%%)")
    g.add_argument("--frontier-failure-rate", type=_rate, metavar="P", help="frontier model's failure rate")
    g.add_argument(
        "--frontier-token-multiplier",
        type=_positive,
        default=Decimal(1),
        metavar="X",
        help="frontier tokens per cheap token, e.g. 1.3 for a more verbose model (default: 1)",
    )
    g.add_argument("--rework-cost", type=usd_amount, metavar="USD", help="cost of one failure outside the model")
    g.add_argument("--hourly-rate", type=usd_amount, metavar="USD", help="with --hours: rework = rate x hours")
    g.add_argument("--hours", type=_hours_arg, metavar="H", help="hours of human rework per failure")
    p.set_defaults(handler=tco_command)

    p = commands.add_parser(
        "budgets",
        parents=[ledger, fmt],
        help="each budget's spend, limit, utilisation and reset time",
        description="The budgets stored in the ledger with their current period's spend and reservations.",
    )
    p.set_defaults(handler=budgets_command)


# --- the ledger ----------------------------------------------------------------------------------------


def ledger_url(args: argparse.Namespace) -> str:
    from costtrace.spend.engine import default_url

    url: str | None = getattr(args, "ledger", None)
    return url.strip() if url and url.strip() else default_url()


def open_ledger(url: str) -> Engine:
    """The engine of an existing ledger; never creates one.

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
    engine = make_engine(url, read_only=True)
    try:
        with _reading(shown), engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            version = schema.current_version(conn) if "costtrace_tasks" in tables else 0
    except BaseException:
        engine.dispose()
        raise
    if "costtrace_tasks" not in tables:
        engine.dispose()
        raise ConfigError(f"no ledger at {shown} (no costtrace tables there); {NO_LEDGER_HINT}")
    if version != schema.SCHEMA_VERSION:
        engine.dispose()
        if version > schema.SCHEMA_VERSION:
            raise ConfigError(
                f"the ledger at {shown} has schema version {version}, newer than this costtrace understands "
                f"({schema.SCHEMA_VERSION}); upgrade costtrace (pip install -U costtrace)"
            )
        raise ConfigError(
            f"the ledger at {shown} has schema version {version}, older than this costtrace's "
            f"({schema.SCHEMA_VERSION}); reports never write, so let your app (costtrace.configure_ledger) "
            "upgrade it first"
        )
    return engine


@contextmanager
def _reading(shown: str) -> Iterator[None]:
    """Database errors while reading -> one-line ConfigError naming the ledger."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(f"cannot read the ledger at {shown}: {reason}") from exc


def _shown(url: str) -> str:
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


# --- filters -----------------------------------------------------------------------------------------


def _analytics() -> Any:
    try:
        from costtrace.analysis import stats as analytics
    except ImportError as exc:  # pragma: no cover - only in a partial checkout
        raise ConfigError(
            f"this costtrace install lacks costtrace.analysis.stats ({exc}); reinstall costtrace"
        ) from exc
    return analytics


def parse_by(text: str) -> tuple[str, ...]:
    """``--by feature,route`` -> ``("feature", "route")``, checked against ``analytics.GROUP_KEYS``."""
    allowed: tuple[str, ...] = tuple(_analytics().GROUP_KEYS)
    keys = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    if not keys:
        raise ConfigError(f"--by {text!r} is empty; use one or more of {', '.join(allowed)}, comma-separated")
    for k in keys:
        if k not in allowed:
            raise ConfigError(f"--by {k!r} is not a grouping; use one or more of {', '.join(allowed)}, comma-separated")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--by {text!r} repeats a key; list each of {', '.join(allowed)} at most once")
    return keys


def _when(flag: str, text: str, now: datetime) -> datetime:
    analytics = _analytics()
    try:
        parsed: datetime = analytics.parse_since(text, now=now)
    except ConfigError as exc:
        raise ConfigError(f"--{flag} {text!r}: {exc}") from None
    return parsed


def build_filters(args: argparse.Namespace, *, now: datetime | None = None) -> Filters:
    analytics = _analytics()
    now = now or datetime.now(UTC)
    since = _when("since", args.since, now) if getattr(args, "since", None) else None
    until = _when("until", args.until, now) if getattr(args, "until", None) else None
    if since is not None and until is not None and _utc(since) >= _utc(until):
        raise ConfigError(f"--since {args.since!r} is not before --until {args.until!r}; swap them or widen the window")
    values = {k: (getattr(args, k, None) or None) for k in FILTER_FLAGS}
    filters: Filters = analytics.Filters(since=since, until=until, **values)
    return filters


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def window_text(filters: Filters) -> str:
    def fmt(at: datetime) -> str:
        return _utc(at).strftime("%Y-%m-%d %H:%M UTC")

    if filters.since and filters.until:
        return f"{fmt(filters.since)} to {fmt(filters.until)}"
    if filters.since:
        return f"since {fmt(filters.since)}"
    if filters.until:
        return f"before {fmt(filters.until)}"
    return "all time"


def _filter_text(filters: Filters) -> str:
    parts = [f"--{k} {getattr(filters, k)!r}" for k in FILTER_FLAGS if getattr(filters, k) is not None]
    return " ".join(parts)


def no_tasks_error(engine: Engine, shown: str, filters: Filters) -> ConfigError:
    """The error for an empty result: an empty ledger, an empty window, or filters matching nothing."""
    import sqlalchemy as sa

    from costtrace.spend import schema

    t = schema.tasks
    with _reading(shown), engine.connect() as conn:
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
    what = _filter_text(filters)
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


# --- rows ----------------------------------------------------------------------------------------------


def stats_columns(by: Sequence[str]) -> list[Column]:
    keys = [Column(k, k, "text") for k in by]
    return [
        *keys,
        Column("tasks", "tasks", "int"),
        Column("successes", "successes", "int", table=False),
        Column("success_rate", "success", "pct"),
        Column("first_pass_rate", "1st pass", "pct"),
        Column("mean_attempts", "attempts", "num"),
        Column("cost_per_task_mean_usd", "cost/task", "usd"),
        Column("cost_per_task_p50_usd", "p50 cost/task", "usd", table=False),
        Column("cost_per_task_p95_usd", "p95", "usd"),
        Column("cost_per_successful_task_usd", "cost/success", "usd"),
        Column("total_cost_usd", "total", "usd"),
        Column("wasted_cost_usd", "wasted_cost_usd", "usd", table=False),
        Column("retry_tax", "retry tax", "pct"),
        Column("escalation_rate", "escalated", "pct"),
        Column("escalation_premium_usd", "escalation_premium_usd", "usd", table=False),
        Column("cache_savings_usd", "cache_savings_usd", "usd", table=False),
        Column("rework_cost_usd", "rework_cost_usd", "usd", table=False),
        Column("input_tokens_per_task_mean", "input_tokens_per_task_mean", "num", table=False),
        Column("input_tokens_per_task_p50", "input_tokens_per_task_p50", "num", table=False),
        Column("input_tokens_per_task_p95", "input_tokens_per_task_p95", "num", table=False),
        Column("output_tokens_per_task_mean", "output_tokens_per_task_mean", "num", table=False),
        Column("output_tokens_per_task_p50", "output_tokens_per_task_p50", "num", table=False),
        Column("output_tokens_per_task_p95", "output_tokens_per_task_p95", "num", table=False),
        Column("llm_calls", "llm_calls", "int", table=False),
        Column("estimated_calls", "estimated_calls", "int", table=False),
        Column("estimated_call_share", "estimated_call_share", "pct", table=False),
        Column("unpriced_calls", "unpriced", "int"),
        Column("cost_complete", "cost_complete", "text", table=False),
    ]


def stats_row(s: ScopeStats) -> dict[str, Any]:
    row: dict[str, Any] = dict(s.key)
    complete = s.cost_complete  # else every cost of the row is a lower bound, shown ">=$x" on the row

    def cost(value: Decimal | None) -> Decimal | None:
        return out.at_least(value, complete)

    row.update(
        tasks=s.tasks,
        successes=s.successes,
        success_rate=s.success_rate,
        first_pass_rate=s.first_pass_rate,
        mean_attempts=s.mean_attempts,
        cost_per_task_mean_usd=cost(s.cost_per_task_usd.mean),
        cost_per_task_p50_usd=cost(s.cost_per_task_usd.p50),
        cost_per_task_p95_usd=cost(s.cost_per_task_usd.p95),
        cost_per_successful_task_usd=cost(s.cost_per_successful_task_usd),
        total_cost_usd=cost(s.total_cost_usd),
        wasted_cost_usd=cost(s.wasted_cost_usd),
        retry_tax=s.retry_tax,
        escalation_rate=s.escalation_rate,
        escalation_premium_usd=s.escalation_premium_usd,
        cache_savings_usd=s.cache_savings_usd,
        rework_cost_usd=s.rework_cost_usd,
        llm_calls=s.llm_calls,
        estimated_calls=s.estimated_calls,
        estimated_call_share=s.estimated_call_share,
        unpriced_calls=s.unpriced_calls,
        cost_complete=s.cost_complete,
    )
    for name, dist in (("input", s.input_tokens_per_task), ("output", s.output_tokens_per_task)):
        row[f"{name}_tokens_per_task_mean"] = dist.mean
        row[f"{name}_tokens_per_task_p50"] = dist.p50
        row[f"{name}_tokens_per_task_p95"] = dist.p95
    return row


def stats_notes(stats: Sequence[ScopeStats]) -> list[str]:
    notes = []
    unpriced = sum(s.unpriced_calls for s in stats)
    if unpriced:
        notes.append(
            f"{unpriced:,} call(s) had no price or unknown usage: the costs of their groups are lower bounds, "
            "shown >= (add the models to the price list; see docs/pricing.md)"
        )
    estimated = sum(s.estimated_calls for s in stats)
    calls = sum(s.llm_calls for s in stats)
    if estimated and calls:
        notes.append(f"{estimated:,} of {calls:,} calls have estimated token counts (no usage from the provider)")
    return notes


def emit(
    fmt: str,
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    *,
    title: str = "",
    notes: Sequence[str] = (),
    payload: Any = None,
) -> None:
    """Print ``rows`` in ``fmt``; table mode adds the title above and the notes below (on stdout)."""
    if fmt == "json":
        print(out.json_text(out.records(columns, rows) if payload is None else payload))
    elif fmt == "csv":
        print(out.csv_text(columns, rows))
    else:
        if title:
            print(title)
        print(out.table(columns, rows))
        for n in notes:
            print(f"note: {n}")


def _progress(label: str) -> out.Progress:
    return out.Progress(label)


def _scope_stats(engine: Engine, shown: str, *, by: Sequence[str], filters: Filters) -> list[ScopeStats]:
    analytics = _analytics()
    bar = _progress("reading the ledger")
    try:
        with _reading(shown):
            stats: list[ScopeStats] = analytics.scope_stats(engine, by=tuple(by), filters=filters, progress=bar)
    finally:
        bar.close()
    return stats


# --- report ------------------------------------------------------------------------------------------


def report_command(args: argparse.Namespace) -> int:
    by = parse_by(args.by)
    filters = build_filters(args)
    url = ledger_url(args)
    shown = _shown(url)
    engine = open_ledger(url)
    try:
        stats = _scope_stats(engine, shown, by=by, filters=filters)
        if not stats:
            raise no_tasks_error(engine, shown, filters)
        columns = stats_columns(by)
        rows = [stats_row(s) for s in stats]
        notes = stats_notes(stats)
        if args.html:
            _write_html(args.html, engine, shown, filters, by, columns, rows, notes)
        if not args.html or args.format != "table":
            title = f"Cost per successful task by {', '.join(by)} ({window_text(filters)}, ledger {shown})"
            emit(args.format, columns, rows, title=title, notes=notes)
    finally:
        engine.dispose()
    return EXIT_OK


def _total(stats: Sequence[ScopeStats]) -> dict[str, Any]:
    tasks = sum(s.tasks for s in stats)
    successes = sum(s.successes for s in stats)
    total = sum((s.total_cost_usd for s in stats), Decimal(0))
    wasted = sum((s.wasted_cost_usd for s in stats), Decimal(0))
    unpriced = sum(s.unpriced_calls for s in stats)
    complete = unpriced == 0
    return {
        "tasks": tasks,
        "successes": successes,
        "total_cost_usd": out.at_least(total, complete),
        "wasted_cost_usd": out.at_least(wasted, complete),
        "success_rate": Decimal(successes) / tasks if tasks else None,
        "cost_per_successful_task_usd": out.at_least(total / successes, complete) if successes else None,
        "retry_tax": wasted / total if total else None,
        "unpriced_calls": unpriced,
    }


def _write_html(
    path_text: str,
    engine: Engine,
    shown: str,
    filters: Filters,
    by: Sequence[str],
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    notes: Sequence[str],
) -> None:
    from costtrace._version import __version__
    from costtrace.cli import html_report as h

    analytics = _analytics()
    by_day = _scope_stats(engine, shown, by=("day",), filters=filters)
    by_feature = _scope_stats(engine, shown, by=("feature",), filters=filters)
    with _reading(shown):
        models = analytics.model_costs(engine, filters=filters)
    total = _total(by_feature)
    days = sorted(by_day, key=lambda s: str(s.key.get("day")))
    features = sorted(by_feature, key=lambda s: s.total_cost_usd, reverse=True)
    page = h.render(
        title="costtrace report",
        meta=[
            ("Ledger", shown),
            ("Window", window_text(filters)),
            *((f"Filter {k}", str(getattr(filters, k))) for k in FILTER_FLAGS if getattr(filters, k) is not None),
        ],
        kpis=[
            h.Kpi(
                "Cost per successful task",
                out.display(total["cost_per_successful_task_usd"], "usd"),
                "all spend / successes" + (", a lower bound (unpriced calls)" if total["unpriced_calls"] else ""),
            ),
            h.Kpi(
                "Success rate", out.pct(total["success_rate"]), f"{total['successes']:,} of {total['tasks']:,} tasks"
            ),
            h.Kpi("Tasks", f"{total['tasks']:,}", f"{len(by_feature)} feature(s)"),
            h.Kpi(
                "Total spend",
                out.display(total["total_cost_usd"], "usd"),
                "priced calls"
                if not total["unpriced_calls"]
                else f"{total['unpriced_calls']:,} unpriced call(s) left out",
            ),
            h.Kpi("Retry tax", out.pct(total["retry_tax"]), "spend on failed attempts"),
            h.Kpi("Wasted", out.display(total["wasted_cost_usd"], "usd"), "failed attempts' cost"),
        ],
        over_time=_day_points(days),
        cost_by_feature=[
            h.Bar(
                str(s.key.get("feature") or "(none)"),
                (out.at_least(s.total_cost_usd, s.cost_complete),),
                "" if s.cost_complete else f"a lower bound: {s.unpriced_calls:,} unpriced call(s)",
            )
            for s in features
        ],
        retry_tax_by_feature=[h.Bar(str(s.key.get("feature") or "(none)"), (s.retry_tax,)) for s in features],
        models=[h.Bar(m.model, (m.blended_list_per_mtok, m.effective_per_mtok_useful)) for m in models],
        table=(columns, rows),
        table_title=f"By {', '.join(by)}",
        notes=notes,
        version=__version__,
    )
    path = Path(path_text).expanduser()
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--html {path_text!r}: cannot write the report: {exc.strerror or exc}") from exc
    print(f"costtrace report: wrote {path} ({total['tasks']:,} tasks, {len(days)} day(s))", file=sys.stderr)


def _day_points(days: Sequence[ScopeStats]) -> list[Any]:
    """One point per calendar day from the first to the last (a gap where a day has no task)."""
    from datetime import date

    from costtrace.cli import html_report as h

    by_day = {h.day_label(s.key.get("day")): s for s in days}
    try:
        first, last = date.fromisoformat(min(by_day)), date.fromisoformat(max(by_day))
    except ValueError:
        labels = sorted(by_day)
    else:
        span = (last - first).days
        labels = [(first + timedelta(days=i)).isoformat() for i in range(span + 1)] if span <= 400 else sorted(by_day)
    points = []
    for label in labels:
        st = by_day.get(label)
        if st is None:
            points.append(h.Point(label, None, "no tasks"))
        else:
            note = f"{st.successes}/{st.tasks} tasks succeeded"
            if not st.cost_complete:
                note += f"; a lower bound: {st.unpriced_calls:,} unpriced call(s)"
            points.append(h.Point(label, out.at_least(st.cost_per_successful_task_usd, st.cost_complete), note))
    return points


# --- compare -----------------------------------------------------------------------------------------

COMPARE_METRICS: tuple[tuple[str, str, out.Kind], ...] = (
    ("tasks", "tasks", "int"),
    ("success_rate", "success rate", "pct"),
    ("first_pass_rate", "first-pass rate", "pct"),
    ("mean_attempts", "attempts per task", "num"),
    ("cost_per_task_mean_usd", "cost per task (mean)", "usd"),
    ("cost_per_task_p95_usd", "cost per task (p95)", "usd"),
    ("cost_per_successful_task_usd", "cost per successful task", "usd"),
    ("total_cost_usd", "total cost", "usd"),
    ("retry_tax", "retry tax", "pct"),
    ("escalation_rate", "escalation rate", "pct"),
    ("escalation_premium_usd", "escalation premium", "usd"),
    ("rework_cost_usd", "recorded rework", "usd"),
    ("unpriced_calls", "unpriced calls", "int"),
)


def compare_command(args: argparse.Namespace) -> int:
    filters = build_filters(args)
    url = ledger_url(args)
    shown = _shown(url)
    engine = open_ledger(url)
    try:
        stats = _scope_stats(engine, shown, by=("route",), filters=filters)
        if not stats:
            raise no_tasks_error(engine, shown, filters)
        stats = sorted(stats, key=lambda s: (s.cost_per_successful_task_usd is None, s.cost_per_successful_task_usd))
        advice = _advice(engine, shown, filters, args)
    finally:
        engine.dispose()
    columns = stats_columns(("route",))
    rows = [stats_row(s) for s in stats]
    if args.format == "json":
        print(
            out.json_text({"feature": args.feature, "window": window_text(filters), "routes": rows, "advice": advice})
        )
        return EXIT_OK
    if args.format == "csv":
        print(out.csv_text(columns, rows))
        return EXIT_OK
    routes = [str(r.get("route") or "(none)") for r in rows]
    side_cols = [Column("metric", "", "text")] + [Column(f"r{i}", r, "text") for i, r in enumerate(routes)]
    side_rows = [
        {"metric": label, **{f"r{i}": out.display(r.get(key), kind) for i, r in enumerate(rows)}}
        for key, label, kind in COMPARE_METRICS
    ]
    side_cols = [side_cols[0]] + [Column(c.key, c.header, "rtext") for c in side_cols[1:]]
    print(f"Feature {args.feature!r}: routes side by side ({window_text(filters)}, ledger {shown})")
    print(out.table(side_cols, side_rows))
    for n in stats_notes(stats):
        print(f"note: {n}")
    if advice is None:
        return EXIT_OK
    for a in advice:
        print()
        metric = "TCO per task" if a.get("metric") == "tco" else "cost per successful task"
        best = a.get("best_route")
        print(f"advice: use {best} (lowest {metric})" if best else f"advice: none (no route has a {metric})")
        for c in a.get("candidates") or []:
            lo, hi = c.get("metric_low_usd"), c.get("metric_high_usd")
            span = f" ({usd(lo)} to {'unbounded' if hi is None else usd(hi)})" if lo is not None else ""
            print(
                f"  {c.get('route')}: {metric} {usd(c.get('metric_usd'))}{span}; success "
                f"{out.pct(c.get('success_rate'))} (95% CI {out.pct(c.get('success_rate_low'))}-"
                f"{out.pct(c.get('success_rate_high'))}) over {c.get('tasks')} tasks"
            )
        for w in a.get("warnings") or []:
            print(f"warning: {w}")
    return EXIT_OK


def _advice(engine: Engine, shown: str, filters: Filters, args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """routing.advise as plain dicts, or None when this install has no routing module."""
    try:
        from costtrace.analysis import routing
    except ImportError:
        return None
    import dataclasses

    with _reading(shown):
        advice = routing.advise(engine, filters=filters, rework_cost_usd=args.rework_cost, min_tasks=args.min_tasks)
    return [dataclasses.asdict(a) for a in advice]


# --- whatif ------------------------------------------------------------------------------------------


def whatif_command(args: argparse.Namespace) -> int:
    from costtrace.analysis import routing

    target = str(args.to_route).strip()
    if not target or any(not m.strip() for m in target.split("->")):
        raise ConfigError(
            f"--route {args.to_route!r} is not a route; use 'gpt-4o' (one model) or 'gpt-4o-mini->gpt-4o' (cascade)"
        )
    filters = build_filters(args)
    url = ledger_url(args)
    shown = _shown(url)
    engine = open_ledger(url)
    try:
        try:
            with _reading(shown):
                result = routing.whatif(
                    engine,
                    route=target,
                    filters=filters,
                    rework_cost_usd=args.rework_cost,
                    failure_rates=dict(args.failure_rates),
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
    if args.format == "csv":
        print(out.csv_text([*columns, Column("assumptions", "assumptions")], [row]))
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


# --- tco ---------------------------------------------------------------------------------------------

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
    if args.feature:
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
    if args.format == "csv":
        print(out.csv_text(TCO_COLUMNS, rows))
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
    shown = _shown(url)
    engine = open_ledger(url)
    try:
        with _reading(shown):
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


# --- budgets -----------------------------------------------------------------------------------------


def _duration(td: timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def budgets_command(args: argparse.Namespace) -> int:
    from costtrace.spend import store

    url = ledger_url(args)
    shown = _shown(url)
    engine = open_ledger(url)
    try:
        with _reading(shown):
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
    emit(args.format, columns, rows, title=f"Budgets (ledger {shown}, now {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    unpriced = sum(r["unpriced_calls"] for r in rows)
    if unpriced and args.format == "table":
        print(f"note: {unpriced:,} unpriced call(s) are not in the spend figures (no price: see docs/pricing.md)")
    return EXIT_OK
