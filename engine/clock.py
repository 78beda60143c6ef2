"""The one source of "now" for the engine.

Every timestamp the engine writes (history, due times, timer firing) comes from a
:class:`Clock`. Production uses :class:`SystemClock`; tests and demos use
:class:`FixedClock` and move it forward, so a week of SLAs runs in a second.
All instants are timezone-aware; naive datetimes are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock:
    """Interface: ``now()`` returns an aware datetime."""

    def now(self) -> datetime:  # pragma: no cover - interface
        raise NotImplementedError


class SystemClock(Clock):
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock(Clock):
    """A settable clock for tests, demos and ``--now``; it only moves when told to."""

    def __init__(self, instant: datetime):
        self._now = require_aware(instant, "clock instant")

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        self._now = require_aware(instant, "clock instant")

    def advance(self, delta: timedelta) -> datetime:
        self._now = self._now + delta
        return self._now


def require_aware(instant: datetime, what: str) -> datetime:
    """Return ``instant`` unchanged, or raise ValueError when it has no time zone."""
    if instant.tzinfo is None or instant.tzinfo.utcoffset(instant) is None:
        raise ValueError(f"{what} {instant.isoformat()} has no time zone offset (e.g. +08:00)")
    return instant


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 date-time that must carry an offset (``2026-12-01T09:00:00+08:00``)."""
    try:
        instant = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO 8601 date-time") from None
    return require_aware(instant, f"'{text}'")
