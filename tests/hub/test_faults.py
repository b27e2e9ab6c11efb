"""Fault injection on localhost with real processes and sockets.

- The hub (``alpr-hub serve`` in its own session) is killed with SIGKILL while several real uplinks keep
  spooling reads, then restarted: every spooled read must end up stored exactly once.
- An enrolled node floods the ingest socket with malformed messages while strangers knock with unknown
  keys: every bad message is answered and counted, every stranger refused, and a valid node is served
  all the while.

Both run on SQLite and on PostgreSQL (``tests/hub/conftest.py``). No timings are asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
import zmq
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from zmq.utils.monitor import recv_monitor_message

from edge import wire
from edge.sealing import Opener, Sealer, decode_key, generate_spool_keypair
from edge.spool import Spool
from edge.uplink import CurveKeys, Uplink, UplinkConfig
from hub.db import make_engine, session_factory
from hub.ingest import IngestServer
from hub.models import Node, Read
from hub.storage import ImageStore
from tests.hub.conftest import Database, make_record

WAIT_S = 60.0
"""Upper bound for any one wait: generous, because the CI machine may be busy (never asserted as a timing)."""


# --- helpers ----------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def hub_command(*args: str) -> list[str]:
    """``alpr-hub ARGS``: the installed console script next to this interpreter, else ``python -m hub.cli``."""
    script = Path(sys.executable).with_name("alpr-hub")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]
    return [*base, *args]


def fresh_read(node: str) -> wire.ReadRecord:
    now = datetime.now(UTC)  # dated now, so the hub's retention run at start-up keeps it
    return make_record(
        node_id=node,
        first_seen_utc=now,
        best_utc=now,
        last_seen_utc=now,
        crop_jpeg=b"\xff\xd8" + os.urandom(16) + b"\xff\xd9",
    )


def health() -> wire.NodeHealth:
    return wire.NodeHealth(
        spool_depth=0, spool_bytes=0, evictions_total=0, gps_status="3d", uptime_s=1.0, software_version="test"
    )


def make_uplink(name: str, endpoint: str, keys: CurveKeys, spool: Spool) -> Uplink:
    config = UplinkConfig(
        node_id=name,
        hub_endpoint=endpoint,
        keys=keys,
        ack_timeout_s=1.0,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
        heartbeat_interval_s=0.5,
    )
    return Uplink(config, spool, health)


@dataclass
class Producer:
    """A node's recognition stand-in: spools a few fresh reads every ``interval_s`` until stopped."""

    name: str
    spool: Spool
    uplink: Uplink
    per_put: int = 3
    interval_s: float = 0.02
    ids: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"producer-{self.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10.0)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            records = [fresh_read(self.name) for _ in range(self.per_put)]
            self.spool.put_many([(r.read_id, r.to_bytes()) for r in records])
            self.ids.extend(r.read_id for r in records)  # only once durably spooled
            self.uplink.notify()
            self.stop_event.wait(self.interval_s)


def read_counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        total, distinct = session.execute(select(func.count(), func.count(func.distinct(Read.read_id)))).one()
    return int(total), int(distinct)


def stored_ids(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(Read.read_id)))


# --- 1. the hub killed mid-stream ---------------------------------------------------------------


