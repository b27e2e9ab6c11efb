"""Hot-list matching, the encrypted snapshot cache and local alerts, against real sockets and processes."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zmq

from edge.hotlist import (
    LOOKALIKE_SCORE,
    AlertConfig,
    HotlistCache,
    HotlistIndex,
    LocalAlert,
    LocalAlerter,
    generate_cache_key,
    load_or_create_cache_key,
)
from edge.recognition.formats import LOOKALIKES, lookalike_variants
from edge.wire import CandidateModel, GpsModel, HotlistEntryModel, HotlistMessage, ListedPlate, ReadRecord, uuid7

NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


def entry(
    plate: str,
    *,
    list_name: str = "stolen",
    category: str = "vehicle",
    priority: int = 5,
    state: str | None = None,
    tolerant: bool = False,
) -> ListedPlate:
    model = HotlistEntryModel(
        plate=plate,
        state=state,
        list_name=list_name,
        category=category,
        priority=priority,
        lookalike_tolerance=tolerant,
    )
    return ListedPlate.from_model(model)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# --- matching ---------------------------------------------------------------------------------


def test_exact_hit_on_the_normalised_top_text() -> None:
    listed = entry("7ABC123")
    index = HotlistIndex([listed, entry("8XYZ999")], version=3)
    hits = index.match("7abc-123 ")
    assert [(h.entry, h.match_type, h.score, h.plate_read) for h in hits] == [(listed, "exact", 1.0, "7ABC123")]
    assert index.match("7ABC124") == []
    assert index.match("") == []
    assert len(index) == 2 and index.version == 3


def test_lookalike_hit_only_for_tolerant_entries() -> None:
    assert "0" in LOOKALIKES["O"]
    tolerant = entry("7ABCO12", tolerant=True)
    strict = entry("7ABDO12")
    index = HotlistIndex([tolerant, strict])
    hits = index.match("7ABC012")  # the reader saw a zero where the list has the letter O
    assert [(h.entry, h.match_type, h.score) for h in hits] == [(tolerant, "lookalike", LOOKALIKE_SCORE)]
    assert index.match("7ABD012") == []  # same confusion, but that entry has no tolerance
    assert index.match("7ABD0I2") == []
    assert index.match("7ABC0I2") == []  # two swaps are not a look-alike
    assert [h.match_type for h in index.match("7ABDO12")] == ["exact"]


def test_candidate_hits_carry_their_type_and_confidence() -> None:
    listed = entry("7ABC123")
    tolerant = entry("5SAM8O1", tolerant=True)
    index = HotlistIndex([listed, tolerant])
    hits = index.match("7A8C123", [("7ABC123", 0.4), ("5SAM801", 0.5)])
    by_plate = {h.entry.plate: h for h in hits}
    assert by_plate["7ABC123"].match_type == "candidate"
    assert by_plate["7ABC123"].score == pytest.approx(0.4)
    assert by_plate["7ABC123"].plate_read == "7ABC123"
    assert by_plate["5SAM8O1"].match_type == "candidate-lookalike"
    assert by_plate["5SAM8O1"].score == pytest.approx(0.5 * LOOKALIKE_SCORE)
    assert by_plate["5SAM8O1"].plate_read == "5SAM801"


def test_state_check() -> None:
    california = entry("7ABC123", state="CA")
    anywhere = entry("7ABC123", list_name="warrants")
    index = HotlistIndex([california, anywhere])
    assert {h.entry for h in index.match("7ABC123", state="NV", check_state=True)} == {anywhere}
    assert {h.entry for h in index.match("7ABC123", state=" ca", check_state=True)} == {california, anywhere}
    assert {h.entry for h in index.match("7ABC123", state=None, check_state=True)} == {california, anywhere}
    assert {h.entry for h in index.match("7ABC123", state="NV")} == {california, anywhere}  # check off


def test_an_entry_is_reported_once_under_its_best_match() -> None:
    tolerant = entry("7ABCO12", tolerant=True)
    index = HotlistIndex([tolerant])
    hits = index.match("7ABC012", [("7ABCO12", 0.9), ("7ABCD12", 0.3)])
    assert [(h.match_type, h.score) for h in hits] == [("lookalike", LOOKALIKE_SCORE)]
    hits = index.match("ZZZ999", [("7ABCD12", 0.3), ("7ABCO12", 0.2), ("7ABCQ12", 0.6)])
    assert [(h.match_type, h.score, h.plate_read) for h in hits] == [("candidate", 0.2, "7ABCO12")]
    hits = index.match("ZZZ999", [("7ABCD12", 0.3), ("7ABCQ12", 0.6)])
    assert [(h.match_type, h.plate_read) for h in hits] == [("candidate-lookalike", "7ABCQ12")]


def test_hits_most_urgent_first_then_by_score() -> None:
    low = entry("7ABC123", list_name="parking", priority=7)
    amber = entry("7ABC123", list_name="amber", priority=0)
    felony = entry("7ABC123", list_name="felony", priority=1)
    stolen_candidate = entry("7ABC128", list_name="stolen", priority=1)
    index = HotlistIndex([low, amber, felony, stolen_candidate])
    hits = index.match("7ABC123", [("7ABC128", 0.3)])
    assert [h.entry.list_name for h in hits] == ["amber", "felony", "stolen", "parking"]


def test_match_read_and_alert_from_hit() -> None:
    listed = entry("7ABCO12", tolerant=True, priority=0, list_name="amber", category="child")
    index = HotlistIndex([listed])
    read = ReadRecord(
        read_id=uuid7(),
        node_id="car-17",
        camera_id="front",
        plate="XYZ1",
        confidence=0.9,
        candidates=[CandidateModel(text="7ABC012", confidence=0.35)],
        box=(0.0, 0.0, 10.0, 5.0),
        first_seen_utc=NOW,
        best_utc=NOW,
        last_seen_utc=NOW,
        time_source="gps",
        gps=GpsModel(latitude=37.5, longitude=-122.25, mode=3),
        crop_jpeg=b"\xff\xd8",
    )
    (hit,) = index.match_read(read)
    alert = LocalAlert.from_hit(read, hit)
    assert (alert.plate, alert.plate_read, alert.match_type) == ("7ABCO12", "7ABC012", "candidate-lookalike")
    assert (alert.list_name, alert.category, alert.priority, alert.seen_utc) == ("amber", "child", 0, NOW)
    assert (alert.latitude, alert.longitude, alert.camera_id, alert.read_id) == (37.5, -122.25, "front", read.read_id)


def test_index_of_200k_entries_matches_like_a_reference() -> None:
    rng = random.Random(20261128)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    plates = ["".join(rng.choices(letters, k=rng.choice((6, 7, 7, 8)))) for _ in range(200_000)]
    plates[1::1000] = plates[::1000][: len(plates[1::1000])]  # some plates on two lists
    # model_construct: the entries come validated off the wire; building 200k validated models is what's slow.
    entries = [
        ListedPlate(plate, None, f"list{i % 7}", "vehicle", i % 10, rng.random() < 0.1)
        for i, plate in enumerate(plates)
    ]
    index = HotlistIndex(entries, version=1)
    assert len(index) == 200_000
    by_plate: dict[str, list[ListedPlate]] = {}
    for e in entries:
        by_plate.setdefault(e.plate, []).append(e)

    tolerant = [e for e in entries if e.lookalike_tolerance]
    queries = [e.plate for e in rng.sample(entries, 500)]
    for e in rng.sample(tolerant, 500):
        variants = sorted(lookalike_variants(e.plate, 1) - {e.plate})
        if variants:
            queries.append(rng.choice(variants))
    queries += ["".join(rng.choices(letters, k=7)) for _ in range(500)]
    lookalike_hits = 0
    for query in queries:
        expected = {
            (id(e), "exact" if variant == query else "lookalike")
            for variant in lookalike_variants(query, 1)
            for e in by_plate.get(variant, ())
            if variant == query or e.lookalike_tolerance
        }
        got = {(id(h.entry), h.match_type) for h in index.match(query)}
        assert got == expected, query
        lookalike_hits += sum(1 for _, kind in got if kind == "lookalike")
    assert lookalike_hits >= 400


# --- encrypted cache --------------------------------------------------------------------------

ENTRIES = [
    entry("7ABC123", list_name="stolen-vehicles", category="stolen"),
    entry("5SAM8O1", list_name="amber-alert", category="child-abduction", priority=0, tolerant=True, state="CA"),
]


def snapshot(version: int, entries: list[ListedPlate] = ENTRIES) -> HotlistMessage:
    return HotlistMessage(version=version, created_utc=NOW, entry_count=len(entries))


def test_cache_round_trip(tmp_path: Path) -> None:
    key = generate_cache_key()
    cache = HotlistCache(tmp_path / "hotlist.bin", key)
    assert cache.load() is None and cache.version() is None
    cache.store(snapshot(41), ENTRIES)
    assert cache.version() == 41
    fresh = HotlistCache(tmp_path / "hotlist.bin", key)
    assert fresh.version() == 41
    index = fresh.load()
    assert index is not None and index.version == 41 and len(index) == 2
    assert [h.entry for h in index.match("5SAM801")] == [ENTRIES[1]]
    cache.store(snapshot(42, ENTRIES[:1]), ENTRIES[:1])
    assert fresh.version() == 42
    reloaded = fresh.load()
    assert reloaded is not None and len(reloaded) == 1


def test_cache_never_holds_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "hotlist.bin"
    HotlistCache(path, generate_cache_key()).store(snapshot(7), ENTRIES)
    data = path.read_bytes()
    for e in ENTRIES:
        for text in (e.plate, e.list_name, e.category):
            assert text.encode() not in data
            assert text.encode("utf-16-le") not in data
    assert os.stat(path).st_mode & 0o077 == 0


def test_tampered_or_foreign_cache_is_refused_without_leaking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "hotlist.bin"
    key = generate_cache_key()
    HotlistCache(path, key).store(snapshot(7), ENTRIES)
    assert HotlistCache(path, generate_cache_key()).load() is None  # another node's key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    caplog.set_level(logging.ERROR, logger="edge.hotlist")
    cache = HotlistCache(path, key)
    assert cache.load() is None
    assert cache.version() is None
    path.write_bytes(b"garbage")
    assert cache.load() is None
    path.write_bytes(b"")
    assert cache.load() is None
    assert caplog.records and all(r.levelno == logging.ERROR for r in caplog.records)
    assert "7ABC" not in caplog.text and "5SAM" not in caplog.text


def test_cache_store_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cache" / "hotlist.bin"
    cache = HotlistCache(path, generate_cache_key())
    cache.store(snapshot(1), ENTRIES)
    cache.store(snapshot(2), ENTRIES)
    assert sorted(p.name for p in path.parent.iterdir()) == ["hotlist.bin"]

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk says no")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        cache.store(snapshot(3), ENTRIES)
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["hotlist.bin"]
    assert cache.version() == 2


def test_cache_refuses_an_inconsistent_snapshot(tmp_path: Path) -> None:
    cache = HotlistCache(tmp_path / "hotlist.bin", generate_cache_key())
    with pytest.raises(ValueError):
        cache.store(snapshot(1, ENTRIES[:1]), ENTRIES)
    with pytest.raises(ValueError):
        HotlistCache(tmp_path / "x.bin", b"short")


def test_cache_key_is_created_once_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "hotlist.key"
    key = load_or_create_cache_key(path)
    assert len(key) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_cache_key(path) == key


# --- local alerts -----------------------------------------------------------------------------


def make_alert(priority: int = 0, plate: str = "7ABC123") -> LocalAlert:
    return LocalAlert(
        read_id=uuid7(),
        camera_id="front",
        plate=plate,
        match_type="exact",
        list_name="stolen",
        category="vehicle",
        priority=priority,
        seen_utc=NOW,
        latitude=37.5,
        longitude=-122.25,
        plate_read=plate,
    )


def test_pub_delivers_topic_and_full_plate() -> None:
    context = zmq.Context()
    alerter = LocalAlerter(AlertConfig(bell=False, pub_endpoint="tcp://127.0.0.1:*"), context=context)
    sub = context.socket(zmq.SUB)
    try:
        endpoint = alerter.pub_endpoint
        assert endpoint is not None and endpoint.startswith("tcp://127.0.0.1:")
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"alert.")
        sub.connect(endpoint)
        frames: list[bytes] = []
        deadline = time.monotonic() + 10
        while not frames and time.monotonic() < deadline:  # a SUB misses what is sent before it has joined
            alerter.alert(make_alert(priority=2))
            if sub.poll(100, zmq.POLLIN):
                frames = sub.recv_multipart()
        assert frames, "no alert arrived"
        topic, payload = frames
        assert topic == b"alert.2.stolen"
        data = json.loads(payload)
        assert data["plate"] == "7ABC123" and data["priority"] == 2 and data["list_name"] == "stolen"
        assert datetime.fromisoformat(data["seen_utc"]) == NOW
        assert alerter.counters()["published"] >= 1
    finally:
        sub.close(linger=0)
        alerter.close()
        context.term()


def test_log_line_masks_the_plate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.hotlist")
    alerter = LocalAlerter(AlertConfig(bell=False))
    alerter.alert(make_alert(priority=3, plate="7ABC123"))
    alerter.close()
    assert [r.getMessage() for r in caplog.records] == ["HIT list=stolen priority=3 plate=7AB***3 camera=front"]
    assert caplog.records[0].levelno == logging.WARNING
    assert "7ABC123" not in caplog.text


def test_bell_rings_for_urgent_alerts_only() -> None:
    stream = io.StringIO()
    alerter = LocalAlerter(AlertConfig(bell=True, bell_max_priority=1), bell_stream=stream)
    alerter.alert(make_alert(priority=0))
    assert stream.getvalue() == "\a"
    alerter.alert(make_alert(priority=1))
    alerter.alert(make_alert(priority=5))
    assert stream.getvalue() == "\a\a"
    assert alerter.counters()["bells"] == 2
    quiet = LocalAlerter(AlertConfig(bell=False), bell_stream=stream)
    quiet.alert(make_alert(priority=0))
    assert stream.getvalue() == "\a\a"


def test_alert_never_raises() -> None:
    stream = io.StringIO()
    stream.close()
    alerter = LocalAlerter(AlertConfig(bell=True), bell_stream=stream)
    alerter.alert(make_alert(priority=0))  # writing to a closed stream fails inside
    assert alerter.counters()["errors"] == 1
    assert alerter.counters()["alerts"] == 1


def test_command_receives_the_alert_json(tmp_path: Path) -> None:
    out = tmp_path / "alert.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    alerter = LocalAlerter(AlertConfig(bell=False, command=[sys.executable, "-c", script]))
    alerter.alert(make_alert())
    assert wait_for(lambda: alerter.counters()["commands_ok"] == 1)
    alerter.close()
    assert json.loads(out.read_text())["plate"] == "7ABC123"


def test_failing_command_is_counted() -> None:
    alerter = LocalAlerter(AlertConfig(bell=False, command=[sys.executable, "-c", "raise SystemExit(3)"]))
    alerter.alert(make_alert())
    assert wait_for(lambda: alerter.counters()["commands_failed"] == 1)
    alerter.close()


class _Recorder(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    handler = type("Handler", (_Recorder,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_receives_the_alert_json(webhook_server: tuple[str, list[bytes]]) -> None:
    url, bodies = webhook_server
    alerter = LocalAlerter(AlertConfig(bell=False, webhook_url=url))
    alerter.alert(make_alert(priority=1))
    assert wait_for(lambda: alerter.counters()["webhooks_ok"] == 1)
    alerter.close()
    (body,) = bodies
    assert json.loads(body)["plate"] == "7ABC123"


def test_failing_webhook_is_counted_and_does_not_raise() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = AlertConfig(bell=False, webhook_url=f"http://127.0.0.1:{port}/", webhook_retries=2, webhook_backoff_s=0.01)
    alerter = LocalAlerter(config)
    alerter.alert(make_alert())
    assert wait_for(lambda: alerter.counters()["webhooks_failed"] == 1)
    counts = alerter.counters()
    assert counts["webhook_retries"] == 2 and counts["webhooks_ok"] == 0 and counts["errors"] == 0
    alerter.close()


def test_bad_alert_config_is_refused_at_start() -> None:
    with pytest.raises(ValueError):
        LocalAlerter(AlertConfig(webhook_url="file:///etc/passwd"))
    with pytest.raises(ValueError):
        LocalAlerter(AlertConfig(command=[]))
