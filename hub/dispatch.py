"""Real-time hot-list alerts for dispatch: a ZeroMQ PUB feed, webhooks, a console, and dispositions.

Wire format. Each alert is published as two frames, ``[topic, json]``:

- the topic is ``hit.p<priority>.<list name>`` (``hit.p0.stolen-vehicles``), so a CAD bridge or a
  console subscribes by prefix: ``b"hit."`` for everything, ``b"hit.p0."`` for priority 0 only, or
  ``b"hit.p1.amber-alerts"`` for one list. Keep the trailing dot when subscribing to a priority:
  ``b"hit.p1"`` would also match priority 10 and above;
- the body is the :class:`HitAlert` as UTF-8 JSON (:meth:`HitAlert.to_json`), full plate included:
  the feed and the webhooks go to authorized dispatch systems, whose purpose is to act on the plate.

PUB is fire-and-forget (a subscriber that is not connected misses the alert); webhooks are the
delivery that retries. Each webhook URL has its own worker thread and bounded queue, so a dead
endpoint delays no other; a failed POST is retried with exponential back-off while fresh alerts keep
flowing, and every attempt is logged with the plate masked (``7AB***3``). Receivers should drop
duplicates by the ``Idempotency-Key`` header (``hit-<id>``): a POST that timed out may have arrived.

A hit stays ``open`` until a person sets its disposition (:func:`set_disposition`).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO, get_args

import zmq
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from edge.recognition.formats import mask_plate
from hub.models import Hit, Hotlist, HotlistEntry

logger = logging.getLogger(__name__)

Disposition = Literal["confirmed", "misread", "not_actionable"]
"""What a person decided about a hit; a hit without one is ``"open"``."""
DISPOSITIONS: Final[tuple[str, ...]] = get_args(Disposition)
OPEN: Final = "open"

TOPIC_PREFIX: Final = b"hit."
"""Subscribe to this to get every alert."""
MAX_ALERT_BYTES: Final = 64 * 1024
"""The console refuses larger messages (an alert is well under 1 KiB)."""


class DispatchError(Exception):
    """Base class for dispatch's domain errors."""


class UnknownHitError(DispatchError, LookupError):
    """No hit with that id."""


class DispositionConflictError(DispatchError):
    """The hit already has a disposition (pass ``override=True`` to replace it)."""


class InvalidDispositionError(DispatchError, ValueError):
    """Not one of :data:`DISPOSITIONS`, or no user named."""


class MalformedAlertError(DispatchError, ValueError):
    """A message on the alert feed that is not a valid ``[topic, json]`` alert."""


# --- the alert ----------------------------------------------------------------------------------


def crop_url_for(base_url: str, hit_id: int) -> str:
    """Where a dispatcher sees the hit's plate crop in the hub's API: ``<base_url>/api/v1/hits/<hit_id>/crop``."""
    return f"{base_url.rstrip('/')}/api/v1/hits/{urllib.parse.quote(str(hit_id), safe='')}/crop"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class HitAlert:
    """One hit as sent to dispatch: what was read, which list entry it matched, where and when."""

    hit_id: int
    read_id: str
    plate_read: str
    entry_plate: str
    list_name: str
    category: str
    priority: int
    """0 is the most urgent."""
    match_type: str
    node_name: str
    camera_id: str
    seen_utc: datetime
    crop_url: str
    reason: str
    """The entry's category and notes, as a dispatcher should read them."""
    latitude: float | None = None
    longitude: float | None = None

    def __post_init__(self) -> None:
        if self.seen_utc.tzinfo is None or self.seen_utc.utcoffset() is None:
            raise ValueError("HitAlert.seen_utc must be timezone-aware")
        if self.priority < 0:
            raise ValueError(f"HitAlert.priority must be >= 0, not {self.priority}")

    @classmethod
    def from_fields(cls, *, base_url: str = "", **fields: Any) -> HitAlert:
        """An alert from keyword fields; ``crop_url`` defaults to :func:`crop_url_for` ``(base_url, hit_id)``."""
        if "crop_url" not in fields:
            fields["crop_url"] = crop_url_for(base_url, int(fields.get("hit_id", 0)))
        return cls(**fields)

    def topic(self) -> bytes:
        return f"hit.p{self.priority}.{self.list_name}".encode()

    def to_json(self) -> bytes:
        data = asdict(self)
        data["seen_utc"] = _iso(self.seen_utc)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> HitAlert:
        """Parse and validate an alert body; :class:`MalformedAlertError` when it is not one."""
        try:
            return _ALERT_ADAPTER.validate_json(payload)
        except ValidationError as exc:  # summarised without the input, which holds the plate
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False)[:5]
            )
            raise MalformedAlertError(f"not a hit alert: {problems}") from None


