"""The options the ledger commands share, and the argparse types of their values.

- parents: ``--ledger URL`` (:func:`ledger_parent`), ``--format table|json|csv`` (:func:`format_parent`)
  and the filters ``--feature --task --route --team --customer --since --until --where KEY=VALUE``
  (:func:`filter_parent`);
- the filters as a :class:`~costtrace.analysis.stats.Filters` (:func:`build_filters`), ``--by`` as
  grouping keys (:func:`parse_by`), and the window as text for titles (:func:`window_text`);
- argparse types that turn a :class:`~costtrace.errors.ConfigError` of :mod:`costtrace._validate` into a
  usage error: ``usd_amount("$2.50") == Decimal("2.50")``, ``failure_rate("12%") == Decimal("0.12")``.

Example:
    >>> p = argparse.ArgumentParser(parents=[ledger_parent(), filter_parent(), format_parent()])
    >>> args = p.parse_args(["--feature", "support", "--since", "7d", "--where", "region=eu"])
    >>> build_filters(args).feature, build_filters(args).dimensions
    ('support', (('region', 'eu'),))
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from costtrace import _validate
from costtrace.cli import output as out
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from costtrace.analysis.stats import Filters

FILTER_FLAGS = ("feature", "task", "route", "team", "customer")


# --- argument types ----------------------------------------------------------------------------------


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
price_per_mtok = _arg(_price)
"""A price in USD per million tokens (``--cheap-input-price 0.15``)."""
rework_hours = _arg(_hours)
"""Hours of rework per failure (``--hours 0.25``), up to ``MAX_REWORK_HOURS``."""
token_count = _arg(_tokens)
"""A whole number of tokens (``--input-tokens 1,200``)."""
token_multiplier = _arg(_multiplier)
"""A positive factor (``--frontier-token-multiplier 1.3``), up to ``MAX_TOKEN_MULTIPLIER``."""
failure_rate = _arg(_share)
"""A rate between 0 and 1: ``0.12`` or ``12%`` (``--cheap-failure-rate``, ``--failure-rate MODEL=P``)."""
task_count = _arg(_min_tasks)
"""A whole number of tasks, at least 1 (``--min-tasks 30``)."""


def where_pair(text: str) -> tuple[str, str]:
    """``--where region=eu`` -> ``("region", "eu")``: split at the first ``=``, both sides kept exactly.

    Example:
        >>> where_pair("plan.tier=a=b")
        ('plan.tier', 'a=b')
    """
    key, eq, value = text.partition("=")
    if not eq or not key or not value:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE; give a dimension and its value, e.g. --where region=eu"
        )
    return key, value


# --- shared options ----------------------------------------------------------------------------------


def ledger_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--ledger",
        metavar="URL",
        help="ledger database URL (default: $COSTTRACE_LEDGER_URL, else ~/.local/share/costtrace/ledger.db)",
    )
    return p


def format_parent(*, html: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--format",
        choices=out.FORMATS,
        default="table",
        help="table for reading (rounded), json or csv with exact values (default: %(default)s)",
    )
    return p


def filter_parent(*, feature_required: bool = False, route: bool = True) -> argparse.ArgumentParser:
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
    g.add_argument(
        "--where",
        type=where_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only tasks whose dimension KEY (any, custom ones included) has exactly VALUE, e.g. region=eu; "
        "repeat to require several",
    )
    return p


# --- filters -----------------------------------------------------------------------------------------


def analytics_module() -> Any:
    try:
        from costtrace.analysis import stats as analytics
    except ImportError as exc:  # pragma: no cover - only in a partial checkout
        raise ConfigError(
            f"this costtrace install lacks costtrace.analysis.stats ({exc}); reinstall costtrace"
        ) from exc
    return analytics


def parse_by(text: str) -> tuple[str, ...]:
    """``--by feature,route`` -> ``("feature", "route")``, checked against ``analytics.GROUP_KEYS``."""
    allowed: tuple[str, ...] = tuple(analytics_module().GROUP_KEYS)
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
    analytics = analytics_module()
    try:
        parsed: datetime = analytics.parse_since(text, now=now)
    except ConfigError as exc:
        raise ConfigError(f"--{flag} {text!r}: {exc}") from None
    return parsed


def build_filters(args: argparse.Namespace, *, now: datetime | None = None) -> Filters:
    analytics = analytics_module()
    now = now or datetime.now(UTC)
    since = _when("since", args.since, now) if getattr(args, "since", None) else None
    until = _when("until", args.until, now) if getattr(args, "until", None) else None
    if since is not None and until is not None and _utc(since) >= _utc(until):
        raise ConfigError(f"--since {args.since!r} is not before --until {args.until!r}; swap them or widen the window")
    values = {k: (getattr(args, k, None) or None) for k in FILTER_FLAGS}
    dimensions: dict[str, str] = {}
    for key, value in getattr(args, "where", None) or ():
        if key in FILTER_FLAGS:  # --where team=x is --team x
            if values[key] not in (None, value):
                raise ConfigError(f"--where {key}={value} contradicts --{key} {values[key]!r}; give one of them")
            values[key] = value
            continue
        if dimensions.get(key, value) != value:
            raise ConfigError(
                f"--where gives {key!r} twice, as {dimensions[key]!r} and {value!r}; a task has one value per "
                "dimension, so give one"
            )
        dimensions[key] = value
    try:
        filters: Filters = analytics.Filters(since=since, until=until, dimensions=dimensions, **values)
    except ConfigError as exc:  # since/until are checked above: a --where pair
        raise ConfigError(f"--where: {exc}") from None
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


def filter_text(filters: Filters) -> str:
    """The filters as flags: ``--feature 'support' --where 'region=eu'`` (the window is :func:`window_text`)."""
    parts = [f"--{k} {getattr(filters, k)!r}" for k in FILTER_FLAGS if getattr(filters, k) is not None]
    parts += [f"--where {f'{k}={v}'!r}" for k, v in filters.dimensions]
    return " ".join(parts)
