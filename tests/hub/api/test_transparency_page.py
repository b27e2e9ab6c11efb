"""The public transparency page (``/transparency``) in a real browser: the agency's ALPR use in counts
beside the policy the hub enforces, posted for the public (1798.90.51(b)); no ALPR data in it."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser, expect

from hub.access.gate import Actor
from hub.access.policy import AgencySection, PolicySettings
from tests.hub.access.conftest import World, make_world, raise_hit_in
from tests.hub.api.conftest import serve
from tests.hub.conftest import Database

pytestmark = pytest.mark.parametrize("blank_url", ["sqlite"], indirect=True)  # the counts: test_search_api.py

POLICY = PolicySettings(
    agency=AgencySection(
        name="Example Police Department",
        authorized_purposes="Locating stolen vehicles and vehicles of missing persons.",
        policy_url="https://police.example.gov/alpr-policy",
        contact="ALPR Administrator, 555-0100",
    )
)
PLATES = ("8XYZ321", "8XYZ322", "8XYZ323")


@pytest.fixture
def world(database: Database) -> World:
    return make_world(database, POLICY)


def test_the_public_page_shows_the_counts_and_the_enforced_policy_and_no_alpr_data(
    world: World, site: str, browser: Browser
) -> None:
    hits = [raise_hit_in(world.database.sessions, world.node_id, world.service.images, plate=plate) for plate in PLATES]
    desk = Actor.console("desk.lee")
    world.service.dispose_hit(desk, hits[0], "confirmed", "stopped, plate and state matched")
    world.service.dispose_hit(desk, hits[1], "misread", None)

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(site + "/transparency")  # no log-in: a public page
    assert response is not None and response.status == 200
    expect(page).to_have_title("Automated license plate recognition — Example Police Department")
    keys = ("cameras", "reads", "hits", "hits-confirmed", "hits-misread", "hits-not_actionable", "hits-open")
    figures = {key: page.text_content(f"#{key}") for key in keys}
    assert figures == {"cameras": "1", "reads": "3", "hits": "3", "hits-confirmed": "1", "hits-misread": "1",
                       "hits-not_actionable": "0", "hits-open": "1"}  # fmt: skip
    expect(page.locator("#purposes")).to_have_text("Locating stolen vehicles and vehicles of missing persons.")
    expect(page.locator("#policy-link")).to_have_attribute("href", "https://police.example.gov/alpr-policy")
    expect(page.locator("#classifications")).to_contain_text("Detective")
    expect(page.locator("#retention")).to_contain_text("60 days")
    expect(page.locator("#shared")).to_have_text("No agency in the period.")
    content = page.content()
    assert not any(plate in content for plate in PLATES)
    assert "desk.lee" not in content and "stopped, plate and state matched" not in content
    assert errors == []


def test_the_public_page_runs_no_script_and_escapes_the_agency_text(database: Database, browser: Browser) -> None:
    hostile = PolicySettings(agency=AgencySection(authorized_purposes='<script>document.title="owned"</script>'))
    with serve(make_world(database, hostile)) as site:
        page = browser.new_page()
        page.goto(site + "/transparency")
        expect(page.locator("#purposes")).to_have_text('<script>document.title="owned"</script>')
        assert page.title() != "owned"
        headers = httpx.get(site + "/transparency").headers
    assert headers["content-security-policy"].startswith("default-src 'none'")
