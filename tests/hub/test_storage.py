"""Storing reads, images and heartbeats, and finding reads by plate, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from edge.wire import CandidateModel, NodeHealth, ReadRecord
from hub import storage, textindex
from hub.db import SQLITE_WAL_AUTOCHECKPOINT_PAGES, make_engine, session_factory
from hub.models import Image, Node, NodeHealthSample, Read, ReadCandidateText
from hub.storage import (
    ImageIntegrityError,
    ImageNotFoundError,
    ImageStore,
    StorageError,
    StoreResult,
    UnknownNodeError,
    candidate_texts,
    find_reads,
    find_reads_by_plate,
    find_reads_by_prefix,
    prefix_upper_bound,
    prepare_read,
    record_heartbeat,
    sha256_hex,
    store_prepared_batches,
    store_read_batches,
    store_reads,
)
from tests.hub.conftest import NOW, Database, make_record

DB_IMAGES = ImageStore("db")


def count(session: Session, model: type[object]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_store_batch_inserts_reads_images_and_candidate_texts(database: Database, node_id: int) -> None:
    records = [
        make_record(context_jpeg=b"\xff\xd8context-1\xff\xd9"),
        make_record(plate="8XYZ999", candidates=[], gps=None),
        make_record(plate="7ABC124", candidates=[CandidateModel(text="7ABC124", confidence=0.5)]),
    ]
    result = store_reads(database.sessions, records, node_id, DB_IMAGES, received_utc=NOW)
    assert result == StoreResult(inserted=[r.read_id for r in records], duplicates=[])

    with database.sessions() as session:
        assert count(session, Read) == 3
        assert count(session, Image) == 4  # three crops, one context
        first = session.get_one(Read, records[0].read_id)
        assert (first.node_id, first.camera_id, first.plate, first.region) == (node_id, "front", "7ABC123", "us-ca")
        assert first.candidates == [{"text": "7A8C123", "confidence": 0.04}]
        assert first.box == [10.0, 20.0, 110.0, 50.0]
        assert (first.latitude, first.longitude) == (32.7, -117.1)
        assert first.gps is not None and first.gps["mode"] == 3
        assert first.model_versions == {"ocr": "v1"} and first.software_version == "0.1.0"
        assert first.received_utc == NOW
        assert DB_IMAGES.get(session, first.crop_sha256 or "") == records[0].crop_jpeg
        assert DB_IMAGES.get(session, first.context_sha256 or "") == b"\xff\xd8context-1\xff\xd9"
        second = session.get_one(Read, records[1].read_id)
        assert (second.gps, second.latitude, second.context_sha256) == (None, None, None)
        texts = candidate_texts(session, [r.read_id for r in records])
        assert texts == {
            records[0].read_id: {"7ABC123", "7A8C123"},
            records[1].read_id: {"8XYZ999"},
            records[2].read_id: {"7ABC124"},
        }
        found = session.scalars(textindex.matching_read_ids(session, {"7A8C123"}))
        assert list(found) == [records[0].read_id]
        either = session.scalars(textindex.matching_read_ids(session, {"8XYZ999", "7ABC124", "0NONE00"}))
        assert sorted(either) == sorted([records[1].read_id, records[2].read_id])
        assert textindex.verify(session) == 4


def test_unlikely_candidates_are_kept_with_the_read_but_not_searchable(database: Database, node_id: int) -> None:
    floor = storage.SEARCHABLE_CANDIDATE_MIN_CONFIDENCE
    candidates = [
        CandidateModel(text="7A8C123", confidence=floor),
        CandidateModel(text="7ABC128", confidence=floor / 2),
        CandidateModel(text="1ABC123", confidence=0.0),
    ]
    record = make_record(candidates=candidates)
    store_reads(database.sessions, [record], node_id, DB_IMAGES, received_utc=NOW)
    with database.sessions() as session:
        stored = session.get_one(Read, record.read_id)
        assert [c["text"] for c in stored.candidates] == ["7A8C123", "7ABC128", "1ABC123"]  # all kept
        assert candidate_texts(session, [record.read_id]) == {record.read_id: {"7ABC123", "7A8C123"}}


def test_same_batch_again_is_all_duplicates(database: Database, node_id: int) -> None:
    records = [make_record() for _ in range(4)]
    store_reads(database.sessions, records, node_id, DB_IMAGES)
    again = store_reads(database.sessions, records, node_id, DB_IMAGES)
    assert again == StoreResult(inserted=[], duplicates=[r.read_id for r in records])

    fresh = make_record()
    mixed = store_reads(database.sessions, [records[0], fresh, fresh], node_id, DB_IMAGES)
    assert mixed == StoreResult(inserted=[fresh.read_id], duplicates=[records[0].read_id, fresh.read_id])
    with database.sessions() as session:
        assert count(session, Read) == 5
        assert count(session, Image) == 5
        assert textindex.verify(session) == 10
    assert store_reads(database.sessions, [], node_id, DB_IMAGES) == StoreResult()


def test_images_are_stored_once_per_content(database: Database, node_id: int) -> None:
    crop = b"\xff\xd8same-crop\xff\xd9"
    records = [make_record(crop_jpeg=crop, context_jpeg=crop), make_record(crop_jpeg=crop)]
    store_reads(database.sessions, records, node_id, DB_IMAGES)
    with database.sessions() as session:
        images = session.scalars(select(Image)).all()
        assert [(i.sha256, i.kind, i.size, i.data) for i in images] == [(sha256_hex(crop), "crop", len(crop), crop)]
        assert {r.crop_sha256 for r in session.scalars(select(Read))} == {sha256_hex(crop)}
        assert DB_IMAGES.put(session, crop, "crop") == sha256_hex(crop)
        session.commit()
        assert count(session, Image) == 1


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def packs(root: Path) -> list[Path]:
    return [p for p in stored_files(root) if p.suffix == ".pack"]


def anywhere_on_disk(root: Path, data: bytes) -> bool:
    """Whether ``data`` is in any file under ``root`` (pack files included)."""
    return any(data in path.read_bytes() for path in stored_files(root))


def delete_read(session: Session, read_id: str) -> None:
    session.execute(delete(ReadCandidateText).where(ReadCandidateText.read_id == read_id))
    session.execute(delete(Read).where(Read.read_id == read_id))


def test_disk_mode_appends_a_groups_images_to_one_pack_file(database: Database, node_id: int, tmp_path: Path) -> None:
    root = tmp_path / "images"
    images = ImageStore("disk", root)
    context = b"\xff\xd8ctx\xff\xd9"
    records = [make_record(context_jpeg=context), make_record()]
    store_reads(database.sessions, records, node_id, images)
    [pack] = stored_files(root)
    assert pack.suffix == ".pack" and pack.parent.parent == root / "packs"
    with database.sessions() as session:
        rows = sorted(session.scalars(select(Image)), key=lambda image: image.pack_offset or 0)
        assert {(row.path, row.data) for row in rows} == {(pack.relative_to(root).as_posix(), None)}
        assert [row.pack_offset for row in rows] == [0, rows[0].size, rows[0].size + rows[1].size]
        assert sum(row.size for row in rows) == pack.stat().st_size
        for content in (records[0].crop_jpeg, context, records[1].crop_jpeg):
            assert images.get(session, sha256_hex(content)) == content

        delete_read(session, records[0].read_id)
        assert images.delete_unreferenced(session) == 2
        assert pack.exists()  # until the commit
        session.commit()
    # The pack is gone, the image still in use has a file of its own, the deleted ones are nowhere on disk.
    assert not pack.exists()
    assert not anywhere_on_disk(root, records[0].crop_jpeg) and not anywhere_on_disk(root, context)
    assert stored_files(root) == [root / images.relative_path(sha256_hex(records[1].crop_jpeg))]
    with database.sessions() as session:
        assert images.get(session, sha256_hex(records[1].crop_jpeg)) == records[1].crop_jpeg
        moved = session.scalars(select(Image).where(Image.sha256 == sha256_hex(records[1].crop_jpeg))).one()
        assert moved.pack_offset is None
        with pytest.raises(ImageNotFoundError):
            images.get(session, sha256_hex(records[0].crop_jpeg))

    later = make_record()
    store_reads(database.sessions, [later], node_id, images)  # a new pack: the old one is never reopened
    [new_pack] = packs(root)
    assert new_pack != pack
    with database.sessions() as session:
        assert images.get(session, sha256_hex(later.crop_jpeg)) == later.crop_jpeg

    with pytest.raises(ValueError, match="root"):
        ImageStore("disk")


def test_a_pack_goes_only_when_the_deletion_commits(database: Database, node_id: int, tmp_path: Path) -> None:
    images = ImageStore("disk", tmp_path)
    records = [make_record(), make_record()]
    store_reads(database.sessions, records, node_id, images)
    [pack] = packs(tmp_path)
    with database.sessions() as session:
        delete_read(session, records[0].read_id)
        assert images.delete_unreferenced(session) == 1
        session.rollback()
        session.execute(select(Image.sha256)).all()
        session.commit()  # a later transaction on the same session does not run the rolled-back removal
    assert pack.exists()
    with database.sessions() as session:
        for record in records:
            assert images.get(session, sha256_hex(record.crop_jpeg)) == record.crop_jpeg


def test_a_pack_in_use_by_a_transaction_or_another_process_stays_until_it_is_done(
    database: Database, node_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = ImageStore("disk", tmp_path)
    gone, kept = make_record(), make_record()
    store_reads(database.sessions, [gone, kept], node_id, images)
    [pack] = packs(tmp_path)
    assert images._packs is not None
    in_flight = images._packs.append([b"bytes of a transaction still going on"])
    assert in_flight.relative == pack.relative_to(tmp_path).as_posix()
    with database.sessions.begin() as session:
        delete_read(session, gone.read_id)
        assert images.delete_unreferenced(session) == 1
    assert pack.exists() and anywhere_on_disk(tmp_path, gone.crop_jpeg)  # marked, left for later
    in_flight.release()
    with database.sessions.begin() as session:
        assert images.delete_unreferenced(session) == 0
    assert not pack.exists() and not anywhere_on_disk(tmp_path, gone.crop_jpeg)

    # Another process's pack (another store on the same root) goes only days after it was written.
    other, later = make_record(), make_record()
    store_reads(database.sessions, [other, later], node_id, ImageStore("disk", tmp_path))
    [foreign] = packs(tmp_path)
    with database.sessions.begin() as session:
        delete_read(session, other.read_id)
        assert images.delete_unreferenced(session) == 1
    assert foreign.exists() and anywhere_on_disk(tmp_path, other.crop_jpeg)
    monkeypatch.setattr(storage, "FOREIGN_PACK_DAYS", 0)  # as if that day were long past
    with database.sessions.begin() as session:
        assert images.delete_unreferenced(session) == 0
    assert not foreign.exists() and not anywhere_on_disk(tmp_path, other.crop_jpeg)
    with database.sessions() as session:
        assert images.get(session, sha256_hex(later.crop_jpeg)) == later.crop_jpeg


def test_bytes_appended_by_a_transaction_that_failed_are_never_named(
    database: Database, node_id: int, tmp_path: Path
) -> None:
    images = ImageStore("disk", tmp_path)
    record = make_record()
    with pytest.raises(Exception, match="(?i)foreign key"):  # no such node: the transaction fails
        store_reads(database.sessions, [record], node_id + 1000, images)
    [pack] = packs(tmp_path)
    assert pack.read_bytes() == record.crop_jpeg  # appended, never committed
    store_reads(database.sessions, [record], node_id, images)
    with database.sessions() as session:
        image = session.scalars(select(Image).where(Image.sha256 == sha256_hex(record.crop_jpeg))).one()
        assert image.pack_offset == len(record.crop_jpeg)  # a fresh copy after the untrusted one
        assert images.get(session, image.sha256) == record.crop_jpeg


class DurabilityCalls:
    """Wraps ``hub.storage._make_durable`` and ``_sync_pack`` (still calling them) and records each call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[Path]] = []
        self.pack_syncs = 0
        real = storage._make_durable
        real_sync = storage._sync_pack

        def counting(root: Path, paths: Sequence[Path]) -> None:
            self.calls.append(list(paths))
            real(root, paths)

        def counting_sync(fd: int) -> None:
            self.pack_syncs += 1
            real_sync(fd)

        monkeypatch.setattr(storage, "_make_durable", counting)
        monkeypatch.setattr(storage, "_sync_pack", counting_sync)


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-fallback"])
def test_a_batch_of_disk_images_is_made_durable_once(
    database: Database, node_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    if not syncfs:
        monkeypatch.setattr(storage, "_syncfs", lambda: None)
    durable = DurabilityCalls(monkeypatch)
    root = tmp_path / "images"
    images = ImageStore("disk", root)
    shared = b"\xff\xd8shared\xff\xd9"
    records = [make_record(context_jpeg=b"\xff\xd8ctx-%d\xff\xd9" % i) for i in range(20)]
    records += [make_record(crop_jpeg=shared), make_record(crop_jpeg=shared, context_jpeg=shared)]
    contents = {r.crop_jpeg for r in records} | {r.context_jpeg for r in records if r.context_jpeg}
    assert len(contents) == 41

    result = store_reads(database.sessions, records, node_id, images)
    assert len(result.inserted) == len(records)
    assert durable.pack_syncs == 1 and durable.calls == []
    [pack] = stored_files(root)
    assert pack.stat().st_size == sum(len(c) for c in contents)  # each distinct content once
    with database.sessions() as session:
        assert count(session, Image) == len(contents)
        for content in contents:
            assert images.get(session, sha256_hex(content)) == content

    # Nothing new to write: no sync. A lone put of new content makes a file of its own durable itself.
    store_reads(database.sessions, records, node_id, images)
    store_reads(database.sessions, [make_record(crop_jpeg=shared)], node_id, images)
    assert durable.pack_syncs == 1 and pack.stat().st_size == sum(len(c) for c in contents)
    # Stored and new content in one group: only the new is written (the stored one's room stays a hole).
    fresh = make_record(crop_jpeg=shared, context_jpeg=b"\xff\xd8fresh\xff\xd9")
    store_reads(database.sessions, [fresh], node_id, images)
    assert durable.pack_syncs == 2 and pack.read_bytes().count(shared) == 1
    with database.sessions() as session:
        assert images.get(session, sha256_hex(b"\xff\xd8fresh\xff\xd9")) == b"\xff\xd8fresh\xff\xd9"
        assert images.get(session, sha256_hex(shared)) == shared
    with database.sessions() as session:
        digest = images.put(session, b"\xff\xd8lone\xff\xd9", "crop")
        session.commit()
    assert durable.calls == [[root / images.relative_path(digest)]]
    assert len(stored_files(root)) == 2


def test_a_file_left_by_an_uncommitted_put_is_rewritten(
    database: Database, node_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the rename and the sync can leave a truncated file no row refers to."""
    durable = DurabilityCalls(monkeypatch)
    images = ImageStore("disk", tmp_path)
    data = b"\xff\xd8put\xff\xd9"
    leftover = tmp_path / images.relative_path(sha256_hex(data))
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"")
    with database.sessions() as session:
        images.put(session, data, "crop")
        session.commit()
    assert leftover.read_bytes() == data
    assert durable.calls == [[leftover]]

    leftover.unlink()  # a committed row whose file went missing gets it back
    with database.sessions() as session:
        images.put(session, data, "crop")
        session.commit()
    assert leftover.read_bytes() == data
    assert durable.calls == [[leftover], [leftover]]


def test_image_reads_are_checked_against_their_hash(database: Database, node_id: int, tmp_path: Path) -> None:
    images = ImageStore("disk", tmp_path)
    record = make_record()
    store_reads(database.sessions, [record], node_id, images)
    digest = sha256_hex(record.crop_jpeg)
    [pack] = packs(tmp_path)
    pack.write_bytes(b"X" + record.crop_jpeg[1:])
    with database.sessions() as session, pytest.raises(ImageIntegrityError):
        images.get(session, digest)
    pack.write_bytes(record.crop_jpeg[:-1])
    with database.sessions() as session, pytest.raises(ImageIntegrityError, match="short"):
        images.get(session, digest)


def test_delete_unreferenced_keeps_images_in_use(database: Database, node_id: int) -> None:
    record = make_record()
    store_reads(database.sessions, [record], node_id, DB_IMAGES)
    with database.sessions() as session:
        orphan = DB_IMAGES.put(session, b"\xff\xd8orphan\xff\xd9", "context")
        assert DB_IMAGES.delete_unreferenced(session) == 1
        session.commit()
        assert session.scalar(select(Image).where(Image.sha256 == orphan)) is None
        assert DB_IMAGES.get(session, sha256_hex(record.crop_jpeg)) == record.crop_jpeg


def test_reads_refer_to_their_images_by_id_and_share_stored_content(database: Database, node_id: int) -> None:
    shared = b"\xff\xd8shared\xff\xd9"
    first = make_record(crop_jpeg=shared, context_jpeg=b"\xff\xd8context\xff\xd9")
    store_reads(database.sessions, [first], node_id, DB_IMAGES)
    second = make_record(crop_jpeg=b"\xff\xd8own\xff\xd9", context_jpeg=shared)  # stored before, as a crop
    store_reads(database.sessions, [second, first], node_id, DB_IMAGES)  # the resent first: a duplicate
    with database.sessions() as session:
        ids = {digest: image_id for digest, image_id in session.execute(select(Image.sha256, Image.id))}
        rows = {r.read_id: r for r in session.scalars(select(Read))}

        def digests_of(record: ReadRecord) -> list[str]:
            return [sha256_hex(record.crop_jpeg), sha256_hex(record.context_jpeg or b"")]

        for record in (first, second):
            row = rows[record.read_id]
            assert row.crop_sha256 == sha256_hex(record.crop_jpeg)
            assert row.crop_image_id == ids[sha256_hex(record.crop_jpeg)]
            assert row.context_image_id == ids[sha256_hex(record.context_jpeg or b"")]
        assert rows[second.read_id].context_image_id == rows[first.read_id].crop_image_id
        # Ids grow as images are stored (which keeps the reads' image-id indexes growing at their end).
        assert ids[sha256_hex(second.crop_jpeg)] > max(ids[digest] for digest in digests_of(first))


def test_image_clean_up_finds_references_through_an_index(database: Database) -> None:
    """Image clean-up finds the reads that refer to an image through the image-id indexes, never a scan of
    every read (the foreign key's check when the image is deleted looks through the same indexes)."""
    with database.sessions() as session:
        statement = select(Image.id).where(storage.no_read_refers_to_image())
        sql = str(statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
        if database.backend == "sqlite":
            plan = " ".join(str(row) for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "ix_reads_crop_image_id" in plan and "ix_reads_context_image_id" in plan, plan
            assert "SCAN reads" not in plan, plan
        else:
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(row) for row in session.execute(text(f"EXPLAIN {sql}")))
            assert "ix_reads_crop_image_id" in plan and "ix_reads_context_image_id" in plan, plan


def test_exact_and_prefix_plate_search(database: Database, node_id: int) -> None:
    with database.sessions.begin() as session:
        other = Node(name="car-13", curve_public_key="b" * 40, enrolled_utc=NOW)
        session.add(other)
        session.flush()
        other_id = other.id
    plates = ["7ABC123", "7ABC124", "7ABD000", "7ABZ999", "7AC0000", "7AB9", "7ABA", "ABC123"]
    records = [make_record(plate=p, best_utc=NOW - timedelta(minutes=i)) for i, p in enumerate(plates)]
    store_reads(database.sessions, records, node_id, DB_IMAGES)
    late = make_record(plate="7ABC123", best_utc=NOW + timedelta(hours=1))
    store_reads(database.sessions, [late], other_id, DB_IMAGES)

    with database.sessions() as session:

        def prefix(p: str, limit: int = 100) -> list[str]:
            return [r.plate for r in find_reads_by_prefix(session, p, limit)]

        exact = find_reads_by_plate(session, "7abc-123")
        assert [r.read_id for r in exact] == [late.read_id, records[0].read_id]  # newest first
        assert [r.read_id for r in find_reads_by_plate(session, "7ABC123", node_id=node_id)] == [records[0].read_id]
        assert find_reads_by_plate(session, "7ABC12") == []
        assert prefix("7ABC") == ["7ABC123", "7ABC123", "7ABC124"]
        assert sorted(prefix("7AB")) == ["7AB9", "7ABA", "7ABC123", "7ABC123", "7ABC124", "7ABD000", "7ABZ999"]
        assert prefix("7ABZ") == ["7ABZ999"]  # the range ends at "7AC", not at "7AB["
        assert prefix("7AB9") == ["7AB9"]  # ... and "7AB9" ends at "7ABA"
        assert prefix("7a") == ["7ABC123", "7ABC123", "7ABC124", "7ABD000", "7ABZ999", "7AC0000", "7AB9", "7ABA"]
        assert prefix("7A", limit=2) == ["7ABC123", "7ABC123"]
        assert prefix("Z") == []
        in_range = find_reads_by_prefix(session, "7AB", since=NOW - timedelta(minutes=3), until=NOW)
        assert [r.plate for r in in_range] == ["7ABC124", "7ABD000", "7ABZ999"]
        window = find_reads(session, since=NOW - timedelta(minutes=1), until=NOW + timedelta(hours=2))
        assert [r.read_id for r in window] == [late.read_id, records[0].read_id, records[1].read_id]
        assert [r.read_id for r in find_reads(session, node_id=other_id)] == [late.read_id]
        with pytest.raises(ValueError):
            find_reads_by_prefix(session, "-")


def test_plate_and_prefix_search_use_an_index(database: Database) -> None:
    """PostgreSQL: the plate b-tree. SQLite has none (a random-key insert a read): its FTS5 text index
    finds the reads, looked up by rowid."""
    with database.sessions() as session:
        for plate, prefix in (("7ABC123", False), ("7AB", True)):
            condition = Read.plate >= plate if prefix else Read.plate == plate
            statement = select(Read.read_id).where(condition, *textindex.plate_lookup(session, plate, prefix=prefix))
            sql = str(statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
            if database.backend == "sqlite":
                plan = " ".join(str(row) for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
                assert "VIRTUAL TABLE" in plan and "read_texts" in plan and "SCAN reads" not in plan, plan
            else:
                session.execute(text("SET LOCAL enable_seqscan = off"))
                plan = " ".join(str(row) for row in session.execute(text(f"EXPLAIN {sql}")))
                assert "ix_reads_plate" in plan, plan


@pytest.mark.parametrize(
    ("prefix", "upper"), [("ABC", "ABD"), ("AB9", "ABA"), ("ABZ", "AC"), ("A9Z", "AA"), ("ZZ", None), ("0", "1")]
)
def test_prefix_upper_bound(prefix: str, upper: str | None) -> None:
    assert prefix_upper_bound(prefix) == upper


def test_times_come_back_timezone_aware_utc(database: Database, node_id: int) -> None:
    pacific = timezone(timedelta(hours=-8))
    seen = datetime(2026, 11, 28, 10, 0, 0, 123456, tzinfo=pacific)
    record = make_record(first_seen_utc=seen, best_utc=seen, last_seen_utc=seen + timedelta(seconds=2))
    store_reads(database.sessions, [record], node_id, DB_IMAGES)
    with database.sessions() as session:
        read = session.get_one(Read, record.read_id)
        for value in (read.first_seen_utc, read.best_utc, read.last_seen_utc, read.received_utc):
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert read.best_utc == seen and read.best_utc.hour == 18
        assert find_reads(session, since=datetime(2026, 11, 28, 18, 0, tzinfo=UTC)) == [read]
        with pytest.raises(StatementError, match="naive datetime"):
            find_reads(session, since=datetime(2026, 11, 28, 18, 0))


def _race(factories: list[sessionmaker[Session]], batches: list[list[ReadRecord]], node_id: int) -> list[StoreResult]:
    """Run ``store_reads`` for each batch on its own thread and engine, all released at once."""
    barrier = threading.Barrier(len(batches))
    results: list[StoreResult | BaseException | None] = [None] * len(batches)

    def store(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = store_reads(factories[i], batches[i], node_id, DB_IMAGES)
        except BaseException as exc:  # re-raised below, on the test's thread
            results[i] = exc

    threads = [threading.Thread(target=store, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    done = [r for r in results if isinstance(r, StoreResult)]
    assert len(done) == len(batches), results
    return done


@pytest.mark.parametrize("blank_url", ["postgresql"], indirect=True)  # SQLite: one writer, no such race
def test_an_image_deleted_by_another_process_mid_store_fails_the_batch_and_loses_nothing(
    database: Database, node_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, where hub processes share a database: another process's retention deletes a stored
    image between this transaction's image insert (which found it there) and the lookup of its id. The
    batch fails as a whole (not acked; the node resends) and, sent again, stores the image anew."""
    shared = b"\xff\xd8shared\xff\xd9"
    old, new = make_record(crop_jpeg=shared), make_record(crop_jpeg=shared)
    store_reads(database.sessions, [old], node_id, DB_IMAGES)
    other = make_engine(database.url)
    insert_rows = ImageStore._insert_image_rows

    def then_retention_elsewhere(store: ImageStore, connection: object, images: object) -> dict[str, int]:
        inserted = insert_rows(store, connection, images)  # type: ignore[arg-type]
        with session_factory(other).begin() as session:  # commits before this transaction goes on
            session.execute(delete(Read).where(Read.read_id == old.read_id))
            assert DB_IMAGES.delete_unreferenced(session) == 1
        return inserted

    try:
        monkeypatch.setattr(ImageStore, "_insert_image_rows", then_retention_elsewhere)
        with pytest.raises(StorageError, match="deleted while its read was being stored"):
            store_reads(database.sessions, [new], node_id, DB_IMAGES)
        monkeypatch.undo()
    finally:
        other.dispose()
    with database.sessions() as session:
        assert count(session, Read) == 0 and count(session, Image) == 0
    assert store_reads(database.sessions, [new], node_id, DB_IMAGES).inserted == [new.read_id]
    with database.sessions() as session:
        assert DB_IMAGES.get(session, sha256_hex(shared)) == shared


def test_concurrent_inserts_store_each_read_once(database: Database, node_id: int) -> None:
    """Two hub processes (two engines) store overlapping batches at the same moment, in opposite orders."""
    engines = [make_engine(database.url) for _ in range(2)]
    try:
        factories = [session_factory(engine) for engine in engines]
        for _round in range(3):
            records = [make_record() for _ in range(30)]
            batches = [records[:20], list(reversed(records[10:]))]
            first, second = _race(factories, batches, node_id)
            assert set(first.inserted).isdisjoint(second.inserted)
            assert set(first.inserted) | set(second.inserted) == {r.read_id for r in records}
            for result, batch in zip((first, second), batches, strict=True):
                assert sorted(result.inserted + result.duplicates) == sorted(r.read_id for r in batch)
        with database.sessions() as session:
            assert count(session, Read) == 90
            assert session.scalar(select(func.count(func.distinct(Read.read_id)))) == 90
            assert textindex.verify(session) == 180
    finally:
        for engine in engines:
            engine.dispose()


def test_record_heartbeat(database: Database, node_id: int) -> None:
    health = NodeHealth(
        spool_depth=3, spool_bytes=1000, evictions_total=0, gps_status="3d", uptime_s=60.0, software_version="0.1.0"
    )
    with database.sessions.begin() as session:
        record_heartbeat(session, node_id, health, NOW)
        record_heartbeat(session, node_id, {"spool_depth": 1}, NOW + timedelta(minutes=1))
        record_heartbeat(session, node_id, {"spool_depth": 9}, NOW - timedelta(minutes=5))  # a late resend
    with database.sessions() as session:
        node = session.get_one(Node, node_id)
        assert node.last_seen_utc == NOW + timedelta(minutes=1)
        assert node.last_seen_utc is not None and node.last_seen_utc.tzinfo is not None
        assert node.last_health == {"spool_depth": 1}
        samples = session.scalars(select(NodeHealthSample).order_by(NodeHealthSample.received_utc)).all()
        assert [s.health.get("spool_depth") for s in samples] == [9, 3, 1]
        assert samples[1].health["gps_status"] == "3d"
        with pytest.raises(UnknownNodeError):
            record_heartbeat(session, node_id + 1000, {}, NOW)


def test_sqlite_engine_is_durable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/new/dir/hub.db")
    try:
        with engine.connect() as connection:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "wal_autocheckpoint")
            pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}
        assert pragmas["journal_mode"] == "wal"
        assert pragmas["synchronous"] == 2  # FULL
        assert pragmas["foreign_keys"] == 1
        assert (pragmas["busy_timeout"] or 0) > 0
        assert pragmas["wal_autocheckpoint"] == SQLITE_WAL_AUTOCHECKPOINT_PAGES  # not 1,000: see hub.db
        assert (tmp_path / "new" / "dir" / "hub.db").exists()
        with engine.begin() as connection:  # SQLAlchemy, not pysqlite, opens the transaction
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
            assert connection.connection.driver_connection.in_transaction  # type: ignore[union-attr]
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_batches_of_several_nodes_are_stored_in_one_transaction(database: Database, node_id: int) -> None:
    with database.sessions.begin() as session:
        other = Node(name="car-13", curve_public_key="c" * 40, enrolled_utc=NOW)
        session.add(other)
        session.flush()
        other_id = other.id
    first = [make_record() for _ in range(3)]
    second = [make_record(node_id="car-13"), first[1]]  # a read id seen in an earlier batch is a duplicate
    results = store_read_batches(database.sessions, [(node_id, first), (other_id, second), (node_id, [])], DB_IMAGES)
    assert results == [
        StoreResult(inserted=[r.read_id for r in first]),
        StoreResult(inserted=[second[0].read_id], duplicates=[first[1].read_id]),
        StoreResult(),
    ]
    with database.sessions() as session:
        owners = {read_id: owner for read_id, owner in session.execute(select(Read.read_id, Read.node_id))}
        assert owners == {**{r.read_id: node_id for r in first}, second[0].read_id: other_id}
        assert textindex.verify(session) == 8


def test_prepared_reads_store_what_store_reads_stores(database: Database, node_id: int) -> None:
    """Rows bound ahead of time (for this engine, or for another engine's dialect) store the same values."""
    other_engine = make_engine(database.url)
    try:
        records = [
            make_record(context_jpeg=b"\xff\xd8ctx\xff\xd9", clock_suspect=True, observations=3),
            make_record(gps=None, candidates=[], char_confidences=[]),
        ]
        prepared = [
            prepare_read(records[0], node_id, NOW, database.engine.dialect),
            prepare_read(records[1], node_id, NOW, other_engine.dialect),  # bound again when stored
        ]
        assert store_prepared_batches(database.sessions, [prepared], DB_IMAGES) == [
            StoreResult(inserted=[r.read_id for r in records])
        ]
        plain = [make_record(**{k: v for k, v in r.model_dump().items() if k != "read_id"}) for r in records]
        store_reads(database.sessions, plain, node_id, DB_IMAGES, received_utc=NOW)
        columns = [c for c in Read.__table__.columns if c.name != "read_id"]
        with database.sessions() as session:
            for record, again in zip(records, plain, strict=True):
                rows = [
                    session.execute(select(*columns).where(Read.read_id == r.read_id)).one() for r in (record, again)
                ]
                assert rows[0] == rows[1]
                assert rows[0].received_utc == NOW and rows[0].first_seen_utc == record.first_seen_utc
    finally:
        other_engine.dispose()


def test_a_failed_image_write_or_sync_stores_nothing(
    database: Database, node_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack that cannot be written, or whose sync fails, rolls the whole transaction back."""
    root = tmp_path / "images"
    images = ImageStore("disk", root)
    records = [make_record() for _ in range(40)]
    root.mkdir()
    (root / "packs").write_bytes(b"a file where a folder should be")
    with pytest.raises(OSError):
        store_reads(database.sessions, records, node_id, images)
    with database.sessions() as session:
        assert count(session, Read) == 0 and count(session, Image) == 0
    (root / "packs").unlink()

    def failing_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_sync_pack", failing_sync)
    with pytest.raises(OSError, match="Input/output"):
        store_reads(database.sessions, records, node_id, images)
    with database.sessions() as session:
        assert count(session, Read) == 0 and count(session, Image) == 0
    [failed] = packs(root)
    monkeypatch.undo()
    assert store_reads(database.sessions, records, node_id, images).inserted == [r.read_id for r in records]
    assert len(packs(root)) == 2  # a pack whose sync failed is not trusted with more
    with database.sessions() as session:
        assert {image.path for image in session.scalars(select(Image))} != {failed.relative_to(root).as_posix()}
        assert all(images.get(session, sha256_hex(r.crop_jpeg)) == r.crop_jpeg for r in records)


def test_bulk_rows_are_bound_as_sqlalchemy_binds_them(database: Database) -> None:
    """The bulk inserts bind UTC times and JSON themselves (for speed): the values must be SQLAlchemy's own."""
    dialect = database.engine.dialect
    east = timezone(timedelta(hours=5, minutes=30))
    record = make_record(
        first_seen_utc=datetime(2026, 11, 28, 23, 59, 59, 999999, tzinfo=east), gps=None, context_jpeg=None
    )
    row = storage.prepare_read(record, 7, datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)).row
    bulk = storage._bulk(dialect, "reads")
    bound = bulk.bind(row)
    assert bulk.late == ("crop_image_id", "context_image_id")  # known in the transaction, not bound here
    for column in Read.__table__.columns:
        if column.name in bulk.late:
            continue
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        expected = process(row[column.name]) if process is not None else row[column.name]
        if database.backend == "sqlite":
            assert bound[bulk.columns.index(column.name)] == expected, column.name
        elif isinstance(expected, datetime):  # PostgreSQL: ISO 8601 text of the bound value in UTC, inside JSON
            assert datetime.fromisoformat(bound[column.name]) == expected, column.name
            assert bound[column.name].endswith("+00:00"), column.name
    if database.backend == "sqlite":
        assert bound[bulk.columns.index("first_seen_utc")] == "2026-11-28 18:29:59.999999"
        assert bound[bulk.columns.index("gps")] is None  # SQL NULL, not JSON null
        assert bound[bulk.columns.index("received_utc")] == "0999-01-02 03:04:05.000000"
    else:
        assert bound["first_seen_utc"] == "2026-11-28T18:29:59.999999+00:00"
    with pytest.raises(ValueError, match="naive"):
        bulk.bind({**row, "best_utc": datetime(2026, 11, 28, 18, 0)})
    with database.engine.connect() as connection, pytest.raises(StorageError, match="late columns"):
        bulk.execute_bound(connection, [bound])  # a read row without its images' ids is refused, not stored
