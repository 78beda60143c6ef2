"""The versioned policy table (spec §0, §4, §10): every time limit, threshold and decision-table value.

The data lives in ``handlers/data/policy.json``: a list of versions, each with an ``effectiveFrom`` instant
and a ``values`` object keyed by the spec's keys (``yk.total.LV_RES``, ``repair.arrive.URBAN`` …). A case
uses the version in force when it started (:meth:`PolicyTable.version_at`) and records its id as
``policyVersion``; later steps fetch the same version with :meth:`PolicyTable.version`.

Each value entry has exactly one kind field — ``wd`` (working days, int), ``duration`` (ISO 8601),
``cycle`` (ISO 8601 repeating, ``R3/P7D``), ``number``, ``text``, ``flag`` (bool) or ``table`` (any JSON;
``{"ref": "<key>"}`` inside it names another key of the same version) — plus a ``grade`` (A/B/C/D/U) and
optional ``source``, ``note``, ``unit``, ``alternatives``, ``ceilingWd``/``ceilingDuration`` (the
regulatory ceiling that drives T3) and ``ceilingSource``. The file is validated on load; every error
names the file, the version and the key.
"""

from __future__ import annotations

import bisect
import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.sla import parse_duration

__all__ = [
    "DEFAULT_POLICY_PATH",
    "KINDS",
    "NoPolicyVersionError",
    "PolicyError",
    "PolicyFileError",
    "PolicyKeyError",
    "PolicyTable",
    "PolicyTypeError",
    "PolicyValue",
    "PolicyVersion",
]

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent.parent / "handlers" / "data" / "policy.json"

KINDS = ("wd", "duration", "cycle", "number", "text", "flag", "table")
GRADES = ("A", "B", "C", "D", "U")
_OPTIONAL = frozenset(
    {"grade", "source", "note", "unit", "alternatives", "ceilingWd", "ceilingDuration", "ceilingSource"}
)
_CYCLE_RE = re.compile(r"R(\d*)/(P.+)")
# Ceilings are compared with the limit by adding both durations to one fixed instant.
_REFERENCE_INSTANT = datetime(2001, 1, 1, tzinfo=UTC)


class PolicyError(ValueError):
    """Base class of policy-table errors."""


class PolicyFileError(PolicyError):
    """The policy file is missing or malformed; the message names the file, version and key."""


class PolicyKeyError(PolicyError, KeyError):
    """A key is not defined in the policy version asked for."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class PolicyTypeError(PolicyError, TypeError):
    """A value was read with the wrong typed helper (e.g. ``wd()`` on a duration)."""


class NoPolicyVersionError(PolicyError):
    """No policy version was in force at the instant asked for, or no version has the id asked for."""


@dataclass(frozen=True)
class PolicyValue:
    """One validated entry of a policy version. ``value``'s type follows ``kind`` (see module docstring)."""

    key: str
    kind: str
    value: Any
    grade: str
    source: str | None = None
    note: str | None = None
    unit: str | None = None
    alternatives: tuple[Any, ...] = ()
    ceiling_wd: int | None = None
    ceiling_duration: str | None = None
    ceiling_source: str | None = None


