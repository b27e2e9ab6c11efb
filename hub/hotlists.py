"""Hot lists on the hub: importing agency extracts, manual changes, matching reads, snapshots for nodes.

A hot list (stolen vehicles, AMBER alerts, warrants...) is a :class:`~hub.models.Hotlist` with
:class:`~hub.models.HotlistEntry` rows. Entries are never edited: a change removes the old row
(``removed_utc``/``version_removed``) and adds a new one, and every change is one
:class:`~hub.models.HotlistVersion` with who made it and why (``created_by``, ``note``). Versions are global
and only increase, so a node's ``have_version`` says exactly which snapshot it holds.

- :func:`import_file` loads a CSV, TSV or fixed-width extract (the daily NCIC file, an AMBER alert
  sheet) through a :class:`ColumnMapping`. Bad rows are skipped and reported by line number and reason
  only: a plate is never echoed into a message or a log line. ``replace=True`` is a full refresh
  (entries missing from the file are removed); ``replace=False`` appends.
- :func:`add_entry` / :func:`remove_entry` are manual changes; both need a person and a reason.
- An entry past its ``expires_utc`` is no longer active; :func:`expire_entries` (run it periodically)
  removes such entries with a new version so the nodes drop them too.
- :func:`purge_expired_lists` applies the policy's hot-list retention (see its docstring for the rule
  and for entries that hits refer to).
- :class:`HotlistService` keeps every active entry in an ``edge.hotlist.HotlistIndex`` (the same dict
  matcher the nodes use: a few lookups per read, whatever the list size), rebuilt when the hot lists
  change, records :class:`~hub.models.Hit` rows for matching reads and serves snapshots to nodes.

Concurrency: every function that changes hot lists first takes a write lock (a transaction-scoped
advisory lock on PostgreSQL; on SQLite a no-op ``UPDATE``, which takes the database's write lock before
anything is read, so the transaction cannot fail later on a stale read snapshot). Changes are therefore
serialised and versions commit in number order. Call them at the start of a transaction; the caller
commits.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from edge.hotlist import HotlistIndex, MatchType
from edge.recognition.formats import normalize_plate
from edge.wire import (
    HotlistCurrentMessage,
    HotlistEntryModel,
    HotlistMessage,
    ListedPlate,
    ReadRecord,
    pack_hotlist_entries,
)
from hub.models import Hit, Hotlist, HotlistEntry, HotlistVersion, utcnow
from hub.storage import sha256_hex

logger = logging.getLogger(__name__)

ImportFormat = Literal["csv", "tsv", "fixed"]

MAX_PLATE_LENGTH = 16
"""The longest normalised plate a list may hold (``HotlistEntry.plate``, the wire's ``PlateText``)."""
MAX_REPORTED_ERRORS = 1000
"""Bad rows listed in an :class:`ImportResult`; all of them are counted in ``skipped``."""
CHECK_INTERVAL_S = 1.0
"""How often :class:`HotlistService` asks the database whether the hot lists changed."""
PG_LOCK_KEY = 0x414C5052_484F544C  # "ALPRHOTL"
"""The PostgreSQL advisory lock that serialises hot-list changes."""

_CHUNK = 500
"""Ids per ``IN (...)`` list (well under both databases' bound-parameter limits)."""
_LIST_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_STATE = re.compile(r"^[A-Z0-9-]{1,8}$")
_US_REGION = re.compile(r"^us-([a-z]{2})$")

_T = TypeVar("_T")
_ENTRY_TABLE = HotlistEntry.metadata.tables[HotlistEntry.__tablename__]


# ---------------------------------------------------------------------------------------------
# Errors, settings and mappings.
# ---------------------------------------------------------------------------------------------


class HotlistError(Exception):
    """Base class for the hot-list domain errors. Messages never contain a plate."""


class UnknownHotlistError(HotlistError, LookupError):
    """No hot list with that name."""


class InvalidEntryError(HotlistError, ValueError):
    """A manual entry or change that cannot be accepted (bad plate, no reason...)."""


class DuplicateEntryError(HotlistError):
    """The list already holds an active entry for that plate and state."""


class EntryNotFoundError(HotlistError, LookupError):
    """No entry for that plate and state on the list."""


class HotlistImportError(HotlistError):
    """A file that cannot be imported as a whole (missing column, undecodable, no valid rows...)."""


class HotlistSettings(BaseModel):
    """How a hot list behaves; applied when a list is created (``update_hotlist_settings`` changes them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", max_length=1000, description="what the list is, for people")
    default_category: str = Field(default="", max_length=64, description="category of rows that give none")
    default_priority: int = Field(default=5, ge=0, le=9, description="0 most urgent; for rows that give none")
    lookalike_tolerance: bool = Field(default=False, description="also match one O/0, B/8... swap away")
    check_state: bool = Field(default=False, description="a hit needs the read's state (when known) to agree")
    retention_days: int | None = Field(
        default=None, ge=1, le=3650, description="entries are purged this long after being added or removed"
    )


def _check_range(value: tuple[int, int]) -> tuple[int, int]:
    start, end = value
    if start < 0 or end <= start:
        raise ValueError("a fixed-width column is (start, end) with 0 <= start < end (end exclusive)")
    return value


HeaderName = Annotated[str, Field(min_length=1, max_length=128)]
FixedRange = Annotated[tuple[int, int], AfterValidator(_check_range)]
ColumnSpec = HeaderName | FixedRange
"""A header name (CSV/TSV) or a ``(start, end)`` character range, end exclusive (fixed-width)."""


class ColumnMapping(BaseModel):
    """Where each field of an entry is in an import file, and the defaults for fields it lacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plate: ColumnSpec = Field(default="plate", description="the plate column (required)")
    state: ColumnSpec | None = Field(default=None, description="issuing state or province")
    category: ColumnSpec | None = Field(default=None, description="e.g. 'stolen vehicle'")
    priority: ColumnSpec | None = Field(default=None, description="0 (most urgent) to 9")
    expiry: ColumnSpec | None = Field(default=None, description="when the entry stops being active")
    notes: ColumnSpec | list[ColumnSpec] | None = Field(
        default=None, description="one column, or several joined with spaces (make, year, case number...)"
    )
    source: ColumnSpec | None = Field(default=None, description="originating agency; the file name when absent")
    default_category: str | None = Field(default=None, max_length=64, description="else the list's default")
    default_priority: int | None = Field(default=None, ge=0, le=9, description="else the list's default")
    date_format: str = Field(default="%Y-%m-%d", min_length=1, description="strptime format of expiry; UTC if naive")
    comment_prefix: str = Field(default="#", max_length=8, description="lines starting with this are skipped")
    encoding: str = Field(default="utf-8-sig", description="text encoding of the file")

    def specs(self) -> dict[str, list[str | tuple[int, int]]]:
        """Each mapped field's columns (several only for ``notes``)."""
        found: dict[str, list[str | tuple[int, int]]] = {}
        for name in ("plate", "state", "category", "priority", "expiry", "source"):
            spec = getattr(self, name)
            if spec is not None:
                found[name] = [spec]
        if self.notes is not None:
            found["notes"] = list(self.notes) if isinstance(self.notes, list) else [self.notes]
        return found


# ---------------------------------------------------------------------------------------------
# Results and value objects.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    """A skipped row: its line number in the file and why (never its content)."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImportResult:
    hotlist_id: int
    version: int
    rows: int
    """Data rows read (comments and blank lines excluded), bad ones included."""
    added: int
    removed: int
    """Entries removed: missing from the file (``replace=True``), superseded by a changed row, or expired."""
    unchanged: int
    """Rows identical to an entry already listed, which stays as it is."""
    duplicates: int
    """Rows repeating an earlier row's plate and state in the same file (the first one counts)."""
    already_expired: int
    """Valid rows whose expiry had already passed: not listed."""
    skipped: int
    """Bad rows (all counted; ``errors`` lists the first MAX_REPORTED_ERRORS)."""
    errors: tuple[RowError, ...]
    source_sha256: str


@dataclass(frozen=True, slots=True)
class ActiveEntry(ListedPlate):
    """An active entry as the hub matches it: the wire fields (what nodes get) plus its database identity.

    A compact record like its base, not a model: the hub's index holds a million of them."""

    entry_id: int = 0
    """``HotlistEntry.id``."""
    hotlist_id: int = 0
    """``Hotlist.id``."""
    version_added: int = 0
    """The version that added the entry."""
    check_state: bool = False
    """The list's ``check_state``."""
    expires_utc: datetime | None = None
    """No longer active from then on (aware UTC)."""


@dataclass(frozen=True, slots=True)
class HitEvent:
    """A recorded hit with what dispatch needs to alert people about it."""

    hit_id: int
    read_id: str
    plate_read: str
    """The read's top text."""
    matched_text: str
    """The text that matched: the top text or one of the read's candidates."""
    entry_plate: str
    entry_id: int
    entry_version: int
    list_name: str
    category: str
    priority: int
    match_type: MatchType
    score: float
    node_name: str
    camera_id: str
    best_utc: datetime
    latitude: float | None
    longitude: float | None
    crop_sha256: str


# ---------------------------------------------------------------------------------------------
# Small helpers.
# ---------------------------------------------------------------------------------------------


def _utc(value: datetime | None, what: str = "time") -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(UTC)


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_person(value: str, what: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise InvalidEntryError(f"{what} is required")
    if len(cleaned) > 64:
        raise InvalidEntryError(f"{what} is longer than 64 characters")
    return cleaned


def _check_reason(reason: str) -> str:
    cleaned = reason.strip()
    if not cleaned:
        raise InvalidEntryError("a reason is required")
    return cleaned


def normalize_state(value: str | None) -> str | None:
    """Upper-case, stripped state code, None when empty; ValueError when not a plausible code."""
    if value is None:
        return None
    cleaned = value.strip().upper()
    if not cleaned:
        return None
    if _STATE.fullmatch(cleaned) is None:
        raise ValueError("bad state")
    return cleaned


def read_state(region: str) -> str | None:
    """The state a read's region names ("us-ca" -> "CA"); None when the region does not tell one."""
    found = _US_REGION.fullmatch(region.strip().lower())
    return found.group(1).upper() if found else None


def _take_write_lock(session: Session) -> None:
    """Serialise hot-list changes (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(PG_LOCK_KEY)))
    else:
        session.execute(text("UPDATE hotlist_versions SET version = version WHERE 0 = 1"))


def _new_version(
    session: Session, hotlist: Hotlist, created_by: str, note: str, now: datetime, source_sha256: str | None = None
) -> HotlistVersion:
    version = HotlistVersion(
        hotlist_id=hotlist.id, created_utc=now, created_by=created_by, note=note, source_sha256=source_sha256
    )
    session.add(version)
    session.flush()
    return version


def _mark_removed(session: Session, entry_ids: Sequence[int], version: int, now: datetime) -> None:
    for chunk in _chunks(entry_ids):
        session.execute(
            update(HotlistEntry)
            .where(HotlistEntry.id.in_(chunk))
            .values(removed_utc=now, version_removed=version)
            .execution_options(synchronize_session=False)
        )


def _is_active(now: datetime) -> ColumnElement[bool]:
    """SQL condition: the entry is listed and not expired at ``now``."""
    return and_(
        HotlistEntry.version_removed.is_(None),
        or_(HotlistEntry.expires_utc.is_(None), HotlistEntry.expires_utc > now),
    )


def get_hotlist(session: Session, name: str) -> Hotlist:
    hotlist = session.scalar(select(Hotlist).where(Hotlist.name == name))
    if hotlist is None:
        raise UnknownHotlistError(f"no hot list named {name!r}")
    return hotlist


def create_hotlist(
    session: Session, name: str, settings: HotlistSettings | None = None, now: datetime | None = None
) -> Hotlist:
    """A new, empty list (no version: its active entries, none, did not change). The caller commits."""
    if _LIST_NAME.fullmatch(name) is None:
        raise InvalidEntryError("a hot-list name is 1-64 letters, digits, '_', '.' or '-'")
    if session.scalar(select(Hotlist.id).where(Hotlist.name == name)) is not None:
        raise HotlistError(f"hot list {name!r} already exists")
    settings = settings or HotlistSettings()
    hotlist = Hotlist(
        name=name,
        description=settings.description,
        default_category=settings.default_category,
        default_priority=settings.default_priority,
        lookalike_tolerance=settings.lookalike_tolerance,
        check_state=settings.check_state,
        retention_days=settings.retention_days,
        created_utc=_utc(now),
        active=True,
    )
    session.add(hotlist)
    session.flush()
    logger.info("created hot list %s", name)
    return hotlist


def update_hotlist_settings(
    session: Session,
    hotlist_name: str,
    settings: HotlistSettings,
    changed_by: str,
    reason: str,
    now: datetime | None = None,
) -> int:
    """Change a list's settings; a new version, since tolerance and state checks travel to the nodes."""
    changed_by, reason, now = _check_person(changed_by, "changed_by"), _check_reason(reason), _utc(now)
    _take_write_lock(session)
    hotlist = get_hotlist(session, hotlist_name)
    for name in ("description", "default_category", "default_priority", "lookalike_tolerance", "check_state"):
        setattr(hotlist, name, getattr(settings, name))
    hotlist.retention_days = settings.retention_days
    version = _new_version(session, hotlist, changed_by, f"settings changed: {reason}", now)
    return version.version


def current_version(session: Session) -> int:
    """The newest hot-list version, 0 when there is none."""
    return session.scalar(select(func.max(HotlistVersion.version))) or 0


# ---------------------------------------------------------------------------------------------
# Importing files.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    plate: str
    state: str | None
    category: str | None  # None: the list's default
    priority: int | None
    expires_utc: datetime | None
    notes: str
    source: str | None

    @property
    def key(self) -> tuple[str, str]:
        return self.plate, self.state or ""


def _records(text_data: str, fmt: ImportFormat, mapping: ColumnMapping) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, field -> raw text) for each data row of the file."""
    specs = mapping.specs()
    prefix = mapping.comment_prefix
    if fmt == "fixed":
        ranges: dict[str, list[tuple[int, int]]] = {}
        for name, columns in specs.items():
            if not all(isinstance(column, tuple) for column in columns):
                raise HotlistImportError(f"fixed-width field {name!r} needs a (start, end) range, not a header name")
            ranges[name] = [column for column in columns if isinstance(column, tuple)]
        for number, line in enumerate(text_data.splitlines(), start=1):
            if not line.strip() or (prefix and line.startswith(prefix)):
                continue
            yield number, {name: _join(line[s:e] for s, e in spans) for name, spans in ranges.items()}
        return

    reader = csv.reader(io.StringIO(text_data, newline=""), delimiter="," if fmt == "csv" else "\t")
    indexes: dict[str, list[int]] | None = None
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row) or (prefix and row[0].startswith(prefix)):
                continue
            if indexes is None:
                indexes = _header_indexes(row, specs)
                continue
            yield (
                reader.line_num,
                {name: _join(row[i] if i < len(row) else "" for i in columns) for name, columns in indexes.items()},
            )
    except csv.Error:
        raise HotlistImportError(f"line {reader.line_num}: malformed {fmt.upper()}") from None
    if indexes is None:
        raise HotlistImportError("the file has no header row")


def _join(parts: Iterable[str]) -> str:
    return " ".join(part.strip() for part in parts if part.strip())


def _header_indexes(header: list[str], specs: dict[str, list[str | tuple[int, int]]]) -> dict[str, list[int]]:
    positions = {cell.strip().lower(): index for index, cell in reversed(list(enumerate(header)))}
    indexes: dict[str, list[int]] = {}
    for name, columns in specs.items():
        indexes[name] = []
        for column in columns:
            if not isinstance(column, str):
                raise HotlistImportError(f"CSV/TSV field {name!r} needs a header name, not a character range")
            position = positions.get(column.strip().lower())
            if position is None:
                raise HotlistImportError(f"column {column!r} (for {name}) is not in the header")
            indexes[name].append(position)
    return indexes


def _parse_row(number: int, fields: dict[str, str], mapping: ColumnMapping) -> _Row | RowError:
    raw_plate = fields.get("plate", "")
    if not raw_plate:
        return RowError(number, "empty plate")
    plate = normalize_plate(raw_plate)
    if not plate:
        return RowError(number, "plate has no letters or digits")
    if len(plate) > MAX_PLATE_LENGTH:
        return RowError(number, f"plate longer than {MAX_PLATE_LENGTH} characters")
    try:
        state = normalize_state(fields.get("state"))
    except ValueError:
        return RowError(number, "bad state")
    category = fields.get("category") or mapping.default_category
    if category is not None and len(category) > 64:
        return RowError(number, "category longer than 64 characters")
    priority = mapping.default_priority
    if fields.get("priority"):
        try:
            priority = int(fields["priority"])
        except ValueError:
            return RowError(number, "bad priority (not a whole number)")
        if not 0 <= priority <= 9:
            return RowError(number, "bad priority (not 0-9)")
    expires: datetime | None = None
    if fields.get("expiry"):
        try:
            parsed = datetime.strptime(fields["expiry"], mapping.date_format)
        except ValueError:
            return RowError(number, "bad expiry date")
        expires = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    source = fields.get("source") or None
    if source is not None and len(source) > 128:
        return RowError(number, "source longer than 128 characters")
    return _Row(number, plate, state, category, priority, expires, fields.get("notes", ""), source)


def _same(listed: tuple[object, ...], row: tuple[object, ...], compare_source: bool) -> bool:
    """Does a row say the same as the listed entry? The default source (the file's name, which often
    carries a date) is not compared, or every daily extract would re-add every entry."""
    return listed == row if compare_source else listed[:-1] == row[:-1]


def import_file(
    session: Session,
    hotlist_name: str,
    path: Path | str,
    fmt: ImportFormat,
    mapping: ColumnMapping,
    imported_by: str,
    replace: bool = True,
    now: datetime | None = None,
    settings: HotlistSettings | None = None,
) -> ImportResult:
    """Import an extract into ``hotlist_name`` (created with ``settings`` when missing) as ONE new version.

    Plates are normalised; bad rows are skipped and counted with their line numbers; a plate and state
    seen twice in the file count once. A row identical to an entry already listed leaves that entry as
    it is; a row that differs (category, priority, expiry, notes, and source when mapped) supersedes it. With
    ``replace`` (a full refresh, as with a daily NCIC extract) entries missing from the file are
    removed; without it the file is appended. Expired entries of the list are removed either way.

    A replacing file with no valid row is refused (:class:`HotlistImportError`): a truncated extract
    must not empty the list. The caller commits.
    """
    now = _utc(now)
    imported_by = _check_person(imported_by, "imported_by")
    path = Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        text_data = data.decode(mapping.encoding)
    except (UnicodeDecodeError, LookupError):
        raise HotlistImportError(f"the file is not valid {mapping.encoding} text") from None

    errors: list[RowError] = []
    rows: dict[tuple[str, str], _Row] = {}
    total = duplicates = already_expired = 0
    for number, fields in _records(text_data, fmt, mapping):
        total += 1
        parsed = _parse_row(number, fields, mapping)
        if isinstance(parsed, RowError):
            errors.append(parsed)
        elif parsed.expires_utc is not None and parsed.expires_utc <= now:
            already_expired += 1
        elif parsed.key in rows:
            duplicates += 1
        else:
            rows[parsed.key] = parsed
    if replace and not rows:
        raise HotlistImportError(f"no valid rows in {total} ({len(errors)} bad): refusing to empty the list")

    _take_write_lock(session)
    hotlist = session.scalar(select(Hotlist).where(Hotlist.name == hotlist_name))
    if hotlist is None:
        hotlist = create_hotlist(session, hotlist_name, settings, now)
    version = _new_version(session, hotlist, imported_by, "", now, digest)

    listed = session.execute(
        select(
            HotlistEntry.id,
            HotlistEntry.plate,
            HotlistEntry.state,
            HotlistEntry.category,
            HotlistEntry.priority,
            HotlistEntry.expires_utc,
            HotlistEntry.notes,
            HotlistEntry.source,
        ).where(HotlistEntry.hotlist_id == hotlist.id, HotlistEntry.version_removed.is_(None))
    ).all()
    active: dict[tuple[str, str], tuple[int, tuple[object, ...]]] = {}
    to_remove: set[int] = set()
    for entry_id, plate, state, category, priority, expires, notes, source in listed:
        if expires is not None and expires <= now:
            to_remove.add(entry_id)
        else:
            active[(plate, state or "")] = (entry_id, (category, priority, expires, notes, source))

    default_source = path.name[:128]
    reason = f"import of {path.name} (sha256 {digest[:16]})"
    kept: set[int] = set()
    new_rows: list[dict[str, Any]] = []
    for key, row in rows.items():
        category = row.category if row.category is not None else hotlist.default_category
        priority = row.priority if row.priority is not None else hotlist.default_priority
        source = row.source or default_source
        content = (category, priority, row.expires_utc, row.notes, source)
        existing = active.get(key)
        if existing is not None and _same(existing[1], content, compare_source=mapping.source is not None):
            kept.add(existing[0])
            continue
        if existing is not None:
            to_remove.add(existing[0])  # superseded by the changed row
        new_rows.append(
            {
                "hotlist_id": hotlist.id,
                "plate": row.plate,
                "state": row.state,
                "category": category,
                "priority": priority,
                "expires_utc": row.expires_utc,
                "notes": row.notes,
                "source": source,
                "added_by": imported_by,
                "reason": reason,
                "added_utc": now,
                "removed_utc": None,
                "version_added": version.version,
                "version_removed": None,
            }
        )
    if replace:
        to_remove.update(entry_id for entry_id, _ in active.values() if entry_id not in kept)

    _mark_removed(session, sorted(to_remove), version.version, now)
    for chunk in _chunks(new_rows, 2000):
        session.execute(insert(_ENTRY_TABLE), list(chunk))  # Core: the ORM adds nothing for plain rows

    version.entries_added = len(new_rows)
    version.entries_removed = len(to_remove)
    version.note = (
        f"{'replace' if replace else 'append'} import of {path.name} ({fmt}): {total} rows, {len(new_rows)} added, "
        f"{len(to_remove)} removed, {len(kept)} unchanged, {duplicates} duplicates, {len(errors)} skipped"
    )
    session.flush()
    result = ImportResult(
        hotlist_id=hotlist.id,
        version=version.version,
        rows=total,
        added=len(new_rows),
        removed=len(to_remove),
        unchanged=len(kept),
        duplicates=duplicates,
        already_expired=already_expired,
        skipped=len(errors),
        errors=tuple(errors[:MAX_REPORTED_ERRORS]),
        source_sha256=digest,
    )
    logger.info(
        "hot list %s: version %d from %s: %d rows, %d added, %d removed, %d unchanged, %d duplicates, %d skipped",
        hotlist_name,
        result.version,
        path.name,
        total,
        result.added,
        result.removed,
        result.unchanged,
        duplicates,
        result.skipped,
    )
    for error in errors[:20]:
        logger.warning("hot list %s: %s skipped %s", hotlist_name, path.name, error)
    return result


# ---------------------------------------------------------------------------------------------
# Manual changes, expiry and retention.
# ---------------------------------------------------------------------------------------------


def add_entry(
    session: Session,
    hotlist_name: str,
    plate: str,
    state: str | None,
    category: str | None,
    priority: int | None,
    expires_utc: datetime | None,
    notes: str,
    added_by: str,
    reason: str,
    now: datetime | None = None,
) -> HotlistEntry:
    """List a plate by hand (who and why recorded on the entry and its version). The caller commits.

    ``category``/``priority`` None take the list's defaults. Raises :class:`InvalidEntryError` (bad
    plate, state, priority, past expiry, no person or reason), :class:`UnknownHotlistError`, or
    :class:`DuplicateEntryError` when the plate and state are already actively listed.
    """
    now = _utc(now)
    added_by, reason = _check_person(added_by, "added_by"), _check_reason(reason)
    normalized = normalize_plate(plate)
    if not normalized or len(normalized) > MAX_PLATE_LENGTH:
        raise InvalidEntryError(f"a plate is 1-{MAX_PLATE_LENGTH} letters or digits")
    try:
        state = normalize_state(state)
    except ValueError:
        raise InvalidEntryError("bad state") from None
    if priority is not None and not 0 <= priority <= 9:
        raise InvalidEntryError("priority must be 0-9")
    if category is not None and len(category) > 64:
        raise InvalidEntryError("category longer than 64 characters")
    if expires_utc is not None and _utc(expires_utc, "expires_utc") <= now:
        raise InvalidEntryError("the expiry has already passed")

    _take_write_lock(session)
    hotlist = get_hotlist(session, hotlist_name)
    with session.begin_nested():
        duplicate = session.scalar(
            select(HotlistEntry.id).where(
                HotlistEntry.hotlist_id == hotlist.id,
                HotlistEntry.plate == normalized,
                HotlistEntry.state.is_(None) if state is None else HotlistEntry.state == state,
                _is_active(now),
            )
        )
        if duplicate is not None:
            raise DuplicateEntryError(f"that plate is already listed on {hotlist_name!r}")
        version = _new_version(session, hotlist, added_by, f"manual add: {reason}", now)
        version.entries_added = 1
        entry = HotlistEntry(
            hotlist_id=hotlist.id,
            plate=normalized,
            state=state,
            category=category if category is not None else hotlist.default_category,
            priority=priority if priority is not None else hotlist.default_priority,
            expires_utc=expires_utc,
            notes=notes,
            source="manual",
            added_by=added_by,
            reason=reason,
            added_utc=now,
            version_added=version.version,
        )
        session.add(entry)
        session.flush()
    logger.info("hot list %s: entry %d added by hand in version %d", hotlist_name, entry.id, version.version)
    return entry


def remove_entry(
    session: Session,
    hotlist_name: str,
    plate: str,
    state: str | None,
    removed_by: str,
    reason: str,
    now: datetime | None = None,
) -> int:
    """Take a plate (with exactly this state, None for none) off a list; returns the new version.

    Who and why are the version's ``created_by`` and ``note``. The caller commits.
    """
    now = _utc(now)
    removed_by, reason = _check_person(removed_by, "removed_by"), _check_reason(reason)
    normalized = normalize_plate(plate)
    try:
        state = normalize_state(state)
    except ValueError:
        raise InvalidEntryError("bad state") from None
    _take_write_lock(session)
    hotlist = get_hotlist(session, hotlist_name)
    entries = list(
        session.scalars(
            select(HotlistEntry).where(
                HotlistEntry.hotlist_id == hotlist.id,
                HotlistEntry.plate == normalized,
                HotlistEntry.state.is_(None) if state is None else HotlistEntry.state == state,
                HotlistEntry.version_removed.is_(None),
            )
        )
    )
    if not entries:
        raise EntryNotFoundError(f"no such entry on {hotlist_name!r}")
    version = _new_version(session, hotlist, removed_by, f"manual removal: {reason}", now)
    version.entries_removed = len(entries)
    for entry in entries:
        entry.removed_utc = now
        entry.version_removed = version.version
    session.flush()
    logger.info("hot list %s: %d entries removed by hand in version %d", hotlist_name, len(entries), version.version)
    return version.version


def expire_entries(session: Session, now: datetime | None = None) -> int:
    """Remove entries whose expiry has passed, one new version per list, so nodes drop them too.

    The hub already ignores them when matching; this is the periodic job that makes it official.
    Returns how many entries were removed. The caller commits.
    """
    now = _utc(now)
    _take_write_lock(session)
    rows = session.execute(
        select(HotlistEntry.hotlist_id, HotlistEntry.id)
        .where(HotlistEntry.version_removed.is_(None), HotlistEntry.expires_utc <= now)
        .order_by(HotlistEntry.hotlist_id, HotlistEntry.id)
    ).all()
    by_list: dict[int, list[int]] = {}
    for hotlist_id, entry_id in rows:
        by_list.setdefault(hotlist_id, []).append(entry_id)
    for hotlist_id, ids in by_list.items():
        hotlist = session.get_one(Hotlist, hotlist_id)
        version = _new_version(session, hotlist, "expiry", f"{len(ids)} entries expired", now)
        version.entries_removed = len(ids)
        _mark_removed(session, ids, version.version, now)
        logger.info("hot list %s: %d expired entries removed in version %d", hotlist.name, len(ids), version.version)
    session.flush()
    return len(rows)


def purge_expired_lists(session: Session, now: datetime | None = None, default_days: int | None = None) -> int:
    """Delete hot-list entries past their list's retention period; returns how many rows were deleted.

    The policy keeps uploaded hot lists for a set period, then deletes them. Per list (``retention_days``,
    else ``default_days``; neither: kept), the clock runs from an entry's removal when it was removed,
    from when it was added when it is still listed. A still-listed entry past its period is first
    retired (removed in a new version created by ``retention``, so nodes drop it; a later full import
    lists it afresh if the agency still wants it) and deleted in the same run.

    Entries that a hit refers to are kept (retired, but not deleted) as long as the hit exists, so a
    hit and its review always show what was matched; once the hit retention purges the hit, a later
    run deletes the entry (its period since removal having passed). The caller commits.
    """
    now = _utc(now)
    _take_write_lock(session)
    deleted = retired = kept = 0
    for hotlist in list(session.scalars(select(Hotlist).order_by(Hotlist.id))):
        days = hotlist.retention_days if hotlist.retention_days is not None else default_days
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        stale = list(
            session.scalars(
                select(HotlistEntry.id)
                .where(
                    HotlistEntry.hotlist_id == hotlist.id,
                    HotlistEntry.version_removed.is_(None),
                    HotlistEntry.added_utc < cutoff,
                )
                .order_by(HotlistEntry.id)
            )
        )
        due = HotlistEntry.removed_utc < cutoff
        if stale:
            version = _new_version(session, hotlist, "retention", f"{len(stale)} entries past {days} days", now)
            version.entries_removed = len(stale)
            _mark_removed(session, stale, version.version, now)
            due = or_(due, HotlistEntry.version_removed == version.version)
            retired += len(stale)
        has_hit = exists().where(Hit.entry_id == HotlistEntry.id)
        result = session.execute(
            delete(HotlistEntry)
            .where(HotlistEntry.hotlist_id == hotlist.id, HotlistEntry.version_removed.is_not(None), due, ~has_hit)
            .execution_options(synchronize_session=False)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
        deleted += count
        kept += (
            session.scalar(
                select(func.count())
                .select_from(HotlistEntry)
                .where(HotlistEntry.hotlist_id == hotlist.id, HotlistEntry.version_removed.is_not(None), due, has_hit)
            )
            or 0
        )
    session.flush()
    logger.info("hot-list retention: %d entries retired, %d deleted, %d kept for their hits", retired, deleted, kept)
    return deleted


# ---------------------------------------------------------------------------------------------
# Active entries, matching and snapshots.
# ---------------------------------------------------------------------------------------------


def active_entries(session: Session, now: datetime | None = None) -> list[ActiveEntry]:
    """Every entry listed and not expired at ``now``, on every active list (by list name, then plate)."""
    now = _utc(now)
    rows = session.execute(
        select(
            HotlistEntry.id,
            HotlistEntry.plate,
            HotlistEntry.state,
            HotlistEntry.category,
            HotlistEntry.priority,
            HotlistEntry.expires_utc,
            HotlistEntry.version_added,
            Hotlist.id,
            Hotlist.name,
            Hotlist.lookalike_tolerance,
            Hotlist.check_state,
        )
        .join(Hotlist, Hotlist.id == HotlistEntry.hotlist_id)
        .where(Hotlist.active.is_(True), _is_active(now))
        .order_by(Hotlist.name, HotlistEntry.plate, HotlistEntry.id)
    )
    entries: list[ActiveEntry] = []
    unsafe = 0
    validate = HotlistEntryModel.model_validate
    for entry_id, plate, state, category, priority, expires, version_added, list_id, name, tolerant, check in rows:
        # The wire fields are validated (about 2 us each): a row written outside this module that a node
        # would refuse must not spoil the whole snapshot.
        try:
            wire_entry = validate(
                {
                    "plate": plate,
                    "state": state,
                    "list_name": name,
                    "category": category,
                    "priority": priority,
                    "lookalike_tolerance": tolerant,
                }
            )
        except ValidationError:
            unsafe += 1
            continue
        entries.append(
            ActiveEntry.from_model(
                wire_entry, entry_id=entry_id, hotlist_id=list_id, version_added=version_added,
                check_state=bool(check), expires_utc=_utc(expires, "expires_utc") if expires is not None else None,
            )
        )  # fmt: skip
    if unsafe:
        logger.error("hot lists: %d stored entries are not valid wire entries and were left out", unsafe)
    return entries


@dataclass(frozen=True)
class _Loaded:
    fingerprint: tuple[int, int]
    version: int
    created_utc: datetime
    entries: list[ActiveEntry]
    index: HotlistIndex


class HotlistService:
    """The hub's in-memory hot-list index, its hit recording, and the snapshots nodes download.

    The index holds every active entry and is rebuilt when the hot lists change; whether they did is
    asked of the database (newest version and number of versions, both cheap) at most every
    ``check_interval_s``. The fingerprint is read before the entries, so a change committed in between
    gives a snapshot labelled older than its content, which the next check replaces: never the reverse.
    Thread-safe: a rebuild swaps in a new index while matching keeps using the old one.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        check_interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        utc_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._utc_clock = utc_clock  # what "expired" is measured against when the index is built
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._checked_at = 0.0
        self._blob: tuple[int, bytes] | None = None
        self.rebuilds = 0

    @property
    def version(self) -> int:
        return self._current().version

    @property
    def index(self) -> HotlistIndex:
        return self._current().index

    def refresh(self, force: bool = False) -> HotlistIndex:
        """Check for changes now (rebuilding when there are any, or always with ``force``)."""
        return self._current(check=True, force=force).index

    def _current(self, check: bool = False, force: bool = False) -> _Loaded:
        loaded = self._loaded
        if loaded is not None and not (check or force) and self._clock() - self._checked_at < self.check_interval_s:
            return loaded
        with self._lock:
            loaded = self._loaded
            if loaded is not None and not (check or force) and self._clock() - self._checked_at < self.check_interval_s:
                return loaded  # another thread checked while this one waited
            with self.sessions() as session:
                newest, count = session.execute(
                    select(func.coalesce(func.max(HotlistVersion.version), 0), func.count(HotlistVersion.version))
                ).one()
                fingerprint = (int(newest), int(count))
                if loaded is None or force or fingerprint != loaded.fingerprint:
                    loaded = self._build(session, fingerprint)
            self._loaded = loaded
            self._checked_at = self._clock()
            return loaded

    def _build(self, session: Session, fingerprint: tuple[int, int]) -> _Loaded:
        started = time.monotonic()
        version = fingerprint[0]
        created = session.scalar(select(HotlistVersion.created_utc).where(HotlistVersion.version == version))
        entries = active_entries(session, self._utc_clock())
        index = HotlistIndex(entries, version=version)
        self.rebuilds += 1
        logger.info(
            "hot-list index: version %d, %d entries, %d look-alike keys, built in %.2f s",
            version,
            len(entries),
            index.lookalike_keys,
            time.monotonic() - started,
        )
        return _Loaded(fingerprint, version, created or datetime.now(UTC), entries, index)

    def snapshot(self, have_version: int | None) -> tuple[HotlistMessage, bytes] | HotlistCurrentMessage:
        """What a node asking with ``have_version`` gets: "current", or the snapshot and its packed entries.

        The packed blob is built once per version and reused for every node.
        """
        loaded = self._current()
        if have_version is not None and have_version == loaded.version:
            return HotlistCurrentMessage(version=loaded.version)
        with self._lock:
            cached = self._blob
            if cached is None or cached[0] != loaded.version:
                cached = (loaded.version, pack_hotlist_entries(loaded.entries))
                self._blob = cached
        message = HotlistMessage(
            version=loaded.version, created_utc=loaded.created_utc, entry_count=len(loaded.entries)
        )
        return message, cached[1]

    def match_and_record(
        self,
        session: Session,
        records: Sequence[ReadRecord],
        received_utc: datetime,
        node_name: str | None = None,
    ) -> list[HitEvent]:
        """Match stored reads and add a :class:`~hub.models.Hit` per (read, entry) in ``session``.

        Exact, look-alike (lists with ``lookalike_tolerance``) and candidate matches, as on the nodes;
        lists with ``check_state`` drop a hit whose entry state differs from the state the read's region
        names (when both are known). Entries expired at ``received_utc`` or removed since the index was
        built do not hit. A (read, entry) pair already recorded is not recorded again, so matching a
        resent batch is harmless. ``node_name`` defaults to each record's ``node_id``. The caller commits.
        """
        received_utc = _utc(received_utc, "received_utc")
        if not records:
            return []
        index = self._current().index
        found: list[tuple[ReadRecord, ActiveEntry, MatchType, str, float]] = []
        for record in records:
            state = read_state(record.region)
            for hit in index.match_read(record):
                entry = hit.entry
                if not isinstance(entry, ActiveEntry):  # pragma: no cover - the index holds ActiveEntry only
                    continue
                if entry.expires_utc is not None and entry.expires_utc <= received_utc:
                    continue
                if entry.check_state and state is not None and entry.state is not None and entry.state != state:
                    continue
                found.append((record, entry, hit.match_type, hit.plate_read, hit.score))
        if not found:
            return []

        listed: set[int] = set()
        entry_ids = sorted({entry.entry_id for _, entry, _, _, _ in found})
        for chunk in _chunks(entry_ids):
            listed.update(
                session.scalars(
                    select(HotlistEntry.id).where(HotlistEntry.id.in_(chunk), HotlistEntry.version_removed.is_(None))
                )
            )
        recorded: set[tuple[str, int]] = set()
        read_ids = sorted({record.read_id for record, _, _, _, _ in found})
        for read_chunk in _chunks(read_ids):
            recorded.update(
                (read_id, entry_id)
                for read_id, entry_id in session.execute(
                    select(Hit.read_id, Hit.entry_id).where(Hit.read_id.in_(read_chunk))
                )
            )

        pending: list[tuple[Hit, ReadRecord, ActiveEntry, MatchType]] = []
        for record, entry, match_type, matched_text, score in found:
            key = (record.read_id, entry.entry_id)
            if entry.entry_id not in listed or key in recorded:
                continue
            recorded.add(key)
            row = Hit(
                read_id=record.read_id,
                entry_id=entry.entry_id,
                hotlist_id=entry.hotlist_id,
                entry_version=entry.version_added,
                match_type=match_type,
                matched_text=matched_text,
                score=score,
                created_utc=received_utc,
                disposition="open",
            )
            session.add(row)
            pending.append((row, record, entry, match_type))
        session.flush()

        crops: dict[str, str] = {}
        events: list[HitEvent] = []
        for row, record, entry, match_type in pending:
            crop = crops.get(record.read_id)
            if crop is None:
                crop = crops[record.read_id] = sha256_hex(record.crop_jpeg)
            events.append(
                HitEvent(
                    hit_id=row.id,
                    read_id=record.read_id,
                    plate_read=record.plate,
                    matched_text=row.matched_text,
                    entry_plate=entry.plate,
                    entry_id=entry.entry_id,
                    entry_version=entry.version_added,
                    list_name=entry.list_name,
                    category=entry.category,
                    priority=entry.priority,
                    match_type=match_type,
                    score=row.score,
                    node_name=node_name if node_name is not None else record.node_id,
                    camera_id=record.camera_id,
                    best_utc=record.best_utc,
                    latitude=record.gps.latitude if record.gps is not None else None,
                    longitude=record.gps.longitude if record.gps is not None else None,
                    crop_sha256=crop,
                )
            )
        if events:
            logger.info("hot lists: %d hits from %d reads", len(events), len({e.read_id for e in events}))
        return events
