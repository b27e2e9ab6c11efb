"""The edge node: cameras -> recognition -> tracking -> read records -> spool -> uplink, plus local alerts.

Threads: one capture thread per camera (``CameraWorker``), the uplink thread, the GPS thread, and
the recognition loop in the caller's thread (``run``). Capture never waits for recognition: each
camera has a small latest-frame queue that drops the oldest frame and counts it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import zmq

from edge import __version__, wire
from edge.capture import CameraConfig, CameraWorker, FrameSource, LatestFrameQueue, make_source
from edge.clock import ClockMonitor
from edge.config import CameraSection, EdgeConfig
from edge.gps import FixedPosition, GpsdClient, GpsFix, PositionSource, PositionStatus
from edge.hotlist import AlertConfig, HotlistCache, HotlistIndex, LocalAlert, LocalAlerter, load_or_create_cache_key
from edge.recognition import const
from edge.recognition.engine import Recognizer, RecognizerConfig
from edge.recognition.formats import mask_plate
from edge.recognition.types import BgrImage
from edge.sealing import Sealer, decode_key
from edge.spool import Spool, SpoolError
from edge.tracker import Observation, PlateTracker, TrackerConfig, VehiclePass
from edge.uplink import CurveKeys, Uplink, UplinkConfig

logger = logging.getLogger(__name__)

IDLE_TICK_S = 0.25
"""Cameras that deliver nothing (motion gating, lost stream) still advance their tracker this often."""
FIX_HISTORY = 600
"""Positions remembered per camera (one per processed frame), to stamp a pass with its best frame's."""
SPOOL_RETRY_MIN_S = 1.0
SPOOL_RETRY_MAX_S = 30.0
PENDING_WRITES_MAX = 1000
"""Reads kept in memory while the spool cannot be written (full disk); beyond this they are dropped, counted."""


@dataclass
class NodeCounters:
    frames_processed: int = 0
    plates_seen: int = 0
    reads_emitted: int = 0
    reads_spooled: int = 0
    spool_write_errors: int = 0
    reads_dropped: int = 0
    recognition_errors: int = 0
    hotlist_hits: int = 0
    frame_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=500))


ReadCallback = Callable[[wire.ReadRecord], None]
HitCallback = Callable[[LocalAlert], None]


