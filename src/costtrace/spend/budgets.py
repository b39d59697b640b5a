"""Budgets: what may be spent, by whom, per period, and what happens when it runs out.

A :class:`Budget` has a scope (feature, team, customer, user, task name, provider, model, any custom
dimension; several at once; none for a global budget), a limit in USD, a period (``hour``, ``day``,
``week``, ``month`` in a time zone, ``rolling`` over a window, or ``total``), alert thresholds and an
action when exhausted:

- ``alert`` (default): spend is recorded and alerts fire; calls are never blocked;
- ``block``: a hard cap. Before each call in scope, its worst-case cost (input counted locally at the
  uncached price, plus ``max_tokens`` of output or the budget's ``max_output_tokens``) is reserved
  atomically in the ledger database; a call that could exceed the limit raises
  :class:`costtrace.BudgetExceeded` before any request is sent. The reservation is replaced by the real
  cost when the call's record is written, and a process that dies mid-call releases it by lease expiry;
- ``downgrade``: like ``block``, but first tries the cheaper model ``downgrade_to`` names; the
  instrumented SDK call is sent with that model (see docs/budgets.md).

Spend is kept per period row (``costtrace_budget_spend``): a new period is a new row, so periods "reset"
exactly at their boundary with nothing lost or counted twice. Every process spending against a budget
must define it (the same config file everywhere).

Example:
    >>> costtrace.configure_ledger(budgets=[                                     # doctest: +SKIP
    ...     costtrace.Budget("support-daily", limit_usd=50, period="day", timezone="Europe/Paris",
    ...                      scope={"feature": "support"}, action="block"),
    ... ])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from costtrace import _validate
from costtrace import semconv as sc
from costtrace.errors import ConfigError

Period = Literal["hour", "day", "week", "month", "rolling", "total"]
Action = Literal["alert", "block", "downgrade"]
PERIODS: tuple[str, ...] = ("hour", "day", "week", "month", "rolling", "total")
ACTIONS: tuple[str, ...] = ("alert", "block", "downgrade")
ROLLING_BUCKETS = 24
"""A rolling window is counted in this many buckets (24h -> hourly buckets)."""
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
DEFAULT_MAX_OUTPUT_TOKENS = 4096
DEFAULT_LEASE_S = 600.0
_EPOCH = datetime(1970, 1, 1)
_END_OF_TIME = datetime(9999, 1, 1)
_SECOND = timedelta(seconds=1)

SCOPE_KEYS: Mapping[str, str] = {
    "feature": sc.FEATURE,
    "team": sc.TEAM,
    "customer": sc.CUSTOMER,
    "user": sc.USER,
}
"""Scope keys that are task dimensions, and their attribute names. ``task``, ``provider`` and ``model``
match the task name, the provider and the requested model; any other key is a custom dimension."""

DowngradeHook = Mapping[str, str] | Callable[[str], str | None]


def non_negative_usd(value: object, what: str) -> Decimal:
    """A USD amount from a number or numeric string: from 0 to ``MAX_USD``, else ConfigError naming ``what``.

    Example:
        >>> non_negative_usd("0.50", "max_cost_usd")
        Decimal('0.50')
    """
    return _validate.usd(value, what)


def parse_duration(value: str | float | timedelta, what: str = "window") -> timedelta:
    """``"30m"``, ``"24h"``, ``"7d"``, ``"2w"``, seconds, or a ``timedelta``: positive, at most 366 days.

    Example:
        >>> parse_duration("24h")
        datetime.timedelta(days=1)
    """
    return _validate.duration(value, what, maximum=_validate.MAX_WINDOW)


@dataclass(frozen=True)
class FallbackPrice:
    """The price a hard-capped budget uses for a model that has none (USD per million tokens)."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def __post_init__(self) -> None:
        for what in ("input_per_mtok", "output_per_mtok"):
            rate = _validate.price_per_mtok(getattr(self, what), f"fallback_price {what}")
            object.__setattr__(self, what, rate)

    def cost_usd(self, input_tokens: int, output_tokens: int) -> Decimal:
        return (self.input_per_mtok * input_tokens + self.output_per_mtok * output_tokens) / 1_000_000


