"""The investigators' search page (``/search``) in a real browser: a purpose and criteria, results with
their crops, one read's details with its context image; the hub checks and records every step."""

from __future__ import annotations

from datetime import timedelta

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from edge.wire import CandidateModel
from tests.hub.access.conftest import CASE, World
from tests.hub.api.conftest import log_in
from tests.hub.conftest import NOW, make_record

pytestmark = pytest.mark.parametrize("blank_url", ["sqlite"], indirect=True)  # the search's SQL: test_search_api.py


def jpeg(text: str, size: tuple[int, int] = (160, 48)) -> bytes:
    """A real JPEG with ``text`` drawn on it (made-up plates only)."""
    width, height = size
    image = np.full((height, width, 3), 230, np.uint8)
    cv2.putText(image, text, (8, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (60, 20, 10), 2)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def seed(world: World) -> None:
    world.store(
        make_record(plate="7ABC123", best_utc=NOW, crop_jpeg=jpeg("7ABC123"),
                    context_jpeg=jpeg("context", (640, 360)),
                    candidates=[CandidateModel(text="7A8C123", confidence=0.04)]),
        make_record(plate="7ABC123", best_utc=NOW - timedelta(hours=5), camera_id="rear", crop_jpeg=jpeg("7ABC123")),
        make_record(plate="7ABD999", best_utc=NOW - timedelta(hours=2), candidates=[], crop_jpeg=jpeg("7ABD999")),
        make_record(plate="5XYZ789", best_utc=NOW - timedelta(days=3), candidates=[], crop_jpeg=jpeg("5XYZ789")),
    )  # fmt: skip


def search(page: Page, purpose: str, plate: str, mode: str = "plate") -> None:
    page.fill("#purpose", purpose)
    page.select_option("#plate-mode", mode)
    page.fill("#plate", plate)
    page.click("#query button[type=submit]")


def test_an_investigator_searches_with_a_case_number_and_opens_a_read(
    world: World, site: str, browser: Browser
) -> None:
    seed(world)
    rivera = world.person("rivera", ["authorized_user"])
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, site + "/search", world, rivera)

    # A purpose that names no investigation is refused by the hub, and the page says why.
    search(page, "investigation", "7ABC123")
    expect(page.locator("#status")).to_contain_text("Search refused")
    expect(page.locator("#results")).to_be_hidden()

    search(page, CASE, "7abc-123")
    expect(page.locator("#summary")).to_have_text("2 reads match.")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.locator(".plate")).to_have_text(["7ABC123", "7ABC123"])
    for thumb in page.locator("img.thumb").all():  # each crop fetched with the session and decoded
        expect(thumb).to_have_js_property("naturalWidth", 160)

    search(page, CASE, "7AB*", mode="pattern")
    expect(rows).to_have_count(3)
    search(page, CASE, "7A8C123", mode="fuzzy")  # one look-alike character away: B/8
    expect(rows).to_have_count(2)

    rows.first.locator("button.open").click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#d-plate")).to_have_text("7ABC123")
    expect(page.locator("#d-candidates")).to_have_text("7A8C123 (0.04)")
    expect(page.locator("#d-context")).to_have_js_property("naturalWidth", 640)
    assert "7ABC123" not in page.url and "7A8C123" not in page.url

    entries = [e for e in world.log_entries() if e["username"] == "rivera"]
    searches = [(e["outcome"], e["purpose"]) for e in entries if e["action"] == "search"]
    assert searches == [("denied", "investigation"), ("allowed", CASE), ("allowed", CASE), ("allowed", CASE)]
    assert {(e["action"], e["purpose"]) for e in entries if e["action"] in ("read.view", "image.view")} == {
        ("read.view", CASE),
        ("image.view", CASE),
    }
    assert errors == []


def test_logging_out_clears_the_results(world: World, site: str, browser: Browser) -> None:
    seed(world)
    page = browser.new_page()
    log_in(page, site + "/search", world, world.person("rivera", ["authorized_user"]))
    search(page, CASE, "7ABC123")
    expect(page.locator("#results tbody tr")).to_have_count(2)
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#results tbody tr")).to_have_count(0)
    assert "7ABC123" not in page.content()
    assert page.input_value("#purpose") == ""


def test_a_dispatcher_cannot_search(world: World, site: str, browser: Browser) -> None:
    seed(world)
    page = browser.new_page()
    log_in(page, site + "/search", world, world.person("dana", ["dispatcher"], "Dispatcher"))
    search(page, CASE, "7ABC123")
    expect(page.locator("#status")).to_contain_text("Search refused")
    expect(page.locator("#results tbody tr")).to_have_count(0)
