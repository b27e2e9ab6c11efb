"""Hot-list matching on the node: a dict index, an encrypted on-disk snapshot, and local alerts.

The hub pushes the agency's hot lists (stolen vehicles, AMBER alerts, warrants...) to every node, so a
read matches in the car even with no link, and the officer is alerted at once. The hub reuses
:class:`HotlistIndex` for its own matching at scale (a million entries), so matching is a handful of dict
lookups per read, never a scan:

- the *exact* index maps a plate to its entries;
- the *look-alike* index maps every one-swap look-alike spelling (``O``/``0``, ``B``/``8``... see
  ``formats.LOOKALIKES``) of a plate to its entries, only for entries flagged ``lookalike_tolerance``.

The snapshot is kept on disk encrypted with a node-local secret key (``nacl.secret.SecretBox``), so a
stolen SD card does not give away who the agency is looking for.

Log lines never carry a full plate (``mask_plate``); the in-car display (ZeroMQ PUB), the alert command
and the webhook do, because showing the plate is their purpose.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import msgpack
import nacl.exceptions
import nacl.secret
import nacl.utils
import zmq
from pydantic import ValidationError

from edge.recognition.formats import lookalike_variants, mask_plate, normalize_plate
from edge.sealing import KEY_BYTES, decode_key, encode_key
from edge.wire import (
    HotlistMessage,
    ListedPlate,
    ReadRecord,
    WireError,
    pack_hotlist_entries,
    unpack_hotlist_entries,
)

logger = logging.getLogger(__name__)

MatchType = Literal["exact", "lookalike", "candidate", "candidate-lookalike"]

LOOKALIKE_SCORE = 0.8
"""Score of a look-alike hit on the top text; a candidate hit scores its confidence, times this if look-alike."""

_MATCH_RANK: dict[str, int] = {"exact": 0, "lookalike": 1, "candidate": 2, "candidate-lookalike": 3}
"""Lower is better: dedupe keeps the best-ranked match of an entry."""

_Index = dict[str, ListedPlate | tuple[ListedPlate, ...]]
"""key -> its one entry, or a tuple of them when several share it (a tuple per key would add 56 bytes to
each of a million keys)."""


# ---------------------------------------------------------------------------------------------
# Matching.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One hot-list entry matched by a read."""

    plate_read: str
    """The text that matched: the read's top text or one of its candidates (normalised)."""
    entry: ListedPlate
    match_type: MatchType
    score: float
    """1.0 for an exact hit on the top text; LOOKALIKE_SCORE for a look-alike one; a candidate's confidence
    (times LOOKALIKE_SCORE when look-alike) for candidate hits."""


def _build_index(pairs: Iterable[tuple[str, ListedPlate]]) -> _Index:
    """key -> entries, in input order. Linear even when many entries share a key."""
    index: _Index = {}
    shared: dict[str, list[ListedPlate]] = {}
    for key, entry in pairs:
        found = index.get(key)
        if found is None:
            index[key] = entry
        elif key in shared:
            shared[key].append(entry)
        else:
            shared[key] = [*_entries(found), entry]
    for key, entries in shared.items():
        index[key] = tuple(entries)
    return index


def _entries(found: ListedPlate | tuple[ListedPlate, ...] | None) -> tuple[ListedPlate, ...]:
    if found is None:
        return ()
    return (found,) if isinstance(found, ListedPlate) else found


def _lookalike_pairs(entries: Sequence[ListedPlate]) -> Iterable[tuple[str, ListedPlate]]:
    for entry in entries:
        if entry.lookalike_tolerance:
            for variant in lookalike_variants(entry.plate, 1):
                if variant != entry.plate:
                    yield variant, entry


def _normalize_state(state: str | None) -> str | None:
    if state is None:
        return None
    cleaned = state.strip().upper()
    return cleaned or None


