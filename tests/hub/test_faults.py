"""Fault injection on localhost with real processes and sockets.

- The hub (``alpr-hub serve`` in its own session) is killed with SIGKILL while several real uplinks keep
  spooling reads, then restarted: every spooled read must end up stored exactly once.
- An enrolled node floods the ingest socket with 100,000 random or malformed messages while 1,000
  strangers knock with unknown keys (real CurveZMQ handshakes, refused by the ZAP handler): every bad
  message is answered and counted, every stranger refused and counted once, and a valid node's reads
  are acked during the flood and stored exactly once.

Both run on SQLite and on PostgreSQL (``tests/hub/conftest.py``). No timings are asserted.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from edge import wire
from edge.sealing import Sealer, decode_key
from edge.spool import Spool
from edge.uplink import CurveKeys
from hub.db import make_engine, session_factory
from tests.hub.conftest import (
    WAIT_S,
    Database,
    InProcessHub,
    enroll,
    make_uplink,
    stored_ids,
    wait_for,
)
from tests.hub.processes import HubProcess, Producer, fresh_read, read_counts, run_cli, write_hub_config

# --- 1. the hub killed mid-stream ---------------------------------------------------------------


def test_hub_killed_mid_stream_loses_and_duplicates_nothing(blank_url: str, tmp_path: Path) -> None:
    sqlite = blank_url.startswith("sqlite")
    config = write_hub_config(tmp_path / "hub.toml", database_url=None if sqlite else blank_url)
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
        uplink = make_uplink(name, snippet["hub"]["endpoint"], keys, spool, heartbeat_interval_s=0.5)
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
        assert set(stored_ids(sessions)) == set(spooled)
        for producer in producers:
            stats = producer.spool.stats()
            assert stats.evicted_total == 0 and stats.depth == 0
    finally:
        for producer in producers:
            producer.spool.close()
        engine.dispose()


# --- 2. a malformed flood and unknown keys --------------------------------------------------------

FLOOD_MESSAGES = 100_000
"""Hostile messages from one enrolled node (the issue's figure)."""
STRANGERS = 1_000
"""Connection attempts with unknown keys (the issue's figure)."""
FLOOD_WINDOW = 500
"""Messages the flooder keeps ahead of the replies: below the hub's per-peer send high-water mark (1,000),
so the hub never has to drop a reply, and enough to keep it busy all the time."""
KNOCK_PARALLEL = 25
"""Strangers handshaking at once."""
_HUGE_HEADER = b"\xc6" + (wire.MAX_HEADER_BYTES + 10).to_bytes(4, "big") + bytes(wire.MAX_HEADER_BYTES + 10)
"""A bin32 header just above the header limit (one object, shared by every message that sends it)."""


def pack(header: object) -> bytes:
    packed: bytes = msgpack.packb(header, use_bin_type=True)
    return packed


@dataclass(frozen=True)
class BadMessage:
    frames: list[bytes]
    code: str | None
    """The code of the ``error`` the hub must answer with; None where any code will do (random bytes) or
    where the message is a well-formed ``reads`` message (``rejected_reads``)."""
    rejected_reads: list[str] = field(default_factory=list)
    """Not empty: the hub must answer with an ``ack`` rejecting exactly these reads."""


def bad_messages(count: int, node: str, sealer: Sealer, rng: random.Random) -> list[BadMessage]:
    """``count`` hostile messages from an enrolled node, of every kind in turn."""

    def reads_header(items: list[tuple[str, int]], node_id: str = node) -> dict[str, object]:
        refs = [wire.ReadRef(read_id=read_id, blob=blob) for read_id, blob in items]
        return wire.ReadsMessage(node_id=node_id, items=refs).model_dump(mode="json")

    def random_bytes() -> BadMessage:
        return BadMessage([rng.randbytes(rng.randint(0, 300))], None)

    def truncated() -> BadMessage:
        header = pack(reads_header([(wire.uuid7(), 0)]))
        return BadMessage([header[: rng.randint(1, len(header) - 1)], b"x"], "malformed")

    def wrong_version() -> BadMessage:
        header = wire.HotlistRequest(node_id=node).model_dump(mode="json")
        header["v"] = rng.choice([0, 2, 99, "1", None, -1, 1.5])
        return BadMessage([pack(header)], "version")

    def unknown_type() -> BadMessage:
        header = {"v": 1, "type": rng.choice(["frobnicate", "READS", "", "ack2"]), "node_id": node}
        return BadMessage([pack(header)], "schema")

    def oversize_looking() -> BadMessage:
        # Length prefixes claiming gigabytes (str32, bin32, array32, map32), then a few bytes.
        prefix = rng.choice([b"\xdb", b"\xc6", b"\xdd", b"\xdf"]) + rng.choice(
            [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xf0"]
        )
        return BadMessage([b"\x82\xa1v\x01\xa4type" + prefix + rng.randbytes(8)], "malformed")

    def really_oversized() -> BadMessage:
        if rng.random() < 0.5:
            return BadMessage([_HUGE_HEADER], "oversized")
        return BadMessage([pack(reads_header([(wire.uuid7(), 0)])), *([b"b"] * (wire.MAX_BLOBS + 1))], "oversized")

    def missing_blob() -> BadMessage:
        items = [(wire.uuid7(), i) for i in range(rng.randint(1, 3))]
        return BadMessage([pack(reads_header(items)), *([b"blob"] * (len(items) - 1))], "schema")

    def another_node() -> BadMessage:
        record = fresh_read("someone-else")
        header = pack(reads_header([(record.read_id, 0)], node_id="someone-else"))
        return BadMessage([header, sealer.seal(record.to_bytes())], "schema")

    def garbage_sealed() -> BadMessage:
        ids = [wire.uuid7() for _ in range(rng.randint(1, 4))]
        blobs = [
            rng.randbytes(rng.randint(0, 200))
            if rng.random() < 0.5
            else sealer.seal(rng.randbytes(rng.randint(0, 200)))
            for _ in ids
        ]
        return BadMessage([pack(reads_header([(read_id, i) for i, read_id in enumerate(ids)])), *blobs], None, ids)

    kinds = [random_bytes, truncated, wrong_version, unknown_type, oversize_looking, missing_blob, another_node,
             garbage_sealed]  # fmt: skip
    messages = [kinds[i % len(kinds)]() for i in range(count)]
    for i in range(0, count, 250):  # a few big ones (well under the socket's MAXMSGSIZE)
        messages[i] = really_oversized()
    rng.shuffle(messages)
    return messages


@dataclass
class FloodResult:
    errors: Counter[str] = field(default_factory=Counter)
    """Codes of the ``error`` replies received."""
    acks_rejecting: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    good_acked_at_start: int = -1
    """The valid node's acknowledged reads when the first bad message went out..."""
    good_acked_at_end: int = -1
    """... and when the last reply came back."""


def flood(
    hub: InProcessHub, keys: CurveKeys, messages: list[BadMessage], good_acked: Callable[[], int], result: FloodResult
) -> None:
    """Send every message on one DEALER, up to a window ahead of the replies, and collect the replies."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)  # no limit on this side: the window bounds what is in flight
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.curve_publickey, sock.curve_secretkey = keys.node_public.encode(), keys.node_secret.encode()
    sock.curve_serverkey = hub.curve_public.encode()
    sock.connect(hub.endpoint)
    replies = 0

    def receive(timeout_ms: int) -> bool:
        nonlocal replies
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return False
        message, _ = wire.decode(sock.recv_multipart())
        replies += 1
        if isinstance(message, wire.ErrorMessage):
            result.errors[message.code] += 1
        elif isinstance(message, wire.AckMessage) and not message.accepted and message.message_id is None:
            result.acks_rejecting.extend(r.read_id for r in message.rejected)
        else:
            result.unexpected.append(message.type)
        return True

    try:
        result.good_acked_at_start = good_acked()
        for sent, message in enumerate(messages, start=1):
            sock.send_multipart(message.frames, copy=len(message.frames[0]) < 65536)
            while sent - replies >= FLOOD_WINDOW:
                assert receive(int(WAIT_S * 1000)), "the hub stopped answering"
            while receive(0):
                pass
        while replies < len(messages):
            assert receive(int(WAIT_S * 1000)), "the hub stopped answering"
        result.good_acked_at_end = good_acked()
    finally:
        sock.close(linger=0)


def knock_with_unknown_keys(hub: InProcessHub, attempts: int, refused: list[int]) -> None:
    """``attempts`` DEALERs with fresh, unenrolled keys, a batch at a time; each handshake must be refused.

    No socket reconnects after its refusal, so each stranger is exactly one handshake for the hub's ZAP
    handler to refuse and count.
    """
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    for start in range(0, attempts, KNOCK_PARALLEL):
        batch: list[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]] = []
        try:
            for _ in range(min(KNOCK_PARALLEL, attempts - start)):
                public, secret = zmq.curve_keypair()
                sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RECONNECT_IVL, -1)
                sock.curve_publickey, sock.curve_secretkey = public, secret
                sock.curve_serverkey = hub.curve_public.encode()
                monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
                batch.append((sock, monitor))
                sock.connect(hub.endpoint)
                with contextlib.suppress(zmq.Again):  # queued until the handshake, which must fail
                    sock.send_multipart(wire.encode(wire.HotlistRequest(node_id="stranger")), flags=zmq.NOBLOCK)
            poller = zmq.Poller()
            for _, monitor in batch:
                poller.register(monitor, zmq.POLLIN)
            outcomes: list[dict[str, Any]] = []
            deadline = time.monotonic() + WAIT_S
            while len(outcomes) < len(batch):
                ready = poller.poll(max(1, int((deadline - time.monotonic()) * 1000)))
                assert ready, "no handshake outcome for an unknown key"
                for monitor, _ in ready:
                    outcomes.append(recv_monitor_message(monitor))
                    poller.unregister(monitor)
            for event in outcomes:
                assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH, event
                assert event["value"] == 400, event  # the ZAP handler's "not allowed"
            for sock, _ in batch:
                assert not sock.poll(0, zmq.POLLIN), "an unknown key got an answer"
            refused.extend([1] * len(batch))
        finally:
            for sock, monitor in batch:
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
    hub: InProcessHub, database: Database, tmp_path: Path
) -> None:
    flooder = enroll(database, "car-66", hub.curve_public)
    good = enroll(database, "car-12", hub.curve_public)
    messages = bad_messages(FLOOD_MESSAGES, "car-66", Sealer(hub.spool_public), random.Random(20261128))
    errors = [m for m in messages if not m.rejected_reads]
    expected_codes = Counter(m.code for m in errors if m.code is not None)
    any_code = sum(1 for m in errors if m.code is None)
    expected_rejected = [read_id for m in messages for read_id in m.rejected_reads]
    assert set(expected_codes) == {"malformed", "version", "schema", "oversized"} and any_code > 0

    with Spool(tmp_path / "good.db", Sealer(hub.spool_public)) as spool:
        uplink = make_uplink("car-12", hub.endpoint, good, spool, heartbeat_interval_s=0.5)
        producer = Producer("car-12", spool, uplink, per_put=2, interval_s=0.05)
        result = FloodResult()
        refused: list[int] = []
        failures: list[BaseException] = []
        acked = lambda: uplink.stats.reads_acked  # noqa: E731
        attackers = [
            reporting_thread(lambda: flood(hub, flooder, messages, acked, result), "flood", failures),
            reporting_thread(lambda: knock_with_unknown_keys(hub, STRANGERS, refused), "strangers", failures),
        ]
        uplink.start()
        producer.start()
        try:
            wait_for(lambda: uplink.stats.reads_acked > 0, "the good node's first reads")
            for thread in attackers:
                thread.start()
            for thread in attackers:
                thread.join(WAIT_S * 4)
            assert not any(thread.is_alive() for thread in attackers)
            if failures:
                raise failures[0]
            producer.stop()
            wait_for(lambda: spool.stats().depth == 0, "the good node's spool to drain")
        finally:
            producer.stop()
            uplink.stop()

    stats = hub.server.stats
    # The hub counts a stored batch just after acking it.
    wait_for(lambda: stats.reads_stored >= len(producer.ids), "the hub's count of stored reads")
    # Every bad message was answered: an error of the right kind, or an ack rejecting its reads ...
    assert not result.unexpected
    assert sum(result.errors.values()) == len(errors)
    assert not expected_codes - result.errors, (expected_codes, result.errors)
    assert sum((result.errors - expected_codes).values()) == any_code
    assert sorted(result.acks_rejecting) == sorted(expected_rejected)
    # ... and counted by the hub, which answered and counted nothing else.
    assert stats.rejected_messages == result.errors
    assert stats.reads_rejected == len(expected_rejected)
    # Every stranger was refused at the handshake by ZAP, and counted once.
    assert len(refused) == STRANGERS
    assert hub.server.registry.denied == STRANGERS
    # The valid node was served while the flood went on, and each of its reads stored exactly once.
    assert result.good_acked_at_end > result.good_acked_at_start, "the good node got no ack during the flood"
    assert stats.reads_stored == len(producer.ids)
    assert sorted(stored_ids(database.sessions)) == sorted(producer.ids)
    assert uplink.stats.reads_rejected == 0
