"""The retention job: ALPR data is kept for a set period and then purged, unless held as evidence.

What is kept, and for how long (:class:`RetentionPolicy`):

- a **read** (with its candidate texts) is purged once its ``best_utc`` is older than ``reads_days``;
- a **hit** is purged once its ``created_utc`` is older than ``hits_days`` (>= ``reads_days``). A hit
  refers to its read, so a read with a hit is kept until the hit itself expires: one run purges hits
  first, then reads that are past their period and have no hit left;
- an **image** follows its reads: once no read refers to it, it goes (and its file on disk), so a crop
  shared by a read still kept stays;
- an **evidence hold** (:func:`create_hold`) keeps its read, with the read's hits and images, past
  every period until the hold is released (:func:`release_hold`).

Holds are an audit trail that outlives the reads they kept: they are never deleted, and record who
kept what, for which case, and why. ``evidence_holds.read_id`` is a plain indexed string, not a
foreign key, so a released hold no longer keeps its read: a read already past its period is purged
on the next run after the release (unless another active hold or a live hit keeps it), while the
hold row remains.

Each run works in batches (``batch_size`` ids per transaction, rows locked ``FOR UPDATE`` on
PostgreSQL so a concurrent hold or hit waits or fails cleanly), records a :class:`RetentionRun` row
(dry runs too, flagged) and logs one line of counts, never a plate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from sqlalchemy import ColumnElement, delete, exists, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from hub import textindex
from hub.models import EvidenceHold, Hit, Image, Read, ReadCandidateText, RetentionRun, utcnow
from hub.storage import ImageStore, no_read_refers_to_image

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE: Final = 5000
"""Ids per transaction: a big purge never holds one giant transaction (or hits parameter limits)."""

_CASE_NUMBER_MAX = 64
_USER_MAX = 64


class RetentionError(Exception):
    """Base class for retention's domain errors."""


class UnknownReadError(RetentionError, LookupError):
    """No read with that id."""


class UnknownHoldError(RetentionError, LookupError):
    """No evidence hold with that id."""


class HoldAlreadyReleasedError(RetentionError):
    """The evidence hold was released before."""


