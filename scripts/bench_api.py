"""Benchmark the compliance layer: gated, logged searches through the HTTP API, and the access-log chain.

    python scripts/bench_api.py [--db sqlite|postgresql|both] [--reads 1000000] [--searches 200]
        [--threads 4] [--log-entries 100000] [--settled-hits 200000]

Per back end, on a fresh database (a SQLite file in a temporary directory, or a fresh schema in the
PostgreSQL ``test`` database, ``--postgres-url``):

- ``--reads`` reads of random plates bulk-inserted with SQL (one candidate text each), spread over 30
  days and around one city;
- an investigator (trained, approved, registered device) logs in with a real TOTP code; then each kind of
  search (exact plate, wildcard prefix, look-alike, 500 m radius + 1 day) runs ``--searches`` times
  through the FastAPI app in-process (HTTP parsing, validation, the gate, the search, one HMAC-chained
  access-log entry committed per search); latency p50/p95 per kind;
- ``--threads`` clients searching at once: searches/s (each search appends to the one chain);
- ``alpr-hub audit verify`` cost: ``--log-entries`` entries appended, then the whole chain recomputed;
- the dispatch hit board's poll (``GET /api/v1/hits/state``, every 3 s per open board) and its fetch of the
  open hits when they change (``GET /api/v1/hits``), with ``--settled-hits`` dispositioned hits and 20
  open ones in the table.

Prints one JSON line per figure (with command, machine and date), then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import statistics
import string
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub import textindex  # noqa: E402
from hub.access.auditlog import AccessLog, LogEvent  # noqa: E402
from hub.access.gate import Actor  # noqa: E402
from hub.access.policy import PolicySettings  # noqa: E402
from hub.access.service import ComplianceService  # noqa: E402
from hub.api.app import API_PREFIX, create_app  # noqa: E402
from hub.db import make_engine, session_factory  # noqa: E402
from hub.hotlists import add_entry, create_hotlist  # noqa: E402
from hub.models import Hit, Node, Read, ReadCandidateText  # noqa: E402
from hub.storage import ImageStore  # noqa: E402
from scripts.bench_hub import DEFAULT_POSTGRES_URL, Backend, Databases, postgres_admin  # noqa: E402

CASE = "26-000001"
LAT, LON = 32.7157, -117.1611


def random_plate(rng: random.Random) -> str:
    return f"{rng.randint(1, 9)}{''.join(rng.choices(string.ascii_uppercase, k=3))}{rng.randint(0, 999):03d}"


def seed_reads(url: str, count: int, rng: random.Random) -> list[str]:
    engine = make_engine(url)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    plates: list[str] = []
    with sessions.begin() as session:
        node = Node(name="bench-node", curve_public_key=secrets.token_hex(20), enrolled_utc=now)
        session.add(node)
        session.flush()
        node_id = node.id
    chunk = 20_000
    for start in range(0, count, chunk):
        reads = []
        for _ in range(min(chunk, count - start)):
            plate, read_id = random_plate(rng), str(uuid.uuid4())
            seen = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            plates.append(plate)
            reads.append(
                {
                    "read_id": read_id,
                    "node_id": node_id,
                    "camera_id": "front",
                    "plate": plate,
                    "confidence": 0.9,
                    "candidates": [],
                    "region": "us-ca",
                    "box": [0, 0, 1, 1],
                    "char_confidences": [],
                    "first_seen_utc": seen,
                    "best_utc": seen,
                    "last_seen_utc": seen,
                    "received_utc": seen,
                    "time_source": "gps",
                    "clock_suspect": False,
                    "direction": "unknown",
                    "observations": 3,
                    "latitude": LAT + rng.uniform(-0.1, 0.1),
                    "longitude": LON + rng.uniform(-0.1, 0.1),
                    "gps": None,
                    "software_version": "bench",
                    "model_versions": {},
                    "search_texts": plate,
                }
            )
        with sessions.begin() as session:
            session.execute(insert(Read), reads)
            if textindex.uses_rows(session.get_bind().dialect):  # SQLite indexes search_texts by trigger
                texts = [{"read_id": read["read_id"], "text": read["plate"]} for read in reads]
                session.execute(insert(ReadCandidateText), texts)
    engine.dispose()
    return plates


def seed_hits(sessions: Any, settled: int, open_count: int) -> None:
    """``settled`` dispositioned hits and ``open_count`` open ones, on the first reads, matched to one entry."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        create_hotlist(session, "bench-stolen", now=now)
        entry = add_entry(session, "bench-stolen", "1ABC123", "CA", "stolen vehicle", 1, None, "", "bench", "bench",
                          now=now)  # fmt: skip
        entry_id, hotlist_id = entry.id, entry.hotlist_id
        read_ids = list(session.scalars(select(Read.read_id).limit(1000)))
    for start in range(0, settled + open_count, 20_000):
        rows = [
            {"read_id": read_ids[i % len(read_ids)], "entry_id": entry_id, "hotlist_id": hotlist_id,
             "entry_version": 1, "match_type": "exact", "matched_text": "1ABC123", "score": 1.0, "created_utc": now,
             "disposition": "open" if i >= settled else "confirmed"}
            for i in range(start, min(settled + open_count, start + 20_000))
        ]  # fmt: skip
        with sessions.begin() as session:
            session.execute(insert(Hit), rows)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(times: int, request: Callable[[], Any]) -> dict[str, float]:
    """p50 and p95 in ms of ``times`` calls of ``request`` (an HTTP call whose response must succeed)."""
    latencies = []
    for _ in range(times):
        t0 = time.perf_counter()
        response = request()
        latencies.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    return {"p50_ms": round(statistics.median(latencies), 2), "p95_ms": round(percentile(latencies, 0.95), 2)}


