"""Money: exact integer nano-USD for storage and sums, fixed-point dollars for reading.

One place for the conversions every layer uses: costs are ``Decimal`` USD in memory, integer nano-USD
(10^-9 USD) in the ledger and in every sum (exact, no float rounding), and :func:`usd` for people.

Example:
    >>> to_nano(Decimal("0.00027")), usd(from_nano(270000))
    (270000, '$0.000270')
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

NANO = Decimal("0.000000001")
"""One nano-USD: the ledger's unit."""


def to_nano(amount: Decimal | None) -> int | None:
    """USD ``Decimal`` -> integer nano-USD, rounded half-even (None stays None).

    Example:
        >>> to_nano(Decimal("0.00027")), to_nano(Decimal("0.0000000015")), to_nano(None)
        (270000, 2, None)
    """
    if amount is None:
        return None
    return int((amount / NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_nano(nanos: int | None) -> Decimal | None:
    """Integer nano-USD -> USD ``Decimal`` (None stays None).

    Example:
        >>> from_nano(270000)
        Decimal('0.000270000')
    """
    if nanos is None:
        return None
    return Decimal(int(nanos)) * NANO


def usd(value: Decimal | None) -> str:
    """Money for reading: whole dollars from $1,000, cents from $1, else three significant digits.

    Example:
        >>> [usd(Decimal(x)) for x in ("1234.5", "12.345", "0.5", "0.0123456", "0.000041234", "0")]
        ['$1,235', '$12.35', '$0.500', '$0.0123', '$0.0000412', '$0']
        >>> usd(None)
        '-'
    """
    if value is None:
        return "-"
    if not value.is_finite():
        return str(value)
    if value == 0:
        return "$0"
    sign = "-" if value < 0 else ""
    v = abs(value)
    for _ in range(2):  # twice: rounding may carry into the next range (999.999 -> 1,000)
        places = 0 if v >= 1000 else 2 if v >= 1 else max(3, 2 - v.adjusted())
        v = v.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)  # as people round, not banks
    return f"{sign}${v:,.{places}f}"
