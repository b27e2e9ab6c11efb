"""The uplink against a real CurveZMQ ROUTER peer on localhost that plays the hub's part of the protocol."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zmq

from edge import wire
from edge.sealing import Opener, Sealer, SealError, generate_spool_keypair
from edge.spool import Spool
from edge.uplink import CurveKeys, Uplink, UplinkConfig

NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


@dataclass
class HubKeys:
    curve_public: bytes
    curve_secret: bytes
    spool_public: bytes
    spool_private: bytes


@dataclass
class HubPeer:
    """Minimal hub side: decrypts and validates reads, stores each read id once, acks after storing."""

    keys: HubKeys
    endpoint: str
    stored: dict[str, wire.ReadRecord] = field(default_factory=dict)
    deliveries: int = 0
    heartbeats: list[wire.HeartbeatMessage] = field(default_factory=list)
    hotlist: list[wire.HotlistEntryModel] = field(default_factory=list)
    drop_acks: bool = False
    hold_acks: bool = False
    """Keep replies back (sent, in order, once this is cleared), as a hub busy committing would."""
    read_messages: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(5)

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _serve(self, ready: threading.Event) -> None:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_server = True
        sock.curve_publickey = self.keys.curve_public
        sock.curve_secretkey = self.keys.curve_secret
        sock.bind(self.endpoint)
        ready.set()
        opener = Opener(self.keys.spool_private)
        held: list[list[bytes]] = []
        try:
            while not self._stop.is_set():
                while held and not self.hold_acks:
                    sock.send_multipart(held.pop(0))
                if not sock.poll(20):
                    continue
                identity, *frames = sock.recv_multipart()
                reply = self._handle(opener, *wire.decode(frames))
                if reply is not None and not self.drop_acks:
                    held.append([identity, *reply])
        finally:
            sock.close(linger=0)

    def _handle(self, opener: Opener, message: wire.Message, blobs: list[bytes]) -> list[bytes] | None:
        if isinstance(message, wire.ReadsMessage):
            self.read_messages += 1
            accepted, rejected = [], []
            for item in message.items:
                try:
                    record = wire.ReadRecord.from_bytes(opener.open(blobs[item.blob]))
                except (SealError, wire.WireError):
                    rejected.append(wire.Rejected(read_id=item.read_id, reason="cannot open"))
                    continue
                self.deliveries += 1
                self.stored.setdefault(record.read_id, record)
                accepted.append(item.read_id)
            return wire.encode(wire.AckMessage(accepted=accepted, rejected=rejected))
        if isinstance(message, wire.HeartbeatMessage):
            self.heartbeats.append(message)
            return wire.encode(wire.AckMessage(message_id=message.message_id))
        if isinstance(message, wire.HotlistRequest):
            snapshot = wire.HotlistMessage(version=3, created_utc=NOW, entry_count=len(self.hotlist))
            listed = [wire.ListedPlate.from_model(entry) for entry in self.hotlist]
            return wire.encode(snapshot, [wire.pack_hotlist_entries(listed)])
        return None


def free_endpoint() -> str:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(linger=0)
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def hub_keys() -> HubKeys:
    curve_public, curve_secret = zmq.curve_keypair()
    spool_public, spool_private = generate_spool_keypair()
    return HubKeys(curve_public, curve_secret, spool_public, spool_private)


@pytest.fixture
def hub(hub_keys: HubKeys) -> Iterator[HubPeer]:
    server = HubPeer(hub_keys, free_endpoint())
    yield server
    if server._thread is not None and server._thread.is_alive():
        server.stop()


@pytest.fixture
def spool(tmp_path: Path, hub_keys: HubKeys) -> Iterator[Spool]:
    with Spool(tmp_path / "spool.db", Sealer(hub_keys.spool_public)) as s:
        yield s


def health() -> wire.NodeHealth:
    return wire.NodeHealth(
        spool_depth=0, spool_bytes=0, evictions_total=0, gps_status="fixed", uptime_s=1.0, software_version="test"
    )


def make_uplink(hub: HubPeer, spool: Spool, **overrides: object) -> Uplink:
    node_public, node_secret = zmq.curve_keypair()
    keys = CurveKeys(node_public.decode(), node_secret.decode(), hub.keys.curve_public.decode())
    settings: dict[str, object] = {"ack_timeout_s": 0.5, "backoff_min_s": 0.1, "backoff_max_s": 0.5}
    settings.update(overrides)
    config = UplinkConfig(node_id="car-12", hub_endpoint=hub.endpoint, keys=keys, **settings)  # type: ignore[arg-type]
    return Uplink(config, spool, health)


def spool_reads(spool: Spool, count: int) -> list[str]:
    ids = []
    for i in range(count):
        record = wire.ReadRecord(
            read_id=wire.uuid7(), node_id="car-12", camera_id="front", plate=f"7ABC{i:03d}", confidence=0.9,
            box=(1, 2, 3, 4), first_seen_utc=NOW, best_utc=NOW, last_seen_utc=NOW, time_source="gps",
            crop_jpeg=b"jpeg",
        )  # fmt: skip
        spool.put(record.read_id, record.to_bytes())
        ids.append(record.read_id)
    return ids


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_reads_made_while_the_hub_is_absent_arrive_once_when_it_starts(hub: HubPeer, spool: Spool) -> None:
    ids = spool_reads(spool, 150)
    uplink = make_uplink(hub, spool)
    uplink.start()
    try:
        time.sleep(1.2)  # at least one ack timeout and reconnect with nobody listening
        assert uplink.stats.link == "down" and uplink.stats.timeouts >= 1
        hub.start()
        wait_for(lambda: spool.stats().depth == 0)
        assert set(hub.stored) == set(ids)
        assert uplink.stats.reads_acked == 150
        assert uplink.stats.link == "up"
    finally:
        uplink.stop()


def test_hub_restart_mid_stream_loses_nothing_and_stores_nothing_twice(hub: HubPeer, spool: Spool) -> None:
    hub.start()
    uplink = make_uplink(hub, spool, batch_size=10)
    uplink.start()
    try:
        first = spool_reads(spool, 50)
        uplink.notify()
        wait_for(lambda: len(hub.stored) >= 10)
        hub.drop_acks = True  # the hub commits but its acks are lost: the worst case for duplicates
        more = spool_reads(spool, 50)
        wait_for(lambda: uplink.stats.timeouts >= 1 and hub.deliveries > len(hub.stored))
        hub.stop()
        hub.drop_acks = False
        time.sleep(0.6)
        hub.start()
        wait_for(lambda: spool.stats().depth == 0)
        assert set(hub.stored) == set(first + more)
        assert hub.deliveries > len(hub.stored)  # resends happened, storage stayed unique
        assert uplink.stats.resends > 0
    finally:
        uplink.stop()


def test_unreadable_reads_are_rejected_and_leave_the_spool(hub: HubPeer, spool: Spool, tmp_path: Path) -> None:
    other_public, _ = generate_spool_keypair()
    with Spool(tmp_path / "foreign.db", Sealer(other_public)) as foreign:
        spool_reads(foreign, 3)
        hub.start()
        uplink = make_uplink(hub, foreign)
        uplink.start()
        try:
            wait_for(lambda: foreign.stats().depth == 0)
            assert uplink.stats.reads_rejected == 3 and not hub.stored
        finally:
            uplink.stop()


def test_heartbeats_carry_node_health(hub: HubPeer, spool: Spool) -> None:
    hub.start()
    uplink = make_uplink(hub, spool, heartbeat_interval_s=0.2)
    uplink.start()
    try:
        wait_for(lambda: uplink.stats.heartbeats_acked >= 2)
        assert hub.heartbeats[0].node_id == "car-12"
        assert hub.heartbeats[0].health.gps_status == "fixed"
    finally:
        uplink.stop()


def test_hotlist_snapshot_reaches_the_sink(hub: HubPeer, spool: Spool) -> None:
    hub.hotlist = [wire.HotlistEntryModel(plate="7ABC123", list_name="stolen", category="stolen vehicle", priority=1)]
    hub.start()
    received: list[tuple[int, list[wire.ListedPlate]]] = []
    uplink = make_uplink(hub, spool)
    uplink.hotlist_sink = lambda message, entries: received.append((message.version, entries))
    uplink.start()
    try:
        wait_for(lambda: bool(received))
        assert received[0] == (3, [wire.ListedPlate.from_model(entry) for entry in hub.hotlist])
        assert uplink.stats.hotlist_version == 3
    finally:
        uplink.stop()


def test_a_hub_with_another_key_is_never_trusted(hub: HubPeer, spool: Spool) -> None:
    impostor_public, impostor_secret = zmq.curve_keypair()
    impostor = HubPeer(HubKeys(impostor_public, impostor_secret, hub.keys.spool_public, hub.keys.spool_private),
                       hub.endpoint)  # fmt: skip
    impostor.start()
    spool_reads(spool, 5)
    uplink = make_uplink(hub, spool)
    uplink.start()
    try:
        time.sleep(1.5)
        assert not impostor.stored and spool.stats().depth == 5
        assert uplink.stats.link == "down"
    finally:
        uplink.stop()
        impostor.stop()


def test_a_backlog_goes_out_several_batches_ahead_of_the_acks(hub: HubPeer, spool: Spool) -> None:
    ids = spool_reads(spool, 45)
    hub.hold_acks = True
    hub.start()
    uplink = make_uplink(hub, spool, batch_size=10, batches_in_flight=3, ack_timeout_s=5.0)
    uplink.start()
    try:
        wait_for(lambda: hub.read_messages >= 3)
        time.sleep(0.3)
        assert hub.read_messages == 3  # the window is full: nothing more goes out before an ack
        hub.hold_acks = False
        wait_for(lambda: spool.stats().depth == 0)
        assert set(hub.stored) == set(ids)
        assert hub.deliveries == 45 and uplink.stats.resends == 0  # each read sent once
        assert hub.read_messages == 5
    finally:
        uplink.stop()
