"""Durable store-and-forward queue for plate reads waiting to reach the hub.

Every read is sealed to the hub's public key and committed to SQLite *before* it is sent, and leaves
only when the hub acknowledges a durable commit (`ack`). The database runs in WAL mode with
`synchronous=FULL`, so a committed `put` survives a power cut; a crash mid-transaction loses at most
that uncommitted transaction. Commits cost an fsync each, so high-rate producers should batch with
`put_many`.

Bounds: after each put the spool evicts oldest-first while the sealed bytes exceed `max_bytes`, and
drops every read older than `max_age` (retention must hold even when a car is offline for weeks).
Each eviction is logged, counted in a persisted counter and queued as an `EvictionReport` so the hub
learns which reads it will never receive.

Nothing in the database is plaintext except the read id, the timestamps and sizes: read ids must be
opaque (a UUID, not the plate).

Threads: one connection shared under a lock (`check_same_thread=False`), so the capture thread can
put while the uplink thread reads and acks. Sealing happens outside the lock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, cast

from edge.sealing import Sealer

logger = logging.getLogger(__name__)

EvictionReason = Literal["bytes", "age"]

SCHEMA_VERSION = 1
MAX_READ_ID_LENGTH = 128
# After a checkpoint the WAL is truncated to this size instead of staying at its high-water mark.
_JOURNAL_SIZE_LIMIT = 64 * 1024**2
# How many of the oldest rows to look at per round while evicting for bytes.
_EVICT_BATCH = 64

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS reads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    read_id TEXT UNIQUE NOT NULL,
    created_utc TEXT NOT NULL,
    size INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
-- Age eviction looks up expired rows by timestamp, not by seq: a clock corrected backwards can leave
-- older timestamps behind newer ones.
CREATE INDEX IF NOT EXISTS reads_created_utc ON reads (created_utc);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO counters (name, value) VALUES ('bytes', 0), ('evicted_total', 0);
CREATE TABLE IF NOT EXISTS eviction_reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    read_id TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    evicted_utc TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('bytes', 'age'))
);
PRAGMA user_version = 1;
COMMIT;
"""


def utc_now() -> datetime:
    return datetime.now(UTC)


class SpoolError(Exception):
    """The spool cannot be opened or read."""


class SpoolWriteError(SpoolError):
    """A write to the spool failed (disk full, I/O error, database locked); the spool stays usable."""


@dataclass(frozen=True, slots=True)
class SpooledRead:
    seq: int
    """Spool order: a later read has a higher ``seq``."""
    read_id: str
    sealed: bytes
    created_utc: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class EvictionReport:
    """A read dropped before the hub acknowledged it; sent to the hub so the loss is on record."""

    read_id: str
    created_utc: datetime
    evicted_utc: datetime
    reason: EvictionReason


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    oldest_utc: datetime | None
    evicted_total: int
    pending_eviction_reports: int
    # Since this process started: a full disk cannot persist a count of its own failures.
    write_errors: int


