"""`alpr-hub serve` publishes the HTTP API (and its OpenAPI schema) on the configured address, and the
audit report it stores is a page a real browser (Debian's Chromium, headless) renders."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import pyotp

from tests.hub.api.conftest import CHROMIUM
from tests.hub.processes import HubProcess, run_cli, write_hub_config

POLICY = Path(__file__).resolve().parents[3] / "deploy" / "policy.example.toml"


def write_config(tmp_path: Path) -> tuple[Path, str]:
    """A served hub with the example policy; the config and the API's base URL."""
    shutil.copy(POLICY, tmp_path / "policy.toml")
    config = write_hub_config(tmp_path / "hub.toml", extra='[compliance]\npolicy_file = "policy.toml"\n')
    return config, f"http://{tomllib.loads(config.read_text(encoding='utf-8'))['api']['bind']}/api/v1"


def wait_for(url: str, hub: HubProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert hub.running(), hub.tail()
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the API never answered at {url}:\n{hub.tail()}")


def test_serve_publishes_the_api_and_the_audit_report_renders_in_a_browser(tmp_path: Path) -> None:
    config, base = write_config(tmp_path)
    run_cli(config, "init")
    created = run_cli(
        config,
        "users",
        "create",
        "rivera",
        "--full-name",
        "Test Rivera",
        "--org",
        "Example PD",
        "--classification",
        "Detective",
        "--roles",
        "authorized_user",
        "--by",
        "admin",
    )
    password = re.search(r"initial password: (\S+)", created)
    uri = re.search(r"(otpauth://\S+)", created)
    assert password and uri
    secret = pyotp.parse_uri(uri[1]).secret
    run_cli(config, "users", "train", "rivera", "--date", time.strftime("%Y-%m-%d", time.gmtime()), "--by", "admin")
    run_cli(config, "users", "approve", "rivera", "--by", "admin")
    device_key = run_cli(config, "devices", "register", "mdc-12", "--by", "admin").split()[-1]

    hub = HubProcess(config, tmp_path / "hub.log")
    hub.start()
    try:
        wait_for(f"{base}/health", hub)
        schema = httpx.get(f"{base}/openapi.json").json()
        for path in (
            "/api/v1/auth/login",
            "/api/v1/search",
            "/api/v1/reads/{read_id}",
            "/api/v1/holds",
            "/api/v1/shares",
            "/api/v1/users",
            "/api/v1/audit/reports",
        ):
            assert path in schema["paths"], path
        headers = {"X-Device-Key": device_key}
        login = httpx.post(
            f"{base}/auth/login",
            headers=headers,
            json={"username": "rivera", "password": password[1], "totp": pyotp.TOTP(secret).now()},
        )
        assert login.status_code == 200, login.text
        headers["Authorization"] = f"Bearer {login.json()['token']}"
        body = {"purpose": "26-004512", "query": {"plate": "7ABC123"}}
        search = httpx.post(f"{base}/search", headers=headers, json=body)
        assert search.status_code == 200 and search.json()["total"] == 0
        assert httpx.post(f"{base}/search", json=body).status_code == 401
        site = base.removesuffix("/api/v1")
        for page, marker in (("/board", 'id="hits"'), ("/search", 'id="results"'), ("/transparency", 'id="reads"')):
            served = httpx.get(site + page)
            assert served.status_code == 200 and marker in served.text, page
        assert 'data-bell-max-priority="1"' in httpx.get(site + "/board").text  # [dispatch] bell_max_priority
    finally:
        hub.stop()

    report = tmp_path / "audit.html"
    run_cli(
        config,
        "audit",
        "report",
        "--from",
        "2020-01-01",
        "--to",
        "2100-01-01",
        "--format",
        "html",
        "--out",
        str(report),
        "--by",
        "auditor.kim",
    )
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert '<p class="ok" id="chain-status">The access-log chain verifies' in dom
    assert "<td>rivera</td>" in dom and "search:allowed: 1" in dom
    assert "authenticate:denied: 1" in dom  # the request without a session is in the report too
    assert "7ABC123" not in dom
