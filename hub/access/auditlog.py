"""The access log: append-only, each entry HMAC-chained to the one before (policy 429.10).

Entry ``n`` stores ``entry_hash = HMAC(key, prev_hash || canonical(entry n))`` with ``prev_hash`` the
hash of entry ``n - 1``. :meth:`AccessLog.verify` recomputes the chain in ``seq`` order, so an edited
entry (its hash no longer matches), a deleted one (a gap in ``seq`` and a broken link) and reordered
ones (links broken) are all found, as is a cut at the newest end (the chain row's head no longer
matches). The key lives in a file beside the hub's other keys, not in the database: someone who can
write to the database cannot recompute the hashes. Retention removes the oldest entries only, moving
the chain's base forward, so what is left still verifies.

Appends are serialised on the single ``access_log_chain`` row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite's ``BEGIN IMMEDIATE`` already holds the write lock), so several hub processes keep one chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hub.access.models import AccessLogChain, AccessLogEntry

GENESIS_HASH = "0" * 64
CHAIN_ROW_ID = 1


@dataclass(frozen=True, slots=True)
class LogEvent:
    """What happened, by whom, for what: everything an entry records except its place in the chain."""

    username: str
    organization: str
    action: str
    outcome: str  # allowed | denied | error
    purpose: str = ""
    purpose_kind: str = "none"
    query: Mapping[str, Any] = field(default_factory=dict)
    result_count: int | None = None
    client_address: str = ""
    device: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    entries_checked: int
    head_seq: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _canonical(entry: AccessLogEntry) -> bytes:
    fields = {
        "seq": entry.seq,
        "logged_utc": entry.logged_utc.isoformat(timespec="microseconds"),
        "username": entry.username,
        "organization": entry.organization,
        "action": entry.action,
        "outcome": entry.outcome,
        "purpose": entry.purpose,
        "purpose_kind": entry.purpose_kind,
        "query": entry.query,
        "result_count": entry.result_count,
        "client_address": entry.client_address,
        "device": entry.device,
        "detail": entry.detail,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class AccessLog:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the access-log key must be at least 16 bytes")
        self._key = key

    def derived_key(self, label: bytes) -> bytes:
        """A 32-byte key for another purpose (``label``), from the same secret file: one key file to guard."""
        return hmac.new(self._key, b"alpr-hub derived key:" + label, hashlib.sha256).digest()

    def _hash(self, prev_hash: str, entry: AccessLogEntry) -> str:
        return hmac.new(self._key, prev_hash.encode("ascii") + b"\n" + _canonical(entry), hashlib.sha256).hexdigest()

    @staticmethod
    def _chain(session: Session, lock: bool) -> AccessLogChain:
        statement = select(AccessLogChain).where(AccessLogChain.id == CHAIN_ROW_ID)
        chain = session.execute(statement.with_for_update() if lock else statement).scalar_one_or_none()
        if chain is None:  # made by the migration; only a hand-damaged database lacks it
            raise RuntimeError("the access-log chain row is missing: the access log cannot be verified")
        return chain

    def append(self, session: Session, event: LogEvent, at: datetime) -> AccessLogEntry:
        """Add ``event`` at the chain's head, in the caller's transaction (it commits with the action)."""
        chain = self._chain(session, lock=True)
        entry = AccessLogEntry(
            seq=chain.head_seq + 1,
            logged_utc=at,
            username=event.username[:64],
            organization=event.organization[:128],
            action=event.action[:32],
            outcome=event.outcome,
            purpose=event.purpose,
            purpose_kind=event.purpose_kind,
            query=dict(event.query),
            result_count=event.result_count,
            client_address=event.client_address[:64],
            device=event.device[:64],
            detail=event.detail,
            prev_hash=chain.head_hash,
        )
        entry.entry_hash = self._hash(chain.head_hash, entry)
        session.add(entry)
        chain.head_seq, chain.head_hash = entry.seq, entry.entry_hash
        session.flush()
        return entry

    def verify(self, session: Session, batch: int = 2000) -> VerifyResult:
        """Recompute the whole chain; every problem found is named (entry seq and what is wrong)."""
        chain = self._chain(session, lock=False)
        problems: list[str] = []
        expected_seq, prev_hash, checked = chain.base_seq + 1, chain.base_hash, 0
        rows = session.execute(select(AccessLogEntry).order_by(AccessLogEntry.seq).execution_options(yield_per=batch))
        for entry in rows.scalars():
            checked += 1
            if entry.seq != expected_seq:
                problems.append(f"entry {entry.seq}: expected entry {expected_seq} here (entries missing or moved)")
            if entry.prev_hash != prev_hash:
                problems.append(f"entry {entry.seq}: does not link to the entry before it (deleted or reordered)")
            if not hmac.compare_digest(self._hash(entry.prev_hash, entry), entry.entry_hash):
                problems.append(f"entry {entry.seq}: contents do not match its hash (edited)")
            expected_seq, prev_hash = entry.seq + 1, entry.entry_hash
        if expected_seq - 1 != chain.head_seq or prev_hash != chain.head_hash:
            problems.append(f"chain head is entry {chain.head_seq} but the log ends at entry {expected_seq - 1}")
        return VerifyResult(checked, chain.head_seq, tuple(problems))

    def head(self, session: Session) -> tuple[int, str]:
        chain = self._chain(session, lock=False)
        return chain.head_seq, chain.head_hash

    def prune(self, session: Session, before: datetime) -> int:
        """Delete the oldest entries logged before ``before`` (retention); the chain's base moves past them."""
        chain = self._chain(session, lock=True)
        last = session.execute(
            select(func.max(AccessLogEntry.seq)).where(AccessLogEntry.logged_utc < before)
        ).scalar_one_or_none()
        if last is None:
            return 0
        boundary = session.get(AccessLogEntry, last)
        assert boundary is not None
        # Entries are appended in time order, so everything up to ``last`` is old enough.
        result = session.execute(delete(AccessLogEntry).where(AccessLogEntry.seq <= last))
        deleted = getattr(result, "rowcount", 0)
        chain.base_seq, chain.base_hash = boundary.seq, boundary.entry_hash
        session.flush()
        return int(deleted or 0)
