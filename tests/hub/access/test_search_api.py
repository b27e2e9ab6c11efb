"""Purpose-gated search, read and image views through the HTTP API, and what the access log records."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from edge.wire import GpsModel
from hub.access.models import AccessLogEntry
from hub.api.app import create_app
from hub.models import Read
from tests.hub.access.conftest import CASE, NOW, World, make_record

INJECTIONS = [
    "'; DROP TABLE reads; --",
    "7ABC123' OR '1'='1",
    "%",
    "_%_",
    '" OR ""="',
    "1; DELETE FROM access_log",
    "\\x00",
    "*' UNION SELECT password_hash FROM users --",
]


@pytest.fixture
def searcher(world: World) -> dict[str, str]:
    return world.login(world.person("rivera", ["authorized_user"], org="Example PD Investigations"))


def seed(world: World) -> dict[str, str]:
    """Five made-up reads: two of one plate, a look-alike, another camera, one far away and older."""
    reads = {
        "a1": make_record(plate="7ABC123", best_utc=NOW, camera_id="front"),
        "a2": make_record(
            plate="7ABC123",
            best_utc=NOW - timedelta(hours=5),
            camera_id="rear",
            context_jpeg=b"\xff\xd8context-a2\xff\xd9",
        ),
        "b": make_record(plate="7A8C123", best_utc=NOW - timedelta(hours=1), candidates=[]),
        "c": make_record(plate="7ABD999", best_utc=NOW - timedelta(hours=2), candidates=[]),
        "far": make_record(
            plate="5XYZ789",
            best_utc=NOW - timedelta(days=3),
            candidates=[],
            gps=GpsModel(latitude=34.05, longitude=-118.25, mode=3, gps_time=NOW),
        ),
    }
    world.store(*reads.values())
    return {name: record.read_id for name, record in reads.items()}


def found(world: World, headers: dict[str, str], query: dict[str, Any], purpose: str = CASE) -> list[str]:
    response = world.client.post(world.url("/search"), json={"purpose": purpose, "query": query}, headers=headers)
    assert response.status_code == 200, response.text
    return [r["read_id"] for r in response.json()["results"]]


def test_search_by_plate_pattern_lookalike_time_camera_and_place(world: World, searcher: dict[str, str]) -> None:
    ids = seed(world)
    assert found(world, searcher, {"plate": "7abc-123"}) == [ids["a1"], ids["a2"]]  # newest first, normalised
    assert set(found(world, searcher, {"plate": "7A8C123"})) == {ids["a1"], ids["a2"], ids["b"]}  # candidates too
    assert set(found(world, searcher, {"pattern": "7AB*"})) == {ids["a1"], ids["a2"], ids["c"]}
    assert found(world, searcher, {"pattern": "7AB?999"}) == [ids["c"]]
    assert set(found(world, searcher, {"fuzzy": "7A8C123"})) == {ids["a1"], ids["a2"], ids["b"]}
    assert found(world, searcher, {"fuzzy": "7ABD999"}) == [ids["c"]]
    window = {"plate": "7ABC123", "from_utc": (NOW - timedelta(hours=1)).isoformat(), "to_utc": NOW.isoformat()}
    assert found(world, searcher, window) == [ids["a1"]]
    assert found(world, searcher, {"pattern": "7AB*", "camera": "rear"}) == [ids["a2"]]
    assert set(found(world, searcher, {"node": "car-12", "pattern": "*123"})) == {ids["a1"], ids["a2"], ids["b"]}
    near_la = {"near": {"latitude": 34.06, "longitude": -118.25, "radius_m": 2000}}
    assert found(world, searcher, near_la) == [ids["far"]]  # ~1.1 km away
    assert found(world, searcher, {"near": {"latitude": 34.08, "longitude": -118.25, "radius_m": 2000}}) == []


def test_results_are_paginated_and_carry_their_images(world: World, searcher: dict[str, str]) -> None:
    ids = seed(world)
    body = {"purpose": CASE, "query": {"pattern": "7*1*", "node": "car-12", "page_size": 2, "page": 2}}
    response = world.client.post(world.url("/search"), json=body, headers=searcher).json()
    assert response["total"] == 3 and response["page"] == 2
    assert [r["read_id"] for r in response["results"]] == [ids["a2"]]  # newest first: a1, b | a2
    assert found(world, searcher, {"pattern": "7*1*", "page_size": 2}) == [ids["a1"], ids["b"]]
    result = world.client.post(
        world.url("/search"), json={"purpose": CASE, "query": {"plate": "7ABC123"}}, headers=searcher
    ).json()["results"][1]
    assert result["context_url"] and result["crop_url"]
    image = world.client.get(result["context_url"], params={"purpose": CASE}, headers=searcher)
    assert image.status_code == 200 and image.content == b"\xff\xd8context-a2\xff\xd9"
    assert image.headers["content-type"] == "image/jpeg"
    no_purpose = world.client.get(result["context_url"], params={"purpose": "investigation"}, headers=searcher)
    assert no_purpose.status_code == 403
    missing = world.client.get(world.url("/images/" + "0" * 64), params={"purpose": CASE}, headers=searcher)
    assert missing.status_code == 404


def test_every_access_is_logged_with_what_the_statute_requires(world: World, searcher: dict[str, str]) -> None:
    ids = seed(world)
    found(world, searcher, {"plate": "7ABC123"}, purpose=f"case {CASE} stolen trailer")
    detail = world.client.get(world.url(f"/reads/{ids['b']}"), params={"purpose": "suspect Okafor"}, headers=searcher)
    assert detail.status_code == 200 and detail.json()["plate"] == "7A8C123"
    refused = world.client.post(
        world.url("/search"), json={"purpose": "investigation", "query": {"plate": "7ABC123"}}, headers=searcher
    )
    assert refused.status_code == 403
    assert "specific investigation" in refused.json()["detail"]
    entries = [e for e in world.log_entries() if e["action"] in ("search", "read.view")]
    search, view, denied = entries
    # 429.10: date and time, the plate or other data elements queried, username and organization, purpose.
    assert search["logged_utc"] == world.clock.now
    assert search["query"] == {"plate": "7ABC123"}
    assert (search["username"], search["organization"]) == ("rivera", "Example PD Investigations")
    assert search["purpose"] == f"case {CASE} stolen trailer" and search["purpose_kind"] == "case"
    assert search["outcome"] == "allowed" and search["result_count"] == 2
    assert search["client_address"] == "testclient" and search["device"] == "laptop-0042"
    assert view["query"] == {"read_id": ids["b"], "plate": "7A8C123"} and view["purpose_kind"] == "suspect"
    assert denied["outcome"] == "denied" and denied["purpose_kind"] == "refused"
    assert denied["query"] == {"plate": "7ABC123"}  # refused attempts are recorded with what they asked for


@pytest.mark.parametrize(
    ("purpose", "expect"),
    [
        ("investigation", "specific investigation"),
        ("Investigation ", "specific investigation"),
        ("case", "specific investigation"),
        ("suspect", "specific investigation"),
        ("", "a purpose is required"),
        (f"{CASE} suspect DOB 04/12/1988", "date of birth"),
        (f"{CASE} SSN 123-45-6789", "Social Security number"),
        ("suspect Smith DL B1234567", "driver licence number"),
        (f"{CASE} per CLETS return", "CLETS"),
        ("suspect Jones, prior convictions for burglary", "criminal-history"),
        ("suspect John Smith", "specific investigation"),  # a last name only
    ],
)
def test_purposes_that_do_not_name_the_investigation_or_carry_personal_data_are_refused(
    world: World, searcher: dict[str, str], purpose: str, expect: str
) -> None:
    seed(world)
    response = world.client.post(
        world.url("/search"), json={"purpose": purpose, "query": {"plate": "7ABC123"}}, headers=searcher
    )
    assert response.status_code == 403
    assert expect in response.json()["detail"]
    entry = [e for e in world.log_entries() if e["action"] == "search"][-1]
    assert entry["outcome"] == "denied"
    for identifier in ("123-45-6789", "04/12/1988", "B1234567"):
        assert identifier not in entry["purpose"]  # the log does not become a store of personal identifiers


@pytest.mark.parametrize("purpose", [CASE, f"Case #{CASE}: hit-and-run", "suspect Okafor", "Suspect: O'Neil"])
def test_purposes_naming_a_case_or_a_suspect_are_accepted(world: World, searcher: dict[str, str], purpose: str) -> None:
    seed(world)
    assert len(found(world, searcher, {"plate": "7ABC123"}, purpose=purpose)) == 2


def test_sql_injection_strings_in_every_search_field_are_harmless(world: World, searcher: dict[str, str]) -> None:
    seed(world)
    with world.database.sessions() as session:
        reads_before = session.execute(select(func.count()).select_from(Read)).scalar_one()
    for text in INJECTIONS:
        for field in ("plate", "pattern", "fuzzy", "node", "camera"):
            response = world.client.post(
                world.url("/search"), json={"purpose": CASE, "query": {field: text}}, headers=searcher
            )
            assert response.status_code in (200, 422), (field, text, response.text)
            if response.status_code == 200:
                assert response.json()["total"] <= 2, (field, text)  # never "everything"
            else:
                assert text not in response.text  # errors say where, not what
        response = world.client.post(
            world.url("/search"), json={"purpose": text, "query": {"plate": "7ABC123"}}, headers=searcher
        )
        assert response.status_code == 403
        assert world.client.get(
            world.url("/reads/" + text), params={"purpose": CASE}, headers=searcher
        ).status_code in (404, 405)
    with world.database.sessions() as session:
        assert session.execute(select(func.count()).select_from(Read)).scalar_one() == reads_before
        assert session.execute(select(func.count()).select_from(AccessLogEntry)).scalar_one() > len(INJECTIONS)
    assert world.service.verify_log().ok


def test_a_search_must_name_something_and_errors_do_not_echo_plates(world: World, searcher: dict[str, str]) -> None:
    seed(world)
    everything = world.client.post(world.url("/search"), json={"purpose": CASE, "query": {}}, headers=searcher)
    assert everything.status_code == 422 and "searching every read is not allowed" in everything.text
    too_long = world.client.post(
        world.url("/search"), json={"purpose": CASE, "query": {"plate": "7ABC123XYZ9876"}}, headers=searcher
    )
    assert too_long.status_code == 422 and "7ABC123XYZ9876" not in too_long.text
    missing = world.client.get(
        world.url("/reads/01900000-0000-7000-8000-000000000000"), params={"purpose": CASE}, headers=searcher
    )
    assert missing.status_code == 404
    assert [e["outcome"] for e in world.log_entries() if e["action"] == "read.view"] == ["error"]


def test_hub_logs_do_not_print_plates(world: World, searcher: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    ids = seed(world)
    with caplog.at_level(logging.DEBUG):
        found(world, searcher, {"plate": "7ABC123"})
        world.client.get(world.url(f"/reads/{ids['a1']}"), params={"purpose": CASE}, headers=searcher)
        world.client.post(
            world.url(f"/reads/{ids['c']}/correction"),
            headers=searcher,
            json={"purpose": CASE, "plate": "7ABD998", "reason": "last digit misread"},
        )
    for plate in ("7ABC123", "7ABD999", "7ABD998"):
        assert plate not in caplog.text


def test_correcting_a_misread_keeps_the_original_in_the_trail(world: World, searcher: dict[str, str]) -> None:
    ids = seed(world)
    response = world.client.post(
        world.url(f"/reads/{ids['c']}/correction"),
        headers=searcher,
        json={"purpose": CASE, "plate": "7ABD998", "reason": "last digit misread"},
    )
    assert response.status_code == 204
    detail = world.client.get(world.url(f"/reads/{ids['c']}"), params={"purpose": CASE}, headers=searcher).json()
    assert detail["plate"] == "7ABD998"
    assert detail["corrections"] == [
        {
            "old_plate": "7ABD999",
            "new_plate": "7ABD998",
            "by": "rivera",
            "utc": world.clock.now.isoformat(),
            "reason": "last digit misread",
        }
    ]
    assert found(world, searcher, {"plate": "7ABD998"}) == [ids["c"]]
    entry = [e for e in world.log_entries() if e["action"] == "read.correct"][0]
    assert entry["query"] == {"read_id": ids["c"], "old_plate": "7ABD999", "new_plate": "7ABD998"}
    no_reason = world.client.post(
        world.url(f"/reads/{ids['c']}/correction"),
        headers=searcher,
        json={"purpose": CASE, "plate": "7ABD997", "reason": " "},
    )
    assert no_reason.status_code == 400


def test_evidence_holds_need_a_purpose_and_are_logged(world: World, searcher: dict[str, str]) -> None:
    ids = seed(world)
    body = {"purpose": CASE, "read_id": ids["a1"], "case_number": CASE, "reason": "vehicle seen near scene"}
    response = world.client.post(world.url("/holds"), json=body, headers=searcher)
    assert response.status_code == 200
    hold_id = response.json()["hold_id"]
    refused = world.client.post(world.url("/holds"), json=body | {"purpose": "evidence"}, headers=searcher)
    assert refused.status_code == 403
    release = world.client.post(
        world.url(f"/holds/{hold_id}/release"), headers=searcher, json={"purpose": CASE, "reason": "case closed"}
    )
    assert release.status_code == 204
    actions = [(e["action"], e["outcome"]) for e in world.log_entries() if e["action"].startswith("hold")]
    assert actions == [("hold.create", "allowed"), ("hold.create", "denied"), ("hold.release", "allowed")]


def test_the_public_transparency_figures_count_without_revealing(world: World, searcher: dict[str, str]) -> None:
    seed(world)
    found(world, searcher, {"plate": "7ABC123"})
    world.client.post(
        world.url("/search"), json={"purpose": "investigation", "query": {"plate": "7ABC123"}}, headers=searcher
    )
    public = world.client.get(world.url("/transparency"))  # no log-in: published figures
    assert public.status_code == 200
    figures = public.json()
    assert (figures["cameras_enrolled"], figures["reads"], figures["searches"]) == (1, 5, 1)
    assert figures["authorized_users"] == 1 and figures["retention_days"]["reads"] == 60
    assert not any(plate in public.text for plate in ("7ABC123", "7A8C123", "7ABD999", "5XYZ789"))


def test_the_public_figures_are_counted_again_only_after_their_period(world: World) -> None:
    """Anyone may ask for them: counting a month of reads per request would let anyone load the database."""
    seed(world)
    assert world.client.get(world.url("/transparency")).json()["reads"] == 5
    world.store(make_record(plate="6NEW001"))
    assert world.client.get(world.url("/transparency")).json()["reads"] == 5  # reused (default 300 s)
    assert '<td class="n" id="reads">5</td>' in world.client.get("/transparency").text
    fresh = TestClient(create_app(world.service, public_figures_s=0.0))
    assert fresh.get(world.url("/transparency")).json()["reads"] == 6
