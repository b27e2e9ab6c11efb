"""UTC time stamps that say how far they can be trusted.

A plate read is evidence, and its time matters as much as its place. Edge nodes often boot without a
real-time clock or network, so the system clock can be wrong (1970, or the last shutdown time restored by
fake-hwclock) and can jump when NTP or an operator sets it. :class:`ClockMonitor` therefore stamps every
time with where it came from and whether it is suspect, and never rewrites a time on its own: a suspect
stamp is kept as the system clock gave it, with the reason, so that it can be reviewed later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from edge.gps import MODE_2D, GpsFix

logger = logging.getLogger(__name__)

TimeSource = Literal["gps", "ntp", "system"]

# No edge node was deployed before this, so an earlier clock has simply never been set.
EARLIEST_PLAUSIBLE = datetime(2024, 1, 1, tzinfo=UTC)

# From <sys/timex.h>.
STA_UNSYNC = 0x0040
TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """glibc's ``struct timex`` (the layout behind the plain ``adjtimex`` symbol)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        # The kernel reserves 11 ints here; more slack costs nothing and guards against a libc whose
        # struct has grown.
        ("_reserved", ctypes.c_int * 32),
    ]


def kernel_clock_synchronised() -> bool | None:
    """Whether the kernel believes its clock is synchronised (by NTP, chrony, PTP...).

    Reads ``adjtimex`` with ``modes = 0``, which changes nothing and needs no privilege. Returns None
    where it cannot be asked (not Linux, no libc, the call failed).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = [ctypes.POINTER(_Timex)]
    adjtimex.restype = ctypes.c_int
    timex = _Timex()
    result = adjtimex(ctypes.byref(timex))
    if result < 0:
        logger.debug("adjtimex failed: errno %d", ctypes.get_errno())
        return None
    return not (timex.status & STA_UNSYNC) and result != TIME_ERROR


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A moment in UTC, where it came from, and whether it is believed wrong (and why)."""

    utc: datetime
    source: TimeSource
    suspect: bool
    reason: str | None = None


class ClockMonitor:
    """Stamps times and keeps track of whether the system clock can be trusted.

    Each call to :meth:`now` compares how far the wall clock and the monotonic clock moved since the
    previous call; a difference above ``jump_threshold_s`` is a clock jump. After a jump, or after GPS
    time disagreed with the wall clock, stamps stay suspect until the clock is confirmed again, by a GPS
    fix that agrees within ``gps_agreement_s`` or by the kernel reporting NTP synchronisation.

    ``wall``, ``monotonic`` and ``sync_check`` are injectable so tests can jump a clock; a fix passed to
    :meth:`now` must have its ``received_monotonic`` on the same monotonic clock.
    """

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        jump_threshold_s: float = 2.0,
        gps_agreement_s: float = 1.5,
        *,
        gps_max_age_s: float = 5.0,
        sync_check: Callable[[], bool | None] = kernel_clock_synchronised,
        sync_cache_s: float = 30.0,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self.jump_threshold_s = jump_threshold_s
        self.gps_agreement_s = gps_agreement_s
        self.gps_max_age_s = gps_max_age_s
        self._sync_check = sync_check
        self.sync_cache_s = sync_cache_s
        self._lock = threading.Lock()
        self._previous: tuple[float, float] | None = None
        # Why the clock is distrusted beyond the current call; None while it is trusted.
        self._distrust: str | None = None
        self._sync_cached: tuple[float, bool | None] | None = None
        self._jumps = 0

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"clock_jumps": self._jumps}

    def now(self, fix: GpsFix | None = None) -> Timestamp:
        wall = self._wall()
        mono = self._monotonic()
        utc = datetime.fromtimestamp(wall, UTC)
        with self._lock:
            self._check_jump(wall, mono)
            reasons: list[str] = []
            source: TimeSource = "system"
            gps_offset = self._gps_offset(fix, wall, mono)
            if gps_offset is not None and abs(gps_offset) <= self.gps_agreement_s:
                source = "gps"
                self._trust("GPS")
            else:
                if gps_offset is not None:
                    reason = f"system clock differs from GPS by {gps_offset:+.1f} s"
                    reasons.append(reason)
                    self._distrust_because(reason)
                if self._synchronised(mono):
                    source = "ntp"
                    # NTP vouches for the clock only when GPS, if present, does not contradict it.
                    if gps_offset is None:
                        self._trust("NTP")
                if self._distrust is not None and self._distrust not in reasons:
                    reasons.append(self._distrust)
            if utc < EARLIEST_PLAUSIBLE:
                reasons.append(f"clock not set ({utc:%Y-%m-%d} is before {EARLIEST_PLAUSIBLE:%Y-%m-%d})")
        return Timestamp(utc=utc, source=source, suspect=bool(reasons), reason="; ".join(reasons) or None)

    # -- helpers (called with the lock held) ---------------------------------------------------------

    def _check_jump(self, wall: float, mono: float) -> None:
        previous, self._previous = self._previous, (wall, mono)
        if previous is None:
            return
        jump = (wall - previous[0]) - (mono - previous[1])
        if abs(jump) <= self.jump_threshold_s:
            return
        self._jumps += 1
        # A cached "synchronised" from before the jump says nothing about the clock after it.
        self._sync_cached = None
        logger.warning("system clock jumped by %+.1f s; time stamps are suspect until confirmed", jump)
        self._distrust = f"clock jumped by {jump:+.1f} s and is not yet confirmed by GPS or NTP"

    def _gps_offset(self, fix: GpsFix | None, wall: float, mono: float) -> float | None:
        """Wall clock minus GPS time (seconds), or None when the fix cannot vouch for the time."""
        if fix is None or fix.gps_time is None or fix.mode < MODE_2D:
            return None
        age = mono - fix.received_monotonic
        if not 0.0 <= age <= self.gps_max_age_s:
            return None
        # Carry the GPS time forward by how long ago the fix arrived, on the clock that cannot jump.
        return wall - (fix.gps_time.timestamp() + age)

    def _synchronised(self, mono: float) -> bool:
        cached = self._sync_cached
        if cached is None or mono - cached[0] > self.sync_cache_s or mono < cached[0]:
            try:
                value = self._sync_check()
            except Exception:  # a diagnostic must never stop time stamping
                logger.exception("clock synchronisation check failed")
                value = None
            cached = self._sync_cached = (mono, value)
        return cached[1] is True

    def _distrust_because(self, reason: str) -> None:
        if self._distrust is None:
            logger.warning("time stamps are suspect: %s", reason)
        self._distrust = reason

    def _trust(self, by: str) -> None:
        if self._distrust is not None:
            logger.info("system clock confirmed by %s; time stamps trusted again", by)
            self._distrust = None
