"""Finding reads by any likely text (hub.textindex): SQLite's FTS5 index and PostgreSQL's text rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text

from hub import textindex
from hub.cli import main as hub_main
from hub.db import downgrade, make_engine, session_factory, upgrade
from hub.models import Node, Read, ReadCandidateText
from hub.storage import ImageStore, candidate_texts, store_reads
from tests.conftest import NOW, make_record
from tests.hub.conftest import Database

IMAGES = ImageStore("db")


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database (for what only SQLite's index does)."""
    url = f"sqlite:///{tmp_path}/hub.db"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield Database("sqlite", url, engine, session_factory(engine))
    finally:
        engine.dispose()


def found(database: Database, *texts: str) -> set[str]:
    with database.sessions() as session:
        return set(session.scalars(textindex.matching_read_ids(session, texts)))


def test_reads_are_found_by_plate_or_likely_candidate_and_lose_their_texts_when_deleted(
    database: Database, node_id: int
) -> None:
    plain = make_record(plate="8XYZ999", candidates=[])
    read = make_record()  # 7ABC123, candidate 7A8C123
    store_reads(database.sessions, [plain, read], node_id, IMAGES)
    assert found(database, "7A8C123") == {read.read_id}
    assert found(database, "8XYZ999", "7ABC123", "0NONE00") == {plain.read_id, read.read_id}
    assert found(database, "7ABC12") == set() and found(database) == set()  # whole texts only
    with database.sessions.begin() as session:
        session.execute(delete(ReadCandidateText).where(ReadCandidateText.read_id == read.read_id))
        session.execute(delete(Read).where(Read.read_id == read.read_id))
    assert found(database, "7ABC123", "7A8C123") == set()
    with database.sessions() as session:
        assert textindex.verify(session) == 1


def test_a_corrected_plate_is_searchable_once(database: Database, node_id: int) -> None:
    read = make_record()
    store_reads(database.sessions, [read], node_id, IMAGES)
    for _ in range(2):
        with database.sessions.begin() as session:
            textindex.add_text(session, session.get_one(Read, read.read_id), "7ABC128")
    assert found(database, "7ABC128") == {read.read_id}
    assert found(database, "7A8C123") == {read.read_id}  # the earlier texts stay searchable
    with database.sessions() as session:
        assert candidate_texts(session, [read.read_id]) == {read.read_id: {"7ABC123", "7A8C123", "7ABC128"}}
        assert textindex.verify(session) == 3


def test_only_plate_characters_reach_the_index_query(database: Database) -> None:
    with database.sessions() as session, pytest.raises(ValueError, match="letters and digits"):
        textindex.matching_read_ids(session, ['7ABC123" OR "*'])
    with pytest.raises(ValueError):
        textindex.join_texts(["7abc123"])
    assert textindex.join_texts(["7ABC123", "7A8C123"]) == "7ABC123 7A8C123"


def test_verify_catches_an_index_out_of_step_and_rebuild_mends_it(
    sqlite_database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite_database.sessions.begin() as session:
        node = Node(name="car-12", curve_public_key="a" * 40, enrolled_utc=NOW)
        session.add(node)
        session.flush()
        node_id = node.id
    read = make_record()
    store_reads(sqlite_database.sessions, [read], node_id, IMAGES)
    with sqlite_database.sessions.begin() as session:  # what a change behind the triggers' back leaves
        session.execute(text("DROP TRIGGER reads_texts_update"))
        session.execute(text("UPDATE reads SET search_texts = '7ABC123 9QQQ999'"))
    with sqlite_database.sessions() as session, pytest.raises(textindex.TextIndexError, match="rebuild"):
        textindex.verify(session)
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndatabase_url = "{sqlite_database.url}"\n')
    assert hub_main(["--config", str(config), "db", "check-index"]) == 1
    assert "does not match" in capsys.readouterr().err
    assert hub_main(["--config", str(config), "db", "check-index", "--rebuild"]) == 0
    assert "2 texts of the stored reads, all indexed" in capsys.readouterr().out
    assert found(sqlite_database, "9QQQ999") == {read.read_id} and found(sqlite_database, "7A8C123") == set()


def test_migration_0004_moves_the_texts_both_ways(database: Database, node_id: int) -> None:
    reads = [make_record(), make_record(plate="8XYZ999", candidates=[])]
    store_reads(database.sessions, reads, node_id, IMAGES)
    database.engine.dispose()  # the migrations run on their own engine
    downgrade(database.url, "0003")
    with database.engine.connect() as connection:
        rows = {(r, t) for r, t in connection.execute(text("SELECT read_id, text FROM read_candidate_texts"))}
        assert rows == {(reads[0].read_id, "7ABC123"), (reads[0].read_id, "7A8C123"), (reads[1].read_id, "8XYZ999")}
    database.engine.dispose()
    upgrade(database.url)
    assert found(database, "7A8C123") == {reads[0].read_id}
    assert found(database, "8XYZ999", "7ABC123") == {reads[0].read_id, reads[1].read_id}
    with database.sessions() as session:
        assert textindex.verify(session) == 3
        plates = {
            read_id: joined.split()[0] for read_id, joined in session.execute(select(Read.read_id, Read.search_texts))
        }
        assert plates == {reads[0].read_id: "7ABC123", reads[1].read_id: "8XYZ999"}  # the plate first


def test_plate_lookups_combine_in_one_query(database: Database, node_id: int) -> None:
    read, other = make_record(), make_record(plate="7ABD000", candidates=[])
    store_reads(database.sessions, [read, other], node_id, IMAGES)
    with database.sessions() as session:
        exact = textindex.plate_lookup(session, "7ABC123")
        prefix = textindex.plate_lookup(session, "7AB", prefix=True)
        # As the callers use them: beside their own conditions on the plate, which pick the rows.
        both = select(Read.read_id).where(Read.plate == "7ABC123", Read.plate >= "7AB", *exact, *prefix)
        assert list(session.scalars(both)) == [read.read_id]
        starting = select(Read.read_id).where(Read.plate >= "7AB", Read.plate < "7AC", *prefix)
        assert sorted(session.scalars(starting)) == sorted([read.read_id, other.read_id])
