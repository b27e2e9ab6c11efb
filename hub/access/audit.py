"""The periodic audit (policy 429.8): one report of how ALPR information was accessed, used and shared.

:func:`build_report` gathers everything from the database for a period; the report is stored (who ran
it, the chain head it saw) and approved by someone else. Plates never appear in it: auditors read the
log, not the plates (they are masked, ``7AB***3``).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.recognition.formats import mask_plate
from hub.access import pages
from hub.access.accounts import approval_current, training_current
from hub.access.auditlog import VerifyResult
from hub.access.models import AccessLogEntry, Agency, DownloadRecord, ReadCorrection, ShareRequest, User
from hub.access.policy import PolicySettings
from hub.models import EvidenceHold, Hit, HotlistEntry, Read

PLATE_KEYS = ("plate", "pattern", "fuzzy", "new_plate", "old_plate")


def mask_query(query: dict[str, Any]) -> dict[str, Any]:
    """A logged query with its plates masked, for people who audit rather than investigate."""
    return {k: mask_plate(str(v)) if k in PLATE_KEYS and v else v for k, v in query.items()}


def build_report(
    session: Session, start: datetime, end: datetime, now: datetime, policy: PolicySettings, chain: VerifyResult
) -> dict[str, Any]:
    entries = list(
        session.execute(
            select(AccessLogEntry)
            .where(AccessLogEntry.logged_utc >= start, AccessLogEntry.logged_utc < end)
            .order_by(AccessLogEntry.seq)
        ).scalars()
    )
    return {
        "agency": policy.agency.name,
        "period": {"from_utc": start.isoformat(), "to_utc": end.isoformat()},
        "generated_utc": now.isoformat(),
        "access_log_chain": {
            "verified": chain.ok,
            "entries_checked": chain.entries_checked,
            "head_seq": chain.head_seq,
            "problems": list(chain.problems),
        },  # fmt: skip
        "accesses_by_user": _by_user(entries),
        "accesses_by_purpose": _by_purpose(entries),
        "denied_attempts": [entry_view(e) for e in entries if e.outcome == "denied"],
        "flagged_purposes": [entry_view(e) for e in entries if e.purpose_kind == "flagged"],
        "users": _users(session, now, policy),
        "shares": shares_between(session, start, end),
        "agencies_shared_with": _agencies_shared_with(session),
        "overdue_downloads": overdue_downloads(session, now),
        "retention": _retention(session, now, policy),
        "corrections": [
            {
                "read_id": c.read_id,
                "old_plate": mask_plate(c.old_plate),
                "new_plate": mask_plate(c.new_plate),
                "by": c.corrected_by,
                "utc": c.corrected_utc.isoformat(),
                "reason": c.reason,
            }
            for c in session.execute(
                select(ReadCorrection).where(ReadCorrection.corrected_utc >= start, ReadCorrection.corrected_utc < end)
            ).scalars()
        ],  # fmt: skip
        "performed_by_policy": policy.audit.performed_by,
        "approved_by_policy": policy.audit.approved_by,
    }


def entry_view(entry: AccessLogEntry) -> dict[str, Any]:
    return {"seq": entry.seq, "utc": entry.logged_utc.isoformat(), "username": entry.username,
            "organization": entry.organization, "action": entry.action, "purpose": entry.purpose,
            "query": mask_query(entry.query), "client": entry.client_address, "device": entry.device,
            "detail": entry.detail}  # fmt: skip


def _by_user(entries: list[AccessLogEntry]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], Counter[str]] = {}
    for entry in entries:
        counts.setdefault((entry.username, entry.organization), Counter())[f"{entry.action}:{entry.outcome}"] += 1
    return [{"username": user, "organization": org, "total": sum(c.values()), "by_action": dict(sorted(c.items()))}
            for (user, org), c in sorted(counts.items())]  # fmt: skip


def _by_purpose(entries: list[AccessLogEntry]) -> list[dict[str, Any]]:
    counts = Counter((e.purpose_kind, e.purpose, e.username) for e in entries if e.purpose_kind in ("case", "suspect"))
    return [{"kind": kind, "purpose": purpose, "username": user, "accesses": n}
            for (kind, purpose, user), n in sorted(counts.items())]  # fmt: skip


def _users(session: Session, now: datetime, policy: PolicySettings) -> dict[str, list[dict[str, Any]]]:
    users = list(session.execute(select(User).order_by(User.username)).scalars())
    inactive_after = now - timedelta(days=policy.access.inactivity_days)

    def row(user: User) -> dict[str, Any]:
        return {"username": user.username, "classification": user.job_classification, "status": user.status,
                "reason": user.status_reason,
                "training_utc": user.training_completed_utc.isoformat() if user.training_completed_utc else None,
                "approved_utc": user.approved_utc.isoformat() if user.approved_utc else None,
                "last_access_utc": user.last_access_utc.isoformat() if user.last_access_utc else None}  # fmt: skip

    return {
        "lapsed_training": [row(u) for u in users if u.status == "active" and not training_current(u, now, policy)],
        "lapsed_approval": [row(u) for u in users if u.status == "active" and not approval_current(u, now, policy)],
        "unauthorized_classification": [
            row(u) for u in users if not policy.access.is_authorized(u.job_classification)
        ],
        "suspended": [row(u) for u in users if u.status == "suspended"],
        "inactive": [
            row(u) for u in users
            if u.status == "active" and (u.last_access_utc or u.created_utc) < inactive_after
        ],
    }  # fmt: skip


def shares_between(session: Session, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = session.execute(
        select(ShareRequest, Agency)
        .join(Agency, Agency.id == ShareRequest.agency_id)
        .where(ShareRequest.requested_utc >= start, ShareRequest.requested_utc < end)
        .order_by(ShareRequest.id)
    ).all()
    return [{"id": s.id, "agency": a.name, "agency_kind": a.kind, "status": s.status, "purpose": s.purpose,
             "requested_by": s.requested_by, "decided_by": s.decided_by, "records": s.record_count,
             "transferred_utc": s.transferred_utc.isoformat() if s.transferred_utc else None}
            for s, a in rows]  # fmt: skip


def _agencies_shared_with(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Agency.name, Agency.kind, func.count(ShareRequest.id), func.max(ShareRequest.transferred_utc))
        .join(ShareRequest, ShareRequest.agency_id == Agency.id)
        .where(ShareRequest.status == "transferred")
        .group_by(Agency.name, Agency.kind)
        .order_by(Agency.name)
    ).all()
    return [{"agency": name, "kind": kind, "transfers": n, "last_utc": last.isoformat() if last else None}
            for name, kind, n, last in rows]  # fmt: skip


def overdue_downloads(session: Session, now: datetime) -> list[dict[str, Any]]:
    rows = session.execute(
        select(DownloadRecord)
        .where(DownloadRecord.destroyed_utc.is_(None), DownloadRecord.destroy_by_utc < now)
        .order_by(DownloadRecord.destroy_by_utc)
    ).scalars()
    return [{"id": d.id, "username": d.username, "kind": d.kind, "records": d.record_count,
             "created_utc": d.created_utc.isoformat(), "destroy_by_utc": d.destroy_by_utc.isoformat()}
            for d in rows]  # fmt: skip


def _retention(session: Session, now: datetime, policy: PolicySettings) -> dict[str, Any]:
    days = policy.retention
    held = select(EvidenceHold.read_id).where(EvidenceHold.released_utc.is_(None))
    oldest_unheld = session.execute(select(func.min(Read.best_utc)).where(Read.read_id.not_in(held))).scalar()
    oldest_hit = session.execute(select(func.min(Hit.created_utc))).scalar()
    oldest_entry = session.execute(select(func.min(HotlistEntry.added_utc))).scalar()
    active_holds = session.execute(select(func.count()).select_from(held.subquery())).scalar_one()

    def age(value: datetime | None) -> float | None:
        return None if value is None else round((now - value).total_seconds() / 86400, 1)

    reads_age, hits_age, hotlist_age = age(oldest_unheld), age(oldest_hit), age(oldest_entry)
    # A day's grace: the retention job runs periodically, not continuously.
    return {
        "reads_days_policy": days.reads_days,
        "oldest_unheld_read_age_days": reads_age,
        "reads_compliant": reads_age is None or reads_age <= days.reads_days + 1,
        "active_holds": active_holds,
        "hits_days_policy": days.hits_days,
        "oldest_hit_age_days": hits_age,
        "hits_compliant": hits_age is None or hits_age <= days.hits_days + 1,
        "hotlist_days_policy": days.hotlist_days,
        "oldest_hotlist_entry_age_days": hotlist_age,
        "hotlist_compliant": hotlist_age is None or hotlist_age <= days.hotlist_days + 1,
    }


def render_html(report: dict[str, Any], stored: dict[str, Any]) -> str:
    """The report as a page a person can read (every value HTML-escaped)."""
    return pages.render("audit_report.html", report=report, stored=stored)