class HotlistIndex:
    """Hot-list entries indexed for matching a read in O(number of texts) dict lookups.

    Entry plates are used as they are: the wire type (``PlateText``) already restricts them to A-Z0-9.
    """

    def __init__(self, entries: Sequence[ListedPlate], version: int = 0) -> None:
        self.version = version
        self._count = len(entries)
        self._exact = _build_index((entry.plate, entry) for entry in entries)
        self._lookalike = _build_index(_lookalike_pairs(entries))

    def __len__(self) -> int:
        return self._count

    @property
    def lookalike_keys(self) -> int:
        """How many look-alike spellings are indexed (a size figure for logs and benchmarks)."""
        return len(self._lookalike)

    def match(
        self,
        text: str,
        candidates: Sequence[tuple[str, float]] = (),
        state: str | None = None,
        check_state: bool = False,
    ) -> list[Hit]:
        """Entries matched by a read, most urgent first (priority, then score).

        The top ``text`` is looked up exactly and as a look-alike, then each ``(text, confidence)``
        candidate the same way. An entry matched several ways is reported once, under its best match
        type. With ``check_state``, an entry whose state is known and differs from a known ``state`` of
        the read is not a hit.
        """
        best: dict[ListedPlate, Hit] = {}
        read_state = _normalize_state(state) if check_state else None
        top = normalize_plate(text)
        if top:
            self._collect(best, top, 1.0, "exact", "lookalike", read_state)
        for candidate_text, confidence in candidates:
            plate = normalize_plate(candidate_text)
            if plate and plate != top:
                self._collect(best, plate, float(confidence), "candidate", "candidate-lookalike", read_state)
        return sorted(
            best.values(),
            key=lambda h: (h.entry.priority, -h.score, _MATCH_RANK[h.match_type], h.entry.list_name, h.entry.plate),
        )

    def match_read(self, read: ReadRecord, state: str | None = None, check_state: bool = False) -> list[Hit]:
        """:meth:`match` on a read record's plate and candidates."""
        candidates = [(c.text, c.confidence) for c in read.candidates]
        return self.match(read.plate, candidates, state=state, check_state=check_state)

    def _collect(
        self,
        best: dict[ListedPlate, Hit],
        plate: str,
        score: float,
        exact_type: MatchType,
        lookalike_type: MatchType,
        read_state: str | None,
    ) -> None:
        for entries, match_type, hit_score in (
            (_entries(self._exact.get(plate)), exact_type, score),
            (_entries(self._lookalike.get(plate)), lookalike_type, score * LOOKALIKE_SCORE),
        ):
            for entry in entries:
                if read_state is not None and entry.state is not None:
                    entry_state = _normalize_state(entry.state)
                    if entry_state is not None and entry_state != read_state:
                        continue
                previous = best.get(entry)
                rank = _MATCH_RANK[match_type]
                if previous is None or (rank, -hit_score) < (_MATCH_RANK[previous.match_type], -previous.score):
                    best[entry] = Hit(plate_read=plate, entry=entry, match_type=match_type, score=hit_score)


# ---------------------------------------------------------------------------------------------
# Encrypted on-disk snapshot.
# ---------------------------------------------------------------------------------------------

_CACHE_MAGIC = b"ALPRHOTLIST1\n"


def generate_cache_key() -> bytes:
    """A fresh random 32-byte secret key for :class:`HotlistCache` (node-local, never leaves the node)."""
    return bytes(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))


def load_or_create_cache_key(path: Path) -> bytes:
    """The node's cache key from ``path`` (base64 text), created there with mode 0600 when absent."""
    if path.exists():
        return decode_key(path.read_text(encoding="ascii"))
    key = generate_cache_key()
    _write_atomically(path, (encode_key(key) + "\n").encode("ascii"))
    return key


