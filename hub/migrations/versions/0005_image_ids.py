"""Reads refer to their images by a growing integer id, not by hash.

``images`` gains ``id`` (its primary key; ``sha256`` stays unique) and ``reads`` gains ``crop_image_id``
and ``context_image_id`` (foreign keys, indexed) in place of the foreign keys and indexes on
``crop_sha256`` and ``context_sha256``, which stay as plain columns. The reads' index that image
clean-up needs (and every image delete's foreign-key check) then grows at its end as reads arrive,
instead of taking each insert at a random place in a b-tree keyed by hash (``hub/models.py``).

SQLite rebuilds both tables by copying them (a primary key and foreign keys cannot be altered there;
written out rather than in batch mode so that the migration also renders offline). ``reads`` keeps its
rowids, the keys of the FTS5 text index of migration 0004, whose triggers are made again. Frozen like
the others: it imports nothing from the hub, and ``reads`` is written out as 0001 and 0004 made it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
IMAGE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY, the rowid
IMAGE_COLUMNS = "sha256, kind, size, data, path, pack_offset, created_utc"
KINDS = ("crop", "context")

FTS = "read_texts"
SQLITE_READS_INDEXES = {  # the other indexes of reads on SQLite (0001; 0004 dropped the plate's)
    "ix_reads_best_utc": ("best_utc",),
    "ix_reads_lat_lon": ("latitude", "longitude"),
    "ix_reads_node_best": ("node_id", "best_utc"),
}
SQLITE_TEXT_TRIGGERS = (  # as migration 0004 made them
    f"CREATE TRIGGER reads_texts_insert AFTER INSERT ON reads BEGIN "
    f"INSERT INTO {FTS} (rowid, search_texts) VALUES (new.rowid, new.search_texts); END",
    f"CREATE TRIGGER reads_texts_delete AFTER DELETE ON reads BEGIN "
    f"INSERT INTO {FTS} ({FTS}, rowid, search_texts) VALUES ('delete', old.rowid, old.search_texts); END",
    f"CREATE TRIGGER reads_texts_update AFTER UPDATE OF search_texts ON reads BEGIN "
    f"INSERT INTO {FTS} ({FTS}, rowid, search_texts) VALUES ('delete', old.rowid, old.search_texts); "
    f"INSERT INTO {FTS} (rowid, search_texts) VALUES (new.rowid, new.search_texts); END",
)


def _image_id_of(kind: str) -> str:
    """SQL for the id of the image a read's ``kind`` hash names (NULL where it names none)."""
    return f"(SELECT id FROM images WHERE images.sha256 = reads.{kind}_sha256)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_images(with_ids=True)
        _rebuild_sqlite_reads(by_id=True)
    else:
        _upgrade_postgresql()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_images(with_ids=False)
        _rebuild_sqlite_reads(by_id=False)
    else:
        _downgrade_postgresql()


# --- SQLite: foreign keys are off while migrating (hub/migrations/env.py) ---


def _rebuild_sqlite_images(*, with_ids: bool) -> None:
    """``images`` again, keyed by a new ``id`` (hash unique) or, going down, by its hash."""
    keys: list[sa.Constraint] = (
        [sa.PrimaryKeyConstraint("id", name="pk_images"), sa.UniqueConstraint("sha256", name="uq_images_sha256")]
        if with_ids
        else [sa.PrimaryKeyConstraint("sha256", name="pk_images")]
    )
    op.create_table(
        "images_new",
        *([sa.Column("id", IMAGE_ID, nullable=False)] if with_ids else []),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.String(length=255), nullable=True),
        sa.Column("pack_offset", sa.BigInteger(), nullable=True),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        *keys,
    )
    # In the order they were stored: the ids grow as the images did.
    op.execute(f"INSERT INTO images_new ({IMAGE_COLUMNS}) SELECT {IMAGE_COLUMNS} FROM images ORDER BY rowid")
    op.drop_index("ix_images_path", table_name="images")
    op.drop_table("images")
    op.rename_table("images_new", "images")
    op.create_index("ix_images_path", "images", ["path"], unique=False)


