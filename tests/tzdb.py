"""Every UTC-offset change of every IANA zone, read from the zone's TZif file itself (RFC 8536).

The period tests need the complete list of offset changes of each zone over 1970-2040, enumerated rather
than sampled, and cheaply (walking 600 zones hour by hour through ``zoneinfo`` takes minutes). So this
reads the same files ``zoneinfo`` reads: the explicit transitions, then the POSIX TZ rule of the footer
for the years after them. It is an oracle independent of ``zoneinfo``'s own arithmetic, cross-checked
against it by :func:`check_against_zoneinfo`.

:class:`Offsets` answers, from the transitions alone, what the local clock reads at an instant and the
first instant at which it reads a given local time or later; :func:`expected_period` builds on it the
calendar period holding an instant, by the definition of docs/budgets.md ("Periods at a clock change").
"""

from __future__ import annotations

import bisect
import calendar
import itertools
import re
import struct
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path

EPOCH = datetime(1970, 1, 1)
SECOND = timedelta(seconds=1)


def _zone_bytes(key: str) -> bytes:
    """The TZif file ``zoneinfo.ZoneInfo(key)`` loads: the first match on TZPATH, else the tzdata package."""
    for root in zoneinfo.TZPATH:
        path = Path(root, key)
        if path.is_file():
            return path.read_bytes()
    return resources.files("tzdata").joinpath("zoneinfo", *key.split("/")).read_bytes()


def _parse_tzif(data: bytes) -> tuple[list[int], list[int], int, str]:
    """(transition times in UTC seconds, offset after each, offset before the first, footer TZ string)."""
    if data[:4] != b"TZif":
        raise ValueError("not a TZif file")
    version = data[4:5]
    counts = struct.unpack(">6l", data[20:44])
    isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt = counts
    time_size, pos = 4, 44
    if version >= b"2":  # skip the 32-bit block; read the 64-bit one
        pos += timecnt * 5 + typecnt * 6 + charcnt + leapcnt * 8 + isstdcnt + isutcnt
        isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt = struct.unpack(">6l", data[pos + 20 : pos + 44])
        time_size, pos = 8, pos + 44
    if leapcnt:
        raise ValueError("TZif files with leap seconds ('right/' zones) are not supported")
    times = list(struct.unpack(f">{timecnt}{'q' if time_size == 8 else 'l'}", data[pos : pos + timecnt * time_size]))
    pos += timecnt * time_size
    indices = list(data[pos : pos + timecnt])
    pos += timecnt
    offsets = [struct.unpack(">lBB", data[pos + 6 * i : pos + 6 * i + 6])[0] for i in range(typecnt)]
    pos += typecnt * 6 + charcnt + leapcnt * (time_size + 4) + isstdcnt + isutcnt
    footer = data[pos:].strip(b"\n").decode() if version >= b"2" else ""
    return times, [offsets[i] for i in indices], offsets[0], footer


_TZ = re.compile(
    r"^(?P<std>[A-Za-z]{3,}|<[^>]+>)(?P<stdoff>[+-]?[\d:]+)"
    r"(?:(?P<dst>[A-Za-z]{3,}|<[^>]+>)(?P<dstoff>[+-]?[\d:]+)?(?:,(?P<start>[^,]+),(?P<end>[^,]+))?)?$"
)


