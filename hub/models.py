"""The hub's database schema as typed SQLAlchemy 2 ORM models.

The same schema runs on SQLite and PostgreSQL; ``hub/migrations`` creates it (Alembic) and
``tests/hub/test_migrations.py`` checks the two agree.

Conventions:
- Every timestamp is a :class:`UTCDateTime`: timezone-aware UTC in and out on both databases (naive
  datetimes are refused rather than guessed at).
- Plates are stored normalised (``A-Z0-9`` only, see ``edge.recognition.formats.normalize_plate``), so
  exact search is equality and prefix search a range on ``plate`` (PostgreSQL's b-tree; SQLite narrows
  both through its FTS5 text index, ``hub.textindex``).
- Constraint and index names are fixed by :data:`NAMING_CONVENTION`, so migrations can name them.
- Free text (notes, reasons) is ``Text``; identifiers are bounded ``String``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive UTC
    text (which still sorts and compares correctly) and marked UTC again when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: the hub stores timezone-aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json(nullable: bool = False) -> Any:
    """A JSON column; SQL NULL (not JSON ``null``) for a missing value in a nullable one."""
    return mapped_column(JSON(none_as_null=True), nullable=nullable)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


# --- nodes ------------------------------------------------------------------------------------


class Node(Base):
    """An enrolled edge node, known by its CurveZMQ public key."""

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    curve_public_key: Mapped[str] = mapped_column(String(40), unique=True)  # Z85 of 32 bytes
    enrolled_utc: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_utc: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    revoke_reason: Mapped[str | None] = mapped_column(Text)
    last_seen_utc: Mapped[datetime | None]
    last_health: Mapped[dict[str, Any] | None] = _json(nullable=True)


class NodeHealthSample(Base):
    """One heartbeat's health report, kept as history beside ``Node.last_health``."""

    __tablename__ = "node_health_samples"
    __table_args__ = (Index("ix_node_health_samples_node_received", "node_id", "received_utc"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    received_utc: Mapped[datetime]
    health: Mapped[dict[str, Any]] = _json()


# --- images and reads -------------------------------------------------------------------------


IMAGE_ID = BigInteger().with_variant(Integer(), "sqlite")
"""``images.id`` and the reads' references to it: 64-bit on PostgreSQL; on SQLite ``INTEGER``, which makes
the key the table's rowid."""


class Image(Base):
    """A JPEG, addressed by the SHA-256 of its bytes: kept in ``data`` or on disk at ``path``.

    Reads refer to it by ``id``, a number that grows with each image stored, not by its hash: the reads'
    index on that reference, which keeps image clean-up (and the foreign key's check when an image is
    deleted) from scanning every read, then grows at its end instead of taking each insert at a random
    place (``docs/benchmarks.md``). The hash stays unique: it is what ingest de-duplicates by.

    ``path`` is relative to the image store's root, so the root can move: an append-only pack file
    (``packs/<day>/<name>.pack``) holding the bytes at ``pack_offset`` (``size`` of them), or, where
    ``pack_offset`` is null, a file of its own (``ab/cd/<sha256>.jpg``).
    """

    __tablename__ = "images"
    __table_args__ = (
        # Retention finds the images left in a pack file through it.
        Index("ix_images_path", "path"),
        UniqueConstraint("sha256"),
    )

    id: Mapped[int] = mapped_column(IMAGE_ID, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "crop" or "context"
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    path: Mapped[str | None] = mapped_column(String(255))
    pack_offset: Mapped[int | None] = mapped_column(BigInteger)
    created_utc: Mapped[datetime] = mapped_column(default=utcnow)


class Read(Base):
    """One vehicle pass as read by an edge node (an ``edge.wire.ReadRecord`` at rest)."""

    __tablename__ = "reads"
    __table_args__ = (
        # PostgreSQL only: SQLite finds plates through its FTS5 text index (hub.textindex), which spares
        # it a random-key B-tree insert a read.
        Index("ix_reads_plate", "plate").ddl_if(dialect="postgresql"),
        Index("ix_reads_best_utc", "best_utc"),
        Index("ix_reads_node_best", "node_id", "best_utc"),
        Index("ix_reads_lat_lon", "latitude", "longitude"),
        # Not for searching: they keep image clean-up (and deleting an image) from scanning every read.
        Index("ix_reads_crop_image_id", "crop_image_id"),
        Index("ix_reads_context_image_id", "context_image_id"),
    )

    read_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the edge's UUIDv7
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    camera_id: Mapped[str] = mapped_column(String(64))
    plate: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    candidates: Mapped[list[dict[str, Any]]] = _json()
    region: Mapped[str] = mapped_column(String(32))
    box: Mapped[list[float]] = _json()
    char_confidences: Mapped[list[float]] = _json()
    first_seen_utc: Mapped[datetime]
    best_utc: Mapped[datetime]
    last_seen_utc: Mapped[datetime]
    received_utc: Mapped[datetime] = mapped_column(default=utcnow)
    time_source: Mapped[str] = mapped_column(String(16))
    clock_suspect: Mapped[bool] = mapped_column(Boolean, default=False)
    direction: Mapped[str] = mapped_column(String(16), default="unknown")
    observations: Mapped[int] = mapped_column(Integer, default=1)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    gps: Mapped[dict[str, Any] | None] = _json(nullable=True)
    # The images' hashes, as the read's own record of them; the ids are the references that keep them.
    crop_sha256: Mapped[str | None] = mapped_column(String(64))
    context_sha256: Mapped[str | None] = mapped_column(String(64))
    crop_image_id: Mapped[int | None] = mapped_column(IMAGE_ID, ForeignKey("images.id"))
    context_image_id: Mapped[int | None] = mapped_column(IMAGE_ID, ForeignKey("images.id"))
    software_version: Mapped[str] = mapped_column(String(64), default="")
    model_versions: Mapped[dict[str, str]] = _json()
    # The plate and every candidate likely enough to search by, space-separated (hub.textindex indexes it).
    search_texts: Mapped[str] = mapped_column(String(200), default="", server_default="")


class ReadCandidateText(Base):
    """Every text a read could be (its plate and each likely candidate), for candidate and fuzzy search, on
    PostgreSQL. SQLite indexes ``reads.search_texts`` with FTS5 instead and leaves this table empty
    (``hub.textindex``)."""

    __tablename__ = "read_candidate_texts"
    __table_args__ = (Index("ix_read_candidate_texts_text", "text"),)

    read_id: Mapped[str] = mapped_column(ForeignKey("reads.read_id", ondelete="CASCADE"), primary_key=True)
    text: Mapped[str] = mapped_column(String(16), primary_key=True)


# --- hot lists --------------------------------------------------------------------------------


class Hotlist(Base):
    __tablename__ = "hotlists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    default_category: Mapped[str] = mapped_column(String(64), default="")
    default_priority: Mapped[int] = mapped_column(Integer, default=5)
    lookalike_tolerance: Mapped[bool] = mapped_column(Boolean, default=False)
    check_state: Mapped[bool] = mapped_column(Boolean, default=False)
    retention_days: Mapped[int | None] = mapped_column(Integer)  # None: the hub-wide default
    created_utc: Mapped[datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class HotlistEntry(Base):
    """A plate on a hot list from ``version_added`` until ``version_removed`` (entries are never edited)."""

    __tablename__ = "hotlist_entries"
    __table_args__ = (
        UniqueConstraint("hotlist_id", "plate", "state", "version_added"),
        Index("ix_hotlist_entries_plate", "plate"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hotlist_id: Mapped[int] = mapped_column(ForeignKey("hotlists.id"))
    plate: Mapped[str] = mapped_column(String(16))
    state: Mapped[str | None] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)
    expires_utc: Mapped[datetime | None]
    notes: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(128), default="")
    added_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    added_utc: Mapped[datetime] = mapped_column(default=utcnow)
    removed_utc: Mapped[datetime | None]
    version_added: Mapped[int] = mapped_column(Integer)
    version_removed: Mapped[int | None] = mapped_column(Integer)


class HotlistVersion(Base):
    """One change to the hot lists. ``version`` is global and only increases (AUTOINCREMENT on SQLite)."""

    __tablename__ = "hotlist_versions"
    __table_args__ = (Index("ix_hotlist_versions_hotlist_id", "hotlist_id"), {"sqlite_autoincrement": True})

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    hotlist_id: Mapped[int] = mapped_column(ForeignKey("hotlists.id"))
    created_utc: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    entries_added: Mapped[int] = mapped_column(Integer, default=0)
    entries_removed: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(Text, default="")
    source_sha256: Mapped[str | None] = mapped_column(String(64))


class Hit(Base):
    """A read that matched a hot-list entry, and what a person decided about it."""

    __tablename__ = "hits"
    __table_args__ = (
        Index("ix_hits_read_id", "read_id"),
        Index("ix_hits_entry_id", "entry_id"),
        Index("ix_hits_disposition", "disposition", "id"),  # the open hits, polled by every hit board
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    read_id: Mapped[str] = mapped_column(ForeignKey("reads.read_id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("hotlist_entries.id"))
    hotlist_id: Mapped[int] = mapped_column(Integer)
    entry_version: Mapped[int] = mapped_column(Integer)
    match_type: Mapped[str] = mapped_column(String(32))
    matched_text: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    created_utc: Mapped[datetime] = mapped_column(default=utcnow)
    disposition: Mapped[str] = mapped_column(String(16), default="open")  # confirmed, misread, not_actionable
    disposition_by: Mapped[str | None] = mapped_column(String(64))
    disposition_utc: Mapped[datetime | None]
    disposition_notes: Mapped[str | None] = mapped_column(Text)
    delivered_utc: Mapped[datetime | None]


# --- retention --------------------------------------------------------------------------------


class EvidenceHold(Base):
    """Keeps a read past its retention period while a case needs it; released, never deleted."""

    __tablename__ = "evidence_holds"
    __table_args__ = (Index("ix_evidence_holds_read_id", "read_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No foreign key: holds outlive the reads they kept (an audit trail), and a released hold must not pin its read.
    read_id: Mapped[str] = mapped_column(String(36))
    case_number: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_utc: Mapped[datetime] = mapped_column(default=utcnow)
    released_by: Mapped[str | None] = mapped_column(String(64))
    released_utc: Mapped[datetime | None]
    release_reason: Mapped[str | None] = mapped_column(Text)


class EvictionRecord(Base):
    """A read an edge node dropped from its spool before the hub received it."""

    __tablename__ = "eviction_records"
    __table_args__ = (Index("ix_eviction_records_node_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    read_id: Mapped[str] = mapped_column(String(36))
    created_utc: Mapped[datetime]
    evicted_utc: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(String(16))  # "bytes" or "age", as on the wire
    reported_utc: Mapped[datetime] = mapped_column(default=utcnow)


class RetentionRun(Base):
    __tablename__ = "retention_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_utc: Mapped[datetime]
    finished_utc: Mapped[datetime | None]
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    reads_purged: Mapped[int] = mapped_column(Integer, default=0)
    images_purged: Mapped[int] = mapped_column(Integer, default=0)
    hits_purged: Mapped[int] = mapped_column(Integer, default=0)
    entries_purged: Mapped[int] = mapped_column(Integer, default=0)
    held_reads_kept: Mapped[int] = mapped_column(Integer, default=0)


# The compliance tables (users, access log, sharing, audits) live in hub/access/models.py on this Base;
# importing them here puts them in ``Base.metadata`` wherever the hub's schema is used.
from hub.access import models as _access_models  # noqa: E402,F401
