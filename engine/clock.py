"""The one source of "now" for the engine.

Every timestamp the engine writes (history, due times, timer firing) comes from a
:class:`Clock`. Production uses :class:`SystemClock`; tests and demos use
:class:`FixedClock` and move it forward, so a week of SLAs runs in a second.
All instants are timezone-aware; naive datetimes are refused.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock(ABC):
    """Interface: ``now()`` returns an aware datetime."""

    @abstractmethod
    def now(self) -> datetime:
        """The current instant (timezone-aware)."""


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


class FileClock(Clock):
    """A simulated clock shared by several processes: the instant written in a file.

    ``gridflow`` commands use it when ``GRIDFLOW_CLOCK_FILE`` names the file (and ``--now`` is not
    given). One process moves time with :meth:`set` / :meth:`advance` (write a temporary file, then
    rename it over the old one: readers see the old or the new instant, never half of one); every
    process reads the current instant on each ``now()``, re-reading the file only when it changed
    (one ``stat`` per call). The file holds one ISO 8601 instant with an offset.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None
        self._now: datetime | None = None
        self.now()  # a missing or bad file fails here, with its name

    def now(self) -> datetime:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise ValueError(f"clock file {self.path}: {exc.strerror}") from None
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen or self._now is None:
            text = self.path.read_text(encoding="utf-8").strip()
            try:
                instant = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"clock file {self.path}: '{text}' is not an ISO 8601 date-time") from None
            self._now, self._seen = require_aware(instant, f"clock file {self.path}:"), seen
        return self._now

    def set(self, instant: datetime) -> None:
        self.write(self.path, instant)
        self.now()

    def advance(self, delta: timedelta) -> datetime:
        self.set(self.now() + delta)
        return self.now()

    @staticmethod
    def write(path: str | os.PathLike[str], instant: datetime) -> None:
        """Atomically replace the instant in ``path`` (create it if needed)."""
        require_aware(instant, "clock instant")
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(instant.isoformat(), encoding="utf-8")
        os.replace(temporary, path)


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
