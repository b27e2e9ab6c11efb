"""Hot lists on the hub: imports, manual changes, expiry, matching with Hit rows, snapshots, retention.

Every database test runs on SQLite and PostgreSQL (``tests/hub/conftest.py``). The example files under
``tests/data/hotlists`` are fictitious (see the README there).
"""

from __future__ import annotations

import hashlib
import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from edge.recognition.formats import lookalike_variants
from edge.wire import CandidateModel, HotlistCurrentMessage, HotlistMessage, unpack_hotlist_entries
from hub.hotlists import (
    ActiveEntry,
    ColumnMapping,
    DuplicateEntryError,
    EntryNotFoundError,
    HotlistImportError,
    HotlistService,
    HotlistSettings,
    InvalidEntryError,
    RowError,
    UnknownHotlistError,
    active_entries,
    add_entry,
    create_hotlist,
    current_version,
    expire_entries,
    import_file,
    purge_expired_lists,
    read_state,
    remove_entry,
    update_hotlist_settings,
)
from hub.models import Hit, Hotlist, HotlistEntry, HotlistVersion
from hub.storage import ImageStore, sha256_hex, store_reads
from tests.hub.conftest import NOW, Database, make_record

DATA = Path(__file__).resolve().parents[1] / "data" / "hotlists"
NCIC_FILE = DATA / "ncic-stolen-vehicles.txt"
AMBER_FILE = DATA / "amber-alert.csv"
NCIC_MAPPING = ColumnMapping(
    plate=(0, 10),
    state=(10, 12),
    notes=[(12, 16), (16, 20), (37, 47)],  # make, year, NIC number
    source=(28, 37),  # ORI
    default_category="stolen vehicle",
    default_priority=1,
)
AMBER_MAPPING = ColumnMapping(
    plate="plate",
    state="state",
    category="category",
    priority="priority",
    expiry="expires",
    notes=["vehicle", "case_number"],
)
DB_IMAGES = ImageStore("db")


def listed(session: Session, name: str) -> dict[tuple[str, str | None], HotlistEntry]:
    """The list's active entries by (plate, state)."""
    rows = session.scalars(
        select(HotlistEntry)
        .join(Hotlist, Hotlist.id == HotlistEntry.hotlist_id)
        .where(Hotlist.name == name, HotlistEntry.version_removed.is_(None))
    )
    return {(row.plate, row.state): row for row in rows}


def file_plates(path: Path) -> list[str]:
    """Plates written in an example file (the first field of each data row), for leak checks."""
    plates = []
    for line in path.read_text().splitlines()[1:]:
        if line and not line.startswith("#"):
            plate = line[:10].strip() if path.suffix == ".txt" else line.split(",")[0]
            if len(plate) >= 4 and plate.isalnum():
                plates.append(plate)
    return plates


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("plate,state,priority\n" + "".join(row + "\n" for row in rows))
    return path


PLAIN = ColumnMapping(plate="plate", state="state", priority="priority")


# --- imports ----------------------------------------------------------------------------------


