"""Initial schema: nodes, health, images, reads, hot lists, hits, evidence holds, evictions, retention.

Written from an autogenerate run against hub/models.py and then frozen: it imports nothing from the
hub, so later model changes cannot alter what this revision creates.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
"""Timezone-aware timestamps (``timestamptz`` on PostgreSQL; naive UTC text on SQLite, see hub.models)."""


def upgrade() -> None:
    op.create_table(
        "hotlists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("default_category", sa.String(length=64), nullable=False),
        sa.Column("default_priority", sa.Integer(), nullable=False),
        sa.Column("lookalike_tolerance", sa.Boolean(), nullable=False),
        sa.Column("check_state", sa.Boolean(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hotlists"),
        sa.UniqueConstraint("name", name="uq_hotlists_name"),
    )
    op.create_table(
        "images",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.String(length=255), nullable=True),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_images"),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("curve_public_key", sa.String(length=40), nullable=False),
        sa.Column("enrolled_utc", UTC_DATETIME, nullable=False),
        sa.Column("revoked_utc", UTC_DATETIME, nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("last_seen_utc", UTC_DATETIME, nullable=True),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("curve_public_key", name="uq_nodes_curve_public_key"),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
    )
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_utc", UTC_DATETIME, nullable=False),
        sa.Column("finished_utc", UTC_DATETIME, nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("reads_purged", sa.Integer(), nullable=False),
        sa.Column("images_purged", sa.Integer(), nullable=False),
        sa.Column("hits_purged", sa.Integer(), nullable=False),
        sa.Column("entries_purged", sa.Integer(), nullable=False),
        sa.Column("held_reads_kept", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention_runs"),
    )
    op.create_table(
        "eviction_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("read_id", sa.String(length=36), nullable=False),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("evicted_utc", UTC_DATETIME, nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("reported_utc", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_eviction_records_node_id_nodes"),
        sa.PrimaryKeyConstraint("id", name="pk_eviction_records"),
    )
    op.create_index("ix_eviction_records_node_id", "eviction_records", ["node_id"], unique=False)
    op.create_table(
        "hotlist_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hotlist_id", sa.Integer(), nullable=False),
        sa.Column("plate", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_utc", UTC_DATETIME, nullable=True),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("added_utc", UTC_DATETIME, nullable=False),
        sa.Column("removed_utc", UTC_DATETIME, nullable=True),
        sa.Column("version_added", sa.Integer(), nullable=False),
        sa.Column("version_removed", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["hotlist_id"], ["hotlists.id"], name="fk_hotlist_entries_hotlist_id_hotlists"),
        sa.PrimaryKeyConstraint("id", name="pk_hotlist_entries"),
        sa.UniqueConstraint(
            "hotlist_id",
            "plate",
            "state",
            "version_added",
            name="uq_hotlist_entries_hotlist_id_plate_state_version_added",
        ),
    )
    op.create_index("ix_hotlist_entries_plate", "hotlist_entries", ["plate"], unique=False)
    op.create_table(
        "hotlist_versions",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hotlist_id", sa.Integer(), nullable=False),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("entries_added", sa.Integer(), nullable=False),
        sa.Column("entries_removed", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["hotlist_id"], ["hotlists.id"], name="fk_hotlist_versions_hotlist_id_hotlists"),
        sa.PrimaryKeyConstraint("version", name="pk_hotlist_versions"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_hotlist_versions_hotlist_id", "hotlist_versions", ["hotlist_id"], unique=False)
    op.create_table(
        "node_health_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("received_utc", UTC_DATETIME, nullable=False),
        sa.Column("health", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_node_health_samples_node_id_nodes"),
        sa.PrimaryKeyConstraint("id", name="pk_node_health_samples"),
    )
    op.create_index(
        "ix_node_health_samples_node_received", "node_health_samples", ["node_id", "received_utc"], unique=False
    )
    op.create_table(
        "reads",
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
        sa.ForeignKeyConstraint(["context_sha256"], ["images.sha256"], name="fk_reads_context_sha256_images"),
        sa.ForeignKeyConstraint(["crop_sha256"], ["images.sha256"], name="fk_reads_crop_sha256_images"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_reads_node_id_nodes"),
        sa.PrimaryKeyConstraint("read_id", name="pk_reads"),
    )
    op.create_index("ix_reads_best_utc", "reads", ["best_utc"], unique=False)
    op.create_index("ix_reads_context_sha256", "reads", ["context_sha256"], unique=False)
    op.create_index("ix_reads_crop_sha256", "reads", ["crop_sha256"], unique=False)
    op.create_index("ix_reads_lat_lon", "reads", ["latitude", "longitude"], unique=False)
    op.create_index("ix_reads_node_best", "reads", ["node_id", "best_utc"], unique=False)
    op.create_index("ix_reads_plate", "reads", ["plate"], unique=False)
    op.create_table(
        "evidence_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("read_id", sa.String(length=36), nullable=False),
        sa.Column("case_number", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("released_by", sa.String(length=64), nullable=True),
        sa.Column("released_utc", UTC_DATETIME, nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_evidence_holds"),
    )
    op.create_index("ix_evidence_holds_read_id", "evidence_holds", ["read_id"], unique=False)
    op.create_table(
        "hits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("read_id", sa.String(length=36), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("hotlist_id", sa.Integer(), nullable=False),
        sa.Column("entry_version", sa.Integer(), nullable=False),
        sa.Column("match_type", sa.String(length=32), nullable=False),
        sa.Column("matched_text", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("disposition_by", sa.String(length=64), nullable=True),
        sa.Column("disposition_utc", UTC_DATETIME, nullable=True),
        sa.Column("disposition_notes", sa.Text(), nullable=True),
        sa.Column("delivered_utc", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["entry_id"], ["hotlist_entries.id"], name="fk_hits_entry_id_hotlist_entries"),
        sa.ForeignKeyConstraint(["read_id"], ["reads.read_id"], name="fk_hits_read_id_reads"),
        sa.PrimaryKeyConstraint("id", name="pk_hits"),
    )
    op.create_index("ix_hits_entry_id", "hits", ["entry_id"], unique=False)
    op.create_index("ix_hits_read_id", "hits", ["read_id"], unique=False)
    op.create_table(
        "read_candidate_texts",
        sa.Column("read_id", sa.String(length=36), nullable=False),
        sa.Column("text", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["read_id"], ["reads.read_id"], name="fk_read_candidate_texts_read_id_reads", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("read_id", "text", name="pk_read_candidate_texts"),
    )
    op.create_index("ix_read_candidate_texts_text", "read_candidate_texts", ["text"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_read_candidate_texts_text", table_name="read_candidate_texts")
    op.drop_table("read_candidate_texts")
    op.drop_index("ix_hits_read_id", table_name="hits")
    op.drop_index("ix_hits_entry_id", table_name="hits")
    op.drop_table("hits")
    op.drop_index("ix_evidence_holds_read_id", table_name="evidence_holds")
    op.drop_table("evidence_holds")
    op.drop_index("ix_reads_plate", table_name="reads")
    op.drop_index("ix_reads_node_best", table_name="reads")
    op.drop_index("ix_reads_lat_lon", table_name="reads")
    op.drop_index("ix_reads_crop_sha256", table_name="reads")
    op.drop_index("ix_reads_context_sha256", table_name="reads")
    op.drop_index("ix_reads_best_utc", table_name="reads")
    op.drop_table("reads")
    op.drop_index("ix_node_health_samples_node_received", table_name="node_health_samples")
    op.drop_table("node_health_samples")
    op.drop_index("ix_hotlist_versions_hotlist_id", table_name="hotlist_versions")
    op.drop_table("hotlist_versions")
    op.drop_index("ix_hotlist_entries_plate", table_name="hotlist_entries")
    op.drop_table("hotlist_entries")
    op.drop_index("ix_eviction_records_node_id", table_name="eviction_records")
    op.drop_table("eviction_records")
    op.drop_table("retention_runs")
    op.drop_table("nodes")
    op.drop_table("images")
    op.drop_table("hotlists")
