"""The hub's ingest server: a CurveZMQ ROUTER that admits enrolled nodes only.

ZAP (ZeroMQ's authentication protocol) asks :class:`NodeRegistry` about every connecting key;
unknown and revoked keys never get a session. Each admitted message is validated against the wire
schema; anything malformed, oversized or of an unknown version is answered with an ``error``,
counted, and never crashes the loop. Reads are stored in one transaction per drained group of
messages (group commit) and acknowledged only after that commit: an acked read is durable.

Two threads share the work: the ingest thread owns the socket (receives, opens and validates reads,
sends acks) and a store thread runs each group's transaction. While one group commits (waiting on
fsync), the next is received and opened, and it grows with the load: the busier the hub, the more
reads each commit carries.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zmq
import zmq.auth.thread
from sqlalchemy import Dialect, select
from sqlalchemy.orm import Session, sessionmaker

from edge import wire
from edge.sealing import Opener, SealError
from hub.models import EvictionRecord, Node
from hub.storage import ImageStore, PreparedRead, StoreResult, prepare_read, record_heartbeat, store_prepared_batches

logger = logging.getLogger(__name__)

GROUP_MAX_READS = 4000
"""Most reads gathered from waiting messages into one database transaction."""
REGISTRY_REFRESH_S = 5.0
"""Revocations take effect within this long without a restart."""
OPEN_SPLIT_MIN = 8
"""Messages with at least this many reads have them opened on two threads."""
MISS_REFRESH_S = 0.5
"""An unknown key triggers a registry reload at most this often (new enrolments take effect at once)."""


@dataclass(frozen=True, slots=True)
class EnrolledNode:
    id: int
    name: str


class NodeRegistry:
    """Enrolled, unrevoked node keys, refreshed from the database; the ZAP credentials provider."""

    def __init__(self, sessions: sessionmaker[Session], refresh_s: float = REGISTRY_REFRESH_S) -> None:
        self.sessions = sessions
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._by_key: dict[str, EnrolledNode] = {}
        self._loaded_at = -1e9
        self._miss_refreshed_at = -1e9
        self.denied = 0

    def refresh(self) -> None:
        with self.sessions() as session:
            rows = session.execute(select(Node.id, Node.name, Node.curve_public_key).where(Node.revoked_utc.is_(None)))
            by_key = {key: EnrolledNode(node_id, name) for node_id, name, key in rows}
        with self._lock:
            self._by_key = by_key
            self._loaded_at = time.monotonic()

    def lookup(self, z85_key: str) -> EnrolledNode | None:
        now = time.monotonic()
        if now - self._loaded_at > self.refresh_s:
            self.refresh()
        with self._lock:
            node = self._by_key.get(z85_key)
        if node is None and now - self._miss_refreshed_at > MISS_REFRESH_S:
            self._miss_refreshed_at = now
            # A node enrolled moments ago should not wait for the periodic refresh; misses are
            # rate-limited so unknown keys cannot turn into a query flood.
            self.refresh()
            with self._lock:
                node = self._by_key.get(z85_key)
        return node

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the ZAP authenticator thread for every CURVE handshake."""
        allowed = self.lookup(key.decode("ascii", "replace")) is not None
        if not allowed:
            self.denied += 1
            logger.warning("refused a connection from an unknown or revoked node key")
        return allowed


@dataclass
class IngestStats:
    messages: int = 0
    reads_stored: int = 0
    duplicates: int = 0
    reads_rejected: int = 0
    heartbeats: int = 0
    rejected_messages: Counter[str] = field(default_factory=Counter)
    store_errors: int = 0


StoredCallback = Callable[[EnrolledNode, Sequence[wire.ReadRecord], datetime], None]
HotlistSnapshot = Callable[[int | None], tuple[wire.HotlistMessage, bytes] | wire.HotlistCurrentMessage | None]


@dataclass
class _Pending:
    identity: bytes
    node: EnrolledNode
    records: list[wire.ReadRecord]
    accepted_ids: list[str]
    rejected: list[wire.Rejected]
    prepared: list[PreparedRead] = field(default_factory=list)
    """``records`` ready to store (hashed and bound on the ingest thread)."""


@dataclass
class _Group:
    """Messages whose reads are stored in one transaction, and what became of them."""

    pending: list[_Pending]
    received: datetime = field(default_factory=lambda: datetime.now(UTC))
    results: dict[int, StoreResult | None] = field(default_factory=dict)
    """Per node id: the store's result, or None where storing failed (those messages are not acked)."""
    failures: int = 0


