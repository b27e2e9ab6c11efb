"""ClockMonitor with injected clocks: a real clock cannot be jumped inside a test."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from edge.clock import ClockMonitor, Timestamp, kernel_clock_synchronised
from edge.gps import GpsFix

START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


class FakeClocks:
    """A wall clock and a monotonic clock that the test moves by hand."""

    def __init__(self, start: datetime = START) -> None:
        self.wall_s = start.timestamp()
        self.mono_s = 1000.0

    def wall(self) -> float:
        return self.wall_s

    def monotonic(self) -> float:
        return self.mono_s

    def tick(self, seconds: float) -> None:
        """Time passing normally: both clocks move together."""
        self.wall_s += seconds
        self.mono_s += seconds

    def jump(self, wall_s: float, mono_s: float) -> None:
        self.wall_s += wall_s
        self.mono_s += mono_s


class SyncCheck:
    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool | None:
        self.calls += 1
        return self.answer


def monitor(clocks: FakeClocks, synced: bool | None = None) -> tuple[ClockMonitor, SyncCheck]:
    check = SyncCheck(synced)
    return ClockMonitor(wall=clocks.wall, monotonic=clocks.monotonic, sync_check=check), check


def gps_fix(clocks: FakeClocks, offset_s: float = 0.0, age_s: float = 0.3, mode: int = 3) -> GpsFix:
    """A fix received ``age_s`` ago whose GPS time is the wall clock's plus ``offset_s``."""
    gps_time = datetime.fromtimestamp(clocks.wall_s - age_s + offset_s, UTC)
    return GpsFix(
        latitude=32.7157,
        longitude=-117.1611,
        altitude_m=25.0,
        speed_mps=13.0,
        heading_deg=90.0,
        mode=mode,
        eph_m=5.0,
        epv_m=8.0,
        gps_time=gps_time,
        received_monotonic=clocks.mono_s - age_s,
        source="gpsd",
    )


def assert_utc(stamp: Timestamp) -> None:
    assert stamp.utc.tzinfo is not None
    assert stamp.utc.utcoffset() == timedelta(0)


def test_plain_system_clock() -> None:
    clocks = FakeClocks()
    clock, _ = monitor(clocks)
    stamp = clock.now()
    assert stamp == Timestamp(utc=START, source="system", suspect=False, reason=None)
    clocks.tick(1.0)
    assert clock.now().utc == START + timedelta(seconds=1)
    assert clock.counters() == {"clock_jumps": 0}