@dataclass(frozen=True)
class PolicyVersion:
    """One version of the policy table, in force from ``effective_from`` (aware) until the next one."""

    id: str
    effective_from: datetime
    source: str
    note: str | None
    values: Mapping[str, PolicyValue] = field(repr=False)

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.values))

    def __len__(self) -> int:
        return len(self.values)

    def keys(self) -> list[str]:
        """All keys of this version, sorted."""
        return sorted(self.values)

    def get(self, key: str) -> PolicyValue:
        """The entry for ``key``; raises :class:`PolicyKeyError` naming the key and the version."""
        try:
            return self.values[key]
        except KeyError:
            raise PolicyKeyError(f"policy key {key!r} is not defined in policy version {self.id}") from None

    def _typed(self, key: str, kind: str) -> Any:
        entry = self.get(key)
        if entry.kind != kind:
            raise PolicyTypeError(
                f"policy key {key!r} in version {self.id} is a {entry.kind} value, not a {kind} value"
            )
        return entry.value

    def wd(self, key: str) -> int:
        """A limit in working days (PRC calendar, see ``engine.sla``)."""
        return self._typed(key, "wd")

    def duration(self, key: str) -> str:
        """A wall-clock ISO 8601 duration such as ``PT45M`` (parse with ``engine.sla.parse_duration``)."""
        return self._typed(key, "duration")

    def cycle(self, key: str) -> str:
        """An ISO 8601 repeating interval such as ``R3/P7D``."""
        return self._typed(key, "cycle")

    def number(self, key: str) -> int | float:
        """A count, threshold or rate; ints stay ints. Use :meth:`decimal` for money and rates."""
        value = self._typed(key, "number")
        return float(value) if isinstance(value, Decimal) else value

    def decimal(self, key: str) -> Decimal:
        """A number exactly as written in the file."""
        return Decimal(self._typed(key, "number"))

    def text(self, key: str) -> str:
        """A text value (an enum code, a rule name)."""
        return self._typed(key, "text")

    def flag(self, key: str) -> bool:
        """A true/false switch."""
        return self._typed(key, "flag")

    def table(self, key: str) -> Any:
        """A decision-table value (a deep copy; fractions are Decimal; ``{"ref": k}`` names key k)."""
        return copy.deepcopy(self._typed(key, "table"))

    def ceiling_wd(self, key: str) -> int | None:
        """The regulatory ceiling in working days (T3), or None when the key has none."""
        return self.get(key).ceiling_wd

    def ceiling_duration(self, key: str) -> str | None:
        """The regulatory ceiling as an ISO 8601 duration (T3), or None when the key has none."""
        return self.get(key).ceiling_duration

    def group(self, prefix: str) -> dict[str, PolicyValue]:
        """Entries under ``prefix.``, keyed by the rest: ``group("complaint.URGENT")["contact"]``."""
        start = prefix + "."
        found = {k[len(start):]: v for k, v in self.values.items() if k.startswith(start)}
        if not found:
            raise PolicyKeyError(f"no policy key starts with {start!r} in policy version {self.id}")
        return found


class PolicyTable:
    """All versions of the policy file, ordered by ``effective_from``."""

    def __init__(self, versions: list[PolicyVersion], path: Path | None = None) -> None:
        self.path = path
        self._versions = sorted(versions, key=lambda v: v.effective_from)
        self._starts = [v.effective_from for v in self._versions]
        self._by_id = {v.id: v for v in self._versions}

    @classmethod
    def load(cls, path: Path | str | None = None) -> PolicyTable:
        """Read and validate the policy file (default ``handlers/data/policy.json`` next to ``engine/``)."""
        file = Path(path) if path is not None else DEFAULT_POLICY_PATH
        return cls(_parse_file(file), file)

    @property
    def versions(self) -> tuple[PolicyVersion, ...]:
        """The versions, oldest first."""
        return tuple(self._versions)

    def __iter__(self) -> Iterator[PolicyVersion]:
        return iter(self._versions)

    @property
    def latest(self) -> PolicyVersion:
        """The version with the latest ``effective_from``."""
        return self._versions[-1]

    def version(self, version_id: str) -> PolicyVersion:
        """The version with this id (the ``policyVersion`` a case recorded)."""
        try:
            return self._by_id[version_id]
        except KeyError:
            raise NoPolicyVersionError(
                f"no policy version {version_id!r} in {self.path}; known: {', '.join(self._by_id)}"
            ) from None

    def version_at(self, instant: datetime) -> PolicyVersion:
        """The version in force at ``instant`` (aware): the latest one with ``effective_from <= instant``."""
        if not isinstance(instant, datetime):
            raise TypeError(f"instant must be an aware datetime, got {type(instant).__name__}")
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise ValueError(f"instant {instant.isoformat()} is naive: pass a timezone-aware datetime")
        index = bisect.bisect_right(self._starts, instant)
        if index == 0:
            raise NoPolicyVersionError(
                f"no policy version in force at {instant.isoformat()}: the earliest ({self._versions[0].id}) "
                f"takes effect {self._versions[0].effective_from.isoformat()} ({self.path})"
            )
        return self._versions[index - 1]