def bench_backend(backend: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The figures for one freshly migrated database at ``url``."""
    rng = random.Random(7)
    if args.drop_index:
        drop = make_engine(url)
        with drop.begin() as connection:
            for name in args.drop_index:
                connection.execute(text(f'DROP INDEX "{name}"'))
        drop.dispose()
    started = time.perf_counter()
    plates = seed_reads(url, args.reads, rng)
    print(f"[{backend}] seeded {args.reads} reads in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    engine = make_engine(url, pool_size=args.threads + 2)
    sessions = session_factory(engine)
    service = ComplianceService(sessions, PolicySettings(), AccessLog(secrets.token_bytes(32)), ImageStore("db"))
    console = Actor.console("bench")
    new = service.create_user(
        console, "bench.user", "Bench User", "Bench PD", "Detective", ["authorized_user"], "bench-password-123"
    )
    service.record_training(console, "bench.user", datetime.now(UTC) - timedelta(days=1))
    service.approve_user(console, "bench.user")
    device_key = service.register_device(console, "bench-laptop", "")
    client = TestClient(create_app(service))
    secret = pyotp.parse_uri(new.totp_uri).secret

    def login() -> dict[str, str]:
        time.sleep(0)  # each client logs in once; codes are one-use, so the step changes between logins
        response = client.post(
            f"{API_PREFIX}/auth/login",
            headers={"X-Device-Key": device_key},
            json={"username": "bench.user", "password": "bench-password-123", "totp": pyotp.TOTP(secret).now()},
        )
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['token']}", "X-Device-Key": device_key}

    headers = login()
    day = datetime.now(UTC) - timedelta(days=2)
    kinds: dict[str, Callable[[], dict[str, Any]]] = {
        "exact": lambda: {"plate": rng.choice(plates)},
        "wildcard": lambda: {"pattern": rng.choice(plates)[:4] + "*"},
        "lookalike": lambda: {"fuzzy": rng.choice(plates)},
        "radius": lambda: {
            "near": {
                "latitude": LAT + rng.uniform(-0.05, 0.05),
                "longitude": LON + rng.uniform(-0.05, 0.05),
                "radius_m": 500,
            },
            "from_utc": day.isoformat(),
            "to_utc": (day + timedelta(days=1)).isoformat(),
        },
    }
    results = []

    def search(make_query: Callable[[], dict[str, Any]]) -> Any:
        return client.post(f"{API_PREFIX}/search", json={"purpose": CASE, "query": make_query()}, headers=headers)

    for kind, make_query in kinds.items():
        latency = timed(args.searches, partial(search, make_query))
        results.append({"figure": f"search {kind} via API (gate + log)", "backend": backend, "reads": args.reads,
                        **latency})  # fmt: skip

    per_thread = max(1, args.searches // 2)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(per_thread):
                client.post(
                    f"{API_PREFIX}/search", json={"purpose": CASE, "query": kinds["exact"]()}, headers=headers
                ).raise_for_status()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    results.append(
        {
            "figure": f"searches/s, {args.threads} clients at once",
            "backend": backend,
            "reads": args.reads,
            "per_s": round(args.threads * per_thread / elapsed, 1),
        }
    )

    seed_hits(sessions, args.settled_hits, 20)
    for path, figure in (
        ("/hits/state", "hit board poll: GET /hits/state (gate, not logged)"),
        ("/hits", "hit board on change: GET /hits (gate + log), 20 open"),
    ):
        latency = timed(args.searches, partial(client.get, f"{API_PREFIX}{path}", headers=headers))
        results.append({"figure": figure, "backend": backend, "settled_hits": args.settled_hits, **latency})

    log = service.log
    now = datetime.now(UTC)
    for start in range(0, args.log_entries, 5000):
        with sessions.begin() as session:
            for i in range(start, min(args.log_entries, start + 5000)):
                log.append(
                    session,
                    LogEvent(
                        "bench.user",
                        "Bench PD",
                        "search",
                        "allowed",
                        CASE,
                        "case",
                        {"plate": plates[i % len(plates)]},
                        1,
                        "127.0.0.1",
                        "bench",
                    ),
                    now,
                )
    t0 = time.perf_counter()
    verified = service.verify_log()
    elapsed = time.perf_counter() - t0
    assert verified.ok, verified.problems
    results.append(
        {
            "figure": "audit verify (whole chain)",
            "backend": backend,
            "entries": verified.entries_checked,
            "seconds": round(elapsed, 2),
            "entries_per_s": round(verified.entries_checked / elapsed),
        }
    )
    engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--reads", type=int, default=1_000_000)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--log-entries", type=int, default=100_000)
    parser.add_argument("--settled-hits", type=int, default=200_000, help="dispositioned hits beside 20 open ones")
    parser.add_argument(
        "--drop-index", action="append", default=[], metavar="NAME", help="drop this index first (to compare)"
    )
    args = parser.parse_args()
    meta = {
        "command": "python scripts/bench_api.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    rows: list[dict[str, Any]] = []
    backends: tuple[Backend, ...] = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    with tempfile.TemporaryDirectory() as workdir:
        admin = postgres_admin(args.postgres_url) if "postgresql" in backends else None
        if "postgresql" in backends and admin is None:
            raise SystemExit(f"no PostgreSQL at {args.postgres_url}")
        databases = Databases(Path(workdir), admin)  # fresh, migrated, removed afterwards (bench_hub's)
        try:
            for backend in backends:
                with databases.fresh(backend, "api") as url:
                    rows += bench_backend(backend, url, args)
        finally:
            if admin is not None:
                admin.dispose()
    for row in rows:
        print(json.dumps(row | meta))
    print("\n| figure | backend | result |\n|---|---|---|")
    for row in rows:
        result = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("figure", "backend"))
        print(f"| {row['figure']} | {row['backend']} | {result} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