def test_jump_makes_stamps_suspect_until_gps_confirms(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.clock")
    clocks = FakeClocks()
    clock, _ = monitor(clocks)
    assert not clock.now().suspect

    clocks.jump(wall_s=30.0, mono_s=1.0)
    stamp = clock.now()
    assert_utc(stamp)
    assert stamp.suspect and stamp.source == "system"
    assert stamp.reason is not None and "jumped by +29.0 s" in stamp.reason
    assert clock.counters() == {"clock_jumps": 1}
    assert any(r.levelno == logging.WARNING and "jumped" in r.getMessage() for r in caplog.records)

    clocks.tick(1.0)
    assert clock.now().suspect  # still unconfirmed; no new jump
    assert clock.counters() == {"clock_jumps": 1}

    clocks.tick(1.0)
    confirmed = clock.now(gps_fix(clocks))
    assert confirmed.source == "gps" and not confirmed.suspect and confirmed.reason is None

    clocks.tick(1.0)
    after = clock.now()
    assert after.source == "system" and not after.suspect


def test_backward_jump_is_detected() -> None:
    clocks = FakeClocks()
    clock, _ = monitor(clocks)
    clock.now()
    clocks.jump(wall_s=-3600.0, mono_s=0.5)
    stamp = clock.now()
    assert stamp.suspect and stamp.reason is not None and "-3600.5 s" in stamp.reason
    assert stamp.utc < START  # kept as the clock gave it, not rewritten


def test_small_drift_is_not_a_jump() -> None:
    clocks = FakeClocks()
    clock, _ = monitor(clocks)
    clock.now()
    clocks.jump(wall_s=11.5, mono_s=10.0)  # 1.5 s apart: under the 2 s threshold (e.g. an NTP slew)
    assert not clock.now().suspect
    assert clock.counters() == {"clock_jumps": 0}


def test_gps_agreement_gives_gps_source() -> None:
    clocks = FakeClocks()
    clock, _ = monitor(clocks, synced=True)
    stamp = clock.now(gps_fix(clocks, offset_s=0.8))
    assert stamp.source == "gps" and not stamp.suspect
    assert stamp.utc == START  # the wall clock's time, not GPS's
    assert_utc(stamp)


def test_gps_disagreement_is_suspect_and_persists(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.clock")
    clocks = FakeClocks()
    clock, _ = monitor(clocks, synced=True)
    stamp = clock.now(gps_fix(clocks, offset_s=-10.0))
    assert stamp.suspect
    assert stamp.reason == "system clock differs from GPS by +10.0 s"
    assert stamp.utc == START  # keeps the wall clock; no silent rewrite
    assert stamp.source == "ntp"  # what the kernel claims, but GPS contradicts it

    clocks.tick(1.0)
    assert clock.now(gps_fix(clocks, offset_s=-10.0)).suspect
    assert len([r for r in caplog.records if "suspect" in r.getMessage()]) == 1  # once, not per stamp

    # Without a fix the clock is still the one GPS said was wrong.
    clocks.tick(1.0)
    clock_without_sync, _ = monitor(clocks)
    clock_without_sync.now(gps_fix(clocks, offset_s=-10.0))
    clocks.tick(1.0)
    later = clock_without_sync.now()
    assert later.suspect and later.reason == "system clock differs from GPS by +10.0 s"

    clocks.tick(1.0)
    assert not clock_without_sync.now(gps_fix(clocks)).suspect


@pytest.mark.parametrize(("age_s", "mode"), [(30.0, 3), (0.2, 1)])
def test_stale_or_fixless_gps_cannot_vouch(age_s: float, mode: int) -> None:
    clocks = FakeClocks()
    clock, _ = monitor(clocks)
    stamp = clock.now(gps_fix(clocks, offset_s=-100.0, age_s=age_s, mode=mode))
    assert stamp.source == "system" and not stamp.suspect


def test_ntp_sync_gives_source_and_confirms_after_jump() -> None:
    clocks = FakeClocks()
    clock, check = monitor(clocks, synced=False)
    clock.now()
    clocks.jump(wall_s=120.0, mono_s=1.0)
    assert clock.now().suspect

    check.answer = True
    clocks.tick(31.0)  # past the cache
    stamp = clock.now()
    assert stamp.source == "ntp" and not stamp.suspect


def test_sync_check_is_cached_and_refreshed_after_a_jump() -> None:
    clocks = FakeClocks()
    clock, check = monitor(clocks, synced=True)
    for _ in range(10):
        assert clock.now().source == "ntp"
        clocks.tick(1.0)
    assert check.calls == 1

    clocks.tick(30.0)
    clock.now()
    assert check.calls == 2

    # A stepped clock invalidates the cached answer: ask the kernel again at once.
    check.answer = False
    clocks.jump(wall_s=50.0, mono_s=1.0)
    stamp = clock.now()
    assert check.calls == 3
    assert stamp.suspect and stamp.source == "system"


def test_failing_sync_check_is_treated_as_unknown() -> None:
    def broken() -> bool | None:
        raise OSError("no adjtimex here")

    clocks = FakeClocks()
    clock = ClockMonitor(wall=clocks.wall, monotonic=clocks.monotonic, sync_check=broken)
    stamp = clock.now()
    assert stamp.source == "system" and not stamp.suspect


def test_clock_before_2024_is_always_suspect() -> None:
    clocks = FakeClocks(datetime(1970, 1, 1, 0, 1, tzinfo=UTC))
    clock, _ = monitor(clocks, synced=True)
    stamp = clock.now()
    assert stamp.suspect and stamp.reason is not None and "clock not set" in stamp.reason
    assert_utc(stamp)

    clocks = FakeClocks(datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC))
    clock, _ = monitor(clocks)
    assert clock.now().suspect
    clocks.tick(1.0)
    assert not clock.now().suspect  # 2024-01-01T00:00:00Z is fine


def test_kernel_clock_synchronised_does_not_raise() -> None:
    assert kernel_clock_synchronised() in (True, False, None)


def test_real_clocks() -> None:
    clock = ClockMonitor()
    first, second = clock.now(), clock.now()
    for stamp in (first, second):
        assert_utc(stamp)
        assert stamp.source in ("ntp", "system")
    assert second.utc >= first.utc - timedelta(seconds=1)
    assert clock.counters() == {"clock_jumps": 0}
