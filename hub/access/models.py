"""Tables for SB 34 compliance: users, sessions, devices, the chained access log, sharing, audits.

They share ``hub.models.Base`` (one schema, one Alembic history). Records that an audit needs later
(log entries, shares, downloads, corrections, audit reports) carry names as text rather than foreign
keys to ``users``, so deleting a departed user's account leaves every trace of what they did.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(128))
    organization: Mapped[str] = mapped_column(String(128))
    job_classification: Mapped[str] = mapped_column(String(64))
    roles: Mapped[list[str]] = mapped_column(JSON)
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret: Mapped[str] = mapped_column(String(128))  # sealed (accounts.TotpVault)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)  # a TOTP code is accepted once
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended
    status_reason: Mapped[str] = mapped_column(Text, default="")
    status_changed_utc: Mapped[datetime] = mapped_column(default=utcnow)
    created_utc: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    training_completed_utc: Mapped[datetime | None]
    training_recorded_by: Mapped[str | None] = mapped_column(String(64))
    approved_utc: Mapped[datetime | None]
    approved_by: Mapped[str | None] = mapped_column(String(64))
    last_access_utc: Mapped[datetime | None]  # last access to ALPR information (inactivity rule)
    last_login_utc: Mapped[datetime | None]
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until_utc: Mapped[datetime | None]


class ApiSession(Base):
    """A logged-in session (password + TOTP on a registered device); the token itself is never stored."""

    __tablename__ = "api_sessions"
    __table_args__ = (Index("ix_api_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    device_name: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str] = mapped_column(String(64))
    created_utc: Mapped[datetime]
    last_used_utc: Mapped[datetime]
    expires_utc: Mapped[datetime]
    ended_utc: Mapped[datetime | None]


class Device(Base):
    """An agency-issued computer or phone allowed to reach ALPR information (policy 429.9)."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_utc: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    revoked_utc: Mapped[datetime | None]
    last_used_utc: Mapped[datetime | None]


class AccessLogEntry(Base):
    """One access to ALPR information (or refusal, or administrative action), HMAC-chained to the one before."""

    __tablename__ = "access_log"
    __table_args__ = (
        Index("ix_access_log_logged_utc", "logged_utc"),
        Index("ix_access_log_username", "username"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    logged_utc: Mapped[datetime]
    username: Mapped[str] = mapped_column(String(64))
    organization: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # allowed | denied | error
    purpose: Mapped[str] = mapped_column(Text)  # as given, with personal identifiers redacted
    purpose_kind: Mapped[str] = mapped_column(String(16))  # case | suspect | none | refused | flagged
    query: Mapped[dict[str, Any]] = mapped_column(JSON)  # the plate or other data elements used
    result_count: Mapped[int | None] = mapped_column(Integer)
    client_address: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AccessLogChain(Base):
    """The chain's ends (one row): the newest entry, and the last entry removed by retention."""

    __tablename__ = "access_log_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    head_seq: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))
    base_seq: Mapped[int] = mapped_column(Integer)
    base_hash: Mapped[str] = mapped_column(String(64))


class Agency(Base):
    """An agency that asked for, or received, ALPR information (Civ. Code 1798.90.55(b))."""

    __tablename__ = "agencies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # ca_public | federal | out_of_state | private
    contact: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_utc: Mapped[datetime] = mapped_column(default=utcnow)


class ShareRequest(Base):
    __tablename__ = "share_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    contact: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    need: Mapped[str] = mapped_column(Text)
    query: Mapped[dict[str, Any]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_utc: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | refused | transferred
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_utc: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(Text)
    transferred_by: Mapped[str | None] = mapped_column(String(64))
    transferred_utc: Mapped[datetime | None]
    record_count: Mapped[int | None] = mapped_column(Integer)
    export_sha256: Mapped[str | None] = mapped_column(String(64))


class DownloadRecord(Base):
    """ALPR information that left the hub (download, print, export, share): destroyed by a set date (429.9)."""

    __tablename__ = "downloads"
    __table_args__ = (Index("ix_downloads_destroy_by_utc", "destroy_by_utc"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    organization: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # download | print | export | share
    purpose: Mapped[str] = mapped_column(Text)
    record_count: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    share_request_id: Mapped[int | None] = mapped_column(ForeignKey("share_requests.id"))
    created_utc: Mapped[datetime]
    destroy_by_utc: Mapped[datetime]
    destroyed_utc: Mapped[datetime | None]
    destroyed_by: Mapped[str | None] = mapped_column(String(64))


class ReadCorrection(Base):
    """A misread plate corrected by a person; the original value stays here (and in the access log)."""

    __tablename__ = "read_corrections"
    __table_args__ = (Index("ix_read_corrections_read_id", "read_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    read_id: Mapped[str] = mapped_column(String(36))  # no foreign key: the trail outlives a purged read
    old_plate: Mapped[str] = mapped_column(String(16))
    new_plate: Mapped[str] = mapped_column(String(16))
    corrected_by: Mapped[str] = mapped_column(String(64))
    corrected_utc: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)


class AuditReport(Base):
    """A stored audit (429.8): who ran it, who approved it and when, kept for the policy's period."""

    __tablename__ = "audit_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_from_utc: Mapped[datetime]
    period_to_utc: Mapped[datetime]
    generated_by: Mapped[str] = mapped_column(String(64))
    generated_utc: Mapped[datetime]
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    chain_head_seq: Mapped[int] = mapped_column(Integer)
    chain_head_hash: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_utc: Mapped[datetime | None]
    approval_note: Mapped[str | None] = mapped_column(Text)
    retain_until_utc: Mapped[datetime]
