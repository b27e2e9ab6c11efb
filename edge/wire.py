"""The edge <-> hub wire protocol, version 1: the one schema both sides import.

Transport: ZeroMQ multipart messages over a CurveZMQ-encrypted DEALER (edge) -> ROUTER (hub)
socket. Frame 0 is a msgpack map (the header, validated by the pydantic models below); any
further frames are opaque binary blobs the header refers to by index. Nothing is ever pickled.

A plate read travels as a *sealed* blob: the msgpack-encoded :class:`ReadRecord` (with its JPEG
crop as binary) encrypted on the edge to the hub's spool key before it touches the disk, so the
spool and the wire carry the same bytes and only the hub can open them.

Exchanges (edge -> hub, hub -> edge):
- ``reads`` -> ``ack``: the hub acks each read id only after a durable commit; unusable reads come
  back as ``rejected`` so the edge stops resending them.
- ``heartbeat`` (node health), ``evictions`` (reads the spool dropped) -> ``ack`` of the message id.
- ``hotlist_request`` -> ``hotlist`` (a snapshot, entries in blob 0) or ``hotlist_current``.
- any malformed request -> ``error`` with a reason code, never an echo of the input.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

import msgpack
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_HEADER_BYTES = 256 * 1024
MAX_BLOBS = 512
MAX_BATCH = 256
"""Reads per ``reads`` message; a backlog is sent in batches of up to this many."""
MAX_READ_BYTES = 4 * 1024 * 1024
"""A sealed read (crop and optional context JPEG included) may not exceed this."""

ReadId = Annotated[str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]
NodeId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PlateText = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$")]


class WireError(ValueError):
    """A message that cannot be accepted; ``code`` is what the receiver counts it under."""

    def __init__(self, code: Literal["oversized", "malformed", "version", "schema"], message: str) -> None:
        super().__init__(message)
        self.code = code


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, then random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the read record (plaintext inside the sealed blob) ---------------------------------------


class CandidateModel(_Model):
    text: PlateText
    confidence: Probability


class GpsModel(_Model):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    altitude_m: float | None = None
    speed_mps: float | None = Field(default=None, ge=0)
    heading_deg: float | None = Field(default=None, ge=0, le=360)
    mode: int = Field(ge=0, le=3, description="0 unknown, 1 no fix, 2 2D, 3 3D")
    eph_m: float | None = Field(default=None, ge=0)
    epv_m: float | None = Field(default=None, ge=0)
    gps_time: AwareDatetime | None = None
    source: Literal["gpsd", "fixed"] = "gpsd"


class ReadRecord(_Model):
    """One vehicle pass as read by an edge node."""

    read_id: ReadId
    node_id: NodeId
    camera_id: NodeId
    plate: PlateText
    confidence: Probability
    candidates: list[CandidateModel] = Field(default_factory=list, max_length=32)
    region: str = Field(default="unknown", max_length=32)
    box: tuple[float, float, float, float]
    char_confidences: list[Probability] = Field(default_factory=list, max_length=16)
    first_seen_utc: AwareDatetime
    best_utc: AwareDatetime
    last_seen_utc: AwareDatetime
    time_source: Literal["gps", "ntp", "system"]
    clock_suspect: bool = False
    direction: Literal["approaching", "receding", "unknown"] = "unknown"
    observations: int = Field(default=1, ge=1)
    gps: GpsModel | None = None
    crop_jpeg: bytes = Field(max_length=MAX_READ_BYTES)
    context_jpeg: bytes | None = Field(default=None, max_length=MAX_READ_BYTES)
    software_version: str = Field(default="", max_length=64)
    model_versions: dict[str, str] = Field(default_factory=dict, max_length=8)

    def to_bytes(self) -> bytes:
        """msgpack with the JPEGs as binary (not base64) and times as ISO-8601 text."""
        data = self.model_dump(mode="json", exclude={"crop_jpeg", "context_jpeg"})
        data["crop_jpeg"] = self.crop_jpeg
        data["context_jpeg"] = self.context_jpeg
        packed: bytes = msgpack.packb(data, use_bin_type=True)
        return packed

    @classmethod
    def from_bytes(cls, payload: bytes) -> ReadRecord:
        data = _unpack(payload, MAX_READ_BYTES)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise WireError("schema", _summarise(exc)) from None


# --- messages (frame 0) -----------------------------------------------------------------------


class ReadRef(_Model):
    read_id: ReadId
    blob: int = Field(ge=0, lt=MAX_BLOBS, description="index of the sealed read among the blob frames")


class ReadsMessage(_Model):
    v: Literal[1] = 1
    type: Literal["reads"] = "reads"
    node_id: NodeId
    items: list[ReadRef] = Field(min_length=1, max_length=MAX_BATCH)


class Rejected(_Model):
    read_id: ReadId
    reason: str = Field(max_length=200)


class AckMessage(_Model):
    v: Literal[1] = 1
    type: Literal["ack"] = "ack"
    accepted: list[ReadId] = Field(default_factory=list, max_length=MAX_BATCH)
    rejected: list[Rejected] = Field(default_factory=list, max_length=MAX_BATCH)
    message_id: str | None = Field(default=None, max_length=64, description="acks a heartbeat or evictions message")


class CameraHealth(_Model):
    fps: float = Field(ge=0)
    frames_captured: int = Field(ge=0)
    dropped: int = Field(ge=0)
    reconnects: int = Field(ge=0)
    read_errors: int = Field(default=0, ge=0)
    connected: bool


class NodeHealth(_Model):
    cameras: dict[str, CameraHealth] = Field(default_factory=dict, max_length=32)
    spool_depth: int = Field(ge=0)
    spool_bytes: int = Field(ge=0)
    evictions_total: int = Field(ge=0)
    gps_status: str = Field(max_length=32)
    clock_source: str = Field(default="system", max_length=16)
    cpu_temp_c: float | None = None
    uptime_s: float = Field(ge=0)
    software_version: str = Field(max_length=64)
    model_versions: dict[str, str] = Field(default_factory=dict, max_length=8)


class HeartbeatMessage(_Model):
    v: Literal[1] = 1
    type: Literal["heartbeat"] = "heartbeat"
    message_id: str = Field(max_length=64)
    node_id: NodeId
    sent_utc: AwareDatetime
    health: NodeHealth


class EvictedRead(_Model):
    read_id: ReadId
    created_utc: AwareDatetime
    reason: Literal["bytes", "age"]


class EvictionsMessage(_Model):
    v: Literal[1] = 1
    type: Literal["evictions"] = "evictions"
    message_id: str = Field(max_length=64)
    node_id: NodeId
    evicted: list[EvictedRead] = Field(min_length=1, max_length=10_000)


class HotlistRequest(_Model):
    v: Literal[1] = 1
    type: Literal["hotlist_request"] = "hotlist_request"
    node_id: NodeId
    have_version: int | None = Field(default=None, ge=0)


class HotlistEntryModel(_Model):
    plate: PlateText
    state: str | None = Field(default=None, max_length=8)
    list_name: str = Field(max_length=64)
    category: str = Field(max_length=64)
    priority: int = Field(ge=0, le=9)
    lookalike_tolerance: bool = False


@dataclass(frozen=True, slots=True)
class ListedPlate:
    """A validated hot-list entry as nodes and the hub keep it in memory, a million of them at a time.

    :class:`HotlistEntryModel` checks an entry at the boundary; this is what is kept: a pydantic model
    per entry cost about 1.5 kB, too much for a national list on a Raspberry Pi. The strings that
    repeat across entries (state, list name, category) are interned, so a million entries share a few.
    """

    plate: str
    state: str | None
    list_name: str
    category: str
    priority: int
    lookalike_tolerance: bool = False

    @classmethod
    def from_model(cls, model: HotlistEntryModel, **extra: Any) -> Self:
        """The entry of a validated model; ``extra``: a subclass's own fields (the hub's ``ActiveEntry``)."""
        state = sys.intern(model.state) if model.state is not None else None
        return cls(
            model.plate, state, sys.intern(model.list_name), sys.intern(model.category), model.priority,
            model.lookalike_tolerance, **extra,
        )  # fmt: skip


class HotlistMessage(_Model):
    """A snapshot; its entries travel msgpack-packed in blob 0 (see ``pack_hotlist_entries``)."""

    v: Literal[1] = 1
    type: Literal["hotlist"] = "hotlist"
    version: int = Field(ge=0)
    created_utc: AwareDatetime
    entry_count: int = Field(ge=0)


class HotlistCurrentMessage(_Model):
    v: Literal[1] = 1
    type: Literal["hotlist_current"] = "hotlist_current"
    version: int = Field(ge=0)


class ErrorMessage(_Model):
    v: Literal[1] = 1
    type: Literal["error"] = "error"
    code: str = Field(max_length=32)
    detail: str = Field(default="", max_length=200)


Message = Annotated[
    ReadsMessage
    | AckMessage
    | HeartbeatMessage
    | EvictionsMessage
    | HotlistRequest
    | HotlistMessage
    | HotlistCurrentMessage
    | ErrorMessage,
    Field(discriminator="type"),
]
_MESSAGE = TypeAdapter[Message](Message)


def encode(message: BaseModel, blobs: Sequence[bytes] = ()) -> list[bytes]:
    """Frames for a message: its header, then its blobs."""
    header: bytes = msgpack.packb(message.model_dump(mode="json"), use_bin_type=True)
    return [header, *blobs]


def decode(frames: Sequence[bytes]) -> tuple[Message, list[bytes]]:
    """Validate a received multipart message; raise :class:`WireError` (never echoing content)."""
    if not frames:
        raise WireError("malformed", "empty message")
    if len(frames) - 1 > MAX_BLOBS:
        raise WireError("oversized", f"{len(frames) - 1} blob frames, above {MAX_BLOBS}")
    if sum(len(f) for f in frames) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"message above {MAX_MESSAGE_BYTES} bytes")
    header = _unpack(bytes(frames[0]), MAX_HEADER_BYTES)
    if not isinstance(header, dict):
        raise WireError("malformed", "header is not a map")
    if header.get("v") != PROTOCOL_VERSION:
        raise WireError("version", f"unsupported protocol version (this side speaks {PROTOCOL_VERSION})")
    try:
        message = _MESSAGE.validate_python(header)
    except ValidationError as exc:
        raise WireError("schema", _summarise(exc)) from None
    blobs = [bytes(f) for f in frames[1:]]
    if isinstance(message, ReadsMessage) and any(item.blob >= len(blobs) for item in message.items):
        raise WireError("schema", "a read refers to a missing blob frame")
    return message, blobs


def pack_hotlist_entries(entries: Sequence[ListedPlate]) -> bytes:
    """Hot-list entries as one msgpack map, compact for a million entries and more.

    ``{"strings": [...], "entries": [[plate, state, list, category, priority, look-alike], ...]}`` where
    state, list and category are indexes into ``strings`` (state None when unknown): those repeat across
    entries, and spelled out in every row a national list (about 45 bytes an entry) would not fit in one
    message (:data:`MAX_MESSAGE_BYTES`); so it takes about 14.
    """
    strings: dict[str, int] = {}

    def ref(text: str) -> int:
        return strings.setdefault(text, len(strings))

    rows = [
        [e.plate, None if e.state is None else ref(e.state), ref(e.list_name), ref(e.category), e.priority,
         e.lookalike_tolerance]
        for e in entries
    ]  # fmt: skip
    packed: bytes = msgpack.packb({"strings": list(strings), "entries": rows}, use_bin_type=True)
    return packed


def unpack_hotlist_entries(blob: bytes) -> list[ListedPlate]:
    """Entries packed by :func:`pack_hotlist_entries` (or, as snapshots cached by earlier versions, a plain
    array of ``[plate, state, list, category, priority, look-alike]`` rows), each validated as a
    :class:`HotlistEntryModel`."""
    packed = _unpack(blob, MAX_MESSAGE_BYTES)
    strings: list[Any] | None = None  # None: the plain array of earlier versions
    if isinstance(packed, dict):
        strings, rows = packed.get("strings"), packed.get("entries")
        if not isinstance(strings, list) or not isinstance(rows, list):
            raise WireError("malformed", "hot-list blob has no list of strings and of entries")
    elif isinstance(packed, list):
        rows = packed
    else:
        raise WireError("malformed", "hot-list blob is neither a map nor an array")
    keys = ("plate", "state", "list_name", "category", "priority", "lookalike_tolerance")
    validate, compact = HotlistEntryModel.model_validate, ListedPlate.from_model
    try:
        if strings is not None:
            rows = [_resolve(row, strings) for row in rows]
        return [compact(validate(dict(zip(keys, row, strict=True)))) for row in rows]
    except (ValidationError, TypeError, ValueError, IndexError) as exc:
        raise WireError("schema", f"bad hot-list entry: {type(exc).__name__}") from None


def _resolve(row: Any, strings: list[Any]) -> list[Any]:
    """A dictionary-encoded row with its state, list and category looked up (indexes must be ints)."""
    plate, state, list_name, category, priority, tolerant = row
    for index in (state, list_name, category):
        if index is not None and (type(index) is not int or index < 0):
            raise ValueError("string index")
    return [plate, None if state is None else strings[state], strings[list_name], strings[category], priority, tolerant]


def _unpack(payload: bytes, limit: int) -> Any:
    if len(payload) > limit:
        raise WireError("oversized", f"payload above {limit} bytes")
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=1_000_000,
            max_map_len=10_000,
            max_ext_len=0,
        )
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise WireError("malformed", f"not valid msgpack ({type(exc).__name__})") from None


def _summarise(exc: ValidationError) -> str:
    """Field locations and error types only: input values may be plates and must not be echoed."""
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['type']}" for err in exc.errors()[:5]]
    return "invalid message: " + "; ".join(parts)
