"""Sharing only with California public agencies (Civ. Code 1798.90.55(b)), exports and downloads with
destroy-by dates (429.9), through the HTTP API."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import timedelta

import pytest

from hub.access.policy import PolicySettings
from tests.hub.access.conftest import ADMIN, CASE, World, make_record

QUERY = {"plate": "7ABC123"}


@pytest.fixture
def people(world: World) -> dict[str, dict[str, str]]:
    world.store(make_record(plate="7ABC123", context_jpeg=b"\xff\xd8ctx\xff\xd9"), make_record(plate="7ABC123"))
    return {
        "investigator": world.login(world.person("rivera", ["authorized_user"])),
        "admin": world.login(world.person(ADMIN, ["administrator", "authorized_user"], "Sergeant")),
        "auditor": world.login(world.person("otto", ["auditor"], "Auditor")),
    }


def add_agencies(world: World, admin: dict[str, str]) -> None:
    for name, kind in [
        ("San Diego County Sheriff", "ca_public"),
        ("US Customs and Border Protection", "federal"),
        ("Phoenix Police Department", "out_of_state"),
        ("Acme Repossession LLC", "private"),
    ]:
        response = world.client.post(world.url("/agencies"), json={"name": name, "kind": kind}, headers=admin)
        assert response.status_code == 201


def share_body(agency: str) -> dict[str, object]:
    return {
        "agency": agency,
        "contact": "Det. Example, 555-0100",
        "purpose": CASE,
        "need": "vehicle linked to a burglary series in their county",
        "query": QUERY,
    }


@pytest.mark.parametrize(
    "agency", ["US Customs and Border Protection", "Phoenix Police Department", "Acme Repossession LLC"]
)
def test_sharing_outside_california_public_agencies_is_refused_and_recorded(
    world: World, people: dict[str, dict[str, str]], agency: str
) -> None:
    add_agencies(world, people["admin"])
    response = world.client.post(world.url("/shares"), json=share_body(agency), headers=people["investigator"])
    assert response.status_code == 403
    assert "1798.90.55(b)" in response.json()["detail"]
    shares = world.client.get(world.url("/shares"), headers=people["admin"]).json()
    assert [(s["agency"], s["status"], s["decided_by"]) for s in shares] == [(agency, "refused", "policy")]
    entry = [e for e in world.log_entries() if e["action"] == "share.request"][-1]
    assert entry["outcome"] == "denied" and entry["query"]["agency"] == agency


def test_unknown_agency_must_be_registered_first(world: World, people: dict[str, dict[str, str]]) -> None:
    response = world.client.post(world.url("/shares"), json=share_body("Nowhere PD"), headers=people["investigator"])
    assert response.status_code == 400 and "registry" in response.json()["detail"]


def test_a_california_public_agency_share_is_approved_transferred_and_reported(
    world: World, people: dict[str, dict[str, str]]
) -> None:
    add_agencies(world, people["admin"])
    agency = "San Diego County Sheriff"
    created = world.client.post(world.url("/shares"), json=share_body(agency), headers=people["investigator"])
    assert created.status_code == 201
    share_id = created.json()["share_id"]
    early = world.client.post(world.url(f"/shares/{share_id}/transfer"), json={}, headers=people["admin"])
    assert early.status_code == 400 and "not approved" in early.json()["detail"]  # approval comes first
    no_note = world.client.post(
        world.url(f"/shares/{share_id}/decision"), json={"approve": True, "note": ""}, headers=people["admin"]
    )
    assert no_note.status_code == 400
    not_admin = world.client.post(
        world.url(f"/shares/{share_id}/decision"), headers=people["investigator"], json={"approve": True, "note": "ok"}
    )
    assert not_admin.status_code == 403
    decided = world.client.post(
        world.url(f"/shares/{share_id}/decision"),
        headers=people["admin"],
        json={"approve": True, "note": "purpose verified by phone; need: active case"},
    )
    assert decided.status_code == 204
    transfer = world.client.post(
        world.url(f"/shares/{share_id}/transfer"), json={"format": "csv"}, headers=people["admin"]
    )
    assert transfer.status_code == 200 and transfer.headers["x-records"] == "2"
    archive = zipfile.ZipFile(io.BytesIO(transfer.content))
    manifest = json.loads(archive.read("MANIFEST.json"))
    assert manifest["shared_with"] == agency and manifest["purpose"] == CASE and manifest["records"] == 2
    rows = list(csv.DictReader(io.StringIO(archive.read("reads.csv").decode())))
    assert {r["plate"] for r in rows} == {"7ABC123"}
    assert all(r["crop_image"] in archive.namelist() for r in rows)
    assert b"\xff\xd8ctx\xff\xd9" in [archive.read(n) for n in archive.namelist() if n.startswith("images/")]
    again = world.client.post(world.url(f"/shares/{share_id}/transfer"), json={}, headers=people["admin"])
    assert again.status_code == 400  # one transfer per approved request
    shares = world.client.get(world.url("/shares"), headers=people["admin"]).json()
    assert shares[0]["status"] == "transferred" and shares[0]["records"] == 2
    report = world.client.post(
        world.url("/audit/reports"),
        headers=people["auditor"],
        json={"from_utc": "2026-01-01T00:00:00Z", "to_utc": "2027-01-01T00:00:00Z"},
    ).json()
    assert [a["agency"] for a in report["report"]["agencies_shared_with"]] == [agency]


def test_exports_record_a_destroy_by_date_and_overdue_ones_are_reported(
    world: World, people: dict[str, dict[str, str]]
) -> None:
    response = world.client.post(
        world.url("/exports"),
        headers=people["investigator"],
        json={"purpose": CASE, "query": QUERY, "format": "json", "kind": "download"},
    )
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    manifest = json.loads(archive.read("MANIFEST.json"))
    days = PolicySettings().retention.downloads_destroy_days
    assert manifest["destroy_by_utc"] == (world.clock.now + timedelta(days=days)).isoformat()
    assert len(json.loads(archive.read("reads.json"))) == 2
    generic = world.client.post(
        world.url("/exports"), headers=people["investigator"], json={"purpose": "investigation", "query": QUERY}
    )
    assert generic.status_code == 403
    overdue_url = world.url("/downloads/overdue")
    assert world.client.get(overdue_url, headers=people["auditor"]).json() == []

    world.clock.advance(days=days + 1)
    world.service.record_training(world.console, "rivera", world.clock.now)  # keep the investigator current
    auditor, investigator = world.login(world.people["otto"]), world.login(world.people["rivera"])
    overdue = world.client.get(overdue_url, headers=auditor).json()
    assert [(d["username"], d["kind"], d["records"]) for d in overdue] == [("rivera", "download", 2)]
    destroyed = world.url(f"/downloads/{overdue[0]['id']}/destroyed")
    someone_else = world.login(world.person("patel", ["authorized_user"]))
    assert world.client.post(destroyed, headers=someone_else).status_code == 404  # only the holder confirms
    assert world.client.post(destroyed, headers=investigator).status_code == 204
    assert world.client.get(overdue_url, headers=auditor).json() == []