def _write_atomically(path: Path, data: bytes) -> None:
    """temp file in the same directory (mode 0600) + fsync + os.replace + fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class HotlistCache:
    """The latest hot-list snapshot, encrypted on disk (XSalsa20-Poly1305 with a node-local key).

    File layout: a magic line, then ``SecretBox`` output (nonce + ciphertext + MAC) of a msgpack array
    ``[message header, packed entries]``. Fits the uplink's sink: ``hotlist_sink=cache.store``,
    ``hotlist_version=cache.version``.
    """

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"hot-list cache key must be {KEY_BYTES} bytes, got {len(key)}")
        self.path = path
        self._box = nacl.secret.SecretBox(key)
        self._version_memo: tuple[tuple[int, int, int], int] | None = None
        self._lock = threading.Lock()

    def store(self, message: HotlistMessage, entries: Sequence[ListedPlate]) -> None:
        """Replace the snapshot atomically. Raises ValueError when ``entries`` disagrees with the
        message's entry count, OSError when the disk refuses."""
        if len(entries) != message.entry_count:
            raise ValueError(
                f"hot-list version {message.version}: {len(entries)} entries, header says {message.entry_count}"
            )
        plaintext: bytes = msgpack.packb(
            [message.model_dump(mode="json"), pack_hotlist_entries(entries)], use_bin_type=True
        )
        with self._lock:
            _write_atomically(self.path, _CACHE_MAGIC + bytes(self._box.encrypt(plaintext)))
            self._remember_version(message.version)
        logger.info("hot-list cache: stored version %d (%d entries)", message.version, len(entries))

    def load(self) -> HotlistIndex | None:
        """The cached snapshot as an index; None when there is none or it cannot be trusted (logged)."""
        opened = self._open()
        if opened is None:
            return None
        message, blob = opened
        try:
            entries = unpack_hotlist_entries(blob)
        except WireError as exc:
            logger.error("hot-list cache %s: unusable entries (%s)", self.path, exc.code)
            return None
        if len(entries) != message.entry_count:
            logger.error("hot-list cache %s: entry count does not match its header", self.path)
            return None
        logger.info("hot-list cache: loaded version %d (%d entries)", message.version, len(entries))
        return HotlistIndex(entries, version=message.version)

    def version(self) -> int | None:
        """The cached snapshot's version, None when there is no usable one."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.error("hot-list cache %s: cannot stat (%s)", self.path, type(exc).__name__)
            return None
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        memo = self._version_memo
        if memo is not None and memo[0] == signature:
            return memo[1]
        opened = self._open()
        return None if opened is None else opened[0].version

    def _remember_version(self, version: int) -> None:
        with contextlib.suppress(OSError):
            stat = self.path.stat()
            self._version_memo = ((stat.st_ino, stat.st_size, stat.st_mtime_ns), version)

    def _open(self) -> tuple[HotlistMessage, bytes] | None:
        """Decrypt and check the header; every failure is logged without content and gives None."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.error("hot-list cache %s: cannot read (%s)", self.path, type(exc).__name__)
            return None
        if not data.startswith(_CACHE_MAGIC):
            logger.error("hot-list cache %s: not a hot-list cache file (%d bytes)", self.path, len(data))
            return None
        try:
            plaintext = bytes(self._box.decrypt(data[len(_CACHE_MAGIC) :]))
        except nacl.exceptions.CryptoError:
            logger.error("hot-list cache %s: cannot decrypt: tampered, truncated or another key", self.path)
            return None
        try:
            header, blob = msgpack.unpackb(plaintext, raw=False)
            message = HotlistMessage.model_validate(header)
        except (ValueError, TypeError) as exc:  # msgpack errors and ValidationError are ValueErrors
            kind = "schema" if isinstance(exc, ValidationError) else type(exc).__name__
            logger.error("hot-list cache %s: malformed snapshot (%s)", self.path, kind)
            return None
        if not isinstance(blob, bytes):
            logger.error("hot-list cache %s: malformed snapshot (entries not binary)", self.path)
            return None
        with self._lock:
            self._remember_version(message.version)
        return message, blob


