"""Reliable edge -> hub delivery over a CurveZMQ DEALER socket (the zguide's Lazy Pirate pattern).

The spool is the source of truth: the uplink sends the oldest pending reads in batches, up to
``batches_in_flight`` of them before the first is acked, deletes acked (and rejected) reads from the
spool, and sends the next. No ack within ``ack_timeout_s`` means the link or the hub is gone: the socket
is closed and reopened (dropping whatever ZeroMQ still queued) and every unacked read is resent, oldest
first, after an exponential back-off. The hub drops duplicates by read id, so a resend after a lost ack
is harmless: exactly-once delivery is at-least-once sending plus idempotent storage.

Heartbeats carry node health; eviction reports are resent until acked; hot-list snapshots are
requested periodically and handed to a sink (the node's encrypted hot-list cache).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zmq

from edge import wire
from edge.spool import EvictionReport, Spool, SpoolError

logger = logging.getLogger(__name__)

IDLE_POLL_S = 0.05
"""How often an idle uplink looks at the spool: bounds the send latency of a fresh read."""
BATCHES_IN_FLIGHT = 4
"""Batches sent ahead of their acks. With one, a backlog drains a batch per hub commit and the hub
waits on the node between commits; a few keep the hub's next group arriving while it commits."""


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """Z85-encoded CurveZMQ keys: the node's own pair and the hub's public key."""

    node_public: str
    node_secret: str
    hub_public: str


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    node_id: str
    hub_endpoint: str
    keys: CurveKeys
    batch_size: int = 64
    batches_in_flight: int = BATCHES_IN_FLIGHT
    ack_timeout_s: float = 5.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    heartbeat_interval_s: float = 10.0
    hotlist_poll_s: float = 300.0


@dataclass
class UplinkStats:
    link: str = "connecting"
    """'up' after an ack within the last ack timeout, 'down' after a timeout, 'connecting' before."""
    batches_sent: int = 0
    reads_acked: int = 0
    reads_rejected: int = 0
    resends: int = 0
    timeouts: int = 0
    bad_replies: int = 0
    heartbeats_acked: int = 0
    hotlist_version: int | None = None
    last_ack_utc: datetime | None = None
    last_error: str | None = None


@dataclass
class _InFlight:
    """One batch sent and not yet fully acked."""

    read_ids: set[str]
    deadline: float
    last_seq: int
    """The spool ``seq`` of its newest read: the next batch starts after it."""


@dataclass
class _Pending:
    """Messages other than reads that wait for an ack by message id."""

    heartbeat_id: str | None = None
    heartbeat_deadline: float = 0.0
    evictions_id: str | None = None
    evictions: list[EvictionReport] = field(default_factory=list)


HotlistSink = Callable[[wire.HotlistMessage, list[wire.ListedPlate]], None]
HealthProvider = Callable[[], wire.NodeHealth]


