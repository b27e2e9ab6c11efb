"""Database engines, sessions and schema migrations for the hub.

Two back ends: SQLite (the embedded default, one file under ``var/``) and PostgreSQL (through psycopg
3). Both are configured for durability first, because the hub acknowledges a read to the edge only
after its commit returns and the edge then deletes it from its spool:

- SQLite runs in WAL mode with ``synchronous=FULL`` (a commit survives a power cut), foreign keys on,
  and a busy timeout so a second writer waits instead of failing. pysqlite's own transaction handling
  is switched off and SQLAlchemy emits ``BEGIN`` itself, so reads share the writer's transaction and
  savepoints work (the SQLAlchemy "serializable isolation / savepoints" recipe).
- PostgreSQL URLs are pointed at the psycopg 3 driver whatever driver they name.

The schema belongs to Alembic: :func:`upgrade` runs the migrations shipped inside this package
(``hub/migrations``), so it works from any working directory and from an installed package. A hub
serves only a database at the newest revision (:func:`require_current_schema`): after a software
upgrade it says to run ``alpr-hub db upgrade`` instead of failing on each batch it stores.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///var/hub/hub.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite connection waits for another writer before giving up with "database is locked"."""
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 2_000
"""Checkpoint once the WAL holds this many pages (8 MB), not SQLite's default 1,000. Each ingest commit
touches hundreds to thousands of index pages at random (plates, hashes), so at the default nearly every
commit ran a checkpoint and its fsync; a longer WAL writes a page hot in many commits back once. Longer
still is faster but the commit that runs the checkpoint (and its acks) waits for it: measured on this
project's machine (``docs/benchmarks.md``), 1,000 pages gave 3,600 reads/s with ack p99 26 ms, 2,000
4,300 and 27 ms, 4,000 4,800 and 48 ms, 10,000 4,500-5,500 and 44-74 ms. Checkpointing on a thread of
its own was tried and was worse (p99 230 ms: its writes and fsync delay the commits' WAL fsync)."""
SQLITE_JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""A WAL grown past this by a burst is truncated back to it after a checkpoint."""

_POSTGRES_DRIVERS = {"postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgresql+pg8000"}


def normalize_url(url: str | URL) -> URL:
    """The URL the hub connects with: PostgreSQL always through psycopg 3 (``postgresql+psycopg``)."""
    parsed = make_url(url)
    if parsed.drivername in _POSTGRES_DRIVERS:
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
    return parsed


def json_dumps(value: Any) -> str:
    """The hub's JSON encoder for JSON columns (orjson: several times faster than ``json.dumps`` per read,
    which ingest does five times a read). Compact text; what it decodes to is what ``json.dumps`` gives."""
    return orjson.dumps(value).decode()


def make_engine(url: str | URL, **engine_kwargs: Any) -> Engine:
    """An engine for ``url`` configured for the hub (see the module docstring).

    For a SQLite file the parent directory is created. Extra keyword arguments go to
    :func:`sqlalchemy.create_engine` (pool sizes, ``echo``...).
    """
    parsed = normalize_url(url)
    engine_kwargs.setdefault("json_serializer", json_dumps)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **engine_kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **engine_kwargs)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    assert isinstance(dbapi_connection, sqlite3.Connection)
    # Hand transaction control to SQLAlchemy (see _sqlite_on_begin): pysqlite would otherwise run
    # SELECTs outside any transaction and break SAVEPOINT.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is not None and str(mode[0]).lower() not in ("wal", "memory"):
            logger.warning("SQLite refused WAL mode (journal_mode=%s)", mode[0])
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA journal_size_limit = {SQLITE_JOURNAL_SIZE_LIMIT_BYTES}")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front. A deferred transaction that reads and then writes
    # fails at once with "database is locked" when another writer got in between (SQLite cannot
    # wait there without risking a deadlock); waiting on busy_timeout at BEGIN is what we want.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | URL) -> Config:
    """An Alembic configuration for the migrations inside this package, pointed at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    rendered = normalize_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    config.attributes["url"] = rendered
    return config


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (the newest by default)."""
    logger.info("migrating %s to %s", normalize_url(url).render_as_string(hide_password=True), revision)
    command.upgrade(alembic_config(url), revision)


class SchemaOutOfDateError(RuntimeError):
    """The database is not at the revision this software's migrations end at."""


def require_current_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDateError` unless the database at ``engine`` is at the newest revision."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if current == head:
        return
    if current is None:
        raise SchemaOutOfDateError("the database has no hub schema: run `alpr-hub init` (or `alpr-hub db upgrade`)")
    raise SchemaOutOfDateError(
        f"the database schema is at revision {current}, this hub needs {head}: run `alpr-hub db upgrade`"
        " (a revision this hub does not know was written by newer software)"
    )


def downgrade(url: str | URL, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (an empty schema by default)."""
    logger.info("migrating %s down to %s", normalize_url(url).render_as_string(hide_password=True), revision)
    command.downgrade(alembic_config(url), revision)
