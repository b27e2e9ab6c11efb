"""Dispatchers work live hits through the API: the open hits, each hit's crop to verify plate and state,
and a disposition; every step logged, and nothing beyond hits reachable with the dispatcher role."""

from __future__ import annotations

from hub.dispatch import open_hits
from hub.models import Hit
from tests.hub.access.conftest import World, raise_hit_in


def raise_hit(world: World) -> int:
    return raise_hit_in(world.database.sessions, world.node_id, world.service.images)


def test_a_dispatcher_sees_open_hits_their_crops_and_records_a_disposition(world: World) -> None:
    hit_id = raise_hit(world)
    dispatcher = world.login(world.person("dana", ["dispatcher"], "Dispatcher"))
    hits = world.client.get(world.url("/hits"), headers=dispatcher).json()
    assert [(h["hit_id"], h["matched_text"], h["read"]["plate"]) for h in hits] == [(hit_id, "8XYZ321", "8XYZ321")]
    crop = world.client.get(world.url(f"/hits/{hit_id}/crop"), headers=dispatcher)
    assert crop.status_code == 200 and crop.content == b"\xff\xd8hit-crop\xff\xd9"
    body = {"disposition": "confirmed", "notes": "plate and state verified on the crop"}
    assert world.client.post(world.url(f"/hits/{hit_id}/disposition"), json=body, headers=dispatcher).status_code == 204
    assert world.client.get(world.url("/hits"), headers=dispatcher).json() == []  # no longer open
    assert world.client.get(world.url("/hits/999/crop"), headers=dispatcher).status_code == 404
    logged = [(e["action"], e["outcome"]) for e in world.log_entries() if e["action"].startswith("hit")]
    assert logged == [("hits.view", "allowed"), ("hit.crop", "allowed"), ("hit.dispose", "allowed"),
                      ("hits.view", "allowed"), ("hit.crop", "error")]  # fmt: skip
    crop_entry = [e for e in world.log_entries() if e["action"] == "hit.crop"][0]
    assert crop_entry["query"]["plate"] == "8XYZ321" and crop_entry["username"] == "dana"


def test_hits_need_the_role_and_current_training(world: World) -> None:
    hit_id = raise_hit(world)
    auditor = world.login(world.person("otto", ["auditor"], "Auditor"))
    assert world.client.get(world.url(f"/hits/{hit_id}/crop"), headers=auditor).status_code == 403
    untrained = world.login(world.person("dee", ["dispatcher"], "Dispatcher", trained=False))
    response = world.client.get(world.url("/hits"), headers=untrained)
    assert response.status_code == 403 and "no training recorded" in response.json()["detail"]
    bad = {"disposition": "looks fine"}
    dispatcher = world.login(world.person("dana", ["dispatcher"], "Dispatcher"))
    assert world.client.post(world.url(f"/hits/{hit_id}/disposition"), json=bad, headers=dispatcher).status_code == 422


def test_open_hits_come_most_urgent_first_with_the_entry_to_verify(world: World) -> None:
    routine = raise_hit_in(world.database.sessions, world.node_id, world.service.images, plate="5ROU777",
                           list_name="parking-scofflaws", priority=6)  # fmt: skip
    urgent = raise_hit_in(world.database.sessions, world.node_id, world.service.images, plate="6URG888",
                          list_name="amber-alerts", priority=0, notes="child seat, silver sedan")  # fmt: skip
    later_routine = raise_hit_in(world.database.sessions, world.node_id, world.service.images, plate="5ROU778",
                                 list_name="parking-scofflaws", priority=6)  # fmt: skip
    dispatcher = world.login(world.person("dana", ["dispatcher"], "Dispatcher"))
    hits = world.client.get(world.url("/hits"), headers=dispatcher).json()
    assert [h["hit_id"] for h in hits] == [urgent, later_routine, routine]
    first = hits[0]
    assert first["list_name"] == "amber-alerts"
    assert first["entry"] == {"plate": "6URG888", "state": "CA", "category": "stolen vehicle", "priority": 0,
                              "notes": "child seat, silver sedan"}  # fmt: skip
    assert first["crop_url"] == f"/api/v1/hits/{urgent}/crop"
    assert world.client.get(first["crop_url"], headers=dispatcher).status_code == 200


def test_a_second_disposition_of_the_same_hit_is_a_conflict(world: World) -> None:
    hit_id = raise_hit(world)
    first = world.login(world.person("dana", ["dispatcher"], "Dispatcher"))
    second = world.login(world.person("dale", ["dispatcher"], "Dispatcher"))
    url = world.url(f"/hits/{hit_id}/disposition")
    assert world.client.post(url, json={"disposition": "misread"}, headers=first).status_code == 204
    late = world.client.post(url, json={"disposition": "confirmed"}, headers=second)
    assert late.status_code == 409 and "already misread (by dana)" in late.json()["detail"]
    with world.database.sessions() as session:
        assert session.get(Hit, hit_id).disposition == "misread"  # type: ignore[union-attr]


def test_the_open_hits_version_moves_with_the_open_hits_and_is_not_logged(world: World) -> None:
    dispatcher = world.login(world.person("dana", ["dispatcher"], "Dispatcher"))

    def state() -> dict[str, object]:
        response = world.client.get(world.url("/hits/state"), headers=dispatcher)
        assert response.status_code == 200, response.text
        return dict(response.json())

    empty = state()
    assert empty["open"] == 0
    first = raise_hit(world)
    one = state()
    assert one["open"] == 1 and one["version"] != empty["version"]
    assert state() == one  # nothing changed: the same version
    second = raise_hit_in(world.database.sessions, world.node_id, world.service.images, plate="6URG888",
                          list_name="amber-alerts", priority=0)  # fmt: skip
    world.client.post(world.url(f"/hits/{first}/disposition"), json={"disposition": "misread"}, headers=dispatcher)
    replaced = state()  # one settled, one new: the count alone would not tell
    assert replaced["open"] == 1 and replaced["version"] != one["version"]
    with world.database.sessions() as session:
        assert [hit.id for hit in open_hits(session)] == [second]
    assert not [e for e in world.log_entries() if e["action"] == "hits.view"]  # counts only: no ALPR information

    auditor = world.login(world.person("otto", ["auditor"], "Auditor"))
    assert world.client.get(world.url("/hits/state"), headers=auditor).status_code == 403
    assert [(e["action"], e["outcome"], e["username"]) for e in world.log_entries() if e["action"] == "hits.view"] == [
        ("hits.view", "denied", "otto")
    ]
