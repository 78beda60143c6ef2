"""Business calendar and SLA instants: the engine's time arithmetic (spec §9.1–§9.3).

Every datetime taken or returned here is timezone-aware; a naive datetime is rejected. Working-day
arithmetic happens on Asia/Shanghai calendar dates (PRC statutory holidays plus the 调休 make-up workdays),
and every instant returned is expressed in Asia/Shanghai (``+08:00``), ready for a BPMN ``timeDate``.

The calendar comes from the ``chinese_calendar`` package for the years it covers, plus supplementary
years read from ``handlers/data/holidays.json``. A date in a year that neither covers raises
:class:`CalendarRangeError`; nothing is guessed.
"""

from __future__ import annotations

import calendar as _stdcal
import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar

# ``DEFAULT_CALENDAR`` is also public; it is built lazily by the module ``__getattr__`` below.
__all__ = [
    "DEFAULT_HOLIDAYS_PATH",
    "SHANGHAI",
    "BusinessCalendar",
    "CalendarRangeError",
    "HolidayFileError",
    "IsoDuration",
    "SlaInstants",
    "SupplementYear",
    "default_calendar",
    "load_holiday_file",
    "parse_duration",
    "wall_clock_sla",
    "working_day_sla",
]

log = logging.getLogger(__name__)

try:
    SHANGHAI: Any = ZoneInfo("Asia/Shanghai")
except ZoneInfoNotFoundError:  # pragma: no cover - machines without a tz database
    # China has kept UTC+8 without daylight saving since 1991, so a fixed offset is exact here.
    SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")

_REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOLIDAYS_PATH = _REPO_ROOT / "handlers" / "data" / "holidays.json"

_END_OF_DAY = time(23, 59, 59)
_DEFAULT_FRACTIONS = (0.5, 0.8)


# --------------------------------------------------------------------------------------------- helpers


def _require_aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a timezone-aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} is a naive datetime ({value.isoformat()}): pass a timezone-aware datetime")
    return value


def _local(value: datetime, name: str) -> datetime:
    """``value`` (aware) converted to Asia/Shanghai."""
    return _require_aware(value, name).astimezone(SHANGHAI)


def _end_of(day: date) -> datetime:
    return datetime.combine(day, _END_OF_DAY, tzinfo=SHANGHAI)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(_REPO_ROOT))
    except ValueError:
        return str(path)


def _year_ranges(years: Iterable[int]) -> str:
    """``[2004, 2005, 2006, 2029]`` → ``"2004–2006, 2029"``."""
    ordered = sorted(set(years))
    if not ordered:
        return "none"
    parts: list[str] = []
    first = prev = ordered[0]
    for y in ordered[1:] + [None]:
        if y is not None and y == prev + 1:
            prev = y
            continue
        parts.append(str(first) if first == prev else f"{first}–{prev}")
        if y is not None:
            first = prev = y
    return ", ".join(parts)


# -------------------------------------------------------------------------------------------- calendar


class CalendarRangeError(ValueError):
    """A date lies in a year for which no PRC holiday calendar is known."""

    def __init__(self, day: date, covered_years: Iterable[int], data_file: str) -> None:
        self.date = day
        self.year = day.year
        self.covered_years = tuple(sorted(set(covered_years)))
        super().__init__(
            f"no PRC holiday calendar for {day.year} (date {day.isoformat()}; covered years: "
            f"{_year_ranges(self.covered_years)}): add the year to {data_file}"
        )


class HolidayFileError(ValueError):
    """The supplementary holiday file is missing or malformed; the message names the file and key."""


@dataclass(frozen=True)
class SupplementYear:
    """One year of holiday data from the supplementary file (dates are Asia/Shanghai calendar dates)."""

    year: int
    holidays: frozenset[date]
    workdays: frozenset[date]
    provisional: bool = False
    source: str = ""
    note: str = ""