# ------------------------------------------------------------------------------------------ validation


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyFileError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse_file(path: Path) -> list[PolicyVersion]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: policy file not found") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise PolicyFileError(f"{path}: not valid JSON: {exc}") from None
    except PolicyFileError as exc:
        raise PolicyFileError(f"{path}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("versions"), list) or not raw["versions"]:
        raise PolicyFileError(f"{path}: the top level must be an object with a non-empty 'versions' list")
    unknown = set(raw) - {"versions", "note"}
    if unknown:
        raise PolicyFileError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    versions = [_parse_version(path, i, item) for i, item in enumerate(raw["versions"])]
    seen_ids: set[str] = set()
    seen_starts: dict[datetime, str] = {}
    for v in versions:
        if v.id in seen_ids:
            raise PolicyFileError(f"{path}: version id {v.id!r} appears twice")
        seen_ids.add(v.id)
        if v.effective_from in seen_starts:
            raise PolicyFileError(
                f"{path}: versions {seen_starts[v.effective_from]!r} and {v.id!r} have the same effectiveFrom"
            )
        seen_starts[v.effective_from] = v.id
    return versions


def _parse_version(path: Path, index: int, item: Any) -> PolicyVersion:
    where = f"{path}: versions[{index}]"
    if not isinstance(item, dict):
        raise PolicyFileError(f"{where}: must be an object")
    for name in ("id", "effectiveFrom", "source"):
        if not isinstance(item.get(name), str) or not item[name].strip():
            raise PolicyFileError(f"{where}: '{name}' is required and must be a non-empty string")
    where = f"{path}: version {item['id']}"
    unknown = set(item) - {"id", "effectiveFrom", "source", "note", "values"}
    if unknown:
        raise PolicyFileError(f"{where}: unknown field(s) {sorted(unknown)}")
    text = item["effectiveFrom"]
    try:
        effective_from = datetime.fromisoformat(text)
    except ValueError:
        raise PolicyFileError(f"{where}: effectiveFrom {text!r} is not an ISO 8601 date-time") from None
    if effective_from.tzinfo is None:
        raise PolicyFileError(f"{where}: effectiveFrom {text!r} needs an offset such as +08:00")
    raw_values = item.get("values")
    if not isinstance(raw_values, dict) or not raw_values:
        raise PolicyFileError(f"{where}: 'values' is required and must be a non-empty object")
    values = {key: _parse_value(f"{where}: values[{key!r}]", key, entry) for key, entry in raw_values.items()}
    for key, entry in values.items():
        if entry.kind == "table":
            for ref in _refs(entry.value):
                if ref not in values:
                    raise PolicyFileError(f"{where}: values[{key!r}]: ref {ref!r} is not a key here")
    note = item.get("note")
    if note is not None and not isinstance(note, str):
        raise PolicyFileError(f"{where}: 'note' must be a string")
    return PolicyVersion(item["id"], effective_from, item["source"], note, MappingProxyType(values))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if set(node) == {"ref"}:
            yield node["ref"]
            return
        for child in node.values():
            yield from _refs(child)
    elif isinstance(node, list):
        for child in node:
            yield from _refs(child)


def _check_kind(where: str, kind: str, value: Any) -> None:
    """Raise PolicyFileError unless ``value`` is a valid value of ``kind``."""
    if kind == "wd":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyFileError(f"{where}: wd must be a whole number of working days >= 0, got {value!r}")
    elif kind == "duration":
        try:
            parse_duration(value)
        except (TypeError, ValueError) as exc:
            raise PolicyFileError(f"{where}: {exc}") from None
    elif kind == "cycle":
        match = _CYCLE_RE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise PolicyFileError(f"{where}: cycle {value!r} is not an ISO 8601 repeating interval (R3/P7D)")
        try:
            parse_duration(match.group(2))
        except ValueError as exc:
            raise PolicyFileError(f"{where}: cycle {value!r}: {exc}") from None
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise PolicyFileError(f"{where}: number must be a JSON number, got {value!r}")
    elif kind == "text":
        if not isinstance(value, str) or not value:
            raise PolicyFileError(f"{where}: text must be a non-empty string, got {value!r}")
    elif kind == "flag":
        if not isinstance(value, bool):
            raise PolicyFileError(f"{where}: flag must be true or false, got {value!r}")
    elif kind == "table" and (not isinstance(value, dict | list) or not value):
        raise PolicyFileError(f"{where}: table must be a non-empty object or list")


def _parse_value(where: str, key: str, entry: Any) -> PolicyValue:
    if not isinstance(entry, dict):
        raise PolicyFileError(f"{where}: must be an object such as {{\"wd\": 5, \"grade\": \"A\"}}")
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        raise PolicyFileError(f"{where}: needs exactly one of {', '.join(KINDS)}; found {kinds or 'none'}")
    kind = kinds[0]
    unknown = set(entry) - _OPTIONAL - {kind}
    if unknown:
        raise PolicyFileError(f"{where}: unknown field(s) {sorted(unknown)}")
    value = entry[kind]
    _check_kind(where, kind, value)
    grade = entry.get("grade")
    if grade not in GRADES:
        raise PolicyFileError(f"{where}: grade is required, one of {'/'.join(GRADES)}; got {grade!r}")
    for name in ("source", "note", "unit", "ceilingSource"):
        if name in entry and (not isinstance(entry[name], str) or not entry[name]):
            raise PolicyFileError(f"{where}: {name} must be a non-empty string")
    alternatives = entry.get("alternatives", [])
    if not isinstance(alternatives, list):
        raise PolicyFileError(f"{where}: alternatives must be a list of {kind} values")
    for alt in alternatives:
        _check_kind(f"{where}: alternatives", kind, alt)
    ceiling_wd = entry.get("ceilingWd")
    ceiling_duration = entry.get("ceilingDuration")
    if ceiling_wd is not None:
        if kind != "wd":
            raise PolicyFileError(f"{where}: ceilingWd needs a wd value; use ceilingDuration for durations")
        _check_kind(f"{where}: ceilingWd", "wd", ceiling_wd)
        if ceiling_wd < value:
            raise PolicyFileError(f"{where}: ceilingWd {ceiling_wd} is below the limit {value}")
    if ceiling_duration is not None:
        if kind != "duration":
            raise PolicyFileError(f"{where}: ceilingDuration needs a duration value; use ceilingWd for wd")
        _check_kind(f"{where}: ceilingDuration", "duration", ceiling_duration)
        limit = parse_duration(value).add_to(_REFERENCE_INSTANT)
        if parse_duration(ceiling_duration).add_to(_REFERENCE_INSTANT) < limit:
            raise PolicyFileError(f"{where}: ceilingDuration {ceiling_duration} is shorter than {value}")
    if "ceilingSource" in entry and ceiling_wd is None and ceiling_duration is None:
        raise PolicyFileError(f"{where}: ceilingSource given without ceilingWd or ceilingDuration")
    return PolicyValue(
        key=key,
        kind=kind,
        value=value,
        grade=grade,
        source=entry.get("source"),
        note=entry.get("note"),
        unit=entry.get("unit"),
        alternatives=tuple(alternatives),
        ceiling_wd=ceiling_wd,
        ceiling_duration=ceiling_duration,
        ceiling_source=entry.get("ceilingSource"),
    )
