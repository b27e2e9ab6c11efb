"""A compliance world for the SB 34 tests: the HTTP API over a real database (SQLite and PostgreSQL).

``world`` holds the service with a settable clock, a registered device, a FastAPI test client, and
helpers to make users (trained and approved by default) and log them in with real TOTP codes.
Reads are stored through the hub's own storage path, with made-up plates only.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from edge.wire import ReadRecord
from hub.access.auditlog import AccessLog
from hub.access.gate import Actor
from hub.access.policy import PolicySettings
from hub.access.service import ComplianceService
from hub.api.app import API_PREFIX, create_app
from hub.hotlists import HotlistService, add_entry, create_hotlist
from hub.keys import create_keys
from hub.models import Hotlist, Node
from hub.storage import ImageStore, store_reads
from tests.hub.conftest import NOW, Database, make_record
from tests.hub.processes import write_hub_config

PASSWORD = "correct-horse-battery-9"
ADMIN = "admin.alvarez"
CASE = "26-004512"
DATA_ROLES = {"authorized_user", "dispatcher", "hotlist_manager"}  # a made-up case number in the default pattern


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Person:
    username: str
    secret: str
    password: str = PASSWORD


@dataclass
class World:
    database: Database
    service: ComplianceService
    clock: Clock
    client: TestClient
    device_key: str
    node_id: int
    console: Actor = field(default_factory=lambda: Actor.console("setup"))
    people: dict[str, Person] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return API_PREFIX + path

    def person(
        self,
        username: str,
        roles: list[str],
        classification: str = "Detective",
        *,
        trained: bool = True,
        approved: bool = True,
        org: str = "Example PD",
    ) -> Person:
        new = self.service.create_user(self.console, username, f"Test {username}", org, classification, roles, PASSWORD)
        secret = pyotp.parse_uri(new.totp_uri).secret  # as the user's authenticator app reads the QR code
        if trained:
            self.service.record_training(self.console, username, self.clock.now - timedelta(days=1))
        if approved and trained and set(roles) & DATA_ROLES:  # approval is for access to ALPR information
            self.service.approve_user(self.console, username)
        self.people[username] = Person(username, secret)
        return self.people[username]

    def code(self, person: Person) -> str:
        return pyotp.TOTP(person.secret).at(self.clock.now)

    def login(self, person: Person, device_key: str | None = None, client: TestClient | None = None) -> dict[str, str]:
        """Headers of a fresh session (the clock moves on 30 s first: a TOTP code is good only once)."""
        self.clock.advance(seconds=30)
        key = device_key or self.device_key
        response = (client or self.client).post(
            self.url("/auth/login"),
            json={"username": person.username, "password": person.password, "totp": self.code(person)},
            headers={"X-Device-Key": key},
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}", "X-Device-Key": key}

    def store(self, *records: ReadRecord) -> list[str]:
        store_reads(self.database.sessions, list(records), self.node_id, self.service.images)
        return [r.read_id for r in records]

    def log_entries(self) -> list[dict[str, Any]]:
        from hub.access.models import AccessLogEntry

        with self.database.sessions() as session:
            rows = session.execute(select(AccessLogEntry).order_by(AccessLogEntry.seq)).scalars()
            return [
                {
                    c: getattr(e, c)
                    for c in (
                        "seq",
                        "username",
                        "organization",
                        "action",
                        "outcome",
                        "purpose",
                        "purpose_kind",
                        "query",
                        "result_count",
                        "client_address",
                        "device",
                        "detail",
                        "logged_utc",
                    )
                }
                for e in rows
            ]


def make_world(database: Database, policy: PolicySettings | None = None) -> World:
    clock = Clock(NOW + timedelta(hours=1))
    service = ComplianceService(
        database.sessions,
        policy or PolicySettings(),
        AccessLog(secrets.token_bytes(32)),
        ImageStore("db"),
        clock=clock,
        issuer="Example PD ALPR",
    )
    with database.sessions.begin() as session:
        node = Node(name="car-12", curve_public_key="b" * 40, enrolled_utc=NOW)
        session.add(node)
        session.flush()
        node_id = node.id
    device_key = service.register_device(Actor.console("setup"), "laptop-0042", "patrol MDC")
    return World(database, service, clock, TestClient(create_app(service)), device_key, node_id)


@pytest.fixture
def world(database: Database) -> Iterator[World]:
    yield make_world(database)


__all__ = ["ADMIN", "CASE", "NOW", "PASSWORD", "Clock", "Person", "World", "make_record", "make_world"]


def raise_hit_in(
    sessions: sessionmaker[Session],
    node_id: int,
    images: ImageStore,
    *,
    plate: str = "8XYZ321",
    list_name: str = "stolen-vehicles",
    priority: int = 1,
    notes: str = "",
    crop_jpeg: bytes = b"\xff\xd8hit-crop\xff\xd9",
) -> int:
    """A read of a made-up plate on a hot list (made if missing) at the entry's ``priority``, matched: one hit."""
    record = make_record(plate=plate, candidates=[], crop_jpeg=crop_jpeg)
    store_reads(sessions, [record], node_id, images)
    with sessions.begin() as session:
        if session.scalar(select(Hotlist.id).where(Hotlist.name == list_name)) is None:
            create_hotlist(session, list_name, now=NOW - timedelta(days=1))
        add_entry(session, list_name, plate, "CA", "stolen vehicle", priority, None, notes, "hl-manager",
                  "NCIC entry", now=NOW - timedelta(days=1))  # fmt: skip
    hotlists = HotlistService(sessions)
    hotlists.refresh(force=True)
    with sessions.begin() as session:
        events = hotlists.match_and_record(session, [record], NOW, "car-12")
    assert len(events) == 1
    return events[0].hit_id


def hub_config(tmp_path: Path, database: Database) -> Path:
    """A hub.toml on ``database`` for the console commands run in-process, with the hub's keys made."""
    config = write_hub_config(tmp_path / "hub.toml", database_url=database.url, api=False)
    create_keys(tmp_path / "hub-data" / "keys")
    return config
