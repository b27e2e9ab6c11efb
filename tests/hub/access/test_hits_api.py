"""Dispatchers work live hits through the API: the open hits, each hit's crop to verify plate and state,
and a disposition; every step logged, and nothing beyond hits reachable with the dispatcher role."""

from __future__ import annotations

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
