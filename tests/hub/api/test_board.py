"""The dispatch hit board (``/board``) in a real browser: Chromium, driven by Playwright, against the API
served over HTTP by uvicorn on a real database. Made-up plates only."""

from __future__ import annotations

import time

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from hub.models import Hit
from tests.hub.access.conftest import Person, World, raise_hit_in
from tests.hub.api.conftest import POLL_S, log_in

pytestmark = pytest.mark.parametrize("blank_url", ["sqlite"], indirect=True)  # the API's SQL is tested on both


def plate_jpeg(text: str) -> bytes:
    """A 160 x 48 crop with the plate's characters on it, as a node would send (a real JPEG)."""
    image = np.full((48, 160, 3), 235, np.uint8)
    cv2.putText(image, text, (8, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (90, 30, 20), 2)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def hit(world: World, plate: str, list_name: str, priority: int, notes: str = "") -> int:
    return raise_hit_in(world.database.sessions, world.node_id, world.service.images, plate=plate,
                        list_name=list_name, priority=priority, notes=notes, crop_jpeg=plate_jpeg(plate))  # fmt: skip


@pytest.fixture
def board_url(site: str) -> str:
    return site + "/board"


def open_board(browser: Browser, board_url: str, world: World, person: Person) -> tuple[Page, list[str]]:
    """A logged-in board page, and the page's script errors as they happen."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, board_url, world, person)
    return page, errors


def card(page: Page, hit_id: int) -> Locator:
    return page.locator(f'li.hit[data-hit-id="{hit_id}"]')


def alerts(page: Page) -> int:
    return int(page.evaluate("Number(document.body.dataset.alerts || 0)"))


def test_a_dispatcher_works_hits_on_the_board(world: World, board_url: str, browser: Browser) -> None:
    urgent = hit(world, "6URG888", "amber-alerts", 0, notes="silver sedan")
    dana = world.person("dana", ["dispatcher"], "Dispatcher")
    page, errors = open_board(browser, board_url, world, dana)

    first = card(page, urgent)
    expect(first).to_be_visible()
    expect(first.locator(".plate")).to_have_text("6URG888")
    expect(first.locator(".priority")).to_have_text("P0")
    expect(first.locator(".list")).to_have_text("amber-alerts")
    expect(first.locator(".entry")).to_have_text("6URG888 (CA)")
    expect(first.locator(".notes")).to_have_text("silver sedan")
    expect(first).to_have_class("hit urgent")  # on the board at log-in: not flagged as new
    # The crop arrives through the API with the session's headers and decodes in the browser.
    expect(first.locator("img")).to_have_js_property("naturalWidth", 160)
    assert "6URG888" not in page.url

    # Confirming needs the visual check ticked; nothing is recorded without it.
    first.locator("button[value=confirmed]").click()
    expect(first.locator(".error")).to_contain_text("tick the box")
    with world.database.sessions() as session:
        assert session.get(Hit, urgent).disposition == "open"  # type: ignore[union-attr]

    # A new hit appears without reloading, after the urgent one, flagged and sounded.
    routine = hit(world, "5ROU777", "parking-scofflaws", 6)
    expect(card(page, routine)).to_have_class("hit routine new")
    assert page.locator("li.hit").evaluate_all("cards => cards.map(c => Number(c.dataset.hitId))") == [urgent, routine]
    assert alerts(page) == 1
    # Muted, a routine hit is shown but silent; an urgent one sounds regardless.
    page.check("#mute")
    quiet = hit(world, "5ROU779", "parking-scofflaws", 6)
    expect(card(page, quiet)).to_be_visible()
    assert alerts(page) == 1
    loud = hit(world, "6URG889", "amber-alerts", 1)
    expect(card(page, loud)).to_be_visible()
    assert alerts(page) == 2
    expect(page).to_have_title("(4) Hit board")
    # An open board with nothing new adds nothing to the access log: it logs what it shows, not each poll.
    views = len([e for e in world.log_entries() if e["action"] == "hits.view"])
    page.wait_for_timeout(POLL_S * 5 * 1000)
    assert len([e for e in world.log_entries() if e["action"] == "hits.view"]) == views
    card(page, quiet).locator(".facts").click()  # looked at: no longer flagged
    expect(card(page, quiet)).to_have_class("hit routine")

    first.locator(".verified").check()
    first.locator(".dispose-notes").fill("unit 12 confirmed plate and state")
    first.locator("button[value=confirmed]").click()
    expect(first).to_have_count(0)
    expect(page.locator("#status")).to_contain_text(f"Hit {urgent} marked confirmed")
    card(page, routine).locator("button[value=misread]").click()
    expect(card(page, routine)).to_have_count(0)
    with world.database.sessions() as session:
        confirmed, misread = session.get(Hit, urgent), session.get(Hit, routine)
        assert confirmed is not None and misread is not None
        assert (confirmed.disposition, confirmed.disposition_by) == ("confirmed", "dana")
        assert confirmed.disposition_notes == "unit 12 confirmed plate and state"
        assert (misread.disposition, misread.disposition_by, misread.disposition_notes) == ("misread", "dana", None)
    logged = {(e["action"], e["outcome"], e["username"]) for e in world.log_entries() if e["action"].startswith("hit")}
    assert {(action, "allowed", "dana") for action in ("hits.view", "hit.crop", "hit.dispose")} <= logged
    assert errors == []


def test_a_hit_another_dispatcher_settled_leaves_the_board(world: World, board_url: str, browser: Browser) -> None:
    hit_id = hit(world, "6URG888", "amber-alerts", 0)
    page, errors = open_board(browser, board_url, world, world.person("dana", ["dispatcher"], "Dispatcher"))
    expect(card(page, hit_id)).to_be_visible()
    other = world.login(world.person("dale", ["dispatcher"], "Dispatcher"))
    # dale settles it first (the TestClient calls the same service); dana's click is then a conflict.
    page.evaluate("() => { window.setTimeout = () => 0; }")  # no further polls: the card stays until dana clicks
    time.sleep(3 * POLL_S)  # a poll already under way ends (the hit still open)
    response = world.client.post(world.url(f"/hits/{hit_id}/disposition"), json={"disposition": "not_actionable"},
                                 headers=other)  # fmt: skip
    assert response.status_code == 204
    card(page, hit_id).locator("button[value=misread]").click()
    expect(card(page, hit_id)).to_have_count(0)
    expect(page.locator("#status")).to_contain_text("already dispositioned by someone else")
    with world.database.sessions() as session:
        assert session.get(Hit, hit_id).disposition_by == "dale"  # type: ignore[union-attr]
    assert errors == []


def test_the_board_asks_for_a_log_in_again_when_the_session_ends(
    world: World, board_url: str, browser: Browser
) -> None:
    hit_id = hit(world, "6URG888", "amber-alerts", 0)
    page, errors = open_board(browser, board_url, world, world.person("dana", ["dispatcher"], "Dispatcher"))
    expect(card(page, hit_id)).to_be_visible()
    world.clock.advance(hours=world.service.policy.access.session_max_hours, minutes=1)
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#status")).to_contain_text("Your session has ended")
    expect(page.locator("li.hit")).to_have_count(0)  # nothing of the hits stays on screen
    assert page.evaluate("sessionStorage.getItem('alpr.token')") is None
    assert errors == []


def test_the_board_refuses_a_bad_log_in_and_is_served_with_a_strict_policy(
    world: World, board_url: str, browser: Browser
) -> None:
    dana = world.person("dana", ["dispatcher"], "Dispatcher")
    page = browser.new_page()
    page.goto(board_url)
    page.fill("#device-key", "not-a-registered-device")
    page.fill("#username", dana.username)
    page.fill("#password", dana.password)
    page.fill("#totp", world.code(dana))
    page.click("#login button[type=submit]")
    expect(page.locator("#status")).to_contain_text("Log-in refused")
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#login")).to_be_visible()
    served = httpx.get(board_url)
    assert "script-src" not in served.headers["content-security-policy"]  # default-src 'self': no inline script
    assert "default-src 'self'" in served.headers["content-security-policy"]
    assert served.headers["cache-control"] == "no-store"
    assert httpx.get(board_url.replace("/board", "/web/board.js")).headers["content-type"].startswith("text/javascript")
    assert httpx.get(board_url.replace("/board", "/web/secrets.txt")).status_code == 404
    assert 'data-bell-max-priority="1"' in served.text and 'data-poll-ms="300"' in served.text