class EdgeNode:
    """Assembles the stages from a validated config; tests and benchmarks may hand in their own."""

    def __init__(
        self,
        config: EdgeConfig,
        recognizer: Recognizer | None = None,
        position: PositionSource | None = None,
        sources: dict[str, FrameSource] | None = None,
        on_read: ReadCallback | None = None,
        on_hit: HitCallback | None = None,
    ) -> None:
        self.config = config
        self.data_dir = config.node.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.recognizer = recognizer or Recognizer.from_config(
            RecognizerConfig(
                detector_backend=config.recognition.backend,
                threads=config.recognition.threads,
                detector_long_side=config.recognition.detector_long_side,
                detector_threshold=config.recognition.detector_threshold,
                min_confidence=config.recognition.min_confidence,
                region_hint=config.recognition.region_hint,
            )
        )
        self.position = position or _position_source(config)
        self.clock = ClockMonitor()
        self.cameras = {c.id: c for c in config.cameras}
        self.queues = {c.id: LatestFrameQueue(2) for c in config.cameras}
        self.workers = {
            c.id: CameraWorker(_camera_config(c), (sources or {}).get(c.id) or _source(c), self.queues[c.id])
            for c in config.cameras
        }
        tracker_config = TrackerConfig(
            lost_after_s=config.tracker.lost_after_s,
            max_track_s=config.tracker.max_track_s,
            reread_interval_s=config.tracker.reread_interval_s,
            min_observations=config.tracker.min_observations,
        )
        self.trackers = {c.id: PlateTracker(c.id, tracker_config) for c in config.cameras}
        self.spool = Spool(
            self.data_dir / "spool.db",
            Sealer(decode_key(config.hub.spool_public_key)),
            max_bytes=config.spool.max_mb * 1024 * 1024,
            max_age=timedelta(days=config.spool.max_age_days),
        )
        self.hotlist_cache = HotlistCache(self.data_dir / "hotlist.bin", _cache_key(config, self.data_dir))
        self.hotlist: HotlistIndex | None = self.hotlist_cache.load() if config.alerts.enabled else None
        self.alerter = LocalAlerter(
            AlertConfig(
                bell=config.alerts.bell,
                bell_max_priority=config.alerts.bell_max_priority,
                pub_endpoint=config.alerts.pub_endpoint,
                command=config.alerts.command,
                webhook_url=config.alerts.webhook_url,
            )
        )
        self.uplink = Uplink(
            UplinkConfig(
                node_id=config.node.id,
                hub_endpoint=config.hub.endpoint,
                keys=CurveKeys(config.keys.node_public_key, config.keys.secret_key(), config.hub.public_key),
                batch_size=config.uplink.batch_size,
                batches_in_flight=config.uplink.batches_in_flight,
                ack_timeout_s=config.uplink.ack_timeout_s,
                backoff_max_s=config.uplink.backoff_max_s,
                heartbeat_interval_s=config.uplink.heartbeat_interval_s,
                hotlist_poll_s=config.uplink.hotlist_poll_s,
            ),
            self.spool,
            health=self.health,
            hotlist_sink=self._on_hotlist if config.alerts.enabled else None,
            hotlist_version=self.hotlist_cache.version,
            context=zmq.Context.instance(),
        )
        self.on_read = on_read
        self.on_hit = on_hit
        self.counters = NodeCounters()
        self.model_versions = _model_versions()
        self._pending_writes: deque[tuple[str, bytes]] = deque()
        self._started = time.monotonic()
        self._last_status = 0.0
        self._last_tick: dict[str, float] = {}
        self._fixes: dict[str, deque[tuple[datetime, GpsFix | None]]] = {
            c.id: deque(maxlen=FIX_HISTORY) for c in config.cameras
        }
        self._retry_at = 0.0
        self._retry_backoff_s = SPOOL_RETRY_MIN_S
        self._stop = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.position.start()
        self.uplink.start()
        for worker in self.workers.values():
            worker.start()
        logger.info("edge node %s started with %d camera(s)", self.config.node.id, len(self.workers))

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, until_sources_end: bool = False) -> None:
        """The recognition loop; returns after ``request_stop`` (or when every finite source ended)."""
        while not self._stop.is_set():
            got_frame = False
            for camera_id, queue in self.queues.items():
                frame = queue.get(timeout=0.01)
                if frame is not None:
                    got_frame = True
                    self._process(camera_id, frame.image, frame.monotonic_s)
                else:
                    self._idle_tick(camera_id)
            self._retry_pending_writes()
            self._write_status_if_due()
            if until_sources_end and not got_frame and not any(w.running for w in self.workers.values()):
                self._flush_trackers()  # the vehicles still in view when a file ends are reads too
                break

    def stop(self, drain_s: float = 3.0) -> None:
        """Flush open tracks to the spool, give the uplink a moment to send, close everything."""
        for worker in self.workers.values():
            worker.stop(timeout=2.0)
        self._flush_trackers()
        deadline = time.monotonic() + drain_s
        while self.spool.stats().depth and self.uplink.stats.link != "down" and time.monotonic() < deadline:
            self.uplink.notify()
            time.sleep(0.05)
        self.uplink.stop()
        self.position.stop()
        self.alerter.close()
        self._write_status()
        self.spool.close()
        logger.info("edge node %s stopped", self.config.node.id)

    # --- per frame ---------------------------------------------------------------------------

    def _process(self, camera_id: str, image: BgrImage, captured_s: float) -> None:
        fix = self.position.latest()
        stamp = self.clock.now(fix)
        self._fixes[camera_id].append((stamp.utc, fix))
        try:
            result = self.recognizer.recognize(image)
        except Exception:  # a bad frame must not stop the node; count it and go on
            self.counters.recognition_errors += 1
            logger.exception("recognition failed on a frame of camera %s", camera_id)
            return
        self.counters.frames_processed += 1
        self.counters.plates_seen += len(result.plates)
        self._last_tick[camera_id] = time.monotonic()
        observation = Observation(camera_id, captured_s, stamp, image, result.plates)
        for vehicle_pass in self.trackers[camera_id].update(observation):
            self._emit(vehicle_pass)
        self.counters.frame_latency_ms.append((time.monotonic() - captured_s) * 1000)

    def _flush_trackers(self) -> None:
        for tracker in self.trackers.values():
            for vehicle_pass in tracker.flush():
                self._emit(vehicle_pass)

    def _idle_tick(self, camera_id: str) -> None:
        """Let a silent camera's tracker notice that its vehicles have left."""
        now = time.monotonic()
        if now - self._last_tick.get(camera_id, 0.0) < IDLE_TICK_S:
            return
        self._last_tick[camera_id] = now
        for vehicle_pass in self.trackers[camera_id].tick(now):
            self._emit(vehicle_pass)

    def _fix_at(self, camera_id: str, moment: datetime) -> GpsFix | None:
        """The position when the pass's best frame was taken, not when the pass ended (cars move)."""
        recent = self._fixes[camera_id]
        if not recent:
            return self.position.latest()
        _, fix = min(recent, key=lambda entry: abs((entry[0] - moment).total_seconds()))
        return fix

    def _emit(self, vehicle_pass: VehiclePass) -> None:
        record = self._record(vehicle_pass, self._fix_at(vehicle_pass.camera_id, vehicle_pass.best_seen.utc))
        self.counters.reads_emitted += 1
        self._spool(record.read_id, record.to_bytes())
        plate = record.plate if self.config.node.log_plates else mask_plate(record.plate)
        logger.info("read %s camera=%s plate=%s conf=%.2f", record.read_id, record.camera_id, plate, record.confidence)
        if self.on_read is not None:
            self.on_read(record)
        self._match(record)

    def _record(self, vehicle_pass: VehiclePass, fix: GpsFix | None) -> wire.ReadRecord:
        camera = self.cameras[vehicle_pass.camera_id]
        images = self.config.images
        return wire.ReadRecord(
            read_id=wire.uuid7(),
            node_id=self.config.node.id,
            camera_id=vehicle_pass.camera_id,
            plate=vehicle_pass.text,
            confidence=min(1.0, max(0.0, vehicle_pass.confidence)),
            candidates=[
                wire.CandidateModel(text=c.text, confidence=min(1.0, max(0.0, c.confidence)))
                for c in vehicle_pass.candidates[:16]
                if c.text.isalnum() and len(c.text) <= 16
            ],
            region=vehicle_pass.region,
            box=vehicle_pass.box,
            char_confidences=[min(1.0, max(0.0, c)) for c in vehicle_pass.char_confidences[:16]],
            first_seen_utc=vehicle_pass.first_seen.utc,
            best_utc=vehicle_pass.best_seen.utc,
            last_seen_utc=vehicle_pass.last_seen.utc,
            time_source=vehicle_pass.best_seen.source,
            clock_suspect=vehicle_pass.clock_suspect,
            direction=vehicle_pass.direction,
            observations=vehicle_pass.observations,
            gps=_gps_model(fix, camera),
            crop_jpeg=encode_jpeg(vehicle_pass.crop, images.crop_jpeg_quality),
            context_jpeg=(
                encode_jpeg(_shrink(vehicle_pass.context, images.context_max_width), images.context_jpeg_quality)
                if images.context
                else None
            ),
            software_version=__version__,
            model_versions=self.model_versions,
        )

    def _spool(self, read_id: str, payload: bytes) -> None:
        try:
            self.spool.put(read_id, payload)
        except SpoolError as exc:
            self.counters.spool_write_errors += 1
            if not self._pending_writes:  # once per outage, not once per read
                logger.error("cannot write to the spool (%s); keeping reads in memory and retrying", exc)
                self._retry_at = time.monotonic() + self._retry_backoff_s
            if len(self._pending_writes) >= PENDING_WRITES_MAX:
                dropped, _ = self._pending_writes.popleft()
                self.counters.reads_dropped += 1
                logger.error("in-memory backlog full: read %s dropped", dropped)
            self._pending_writes.append((read_id, payload))
            return
        self.counters.reads_spooled += 1
        self.uplink.notify()

    def _retry_pending_writes(self) -> None:
        if not self._pending_writes or time.monotonic() < self._retry_at:
            return
        batch = list(self._pending_writes)
        try:
            self.spool.put_many(batch)
        except SpoolError:
            self._retry_backoff_s = min(self._retry_backoff_s * 2, SPOOL_RETRY_MAX_S)
            self._retry_at = time.monotonic() + self._retry_backoff_s
            return
        self._retry_backoff_s = SPOOL_RETRY_MIN_S
        self._pending_writes.clear()
        self.counters.reads_spooled += len(batch)
        logger.info("spool writable again: %d held reads written", len(batch))
        self.uplink.notify()

    # --- hot lists ---------------------------------------------------------------------------

    def _on_hotlist(self, message: wire.HotlistMessage, entries: list[wire.ListedPlate]) -> None:
        self.hotlist_cache.store(message, entries)
        self.hotlist = HotlistIndex(entries, version=message.version)

    def _match(self, record: wire.ReadRecord) -> None:
        index = self.hotlist
        if index is None:
            return
        for hit in index.match_read(record):
            self.counters.hotlist_hits += 1
            alert = LocalAlert.from_hit(record, hit)
            self.alerter.alert(alert)
            if self.on_hit is not None:
                self.on_hit(alert)

    # --- health and status -------------------------------------------------------------------

    def health(self) -> wire.NodeHealth:
        spool = self.spool.stats()
        cameras = {}
        for camera_id, worker in self.workers.items():
            stats = worker.stats()
            cameras[camera_id] = wire.CameraHealth(
                fps=stats.fps,
                frames_captured=stats.frames_captured,
                dropped=stats.dropped,
                reconnects=stats.reconnects,
                read_errors=stats.read_errors,
                connected=stats.connected,
            )
        return wire.NodeHealth(
            cameras=cameras,
            spool_depth=spool.depth,
            spool_bytes=spool.bytes,
            evictions_total=spool.evicted_total,
            gps_status=self.position.status(),
            clock_source=self.clock.now(self.position.latest()).source,
            cpu_temp_c=cpu_temperature(),
            uptime_s=time.monotonic() - self._started,
            software_version=__version__,
            model_versions=self.model_versions,
        )

    def status(self) -> dict[str, Any]:
        health = self.health()
        fix = self.position.latest()
        latency = sorted(self.counters.frame_latency_ms)
        return {
            "node_id": self.config.node.id,
            "written_utc": datetime.now(UTC).isoformat(),
            "link": self.uplink.stats.link,
            "last_ack_utc": self.uplink.stats.last_ack_utc.isoformat() if self.uplink.stats.last_ack_utc else None,
            "spool": {"depth": health.spool_depth, "bytes": health.spool_bytes, "evicted": health.evictions_total},
            "gps": {"status": health.gps_status, "last_fix_age_s": round(fix.age(), 1) if fix else None},
            "cameras": {k: v.model_dump() for k, v in health.cameras.items()},
            "hotlist_version": self.hotlist_cache.version(),
            "counters": {k: v for k, v in vars(self.counters).items() if isinstance(v, int)},
            "frame_latency_p95_ms": round(latency[int(0.95 * (len(latency) - 1))], 1) if latency else None,
        }

    def _write_status_if_due(self) -> None:
        if time.monotonic() - self._last_status >= self.config.node.status_interval_s:
            self._write_status()

    def _write_status(self) -> None:
        self._last_status = time.monotonic()
        path = self.data_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)