class IngestServer:
    def __init__(
        self,
        endpoint: str,
        curve_public: bytes,
        curve_secret: bytes,
        sessions: sessionmaker[Session],
        images: ImageStore,
        opener: Opener,
        on_stored: StoredCallback | None = None,
        hotlist_snapshot: HotlistSnapshot | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.sessions = sessions
        self.images = images
        self.opener = opener
        self.on_stored = on_stored
        self.hotlist_snapshot = hotlist_snapshot
        self.context = context or zmq.Context.instance()
        self.registry = NodeRegistry(sessions)
        # Reads are bound for this database on the ingest thread (see hub.storage.prepare_read).
        dialect: Dialect | None = getattr(sessions.kw.get("bind"), "dialect", None)
        self._dialect = dialect if dialect is not None and dialect.name in ("sqlite", "postgresql") else None
        self.stats = IngestStats()
        self._curve = (curve_public, curve_secret)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_thread: threading.Thread | None = None
        self._openers: ThreadPoolExecutor | None = None
        self._store_jobs: queue.SimpleQueue[_Group | None] = queue.SimpleQueue()
        self._stored: queue.SimpleQueue[_Group] = queue.SimpleQueue()
        # The store thread wakes the ingest thread (blocked in a zmq poll) through this socket pair.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self.bound = threading.Event()

    def start(self) -> None:
        self._auth = zmq.auth.thread.ThreadAuthenticator(self.context, log=logging.getLogger("hub.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self.registry)
        sock = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_BYTES + 64 * 1024)
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = self._curve
        sock.bind(self.endpoint)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)  # resolves a wildcard port
        self._socket = sock
        self.registry.refresh()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)  # a full buffer already holds a wake-up
        self._openers = ThreadPoolExecutor(1, thread_name_prefix="ingest-open")
        self._store_thread = threading.Thread(target=self._store_loop, name="ingest-store", daemon=True)
        self._store_thread.start()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        self.bound.set()
        logger.info("ingest listening on %s", self.endpoint)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._store_jobs.put(None)
        if self._store_thread is not None:
            self._store_thread.join(timeout)
        if self._openers is not None:
            self._openers.shutdown(wait=True)
        if self._socket is not None:
            self._socket.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._wake_reader.close()
        self._wake_writer.close()

    # --- loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        """Receive and open reads into a group while the store thread commits the previous one."""
        sock = self._socket
        assert sock is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_reader, zmq.POLLIN)
        gathered: list[_Pending] = []
        reads = 0
        storing = False
        try:
            while not self._stop.is_set():
                if storing:
                    done = self._finished()
                    if done is not None:
                        storing = False
                        self._send_acks(done)
                        if gathered:  # the next group starts before hot-list work on this one
                            self._store_jobs.put(_Group(gathered))
                            storing, gathered, reads = True, [], 0
                        self._notify(done)
                        continue
                # Gather while a group is being stored (until it is done); with the store idle, hand over
                # at once. A busy store so gets bigger groups, an idle one no added latency.
                while reads < GROUP_MAX_READS and sock.poll(0, zmq.POLLIN):
                    item = self._receive_one()
                    if item is not None:
                        gathered.append(item)
                        reads += len(item.records)
                    if (not storing and reads) or (storing and not self._stored.empty()):
                        break
                if gathered and not storing:
                    self._store_jobs.put(_Group(gathered))
                    storing, gathered, reads = True, [], 0
                    continue
                if storing and not self._stored.empty():
                    continue
                # Wait for a message (unless the next group is full) or for the store to finish.
                if reads >= GROUP_MAX_READS:
                    poller.modify(sock, 0)
                    events = dict(poller.poll(100))
                    poller.modify(sock, zmq.POLLIN)
                else:
                    events = dict(poller.poll(100))
                if self._wake_reader.fileno() in events:  # zmq reports a plain socket by its descriptor
                    self._drain_wakeups()
        finally:
            if storing:  # acknowledge what the last transaction stored before the socket closes
                with contextlib.suppress(queue.Empty):
                    self._send_acks(self._stored.get(timeout=5.0))

    def _finished(self) -> _Group | None:
        try:
            return self._stored.get_nowait()
        except queue.Empty:
            return None

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _store_loop(self) -> None:
        """The store thread: one transaction per group, handed back to the ingest thread to acknowledge."""
        while True:
            group = self._store_jobs.get()
            if group is None:
                return
            try:
                self._store_group(group)
            except Exception:  # a bug here must not stop ingest; nothing in the group is acked
                logger.exception("ingest: storing a group of %d messages failed", len(group.pending))
                group.failures += 1
                group.results = {item.node.id: None for item in group.pending if item.records}
            self._stored.put(group)
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed (stopping)
                self._wake_writer.send(b"\0")

    def _receive_one(self) -> _Pending | None:
        assert self._socket is not None
        frames = self._socket.recv_multipart(copy=False)
        identity = frames[0].bytes
        node = self.registry.lookup(str(frames[0].get("User-Id")))
        self.stats.messages += 1
        if node is None:  # a key revoked after its handshake
            self._reject(identity, "auth", "node not enrolled")
            return None
        try:
            message, blobs = wire.decode([f.bytes for f in frames[1:]])
        except wire.WireError as exc:
            self._reject(identity, exc.code, str(exc))
            return None
        try:
            return self._handle(identity, node, message, blobs)
        except wire.WireError as exc:
            self._reject(identity, exc.code, str(exc))
            return None
        except Exception:  # a bug in one message's handling must not stop ingest for every node
            logger.exception("ingest: failed to handle a %s message from node %s", message.type, node.name)
            self._reject(identity, "internal", "hub error")
            return None

    def _handle(
        self, identity: bytes, node: EnrolledNode, message: wire.Message, blobs: list[bytes]
    ) -> _Pending | None:
        if isinstance(message, wire.ReadsMessage):
            return self._open_reads(identity, node, message, blobs)
        if isinstance(message, wire.HeartbeatMessage):
            self._check_node_id(node, message.node_id)
            with self.sessions.begin() as session:
                record_heartbeat(session, node.id, message.health.model_dump(mode="json"), datetime.now(UTC))
            self.stats.heartbeats += 1
            self._send(identity, wire.AckMessage(message_id=message.message_id))
        elif isinstance(message, wire.EvictionsMessage):
            self._check_node_id(node, message.node_id)
            self._store_evictions(node, message)
            self._send(identity, wire.AckMessage(message_id=message.message_id))
        elif isinstance(message, wire.HotlistRequest):
            self._send_hotlist(identity, message.have_version)
        else:
            self._reject(identity, "schema", f"unexpected message type {message.type}")
        return None

    def _open_reads(
        self, identity: bytes, node: EnrolledNode, message: wire.ReadsMessage, blobs: list[bytes]
    ) -> _Pending:
        self._check_node_id(node, message.node_id)
        records: list[wire.ReadRecord] = []
        rejected: list[wire.Rejected] = []
        opened = self._open_sealed([blobs[item.blob] for item in message.items])
        for item, plain in zip(message.items, opened, strict=True):
            if plain is None:
                rejected.append(wire.Rejected(read_id=item.read_id, reason="cannot decrypt (sealed to another key?)"))
                continue
            try:
                record = wire.ReadRecord.from_bytes(plain)
            except wire.WireError as exc:
                rejected.append(wire.Rejected(read_id=item.read_id, reason=str(exc)[:200]))
                continue
            if record.read_id != item.read_id or record.node_id != node.name:
                rejected.append(wire.Rejected(read_id=item.read_id, reason="read id or node id does not match"))
                continue
            records.append(record)
        self.stats.reads_rejected += len(rejected)
        received = datetime.now(UTC)
        prepared = [prepare_read(record, node.id, received, self._dialect) for record in records]
        return _Pending(identity, node, records, [r.read_id for r in records], rejected, prepared)

    def _open_sealed(self, sealed: list[bytes]) -> list[bytes | None]:
        """Open each sealed read (None: not sealed to this hub, or damaged).

        A sealed box costs a Curve25519 computation, done by libsodium without the GIL: a big message
        is split with a helper thread, so two cores open it.
        """
        if len(sealed) < OPEN_SPLIT_MIN or self._openers is None:
            return self._open_each(sealed)
        half = len(sealed) // 2
        try:
            second = self._openers.submit(self._open_each, sealed[half:])
        except RuntimeError:  # shutting down
            return self._open_each(sealed)
        first = self._open_each(sealed[:half])
        return first + second.result()

    def _open_each(self, sealed: Sequence[bytes]) -> list[bytes | None]:
        opened: list[bytes | None] = []
        for blob in sealed:
            try:
                opened.append(self.opener.open(blob))
            except SealError:
                opened.append(None)
        return opened

    def _store_group(self, group: _Group) -> None:
        """Store every node's reads of ``group`` in one transaction (group commit); runs on the store thread.

        Should that transaction fail, each node's reads are tried in a transaction of their own, so a
        batch the database refuses holds back only its own node's acks.
        """
        batches: dict[int, list[PreparedRead]] = {}
        names: dict[int, str] = {}
        for item in group.pending:
            if item.prepared:
                batches.setdefault(item.node.id, []).extend(item.prepared)
                names[item.node.id] = item.node.name
        if not batches:
            return
        try:
            results = store_prepared_batches(self.sessions, list(batches.values()), self.images)
            group.results = dict(zip(batches, results, strict=True))
            return
        except Exception:  # retried node by node below (or, for a lone node, not acked)
            if len(batches) == 1:
                node_id, reads = next(iter(batches.items()))
                self._store_failed(group, node_id, names[node_id], len(reads))
                return
            logger.warning("ingest: group commit failed; storing node by node", exc_info=True)
        for node_id, reads in batches.items():
            try:
                group.results[node_id] = store_prepared_batches(self.sessions, [reads], self.images)[0]
            except Exception:  # database down or full: no ack, the nodes will resend
                self._store_failed(group, node_id, names[node_id], len(reads))

    @staticmethod
    def _store_failed(group: _Group, node_id: int, name: str, count: int) -> None:
        group.failures += 1
        group.results[node_id] = None
        logger.exception("ingest: storing %d reads from node %s failed; not acknowledged", count, name)

    def _send_acks(self, group: _Group) -> None:
        """Acknowledge each message of a stored group (none whose reads failed to store); ingest thread."""
        self.stats.store_errors += group.failures
        for result in group.results.values():
            if result is not None:
                self.stats.reads_stored += len(result.inserted)
                self.stats.duplicates += len(result.duplicates)
        for item in group.pending:
            if item.records and group.results.get(item.node.id) is None:
                continue  # not stored: not acknowledged, the node will resend
            self._send(item.identity, wire.AckMessage(accepted=item.accepted_ids, rejected=item.rejected))

    def _notify(self, group: _Group) -> None:
        """Hand the newly stored reads to ``on_stored``, node by node, after the acks."""
        if self.on_stored is None:
            return
        by_node: dict[int, tuple[EnrolledNode, list[wire.ReadRecord]]] = {}
        for item in group.pending:
            by_node.setdefault(item.node.id, (item.node, []))[1].extend(item.records)
        for node_id, (node, records) in by_node.items():
            result = group.results.get(node_id)
            if result is not None and result.inserted:
                inserted = set(result.inserted)
                self._notify_stored(node, [r for r in records if r.read_id in inserted], group.received)

    def _notify_stored(self, node: EnrolledNode, records: list[wire.ReadRecord], received: datetime) -> None:
        assert self.on_stored is not None
        try:
            self.on_stored(node, records, received)
        except Exception:  # the reads are stored and acked; a matching failure is logged, not fatal
            self.stats.store_errors += 1
            logger.exception("ingest: post-store processing of %d reads failed", len(records))

    def _store_evictions(self, node: EnrolledNode, message: wire.EvictionsMessage) -> None:
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            session.add_all(
                EvictionRecord(
                    node_id=node.id, read_id=e.read_id, created_utc=e.created_utc, evicted_utc=now, reason=e.reason,
                    reported_utc=now,
                )
                for e in message.evicted
            )  # fmt: skip
        logger.warning("node %s reports %d reads evicted from its spool", node.name, len(message.evicted))

    def _send_hotlist(self, identity: bytes, have_version: int | None) -> None:
        snapshot = self.hotlist_snapshot(have_version) if self.hotlist_snapshot is not None else None
        if snapshot is None:
            self._reject(identity, "unavailable", "no hot lists on this hub")
        elif isinstance(snapshot, wire.HotlistCurrentMessage):
            self._send(identity, snapshot)
        else:
            message, blob = snapshot
            self._send(identity, message, [blob])

    @staticmethod
    def _check_node_id(node: EnrolledNode, claimed: str) -> None:
        if claimed != node.name:
            raise wire.WireError("schema", "node id does not match the authenticated key")

    def _reject(self, identity: bytes, code: str, detail: str) -> None:
        self.stats.rejected_messages[code] += 1
        self._send(identity, wire.ErrorMessage(code=code[:32], detail=detail[:200]))

    def _send(self, identity: bytes, message: wire.ErrorMessage | wire.AckMessage | wire.HotlistMessage
              | wire.HotlistCurrentMessage, blobs: Sequence[bytes] = ()) -> None:  # fmt: skip
        assert self._socket is not None
        try:
            self._socket.send_multipart([identity, *wire.encode(message, blobs)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer went away; it will resend
            logger.debug("ingest: reply dropped: %s", exc)