_ALERT_ADAPTER: Final = TypeAdapter(HitAlert)


def subscription(priority: int | None = None, list_name: str | None = None) -> bytes:
    """The topic prefix to subscribe to: every alert, one priority, or one priority and list."""
    if priority is None:
        if list_name is not None:
            raise ValueError("subscribing to one list needs its priority too (topics start with the priority)")
        return TOPIC_PREFIX
    return f"hit.p{priority}.{list_name or ''}".encode()


# --- publishing ---------------------------------------------------------------------------------


def _display_url(url: str) -> str:
    """A webhook URL safe for logs: no user info, query or fragment (they may carry tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


COUNTER_NAMES: Final = (
    "published",
    "publish_errors",
    "webhook_queued",
    "webhook_attempts",
    "webhook_retries",
    "webhook_delivered",
    "webhook_failed",
    "webhook_dropped",
    "webhook_abandoned",
)
"""``published``: alerts sent on the PUB socket; ``webhook_*`` are per (alert, URL): ``failed`` gave up
after the last attempt or a 4xx answer, ``dropped`` fell out of a full queue, ``abandoned`` were still
pending at :meth:`HitPublisher.close`."""


@dataclass(order=True)
class _Delivery:
    due: float
    priority: int
    seq: int
    alert: HitAlert = field(compare=False)
    body: bytes = field(compare=False)
    attempt: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """How hard a webhook is tried: ``max_attempts`` POSTs, waiting ``backoff_s * 2**n`` (capped) between."""

    max_attempts: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 5.0
    queue_size: int = 1000

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.queue_size < 1:
            raise ValueError("webhook max_attempts and queue_size must be at least 1")
        if self.backoff_s < 0 or self.backoff_max_s < 0 or self.timeout_s <= 0:
            raise ValueError("webhook back-off must be >= 0 and the timeout > 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), with +-20 % jitter."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))


class _PermanentFailure(Exception):
    """An answer that retrying will not change (a 4xx other than 408/429)."""


DeliveredCallback = Callable[[int, datetime], None]


class _WebhookWorker:
    """POSTs alerts to one URL from its own thread; retries are scheduled, not slept on."""

    def __init__(
        self, url: str, policy: WebhookPolicy, counters: _Counters, on_delivered: DeliveredCallback | None
    ) -> None:
        self.url = url
        self.display = _display_url(url)
        self.policy = policy
        self.counters = counters
        self.on_delivered = on_delivered
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"webhook {self.display}", daemon=True)
        self._thread.start()

    def submit(self, alert: HitAlert, body: bytes) -> None:
        """Queue one delivery; never blocks. A full queue drops its least urgent, oldest delivery."""
        delivery = _Delivery(time.monotonic(), alert.priority, next(self._seq), alert, body)
        with self._cond:
            if self._stopping:
                self.counters.add("webhook_dropped")
                return
            self.counters.add("webhook_queued")
            self._push(delivery)
            self._cond.notify()

    def _push(self, delivery: _Delivery) -> None:
        """Add to the schedule; over the bound, drop the least urgent (highest priority number), oldest."""
        heapq.heappush(self._heap, delivery)
        if len(self._heap) > self.policy.queue_size:
            victim = max(self._heap, key=lambda d: (d.priority, -d.seq))
            self._heap.remove(victim)
            heapq.heapify(self._heap)
            self.counters.add("webhook_dropped")
            logger.warning(
                "webhook %s: queue full, dropped hit %s (%s, priority %s)",
                self.display,
                victim.alert.hit_id,
                mask_plate(victim.alert.plate_read),
                victim.priority,
            )

    def close(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            abandoned = len(self._heap)
            self._heap.clear()
        if abandoned:
            self.counters.add("webhook_abandoned", abandoned)
            logger.warning(
                "webhook %s: %s deliveries still pending at shutdown were abandoned", self.display, abandoned
            )

    def _next(self) -> _Delivery | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._heap and self._heap[0].due <= now:
                    return heapq.heappop(self._heap)
                self._cond.wait(self._heap[0].due - now if self._heap else None)
            return None

    def _run(self) -> None:
        while (delivery := self._next()) is not None:
            try:
                self._attempt(delivery)
            except Exception:  # a bug in one delivery must not stop this webhook's worker
                logger.exception("webhook %s: failed to handle hit %s", self.display, delivery.alert.hit_id)

    def _attempt(self, delivery: _Delivery) -> None:
        alert = delivery.alert
        delivery.attempt += 1
        attempts = f"{delivery.attempt}/{self.policy.max_attempts}"
        self.counters.add("webhook_attempts")
        try:
            status = self._post(delivery.body, alert.hit_id)
        except _PermanentFailure as exc:
            self.counters.add("webhook_failed")
            logger.error(
                "webhook %s: hit %s (%s) attempt %s refused, not retried: %s",
                self.display,
                alert.hit_id,
                mask_plate(alert.plate_read),
                attempts,
                exc,
            )
            return
        except Exception as exc:  # network errors, timeouts, 5xx: retried
            if delivery.attempt >= self.policy.max_attempts:
                self.counters.add("webhook_failed")
                logger.error(
                    "webhook %s: hit %s (%s) attempt %s failed, giving up: %s",
                    self.display,
                    alert.hit_id,
                    mask_plate(alert.plate_read),
                    attempts,
                    exc,
                )
                return
            delay = self.policy.delay(delivery.attempt)
            self.counters.add("webhook_retries")
            logger.warning(
                "webhook %s: hit %s (%s) attempt %s failed, retrying in %.1f s: %s",
                self.display,
                alert.hit_id,
                mask_plate(alert.plate_read),
                attempts,
                delay,
                exc,
            )
            delivery.due = time.monotonic() + delay
            with self._cond:
                if not self._stopping:
                    self._push(delivery)
                else:
                    self.counters.add("webhook_abandoned")
            return
        self.counters.add("webhook_delivered")
        logger.info(
            "webhook %s: hit %s (%s, priority %s) delivered on attempt %s (HTTP %s)",
            self.display,
            alert.hit_id,
            mask_plate(alert.plate_read),
            alert.priority,
            attempts,
            status,
        )
        if self.on_delivered is not None:
            try:
                self.on_delivered(alert.hit_id, datetime.now(UTC))
            except Exception:
                logger.exception("webhook %s: on_delivered failed for hit %s", self.display, alert.hit_id)

    def _post(self, body: bytes, hit_id: int) -> int:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "alpr-hub",
                "Idempotency-Key": f"hit-{hit_id}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.policy.timeout_s) as response:
                status: int = response.status
                response.read(1024)
        except urllib.error.HTTPError as exc:
            exc.close()
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise _PermanentFailure(f"HTTP {exc.code}") from None
            raise
        return status


class HitPublisher:
    """Publishes alerts on a ZeroMQ PUB socket and POSTs them to webhooks; never blocks the caller.

    ``pub_bind`` may use a wildcard port (``tcp://127.0.0.1:*``); :attr:`endpoint` is where it bound.
    ``on_delivered(hit_id, at)`` is called from a webhook worker after each successful POST, e.g. to
    :func:`mark_delivered` in a fresh session (it is idempotent: the first delivery time is kept).
    """

    def __init__(
        self,
        pub_bind: str,
        webhooks: Sequence[str],
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        *,
        webhook_policy: WebhookPolicy | None = None,
        on_delivered: DeliveredCallback | None = None,
    ) -> None:
        for url in webhooks:
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"webhook URLs must be http:// or https://, not {_display_url(url)!r}")
        self.policy = webhook_policy or WebhookPolicy()
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._closed = False
        context = context or zmq.Context.instance()
        sock = context.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.policy.queue_size)
        try:
            sock.bind(pub_bind)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        self._socket: zmq.Socket[bytes] = sock
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._workers = [_WebhookWorker(url, self.policy, self._counters, on_delivered) for url in webhooks]
        logger.info("dispatch publishing hits on %s and to %s webhooks", self.endpoint, len(self._workers))

    def publish(self, alert: HitAlert) -> None:
        """Send ``alert`` on the PUB socket and queue it for every webhook. Never blocks, never raises."""
        try:
            body = alert.to_json()
            with self._lock:
                if self._closed:
                    self._counters.add("publish_errors")
                    logger.warning("dispatch: hit %s published after close, dropped", alert.hit_id)
                    return
                try:
                    self._socket.send_multipart([alert.topic(), body], flags=zmq.NOBLOCK)
                    self._counters.add("published")
                except zmq.ZMQError as exc:
                    self._counters.add("publish_errors")
                    logger.error("dispatch: hit %s not published on the PUB socket: %s", alert.hit_id, exc)
            for worker in self._workers:
                worker.submit(alert, body)
        except Exception:  # the caller is the hit matcher: an alert problem must never stop it
            self._counters.add("publish_errors")
            logger.exception("dispatch: failed to publish hit %s", getattr(alert, "hit_id", "?"))

    def counters(self) -> dict[str, int]:
        """Every counter in :data:`COUNTER_NAMES` (zero included), summed over the webhooks."""
        counts = dict.fromkeys(COUNTER_NAMES, 0)
        counts.update(self._counters.snapshot())
        return counts

    def close(self, timeout: float = 5.0) -> None:
        """Stop the webhook workers (pending deliveries are abandoned and counted) and close the socket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for worker in self._workers:
            worker.close(timeout)
        with self._lock:
            self._socket.close(linger=0)

    def __enter__(self) -> HitPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def mark_delivered(session: Session, hit_ids: Sequence[int], at: datetime) -> int:
    """Set ``delivered_utc`` on hits not yet marked (the first delivery wins); how many. The caller commits."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("delivery time must be timezone-aware")
    if not hit_ids:
        return 0
    marked = session.execute(
        update(Hit)
        .where(Hit.id.in_(list(hit_ids)), Hit.delivered_utc.is_(None))
        .values(delivered_utc=at)
        .returning(Hit.id),
        execution_options={"synchronize_session": "fetch"},
    ).all()
    return len(marked)


# --- the dispatch console -----------------------------------------------------------------------


def _clean(text: str, *, spaces: bool = True) -> str:
    """Text safe for a terminal: control and format characters (escapes, bidi overrides) replaced.

    Without ``spaces``, whitespace becomes ``_`` too, so a ``key=value`` field stays one token.
    """
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned if spaces else "_".join(cleaned.split()) or "-"


class DispatchConsole:
    """``alpr-hub dispatch``: one ``HIT ...`` line per alert for authorized dispatchers, full plate shown.

    The bell (``\\a``, at the end of the line) rings for priorities ``<= bell_max_priority``.
    """

    def __init__(
        self,
        connect: str,
        out: TextIO,
        bell_max_priority: int = 1,
        *,
        subscriptions: Sequence[bytes] = (TOPIC_PREFIX,),
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.connect = connect
        self.out = out
        self.bell_max_priority = bell_max_priority
        self.subscriptions = tuple(subscriptions)
        self.context = context or zmq.Context.instance()
        self.poll_ms = poll_ms
        self.shown = 0
        self.malformed = 0
        self.connected = threading.Event()
        """Set once the SUB socket is connected and subscribed (for tests and start-up messages)."""

    def handle(self, frames: Sequence[bytes]) -> str:
        """The console line for one ``[topic, json]`` message; :class:`MalformedAlertError` if it is not one."""
        if len(frames) != 2:
            raise MalformedAlertError(f"expected 2 frames (topic, json), got {len(frames)}")
        alert = HitAlert.from_json(frames[1])
        return self.format(alert)

    def format(self, alert: HitAlert) -> str:
        fields = [f"HIT {_clean(alert.plate_read, spaces=False)}"]
        if alert.entry_plate != alert.plate_read:
            fields.append(f"entry={_clean(alert.entry_plate, spaces=False)}")
        if alert.latitude is not None and alert.longitude is not None:
            place = f"{alert.latitude:.5f},{alert.longitude:.5f}"
        else:
            place = "unknown"
        fields += [
            f"list={_clean(alert.list_name, spaces=False)}",
            f"priority={alert.priority}",
            f"match={_clean(alert.match_type, spaces=False)}",
            f"node={_clean(alert.node_name, spaces=False)}",
            f"camera={_clean(alert.camera_id, spaces=False)}",
            f"at={alert.seen_utc.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
            f"place={place}",
            f"crop={_clean(alert.crop_url, spaces=False)}",
            f"reason={_clean(alert.reason).strip()}",
        ]
        line = " ".join(fields)
        return line + "\a" if alert.priority <= self.bell_max_priority else line

    def run(self, stop_event: threading.Event) -> None:
        """Print alerts until ``stop_event`` is set; a malformed message is logged and skipped."""
        sock = self.context.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_ALERT_BYTES)
            for topic in self.subscriptions:
                sock.setsockopt(zmq.SUBSCRIBE, topic)
            sock.connect(self.connect)
            self.connected.set()
            logger.info("dispatch console listening to %s", self.connect)
            while not stop_event.is_set():
                if not sock.poll(self.poll_ms, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
                try:
                    line = self.handle(frames)
                except MalformedAlertError as exc:
                    self.malformed += 1
                    logger.warning("dispatch console: skipped a malformed message: %s", exc)
                    continue
                self.out.write(line + "\n")
                self.out.flush()
                self.shown += 1
        finally:
            with contextlib.suppress(zmq.ZMQError):
                sock.close(linger=0)


# --- dispositions -------------------------------------------------------------------------------


def set_disposition(
    session: Session,
    hit_id: int,
    disposition: Disposition,
    user: str,
    notes: str | None,
    now: datetime,
    *,
    override: bool = False,
) -> Hit:
    """Record what ``user`` decided about an open hit. The caller commits.

    An already-dispositioned hit is refused (:class:`DispositionConflictError`) unless ``override``;
    then the previous decision, its author, time and notes are kept at the start of the new notes.
    """
    if disposition not in DISPOSITIONS:
        raise InvalidDispositionError(f"disposition must be one of {', '.join(DISPOSITIONS)}, not {disposition!r}")
    if not user.strip():
        raise InvalidDispositionError("a disposition needs the user who made it")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("disposition time must be timezone-aware")
    hit = session.get(Hit, hit_id, with_for_update=True)
    if hit is None:
        raise UnknownHitError(f"no hit with id {hit_id}")
    previous_disposition = hit.disposition
    if previous_disposition != OPEN:
        if not override:
            raise DispositionConflictError(
                f"hit {hit_id} is already {hit.disposition} (by {hit.disposition_by}); pass override to change it"
            )
        when = _iso(hit.disposition_utc) if hit.disposition_utc is not None else "unknown time"
        previous = f"[previously {hit.disposition} by {hit.disposition_by} at {when}"
        previous += f": {hit.disposition_notes}]" if hit.disposition_notes else "]"
        notes = f"{previous} {notes}" if notes else previous
    overriding = f" (overriding {previous_disposition})" if previous_disposition != OPEN else ""
    logger.info("hit %s marked %s by %s%s", hit_id, disposition, user, overriding)
    hit.disposition = disposition
    hit.disposition_by = user
    hit.disposition_utc = now
    hit.disposition_notes = notes
    session.flush()
    return hit


def open_hits_query(limit: int) -> Select[Hit, HotlistEntry, str]:
    """Hits nobody has dispositioned, with their list entry and list name: the most urgent list priority
    first, then the newest. Found through ``ix_hits_disposition``, never a scan of the settled hits."""
    return (
        select(Hit, HotlistEntry, Hotlist.name)
        .join(HotlistEntry, HotlistEntry.id == Hit.entry_id)
        .join(Hotlist, Hotlist.id == HotlistEntry.hotlist_id)
        .where(Hit.disposition == OPEN)
        .order_by(HotlistEntry.priority, Hit.id.desc())
        .limit(limit)
    )


def open_hits_state_query() -> Select[int, int | None, int | None]:
    """The number of open hits, the newest open id and the sum of the open ids: together they change
    whenever a hit opens or is settled (ids are never reused). Read from ``ix_hits_disposition`` alone."""
    return select(func.count(), func.max(Hit.id), func.sum(Hit.id)).where(Hit.disposition == OPEN)


def open_hits(session: Session, limit: int = 100) -> list[Hit]:
    """Hits nobody has dispositioned yet, most urgent first, then newest (:func:`open_hits_query`)."""
    return [hit for hit, _entry, _list in session.execute(open_hits_query(limit))]
