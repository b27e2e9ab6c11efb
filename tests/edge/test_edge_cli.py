"""``alpr-edge`` as an operator runs it: keygen, check-config on the shipped example, status of a node.

The node whose status is read is a real EdgeNode (capture, spool, uplink, status file) with a small
recogniser stage that finds no plates, so these tests do not depend on the trained models.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from edge.config import load_config
from edge.node import EdgeNode
from edge.recognition.engine import Recognizer
from edge.recognition.types import BgrImage, PlateDetection, PlateReading
from edge.sealing import encode_key, generate_spool_keypair
from tests.edge.test_gps import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "edge.example.toml"
ALPR_EDGE = Path(sys.executable).parent / "alpr-edge"


def alpr_edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ALPR_EDGE), *args], capture_output=True, text=True, timeout=60)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.05)


@dataclass(frozen=True)
class Keys:
    hub_public: str
    spool_public: str
    node_public: str
    node_key_file: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """Real keys: the hub's CurveZMQ and sealing keys, and a node pair made by ``alpr-edge keygen``."""
    hub_public, _ = zmq.curve_keypair()
    spool_public, _ = generate_spool_keypair()
    key_file = tmp_path / "keys" / "node.key"
    result = alpr_edge("keygen", "--out", str(key_file))
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r'node_public_key = "(.{40})"\nnode_secret_key_file = "(.+)"\n', result.stdout)
    assert match is not None, result.stdout
    assert match.group(2) == str(key_file) and key_file.stat().st_mode & 0o777 == 0o600
    assert alpr_edge("keygen", "--out", str(key_file)).returncode == 2  # never overwrites a key silently
    return Keys(hub_public.decode(), encode_key(spool_public), match.group(1), key_file)


# -- check-config ----------------------------------------------------------------------------------


