"""Output of the ``costtrace`` commands: one row model, three writers (terminal table, JSON, CSV).

A command builds a list of :class:`Column` and a list of row dicts keyed by ``Column.key``; the writers
turn that into text. Values keep their exact type until the last moment:

- **table**: money rounded for reading (:func:`usd`), rates as percentages, durations with
  their unit, ms or s (:func:`seconds`), ``None`` as ``-``;
- **json**: exact values; ``Decimal`` as a decimal string (``"0.000412"``: JSON floats would round it),
  ints as numbers, booleans as ``true`` / ``false``, ``None`` as ``null``, datetimes and dates as ISO 8601;
- **csv**: each cell is exactly the text of the JSON value (:func:`cell`): a JSON string without its
  quotes (so a decimal is the same ``0.000412``, a datetime the same ``2026-12-04T05:00:00+00:00``),
  a number as JSON writes it (no thousands separator), booleans ``true`` / ``false``, ``None`` an
  empty cell, a list or dict as its one-line JSON text. A script reading either format gets the same text.

Rounding is display only: nothing here feeds back into a computation.

A cost that misses unpriced calls is a lower bound, and says so on its row: the table and the HTML
page show it as ``>=$0.0123`` (:class:`LowerBound`); JSON and CSV keep the exact amount, and the row
carries ``cost_complete: false`` (or its ``unpriced_calls``) beside it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, TextIO

from costtrace._money import usd

Kind = Literal["text", "rtext", "int", "usd", "pct", "num", "seconds"]
"""How a column shows: text (left-aligned), rtext (already formatted, right-aligned), or a number kind."""
FORMATS = ("table", "json", "csv")

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One column: ``key`` in the row dicts and in JSON/CSV, ``header`` in the table, how to show it."""

    key: str
    header: str
    kind: Kind = "text"
    table: bool = True
    """False: in JSON and CSV only (keeps the terminal table narrow)."""
    data: bool = True
    """False: in the table (and HTML) only: a reading aid made of other columns, which JSON and CSV hold."""


# --- display formatting (table and HTML) ------------------------------------------------------------


class LowerBound(Decimal):
    """An amount known only from below (some calls in it are unpriced): shown as ``>=$0.0123``.

    Arithmetic on it gives plain ``Decimal``; JSON and CSV write the exact amount.

    Example:
        >>> display(LowerBound("0.0123"), "usd"), display(LowerBound(0), "usd")
        ('>=$0.0123', '>=$0')
    """

    __slots__ = ()


class UpperBound(Decimal):
    """An amount known only from above (what caching could save at most): shown as ``<=$0.0123``.

    Arithmetic on it gives plain ``Decimal``; JSON and CSV write the exact amount under a key that
    says it is a bound (``caching_savings_upper_bound_usd``).

    Example:
        >>> display(UpperBound("0.0123"), "usd"), display(UpperBound(0), "usd")
        ('<=$0.0123', '<=$0')
    """

    __slots__ = ()


def at_most(value: Decimal | None) -> Decimal | None:
    """``value`` marked as an :class:`UpperBound` (``None`` stays ``None``: unknown)."""
    return None if value is None else UpperBound(value)


def at_least(value: Decimal | None, complete: bool) -> Decimal | None:
    """``value`` itself when ``complete``, else the same amount marked as a :class:`LowerBound`."""
    if value is None or complete:
        return value
    return LowerBound(value)


def pct(value: Decimal | float | None, places: int = 1) -> str:
    """A fraction as a percentage: ``0.1234`` -> ``12.3%``; ``None`` -> ``-``."""
    if value is None:
        return "-"
    d = Decimal(value) if isinstance(value, float) else value
    if not d.is_finite():
        return "inf%" if d > 0 else str(d)
    return f"{d * 100:.{places}f}%"