# --- helpers -------------------------------------------------------------------------------------


def encode_jpeg(image: BgrImage, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


def _shrink(image: BgrImage, max_width: int) -> BgrImage:
    h, w = image.shape[:2]
    if w <= max_width:
        return image
    return cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)


def _gps_model(fix: GpsFix | None, camera: CameraSection) -> wire.GpsModel | None:
    if fix is None:
        return None
    heading = camera.heading_deg if camera.heading_deg is not None else fix.heading_deg
    return wire.GpsModel(
        latitude=fix.latitude,
        longitude=fix.longitude,
        altitude_m=fix.altitude_m,
        speed_mps=fix.speed_mps,
        heading_deg=heading % 360 if heading is not None else None,
        mode=fix.mode,
        eph_m=fix.eph_m,
        epv_m=fix.epv_m,
        gps_time=fix.gps_time,
        source=fix.source,
    )


def _position_source(config: EdgeConfig) -> PositionSource:
    gps = config.gps
    if gps.mode == "fixed":
        assert gps.latitude is not None and gps.longitude is not None
        return FixedPosition(gps.latitude, gps.longitude, heading_deg=gps.heading_deg, altitude_m=gps.altitude_m)
    if gps.mode == "gpsd":
        return GpsdClient(gps.host, gps.port, stale_after_s=gps.stale_after_s)
    return NoPosition()


