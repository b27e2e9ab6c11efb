"""`make demo`: a hub, one edge node on the sample clip, a hot list, and the hits it raises.

    python scripts/demo.py

Everything runs on localhost and lives under ./var/demo (wiped at the start). Prints each read the
node makes and one line starting with ``HIT `` per hot-list hit; then an investigator (trained,
approved, on a registered device) logs in to the hub's API with a TOTP code and searches the first
hit's plate for a case number, the public transparency page is read (counts, no plate), and the access
log is verified. Shuts down cleanly; the exit status
is 0 when the node's reads all reached the hub, at least one hit was raised and the search worked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyotp  # noqa: E402

from edge import wire  # noqa: E402
from edge.config import EdgeConfig  # noqa: E402
from edge.node import EdgeNode  # noqa: E402
from hub.dispatch import DispatchConsole  # noqa: E402

DEMO = ROOT / "deploy" / "demo"
VAR = ROOT / "var" / "demo"
HUB_CONFIG = DEMO / "hub.toml"
NODE = "demo-cam-1"
BIN = Path(sys.executable).parent
API = "http://127.0.0.1:18443/api/v1"
CASE = "26-000123"


def hub(*args: str) -> str:
    done = subprocess.run([str(BIN / "alpr-hub"), "--config", str(HUB_CONFIG), "--log-level", "WARNING", *args],
                          check=True, capture_output=True, text=True)  # fmt: skip
    return done.stdout


def enrol_investigator() -> dict[str, str]:
    """An investigator account (trained, approved) and a registered device, as the administrator makes them."""
    created = hub("users", "create", "demo-investigator", "--full-name", "Demo Investigator", "--org", "Demo PD",
                  "--classification", "Detective", "--roles", "authorized_user", "--by", "demo-admin")  # fmt: skip
    password = created.split("initial password: ")[1].split()[0]
    secret = pyotp.parse_uri(next(word for word in created.split() if word.startswith("otpauth://"))).secret
    hub("users", "train", "demo-investigator", "--date", time.strftime("%Y-%m-%d", time.gmtime()), "--by", "demo-admin")
    hub("users", "approve", "demo-investigator", "--by", "demo-admin")
    device_key = hub("devices", "register", "demo-laptop", "--by", "demo-admin").split()[-1]
    return {"password": password, "secret": secret, "device_key": device_key}


def post(path: str, body: dict[str, object], headers: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(f"{API}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def investigate(account: dict[str, str], plate: str) -> bool:
    """Log in (password + TOTP, registered device) and search one plate for a case: the API's main path."""
    headers = {"X-Device-Key": account["device_key"]}
    login = post("/auth/login", {"username": "demo-investigator", "password": account["password"],
                                 "totp": pyotp.TOTP(account["secret"]).now()}, headers)  # fmt: skip
    headers["Authorization"] = f"Bearer {login['token']}"
    found = post("/search", {"purpose": CASE, "query": {"plate": plate}}, headers)
    print(f"SEARCH plate={plate} purpose={CASE} by demo-investigator: {found['total']} reads (access logged)")
    return int(str(found["total"])) > 0


def publish(hit_plates: list[str]) -> bool:
    """The public transparency page an agency posts (no log-in): this run in counts, no plate on it."""
    with urllib.request.urlopen(API.removesuffix("/api/v1") + "/transparency", timeout=10) as response:
        page = response.read().decode()
    with urllib.request.urlopen(f"{API}/transparency", timeout=10) as response:
        figures = json.loads(response.read())
    print(f"TRANSPARENCY page /transparency: {figures['reads']} reads, {figures['hits']} hits, "
          f"{figures['searches']} searches in {figures['period_days']} days (public: counts only)")  # fmt: skip
    return not any(plate in page for plate in hit_plates)


