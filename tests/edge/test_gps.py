"""GPS sources against a real gpsd (replaying a synthetic NMEA log through gpsfake) and a raw TCP peer."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path

import pytest

from edge.gps import FixedPosition, GpsdClient, GpsFix, PositionSource, TpvError, fix_from_tpv

ROUTE = Path(__file__).resolve().parents[1] / "data" / "gps" / "route.nmea"
# The synthetic route (tests/data/gps/make_route.py): due east along 32.7157 N for 60 s at 13 m/s.
ROUTE_LAT = 32.7157
ROUTE_LON_WEST, ROUTE_LON_EAST = -117.1611, -117.1528
NEAR_DEG = 0.01
INSTALL_HINT = "gpsfake/gpsd not found: install them with `apt-get install gpsd gpsd-clients`"


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class GpsFake:
    """gpsfake replaying ROUTE in a loop, with its own gpsd listening on ``port``."""

    def __init__(self, port: int, log_dir: Path, socket_dir: Path) -> None:
        self.port = port
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.env = dict(
            os.environ,
            # gpsfake looks for gpsd on PATH; /usr/sbin is often missing from it for non-root users.
            PATH=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin",
            # gpsd's control socket goes to $TMPDIR and is not removed when gpsd is killed.
            TMPDIR=str(socket_dir),
        )
        self.gpsfake = shutil.which("gpsfake", path=self.env["PATH"])
        if self.gpsfake is None or shutil.which("gpsd", path=self.env["PATH"]) is None:
            pytest.fail(INSTALL_HINT, pytrace=False)

    def start(self) -> None:
        assert self.gpsfake is not None
        self.starts += 1
        stderr_path = self.log_dir / f"gpsfake-{self.starts}.stderr"
        # -n: gpsd reads the fake device before any client connects; -c 0.2: 0.2 s between sentences,
        # so the 60 s log plays in 24 s; without -1 gpsfake loops the log forever.
        cmd = [self.gpsfake, "-q", "-n", "-c", "0.2", "-P", str(self.port), str(ROUTE)]
        with stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self.env,
                start_new_session=True,  # own process group, so gpsd goes down with it at teardown
            )
        if not wait_for(lambda: port_open(self.port) or self.proc is None or self.proc.poll() is not None, 10.0):
            self.stop()
            pytest.fail(f"gpsd did not listen on port {self.port} within 10 s: {stderr_path.read_text()}")
        if self.proc.poll() is not None:
            pytest.fail(f"gpsfake exited with {self.proc.returncode}: {stderr_path.read_text()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        # gpsd is in the group too but not our child: make sure it has let go of the port.
        wait_for(lambda: not port_open(self.port), 5.0)


@pytest.fixture
def gpsfake(tmp_path: Path) -> Iterator[GpsFake]:
    # A short directory of its own: a Unix socket path must fit in 108 bytes, which pytest's
    # tmp_path does not promise.
    socket_dir = Path(tempfile.mkdtemp(prefix="gpsfake-"))
    fake: GpsFake | None = None
    try:
        fake = GpsFake(free_port(), tmp_path, socket_dir)
        fake.start()
        yield fake
    finally:
        if fake is not None:
            fake.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def gps_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="edge.gps")
    return caplog


def assert_no_coordinates_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        if record.levelno > logging.DEBUG:
            message = record.getMessage()
            assert "32.71" not in message and "117.1" not in message, message


def assert_on_route(fix: GpsFix) -> None:
    assert abs(fix.latitude - ROUTE_LAT) < NEAR_DEG
    assert ROUTE_LON_WEST - NEAR_DEG <= fix.longitude <= ROUTE_LON_EAST + NEAR_DEG
    assert fix.speed_mps is not None and abs(fix.speed_mps - 13.0) < 1.0
    assert fix.heading_deg is not None and abs(fix.heading_deg - 90.0) < 2.0


# -- real gpsd ---------------------------------------------------------------------------------------


def test_gpsd_client_follows_gpsfake(gpsfake: GpsFake, gps_logs: pytest.LogCaptureFixture) -> None:
    client = GpsdClient(port=gpsfake.port, stale_after_s=3.0, reconnect_min_s=0.1, reconnect_max_s=0.5)
    client.start()
    try:
        assert wait_for(lambda: client.latest() is not None, 10.0), client.status()
        fix = client.latest()
        assert fix is not None
        assert fix.source == "gpsd"
        assert fix.mode in (2, 3)
        assert client.status() == ("3d" if fix.mode == 3 else "2d")
        assert_on_route(fix)
        assert fix.gps_time is not None and fix.gps_time.tzinfo is not None
        assert fix.gps_time.utcoffset() == UTC.utcoffset(None)
        assert fix.gps_time.year == 2024  # the log's date, not the host's
        assert 0 <= fix.age() < 3.0
        # gpsd's very first report can be 2D (RMC seen, GGA not yet); from the next cycle on it is 3D.
        assert wait_for(lambda: client.status() == "3d", 3.0), client.status()
        fix3d = client.latest()
        assert fix3d is not None and fix3d.mode == 3
        assert fix3d.altitude_m is not None and abs(fix3d.altitude_m - 25.0) < 1.0  # altHAE, not altMSL
        assert fix3d.eph_m is not None and fix3d.eph_m > 0
        # The route moves ~5 m between reports (0.4 s apart): the client keeps following it.
        assert wait_for(lambda: (f := client.latest()) is not None and f.longitude != fix.longitude, 3.0)
        counters = client.counters()
        assert counters["tpv"] >= 2 and counters["parse_errors"] == 0
    finally:
        client.stop()
    assert_no_coordinates_above_debug(gps_logs)


def test_gpsd_outage_and_recovery(gpsfake: GpsFake, gps_logs: pytest.LogCaptureFixture) -> None:
    client = GpsdClient(port=gpsfake.port, stale_after_s=2.0, reconnect_min_s=0.1, reconnect_max_s=0.5)
    client.start()
    try:
        assert wait_for(lambda: client.latest() is not None, 10.0), client.status()

        gpsfake.stop()
        assert wait_for(lambda: client.status() in ("disconnected", "stale") and client.latest() is None, 4.0)
        assert client.status() == "disconnected"

        gpsfake.start()
        assert wait_for(lambda: client.latest() is not None, 10.0), client.status()
        fix = client.latest()
        assert fix is not None
        assert_on_route(fix)
        assert client.counters()["reconnects"] >= 1
    finally:
        client.stop()
    lost = [r for r in gps_logs.records if r.levelno == logging.WARNING and "lost" in r.getMessage()]
    assert len(lost) == 1  # one warning per outage, not one per retry
    assert_no_coordinates_above_debug(gps_logs)


# -- a raw TCP peer ----------------------------------------------------------------------------------


class LineServer:
    """A fake gpsd on localhost: accepts one client and sends whatever the test tells it to."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10.0)
        self.port: int = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.watch = b""
        self._accepted = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(5.0)
        self.watch = conn.recv(1024)
        self.conn = conn
        self._accepted.set()

    def send(self, *lines: bytes) -> None:
        assert self._accepted.wait(5.0), "client never connected"
        assert self.conn is not None
        self.conn.sendall(b"".join(lines))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        self._thread.join(1.0)