@dataclass
class HubProcess:
    """``alpr-hub serve`` as a child in its own session, its output in a log file."""

    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                hub_command("--config", str(self.config), "serve"),
                cwd=self.config.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the hub and nothing else
        self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def run_cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        hub_command("--config", str(config), *args),
        cwd=config.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"alpr-hub {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def write_hub_config(tmp_path: Path, database_url: str | None, ingest_port: int, pub_port: int) -> Path:
    lines = ["[hub]", 'data_dir = "hub-data"']
    if database_url is not None:
        lines.append(f"database_url = {json.dumps(database_url)}")  # a JSON string is a TOML basic string
    lines += [
        "[ingest]",
        f'bind = "tcp://127.0.0.1:{ingest_port}"',
        f'public_endpoint = "tcp://127.0.0.1:{ingest_port}"',
        "[dispatch]",
        f'pub_bind = "tcp://127.0.0.1:{pub_port}"',
        "[retention]",
        "interval_s = 3600.0",
    ]
    path = tmp_path / "hub.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_hub_killed_mid_stream_loses_and_duplicates_nothing(blank_url: str, tmp_path: Path) -> None:
    sqlite = blank_url.startswith("sqlite")
    ingest_port, pub_port = free_port(), free_port()
    config = write_hub_config(tmp_path, None if sqlite else blank_url, ingest_port, pub_port)
    run_cli(config, "init")
    keys_dir = tmp_path / "hub-data" / "keys"
    spool_public = decode_key((keys_dir / "spool.public").read_text(encoding="ascii"))

    names = ["car-1", "car-2", "car-3"]
    producers: list[Producer] = []
    for name in names:
        run_cli(config, "nodes", "enroll", name, "--out", str(tmp_path / "enrolments"))
        bundle = tmp_path / "enrolments" / name
        snippet = tomllib.loads((bundle / "edge.toml").read_text(encoding="utf-8"))
        assert decode_key(snippet["hub"]["spool_public_key"]) == spool_public
        keys = CurveKeys(
            node_public=snippet["keys"]["node_public_key"],
            node_secret=(bundle / "node.key").read_text(encoding="ascii").strip(),
            hub_public=snippet["hub"]["public_key"],
        )
        spool = Spool(tmp_path / f"spool-{name}.db", Sealer(spool_public))
        uplink = make_uplink(name, snippet["hub"]["endpoint"], keys, spool)
        producers.append(Producer(name, spool, uplink, per_put=2, interval_s=0.05))

    url = blank_url if not sqlite else f"sqlite:///{tmp_path / 'hub-data' / 'hub.db'}"
    engine = make_engine(url)
    sessions = session_factory(engine)
    hub = HubProcess(config, tmp_path / "hub.log")
    try:
        hub.start()
        for producer in producers:
            producer.uplink.start()
            producer.start()
        wait_for(lambda: sum(p.uplink.stats.reads_acked for p in producers) >= 40, "reads stored before the kill")
        assert hub.running(), hub.tail()

        hub.kill()
        spooled_at_kill = sum(len(p.ids) for p in producers)
        time.sleep(1.0)  # the nodes keep reading while the hub is gone
        assert sum(len(p.ids) for p in producers) > spooled_at_kill

        hub.start()
        time.sleep(0.5)
        for producer in producers:
            producer.stop()
        wait_for(lambda: all(p.spool.stats().depth == 0 for p in producers), "every spool to drain")
        assert hub.running(), hub.tail()
    finally:
        for producer in producers:
            producer.stop()
            producer.uplink.stop()
        hub.stop()

    try:
        spooled = [read_id for p in producers for read_id in p.ids]
        assert len(spooled) == len(set(spooled))
        total, distinct = read_counts(sessions)
        assert total == distinct == len(spooled), hub.tail()
        assert stored_ids(sessions) == set(spooled)
        for producer in producers:
            stats = producer.spool.stats()
            assert stats.evicted_total == 0 and stats.depth == 0
    finally:
        for producer in producers:
            producer.spool.close()
        engine.dispose()


# --- 2. a malformed flood and unknown keys --------------------------------------------------------


@dataclass
class InProcessHub:
    server: IngestServer
    curve_public: str
    spool_public: bytes


@pytest.fixture
def ingest(database: Database, tmp_path: Path) -> Iterator[InProcessHub]:
    public, secret = zmq.curve_keypair()
    spool_public, spool_private = generate_spool_keypair()
    server = IngestServer(
        "tcp://127.0.0.1:*",
        public,
        secret,
        database.sessions,
        ImageStore("disk", tmp_path / "images"),
        Opener(spool_private),
    )
    server.start()
    try:
        yield InProcessHub(server, public.decode(), spool_public)
    finally:
        server.stop()


def enroll(database: Database, name: str) -> CurveKeys:
    public, secret = zmq.curve_keypair()
    with database.sessions.begin() as session:
        session.add(Node(name=name, curve_public_key=public.decode(), enrolled_utc=datetime.now(UTC)))
    return CurveKeys(public.decode(), secret.decode(), "")


def pack(header: object) -> bytes:
    packed: bytes = msgpack.packb(header, use_bin_type=True)
    return packed


@dataclass(frozen=True)
class BadMessage:
    frames: list[bytes]
    rejected_reads: list[str]
    """Empty: the whole message must be refused with an ``error``. Otherwise it is a well-formed ``reads``
    message whose reads must all come back ``rejected`` in an ``ack``."""


