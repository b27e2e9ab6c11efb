"""Hub fixtures: every storage test runs on SQLite and on PostgreSQL; an in-process ingest server.

PostgreSQL: each test gets a fresh, uniquely named schema in the ``test`` database (selected through
``search_path`` in the URL), migrated with ``hub.db.upgrade`` and dropped afterwards. The server is
found from ``ALPR_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
falling back to the user ``root``. Those cases are skipped only when no server answers at all; a
server that answers but accepts none of the users is a failure.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
import zmq
from sqlalchemy import Engine, make_url, select, text
from sqlalchemy.orm import Session, sessionmaker

from edge import wire
from edge.sealing import Opener, generate_spool_keypair
from edge.spool import Spool
from edge.uplink import CurveKeys, Uplink, UplinkConfig
from hub.db import make_engine, session_factory, upgrade
from hub.ingest import IngestServer
from hub.models import Node, Read
from hub.storage import ImageStore
from tests.conftest import NOW, make_record

__all__ = ["NOW", "Database", "InProcessHub", "enroll", "make_record", "make_uplink", "stored_ids", "wait_for"]

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


# --- an in-process ingest server and the nodes that talk to it --------------------------------------

WAIT_S = 60.0
"""Upper bound for any one wait: generous, because the CI machine may be busy (never asserted as a timing)."""


def wait_for(condition: Callable[[], bool], what: str = "condition", timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass(frozen=True)
class InProcessHub:
    """A started :class:`IngestServer` on a free localhost port, images on disk under the test's folder."""

    server: IngestServer
    curve_public: str
    spool_public: bytes

    @property
    def endpoint(self) -> str:
        return self.server.endpoint


@pytest.fixture
def hub(database: Database, tmp_path: Path) -> Iterator[InProcessHub]:
    public, secret = zmq.curve_keypair()
    spool_public, spool_private = generate_spool_keypair()
    server = IngestServer(
        "tcp://127.0.0.1:*",
        public,
        secret,
        database.sessions,
        ImageStore("disk", tmp_path / "images"),
        Opener(spool_private),
    )
    server.registry.refresh_s = 0.2  # revocations seen within a fifth of a second
    server.start()
    try:
        yield InProcessHub(server, public.decode(), spool_public)
    finally:
        server.stop()


def enroll(database: Database, name: str, hub_public: str = "") -> CurveKeys:
    """Enrol node ``name`` with a fresh CurveZMQ key pair; its keys (``hub_public`` as given)."""
    public, secret = zmq.curve_keypair()
    with database.sessions.begin() as session:
        session.add(Node(name=name, curve_public_key=public.decode(), enrolled_utc=datetime.now(UTC)))
    return CurveKeys(public.decode(), secret.decode(), hub_public)


def node_health() -> wire.NodeHealth:
    return wire.NodeHealth(
        spool_depth=0, spool_bytes=0, evictions_total=0, gps_status="3d", uptime_s=1.0, software_version="test"
    )


def make_uplink(name: str, endpoint: str, keys: CurveKeys, spool: Spool, heartbeat_interval_s: float = 0.3) -> Uplink:
    """A real edge uplink with short time-outs and back-off, so tests recover from a lost reply quickly."""
    config = UplinkConfig(
        node_id=name,
        hub_endpoint=endpoint,
        keys=keys,
        ack_timeout_s=1.0,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    return Uplink(config, spool, node_health)


def stored_ids(sessions: sessionmaker[Session]) -> list[str]:
    """Every stored read id, one per row (a duplicate row shows as a repeated id)."""
    with sessions() as session:
        return list(session.scalars(select(Read.read_id)))