def test_import_fixed_width_ncic_extract(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hub.hotlists")
    with database.sessions.begin() as session:
        result = import_file(
            session,
            "ncic-stolen",
            NCIC_FILE,
            "fixed",
            NCIC_MAPPING,
            "clerk.ortiz",
            now=NOW,
            settings=HotlistSettings(check_state=True, retention_days=90),
        )
    assert (result.rows, result.added, result.duplicates, result.skipped, result.removed) == (30, 26, 1, 3, 0)
    assert result.errors == (
        RowError(26, "empty plate"),
        RowError(31, "plate has no letters or digits"),
        RowError(35, "bad state"),
    )
    assert result.source_sha256 == hashlib.sha256(NCIC_FILE.read_bytes()).hexdigest()
    leaked = [p for p in file_plates(NCIC_FILE) if p in caplog.text or any(p in str(e) for e in result.errors)]
    assert leaked == []
    assert "line 26: empty plate" in caplog.text

    with database.sessions() as session:
        entries = listed(session, "ncic-stolen")
        assert len(entries) == 26
        first = entries[("7TST101", "CA")]
        assert ("7TST101", "NV") in entries  # same plate, another state: a different vehicle
        assert (first.category, first.priority, first.source) == ("stolen vehicle", 1, "CA9990001")
        assert first.notes == "HOND 2016 V000000101"
        assert (first.added_by, first.added_utc, first.version_added) == ("clerk.ortiz", NOW, result.version)
        assert first.expires_utc is None and first.removed_utc is None
        version = session.get_one(HotlistVersion, result.version)
        assert (version.created_by, version.entries_added, version.entries_removed) == ("clerk.ortiz", 26, 0)
        assert version.source_sha256 == result.source_sha256 and "3 skipped" in version.note
        hotlist = session.get_one(Hotlist, result.hotlist_id)
        assert (hotlist.check_state, hotlist.lookalike_tolerance, hotlist.retention_days) == (True, False, 90)


def test_import_csv_with_header_mapping(database: Database) -> None:
    with database.sessions.begin() as session:
        result = import_file(
            session, "amber", AMBER_FILE, "csv", AMBER_MAPPING, "sgt.lee", now=NOW,
            settings=HotlistSettings(lookalike_tolerance=True),
        )  # fmt: skip
    assert (result.rows, result.added, result.skipped) == (5, 3, 2)
    assert [(e.line, e.reason) for e in result.errors] == [
        (5, "bad priority (not a whole number)"),
        (6, "bad expiry date"),
    ]
    with database.sessions() as session:
        entry = listed(session, "amber")[("8TST3O9", "CA")]
        assert (entry.category, entry.priority) == ("amber alert", 0)
        assert entry.expires_utc == datetime(2026, 12, 5, tzinfo=UTC)
        assert entry.notes == "white pickup, ladder rack AA-2026-TEST-01"
        assert entry.source == "amber-alert.csv"  # no source column: the file name


def test_tsv_and_mapping_mistakes(database: Database, tmp_path: Path) -> None:
    tsv = tmp_path / "list.tsv"
    tsv.write_text("Plate\tState\n7tst-101\tca\n\t\n")
    with database.sessions.begin() as session:
        result = import_file(session, "tsv", tsv, "tsv", ColumnMapping(plate="plate", state="STATE"), "a", now=NOW)
        assert (result.added, result.skipped) == (1, 0)
        assert list(listed(session, "tsv")) == [("7TST101", "CA")]
        with pytest.raises(HotlistImportError, match="not in the header"):
            import_file(session, "tsv", tsv, "tsv", ColumnMapping(plate="plate", state="region"), "a", now=NOW)
        with pytest.raises(HotlistImportError, match="range"):
            import_file(session, "tsv", tsv, "fixed", ColumnMapping(plate="plate"), "a", now=NOW)
        with pytest.raises(HotlistImportError, match="header name"):
            import_file(session, "tsv", tsv, "tsv", ColumnMapping(plate=(0, 7)), "a", now=NOW)
    with pytest.raises(ValidationError):
        ColumnMapping(plate=(7, 2))
    with pytest.raises(ValidationError):
        ColumnMapping.model_validate({"plate": "plate", "colour": "c"})


def test_dedupe_versions_append_and_replace(database: Database, tmp_path: Path) -> None:
    with database.sessions.begin() as session:
        first = import_file(
            session, "bolo", write_csv(tmp_path / "1.csv", ["AAA111,CA,3", "BBB222,,3", "CCC333,NV,3", "aaa-111,ca,4"]),
            "csv", PLAIN, "ops", now=NOW,
        )  # fmt: skip
    assert (first.added, first.duplicates, first.removed) == (3, 1, 0)  # a repeated plate+state counts once

    with database.sessions.begin() as session:
        second = import_file(
            session, "bolo", write_csv(tmp_path / "2.csv", ["CCC333,NV,3", "DDD444,CA,2"]),
            "csv", PLAIN, "ops", replace=False, now=NOW + timedelta(hours=1),
        )  # fmt: skip
    assert (second.added, second.unchanged, second.removed) == (1, 1, 0)
    assert second.version > first.version

    with database.sessions.begin() as session:
        third = import_file(
            session, "bolo", write_csv(tmp_path / "3.csv", ["BBB222,,3", "CCC333,NV,0", "EEE555,CA,3"]),
            "csv", PLAIN, "ops", now=NOW + timedelta(hours=2),
        )  # fmt: skip
    # BBB222 unchanged; CCC333 changed (superseded); AAA111 and DDD444 missing: removed.
    assert (third.added, third.unchanged, third.removed) == (2, 1, 3)
    assert third.version > second.version

    with database.sessions() as session:
        assert current_version(session) == third.version
        active = listed(session, "bolo")
        assert set(active) == {("BBB222", None), ("CCC333", "NV"), ("EEE555", "CA")}
        assert active[("CCC333", "NV")].priority == 0 and active[("CCC333", "NV")].version_added == third.version
        assert active[("BBB222", None)].version_added == first.version
        gone = session.scalars(select(HotlistEntry).where(HotlistEntry.version_removed == third.version)).all()
        assert sorted(e.plate for e in gone) == ["AAA111", "CCC333", "DDD444"]
        assert all(e.removed_utc == NOW + timedelta(hours=2) for e in gone)
        versions = session.scalars(select(HotlistVersion.version).order_by(HotlistVersion.version)).all()
        assert versions == [first.version, second.version, third.version]


def test_replace_with_no_valid_row_is_refused(database: Database, tmp_path: Path) -> None:
    with database.sessions.begin() as session:
        import_file(session, "bolo", write_csv(tmp_path / "1.csv", ["AAA111,CA,3"]), "csv", PLAIN, "ops", now=NOW)
    with database.sessions.begin() as session, pytest.raises(HotlistImportError, match="refusing"):
        import_file(session, "bolo", write_csv(tmp_path / "2.csv", ["***,CA,3"]), "csv", PLAIN, "ops", now=NOW)
    with database.sessions() as session:
        assert list(listed(session, "bolo")) == [("AAA111", "CA")]


# --- manual changes and expiry ----------------------------------------------------------------


def test_manual_add_and_remove_need_who_and_why(database: Database) -> None:
    with database.sessions.begin() as session:
        create_hotlist(session, "local-bolo", HotlistSettings(default_category="bolo", default_priority=3), NOW)
        for by, reason in (("det.park", ""), ("det.park", "   "), ("", "case 26-1234")):
            with pytest.raises(InvalidEntryError):
                add_entry(session, "local-bolo", "7TST555", "CA", None, None, None, "", by, reason, now=NOW)
        with pytest.raises(InvalidEntryError):
            add_entry(session, "local-bolo", "--", "CA", None, None, None, "", "det.park", "case", now=NOW)
        with pytest.raises(UnknownHotlistError):
            add_entry(session, "no-such-list", "7TST555", "CA", None, None, None, "", "det.park", "case", now=NOW)
        entry = add_entry(
            session, "local-bolo", "7tst 555", "ca", None, None, None, "blue van", "det.park", "case 26-1234", now=NOW
        )
        assert (entry.plate, entry.state, entry.category, entry.priority) == ("7TST555", "CA", "bolo", 3)
        assert (entry.added_by, entry.reason, entry.source) == ("det.park", "case 26-1234", "manual")
        added_version = entry.version_added
        with pytest.raises(DuplicateEntryError):
            add_entry(session, "local-bolo", "7TST555", "CA", None, None, None, "", "det.park", "again", now=NOW)
        assert current_version(session) == added_version  # the refused add left no version behind

    with database.sessions.begin() as session:
        version = session.get_one(HotlistVersion, added_version)
        assert (version.created_by, version.entries_added) == ("det.park", 1)
        assert "case 26-1234" in version.note
        with pytest.raises(InvalidEntryError):
            remove_entry(session, "local-bolo", "7TST555", "CA", "det.park", "", now=NOW)
        removed = remove_entry(session, "local-bolo", "7TST555", "CA", "sgt.kim", "vehicle recovered", now=NOW)
        assert removed > added_version
    with database.sessions.begin() as session:
        version = session.get_one(HotlistVersion, removed)
        assert (version.created_by, version.entries_removed) == ("sgt.kim", 1)
        assert "vehicle recovered" in version.note
        assert listed(session, "local-bolo") == {}
        with pytest.raises(EntryNotFoundError):
            remove_entry(session, "local-bolo", "7TST555", "CA", "sgt.kim", "again", now=NOW)


def test_expired_entries_are_not_active(database: Database, node_id: int) -> None:
    with database.sessions.begin() as session:
        create_hotlist(session, "temp", now=NOW)
        with pytest.raises(InvalidEntryError):
            add_entry(session, "temp", "7ABC123", None, "x", 1, NOW - timedelta(minutes=1), "", "a", "b", now=NOW)
        add_entry(session, "temp", "7ABC123", None, "x", 1, NOW + timedelta(hours=1), "", "a", "b", now=NOW)
    with database.sessions() as session:
        assert [e.plate for e in active_entries(session, NOW)] == ["7ABC123"]
        assert active_entries(session, NOW + timedelta(hours=2)) == []

    service = HotlistService(database.sessions, check_interval_s=0)
    read = make_record()
    store_reads(database.sessions, [read], node_id, DB_IMAGES)
    with database.sessions.begin() as session:
        assert service.match_and_record(session, [read], NOW + timedelta(hours=2)) == []

    with database.sessions.begin() as session:
        before = current_version(session)
        assert expire_entries(session, NOW + timedelta(hours=2)) == 1
        assert expire_entries(session, NOW + timedelta(hours=3)) == 0
        version = session.get_one(HotlistVersion, current_version(session))
        assert version.version > before and (version.created_by, version.entries_removed) == ("expiry", 1)
        assert listed(session, "temp") == {}


# --- matching ---------------------------------------------------------------------------------


def test_match_and_record_hits(database: Database, node_id: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hub.hotlists")
    with database.sessions.begin() as session:
        create_hotlist(session, "stolen", HotlistSettings(default_category="stolen vehicle", default_priority=1))
        create_hotlist(session, "amber", HotlistSettings(lookalike_tolerance=True, default_category="amber"))
        create_hotlist(session, "strict", HotlistSettings(lookalike_tolerance=False))
        create_hotlist(session, "warrants", HotlistSettings(check_state=True, default_category="warrant"))
        for name, plate, state in (
            ("stolen", "7ABC123", None),
            ("amber", "6OAK404", "CA"),
            ("strict", "5OAK505", None),
            ("stolen", "3CND333", None),
            ("warrants", "4XYZ900", "NV"),
            ("warrants", "4XYZ901", "CA"),
        ):
            add_entry(session, name, plate, state, None, None, None, "", "ops", "test", now=NOW)
        stolen_version = listed(session, "stolen")[("7ABC123", None)].version_added

    exact = make_record()
    lookalike = make_record(plate="60AK404", candidates=[])  # O read as 0, on a tolerant list
    intolerant = make_record(plate="50AK505", candidates=[])  # same misread, intolerant list: no hit
    candidate = make_record(plate="9ZZZ999", candidates=[CandidateModel(text="3CND333", confidence=0.3)])
    wrong_state = make_record(plate="4XYZ900", candidates=[], region="us-ca")
    right_state = make_record(plate="4XYZ901", candidates=[], region="us-ca")
    unknown_state = make_record(plate="4XYZ900", candidates=[], region="us")
    reads = [exact, lookalike, intolerant, candidate, wrong_state, right_state, unknown_state]
    store_reads(database.sessions, reads, node_id, DB_IMAGES, received_utc=NOW)

    service = HotlistService(database.sessions, check_interval_s=3600)
    with database.sessions.begin() as session:
        events = service.match_and_record(session, reads, NOW, node_name="car-12")
    got = {(e.read_id, e.list_name, e.match_type, e.matched_text, e.entry_plate) for e in events}
    assert got == {
        (exact.read_id, "stolen", "exact", "7ABC123", "7ABC123"),
        (lookalike.read_id, "amber", "lookalike", "60AK404", "6OAK404"),
        (candidate.read_id, "stolen", "candidate", "3CND333", "3CND333"),
        (right_state.read_id, "warrants", "exact", "4XYZ901", "4XYZ901"),
        (unknown_state.read_id, "warrants", "exact", "4XYZ900", "4XYZ900"),
    }
    first = next(e for e in events if e.read_id == exact.read_id)
    assert (first.plate_read, first.category, first.priority, first.score) == ("7ABC123", "stolen vehicle", 1, 1.0)
    assert (first.node_name, first.camera_id, first.best_utc) == ("car-12", "front", NOW)
    assert (first.latitude, first.longitude) == (32.7, -117.1)
    assert first.crop_sha256 == sha256_hex(exact.crop_jpeg) and first.entry_version == stolen_version
    assert next(e for e in events if e.read_id == candidate.read_id).score == pytest.approx(0.3)
    assert next(e for e in events if e.read_id == lookalike.read_id).score == pytest.approx(0.8)

    with database.sessions() as session:
        hits = {h.id: h for h in session.scalars(select(Hit))}
        assert set(hits) == {e.hit_id for e in events}
        row = hits[first.hit_id]
        assert (row.read_id, row.entry_id, row.match_type, row.matched_text) == (
            exact.read_id,
            first.entry_id,
            "exact",
            "7ABC123",
        )
        assert (row.entry_version, row.score, row.disposition, row.created_utc) == (stolen_version, 1.0, "open", NOW)

    with database.sessions.begin() as session:  # a resent batch records nothing twice
        assert service.match_and_record(session, reads, NOW) == []
        assert session.scalar(select(func.count()).select_from(Hit)) == len(events)

    # Removed after the index was built (no refresh for an hour): no hit all the same.
    with database.sessions.begin() as session:
        remove_entry(session, "stolen", "7ABC123", None, "ops", "recovered", now=NOW)
    again = make_record()
    store_reads(database.sessions, [again], node_id, DB_IMAGES)
    with database.sessions.begin() as session:
        assert service.match_and_record(session, [again], NOW) == []
    assert "7ABC123" not in caplog.text and "6OAK404" not in caplog.text


def test_read_state_from_region() -> None:
    assert [read_state(r) for r in ("us-ca", "us-nj", "us", "eu-de", "unknown")] == ["CA", "NJ", None, None, None]


# --- snapshots --------------------------------------------------------------------------------


def test_snapshot_current_or_new_blob(database: Database) -> None:
    ticks = [0.0]
    service = HotlistService(database.sessions, check_interval_s=1.0, clock=lambda: ticks[0], utc_clock=lambda: NOW)
    empty = service.snapshot(None)
    assert isinstance(empty, tuple) and empty[0].version == 0 and unpack_hotlist_entries(empty[1]) == []

    with database.sessions.begin() as session:
        result = import_file(
            session, "amber", AMBER_FILE, "csv", AMBER_MAPPING, "ops", now=NOW,
            settings=HotlistSettings(lookalike_tolerance=True),
        )  # fmt: skip
    assert isinstance(service.snapshot(None), tuple) and service.version == 0  # checked at most once a second
    ticks[0] = 1.5
    snapshot = service.snapshot(None)
    assert isinstance(snapshot, tuple)
    message, blob = snapshot
    assert isinstance(message, HotlistMessage)
    assert (message.version, message.entry_count, message.created_utc) == (result.version, 3, NOW)
    entries = unpack_hotlist_entries(blob)
    assert {(e.plate, e.state, e.list_name, e.category, e.priority, e.lookalike_tolerance) for e in entries} == {
        ("6OAK404", "CA", "amber", "amber alert", 0, True),
        ("8TST3O9", "CA", "amber", "amber alert", 0, True),
        ("FKE2468", "NV", "amber", "amber alert", 1, True),
    }
    assert service.snapshot(result.version) == HotlistCurrentMessage(version=result.version)
    older = service.snapshot(result.version - 1)
    assert isinstance(older, tuple) and older[1] is blob  # packed once per version
    rebuilds = service.rebuilds

    with database.sessions.begin() as session:
        entry = add_entry(session, "amber", "9TST999", None, None, 0, None, "", "ops", "new alert", now=NOW)
    ticks[0] = 3.0
    newer = service.snapshot(result.version)
    assert isinstance(newer, tuple)
    assert (newer[0].version, newer[0].entry_count) == (entry.version_added, 4)
    assert service.rebuilds == rebuilds + 1
    ticks[0] = 4.5
    assert service.snapshot(entry.version_added) == HotlistCurrentMessage(version=entry.version_added)
    assert service.rebuilds == rebuilds + 1  # unchanged: not rebuilt


def test_settings_change_is_a_version_nodes_see(database: Database) -> None:
    service = HotlistService(database.sessions, check_interval_s=0)
    with database.sessions.begin() as session:
        create_hotlist(session, "stolen", now=NOW)
        add_entry(session, "stolen", "7ABC123", None, "stolen vehicle", 2, None, "", "ops", "test", now=NOW)
    assert service.refresh().match("7A8C123") == []
    with database.sessions.begin() as session:
        with pytest.raises(InvalidEntryError):
            update_hotlist_settings(session, "stolen", HotlistSettings(lookalike_tolerance=True), "ops", "")
        version = update_hotlist_settings(
            session, "stolen", HotlistSettings(lookalike_tolerance=True), "lt.diaz", "too many misreads", now=NOW
        )
    snapshot = service.snapshot(None)
    assert isinstance(snapshot, tuple) and snapshot[0].version == version
    assert [e.lookalike_tolerance for e in unpack_hotlist_entries(snapshot[1])] == [True]
    assert [h.match_type for h in service.index.match("7A8C123")] == ["lookalike"]


# --- scale (correctness only) -----------------------------------------------------------------


def test_hundred_thousand_entries_match_like_a_reference(database: Database, tmp_path: Path) -> None:
    rng = random.Random(20261128)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    plates = list(dict.fromkeys("".join(rng.choices(letters, k=7)) for _ in range(100_000)))
    big, tolerant = plates[:90_000], plates[90_000:]
    big[:200] = tolerant[:200]  # some plates on both lists
    with database.sessions.begin() as session:
        for name, chunk, lookalikes in (("big", big, False), ("tolerant", tolerant, True)):
            path = tmp_path / f"{name}.csv"
            path.write_text("plate\n" + "\n".join(chunk) + "\n")
            result = import_file(
                session, name, path, "csv", ColumnMapping(), "bulk", now=NOW,
                settings=HotlistSettings(lookalike_tolerance=lookalikes),
            )  # fmt: skip
            assert result.added == len(chunk)

    service = HotlistService(database.sessions, check_interval_s=0)
    index = service.refresh()
    assert len(index) == len(big) + len(tolerant)
    by_plate: dict[str, list[ActiveEntry]] = {}
    for entry in active_entries_of(service):
        by_plate.setdefault(entry.plate, []).append(entry)

    queries = rng.sample(big, 300) + rng.sample(tolerant, 300)
    queries += [rng.choice(sorted(lookalike_variants(p) - {p}) or [p]) for p in rng.sample(tolerant, 300)]
    queries += ["".join(rng.choices(letters, k=7)) for _ in range(300)]
    found = 0
    for query in queries:
        expected = {
            (e.entry_id, "exact" if variant == query else "lookalike")
            for variant in lookalike_variants(query)
            for e in by_plate.get(variant, ())
            if variant == query or e.lookalike_tolerance
        }
        got: set[tuple[int, str]] = set()
        for hit in index.match(query):
            assert isinstance(hit.entry, ActiveEntry)
            got.add((hit.entry.entry_id, hit.match_type))
        assert got == expected
        found += len(got)
    assert found >= 900


def active_entries_of(service: HotlistService) -> list[ActiveEntry]:
    with service.sessions() as session:
        return active_entries(session, NOW)


# --- retention --------------------------------------------------------------------------------


def test_retention_purge_keeps_entries_with_hits(database: Database, node_id: int) -> None:
    days = timedelta(days=1)
    with database.sessions.begin() as session:
        create_hotlist(session, "short", HotlistSettings(retention_days=30), NOW - 90 * days)
        create_hotlist(session, "forever", HotlistSettings(), NOW - 90 * days)
        for plate, added in (("AAA111", 40), ("BBB222", 40), ("CCC333", 60), ("DDD444", 60), ("EEE555", 5)):
            add_entry(session, "short", plate, None, None, None, None, "", "ops", "test", now=NOW - added * days)
        add_entry(session, "forever", "FFF666", None, None, None, None, "", "ops", "test", now=NOW - 80 * days)
        remove_entry(session, "short", "CCC333", None, "ops", "cleared", now=NOW - 35 * days)  # removed long ago
        remove_entry(session, "short", "DDD444", None, "ops", "cleared", now=NOW - 10 * days)  # removed lately

    read = make_record(plate="BBB222", candidates=[])
    store_reads(database.sessions, [read], node_id, DB_IMAGES)
    service = HotlistService(database.sessions, check_interval_s=0)
    with database.sessions.begin() as session:
        (event,) = service.match_and_record(session, [read], NOW - 39 * days)

    with database.sessions.begin() as session:
        before = current_version(session)
        assert purge_expired_lists(session, NOW) == 2  # AAA111 (listed 40 days) and CCC333 (removed 35 days ago)
    with database.sessions() as session:
        left = {e.plate: e for e in session.scalars(select(HotlistEntry))}
        assert set(left) == {"BBB222", "DDD444", "EEE555", "FFF666"}
        assert left["BBB222"].version_removed is not None  # retired, kept for its hit
        assert session.get_one(Hit, event.hit_id).entry_id == left["BBB222"].id
        version = session.get_one(HotlistVersion, current_version(session))
        assert version.version > before and (version.created_by, version.entries_removed) == ("retention", 2)
        assert set(listed(session, "short")) == {("EEE555", None)}

    with database.sessions.begin() as session:  # the hit retention purges the hit; the entry can go
        session.execute(delete(Hit))
    with database.sessions.begin() as session:
        assert purge_expired_lists(session, NOW + 31 * days) == 3  # BBB222, DDD444, EEE555
        assert purge_expired_lists(session, NOW + 31 * days, default_days=30) == 1  # FFF666 under the default
        assert session.scalar(select(func.count()).select_from(HotlistEntry)) == 0