class Spool:
    """SQLite-backed queue of sealed reads; see the module docstring for the guarantees."""

    def __init__(
        self,
        path: Path,
        sealer: Sealer,
        max_bytes: int = 2 * 1024**3,
        max_age: timedelta = timedelta(days=30),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if max_age <= timedelta(0):
            raise ValueError(f"max_age must be positive, got {max_age}")
        self._path = path
        self._sealer = sealer
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._write_errors = 0
        self._now()  # a naive clock is a configuration error: refuse it before touching the disk
        self._conn: sqlite3.Connection | None = self._open(path)
        try:
            # A node that was switched off for weeks must not hold reads past retention until its next put.
            self.enforce_bounds()
        except SpoolWriteError as exc:
            logger.warning("spool %s: could not enforce bounds at start-up: %s", path, exc)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so a transaction's
            # extent is exactly what the code shows and the write lock is taken up front.
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open spool at {path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                # Still durable with synchronous=FULL, just slower; some filesystems cannot do WAL.
                logger.warning("spool %s: WAL unavailable, journal_mode is %s", path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SpoolError(f"spool {path} has schema version {version}, this code knows {SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(f"cannot initialise spool at {path}: {exc}") from exc
        except SpoolError:
            conn.close()
            raise
        return conn

    # -- writes ---------------------------------------------------------------------------------

    def put(self, read_id: str, payload: bytes) -> None:
        """Seal and durably store one read; a read_id already in the spool is left as it is."""
        self.put_many([(read_id, payload)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Seal and store several reads in one transaction (one fsync): the way to high throughput."""
        if not items:
            return
        for read_id, _ in items:
            _check_read_id(read_id)
        sealed = [(read_id, self._sealer.seal(payload)) for read_id, payload in items]
        with self._lock, self._transaction("put") as conn:
            now = self._now()
            created = _to_iso(now)
            added = 0
            for read_id, box in sealed:
                cur = conn.execute(
                    "INSERT INTO reads (read_id, created_utc, size, sealed) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (read_id) DO NOTHING",
                    (read_id, created, len(box), box),
                )
                if cur.rowcount == 1:
                    added += len(box)
            _add_counter(conn, "bytes", added)
            evicted = self._evict(conn, now)
        self._log_evictions(evicted)

    def enforce_bounds(self) -> int:
        """Evict what is over max_bytes or older than max_age; returns how many reads went.

        Runs after every put and at start-up; a retention job may call it on an idle node.
        """
        with self._lock, self._transaction("eviction") as conn:
            evicted = self._evict(conn, self._now())
        self._log_evictions(evicted)
        return len(evicted)

    def mark_attempt(self, read_ids: Iterable[str]) -> None:
        """Count one more send attempt for each read (unknown ids are ignored)."""
        ids = [(read_id,) for read_id in read_ids]
        if not ids:
            return
        with self._lock, self._transaction("mark_attempt") as conn:
            conn.executemany("UPDATE reads SET attempts = attempts + 1 WHERE read_id = ?", ids)

    def ack(self, read_ids: Iterable[str]) -> int:
        """Delete reads the hub has durably committed; returns how many were deleted.

        Unknown ids are ignored, so a duplicated or late ack is harmless.
        """
        ids = list(read_ids)
        if not ids:
            return 0
        with self._lock, self._transaction("ack") as conn:
            deleted = 0
            freed = 0
            for read_id in ids:
                rows = conn.execute("DELETE FROM reads WHERE read_id = ? RETURNING size", (read_id,)).fetchall()
                for (size,) in rows:
                    deleted += 1
                    freed += size
            _add_counter(conn, "bytes", -freed)
        return deleted

    def drain_eviction_reports(self) -> list[EvictionReport]:
        """Return the eviction reports not yet handed out, oldest first, and forget them."""
        with self._lock, self._transaction("drain_eviction_reports") as conn:
            rows = conn.execute(
                "SELECT seq, read_id, created_utc, evicted_utc, reason FROM eviction_reports ORDER BY seq"
            ).fetchall()
            if rows:
                conn.execute("DELETE FROM eviction_reports WHERE seq <= ?", (rows[-1][0],))
        return [
            EvictionReport(
                read_id=read_id,
                created_utc=_from_iso(created),
                evicted_utc=_from_iso(evicted),
                reason=cast(EvictionReason, reason),
            )
            for _, read_id, created, evicted, reason in rows
        ]

    # -- reads ----------------------------------------------------------------------------------

    def pending(self, limit: int, after_seq: int | None = None) -> list[SpooledRead]:
        """Up to `limit` reads, oldest first (only those after `after_seq`, when given: the uplink skips the
        reads it has in flight); they stay in the spool until acked."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        with self._lock, self._reading("pending") as conn:
            rows = conn.execute(
                "SELECT seq, read_id, sealed, created_utc, attempts FROM reads WHERE seq > ? ORDER BY seq LIMIT ?",
                (-1 if after_seq is None else after_seq, limit),
            ).fetchall()
        return [
            SpooledRead(
                seq=seq, read_id=read_id, sealed=bytes(sealed), created_utc=_from_iso(created), attempts=attempts
            )
            for seq, read_id, sealed, created, attempts in rows
        ]

    def stats(self) -> SpoolStats:
        with self._lock, self._reading("stats") as conn:
            # One read transaction, so the numbers agree with each other.
            conn.execute("BEGIN")
            try:
                depth, oldest = conn.execute("SELECT COUNT(*), MIN(created_utc) FROM reads").fetchone()
                counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
                (reports,) = conn.execute("SELECT COUNT(*) FROM eviction_reports").fetchone()
            finally:
                conn.execute("COMMIT")
            write_errors = self._write_errors
        return SpoolStats(
            depth=depth,
            bytes=counters["bytes"],
            oldest_utc=None if oldest is None else _from_iso(oldest),
            evicted_total=counters["evicted_total"],
            pending_eviction_reports=reports,
            write_errors=write_errors,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals (callers hold self._lock) -----------------------------------------------------

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError(f"spool {self._path} is closed")
        return self._conn

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        conn = self._require_open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback(conn)
            self._write_errors += 1
            # SQLite's messages ("database or disk is full") never contain bound values, so no payload leaks.
            logger.error("spool %s: %s failed: %s", self._path, what, exc)
            raise SpoolWriteError(f"spool {what} failed: {exc}") from exc
        except BaseException:
            self._rollback(conn)
            raise

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        conn = self._require_open()
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            raise SpoolError(f"spool {what} failed: {exc}") from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL among them); a second ROLLBACK would fail.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("spool rollback failed")

    def _now(self) -> datetime:
        now = self._clock()
        if now.utcoffset() is None:
            raise ValueError("spool clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    def _evict(self, conn: sqlite3.Connection, now: datetime) -> list[EvictionReport]:
        evicted: list[EvictionReport] = []
        freed = 0
        expired = conn.execute(
            "SELECT seq, read_id, created_utc, size FROM reads WHERE created_utc < ? ORDER BY seq",
            (_to_iso(now - self._max_age),),
        ).fetchall()
        for seq, read_id, created, size in expired:
            evicted.append(_evict_row(conn, seq, read_id, created, now, "age"))
            freed += size
        total = _get_counter(conn, "bytes") - freed
        while total > self._max_bytes:
            oldest = conn.execute(
                "SELECT seq, read_id, created_utc, size FROM reads ORDER BY seq LIMIT ?", (_EVICT_BATCH,)
            ).fetchall()
            if not oldest:
                # Empty spool but a positive byte count: the counter drifted; the truth is zero.
                logger.error("spool %s: byte counter said %s with no reads; reset", self._path, total)
                freed += total
                total = 0
                break
            for seq, read_id, created, size in oldest:
                if total <= self._max_bytes:
                    break
                evicted.append(_evict_row(conn, seq, read_id, created, now, "bytes"))
                freed += size
                total -= size
        if evicted:
            _add_counter(conn, "bytes", -freed)
            _add_counter(conn, "evicted_total", len(evicted))
        return evicted

    def _log_evictions(self, evicted: list[EvictionReport]) -> None:
        # Logged only after the commit, so every line stands for an eviction that happened.
        for report in evicted:
            logger.warning(
                "spool evicted read %s by %s limit, age %s",
                report.read_id,
                report.reason,
                report.evicted_utc - report.created_utc,
            )


def _evict_row(
    conn: sqlite3.Connection, seq: int, read_id: str, created: str, now: datetime, reason: EvictionReason
) -> EvictionReport:
    conn.execute("DELETE FROM reads WHERE seq = ?", (seq,))
    conn.execute(
        "INSERT INTO eviction_reports (read_id, created_utc, evicted_utc, reason) VALUES (?, ?, ?, ?)",
        (read_id, created, _to_iso(now), reason),
    )
    return EvictionReport(read_id=read_id, created_utc=_from_iso(created), evicted_utc=now, reason=reason)


def _get_counter(conn: sqlite3.Connection, name: str) -> int:
    (value,) = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(value)


def _add_counter(conn: sqlite3.Connection, name: str, delta: int) -> None:
    if delta:
        conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (delta, name))


def _check_read_id(read_id: str) -> None:
    if not read_id or len(read_id) > MAX_READ_ID_LENGTH:
        raise ValueError(f"read_id must be 1..{MAX_READ_ID_LENGTH} characters, got {len(read_id)}")


def _to_iso(moment: datetime) -> str:
    # Fixed width (always microseconds, always +00:00) so string order in SQL is time order.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)