def _hms(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    parts = [int(p) for p in text.lstrip("+-").split(":")] + [0, 0]
    return sign * (parts[0] * 3600 + parts[1] * 60 + parts[2])


def _rule_instant(rule: str, year: int, utoff: int) -> int:
    """UTC seconds of a POSIX TZ rule date[/time] in ``year``, its time read on a clock at ``utoff``."""
    date, _, time = rule.partition("/")
    at = _hms(time) if time else 7200
    if date.startswith("M"):
        month, week, weekday = (int(x) for x in date[1:].split("."))
        first_weekday = (calendar.weekday(year, month, 1) + 1) % 7  # POSIX: 0 = Sunday
        day = 1 + (weekday - first_weekday) % 7 + 7 * (week - 1)
        if week == 5 and day > calendar.monthrange(year, month)[1]:
            day -= 7
        ordinal = datetime(year, month, day).toordinal()
    elif date.startswith("J"):  # 1..365, February 29 never counted
        n = int(date[1:])
        ordinal = datetime(year, 1, 1).toordinal() + n - 1 + (1 if calendar.isleap(year) and n >= 60 else 0)
    else:  # 0..365, February 29 counted
        ordinal = datetime(year, 1, 1).toordinal() + int(date)
    return (ordinal - EPOCH.toordinal()) * 86400 + at - utoff


def _footer_changes(footer: str, years: range) -> tuple[int, list[tuple[int, int]]]:
    """(standard offset, [(UTC seconds, offset from then)] for ``years``) of a POSIX TZ string."""
    m = _TZ.match(footer)
    if m is None:
        raise ValueError(f"unsupported TZ string {footer!r}")
    std = -_hms(m["stdoff"])
    if not m["dst"]:
        return std, []
    dst = -_hms(m["dstoff"]) if m["dstoff"] else std + 3600
    if not m["start"]:
        raise ValueError(f"TZ string without rules {footer!r}")
    changes: list[tuple[int, int]] = []
    for year in years:
        changes.append((_rule_instant(m["start"], year, std), dst))  # start is read on standard time
        changes.append((_rule_instant(m["end"], year, dst), std))  # end is read on daylight time
    changes.sort()
    if any(a[0] == b[0] for a, b in itertools.pairwise(changes)):
        raise ValueError(f"TZ string with simultaneous changes (all-year DST) {footer!r}")
    return std, changes


@dataclass(frozen=True)
class Offsets:
    """A zone's UTC offset as a step function: ``offsets[i]`` (seconds) holds from ``times[i]`` (UTC
    seconds) to the next time; ``before`` holds before ``times[0]``. Consecutive offsets differ."""

    times: tuple[int, ...]
    offsets: tuple[int, ...]
    before: int

    def offset_at(self, t: int) -> int:
        i = bisect.bisect_right(self.times, t) - 1
        return self.before if i < 0 else self.offsets[i]

    def reading(self, at: datetime) -> datetime:
        """What the local clock reads at the naive UTC instant ``at``."""
        seconds = (at - EPOCH) // SECOND
        return at + timedelta(seconds=self.offset_at(seconds))

    def first_reaching(self, local: datetime) -> datetime:
        """The first instant (naive UTC) at which the clock reads ``local`` or later.

        On each stretch of constant offset the reading grows with time, so on stretch i the first such
        instant is ``max(start_i, local - offset_i)`` if that is still inside the stretch. The answer
        is the earliest over the stretches; offsets are within a day, so only nearby ones can hold it.
        """
        t = (local - EPOCH) // SECOND
        lo = max(bisect.bisect_left(self.times, t - 2 * 86400) - 1, -1)
        hi = min(bisect.bisect_right(self.times, t + 2 * 86400), len(self.times) - 1)
        best: int | None = None
        for i in range(lo, hi + 1):
            start = self.times[i] if i >= 0 else None
            offset = self.offsets[i] if i >= 0 else self.before
            stop = self.times[i + 1] if i + 1 < len(self.times) else None
            candidate = (local - EPOCH) // SECOND - offset
            if start is not None:
                candidate = max(candidate, start)
            if stop is not None and candidate >= stop:
                continue
            best = candidate if best is None else min(best, candidate)
        assert best is not None
        # Whole seconds: `local` is a whole hour here and offsets are whole seconds.
        return EPOCH + timedelta(seconds=best)


@cache
def zone_offsets(key: str, last_year: int = 2041) -> Offsets:
    """The offsets of zone ``key`` from its first transition up to the end of ``last_year``."""
    times, offsets, before, footer = _parse_tzif(_zone_bytes(key))
    changes = list(zip(times, offsets, strict=True))
    if footer:
        first_year = (EPOCH + timedelta(seconds=times[-1])).year if times else 1969
        std, rule_changes = _footer_changes(footer, range(first_year - 1, last_year + 1))
        if not times:
            before = std
        changes += [(t, o) for t, o in rule_changes if not times or t > times[-1]]
    steps: list[tuple[int, int]] = []
    current = before
    for t, o in changes:
        if o != current:
            steps.append((t, o))
            current = o
    return Offsets(tuple(t for t, _ in steps), tuple(o for _, o in steps), before)


def transitions(key: str, first_year: int = 1970, last_year: int = 2040) -> list[tuple[datetime, int, int]]:
    """Every UTC-offset change of ``key`` in ``[first_year, last_year]``: (naive UTC instant, old, new offset)."""
    z = zone_offsets(key)
    lo, hi = (datetime(first_year, 1, 1) - EPOCH) // SECOND, (datetime(last_year + 1, 1, 1) - EPOCH) // SECOND
    out = []
    for i, t in enumerate(z.times):
        if lo <= t < hi:
            out.append((EPOCH + timedelta(seconds=t), z.offsets[i - 1] if i else z.before, z.offsets[i]))
    return out


def check_against_zoneinfo(key: str, changes: list[tuple[datetime, int, int]]) -> None:
    """``zoneinfo`` agrees with these changes: the old offset a second before each, the new one at it,
    and the offset the changes say in the middle of each stretch between them (and at both ends)."""
    tz = zoneinfo.ZoneInfo(key)

    def offset(at: datetime) -> int:
        delta = at.replace(tzinfo=UTC).astimezone(tz).utcoffset()
        assert delta is not None
        return int(delta.total_seconds())

    z = zone_offsets(key)
    points = [datetime(1970, 1, 1), datetime(2040, 12, 31, 23)]
    for i, (at, old, new) in enumerate(changes):
        assert (offset(at - SECOND), offset(at)) == (old, new), (key, at)
        nxt = changes[i + 1][0] if i + 1 < len(changes) else datetime(2041, 1, 1)
        points.append(at + (nxt - at) / 2)
    for at in points:
        assert offset(at) == z.offset_at((at - EPOCH) // SECOND), (key, at)


def zone_groups(first_year: int = 1970, last_year: int = 2040) -> dict[tuple[object, ...], list[str]]:
    """Every zone of ``zoneinfo.available_timezones()`` grouped by identical offsets over the years
    (links and zones that agree since 1970): one representative of a group tests them all."""
    groups: dict[tuple[object, ...], list[str]] = {}
    lo = datetime(first_year - 1, 1, 1)
    for key in sorted(zoneinfo.available_timezones()):
        # A year's margin each side: periods around the first and last changes reach into it.
        z = zone_offsets(key)
        signature = (z.offset_at((lo - EPOCH) // SECOND), tuple(transitions(key, first_year - 1, last_year + 1)))
        groups.setdefault(signature, []).append(key)
    return groups


# --- calendar periods, by their definition (docs/budgets.md, "Periods") ---------------------------

Reach = Callable[[datetime], datetime]
"""``Offsets.first_reaching`` of one zone (cached by the caller)."""


def period_first(local: datetime, period: str) -> datetime:
    """The first local moment of the period holding the local time ``local``."""
    if period == "hour":
        return datetime(local.year, local.month, local.day, local.hour)
    day = datetime(local.year, local.month, local.day)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return datetime(local.year, local.month, 1)


def period_after(first: datetime, period: str) -> datetime:
    """The first local moment of the next period."""
    if period == "hour":
        return first + timedelta(hours=1)
    if period == "day":
        return first + timedelta(days=1)
    if period == "week":
        return first + timedelta(days=7)
    return datetime(first.year + first.month // 12, first.month % 12 + 1, 1)


def expected_period(z: Offsets, reach: Reach, at: datetime, period: str) -> tuple[datetime, datetime]:
    """The ``[start, end)`` of the period holding ``at``, from the offsets alone.

    The first instant at which the clock reads a local time or later only grows with the local time,
    so exactly one period ``[a, b)`` has ``start(a) <= at < start(b)``. The clock reads at least the
    period of its own reading at ``at``; if it went back across a boundary, a later period holds ``at``.
    """
    first = period_first(z.reading(at), period)
    start = reach(first)
    assert start <= at
    nxt = period_after(first, period)
    end = reach(nxt)
    while end <= at:
        first, start, nxt = nxt, end, period_after(nxt, period)
        end = reach(nxt)
    return start, end