class NoPosition:
    """For nodes without GPS: every read carries no position."""

    def latest(self) -> GpsFix | None:
        return None

    def status(self) -> PositionStatus:
        return "no-fix"

    def counters(self) -> dict[str, int]:
        return {}

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


def _camera_config(camera: CameraSection) -> CameraConfig:
    return CameraConfig(
        camera_id=camera.id,
        uri=camera.uri,
        target_fps=camera.target_fps,
        roi=camera.roi,
        motion_gating=camera.motion_gating,
        motion_threshold=camera.motion_threshold,
        loop=camera.loop,
    )


def _source(camera: CameraSection) -> FrameSource:
    return make_source(camera.uri, loop=camera.loop, api=camera.api, realtime=camera.realtime)


def _cache_key(config: EdgeConfig, data_dir: Path) -> bytes:
    return load_or_create_cache_key(config.alerts.cache_key_file or data_dir / "hotlist.key")


def _model_versions() -> dict[str, str]:
    """Short content hashes of the shipped models, so every read says which models made it."""
    versions = {}
    for name, path in (("detector", const.DETECTOR_MODEL), ("ocr", const.OCR_MODEL)):
        if path.is_file():
            versions[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return versions


def cpu_temperature() -> float | None:
    """The first thermal zone's temperature in Celsius where the kernel exposes one (Pi, Jetson)."""
    try:
        millidegrees = Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()
        return round(int(millidegrees) / 1000, 1)
    except (OSError, ValueError):
        return None
