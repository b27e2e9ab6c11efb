"""Storing and finding plate reads, their images and node health.

Durability contract with the edge: :func:`store_reads` commits a whole batch in one transaction
before it returns, and the ingest layer acks the read ids only after that. A read id already stored
is reported as a duplicate (the edge resends after a lost ack), never an error, and two hub
processes storing the same reads at once end with one row per read: inserts use the dialect's
``INSERT ... ON CONFLICT DO NOTHING ... RETURNING``, so the database decides which insert won.

Deadlocks between concurrent batches are avoided by always taking row locks in the same order:
images sorted by hash, then reads sorted by id.

Images are content-addressed (SHA-256 of the bytes) and stored once, either in the database or as
files under a root directory (``ab/cd/<sha256>.jpg``), each written to a temporary file and renamed
into place. A group of files is made durable in one go before the transaction that refers to them
commits (one ``syncfs(2)`` of the image root's file system on Linux; otherwise an fsync of each file
and folder), so a batch of reads pays for durability once rather than once per image. A crash before
the commit can leave files no row refers to, never a committed row whose file is not on disk.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Connection, Select, Table, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.orm import Session, sessionmaker

from edge.recognition.formats import normalize_plate
from edge.wire import ReadRecord
from hub.models import Image, Node, NodeHealthSample, Read, ReadCandidateText

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


def _insert(dialect: str, table: Table) -> PostgresInsert | SqliteInsert:
    """The dialect's INSERT (the one with ``on_conflict_do_nothing``)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise StorageError(f"unsupported database dialect {dialect!r}")


_statements: dict[tuple[str, str], Any] = {}


def _statement(dialect: str, name: Literal["images", "reads", "texts"]) -> Any:
    """The bulk ``INSERT ... ON CONFLICT DO NOTHING`` statements, built once per dialect.

    Executed with a list of parameter sets (executemany): SQLAlchemy compiles each once and caches it,
    and with ``RETURNING`` sends the rows as multi-row ``VALUES`` pages ("insertmanyvalues"), so a
    whole group costs a few round trips rather than one per row.
    """
    key = (dialect, name)
    statement = _statements.get(key)
    if statement is None:
        if name == "images":
            statement = (
                _insert(dialect, _IMAGES).on_conflict_do_nothing(index_elements=["sha256"]).returning(_IMAGES.c.sha256)
            )
        elif name == "reads":
            statement = (
                _insert(dialect, _READS).on_conflict_do_nothing(index_elements=["read_id"]).returning(_READS.c.read_id)
            )
        else:
            statement = _insert(dialect, _TEXTS).on_conflict_do_nothing(index_elements=["read_id", "text"])
        _statements[key] = statement
    return statement