def num(value: Decimal | float | int | None, places: int = 2) -> str:
    """A plain number rounded for reading; ``None`` -> ``-``."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{places}f}"


def seconds(value: Decimal | float | None) -> str:
    """A duration for reading, with its unit: milliseconds under a second, else seconds; ``None`` as ``-``.

    Example:
        >>> [seconds(v) for v in (Decimal("0.0026621"), 0.0421, 0.1, Decimal("1.25"), 12.5, 184, 1234, None)]
        ['2.66ms', '42.1ms', '100ms', '1.25s', '12.5s', '184s', '1,234s', '-']
    """
    if value is None:
        return "-"
    if value < 1:
        ms = value * 1000
        return f"{ms:.{2 if ms < 10 else 1 if ms < 100 else 0}f}ms"
    return f"{value:,.{2 if value < 10 else 1 if value < 100 else 0}f}s"


def display(value: Any, kind: Kind) -> str:
    """``value`` as the table shows it."""
    if value is None:
        return "-"
    if kind == "rtext":
        return str(value)
    if kind == "usd":
        bound = ">=" if isinstance(value, LowerBound) else "<=" if isinstance(value, UpperBound) else ""
        return bound + usd(value)
    if kind == "pct":
        return ("<=" if isinstance(value, UpperBound) else "") + pct(value)
    if kind == "int":
        if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
            return f"{int(value):,}"  # a count held as Decimal (a percentile of token counts)
        return f"{value:,}" if isinstance(value, int) else str(value)
    if kind == "num":
        return num(value)
    if kind == "seconds":
        return seconds(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# --- writers -----------------------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    """A JSON-ready exact value."""
    if isinstance(value, Decimal):  # a LowerBound too (its row says so: cost_complete), an UpperBound too
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, date):  # a datetime too
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _exact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_exact(v) for v in value]
    return value


def cell(value: Any) -> str:
    """``value`` as a CSV cell: the text of its JSON value (a JSON string without its quotes), ``None`` empty.

    Example:
        >>> [cell(v) for v in (True, False, None, 1234, Decimal("0.10"), LowerBound("0.5"), "a,b", [1, "x"])]
        ['true', 'false', '', '1234', '0.10', '0.5', 'a,b', '[1, "x"]']
    """
    exact = _exact(value)
    if exact is None:
        return ""
    if isinstance(exact, str):
        return exact
    return json.dumps(exact, ensure_ascii=False)


def to_jsonable(value: Any) -> Any:
    """Rows (or any nesting of dicts and lists) with exact, JSON-ready values."""
    return _exact(value)


def table(columns: Sequence[Column], rows: Sequence[Row]) -> str:
    """An aligned plain-text table: text left-aligned, numbers right-aligned, a rule under the header."""
    cols = [c for c in columns if c.table]
    cells = [[display(r.get(c.key), c.kind) for c in cols] for r in rows]
    widths = [max([len(c.header)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if c.kind == "text" else v.rjust(w) for v, w, c in zip(values, widths, cols, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line([c.header for c in cols]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON with exact values."""
    return json.dumps(to_jsonable(payload), indent=2, ensure_ascii=False)


def csv_text(columns: Sequence[Column], rows: Sequence[Row]) -> str:
    """CSV with a header of column keys, then one line per row, each cell the text of its JSON value (:func:`cell`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    data = [c for c in columns if c.data]
    writer.writerow([c.key for c in data])
    for r in rows:
        writer.writerow([cell(r.get(c.key)) for c in data])
    return buf.getvalue().rstrip("\n")


def records(columns: Sequence[Column], rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows restricted to the data columns, in column order (what JSON output holds)."""
    return [{c.key: r.get(c.key) for c in columns if c.data} for r in rows]


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
        print(json_text(records(columns, rows) if payload is None else payload))
    elif fmt == "csv":
        print(csv_text(columns, rows))
    else:
        if title:
            print(title)
        print(table(columns, rows))
        for n in notes:
            print(f"note: {n}")


# --- progress ----------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (never in pipes or logs).

    Call it as ``progress(done, total)``; :meth:`close` erases the line. Redraws at most 10 times a second.
    """

    WIDTH = 30

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        frac = min(1.0, done / total) if total > 0 else 0.0
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {frac * 100:3.0f}% ({done:,}/{total:,})")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