# ---------------------------------------------------------------------------------------------
# Local alerts.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalAlert:
    """What the officer is told about a hit. ``plate`` is the listed plate, ``plate_read`` what was read."""

    read_id: str
    camera_id: str
    plate: str
    match_type: MatchType
    list_name: str
    category: str
    priority: int
    seen_utc: datetime
    latitude: float | None = None
    longitude: float | None = None
    plate_read: str = ""

    @classmethod
    def from_hit(cls, read: ReadRecord, hit: Hit) -> LocalAlert:
        return cls(
            read_id=read.read_id,
            camera_id=read.camera_id,
            plate=hit.entry.plate,
            match_type=hit.match_type,
            list_name=hit.entry.list_name,
            category=hit.entry.category,
            priority=hit.entry.priority,
            seen_utc=read.best_utc,
            latitude=read.gps.latitude if read.gps else None,
            longitude=read.gps.longitude if read.gps else None,
            plate_read=hit.plate_read,
        )

    def to_json(self) -> bytes:
        data: dict[str, Any] = asdict(self)
        data["seen_utc"] = self.seen_utc.isoformat()
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    def topic(self) -> bytes:
        return f"alert.{self.priority}.{self.list_name}".encode()


@dataclass(frozen=True, slots=True)
class AlertConfig:
    bell: bool = True
    """Write a terminal bell ("\\a") for alerts with priority <= bell_max_priority."""
    bell_max_priority: int = 1
    pub_endpoint: str | None = None
    """ZeroMQ PUB endpoint to bind for an in-car display ("ipc:///run/alpr/alerts", "tcp://127.0.0.1:5601")."""
    command: Sequence[str] | None = None
    """Program run with the alert JSON on stdin (in the worker thread)."""
    command_timeout_s: float = 5.0
    webhook_url: str | None = None
    """http(s) URL that gets the alert JSON by POST (in the worker thread)."""
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 3
    webhook_backoff_s: float = 0.5
    """First retry delay; doubles per retry up to webhook_backoff_max_s."""
    webhook_backoff_max_s: float = 10.0
    queue_size: int = 64
    """Alerts waiting for the worker; when full the oldest goes (counted as queue_dropped)."""


_COUNTERS = (
    "alerts",
    "bells",
    "published",
    "publish_errors",
    "commands_ok",
    "commands_failed",
    "webhooks_ok",
    "webhooks_failed",
    "webhook_retries",
    "queue_dropped",
    "errors",
)

_RETRY_HTTP_CODES = frozenset({408, 425, 429})