@pytest.fixture
def line_server() -> Iterator[LineServer]:
    server = LineServer()
    try:
        yield server
    finally:
        server.close()


VALID_TPV = (
    b'{"class":"TPV","device":"/dev/ttyACM0","mode":3,"time":"2024-05-14T17:00:10.000Z",'
    b'"lat":32.7157,"lon":-117.1597,"alt":60.0,"epx":3.0,"epy":4.0,"epv":7.5,"track":90.0,"speed":13.0}\n'
)


def test_garbage_is_counted_and_valid_tpv_used(line_server: LineServer, gps_logs: pytest.LogCaptureFixture) -> None:
    client = GpsdClient(port=line_server.port, stale_after_s=1.0, reconnect_min_s=0.1, reconnect_max_s=0.5)
    client.start()
    try:
        line_server.send(
            b"this is not json\n",
            b'{"class":"TPV","mode":3,"lat":\n',  # truncated
            b"[1, 2, 3]\n",  # JSON, but not an object
            b'{"class":"TPV","mode":"3","lat":1.0,"lon":2.0}\n',  # mode is a string
            b"\xff\xfe\x00garbage\n",  # not UTF-8
            b'{"class":"VERSION","release":"3.22","proto_major":3,"proto_minor":14}\n',  # ignored, not an error
            b'{"class":"SKY","satellites":[]}\n',
            b"\n",
            VALID_TPV,
        )
        assert wait_for(lambda: client.latest() is not None, 5.0), client.status()
        assert line_server.watch.startswith(b"?WATCH=") and b'"json":true' in line_server.watch
        fix = client.latest()
        assert fix is not None
        assert (fix.latitude, fix.longitude, fix.mode) == (32.7157, -117.1597, 3)
        assert fix.altitude_m == 60.0  # no altHAE from this (older) gpsd, so "alt"
        assert fix.eph_m == pytest.approx(5.0)  # hypot(epx, epy)
        assert fix.epv_m == 7.5
        assert fix.gps_time is not None and fix.gps_time.tzinfo is not None and fix.gps_time.second == 10
        assert client.counters()["parse_errors"] == 5
        assert client.status() == "3d"

        # A TPV without a fix withdraws the position at once.
        line_server.send(b'{"class":"TPV","mode":1,"time":"2024-05-14T17:00:11.000Z"}\n')
        assert wait_for(lambda: client.status() == "no-fix", 3.0), client.status()
        assert client.latest() is None

        # A fix that stops being refreshed goes stale.
        line_server.send(VALID_TPV)
        assert wait_for(lambda: client.status() == "3d", 3.0), client.status()
        assert wait_for(lambda: client.status() == "stale", 3.0), client.status()
        assert client.latest() is None

        # An endless line is dropped rather than buffered, and the client carries on.
        before = client.counters()["parse_errors"]
        line_server.send(b"x" * 100_000 + b"\n", VALID_TPV)
        assert wait_for(lambda: client.latest() is not None, 3.0), client.status()
        assert client.counters()["parse_errors"] > before

        started = time.monotonic()
        client.stop()
        assert time.monotonic() - started < 1.5
    finally:
        client.stop()
    assert_no_coordinates_above_debug(gps_logs)


