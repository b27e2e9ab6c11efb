from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.sealing import SEAL_OVERHEAD, Opener, Sealer, encode_key, generate_spool_keypair
from edge.spool import EvictionReport, Spool, SpoolError, SpoolWriteError

WRITER = Path(__file__).with_name("spool_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# Something no ciphertext will contain by chance, and easy to spot in a hex dump.
MARKER = b"PLATE=7XYZ123;"


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return generate_spool_keypair()


@pytest.fixture
def sealer(keypair: tuple[bytes, bytes]) -> Sealer:
    return Sealer(keypair[0])


@pytest.fixture
def opener(keypair: tuple[bytes, bytes]) -> Opener:
    return Opener(keypair[1])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "spool.db"


@pytest.fixture
def spool(db: Path, sealer: Sealer) -> Iterator[Spool]:
    with Spool(db, sealer) as s:
        yield s


def payload(n: int, size: int = 200) -> bytes:
    return (MARKER + f"#{n}#".encode()).ljust(size, b".")


def ids(spool: Spool, limit: int = 1000) -> list[str]:
    return [r.read_id for r in spool.pending(limit)]


# -- basic queue behaviour --------------------------------------------------------------------------


def test_put_pending_ack_in_order(spool: Spool, opener: Opener) -> None:
    spool.put("a", payload(1))
    spool.put_many([("b", payload(2)), ("c", payload(3))])
    reads = spool.pending(10)
    assert [r.read_id for r in reads] == ["a", "b", "c"]
    assert [opener.open(r.sealed) for r in reads] == [payload(1), payload(2), payload(3)]
    assert all(r.attempts == 0 and r.created_utc.tzinfo is not None for r in reads)
    assert ids(spool, 2) == ["a", "b"]
    assert spool.ack(["a", "b"]) == 2
    assert ids(spool) == ["c"]
    assert spool.stats().depth == 1


def test_pending_after_a_seq_skips_the_reads_in_flight(spool: Spool) -> None:
    spool.put_many([(name, payload(n)) for n, name in enumerate("abcde")])
    first = spool.pending(2)
    assert [r.read_id for r in first] == ["a", "b"]
    assert [r.read_id for r in spool.pending(2, after_seq=first[-1].seq)] == ["c", "d"]
    spool.ack(["a"])  # an ack does not move the others
    assert [r.read_id for r in spool.pending(10, after_seq=first[-1].seq)] == ["c", "d", "e"]
    assert [r.read_id for r in spool.pending(10)] == ["b", "c", "d", "e"]


def test_put_is_idempotent(spool: Spool, opener: Opener) -> None:
    spool.put("a", payload(1))
    spool.put("a", payload(2))
    spool.put_many([("b", payload(3)), ("b", payload(4)), ("a", payload(5))])
    reads = spool.pending(10)
    assert [r.read_id for r in reads] == ["a", "b"]
    assert [opener.open(r.sealed) for r in reads] == [payload(1), payload(3)]
    assert spool.stats().bytes == 2 * (len(payload(1)) + SEAL_OVERHEAD)


def test_duplicate_and_unknown_ack_are_harmless(spool: Spool) -> None:
    spool.put_many([("a", payload(1)), ("b", payload(2))])
    assert spool.ack(["a"]) == 1
    assert spool.ack(["a"]) == 0
    assert spool.ack(["zzz", "b", "b"]) == 1
    assert spool.ack([]) == 0
    stats = spool.stats()
    assert (stats.depth, stats.bytes, stats.oldest_utc) == (0, 0, None)


def test_mark_attempt_counts(spool: Spool) -> None:
    spool.put_many([("a", payload(1)), ("b", payload(2))])
    spool.mark_attempt(["a", "b"])
    spool.mark_attempt(["a", "unknown"])
    assert {r.read_id: r.attempts for r in spool.pending(10)} == {"a": 2, "b": 1}


def test_stats(db: Path, sealer: Sealer) -> None:
    clock = FakeClock()
    with Spool(db, sealer, clock=clock) as spool:
        spool.put("a", payload(1))
        clock.advance(seconds=5)
        spool.put("b", payload(2, size=1000))
        stats = spool.stats()
    assert stats.depth == 2
    assert stats.bytes == 200 + 1000 + 2 * SEAL_OVERHEAD
    assert stats.oldest_utc == T0
    assert (stats.evicted_total, stats.pending_eviction_reports, stats.write_errors) == (0, 0, 0)


def test_timestamps_are_utc(db: Path, sealer: Sealer) -> None:
    offset = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    with Spool(db, sealer, clock=lambda: offset) as spool:
        spool.put("a", payload(1))
        (read,) = spool.pending(1)
    assert read.created_utc == offset
    assert read.created_utc.utcoffset() == timedelta(0)


def test_naive_clock_is_rejected(db: Path, sealer: Sealer) -> None:
    with pytest.raises(ValueError, match="aware"):
        Spool(db, sealer, clock=lambda: datetime(2024, 5, 1))
    assert not db.exists()


def test_bad_arguments(db: Path, sealer: Sealer, spool: Spool) -> None:
    with pytest.raises(ValueError):
        spool.put("", payload(1))
    with pytest.raises(ValueError):
        spool.put("x" * 129, payload(1))
    with pytest.raises(ValueError):
        spool.pending(0)
    with pytest.raises(ValueError):
        Spool(db.with_name("other.db"), sealer, max_bytes=0)


def test_closed_spool_raises(db: Path, sealer: Sealer) -> None:
    spool = Spool(db, sealer)
    spool.close()
    spool.close()  # twice is fine
    with pytest.raises(SpoolError, match="closed"):
        spool.put("a", payload(1))
    with pytest.raises(SpoolError, match="closed"):
        spool.pending(1)


def test_not_a_database_raises_spool_error(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpoolError, match="junk.db"):
        Spool(path, sealer)


def test_threads_share_one_spool(spool: Spool) -> None:
    def producer(name: str) -> None:
        for i in range(15):
            spool.put(f"{name}{i:02d}", payload(i))

    threads = [threading.Thread(target=producer, args=(name,)) for name in "xyz"]
    for t in threads:
        t.start()
    acked = 0
    while any(t.is_alive() for t in threads) or spool.stats().depth:
        acked += spool.ack(r.read_id for r in spool.pending(7))
    for t in threads:
        t.join()
    assert acked == 45
    assert spool.stats().bytes == 0


# -- persistence ------------------------------------------------------------------------------------


def test_survives_close_and_reopen(db: Path, sealer: Sealer, opener: Opener) -> None:
    with Spool(db, sealer) as spool:
        spool.put_many([(f"r{i}", payload(i)) for i in range(5)])
        spool.mark_attempt(["r0"])
        spool.ack(["r1"])
        before = spool.stats()
    with Spool(db, sealer) as spool:
        reads = spool.pending(10)
        assert spool.stats() == before
    assert [r.read_id for r in reads] == ["r0", "r2", "r3", "r4"]
    assert reads[0].attempts == 1
    assert opener.open(reads[3].sealed) == payload(4)


# -- bounds -----------------------------------------------------------------------------------------


def test_eviction_by_bytes(db: Path, sealer: Sealer, caplog: pytest.LogCaptureFixture) -> None:
    row = 200 + SEAL_OVERHEAD
    caplog.set_level(logging.WARNING, logger="edge.spool")
    with Spool(db, sealer, max_bytes=3 * row) as spool:
        spool.put_many([(f"r{i}", payload(i)) for i in range(3)])
        assert spool.stats().evicted_total == 0
        spool.put("r3", payload(3))
        spool.put_many([("r4", payload(4)), ("r5", payload(5))])
        assert ids(spool) == ["r3", "r4", "r5"]
        stats = spool.stats()
        assert (stats.depth, stats.bytes, stats.evicted_total, stats.pending_eviction_reports) == (3, 3 * row, 3, 3)
        reports = spool.drain_eviction_reports()
    assert [(r.read_id, r.reason) for r in reports] == [("r0", "bytes"), ("r1", "bytes"), ("r2", "bytes")]
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert "r0" in warnings[0].getMessage()
    assert MARKER.decode() not in caplog.text


def test_a_read_larger_than_the_bound_is_evicted_itself(db: Path, sealer: Sealer) -> None:
    with Spool(db, sealer, max_bytes=100) as small:
        small.put("big", payload(1, size=500))
        assert small.stats().depth == 0
        assert [r.read_id for r in small.drain_eviction_reports()] == ["big"]


def test_eviction_by_age(db: Path, sealer: Sealer, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.WARNING, logger="edge.spool")
    with Spool(db, sealer, max_age=timedelta(days=30), clock=clock) as spool:
        spool.put("a", payload(1))
        clock.advance(days=10)
        spool.put("b", payload(2))
        clock.advance(days=20, seconds=1)  # a is now 30 days and 1 s old, b is 20 days old
        spool.put("c", payload(3))
        assert ids(spool) == ["b", "c"]
        stats = spool.stats()
        assert stats.evicted_total == 1
        assert stats.oldest_utc == T0 + timedelta(days=10)
        assert stats.bytes == 2 * (200 + SEAL_OVERHEAD)
        (report,) = spool.drain_eviction_reports()
    assert report == EvictionReport("a", T0, T0 + timedelta(days=30, seconds=1), "age")
    assert "30 days" in caplog.text
    assert MARKER.decode() not in caplog.text


def test_age_eviction_at_start_up_and_on_demand(db: Path, sealer: Sealer) -> None:
    clock = FakeClock()
    with Spool(db, sealer, clock=clock) as spool:
        spool.put_many([("a", payload(1)), ("b", payload(2))])
        clock.advance(days=29)
        assert spool.enforce_bounds() == 0
        clock.advance(days=2)
        assert spool.enforce_bounds() == 2
        spool.put("c", payload(3))
    clock.advance(days=31)  # switched off for a month
    with Spool(db, sealer, clock=clock) as spool:
        assert spool.stats().depth == 0
        assert [r.read_id for r in spool.drain_eviction_reports()] == ["a", "b", "c"]


def test_age_eviction_copes_with_a_clock_set_back(db: Path, sealer: Sealer) -> None:
    # GPS-less boxes sometimes boot with a wrong clock that is corrected later: seq order is then not
    # time order, and an old read queued behind a newer one must still go on time.
    clock = FakeClock(T0 + timedelta(days=5))
    with Spool(db, sealer, clock=clock) as spool:
        spool.put("ahead", payload(1))
        clock.now = T0
        spool.put("behind", payload(2))
        clock.now = T0 + timedelta(days=31)
        spool.put("now", payload(3))
        assert ids(spool) == ["ahead", "now"]
        assert [(r.read_id, r.reason) for r in spool.drain_eviction_reports()] == [("behind", "age")]


def test_eviction_reports_drain_once_and_survive_restart(db: Path, sealer: Sealer) -> None:
    with Spool(db, sealer, max_bytes=2 * (200 + SEAL_OVERHEAD)) as spool:
        spool.put_many([(f"r{i}", payload(i)) for i in range(4)])
        assert spool.stats().pending_eviction_reports == 2
    with Spool(db, sealer, max_bytes=2 * (200 + SEAL_OVERHEAD)) as spool:
        assert spool.stats().evicted_total == 2
        reports = spool.drain_eviction_reports()
        assert [r.read_id for r in reports] == ["r0", "r1"]
        assert all(r.created_utc.tzinfo is not None and r.reason == "bytes" for r in reports)
        assert spool.drain_eviction_reports() == []
        spool.put("r4", payload(4))
        assert [r.read_id for r in spool.drain_eviction_reports()] == ["r2"]
    with Spool(db, sealer) as spool:
        stats = spool.stats()
        assert (stats.evicted_total, stats.pending_eviction_reports) == (3, 0)
        assert spool.drain_eviction_reports() == []


# -- confidentiality --------------------------------------------------------------------------------


def test_plaintext_never_on_disk(db: Path, sealer: Sealer) -> None:
    with Spool(db, sealer, max_bytes=20 * 5000) as spool:
        spool.put("one", payload(0, size=5000))
        spool.put_many([(f"r{i}", payload(i, size=5000)) for i in range(30)])  # evicts some too
        spool.ack(["r3", "r4"])
        sealed_prefix = spool.pending(1)[0].sealed[:32]
        wal = db.with_name(db.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0
        on_disk = {p.name: p.read_bytes() for p in (db, wal)}
    for name, data in on_disk.items():
        assert MARKER not in data, f"plaintext found in {name}"
        assert b"7XYZ123" not in data, f"plaintext found in {name}"
    # The search looked at the right bytes: the ciphertext itself is there.
    assert any(sealed_prefix in data for data in on_disk.values())


# -- write errors -----------------------------------------------------------------------------------


def test_full_database_raises_spool_write_error_and_recovers(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    spool.put_many([(f"r{i}", payload(i)) for i in range(3)])
    before = spool.stats()
    # A real SQLITE_FULL ("database or disk is full"), as on a full SD card: cap the file at its current
    # size. max_page_count is per connection, hence the reach into the private connection.
    conn = spool._conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for attempt in (1, 2):
        with pytest.raises(SpoolWriteError, match="full") as info:
            spool.put_many([(f"big{attempt}", payload(9, size=50_000)), ("r-small", payload(8))])
        assert MARKER.decode() not in str(info.value)
        assert spool.stats().write_errors == attempt
    after = spool.stats()
    assert (after.depth, after.bytes) == (before.depth, before.bytes)
    assert ids(spool) == ["r0", "r1", "r2"]
    assert spool.ack(["r0"]) == 1  # deleting still works on a full database
    assert MARKER.decode() not in caplog.text

    conn.execute("PRAGMA max_page_count = 1073741823")
    spool.put("big3", payload(9, size=50_000))
    assert ids(spool) == ["r1", "r2", "big3"]
    assert spool.stats().write_errors == 2


# -- crash safety -----------------------------------------------------------------------------------


def run_writer_and_kill(path: Path, public_key: bytes, first: int, stderr_path: Path) -> list[str]:
    """Start the writer, let it put for a random fraction of a second, SIGKILL it; return the ids it printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), encode_key(public_key), str(first), "20000"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        assert proc.stdout is not None
        first_line = proc.stdout.readline()  # blocks until the child is up and has committed one read
        if not first_line:
            proc.wait()
            pytest.fail(f"writer died: {stderr_path.read_text()}")
        # A random moment, so over the rounds the kill lands in different phases (commit, checkpoint).
        time.sleep(random.uniform(0.3, 0.9))
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.stdout.close()
        assert proc.wait() == -signal.SIGKILL
    text = first_line.decode() + rest.decode()
    # Only complete lines count: an id is a promise only once its newline is out.
    return text.split("\n")[:-1]


def test_sigkill_loses_nothing_and_duplicates_nothing(tmp_path: Path, keypair: tuple[bytes, bytes]) -> None:
    path = tmp_path / "crash.db"
    next_index = 0
    for round_no in range(3):
        printed = run_writer_and_kill(path, keypair[0], next_index, tmp_path / f"stderr{round_no}.txt")
        assert printed == [f"r{i:06d}" for i in range(next_index, next_index + len(printed))]
        assert len(printed) >= 2

        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            present = [row[0] for row in conn.execute("SELECT read_id FROM reads ORDER BY seq")]
            (sizes,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM reads").fetchone()
        finally:
            conn.close()
        assert len(present) == len(set(present)), "duplicate ids"
        assert present == [f"r{i:06d}" for i in range(len(present))], "not a contiguous prefix"
        last_printed = next_index + len(printed) - 1
        # Everything printed is there; at most one more was committed but killed before it was printed.
        assert len(present) - 1 in (last_printed, last_printed + 1)

        with Spool(path, Sealer(keypair[0])) as spool:
            stats = spool.stats()
        assert stats.depth == len(present)
        assert stats.bytes == sizes, "byte counter out of step with the rows"
        next_index = len(present)