def bad_messages(count: int, node: str, sealer: Sealer, rng: random.Random) -> list[BadMessage]:
    """``count`` hostile messages from an enrolled node, of every kind in turn."""

    def reads_header(items: list[tuple[str, int]], node_id: str = node) -> dict[str, object]:
        refs = [wire.ReadRef(read_id=read_id, blob=blob) for read_id, blob in items]
        return wire.ReadsMessage(node_id=node_id, items=refs).model_dump(mode="json")

    def random_bytes() -> BadMessage:
        return BadMessage([rng.randbytes(rng.randint(0, 300))], [])

    def truncated() -> BadMessage:
        header = pack(reads_header([(wire.uuid7(), 0)]))
        return BadMessage([header[: rng.randint(1, len(header) - 1)], b"x"], [])

    def wrong_version() -> BadMessage:
        header = wire.HotlistRequest(node_id=node).model_dump(mode="json")
        header["v"] = rng.choice([0, 2, 99, "1", None, -1, 1.5])
        return BadMessage([pack(header)], [])

    def unknown_type() -> BadMessage:
        return BadMessage(
            [pack({"v": 1, "type": rng.choice(["frobnicate", "READS", "", "ack2"]), "node_id": node})], []
        )

    def oversize_looking() -> BadMessage:
        # Length prefixes claiming gigabytes (str32, bin32, array32, map32), then a few bytes.
        prefix = rng.choice([b"\xdb", b"\xc6", b"\xdd", b"\xdf"]) + rng.choice(
            [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xf0"]
        )
        return BadMessage([b"\x82\xa1v\x01\xa4type" + prefix + rng.randbytes(8)], [])

    def really_oversized() -> BadMessage:
        if rng.random() < 0.5:
            return BadMessage(
                [b"\xc6" + (wire.MAX_HEADER_BYTES + 10).to_bytes(4, "big") + bytes(wire.MAX_HEADER_BYTES + 10)], []
            )
        return BadMessage([pack(reads_header([(wire.uuid7(), 0)])), *([b"b"] * (wire.MAX_BLOBS + 1))], [])

    def missing_blob() -> BadMessage:
        items = [(wire.uuid7(), i) for i in range(rng.randint(1, 3))]
        return BadMessage([pack(reads_header(items)), *([b"blob"] * (len(items) - 1))], [])

    def another_node() -> BadMessage:
        record = fresh_read("someone-else")
        header = pack(reads_header([(record.read_id, 0)], node_id="someone-else"))
        return BadMessage([header, sealer.seal(record.to_bytes())], [])

    def garbage_sealed() -> BadMessage:
        ids = [wire.uuid7() for _ in range(rng.randint(1, 4))]
        blobs = [
            rng.randbytes(rng.randint(0, 200))
            if rng.random() < 0.5
            else sealer.seal(rng.randbytes(rng.randint(0, 200)))
            for _ in ids
        ]
        return BadMessage([pack(reads_header([(read_id, i) for i, read_id in enumerate(ids)])), *blobs], ids)

    kinds = [random_bytes, truncated, wrong_version, unknown_type, oversize_looking, missing_blob, another_node,
             garbage_sealed]  # fmt: skip
    messages = [kinds[i % len(kinds)]() for i in range(count)]
    for i in range(0, count, 100):  # a few big ones (well under the socket's MAXMSGSIZE)
        messages[i] = really_oversized()
    rng.shuffle(messages)
    return messages


@dataclass
class FloodResult:
    errors: int = 0
    acks_rejecting: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def flood(hub: InProcessHub, keys: CurveKeys, messages: list[BadMessage], result: FloodResult) -> None:
    """Send every message on one DEALER, at most a window ahead of the replies, and collect the replies."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey, sock.curve_secretkey = keys.node_public.encode(), keys.node_secret.encode()
    sock.curve_serverkey = hub.curve_public.encode()
    sock.connect(hub.server.endpoint)
    window = 64
    replies = 0

    def receive(timeout_ms: int) -> bool:
        nonlocal replies
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return False
        message, _ = wire.decode(sock.recv_multipart())
        replies += 1
        if isinstance(message, wire.ErrorMessage):
            result.errors += 1
        elif isinstance(message, wire.AckMessage) and not message.accepted and message.message_id is None:
            result.acks_rejecting.extend(r.read_id for r in message.rejected)
        else:
            result.unexpected.append(message.type)
        return True

    try:
        for sent, message in enumerate(messages, start=1):
            sock.send_multipart(message.frames)
            while sent - replies >= window:
                assert receive(int(WAIT_S * 1000)), "the hub stopped answering"
            while receive(0):
                pass
        while replies < len(messages):
            assert receive(int(WAIT_S * 1000)), "the hub stopped answering"
    finally:
        sock.close(linger=0)


def knock_with_unknown_keys(hub: InProcessHub, attempts: int, refused: list[int]) -> None:
    """``attempts`` short-lived DEALERs with fresh, unenrolled keys; each must see its handshake refused."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    for _ in range(attempts):
        public, secret = zmq.curve_keypair()
        sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, hub.curve_public.encode()
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            sock.connect(hub.server.endpoint)
            with contextlib.suppress(zmq.Again):  # no pipe yet is fine: the handshake starts at connect
                sock.send_multipart(wire.encode(wire.HotlistRequest(node_id="stranger")), flags=zmq.NOBLOCK)
            assert monitor.poll(int(WAIT_S * 1000)), "no handshake outcome for an unknown key"
            event = recv_monitor_message(monitor)
            assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH, event
            assert not sock.poll(0, zmq.POLLIN), "an unknown key got an answer"
            refused.append(1)
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)


