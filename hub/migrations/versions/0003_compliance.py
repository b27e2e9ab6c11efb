"""SB 34 compliance: users, sessions, devices, the chained access log, agencies, shares, downloads,
read corrections and audit reports.

Written from an autogenerate run against hub/access/models.py and then frozen (it imports nothing from
the hub). It also seeds the access log's chain row, so appends never race to create it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
GENESIS_HASH = "0" * 64


def _guard_access_log() -> None:
    """Entries can be added (and, by retention, deleted from the old end) but never changed: an UPDATE is
    refused by the database itself. The hash chain still catches whoever removes this guard first."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'access_log is append-only'; END; $$"
        )
        op.execute(
            "CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log "
            "FOR EACH ROW EXECUTE FUNCTION access_log_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log "
            "BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END"
        )


def _unguard_access_log() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER access_log_no_update ON access_log")
        op.execute("DROP FUNCTION access_log_append_only()")
    else:
        op.execute("DROP TRIGGER access_log_no_update")


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("logged_utc", UTC_DATETIME, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("organization", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("purpose_kind", sa.String(length=16), nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("result_count", sa.Integer(), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_access_log")),
    )
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.create_index("ix_access_log_logged_utc", ["logged_utc"], unique=False)
        batch_op.create_index("ix_access_log_username", ["username"], unique=False)
    _guard_access_log()

    chain = op.create_table(
        "access_log_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("head_seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("base_seq", sa.Integer(), nullable=False),
        sa.Column("base_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log_chain")),
    )
    op.bulk_insert(
        chain, [{"id": 1, "head_seq": 0, "head_hash": GENESIS_HASH, "base_seq": 0, "base_hash": GENESIS_HASH}]
    )
    op.create_table(
        "agencies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agencies")),
        sa.UniqueConstraint("name", name=op.f("uq_agencies_name")),
    )
    op.create_table(
        "audit_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period_from_utc", UTC_DATETIME, nullable=False),
        sa.Column("period_to_utc", UTC_DATETIME, nullable=False),
        sa.Column("generated_by", sa.String(length=64), nullable=False),
        sa.Column("generated_utc", UTC_DATETIME, nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("chain_head_seq", sa.Integer(), nullable=False),
        sa.Column("chain_head_hash", sa.String(length=64), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_utc", UTC_DATETIME, nullable=True),
        sa.Column("approval_note", sa.Text(), nullable=True),
        sa.Column("retain_until_utc", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_reports")),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.String(length=64), nullable=False),
        sa.Column("registered_utc", UTC_DATETIME, nullable=False),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_utc", UTC_DATETIME, nullable=True),
        sa.Column("last_used_utc", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_devices_key_sha256")),
        sa.UniqueConstraint("name", name=op.f("uq_devices_name")),
    )
    op.create_table(
        "read_corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("read_id", sa.String(length=36), nullable=False),
        sa.Column("old_plate", sa.String(length=16), nullable=False),
        sa.Column("new_plate", sa.String(length=16), nullable=False),
        sa.Column("corrected_by", sa.String(length=64), nullable=False),
        sa.Column("corrected_utc", UTC_DATETIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_read_corrections")),
    )
    with op.batch_alter_table("read_corrections", schema=None) as batch_op:
        batch_op.create_index("ix_read_corrections_read_id", ["read_id"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("full_name", sa.String(length=128), nullable=False),
        sa.Column("organization", sa.String(length=128), nullable=False),
        sa.Column("job_classification", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("totp_secret", sa.String(length=128), nullable=False),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("status_changed_utc", UTC_DATETIME, nullable=False),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("training_completed_utc", UTC_DATETIME, nullable=True),
        sa.Column("training_recorded_by", sa.String(length=64), nullable=True),
        sa.Column("approved_utc", UTC_DATETIME, nullable=True),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("last_access_utc", UTC_DATETIME, nullable=True),
        sa.Column("last_login_utc", UTC_DATETIME, nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until_utc", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "api_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("device_name", sa.String(length=64), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("last_used_utc", UTC_DATETIME, nullable=False),
        sa.Column("expires_utc", UTC_DATETIME, nullable=False),
        sa.Column("ended_utc", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_sessions")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_api_sessions_token_sha256")),
    )
    with op.batch_alter_table("api_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_api_sessions_user_id", ["user_id"], unique=False)

    op.create_table(
        "share_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("need", sa.Text(), nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_utc", UTC_DATETIME, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_utc", UTC_DATETIME, nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("transferred_by", sa.String(length=64), nullable=True),
        sa.Column("transferred_utc", UTC_DATETIME, nullable=True),
        sa.Column("record_count", sa.Integer(), nullable=True),
        sa.Column("export_sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"], name=op.f("fk_share_requests_agency_id_agencies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_requests")),
    )
    op.create_table(
        "downloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("organization", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("share_request_id", sa.Integer(), nullable=True),
        sa.Column("created_utc", UTC_DATETIME, nullable=False),
        sa.Column("destroy_by_utc", UTC_DATETIME, nullable=False),
        sa.Column("destroyed_utc", UTC_DATETIME, nullable=True),
        sa.Column("destroyed_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["share_request_id"], ["share_requests.id"], name=op.f("fk_downloads_share_request_id_share_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_downloads")),
    )
    with op.batch_alter_table("downloads", schema=None) as batch_op:
        batch_op.create_index("ix_downloads_destroy_by_utc", ["destroy_by_utc"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("downloads", schema=None) as batch_op:
        batch_op.drop_index("ix_downloads_destroy_by_utc")

    op.drop_table("downloads")
    op.drop_table("share_requests")
    with op.batch_alter_table("api_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_api_sessions_user_id")

    op.drop_table("api_sessions")
    op.drop_table("users")
    with op.batch_alter_table("read_corrections", schema=None) as batch_op:
        batch_op.drop_index("ix_read_corrections_read_id")

    op.drop_table("read_corrections")
    op.drop_table("devices")
    op.drop_table("audit_reports")
    op.drop_table("agencies")
    op.drop_table("access_log_chain")
    _unguard_access_log()
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.drop_index("ix_access_log_username")
        batch_op.drop_index("ix_access_log_logged_utc")

    op.drop_table("access_log")