class Uplink:
    def __init__(
        self,
        config: UplinkConfig,
        spool: Spool,
        health: HealthProvider,
        hotlist_sink: HotlistSink | None = None,
        hotlist_version: Callable[[], int | None] = lambda: None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.health = health
        self.hotlist_sink = hotlist_sink
        self.hotlist_version = hotlist_version
        self.context = context or zmq.Context.instance()
        self.stats = UplinkStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._in_flight: list[_InFlight] = []
        """Batches sent and not fully acked, oldest first."""
        self._pending = _Pending()
        self._backoff = config.backoff_min_s
        self._retry_at = 0.0
        self._next_heartbeat = 0.0
        self._next_hotlist = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_socket()

    def notify(self) -> None:
        """A read was spooled: send it now rather than at the next idle poll."""
        self._wake.set()

    # --- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        self._open_socket()
        while not self._stop.is_set():
            try:
                self._step()
            except SpoolError as exc:
                self.stats.last_error = f"spool: {exc}"
                logger.error("uplink: spool error: %s", exc)
                self._stop.wait(1.0)
            except zmq.ZMQError as exc:
                self.stats.last_error = f"zmq: {exc}"
                logger.warning("uplink: socket error, reconnecting: %s", exc)
                self._reconnect()

    def _step(self) -> None:
        now = time.monotonic()
        while len(self._in_flight) < self.config.batches_in_flight and now >= self._retry_at:
            if not self._send_batch(now):
                break
        if now >= self._next_heartbeat:
            self._send_heartbeat(now)
        if now >= self._next_hotlist and self.hotlist_sink is not None:
            self._request_hotlist(now)
        self._receive(timeout_s=IDLE_POLL_S)
        now = time.monotonic()
        reads_late = bool(self._in_flight) and now > self._in_flight[0].deadline
        heartbeat_late = self._pending.heartbeat_id is not None and now > self._pending.heartbeat_deadline
        if reads_late or heartbeat_late:
            self._on_timeout()
        if not self._in_flight:
            self._wake.wait(IDLE_POLL_S)
            self._wake.clear()

    def _send_batch(self, now: float) -> bool:
        """Send the next pending reads after those in flight; False when there were none."""
        if not self._pending.evictions:
            self._pending.evictions = self.spool.drain_eviction_reports()
        if self._pending.evictions and self._pending.evictions_id is None:
            self._send_evictions()
        after_seq = self._in_flight[-1].last_seq if self._in_flight else None  # nothing in flight: the oldest
        batch = self.spool.pending(self.config.batch_size, after_seq=after_seq)
        if not batch:
            return False
        message = wire.ReadsMessage(
            node_id=self.config.node_id,
            items=[wire.ReadRef(read_id=r.read_id, blob=i) for i, r in enumerate(batch)],
        )
        self._send(wire.encode(message, [r.sealed for r in batch]))
        self.spool.mark_attempt(r.read_id for r in batch)
        self.stats.batches_sent += 1
        self.stats.resends += sum(1 for r in batch if r.attempts > 0)
        self._in_flight.append(_InFlight({r.read_id for r in batch}, now + self.config.ack_timeout_s, batch[-1].seq))
        return True

    def _send_heartbeat(self, now: float) -> None:
        message_id = wire.uuid7()
        message = wire.HeartbeatMessage(
            message_id=message_id, node_id=self.config.node_id, sent_utc=datetime.now(UTC), health=self.health()
        )
        self._send(wire.encode(message))
        self._pending.heartbeat_id = message_id
        self._pending.heartbeat_deadline = now + self.config.ack_timeout_s
        self._next_heartbeat = now + self.config.heartbeat_interval_s

    def _send_evictions(self) -> None:
        message_id = wire.uuid7()
        message = wire.EvictionsMessage(
            message_id=message_id,
            node_id=self.config.node_id,
            evicted=[
                wire.EvictedRead(read_id=e.read_id, created_utc=e.created_utc, reason=e.reason)
                for e in self._pending.evictions
            ],
        )
        self._send(wire.encode(message))
        self._pending.evictions_id = message_id

    def _request_hotlist(self, now: float) -> None:
        request = wire.HotlistRequest(node_id=self.config.node_id, have_version=self.hotlist_version())
        self._send(wire.encode(request))
        self._next_hotlist = now + self.config.hotlist_poll_s

    def _receive(self, timeout_s: float) -> None:
        assert self._socket is not None
        if not self._socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            return
        while self._socket.poll(0, zmq.POLLIN):
            frames = self._socket.recv_multipart()
            try:
                message, blobs = wire.decode(frames)
            except wire.WireError as exc:
                self.stats.bad_replies += 1
                logger.warning("uplink: unusable reply from hub (%s): %s", exc.code, exc)
                continue
            self._dispatch(message, blobs)

    def _dispatch(self, message: wire.Message, blobs: list[bytes]) -> None:
        if isinstance(message, wire.AckMessage):
            self._on_ack(message)
        elif isinstance(message, wire.HotlistMessage) and blobs and self.hotlist_sink is not None:
            self._take_hotlist(message, blobs[0])
        elif isinstance(message, wire.HotlistCurrentMessage):
            self.stats.hotlist_version = message.version
        elif isinstance(message, wire.ErrorMessage):
            self.stats.bad_replies += 1
            logger.warning("uplink: hub refused a message: %s %s", message.code, message.detail)
        else:
            self.stats.bad_replies += 1

    def _take_hotlist(self, message: wire.HotlistMessage, blob: bytes) -> None:
        assert self.hotlist_sink is not None
        try:
            entries = wire.unpack_hotlist_entries(blob)
            self.hotlist_sink(message, entries)
        except Exception as exc:  # a bad snapshot or a full disk must not kill the uplink thread
            self.stats.bad_replies += 1
            self.stats.last_error = f"hot-list: {type(exc).__name__}"
            logger.error("uplink: hot-list version %d not taken: %s", message.version, exc)
            return
        self.stats.hotlist_version = message.version
        logger.info("uplink: hot-list version %d received (%d entries)", message.version, len(entries))

    def _on_ack(self, ack: wire.AckMessage) -> None:
        self._mark_up()
        if ack.message_id is not None:
            if ack.message_id == self._pending.heartbeat_id:
                self.stats.heartbeats_acked += 1
                self._pending.heartbeat_id = None
            elif ack.message_id == self._pending.evictions_id:
                self._pending = _Pending(heartbeat_id=self._pending.heartbeat_id)
            return
        done = set(ack.accepted) | {r.read_id for r in ack.rejected}
        for rejected in ack.rejected:
            logger.error("uplink: hub rejected read %s: %s", rejected.read_id, rejected.reason)
        self.spool.ack(done)
        self.stats.reads_acked += len(ack.accepted)
        self.stats.reads_rejected += len(ack.rejected)
        finished = False
        for batch in self._in_flight:
            batch.read_ids -= done
            finished = finished or not batch.read_ids
        if finished:
            self._in_flight = [batch for batch in self._in_flight if batch.read_ids]
            self._backoff = self.config.backoff_min_s
            self._wake.set()  # more may be waiting: send the next batch without idling

    def _on_timeout(self) -> None:
        self.stats.timeouts += 1
        if self.stats.link != "down":
            logger.warning(
                "uplink: no ack from hub within %.1fs; reconnecting with back-off", self.config.ack_timeout_s
            )
        self.stats.link = "down"
        self._in_flight = []  # everything unacked is resent, oldest first
        self._pending.heartbeat_id = None
        self._pending.evictions_id = None
        self._retry_at = time.monotonic() + self._backoff
        self._next_heartbeat = self._retry_at
        self._backoff = min(self._backoff * 2, self.config.backoff_max_s)
        self._reconnect()

    def _mark_up(self) -> None:
        if self.stats.link != "up":
            logger.info("uplink: hub link up")
        self.stats.link = "up"
        self.stats.last_ack_utc = datetime.now(UTC)

    # --- socket ------------------------------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        assert self._socket is not None
        # A full queue while the hub is away is not an error: the ack timeout resends.
        with contextlib.suppress(zmq.Again):
            self._socket.send_multipart(frames, flags=zmq.NOBLOCK)

    def _open_socket(self) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 16)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.config.backoff_max_s * 1000))
        sock.curve_publickey = self.config.keys.node_public.encode()
        sock.curve_secretkey = self.config.keys.node_secret.encode()
        sock.curve_serverkey = self.config.keys.hub_public.encode()
        sock.connect(self.config.hub_endpoint)
        self._socket = sock

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _reconnect(self) -> None:
        self._close_socket()
        if not self._stop.is_set():
            self._open_socket()
