"""The chained access log (edits, deletions and reordering detected, also by `alpr-hub audit verify`),
retention of the log, and stored, approved audit reports (JSON and HTML)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DBAPIError

from hub.access.auditlog import AccessLog, LogEvent
from hub.access.gate import Actor
from hub.access.models import AccessLogChain, AccessLogEntry
from hub.access.service import AccessDenied
from hub.cli import main as hub_main
from hub.db import make_engine, session_factory
from hub.keys import load_access_log_key
from tests.hub.access.conftest import ADMIN, CASE, World, hub_config, make_record
from tests.hub.conftest import Database

PERIOD = {"from_utc": "2026-01-01T00:00:00Z", "to_utc": "2027-01-01T00:00:00Z"}


def activity(world: World) -> dict[str, dict[str, str]]:
    world.store(make_record(plate="7ABC123"), make_record(plate="6TRJ244"))
    investigator = world.login(world.person("rivera", ["authorized_user"]))
    for purpose in (CASE, "suspect Okafor", "investigation", f"{CASE} DOB 01/02/1990"):
        world.client.post(
            world.url("/search"), json={"purpose": purpose, "query": {"plate": "7ABC123"}}, headers=investigator
        )
    world.person("stale", ["authorized_user"], trained=False)
    return {
        "investigator": investigator,
        "auditor": world.login(world.person("otto", ["auditor"], "Auditor")),
        "admin": world.login(world.person(ADMIN, ["administrator"], "Lieutenant")),
    }


def drop_guard(connection: Connection) -> None:
    """What someone with the database owner's rights does first: remove the append-only trigger."""
    on_table = " ON access_log" if connection.dialect.name == "postgresql" else ""
    connection.execute(text(f"DROP TRIGGER IF EXISTS access_log_no_update{on_table}"))


def tamper(world: World, sql: str) -> list[str]:
    with world.database.engine.begin() as connection:
        drop_guard(connection)
        connection.execute(text(sql))
    return list(world.service.verify_log().problems)


def test_the_database_refuses_to_change_an_entry(world: World) -> None:
    activity(world)
    with pytest.raises(DBAPIError, match="append-only"), world.database.engine.begin() as connection:
        connection.execute(text("UPDATE access_log SET purpose = 'suspect Nobody' WHERE seq = 3"))
    assert world.service.verify_log().ok


def test_the_chain_verifies_and_catches_edits_deletions_and_reordering(world: World) -> None:
    activity(world)
    result = world.service.verify_log()
    assert result.ok and result.entries_checked == len(world.log_entries()) >= 10
    problems = tamper(world, "UPDATE access_log SET purpose = 'suspect Nobody' WHERE seq = 3")
    assert problems == ["entry 3: contents do not match its hash (edited)"]


def test_a_deleted_entry_is_caught(world: World) -> None:
    activity(world)
    problems = tamper(world, "DELETE FROM access_log WHERE seq = 4")
    assert "entry 5: expected entry 4 here (entries missing or moved)" in problems
    assert "entry 5: does not link to the entry before it (deleted or reordered)" in problems


def test_reordered_entries_are_caught(world: World) -> None:
    activity(world)
    tamper(world, "UPDATE access_log SET seq = 1000 WHERE seq = 5")
    tamper(world, "UPDATE access_log SET seq = 5 WHERE seq = 6")
    problems = tamper(world, "UPDATE access_log SET seq = 6 WHERE seq = 1000")
    assert any(p.startswith("entry 5:") for p in problems) and any(p.startswith("entry 6:") for p in problems)


def test_cutting_the_newest_entries_is_caught(world: World) -> None:
    activity(world)
    head = world.service.verify_log().head_seq
    problems = tamper(world, f"DELETE FROM access_log WHERE seq = {head}")
    assert problems == [f"chain head is entry {head} but the log ends at entry {head - 1}"]


def test_without_the_key_the_chain_cannot_be_rebuilt(world: World) -> None:
    activity(world)
    tamper(world, "UPDATE access_log SET username = 'someone' WHERE seq = 2")
    entries = world.service.verify_log().entries_checked
    with world.database.sessions() as session:  # recomputing with a guessed key fails everywhere
        assert len(AccessLog(b"k" * 32).verify(session).problems) >= entries


