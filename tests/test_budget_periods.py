"""Calendar periods at every UTC-offset change of every IANA zone, 1970-2040: enumerated, not sampled.

The offset changes come from the zones' TZif files (tests/tzdb.py), checked against ``zoneinfo``. At each
change, for each calendar period, the instants just before, at and just after it, and around the local
period boundaries next to it (on the old and on the new offset), must fall in the period the definition of
docs/budgets.md gives, computed here from the offsets alone: a period ``[a, b)`` of local time starts at
the first instant at which the clock reads ``a`` or later, and ends where the next one starts.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest

from costtrace.spend.budgets import Budget
from tests import tzdb

PERIODS = ("hour", "day", "week", "month")
US = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def groups() -> dict[tuple[object, ...], list[str]]:
    return tzdb.zone_groups()


def _instants(reach: tzdb.Reach, change: datetime, old: int, new: int, period: str) -> Iterator[datetime]:
    """Instants to test around one offset change: just before, at, just after it; and the local period
    boundaries next to it, read on the old and on the new offset, and where the periods really start."""
    yield from (change - US, change, change + US)
    for reading in (change - US + timedelta(seconds=old), change + timedelta(seconds=new)):
        first = tzdb.period_first(reading, period)
        for boundary in (first, tzdb.period_after(first, period)):
            yield from (boundary - timedelta(seconds=old), boundary - timedelta(seconds=new))
            at = reach(boundary)
            yield from (at - US, at)


@pytest.mark.parametrize("period", PERIODS)
def test_every_period_at_every_offset_change_of_every_zone(groups, period):
    """Every change 1970-2040 of every zone (one zone per group of zones with the same offsets):
    the period holding each instant around it is the defined one, periods tile time, and resets_at /
    window_start agree with it."""
    failures: list[str] = []
    checked = 0
    for keys in groups.values():
        key = keys[0]
        z = tzdb.zone_offsets(key)
        reach = cache(z.first_reaching)
        budget = Budget("p", limit_usd=1, period=period, timezone=key)
        seen: dict[datetime, tuple[datetime, datetime]] = {}

        def bucket(at: datetime, budget: Budget = budget, seen: dict = seen) -> tuple[datetime, datetime]:
            if at not in seen:
                seen[at] = budget.bucket(at)
            return seen[at]

        for change, old, new in tzdb.transitions(key):
            for i, at in enumerate(dict.fromkeys(_instants(reach, change, old, new, period))):
                checked += 1
                got = bucket(at)
                want = tzdb.expected_period(z, reach, at, period)
                start, end = got
                ok = (
                    got == want
                    and start <= at < end
                    and bucket(end)[0] == end  # the next period starts where this one ends
                    and bucket(start - US)[1] == start  # and the previous one ends where it starts
                )
                if ok and i < 2:  # at the change: the public views of the period agree with it
                    ok = budget.resets_at(at) == end.replace(tzinfo=UTC) and budget.window_start(at) == start
                if not ok and len(failures) < 20:
                    failures.append(f"{key} (change {change} {old}->{new}) at {at}: got {got}, want {want}")
    assert not failures, "\n".join(failures)
    assert checked > 100_000  # the enumeration really ran (about 18 000 changes)


def test_the_offset_changes_are_every_change_zoneinfo_knows(groups):
    """The enumerated changes of every zone agree with zoneinfo: old offset a second before each, new one
    at it, and the expected offset between them; every available zone is in exactly one group."""
    keys = sorted(zoneinfo.available_timezones())
    assert sorted(k for g in groups.values() for k in g) == keys
    for key in keys:
        tzdb.check_against_zoneinfo(key, tzdb.transitions(key))
    # The awkward kinds are all there: a 30-minute DST, midnight skipped and repeated, a skipped day.
    assert (datetime(2024, 9, 8, 4), -4 * 3600, -3 * 3600) in tzdb.transitions("America/Santiago")
    assert (datetime(2024, 4, 6, 15), 11 * 3600, 37800) in tzdb.transitions("Australia/Lord_Howe")
    assert (datetime(2011, 12, 30, 10), -10 * 3600, 14 * 3600) in tzdb.transitions("Pacific/Apia")
    assert (datetime(2022, 11, 6, 5), -4 * 3600, -5 * 3600) in tzdb.transitions("America/Havana")


@pytest.mark.parametrize(
    ("tz", "period", "at", "start", "end"),  # UTC
    [
        # Midnight skipped (00:00 -> 01:00): the day starts at the jump, 04:00 UTC, not at 03:00 UTC
        # (23:00 the day before); the previous day ends there.
        ("America/Santiago", "day", "2024-09-08T03:30", "2024-09-07T04:00", "2024-09-08T04:00"),
        ("America/Santiago", "day", "2024-09-08T04:00", "2024-09-08T04:00", "2024-09-09T03:00"),
        # Clocks set back at midnight (00:00 -03 -> 23:00 -04): 23:00-24:00 is read twice, a 25-hour day.
        ("America/Santiago", "day", "2024-04-07T03:30", "2024-04-06T03:00", "2024-04-07T04:00"),
        # Havana 01:00 CDT -> 00:00 CST: midnight is read twice, the day starts at the first reading.
        ("America/Havana", "day", "2022-11-06T05:30", "2022-11-06T04:00", "2022-11-07T05:00"),
        # A repeated hour is one period of two hours (New York, 02:00 EDT -> 01:00 EST).
        ("America/New_York", "hour", "2026-11-01T06:30", "2026-11-01T05:00", "2026-11-01T07:00"),
        # Lord Howe's 30-minute DST: 02:00 -> 02:30, so the 02:00 hour lasts 30 minutes.
        ("Australia/Lord_Howe", "hour", "2024-10-05T15:40", "2024-10-05T15:30", "2024-10-05T16:00"),
        # Samoa skipped 2011-12-30 entirely: 29 December ends where 31 December starts.
        ("Pacific/Apia", "day", "2011-12-30T09:59", "2011-12-29T10:00", "2011-12-30T10:00"),
        ("Pacific/Apia", "day", "2011-12-30T10:00", "2011-12-30T10:00", "2011-12-31T10:00"),
    ],
)
def test_periods_at_awkward_changes(tz, period, at, start, end):
    b = Budget("p", limit_usd=1, period=period, timezone=tz)
    at, start, end = (datetime.fromisoformat(x) for x in (at, start, end))
    assert b.bucket(at) == (start, end)
    assert b.resets_at(at) == end.replace(tzinfo=UTC)
    assert b.window_start(at) == start
