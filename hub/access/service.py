"""Every human access to ALPR information, gated and logged: the one door the HTTP API and the CLI share.

Each method runs one transaction: decide (:func:`hub.access.gate.decide`), then either do the work and
log it as allowed, or log the refusal and raise :class:`AccessDenied` once the refusal is committed.
A failure inside the work (an unknown read, say) is rolled back to a savepoint and logged as an error.
So nothing is returned that the log does not show, and nothing is refused that the log does not show.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from edge.recognition.formats import normalize_plate
from hub import textindex
from hub.access import accounts, audit, sharing
from hub.access.auditlog import AccessLog, LogEvent, VerifyResult
from hub.access.gate import Actor, Decision, decide
from hub.access.models import (
    AccessLogEntry,
    Agency,
    AuditReport,
    Device,
    DownloadRecord,
    ReadCorrection,
    ShareRequest,
    User,
)
from hub.access.policy import PolicySettings
from hub.access.roles import Permission, permissions
from hub.access.search import SearchQuery, read_detail, read_summary, search_reads
from hub.dispatch import Disposition, crop_url_for, open_hits_query, open_hits_state_query, set_disposition
from hub.models import Hit, Image, Node, Read
from hub.nodes import list_nodes
from hub.retention import create_hold, release_hold
from hub.storage import ImageStore

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]
MAX_EXPORT_RECORDS = 5_000


class AccessDenied(Exception):
    """Refused, and logged as refused. The message says why, never echoing ALPR data."""


class NotFound(LookupError):
    pass


class AuthenticationFailed(Exception):
    """No valid session, device or credentials (the reason is in the access log, not the message)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a piece of gated work returns, and what the log should say about it."""

    value: Any
    result_count: int | None = None
    detail: str = ""
    query: Mapping[str, Any] | None = None
    refused: bool = False  # refused by a rule the work itself applies: committed and logged, then AccessDenied


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ComplianceService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: PolicySettings,
        access_log: AccessLog,
        images: ImageStore,
        clock: Clock = _utcnow,
        issuer: str = "ALPR hub",
        image_url: str = "/api/v1/images",
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.log = access_log
        self.images = images
        self.clock = clock
        self.issuer = issuer
        self.image_url = image_url
        self.totp_vault = accounts.TotpVault(access_log.derived_key(b"totp"))

    # --- the gate -------------------------------------------------------------------------------

    def _gated(
        self,
        actor: Actor,
        permission: Permission,
        action: str,
        query: Mapping[str, Any],
        work: Callable[[Session, Decision, datetime], Outcome],
        purpose: str | None = None,
        *,
        log_allowed: bool = True,
    ) -> Any:
        """``work`` if the gate allows ``actor`` ``permission`` (and ``purpose``), logged with its outcome.
        ``log_allowed=False`` is for work that returns no ALPR information: refusals and errors are still
        logged, an allowed call is not."""
        now = self.clock()
        with self.sessions.begin() as session:
            decision = decide(session, actor, permission, purpose, now, self.policy)
            if not decision.allowed:
                self._append(session, actor, action, "denied", decision, query, None, decision.reason, now)
                refused = decision.reason
            else:
                try:
                    with session.begin_nested():
                        outcome = work(session, decision, now)
                except (LookupError, ValueError, accounts.AccountError, sharing.SharingError) as exc:
                    self._append(session, actor, action, "error", decision, query, None, str(exc), now)
                    failure: Exception = exc
                else:
                    if outcome.refused or log_allowed:
                        self._append(session, actor, action, "denied" if outcome.refused else "allowed", decision,
                                     outcome.query or query, outcome.result_count, outcome.detail, now)  # fmt: skip
                    if not outcome.refused:
                        return outcome.value
                    decision, refused = Decision(False), outcome.detail
        if not decision.allowed:
            raise AccessDenied(refused)
        raise failure

    def _append(
        self,
        session: Session,
        actor: Actor,
        action: str,
        outcome: str,
        decision: Decision | None,
        query: Mapping[str, Any],
        count: int | None,
        detail: str,
        now: datetime,
    ) -> None:
        self.log.append(session, LogEvent(
            username=actor.username, organization=actor.organization, action=action, outcome=outcome,
            purpose=decision.logged_purpose if decision else "",
            purpose_kind=decision.purpose_kind if decision else "none",
            query=query, result_count=count, client_address=actor.client_address, device=actor.device, detail=detail,
        ), now)  # fmt: skip

    def _log_unauthenticated(self, username: str, action: str, client: str, device: str, reason: str) -> None:
        now = self.clock()
        stranger = Actor(username or "(none)", "", device, client)
        with self.sessions.begin() as session:
            self._append(session, stranger, action, "denied", None, {}, None, reason, now)

    # --- log-in ---------------------------------------------------------------------------------

    def login(self, username: str, password: str, totp_code: str, device_key: str | None, client: str) -> str:
        now = self.clock()
        with self.sessions.begin() as session:
            device = accounts.identify_device(session, device_key, client, self.policy.access, now, login=True)
            if device is None:
                reason, name = "not an agency-registered device", username.strip().lower()[:64]
            else:
                try:
                    token, user = accounts.login(session, username, password, totp_code, device, client, now,
                                                 self.policy, self.totp_vault)  # fmt: skip
                except accounts.LoginRefusedError as exc:
                    reason, name = exc.reason, exc.username
                else:
                    actor = Actor.from_user(user, device, client)
                    self._append(session, actor, "login", "allowed", None, {}, None, "password and TOTP", now)
                    return token
        self._log_unauthenticated(name, "login", client, device or "unregistered", reason)
        raise AuthenticationFailed("log-in refused")

    def authenticate(self, token: str | None, device_key: str | None, client: str) -> Actor:
        now = self.clock()
        with self.sessions.begin() as session:
            device = accounts.identify_device(session, device_key, client, self.policy.access, now)
            user = accounts.session_user(session, token, device, now, self.policy) if token and device else None
            if user is not None and device is not None:
                return Actor.from_user(user, device, client)
            reason = "not an agency-registered device" if device is None else "no valid session (log in again)"
        self._log_unauthenticated("", "authenticate", client, device or "unregistered", reason)
        raise AuthenticationFailed(reason)

    def logout(self, actor: Actor, token: str) -> None:
        now = self.clock()
        with self.sessions.begin() as session:
            accounts.logout(session, token, now)
            self._append(session, actor, "logout", "allowed", None, {}, None, "", now)

    def change_password(self, actor: Actor, old: str, new: str) -> None:
        """Any signed-in user, for their own account; a refusal is logged like any other."""
        now = self.clock()
        with self.sessions.begin() as session:
            try:
                with session.begin_nested():
                    accounts.change_password(session, actor.username, old, new)
                refused = ""
            except accounts.AccountError as exc:
                refused = str(exc)
            outcome = "denied" if refused else "allowed"
            self._append(session, actor, "password.change", outcome, None, {}, None, refused, now)
        if refused:
            raise AccessDenied(refused)

    # --- searching and viewing ALPR information -------------------------------------------------

    def search(self, actor: Actor, query: SearchQuery, purpose: str) -> dict[str, Any]:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            rows, total = search_reads(session, query)
            results = [read_summary(read, node, self.image_url) for read, node in rows]
            return Outcome({"total": total, "page": query.page, "page_size": query.page_size, "results": results},
                           result_count=len(results), detail=f"{total} matches")  # fmt: skip

        return self._gated(actor, Permission.SEARCH, "search", query.data_elements(), work, purpose)  # type: ignore[no-any-return]

    def view_read(self, actor: Actor, read_id: str, purpose: str) -> dict[str, Any]:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            read, node = self._read(session, read_id)
            return Outcome(read_detail(session, read, node, self.image_url) | {"corrections": self._corrections(
                session, read_id)}, result_count=1, query={"read_id": read_id, "plate": read.plate})  # fmt: skip

        return self._gated(actor, Permission.VIEW_READ, "read.view", {"read_id": read_id}, work, purpose)  # type: ignore[no-any-return]

    def view_image(self, actor: Actor, sha256: str, purpose: str) -> bytes:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            image_id = session.scalar(select(Image.id).where(Image.sha256 == sha256))
            read = None if image_id is None else session.scalars(
                select(Read).where((Read.crop_image_id == image_id) | (Read.context_image_id == image_id)).limit(1)
            ).first()  # fmt: skip
            if read is None:
                raise NotFound("no such image")
            return Outcome(self.images.get(session, sha256), result_count=1,
                           query={"image": sha256, "read_id": read.read_id, "plate": read.plate})  # fmt: skip

        return self._gated(actor, Permission.VIEW_IMAGE, "image.view", {"image": sha256}, work, purpose)  # type: ignore[no-any-return]

    def open_hits(self, actor: Actor, limit: int = 50) -> list[dict[str, Any]]:
        """Hits nobody has dispositioned, most urgent list priority first, then newest: what a dispatcher
        must verify (the entry's plate and state against the crop) and act on."""

        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            query = open_hits_query(max(1, min(limit, 200))).add_columns(Read, Node.name)
            rows = session.execute(query.join(Read, Read.read_id == Hit.read_id).join(Node, Node.id == Read.node_id))
            hits = [{"hit_id": h.id, "match_type": h.match_type, "matched_text": h.matched_text,
                     "created_utc": h.created_utc.isoformat(), "list_name": list_name,
                     "entry": {"plate": e.plate, "state": e.state, "category": e.category, "priority": e.priority,
                               "notes": e.notes},
                     "crop_url": crop_url_for("", h.id) if r.crop_sha256 else None,
                     "read": read_summary(r, node, self.image_url)}
                    for h, e, list_name, r, node in rows]  # fmt: skip
            return Outcome(hits, result_count=len(hits))

        return self._gated(actor, Permission.VIEW_HITS, "hits.view", {"disposition": "open"}, work)  # type: ignore[no-any-return]

    def open_hits_state(self, actor: Actor) -> dict[str, Any]:
        """How many hits are open and a version that changes whenever the set of open hits does; no ALPR
        information (no plate, place or time), so, once the gate allows it, it is not logged. A hit board
        polls this and asks :meth:`open_hits` (logged) only when the version moves: the access log grows
        with what dispatchers are shown, not with the minutes a board stays open. Refusals are logged."""

        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            count, newest, id_sum = session.execute(open_hits_state_query()).one()
            return Outcome({"open": count, "version": f"{count}.{newest or 0}.{id_sum or 0}"})

        return self._gated(actor, Permission.VIEW_HITS, "hits.view", {"disposition": "open"}, work, log_allowed=False)  # type: ignore[no-any-return]

    def hit_crop(self, actor: Actor, hit_id: int) -> bytes:
        """The plate crop of a hit, for the dispatcher who must verify plate and state before acting."""

        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            row = session.execute(
                select(Read).join(Hit, Hit.read_id == Read.read_id).where(Hit.id == hit_id)
            ).scalar_one_or_none()
            if row is None or row.crop_sha256 is None:
                raise NotFound("no crop for that hit")
            return Outcome(self.images.get(session, row.crop_sha256), result_count=1,
                           query={"hit_id": hit_id, "read_id": row.read_id, "plate": row.plate})  # fmt: skip

        return self._gated(actor, Permission.VIEW_HITS, "hit.crop", {"hit_id": hit_id}, work)  # type: ignore[no-any-return]

    def dispose_hit(self, actor: Actor, hit_id: int, disposition: Disposition, notes: str | None) -> None:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            set_disposition(session, hit_id, disposition, actor.username, notes, now)
            return Outcome(None, detail=disposition)

        self._gated(actor, Permission.DISPOSE_HIT, "hit.dispose", {"hit_id": hit_id}, work)

    # --- exports, downloads, holds, corrections -------------------------------------------------

    def export(self, actor: Actor, query: SearchQuery, purpose: str, fmt: sharing.ExportFormat,
               kind: str = "export") -> sharing.ExportFile:  # fmt: skip
        if kind not in ("export", "download", "print"):
            raise ValueError("kind is export, download or print")

        def work(session: Session, decision: Decision, now: datetime) -> Outcome:
            rows = self._all_matches(session, query)
            destroy_by = now + timedelta(days=self.policy.retention.downloads_destroy_days)
            manifest = {"exported_by": actor.username, "organization": actor.organization, "purpose":
                        decision.logged_purpose, "exported_utc": now.isoformat(), "destroy_by_utc":
                        destroy_by.isoformat(), "kind": kind, "agency": self.policy.agency.name}  # fmt: skip
            file = sharing.build_export(rows, fmt, manifest, lambda sha: self._image_or_none(session, sha))
            record = self._record_download(session, actor, kind, decision.logged_purpose, file, now, None)
            return Outcome(file, result_count=file.record_count, detail=f"download record {record.id}")

        return self._gated(actor, Permission.EXPORT, kind, query.data_elements(), work, purpose)  # type: ignore[no-any-return]

    def confirm_destroyed(self, actor: Actor, download_id: int) -> None:
        """The user confirms a download, print or export was destroyed (429.9)."""

        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            record = session.get(DownloadRecord, download_id)
            if record is None or (record.username != actor.username and not actor.is_console):
                raise NotFound(f"no download record {download_id} of yours")
            record.destroyed_utc, record.destroyed_by = now, actor.username
            return Outcome(None)

        self._gated(actor, Permission.CONFIRM_DESTROYED, "download.destroyed", {"download_id": download_id}, work)

    def overdue_downloads(self, actor: Actor) -> list[dict[str, Any]]:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            rows = audit.overdue_downloads(session, now)
            return Outcome(rows, result_count=len(rows))

        return self._gated(actor, Permission.READ_ACCESS_LOG, "downloads.overdue", {}, work)  # type: ignore[no-any-return]

    def hold(self, actor: Actor, read_id: str, case_number: str, reason: str, purpose: str) -> int:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            hold = create_hold(session, read_id, case_number, actor.username, reason, now=now)
            return Outcome(hold.id, result_count=1, detail=f"hold {hold.id}")

        return self._gated(actor, Permission.HOLD, "hold.create", {"read_id": read_id, "case": case_number}, work,  # type: ignore[no-any-return]
                           purpose)  # fmt: skip

    def release(self, actor: Actor, hold_id: int, reason: str, purpose: str) -> None:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            release_hold(session, hold_id, actor.username, reason, now=now)
            return Outcome(None)

        self._gated(actor, Permission.HOLD, "hold.release", {"hold_id": hold_id}, work, purpose)

    def correct_read(self, actor: Actor, read_id: str, new_plate: str, reason: str, purpose: str) -> None:
        """Correct a misread plate (429.8); the original stays in ``read_corrections`` and the log."""
        plate = normalize_plate(new_plate)
        if not 1 <= len(plate) <= 10:
            raise ValueError("a plate is 1-10 letters and digits")
        if not reason.strip():
            raise ValueError("say why the read is corrected")

        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            read, _node = self._read(session, read_id, lock=True)
            old = read.plate
            session.add(ReadCorrection(read_id=read_id, old_plate=old, new_plate=plate, corrected_by=actor.username,
                                       corrected_utc=now, reason=reason.strip()))  # fmt: skip
            read.plate = plate
            textindex.add_text(session, read, plate)
            return Outcome(None, result_count=1, query={"read_id": read_id, "old_plate": old, "new_plate": plate})

        self._gated(actor, Permission.CORRECT_READ, "read.correct", {"read_id": read_id}, work, purpose)

    # --- users, devices (the ALPR Administrator) ------------------------------------------------

    def create_user(self, actor: Actor, username: str, full_name: str, organization: str, classification: str,
                    roles: list[str], password: str | None = None) -> accounts.NewAccount:  # fmt: skip
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            new = accounts.create_user(session, username, full_name, organization, classification, roles,
                                       actor.username, now, self.issuer, self.totp_vault, password)  # fmt: skip
            return Outcome(new, detail=f"roles {','.join(roles)}; classification {classification}")

        return self._gated(actor, Permission.MANAGE_USERS, "user.create", {"user": username}, work)  # type: ignore[no-any-return]

    def record_training(self, actor: Actor, username: str, completed: datetime) -> None:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            accounts.record_training(session, username, completed, actor.username, now)
            return Outcome(None, detail=f"training completed {completed.date().isoformat()}")

        self._gated(actor, Permission.MANAGE_USERS, "user.training", {"user": username}, work)

    def approve_user(self, actor: Actor, username: str) -> None:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            accounts.approve(session, username, actor.username, now, self.policy)
            return Outcome(None, detail=f"approved for {self.policy.access.approval_review_days} days")

        self._gated(actor, Permission.MANAGE_USERS, "user.approve", {"user": username}, work)

    def set_classification(self, actor: Actor, username: str, classification: str) -> bool:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            ended = accounts.set_classification(session, username, classification, self.policy)
            return Outcome(ended, detail=f"classification {classification}" + ("; access ended" if ended else ""))

        return self._gated(actor, Permission.MANAGE_USERS, "user.classify", {"user": username}, work)  # type: ignore[no-any-return]

    def set_roles(self, actor: Actor, username: str, roles: list[str]) -> None:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            accounts.set_roles(session, username, roles)
            return Outcome(None, detail=f"roles {','.join(roles)}")

        self._gated(actor, Permission.MANAGE_USERS, "user.roles", {"user": username}, work)

    def suspend_user(self, actor: Actor, username: str, reason: str) -> None:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            accounts.suspend(session, username, reason, now)
            return Outcome(None, detail=reason)

        self._gated(actor, Permission.MANAGE_USERS, "user.suspend", {"user": username}, work)

    def reactivate_user(self, actor: Actor, username: str) -> None:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            accounts.reactivate(session, username, now)
            return Outcome(None, detail="re-activated; training required before access")

        self._gated(actor, Permission.MANAGE_USERS, "user.reactivate", {"user": username}, work)

    def delete_user(self, actor: Actor, username: str) -> None:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            accounts.delete_user(session, username)
            return Outcome(None, detail="account deleted; log entries kept")

        self._gated(actor, Permission.MANAGE_USERS, "user.delete", {"user": username}, work)

    def list_users(self, actor: Actor, authorized_only: bool = False) -> list[dict[str, Any]]:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            users = (accounts.authorized_users(session, now, self.policy) if authorized_only
                     else list(session.execute(select(User).order_by(User.username)).scalars()))  # fmt: skip
            rows = [self._user_row(u, now) for u in users]
            return Outcome(rows, result_count=len(rows))

        return self._gated(actor, Permission.MANAGE_USERS, "user.list", {"authorized_only": authorized_only}, work)  # type: ignore[no-any-return]

    def _user_row(self, user: User, now: datetime) -> dict[str, Any]:
        blockers = accounts.access_blockers(user, now, self.policy)
        trained, approved = user.training_completed_utc, user.approved_utc
        training_expires = trained + self.policy.training_valid if trained else None
        approval_expires = approved + self.policy.approval_valid if approved else None
        return {"username": user.username, "full_name": user.full_name, "organization": user.organization,
                "classification": user.job_classification, "roles": user.roles, "status": user.status,
                "training_expires_utc": training_expires.isoformat() if training_expires else None,
                "approval_expires_utc": approval_expires.isoformat() if approval_expires else None,
                "last_access_utc": user.last_access_utc.isoformat() if user.last_access_utc else None,
                "may_access_alpr_data": not blockers, "blockers": blockers}  # fmt: skip

    def register_device(self, actor: Actor, name: str, description: str) -> str:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            return Outcome(accounts.register_device(session, name, description, actor.username, now))

        return self._gated(actor, Permission.MANAGE_DEVICES, "device.register", {"device": name}, work)  # type: ignore[no-any-return]

    def revoke_device(self, actor: Actor, name: str) -> None:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            accounts.revoke_device(session, name, actor.username, now)
            return Outcome(None)

        self._gated(actor, Permission.MANAGE_DEVICES, "device.revoke", {"device": name}, work)

    def list_devices(self, actor: Actor) -> list[dict[str, Any]]:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            devices = session.execute(select(Device).order_by(Device.name)).scalars()
            rows = [{"name": d.name, "description": d.description, "registered_by": d.registered_by,
                     "registered_utc": d.registered_utc.isoformat(), "revoked": d.revoked_utc is not None,
                     "last_used_utc": d.last_used_utc.isoformat() if d.last_used_utc else None}
                    for d in devices]  # fmt: skip
            return Outcome(rows, result_count=len(rows))

        return self._gated(actor, Permission.MANAGE_DEVICES, "device.list", {}, work)  # type: ignore[no-any-return]

    def list_nodes(self, actor: Actor) -> list[dict[str, Any]]:
        """Edge nodes with last contact and health, for node operators (no reads in it)."""

        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            rows = [{"name": n.name, "enrolled_utc": n.enrolled_utc.isoformat(), "revoked": n.revoked_utc is not None,
                     "last_seen_utc": n.last_seen_utc.isoformat() if n.last_seen_utc else None,
                     "health": n.last_health} for n in list_nodes(session)]  # fmt: skip
            return Outcome(rows, result_count=len(rows))

        return self._gated(actor, Permission.MANAGE_NODES, "node.list", {}, work)  # type: ignore[no-any-return]

    # --- sharing (Civ. Code 1798.90.55(b)) ------------------------------------------------------

    def add_agency(self, actor: Actor, name: str, kind: str, contact: str) -> int:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            return Outcome(sharing.add_agency(session, name, kind, contact, actor.username, now).id, detail=kind)

        return self._gated(actor, Permission.MANAGE_AGENCIES, "agency.add", {"agency": name}, work)  # type: ignore[no-any-return]

    def list_agencies(self, actor: Actor) -> list[dict[str, Any]]:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            rows = [{"id": a.id, "name": a.name, "kind": a.kind, "contact": a.contact}
                    for a in session.execute(select(Agency).order_by(Agency.name)).scalars()]  # fmt: skip
            return Outcome(rows, result_count=len(rows))

        return self._gated(actor, Permission.MANAGE_AGENCIES, "agency.list", {}, work)  # type: ignore[no-any-return]

    def request_share(self, actor: Actor, agency_name: str, contact: str, purpose: str, need: str,
                      query: SearchQuery) -> int:  # fmt: skip
        """Record another agency's request; refused outright unless it is a California public agency."""
        if not contact.strip() or not need.strip():
            raise ValueError("a share request records the requesting contact and their need for the information")

        def work(session: Session, decision: Decision, now: datetime) -> Outcome:
            agency = sharing.get_agency(session, agency_name)
            refusal = sharing.sharing_refusal(agency)
            share = ShareRequest(agency_id=agency.id, contact=contact.strip(), purpose=decision.logged_purpose,
                                 need=need.strip(), query=query.data_elements(), requested_by=actor.username,
                                 requested_utc=now, status="refused" if refusal else "pending",
                                 decided_by="policy" if refusal else None, decided_utc=now if refusal else None,
                                 decision_note=refusal)  # fmt: skip
            session.add(share)
            session.flush()
            if refusal:
                return Outcome(share.id, detail=f"share request {share.id}: {refusal}", refused=True)
            return Outcome(share.id, detail=f"share request {share.id} to {agency.name}")

        return self._gated(actor, Permission.REQUEST_SHARE, "share.request",  # type: ignore[no-any-return]
                           query.data_elements() | {"agency": agency_name}, work, purpose)  # fmt: skip

    def decide_share(self, actor: Actor, share_id: int, approve: bool, note: str) -> None:
        """The administrator verifies the purpose, considers the need, and approves or refuses (429.7)."""
        if not note.strip():
            raise ValueError("record what was verified (purpose and need) in the note")

        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            share = sharing.get_share(session, share_id, lock=True)
            if share.status != "pending":
                raise ValueError(f"share request {share_id} is {share.status}")
            agency = session.get(Agency, share.agency_id)
            assert agency is not None
            if approve and (refusal := sharing.sharing_refusal(agency)):
                raise ValueError(refusal)
            share.status = "approved" if approve else "refused"
            share.decided_by, share.decided_utc, share.decision_note = actor.username, now, note.strip()
            return Outcome(None, detail=f"{share.status}: {agency.name}")

        self._gated(actor, Permission.DECIDE_SHARE, "share.decide", {"share_id": share_id}, work)

    def transfer_share(self, actor: Actor, share_id: int, fmt: sharing.ExportFormat) -> sharing.ExportFile:
        """Produce an approved share's export, recording the transfer (429.7) and its destroy-by date."""
        with self.sessions() as session:
            share = sharing.get_share(session, share_id)
            purpose = share.purpose
            query = SearchQuery.model_validate(share.query)

        def work(session: Session, decision: Decision, now: datetime) -> Outcome:
            share = sharing.get_share(session, share_id, lock=True)
            if share.status != "approved":
                raise ValueError(f"share request {share_id} is {share.status}, not approved")
            agency = session.get(Agency, share.agency_id)
            assert agency is not None
            if refusal := sharing.sharing_refusal(agency):
                raise ValueError(refusal)
            rows = self._all_matches(session, query)
            destroy_by = now + timedelta(days=self.policy.retention.downloads_destroy_days)
            manifest = {"shared_by": self.policy.agency.name, "shared_with": agency.name, "share_request": share.id,
                        "purpose": share.purpose, "approved_by": share.decided_by, "transferred_by": actor.username,
                        "exported_utc": now.isoformat(), "destroy_by_utc": destroy_by.isoformat()}  # fmt: skip
            file = sharing.build_export(rows, fmt, manifest, lambda sha: self._image_or_none(session, sha))
            share.status, share.transferred_by, share.transferred_utc = "transferred", actor.username, now
            share.record_count, share.export_sha256 = file.record_count, file.sha256
            self._record_download(session, actor, "share", decision.logged_purpose, file, now, share.id)
            return Outcome(file, result_count=file.record_count, detail=f"to {agency.name}, sha256 {file.sha256}")

        return self._gated(actor, Permission.TRANSFER_SHARE, "share.transfer",  # type: ignore[no-any-return]
                           {"share_id": share_id} | query.data_elements(), work, purpose)  # fmt: skip

    def list_shares(self, actor: Actor) -> list[dict[str, Any]]:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            rows = audit.shares_between(session, datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
            return Outcome(rows, result_count=len(rows))

        return self._gated(actor, Permission.DECIDE_SHARE, "share.list", {}, work)  # type: ignore[no-any-return]

    # --- the access log and audits --------------------------------------------------------------

    def verify_log(self) -> VerifyResult:
        """The chain recomputed, and checked against the chain heads that stored audit reports saw."""
        with self.sessions() as session:
            result = self.log.verify(session)
            problems = list(result.problems)
            seen = session.execute(select(AuditReport.id, AuditReport.chain_head_seq, AuditReport.chain_head_hash))
            for report_id, seq, expected in seen:
                entry = session.get(AccessLogEntry, seq)
                if entry is not None and entry.entry_hash != expected:
                    problems.append(f"entry {seq}: differs from what audit report {report_id} saw (chain rewritten)")
        return VerifyResult(result.entries_checked, result.head_seq, tuple(problems))

    def access_log(self, actor: Actor, start: datetime, end: datetime, limit: int = 200) -> list[dict[str, Any]]:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            entries = session.execute(
                select(AccessLogEntry).where(AccessLogEntry.logged_utc >= start, AccessLogEntry.logged_utc < end)
                .order_by(AccessLogEntry.seq).limit(max(1, min(limit, 1000)))
            ).scalars()  # fmt: skip
            rows = [audit.entry_view(e) | {"outcome": e.outcome, "result_count": e.result_count} for e in entries]
            return Outcome(rows, result_count=len(rows))

        return self._gated(actor, Permission.READ_ACCESS_LOG, "log.read",  # type: ignore[no-any-return]
                           {"from": start.isoformat(), "to": end.isoformat()}, work)  # fmt: skip

    def run_audit(self, actor: Actor, start: datetime, end: datetime) -> dict[str, Any]:
        if start >= end:
            raise ValueError("the audit period's start must be before its end")
        chain = self.verify_log()

        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            content = audit.build_report(session, start, end, now, self.policy, chain)
            digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
            head_seq, head_hash = self.log.head(session)
            report = AuditReport(period_from_utc=start, period_to_utc=end, generated_by=actor.username,
                                 generated_utc=now, content=content, sha256=digest, chain_head_seq=head_seq,
                                 chain_head_hash=head_hash, retain_until_utc=now + timedelta(
                                     days=self.policy.retention.audit_documents_days))  # fmt: skip
            session.add(report)
            session.flush()
            return Outcome(self._report_view(report), detail=f"audit report {report.id}")

        return self._gated(actor, Permission.RUN_AUDIT, "audit.run",  # type: ignore[no-any-return]
                           {"from": start.isoformat(), "to": end.isoformat()}, work)  # fmt: skip

    def approve_audit(self, actor: Actor, report_id: int, note: str) -> dict[str, Any]:
        def work(session: Session, _d: Decision, now: datetime) -> Outcome:
            report = self._report(session, report_id)
            if report.approved_utc is not None:
                raise ValueError(f"audit report {report_id} was approved already")
            if report.generated_by == actor.username:
                raise ValueError("an audit is approved by someone other than who performed it (429.8)")
            report.approved_by, report.approved_utc, report.approval_note = actor.username, now, note.strip()
            return Outcome(self._report_view(report))

        return self._gated(actor, Permission.APPROVE_AUDIT, "audit.approve", {"report_id": report_id}, work)  # type: ignore[no-any-return]

    def get_audit(self, actor: Actor, report_id: int) -> dict[str, Any]:
        def work(session: Session, _d: Decision, _now: datetime) -> Outcome:
            return Outcome(self._report_view(self._report(session, report_id)))

        approver = Permission.APPROVE_AUDIT.value in _perms(actor)
        permission = Permission.APPROVE_AUDIT if approver else Permission.RUN_AUDIT
        return self._gated(actor, permission, "audit.view", {"report_id": report_id}, work)  # type: ignore[no-any-return]

    @staticmethod
    def _report(session: Session, report_id: int) -> AuditReport:
        report = session.get(AuditReport, report_id)
        if report is None:
            raise NotFound(f"no audit report {report_id}")
        return report

    @staticmethod
    def _report_view(report: AuditReport) -> dict[str, Any]:
        return {"id": report.id, "generated_by": report.generated_by, "generated_utc": report.generated_utc.isoformat(),
                "approved_by": report.approved_by,
                "approved_utc": report.approved_utc.isoformat() if report.approved_utc else None,
                "approval_note": report.approval_note, "sha256": report.sha256,
                "chain_head_seq": report.chain_head_seq, "retain_until_utc": report.retain_until_utc.isoformat(),
                "report": report.content}  # fmt: skip

    # --- public transparency --------------------------------------------------------------------

    def transparency(self, days: int = 30) -> dict[str, Any]:
        """Aggregate figures an agency publishes about its ALPR use; no plate, person or place in them."""
        now = self.clock()
        since = now - timedelta(days=days)
        with self.sessions() as session:

            def count(statement: Any) -> int:
                return int(session.execute(statement).scalar_one())

            searches = select(func.count()).select_from(AccessLogEntry).where(
                AccessLogEntry.action == "search", AccessLogEntry.outcome == "allowed",
                AccessLogEntry.logged_utc >= since)  # fmt: skip
            shared_with = session.execute(
                select(Agency.name).join(ShareRequest, ShareRequest.agency_id == Agency.id)
                .where(ShareRequest.status == "transferred").distinct().order_by(Agency.name)
            ).scalars().all()  # fmt: skip
            return {
                "agency": self.policy.agency.name,
                "period_days": days,
                "as_of_utc": now.isoformat(),
                "cameras_enrolled": count(select(func.count()).select_from(Node).where(Node.revoked_utc.is_(None))),
                "reads": count(select(func.count()).select_from(Read).where(Read.received_utc >= since)),
                "hits": count(select(func.count()).select_from(Hit).where(Hit.created_utc >= since)),
                "hits_by_disposition": {
                    disposition: int(n)
                    for disposition, n in session.execute(
                        select(Hit.disposition, func.count()).where(Hit.created_utc >= since).group_by(Hit.disposition)
                    )
                },
                "searches": count(searches),
                "authorized_users": len(accounts.authorized_users(session, now, self.policy)),
                "retention_days": {
                    "reads": self.policy.retention.reads_days,
                    "hot_lists": self.policy.retention.hotlist_days,
                },  # fmt: skip
                "agencies_shared_with": list(shared_with),
            }

    # --- scheduled upkeep -----------------------------------------------------------------------

    def run_upkeep(self) -> dict[str, int]:
        """Suspend inactive accounts; drop access-log entries and audit reports past their retention."""
        now = self.clock()
        system = Actor("system:upkeep", self.policy.agency.name, "hub", "local", None)
        with self.sessions.begin() as session:
            suspended = accounts.suspend_inactive(session, now, self.policy)
            for name in suspended:
                self._append(session, system, "user.suspend", "allowed", None, {"user": name}, None, "inactivity", now)
            pruned = self.log.prune(session, now - timedelta(days=self.policy.retention.access_log_days))
            result = session.execute(delete(AuditReport).where(AuditReport.retain_until_utc < now))
            reports = int(getattr(result, "rowcount", 0) or 0)
            shared = self._prune_share_records(session, now)
            if pruned or reports or shared:
                detail = f"past retention: {pruned} log entries, {reports} audit reports, {shared} share records"
                self._append(session, system, "retention", "allowed", None, {}, None, detail, now)
        if suspended:
            logger.info("suspended %d inactive accounts", len(suspended))
        return {
            "suspended": len(suspended),
            "log_entries_pruned": pruned,
            "audit_reports_deleted": reports,
            "share_records_deleted": shared,
        }

    def _prune_share_records(self, session: Session, now: datetime) -> int:
        """Records of transfers (429.7) and destroyed downloads, once past their retention period."""
        cutoff = now - timedelta(days=self.policy.retention.share_records_days)
        closed = ShareRequest.status.in_(("refused", "transferred"))
        old_shares = select(ShareRequest.id).where(closed, ShareRequest.requested_utc < cutoff)
        downloads = session.execute(delete(DownloadRecord).where(
            DownloadRecord.destroyed_utc.is_not(None), DownloadRecord.created_utc < cutoff,
            DownloadRecord.share_request_id.is_(None) | DownloadRecord.share_request_id.in_(old_shares),
        ))  # fmt: skip
        still_referenced = select(DownloadRecord.share_request_id).where(DownloadRecord.share_request_id.is_not(None))
        shares = session.execute(delete(ShareRequest).where(
            closed, ShareRequest.requested_utc < cutoff, ShareRequest.id.not_in(still_referenced)
        ))  # fmt: skip
        return int(getattr(downloads, "rowcount", 0) or 0) + int(getattr(shares, "rowcount", 0) or 0)

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _read(session: Session, read_id: str, lock: bool = False) -> tuple[Read, str]:
        statement = select(Read, Node.name).join(Node, Node.id == Read.node_id).where(Read.read_id == read_id)
        row = session.execute(statement.with_for_update() if lock else statement).first()
        if row is None:
            raise NotFound("no such read")
        return row[0], row[1]

    @staticmethod
    def _corrections(session: Session, read_id: str) -> list[dict[str, Any]]:
        rows = session.execute(select(ReadCorrection).where(ReadCorrection.read_id == read_id)
                               .order_by(ReadCorrection.id)).scalars()  # fmt: skip
        return [{"old_plate": c.old_plate, "new_plate": c.new_plate, "by": c.corrected_by,
                 "utc": c.corrected_utc.isoformat(), "reason": c.reason} for c in rows]  # fmt: skip

    @staticmethod
    def _all_matches(session: Session, query: SearchQuery) -> list[tuple[Read, str]]:
        rows, total = search_reads(session, query.model_copy(update={"page": 1, "page_size": MAX_EXPORT_RECORDS}))
        if total > MAX_EXPORT_RECORDS:
            raise ValueError(f"{total} reads match: narrow the search to at most {MAX_EXPORT_RECORDS} to export")
        return rows

    def _image_or_none(self, session: Session, sha256: str) -> bytes | None:
        try:
            return self.images.get(session, sha256)
        except LookupError:
            return None

    def _record_download(self, session: Session, actor: Actor, kind: str, purpose: str, file: sharing.ExportFile,
                         now: datetime, share_id: int | None) -> DownloadRecord:  # fmt: skip
        record = DownloadRecord(username=actor.username, organization=actor.organization, kind=kind, purpose=purpose,
                                record_count=file.record_count, sha256=file.sha256, share_request_id=share_id,
                                created_utc=now, destroy_by_utc=now + timedelta(
                                    days=self.policy.retention.downloads_destroy_days))  # fmt: skip
        session.add(record)
        session.flush()
        return record


def _perms(actor: Actor) -> set[str]:
    return {p.value for p in permissions(actor.roles)}