def test_a_chain_rebuilt_with_the_key_still_differs_from_what_an_audit_saw(world: World) -> None:
    people = activity(world)
    seen = world.client.post(world.url("/audit/reports"), json=PERIOD, headers=people["auditor"]).json()
    head = seen["chain_head_seq"]
    # Someone with the database and the key edits an entry and recomputes every hash after it.
    log = world.service.log
    with world.database.engine.begin() as connection:
        drop_guard(connection)
    with world.database.sessions.begin() as session:
        entries = session.execute(select(AccessLogEntry).order_by(AccessLogEntry.seq)).scalars().all()
        entries[2].purpose = "suspect Nobody"
        prev = entries[1].entry_hash
        for entry in entries[2:]:
            entry.prev_hash, entry.entry_hash = prev, log._hash(prev, entry)
            prev = entry.entry_hash
        chain = session.get(AccessLogChain, 1)
        assert chain is not None
        chain.head_hash = prev
    problems = world.service.verify_log().problems
    assert problems == (f"entry {head}: differs from what audit report {seen['id']} saw (chain rewritten)",)


def test_concurrent_appends_keep_one_unbroken_chain(world: World) -> None:
    log = world.service.log
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            for i in range(15):
                with world.database.sessions.begin() as session:
                    log.append(
                        session,
                        LogEvent(f"user{worker}", "Example PD", "search", "allowed", query={"i": i}),
                        world.clock.now,
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = world.service.verify_log()
    entries = world.log_entries()
    assert result.ok and result.entries_checked == result.head_seq == len(entries)
    assert sum(e["username"].startswith("user") for e in entries) == 60


def test_access_log_retention_keeps_the_rest_verifiable(world: World) -> None:
    activity(world)
    before = world.service.verify_log().entries_checked
    world.clock.advance(days=1096)
    world.service.record_training(world.console, "rivera", world.clock.now)  # a new entry after the cut-off
    counts = world.service.run_upkeep()
    assert counts["log_entries_pruned"] == before
    result = world.service.verify_log()
    assert result.ok and result.entries_checked == result.head_seq - before  # training, suspensions, the purge
    assert tamper(world, f"DELETE FROM access_log WHERE seq = {before + 1}")  # the base still anchors the start


def test_audit_report_is_stored_approved_by_someone_else_and_masks_plates(world: World) -> None:
    people = activity(world)
    assert (
        world.client.post(world.url("/audit/reports"), json=PERIOD, headers=people["investigator"]).status_code == 403
    )
    response = world.client.post(world.url("/audit/reports"), json=PERIOD, headers=people["auditor"])
    assert response.status_code == 201
    stored = response.json()
    report = stored["report"]
    assert stored["generated_by"] == "otto" and stored["approved_by"] is None
    assert report["access_log_chain"]["verified"] is True
    rivera = next(u for u in report["accesses_by_user"] if u["username"] == "rivera")
    assert rivera["by_action"]["search:allowed"] == 2 and rivera["by_action"]["search:denied"] == 2
    assert {(p["kind"], p["purpose"]) for p in report["accesses_by_purpose"]} == {
        ("case", CASE),
        ("suspect", "suspect Okafor"),
    }
    assert len(report["denied_attempts"]) >= 2
    assert [e["purpose"] for e in report["flagged_purposes"]] == [f"{CASE} [DOB REDACTED] [DOB REDACTED]"]
    assert "stale" in [u["username"] for u in report["users"]["lapsed_training"]]
    assert report["retention"]["reads_compliant"] is True
    assert "7ABC123" not in json.dumps(stored)  # auditors read the log, not the plates
    assert report["denied_attempts"][0]["query"]["plate"] == "7AB***3"
    assert stored["retain_until_utc"] == (world.clock.now + timedelta(days=1095)).isoformat()

    report_id = stored["id"]
    html = world.client.get(
        world.url(f"/audit/reports/{report_id}"), params={"format": "html"}, headers=people["auditor"]
    )
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "The access-log chain verifies" in html.text and "not yet approved" in html.text
    assert "7ABC123" not in html.text
    approve = world.url(f"/audit/reports/{report_id}/approve")
    assert world.client.post(approve, json={"note": "self"}, headers=people["auditor"]).status_code == 403
    approved = world.client.post(approve, json={"note": "reviewed"}, headers=people["admin"])
    assert approved.status_code == 200 and approved.json()["approved_by"] == ADMIN
    assert world.client.post(approve, json={"note": "again"}, headers=people["admin"]).status_code == 400
    html = world.client.get(
        world.url(f"/audit/reports/{report_id}"), params={"format": "html"}, headers=people["admin"]
    ).text
    assert f"approved by {ADMIN}" in html


def test_an_audit_after_tampering_says_so(world: World) -> None:
    people = activity(world)
    tamper(world, "UPDATE access_log SET result_count = 0 WHERE seq = 6")
    report = world.client.post(world.url("/audit/reports"), json=PERIOD, headers=people["auditor"]).json()["report"]
    assert report["access_log_chain"]["verified"] is False
    assert report["access_log_chain"]["problems"] == ["entry 6: contents do not match its hash (edited)"]


def test_audit_reports_are_kept_for_the_policy_period_then_removed(world: World) -> None:
    people = activity(world)
    world.client.post(world.url("/audit/reports"), json=PERIOD, headers=people["auditor"])
    world.clock.advance(days=1094)
    assert world.service.run_upkeep()["audit_reports_deleted"] == 0
    world.clock.advance(days=2)
    assert world.service.run_upkeep()["audit_reports_deleted"] == 1


def test_the_console_never_reads_alpr_information(world: World) -> None:
    from hub.access.search import SearchQuery

    with pytest.raises(AccessDenied, match="through the API by a trained user"):
        world.service.search(Actor.console("root"), SearchQuery(plate="7ABC123"), CASE)


def test_alpr_hub_audit_verify_catches_a_direct_edit_of_the_table(
    tmp_path: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    config = hub_config(tmp_path, database)
    cli = ["--config", str(config)]
    assert (
        hub_main(
            [
                *cli,
                "users",
                "create",
                "sam",
                "--full-name",
                "Sam Test",
                "--org",
                "Example PD",
                "--classification",
                "Detective",
                "--roles",
                "authorized_user",
                "--by",
                "admin",
            ]
        )
        == 0
    )
    assert hub_main([*cli, "users", "train", "sam", "--date", "2026-11-01", "--by", "admin"]) == 0
    assert hub_main([*cli, "agencies", "add", "Fresno PD", "--kind", "ca_public", "--by", "admin"]) == 0
    assert hub_main([*cli, "audit", "verify"]) == 0
    assert "access log verifies: 3 entries" in capsys.readouterr().out
    engine = make_engine(database.url)
    with engine.begin() as connection:
        drop_guard(connection)
        connection.execute(text("UPDATE access_log SET username = 'console:someone-else' WHERE seq = 2"))
    assert hub_main([*cli, "audit", "verify"]) == 1
    assert "entry 2: contents do not match its hash (edited)" in capsys.readouterr().err
    with session_factory(engine)() as session:  # the key lives beside the hub's other keys, not in the database
        assert not AccessLog(load_access_log_key(tmp_path / "hub-data" / "keys")).verify(session).ok
    engine.dispose()


def test_alpr_hub_audit_report_and_approval_from_the_console(
    tmp_path: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    config = hub_config(tmp_path, database)
    cli = ["--config", str(config)]
    out = tmp_path / "audit.html"
    assert (
        hub_main(
            [
                *cli,
                "audit",
                "report",
                "--from",
                "2026-01-01",
                "--to",
                "2027-01-01",
                "--format",
                "html",
                "--out",
                str(out),
                "--by",
                "auditor.kim",
            ]
        )
        == 0
    )
    assert "ALPR audit report" in out.read_text(encoding="utf-8")
    assert hub_main([*cli, "audit", "approve", "1", "--by", "auditor.kim"]) == 1  # not by who ran it
    assert "someone other than who performed it" in capsys.readouterr().err
    assert hub_main([*cli, "audit", "approve", "1", "--by", "lt.reyes", "--note", "reviewed"]) == 0
    assert hub_main([*cli, "audit", "show", "1", "--by", "auditor.kim"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["approved_by"] == "console:lt.reyes"
