"""Business calendar and SLA instants (spec §9.1–§9.3), on the real PRC calendar."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import chinese_calendar
import pytest

from engine import sla
from engine.sla import (
    SHANGHAI,
    BusinessCalendar,
    CalendarRangeError,
    HolidayFileError,
    IsoDuration,
    parse_duration,
    wall_clock_sla,
    working_day_sla,
)


@pytest.fixture(scope="module")
def cal() -> BusinessCalendar:
    return BusinessCalendar.from_file()


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


def eod(y: int, m: int, d: int) -> datetime:
    return sh(y, m, d, 23, 59, 59)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(n) for n in range((last - first).days + 1)]


# ------------------------------------------------------------------------------------------- workdays


def test_weekend_is_skipped(cal: BusinessCalendar) -> None:
    assert cal.is_workday(date(2026, 3, 6))  # Friday
    assert not cal.is_workday(date(2026, 3, 7))  # Saturday
    assert not cal.is_workday(date(2026, 3, 8))  # Sunday
    assert cal.add_working_days(sh(2026, 3, 6, 10, 0), 1) == eod(2026, 3, 9)  # Friday + 1 WD = Monday


def test_spring_festival_2026_matches_chinese_calendar(cal: BusinessCalendar) -> None:
    # The package itself says: 春节 2026-02-15..23 off, Saturdays 02-14 and 02-28 are make-up workdays.
    assert chinese_calendar.is_workday(date(2026, 2, 14)) and chinese_calendar.is_workday(date(2026, 2, 28))
    festival = days(date(2026, 2, 15), date(2026, 2, 23))
    assert not any(chinese_calendar.is_workday(d) for d in festival)
    for d in days(date(2026, 2, 1), date(2026, 3, 8)):
        assert cal.is_workday(d) == chinese_calendar.is_workday(d), d
    assert cal.is_workday(date(2026, 2, 14)) and cal.is_workday(date(2026, 2, 28))
    assert not cal.is_workday(date(2026, 2, 16))  # a Monday inside the festival


def test_deadline_across_spring_festival_2026(cal: BusinessCalendar) -> None:
    start = sh(2026, 2, 12, 9, 0)  # Thursday
    # day 1 Fri 02-13, day 2 Sat 02-14 (make-up), 02-15..23 off, day 3 Tue 02-24
    assert cal.add_working_days(start, 2) == eod(2026, 2, 14)
    assert cal.add_working_days(start, 3) == eod(2026, 2, 24)


def test_national_day_2026(cal: BusinessCalendar) -> None:
    assert not any(cal.is_workday(d) for d in days(date(2026, 10, 1), date(2026, 10, 7)))
    assert cal.is_workday(date(2026, 9, 20)) and cal.is_workday(date(2026, 10, 10))  # Sun / Sat make-up
    start = sh(2026, 9, 30, 15, 0)  # Wednesday before the holiday
    assert cal.add_working_days(start, 1) == eod(2026, 10, 8)
    assert cal.add_working_days(start, 3) == eod(2026, 10, 10)  # the make-up Saturday counts
    assert cal.add_working_days(start, 4) == eod(2026, 10, 12)


def test_zero_days_is_end_of_start_day_even_on_a_holiday(cal: BusinessCalendar) -> None:
    assert cal.add_working_days(sh(2026, 10, 3, 8, 0), 0) == eod(2026, 10, 3)
    assert cal.add_working_days(sh(2026, 10, 3, 8, 0), 1) == eod(2026, 10, 8)


def test_deadline_crossing_into_2027_uses_the_provisional_file(cal: BusinessCalendar) -> None:
    with pytest.raises(NotImplementedError):  # why the file exists
        chinese_calendar.is_workday(date(2027, 1, 4))
    assert 2027 in cal.provisional_years
    assert cal.year_source(2027).endswith("holidays.json")
    assert cal.year_source(2026) == "chinese_calendar"
    start = sh(2026, 12, 30, 10, 0)  # Wednesday
    # day 1 Thu 12-31; 元旦 2027-01-01..03 off; day 2 Mon 01-04; day 3 Tue 01-05
    assert cal.add_working_days(start, 3) == eod(2027, 1, 5)
    assert cal.working_days_used(start, sh(2027, 1, 4, 9, 0)) == 2


def test_shipped_2027_data_is_marked_provisional() -> None:
    raw = json.loads(sla.DEFAULT_HOLIDAYS_PATH.read_text(encoding="utf-8"))
    entry = raw["2027"]
    assert entry["provisional"] is True
    assert "国务院办公厅" in entry["source"] and "PROVISIONAL" in entry["source"]
    assert "2027-10-01" in entry["holidays"] and "2027-01-01" in entry["holidays"]


def test_year_outside_the_calendar_raises_with_a_clear_message(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarRangeError) as info:
        cal.is_workday(date(2029, 3, 1))
    message = str(info.value)
    assert "no PRC holiday calendar for 2029" in message
    assert "2029-03-01" in message
    assert "2004–2027" in message
    assert "handlers/data/holidays.json" in message
    assert info.value.year == 2029


def test_arithmetic_running_into_an_unknown_year_raises(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarRangeError, match="for 2028"):
        cal.add_working_days(sh(2027, 12, 28, 9, 0), 5)
    with pytest.raises(CalendarRangeError, match="for 2003"):
        cal.subtract_working_days(eod(2004, 1, 2), 3)


def test_supplementary_file_is_validated(tmp_path) -> None:
    bad = tmp_path / "holidays.json"
    bad.write_text(json.dumps({"2028": {"holidays": ["2028-01-01"], "workdays": ["2028-01-04"]}}))
    with pytest.raises(HolidayFileError, match="2028-01-04 is a weekday"):
        BusinessCalendar.from_file(bad)
    bad.write_text(json.dumps({"2028": {"holidays": ["2027-12-31"]}}))
    with pytest.raises(HolidayFileError, match="not in 2028"):
        BusinessCalendar.from_file(bad)
    with pytest.raises(HolidayFileError, match="not found"):
        BusinessCalendar.from_file(tmp_path / "missing.json")


def test_a_year_from_the_file_extends_the_calendar(tmp_path) -> None:
    extra = tmp_path / "holidays.json"
    extra.write_text(json.dumps({"2030": {"holidays": ["2030-01-01"], "workdays": ["2030-01-05"]}}))
    cal = BusinessCalendar.from_file(extra)
    assert not cal.is_workday(date(2030, 1, 1))  # Tuesday, listed holiday
    assert cal.is_workday(date(2030, 1, 5))  # Saturday, listed workday
    assert not cal.is_workday(date(2030, 1, 6))  # Sunday
    assert cal.provisional_years == ()
    with pytest.raises(CalendarRangeError, match="2004–2026, 2030"):
        cal.is_workday(date(2027, 6, 1))


def test_default_calendar_is_lazy_and_shared() -> None:
    assert sla.DEFAULT_CALENDAR is sla.default_calendar()
    assert 2027 in sla.DEFAULT_CALENDAR.covered_years


# ------------------------------------------------------------------------------------ counting rules


def test_subtract_working_days_keeps_the_wall_clock_time(cal: BusinessCalendar) -> None:
    assert cal.subtract_working_days(eod(2026, 3, 9), 2) == eod(2026, 3, 5)  # Mon − 2 WD = Thu
    assert cal.subtract_working_days(eod(2026, 2, 24), 2) == eod(2026, 2, 13)  # over the festival
    assert cal.subtract_working_days(eod(2026, 3, 9), 0) == eod(2026, 3, 9)


@pytest.mark.parametrize(
    "start",
    [
        sh(2026, 3, 6, 10, 0),  # Friday
        sh(2026, 3, 7, 10, 0),  # Saturday
        sh(2026, 2, 13, 23, 0),  # day before a make-up Saturday and the festival
        sh(2026, 9, 30, 0, 0),  # before 国庆
        sh(2026, 12, 24, 12, 0),  # runs into 2027
    ],
)
def test_working_days_used_round_trip(cal: BusinessCalendar, start: datetime) -> None:
    for n in range(16):
        due = cal.add_working_days(start, n)
        assert cal.working_days_used(start, due) == n
        assert cal.working_days_used(start, due + timedelta(seconds=1)) == n + 1
        assert cal.working_days_between(start, due) == n


def test_used_versus_between_for_an_end_on_a_weekend(cal: BusinessCalendar) -> None:
    start = sh(2026, 3, 5, 9, 0)  # Thursday
    end = sh(2026, 3, 7, 11, 0)  # Saturday: Friday's deadline has passed
    assert cal.working_days_between(start, end) == 1
    assert cal.working_days_used(start, end) == 2
    assert cal.working_days_used(start, sh(2026, 3, 5, 17, 0)) == 0
    with pytest.raises(ValueError, match="before start"):
        cal.working_days_used(start, start - timedelta(minutes=1))


def test_utc_input_counts_on_the_shanghai_date(cal: BusinessCalendar) -> None:
    # 2026-03-05 20:00 UTC is Friday 2026-03-06 04:00 in Shanghai: +1 WD is Monday, not Friday.
    start = datetime(2026, 3, 5, 20, 0, tzinfo=UTC)
    due = cal.add_working_days(start, 1)
    assert due == eod(2026, 3, 9)
    assert due == datetime(2026, 3, 9, 15, 59, 59, tzinfo=UTC)
    assert due.isoformat() == "2026-03-09T23:59:59+08:00"
    assert not cal.is_workday(datetime(2026, 3, 6, 17, 0, tzinfo=UTC))  # Saturday 01:00 in Shanghai


def test_naive_datetimes_are_refused(cal: BusinessCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        cal.add_working_days(datetime(2026, 3, 5, 9, 0), 1)
    with pytest.raises(ValueError, match="naive"):
        wall_clock_sla(datetime(2026, 3, 5, 9, 0), "PT45M")


# ------------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT45M", IsoDuration(minutes=45)),
        ("P1D", IsoDuration(days=1)),
        ("P3M", IsoDuration(months=3)),
        ("P1Y", IsoDuration(years=1)),
        ("P2W", IsoDuration(weeks=2)),
        ("P1Y2M3DT4H5M6S", IsoDuration(1, 2, 0, 3, 4, 5, 6)),
    ],
)
def test_parse_duration(text: str, expected: IsoDuration) -> None:
    assert parse_duration(text) == expected
    assert str(parse_duration(text)) == text


@pytest.mark.parametrize(
    "text", ["45M", "P", "PT", "P1DT", "P1.5D", "pt45m", "R3/P7D", "PT-5M", " PT5M", "PT5M "]
)
def test_parse_duration_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        parse_duration(text)


def test_calendar_durations_clamp_month_ends() -> None:
    assert sh(2026, 11, 30, 9, 0) + parse_duration("P3M") == sh(2027, 2, 28, 9, 0)
    assert sh(2024, 2, 29, 9, 0) + parse_duration("P1Y") == sh(2025, 2, 28, 9, 0)
    assert sh(2026, 12, 31, 23, 30) + parse_duration("PT45M") == sh(2027, 1, 1, 0, 15)
    assert parse_duration("P1DT2H").to_timedelta() == timedelta(hours=26)
    with pytest.raises(ValueError, match="no fixed length"):
        parse_duration("P1M").to_timedelta()


# ------------------------------------------------------------------------------------------------ SLA


def test_working_day_sla_reminds_lead_days_before_due(cal: BusinessCalendar) -> None:
    start = sh(2026, 3, 2, 10, 0)  # Monday
    inst = working_day_sla(start, 5, 2, calendar=cal)
    assert inst.due_at == eod(2026, 3, 9)
    assert inst.remind_at == eod(2026, 3, 5)  # due − 2 WD
    assert inst.remind_at_80 is None
    assert inst.cap_at == eod(2026, 3, 10)  # no ceiling: due + 1 WD
    assert not inst.cap_is_ceiling
    with_ceiling = working_day_sla(start, 5, 2, ceiling_days=8, calendar=cal)
    assert with_ceiling.cap_at == eod(2026, 3, 12)
    assert with_ceiling.cap_is_ceiling


def test_working_day_sla_clamps_short_budgets_to_50_and_80_percent(cal: BusinessCalendar) -> None:
    start = sh(2026, 3, 2, 10, 0)  # Monday; 1 WD → due Tuesday 23:59:59, 37:59:59 later
    inst = working_day_sla(start, 1, 2, calendar=cal)
    assert inst.due_at == eod(2026, 3, 3)
    budget = inst.due_at - start
    assert budget == timedelta(hours=37, minutes=59, seconds=59)
    assert inst.remind_at == sh(2026, 3, 3, 4, 59, 59)  # start + floor(50%)
    assert inst.remind_at_80 == sh(2026, 3, 3, 16, 23, 59)  # start + floor(80%)
    assert inst.reminders == (inst.remind_at, inst.remind_at_80)
    assert start < inst.remind_at < inst.remind_at_80 < inst.due_at


def test_clamp_applies_when_due_minus_lead_equals_start(cal: BusinessCalendar) -> None:
    start = eod(2026, 3, 6)  # Friday 23:59:59; +2 WD = Tuesday; Tuesday − 2 WD = Friday 23:59:59 = start
    inst = working_day_sla(start, 2, 2, calendar=cal)
    assert inst.remind_at_80 is not None
    assert inst.remind_at == start + (inst.due_at - start) / 2
    later = working_day_sla(start - timedelta(seconds=1), 2, 2, calendar=cal)
    assert later.remind_at == start and later.remind_at_80 is None


def test_working_day_sla_over_the_festival_uses_the_real_calendar(cal: BusinessCalendar) -> None:
    inst = working_day_sla(sh(2026, 2, 11, 9, 0), 4, 2, ceiling_days=8, calendar=cal)
    # day 1 Thu 02-12, 2 Fri 02-13, 3 Sat 02-14 (make-up), 4 Tue 02-24; due − 2 WD = Fri 02-13
    assert inst.due_at == eod(2026, 2, 24)
    assert inst.remind_at == eod(2026, 2, 13)
    assert inst.cap_at == eod(2026, 2, 28)  # 5 Wed 02-25, 6 Thu, 7 Fri, 8 Sat 02-28 (make-up)


def test_working_day_sla_rejects_a_ceiling_below_the_limit(cal: BusinessCalendar) -> None:
    with pytest.raises(ValueError, match="shorter"):
        working_day_sla(sh(2026, 3, 2, 10, 0), 5, 2, ceiling_days=3, calendar=cal)


def test_working_day_sla_uses_the_default_calendar() -> None:
    assert working_day_sla(sh(2026, 9, 30, 15, 0), 1, 2).due_at == eod(2026, 10, 8)


def test_wall_clock_sla_with_ceiling() -> None:
    inst = wall_clock_sla(sh(2026, 10, 1, 10, 0), "PT45M", "PT60M")  # holidays do not matter (24×7)
    assert inst.remind_at == sh(2026, 10, 1, 10, 22, 30)
    assert inst.remind_at_80 == sh(2026, 10, 1, 10, 36)
    assert inst.due_at == sh(2026, 10, 1, 10, 45)
    assert inst.cap_at == sh(2026, 10, 1, 11, 0)
    assert inst.cap_is_ceiling


def test_wall_clock_sla_without_ceiling_caps_at_due_and_answers_in_shanghai_time() -> None:
    inst = wall_clock_sla(datetime(2026, 12, 31, 14, 0, tzinfo=UTC), "PT24H")  # 22:00 in Shanghai
    assert inst.due_at == sh(2027, 1, 1, 22, 0)
    assert inst.due_at.utcoffset() == timedelta(hours=8)
    assert inst.cap_at == inst.due_at and not inst.cap_is_ceiling
    assert inst.remind_at == sh(2027, 1, 1, 10, 0)
    assert inst.remind_at_80 == sh(2027, 1, 1, 17, 12)


def test_wall_clock_sla_calendar_days_and_bad_ceiling() -> None:
    assert wall_clock_sla(sh(2026, 11, 30, 9, 0), "P7D").due_at == sh(2026, 12, 7, 9, 0)
    with pytest.raises(ValueError, match="shorter"):
        wall_clock_sla(sh(2026, 11, 30, 9, 0), "PT45M", "PT30M")
