"""Where the camera is: GPS position sources for the edge node.

Two sources share one small interface (:class:`PositionSource`):

* :class:`FixedPosition` for roadside installations, where the position is surveyed once and configured.
* :class:`GpsdClient` for vehicles: a background thread that speaks gpsd's JSON protocol over TCP and
  keeps the latest TPV (time-position-velocity) report.

``latest()`` returns a fix only while it is usable; ``status()`` says why it is not. The two always agree:
``latest()`` is not None exactly when ``status()`` is "fixed", "3d" or "2d".

Locations are personal data once they are joined to plate reads, so coordinates are only ever logged at
DEBUG level.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import select
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

logger = logging.getLogger(__name__)

FixSource = Literal["gpsd", "fixed"]
PositionStatus = Literal["fixed", "3d", "2d", "no-fix", "stale", "disconnected"]

MODE_UNKNOWN = 0
MODE_NO_FIX = 1
MODE_2D = 2
MODE_3D = 3

WATCH_COMMAND = b'?WATCH={"enable":true,"json":true};\n'
# gpsd's longest reports (SKY with many satellites, RTCM) stay well under this; a longer unterminated
# line means we are not talking to gpsd, and buffering it without bound would let a peer eat our memory.
MAX_LINE_BYTES = 64 * 1024
# How often the reader thread wakes to look at the stop event; bounds how long stop() waits.
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True)
class GpsFix:
    """One position report.

    ``received_monotonic`` is ``time.monotonic()`` when the report arrived; staleness is judged from it
    rather than from ``gps_time`` so that a wrong system clock cannot make a fix look fresh or stale.
    """

    latitude: float
    longitude: float
    altitude_m: float | None
    speed_mps: float | None
    heading_deg: float | None
    mode: int
    eph_m: float | None
    epv_m: float | None
    gps_time: datetime | None
    received_monotonic: float
    source: FixSource

    def age(self, now_monotonic: float | None = None) -> float:
        """Seconds since the fix was received."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return now - self.received_monotonic


class PositionSource(Protocol):
    def latest(self) -> GpsFix | None:
        """The current fix, or None when there is no usable one (no fix, stale, disconnected)."""
        ...

    def status(self) -> PositionStatus:
        """One of "fixed", "3d", "2d", "no-fix", "stale", "disconnected"."""
        ...

    def counters(self) -> dict[str, int]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _check_lat_lon(latitude: float, longitude: float) -> None:
    if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
        raise ValueError(f"latitude out of range: {latitude!r}")
    if not (math.isfinite(longitude) and -180.0 <= longitude <= 180.0):
        raise ValueError(f"longitude out of range: {longitude!r}")


