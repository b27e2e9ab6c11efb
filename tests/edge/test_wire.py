import re
import uuid
from datetime import UTC, datetime

import msgpack
import pytest

from edge import wire
from edge.wire import (
    AckMessage,
    HotlistEntryModel,
    ReadRecord,
    ReadRef,
    ReadsMessage,
    WireError,
    decode,
    encode,
    uuid7,
)
from tests.conftest import make_record

NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


def test_uuid7_is_a_version_7_uuid_ordered_by_time() -> None:
    ids = [uuid7() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # millisecond prefix never goes back
    assert len(set(ids)) == 50


def test_read_record_round_trips_with_binary_images() -> None:
    record = make_record(crop_jpeg=b"\xff\xd8jpeg-bytes\xff\xd9", context_jpeg=b"\x00\x01" * 100)
    payload = record.to_bytes()
    assert b"\xff\xd8jpeg-bytes\xff\xd9" in payload  # binary, not base64
    assert ReadRecord.from_bytes(payload) == record


def test_read_record_rejects_naive_times_and_bad_plates() -> None:
    with pytest.raises(ValueError):
        make_record(first_seen_utc=datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        make_record(plate="7abc 123")


def test_read_record_errors_do_not_echo_the_plate() -> None:
    data = msgpack.unpackb(make_record().to_bytes(), raw=False)
    data["plate"] = "SECRET99!"
    with pytest.raises(WireError) as err:
        ReadRecord.from_bytes(msgpack.packb(data, use_bin_type=True))
    assert err.value.code == "schema" and "SECRET99" not in str(err.value)


def test_reads_message_round_trip_keeps_the_blobs() -> None:
    ids = [uuid7(), uuid7()]
    message = ReadsMessage(node_id="car-12", items=[ReadRef(read_id=i, blob=n) for n, i in enumerate(ids)])
    decoded, blobs = decode(encode(message, [b"sealed-1", b"sealed-2"]))
    assert decoded == message and blobs == [b"sealed-1", b"sealed-2"]


def test_ack_round_trip() -> None:
    ack = AckMessage(accepted=[uuid7()], rejected=[wire.Rejected(read_id=uuid7(), reason="cannot decrypt")])
    assert decode(encode(ack))[0] == ack


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([], "malformed"),
        ([b"\xc1garbage"], "malformed"),
        ([msgpack.packb([1, 2])], "malformed"),
        ([msgpack.packb({"v": 2, "type": "ack"})], "version"),
        ([msgpack.packb({"type": "ack"})], "version"),
        ([msgpack.packb({"v": 1, "type": "launch_missiles"})], "schema"),
        ([msgpack.packb({"v": 1, "type": "ack", "accepted": [], "extra": 1})], "schema"),
        (
            [msgpack.packb({"v": 1, "type": "reads", "node_id": "n", "items": [{"read_id": uuid7(), "blob": 0}]})],
            "schema",
        ),
        ([b"\x80"] + [b""] * (wire.MAX_BLOBS + 1), "oversized"),
        ([msgpack.packb({"v": 1}), b"x" * (wire.MAX_MESSAGE_BYTES + 1)], "oversized"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason_code(frames: list[bytes], code: str) -> None:
    with pytest.raises(WireError) as err:
        decode(frames)
    assert err.value.code == code


def test_hotlist_entries_pack_compactly_and_validate() -> None:
    entries = [
        HotlistEntryModel(plate=f"ABC{i:04d}", state="CA", list_name="stolen", category="stolen vehicle", priority=1)
        for i in range(1000)
    ]
    listed = [wire.ListedPlate.from_model(entry) for entry in entries]
    blob = wire.pack_hotlist_entries(listed)
    assert len(blob) < 50_000
    unpacked = wire.unpack_hotlist_entries(blob)
    assert unpacked == listed
    assert unpacked[0].list_name is unpacked[1].list_name  # repeated strings shared, not one copy an entry
    with pytest.raises(WireError):
        wire.unpack_hotlist_entries(msgpack.packb([["bad plate!", None, "l", "c", 1, False]]))


def test_a_national_hot_list_fits_in_one_message() -> None:
    # About 14 bytes an entry: two million entries stay under the message limit (spelled out in every
    # row, the state, list name and category made it about 45, and a million did not fit).
    lists = [
        ("ncic-stolen-vehicles", "stolen vehicle"),
        ("felony-warrants", "felony warrant"),
        ("amber", "amber alert"),
    ]
    entries = [
        wire.ListedPlate(f"{i:07d}", "CA" if i % 3 else None, *lists[i % 3], i % 10, i % 7 == 0) for i in range(200_000)
    ]
    blob = wire.pack_hotlist_entries(entries)
    assert len(blob) / len(entries) <= 16
    assert 2_000_000 * len(blob) / len(entries) < wire.MAX_MESSAGE_BYTES
    assert wire.unpack_hotlist_entries(blob) == entries


def test_snapshots_cached_in_the_earlier_row_format_still_unpack() -> None:
    rows = [["7ABC123", "CA", "stolen", "stolen vehicle", 1, False], ["8XYZ999", None, "amber", "amber alert", 0, True]]
    assert wire.unpack_hotlist_entries(msgpack.packb(rows)) == [
        wire.ListedPlate("7ABC123", "CA", "stolen", "stolen vehicle", 1, False),
        wire.ListedPlate("8XYZ999", None, "amber", "amber alert", 0, True),
    ]


@pytest.mark.parametrize(
    "packed",
    [
        {"strings": ["stolen", "vehicle"], "entries": [["7ABC123", None, 0, 5, 1, False]]},  # no such string
        {"strings": ["stolen", "vehicle"], "entries": [["7ABC123", None, -1, 1, 1, False]]},  # negative index
        {"strings": ["stolen", "vehicle"], "entries": [["7ABC123", None, "stolen", 1, 1, False]]},  # not an index
        {"strings": ["stolen", "vehicle"], "entries": [["7ABC123", None, 0, 1]]},  # short row
        {"strings": "stolen", "entries": []},
        {"entries": []},
        "stolen",
    ],
)
def test_damaged_hot_list_blobs_are_refused(packed: object) -> None:
    with pytest.raises(WireError):
        wire.unpack_hotlist_entries(msgpack.packb(packed))


def test_read_ids_must_be_uuid7() -> None:
    with pytest.raises(ValueError):
        ReadRef(read_id=str(uuid.uuid4()), blob=0)
    assert re.fullmatch(r"[0-9a-f-]{36}", uuid7())
