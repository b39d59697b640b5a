"""The one place where a number a user gives is checked: USD amounts, prices, fractions, durations, counts.

Every setting that takes a number (budget limits and fallback prices, price overrides and discounts,
task caps, rework costs, outcome-rule bounds, webhook timeouts, leases, windows, intervals) goes
through one of these parsers at configuration time. A bad value raises :class:`costtrace.ConfigError`
naming the setting (``what``), the value and what is allowed; nothing is clamped or guessed.

The upper bounds below are far above any real use and far below what breaks the arithmetic: money is
stored as 64-bit integers of nano-USD (at most ~9.2e9 USD per value), and ``datetime`` arithmetic
overflows past the year 9999. They are documented in docs/budgets.md ("Limits").

Example:
    >>> usd("12.50", "limit_usd")
    Decimal('12.50')
    >>> duration("7d", "window", maximum=MAX_WINDOW)
    datetime.timedelta(days=7)
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from costtrace.errors import ConfigError

MAX_USD = Decimal(1_000_000_000)
"""Largest USD amount any setting takes (a limit, a cap, a rework cost): one billion dollars."""
MAX_PRICE_PER_MTOK = Decimal(100_000)
"""Largest price per million tokens (the dearest listed models cost a few hundred)."""
MAX_FRACTION_ABOVE_ONE = Decimal(100)
"""Largest budget alert threshold: 100 = 10,000% of the limit."""
MAX_WINDOW = timedelta(days=366)
"""Longest rolling budget window or outcome-rule window (use ``period="total"`` for all time)."""
MAX_LEASE_S = 7 * 86_400.0
"""Longest reservation lease: a week."""
MAX_TIMEOUT_S = 3_600.0
"""Longest timeout or backoff (webhook, budget store): an hour."""
MAX_INTERVAL_S = 86_400.0
"""Longest evaluation interval (outcome rules): a day."""
MAX_RETRIES = 10
"""Most retries of a webhook delivery (the backoff doubles each time)."""
MAX_TOKENS = 100_000_000
"""Largest token count a setting takes (``max_output_tokens``)."""
MAX_QUEUE = 10_000_000
"""Largest in-memory record queue (``configure_ledger(max_queue=...)``)."""
MAX_COUNT = 10**12
"""Largest count otherwise (task caps, ``min_tasks``)."""

_INF = Decimal("Infinity")
_MINUS_INF = Decimal("-Infinity")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _show(value: object) -> str:
    """``repr(value)`` for a message, cut short: a bad value may be a 10 MB string or a 10,000-digit int."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"<an int of {value.bit_length() if isinstance(value, int) else '?'} bits>"
    return text if len(text) <= 80 else f"{text[:60]}...({len(text):,} characters)"


