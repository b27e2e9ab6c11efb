"""The hub's web pages in a real browser: the API served over HTTP by uvicorn on a real database, and
Chromium (the system's, as CI installs it) driven by Playwright."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from hub.api.app import create_app
from tests.hub.access.conftest import Person, World, make_world
from tests.hub.conftest import Database

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
POLL_S = 0.3
"""How often the hit board polls in these tests (3 s in service)."""


@pytest.fixture
def world(database: Database) -> World:
    return make_world(database)


@contextmanager
def serve(world: World) -> Iterator[str]:
    """``http://127.0.0.1:<port>``: ``world``'s API and pages served by uvicorn in a thread."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(world.service, bell_max_priority=1, board_poll_s=POLL_S)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def site(world: World) -> Iterator[str]:
    with serve(world) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def log_in(page: Page, url: str, world: World, person: Person) -> None:
    """Open the page at ``url`` and log in through its form, as ``person`` on ``world``'s registered device."""
    page.goto(url)
    page.fill("#device-key", world.device_key)
    page.fill("#username", person.username)
    page.fill("#password", person.password)
    world.clock.advance(seconds=30)  # a TOTP code is good once
    page.fill("#totp", world.code(person))
    page.click("#login button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()
