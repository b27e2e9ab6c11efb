"""Benchmark the hub: ingest throughput, ack latency, hot-list matching, plate search, hit alerts.

    python scripts/bench_hub.py [--db sqlite|postgresql|both] [--nodes 4] [--reads 20000]
        [--hotlist-entries 1000000] [--search-reads 10000000] [--quick] [--only ingest,ack,match,search,hits]

Each benchmark runs on a fresh database per back end: a SQLite file in a temporary directory, or a fresh
schema in the PostgreSQL ``test`` database (``--postgres-url``, default ``$ALPR_TEST_POSTGRES_URL`` or
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), migrated with ``hub.db.upgrade`` and dropped
afterwards. Everything runs in this one process, so clients and hub share the machine (and the GIL).

- ingest: ``--nodes`` simulated nodes, each a real CurveZMQ DEALER with its own enrolled key, speaking
  the wire protocol like ``edge.uplink`` (batches of ``--batch`` pre-sealed reads, up to ``--in-flight``
  batches sent ahead of their acks per node, as the uplink's ``batches_in_flight``) against an
  in-process ``IngestServer``; reads/s from the first send to the last ack. Sealing and encoding
  happen before the clock starts, so the figure is the hub's. Images go where the default hub
  config puts them (``--images disk``: appended to the hub's pack files, one ``fdatasync`` per group
  commit; see ``hub.storage``).
- ack: the same nodes with reads arriving at a paced ``--paced-rate`` reads/s in total for
  ``--paced-seconds``; latency of each read from its arrival (open loop) to the ack of its batch.
- match: ``HotlistService`` over ``--hotlist-entries`` active entries bulk-inserted with SQL (10% on a list
  with look-alike tolerance); the build time (load from the database and index) and resident memory it
  adds, then ``index.match_read`` per read over ``--match-reads`` reads (1% hits, each with a candidate);
  and what the same lists cost a node: its snapshot unpacked (validated) and indexed, time and memory.
- search: ``hub.storage.find_reads_by_plate`` over ``--search-reads`` reads bulk-inserted with SQL
  (PostgreSQL ``generate_series``, SQLite recursive CTE; indexes dropped for the load and recreated from
  the models, which equal the migrations), about ``--reads-per-plate`` reads per plate; latency of
  100 random plates, a fresh session each, rows loaded as ORM objects.
- hits: a full ``HubService`` (ingest -> ``HotlistService.match_and_record`` -> ``HitPublisher``) on the
  match benchmark's database; a node sends ``--hits`` reads of listed plates, one every
  ``--hit-interval`` s; latency from the send to the alert on a SUB socket subscribed to ``hit.``.

Prints one JSON line per figure (with command, machine and date), then the same as a markdown table.
``--quick`` shrinks every size (under a minute on two cores); explicit flags still win.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import platform
import random
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgpack
import zmq
from sqlalchemy import Engine, Table, make_url, text
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge import wire  # noqa: E402
from edge.hotlist import HotlistIndex  # noqa: E402
from edge.sealing import Opener, Sealer, generate_spool_keypair  # noqa: E402
from edge.uplink import BATCHES_IN_FLIGHT  # noqa: E402
from hub.config import DispatchSection, HubConfig, HubSection, IngestSection  # noqa: E402
from hub.db import make_engine, session_factory, upgrade  # noqa: E402
from hub.hotlists import HotlistService, HotlistSettings, create_hotlist  # noqa: E402
from hub.ingest import IngestServer  # noqa: E402
from hub.keys import create_keys, load_keys  # noqa: E402
from hub.models import Base, HotlistVersion, Node  # noqa: E402
from hub.service import HubService, tune_garbage_collection  # noqa: E402
from hub.storage import ImageStore, find_reads_by_plate  # noqa: E402

Backend = Literal["sqlite", "postgresql"]
BENCHMARKS = ("ingest", "ack", "match", "search", "hits")
DEFAULT_POSTGRES_URL = os.environ.get("ALPR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PLATE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
HASH_MULTIPLIER = 2654435761
"""Knuth's multiplicative hash (a prime): ``i -> i * M mod (2**28 - 1)`` is one-to-one for every size here."""
HASH_MODULUS = 268435455

FULL = {
    "nodes": 4,
    "reads": 20_000,
    "batch": 64,
    "paced_rate": 1000.0,
    "paced_seconds": 10.0,
    "hotlist_entries": 1_000_000,
    "match_reads": 20_000,
    "search_reads": 10_000_000,
    "searches": 100,
    "hits": 200,
    "hit_interval": 0.05,
}
QUICK = {
    "nodes": 2,
    "reads": 400,
    "batch": 64,
    "paced_rate": 200.0,
    "paced_seconds": 2.0,
    "hotlist_entries": 20_000,
    "match_reads": 2_000,
    "search_reads": 50_000,
    "searches": 100,
    "hits": 20,
    "hit_interval": 0.05,
}
TARGETS = {
    "ingest": ">= 5000 reads/s",
    "ack": "p99 <= 50 ms at 1000 reads/s",
    "match": "<= 1 ms per read at 1M entries",
    "search": "<= 50 ms over 10M reads",
    "hits": "p95 <= 200 ms",
}


def note(message: str) -> None:
    print(f"[bench_hub] {message}", file=sys.stderr, flush=True)


# --- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default does."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``; elsewhere the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Result:
    benchmark: str
    db: str | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    headline: str

    def record(self, context: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "db": self.db,
            "metrics": self.metrics,
            "params": self.params,
            "target": TARGETS[self.benchmark],
            **context,
        }


