"""Users and access through the HTTP API: MFA log-in, registered devices, sessions, training, approval,
inactivity, job classification, roles kept apart, deletion. Each rule as a refused and an allowed case."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.access.accounts import AccountError, check_password_strength, initial_password
from hub.access.models import User
from hub.access.policy import AccessSection, PolicySettings
from tests.hub.access.conftest import ADMIN, CASE, World, make_world
from tests.hub.conftest import Database

SEARCH = {"purpose": CASE, "query": {"plate": "7ABC123"}}


def search(world: World, headers: dict[str, str]) -> int:
    return int(world.client.post(world.url("/search"), json=SEARCH, headers=headers).status_code)


def login_as(world: World, username: str, password: str, code: str) -> int:
    body = {"username": username, "password": password, "totp": code}
    response = world.client.post(world.url("/auth/login"), json=body, headers={"X-Device-Key": world.device_key})
    return int(response.status_code)


def denied_details(world: World, action: str) -> list[str]:
    return [e["detail"] for e in world.log_entries() if e["action"] == action and e["outcome"] == "denied"]


def test_login_needs_password_and_a_fresh_totp_code(world: World) -> None:
    alice = world.person("alice", ["authorized_user"])
    world.clock.advance(seconds=30)
    good = {"username": "alice", "password": alice.password, "totp": world.code(alice)}
    key = {"X-Device-Key": world.device_key}
    url = world.url("/auth/login")
    assert world.client.post(url, json=good | {"password": "wrong-password-1"}, headers=key).status_code == 401
    assert world.client.post(url, json=good | {"totp": "000000"}, headers=key).status_code == 401
    assert world.client.post(url, json=good | {"username": "nobody"}, headers=key).status_code == 401
    ok = world.client.post(url, json=good, headers=key)
    assert ok.status_code == 200 and ok.json()["token"]
    replay = world.client.post(url, json=good, headers=key)  # the same code again
    assert replay.status_code == 401
    assert replay.json() == {"detail": "log-in refused"}  # the client is not told which part failed
    reasons = denied_details(world, "login")
    assert reasons == [
        "wrong password or one-time code",
        "wrong password or one-time code",
        "unknown user",
        "wrong password or one-time code",
    ]
    assert [e["outcome"] for e in world.log_entries() if e["action"] == "login"].count("allowed") == 1


def test_totp_seeds_are_not_in_the_database_in_clear(world: World) -> None:
    alice = world.person("alice", ["authorized_user"])
    with world.database.sessions() as session:
        stored = session.execute(select(User.totp_secret).where(User.username == "alice")).scalar_one()
    assert stored.startswith("v1:") and alice.secret not in stored
    assert world.login(alice)  # the hub opens it with its key to check a code


def test_repeated_failures_lock_the_account(world: World) -> None:
    bob = world.person("bob", ["authorized_user"])
    for _ in range(PolicySettings().access.max_failed_logins):
        world.clock.advance(seconds=30)
        assert login_as(world, "bob", "not-his-password1", world.code(bob)) == 401
    world.clock.advance(seconds=30)
    assert login_as(world, "bob", bob.password, world.code(bob)) == 401
    assert denied_details(world, "login")[-1] == "account locked after repeated failures"
    world.clock.advance(minutes=PolicySettings().access.lockout_minutes)
    assert world.login(bob)  # the lock-out ends


def test_only_registered_devices_reach_alpr_information(world: World) -> None:
    carol = world.person("carol", ["authorized_user"])
    world.clock.advance(seconds=30)
    body = {"username": "carol", "password": carol.password, "totp": world.code(carol)}
    for headers in ({}, {"X-Device-Key": "dev_not-a-registered-device"}):
        assert world.client.post(world.url("/auth/login"), json=body, headers=headers).status_code == 401
    assert denied_details(world, "login") == ["not an agency-registered device"] * 2

    headers = world.login(carol)
    assert search(world, headers) == 200
    other_key = world.service.register_device(world.console, "desk-7", "")
    # A session is bound to the device it was opened on; a stolen token is no use elsewhere.
    assert search(world, headers | {"X-Device-Key": other_key}) == 401
    world.service.revoke_device(world.console, "laptop-0042")
    assert search(world, headers) == 401  # revoking the device ends its sessions at once
    assert "not an agency-registered device" in denied_details(world, "authenticate")


def test_ip_allowlist_is_the_weaker_device_option(database: Database) -> None:
    policy = PolicySettings(access=AccessSection(device_mode="ip_allowlist", ip_allowlist=("10.20.0.0/16",)))
    world = make_world(database, policy)
    dave = world.person("dave", ["authorized_user"])
    inside = TestClient(world.client.app, client=("10.20.3.4", 40000))
    outside = TestClient(world.client.app, client=("192.0.2.7", 40000))
    headers = world.login(dave, client=inside)
    assert inside.post(world.url("/search"), json=SEARCH, headers=headers).status_code == 200
    assert outside.post(world.url("/search"), json=SEARCH, headers=headers).status_code == 401


def test_sessions_expire_when_idle_and_at_their_maximum_age(world: World) -> None:
    erin = world.person("erin", ["authorized_user"])
    headers = world.login(erin)
    rules = PolicySettings().access
    world.clock.advance(minutes=rules.session_idle_minutes - 1)
    assert search(world, headers) == 200
    world.clock.advance(minutes=rules.session_idle_minutes)
    assert search(world, headers) == 401
    headers = world.login(erin)
    started = world.clock.now
    while search(world, headers) == 200:  # kept busy, the session still ends at session_max_hours
        world.clock.advance(minutes=rules.session_idle_minutes - 1)
        assert world.clock.now - started <= timedelta(hours=rules.session_max_hours, minutes=rules.session_idle_minutes)
    assert world.clock.now - started >= timedelta(hours=rules.session_max_hours)


def test_no_access_before_training_or_approval(world: World) -> None:
    frank = world.person("frank", ["authorized_user"], trained=False, approved=False)
    headers = world.login(frank)  # logging in is allowed; reaching ALPR information is not
    response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
    assert response.status_code == 403
    assert "no training recorded" in response.json()["detail"]
    with pytest.raises(AccountError, match="no current training"):  # approval needs current training first
        world.service.approve_user(world.console, "frank")
    world.service.record_training(world.console, "frank", world.clock.now - timedelta(days=2))
    response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
    assert response.status_code == 403 and "not approved" in response.json()["detail"]
    world.service.approve_user(world.console, "frank")
    assert search(world, headers) == 200


def test_training_expires_and_approval_lapses(database: Database) -> None:
    world = make_world(database, PolicySettings(access=AccessSection(training_valid_days=90, approval_review_days=200)))
    gina = world.person("gina", ["authorized_user"])
    world.clock.advance(days=91)
    headers = world.login(gina)
    response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
    assert response.status_code == 403 and "training expired" in response.json()["detail"]
    world.service.record_training(world.console, "gina", world.clock.now)
    assert search(world, headers) == 200
    world.clock.advance(days=110)  # approval given 201 days ago; training 110 days ago is stale again
    world.service.record_training(world.console, "gina", world.clock.now)
    headers = world.login(gina)
    response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
    assert response.status_code == 403 and "approval lapsed" in response.json()["detail"]
    world.service.approve_user(world.console, "gina")  # the annual review renews it
    assert search(world, headers) == 200


def test_inactive_accounts_are_suspended_by_the_scheduled_job(world: World) -> None:
    hank = world.person("hank", ["authorized_user"])
    world.person("ivy", ["authorized_user"])
    assert search(world, world.login(hank)) == 200
    days = PolicySettings().access.inactivity_days
    world.clock.advance(days=days - 1)
    assert world.service.run_upkeep()["suspended"] == 0
    world.clock.advance(days=2)
    assert world.service.run_upkeep()["suspended"] == 2  # neither reached ALPR information within the period
    world.clock.advance(seconds=30)
    assert login_as(world, "hank", hank.password, world.code(hank)) == 401
    assert denied_details(world, "login")[-1] == "account suspended"
    suspended = [e for e in world.log_entries() if e["action"] == "user.suspend"]
    assert {e["query"]["user"] for e in suspended} == {"hank", "ivy"}
    assert all(e["detail"] == "inactivity" for e in suspended)


def test_reactivation_requires_training_again(world: World) -> None:
    jack = world.person("jack", ["authorized_user"])
    world.service.suspend_user(world.console, "jack", "on leave")
    world.service.reactivate_user(world.console, "jack")
    headers = world.login(jack)
    response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
    assert response.status_code == 403 and "no training recorded" in response.json()["detail"]
    world.service.record_training(world.console, "jack", world.clock.now)
    assert search(world, headers) == 200


def test_unauthorized_job_classification_ends_access_at_once(world: World) -> None:
    kim = world.person("kim", ["authorized_user"])
    headers = world.login(kim)
    assert search(world, headers) == 200
    assert world.service.set_classification(world.console, "kim", "Records Clerk") is True
    assert search(world, headers) == 401  # sessions ended with the authorization
    headers = world.login(kim)
    response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
    assert response.status_code == 403 and "job classification not authorized" in response.json()["detail"]
    # Moving back is not enough: re-apply (approval) and train again.
    assert world.service.set_classification(world.console, "kim", "Detective") is False
    response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
    assert response.status_code == 403
    assert "no training recorded" in response.json()["detail"] and "not approved" in response.json()["detail"]
    world.service.record_training(world.console, "kim", world.clock.now)
    world.service.approve_user(world.console, "kim")
    assert search(world, headers) == 200


def test_roles_are_kept_apart(world: World) -> None:
    dispatcher = world.login(world.person("dana", ["dispatcher"], "Dispatcher"))
    auditor = world.login(world.person("otto", ["auditor"], "Auditor"))
    admin = world.login(world.person(ADMIN, ["administrator"], "Lieutenant"))
    for headers in (dispatcher, auditor, admin):
        response = world.client.post(world.url("/search"), json=SEARCH, headers=headers)
        assert response.status_code == 403 and "role does not allow search" in response.json()["detail"]
    assert world.client.get(world.url("/hits"), headers=dispatcher).status_code == 200
    assert world.client.get(world.url("/hits"), headers=auditor).status_code == 403
    assert world.client.get(world.url("/users"), headers=admin).status_code == 200
    assert world.client.get(world.url("/users"), headers=dispatcher).status_code == 403
    operator = world.login(world.person("nico", ["node_operator"], "Technician"))
    nodes = world.client.get(world.url("/nodes"), headers=operator)
    assert nodes.status_code == 200 and [n["name"] for n in nodes.json()] == ["car-12"]
    assert world.client.get(world.url("/nodes"), headers=admin).status_code == 403
    assert world.client.post(world.url("/search"), json=SEARCH, headers=operator).status_code == 403
    period = {"from_utc": "2026-01-01T00:00:00Z", "to_utc": "2027-01-01T00:00:00Z"}
    assert world.client.get(world.url("/access-log"), params=period, headers=auditor).status_code == 200
    assert world.client.get(world.url("/access-log"), params=period, headers=dispatcher).status_code == 403
    # An auditor cannot also hold a role that sees plates.
    response = world.client.post(
        world.url("/users"),
        headers=admin,
        json={
            "username": "mixed",
            "full_name": "M",
            "organization": "Example PD",
            "classification": "Detective",
            "roles": ["auditor", "authorized_user"],
        },
    )
    assert response.status_code == 400 and "kept apart" in response.json()["detail"]


def test_administrator_manages_accounts_over_the_api(world: World) -> None:
    admin = world.login(world.person(ADMIN, ["administrator"], "Lieutenant"))
    created = world.client.post(
        world.url("/users"),
        headers=admin,
        json={
            "username": "lee",
            "full_name": "Lee Test",
            "organization": "Example PD",
            "classification": "Crime Analyst",
            "roles": ["authorized_user"],
        },
    )
    assert created.status_code == 201
    assert created.json()["totp_uri"].startswith("otpauth://totp/")
    assert len(created.json()["initial_password"]) >= 12
    listed = {u["username"]: u for u in world.client.get(world.url("/users"), headers=admin).json()}
    assert listed["lee"]["may_access_alpr_data"] is False
    assert "no training recorded" in listed["lee"]["blockers"]
    training = {"completed_utc": (world.clock.now - timedelta(days=3)).isoformat()}
    assert world.client.post(world.url("/users/lee/training"), json=training, headers=admin).status_code == 204
    assert world.client.post(world.url("/users/lee/approve"), headers=admin).status_code == 204
    authorized = world.client.get(world.url("/users"), params={"authorized_only": True}, headers=admin).json()
    assert [u["username"] for u in authorized] == ["lee"]  # the administrator's list of authorized users
    suspend = world.client.post(world.url("/users/lee/suspend"), json={"reason": "left unit"}, headers=admin)
    assert suspend.status_code == 204
    assert world.client.get(world.url("/users"), params={"authorized_only": True}, headers=admin).json() == []
    future = {"completed_utc": (world.clock.now + timedelta(days=3)).isoformat()}
    assert world.client.post(world.url("/users/lee/training"), json=future, headers=admin).status_code == 400


def test_a_deleted_user_is_gone_but_their_log_entries_stay(world: World) -> None:
    mo = world.person("mo", ["authorized_user"])
    assert search(world, world.login(mo)) == 200
    world.service.delete_user(world.console, "mo")
    world.clock.advance(seconds=30)
    assert login_as(world, "mo", mo.password, world.code(mo)) == 401
    searches = [e for e in world.log_entries() if e["username"] == "mo" and e["action"] == "search"]
    assert len(searches) == 1 and searches[0]["organization"] == "Example PD"
    assert world.service.verify_log().ok


def test_password_change_needs_the_current_password_and_a_strong_new_one(world: World) -> None:
    nia = world.person("nia", ["authorized_user"])
    headers = world.login(nia)
    url = world.url("/me/password")
    weak = world.client.post(url, json={"old_password": nia.password, "new_password": "short"}, headers=headers)
    assert weak.status_code == 403
    wrong = world.client.post(
        url, json={"old_password": "nope-nope-nope1", "new_password": "a-much-better-pass-77"}, headers=headers
    )
    assert wrong.status_code == 403
    ok = world.client.post(
        url, json={"old_password": nia.password, "new_password": "a-much-better-pass-77"}, headers=headers
    )
    assert ok.status_code == 204
    nia.password = "a-much-better-pass-77"
    assert world.login(nia)


def test_every_initial_password_passes_the_strength_rule() -> None:
    # One random draw in about 64 is all letters; 2,000 draws would all but surely hit one.
    for _ in range(2000):
        check_password_strength(initial_password())
