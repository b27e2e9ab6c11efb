"""Storing and finding plate reads, their images and node health.

Durability contract with the edge: :func:`store_reads` commits a whole batch in one transaction
before it returns, and the ingest layer acks the read ids only after that. A read id already stored
is reported as a duplicate (the edge resends after a lost ack), never an error, and two hub
processes storing the same reads at once end with one row per read: inserts use the dialect's
``INSERT ... ON CONFLICT DO NOTHING ... RETURNING``, so the database decides which insert won.

Ingest stores a whole group of batches (several nodes' messages) in one transaction
(:func:`store_read_batches`), each table with a few bulk statements for every row at once, and can
prepare the rows beforehand on another thread (:func:`prepare_read`, :func:`store_prepared_batches`).

Deadlocks between concurrent batches are avoided by always taking row locks in the same order:
images sorted by hash, then reads sorted by id.

Images are content-addressed (SHA-256 of the bytes) and stored once, either in the database or on
disk under a root directory. On disk, each group's new images are appended with one write to the
store's current pack file (``packs/<UTC day>/<name>.pack``; the row holds the pack, offset and size)
and made durable with one ``fdatasync`` of that file before the transaction that refers to them
commits: a batch of reads pays for durability once, and no file is created per image. A crash before
the commit can leave bytes no row refers to, never a committed row whose bytes are not on disk.
Retention removes a pack once it has lost images, after moving the images still in use (evidence
holds, content shared with newer reads) to files of their own (``ab/cd/<sha256>.jpg``, the layout
:meth:`ImageStore.put` writes too).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import random
import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    LargeBinary,
    Select,
    Table,
    TypeDecorator,
    delete,
    event,
    exists,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from edge.recognition.formats import normalize_plate
from edge.wire import ReadRecord
from hub import textindex
from hub.db import json_dumps
from hub.models import Image, Node, NodeHealthSample, Read, ReadCandidateText, UTCDateTime

logger = logging.getLogger(__name__)

ImageKind = Literal["crop", "context"]
StorageMode = Literal["db", "disk"]

PLATE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Normalised plate characters in the order both databases sort them (digits before letters)."""
_IMAGES: Table = Image.__table__  # type: ignore[assignment]
_READS: Table = Read.__table__  # type: ignore[assignment]
_TEXTS: Table = ReadCandidateText.__table__  # type: ignore[assignment]


class StorageError(Exception):
    """Base class for the storage layer's domain errors."""


class ImageNotFoundError(StorageError, LookupError):
    """No image with that hash, or its file is gone."""


class ImageIntegrityError(StorageError):
    """An image's bytes no longer hash to its name."""