def load_holiday_file(path: Path) -> dict[int, SupplementYear]:
    """Read and validate a supplementary holiday file; errors name the file and the offending key."""
    where = _display_path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HolidayFileError(f"{where}: holiday file not found") from None
    except json.JSONDecodeError as exc:
        raise HolidayFileError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise HolidayFileError(f"{where}: top level must be an object keyed by year")
    years: dict[int, SupplementYear] = {}
    allowed = {"holidays", "workdays", "provisional", "source", "note"}
    for key, entry in raw.items():
        if not re.fullmatch(r"\d{4}", key):
            raise HolidayFileError(f"{where}: key {key!r} is not a four-digit year")
        year = int(key)
        if not isinstance(entry, dict):
            raise HolidayFileError(f"{where}: {key} must be an object")
        unknown = set(entry) - allowed
        if unknown:
            raise HolidayFileError(
                f"{where}: {key}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        lists: dict[str, frozenset[date]] = {}
        for field in ("holidays", "workdays"):
            items = entry.get(field, [])
            if not isinstance(items, list):
                raise HolidayFileError(f"{where}: {key}.{field} must be a list of YYYY-MM-DD dates")
            days: set[date] = set()
            for item in items:
                try:
                    day = date.fromisoformat(item) if isinstance(item, str) else None
                except ValueError:
                    day = None
                if day is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", item):
                    raise HolidayFileError(f"{where}: {key}.{field}: {item!r} is not a YYYY-MM-DD date")
                if day.year != year:
                    raise HolidayFileError(f"{where}: {key}.{field}: {item} is not in {year}")
                if field == "workdays" and day.weekday() < 5:
                    raise HolidayFileError(
                        f"{where}: {key}.workdays: {item} is a weekday; list only weekend make-up workdays"
                    )
                days.add(day)
            lists[field] = frozenset(days)
        both = lists["holidays"] & lists["workdays"]
        if both:
            listed = sorted(d.isoformat() for d in both)
            raise HolidayFileError(f"{where}: {key}: {listed} listed both as holiday and as workday")
        provisional = entry.get("provisional", False)
        if not isinstance(provisional, bool):
            raise HolidayFileError(f"{where}: {key}.provisional must be true or false")
        for field in ("source", "note"):
            if not isinstance(entry.get(field, ""), str):
                raise HolidayFileError(f"{where}: {key}.{field} must be a string")
        years[year] = SupplementYear(
            year=year,
            holidays=lists["holidays"],
            workdays=lists["workdays"],
            provisional=provisional,
            source=entry.get("source", ""),
            note=entry.get("note", ""),
        )
    return years


@functools.cache
def _library_covers(year: int) -> bool:
    """Whether chinese_calendar has the State Council schedule for ``year`` (it signals a year it has no
    data for with NotImplementedError; holidays.json covers such years, else CalendarRangeError)."""
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:  # the library's "year not covered", not unfinished code
        return False
    return True


def _library_years() -> frozenset[int]:
    # chinese_calendar publishes no range constant; its data dicts hold exactly the covered years.
    years = {d.year for d in chinese_calendar.holidays} | {d.year for d in chinese_calendar.workdays}
    return frozenset(y for y in range(min(years), max(years) + 1) if _library_covers(y))


class BusinessCalendar:
    """PRC working-day calendar (statutory holidays and 调休 make-up workdays) on Asia/Shanghai dates.

    A year covered by ``chinese_calendar`` is taken from it; a year it does not cover is taken from the
    supplementary data (``handlers/data/holidays.json``), where weekends are non-working unless listed as
    ``workdays``. A supplementary year that the library also covers is ignored, with a warning, so that an
    upgraded library replaces a provisional estimate. Any other year raises :class:`CalendarRangeError`.
    """

    def __init__(
        self,
        supplement: Mapping[int, SupplementYear] | None = None,
        *,
        data_file: str = "handlers/data/holidays.json",
    ) -> None:
        self._data_file = data_file
        lib_years = _library_years()
        self._supplement: dict[int, SupplementYear] = {}
        for year, entry in (supplement or {}).items():
            if year in lib_years:
                log.warning(
                    "%s: year %s ignored: chinese_calendar %s covers it; remove it from the file",
                    data_file, year, getattr(chinese_calendar, "__version__", "?"),
                )
                continue
            self._supplement[year] = entry
        self._covered = frozenset(lib_years | set(self._supplement))
        self._warned: set[int] = set()

    @classmethod
    def from_file(cls, path: Path | str | None = None) -> BusinessCalendar:
        """Calendar from ``chinese_calendar`` plus a holiday file (default: handlers/data/holidays.json)."""
        file = Path(path) if path is not None else DEFAULT_HOLIDAYS_PATH
        return cls(load_holiday_file(file), data_file=_display_path(file))

    # -- coverage ------------------------------------------------------------------------------------

    @property
    def covered_years(self) -> tuple[int, ...]:
        """Years for which the calendar knows the holidays, ascending."""
        return tuple(sorted(self._covered))

    @property
    def provisional_years(self) -> tuple[int, ...]:
        """Covered years whose data is marked provisional (an estimate awaiting the State Council notice)."""
        return tuple(sorted(y for y, e in self._supplement.items() if e.provisional))

    def year_source(self, year: int) -> str:
        """Where a year's data comes from: ``"chinese_calendar"`` or the supplementary file's path."""
        if year in self._supplement:
            return self._data_file
        if year in self._covered:
            return "chinese_calendar"
        raise CalendarRangeError(date(year, 1, 1), self._covered, self._data_file)

    # -- days ----------------------------------------------------------------------------------------

    def is_workday(self, d: date) -> bool:
        """True if the date ``d`` is a working day (an aware datetime is taken at its Shanghai date)."""
        if isinstance(d, datetime):
            d = _local(d, "d").date()
        entry = self._supplement.get(d.year)
        if entry is not None:
            if entry.provisional and d.year not in self._warned:
                self._warned.add(d.year)
                log.warning("using the PROVISIONAL %s holiday calendar from %s", d.year, self._data_file)
            if d in entry.workdays:
                return True
            return d.weekday() < 5 and d not in entry.holidays
        if d.year in self._covered:
            return bool(chinese_calendar.is_workday(d))
        raise CalendarRangeError(d, self._covered, self._data_file)

    def _next_workday_after(self, d: date) -> date:
        d += timedelta(days=1)
        while not self.is_workday(d):
            d += timedelta(days=1)
        return d

    def _prev_workday_before(self, d: date) -> date:
        d -= timedelta(days=1)
        while not self.is_workday(d):
            d -= timedelta(days=1)
        return d

    # -- instants ------------------------------------------------------------------------------------

    def add_working_days(self, start: datetime, n: int) -> datetime:
        """Deadline of an ``n``-working-day limit counted from ``start`` (§9.1).

        The start's Shanghai date is day 0; the result is 23:59:59 Asia/Shanghai of the n-th working day
        after it (``n=0``: the end of the start day, working or not).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}; use subtract_working_days")
        day = _local(start, "start").date()
        for _ in range(n):
            day = self._next_workday_after(day)
        return _end_of(day)

    def subtract_working_days(self, instant: datetime, n: int) -> datetime:
        """The same Shanghai wall-clock time, n working days before ``instant``'s date (T1 = due − lead).

        ``n=0`` returns ``instant`` unchanged (in Asia/Shanghai).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}; use add_working_days")
        local = _local(instant, "instant")
        day = local.date()
        for _ in range(n):
            day = self._prev_workday_before(day)
        return datetime.combine(day, local.timetz())

    def working_days_used(self, start: datetime, end: datetime) -> int:
        """Smallest n >= 0 with ``end <= add_working_days(start, n)`` (the ``workingDaysUsed`` of §9.2)."""
        if _require_aware(end, "end") < _require_aware(start, "start"):
            raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
        day = _local(start, "start").date()
        n = 0
        while end > _end_of(day):
            day = self._next_workday_after(day)
            n += 1
        return n

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Number of working days after ``start``'s Shanghai date up to and including ``end``'s.

        ``working_days_between(s, add_working_days(s, n)) == n``. Unlike :meth:`working_days_used`, an end
        on a non-working day does not count the next working day.
        """
        first = _local(start, "start").date()
        last = _local(end, "end").date()
        if last < first:
            raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
        count = 0
        day = first + timedelta(days=1)
        while day <= last:
            count += self.is_workday(day)
            day += timedelta(days=1)
        return count


@functools.cache
def default_calendar() -> BusinessCalendar:
    """The process-wide calendar (chinese_calendar + ``handlers/data/holidays.json``), built on first use."""
    return BusinessCalendar.from_file(DEFAULT_HOLIDAYS_PATH)


def __getattr__(name: str) -> Any:
    # PEP 562: ``DEFAULT_CALENDAR`` is built lazily, on first access.
    if name == "DEFAULT_CALENDAR":
        return default_calendar()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(
    r"P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?"
)


@dataclass(frozen=True)
class IsoDuration:
    """An ISO 8601 duration with whole-number parts, added to aware datetimes like ``relativedelta``.

    Years, months, weeks and days move the wall-clock date in the datetime's own zone (month ends are
    clamped: Jan 31 + P1M = Feb 28); hours, minutes and seconds are elapsed time.
    """

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __str__(self) -> str:
        dated = ((self.years, "Y"), (self.months, "M"), (self.weeks, "W"), (self.days, "D"))
        timed = ((self.hours, "H"), (self.minutes, "M"), (self.seconds, "S"))
        date_part = "".join(f"{v}{u}" for v, u in dated if v)
        time_part = "".join(f"{v}{u}" for v, u in timed if v)
        if not date_part and not time_part:
            return "PT0S"
        return "P" + date_part + (f"T{time_part}" if time_part else "")

    @property
    def has_calendar_part(self) -> bool:
        """True if the duration has years or months (no fixed length in seconds)."""
        return bool(self.years or self.months)

    def to_timedelta(self) -> timedelta:
        """Exact length; a day is 24 h (Asia/Shanghai has no DST). Years or months raise ValueError."""
        if self.has_calendar_part:
            raise ValueError(f"{self} has years or months and no fixed length")
        return timedelta(
            weeks=self.weeks, days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds
        )

    def add_to(self, moment: datetime) -> datetime:
        """``moment`` (aware) plus this duration, in ``moment``'s zone."""
        _require_aware(moment, "moment")
        result = moment
        if self.years or self.months:
            month_index = result.month - 1 + self.months + 12 * self.years
            year, month = result.year + month_index // 12, month_index % 12 + 1
            day = min(result.day, _stdcal.monthrange(year, month)[1])
            result = result.replace(year=year, month=month, day=day)
        if self.weeks or self.days:
            result = result + timedelta(weeks=self.weeks, days=self.days)
        elapsed = timedelta(hours=self.hours, minutes=self.minutes, seconds=self.seconds)
        if elapsed:
            result = (result.astimezone(UTC) + elapsed).astimezone(moment.tzinfo)
        return result

    def __radd__(self, other: object) -> datetime:
        if isinstance(other, datetime):
            return self.add_to(other)
        return NotImplemented