def reporting_thread(target: Callable[[], None], name: str, failures: list[BaseException]) -> threading.Thread:
    """A thread whose exception (a failed assertion included) is handed to the test instead of lost."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            failures.append(exc)

    return threading.Thread(target=run, name=name, daemon=True)


def test_malformed_flood_and_unknown_keys_are_refused_while_a_node_is_served(
    ingest: InProcessHub, database: Database, tmp_path: Path
) -> None:
    flooder = enroll(database, "car-66")
    good = enroll(database, "car-12")
    messages = bad_messages(2000, "car-66", Sealer(ingest.spool_public), random.Random(20261128))
    expected_errors = sum(1 for m in messages if not m.rejected_reads)
    expected_rejected = [read_id for m in messages for read_id in m.rejected_reads]

    good_keys = CurveKeys(good.node_public, good.node_secret, ingest.curve_public)
    with Spool(tmp_path / "good.db", Sealer(ingest.spool_public)) as spool:
        uplink = make_uplink("car-12", ingest.server.endpoint, good_keys, spool)
        producer = Producer("car-12", spool, uplink, per_put=2, interval_s=0.05)
        result = FloodResult()
        refused: list[int] = []
        failures: list[BaseException] = []
        attackers = [
            reporting_thread(lambda: flood(ingest, flooder, messages, result), "flood", failures),
            reporting_thread(lambda: knock_with_unknown_keys(ingest, 100, refused), "strangers", failures),
        ]
        uplink.start()
        producer.start()
        try:
            wait_for(lambda: uplink.stats.reads_acked > 0, "the good node's first reads")
            stored_before = ingest.server.stats.reads_stored
            for thread in attackers:
                thread.start()
            for thread in attackers:
                thread.join(WAIT_S * 3)
            stored_during = ingest.server.stats.reads_stored - stored_before
            assert not any(thread.is_alive() for thread in attackers)
            if failures:
                raise failures[0]
            producer.stop()
            wait_for(lambda: spool.stats().depth == 0, "the good node's spool to drain")
        finally:
            producer.stop()
            uplink.stop()

    stats = ingest.server.stats
    # The hub counts a stored batch just after acking it.
    wait_for(lambda: stats.reads_stored >= len(producer.ids), "the hub's count of stored reads")
    assert not result.unexpected
    assert result.errors == expected_errors
    assert sum(stats.rejected_messages.values()) == expected_errors, stats.rejected_messages
    assert sorted(result.acks_rejecting) == sorted(expected_rejected)
    assert stats.reads_rejected == len(expected_rejected)
    assert len(refused) == 100
    assert ingest.server.registry.denied >= 100
    assert stored_during > 0, "the good node was not served during the flood"
    assert stats.reads_stored == len(producer.ids)
    assert sorted(stored_ids(database.sessions)) == sorted(producer.ids)
    assert uplink.stats.reads_rejected == 0
