"""Benchmark the edge spool: reads/s into it (single commits and batched put_many) and out of it.

    python scripts/bench_spool.py [--reads 5000] [--payload-bytes 30000] [--batch 1 50]

Each batch size runs against a fresh spool in a temporary directory with the production settings
(WAL, synchronous=FULL, sealing to a fresh hub key). Payloads are random bytes, so sealing costs what
it costs for JPEG-bearing reads. `put` is one transaction (one fsync) per read when batch is 1 and
`put_many` per batch otherwise; `drain` is pending(batch) + ack of those ids until the spool is empty.
Prints one JSON object with the numbers, the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.sealing import Sealer, generate_spool_keypair  # noqa: E402
from edge.spool import Spool  # noqa: E402


def bench_batch(reads: int, payload_bytes: int, batch: int, sealer: Sealer) -> dict[str, Any]:
    payloads = [os.urandom(payload_bytes) for _ in range(min(reads, 64))]
    items = [(f"r{i:08d}", payloads[i % len(payloads)]) for i in range(reads)]
    with tempfile.TemporaryDirectory(prefix="bench_spool_") as tmp:
        path = Path(tmp) / "spool.db"
        # max_bytes above the run's total, so no eviction muddles the figure.
        with Spool(path, sealer, max_bytes=2 * reads * (payload_bytes + 64)) as spool:
            start = time.perf_counter()
            if batch == 1:
                for read_id, payload in items:
                    spool.put(read_id, payload)
            else:
                for i in range(0, reads, batch):
                    spool.put_many(items[i : i + batch])
            put_s = time.perf_counter() - start
            depth = spool.stats().depth
            db_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())

            start = time.perf_counter()
            drained = 0
            while batch_reads := spool.pending(max(batch, 1)):
                drained += spool.ack(r.read_id for r in batch_reads)
            drain_s = time.perf_counter() - start
    assert depth == reads and drained == reads, (depth, drained)
    return {
        "batch": batch,
        "put_reads_per_s": round(reads / put_s, 1),
        "put_mb_per_s": round(reads * payload_bytes / put_s / 1e6, 2),
        "drain_reads_per_s": round(reads / drain_s, 1),
        "files_bytes_after_put": db_bytes,
    }


def bench_seal(reads: int, payload_bytes: int, sealer: Sealer) -> float:
    payload = os.urandom(payload_bytes)
    start = time.perf_counter()
    for _ in range(reads):
        sealer.seal(payload)
    return round(reads / (time.perf_counter() - start), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--payload-bytes", type=int, default=30000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 50], help="batch sizes to run (default 1 50)")
    args = parser.parse_args(argv)
    if args.reads <= 0 or args.payload_bytes < 0 or any(b <= 0 for b in args.batch):
        parser.error("--reads and --batch must be positive, --payload-bytes not negative")

    sealer = Sealer(generate_spool_keypair()[0])
    result = {
        "command": " ".join(["python", "scripts/bench_spool.py", *(argv if argv is not None else sys.argv[1:])]),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "tmpdir": tempfile.gettempdir(),
        },
        "reads": args.reads,
        "payload_bytes": args.payload_bytes,
        "seal_only_reads_per_s": bench_seal(min(args.reads, 2000), args.payload_bytes, sealer),
        "runs": [bench_batch(args.reads, args.payload_bytes, batch, sealer) for batch in args.batch],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