class UnknownNodeError(StorageError, LookupError):
    """No node with that id."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_Encoder = Callable[[Any], Any]
_SQLITE_PAGE_ROWS = 500
"""Most rows per multi-row ``VALUES`` on SQLite (also kept under its bound-parameter limit)."""


@dataclass(frozen=True)
class _BulkInsert:
    """A bulk ``INSERT ... ON CONFLICT DO NOTHING [RETURNING ...]`` for one table and dialect.

    Rows are dicts with every column the statement inserts (a key the database numbers itself, such as
    ``images.id``, is left out), bar its *late* columns: values only known in the transaction (the
    images' ids a read refers to), given to :meth:`execute_bound` beside rows bound beforehand.
    Values go through each column type's SQLAlchemy bind processing (JSON, ``UTCDateTime``), and the
    statement goes to the driver as text, without SQLAlchemy's per-row parameter machinery (the bulk
    of the cost of a group):

    - SQLite: multi-row ``VALUES`` pages, one statement text per page size (cached by the driver);
    - PostgreSQL: ``INSERT ... SELECT ... FROM json_populate_recordset(NULL::<table>, <JSON array>)``,
      every row in one parameter built by the C JSON encoder, and a statement text that does not grow
      with the rows (psycopg parses a long multi-row ``VALUES`` again on every execution). JSON column
      values are written with the standard ``json`` module, as the hub's engines do.
    """

    dialect: str
    sql: str
    """PostgreSQL: the whole statement. SQLite: ``INSERT INTO t (...) VALUES`` (rows and tail appended)."""
    tail: str
    """SQLite: `` ON CONFLICT ... DO NOTHING [RETURNING ...]``."""
    row_marks: str
    """SQLite: ``(?, ?, ...)`` for one row."""
    columns: tuple[str, ...]
    """Every column inserted, the late ones last."""
    binds: tuple[tuple[str, _Encoder | None], ...]
    """Each column but the late ones with its bind processor (SQLite) or its JSON encoder (PostgreSQL), if any."""
    late: tuple[str, ...]
    """Columns whose values come with :meth:`execute_bound`: plain integers or None (no bind processing)."""
    returning: tuple[str, ...]

    def bind(self, row: Mapping[str, Any]) -> Any:
        """``row`` (every column but the late ones) as this statement sends it: processed values in column
        order (SQLite), or a dict of JSON-ready values (PostgreSQL). Pure computation, so it may run on
        another thread."""
        if self.dialect == "postgresql":
            bound = dict(row)
            for name, encode in self.binds:
                if encode is not None and bound[name] is not None:
                    bound[name] = encode(bound[name])
            return bound
        return tuple([process(row[name]) if process is not None else row[name] for name, process in self.binds])

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert ``rows`` (dicts with every column); what RETURNING gives for those inserted (empty without)."""
        return self.execute_bound(connection, [self.bind(row) for row in rows])

    def execute_bound(
        self, connection: Connection, rows: Sequence[Any], late: Sequence[tuple[Any, ...]] | None = None
    ) -> list[Any]:
        """Insert rows made by :meth:`bind`, each with its values of the late columns from ``late`` (in the
        same order); what RETURNING gives for those inserted: the column's values, or rows of several."""
        if not rows:
            return []
        if self.late:
            if late is None or len(late) != len(rows):
                raise StorageError(f"the late columns {self.late} need a value for each row")
            rows = self._with_late(rows, late)
        if self.dialect == "postgresql":
            return self._run(connection, self.sql, (json_dumps(rows),))
        limit = connection.connection.driver_connection.getlimit(  # type: ignore[union-attr]
            sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
        )
        page = max(1, min(_SQLITE_PAGE_ROWS, limit // len(self.columns)))
        returned: list[Any] = []
        for start in range(0, len(rows), page):
            chunk = rows[start : start + page]
            sql = f"{self.sql} {', '.join([self.row_marks] * len(chunk))}{self.tail}"
            returned += self._run(connection, sql, tuple(value for row in chunk for value in row))
        return returned

    def _with_late(self, rows: Sequence[Any], late: Sequence[tuple[Any, ...]]) -> list[Any]:
        if self.dialect == "postgresql":
            return [row | dict(zip(self.late, values, strict=True)) for row, values in zip(rows, late, strict=True)]
        return [row + values for row, values in zip(rows, late, strict=True)]

    def _run(self, connection: Connection, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        result = connection.exec_driver_sql(sql, parameters)
        if len(self.returning) > 1:
            return [tuple(row) for row in result]
        return list(result.scalars()) if self.returning else []


_BulkName = Literal["images", "reads", "texts"]
_bulk_inserts: weakref.WeakKeyDictionary[Dialect, dict[_BulkName, _BulkInsert]] = weakref.WeakKeyDictionary()
"""Per dialect object: each engine's own bind processing (a JSON serializer of its own, say) is kept."""


_bulk_lock = threading.Lock()
_last_bulk: tuple[Dialect, dict[_BulkName, _BulkInsert]] | None = None
"""The dialect asked for last and its inserts: a faster lookup than the weak dictionary's."""


def _bulk(dialect: Dialect, name: _BulkName) -> _BulkInsert:
    """The bulk insert of ``images``, ``reads`` or ``read_candidate_texts``, built once per dialect."""
    global _last_bulk
    last = _last_bulk
    if last is not None and last[0] is dialect:  # ingest asks once a read, nearly always for one dialect
        return last[1][name]
    built = _bulk_inserts.get(dialect)
    if built is None:
        with _bulk_lock:
            built = _bulk_inserts.get(dialect)
            if built is None:
                built = _bulk_inserts[dialect] = {each: _build_bulk(dialect, each) for each in get_args(_BulkName)}
    _last_bulk = (dialect, built)
    return built[name]


_BULK_SHAPES: dict[_BulkName, tuple[Table, tuple[str, ...], tuple[str, ...], frozenset[str], tuple[str, ...]]] = {
    # table, conflict target, RETURNING, columns left to the database, late columns
    "images": (_IMAGES, ("sha256",), ("sha256", "id"), frozenset({"id"}), ()),
    "reads": (_READS, ("read_id",), ("read_id",), frozenset(), ("crop_image_id", "context_image_id")),
    "texts": (_TEXTS, ("read_id", "text"), (), frozenset(), ()),
}


def _build_bulk(dialect: Dialect, name: _BulkName) -> _BulkInsert:
    table, conflict, returning, skipped, late = _BULK_SHAPES[name]
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    bound = [column for column in table.columns if column.name not in skipped and column.name not in late]
    columns = (*(column.name for column in bound), *late)
    names = ", ".join(quote(column) for column in columns)
    tail = f" ON CONFLICT ({', '.join(quote(column) for column in conflict)}) DO NOTHING"
    if returning:
        tail += f" RETURNING {', '.join(quote(column) for column in returning)}"
    if dialect.name == "postgresql":
        sql = f"INSERT INTO {target} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{target}, %s::json)"
        binds = tuple((column.name, _json_encoder(column, dialect)) for column in bound)
        bulk = _BulkInsert(dialect.name, sql + tail, "", "", columns, binds, late, returning)
    elif dialect.name == "sqlite":
        binds = tuple((column.name, _sqlite_encoder(column, dialect)) for column in bound)
        marks = f"({', '.join('?' for _ in columns)})"
        sql = f"INSERT INTO {target} ({names}) VALUES"
        bulk = _BulkInsert(dialect.name, sql, tail, marks, columns, binds, late, returning)
    else:
        raise StorageError(f"unsupported database dialect {dialect.name!r}")
    return bulk


def _sqlite_encoder(column: Column[Any], dialect: Dialect) -> _Encoder | None:
    """How a value of ``column`` goes to SQLite: the column type's bind processing, done directly for
    the hub's UTC times and nullable JSON (the same values, without SQLAlchemy's layers of calls per
    value; ``tests/hub/test_storage.py`` checks they agree)."""
    kind = column.type
    if isinstance(kind, UTCDateTime) and _is_default_sqlite_datetime(kind, dialect):
        return _sqlite_utc_text
    if isinstance(kind, JSON) and kind.none_as_null:
        dumps: Callable[[Any], str] = getattr(dialect, "_json_serializer", None) or json.dumps
        return lambda value: None if value is None else dumps(value)
    return kind.dialect_impl(dialect).bind_processor(dialect)


def _is_default_sqlite_datetime(kind: UTCDateTime, dialect: Dialect) -> bool:
    impl = kind.impl_instance.dialect_impl(dialect)
    return getattr(impl, "_storage_format", None) == _SQLITE_DATETIME_FORMAT


_SQLITE_DATETIME_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
"""SQLAlchemy's default storage format for SQLite datetimes (naive UTC text here)."""


def _utc_wall_clock(value: datetime) -> datetime:
    """``value`` moved to UTC wall-clock time (its tzinfo left as it is: only the fields are read).

    Cheaper than ``astimezone(UTC)``, which ingest would pay four times a read: times parsed by pydantic
    carry its own UTC tzinfo, not ``datetime.UTC``."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("naive datetime: the hub stores timezone-aware UTC times only")
    return value - offset if offset else value


_SQLITE_UTC_TEXT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"
_POSTGRES_UTC_TEXT = "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00"


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """As ``UTCDateTime`` then SQLite's ``DATETIME`` bind it: naive UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value is None:
        return None
    v = _utc_wall_clock(value)
    return _SQLITE_UTC_TEXT % (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)


def _postgres_utc_text(value: datetime) -> str:
    """As ``UTCDateTime`` binds it for PostgreSQL: ISO 8601 in UTC, with its offset."""
    v = _utc_wall_clock(value)
    return _POSTGRES_UTC_TEXT % (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)


def _json_encoder(column: Column[Any], dialect: Dialect) -> _Encoder | None:
    """How a (non-null) value of ``column`` goes into ``json_populate_recordset`` on PostgreSQL.

    JSON columns take the value itself (SQL NULL for None, as ``none_as_null`` asks); bytes go as
    ``bytea`` hex text; times go through the column type's own bind processing (``UTCDateTime`` refuses
    naive times) and then ISO 8601 with their offset; anything else as it is.
    """
    kind = column.type
    if isinstance(kind, JSON):
        return None
    if isinstance(kind, LargeBinary):
        return _bytea_hex
    if isinstance(kind, UTCDateTime):
        return _postgres_utc_text
    process = kind.dialect_impl(dialect).bind_processor(dialect)
    impl = kind.impl_instance if isinstance(kind, TypeDecorator) else kind
    if isinstance(impl, DateTime):
        return _time_encoder(process)
    return process


def _bytea_hex(value: bytes) -> str:
    return "\\x" + value.hex()


def _time_encoder(process: _Encoder | None) -> _Encoder:
    def encode(value: datetime) -> str:
        processed = process(value) if process is not None else value
        if not isinstance(processed, datetime):
            raise StorageError(f"not a datetime: {type(processed).__name__}")
        return processed.isoformat()

    return encode


# --- images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageStore:
    """Where image bytes live: in the ``images`` table (``"db"``) or in files under ``root`` (``"disk"``).

    On disk, ingest appends each group's new images to this store's current pack file
    (``packs/<UTC day>/<name>.pack``) and makes them durable with one ``fdatasync`` of that file, not
    one file per image (:class:`_Packs`); a row names the pack, the offset and the size. Images written
    one at a time (:meth:`put`) and images moved out of a pack by :meth:`delete_unreferenced` get a file
    of their own (``ab/cd/<sha256>.jpg``). Reading works for every kind of row whatever the mode
    (``root`` is needed for files), so a hub can switch modes without migrating old images.
    """

    mode: StorageMode = "db"
    root: Path | None = None
    _packs: _Packs | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in ("db", "disk"):
            raise ValueError(f"image store mode must be 'db' or 'disk', not {self.mode!r}")
        if self.mode == "disk" and self.root is None:
            raise ValueError("image store mode 'disk' needs a root directory")
        if self.root is not None:
            object.__setattr__(self, "_packs", _Packs(self.root))

    def relative_path(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg"

    def put(self, session: Session, data: bytes, kind: ImageKind) -> str:
        """Store ``data`` (once per distinct content) in the session's transaction; return its SHA-256.

        A file written for it is durable when this returns, so the caller may commit straight away.
        """
        digest = sha256_hex(data)
        written = self._stage_files(session.connection(), [(digest, data, kind)]).wait()
        if written and self.root is not None:
            _make_durable(self.root, written)
        return digest

    def _stage(
        self, connection: Connection, images: Sequence[tuple[str, bytes, ImageKind]]
    ) -> tuple[_Staged, dict[str, int]]:
        """Insert the rows of the images not stored yet and, in disk mode, write their bytes to a pack, unsynced;
        return that and every image's id (by hash), for the reads that refer to them.

        ``images`` are ``(sha256, data, kind)``, distinct, in hash order (the lock order). The caller
        makes the result durable before it commits and releases it once the transaction has ended
        (committed or not): until then, retention leaves the pack alone.

        Images already stored are left as they are (their bytes were durable before their row
        committed). Bytes written for a transaction that then fails stay in the pack with no row
        naming them; retention drops them with the pack.
        """
        if not images:
            return _Staged(), {}
        if self.mode == "db" or self._packs is None:
            inserted = self._insert_image_rows(connection, [(d, data, kind, None, None) for d, data, kind in images])
            return _Staged(), self._ids(connection, images, inserted)
        # Room for every image is reserved in the pack first, so the rows can name their offsets; only
        # the images whose rows this transaction inserted are written (the others' slots stay holes).
        appended = self._packs.reserve([len(data) for _, data, _ in images])
        try:
            placed = list(zip(images, appended.offsets, strict=True))
            rows = [(digest, data, kind, appended.relative, offset) for (digest, data, kind), offset in placed]
            inserted = self._insert_image_rows(connection, rows)
            ids = self._ids(connection, images, inserted)
            new = [(offset, data) for (digest, data, _kind), offset in placed if digest in inserted]
            if not new:
                appended.release()
                return _Staged(), ids
            appended.write(new)
            appended.start_sync()
        except BaseException:
            appended.release()
            raise
        return _Staged(appended), ids

    @staticmethod
    def _ids(
        connection: Connection, images: Sequence[tuple[str, bytes, ImageKind]], inserted: dict[str, int]
    ) -> dict[str, int]:
        """Every image's id: those inserted by this transaction, then those stored before (looked up)."""
        stored_before = [digest for digest, _data, _kind in images if digest not in inserted]
        if not stored_before:
            return inserted
        found = connection.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(stored_before))).all()
        ids = inserted | {digest: image_id for digest, image_id in found}
        if len(ids) != len(images):  # another hub process's retention deleted one since the insert
            raise StorageError("an image was deleted while its read was being stored; store the read again")
        return ids

    def _insert_image_rows(
        self, connection: Connection, images: Sequence[tuple[str, bytes, ImageKind, str | None, int | None]]
    ) -> dict[str, int]:
        """Insert the rows of images not stored yet; the ids of those inserted, by hash."""
        now = datetime.now(UTC)
        rows = [
            {
                "sha256": digest,
                "kind": kind,
                "size": len(data),
                "data": data if path is None else None,
                "path": path,
                "pack_offset": offset,
                "created_utc": now,
            }
            for digest, data, kind, path, offset in images
        ]
        return dict(_bulk(connection.dialect, "images").execute(connection, rows))

    def _stage_files(self, connection: Connection, images: Sequence[tuple[str, bytes, ImageKind]]) -> _FileWrites:
        """Insert the images' rows (one statement) and, in disk mode, start writing a file for each, unsynced.

        The files are written on worker threads while the caller goes on with its transaction; the
        result's ``wait`` gives the paths written, which the caller makes durable before committing.
        The rows are inserted before the files are written: a concurrent :meth:`delete_unreferenced`
        holds a row's lock until it commits, so the file check cannot race with its unlink.

        A new row (nothing committed refers to this content yet) always gets its file written: a file
        already there can only be left by a transaction that never committed, perhaps cut short by a
        crash before its sync, so it is not trusted. A row that was already there was committed, and
        its bytes made durable before that commit; a file of its own is rewritten only if missing.
        """
        if not images:
            return _FileWrites([])
        in_db = self.mode == "db"
        rows = [(d, data, kind, None if in_db else self.relative_path(d), None) for d, data, kind in images]
        inserted = self._insert_image_rows(connection, rows)
        if in_db:
            return _FileWrites([])
        root = str(self._file(""))
        files = [(os.path.join(root, self.relative_path(d)), data, d in inserted) for d, data, _kind in images]
        return _FileWrites.start(files)

    def get(self, session: Session, sha256: str) -> bytes:
        """The image's bytes, checked against its hash."""
        image = session.execute(select(Image).where(Image.sha256 == sha256)).scalar_one_or_none()
        if image is None:
            raise ImageNotFoundError(f"no image {sha256}")
        if image.data is not None:
            data = image.data
        elif image.path is not None:
            data = self._read_file(sha256, image.path, image.pack_offset, image.size)
        else:
            raise ImageNotFoundError(f"image {sha256} has neither data nor a path")
        if sha256_hex(data) != sha256:
            raise ImageIntegrityError(f"image {sha256} does not match its hash")
        return data

    def _read_file(self, sha256: str, relative: str, offset: int | None, size: int) -> bytes:
        try:
            if offset is None:
                return self._file(relative).read_bytes()
            fd = os.open(self._file(relative), os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise ImageNotFoundError(f"image {sha256} is missing from disk ({relative})") from None
        if len(data) != size:
            raise ImageIntegrityError(f"image {sha256} is cut short in {relative}")
        return data

    def delete_unreferenced(self, session: Session) -> int:
        """Delete images no read refers to (and their bytes on disk); return how many. The caller commits.

        A file of its own is unlinked once its row is deleted and locked, before the commit: should the
        caller roll back instead, that row would name a missing file, so commit straight after. A pack
        file that lost images goes once the caller commits, after the images still in use in it have
        been moved to files of their own in the same transaction (see :meth:`_drop_packs`): deleted
        images leave no bytes behind. A pack still being written is dealt with by a later call.
        """
        deleted = session.execute(
            delete(Image).where(no_read_refers_to_image()).returning(Image.sha256, Image.path, Image.pack_offset),
            execution_options={"synchronize_session": False},
        ).all()
        emptied: set[str] = set()
        for _digest, relative, offset in deleted:
            if relative is None or self.root is None:
                continue
            if offset is None:
                self._file(relative).unlink(missing_ok=True)
            else:
                emptied.add(relative)
        if self._packs is not None:
            self._drop_packs(session, emptied)
        if deleted:
            logger.info("deleted %s unreferenced images", len(deleted))
        return len(deleted)

    def _drop_packs(self, session: Session, emptied: set[str]) -> None:
        """Remove, once ``session`` commits, every pack file that lost images or holds none in use.

        ``emptied``: the packs that lost images in this transaction. Each is marked (a ``.purged`` file
        beside it) until it is gone, so a pack still being written when its images were deleted is
        dealt with by a later call. Images still in use in such a pack are copied to files of their own
        (made durable) and their rows pointed there, in this transaction. A pack goes only when no
        transaction can still append to it: one of this store's that it no longer writes to and with no
        transaction in flight, or another process's from two UTC days ago or earlier (writers start a
        new pack each day).
        """
        packs = self._packs
        assert packs is not None and self.root is not None
        for relative in emptied:
            _touch(self._file(relative + PURGED_SUFFIX))
        droppable = packs.droppable(emptied)
        if not droppable:
            return
        moved: list[Path] = []
        updates: list[dict[str, Any]] = []
        drop: list[str] = []
        for relative in droppable:
            marked = relative in emptied or self._file(relative + PURGED_SUFFIX).exists()
            if not marked:
                if session.execute(select(Image.sha256).where(Image.path == relative).limit(1)).first() is None:
                    drop.append(relative)  # a pack no row names (left by a crash before any commit)
                continue
            kept = session.execute(
                select(Image.id, Image.sha256, Image.size, Image.pack_offset)
                .where(Image.path == relative)
                .with_for_update()
            ).all()
            try:
                for image_id, digest, size, offset in kept:
                    data = self._read_file(digest, relative, offset, size)
                    if sha256_hex(data) != digest:
                        raise ImageIntegrityError(f"image {digest} does not match its hash")
                    target = self._file(self.relative_path(digest))
                    _write_unsynced(target, data)
                    moved.append(target)
                    updates.append({"id": image_id, "path": self.relative_path(digest), "pack_offset": None})
            except StorageError:
                logger.exception("images: pack %s kept: an image in it cannot be moved out", relative)
                continue
            drop.append(relative)
        if moved:
            _make_durable(self.root, moved)
            session.execute(update(Image), updates)
        if drop:
            root = self.root
            _after_commit(session, lambda: _unlink_packs(root, drop))
            logger.info("images: %s pack files go (%s images in use moved out of them)", len(drop), len(updates))

    def _file(self, relative: str) -> Path:
        if self.root is None:
            raise ImageNotFoundError("image is stored on disk but the image store has no root")
        return self.root / relative


def no_read_refers_to_image(*reads_where: ColumnElement[bool]) -> ColumnElement[bool]:
    """True of an ``images`` row no read refers to (of the reads meeting ``reads_where``, if given).

    Through the reads' image-id indexes: one probe each, never a scan of the reads."""
    return ~exists().where(Read.crop_image_id == Image.id, *reads_where) & ~exists().where(
        Read.context_image_id == Image.id, *reads_where
    )


PACKS_FOLDER = "packs"
PACK_MAX_BYTES = 1 << 30
"""A pack past this size is closed and the next append starts another."""
PURGED_SUFFIX = ".purged"
"""Beside a pack that lost images: it is to go (its images in use moved out) once nothing writes to it."""
FOREIGN_PACK_DAYS = 2
"""Another process's pack may go this many UTC days after the day it was written on."""


@dataclass(eq=False)
class _PackFile:
    relative: str
    fd: int
    end: int = 0
    in_flight: int = 0
    """Transactions that appended here and have not ended yet."""
    retired: bool = False
    """No more appends; the descriptor closes when the last transaction in flight ends."""


class _Packs:
    """One image store's append-only pack files, written by the transactions that store reads.

    Each transaction reserves room at the end of the current pack for its images (so their rows can
    name their offsets), writes those it inserted (adjacent ones with one ``pwrite``; the room of an
    image stored before stays a hole), makes them durable with one ``fdatasync`` before it commits
    (:class:`_Staged`), and holds the pack open until it has ended. A new pack (first use, a new UTC
    day, or the current one full) is created and its folder entry synced before any row names it.
    Packs are never appended to again once closed, nor by more than one store: each store names its
    own (a random token), so several hub processes may share one image root.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = os.urandom(6).hex()
        self._lock = threading.Lock()
        self._current: _PackFile | None = None
        self._open: dict[str, _PackFile] = {}
        self._own: set[str] = set()
        self._count = 0

    def reserve(self, sizes: Sequence[int]) -> _Appended:
        """Room at the end of the current pack for blobs of ``sizes`` (a new pack when needed), held open
        for the caller's transaction until :meth:`_Appended.release`."""
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        with self._lock:
            pack = self._current
            if pack is None or pack.end >= PACK_MAX_BYTES or not pack.relative.startswith(f"{PACKS_FOLDER}/{day}/"):
                pack = self._start(day)
            offsets: list[int] = []
            for size in sizes:
                offsets.append(pack.end)
                pack.end += size
            pack.in_flight += 1
            return _Appended(self, pack, offsets)

    def append(self, blobs: Sequence[bytes]) -> _Appended:
        """Reserve room for ``blobs`` and write them (unsynced)."""
        appended = self.reserve([len(blob) for blob in blobs])
        try:
            appended.write(list(zip(appended.offsets, blobs, strict=True)))
        except BaseException:
            appended.release()
            raise
        return appended

    def _start(self, day: str) -> _PackFile:
        if self._current is not None:
            self._retire(self._current)
        folder = os.path.join(self.root, PACKS_FOLDER, day)
        _make_folders_durable(str(self.root), folder)
        self._count += 1
        relative = f"{PACKS_FOLDER}/{day}/{self.token}-{self._count:04d}.pack"
        fd = os.open(os.path.join(self.root, relative), _TEMP_FLAGS, 0o600)
        try:
            _fsync_path(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except BaseException:
            os.close(fd)
            raise
        pack = self._current = self._open[relative] = _PackFile(relative, fd)
        self._own.add(relative)
        return pack

    def retire(self, pack: _PackFile) -> None:
        with self._lock:
            self._retire(pack)

    def _retire(self, pack: _PackFile) -> None:
        """Under the lock: no more appends to ``pack``; close it now if nothing is in flight."""
        pack.retired = True
        if self._current is pack:
            self._current = None
        if pack.in_flight == 0:
            self._close(pack)

    def _close(self, pack: _PackFile) -> None:
        self._open.pop(pack.relative, None)
        with contextlib.suppress(OSError):
            os.close(pack.fd)

    def release(self, pack: _PackFile) -> None:
        with self._lock:
            pack.in_flight -= 1
            if pack.retired and pack.in_flight == 0:
                self._close(pack)

    def droppable(self, emptied: set[str]) -> list[str]:
        """The pack files on disk that no transaction can append to any more (retiring the current one
        if it lost images)."""
        base = os.path.join(self.root, PACKS_FOLDER)
        try:
            days = sorted(os.listdir(base))
        except FileNotFoundError:
            return []
        oldest_foreign = (datetime.now(UTC) - timedelta(days=FOREIGN_PACK_DAYS)).strftime("%Y-%m-%d")
        found: list[str] = []
        with self._lock:
            if self._current is not None and self._current.relative in emptied:
                self._retire(self._current)
            for day in days:
                with contextlib.suppress(NotADirectoryError, FileNotFoundError):
                    for name in sorted(os.listdir(os.path.join(base, day))):
                        if not name.endswith(".pack"):
                            continue
                        relative = f"{PACKS_FOLDER}/{day}/{name}"
                        if relative in self._own:
                            if relative not in self._open:
                                found.append(relative)
                        elif day <= oldest_foreign:
                            found.append(relative)
        return found


@dataclass
class _Appended:
    """Images appended to a pack by one transaction: where they are, and the pack held open for it."""

    packs: _Packs
    pack: _PackFile
    offsets: list[int]
    released: bool = False
    syncing: Future[None] | None = None

    @property
    def relative(self) -> str:
        return self.pack.relative

    def write(self, pieces: Sequence[tuple[int, bytes]]) -> None:
        """Write each ``(offset, data)`` (offsets from this reservation, ascending), adjacent ones in one call."""
        runs: list[tuple[int, list[bytes]]] = []
        end = -1
        for offset, data in pieces:
            if offset == end:
                runs[-1][1].append(data)
            else:
                runs.append((offset, [data]))
            end = offset + len(data)
        try:
            for offset, chunks in runs:
                _write_all_at(self.pack.fd, b"".join(chunks), offset)
        except BaseException:
            self.packs.retire(self.pack)  # what reached the file is unknown: nothing more goes there
            raise

    def start_sync(self) -> None:
        """Start the ``fdatasync`` on a helper thread, so it overlaps the rest of the transaction."""
        try:
            self.syncing = _pack_syncer().submit(_call_sync_pack, self.pack.fd)
        except RuntimeError:  # the interpreter is shutting down: sync on the caller's thread instead
            self.syncing = None

    def sync(self) -> None:
        """Wait for the sync started by :meth:`start_sync` (or sync now); raises if it failed."""
        try:
            if self.syncing is not None:
                self.syncing.result()
            else:
                _sync_pack(self.pack.fd)
        except BaseException:
            self.packs.retire(self.pack)  # after a failed sync the file's state is unknown: nothing more goes there
            raise

    def release(self) -> None:
        if not self.released:
            self.released = True
            if self.syncing is not None:  # the descriptor stays open until its sync is over
                with contextlib.suppress(BaseException):
                    self.syncing.result()
            self.packs.release(self.pack)


@dataclass
class _Staged:
    """What :meth:`ImageStore._stage` wrote: made durable before the commit, released after the transaction."""

    appended: _Appended | None = None

    def make_durable(self) -> None:
        if self.appended is not None:
            self.appended.sync()

    def release(self) -> None:
        if self.appended is not None:
            self.appended.release()


_pack_sync_pool: ThreadPoolExecutor | None = None


def _pack_syncer() -> ThreadPoolExecutor:
    global _pack_sync_pool
    with _file_pool_lock:
        if _pack_sync_pool is None:
            _pack_sync_pool = ThreadPoolExecutor(2, thread_name_prefix="image-pack-sync")
        return _pack_sync_pool


def _call_sync_pack(fd: int) -> None:
    _sync_pack(fd)  # looked up at call time, so a test's replacement is used


def _sync_pack(fd: int) -> None:
    """``fdatasync`` of a pack (its new bytes and size). Called through the module, so tests can count calls."""
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def _write_all_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _make_folders_durable(root: str, folder: str) -> None:
    """Create ``folder`` (under ``root``) and any missing parents, each new entry synced in its parent."""
    missing: list[str] = []
    current = folder
    while not os.path.isdir(current) and current.startswith(root.rstrip(os.sep) + os.sep):
        missing.append(current)
        current = os.path.dirname(current)
    if not os.path.isdir(current):
        os.makedirs(current, exist_ok=True)
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(created)
        _fsync_path(os.path.dirname(created), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _touch(path: Path) -> None:
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, _TEMP_FLAGS, 0o600))


def _after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once the session's transaction commits; never if it rolls back."""
    pending = [action]

    def committed(_session: Session) -> None:
        while pending:
            pending.pop()()

    def rolled_back(_session: Session) -> None:
        pending.clear()

    event.listen(session, "after_commit", committed, once=True)
    event.listen(session, "after_rollback", rolled_back, once=True)


def _unlink_packs(root: Path, relatives: Sequence[str]) -> None:
    """After the commit that moved or deleted every image in them: remove the packs and their marks."""
    folders: set[Path] = set()
    for relative in relatives:
        for path in (root / relative, root / (relative + PURGED_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        folders.add((root / relative).parent)
    recent = {(datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d") for days in (0, 1)}
    for folder in folders:
        if folder.name in recent:
            continue  # a new pack may be starting there
        with contextlib.suppress(OSError):  # not empty: other packs still there
            folder.rmdir()


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_temp_names = random.Random(os.urandom(16))
"""Temporary file names need to be unlikely to collide, not secret (``O_EXCL`` catches a collision)."""


_FILE_WRITERS = 2
"""Threads writing a group's image files while its transaction goes on (file system calls release the GIL)."""
_PARALLEL_FILES = 16
"""Fewer files than this are written on the calling thread."""
_file_pool: ThreadPoolExecutor | None = None
_file_pool_lock = threading.Lock()


def _file_writers() -> ThreadPoolExecutor:
    global _file_pool
    with _file_pool_lock:
        if _file_pool is None:
            _file_pool = ThreadPoolExecutor(_FILE_WRITERS, thread_name_prefix="image-files")
        return _file_pool


class _FileWrites:
    """Image files being written (unsynced); :meth:`wait` for the paths written."""

    def __init__(self, futures: list[Future[list[Path]]]) -> None:
        self._futures = futures

    @classmethod
    def start(cls, files: Sequence[tuple[str, bytes, bool]]) -> _FileWrites:
        """Write each ``(path, data, new)``: always when ``new``, else only if the file is missing."""
        if len(files) >= _PARALLEL_FILES:
            step = -(-len(files) // _FILE_WRITERS)
            futures: list[Future[list[Path]]] = []
            try:
                for start in range(0, len(files), step):
                    futures.append(_file_writers().submit(_write_files, files[start : start + step]))
            except RuntimeError:  # the interpreter is shutting down: write the rest here
                files = files[len(futures) * step :]
            else:
                return cls(futures)
        else:
            futures = []
        done: Future[list[Path]] = Future()
        try:
            done.set_result(_write_files(files))
        except BaseException as exc:
            done.set_exception(exc)
        return cls([*futures, done])

    def wait(self) -> list[Path]:
        """The paths written, once every write is done; the first failure is raised after all have ended."""
        written: list[Path] = []
        error: BaseException | None = None
        for future in self._futures:
            try:
                written += future.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error
        return written


def _write_files(files: Sequence[tuple[str, bytes, bool]]) -> list[Path]:
    written: list[Path] = []
    for path, data, new in files:
        if not new and os.path.exists(path):
            continue
        _write_unsynced(path, data)
        written.append(Path(path))
    return written


def _write_unsynced(path: str | Path, data: bytes) -> None:
    """Write ``path`` via a temporary file in its folder and rename it into place, without fsync.

    Readers see the old file or the whole new one, never part of one; :func:`_make_durable` must run
    before anything that refers to the file commits. The folder is created only when the temporary
    file cannot be (fewer system calls per file in the usual case).
    """
    folder = os.path.dirname(path)
    for attempt in range(8):
        temporary = os.path.join(folder, f".tmp-{_temp_names.getrandbits(64):016x}.jpg")
        try:
            fd = os.open(temporary, _TEMP_FLAGS, 0o600)
            break
        except FileNotFoundError:
            _make_folder(folder)
        except FileExistsError:
            if attempt == 7:
                raise
    else:
        fd = os.open(temporary, _TEMP_FLAGS, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _make_folder(folder: str) -> None:
    """Create ``folder``, and its parents if they are missing too."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)


def _make_durable(root: Path, paths: Sequence[Path]) -> None:
    """Make the files at ``paths`` (under ``root``), their renames and any new folders durable, in one go.

    On Linux, one ``syncfs(2)`` per file system holding them (normally one: the image root's). Where
    syncfs is unavailable, an fsync of each file and of each distinct folder from its parent up to
    ``root``. Raises OSError if the data could not be written back.

    Called through the module attribute, so tests can wrap it to count calls.
    """
    if not paths:
        return
    syncfs = _syncfs()
    if syncfs is not None:
        # Folders this store creates lie on their parent's file system, so the files' own folders show
        # every file system involved (one mounted on an existing folder included); the root comes first,
        # so the usual single device is synced through the root.
        devices: dict[int, str] = {}
        for folder in dict.fromkeys([os.path.normpath(root), *(os.path.dirname(p) for p in paths)]):
            devices.setdefault(os.stat(folder).st_dev, folder)
        try:
            for folder in devices.values():
                _syncfs_folder(syncfs, folder)
            return
        except _SyncfsUnsupportedError:
            pass
    for path in dict.fromkeys(paths):
        _fsync_path(path, os.O_RDONLY)
    for folder in _folders_to_sync(root, paths):
        _fsync_path(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _folders_to_sync(root: Path, paths: Sequence[Path]) -> list[str]:
    """``root`` and each distinct folder between it and the files (new folders need their entries synced).

    Plain strings: this runs over every file of a group, and ``pathlib`` comparisons are slow.
    """
    top = os.path.normpath(root)
    inside = top.rstrip(os.sep) + os.sep
    folders: dict[str, None] = {top: None}
    for path in paths:
        folder = os.path.dirname(os.path.normpath(path))
        chain: list[str] = []
        while folder not in folders and folder.startswith(inside):
            chain.append(folder)
            folder = os.path.dirname(folder)
        folders.update(dict.fromkeys(reversed(chain)))
    return list(folders)


class _SyncfsUnsupportedError(Exception):
    """syncfs is not usable here (the C library has it but the kernel or file system does not)."""


_SyncfsFunction = Callable[[int], int]
_syncfs_function: _SyncfsFunction | None = None
_syncfs_looked_up = False


def _syncfs() -> _SyncfsFunction | None:
    """The C library's ``syncfs``, or None where there is none (not Linux, or an old C library)."""
    global _syncfs_function, _syncfs_looked_up
    if not _syncfs_looked_up:
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(None, use_errno=True).syncfs
            except (AttributeError, OSError):
                function = None
            if function is not None:
                function.argtypes = [ctypes.c_int]
                function.restype = ctypes.c_int
            _syncfs_function = function
        _syncfs_looked_up = True
    return _syncfs_function


def _syncfs_folder(syncfs: _SyncfsFunction, folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        ctypes.set_errno(0)
        if syncfs(fd) != 0:
            error = ctypes.get_errno()
            if error in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise _SyncfsUnsupportedError(error)
            raise OSError(error, f"syncfs failed: {os.strerror(error)}", str(folder))
    finally:
        os.close(fd)


def _fsync_path(path: str | Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreResult:
    """Read ids newly stored, and those already stored before (both safe to ack), in batch order."""

    inserted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PreparedRead:
    """A read with its image hashes and database row worked out, ready for :func:`store_prepared_batches`.

    Preparing is computation only (no database, no files), so the ingest layer does it on the thread
    that receives the reads while another commits the previous group.
    """

    record: ReadRecord
    node_id: int
    crop_sha256: str
    context_sha256: str | None
    row: dict[str, Any]
    """The ``reads`` row: every column, values as the ORM would take them."""
    texts: tuple[str, ...]
    """The plate and every candidate text likely enough to search by, once each (``hub.textindex``)."""
    dialect: Dialect | None = None
    bound: Any = None
    """The row as the bulk insert sends it to ``dialect`` (None: bound when stored)."""

    @property
    def read_id(self) -> str:
        return self.record.read_id


def prepare_read(
    record: ReadRecord, node_id: int, received_utc: datetime, dialect: Dialect | None = None
) -> PreparedRead:
    """Hash a read's images and build its row (bound for ``dialect`` too, when given: the one it will be stored on)."""
    crop = sha256_hex(record.crop_jpeg)
    context = sha256_hex(record.context_jpeg) if record.context_jpeg else None
    texts = tuple(_candidate_texts(record))
    row = _read_row(record, node_id, crop, context, received_utc, texts)
    bound = _bulk(dialect, "reads").bind(row) if dialect is not None else None
    return PreparedRead(record, node_id, crop, context, row, texts, dialect, bound)


def store_reads(
    session_factory: sessionmaker[Session],
    records: Sequence[ReadRecord],
    node_id: int,
    images: ImageStore,
    *,
    received_utc: datetime | None = None,
) -> StoreResult:
    """Store a batch of reads from node ``node_id`` in one transaction, committed before returning.

    Idempotent: a read id already stored (or repeated within the batch) is a duplicate, not an error.
    The node id is the hub's ``Node.id`` for the authenticated sender; matching it against each
    record's ``node_id`` name is the ingest layer's job (an unknown ``node_id`` fails the foreign key).
    """
    return store_read_batches(session_factory, [(node_id, records)], images, received_utc=received_utc)[0]


def store_read_batches(
    session_factory: sessionmaker[Session],
    batches: Sequence[tuple[int, Sequence[ReadRecord]]],
    images: ImageStore,
    *,
    received_utc: datetime | None = None,
) -> list[StoreResult]:
    """Store batches of reads, each ``(node_id, records)``, in one transaction committed before returning.

    The group-commit form of :func:`store_reads` (one result per batch, in order): one commit, one
    image sync and a few bulk statements for all of them. A read id stored before, or seen earlier in
    these batches, is a duplicate wherever it appears.
    """
    received = received_utc or datetime.now(UTC)
    prepared = [[prepare_read(record, node_id, received) for record in records] for node_id, records in batches]
    return store_prepared_batches(session_factory, prepared, images)


def store_prepared_batches(
    session_factory: sessionmaker[Session], batches: Sequence[Sequence[PreparedRead]], images: ImageStore
) -> list[StoreResult]:
    """:func:`store_read_batches` for reads already prepared (:func:`prepare_read`)."""
    first: dict[str, PreparedRead] = {}
    for batch in batches:
        for read in batch:
            first.setdefault(read.read_id, read)
    inserted: set[str] = set()
    if first:
        inserted = _insert_reads(session_factory, sorted(first.values(), key=_read_id), images)

    results: list[StoreResult] = []
    unreported = inserted
    for batch in batches:
        result = StoreResult()
        for read in batch:  # batch order; a repeat of an id is a duplicate
            if read.read_id in unreported:
                unreported.discard(read.read_id)
                result.inserted.append(read.read_id)
            else:
                result.duplicates.append(read.read_id)
        if batch:
            logger.info(
                "stored %s reads from node %s (%s duplicates)",
                len(result.inserted),
                batch[0].node_id,
                len(result.duplicates),
            )
        results.append(result)
    return results


def _read_id(read: PreparedRead) -> str:
    return read.record.read_id


def _insert_reads(
    session_factory: sessionmaker[Session], unique: Sequence[PreparedRead], images: ImageStore
) -> set[str]:
    """Insert distinct reads (sorted by id: the lock order) in one committed transaction; the ids inserted."""
    staged = _Staged()
    try:
        with session_factory() as session, session.begin():
            connection = session.connection()
            dialect = connection.dialect
            # Each distinct image once, in hash order (the lock order); a crop wins over an equal context.
            # New images are appended to a pack unsynced and made durable together, once, before the commit.
            kinds: dict[str, tuple[bytes, ImageKind]] = {}
            for read in unique:
                kinds.setdefault(read.crop_sha256, (read.record.crop_jpeg, "crop"))
            for read in unique:
                if read.context_sha256 is not None and read.record.context_jpeg:
                    kinds.setdefault(read.context_sha256, (read.record.context_jpeg, "context"))
            staged, ids = images._stage(
                connection, [(digest, data, kind) for digest, (data, kind) in sorted(kinds.items())]
            )
            bulk = _bulk(dialect, "reads")
            rows = [read.bound if read.dialect is dialect else bulk.bind(read.row) for read in unique]
            image_ids = [
                (ids[read.crop_sha256], None if read.context_sha256 is None else ids[read.context_sha256])
                for read in unique
            ]
            inserted = set(bulk.execute_bound(connection, rows, image_ids))
            if textindex.uses_rows(dialect):  # on SQLite, reads.search_texts is indexed by triggers
                texts = [
                    {"read_id": read.read_id, "text": text}
                    for read in unique
                    if read.read_id in inserted
                    for text in read.texts
                ]
                _bulk(dialect, "texts").execute(connection, texts)
            staged.make_durable()  # before session.begin() commits on leaving the block
    finally:
        staged.release()  # the transaction has ended: retention may drop the pack once it is no longer written
    return inserted


def _read_row(
    record: ReadRecord,
    node_id: int,
    crop_sha256: str,
    context_sha256: str | None,
    received: datetime,
    texts: Sequence[str],
) -> dict[str, Any]:
    gps = record.gps
    return {
        "read_id": record.read_id,
        "node_id": node_id,
        "camera_id": record.camera_id,
        "plate": record.plate,
        "confidence": record.confidence,
        # What model_dump(mode="json") gives for a candidate, without a pydantic call per candidate.
        "candidates": [{"text": candidate.text, "confidence": candidate.confidence} for candidate in record.candidates],
        "region": record.region,
        "box": list(record.box),
        "char_confidences": list(record.char_confidences),
        "first_seen_utc": record.first_seen_utc,
        "best_utc": record.best_utc,
        "last_seen_utc": record.last_seen_utc,
        "received_utc": received,
        "time_source": record.time_source,
        "clock_suspect": record.clock_suspect,
        "direction": record.direction,
        "observations": record.observations,
        "latitude": gps.latitude if gps is not None else None,
        "longitude": gps.longitude if gps is not None else None,
        "gps": gps.model_dump(mode="json") if gps is not None else None,
        "crop_sha256": crop_sha256,
        "context_sha256": context_sha256,
        "software_version": record.software_version,
        "model_versions": dict(record.model_versions),
        "search_texts": textindex.join_texts(texts),
    }


SEARCHABLE_CANDIDATE_MIN_CONFIDENCE = 0.02
"""Candidates at least this likely are searchable (``hub.textindex``); all of them stay in the read.

A node sends up to ten candidates a read, most of them texts seen in one frame reading of fifty or
fewer. Searching by those would show investigators reads that are almost surely of other vehicles
(data they have no need to see), and indexing them cost the hub more than the read itself: eleven
random-key index entries a read instead of about four. Hot-list matching still uses every candidate."""


def _candidate_texts(record: ReadRecord) -> list[str]:
    """The read's plate and each candidate text likely enough to search by, once each."""
    likely = (c.text for c in record.candidates if c.confidence >= SEARCHABLE_CANDIDATE_MIN_CONFIDENCE)
    return list(dict.fromkeys([record.plate, *likely]))


# --- searching --------------------------------------------------------------------------------


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest plate above every plate starting with ``prefix`` ("AB9" -> "ABA", "ABZ" -> "AC").

    Stepping within :data:`PLATE_ALPHABET` (not to the next code point, "Z" -> "[") keeps the range
    right under collations that ignore punctuation, such as PostgreSQL's en_US. None: no upper bound.
    """
    chars = list(prefix)
    while chars:
        index = PLATE_ALPHABET.find(chars[-1])
        if index < 0:
            raise ValueError(f"not a normalised plate prefix: {prefix!r}")
        if index + 1 < len(PLATE_ALPHABET):
            chars[-1] = PLATE_ALPHABET[index + 1]
            return "".join(chars)
        chars.pop()
    return None


def _filtered(
    statement: Select[Read],
    since: datetime | None,
    until: datetime | None,
    node_id: int | None,
    limit: int | None,
) -> Select[Read]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(Read.best_utc >= since)
    if until is not None:
        conditions.append(Read.best_utc < until)
    if node_id is not None:
        conditions.append(Read.node_id == node_id)
    statement = statement.where(*conditions).order_by(Read.best_utc.desc(), Read.read_id.desc())
    return statement.limit(limit) if limit is not None else statement


def find_reads_by_plate(
    session: Session,
    plate: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    node_id: int | None = None,
    limit: int | None = None,
) -> list[Read]:
    """Reads of exactly ``plate`` (normalised first), newest first; ``since <= best_utc < until``."""
    normalized = normalize_plate(plate)
    if not normalized:
        return []
    statement = select(Read).where(Read.plate == normalized, *textindex.plate_lookup(session, normalized))
    return list(session.scalars(_filtered(statement, since, until, node_id, limit)))


def find_reads_by_prefix(
    session: Session,
    prefix: str,
    limit: int = 100,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    node_id: int | None = None,
) -> list[Read]:
    """Reads whose plate starts with ``prefix`` (normalised first), newest first, at most ``limit``.

    Written as the range ``prefix <= plate < upper`` so that PostgreSQL uses the ``plate`` b-tree
    (``LIKE 'ABC%'`` would not outside the C collation); SQLite narrows through its text index.
    """
    normalized = normalize_plate(prefix)
    if not normalized:
        raise ValueError("a plate prefix needs at least one letter or digit")
    statement = select(Read).where(Read.plate >= normalized, *textindex.plate_lookup(session, normalized, prefix=True))
    upper = prefix_upper_bound(normalized)
    if upper is not None:
        statement = statement.where(Read.plate < upper)
    return list(session.scalars(_filtered(statement, since, until, node_id, limit)))


def find_reads(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    node_id: int | None = None,
    limit: int = 1000,
) -> list[Read]:
    """Reads in a time range (``since <= best_utc < until``) and/or from one node, newest first."""
    return list(session.scalars(_filtered(select(Read), since, until, node_id, limit)))


def candidate_texts(session: Session, read_ids: Iterable[str]) -> dict[str, set[str]]:
    """The stored candidate texts (plate included) of each read."""
    found: dict[str, set[str]] = {}
    ids = list(read_ids)
    if not ids:
        return found
    for read_id, joined in session.execute(select(Read.read_id, Read.search_texts).where(Read.read_id.in_(ids))):
        found[read_id] = set(textindex.split_texts(joined))
    return found


# --- node health ------------------------------------------------------------------------------


def record_heartbeat(
    session: Session,
    node_id: int,
    health: Mapping[str, Any] | BaseModel,
    at: datetime,
) -> NodeHealthSample:
    """Append a health sample and update the node's ``last_seen_utc``/``last_health``. The caller commits.

    A heartbeat older than the node's last one (a late resend) is kept as a sample but does not move
    ``last_seen_utc`` back or replace the newer health.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("heartbeat time must be timezone-aware")
    data = health.model_dump(mode="json") if isinstance(health, BaseModel) else dict(health)
    node = session.get(Node, node_id)
    if node is None:
        raise UnknownNodeError(f"no node with id {node_id}")
    if node.last_seen_utc is None or at >= node.last_seen_utc:
        node.last_seen_utc = at
        node.last_health = data
    sample = NodeHealthSample(node_id=node_id, received_utc=at, health=data)
    session.add(sample)
    session.flush()
    return sample