def parse_duration(text: str) -> IsoDuration:
    """Parse an ISO 8601 duration (``PT45M``, ``P1D``, ``P3M``, ``P1Y``, ``P1Y2M3DT4H``) with whole numbers.

    Raises ValueError for anything else (lower case, fractions, signs, repeating cycles such as ``R3/P7D``).
    """
    if not isinstance(text, str):
        raise TypeError(f"ISO 8601 duration must be a string, got {type(text).__name__}")
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an ISO 8601 duration of whole numbers such as PT45M, P1D, P3M or P1Y"
        )
    return IsoDuration(**{k: int(v) for k, v in match.groupdict().items() if v is not None})


# ------------------------------------------------------------------------------------------------- SLA


@dataclass(frozen=True)
class SlaInstants:
    """T1/T2/T3 instants of one SLA step (§9.3), all aware datetimes in Asia/Shanghai.

    ``remind_at`` is T1 (or the 50% reminder), ``remind_at_80`` the second reminder when reminders are at
    50% and 80% of the budget (hour SLAs, or clamped working-day SLAs), else None. ``cap_is_ceiling`` is
    True when ``cap_at`` is a regulatory ceiling, which never moves on an extension (§9.3).
    """

    remind_at: datetime
    due_at: datetime
    cap_at: datetime
    remind_at_80: datetime | None = None
    cap_is_ceiling: bool = False

    @property
    def reminders(self) -> tuple[datetime, ...]:
        """The reminder instants, earliest first."""
        return (self.remind_at,) if self.remind_at_80 is None else (self.remind_at, self.remind_at_80)


