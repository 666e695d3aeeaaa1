"""When schedules fire: cron expressions read as wall-clock times in an IANA time zone.

Pure functions over croniter and zoneinfo, no database. croniter walks naive wall-clock times
(it never sees a time zone, so it cannot get DST wrong); each wall time is then placed on the
time line by zoneinfo:

- a wall time that exists once is that instant;
- a wall time repeated by an autumn change fires once, at its first occurrence (``fold=0``);
- a wall time skipped by a spring change fires at the first instant after the gap (Berlin,
  2026-03-29: ``30 2 * * *`` fires at 03:00 local, 01:00 UTC), and several skipped wall times
  that land on that instant fire once.

This placement never goes backwards as wall times go forwards, so fires come out unique and
strictly increasing. Every instant returned is an aware datetime in UTC.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

from flowray.spec.triggers import cron_problem, timezone_problem

UTC = timezone.utc
_ONE_MICROSECOND = timedelta(microseconds=1)
# Where a cached croniter starts; every use moves it first.
_ANY_START = datetime(2000, 1, 1)


class ScheduleError(ValueError):
    """A schedule that cannot be computed: ``field`` (``cron`` or ``timezone``) holds
    ``value``, which is wrong for the reason in the message."""

    def __init__(self, message: str, *, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class _Cron:
    """A parsed cron expression, shared by all threads: croniter keeps its position inside
    the object, so each step sets it and reads the next under a lock."""

    def __init__(self, cron: str) -> None:
        self._iter = croniter(cron, _ANY_START)
        self._lock = threading.Lock()

    def after(self, wall: datetime) -> datetime:
        """The first wall time strictly after ``wall`` (naive)."""
        with self._lock:
            self._iter.set_current(wall, force=True)
            return self._iter.get_next(datetime)

    def before(self, wall: datetime) -> datetime:
        """The last wall time strictly before ``wall`` (naive)."""
        with self._lock:
            self._iter.set_current(wall, force=True)
            return self._iter.get_prev(datetime)


@lru_cache(maxsize=4096)
def _cron(cron: str) -> _Cron:
    problem = cron_problem(cron)
    if problem is not None:
        raise ScheduleError(problem, field="cron", value=cron)
    return _Cron(" ".join(cron.split()))


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    problem = timezone_problem(name)
    if problem is not None:
        raise ScheduleError(problem, field="timezone", value=name)
    return ZoneInfo(name)


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with a time zone), got {moment!r}")
    return moment.astimezone(UTC)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Where the naive wall time ``wall`` of ``zone`` fires, in UTC (see the module's doc)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # it exists; fold=0 is the first of a repeated wall time
    # In a gap: the two readings of `wall` (with the offsets before and after the change)
    # bracket the change; find the first second whose wall time is past `wall`.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = sorted((int(first.timestamp()), int(other.timestamp())))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) > wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _wall_bound(moment: datetime, zone: ZoneInfo) -> datetime:
    """A wall time of ``zone`` at or after every wall time placed at or before ``moment``: its
    local time, moved on by the change's size in the second pass of a repeated hour (the
    wall times still ahead in that pass were placed at their first pass, which is over)."""
    local = moment.astimezone(zone)
    wall = local.replace(tzinfo=None)
    if local.fold:
        first_offset = local.replace(fold=0).utcoffset()
        offset = local.utcoffset()
        if first_offset is not None and offset is not None:
            wall += first_offset - offset
    return wall


def _fires_after(cron: _Cron, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Every fire strictly after ``after`` (UTC), ascending, each once. Wall times up to the
    local time of ``after`` are placed at or before it; later ones after it, but for those
    of a repeated hour's first pass when ``after`` is in its second: skipped as not later."""
    wall = after.astimezone(zone).replace(tzinfo=None)
    last = after
    while True:
        wall = cron.after(wall)
        instant = _instant(wall, zone)
        if instant > last:
            yield instant
            last = instant


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire of ``cron`` in ``timezone`` strictly after ``after`` (aware), in UTC.

    Raises :class:`ScheduleError` for a bad cron expression or time zone, ValueError for a
    naive ``after``."""
    return next(_fires_after(_cron(cron), _zone(timezone), _utc(after, "after")))


def fires_between(cron: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    """The fires in ``(start, end]``, in UTC, ascending (empty when ``end <= start``)."""
    end_utc = _utc(end, "end")
    out = []
    for fire in _fires_after(_cron(cron), _zone(timezone), _utc(start, "start")):
        if fire > end_utc:
            break
        out.append(fire)
    return out


def missed_fire(
    cron: str, timezone: str, *, last: datetime, now: datetime, catchup_seconds: float
) -> datetime | None:
    """The latest fire in ``(last, now]`` if it is at most ``catchup_seconds`` old, else None
    (``catchup_seconds`` 0: never). ``last`` is the last fire the service handled; only the
    latest missed fire is ever run, once, however many were missed.

    Looks back from ``now`` (a few steps), not forward from ``last``: a service that was down
    for a month costs no more than one down for a minute."""
    if catchup_seconds != catchup_seconds or catchup_seconds < 0:  # NaN too
        raise ValueError(f"catchup_seconds must be 0 or more, got {catchup_seconds!r}")
    parsed, zone = _cron(cron), _zone(timezone)
    last_utc, now_utc = _utc(last, "last"), _utc(now, "now")
    if catchup_seconds == 0 or now_utc <= last_utc:
        return None
    wall = _wall_bound(now_utc, zone) + _ONE_MICROSECOND  # `before` is strict; `now` itself counts
    while True:
        try:
            wall = parsed.before(wall)
        except ValueError:  # croniter's CroniterBadDateError: nothing earlier
            return None
        fire = _instant(wall, zone)
        if fire <= now_utc:
            break
    if fire <= last_utc or (now_utc - fire).total_seconds() > catchup_seconds:
        return None
    return fire
