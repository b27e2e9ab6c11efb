"""Hub database fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL: each test gets a fresh, uniquely named schema in the ``test`` database (selected through
``search_path`` in the URL), migrated with ``hub.db.upgrade`` and dropped afterwards. The server is
found from ``ALPR_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
falling back to the user ``root``. Those cases are skipped only when no server answers at all; a
server that answers but accepts none of the users is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from hub.db import make_engine, session_factory, upgrade
from hub.models import Node
from tests.conftest import NOW, make_record

__all__ = ["NOW", "Database", "make_record"]

POSTGRES_URL = os.environ.get("ALPR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

Backend = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class Database:
    backend: Backend
    url: str
    engine: Engine
    sessions: sessionmaker[Session]


def _postgres_candidates() -> list[str]:
    url = make_url(POSTGRES_URL)
    candidates = [url, url.set(username="root")] if url.username != "root" else [url]
    return [c.render_as_string(hide_password=False) for c in candidates]


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An engine on the test database as a user that can create schemas (or skip: no server)."""
    url = make_url(POSTGRES_URL)
    host, port = url.host or "127.0.0.1", url.port or 5432
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        pytest.skip(f"no PostgreSQL server answers at {host}:{port} ({exc}); set ALPR_TEST_POSTGRES_URL")
    errors = []
    for candidate in _postgres_candidates():
        engine = make_engine(candidate, connect_args={"connect_timeout": 5}, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure: try the next user, report all of them at the end
            errors.append(f"{make_url(candidate).username}: {exc}")
            engine.dispose()
            continue
        yield engine
        engine.dispose()
        return
    pytest.fail("PostgreSQL answers but no test user can connect: " + "; ".join(errors))


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/var/hub/hub.db"
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"hubtest_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = admin.url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def database(blank_url: str) -> Iterator[Database]:
    """A migrated database and a session factory on it."""
    upgrade(blank_url)
    engine = make_engine(blank_url)
    backend: Backend = "sqlite" if engine.dialect.name == "sqlite" else "postgresql"
    try:
        yield Database(backend, blank_url, engine, session_factory(engine))
    finally:
        engine.dispose()


@pytest.fixture
def node_id(database: Database) -> int:
    with database.sessions.begin() as session:
        node = Node(name="car-12", curve_public_key="a" * 40, enrolled_utc=NOW)
        session.add(node)
        session.flush()
        return node.id