def machine() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "zmq": zmq.zmq_version(),
    }


def markdown(results: Sequence[Result], context: dict[str, Any]) -> str:
    date = str(context["date_utc"])[:10]
    box = context["machine"]
    where = f"{box['cpu_count']} CPUs, {box['platform']}"
    lines = [
        f"Command: `{context['command']}`; machine: {where}, load {box['load_avg_at_start']}; date {date}.",
        "",
        "| benchmark | db | result | target | params | date | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        params = ", ".join(f"{k}={v}" for k, v in r.params.items())
        lines.append(
            f"| {r.benchmark} | {r.db or '-'} | {r.headline} | {TARGETS[r.benchmark]} | {params} | {date} | {where} |"
        )
    return "\n".join(lines)


# --- databases ----------------------------------------------------------------------------------


def postgres_admin(url: str) -> Engine | None:
    """An AUTOCOMMIT engine on the PostgreSQL test database (trying the user ``root`` too), or None."""
    parsed = make_url(url)
    candidates = [parsed] if parsed.username == "root" else [parsed, parsed.set(username="root")]
    for candidate in candidates:
        engine = make_engine(candidate, connect_args={"connect_timeout": 5}, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure: try the next user
            note(f"PostgreSQL as {candidate.username}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            engine.dispose()
            continue
        return engine
    return None


@dataclass
class Databases:
    workdir: Path
    admin: Engine | None

    @contextmanager
    def fresh(self, backend: Backend, label: str) -> Iterator[str]:
        """The URL of a fresh, migrated database; removed afterwards."""
        if backend == "sqlite":
            folder = self.workdir / f"{label}-{uuid.uuid4().hex[:6]}"
            folder.mkdir(parents=True)
            url = f"sqlite:///{folder / 'hub.db'}"
            try:
                upgrade(url)
                yield url
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            return
        assert self.admin is not None
        schema = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            rendered = self.admin.url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
            upgrade(rendered)
            yield rendered
        finally:
            with self.admin.connect() as connection:
                connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def opened(url: str) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    engine = make_engine(url)
    try:
        yield engine, session_factory(engine)
    finally:
        engine.dispose()


def enroll_nodes(sessions: sessionmaker[Session], names: Sequence[str]) -> dict[str, tuple[str, str]]:
    keys: dict[str, tuple[str, str]] = {}
    with sessions.begin() as session:
        for name in names:
            public, secret = zmq.curve_keypair()
            session.add(Node(name=name, curve_public_key=public.decode(), enrolled_utc=datetime.now(UTC)))
            keys[name] = (public.decode(), secret.decode())
    return keys


def hashed_plate(i: int) -> str:
    """The plate the bulk SQL below writes for number ``i``: 'P' and 7 hex digits, distinct per ``i``."""
    return f"P{(i * HASH_MULTIPLIER) % HASH_MODULUS:07X}"


def plate_sql(backend: Backend, number: str) -> str:
    if backend == "postgresql":
        return f"'P' || upper(lpad(to_hex(({number} * {HASH_MULTIPLIER}) % {HASH_MODULUS}), 7, '0'))"
    return f"printf('P%07X', ({number} * {HASH_MULTIPLIER}) % {HASH_MODULUS})"


def series_sql(backend: Backend) -> str:
    """A FROM clause yielding ``i`` from :lo to :hi."""
    if backend == "postgresql":
        return "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i"
    return "(WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi) SELECT i FROM s)"


def sqlite_now_text() -> str:
    # SQLAlchemy stores SQLite datetimes as naive UTC text in exactly this shape (see hub.models.UTCDateTime).
    return "strftime('%Y-%m-%d %H:%M:%S', 'now') || '.000000'"


# --- wire-speaking nodes ------------------------------------------------------------------------


def make_read(
    node: str, plate: str, crop_bytes: int, rng: random.Random, candidates: int = 1, context_bytes: int = 0
) -> wire.ReadRecord:
    """A read of ``plate`` with ``candidates`` alternative texts (one character changed), as a node's
    tracker merges them: likelihoods 0.2, 0.1, 0.05 ... (the demo's reads carry ten, 0.25 down to 0.001);
    with a context image of ``context_bytes`` when not 0."""
    now = datetime.now(UTC)
    alternatives = [
        wire.CandidateModel(text=misread(plate, rng), confidence=0.2 * 0.5**rank) for rank in range(candidates)
    ]
    return wire.ReadRecord(
        read_id=wire.uuid7(),
        node_id=node,
        camera_id="front",
        plate=plate,
        confidence=0.93,
        candidates=alternatives,
        region="us-ca",
        box=(10.0, 20.0, 110.0, 50.0),
        char_confidences=[0.99] * len(plate),
        first_seen_utc=now,
        best_utc=now,
        last_seen_utc=now,
        time_source="gps",
        gps=wire.GpsModel(latitude=32.7, longitude=-117.1, mode=3, gps_time=now),
        crop_jpeg=b"\xff\xd8" + os.urandom(crop_bytes) + b"\xff\xd9",
        context_jpeg=b"\xff\xd8" + os.urandom(context_bytes) + b"\xff\xd9" if context_bytes else None,
        software_version="bench",
        model_versions={"ocr": "bench"},
    )


def misread(plate: str, rng: random.Random) -> str:
    at = rng.randrange(len(plate))
    return plate[:at] + rng.choice(PLATE_CHARS) + plate[at + 1 :]


def random_plate(rng: random.Random) -> str:
    return "".join(rng.choices(PLATE_CHARS, k=7))


def dealer(
    context: zmq.Context[zmq.Socket[bytes]], endpoint: str, keys: tuple[str, str], hub_public: str
) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey = keys[0].encode()
    sock.curve_secretkey = keys[1].encode()
    sock.curve_serverkey = hub_public.encode()
    sock.connect(endpoint)
    return sock


@dataclass
class SimNode:
    """A node as the hub sees it: sealed reads becoming due at set times, a few batches in flight."""

    name: str
    sock: zmq.Socket[bytes]
    reads: list[tuple[str, bytes]]
    due: list[float]
    sent: int = 0
    in_flight: deque[tuple[int, int]] = field(default_factory=deque)
    """Ranges of ``reads`` sent and not yet acked, oldest first (the hub acks a node's messages in order)."""


@dataclass
class DriveResult:
    elapsed_s: float
    latencies_s: list[float] = field(default_factory=list)
    batches: int = 0


def sealed_reads(
    node: str, count: int, sealer: Sealer, rng: random.Random, args: argparse.Namespace
) -> list[tuple[str, bytes]]:
    """``count`` reads of ``node`` (``args.crop_bytes``, ``args.context_bytes``, ``args.candidates``), sealed as
    the node's spool does."""
    out = []
    for _ in range(count):
        record = make_read(node, random_plate(rng), args.crop_bytes, rng, args.candidates, args.context_bytes)
        out.append((record.read_id, sealer.seal(record.to_bytes())))
    return out


def all_due_at_once(
    names: Sequence[str],
    keys: dict[str, tuple[str, str]],
    count: int,
    sealer: Sealer,
    rng: random.Random,
    args: argparse.Namespace,
) -> list[NodeSpec]:
    """``count`` sealed reads for each node, all due from the start (a backlog, as after a link outage)."""
    return [(name, keys[name], sealed_reads(name, count, sealer, rng, args), [0.0] * count) for name in names]


def drive(nodes: Sequence[SimNode], batch: int, timeout_s: float, in_flight: int = 1) -> DriveResult:
    """Send every node's reads as they fall due, up to ``in_flight`` batches ahead of their acks per node,
    until all are acked."""
    poller = zmq.Poller()
    by_socket: dict[zmq.Socket[bytes], SimNode] = {}
    for node in nodes:
        poller.register(node.sock, zmq.POLLIN)
        by_socket[node.sock] = node
    total = sum(len(n.reads) for n in nodes)
    result = DriveResult(0.0)
    acked = 0
    start = time.perf_counter()
    while acked < total:
        now = time.perf_counter() - start
        if now > timeout_s:
            raise RuntimeError(f"only {acked} of {total} reads acked within {timeout_s:.0f} s")
        wait = 0.1
        for node in nodes:
            while len(node.in_flight) < in_flight and node.sent < len(node.reads):
                end, limit = node.sent, min(len(node.reads), node.sent + batch)
                while end < limit and node.due[end] <= now:
                    end += 1
                if end == node.sent:
                    wait = min(wait, node.due[node.sent] - now)
                    break
                send_batch(node, end)
                result.batches += 1
        for sock, _ in poller.poll(max(1, int(wait * 1000))):
            node = by_socket[sock]
            frames = node.sock.recv_multipart()
            at = time.perf_counter() - start
            header = msgpack.unpackb(frames[0], raw=False)
            if header.get("type") != "ack" or not node.in_flight:
                raise RuntimeError(f"unexpected reply to node {node.name}: {header!r:.200}")
            first, end = node.in_flight.popleft()
            if header.get("accepted", []) != [read_id for read_id, _ in node.reads[first:end]]:
                raise RuntimeError(f"node {node.name}: ack does not match its oldest batch in flight")
            result.latencies_s.extend(at - node.due[i] for i in range(first, end))
            acked += end - first
            result.elapsed_s = at
    return result


def send_batch(node: SimNode, end: int) -> None:
    """Send ``node``'s reads from the next unsent one up to ``end`` as one ``reads`` message."""
    chunk = node.reads[node.sent : end]
    message = wire.ReadsMessage(
        node_id=node.name, items=[wire.ReadRef(read_id=read_id, blob=i) for i, (read_id, _) in enumerate(chunk)]
    )
    node.sock.send_multipart(wire.encode(message, [sealed for _, sealed in chunk]))
    node.in_flight.append((node.sent, end))
    node.sent = end


NodeSpec = tuple[str, tuple[str, str], list[tuple[str, bytes]], list[float]]
"""A simulated node for the driver process: name, CURVE keys, sealed reads, due times."""


def _drive_child(
    conn: Any,
    endpoint: str | dict[str, str],
    hub_public: str,
    runs: list[list[NodeSpec]],
    batch: int,
    timeout_s: float,
    in_flight: int,
) -> None:
    """In a process of its own: connect the nodes, drive each run in turn, send back every run's result.

    ``endpoint`` is the hub's, or one per node name (several hub processes)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sockets: dict[str, zmq.Socket[bytes]] = {}
    try:
        results = []
        for specs in runs:
            for name, keys, _reads, _due in specs:
                if name not in sockets:
                    where = endpoint if isinstance(endpoint, str) else endpoint[name]
                    sockets[name] = dealer(context, where, keys, hub_public)
            nodes = [SimNode(n, sockets[n], reads, due) for n, _k, reads, due in specs]
            results.append(drive(nodes, batch, timeout_s, in_flight))
        conn.send(results)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(exc)
    finally:
        for sock in sockets.values():
            sock.close(linger=0)
        context.term()


def drive_elsewhere(
    endpoint: str | dict[str, str],
    hub_public: str,
    runs: list[list[NodeSpec]],
    batch: int,
    timeout_s: float,
    in_flight: int = 1,
) -> list[DriveResult]:
    """:func:`drive` in a separate process, as real nodes are: the hub does not share its interpreter lock
    with the clients. Every run goes over the same connections (the first one can be a warm-up)."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_drive_child, args=(child, endpoint, hub_public, runs, batch, timeout_s, in_flight)
    )
    process.start()
    try:
        outcome = parent.recv()
    finally:
        process.join(60)
    if isinstance(outcome, Exception):
        raise outcome
    results: list[DriveResult] = outcome
    return results


def _ingest_child(
    conn: Any,
    url: str,
    images_mode: Literal["disk", "db"],
    images_root: Path,
    curve: tuple[bytes, bytes],
    spool_private: bytes,
) -> None:
    """One hub ingest process: serve until told to stop, then report how many reads it stored."""
    tune_garbage_collection()  # as alpr-hub serve does
    engine = make_engine(url)
    server = IngestServer(
        "tcp://127.0.0.1:*",
        curve[0],
        curve[1],
        session_factory(engine),
        ImageStore(images_mode, images_root if images_mode == "disk" else None),
        Opener(spool_private),
    )
    server.start()
    try:
        conn.send(server.endpoint)
        conn.recv()
    finally:
        server.stop()
        engine.dispose()
    conn.send(server.stats.reads_stored)


def bench_ingest_processes(backend: Backend, databases: Databases, args: argparse.Namespace) -> Result:
    """Sustained ingest with ``--hub-processes`` hub processes on one database, nodes spread over them."""
    rng = random.Random(2)
    context = multiprocessing.get_context("spawn")
    with databases.fresh(backend, "ingest-n") as url, opened(url) as (_engine, sessions):
        names = [f"bench-{i:02d}" for i in range(args.nodes)]
        keys = enroll_nodes(sessions, names)
        curve_public, curve_secret = zmq.curve_keypair()
        spool_public, spool_private = generate_spool_keypair()
        sealer = Sealer(spool_public)
        images_root = databases.workdir / f"images-{backend}-{uuid.uuid4().hex[:6]}"
        hubs = []
        for _ in range(args.hub_processes):
            parent, child = context.Pipe()
            process = context.Process(
                target=_ingest_child,
                args=(child, url, args.images, images_root, (curve_public, curve_secret), spool_private),
            )
            process.start()
            hubs.append((process, parent))
        try:
            endpoints = [parent.recv() for _, parent in hubs]
            where = {name: endpoints[i % len(endpoints)] for i, name in enumerate(names)}
            per_node = max(1, args.reads // args.nodes)
            warm = all_due_at_once(names, keys, 4, sealer, rng, args)
            note(f"{backend}: sealing {per_node * args.nodes} reads for {args.hub_processes} hub processes")
            specs = all_due_at_once(names, keys, per_node, sealer, rng, args)
            done = drive_elsewhere(where, curve_public.decode(), [warm, specs], args.batch, 3600.0, args.in_flight)[1]
        finally:
            stored = 0
            for process, parent in hubs:
                parent.send("stop")
                stored += parent.recv()
                process.join(60)
            shutil.rmtree(images_root, ignore_errors=True)
    total = per_node * args.nodes
    if stored != total + len(warm) * 4:
        raise RuntimeError(f"{stored} reads stored, expected {total + len(warm) * 4}")
    return Result(
        "ingest",
        backend,
        {
            "reads_per_s": round(total / done.elapsed_s, 1),
            "image_mb_per_s": image_mb_per_s(args, total, done.elapsed_s),
            "reads": total,
            "elapsed_s": round(done.elapsed_s, 3),
        },
        ingest_params(args, hub_processes=args.hub_processes),
        f"{total / done.elapsed_s:,.0f} reads/s with {args.hub_processes} hub processes",
    )


def ingest_params(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """How an ingest run was driven, as its result records it."""
    return {
        "nodes": args.nodes,
        "batch": args.batch,
        "in_flight": args.in_flight,
        "candidates": args.candidates,
        "crop_bytes": args.crop_bytes,
        "context_bytes": args.context_bytes,
        "images": args.images,
        "clients": "another process",
        **extra,
    }


def image_mb_per_s(args: argparse.Namespace, reads: int, elapsed_s: float) -> float:
    """The crop and context JPEG bytes the hub took in per second, in MB (10^6 bytes)."""
    per_read: int = args.crop_bytes + 2 + (args.context_bytes + 2 if args.context_bytes else 0)
    return round(reads * per_read / elapsed_s / 1e6, 1)


def start_ingest(
    sessions: sessionmaker[Session], images_mode: Literal["disk", "db"], images_root: Path
) -> tuple[IngestServer, str, Sealer]:
    public, secret = zmq.curve_keypair()
    spool_public, spool_private = generate_spool_keypair()
    server = IngestServer(
        "tcp://127.0.0.1:*",
        public,
        secret,
        sessions,
        ImageStore(images_mode, images_root if images_mode == "disk" else None),
        Opener(spool_private),
    )
    server.start()
    return server, public.decode(), Sealer(spool_public)


def bench_ingest_and_ack(
    backend: Backend, databases: Databases, args: argparse.Namespace, run: set[str]
) -> list[Result]:
    rng = random.Random(1)
    results: list[Result] = []
    with databases.fresh(backend, "ingest") as url, opened(url) as (_engine, sessions):
        names = [f"bench-{i:02d}" for i in range(args.nodes)]
        keys = enroll_nodes(sessions, names)
        images_root = databases.workdir / f"images-{backend}-{uuid.uuid4().hex[:6]}"
        server, hub_public, sealer = start_ingest(sessions, args.images, images_root)
        try:
            warm = all_due_at_once(names, keys, 4, sealer, rng, args)
            if "ingest" in run:
                per_node = max(1, args.reads // args.nodes)
                note(f"{backend}: sealing {per_node * args.nodes} reads for the ingest run")
                specs = all_due_at_once(names, keys, per_node, sealer, rng, args)
                stored_before = server.stats.reads_stored + len(warm) * 4
                note(f"{backend}: ingest, {args.nodes} nodes x {per_node} reads (driven from another process)")
                # Warm-up first over the same connections: CURVE handshakes, compiled statements, packs.
                runs = [warm, specs]
                done = drive_elsewhere(server.endpoint, hub_public, runs, args.batch, 3600.0, args.in_flight)[1]
                warm = []
                total = per_node * args.nodes
                # The hub counts a batch just after acking it: give the last count a moment to land.
                deadline = time.perf_counter() + 10.0
                while server.stats.reads_stored - stored_before < total and time.perf_counter() < deadline:
                    time.sleep(0.01)
                stored = server.stats.reads_stored - stored_before
                if stored != total:
                    raise RuntimeError(f"{stored} of {total} reads stored")
                results.append(
                    Result(
                        "ingest",
                        backend,
                        {
                            "reads_per_s": round(total / done.elapsed_s, 1),
                            "image_mb_per_s": image_mb_per_s(args, total, done.elapsed_s),
                            "reads": total,
                            "elapsed_s": round(done.elapsed_s, 3),
                            "batches": done.batches,
                            "mean_reads_per_batch": round(total / max(1, done.batches), 1),
                        },
                        ingest_params(args),
                        f"{total / done.elapsed_s:,.0f} reads/s",
                    )
                )

            if "ack" in run:
                total = max(args.nodes, int(args.paced_rate * args.paced_seconds))
                per_node = total // args.nodes
                note(f"{backend}: sealing {per_node * args.nodes} reads for the paced run")
                paced: list[NodeSpec] = []
                for k, n in enumerate(names):
                    due = [(j * args.nodes + k) / args.paced_rate for j in range(per_node)]
                    paced.append((n, keys[n], sealed_reads(n, per_node, sealer, rng, args), due))
                note(f"{backend}: ack latency at {args.paced_rate:g} reads/s for {args.paced_seconds:g} s")
                runs = [warm, paced] if warm else [paced]
                done = drive_elsewhere(
                    server.endpoint, hub_public, runs, args.batch, args.paced_seconds + 600.0, args.in_flight
                )[-1]
                lat = done.latencies_s
                offered = per_node * args.nodes
                results.append(
                    Result(
                        "ack",
                        backend,
                        {
                            "p50_ms": ms(percentile(lat, 50)),
                            "p99_ms": ms(percentile(lat, 99)),
                            "max_ms": ms(max(lat)),
                            "reads": offered,
                            "achieved_reads_per_s": round(offered / done.elapsed_s, 1),
                            "mean_reads_per_batch": round(offered / max(1, done.batches), 1),
                        },
                        {
                            "rate": args.paced_rate,
                            "seconds": args.paced_seconds,
                            "nodes": args.nodes,
                            "max_batch": args.batch,
                            "in_flight": args.in_flight,
                            "candidates": args.candidates,
                            "crop_bytes": args.crop_bytes,
                            "context_bytes": args.context_bytes,
                            "images": args.images,
                        },
                        f"p50 {ms(percentile(lat, 50))} ms, p99 {ms(percentile(lat, 99))} ms",
                    )
                )
        finally:
            server.stop()
            shutil.rmtree(images_root, ignore_errors=True)
    return results


# --- hot lists ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilledHotlists:
    entries: int
    tolerant_from: int
    """Entries numbered from this one on are on the list with look-alike tolerance."""


def fill_hotlists(backend: Backend, engine: Engine, sessions: sessionmaker[Session], entries: int) -> FilledHotlists:
    """``entries`` active entries numbered 1..entries (plate :func:`hashed_plate`), 10% look-alike tolerant."""
    tolerant_from = entries - entries // 10 + 1
    with sessions.begin() as session:
        lists = []
        for name, settings in (
            ("bench-ncic", HotlistSettings(default_category="stolen vehicle", default_priority=1)),
            (
                "bench-amber",
                HotlistSettings(default_category="amber alert", default_priority=0, lookalike_tolerance=True),
            ),
        ):
            hotlist = create_hotlist(session, name, settings)
            version = HotlistVersion(hotlist_id=hotlist.id, created_by="bench", note="bench fill")
            session.add(version)
            session.flush()
            lists.append((hotlist.id, version))
        lists[0][1].entries_added = tolerant_from - 1
        lists[1][1].entries_added = entries - tolerant_from + 1
        ids = {"main": lists[0][0], "main_v": lists[0][1].version, "tol": lists[1][0], "tol_v": lists[1][1].version}
    now = "now()" if backend == "postgresql" else sqlite_now_text()
    statement = text(
        "INSERT INTO hotlist_entries (hotlist_id, plate, state, category, priority, expires_utc, notes, source, "
        "added_by, reason, added_utc, removed_utc, version_added, version_removed) "
        f"SELECT CASE WHEN i < :split THEN :main ELSE :tol END, {plate_sql(backend, 'i')}, NULL, "
        "CASE WHEN i < :split THEN 'stolen vehicle' ELSE 'amber alert' END, CASE WHEN i < :split THEN 1 ELSE 0 END, "
        f"NULL, '', 'bench', 'bench', 'bench fill', {now}, NULL, "
        "CASE WHEN i < :split THEN :main_v ELSE :tol_v END, NULL "
        f"FROM {series_sql(backend)}"
    )
    chunk = 500_000
    for lo in range(1, entries + 1, chunk):
        hi = min(entries, lo + chunk - 1)
        with engine.begin() as connection:
            connection.execute(statement, {"lo": lo, "hi": hi, "split": tolerant_from, **ids})
    if backend == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE hotlist_entries")
    return FilledHotlists(entries, tolerant_from)


def bench_match(
    backend: Backend, sessions: sessionmaker[Session], filled: FilledHotlists, args: argparse.Namespace
) -> Result:
    rng = random.Random(2)
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    service = HotlistService(sessions)
    index = service.refresh(force=True)
    build_s = time.perf_counter() - started
    gc.collect()
    added = rss_bytes() - rss_before
    if len(index) != filled.entries:
        raise RuntimeError(f"index holds {len(index)} entries, {filled.entries} expected")

    reads = []
    for _ in range(args.match_reads):
        plate = hashed_plate(rng.randint(1, filled.entries)) if rng.random() < 0.01 else random_plate(rng)
        reads.append(make_read("bench-00", plate, 16, rng))
    for record in reads[:100]:
        index.match_read(record)
    hits = 0
    started = time.perf_counter()
    for record in reads:
        hits += len(index.match_read(record))
    per_read = (time.perf_counter() - started) / len(reads)
    snapshot = service.snapshot(None)
    assert isinstance(snapshot, tuple)
    lookalike_keys = index.lookalike_keys
    del service, index
    node_build_s, node_added = node_index_cost(snapshot[1])
    return Result(
        "match",
        backend,
        {
            "us_per_read": round(per_read * 1e6, 2),
            "entries": filled.entries,
            "lookalike_keys": lookalike_keys,
            "build_s": round(build_s, 2),
            "rss_added_mb": round(added / 2**20, 1),
            "node_build_s": round(node_build_s, 2),
            "node_rss_added_mb": round(node_added / 2**20, 1),
            "reads": len(reads),
            "hits": hits,
        },
        {"entries": filled.entries, "lookalike_share": 0.1, "reads": len(reads), "hit_share": 0.01},
        f"{per_read * 1e6:.1f} us/read; build {build_s:.1f} s, +{added / 2**20:,.0f} MB; "
        f"on a node +{node_added / 2**20:,.0f} MB",
    )


def node_index_cost(blob: bytes) -> tuple[float, int]:
    """Seconds and resident bytes a node spends on a snapshot: unpacking (validating) its entries and
    indexing them, as ``edge.hotlist.HotlistCache.load`` does. Measured in a fresh process, where no
    memory freed by the hub's index can be reused."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        cost: tuple[float, int] = pool.apply(_node_index_cost, (blob,))
    return cost


def _node_index_cost(blob: bytes) -> tuple[float, int]:
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    index = HotlistIndex(wire.unpack_hotlist_entries(blob))
    build_s = time.perf_counter() - started
    gc.collect()
    added = rss_bytes() - rss_before
    if len(index) == 0:
        raise RuntimeError("empty snapshot")
    return build_s, added


def bench_hits(
    backend: Backend, url: str, databases: Databases, filled: FilledHotlists, args: argparse.Namespace
) -> Result:
    rng = random.Random(3)
    data_dir = databases.workdir / f"hits-{backend}-{uuid.uuid4().hex[:6]}"
    config = HubConfig(
        hub=HubSection(name="bench", data_dir=data_dir, database_url=url),
        ingest=IngestSection(bind="tcp://127.0.0.1:*"),
        dispatch=DispatchSection(pub_bind="tcp://127.0.0.1:*"),
    )
    create_keys(config.keys_dir)
    keys = load_keys(config.keys_dir)
    sealer = Sealer(keys.spool_public)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    note(f"{backend}: starting HubService (hot-list index of {filled.entries} entries)")
    service = HubService(config, context)
    node_keys = enroll_nodes(service.sessions, ["bench-hits"])["bench-hits"]
    service.start()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"hit.")
    sub.connect(service.publisher.endpoint)
    sock = dealer(context, service.ingest.endpoint, node_keys, keys.curve_public)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(sock, zmq.POLLIN)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    def send_hit() -> str:
        record = make_read("bench-hits", hashed_plate(rng.randint(1, filled.entries)), 2000, rng, candidates=0)
        sealed = sealer.seal(record.to_bytes())
        message = wire.ReadsMessage(node_id="bench-hits", items=[wire.ReadRef(read_id=record.read_id, blob=0)])
        frames = wire.encode(message, [sealed])
        sent_at[record.read_id] = time.perf_counter()
        sock.send_multipart(frames)
        return record.read_id

    def pump(timeout_s: float, want: str | None = None) -> bool:
        """Take replies and alerts for up to ``timeout_s``; True once ``want``'s alert arrived."""
        deadline = time.perf_counter() + timeout_s
        while (left := deadline - time.perf_counter()) > 0:
            for ready, _ in poller.poll(max(1, int(left * 1000))):
                if ready is sock:
                    sock.recv_multipart()
                    continue
                _topic, body = sub.recv_multipart()
                at = time.perf_counter()
                read_id = json.loads(body)["read_id"]
                if read_id in sent_at:
                    latencies.append(at - sent_at.pop(read_id))
                if read_id == want:
                    return True
        return False

    try:
        # The SUB joins late (ZeroMQ's slow joiner): send warm-up hits until one comes through.
        for _ in range(100):
            if pump(1.0, send_hit()):
                break
        else:
            raise RuntimeError("no hit alert arrived on the SUB socket")
        latencies.clear()
        sent_at.clear()
        note(f"{backend}: {args.hits} hits, one every {args.hit_interval:g} s")
        for _ in range(args.hits):
            send_hit()
            pump(args.hit_interval)
        deadline = time.perf_counter() + 30.0
        while sent_at and time.perf_counter() < deadline:
            pump(0.05)
        missing = len(sent_at)
    finally:
        sock.close(linger=0)
        sub.close(linger=0)
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return Result(
        "hits",
        backend,
        {
            "p50_ms": ms(percentile(latencies, 50)),
            "p95_ms": ms(percentile(latencies, 95)),
            "max_ms": ms(max(latencies)) if latencies else None,
            "hits": len(latencies),
            "missing": missing,
            "hotlist_entries": filled.entries,
        },
        {"hits": args.hits, "interval_s": args.hit_interval, "hotlist_entries": filled.entries},
        f"p50 {ms(percentile(latencies, 50))} ms, p95 {ms(percentile(latencies, 95))} ms",
    )


# --- search -------------------------------------------------------------------------------------


def fill_reads(backend: Backend, engine: Engine, node_id: int, count: int, plates: int) -> float:
    """``count`` reads (plate of read i: :func:`hashed_plate` of i mod ``plates``), indexes rebuilt; seconds."""
    reads: Table = Base.metadata.tables["reads"]
    started = time.perf_counter()
    with engine.begin() as connection:
        for index in reads.indexes:
            index.drop(connection)
    base = datetime.now(UTC).replace(microsecond=0)
    if backend == "postgresql":
        read_id = "'00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0')"
        ts = "CAST(:base AS timestamptz) - i * interval '250 milliseconds'"
        json_empty, json_box, json_map, false = "'[]'::json", "'[10.0, 20.0, 110.0, 50.0]'::json", "'{}'::json", "false"
        params: dict[str, Any] = {"base": base}
    else:
        read_id = "printf('00000000-0000-7000-8000-%012x', i)"
        ts = "strftime('%Y-%m-%d %H:%M:%S', :base - i / 4, 'unixepoch') || printf('.%06d', (3 - i % 4) * 250000)"
        json_empty, json_box, json_map, false = "'[]'", "'[10.0, 20.0, 110.0, 50.0]'", "'{}'", "0"
        params = {"base": int(base.timestamp())}
    statement = text(
        "INSERT INTO reads (read_id, node_id, camera_id, plate, confidence, candidates, region, box, "
        "char_confidences, first_seen_utc, best_utc, last_seen_utc, received_utc, time_source, clock_suspect, "
        "direction, observations, latitude, longitude, gps, crop_sha256, context_sha256, software_version, "
        "model_versions, search_texts) "
        f"SELECT {read_id}, :node, 'front', plate, 0.9, {json_empty}, 'us-ca', "
        f"{json_box}, {json_empty}, ts, ts, ts, ts, 'gps', {false}, 'unknown', 1, 32.7 + (i % 1000) * 0.0001, "
        f"-117.1 - (i % 997) * 0.0001, NULL, NULL, NULL, 'bench', {json_map}, plate "
        f"FROM (SELECT i, {ts} AS ts, {plate_sql(backend, '(i % :plates)')} AS plate "
        f"FROM {series_sql(backend)}) AS numbered"
    )
    chunk = 1_000_000
    for lo in range(1, count + 1, chunk):
        hi = min(count, lo + chunk - 1)
        with engine.begin() as connection:
            connection.execute(statement, {"lo": lo, "hi": hi, "node": node_id, "plates": plates, **params})
        note(f"{backend}: {hi:,} of {count:,} reads inserted ({time.perf_counter() - started:.0f} s)")
    with engine.begin() as connection:
        for index in reads.indexes:
            index.create(connection)
        if backend == "postgresql":
            connection.exec_driver_sql("ANALYZE reads")
    note(f"{backend}: indexes rebuilt ({time.perf_counter() - started:.0f} s)")
    return time.perf_counter() - started


def bench_search(backend: Backend, databases: Databases, args: argparse.Namespace) -> Result:
    rng = random.Random(4)
    plates = max(1, args.search_reads // args.reads_per_plate)
    with databases.fresh(backend, "search") as url, opened(url) as (engine, sessions):
        with sessions.begin() as session:
            node = Node(
                name="bench-search", curve_public_key=zmq.curve_keypair()[0].decode(), enrolled_utc=datetime.now(UTC)
            )
            session.add(node)
            session.flush()
            node_id = node.id
        note(f"{backend}: inserting {args.search_reads:,} reads for the search run")
        load_s = fill_reads(backend, engine, node_id, args.search_reads, plates)
        queries = [hashed_plate(rng.randrange(plates)) for _ in range(args.searches)]
        for plate in queries[:5]:  # warm-up: connections, statement cache
            with sessions() as session:
                find_reads_by_plate(session, plate)
        timings: list[float] = []
        rows = 0
        for plate in queries:
            started = time.perf_counter()
            with sessions() as session:
                found = find_reads_by_plate(session, plate)
            timings.append(time.perf_counter() - started)
            rows += len(found)
    return Result(
        "search",
        backend,
        {
            "p50_ms": ms(percentile(timings, 50)),
            "p95_ms": ms(percentile(timings, 95)),
            "max_ms": ms(max(timings)),
            "mean_rows": round(rows / len(queries), 1),
            "reads": args.search_reads,
            "load_s": round(load_s, 1),
        },
        {"reads": args.search_reads, "reads_per_plate": args.reads_per_plate, "searches": args.searches},
        f"p50 {ms(percentile(timings, 50))} ms, p95 {ms(percentile(timings, 95))} ms",
    )


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in under a minute")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--nodes", type=int, help="simulated nodes (ingest, ack)")
    parser.add_argument("--reads", type=int, help="reads for the ingest throughput run")
    parser.add_argument("--batch", type=int, help="most reads per message, as the uplink's batch_size")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=BATCHES_IN_FLIGHT,
        help="batches each node sends ahead of their acks, as the uplink's batches_in_flight",
    )
    parser.add_argument(
        "--hub-processes",
        type=int,
        default=1,
        help="ingest: also measure this many hub processes on one database (nodes spread over them)",
    )
    parser.add_argument("--crop-bytes", type=int, default=3000, help="size of each read's (random) crop JPEG")
    parser.add_argument(
        "--context-bytes",
        type=int,
        default=0,
        help="size of each read's (random) context JPEG; 0: none. A node sends one by default "
        "([images] context): a 1280-pixel frame at quality 70 is some 25-70 kB",
    )
    parser.add_argument(
        "--candidates", type=int, default=10, help="alternative texts per read (ingest, ack), as the tracker's ten"
    )
    parser.add_argument("--images", choices=["disk", "db"], default="disk", help="the hub's image store mode")
    parser.add_argument("--paced-rate", type=float, help="reads/s offered in the ack latency run")
    parser.add_argument("--paced-seconds", type=float, help="length of the ack latency run")
    parser.add_argument("--hotlist-entries", type=int, help="active hot-list entries (match, hits)")
    parser.add_argument("--match-reads", type=int, help="reads matched against the hot-list index")
    parser.add_argument("--search-reads", type=int, help="reads in the database searched by plate")
    parser.add_argument("--reads-per-plate", type=int, default=10, help="about this many reads share a plate")
    parser.add_argument("--searches", type=int, help="plates searched")
    parser.add_argument("--hits", type=int, help="hits timed from edge send to SUB receive")
    parser.add_argument("--hit-interval", type=float, help="seconds between hit reads")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database where schemas can be made")
    parser.add_argument("--workdir", type=Path, help="for SQLite files and images (default: a temporary directory)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    positive = (
        "nodes",
        "reads",
        "batch",
        "in_flight",
        "paced_rate",
        "paced_seconds",
        "hotlist_entries",
        "match_reads",
        "search_reads",
        "reads_per_plate",
        "searches",
        "hits",
    )
    for name in positive:
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.batch > wire.MAX_BATCH:
        parser.error(f"--batch may be at most {wire.MAX_BATCH} (the wire protocol's limit)")
    if args.hit_interval < 0 or args.crop_bytes < 0 or args.context_bytes < 0 or not 0 <= args.candidates <= 32:
        parser.error("--hit-interval, --crop-bytes and --context-bytes must not be negative, --candidates 0 to 32")
    unknown = set(args.only.split(",")) - set(BENCHMARKS)
    if unknown:
        parser.error(f"--only: unknown benchmarks {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tune_garbage_collection()  # the hub's servers run in this process: set up as alpr-hub serve sets its own
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    run = set(args.only.split(","))
    backends: list[Backend] = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    context: dict[str, Any] = {
        "command": " ".join(["python", "scripts/bench_hub.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    admin = postgres_admin(args.postgres_url) if "postgresql" in backends else None
    if "postgresql" in backends and admin is None:
        if args.db == "postgresql":
            note("no PostgreSQL server to benchmark (see --postgres-url)")
            return 2
        note("PostgreSQL unavailable: benchmarking SQLite only")
        backends.remove("postgresql")
    if admin is not None:
        with admin.connect() as connection:
            context["machine"]["postgresql"] = connection.exec_driver_sql("SHOW server_version").scalar()

    results: list[Result] = []

    def emit(result: Result) -> None:
        results.append(result)
        print(json.dumps(result.record(context)), flush=True)

    started = time.perf_counter()
    workdir_owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_hub_")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    databases = Databases(workdir, admin)
    try:
        for backend in backends:
            if run & {"ingest", "ack"}:
                for result in bench_ingest_and_ack(backend, databases, args, run):
                    emit(result)
            if "ingest" in run and args.hub_processes > 1:
                emit(bench_ingest_processes(backend, databases, args))
            if run & {"match", "hits"}:
                with databases.fresh(backend, "hotlist") as url, opened(url) as (engine, sessions):
                    note(f"{backend}: inserting {args.hotlist_entries:,} hot-list entries")
                    filled = fill_hotlists(backend, engine, sessions, args.hotlist_entries)
                    if "match" in run:
                        emit(bench_match(backend, sessions, filled, args))
                    if "hits" in run:
                        emit(bench_hits(backend, url, databases, filled, args))
            if "search" in run:
                emit(bench_search(backend, databases, args))
    finally:
        if workdir_owned:
            shutil.rmtree(workdir, ignore_errors=True)
        if admin is not None:
            admin.dispose()
    note(f"done in {time.perf_counter() - started:.0f} s")
    print()
    print(markdown(results, context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