def test_closed_port_is_disconnected_without_raising(gps_logs: pytest.LogCaptureFixture) -> None:
    client = GpsdClient(port=free_port(), reconnect_min_s=0.05, reconnect_max_s=0.2)
    client.start()
    try:
        assert wait_for(lambda: client.counters()["connect_failures"] >= 3, 5.0)
        assert client.status() == "disconnected"
        assert client.latest() is None
    finally:
        started = time.monotonic()
        client.stop()
        assert time.monotonic() - started < 1.5
    warnings = [r for r in gps_logs.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one per outage, not per retry


def test_stop_without_start_and_restart() -> None:
    client = GpsdClient(port=free_port(), reconnect_min_s=0.05, reconnect_max_s=0.1)
    client.stop()
    client.start()
    client.start()  # idempotent
    client.stop()
    client.start()
    client.stop()
    assert client.status() == "disconnected"


def test_backoff_is_bounded_by_settings() -> None:
    with pytest.raises(ValueError):
        GpsdClient(reconnect_min_s=2.0, reconnect_max_s=1.0)
    with pytest.raises(ValueError):
        GpsdClient(stale_after_s=0)


# -- TPV parsing -------------------------------------------------------------------------------------


def test_tpv_without_fix_or_position_gives_none() -> None:
    assert fix_from_tpv({"class": "TPV", "mode": 1}, 0.0) is None
    assert fix_from_tpv({"class": "TPV"}, 0.0) is None
    assert fix_from_tpv({"class": "TPV", "mode": 3, "lat": 1.0}, 0.0) is None


def test_tpv_2d_fix_has_no_altitude() -> None:
    fix = fix_from_tpv({"class": "TPV", "mode": 2, "lat": 1.0, "lon": 2.0, "altHAE": 5.0, "eph": 12.0}, 42.0)
    assert fix is not None
    assert fix.altitude_m is None and fix.eph_m == 12.0 and fix.received_monotonic == 42.0
    assert fix.speed_mps is None and fix.heading_deg is None and fix.gps_time is None


@pytest.mark.parametrize(
    "msg",
    [
        {"mode": 3, "lat": 91.0, "lon": 0.0},
        {"mode": 3, "lat": 0.0, "lon": "east"},
        {"mode": 3, "lat": 0.0, "lon": 0.0, "speed": True},
        {"mode": 3, "lat": 0.0, "lon": 0.0, "time": "2024-05-14T17:00:10"},  # no zone
        {"mode": 3, "lat": 0.0, "lon": 0.0, "time": "yesterday"},
        {"mode": 3.0, "lat": 0.0, "lon": 0.0},
    ],
)
def test_malformed_tpv_raises(msg: dict[str, object]) -> None:
    with pytest.raises(TpvError):
        fix_from_tpv({"class": "TPV", **msg}, 0.0)


# -- fixed installations -----------------------------------------------------------------------------


def test_fixed_position() -> None:
    source: PositionSource = FixedPosition(32.7157, -117.1611, heading_deg=270.0, altitude_m=20.0)
    source.start()
    fix = source.latest()
    assert fix is not None
    assert (fix.latitude, fix.longitude, fix.heading_deg, fix.altitude_m) == (32.7157, -117.1611, 270.0, 20.0)
    assert fix.mode == 3 and fix.source == "fixed" and fix.speed_mps == 0.0
    assert 0 <= fix.age() < 1.0
    assert source.status() == "fixed"
    assert source.counters() == {}
    source.stop()
    assert source.latest() is not None


@pytest.mark.parametrize(
    ("lat", "lon", "heading"), [(90.5, 0.0, None), (0.0, -181.0, None), (math.nan, 0.0, None), (0.0, 0.0, 360.0)]
)
def test_fixed_position_rejects_impossible_values(lat: float, lon: float, heading: float | None) -> None:
    with pytest.raises(ValueError):
        FixedPosition(lat, lon, heading_deg=heading)


def test_gpsd_client_is_a_position_source() -> None:
    source: PositionSource = GpsdClient(port=free_port())
    assert source.status() == "disconnected" and source.latest() is None