class InvalidHoldError(RetentionError, ValueError):
    """A hold or release without its case number, user or reason."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long reads and hits are kept, in days; images follow their reads."""

    reads_days: int = 60
    hits_days: int = 365

    def __post_init__(self) -> None:
        if self.reads_days < 1:
            raise ValueError(f"reads_days must be at least 1, not {self.reads_days}")
        if self.hits_days < self.reads_days:
            raise ValueError(
                f"hits_days ({self.hits_days}) must be >= reads_days ({self.reads_days}): a hit refers to its read"
            )


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one run purged (or, for a dry run, would purge) and what it kept past its period."""

    run_id: int
    dry_run: bool
    started_utc: datetime
    finished_utc: datetime
    reads_cutoff_utc: datetime
    hits_cutoff_utc: datetime
    reads_purged: int = 0
    candidate_texts_purged: int = 0
    hits_purged: int = 0
    images_purged: int = 0
    held_reads_kept: int = 0
    """Reads past their period kept by an active evidence hold."""
    hit_reads_kept: int = 0
    """Reads past their period kept because a hit on them has not expired."""


# --- predicates -------------------------------------------------------------------------------


def _active_hold(read_id: InstrumentedAttribute[str]) -> ColumnElement[bool]:
    return exists().where(EvidenceHold.read_id == read_id, EvidenceHold.released_utc.is_(None))


def _expired_hits(hits_cutoff: datetime) -> ColumnElement[bool]:
    """Hits past ``hits_days`` whose read is not under an active hold (a hold keeps the read's hits)."""
    return (Hit.created_utc < hits_cutoff) & ~_active_hold(Hit.read_id)


def _purgeable_reads(reads_cutoff: datetime, hits_cutoff: datetime | None) -> ColumnElement[bool]:
    """Reads to purge: past ``reads_days``, not held, and without a hit.

    ``hits_cutoff`` None: no hit at all (a real run, after expired hits are gone). Given: no hit that
    survives this run (a dry run, where expired hits are still there).
    """
    if hits_cutoff is None:
        has_hit = exists().where(Hit.read_id == Read.read_id)
    else:
        has_hit = exists().where(Hit.read_id == Read.read_id, Hit.created_utc >= hits_cutoff)
    return (Read.best_utc < reads_cutoff) & ~_active_hold(Read.read_id) & ~has_hit


def _count(session: Session, model: type[object], condition: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(model).where(condition)) or 0


# --- the job ----------------------------------------------------------------------------------


class RetentionJob:
    """Purges what the policy no longer allows to keep; see the module docstring for the rules."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        images: ImageStore,
        policy: RetentionPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.sessions = sessions
        self.images = images
        self.policy = policy or RetentionPolicy()
        self.clock = clock
        self.batch_size = batch_size

    def run(self, dry_run: bool = False) -> RetentionReport:
        """Purge (or with ``dry_run`` only count) expired hits, reads and images; record and log the run."""
        started = self.clock()
        if started.tzinfo is None or started.utcoffset() is None:
            raise ValueError("the retention clock must return timezone-aware times")
        t0 = time.monotonic()
        reads_cutoff = started - timedelta(days=self.policy.reads_days)
        hits_cutoff = started - timedelta(days=self.policy.hits_days)
        with self.sessions.begin() as session:
            row = RetentionRun(started_utc=started, dry_run=dry_run)
            session.add(row)
            session.flush()
            run_id = row.id
        counts: dict[str, int] = {}
        succeeded = False
        try:
            if dry_run:
                counts.update(self._count_only(reads_cutoff, hits_cutoff))
            else:
                self._purge(reads_cutoff, hits_cutoff, counts)
            succeeded = True
        finally:  # a failed run keeps finished_utc NULL, with the counts it got to
            finished = self.clock()
            with self.sessions.begin() as session:
                row = session.get_one(RetentionRun, run_id)
                row.reads_purged = counts.get("reads_purged", 0)
                row.hits_purged = counts.get("hits_purged", 0)
                row.images_purged = counts.get("images_purged", 0)
                row.held_reads_kept = counts.get("held_reads_kept", 0)
                row.entries_purged = 0  # hot-list entries have their own lifecycle (hub.hotlists)
                if succeeded:
                    row.finished_utc = finished
        report = RetentionReport(
            run_id=run_id,
            dry_run=dry_run,
            started_utc=started,
            finished_utc=finished,
            reads_cutoff_utc=reads_cutoff,
            hits_cutoff_utc=hits_cutoff,
            **counts,
        )
        self._log(report, time.monotonic() - t0)
        return report

    # --- dry run ---

    def _count_only(self, reads_cutoff: datetime, hits_cutoff: datetime) -> dict[str, int]:
        purgeable = _purgeable_reads(reads_cutoff, hits_cutoff)
        kept = ~purgeable
        # An image goes when every read referring to it goes (or none refers to it already).
        images_going = no_read_refers_to_image(kept)
        old_unheld = (Read.best_utc < reads_cutoff) & ~_active_hold(Read.read_id)
        with self.sessions() as session:
            return {
                "reads_purged": _count(session, Read, purgeable),
                "candidate_texts_purged": int(
                    session.scalar(select(textindex.text_count(Read.search_texts)).where(purgeable)) or 0
                ),
                "hits_purged": _count(session, Hit, _expired_hits(hits_cutoff)),
                "images_purged": _count(session, Image, images_going),
                **self._kept(session, reads_cutoff, old_unheld, hits_cutoff),
            }

    def _kept(
        self, session: Session, reads_cutoff: datetime, old_unheld: ColumnElement[bool], hits_cutoff: datetime | None
    ) -> dict[str, int]:
        if hits_cutoff is None:
            has_hit = exists().where(Hit.read_id == Read.read_id)
        else:
            has_hit = exists().where(Hit.read_id == Read.read_id, Hit.created_utc >= hits_cutoff)
        return {
            "held_reads_kept": _count(session, Read, (Read.best_utc < reads_cutoff) & _active_hold(Read.read_id)),
            "hit_reads_kept": _count(session, Read, old_unheld & has_hit),
        }

    # --- real run ---

    def _purge(self, reads_cutoff: datetime, hits_cutoff: datetime, counts: dict[str, int]) -> None:
        counts["hits_purged"] = self._purge_hits(hits_cutoff)
        with self.sessions() as session:
            old_unheld = (Read.best_utc < reads_cutoff) & ~_active_hold(Read.read_id)
            counts.update(self._kept(session, reads_cutoff, old_unheld, None))
        counts["reads_purged"], counts["candidate_texts_purged"] = self._purge_reads(reads_cutoff)
        with self.sessions.begin() as session:  # commits straight after, as delete_unreferenced asks
            counts["images_purged"] = self.images.delete_unreferenced(session)

    def _purge_hits(self, hits_cutoff: datetime) -> int:
        expired = _expired_hits(hits_cutoff)
        total = 0
        while True:
            with self.sessions.begin() as session:
                ids = list(
                    session.scalars(
                        select(Hit.id).where(expired).order_by(Hit.id).limit(self.batch_size).with_for_update(of=Hit)
                    )
                )
                if not ids:
                    return total
                deleted = session.execute(
                    delete(Hit).where(Hit.id.in_(ids)).returning(Hit.id),
                    execution_options={"synchronize_session": False},
                ).all()
            total += len(deleted)
            if len(ids) < self.batch_size or not deleted:
                return total

    def _purge_reads(self, reads_cutoff: datetime) -> tuple[int, int]:
        purgeable = _purgeable_reads(reads_cutoff, None)
        reads = texts = 0
        while True:
            with self.sessions.begin() as session:
                ids = list(
                    session.scalars(
                        select(Read.read_id)
                        .where(purgeable)
                        .order_by(Read.best_utc, Read.read_id)
                        .limit(self.batch_size)
                        .with_for_update(of=Read)
                    )
                )
                if not ids:
                    return reads, texts
                # Explicit rather than relying on ON DELETE CASCADE. Only PostgreSQL has text rows; SQLite's
                # FTS entries go with the reads, by trigger.
                if textindex.uses_rows(session.get_bind().dialect):
                    session.execute(
                        delete(ReadCandidateText).where(ReadCandidateText.read_id.in_(ids)),
                        execution_options={"synchronize_session": False},
                    )
                deleted = session.execute(
                    delete(Read).where(Read.read_id.in_(ids)).returning(Read.read_id, Read.search_texts),
                    execution_options={"synchronize_session": False},
                ).all()
            reads += len(deleted)
            texts += sum(len(textindex.split_texts(joined)) for _read_id, joined in deleted)
            if len(ids) < self.batch_size or not deleted:
                return reads, texts

    def _log(self, report: RetentionReport, seconds: float) -> None:
        logger.info(
            "retention run %s%s: purged %s reads, %s candidate texts, %s hits, %s images; kept %s held reads,"
            " %s reads with live hits (reads_days=%s, hits_days=%s) in %.2f s",
            report.run_id,
            " (dry run, nothing deleted)" if report.dry_run else "",
            report.reads_purged,
            report.candidate_texts_purged,
            report.hits_purged,
            report.images_purged,
            report.held_reads_kept,
            report.hit_reads_kept,
            self.policy.reads_days,
            self.policy.hits_days,
            seconds,
        )


# --- evidence holds ---------------------------------------------------------------------------


def _required(value: str, what: str, max_length: int | None = None) -> str:
    value = value.strip()
    if not value:
        raise InvalidHoldError(f"an evidence hold needs a {what}")
    if max_length is not None and len(value) > max_length:
        raise InvalidHoldError(f"{what} is longer than {max_length} characters")
    return value


def create_hold(
    session: Session,
    read_id: str,
    case_number: str,
    created_by: str,
    reason: str,
    *,
    now: datetime | None = None,
) -> EvidenceHold:
    """Keep ``read_id`` (and its hits and images) past retention for a case. The caller commits.

    The read's row is locked first, so a concurrent retention batch either deleted it already (an
    :class:`UnknownReadError` here) or waits and then sees the hold.
    """
    hold = EvidenceHold(
        read_id=read_id,
        case_number=_required(case_number, "case number", _CASE_NUMBER_MAX),
        created_by=_required(created_by, "user", _USER_MAX),
        reason=_required(reason, "reason"),
        created_utc=now or utcnow(),
    )
    if session.scalar(select(Read.read_id).where(Read.read_id == read_id).with_for_update()) is None:
        raise UnknownReadError(f"no read with id {read_id}")
    session.add(hold)
    session.flush()
    logger.info("evidence hold %s placed on read %s by %s", hold.id, read_id, hold.created_by)
    return hold


def release_hold(
    session: Session,
    hold_id: int,
    released_by: str,
    reason: str,
    *,
    now: datetime | None = None,
) -> EvidenceHold:
    """Release a hold (the row stays, with who released it, when and why). The caller commits.

    The read then follows the normal retention rules: a read already past its period is purged on the
    next run, unless another active hold or a live hit keeps it.
    """
    user = _required(released_by, "user", _USER_MAX)
    why = _required(reason, "reason")
    hold = session.get(EvidenceHold, hold_id, with_for_update=True)
    if hold is None:
        raise UnknownHoldError(f"no evidence hold with id {hold_id}")
    if hold.released_utc is not None:
        raise HoldAlreadyReleasedError(f"evidence hold {hold_id} was released by {hold.released_by} already")
    hold.released_by = user
    hold.released_utc = now or utcnow()
    hold.release_reason = why
    session.flush()
    logger.info("evidence hold %s on read %s released by %s", hold_id, hold.read_id, user)
    return hold


def active_holds(session: Session, read_id: str | None = None) -> list[EvidenceHold]:
    """Unreleased holds, oldest first (of one read when ``read_id`` is given)."""
    statement = select(EvidenceHold).where(EvidenceHold.released_utc.is_(None))
    if read_id is not None:
        statement = statement.where(EvidenceHold.read_id == read_id)
    return list(session.scalars(statement.order_by(EvidenceHold.created_utc, EvidenceHold.id)))


# --- scheduling -------------------------------------------------------------------------------


class RunsRetention(Protocol):
    def run(self, dry_run: bool = False) -> RetentionReport: ...


class RetentionScheduler(threading.Thread):
    """Runs ``job.run()`` now and then every ``interval_s`` until ``stop_event``; a failure is logged."""

    def __init__(self, job: RunsRetention, interval_s: float, stop_event: threading.Event) -> None:
        if interval_s <= 0:
            raise ValueError("the retention interval must be positive")
        super().__init__(name="retention", daemon=True)
        self.job = job
        self.interval_s = interval_s
        self.stop_event = stop_event
        self.runs = 0
        self.failures = 0
        self.last_report: RetentionReport | None = None

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.last_report = self.job.run()
                self.runs += 1
            except Exception:  # the next run may well succeed (a lock timeout, a database restart)
                self.failures += 1
                logger.exception("retention run failed; the next one is in %.0f s", self.interval_s)
            if self.stop_event.wait(self.interval_s):
                return