def _float(value: float) -> float:
    """``float(value)``; an int too large for a float is infinity (then refused as too large)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _fmt(x: Decimal | float | int) -> str:
    if isinstance(x, Decimal):
        return f"{x.normalize():,f}"
    if isinstance(x, float) and x.is_integer():
        return f"{int(x):,}"
    return f"{x:,}"


def number(
    value: object,
    what: str,
    *,
    minimum: Decimal = Decimal(0),
    maximum: Decimal,
    above_minimum: bool = False,
    floats: bool = True,
    unit: str = "",
    hint: str = "",
) -> Decimal:
    """``value`` (an int, float, Decimal or numeric string) as an exact Decimal in ``[minimum, maximum]``.

    ``above_minimum=True`` excludes the minimum itself; ``floats=False`` refuses floats (inexact).
    """
    tail = f"; {hint}" if hint else ""
    allowed: tuple[type, ...] = (int, float, Decimal, str) if floats else (int, Decimal, str)
    if isinstance(value, bool) or not isinstance(value, allowed):
        kinds = "a number" if floats else "a Decimal, an int or a str (not a float: inexact)"
        raise ConfigError(f"{what}={_show(value)} is not a number; it must be {kinds}{tail}")
    try:
        if isinstance(value, str):
            amount = Decimal(value.strip().replace("_", ""))
        elif isinstance(value, float):  # as it prints: 0.1 -> Decimal('0.1')
            amount = Decimal(str(value))
        else:  # an int or a Decimal, exactly
            amount = Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{what}={_show(value)} is not a number{tail}") from None
    if not amount.is_finite():
        raise ConfigError(f"{what}={_show(value)} is not finite; it must be a number{tail}")
    if amount < minimum or (above_minimum and amount == minimum):
        sign = ">" if above_minimum else ">="
        raise ConfigError(f"{what}={_show(value)} must be {sign} {_fmt(minimum)}{unit}{tail}")
    if amount > maximum:
        raise ConfigError(f"{what}={_show(value)} must be <= {_fmt(maximum)}{unit}{tail}")
    return amount


def usd(value: object, what: str, *, floats: bool = True) -> Decimal:
    """A USD amount from 0 to :data:`MAX_USD`.

    Example:
        >>> usd(1e30, "limit_usd")
        Traceback (most recent call last):
        ...
        costtrace.errors.ConfigError: limit_usd=1e+30 must be <= 1,000,000,000 USD
    """
    return number(value, what, maximum=MAX_USD, floats=floats, unit=" USD")


def price_per_mtok(value: object, what: str, *, hint: str = "") -> Decimal:
    """A price in USD per million tokens, from 0 (free) to :data:`MAX_PRICE_PER_MTOK`."""
    return number(value, what, maximum=MAX_PRICE_PER_MTOK, hint=hint or "a price is in USD per million tokens")


def fraction(value: object, what: str, *, zero: bool = True, floats: bool = True, hint: str = "") -> Decimal:
    """A share from 0 (or just above, ``zero=False``) to 1: ``0.8`` means 80%."""
    hint = hint or "0.8 means 80%"
    share = number(value, what, minimum=_MINUS_INF, maximum=_INF, floats=floats, hint=hint)
    if share > 1 or share < 0 or (share == 0 and not zero):
        span = "[0, 1]: it must be between 0 and 1" if zero else "(0, 1]: it must be > 0 and <= 1"
        raise ConfigError(f"{what}={_show(value)} is not in {span}; {hint}")
    return share


def count(value: object, what: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    """A whole number in ``[minimum, maximum]`` (an ``int``, not a bool or a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what}={_show(value)} must be an int >= {minimum}")
    if value > maximum:
        raise ConfigError(f"{what}={_show(value)} must be <= {maximum:,}")
    return value


def seconds(value: object, what: str, *, maximum: float, zero: bool = False) -> float:
    """A number of seconds, above 0 (or from 0, ``zero=True``) and at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what}={_show(value)} must be a number of seconds")
    s = _float(value)
    if math.isnan(s) or s < 0 or (s == 0 and not zero):
        raise ConfigError(f"{what}={_show(value)} must be a number of seconds {'>=' if zero else '>'} 0")
    if s > maximum:
        raise ConfigError(f"{what}={_show(value)} must be <= {_fmt(maximum)} seconds")
    return s


def duration(value: object, what: str, *, maximum: timedelta) -> timedelta:
    """A positive duration of at most ``maximum``: ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"``, seconds, or a timedelta.

    Example:
        >>> duration("100000000d", "window", maximum=MAX_WINDOW)
        Traceback (most recent call last):
        ...
        costtrace.errors.ConfigError: window='100000000d' is too long; it must be at most 366 days
    """
    form = "use e.g. '30m', '24h', '7d', '2w' or a number of seconds"
    limit = f"at most {_fmt(maximum.days)} days" if maximum.days and not maximum.seconds else f"at most {maximum}"
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        s = _float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        s = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ConfigError(f"{what}={_show(value)} is not a duration; {form}")
    positive = f"{what}={_show(value)} must be a positive duration; {form}"
    if math.isnan(s) or s <= 0:
        raise ConfigError(positive)
    if s > maximum.total_seconds():
        raise ConfigError(f"{what}={_show(value)} is too long; it must be {limit}")
    delta = value if isinstance(value, timedelta) else timedelta(seconds=s)
    if delta <= timedelta(0):  # a positive value below a microsecond rounds to 0
        raise ConfigError(positive)
    return delta