def _reads_columns() -> list[sa.Column[object]]:
    """The columns of ``reads`` as migrations 0001 and 0004 made them (frozen: the models may move on)."""
    return [
        sa.Column("read_id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("plate", sa.String(length=16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("char_confidences", sa.JSON(), nullable=False),
        sa.Column("first_seen_utc", UTC_DATETIME, nullable=False),
        sa.Column("best_utc", UTC_DATETIME, nullable=False),
        sa.Column("last_seen_utc", UTC_DATETIME, nullable=False),
        sa.Column("received_utc", UTC_DATETIME, nullable=False),
        sa.Column("time_source", sa.String(length=16), nullable=False),
        sa.Column("clock_suspect", sa.Boolean(), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("gps", sa.JSON(), nullable=True),
        sa.Column("crop_sha256", sa.String(length=64), nullable=True),
        sa.Column("context_sha256", sa.String(length=64), nullable=True),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.Column("model_versions", sa.JSON(), nullable=False),
        sa.Column("search_texts", sa.String(length=200), server_default="", nullable=False),
    ]


def _rebuild_sqlite_reads(*, by_id: bool) -> None:
    """``reads`` again, its images referred to by id (or, going down, by hash), copied with their rowids
    (the FTS5 index's keys), then its indexes and the text index's triggers."""
    columns = _reads_columns()
    names = ", ".join(column.name for column in columns)
    old, new, referred = ("sha256", "image_id", "id") if by_id else ("image_id", "sha256", "sha256")
    op.create_table(
        "reads_new",
        *columns,
        *([sa.Column(f"{kind}_image_id", IMAGE_ID, nullable=True) for kind in KINDS] if by_id else []),
        *(
            sa.ForeignKeyConstraint([f"{kind}_{new}"], [f"images.{referred}"], name=f"fk_reads_{kind}_{new}_images")
            for kind in KINDS
        ),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_reads_node_id_nodes"),
        sa.PrimaryKeyConstraint("read_id", name="pk_reads"),
    )
    if by_id:
        ids = ", ".join(_image_id_of(kind) for kind in KINDS)
        op.execute(
            f"INSERT INTO reads_new (rowid, {names}, crop_image_id, context_image_id) "
            f"SELECT rowid, {names}, {ids} FROM reads ORDER BY rowid"
        )
    else:
        op.execute(f"INSERT INTO reads_new (rowid, {names}) SELECT rowid, {names} FROM reads ORDER BY rowid")
    for index in (*SQLITE_READS_INDEXES, *(f"ix_reads_{kind}_{old}" for kind in KINDS)):
        op.drop_index(index, table_name="reads")
    for statement in ("reads_texts_update", "reads_texts_delete", "reads_texts_insert"):
        op.execute(f"DROP TRIGGER {statement}")
    op.drop_table("reads")
    op.rename_table("reads_new", "reads")
    for index, indexed in SQLITE_READS_INDEXES.items():
        op.create_index(index, "reads", list(indexed), unique=False)
    for kind in KINDS:
        op.create_index(f"ix_reads_{kind}_{new}", "reads", [f"{kind}_{new}"], unique=False)
    for statement in SQLITE_TEXT_TRIGGERS:
        op.execute(statement)


# --- PostgreSQL ---


def _upgrade_postgresql() -> None:
    for kind in KINDS:
        op.drop_constraint(f"fk_reads_{kind}_sha256_images", "reads", type_="foreignkey")
        op.drop_index(f"ix_reads_{kind}_sha256", table_name="reads")
    op.drop_constraint("pk_images", "images", type_="primary")
    op.execute("ALTER TABLE images ADD COLUMN id BIGSERIAL NOT NULL")  # numbers the rows there
    op.create_primary_key("pk_images", "images", ["id"])
    op.create_unique_constraint("uq_images_sha256", "images", ["sha256"])
    for kind in KINDS:
        op.add_column("reads", sa.Column(f"{kind}_image_id", sa.BigInteger(), nullable=True))
    op.execute("UPDATE reads SET " + ", ".join(f"{kind}_image_id = {_image_id_of(kind)}" for kind in KINDS))
    for kind in KINDS:
        op.create_foreign_key(f"fk_reads_{kind}_image_id_images", "reads", "images", [f"{kind}_image_id"], ["id"])
        op.create_index(f"ix_reads_{kind}_image_id", "reads", [f"{kind}_image_id"], unique=False)


def _downgrade_postgresql() -> None:
    for kind in KINDS:
        op.drop_constraint(f"fk_reads_{kind}_image_id_images", "reads", type_="foreignkey")
        op.drop_index(f"ix_reads_{kind}_image_id", table_name="reads")
        op.drop_column("reads", f"{kind}_image_id")
    op.drop_constraint("uq_images_sha256", "images", type_="unique")
    op.drop_constraint("pk_images", "images", type_="primary")
    op.drop_column("images", "id")
    op.create_primary_key("pk_images", "images", ["sha256"])
    for kind in KINDS:
        op.create_foreign_key(f"fk_reads_{kind}_sha256_images", "reads", "images", [f"{kind}_sha256"], ["sha256"])
        op.create_index(f"ix_reads_{kind}_sha256", "reads", [f"{kind}_sha256"], unique=False)