def _fraction_of(start: datetime, due: datetime, fraction: float) -> datetime:
    """``start + fraction × (due − start)``, floored to the second, in Asia/Shanghai."""
    if not 0 < fraction < 1:
        raise ValueError(f"reminder fraction must be between 0 and 1, got {fraction}")
    span = (due - start).total_seconds()
    return (start.astimezone(UTC) + timedelta(seconds=int(span * fraction))).astimezone(SHANGHAI)


def _fractions(start: datetime, due: datetime, fractions: Sequence[float]) -> tuple[datetime, datetime]:
    first, second = float(fractions[0]), float(fractions[1])  # Decimal from the policy file is fine
    if first >= second:
        raise ValueError(f"reminder fractions must increase, got {fractions}")
    return _fraction_of(start, due, first), _fraction_of(start, due, second)


def working_day_sla(
    start: datetime,
    days: int,
    lead_days: int,
    ceiling_days: int | None = None,
    calendar: BusinessCalendar | None = None,
    fractions: Sequence[float] = _DEFAULT_FRACTIONS,
) -> SlaInstants:
    """Instants of a working-day SLA whose clock starts at ``start`` (aware) (§9.1, §9.3).

    T2 = ``add_working_days(start, days)``. T1 = T2 − ``lead_days`` WD; when that is not later than
    ``start`` (short budget), T1 is at ``fractions`` (default 50% and 80%) of ``start``→T2 instead.
    T3 = ``add_working_days(start, ceiling_days)`` when a regulatory ceiling is given, else T2 + 1 WD.
    """
    cal = calendar if calendar is not None else default_calendar()
    start = _local(start, "start")
    if days < 0 or lead_days < 0:
        raise ValueError(f"days and lead_days must be >= 0, got days={days}, lead_days={lead_days}")
    if ceiling_days is not None and ceiling_days < days:
        raise ValueError(f"ceiling of {ceiling_days} WD is shorter than the {days} WD limit")
    due = cal.add_working_days(start, days)
    remind = cal.subtract_working_days(due, lead_days)
    remind_80 = None
    if remind <= start:
        remind, remind_80 = _fractions(start, due, fractions)
    # T3: the regulatory ceiling counted from the start, else one working day after the due date.
    cap = cal.add_working_days(*((start, ceiling_days) if ceiling_days is not None else (due, 1)))
    return SlaInstants(remind, due, cap, remind_80, cap_is_ceiling=ceiling_days is not None)


def wall_clock_sla(
    start: datetime,
    duration_text: str,
    ceiling_text: str | None = None,
    fractions: Sequence[float] = _DEFAULT_FRACTIONS,
) -> SlaInstants:
    """Instants of a wall-clock (24×7) SLA whose clock starts at ``start`` (aware) (§9.1, §9.3).

    T2 = start + ``duration_text`` (ISO 8601, applied in Asia/Shanghai); T1 at ``fractions`` (default 50%
    and 80%) of start→T2; T3 = start + ``ceiling_text`` if given, else T2.
    """
    start = _local(start, "start")
    due = parse_duration(duration_text).add_to(start)
    if due <= start:
        raise ValueError(f"duration {duration_text!r} is empty")
    remind, remind_80 = _fractions(start, due, fractions)
    cap = due
    if ceiling_text is not None:
        cap = parse_duration(ceiling_text).add_to(start)
        if cap < due:
            raise ValueError(f"ceiling {ceiling_text!r} is shorter than the limit {duration_text!r}")
    return SlaInstants(remind, due, cap, remind_80, cap_is_ceiling=ceiling_text is not None)
