"""The edge node end to end: real models, real ZeroMQ to an in-process hub on SQLite, real gpsd (gpsfake).

The frames come from ``deploy/demo/clip.avi`` (10 fps, 800x450): three cars approaching a roadside
camera, made from CC0 photos. The shipped models read two of them, AB44887 and LTM378; the third may
or may not be read while models are being retrained, so tests assert on those two and on invariants
(one read per pass, no duplicates) for the rest.

Most tests hand the node a :class:`edge.capture.LockstepSource`, which reads the next frame only when the node
has taken the previous one: every frame is recognised, none is dropped, and the run is as fast as the
pipeline. The first test keeps the camera exactly as configured (the clip replayed at its own 10 fps).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq
from sqlalchemy import select

from edge import wire
from edge.capture import DirectorySource, FrameSource, LockstepSource, OpenCvSource
from edge.config import EdgeConfig
from edge.node import EdgeNode
from edge.recognition import const
from edge.recognition.types import BgrImage
from edge.sealing import Opener, Sealer, encode_key, generate_spool_keypair
from edge.spool import Spool
from edge.uplink import CurveKeys
from hub.db import make_engine, session_factory, upgrade
from hub.ingest import IngestServer
from hub.models import Read
from hub.storage import ImageStore
from tests.edge import test_gps
from tests.edge.test_gps import GpsFake, free_port
from tests.hub.conftest import Database, enroll

gpsfake = test_gps.gpsfake  # the fixture, reused as it is

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "deploy" / "demo" / "clip.avi"
ALPR_EDGE = Path(sys.executable).parent / "alpr-edge"
NODE = "car-12"
CAMERA = "north"
LAT, LON = 32.7157, -117.1611
KNOWN_PLATES = {"AB44887", "LTM378"}
# Frame ranges of the clip in which the two readable cars are in view (see scripts/make_demo_clip.py).
CAR_1 = range(26, 40)
CAR_2 = range(52, 66)
EMPTY_FRAME = 45

pytestmark = pytest.mark.skipif(
    not (const.DETECTOR_MODEL.is_file() and const.OCR_MODEL.is_file()),
    reason=f"models missing in {const.MODELS_DIR} (plate_detector.onnx, plate_ocr.onnx); "
    "train them (make train-detector train-ocr) or point ALPR_MODELS_DIR at them",
)


# -- helpers -------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def clip_frames() -> list[BgrImage]:
    capture = cv2.VideoCapture(str(CLIP))
    frames: list[BgrImage] = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == 78, f"{CLIP} should hold 78 frames, got {len(frames)}"
    return frames


@dataclass
class HubSide:
    """An in-process hub: the real IngestServer on a SQLite file, started and stopped at will."""

    database: Database
    images: ImageStore
    endpoint: str
    curve_public: bytes
    curve_secret: bytes
    spool_public: bytes
    spool_private: bytes
    node_keys: CurveKeys
    server: IngestServer | None = None

    def start(self) -> IngestServer:
        server = IngestServer(
            self.endpoint,
            self.curve_public,
            self.curve_secret,
            self.database.sessions,
            self.images,
            Opener(self.spool_private),
        )
        server.registry.refresh_s = 0.2
        server.start()
        self.server = server
        return server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def reads(self) -> list[Read]:
        with self.database.sessions() as session:
            return list(session.scalars(select(Read).order_by(Read.best_utc)))

    def image(self, sha256: str | None) -> BgrImage:
        assert sha256 is not None
        with self.database.sessions() as session:
            data = self.images.get(session, sha256)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None, f"image {sha256} is not a decodable JPEG"
        return image


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubSide]:
    """Keys, a migrated SQLite database with ``car-12`` enrolled, and a free port; not yet started."""
    url = f"sqlite:///{tmp_path}/hub/hub.db"
    upgrade(url)
    engine = make_engine(url)
    database = Database("sqlite", url, engine, session_factory(engine))
    curve_public, curve_secret = zmq.curve_keypair()
    spool_public, spool_private = generate_spool_keypair()
    side = HubSide(
        database=database,
        images=ImageStore("disk", tmp_path / "hub" / "images"),
        endpoint=f"tcp://127.0.0.1:{free_port()}",
        curve_public=curve_public,
        curve_secret=curve_secret,
        spool_public=spool_public,
        spool_private=spool_private,
        node_keys=enroll(database, NODE),
    )
    try:
        yield side
    finally:
        side.stop()
        engine.dispose()


def config_data(hub: HubSide, data_dir: Path, camera: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    """A node configuration (as TOML would give it) for ``hub``; ``sections`` replace whole sections."""
    data: dict[str, Any] = {
        "node": {"id": NODE, "data_dir": str(data_dir), "status_interval_s": 0.2},
        "hub": {
            "endpoint": hub.endpoint,
            "public_key": hub.curve_public.decode(),
            "spool_public_key": encode_key(hub.spool_public),
        },
        "keys": {"node_public_key": hub.node_keys.node_public, "node_secret_key": hub.node_keys.node_secret},
        "cameras": [{"id": CAMERA, **camera}],
        "gps": {"mode": "fixed", "latitude": LAT, "longitude": LON, "heading_deg": 90.0},
        "recognition": {"min_confidence": 0.3},
        # Frames are stamped when captured, so on a loaded machine gaps between them grow: 2 s keeps one
        # pass one pass even when a frame takes far longer than it should.
        "tracker": {"lost_after_s": 2.0, "min_observations": 2},
        "uplink": {"ack_timeout_s": 1.0, "backoff_max_s": 0.5, "heartbeat_interval_s": 0.5},
        "alerts": {"enabled": False},
    }
    data.update(sections)
    return data


def make_config(hub: HubSide, data_dir: Path, camera: dict[str, Any], **sections: dict[str, Any]) -> EdgeConfig:
    return EdgeConfig.model_validate(config_data(hub, data_dir, camera, **sections))


@dataclass
class Collected:
    records: list[wire.ReadRecord] = field(default_factory=list)

    def __call__(self, record: wire.ReadRecord) -> None:
        self.records.append(record)

    @property
    def plates(self) -> list[str]:
        return [r.plate for r in self.records]


class RunThread:
    """``node.run`` in a thread, so the test can watch and poke the node while it runs."""

    def __init__(self, node: EdgeNode, until_sources_end: bool = False) -> None:
        self.node = node
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(until_sources_end,), name="node-run", daemon=True)

    def _run(self, until_sources_end: bool) -> None:
        try:
            self.node.run(until_sources_end=until_sources_end)
        except BaseException as exc:  # re-raised in the test thread by join()
            self.error = exc

    def start(self) -> RunThread:
        self.thread.start()
        return self

    def join(self, timeout_s: float = 30.0) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "node.run did not return"
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def started(node: EdgeNode) -> Iterator[EdgeNode]:
    node.start()
    try:
        yield node
    finally:
        node.request_stop()
        node.stop(drain_s=1.0)


def lockstep_node(config: EdgeConfig, source: FrameSource, **kwargs: Any) -> EdgeNode:
    wrapped = LockstepSource(source)
    node = EdgeNode(config, sources={CAMERA: wrapped}, **kwargs)
    wrapped.queue = node.queues[CAMERA]
    return node


def read_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = json.loads((data_dir / "status.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return status


def write_frames(folder: Path, frames: list[BgrImage], indices: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        path = folder / f"f{i:03d}.jpg"
        assert cv2.imwrite(str(path), frames[i], [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def assert_pass_rows(hub: HubSide, rows: list[Read]) -> None:
    """What every read at the hub must hold: one vehicle pass with its evidence."""
    for row in rows:
        assert row.observations >= 2, f"{row.plate}: a pass should span several frames"
        assert row.first_seen_utc <= row.best_utc <= row.last_seen_utc
        assert row.direction == "approaching", f"{row.plate}: direction {row.direction}"
        crop = hub.image(row.crop_sha256)
        x1, y1, x2, y2 = row.box
        assert abs(crop.shape[1] - (x2 - x1)) <= 2 and abs(crop.shape[0] - (y2 - y1)) <= 2, (crop.shape, row.box)
        assert hub.image(row.context_sha256).shape[:2] == (450, 800)


# -- tests ---------------------------------------------------------------------------------------


def test_clip_gives_one_read_per_car_pass_at_the_hub(hub: HubSide, tmp_path: Path) -> None:
    """The camera as configured: the clip replayed at its own 10 fps (about 8 s), fixed GPS, hub up."""
    hub.start()
    data_dir = tmp_path / "edge"
    config = make_config(hub, data_dir, {"uri": str(CLIP), "target_fps": 0, "realtime": True})
    collected = Collected()
    node = EdgeNode(config, on_read=collected)
    statuses: list[dict[str, Any]] = []
    with started(node):
        runner = RunThread(node, until_sources_end=True).start()
        while runner.thread.is_alive():
            status = read_status(data_dir)
            if status is not None:
                statuses.append(status)
            time.sleep(0.25)
        runner.join()
        wait_until(lambda: node.spool.stats().depth == 0, 15, "the hub to acknowledge every read")
    rows = hub.reads()
    plates = [row.plate for row in rows]
    assert set(plates) >= KNOWN_PLATES, plates
    assert len(plates) == len(set(plates)), f"one read per car pass, not per frame: {plates}"
    assert len(rows) == node.counters.reads_emitted == len(collected.records) <= 3
    assert hub.server is not None and hub.server.stats.reads_stored == len(rows)
    assert_pass_rows(hub, rows)
    for row in rows:
        assert (row.latitude, row.longitude) == (LAT, LON)
        assert row.gps is not None and row.gps["source"] == "fixed" and row.gps["heading_deg"] == 90.0
        assert row.camera_id == CAMERA and row.model_versions.keys() == {"detector", "ocr"}

    camera = node.workers[CAMERA].stats()
    assert camera.frames_captured == 78
    assert node.counters.frames_processed + camera.dropped == 78
    assert node.counters.recognition_errors == 0
    # status.json while running: spool depth, link state, per-camera fps (10 fps clip played in real time)
    running = [s for s in statuses if s["cameras"][CAMERA]["connected"]]
    assert running, "no status.json written while the camera was delivering"
    assert any(5.0 <= s["cameras"][CAMERA]["fps"] <= 15.0 for s in running), [s["cameras"] for s in running]
    assert any(s["link"] == "up" for s in statuses)
    assert all(isinstance(s["spool"]["depth"], int) and s["node_id"] == NODE for s in statuses)
    final = read_status(data_dir)
    assert final is not None and final["spool"]["depth"] == 0 and final["link"] == "up"
    assert final["counters"]["reads_emitted"] == len(rows) and final["gps"]["status"] == "fixed"
    assert final["frame_latency_p95_ms"] is not None


def test_reads_made_while_the_hub_is_away_arrive_once_when_it_comes(hub: HubSide, tmp_path: Path) -> None:
    config = make_config(hub, tmp_path / "edge", {"uri": str(CLIP), "target_fps": 0})
    collected = Collected()
    node = lockstep_node(config, OpenCvSource(str(CLIP), realtime=False), on_read=collected)
    with started(node):
        node.run(until_sources_end=True)
        emitted = node.counters.reads_emitted
        assert emitted >= 2 and set(collected.plates) >= KNOWN_PLATES, collected.plates
        assert node.spool.stats().depth == emitted
        wait_until(lambda: node.uplink.stats.timeouts >= 2, 10, "the uplink to time out on the absent hub")
        assert node.uplink.stats.link == "down" and hub.reads() == []

        server = hub.start()
        wait_until(lambda: node.spool.stats().depth == 0, 20, "the spool to drain into the hub")
        wait_until(lambda: node.uplink.stats.link == "up", 5, "the link to come up")
    rows = hub.reads()
    assert sorted(r.read_id for r in rows) == sorted(r.read_id for r in collected.records)
    assert server.stats.reads_stored == emitted  # resends of the same ids count as duplicates, not rows
    assert_pass_rows(hub, rows)


def test_gps_outage_leaves_reads_without_fix_and_the_node_up(
    hub: HubSide, gpsfake: GpsFake, clip_frames: list[BgrImage], tmp_path: Path
) -> None:
    """gpsd stops and comes back mid-run. Frames go through the node's per-frame path in a fixed order,
    so which read falls in the outage is certain."""
    hub.start()
    config = make_config(
        hub,
        tmp_path / "edge",
        {"uri": f"dir:{tmp_path / 'no-camera'}"},  # the frames are fed below, not captured
        gps={"mode": "gpsd", "port": gpsfake.port, "stale_after_s": 2.0},
        tracker={"lost_after_s": 0.3, "reread_interval_s": 0, "min_observations": 2},
    )
    collected = Collected()
    node = EdgeNode(config, on_read=collected)

    def drive_past(frames: range) -> wire.ReadRecord:
        before = len(collected.records)
        for i in frames:
            node._process(CAMERA, clip_frames[i], time.monotonic())
        time.sleep(0.35)  # longer than lost_after_s: the next frame ends the pass
        node._process(CAMERA, clip_frames[EMPTY_FRAME], time.monotonic())
        assert len(collected.records) == before + 1, collected.plates[before:]
        return collected.records[-1]

    with started(node):
        wait_until(lambda: node.position.latest() is not None, 20, "a fix from gpsd")
        before = drive_past(CAR_1)

        gpsfake.stop()
        wait_until(lambda: node.position.status() == "disconnected", 10, "the node to notice gpsd is gone")
        during = drive_past(CAR_2)
        assert node.status()["gps"] == {"status": "disconnected", "last_fix_age_s": None}

        gpsfake.start()
        wait_until(lambda: node.position.latest() is not None, 30, "the fix to come back")
        after = drive_past(CAR_1)
        wait_until(lambda: node.spool.stats().depth == 0, 15, "the hub to acknowledge every read")
        assert node.uplink.stats.link == "up" and node.position.counters()["reconnects"] >= 1

    assert before.gps is not None and during.gps is None and after.gps is not None
    for record in (before, after):
        assert record.gps is not None and record.gps.source == "gpsd" and record.gps.mode >= 2
        assert abs(record.gps.latitude - test_gps.ROUTE_LAT) < test_gps.NEAR_DEG
    assert (before.plate, during.plate, after.plate) == ("AB44887", "LTM378", "AB44887")
    rows = {row.read_id: row for row in hub.reads()}
    assert rows.keys() == {before.read_id, during.read_id, after.read_id}
    assert rows[during.read_id].latitude is None and rows[during.read_id].gps is None
    assert rows[before.read_id].latitude is not None and rows[after.read_id].latitude is not None


def test_corrupt_frames_are_counted_logged_and_skipped(
    hub: HubSide, clip_frames: list[BgrImage], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    folder = tmp_path / "frames"
    good = write_frames(folder, clip_frames, range(20, 44))
    (folder / "f030b.jpg").write_bytes(os.urandom(5000))  # not an image at all
    (folder / "f033b.jpg").write_bytes(good[5].read_bytes()[:3000])  # truncated mid-transfer
    (folder / "f036b.jpg").write_bytes(b"")  # 0 bytes: an FTP upload that never happened
    source = DirectorySource(folder)
    # A long lost_after_s: on a loaded machine a frame can take longer than the default test's 0.5 s,
    # which would end the pass early and read the same car twice; this test is about the bad files.
    config = make_config(hub, tmp_path / "edge", {"uri": f"dir:{folder}", "target_fps": 0},
                         tracker={"lost_after_s": 10.0, "min_observations": 2})  # fmt: skip
    collected = Collected()
    node = lockstep_node(config, source, on_read=collected)
    with started(node):
        node.run(until_sources_end=True)

    camera = node.workers[CAMERA].stats()
    assert source.read_errors == 3 and camera.read_errors == 3
    assert camera.frames_delivered == len(good) == node.counters.frames_processed
    assert node.counters.recognition_errors == 0
    assert collected.plates == ["AB44887"]  # the car in those frames is still read, once
    skipped = {
        r.getMessage()
        for r in caplog.records
        if r.name == "edge.capture" and r.levelno == logging.WARNING and "skipping image" in r.getMessage()
    }
    assert skipped == {
        "skipping image f030b.jpg: not an image (unrecognised format)",
        "skipping image f033b.jpg: truncated JPEG (no end-of-image marker)",
        "skipping image f036b.jpg: empty file (0 bytes)",
    }


def test_a_camera_that_disappears_is_reconnected(
    hub: HubSide, clip_frames: list[BgrImage], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    folder = tmp_path / "frames"
    write_frames(folder, clip_frames, range(40, 48))
    data_dir = tmp_path / "edge"
    # The camera exactly as configured (a looping folder, as an FTP-fed camera would be), paced to 20 fps.
    config = make_config(hub, data_dir, {"uri": f"dir:{folder}", "loop": True, "target_fps": 20})
    node = EdgeNode(config)
    worker = node.workers[CAMERA]
    with started(node):
        runner = RunThread(node).start()
        wait_until(lambda: node.counters.frames_processed >= 10, 10, "frames from the folder")
        shutil.rmtree(folder)
        wait_until(lambda: worker.stats().reconnects >= 1, 15, "a reconnect attempt")
        assert not worker.stats().connected and runner.thread.is_alive()
        processed = node.counters.frames_processed

        write_frames(folder, clip_frames, range(40, 48))
        wait_until(lambda: worker.stats().connected, 20, "the camera to come back")
        wait_until(lambda: node.counters.frames_processed >= processed + 10, 10, "frames after reconnecting")
        wait_until(lambda: (read_status(data_dir) or {}).get("cameras", {}).get(CAMERA, {}).get("reconnects", 0) >= 1,
                   5, "status.json to show the reconnect")  # fmt: skip
        assert runner.thread.is_alive()
        node.request_stop()
        runner.join()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "edge.capture"]
    assert any(level == logging.WARNING and "lost dir:" in text for level, text in messages), messages
    assert any(level == logging.INFO and "is back after" in text for level, text in messages), messages
    assert node.counters.recognition_errors == 0


def test_full_spool_keeps_reads_in_memory_until_it_is_writable(
    hub: HubSide, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.node")
    hub.start()
    data_dir = tmp_path / "edge"
    config = make_config(hub, data_dir, {"uri": str(CLIP), "target_fps": 0})
    collected = Collected()
    node = lockstep_node(config, OpenCvSource(str(CLIP), realtime=False), on_read=collected)
    # A real SQLITE_FULL, as on a full SD card: cap the spool file at its current size.
    # max_page_count is per connection, hence the reach into the spool's own connection.
    conn = node.spool._conn
    assert conn is not None
    with node.spool._lock:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")
    with started(node):
        runner = RunThread(node).start()
        wait_until(
            lambda: not node.workers[CAMERA].running and node.counters.reads_emitted >= 2, 20, "the clip's reads"
        )
        time.sleep(1.0)  # the run loop keeps retrying meanwhile
        emitted = node.counters.reads_emitted
        assert node.counters.spool_write_errors == emitted and node.counters.reads_spooled == 0
        assert node.counters.reads_dropped == 0 and node.spool.stats().depth == 0
        assert runner.thread.is_alive()
        status = read_status(data_dir)
        assert status is not None and status["counters"]["spool_write_errors"] == emitted

        with node.spool._lock:
            conn.execute("PRAGMA max_page_count = 1073741823")
        wait_until(lambda: node.counters.reads_spooled == emitted, 10, "the held reads to be written")
        wait_until(lambda: len(hub.reads()) == emitted, 15, "the reads to reach the hub")
        node.request_stop()
        runner.join()
    assert sorted(r.read_id for r in hub.reads()) == sorted(r.read_id for r in collected.records)
    assert set(collected.plates) >= KNOWN_PLATES and node.counters.reads_dropped == 0
    assert any("keeping reads in memory" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert any("spool writable again" in r.getMessage() for r in caplog.records)


def test_sigterm_flushes_open_tracks_to_the_spool_and_exits_0(
    hub: HubSide, clip_frames: list[BgrImage], tmp_path: Path
) -> None:
    """``alpr-edge run`` as systemd runs it; the hub is away, so what was read stays in the spool."""
    clip = tmp_path / "short.avi"
    frames = clip_frames[22:70]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 20.0, (800, 450))
    for frame in frames:
        writer.write(frame)
    writer.release()
    data_dir = tmp_path / "edge"
    data = config_data(
        hub,
        data_dir,
        {"uri": str(clip), "target_fps": 0, "realtime": True},
        # Vehicles "stay in view" for a minute: at SIGTERM both cars are open tracks, not yet reads.
        tracker={"lost_after_s": 60.0, "max_track_s": 60.0, "min_observations": 2},
    )
    config_path = tmp_path / "edge.toml"
    config_path.write_text(to_toml(data), encoding="utf-8")
    stderr_path = tmp_path / "alpr-edge.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen([str(ALPR_EDGE), "run", "--config", str(config_path)], stderr=stderr)
        try:

            def clip_done() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"alpr-edge exited early: {stderr_path.read_text()}")
                status = read_status(data_dir)
                return (
                    status is not None
                    and status["counters"]["frames_processed"] >= len(frames) - 5
                    and not status["cameras"][CAMERA]["connected"]
                )

            wait_until(clip_done, 120, "alpr-edge to process the clip")  # start-up is slow on a loaded machine
            status = read_status(data_dir)
            assert status is not None and status["counters"]["reads_emitted"] == 0 and status["spool"]["depth"] == 0
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = stderr_path.read_text()
    assert code == 0, log
    assert "received SIGTERM: shutting down" in log and "edge node car-12 stopped" in log
    ran = [line for line in log.splitlines() if " ran " in line]
    assert ran and ran[-1].endswith(" reads"), log

    with Spool(data_dir / "spool.db", Sealer(hub.spool_public)) as spool:
        spooled = spool.pending(100)
    opener = Opener(hub.spool_private)
    records = [wire.ReadRecord.from_bytes(opener.open(item.sealed)) for item in spooled]
    assert f", {len(records)} reads" in ran[-1]
    plates = [r.plate for r in records]
    assert set(plates) >= KNOWN_PLATES and len(plates) == len(set(plates)), plates
    for record in records:
        assert record.node_id == NODE and record.observations >= 2 and record.direction == "approaching"
        assert record.gps is not None and (record.gps.latitude, record.gps.longitude) == (LAT, LON)
        assert cv2.imdecode(np.frombuffer(record.crop_jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
        assert record.first_seen_utc <= record.best_utc <= record.last_seen_utc <= datetime.now(UTC)


def to_toml(data: dict[str, Any]) -> str:
    """Just enough TOML for the configurations above (tables, arrays of tables, scalars)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        raise TypeError(f"no TOML for {v!r}")

    lines: list[str] = []
    for name, section in data.items():
        tables = section if isinstance(section, list) else [section]
        for table in tables:
            lines.append(f"[[{name}]]" if isinstance(section, list) else f"[{name}]")
            lines.extend(f"{key} = {value(v)}" for key, v in table.items() if v is not None)
            lines.append("")
    return "\n".join(lines)
