"""The retention job: reads, hits and images purged on time; evidence holds keep what a case needs."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from edge.wire import ReadRecord
from hub import textindex
from hub.models import EvidenceHold, Hit, Hotlist, HotlistEntry, Image, Read, RetentionRun
from hub.retention import (
    HoldAlreadyReleasedError,
    InvalidHoldError,
    RetentionJob,
    RetentionPolicy,
    RetentionReport,
    RetentionScheduler,
    UnknownHoldError,
    UnknownReadError,
    active_holds,
    create_hold,
    release_hold,
)
from hub.storage import ImageStore, sha256_hex, store_reads
from tests.hub.conftest import NOW, Database, make_record

DAY = timedelta(days=1)
POLICY = RetentionPolicy(reads_days=60, hits_days=365)
DB_IMAGES = ImageStore("db")


def count(session: Session, model: type[object]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def old_record(age: timedelta, **changes: Any) -> ReadRecord:
    seen = NOW - age
    return make_record(first_seen_utc=seen, best_utc=seen, last_seen_utc=seen, **changes)


def store(database: Database, node_id: int, *records: ReadRecord, images: ImageStore = DB_IMAGES) -> list[str]:
    store_reads(database.sessions, list(records), node_id, images, received_utc=NOW)
    return [record.read_id for record in records]


def add_hit(database: Database, read_id: str, created_utc: datetime) -> int:
    with database.sessions.begin() as session:
        hotlist = session.scalar(select(Hotlist).where(Hotlist.name == "stolen-vehicles"))
        if hotlist is None:
            hotlist = Hotlist(name="stolen-vehicles", created_utc=NOW - 1000 * DAY)
            session.add(hotlist)
            session.flush()
        entry = HotlistEntry(
            hotlist_id=hotlist.id,
            plate="7ABC123",
            category="stolen vehicle",
            priority=0,
            added_by="admin",
            added_utc=NOW - 1000 * DAY,
            version_added=1,
        )
        session.add(entry)
        session.flush()
        hit = Hit(
            read_id=read_id,
            entry_id=entry.id,
            hotlist_id=hotlist.id,
            entry_version=1,
            match_type="exact",
            matched_text="7ABC123",
            score=1.0,
            created_utc=created_utc,
        )
        session.add(hit)
        session.flush()
        return hit.id


def job(database: Database, images: ImageStore = DB_IMAGES, **kwargs: Any) -> RetentionJob:
    return RetentionJob(database.sessions, images, POLICY, clock=lambda: NOW, **kwargs)


def remaining_reads(database: Database) -> set[str]:
    with database.sessions() as session:
        return set(session.scalars(select(Read.read_id)))


def test_policy_hits_must_outlive_reads() -> None:
    assert RetentionPolicy() == RetentionPolicy(60, 365)
    with pytest.raises(ValueError, match="hits_days"):
        RetentionPolicy(reads_days=90, hits_days=30)
    with pytest.raises(ValueError):
        RetentionPolicy(reads_days=0)


def test_old_reads_purged_in_batches_new_kept_run_recorded_and_logged(
    database: Database, node_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    store(database, node_id, *(old_record(61 * DAY) for _ in range(5)))
    new = store(database, node_id, old_record(59 * DAY), old_record(0 * DAY))
    caplog.set_level(logging.INFO)
    report = job(database, batch_size=2).run()

    assert remaining_reads(database) == set(new)
    assert (report.reads_purged, report.candidate_texts_purged, report.images_purged) == (5, 10, 5)
    assert (report.hits_purged, report.held_reads_kept, report.dry_run) == (0, 0, False)
    assert report.reads_cutoff_utc == NOW - 60 * DAY and report.hits_cutoff_utc == NOW - 365 * DAY
    with database.sessions() as session:
        assert count(session, Image) == 2
        found = set(session.scalars(textindex.matching_read_ids(session, {"7ABC123", "7A8C123"})))
        assert found == set(new) and textindex.verify(session) == 4
        run = session.get_one(RetentionRun, report.run_id)
        assert (run.dry_run, run.reads_purged, run.images_purged, run.hits_purged) == (False, 5, 5, 0)
        assert (run.started_utc, run.finished_utc) == (NOW, NOW)

    lines = [r.getMessage() for r in caplog.records if r.name == "hub.retention"]
    assert len(lines) == 1
    assert "purged 5 reads, 10 candidate texts, 0 hits, 5 images" in lines[0]
    assert not any(plate in r.getMessage() for r in caplog.records for plate in ("7ABC123", "7A8C123"))

    again = job(database).run()  # nothing left to do, still recorded
    assert again.reads_purged == 0 and again.run_id != report.run_id


def test_dry_run_deletes_nothing_and_reports_what_a_real_run_does(database: Database, node_id: int) -> None:
    purged, kept_new, with_live_hit, with_old_hit, held = store(
        database, node_id, *(old_record(age) for age in (61 * DAY, DAY, 100 * DAY, 400 * DAY, 61 * DAY))
    )
    add_hit(database, with_live_hit, NOW - 100 * DAY)
    add_hit(database, with_old_hit, NOW - 400 * DAY)
    with database.sessions.begin() as session:
        create_hold(session, held, "2026-CR-0042", "det-smith", "burglary suspect vehicle", now=NOW)

    dry = job(database).run(dry_run=True)
    assert dry.dry_run
    assert remaining_reads(database) == {purged, kept_new, with_live_hit, with_old_hit, held}
    with database.sessions() as session:
        assert count(session, Hit) == 2 and count(session, Image) == 5
        run = session.get_one(RetentionRun, dry.run_id)
        assert run.dry_run and run.reads_purged == 2 and run.hits_purged == 1 and run.held_reads_kept == 1

    real = job(database).run()
    assert remaining_reads(database) == {kept_new, with_live_hit, held}
    counted = ("reads_purged", "candidate_texts_purged", "hits_purged", "images_purged", "held_reads_kept")
    assert {k: getattr(dry, k) for k in counted} == {k: getattr(real, k) for k in counted}
    assert (real.reads_purged, real.hits_purged, real.images_purged, real.held_reads_kept) == (2, 1, 2, 1)
    assert dry.hit_reads_kept == real.hit_reads_kept == 1


def test_hits_past_hits_days_purged_and_a_live_hit_keeps_its_read(database: Database, node_id: int) -> None:
    expired_read, live_read, held_read = store(
        database, node_id, old_record(400 * DAY), old_record(300 * DAY), old_record(400 * DAY)
    )
    add_hit(database, expired_read, NOW - 366 * DAY)
    live = add_hit(database, live_read, NOW - 300 * DAY)
    held_hit = add_hit(database, held_read, NOW - 400 * DAY)
    with database.sessions.begin() as session:
        create_hold(session, held_read, "2025-HS-7", "det-jones", "hit-and-run", now=NOW)

    report = job(database).run()
    assert (report.hits_purged, report.reads_purged, report.hit_reads_kept, report.held_reads_kept) == (1, 1, 1, 1)
    assert remaining_reads(database) == {live_read, held_read}
    with database.sessions() as session:
        assert set(session.scalars(select(Hit.id))) == {live, held_hit}  # a hold keeps the read's hits too

    # 66 days later the live hit expires too, and its read (long past reads_days) goes with it.
    later = RetentionJob(database.sessions, DB_IMAGES, POLICY, clock=lambda: NOW + 66 * DAY).run()
    assert (later.hits_purged, later.reads_purged) == (1, 1)
    assert remaining_reads(database) == {held_read}


def test_evidence_hold_keeps_a_read_until_released(database: Database, node_id: int) -> None:
    (read_id,) = store(database, node_id, old_record(90 * DAY))
    with database.sessions.begin() as session:
        for bad in ("", "   "):
            with pytest.raises(InvalidHoldError):
                create_hold(session, read_id, bad, "det-smith", "reason")
            with pytest.raises(InvalidHoldError):
                create_hold(session, read_id, "2026-CR-1", "det-smith", bad)
        with pytest.raises(UnknownReadError):
            create_hold(session, "0190f1d2-0000-7000-8000-000000000000", "2026-CR-1", "det-smith", "reason")
        hold_id = create_hold(session, read_id, " 2026-CR-1 ", "det-smith", "armed robbery", now=NOW).id

    first = job(database).run()
    assert first.held_reads_kept == 1 and first.reads_purged == 0
    assert remaining_reads(database) == {read_id}

    with database.sessions.begin() as session:
        with pytest.raises(UnknownHoldError):
            release_hold(session, 999_999, "sgt-3", "case closed")
        with pytest.raises(InvalidHoldError):
            release_hold(session, hold_id, "sgt-3", "")
        assert [hold.id for hold in active_holds(session, read_id)] == [hold_id]
        hold = release_hold(session, hold_id, "sgt-3", "case closed", now=NOW + DAY)
        assert (hold.released_by, hold.released_utc, hold.release_reason) == ("sgt-3", NOW + DAY, "case closed")
        with pytest.raises(HoldAlreadyReleasedError):
            release_hold(session, hold_id, "sgt-3", "again")
        assert active_holds(session) == []

    # Released, the hold no longer keeps its read: the next run purges it (with its candidate texts and
    # images), while the hold row stays as the audit trail of who kept it, for which case, and why.
    second = job(database).run()
    assert second.held_reads_kept == 0
    assert (second.reads_purged, second.candidate_texts_purged, second.images_purged) == (1, 2, 1)
    assert remaining_reads(database) == set()
    with database.sessions() as session:
        assert textindex.verify(session) == 0 and count(session, Image) == 0
        assert not list(session.scalars(textindex.matching_read_ids(session, {"7ABC123", "7A8C123"})))
        stored = session.get_one(EvidenceHold, hold_id)  # holds are never deleted
        assert stored.read_id == read_id and stored.case_number == "2026-CR-1"
        assert (stored.released_by, stored.released_utc) == ("sgt-3", NOW + DAY)


def test_images_on_disk_go_with_their_reads_but_shared_and_held_content_stays(
    database: Database, node_id: int, tmp_path: Path
) -> None:
    images = ImageStore("disk", tmp_path / "images")
    shared, own_crop, own_context = b"\xff\xd8shared\xff\xd9", b"\xff\xd8own\xff\xd9", b"\xff\xd8ctx\xff\xd9"
    held_crop = b"\xff\xd8held\xff\xd9"
    old_shared, old_own, old_held, new_shared = store(  # one group: every image in one pack file
        database,
        node_id,
        old_record(61 * DAY, crop_jpeg=shared, context_jpeg=own_context),
        old_record(61 * DAY, crop_jpeg=own_crop),
        old_record(61 * DAY, crop_jpeg=held_crop),
        old_record(DAY, crop_jpeg=shared),
        images=images,
    )
    with database.sessions.begin() as session:
        create_hold(session, old_held, "2026-CR-7", "det-smith", "evidence", now=NOW)

    def on_disk(data: bytes) -> bool:
        """Anywhere under the image root, pack files included: deleted bytes must not linger."""
        return any(data in path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())

    assert on_disk(shared) and on_disk(own_crop) and on_disk(own_context) and on_disk(held_crop)
    dry = job(database, images).run(dry_run=True)
    assert dry.images_purged == 2 and on_disk(own_crop) and on_disk(own_context)

    report = job(database, images).run()
    assert report.reads_purged == 2 and report.images_purged == 2 and report.held_reads_kept == 1
    assert remaining_reads(database) == {new_shared, old_held}
    assert on_disk(shared) and on_disk(held_crop) and not on_disk(own_crop) and not on_disk(own_context)
    with database.sessions() as session:
        assert images.get(session, sha256_hex(shared)) == shared
        assert images.get(session, sha256_hex(held_crop)) == held_crop
        assert count(session, Image) == 2
    assert {old_shared, old_own}.isdisjoint(remaining_reads(database))


class _FlakyJob(RetentionJob):
    def __init__(self, fail_first: int) -> None:
        super().__init__(sessionmaker(), DB_IMAGES)
        self.calls = 0
        self.fail_first = fail_first
        self.ran = threading.Event()

    def run(self, dry_run: bool = False) -> RetentionReport:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("database is restarting")
        self.ran.set()
        return RetentionReport(0, dry_run, NOW, NOW, NOW, NOW)


def test_scheduler_runs_every_interval_and_survives_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    flaky = _FlakyJob(fail_first=2)
    stop = threading.Event()
    scheduler = RetentionScheduler(flaky, interval_s=0.01, stop_event=stop)
    scheduler.start()
    assert flaky.ran.wait(5)
    stop.set()
    scheduler.join(5)
    assert not scheduler.is_alive()
    assert scheduler.failures == 2 and scheduler.runs >= 1 and scheduler.last_report is not None
    assert sum("retention run failed" in r.getMessage() for r in caplog.records) == 2
