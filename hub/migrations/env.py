"""Alembic environment for the hub: run by ``hub.db.upgrade`` (or the ``alembic`` CLI with hub/alembic.ini).

- The URL comes from ``config.attributes["url"]`` (set by ``hub.db.alembic_config``), else
  ``sqlalchemy.url`` in the ini file, else ``hub.db.DEFAULT_URL``; the engine is ``hub.db.make_engine``'s.
- The whole upgrade is one transaction on both databases (SQLite has transactional DDL too once
  SQLAlchemy, not pysqlite, emits ``BEGIN``), so a failed migration leaves the schema as it was.
- PostgreSQL: an advisory lock makes a second hub process starting at the same moment wait, then
  find the schema current, instead of racing to create the same tables.
- SQLite: foreign keys are off while migrating (``render_as_batch`` rebuilds tables by copying and
  dropping them, which would otherwise cascade-delete or fail), then checked and switched back on.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from hub.db import DEFAULT_URL, make_engine
from hub.models import Base
from hub.textindex import include_name, include_object_on_sqlite

_ADVISORY_LOCK_ID = 0x414C5052  # "ALPR"

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or DEFAULT_URL
    return str(url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_name=include_name,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        include_name=include_name,
        include_object=include_object_on_sqlite if sqlite else None,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_ID})")
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "sqlite":
                _run(connection)
                return
            # PRAGMA foreign_keys is ignored inside a transaction: set it on the raw connection first.
            raw = connection.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys = OFF")
            try:
                _run(connection)
                problems = raw.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise RuntimeError(f"migration left {len(problems)} foreign-key violations, e.g. {problems[0]}")
            finally:
                raw.execute("PRAGMA foreign_keys = ON")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