# --- images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageStore:
    """Where image bytes live: in the ``images`` table (``"db"``) or in files under ``root`` (``"disk"``).

    Reading works for either kind of row whatever the mode (``root`` is needed for files), so a hub can
    switch modes without migrating old images.
    """

    mode: StorageMode = "db"
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("db", "disk"):
            raise ValueError(f"image store mode must be 'db' or 'disk', not {self.mode!r}")
        if self.mode == "disk" and self.root is None:
            raise ValueError("image store mode 'disk' needs a root directory")

    def relative_path(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg"

    def put(self, session: Session, data: bytes, kind: ImageKind) -> str:
        """Store ``data`` (once per distinct content) in the session's transaction; return its SHA-256.

        A file written for it is durable when this returns, so the caller may commit straight away.
        """
        digest = sha256_hex(data)
        written = self._stage(session.connection(), [(digest, data, kind)])
        if written and self.root is not None:
            _make_durable(self.root, written)
        return digest

    def _stage(self, connection: Connection, images: Sequence[tuple[str, bytes, ImageKind]]) -> list[Path]:
        """Insert the images' rows (one statement) and, in disk mode, write their files without syncing them.

        ``images`` are ``(sha256, data, kind)``, distinct, in hash order (the lock order). Returns the
        paths of the files written (the caller makes them durable before committing). The rows are
        inserted before the files are written: a concurrent :meth:`delete_unreferenced` holds a row's
        lock until it commits, so the file check below cannot race with its unlink.

        A new row (nothing committed refers to this content yet) always gets its file written: a file
        already there can only be left by a transaction that never committed, perhaps cut short by a
        crash before its sync, so it is not trusted. A row that was already there was committed, and
        its file made durable before that commit; it is rewritten only if missing.
        """
        if not images:
            return []
        in_db = self.mode == "db"
        now = datetime.now(UTC)
        rows = [
            {
                "sha256": digest,
                "kind": kind,
                "size": len(data),
                "data": data if in_db else None,
                "path": None if in_db else self.relative_path(digest),
                "created_utc": now,
            }
            for digest, data, kind in images
        ]
        inserted = set(connection.execute(_statement(connection.dialect.name, "images"), rows).scalars())
        if in_db:
            return []
        written: list[Path] = []
        for digest, data, _kind in images:
            path = self._file(self.relative_path(digest))
            if digest not in inserted and path.exists():
                continue
            _write_unsynced(path, data)
            written.append(path)
        return written

    def get(self, session: Session, sha256: str) -> bytes:
        """The image's bytes, checked against its hash."""
        image = session.get(Image, sha256)
        if image is None:
            raise ImageNotFoundError(f"no image {sha256}")
        if image.data is not None:
            data = image.data
        elif image.path is not None:
            try:
                data = self._file(image.path).read_bytes()
            except FileNotFoundError:
                raise ImageNotFoundError(f"image {sha256} is missing from disk ({image.path})") from None
        else:
            raise ImageNotFoundError(f"image {sha256} has neither data nor a path")
        if sha256_hex(data) != sha256:
            raise ImageIntegrityError(f"image {sha256} does not match its hash")
        return data

    def delete_unreferenced(self, session: Session) -> int:
        """Delete images no read refers to (and their files); return how many. The caller commits.

        Files are unlinked once the rows are deleted and locked, before the commit: should the caller
        roll back instead, those rows would name missing files, so commit straight after.
        """
        unreferenced = ~exists().where(Read.crop_sha256 == Image.sha256) & ~exists().where(
            Read.context_sha256 == Image.sha256
        )
        deleted = session.execute(
            delete(Image).where(unreferenced).returning(Image.sha256, Image.path),
            execution_options={"synchronize_session": False},
        ).all()
        for _digest, relative in deleted:
            if relative is not None and self.root is not None:
                self._file(relative).unlink(missing_ok=True)
        if deleted:
            logger.info("deleted %s unreferenced images", len(deleted))
        return len(deleted)

    def _file(self, relative: str) -> Path:
        if self.root is None:
            raise ImageNotFoundError("image is stored on disk but the image store has no root")
        return self.root / relative


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _write_unsynced(path: Path, data: bytes) -> None:
    """Write ``path`` via a temporary file in its folder and rename it into place, without fsync.

    Readers see the old file or the whole new one, never part of one; :func:`_make_durable` must run
    before anything that refers to the file commits. The folder is created only when the temporary
    file cannot be (one system call fewer per file in the usual case).
    """
    folder = path.parent
    temporary = folder / f".tmp-{os.urandom(8).hex()}.jpg"
    try:
        fd = os.open(temporary, _TEMP_FLAGS, 0o600)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
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
        temporary.unlink(missing_ok=True)
        raise


def _make_durable(root: Path, paths: Sequence[Path]) -> None:
    """Make the files at ``paths`` (under ``root``), their renames and any new folders durable, in one go.

    On Linux, one ``syncfs(2)`` per file system holding them (normally one: the image root's). Where
    syncfs is unavailable, an fsync of each file and of each distinct folder from its parent up to
    ``root``. Raises OSError if the data could not be written back.

    Called through the module attribute, so tests can wrap it to count calls.
    """
    if not paths:
        return
    folders = _folders_to_sync(root, paths)
    syncfs = _syncfs()
    if syncfs is not None:
        devices: dict[int, Path] = {}
        for folder in folders:  # root first, so the usual single device is synced through the root
            devices.setdefault(os.stat(folder).st_dev, folder)
        try:
            for folder in devices.values():
                _syncfs_folder(syncfs, folder)
            return
        except _SyncfsUnsupportedError:
            pass
    for path in dict.fromkeys(paths):
        _fsync_path(path, os.O_RDONLY)
    for folder in folders:
        _fsync_path(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _folders_to_sync(root: Path, paths: Sequence[Path]) -> list[Path]:
    """``root`` and each distinct folder between it and the files (new folders need their entries synced)."""
    folders: dict[Path, None] = {root: None}
    for path in paths:
        folder = path.parent
        chain: list[Path] = []
        while folder != root and folder not in folders and root in folder.parents:
            chain.append(folder)
            folder = folder.parent
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


def _syncfs_folder(syncfs: _SyncfsFunction, folder: Path) -> None:
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


def _fsync_path(path: Path, flags: int) -> None:
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
    first: dict[str, tuple[ReadRecord, int]] = {}
    for node_id, records in batches:
        for record in records:
            first.setdefault(record.read_id, (record, node_id))
    inserted: set[str] = set()
    if first:
        inserted = _insert_reads(session_factory, sorted(first.values(), key=_read_id), images, received)

    results: list[StoreResult] = []
    unreported = inserted
    for node_id, records in batches:
        result = StoreResult()
        for record in records:  # batch order; a repeat of an id is a duplicate
            if record.read_id in unreported:
                unreported.discard(record.read_id)
                result.inserted.append(record.read_id)
            else:
                result.duplicates.append(record.read_id)
        if records:
            logger.info(
                "stored %s reads from node %s (%s duplicates)", len(result.inserted), node_id, len(result.duplicates)
            )
        results.append(result)
    return results


def _read_id(item: tuple[ReadRecord, int]) -> str:
    return item[0].read_id


def _insert_reads(
    session_factory: sessionmaker[Session],
    unique: Sequence[tuple[ReadRecord, int]],
    images: ImageStore,
    received: datetime,
) -> set[str]:
    """Insert distinct reads (sorted by id: the lock order) in one committed transaction; the ids inserted."""
    with session_factory() as session, session.begin():
        connection = session.connection()
        dialect = connection.dialect.name
        # Each distinct image once, in hash order (the lock order); a crop wins over an equal context.
        # Files are written unsynced and made durable together, once, before the commit.
        kinds: dict[bytes, ImageKind] = {}
        for record, _node_id in unique:
            kinds.setdefault(record.crop_jpeg, "crop")
        for record, _node_id in unique:
            if record.context_jpeg:
                kinds.setdefault(record.context_jpeg, "context")
        digests = {data: sha256_hex(data) for data in kinds}
        staged = sorted((digests[data], data, kind) for data, kind in kinds.items())
        written = images._stage(connection, staged)

        rows = [_read_row(record, node_id, digests, received) for record, node_id in unique]
        inserted = set(connection.execute(_statement(dialect, "reads"), rows).scalars())

        texts = [
            {"read_id": record.read_id, "text": text}
            for record, _node_id in unique
            if record.read_id in inserted
            for text in _candidate_texts(record)
        ]
        if texts:
            connection.execute(_statement(dialect, "texts"), texts)

        if written and images.root is not None:
            _make_durable(images.root, written)  # before session.begin() commits on leaving the block
    return inserted


def _read_row(record: ReadRecord, node_id: int, digests: Mapping[bytes, str], received: datetime) -> dict[str, Any]:
    gps = record.gps
    context = record.context_jpeg
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
        "crop_sha256": digests[record.crop_jpeg],
        "context_sha256": digests[context] if context else None,
        "software_version": record.software_version,
        "model_versions": dict(record.model_versions),
    }


def _candidate_texts(record: ReadRecord) -> list[str]:
    """The read's plate and every candidate text, once each."""
    return list(dict.fromkeys([record.plate, *(candidate.text for candidate in record.candidates)]))


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
    statement = select(Read).where(Read.plate == normalize_plate(plate))
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

    Written as the range ``prefix <= plate < upper`` so both databases use the ``plate`` b-tree
    (``LIKE 'ABC%'`` would not on PostgreSQL outside the C collation).
    """
    normalized = normalize_plate(prefix)
    if not normalized:
        raise ValueError("a plate prefix needs at least one letter or digit")
    statement = select(Read).where(Read.plate >= normalized)
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
    rows = session.execute(
        select(ReadCandidateText.read_id, ReadCandidateText.text).where(ReadCandidateText.read_id.in_(ids))
    )
    for read_id, text in rows:
        found.setdefault(read_id, set()).add(text)
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
