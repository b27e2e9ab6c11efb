"""The hub's console (`alpr-hub holds ...`, `alpr-hub hits ...`) goes through the same gate and log:
holds need a case number as their purpose, hits are seen and disposed of on the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.access.auditlog import AccessLog
from hub.cli import main as hub_main
from hub.db import make_engine, session_factory
from hub.keys import load_access_log_key
from hub.models import Node
from hub.storage import ImageStore
from tests.hub.access.conftest import NOW, hub_config, raise_hit_in
from tests.hub.conftest import Database


def test_console_holds_and_hits_are_gated_and_logged(
    tmp_path: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = ["--config", str(hub_config(tmp_path, database))]
    with database.sessions.begin() as session:
        node = Node(name="car-12", curve_public_key="c" * 40, enrolled_utc=NOW)
        session.add(node)
        session.flush()
        node_id = node.id
    hit_id = raise_hit_in(database.sessions, node_id, ImageStore("db"))
    with database.sessions() as session:
        from hub.models import Hit

        read_id = session.get(Hit, hit_id).read_id  # type: ignore[union-attr]

    assert hub_main([*cli, "hits", "open", "--by", "desk.lee"]) == 0
    assert f"{hit_id}\t" in (listed := capsys.readouterr().out)
    assert "\tP1\tstolen-vehicles\t8XYZ321\texact" in listed
    assert hub_main([*cli, "hits", "dispose", str(hit_id), "--as", "confirmed", "--by", "desk.lee"]) == 0
    assert (
        hub_main([*cli, "holds", "create", read_id, "--case", "evidence", "--by", "sgt.ray", "--reason", "keep"]) == 1
    )
    assert "specific investigation" in capsys.readouterr().err
    assert (
        hub_main(
            [
                *cli,
                "holds",
                "create",
                read_id,
                "--case",
                "26-000777",
                "--by",
                "sgt.ray",
                "--reason",
                "vehicle in a homicide case",
            ]
        )
        == 0
    )
    assert (
        hub_main([*cli, "holds", "release", "1", "--case", "26-000777", "--by", "sgt.ray", "--reason", "case closed"])
        == 0
    )

    engine = make_engine(database.url)
    with session_factory(engine)() as session:
        from sqlalchemy import select

        from hub.access.models import AccessLogEntry

        entries = session.execute(select(AccessLogEntry).order_by(AccessLogEntry.seq)).scalars().all()
        logged = [(e.username, e.action, e.outcome, e.purpose) for e in entries]
        assert AccessLog(load_access_log_key(tmp_path / "hub-data" / "keys")).verify(session).ok
    engine.dispose()
    assert logged == [
        ("console:desk.lee", "hits.view", "allowed", ""),
        ("console:desk.lee", "hit.dispose", "allowed", ""),
        ("console:sgt.ray", "hold.create", "denied", "evidence"),
        ("console:sgt.ray", "hold.create", "allowed", "26-000777"),
        ("console:sgt.ray", "hold.release", "allowed", "26-000777"),
    ]