@dataclass(frozen=True)
class Budget:
    """A spending limit over a scope and a period. See the module docstring and docs/budgets.md.

    Args:
        name: Unique id of the budget; its spend is stored under it (renaming starts from zero).
        limit_usd: The limit in USD (a number or a numeric string; stored exactly).
        period: ``hour`` | ``day`` | ``week`` (from Monday) | ``month`` | ``rolling`` | ``total``.
        timezone: IANA zone the calendar periods follow (``"Europe/Paris"``); default UTC.
        window: For ``rolling``: the window length (``"24h"``, ``"7d"``).
        scope: Which calls count: ``{"feature": "support", "team": "cx"}``; empty for every call.
        thresholds: Utilisation fractions that alert, once per period each (default 50%, 80%, 100%).
        action: ``alert`` | ``block`` | ``downgrade``.
        downgrade_to: For ``downgrade``: ``{"gpt-4o": "gpt-4o-mini"}`` or ``fn(model) -> cheaper model | None``.
        max_output_tokens: Output tokens assumed for a request that sets no ``max_tokens``.
        fallback_price: ``(input_per_mtok, output_per_mtok)`` for unpriced models under a hard cap;
            without it such calls are blocked (never counted as $0).
        fail_open: When the ledger database cannot be reached: True lets calls through and alerts;
            False blocks them with :class:`costtrace.BudgetStoreUnavailable`.
        lease_s: How long a reservation of a process that died mid-call holds before it is released.

    Example:
        >>> b = Budget("support-daily", limit_usd="50", period="day", scope={"feature": "support"})
        >>> b.limit_usd, b.action
        (Decimal('50'), 'alert')
    """

    name: str
    limit_usd: Decimal | int | float | str
    period: Period = "month"
    timezone: str = "UTC"
    window: timedelta | str | float | None = None
    scope: Mapping[str, str] = field(default_factory=dict)
    thresholds: Sequence[Decimal | float | str] = DEFAULT_THRESHOLDS
    action: Action = "alert"
    downgrade_to: DowngradeHook | None = None
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    fallback_price: FallbackPrice | tuple[object, object] | None = None
    fail_open: bool = True
    lease_s: float = DEFAULT_LEASE_S

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 255:
            raise ConfigError(f"budget name={self.name!r} must be a non-empty string of at most 255 characters")
        set_(self, "limit_usd", non_negative_usd(self.limit_usd, f"budget {self.name!r}: limit_usd"))
        if self.period not in PERIODS:
            raise ConfigError(f"budget {self.name!r}: period={self.period!r} is not one of {PERIODS}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(
                f"budget {self.name!r}: timezone={self.timezone!r} is not an IANA time zone (e.g. 'Europe/Paris')"
            ) from None
        if self.period == "rolling":
            if self.window is None:
                raise ConfigError(f"budget {self.name!r}: a rolling budget needs window= (e.g. '24h')")
            set_(self, "window", parse_duration(self.window, f"budget {self.name!r}: window"))
        elif self.window is not None:
            raise ConfigError(f"budget {self.name!r}: window= applies to period='rolling' only")
        if not isinstance(self.scope, Mapping):
            raise ConfigError(f"budget {self.name!r}: scope must be a mapping like {{'feature': 'support'}}")
        set_(self, "scope", {str(k): str(v) for k, v in self.scope.items()})
        if isinstance(self.thresholds, (str, bytes)) or not isinstance(self.thresholds, Iterable):
            raise ConfigError(
                f"budget {self.name!r}: thresholds={self.thresholds!r} must be a list such as [0.5, 0.8, 1]"
            )
        thresholds = tuple(
            sorted(
                {
                    _validate.number(
                        t,
                        f"budget {self.name!r}: threshold",
                        maximum=_validate.MAX_FRACTION_ABOVE_ONE,
                        above_minimum=True,
                        hint="thresholds are fractions of the limit: 0.8 means 80%",
                    )
                    for t in self.thresholds
                }
            )
        )
        set_(self, "thresholds", thresholds)
        if self.action not in ACTIONS:
            raise ConfigError(f"budget {self.name!r}: action={self.action!r} is not one of {ACTIONS}")
        if self.action == "downgrade" and self.downgrade_to is None:
            raise ConfigError(f"budget {self.name!r}: action='downgrade' needs downgrade_to (a mapping or function)")
        if self.downgrade_to is not None and not (
            isinstance(self.downgrade_to, Mapping) or callable(self.downgrade_to)
        ):
            raise ConfigError(f"budget {self.name!r}: downgrade_to must be a mapping or a function")
        where = f"budget {self.name!r}"
        _validate.count(self.max_output_tokens, f"{where}: max_output_tokens", maximum=_validate.MAX_TOKENS)
        fb = self.fallback_price
        if fb is not None and not isinstance(fb, FallbackPrice):
            try:
                fi, fo = fb
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: fallback_price must be (input_per_mtok, output_per_mtok)") from None
            try:
                fb = FallbackPrice(fi, fo)  # type: ignore[arg-type]  # validated (and converted) there
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            set_(self, "fallback_price", fb)
        if not isinstance(self.fail_open, bool):
            raise ConfigError(f"{where}: fail_open={self.fail_open!r} must be True or False")
        set_(self, "lease_s", _validate.seconds(self.lease_s, f"{where}: lease_s", maximum=_validate.MAX_LEASE_S))

    # --- what the budget covers -------------------------------------------------------------------

    @property
    def enforcing(self) -> bool:
        """True for hard caps (``block`` and ``downgrade``): calls reserve before they are sent."""
        return self.action != "alert"

    @property
    def limit(self) -> Decimal:
        return self.limit_usd  # type: ignore[return-value]

    def matches(
        self,
        dimensions: Mapping[str, str],
        *,
        task_name: str | None,
        provider: str | None,
        model: str | None,
    ) -> bool:
        """Whether a call with these dimensions (attribute keys, as on spans) counts against the budget.

        Example:
            >>> b = Budget("s", limit_usd=1, scope={"feature": "support", "model": "gpt-4o"})
            >>> b.matches({"costtrace.feature": "support"}, task_name=None, provider="openai", model="gpt-4o")
            True
        """
        for key, wanted in self.scope.items():
            if key == "task":
                value = task_name
            elif key == "provider":
                value = provider
            elif key == "model":
                value = model
            else:
                value = dimensions.get(SCOPE_KEYS.get(key) or sc.DIMENSION_PREFIX + key)
            if value != wanted:
                return False
        return True

    # --- periods ----------------------------------------------------------------------------------

    def bucket(self, at: datetime) -> tuple[datetime, datetime]:
        """The period (or rolling bucket) containing ``at``, as naive UTC ``[start, end)``.

        A calendar period (the hour, the day, the week from Monday, the month) is a span of local time
        in the budget's zone. It starts at the first instant at which the zone's clock reads the
        period's first moment or later, and ends where the next period starts. So a day across a DST
        change lasts 23 or 25 hours, a day whose midnight a change skips starts at the change, and
        local times the clock reads twice stay in the period their first reading began (see
        docs/budgets.md, "Periods"). Consecutive periods touch: every instant is in exactly one.

        Example:
            >>> b = Budget("d", limit_usd=1, period="day", timezone="America/New_York")
            >>> b.bucket(datetime(2026, 3, 8, 12, tzinfo=UTC))
            (datetime.datetime(2026, 3, 8, 5, 0), datetime.datetime(2026, 3, 9, 4, 0))
        """
        at_utc = _as_utc(at)
        if self.period == "total":
            return _EPOCH, _END_OF_TIME
        if self.period == "rolling":
            size = self._bucket_size()
            n = (at_utc - _EPOCH) // size
            start = _EPOCH + n * size
            return start, start + size
        tz = ZoneInfo(self.timezone)
        first = _period_first(tz.fromutc(at_utc.replace(tzinfo=tz)), self.period)
        start = _clock_reaches(first, tz)  # <= at: the clock read at least `first` at `at`
        nxt = _period_after(first, self.period)
        end = _clock_reaches(nxt, tz)
        while end <= at_utc:
            # The clock went back across a period boundary it had already reached (a change that
            # repeats a boundary): `at` is in a later period than its own reading says.
            start, first = end, nxt
            nxt = _period_after(first, self.period)
            end = _clock_reaches(nxt, tz)
        return start, end

    def window_start(self, at: datetime) -> datetime:
        """The first bucket start whose spend counts at ``at`` (the period start, for calendar periods)."""
        start, _ = self.bucket(at)
        if self.period != "rolling":
            return start
        return start - (ROLLING_BUCKETS - 1) * self._bucket_size()

    def _bucket_size(self) -> timedelta:
        assert isinstance(self.window, timedelta)  # set by __post_init__ for rolling budgets
        return self.window / ROLLING_BUCKETS

    def resets_at(self, at: datetime) -> datetime | None:
        """When spend counted at ``at`` stops counting (period end; None for ``total``), aware UTC."""
        if self.period == "total":
            return None
        return self.bucket(at)[1].replace(tzinfo=UTC)

    # --- serialisation (the ledger keeps definitions for the CLI and other processes) -------------

    def to_json(self) -> str:
        fb = self.fallback_price
        return json.dumps(
            {
                "name": self.name,
                "limit_usd": str(self.limit_usd),
                "period": self.period,
                "timezone": self.timezone,
                "window_s": self.window.total_seconds() if isinstance(self.window, timedelta) else None,
                "scope": dict(self.scope),
                "thresholds": [str(t) for t in self.thresholds],
                "action": self.action,
                "downgrade_to": dict(self.downgrade_to) if isinstance(self.downgrade_to, Mapping) else None,
                "max_output_tokens": self.max_output_tokens,
                "fallback_price": [str(fb.input_per_mtok), str(fb.output_per_mtok)]
                if isinstance(fb, FallbackPrice)
                else None,
                "fail_open": self.fail_open,
                "lease_s": self.lease_s,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Budget:
        data = json.loads(text)
        window_s = data.pop("window_s", None)
        if window_s is not None:
            data["window"] = window_s  # seconds: checked (and bounded) by __post_init__
        if data.get("fallback_price") is None:
            data.pop("fallback_price", None)
        if data.get("downgrade_to") is None:
            data.pop("downgrade_to", None)
        return cls(**data)


def _as_utc(at: datetime) -> datetime:
    """Naive UTC; naive input is taken as UTC."""
    if at.tzinfo is None:
        return at
    return at.astimezone(UTC).replace(tzinfo=None)


def _period_first(local: datetime, period: str) -> datetime:
    """The first moment (naive local time, fold 0) of the calendar period holding the reading ``local``."""
    if period == "hour":
        return datetime(local.year, local.month, local.day, local.hour)
    if period == "month":
        return datetime(local.year, local.month, 1)
    day = datetime(local.year, local.month, local.day)
    return day - timedelta(days=day.weekday()) if period == "week" else day


def _period_after(first: datetime, period: str) -> datetime:
    """The first moment (naive local time, fold 0) of the calendar period after the one starting at ``first``."""
    if period == "hour":
        return first + timedelta(hours=1)
    if period == "month":
        return datetime(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first + timedelta(days=7 if period == "week" else 1)


def _clock_reaches(local: datetime, tz: ZoneInfo) -> datetime:
    """The first instant (naive UTC) at which the clock of ``tz`` reads ``local`` (naive, fold 0) or later.

    ``local`` read once: that instant. Read twice (the clock was set back over it): the first
    reading. Never read (the clock jumped over it): the instant of the jump, the first one after it.
    """
    earlier = local - tz.utcoffset(local)  # type: ignore[operator]  # fold 0: the first reading; never None
    later = local - tz.utcoffset(local.replace(fold=1))  # type: ignore[operator]
    if later >= earlier:
        return earlier  # read once (equal) or twice (fold=0 is the first reading)
    # In a gap fold=0 applies the offset before the jump and fold=1 the one after, so the jump is
    # in (later, earlier]. Jumps happen at whole seconds: find the first second reading >= local.
    # (`local` is a whole hour and offsets are whole seconds, so both ends are whole seconds.)
    lo, hi = later, earlier  # the clock reads < local at lo, >= local at hi
    while hi - lo > _SECOND:
        mid = lo + _SECOND * ((hi - lo) // _SECOND // 2)
        if mid.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None) >= local:
            hi = mid
        else:
            lo = mid
    return hi


# --- loading from a file ---------------------------------------------------------------------------

_FILE_KEYS = {
    "name",
    "limit_usd",
    "period",
    "timezone",
    "window",
    "scope",
    "thresholds",
    "action",
    "downgrade_to",
    "max_output_tokens",
    "fallback_price",
    "fail_open",
    "lease_s",
}


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML or JSON config file (by extension; TOML otherwise) into a dict.

    Raises:
        ConfigError: The file is missing, unreadable or not valid.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); "
            "save it as UTF-8"
        ) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: expected a table of sections at the top")
    return data


def config_entries(data: Mapping[str, Any], keys: tuple[str, str], where: str) -> list[dict[str, Any]]:
    """The list of tables under ``[[key]]`` (TOML) or ``"keys"`` (JSON); empty when absent."""
    entries = data.get(keys[0], data.get(keys[1], []))
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: '{keys[0]}' must be a list of tables ([[{keys[0]}]] in TOML)")
    return entries


def budgets_from_config(data: Mapping[str, Any], where: str) -> list[Budget]:
    """The budgets of a parsed config file (see :func:`load_budgets`)."""
    budgets: list[Budget] = []
    seen: set[str] = set()
    for i, entry in enumerate(config_entries(data, ("budget", "budgets"), where)):
        at = f"{where}, budget {i + 1}"
        unknown = set(entry) - _FILE_KEYS
        if unknown:
            raise ConfigError(f"{at}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}")
        if "name" not in entry or "limit_usd" not in entry:
            raise ConfigError(f"{at}: 'name' and 'limit_usd' are required")
        try:
            budget = Budget(**entry)
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"{at}: {exc}") from exc
        if budget.name in seen:
            raise ConfigError(f"{at}: a budget named {budget.name!r} is defined twice")
        seen.add(budget.name)
        budgets.append(budget)
    return budgets


def load_budgets(path: str | os.PathLike[str]) -> list[Budget]:
    """Read budgets from a TOML or JSON file: tables under ``[[budget]]`` (TOML) or ``"budgets"`` (JSON).

    The same file may hold ``[[outcome_rule]]`` and ``[[webhook]]`` tables, read by
    ``costtrace.configure_ledger(budgets_file=...)`` (see docs/budgets.md).

    Example file (TOML)::

        [[budget]]
        name = "support-daily"
        limit_usd = 50
        period = "day"
        timezone = "Europe/Paris"
        scope = { feature = "support" }
        thresholds = [0.5, 0.8, 1.0]
        action = "block"

    Raises:
        ConfigError: The file is missing or unreadable, or an entry is invalid (the message names it).
    """
    return budgets_from_config(read_config_file(path), f"config file {str(Path(path))!r}")