class FixedPosition:
    """A surveyed, unchanging position (roadside installation). Always a 3D fix, always fresh."""

    def __init__(
        self,
        latitude: float,
        longitude: float,
        heading_deg: float | None = None,
        altitude_m: float | None = None,
    ) -> None:
        _check_lat_lon(latitude, longitude)
        if heading_deg is not None and not (math.isfinite(heading_deg) and 0.0 <= heading_deg < 360.0):
            raise ValueError(f"heading_deg must be in [0, 360): {heading_deg!r}")
        self.latitude = latitude
        self.longitude = longitude
        self.heading_deg = heading_deg
        self.altitude_m = altitude_m

    def latest(self) -> GpsFix:
        return GpsFix(
            latitude=self.latitude,
            longitude=self.longitude,
            altitude_m=self.altitude_m,
            speed_mps=0.0,
            # For a fixed camera this is the direction it looks along the road, not a track.
            heading_deg=self.heading_deg,
            mode=MODE_3D,
            eph_m=None,
            epv_m=None,
            gps_time=None,
            received_monotonic=time.monotonic(),
            source="fixed",
        )

    def status(self) -> PositionStatus:
        return "fixed"

    def counters(self) -> dict[str, int]:
        return {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class TpvError(ValueError):
    """A TPV report whose fields have the wrong types or impossible values."""


def _number(msg: dict[str, Any], key: str) -> float | None:
    value = msg.get(key)
    if value is None:
        return None
    # bool is an int subclass; gpsd never sends one for a numeric field, so it means a broken peer.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TpvError(f"TPV field {key!r} is not a number: {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise TpvError(f"TPV field {key!r} is not finite")
    return result


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TpvError(f"TPV time is not a string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise TpvError(f"TPV time is not ISO-8601: {value!r}") from exc
    if parsed.tzinfo is None:
        # gpsd always sends UTC with a 'Z'; a naive time would be ambiguous, so refuse to guess.
        raise TpvError(f"TPV time has no time zone: {value!r}")
    return parsed.astimezone(UTC)


def fix_from_tpv(msg: dict[str, Any], received_monotonic: float) -> GpsFix | None:
    """Turn a gpsd TPV report into a fix; None when it reports no position (mode < 2 or no lat/lon).

    Raises :class:`TpvError` when a field is malformed.
    """
    mode = msg.get("mode", MODE_UNKNOWN)
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TpvError(f"TPV mode is not an integer: {mode!r}")
    latitude = _number(msg, "lat")
    longitude = _number(msg, "lon")
    gps_time = _parse_time(msg.get("time"))
    if mode < MODE_2D or latitude is None or longitude is None:
        return None
    try:
        _check_lat_lon(latitude, longitude)
    except ValueError as exc:
        raise TpvError(str(exc)) from exc
    # gpsd >= 3.20 splits altitude into altHAE / altMSL and keeps "alt" (MSL) only for old clients.
    altitude = _number(msg, "altHAE")
    if altitude is None:
        altitude = _number(msg, "alt")
    eph = _number(msg, "eph")
    if eph is None:
        epx = _number(msg, "epx")
        epy = _number(msg, "epy")
        if epx is not None and epy is not None:
            # Older gpsd gives per-axis errors only; their combination is a conservative horizontal bound.
            eph = math.hypot(epx, epy)
    return GpsFix(
        latitude=latitude,
        longitude=longitude,
        altitude_m=altitude if mode >= MODE_3D else None,
        speed_mps=_number(msg, "speed"),
        heading_deg=_number(msg, "track"),
        mode=mode,
        eph_m=eph,
        epv_m=_number(msg, "epv"),
        gps_time=gps_time,
        received_monotonic=received_monotonic,
        source="gpsd",
    )


class GpsdClient:
    """Follows gpsd over TCP in a daemon thread and keeps the latest TPV report.

    Connection problems never raise out of this class: the thread retries with exponential back-off
    (``reconnect_min_s`` doubling up to ``reconnect_max_s``) and ``status()`` says "disconnected"
    meanwhile. One warning is logged per outage, not one per retry.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2947,
        stale_after_s: float = 5.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        *,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        self.host = host
        self.port = port
        self.stale_after_s = stale_after_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._connected = False
        self._fix: GpsFix | None = None
        self._mode = MODE_UNKNOWN
        # Reader-thread state, touched only by that thread.
        self._delay = reconnect_min_s
        self._ever_connected = False
        self._outage_since: float | None = None
        self._counters = {
            "tpv": 0,
            "parse_errors": 0,
            "reconnects": 0,
            "connect_failures": 0,
            "disconnects": 0,
        }

    # -- public interface ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"gpsd-{self.host}:{self.port}", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        with self._lock:
            sock, thread = self._sock, self._thread
        if sock is not None:
            # shutdown() wakes a thread blocked in recv(); close() alone does not on Linux.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("gpsd reader thread did not stop within %.1f s", timeout_s)
        with self._lock:
            self._connected = False
            self._thread = None

    def latest(self) -> GpsFix | None:
        with self._lock:
            if not self._connected or self._fix is None:
                return None
            fix = self._fix
        return fix if fix.age() <= self.stale_after_s else None

    def status(self) -> PositionStatus:
        with self._lock:
            connected, fix = self._connected, self._fix
        if not connected:
            return "disconnected"
        if fix is None:
            return "no-fix"
        if fix.age() > self.stale_after_s:
            return "stale"
        return "3d" if fix.mode >= MODE_3D else "2d"

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    # -- reader thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        self._delay = self.reconnect_min_s
        self._ever_connected = False
        self._outage_since = None
        while not self._stop.is_set():
            try:
                sock = self._connect()
            except OSError as exc:
                self._attempt_failed(str(exc))
                continue
            if sock is None:  # stop requested while connecting
                break
            with self._lock:
                self._sock = sock
            try:
                reason, established = self._read(sock)
            finally:
                with self._lock:
                    self._sock = None
                    self._connected = False
                    # A fix from a previous connection must not outlive it: gpsd may have restarted
                    # with another receiver, and status() and latest() have to agree.
                    self._fix = None
                    self._mode = MODE_UNKNOWN
                sock.close()
            if self._stop.is_set():
                break
            if not established:
                # Accepted but closed before gpsd said a word: typically a gpsd that is shutting down
                # (the kernel still queues connections for it). Part of the same outage, not a new one.
                self._attempt_failed(reason)
                continue
            with self._lock:
                self._counters["disconnects"] += 1
            self._outage_since = time.monotonic()
            logger.warning("gpsd connection at %s:%s lost (%s); reconnecting", self.host, self.port, reason)
            # Retry at once: a dropped connection usually means gpsd restarted; back-off starts with
            # the first failed attempt.
        logger.debug("gpsd reader for %s:%s stopped", self.host, self.port)

    def _attempt_failed(self, reason: str) -> None:
        with self._lock:
            self._counters["connect_failures"] += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning("gpsd at %s:%s unavailable (%s); retrying in the background", self.host, self.port, reason)
        else:
            logger.debug("gpsd at %s:%s still unavailable (%s)", self.host, self.port, reason)
        self._stop.wait(self._delay)
        self._delay = min(self._delay * 2, self.reconnect_max_s)

    def _established(self) -> None:
        """gpsd has spoken on a new connection (it sends VERSION at once): the outage, if any, is over."""
        with self._lock:
            self._connected = True
            if self._ever_connected:
                self._counters["reconnects"] += 1
        if self._outage_since is not None:
            down_s = time.monotonic() - self._outage_since
            logger.info("gpsd at %s:%s connected after %.1f s", self.host, self.port, down_s)
        else:
            logger.info("gpsd at %s:%s connected", self.host, self.port)
        self._ever_connected = True
        self._outage_since = None
        self._delay = self.reconnect_min_s

    def _connect(self) -> socket.socket | None:
        """Connect without blocking past a stop request; None if stop() came first."""
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        last_error: OSError = OSError(errno.EHOSTUNREACH, f"no address for {self.host}")
        for family, socktype, proto, _canon, addr in infos:
            sock = socket.socket(family, socktype, proto)
            try:
                sock.setblocking(False)
                err = sock.connect_ex(addr)
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, errno.errorcode.get(err, str(err)))
                deadline = time.monotonic() + self.connect_timeout_s
                while err != 0:
                    if self._stop.is_set():
                        sock.close()
                        return None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"connect timed out after {self.connect_timeout_s} s")
                    _, writable, _ = select.select([], [sock], [], min(POLL_INTERVAL_S, remaining))
                    if writable:
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err != 0:
                            raise OSError(err, errno.errorcode.get(err, str(err)))
                        break
                sock.settimeout(POLL_INTERVAL_S)
                sock.sendall(WATCH_COMMAND)
                return sock
            except OSError as exc:
                sock.close()
                last_error = exc
        raise last_error

    def _read(self, sock: socket.socket) -> tuple[str, bool]:
        """Read reports until the connection ends or stop() is called.

        Returns why it ended and whether gpsd ever spoke on it.
        """
        buffer = b""
        established = False
        while not self._stop.is_set():
            try:
                chunk = sock.recv(8192)
            except TimeoutError:
                continue
            except OSError as exc:
                return str(exc), established
            if not chunk:
                return "closed by gpsd", established
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if lines and not established:
                established = True
                self._established()
            for line in lines:
                self._handle_line(line)
            if len(buffer) > MAX_LINE_BYTES:
                self._parse_error("line longer than %d bytes", MAX_LINE_BYTES)
                buffer = b""
        return "stopped", established

    def _parse_error(self, what: str, *args: object) -> None:
        with self._lock:
            self._counters["parse_errors"] += 1
        logger.debug("gpsd: skipping malformed report: " + what, *args)

    def _handle_line(self, raw: bytes) -> None:
        line = raw.strip()
        if not line:
            return
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._parse_error("%s", exc)
            return
        if not isinstance(msg, dict):
            self._parse_error("not a JSON object")
            return
        if msg.get("class") != "TPV":
            return  # VERSION, DEVICES, WATCH, SKY, ...: nothing we need
        received = time.monotonic()
        try:
            fix = fix_from_tpv(msg, received)
        except TpvError as exc:
            self._parse_error("%s", exc)
            return
        # A TPV that claims a fix but lacks a position is no fix for our purposes.
        mode = fix.mode if fix is not None else MODE_NO_FIX
        with self._lock:
            self._counters["tpv"] += 1
            previous_mode = self._mode
            self._mode = mode
            self._fix = fix
        if fix is not None:
            logger.debug(
                "gpsd TPV mode=%d lat=%.6f lon=%.6f speed=%s track=%s",
                fix.mode,
                fix.latitude,
                fix.longitude,
                fix.speed_mps,
                fix.heading_deg,
            )
        if (mode >= MODE_2D) != (previous_mode >= MODE_2D):
            logger.info("GPS fix %s (mode %d)", "acquired" if mode >= MODE_2D else "lost", mode)