def test_check_config_accepts_the_example_once_its_placeholders_are_real_keys(keys: Keys, tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    replacements = {
        "REPLACE-with-hub-curve-public-key-Z85-40c": keys.hub_public,
        "REPLACE-with-hub-sealing-key-base64": keys.spool_public,
        "REPLACE-with-node-curve-public-key-Z85": keys.node_public,
        "/etc/alpr/node.key": str(keys.node_key_file),
    }
    for placeholder, real in replacements.items():
        assert text.count(placeholder) == 1, f"{placeholder} not (once) in {EXAMPLE}"
        text = text.replace(placeholder, real)
    config = tmp_path / "edge.toml"
    config.write_text(text, encoding="utf-8")
    result = alpr_edge("check-config", "--config", str(config))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{config}: ok (1 camera(s), node car-12)\n"


def test_check_config_names_each_placeholder_of_the_raw_example() -> None:
    result = alpr_edge("check-config", "--config", str(EXAMPLE))
    assert result.returncode == 2 and result.stdout == ""
    keys = sorted(line.split(":", 1)[0] for line in result.stderr.splitlines())
    assert keys == ["hub.public_key", "hub.spool_public_key", "keys.node_public_key"], result.stderr
    assert "placeholder" in result.stderr and "REPLACE" not in result.stderr  # values are never echoed


def test_check_config_reports_a_missing_secret_key_file(keys: Keys, tmp_path: Path) -> None:
    config = write_config(tmp_path, keys, tmp_path / "camera", node_key_file=tmp_path / "absent.key")
    result = alpr_edge("check-config", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == f"keys.node_secret_key_file: no such file: {tmp_path / 'absent.key'}\n"


# -- status ----------------------------------------------------------------------------------------


class NoPlates:
    """A detector stage for a road without vehicles."""

    def detect(self, image: BgrImage) -> list[PlateDetection]:
        return []


class NoReader:
    def read(self, crops: Sequence[BgrImage]) -> list[PlateReading]:
        assert not crops
        return []


def write_config(tmp_path: Path, keys: Keys, camera_dir: Path, node_key_file: Path | None = None) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        f"""
[node]
id = "car-12"
data_dir = "edge-data"
status_interval_s = 0.2

[hub]
endpoint = "tcp://127.0.0.1:{free_port()}"
public_key = "{keys.hub_public}"
spool_public_key = "{keys.spool_public}"

[keys]
node_public_key = "{keys.node_public}"
node_secret_key_file = "{node_key_file or keys.node_key_file}"

[[cameras]]
id = "north"
uri = "dir:{camera_dir}"
loop = true
target_fps = 10

[gps]
mode = "fixed"
latitude = 32.7157
longitude = -117.1611

[alerts]
enabled = false
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def camera_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "camera"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{i:02d}.jpg"), image)
    return folder


@pytest.fixture
def node_config(tmp_path: Path, keys: Keys, camera_dir: Path) -> Path:
    return write_config(tmp_path, keys, camera_dir)


@pytest.fixture
def node(node_config: Path) -> Iterator[EdgeNode]:
    """A running node, as ``alpr-edge run`` would run it from ``node_config``."""
    edge = EdgeNode(load_config(node_config), recognizer=Recognizer(NoPlates(), NoReader()))
    edge.start()
    runner = threading.Thread(target=edge.run, name="node-run", daemon=True)
    runner.start()
    try:
        yield edge
    finally:
        edge.request_stop()
        runner.join(10)
        if edge.spool._conn is not None:  # not stopped by the test itself
            edge.stop(drain_s=0.5)


def status_file(config: Path) -> Path:
    return config.parent / "edge-data" / "status.json"


def status_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {line[:11].strip(): line[11:] for line in result.stdout.splitlines()}


def test_status_of_a_running_then_stopped_node(node: EdgeNode, node_config: Path) -> None:
    def delivering() -> bool:
        try:
            status: dict[str, Any] = json.loads(status_file(node_config).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return bool(status["cameras"]["north"]["fps"] > 0)

    wait_until(delivering, 15, "status.json with a delivering camera")
    result = alpr_edge("status", "--config", str(node_config))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = status_lines(result)
    assert lines.keys() == {"node", "link", "spool", "gps", "camera", "hot list"}, result.stdout
    assert lines["node"] == "car-12"  # no STALE note
    assert re.fullmatch(r"(connecting|down)  last ack never", lines["link"]), lines["link"]
    assert lines["spool"] == "0 reads, 0.0 MB, 0 evicted"
    assert re.fullmatch(r"fixed  last fix 0\.\d s ago", lines["gps"]), lines["gps"]
    match = re.fullmatch(
        r"north: (\d+\.\d) fps, (\d+) dropped, 0 reconnects, 0 read errors, connected", lines["camera"]
    )
    # fps is the rate the source gives frames (before pacing): a folder gives them as fast as it decodes.
    assert match is not None and float(match.group(1)) > 0, lines["camera"]
    assert lines["hot list"] == "version -"

    node.request_stop()
    time.sleep(0.3)
    node.stop(drain_s=0.5)
    result = alpr_edge("status", "--config", str(node_config))
    assert result.returncode == 0, result.stdout  # just stopped: its last word is still fresh
    assert status_lines(result)["camera"].endswith(", DISCONNECTED")

    # A minute later nobody has rewritten it: the status is stale, and says so.
    path = status_file(node_config)
    status = json.loads(path.read_text(encoding="utf-8"))
    status["written_utc"] = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    path.write_text(json.dumps(status), encoding="utf-8")
    result = alpr_edge("status", "--config", str(node_config))
    assert result.returncode == 1
    assert re.fullmatch(r"car-12  \(STALE: last written 6\ds ago\)", status_lines(result)["node"]), result.stdout


def test_status_without_a_status_file_says_the_node_is_not_running(node_config: Path) -> None:
    result = alpr_edge("status", "--config", str(node_config))
    assert result.returncode == 1 and result.stdout == ""
    assert "no status yet" in result.stderr and "is the node running?" in result.stderr


def test_status_with_a_broken_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text("[node\n", encoding="utf-8")
    result = alpr_edge("status", "--config", str(config))
    assert result.returncode == 2 and "not valid TOML" in result.stderr
