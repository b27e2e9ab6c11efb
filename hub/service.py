"""``alpr-hub serve``: ingest, hot-list matching, dispatch alerts and the retention job in one process."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import uvicorn
import zmq
from sqlalchemy.orm import Session, sessionmaker

from edge import wire
from edge.recognition.formats import mask_plate
from edge.sealing import Opener
from hub.access.auditlog import AccessLog
from hub.access.service import ComplianceService
from hub.api.app import create_app
from hub.config import HubConfig
from hub.db import SchemaOutOfDateError, make_engine, require_current_schema, session_factory
from hub.dispatch import HitAlert, HitPublisher, mark_delivered
from hub.hotlists import HitEvent, HotlistService, expire_entries, purge_expired_lists
from hub.ingest import EnrolledNode, IngestServer
from hub.keys import load_access_log_key, load_keys
from hub.retention import RetentionJob, RetentionPolicy, RetentionReport, RetentionScheduler
from hub.storage import ImageStore

logger = logging.getLogger(__name__)


GC_THRESHOLDS = (100_000, 50, 100)
"""Python's cyclic garbage collector runs a young-generation pass every 100,000 allocations net (not 700).

Ingest allocates a few hundred short-lived objects a read (msgpack maps, pydantic models of the read
and its candidates, rows), freed by reference counting, not by the collector; at the default threshold
the collector ran every few reads and walked every object of the group being stored, and older
generations with the million-entry hot-list index. Measured with reads carrying ten candidates
(``bench_hub.py``, alternating runs on SQLite): 2,685 and 2,912 reads/s at the default, 3,818 and
4,299 with these thresholds (``docs/benchmarks.md``)."""


def tune_garbage_collection() -> None:
    """Set :data:`GC_THRESHOLDS` for this process (``alpr-hub serve`` does; a process-wide setting)."""
    gc.set_threshold(*GC_THRESHOLDS)


def image_store(config: HubConfig) -> ImageStore:
    return ImageStore(config.hub.images, config.hub.data_dir / "images" if config.hub.images == "disk" else None)


def compliance_service(config: HubConfig, sessions: sessionmaker[Session]) -> ComplianceService:
    """The gate in front of every human access (API and CLI), with the agency's policy and log key."""
    access_log = AccessLog(load_access_log_key(config.keys_dir))
    return ComplianceService(sessions, config.policy, access_log, image_store(config),
                             issuer=f"{config.policy.agency.name} ALPR")  # fmt: skip


class ApiServer:
    """The HTTP API under uvicorn, in a thread of the hub process."""

    def __init__(self, config: HubConfig, service: ComplianceService) -> None:
        api = config.api
        app = create_app(service, bell_max_priority=config.dispatch.bell_max_priority)
        self.server = uvicorn.Server(uvicorn.Config(
            app, host=api.host, port=api.port, log_level="warning", access_log=False,
            ssl_certfile=str(api.tls_cert) if api.tls_cert else None,
            ssl_keyfile=str(api.tls_key) if api.tls_key else None,
        ))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.url = f"{'https' if api.tls_cert else 'http'}://{api.bind}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start serving; raises if the API is not listening within ``timeout_s`` (port taken, bad TLS files)."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError(f"the API could not listen on {self.url} (see the log above)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10.0)


class HubService:
    def __init__(self, config: HubConfig, context: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self.config = config
        self.engine = make_engine(config.hub.url())
        try:
            require_current_schema(self.engine)
        except SchemaOutOfDateError:
            self.engine.dispose()
            raise
        self.sessions = session_factory(self.engine)
        keys = load_keys(config.keys_dir)
        self.images = image_store(config)
        self.hotlists = HotlistService(self.sessions)
        self.publisher = HitPublisher(
            config.dispatch.pub_bind, config.dispatch.webhooks, context, on_delivered=self._delivered
        )
        self.ingest = IngestServer(
            config.ingest.bind,
            keys.curve_public.encode(),
            keys.curve_secret.encode(),
            self.sessions,
            self.images,
            Opener(keys.spool_private),
            on_stored=self._match,
            hotlist_snapshot=self.hotlists.snapshot,
            context=context,
        )
        self.stop_event = threading.Event()
        self.compliance = compliance_service(config, self.sessions)
        policy = RetentionPolicy(reads_days=config.retention.reads_days, hits_days=config.retention.hits_days)
        job = HubRetentionJob(RetentionJob(self.sessions, self.images, policy), self.sessions,
                              config.retention.hotlist_days, self.compliance.run_upkeep)  # fmt: skip
        self.retention = RetentionScheduler(job, config.retention.interval_s, self.stop_event)
        self.api = ApiServer(config, self.compliance) if config.api.enabled else None

    def start(self) -> None:
        if self.api is not None:  # first: if its port is taken, fail before anything else runs
            self.api.start()
        self.hotlists.refresh(force=True)
        self.ingest.start()
        self.retention.start()
        logger.info("hub %s serving: ingest %s, hits on %s, API %s", self.config.hub.name, self.ingest.endpoint,
                    self.publisher.endpoint, self.api.url if self.api else "off")  # fmt: skip

    def stop(self) -> None:
        self.stop_event.set()
        if self.api is not None:
            self.api.stop()
        self.ingest.stop()
        self.publisher.close()
        self.retention.join(5.0)
        self.engine.dispose()

    def _match(self, node: EnrolledNode, records: Sequence[wire.ReadRecord], received: datetime) -> None:
        with self.sessions.begin() as session:
            events = self.hotlists.match_and_record(session, records, received, node.name)
        for event in events:
            self.publisher.publish(hit_alert(event, self.api.url if self.api else ""))
            logger.info("hit %d: list=%s plate=%s node=%s", event.hit_id, event.list_name,
                        mask_plate(event.plate_read), event.node_name)  # fmt: skip

    def _delivered(self, hit_id: int, at: datetime) -> None:
        with self.sessions.begin() as session:
            mark_delivered(session, [hit_id], at)


class HubRetentionJob:
    """Reads, hits and images (RetentionJob), then hot lists: expired entries retired, old ones deleted."""

    def __init__(
        self,
        reads: RetentionJob,
        sessions: sessionmaker[Session],
        hotlist_days: int | None,
        upkeep: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.reads = reads
        self.sessions = sessions
        self.hotlist_days = hotlist_days
        self.upkeep = upkeep  # accounts and access-log retention (hub.access), on the same schedule

    def run(self, dry_run: bool = False) -> RetentionReport:
        report = self.reads.run(dry_run=dry_run)
        if not dry_run:
            with self.sessions.begin() as session:
                expired = expire_entries(session)
                deleted = purge_expired_lists(session, default_days=self.hotlist_days)
            logger.info("hot-list retention: %d expired entries retired, %d entries deleted", expired, deleted)
            if self.upkeep is not None:
                self.upkeep()
        return report


def hit_alert(event: HitEvent, base_url: str = "") -> HitAlert:
    return HitAlert.from_fields(
        base_url=base_url,
        hit_id=event.hit_id,
        read_id=event.read_id,
        plate_read=event.plate_read,
        entry_plate=event.entry_plate,
        list_name=event.list_name,
        category=event.category,
        priority=event.priority,
        match_type=event.match_type,
        node_name=event.node_name,
        camera_id=event.camera_id,
        seen_utc=event.best_utc,
        reason=event.category,
        latitude=event.latitude,
        longitude=event.longitude,
    )
