"""The Alembic migrations create exactly the schema hub/models.py describes, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, UniqueConstraint, delete, inspect, text

from hub import textindex
from hub.db import DEFAULT_URL, MIGRATIONS_DIR, alembic_config, downgrade, make_engine, normalize_url, upgrade
from hub.models import Base, Image, Read
from hub.storage import ImageStore, sha256_hex, store_reads
from hub.textindex import (
    FTS_TABLE,
    POSTGRESQL_ONLY_INDEXES,
    include_name,
    include_object_on_sqlite,
    is_index_table,
)
from tests.hub.conftest import Database, make_record


def _schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        opts: dict[str, Any] = {"include_name": include_name}
        if connection.dialect.name == "sqlite":
            opts["include_object"] = include_object_on_sqlite  # as the migrations' env.py does
        context = MigrationContext.configure(connection, opts=opts)
        differences: list[object] = compare_metadata(context, Base.metadata)
        return differences


def test_upgrade_creates_every_table_and_index(blank_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the migrations are found from the package, not the working directory
    upgrade(blank_url)
    upgrade(blank_url)  # already at head: nothing to do
    engine = make_engine(blank_url)
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        fts = {name for name in tables if is_index_table(name)}
        assert tables - fts == set(Base.metadata.tables) | {"alembic_version"}
        assert (FTS_TABLE in fts) == (engine.dialect.name == "sqlite")
        for table in Base.metadata.sorted_tables:
            indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if engine.dialect.name == "sqlite" and index.name in POSTGRESQL_ONLY_INDEXES:
                    assert index.name not in indexes  # plates are found through the FTS5 index there
                    continue
                assert indexes.get(index.name) == [c.name for c in index.columns], (table.name, index.name)
            uniques = {uq["name"] for uq in inspector.get_unique_constraints(table.name)}
            assert uniques >= {c.name for c in table.constraints if isinstance(c, UniqueConstraint)}
            foreign = {fk["referred_table"] for fk in inspector.get_foreign_keys(table.name)}
            assert foreign == {fk.column.table.name for fk in table.foreign_keys}, table.name
        has_plate_index = "ix_reads_plate" in {ix["name"] for ix in inspector.get_indexes("reads")}
        assert has_plate_index == (engine.dialect.name == "postgresql")
        assert _schema_differences(engine) == []
        with engine.connect() as connection:
            head = ScriptDirectory.from_config(alembic_config(blank_url)).get_current_head()
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
            if engine.dialect.name == "sqlite":  # hot-list versions never reuse a number
                sql = connection.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'hotlist_versions'")
                ).scalar_one()
                assert "AUTOINCREMENT" in sql
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(blank_url: str) -> None:
    upgrade(blank_url)
    downgrade(blank_url)
    engine = make_engine(blank_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(blank_url)
        assert _schema_differences(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["sqlite:///var/hub/hub.db", "postgresql://hub@db.invalid/hub"])
def test_migrations_render_offline_without_a_database(url: str) -> None:
    config = alembic_config(url)
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    sql = config.output_buffer.getvalue()
    assert "CREATE TABLE reads" in sql
    assert "CREATE INDEX ix_reads_plate ON reads (plate)" in sql


def test_migration_scripts_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    revisions = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("0*.py"))
    assert revisions[0] == "0001_initial.py"
    initial = (MIGRATIONS_DIR / "versions" / "0001_initial.py").read_text()
    assert "import hub" not in initial and "from hub" not in initial  # frozen: no model imports
    assert DEFAULT_URL == "sqlite:///var/hub/hub.db"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"


def test_migration_0005_moves_image_references_both_ways(database: Database, node_id: int) -> None:
    """Reads keep their images (by hash going down, by id going up), and on SQLite their rowids: the
    text index still finds them without a rebuild."""
    shared = b"\xff\xd8shared\xff\xd9"
    reads = [make_record(crop_jpeg=shared), make_record(plate="8XYZ999", candidates=[], context_jpeg=shared)]
    gone = make_record(plate="5GON123", candidates=[])
    store_reads(database.sessions, [gone], node_id, ImageStore("db"))
    store_reads(database.sessions, reads, node_id, ImageStore("db"))
    with database.sessions.begin() as session:  # a gap in the rowids, which a renumbering copy would close
        session.execute(delete(Read).where(Read.read_id == gone.read_id))
        ImageStore("db").delete_unreferenced(session)
    database.engine.dispose()  # the migrations run on their own engine
    downgrade(database.url, "0004")
    inspector = inspect(database.engine)
    assert {"crop_image_id", "context_image_id"}.isdisjoint(c["name"] for c in inspector.get_columns("reads"))
    assert {fk["name"] for fk in inspector.get_foreign_keys("reads")} >= {"fk_reads_crop_sha256_images"}
    assert inspector.get_pk_constraint("images")["constrained_columns"] == ["sha256"]
    database.engine.dispose()
    upgrade(database.url)
    assert _schema_differences(database.engine) == []
    with database.sessions() as session:
        for record in reads:
            row = session.get_one(Read, record.read_id)
            assert ImageStore("db").get(session, row.crop_sha256 or "") == record.crop_jpeg
            assert session.get_one(Image, row.crop_image_id).sha256 == sha256_hex(record.crop_jpeg)
            if record.context_jpeg:
                assert session.get_one(Image, row.context_image_id).sha256 == sha256_hex(record.context_jpeg)
        assert textindex.verify(session) == 3  # the plates and the candidate 7A8C123, under the same rowids
        found = set(session.scalars(textindex.matching_read_ids(session, ["8XYZ999", "7A8C123"])))
        assert found == {reads[0].read_id, reads[1].read_id}
        assert ImageStore("db").delete_unreferenced(session) == 0  # the shared image is still in use twice
        session.execute(delete(Read).where(Read.read_id == reads[0].read_id))
        assert ImageStore("db").delete_unreferenced(session) == 0  # still the second read's context
        session.execute(delete(Read).where(Read.read_id == reads[1].read_id))
        assert ImageStore("db").delete_unreferenced(session) == 2  # that read's crop and the shared image
        session.commit()