class LocalAlerter:
    """Tells the officer about hits: a log line, a bell, the in-car display, a command, a webhook.

    :meth:`alert` never blocks on the command or webhook (a worker thread with a bounded queue does them)
    and never raises. The constructor does raise on a bad config or an endpoint it cannot bind: a node
    should not start with its alerting half-broken.
    """

    def __init__(
        self,
        config: AlertConfig,
        *,
        bell_stream: TextIO | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if config.command is not None and not config.command:
            raise ValueError("alert command must not be empty")
        if config.webhook_url is not None and not config.webhook_url.startswith(("http://", "https://")):
            raise ValueError("alert webhook URL must be http:// or https://")
        if config.queue_size < 1 or config.webhook_retries < 0:
            raise ValueError("alert queue_size must be >= 1 and webhook_retries >= 0")
        self.config = config
        self._bell_stream = bell_stream
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._socket: zmq.Socket[bytes] | None = None
        self._closed = False
        if config.pub_endpoint is not None:
            self._socket = self._bind(context or zmq.Context.instance(), config.pub_endpoint)
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        if config.command is not None or config.webhook_url is not None:
            self._thread = threading.Thread(target=self._work, name="alert-worker", daemon=True)
            self._thread.start()

    @property
    def pub_endpoint(self) -> str | None:
        """The endpoint actually bound (resolves a "tcp://127.0.0.1:*" wildcard port)."""
        if self._socket is None:
            return None
        endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)

    def alert(self, a: LocalAlert) -> None:
        """Raise the alert on every configured channel; failures are logged and counted, never raised."""
        try:
            logger.warning(
                "HIT list=%s priority=%d plate=%s camera=%s", a.list_name, a.priority, mask_plate(a.plate), a.camera_id
            )
            self._count("alerts")
            if self.config.bell and a.priority <= self.config.bell_max_priority:
                stream = self._bell_stream or sys.stderr
                stream.write("\a")
                stream.flush()
                self._count("bells")
            payload = a.to_json()
            self._publish(a.topic(), payload)
            self._enqueue(payload)
        except Exception as exc:  # noqa: BLE001 - an alert must never take the read pipeline down
            self._count("errors")
            logger.error("alert: failed (%s)", type(exc).__name__)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking alerts, give the worker ``timeout_s`` to deliver what is queued, close the socket."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._abort.set()
                self._thread.join(max(self.config.command_timeout_s, self.config.webhook_timeout_s) + 1.0)
        with self._lock:
            if self._socket is not None:
                self._socket.close(linger=0)
                self._socket = None

    # --- channels ------------------------------------------------------------------------------

    @staticmethod
    def _bind(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
        if endpoint.startswith("ipc://"):
            with contextlib.suppress(OSError):
                Path(endpoint.removeprefix("ipc://")).parent.mkdir(parents=True, exist_ok=True)
        sock = context.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def _publish(self, topic: bytes, payload: bytes) -> None:
        with self._lock:
            if self._socket is None:
                return
            try:
                self._socket.send_multipart([topic, payload], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                self._counts["publish_errors"] += 1
                logger.error("alert: publish failed (%s)", exc.errno)
                return
            self._counts["published"] += 1

    def _enqueue(self, payload: bytes) -> None:
        if self._thread is None:
            return
        with self._lock:
            if self._closed:
                self._counts["queue_dropped"] += 1
                return
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self._counts["queue_dropped"] += 1
                logger.warning("alert: worker queue full, oldest alert dropped")
            self._queue.append(payload)
            self._wake.notify()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    # --- worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return
                payload = self._queue.popleft()
            if self._abort.is_set():
                self._count("queue_dropped")
                continue
            try:
                if self.config.command is not None:
                    self._run_command(self.config.command, payload)
                if self.config.webhook_url is not None:
                    self._post(self.config.webhook_url, payload)
            except Exception as exc:  # noqa: BLE001 - the worker carries on with the next alert
                self._count("errors")
                logger.error("alert worker: failed (%s)", type(exc).__name__)

    def _run_command(self, command: Sequence[str], payload: bytes) -> None:
        try:
            result = subprocess.run(
                list(command),
                input=payload,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=self.config.command_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self._count("commands_failed")
            logger.error("alert command: timed out after %.1f s", self.config.command_timeout_s)
            return
        except OSError as exc:
            self._count("commands_failed")
            logger.error("alert command: cannot run (%s)", type(exc).__name__)
            return
        if result.returncode != 0:
            self._count("commands_failed")
            logger.error("alert command: exit status %d", result.returncode)
            return
        self._count("commands_ok")

    def _post(self, url: str, payload: bytes) -> None:
        attempts = 1 + self.config.webhook_retries
        delay = self.config.webhook_backoff_s
        reason = "no attempt"
        for attempt in range(attempts):
            if attempt:
                self._count("webhook_retries")
                if self._abort.wait(delay):
                    break
                delay = min(delay * 2, self.config.webhook_backoff_max_s)
            request = urllib.request.Request(
                url, data=payload, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.config.webhook_timeout_s) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code not in _RETRY_HTTP_CODES:
                    break
            except (OSError, ValueError) as exc:  # URLError, timeouts and refused connections are OSErrors
                reason = type(exc).__name__
            else:
                self._count("webhooks_ok")
                return
        self._count("webhooks_failed")
        logger.error("alert webhook: failed (%s)", reason)
