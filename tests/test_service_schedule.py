"""When schedules fire (flowray.service.schedule): wall-clock cron times in a time zone, across
the DST changes of 2026, each fire once; catch-up after downtime; bad input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from flowray.service.schedule import ScheduleError, fires_between, missed_fire, next_fire

UTC = timezone.utc
MINUTE = timedelta(minutes=1)


def z(text: str) -> datetime:
    """``'2026-03-29 01:00'`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (zone, cron, start, end, every fire in (start, end] in UTC)
CASES = [
    # Berlin, spring (2026-03-29 02:00 CET -> 03:00 CEST, 01:00 UTC): 02:30 does not exist and
    # fires at 03:00 CEST; the skipped 02:00..02:45 and 03:00 all land on 01:00 UTC, once.
    ("Europe/Berlin", "30 2 * * *", "2026-03-27 00:00", "2026-03-31 00:00",
     ["2026-03-27 01:30", "2026-03-28 01:30", "2026-03-29 01:00", "2026-03-30 00:30"]),
    ("Europe/Berlin", "0 * * * *", "2026-03-28 22:00", "2026-03-29 03:00",
     ["2026-03-28 23:00", "2026-03-29 00:00", "2026-03-29 01:00", "2026-03-29 02:00",
      "2026-03-29 03:00"]),
    ("Europe/Berlin", "*/15 * * * *", "2026-03-29 00:20", "2026-03-29 01:30",
     ["2026-03-29 00:30", "2026-03-29 00:45", "2026-03-29 01:00", "2026-03-29 01:15",
      "2026-03-29 01:30"]),
    # Berlin, autumn (2026-10-25 03:00 CEST -> 02:00 CET, 01:00 UTC): 02:00..02:59 happen twice
    # and fire at their first pass only (00:00..00:59 UTC); nothing fires 01:00..01:59 UTC.
    ("Europe/Berlin", "30 2 * * *", "2026-10-23 00:00", "2026-10-27 00:00",
     ["2026-10-23 00:30", "2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"]),
    ("Europe/Berlin", "0 * * * *", "2026-10-24 21:00", "2026-10-25 04:00",
     ["2026-10-24 22:00", "2026-10-24 23:00", "2026-10-25 00:00", "2026-10-25 02:00",
      "2026-10-25 03:00", "2026-10-25 04:00"]),
    ("Europe/Berlin", "*/15 * * * *", "2026-10-24 23:30", "2026-10-25 02:30",
     ["2026-10-24 23:45", "2026-10-25 00:00", "2026-10-25 00:15", "2026-10-25 00:30",
      "2026-10-25 00:45", "2026-10-25 02:00", "2026-10-25 02:15", "2026-10-25 02:30"]),
    # New York, spring (2026-03-08 02:00 EST -> 03:00 EDT, 07:00 UTC).
    ("America/New_York", "30 2 * * *", "2026-03-06 00:00", "2026-03-10 00:00",
     ["2026-03-06 07:30", "2026-03-07 07:30", "2026-03-08 07:00", "2026-03-09 06:30"]),
    ("America/New_York", "0 * * * *", "2026-03-08 04:00", "2026-03-08 09:00",
     ["2026-03-08 05:00", "2026-03-08 06:00", "2026-03-08 07:00", "2026-03-08 08:00",
      "2026-03-08 09:00"]),
    ("America/New_York", "*/15 * * * *", "2026-03-08 06:20", "2026-03-08 07:30",
     ["2026-03-08 06:30", "2026-03-08 06:45", "2026-03-08 07:00", "2026-03-08 07:15",
      "2026-03-08 07:30"]),
    # New York, autumn (2026-11-01 02:00 EDT -> 01:00 EST, 06:00 UTC): 01:00..01:59 twice;
    # 02:30 is not repeated there, 01:30 is (and fires at its first pass, EDT).
    ("America/New_York", "30 2 * * *", "2026-10-30 00:00", "2026-11-03 00:00",
     ["2026-10-30 06:30", "2026-10-31 06:30", "2026-11-01 07:30", "2026-11-02 07:30"]),
    ("America/New_York", "30 1 * * *", "2026-10-30 00:00", "2026-11-03 00:00",
     ["2026-10-30 05:30", "2026-10-31 05:30", "2026-11-01 05:30", "2026-11-02 06:30"]),
    ("America/New_York", "0 * * * *", "2026-11-01 03:00", "2026-11-01 09:00",
     ["2026-11-01 04:00", "2026-11-01 05:00", "2026-11-01 07:00", "2026-11-01 08:00",
      "2026-11-01 09:00"]),
    ("America/New_York", "*/15 * * * *", "2026-11-01 04:30", "2026-11-01 07:30",
     ["2026-11-01 04:45", "2026-11-01 05:00", "2026-11-01 05:15", "2026-11-01 05:30",
      "2026-11-01 05:45", "2026-11-01 07:00", "2026-11-01 07:15", "2026-11-01 07:30"]),
]


@pytest.mark.parametrize(("zone", "cron", "start", "end", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2][:10]}" for c in CASES])
def test_fires_across_dst(zone: str, cron: str, start: str, end: str,
                          expected: list[str]) -> None:
    fires = fires_between(cron, zone, z(start), z(end))
    assert fires == [z(e) for e in expected]
    assert all(f.tzinfo is UTC for f in fires)
    # next_fire walks the same fires one by one.
    walked, at = [], z(start)
    for _ in expected:
        at = next_fire(cron, zone, at)
        walked.append(at)
    assert walked == fires


def test_next_fire_is_strictly_after_and_takes_any_aware_time() -> None:
    assert next_fire("30 2 * * *", "UTC", z("2026-05-01 02:30")) == z("2026-05-02 02:30")
    assert next_fire("30 2 * * *", "UTC", z("2026-05-01 02:29:59.999999")) == \
        z("2026-05-01 02:30")
    berlin = datetime(2026, 5, 1, 4, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 02:30 UTC
    assert next_fire("30 2 * * *", "UTC", berlin) == z("2026-05-02 02:30")
    assert fires_between("0 * * * *", "UTC", z("2026-05-01 03:00"), z("2026-05-01 03:00")) == []
    assert fires_between("0 * * * *", "UTC", z("2026-05-01 03:00"), z("2026-05-01 01:00")) == []


def test_next_fire_from_inside_a_repeated_hour() -> None:
    # 01:10 UTC is 02:10 CET, the second pass of 02:00..02:59 on 2026-10-25, whose wall times
    # fired at their first pass: the next fire is 03:00 CET.
    assert next_fire("*/15 * * * *", "Europe/Berlin", z("2026-10-25 01:10")) == \
        z("2026-10-25 02:00")
    # In the first pass (00:40 UTC is 02:40 CEST) the next is 02:45 CEST.
    assert next_fire("*/15 * * * *", "Europe/Berlin", z("2026-10-25 00:40")) == \
        z("2026-10-25 00:45")
    # From the instant the skipped wall times collapsed to, the next is 03:15 CEST.
    assert next_fire("*/15 * * * *", "Europe/Berlin", z("2026-03-29 01:00")) == \
        z("2026-03-29 01:15")


# ----------------------------------------------------------------------------- against a model


def _field(text: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(x) for x in span.split("-"))
        else:
            first = last = int(span)
        out |= set(range(first, last + 1, int(step or 1)))
    return out


def _expected(cron: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Fires by definition, sweeping every UTC minute: a cron wall time fires at the first
    instant whose wall time is at or past it (its only or first occurrence; after a gap, the
    gap's end). Crons here use only minute and hour (day, month, weekday '*')."""
    minutes, hours = _field(cron.split()[0], 0, 59), _field(cron.split()[1], 0, 23)
    covered = start.astimezone(zone).replace(tzinfo=None)  # wall times placed before `start`
    fires, t = [], start + MINUTE
    while t <= end:
        wall = t.astimezone(zone).replace(tzinfo=None)
        w = covered + MINUTE
        while w <= wall:
            if w.minute in minutes and w.hour in hours:
                fires.append(t)
                break
            w += MINUTE
        covered = max(covered, wall)
        t += MINUTE
    return fires


def _changes(zone: ZoneInfo, year: int) -> list[datetime]:
    """The UTC hours of ``year`` just after which ``zone``'s offset changes."""
    out, t = [], datetime(year, 1, 1, tzinfo=UTC)
    while t.year == year:
        if t.astimezone(zone).utcoffset() != (t + timedelta(hours=1)).astimezone(zone).utcoffset():
            out.append(t)
        t += timedelta(hours=1)
    return out


# Berlin and New York; Lord Howe changes by 30 minutes; Santiago skips midnight; Chatham is
# +12:45/+13:45.
@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "America/New_York",
                                       "Australia/Lord_Howe", "America/Santiago",
                                       "Pacific/Chatham"])
def test_fires_match_the_definition_around_every_change_of_2026(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    changes = _changes(zone, 2026)
    assert len(changes) == 2
    for change in changes:
        start, end = change - timedelta(hours=30), change + timedelta(hours=30)
        for cron in ("30 2 * * *", "0 * * * *", "*/15 * * * *", "0 0 * * *", "45 1,2 * * *",
                     "* 2 * * *", "10-20/5 23,0,1 * * *"):
            fires = fires_between(cron, zone_name, start, end)
            assert fires == _expected(cron, zone, start, end), (cron, change)
            assert all(a < b for a, b in pairwise(fires))


# ----------------------------------------------------------------------------- catch-up


def test_missed_fire_runs_the_latest_fire_inside_the_window() -> None:
    hourly = "0 * * * *"
    # Down from 10:05 to 12:20: 11:00 and 12:00 were missed; 12:00 (20 min old) runs, once.
    assert missed_fire(hourly, "UTC", last=z("2026-05-01 10:00"), now=z("2026-05-01 12:20"),
                       catchup_seconds=3600) == z("2026-05-01 12:00")
    # Exactly as old as the window still runs; a microsecond older does not.
    assert missed_fire(hourly, "UTC", last=z("2026-05-01 10:00"), now=z("2026-05-01 12:20"),
                       catchup_seconds=1200) == z("2026-05-01 12:00")
    assert missed_fire(hourly, "UTC", last=z("2026-05-01 10:00"),
                       now=z("2026-05-01 12:20:00.000001"), catchup_seconds=1200) is None
    # A fire at `now` itself counts.
    assert missed_fire(hourly, "UTC", last=z("2026-05-01 11:00"), now=z("2026-05-01 12:00"),
                       catchup_seconds=60) == z("2026-05-01 12:00")
    # A month down: still just the latest fire.
    assert missed_fire(hourly, "UTC", last=z("2026-04-01 00:00"), now=z("2026-05-01 12:20"),
                       catchup_seconds=3600) == z("2026-05-01 12:00")


def test_missed_fire_outside_the_window_already_run_or_disabled() -> None:
    daily = "30 2 * * *"
    # The 02:30 fire is 5 h old at 07:30: outside the default hour.
    assert missed_fire(daily, "UTC", last=z("2026-04-30 02:30"), now=z("2026-05-01 07:30"),
                       catchup_seconds=3600) is None
    # It ran already (last is that fire).
    assert missed_fire(daily, "UTC", last=z("2026-05-01 02:30"), now=z("2026-05-01 02:40"),
                       catchup_seconds=3600) is None
    # 0 disables catch-up.
    assert missed_fire(daily, "UTC", last=z("2026-04-30 02:30"), now=z("2026-05-01 02:40"),
                       catchup_seconds=0) is None
    # now before last: nothing.
    assert missed_fire(daily, "UTC", last=z("2026-05-01 02:40"), now=z("2026-05-01 02:35"),
                       catchup_seconds=3600) is None


def test_missed_fire_across_dst() -> None:
    berlin = "Europe/Berlin"
    # The skipped 02:30 of 2026-03-29 fired at 01:00 UTC; at 01:10 UTC it is 10 minutes old.
    assert missed_fire("30 2 * * *", berlin, last=z("2026-03-28 01:30"),
                       now=z("2026-03-29 01:10"), catchup_seconds=3600) == z("2026-03-29 01:00")
    # In the repeated hour's second pass (01:10 UTC = 02:10 CET), the latest fire is 02:45 CEST
    # (00:45 UTC) of the first pass, not 02:00 CET.
    assert missed_fire("*/15 * * * *", berlin, last=z("2026-10-24 00:00"),
                       now=z("2026-10-25 01:10"), catchup_seconds=3600) == z("2026-10-25 00:45")
    # 02:30 fired at its first pass (00:30 UTC); at its second (01:30 UTC) it has run already.
    assert missed_fire("30 2 * * *", berlin, last=z("2026-10-25 00:30"),
                       now=z("2026-10-25 01:30"), catchup_seconds=7200) is None


# ----------------------------------------------------------------------------- bad input


def test_bad_cron_and_zone_raise_schedule_errors_with_data() -> None:
    with pytest.raises(ScheduleError) as info:
        next_fire("61 * * * *", "UTC", z("2026-05-01 00:00"))
    assert (info.value.field, info.value.value) == ("cron", "61 * * * *")
    assert str(info.value) == (
        "invalid cron expression '61 * * * *': bad minute field '61' (minute: 0-59; '*', lists "
        "'1,5', ranges '1-5' and steps '*/15' too)")
    with pytest.raises(ScheduleError) as info:
        fires_between("0 0 * * * *", "UTC", z("2026-05-01 00:00"), z("2026-05-02 00:00"))
    assert str(info.value) == (
        "a cron expression has 5 fields (minute hour day-of-month month day-of-week, e.g. "
        "'30 2 * * *'), got 6 in '0 0 * * * *' (flowray's schedules have no seconds or years "
        "field)")
    with pytest.raises(ScheduleError) as info:
        missed_fire("0 * * * *", "Europe/Berln", last=z("2026-05-01 00:00"),
                    now=z("2026-05-01 01:00"), catchup_seconds=60)
    assert (info.value.field, info.value.value) == ("timezone", "Europe/Berln")
    assert str(info.value) == (
        "unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?): use an IANA time "
        "zone name such as 'Europe/Berlin' or 'UTC'")


def test_naive_times_and_negative_catchup_are_refused() -> None:
    with pytest.raises(ValueError) as info:
        next_fire("0 * * * *", "UTC", datetime(2026, 5, 1))
    assert str(info.value) == ("after must be an aware datetime (with a time zone), got "
                               "datetime.datetime(2026, 5, 1, 0, 0)")
    with pytest.raises(ValueError) as info:
        missed_fire("0 * * * *", "UTC", last=z("2026-05-01 00:00"), now=z("2026-05-01 01:00"),
                    catchup_seconds=-1)
    assert str(info.value) == "catchup_seconds must be 0 or more, got -1"