def edge_config() -> EdgeConfig:
    snippet = tomllib.loads((VAR / "enrolments" / NODE / "edge.toml").read_text())
    snippet["keys"]["node_secret_key_file"] = str(VAR / "enrolments" / NODE / "node.key")
    return EdgeConfig.model_validate(
        {
            **snippet,
            "node": {"id": NODE, "data_dir": str(VAR / "edge")},
            "cameras": [{"id": "north", "uri": str(DEMO / "clip.avi"), "target_fps": 0}],
            "gps": {"mode": "fixed", "latitude": 32.7157, "longitude": -117.1611, "heading_deg": 0},
            "recognition": {"min_confidence": 0.3},
            "tracker": {"lost_after_s": 1.0, "min_observations": 2},
            "alerts": {"bell": False},
            "uplink": {"heartbeat_interval_s": 1.0, "ack_timeout_s": 2.0},
        }
    )


def print_read(record: wire.ReadRecord) -> None:
    place = f"{record.gps.latitude:.5f},{record.gps.longitude:.5f}" if record.gps else "-"
    print(f"READ {record.plate} confidence={record.confidence:.2f} node={record.node_id} camera={record.camera_id} "
          f"direction={record.direction} frames={record.observations} at={record.best_utc:%Y-%m-%dT%H:%M:%SZ} "
          f"place={place}", flush=True)  # fmt: skip


def main() -> int:
    logging.basicConfig(level=os.environ.get("ALPR_DEMO_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    hub("init")
    hub("nodes", "enroll", NODE, "--out", str(VAR / "enrolments"))
    hub("hotlist", "import", str(DEMO / "stolen-vehicles.csv"), "--list", "stolen-vehicles", "--format", "csv",
        "--mapping", str(DEMO / "stolen-vehicles.mapping.toml"), "--by", "demo-admin")  # fmt: skip
    account = enrol_investigator()
    print("hub: keys, database, node demo-cam-1, hot list stolen-vehicles and user demo-investigator ready under "
          "var/demo", flush=True)  # fmt: skip

    server = subprocess.Popen(
        [str(BIN / "alpr-hub"), "--config", str(HUB_CONFIG), "--log-level", "WARNING", "serve"],
        start_new_session=True,
    )
    stop_console = threading.Event()
    hits = 0
    hit_plates: list[str] = []

    class CountingOut:
        def write(self, text: str) -> int:
            nonlocal hits
            hits += text.count("HIT ")
            hit_plates.extend(line.split()[1] for line in text.splitlines() if line.startswith("HIT "))
            sys.stdout.write(text)
            sys.stdout.flush()
            return len(text)

        def flush(self) -> None:
            sys.stdout.flush()

    console = DispatchConsole("tcp://127.0.0.1:15556", CountingOut(), bell_max_priority=0)  # type: ignore[arg-type]
    console_thread = threading.Thread(target=console.run, args=(stop_console,), daemon=True)
    console_thread.start()
    node = EdgeNode(edge_config(), on_read=print_read)
    try:
        node.start()
        node.run(until_sources_end=True)
        deadline = time.monotonic() + 20
        while node.spool.stats().depth and time.monotonic() < deadline:
            time.sleep(0.1)
        delivered = node.spool.stats().depth == 0
        time.sleep(1.0)  # let the hits reach the console
        searched = bool(hit_plates) and investigate(account, hit_plates[0])
        published = publish(hit_plates)
    finally:
        node.stop()
        time.sleep(1.0)  # let the last hits reach the console
        stop_console.set()
        console_thread.join(5)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
    logging.getLogger("demo").info("uplink %s", node.uplink.stats)
    print(hub("audit", "verify").strip())
    print(f"demo: {node.counters.reads_emitted} reads, all delivered: {delivered}, {hits} hits; hub exited "
          f"with {server.returncode}")  # fmt: skip
    print(f"web pages while alpr-hub serve runs: {API.removesuffix('/api/v1')}/board (dispatchers), /search "
          "(investigators), /transparency (public)")  # fmt: skip
    return 0 if delivered and hits and searched and published and server.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
