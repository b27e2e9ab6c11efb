"""Capture sources and the per-camera worker, against real OpenCV videos and image files written per test."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.capture import (
    PICAMERA2_INSTALL_HINT,
    CameraConfig,
    CameraWorker,
    CaptureError,
    DirectorySource,
    EndOfStream,
    Frame,
    FramePacer,
    LatestFrameQueue,
    OpenCvSource,
    Picamera2Source,
    make_source,
    opencv_has_gstreamer,
    redact_uri,
)
from edge.recognition.types import BgrImage

WIDTH, HEIGHT = 320, 240
# Short back-off so reconnection tests finish in well under a second of waiting.
FAST_RECONNECT = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2}


# -- helpers ---------------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def write_video(path: Path, frames: list[BgrImage], fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG/AVI"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def graded_frames(n: int) -> list[BgrImage]:
    """Frames whose brightness rises with their number, so order survives JPEG compression."""
    return [np.full((HEIGHT, WIDTH, 3), 10 + 8 * i, np.uint8) for i in range(n)]


def static_frames(n: int) -> list[BgrImage]:
    image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    cv2.rectangle(image, (100, 80), (180, 140), (200, 60, 30), -1)
    return [image.copy() for _ in range(n)]


def moving_square_frames(n: int) -> list[BgrImage]:
    frames: list[BgrImage] = []
    for i in range(n):
        image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        x = 20 + 12 * i
        cv2.rectangle(image, (x, 90), (x + 40, 130), (255, 255, 255), -1)
        frames.append(image)
    return frames


def noise_image(seed: int) -> BgrImage:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)


def write_png(path: Path, image: BgrImage) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def drain(queue: LatestFrameQueue) -> list[Frame]:
    frames = []
    while (frame := queue.get(timeout=0)) is not None:
        frames.append(frame)
    return frames


@contextmanager
def running(worker: CameraWorker) -> Iterator[CameraWorker]:
    worker.start()
    try:
        yield worker
    finally:
        assert worker.stop(timeout=3.0)


def config(uri: str = "unused", **overrides: Any) -> CameraConfig:
    values: dict[str, Any] = {"camera_id": "cam1", "uri": uri, "queue_size": 256, **FAST_RECONNECT}
    values.update(overrides)
    return CameraConfig(**values)


def make_frame(index: int) -> Frame:
    return Frame("cam1", index, np.zeros((4, 4, 3), np.uint8), time.monotonic(), datetime.now(UTC))


# -- video files -----------------------------------------------------------------------------------------


def test_video_file_delivers_every_frame_in_order_then_ends(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", graded_frames(12))
    worker = CameraWorker(config(str(video)), OpenCvSource(str(video)))
    with running(worker):
        assert worker.wait(timeout=10), "EndOfStream should end the worker by itself"
    stats = worker.stats()
    assert (stats.frames_captured, stats.frames_delivered, stats.dropped) == (12, 12, 0)
    assert stats.reconnects == 0 and stats.read_errors == 0 and stats.last_error is None
    assert not stats.connected
    frames = drain(worker.queue)
    assert [f.index for f in frames] == list(range(12))
    assert all(a.monotonic_s <= b.monotonic_s for a, b in zip(frames, frames[1:], strict=False))
    brightness = [float(f.image.mean()) for f in frames]
    assert brightness == sorted(brightness)
    first = frames[0]
    assert first.camera_id == "cam1" and first.image.shape == (HEIGHT, WIDTH, 3) and first.image.dtype == np.uint8
    assert first.utc.tzinfo is not None and first.utc.utcoffset() == UTC.utcoffset(None)


def test_video_file_source_ends_or_loops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", graded_frames(5))
    once = OpenCvSource(str(video))
    once.open()
    try:
        assert sum(once.read() is not None for _ in range(5)) == 5
        with pytest.raises(EndOfStream):
            once.read()
    finally:
        once.close()
    looping = OpenCvSource(str(video), loop=True)
    looping.open()
    try:
        assert all(looping.read() is not None for _ in range(13))
    finally:
        looping.close()


def test_looping_worker_keeps_going(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", graded_frames(5))
    worker = CameraWorker.from_config(config(str(video), loop=True, queue_size=2))
    with running(worker):
        assert wait_for(lambda: worker.stats().frames_captured > 15, 10)
        assert worker.running
        stats = worker.stats()
        # Replaying the file is not a reconnection (connected blinks False during the reopen, so not asserted).
        assert stats.reconnects == 0 and stats.last_error is None and stats.fps > 0
        # The consumer never read, so the 2-frame queue kept the newest and counted the rest.
        assert len(worker.queue) == 2 and stats.dropped >= 10
    assert not worker.running


def test_target_fps_skips_frames_from_a_faster_source(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", graded_frames(30))
    worker = CameraWorker(config(str(video), target_fps=10.0), OpenCvSource(str(video)))
    with running(worker):
        assert worker.wait(timeout=10)
    stats = worker.stats()
    assert stats.frames_captured == 30
    assert 0 < stats.frames_delivered < stats.frames_captured
    assert drain(worker.queue)[0].index == 0


def test_pacer_keeps_target_rate_of_a_jittery_camera() -> None:
    pacer = FramePacer(10.0)
    rng = np.random.default_rng(1)
    arrivals = [i / 30 + float(rng.uniform(-0.005, 0.005)) for i in range(300)]  # 10 s of 30 fps
    kept = sum(pacer.due(100.0 + t) for t in arrivals)
    assert 99 <= kept <= 101
    assert sum(FramePacer(0).due(t) for t in arrivals) == 300


# -- queue -----------------------------------------------------------------------------------------------


def test_queue_drops_oldest_and_counts() -> None:
    queue = LatestFrameQueue(maxsize=2)
    for i in range(5):
        queue.put(make_frame(i))
    assert queue.dropped == 3 and len(queue) == 2
    got = [queue.get(timeout=0.1), queue.get(timeout=0.1)]
    assert [f.index for f in got if f is not None] == [3, 4]
    started = time.monotonic()
    assert queue.get(timeout=0.05) is None
    assert time.monotonic() - started < 1.0
    with pytest.raises(ValueError):
        LatestFrameQueue(maxsize=0)


def test_queue_put_never_blocks_with_a_slow_consumer() -> None:
    queue = LatestFrameQueue(maxsize=3)
    received: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or len(queue):
            frame = queue.get(timeout=0.05)
            if frame is not None:
                received.append(frame.index)
                time.sleep(0.01)  # slower than the producer

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    started = time.monotonic()
    for i in range(2000):
        queue.put(make_frame(i))
    put_s = time.monotonic() - started
    done.set()
    consumer.join(5)
    assert put_s < 2.0
    assert queue.dropped > 0
    assert len(received) + queue.dropped == 2000
    assert received == sorted(received) and received[-1] == 1999


def test_queue_get_wakes_on_put() -> None:
    queue = LatestFrameQueue()
    threading.Timer(0.05, queue.put, args=(make_frame(7),)).start()
    frame = queue.get(timeout=5)
    assert frame is not None and frame.index == 7


# -- directories -----------------------------------------------------------------------------------------


def test_directory_skips_corrupt_and_empty_files(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    write_png(folder / "01.png", noise_image(1))
    ok, jpeg = cv2.imencode(".jpg", noise_image(2))
    assert ok
    (folder / "02.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])  # truncated JPEG
    (folder / "03.jpg").write_bytes(b"")
    write_png(folder / "04.png", noise_image(4))
    (folder / "05.jpg").write_bytes(jpeg.tobytes())
    (folder / "notes.txt").write_text("not an image")

    worker = CameraWorker(config(), DirectorySource(folder))
    with running(worker):
        assert worker.wait(timeout=10)
    stats = worker.stats()
    assert stats.read_errors == 2 and stats.frames_delivered == 3 and stats.last_error is None
    assert [f.image.shape for f in drain(worker.queue)] == [(HEIGHT, WIDTH, 3)] * 3

    # Looping: the worker stays up and a bad file is reported once, not on every pass.
    looping = DirectorySource(folder, loop=True)
    worker = CameraWorker(config(), looping)
    with running(worker):
        assert wait_for(lambda: worker.stats().frames_delivered >= 9, 10)
        assert worker.running and worker.stats().connected
    assert looping.read_errors == 2 and worker.stats().read_errors == 2


def test_a_paced_folder_is_read_on_demand_not_decoded_and_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "paced"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"{i:02d}.png", noise_image(i))
    worker = CameraWorker(config(target_fps=4.0), DirectorySource(folder, loop=True))
    with running(worker):
        assert wait_for(lambda: worker.stats().frames_delivered >= 3, 5)
    stats = worker.stats()
    # Each image decoded is a frame delivered: none is read only to be thrown away by the pacer.
    assert stats.frames_captured - stats.frames_delivered <= 1


def test_directory_that_appears_later_starts_flowing(tmp_path: Path) -> None:
    folder = tmp_path / "later"
    worker = CameraWorker(config(), make_source(f"dir:{folder}"))
    with running(worker):
        assert wait_for(lambda: worker.stats().reconnects >= 1, 3)
        stats = worker.stats()
        assert not stats.connected and stats.last_error is not None and "no such directory" in stats.last_error
        staging = tmp_path / "staging"
        staging.mkdir()
        for i in range(3):
            write_png(staging / f"{i:02d}.png", noise_image(i))
        staging.rename(folder)  # appears complete, so no half-written file is read
        assert wait_for(lambda: worker.stats().frames_delivered == 3, 5)
        assert worker.wait(timeout=5)


# -- lost and blocking sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["{tmp}/missing.avi", "rtsp://127.0.0.1:1/none"])
def test_missing_camera_is_retried_not_fatal(tmp_path: Path, uri: str) -> None:
    uri = uri.format(tmp=tmp_path)
    worker = CameraWorker(config(uri), OpenCvSource(uri))
    worker.start()
    try:
        assert wait_for(lambda: worker.stats().reconnects >= 1, 5)
        stats = worker.stats()
        assert worker.running and not stats.connected
        assert stats.last_error is not None and "cannot open" in stats.last_error
    finally:
        started = time.monotonic()
        assert worker.stop(timeout=3.0)
        assert time.monotonic() - started < 3.5


class FlakySource:
    """Gives ``good`` frames after each open, then only None (or exceptions) until reopened."""

    on_demand = False

    def __init__(self, good: int, fail_with: Exception | None = None) -> None:
        self.name = "flaky"
        self.good = good
        self.fail_with = fail_with
        self.opens = 0
        self.closes = 0
        self._left = 0

    def open(self) -> None:
        self.opens += 1
        self._left = self.good

    def read(self) -> BgrImage | None:
        if self._left > 0:
            self._left -= 1
            return noise_image(self._left)
        if self.fail_with is not None:
            raise self.fail_with
        return None

    def close(self) -> None:
        self.closes += 1


@pytest.mark.parametrize("fail_with", [None, OSError("device gone")])
def test_source_failing_repeatedly_is_closed_and_reopened(fail_with: Exception | None) -> None:
    source = FlakySource(good=3, fail_with=fail_with)
    worker = CameraWorker(config(max_consecutive_failures=5), source)
    with running(worker):
        assert wait_for(lambda: worker.stats().frames_delivered >= 6, 5)
        stats = worker.stats()
    assert source.opens >= 2 and source.closes >= 2
    assert stats.reconnects >= 1 and stats.read_errors >= 5
    assert stats.last_error is not None
    # After a reconnect a raising source's own message may be the latest error; it names the cause either way.
    assert ("device gone" if fail_with is not None else "lost flaky") in stats.last_error


class BlockingSource:
    """A camera whose read() hangs, like a stalled network stream."""

    on_demand = False

    def __init__(self) -> None:
        self.name = "blocking"
        self.release = threading.Event()

    def open(self) -> None:
        pass

    def read(self) -> BgrImage | None:
        self.release.wait(30)
        return None

    def close(self) -> None:
        pass


def test_stop_returns_even_when_source_blocks() -> None:
    source = BlockingSource()
    worker = CameraWorker(config(), source)
    worker.start()
    try:
        assert wait_for(lambda: worker.stats().connected, 2)
        started = time.monotonic()
        assert worker.stop(timeout=0.3) is False
        assert time.monotonic() - started < 1.5
    finally:
        source.release.set()
    assert worker.wait(timeout=5), "the abandoned thread ends once the read returns"


# -- ROI and motion gating -------------------------------------------------------------------------------


def test_roi_blacks_out_outside_and_keeps_inside(tmp_path: Path) -> None:
    folder = tmp_path / "roi"
    folder.mkdir()
    original = noise_image(3)
    original[original == 0] = 1  # so "inside untouched" cannot be confused with "zeroed"
    write_png(folder / "frame.png", original)
    roi = [(100, 50), (220, 50), (220, 150), (100, 150)]
    worker = CameraWorker(config(roi=roi), DirectorySource(folder))
    with running(worker):
        assert worker.wait(timeout=5)
    (frame,) = drain(worker.queue)
    assert frame.image.shape == original.shape
    assert np.array_equal(frame.image[50:151, 100:221], original[50:151, 100:221])
    outside = np.ones(original.shape[:2], bool)
    outside[50:151, 100:221] = False
    assert not frame.image[outside].any()


def test_motion_gating_skips_a_static_scene(tmp_path: Path) -> None:
    video = write_video(tmp_path / "static.avi", static_frames(10))
    worker = CameraWorker(config(str(video), motion_gating=True), OpenCvSource(str(video)))
    with running(worker):
        assert worker.wait(timeout=10)
    stats = worker.stats()
    assert (stats.frames_captured, stats.frames_delivered, stats.motion_skipped) == (10, 1, 9)
    assert [f.index for f in drain(worker.queue)] == [0]


def test_motion_gating_passes_a_moving_object(tmp_path: Path) -> None:
    video = write_video(tmp_path / "moving.avi", moving_square_frames(10))
    worker = CameraWorker(config(str(video), motion_gating=True), OpenCvSource(str(video)))
    with running(worker):
        assert worker.wait(timeout=10)
    stats = worker.stats()
    assert stats.frames_captured == 10 and stats.frames_delivered == 10 and stats.motion_skipped == 0


def test_motion_outside_roi_is_ignored(tmp_path: Path) -> None:
    video = write_video(tmp_path / "moving.avi", moving_square_frames(10))
    roi = [(0, 0), (WIDTH - 1, 0), (WIDTH - 1, 60), (0, 60)]  # a band above the moving square
    worker = CameraWorker(config(str(video), motion_gating=True, roi=roi), OpenCvSource(str(video)))
    with running(worker):
        assert worker.wait(timeout=10)
    assert worker.stats().frames_delivered == 1


# -- source selection, platform hints, config ------------------------------------------------------------


def test_picamera2_missing_gives_install_hint() -> None:
    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CaptureError) as excinfo:
        Picamera2Source().open()
    assert "sudo apt install python3-picamera2" in str(excinfo.value)
    assert str(excinfo.value) == PICAMERA2_INSTALL_HINT


def test_gstreamer_pipeline_without_gstreamer_support_says_so() -> None:
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    source = OpenCvSource("videotestsrc ! videoconvert ! appsink", api="gstreamer")
    with pytest.raises(CaptureError, match="GStreamer"):
        source.open()


def test_make_source_picks_by_uri(tmp_path: Path) -> None:
    assert isinstance(make_source("picamera2:"), Picamera2Source)
    camera = make_source("picamera2:1", size=(640, 480))
    assert isinstance(camera, Picamera2Source) and camera.camera_num == 1 and camera.size == (640, 480)
    assert isinstance(make_source(f"dir:{tmp_path / 'nope'}"), DirectorySource)
    assert isinstance(make_source(str(tmp_path)), DirectorySource)
    for uri in ("0", "/dev/video0", "rtsp://cam/stream", str(tmp_path / "clip.avi")):
        assert isinstance(make_source(uri), OpenCvSource)
    pipeline = make_source("nvarguscamerasrc sensor-id=0 ! nvvidconv ! appsink")
    assert isinstance(pipeline, OpenCvSource) and pipeline.kind == "pipeline"


def test_passwords_never_reach_source_names() -> None:
    uri = "rtsp://admin:s3cret@192.0.2.10:554/stream1"
    assert "s3cret" not in OpenCvSource(uri).name
    assert redact_uri(uri) == "rtsp://admin:***@192.0.2.10:554/stream1"
    assert redact_uri("rtsp://192.0.2.10/stream1") == "rtsp://192.0.2.10/stream1"
    tricky = OpenCvSource("rtsp://admin:p@ss!w0rd@192.0.2.10/stream1")
    assert tricky.kind == "network" and tricky.name == "rtsp://admin:***@192.0.2.10/stream1"
    pipeline = OpenCvSource("rtspsrc location=rtsp://admin:s3cret@192.0.2.10/s ! decodebin ! appsink")
    assert pipeline.kind == "pipeline" and "s3cret" not in pipeline.name


@pytest.mark.parametrize(
    "overrides",
    [
        {"target_fps": -1.0},
        {"motion_threshold": 1.5},
        {"queue_size": 0},
        {"reconnect_min_s": 5.0, "reconnect_max_s": 1.0},
        {"roi": [(0, 0), (1, 1)]},
        {"camera_id": ""},
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        config(**overrides)


def test_config_roi_is_stored_as_tuple() -> None:
    cfg = config(roi=[[0, 0], [10, 0], [10, 10]])
    assert cfg.roi == ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0))
    hash(cfg)
