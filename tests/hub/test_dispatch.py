"""Dispatch: the PUB feed, webhooks with retries, the console line, and hit dispositions."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import zmq
from sqlalchemy import select, text

from hub.dispatch import (
    DispatchConsole,
    DispositionConflictError,
    HitAlert,
    HitPublisher,
    InvalidDispositionError,
    MalformedAlertError,
    UnknownHitError,
    WebhookPolicy,
    crop_url_for,
    mark_delivered,
    open_hits,
    open_hits_query,
    set_disposition,
    subscription,
)
from hub.models import Hit, Hotlist, HotlistEntry
from hub.storage import ImageStore, store_reads
from tests.hub.conftest import NOW, Database, make_record

FAST = WebhookPolicy(max_attempts=3, backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)


def make_alert(**changes: Any) -> HitAlert:
    fields: dict[str, Any] = {
        "hit_id": 42,
        "read_id": "0190f1d2-7c1e-7abc-8def-0123456789ab",
        "plate_read": "7ABC123",
        "entry_plate": "7ABC123",
        "list_name": "stolen-vehicles",
        "category": "stolen vehicle",
        "priority": 0,
        "match_type": "exact",
        "node_name": "car-12",
        "camera_id": "front",
        "seen_utc": NOW,
        "latitude": 32.7157,
        "longitude": -117.1611,
        "reason": "stolen vehicle",
    }
    fields.update(changes)
    return HitAlert.from_fields(base_url="http://hub.example:8080", **fields)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def subscriber(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, topic: bytes) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    return sock


PROBE = make_alert(hit_id=0, list_name="probe")


def wait_subscribed(publisher: HitPublisher, *subs: zmq.Socket[bytes]) -> None:
    """Publish probes until every subscriber gets one (PUB drops messages until SUB has joined)."""
    pending = list(subs)
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        publisher.publish(PROBE)
        pending = [sub for sub in pending if not sub.poll(20)]
    assert not pending, "subscribers never joined"


def receive(sub: zmq.Socket[bytes], timeout_ms: int = 2000) -> list[bytes] | None:
    """The next message that is not a probe, or None."""
    while sub.poll(timeout_ms):
        frames = sub.recv_multipart()
        if not frames[0].endswith(b".probe"):
            return frames
    return None


# --- the alert ------------------------------------------------------------------------------------


def test_alert_topic_json_round_trip_and_crop_url() -> None:
    alert = make_alert()
    assert alert.topic() == b"hit.p0.stolen-vehicles"
    assert alert.crop_url == f"http://hub.example:8080/api/v1/hits/{alert.hit_id}/crop"
    assert crop_url_for("https://hub/", 17) == "https://hub/api/v1/hits/17/crop"
    data = json.loads(alert.to_json())
    assert data["plate_read"] == "7ABC123" and data["seen_utc"] == "2026-11-28T18:00:00Z"
    assert HitAlert.from_json(alert.to_json()) == alert
    assert subscription() == b"hit." and subscription(1) == b"hit.p1." and subscription(0, "x") == b"hit.p0.x"
    with pytest.raises(ValueError):
        make_alert(seen_utc=datetime(2026, 11, 28, 18, 0))  # naive
    with pytest.raises(MalformedAlertError) as info:
        HitAlert.from_json(alert.to_json().replace(b'"priority":0', b'"priority":"urgent"'))
    assert "7ABC123" not in str(info.value)  # the error (which gets logged) never repeats the input


# --- PUB feed -------------------------------------------------------------------------------------


def test_subscriber_receives_topic_and_full_json(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    with HitPublisher("tcp://127.0.0.1:*", [], context=context) as publisher:
        sub = subscriber(context, publisher.endpoint, b"hit.")
        wait_subscribed(publisher, sub)
        alert = make_alert()
        publisher.publish(alert)
        frames = receive(sub)
        assert frames is not None
        topic, body = frames
        assert topic == b"hit.p0.stolen-vehicles"
        assert json.loads(body)["plate_read"] == "7ABC123"  # the feed carries the full plate
        assert HitAlert.from_json(body) == alert
        assert publisher.counters()["published"] >= 2
        sub.close(linger=0)


def test_topic_filtered_subscriber_gets_only_its_priority(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    with HitPublisher("tcp://127.0.0.1:*", [], context=context) as publisher:
        everything = subscriber(context, publisher.endpoint, subscription())
        urgent = subscriber(context, publisher.endpoint, subscription(0))
        wait_subscribed(publisher, everything, urgent)
        publisher.publish(make_alert(hit_id=1, priority=3, list_name="warrants"))
        publisher.publish(make_alert(hit_id=2, priority=0))
        # Order is kept per connection: if the p0 alert comes first, the p3 one was filtered out.
        first = receive(urgent)
        assert first is not None and first[0] == b"hit.p0.stolen-vehicles"
        assert HitAlert.from_json(first[1]).hit_id == 2
        assert receive(urgent, 200) is None
        topics = [frames[0] for frames in iter(lambda: receive(everything, 500), None)]
        assert topics == [b"hit.p3.warrants", b"hit.p0.stolen-vehicles"]
        everything.close(linger=0)
        urgent.close(linger=0)


# --- webhooks -------------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]]
    answers: dict[str, list[int]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, dict(self.headers.items()), body))
        queue = self.answers.get(self.path.split("?")[0], [])
        status = queue.pop(0) if queue else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "answers": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_webhook_receives_json_after_a_retry(
    hook_server: tuple[str, type[_Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    base, hook = hook_server
    hook.answers["/hits"] = [503]  # the first attempt fails, the second is delivered
    delivered: list[tuple[int, datetime]] = []
    caplog.set_level(logging.INFO, logger="hub.dispatch")
    with HitPublisher(
        "tcp://127.0.0.1:*",
        [base + "/hits?token=s3cret"],
        webhook_policy=FAST,
        on_delivered=lambda hit_id, at: delivered.append((hit_id, at)),
    ) as publisher:
        publisher.publish(make_alert())
        assert wait_until(lambda: publisher.counters()["webhook_delivered"] == 1)
        counts = publisher.counters()
    assert (counts["webhook_attempts"], counts["webhook_retries"], counts["webhook_failed"]) == (2, 1, 0)
    assert len(hook.received) == 2
    path, headers, body = hook.received[-1]
    assert path == "/hits?token=s3cret"
    assert headers["Content-Type"] == "application/json" and headers["Idempotency-Key"] == "hit-42"
    assert json.loads(body)["plate_read"] == "7ABC123" and json.loads(body)["list_name"] == "stolen-vehicles"
    assert [hit_id for hit_id, _ in delivered] == [42]
    attempts = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert len(attempts) == 2 and all("7AB***3" in message for message in attempts)
    assert not any("7ABC123" in r.getMessage() or "s3cret" in r.getMessage() for r in caplog.records)


def test_failing_webhook_is_retried_counted_and_never_raises(
    hook_server: tuple[str, type[_Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/hits"
    base, hook = hook_server
    hook.answers["/refuses"] = [400]
    caplog.set_level(logging.INFO, logger="hub.dispatch")
    publisher = HitPublisher("tcp://127.0.0.1:*", [closed, base + "/refuses"], webhook_policy=FAST)
    publisher.publish(make_alert())
    assert wait_until(lambda: publisher.counters()["webhook_failed"] == 2)
    counts = publisher.counters()
    assert counts["webhook_attempts"] == 3 + 1  # three to the closed port; a 400 is not retried
    assert counts["webhook_retries"] == 2 and counts["webhook_delivered"] == 0
    assert counts["published"] == 1 and counts["publish_errors"] == 0
    publisher.close()
    publisher.publish(make_alert())  # after close: counted, not raised
    assert publisher.counters()["publish_errors"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert not any("7ABC123" in message for message in messages)
    assert sum("7AB***3" in message and "attempt" in message for message in messages) == 4


def test_full_webhook_queue_drops_and_counts() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    slow = WebhookPolicy(max_attempts=5, backoff_s=30, queue_size=2, timeout_s=1)
    publisher = HitPublisher("tcp://127.0.0.1:*", [closed], webhook_policy=slow)
    for hit_id in range(6):
        publisher.publish(make_alert(hit_id=hit_id, priority=hit_id))
    assert wait_until(lambda: publisher.counters()["webhook_dropped"] >= 3)
    publisher.close(timeout=2)
    counts = publisher.counters()
    assert counts["webhook_queued"] == 6 and counts["published"] == 6
    assert counts["webhook_dropped"] + counts["webhook_abandoned"] == 6  # nothing lost without a count


def test_webhook_urls_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        HitPublisher("tcp://127.0.0.1:*", ["file:///etc/passwd"])


# --- console --------------------------------------------------------------------------------------


def test_console_formats_the_hit_line_and_rings_for_high_priority_only() -> None:
    console = DispatchConsole("tcp://127.0.0.1:1", io.StringIO(), bell_max_priority=1)
    alert = make_alert()
    line = console.handle([alert.topic(), alert.to_json()])
    assert line == (
        "HIT 7ABC123 list=stolen-vehicles priority=0 match=exact node=car-12 camera=front"
        " at=2026-11-28T18:00:00Z place=32.71570,-117.16110"
        f" crop=http://hub.example:8080/api/v1/hits/{alert.hit_id}/crop reason=stolen vehicle\a"
    )
    quiet = make_alert(priority=5, plate_read="7A8C123", match_type="lookalike", latitude=None, longitude=None)
    line = console.handle([quiet.topic(), quiet.to_json()])
    assert line.startswith("HIT 7A8C123 entry=7ABC123 list=stolen-vehicles priority=5 match=lookalike")
    assert "place=unknown" in line and "\a" not in line
    assert console.handle([alert.topic(), replace(alert, priority=1).to_json()]).endswith("\a")
    # Hot-list text is imported from outside: no terminal escapes or line breaks reach the screen.
    nasty = replace(alert, list_name="a b", reason="x\x1b[2J\ny\u202e")
    line = console.handle([nasty.topic(), nasty.to_json()])
    assert "list=a_b" in line and "\x1b" not in line and "\n" not in line and "\u202e" not in line
    with pytest.raises(MalformedAlertError):
        console.handle([b"hit.p0.x"])
    with pytest.raises(MalformedAlertError):
        console.handle([b"hit.p0.x", b"{not json"])


def test_console_run_prints_lines_from_the_feed(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    out = io.StringIO()
    stop = threading.Event()
    with HitPublisher("tcp://127.0.0.1:*", [], context=context) as publisher:
        console = DispatchConsole(publisher.endpoint, out, context=context, poll_ms=20)
        thread = threading.Thread(target=console.run, args=(stop,), daemon=True)
        thread.start()
        assert console.connected.wait(5)
        publisher.publish(make_alert(list_name="x"))  # may be lost before the subscription lands

        def shown() -> bool:
            publisher.publish(make_alert())
            return console.shown > 0

        assert wait_until(shown)
        stop.set()
        thread.join(5)
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("HIT 7ABC123 ") and line.endswith("\a") for line in lines)
    assert not thread.is_alive()


# --- dispositions ---------------------------------------------------------------------------------


def add_hit(database: Database, node_id: int, created_utc: datetime = NOW) -> int:
    record = make_record()
    store_reads(database.sessions, [record], node_id, ImageStore("db"), received_utc=NOW)
    with database.sessions.begin() as session:
        hotlist = session.scalar(select(Hotlist).where(Hotlist.name == "stolen-vehicles"))
        if hotlist is None:
            hotlist = Hotlist(name="stolen-vehicles", created_utc=NOW)
            session.add(hotlist)
            session.flush()
        entry = HotlistEntry(
            hotlist_id=hotlist.id,
            plate=record.plate,
            category="stolen vehicle",
            priority=0,
            added_by="admin",
            added_utc=NOW,
            version_added=1,
        )
        session.add(entry)
        session.flush()
        hit = Hit(
            read_id=record.read_id,
            entry_id=entry.id,
            hotlist_id=hotlist.id,
            entry_version=entry.version_added,
            match_type="exact",
            matched_text=record.plate,
            score=1.0,
            created_utc=created_utc,
        )
        session.add(hit)
        session.flush()
        return hit.id


def test_open_hits_are_found_through_their_index(database: Database) -> None:
    """Every open hit board polls this: the settled hits (a year of them) must not be scanned."""
    with database.sessions() as session:
        sql = str(open_hits_query(50).compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
        if database.backend == "sqlite":
            plan = " ".join(str(row) for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "ix_hits_disposition" in plan and "SCAN hits" not in plan, plan
        else:
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(row) for row in session.execute(text(f"EXPLAIN {sql}")))
            assert "ix_hits_disposition" in plan, plan


def test_disposition_rules(database: Database, node_id: int) -> None:
    first = add_hit(database, node_id, NOW - timedelta(minutes=2))
    second = add_hit(database, node_id, NOW - timedelta(minutes=1))
    later = NOW + timedelta(minutes=5)
    with database.sessions.begin() as session:
        assert [hit.id for hit in open_hits(session)] == [second, first]  # newest first
        hit = set_disposition(session, first, "confirmed", "disp-07", "unit 12 stopped the car", later)
        assert hit.disposition == "confirmed"
    with database.sessions() as session:
        stored = session.get_one(Hit, first)
        assert (stored.disposition, stored.disposition_by, stored.disposition_utc) == ("confirmed", "disp-07", later)
        assert stored.disposition_notes == "unit 12 stopped the car"
        assert [hit.id for hit in open_hits(session)] == [second]
    with database.sessions.begin() as session:
        with pytest.raises(DispositionConflictError):
            set_disposition(session, first, "misread", "disp-09", None, later)
        with pytest.raises(UnknownHitError):
            set_disposition(session, 999_999, "misread", "disp-09", None, later)
        with pytest.raises(InvalidDispositionError):
            set_disposition(session, second, "open", "disp-09", None, later)  # type: ignore[arg-type]
        with pytest.raises(InvalidDispositionError):
            set_disposition(session, second, "misread", " ", None, later)
        hit = set_disposition(session, first, "misread", "sgt-3", "plate is 7ABC128", later, override=True)
    assert hit.disposition == "misread" and hit.disposition_by == "sgt-3"
    assert hit.disposition_notes is not None
    assert hit.disposition_notes.startswith("[previously confirmed by disp-07 at 2026-11-28T18:05:00Z")
    assert "unit 12 stopped the car" in hit.disposition_notes and hit.disposition_notes.endswith("plate is 7ABC128")


def test_mark_delivered_keeps_the_first_time(database: Database, node_id: int) -> None:
    hit_id = add_hit(database, node_id)
    with database.sessions.begin() as session:
        assert mark_delivered(session, [hit_id, 999_999], NOW) == 1
        assert mark_delivered(session, [hit_id], NOW + timedelta(seconds=5)) == 0
        assert mark_delivered(session, [], NOW) == 0
    with database.sessions() as session:
        assert session.get_one(Hit, hit_id).delivered_utc == NOW.astimezone(UTC)
