"""Ingest end to end on localhost: the real edge uplink and spool against the real ingest server."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import zmq
from sqlalchemy import func, select

from edge import wire
from edge.sealing import Sealer, generate_spool_keypair
from edge.spool import Spool
from edge.uplink import CurveKeys
from hub.ingest import EnrolledNode, IngestServer, _Group, _Pending
from hub.models import Node, NodeHealthSample
from hub.storage import StoreResult, prepare_read
from tests.hub.conftest import Database, InProcessHub, enroll, make_record, make_uplink, stored_ids, wait_for


def spool_reads(spool: Spool, node: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        record = make_record(node_id=node, crop_jpeg=b"\xff\xd8" + os.urandom(16) + b"\xff\xd9")
        spool.put(record.read_id, record.to_bytes())
        ids.append(record.read_id)
    return ids


def _wake_pending(server: IngestServer) -> bool:
    try:
        return bool(server._wake_reader.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def test_an_enrolled_node_delivers_every_read_once(hub: InProcessHub, database: Database, tmp_path: Path) -> None:
    keys = enroll(database, "car-12", hub.curve_public)
    with Spool(tmp_path / "spool.db", Sealer(hub.spool_public)) as spool:
        ids = spool_reads(spool, "car-12", 300)
        uplink = make_uplink("car-12", hub.endpoint, keys, spool)
        uplink.start()
        try:
            wait_for(lambda: spool.stats().depth == 0)
            wait_for(lambda: uplink.stats.heartbeats_acked >= 1)
        finally:
            uplink.stop()
    stored = stored_ids(database.sessions)
    assert sorted(stored) == sorted(ids) and len(stored) == len(set(stored))
    # The store thread's wake-ups are consumed (left pending, the ingest loop would spin and fill the pipe).
    wait_for(lambda: not _wake_pending(hub.server), timeout=2.0)
    with database.sessions() as session:
        node = session.scalar(select(Node).where(Node.name == "car-12"))
        assert node is not None and node.last_seen_utc is not None
        assert (session.scalar(select(func.count()).select_from(NodeHealthSample)) or 0) >= 1


def test_unknown_keys_are_refused_while_enrolled_nodes_are_served(
    hub: InProcessHub, database: Database, tmp_path: Path
) -> None:
    good = enroll(database, "car-12", hub.curve_public)
    stranger_public, stranger_secret = zmq.curve_keypair()
    stranger = CurveKeys(stranger_public.decode(), stranger_secret.decode(), hub.curve_public)
    with (
        Spool(tmp_path / "good.db", Sealer(hub.spool_public)) as good_spool,
        Spool(tmp_path / "bad.db", Sealer(hub.spool_public)) as bad_spool,
    ):
        good_ids = spool_reads(good_spool, "car-12", 20)
        spool_reads(bad_spool, "car-99", 20)
        uplinks = [
            make_uplink("car-12", hub.endpoint, good, good_spool),
            make_uplink("car-99", hub.endpoint, stranger, bad_spool),
        ]
        for uplink in uplinks:
            uplink.start()
        try:
            wait_for(lambda: good_spool.stats().depth == 0)
            wait_for(lambda: hub.server.registry.denied >= 1)
            assert bad_spool.stats().depth == 20
        finally:
            for uplink in uplinks:
                uplink.stop()
    assert sorted(stored_ids(database.sessions)) == sorted(good_ids)


def test_malformed_messages_are_rejected_counted_and_survived(
    hub: InProcessHub, database: Database, tmp_path: Path
) -> None:
    keys = enroll(database, "car-12", hub.curve_public)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey, sock.curve_secretkey = keys.node_public.encode(), keys.node_secret.encode()
    sock.curve_serverkey = hub.curve_public.encode()
    sock.connect(hub.endpoint)
    garbage = [
        [b"\xc1\xc1"],
        [b"\x92\x01\x02"],
        [wire.encode(wire.AckMessage())[0].replace(b"\x01", b"\x07", 1)],
        wire.encode(wire.HotlistRequest(node_id="someone-else")),
        [os.urandom(64)],
    ]
    try:
        for frames in garbage:
            sock.send_multipart(frames)
            assert sock.poll(5000), f"the hub must answer every message ({frames!r:.40})"
            reply, _ = wire.decode(sock.recv_multipart())
            assert isinstance(reply, wire.ErrorMessage)
    finally:
        sock.close(linger=0)
    assert sum(hub.server.stats.rejected_messages.values()) == len(garbage)
    # still serving: a real node gets its reads in
    with Spool(tmp_path / "spool.db", Sealer(hub.spool_public)) as spool:
        ids = spool_reads(spool, "car-12", 5)
        uplink = make_uplink("car-12", hub.endpoint, keys, spool)
        uplink.start()
        try:
            wait_for(lambda: spool.stats().depth == 0)
        finally:
            uplink.stop()
    assert sorted(stored_ids(database.sessions)) == sorted(ids)


def test_reads_sealed_for_another_hub_or_claiming_another_node_are_rejected(
    hub: InProcessHub, database: Database, tmp_path: Path
) -> None:
    keys = enroll(database, "car-12", hub.curve_public)
    other_public, _ = generate_spool_keypair()
    with (
        Spool(tmp_path / "spool.db", Sealer(other_public)) as foreign,
        Spool(tmp_path / "spoof.db", Sealer(hub.spool_public)) as spoof,
    ):
        spool_reads(foreign, "car-12", 10)  # enough for one message's reads to be opened on two threads
        spool_reads(spoof, "car-77", 10)  # sealed correctly but claims to come from another node
        for spool in (foreign, spoof):
            uplink = make_uplink("car-12", hub.endpoint, keys, spool)
            uplink.start()
            try:
                wait_for(lambda spool=spool: spool.stats().depth == 0)  # type: ignore[misc]
                assert uplink.stats.reads_rejected == 10
            finally:
                uplink.stop()
    assert stored_ids(database.sessions) == []


def test_a_revoked_node_is_refused(hub: InProcessHub, database: Database, tmp_path: Path) -> None:
    keys = enroll(database, "car-12", hub.curve_public)
    with database.sessions.begin() as session:
        node = session.scalar(select(Node).where(Node.name == "car-12"))
        assert node is not None
        node.revoked_utc = datetime.now(UTC)
    time.sleep(0.3)  # registry refresh
    with Spool(tmp_path / "spool.db", Sealer(hub.spool_public)) as spool:
        spool_reads(spool, "car-12", 3)
        uplink = make_uplink("car-12", hub.endpoint, keys, spool)
        uplink.start()
        try:
            wait_for(lambda: hub.server.registry.denied >= 1)
            assert spool.stats().depth == 3
        finally:
            uplink.stop()


def test_a_group_the_database_refuses_holds_back_only_the_failing_nodes_reads(
    hub: InProcessHub, database: Database
) -> None:
    """Several nodes' reads share one transaction; when it fails, each node's are stored on their own."""
    enroll(database, "car-1", hub.curve_public)
    with database.sessions() as session:
        node_id = session.scalars(select(Node.id).where(Node.name == "car-1")).one()
    good, ghost = EnrolledNode(node_id, "car-1"), EnrolledNode(node_id + 1000, "ghost")  # ghost: no such node row
    pending = []
    for node, identity in ((good, b"good"), (ghost, b"ghost")):
        records = [make_record(node_id=node.name) for _ in range(3)]
        prepared = [prepare_read(r, node.id, datetime.now(UTC), database.engine.dialect) for r in records]
        pending.append(_Pending(identity, node, records, [r.read_id for r in records], [], prepared))
    group = _Group(pending)
    hub.server._store_group(group)
    assert group.results[good.id] == StoreResult(inserted=pending[0].accepted_ids)
    assert group.results[ghost.id] is None and group.failures == 1
    assert sorted(stored_ids(database.sessions)) == sorted(pending[0].accepted_ids)
