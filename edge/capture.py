"""Frame capture for the edge node: camera sources and one capture thread per camera.

Capture must never wait for recognition. Each camera runs a :class:`CameraWorker` thread that reads its
:class:`FrameSource` as fast as the source gives frames, paces them to the configured rate, masks them to
a region of interest, drops frames without motion, and hands the rest to a :class:`LatestFrameQueue`.
When the recogniser falls behind, that queue throws away the *oldest* frame and counts it: for plate
reading a fresh frame is worth more than a complete backlog.

A camera that fails to open or stops delivering frames is closed and reopened with exponential back-off.
Each outage is logged once (WARNING when it starts, INFO when the camera is back) and counted in
:class:`CameraStats`; the worker never raises out of its thread.

Sources (all behind the small :class:`FrameSource` protocol; :func:`make_source` picks one from a URI):

* :class:`OpenCvSource` wraps ``cv2.VideoCapture`` and takes

  - a V4L2/USB device: ``"0"`` or ``"/dev/video0"`` (OpenCV's V4L2 backend on Linux; pass ``size`` to ask
    for a resolution, since many USB cameras default to 640x480);
  - a network stream: ``"rtsp://user:password@192.0.2.10:554/stream1"``, ``http://...`` (MJPEG). The
    password is masked in the source name, so it never reaches the logs. FFmpeg uses RTSP over UDP by
    default, which smears frames on a lossy link; set ``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp"``
    in the service environment to use TCP;
  - a video file, which ends with :class:`EndOfStream` unless ``loop=True``;
  - a GStreamer pipeline ending in ``appsink`` (``api="gstreamer"``, or any string containing ``!``).
    This needs an OpenCV built with GStreamer: JetPack's and Raspberry Pi OS's ``python3-opencv`` are,
    the ``opencv-python(-headless)`` wheels from PyPI are not.

  Jetson CSI camera (Argus ISP, hardware colour conversion, keep only the newest buffer)::

      nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1
      ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR
      ! appsink drop=1 max-buffers=1

  USB/V4L2 camera through GStreamer (MJPEG from the camera, because raw YUYV at 720p and above does not
  fit USB 2 bandwidth at 30 fps; on a Jetson ``nvv4l2decoder mjpeg=1`` can replace ``jpegdec``)::

      v4l2src device=/dev/video0 ! image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec
      ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1

  (Each pipeline is one line in the configuration; it is wrapped here for reading.)

* :class:`DirectorySource` replays still images from a folder in file-name order (tests, demos, and
  cameras that drop JPEGs on FTP). Unreadable files are logged, counted and skipped.
* :class:`Picamera2Source` reads a Raspberry Pi camera module through picamera2 (libcamera).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import math
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge.recognition.imageio import ImageLoadError, load_image, to_bgr8
from edge.recognition.types import BgrImage, GrayImage

logger = logging.getLogger(__name__)

PICAMERA2_INSTALL_HINT = (
    "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "(and create the virtual environment with --system-site-packages so it can see the system package)"
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt"})
OPENCV_APIS: dict[str, int] = {
    "auto": cv2.CAP_ANY,
    "ffmpeg": cv2.CAP_FFMPEG,
    "gstreamer": cv2.CAP_GSTREAMER,
    "v4l2": cv2.CAP_V4L2,
}
# FFmpeg's own defaults are 30 s for both; a dead camera should be noticed, and stop() honoured, sooner.
NETWORK_OPEN_TIMEOUT_MS = 10_000
NETWORK_READ_TIMEOUT_MS = 5_000

_URL_PASSWORD = re.compile(r"\b([a-zA-Z][\w+.-]*://[^/\s:@]*):[^\s/]*@")

FPS_WINDOW_S = 5.0
# Bounds the timestamp history; at more than ~200 fps the window just gets shorter than FPS_WINDOW_S.
FPS_MAX_SAMPLES = 1024
# After a failed read, wait this long before the next one so a source that keeps returning None
# does not spin a CPU core (the edge boxes have only a few).
FAILED_READ_PAUSE_S = 0.01
# Motion gating works on a small grayscale copy: cheap on a Pi, and downscaling averages sensor noise away.
MOTION_WIDTH = 160
# A grey level must change by more than this to count as motion; below it is noise and JPEG ringing.
MOTION_PIXEL_DELTA = 25


class CaptureError(RuntimeError):
    """A source cannot be opened or used; the message says which source and why."""


class EndOfStream(Exception):
    """A finite source (a video file, a folder of images) has no more frames."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One captured frame on its way to the recogniser.

    ``index`` counts every frame the camera produced since the worker started (also those skipped by
    pacing or motion gating), so gaps in delivered indices show how much was skipped. ``eq=False``
    because field-wise equality over a numpy array is ambiguous; frames compare by identity.
    """

    camera_id: str
    index: int
    image: BgrImage
    monotonic_s: float
    utc: datetime


class FrameSource(Protocol):
    """A camera, stream, file or folder that frames can be read from."""

    name: str
    """Human-readable and safe to log (no passwords)."""

    on_demand: bool
    """True for sources that make a frame whenever asked (an image folder): the worker then waits for
    the pacer before reading, instead of decoding every image only to drop most of them."""

    def open(self) -> None:
        """Connect; raise :class:`CaptureError` with a clear message when that is not possible."""
        ...

    def read(self) -> BgrImage | None:
        """The next frame; None when there is none right now (a transient failure).

        Raises :class:`EndOfStream` when a finite source is exhausted.
        """
        ...

    def close(self) -> None:
        """Release the device; safe to call when not open."""
        ...


# -- sources ---------------------------------------------------------------------------------------------


def redact_uri(text: str) -> str:
    """``text`` with the password of every URL in it (also one inside a pipeline) replaced by ``***``."""
    # Greedy up to the last "@" before the path, so a password that itself contains "@" is masked whole.
    return _URL_PASSWORD.sub(r"\1:***@", text)


@functools.cache
def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


SourceKind = Literal["device", "network", "file", "pipeline"]


def _classify(uri: str, api: str) -> SourceKind:
    if api == "gstreamer":
        return "pipeline"
    if uri.isdigit() or uri.startswith("/dev/video"):
        return "device"
    # Checked before the "!" test below: a camera password may well contain "!".
    if urlsplit(uri).scheme.lower() in NETWORK_SCHEMES and not any(c.isspace() for c in uri):
        return "network"
    if api == "auto" and "!" in uri:
        return "pipeline"
    return "file"


class OpenCvSource:
    """A device, network stream, video file or GStreamer pipeline read through ``cv2.VideoCapture``.

    ``api`` is one of "auto", "ffmpeg", "gstreamer", "v4l2". ``size`` (width, height) is requested from
    devices only; streams and files come at the size they are.
    """

    on_demand = False

    def __init__(
        self,
        uri: str,
        api: str = "auto",
        loop: bool = False,
        size: tuple[int, int] | None = None,
        realtime: bool = True,
    ) -> None:
        if api not in OPENCV_APIS:
            raise ValueError(f"unknown OpenCV capture api {api!r}; expected one of {', '.join(OPENCV_APIS)}")
        self.uri = uri
        self.api = api
        self.loop = loop
        self.size = size
        self.kind: SourceKind = _classify(uri, api)
        # A pipeline is named by its first element; the whole string is too long for a log line.
        self.name = redact_uri(uri if self.kind != "pipeline" else f"gstreamer:{uri.split('!')[0].strip()}")
        self.realtime = realtime
        self._cap: cv2.VideoCapture | None = None
        self._frame_interval_s = 0.0
        self._next_frame_s: float | None = None

    def _api_preference(self) -> int:
        if self.kind == "pipeline":
            return cv2.CAP_GSTREAMER
        if self.api == "auto" and self.kind == "device" and sys.platform.startswith("linux"):
            # CAP_ANY would let FFmpeg try a device path as a file first and fail confusingly.
            return cv2.CAP_V4L2
        return OPENCV_APIS[self.api]

    def _open_capture(self) -> cv2.VideoCapture:
        if self.kind == "pipeline" and not opencv_has_gstreamer():
            raise CaptureError(
                f"{self.name}: this OpenCV build has no GStreamer support (the PyPI opencv-python wheels "
                "lack it); use the system python3-opencv (JetPack, Raspberry Pi OS) for GStreamer pipelines"
            )
        if self.kind == "file" and not Path(self.uri).is_file():
            raise CaptureError(f"{self.name}: no such video file")
        if self.kind == "device" and not self.uri.isdigit() and not Path(self.uri).exists():
            raise CaptureError(f"{self.name}: no such video device (is the camera plugged in?)")
        api = self._api_preference()
        target: int | str = int(self.uri) if self.uri.isdigit() else self.uri
        params: list[int] = []
        if self.kind == "network":
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                NETWORK_OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                NETWORK_READ_TIMEOUT_MS,
            ]
        cap = cv2.VideoCapture(target, api, params) if isinstance(target, str) else cv2.VideoCapture(target, api)
        if not cap.isOpened():
            cap.release()
            what = {"network": "stream unreachable or refused", "device": "device busy or not a camera"}
            raise CaptureError(f"{self.name}: OpenCV cannot open it ({what.get(self.kind, 'unsupported format')})")
        if self.kind == "device":
            # The newest frame is what we want; V4L2's default queue of 4 adds ~130 ms of latency at 30 fps.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.size is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        return cap

    def open(self) -> None:
        self.close()
        self._cap = self._open_capture()
        fps = self._cap.get(cv2.CAP_PROP_FPS) if self.kind == "file" and self.realtime else 0.0
        # A file replays at its own frame rate, as the camera that recorded it would deliver it.
        self._frame_interval_s = 1.0 / fps if fps and fps > 0 else 0.0
        self._next_frame_s = None

    def _wait_for_frame_time(self) -> None:
        if not self._frame_interval_s:
            return
        now = time.monotonic()
        if self._next_frame_s is None or now - self._next_frame_s > self._frame_interval_s:
            self._next_frame_s = now  # first frame, or we fell behind: restart the schedule
        elif self._next_frame_s > now:
            time.sleep(self._next_frame_s - now)
        self._next_frame_s += self._frame_interval_s

    def read(self) -> BgrImage | None:
        if self._cap is None:
            raise CaptureError(f"{self.name}: read() before open()")
        self._wait_for_frame_time()
        ok, image = self._cap.read()
        if not ok or image is None:
            if self.kind != "file":
                return None
            if not self.loop:
                raise EndOfStream(self.name)
            # Reopening is more reliable than seeking to frame 0, which some codecs do inexactly.
            self._cap.release()
            self._cap = self._open_capture()
            ok, image = self._cap.read()
            if not ok or image is None:
                raise EndOfStream(f"{self.name}: no frames in file")
        if image.ndim == 2 or image.shape[2] != 3:
            return to_bgr8(image)  # a GStreamer pipeline may hand out GRAY8 or BGRx
        return image

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class DirectorySource:
    """Still images from a folder, in file-name order (zero-pad numbered names).

    A file that cannot be decoded is logged (by file name), counted in ``read_errors`` and skipped:
    ``read()`` returns None for it. When looping, a file already reported is skipped silently on later
    passes unless it has changed. The folder is listed again at every pass, so new files join in.
    """

    on_demand = True

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path = Path(path)
        self.loop = loop
        self.name = f"dir:{self.path}"
        self.read_errors = 0
        self._files: list[Path] = []
        self._next = 0
        # Files found unreadable, with the (mtime, size) they had, so a rewritten file is tried again.
        self._bad: dict[Path, tuple[int, int]] = {}

    def _scan(self) -> list[Path]:
        try:
            entries = list(self.path.iterdir())
        except FileNotFoundError:
            raise CaptureError(f"{self.name}: no such directory") from None
        except NotADirectoryError:
            raise CaptureError(f"{self.name}: not a directory") from None
        except OSError as exc:
            raise CaptureError(f"{self.name}: cannot list directory: {exc.strerror or exc}") from None
        return sorted(
            p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )

    def open(self) -> None:
        files = self._scan()
        if not files:
            # Refusing to open lets the worker retry until images arrive, instead of ending at once.
            raise CaptureError(f"{self.name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in directory")
        self._files = files
        self._next = 0

    def read(self) -> BgrImage | None:
        # At most one full pass per call, so a folder of nothing but known-bad files cannot spin here.
        for _ in range(len(self._files) + 1):
            if self._next >= len(self._files):
                if not self.loop:
                    raise EndOfStream(self.name)
                try:
                    self._files = self._scan()
                except CaptureError as exc:
                    logger.debug("%s", exc)
                    self._files = []
                self._next = 0
                if not self._files:
                    return None
            path = self._files[self._next]
            self._next += 1
            signature = _file_signature(path)
            if signature is not None and self._bad.get(path) == signature:
                continue
            try:
                return load_image(path)
            except ImageLoadError as exc:
                self.read_errors += 1
                if signature is not None:
                    self._bad[path] = signature
                logger.warning("skipping image %s: %s", path.name, exc)
                return None
        return None

    def close(self) -> None:
        self._files = []
        self._next = 0


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Picamera2Source:
    """A Raspberry Pi camera module through picamera2 (libcamera).

    picamera2 is imported in :meth:`open`, so the rest of the node runs on machines without it.
    """

    on_demand = False

    def __init__(self, size: tuple[int, int] = (1280, 720), camera_num: int = 0) -> None:
        self.size = size
        self.camera_num = camera_num
        self.name = f"picamera2:{camera_num}"
        self._camera: Any = None

    def open(self) -> None:
        self.close()
        try:
            module = importlib.import_module("picamera2")
        except ImportError:
            raise CaptureError(PICAMERA2_INSTALL_HINT) from None
        try:
            camera = module.Picamera2(self.camera_num)
        except Exception as exc:  # picamera2 raises IndexError/RuntimeError when no camera is attached
            raise CaptureError(f"{self.name}: no camera found ({exc}); check the ribbon cable") from exc
        try:
            # libcamera's "RGB888" is B, G, R in memory: exactly OpenCV's BGR, no conversion needed.
            config = camera.create_video_configuration(main={"size": tuple(self.size), "format": "RGB888"})
            camera.configure(config)
            camera.start()
        except Exception as exc:
            camera.close()
            raise CaptureError(f"{self.name}: cannot start camera: {exc}") from exc
        self._camera = camera

    def read(self) -> BgrImage | None:
        if self._camera is None:
            raise CaptureError(f"{self.name}: read() before open()")
        image: BgrImage | None = self._camera.capture_array("main")
        return image

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            with contextlib.suppress(Exception):
                camera.stop()
            with contextlib.suppress(Exception):
                camera.close()


def make_source(
    uri: str, *, loop: bool = False, api: str = "auto", size: tuple[int, int] | None = None, realtime: bool = True
) -> FrameSource:
    """The source a configured URI names.

    ``picamera2:`` or ``picamera2:N`` (camera N) → :class:`Picamera2Source`; ``dir:PATH`` or an existing
    directory → :class:`DirectorySource`; anything else (device, URL, file, pipeline) → :class:`OpenCvSource`.
    """
    if uri.startswith("picamera2:"):
        number = uri.removeprefix("picamera2:").strip() or "0"
        if not number.isdigit():
            raise ValueError(f"picamera2 camera number must be an integer: {uri!r}")
        return Picamera2Source(size=size or (1280, 720), camera_num=int(number))
    if uri.startswith("dir:"):
        return DirectorySource(Path(uri.removeprefix("dir:")), loop=loop)
    if "!" not in uri and "://" not in uri and Path(uri).is_dir():
        return DirectorySource(Path(uri), loop=loop)
    return OpenCvSource(uri, api=api, loop=loop, size=size, realtime=realtime)


# -- queue -----------------------------------------------------------------------------------------------


class LatestFrameQueue:
    """A bounded, thread-safe queue that keeps the newest frames.

    ``put`` never blocks: when the queue is full the oldest frame is dropped and counted in ``dropped``.
    """

    def __init__(self, maxsize: int = 2) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if len(self._frames) >= self.maxsize:
                self._frames.popleft()
                self._dropped += 1
            self._frames.append(frame)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame, waiting up to ``timeout`` seconds (None: forever); None on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._frames), timeout):
                return None
            return self._frames.popleft()

    @property
    def dropped(self) -> int:
        with self._cond:
            return self._dropped

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)


class LockstepSource:
    """Wraps a source so that it reads its next frame only once the consumer has taken the previous one.

    For recorded footage processed offline (and for tests and benchmarks): no frame is dropped however
    slow recognition is. ``queue`` is the consumer's queue for this camera, set once it exists; until
    then, and after ``wait_s`` without the queue emptying, frames are read as usual.
    """

    on_demand = False

    def __init__(self, source: FrameSource, wait_s: float = 30.0) -> None:
        self.source = source
        self.name = source.name
        self.wait_s = wait_s
        self.queue: LatestFrameQueue | None = None

    def open(self) -> None:
        self.source.open()

    def read(self) -> BgrImage | None:
        deadline = time.monotonic() + self.wait_s
        while self.queue is not None and len(self.queue) and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.source.read()

    def close(self) -> None:
        self.source.close()


# -- per-frame processing --------------------------------------------------------------------------------


class FramePacer:
    """Decides which frames to keep so that at most ``target_fps`` pass; 0 passes everything.

    Due times advance on a fixed schedule rather than from the last kept frame, so a 30 fps camera paced
    to 10 fps keeps 10 a second even though frames arrive a little early or late.
    """

    def __init__(self, target_fps: float) -> None:
        self.interval_s = 1.0 / target_fps if target_fps > 0 else 0.0
        self._next_due: float | None = None

    def wait_s(self, now: float) -> float:
        """How long until a frame would be kept (0 when one would be now)."""
        return 0.0 if self._next_due is None else max(0.0, self._next_due - now)

    def due(self, now: float) -> bool:
        if self.interval_s == 0.0:
            return True
        if self._next_due is not None and now < self._next_due:
            return False
        if self._next_due is None or now - self._next_due >= self.interval_s:
            self._next_due = now + self.interval_s  # first frame, or after a gap: restart the schedule
        else:
            self._next_due += self.interval_s
        return True


def roi_mask(shape: tuple[int, ...], polygon: Sequence[tuple[float, float]]) -> GrayImage:
    """A uint8 mask of the image size: 255 inside the polygon (edges included), 0 outside."""
    mask = np.zeros(shape[:2], np.uint8)
    points = np.round(np.asarray(polygon, np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [points], 255)
    return mask


def apply_mask(image: BgrImage, mask: GrayImage) -> BgrImage:
    """A copy of ``image`` with pixels outside ``mask`` set to 0; same size, so boxes keep frame coordinates."""
    return cv2.bitwise_and(image, image, mask=mask)


class MotionGate:
    """Frame differencing on a small grayscale copy against the previous frame.

    ``changed()`` is True for the first frame, after a change of frame size, and whenever more than
    ``threshold`` of the pixels (of the ROI, when a mask is given) changed noticeably.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: GrayImage | None = None
        self._mask_key: tuple[int, int, int] | None = None
        self._area = 1

    def _small_gray(self, image: BgrImage) -> GrayImage:
        height, width = image.shape[:2]
        scale = min(1.0, MOTION_WIDTH / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(gray, (5, 5), 0)

    def changed(self, image: BgrImage, mask: GrayImage | None = None) -> bool:
        gray = self._small_gray(image)
        previous, self._previous = self._previous, gray
        if previous is None or previous.shape != gray.shape:
            return True
        key = (id(mask), gray.shape[0], gray.shape[1])
        if key != self._mask_key:
            self._mask_key = key
            if mask is None:
                self._area = gray.shape[0] * gray.shape[1]
            else:
                small_mask = cv2.resize(mask, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_NEAREST)
                self._area = max(1, cv2.countNonZero(small_mask))
        _, moving = cv2.threshold(cv2.absdiff(gray, previous), MOTION_PIXEL_DELTA, 255, cv2.THRESH_BINARY)
        return cv2.countNonZero(moving) / self._area > self.threshold


# -- worker ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraConfig:
    """How one camera is captured.

    ``roi`` is a polygon of (x, y) pixel points in frame coordinates; pixels outside it are blacked out.
    ``motion_threshold`` is the fraction of (ROI) pixels that must change for a frame to pass the motion
    gate. A source is treated as lost after ``max_consecutive_failures`` failed reads in a row, or when no
    frame has come for ``stall_timeout_s``.
    """

    camera_id: str
    uri: str
    target_fps: float = 0.0
    roi: Sequence[tuple[float, float]] | None = None
    motion_gating: bool = False
    motion_threshold: float = 0.002
    queue_size: int = 2
    loop: bool = False
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_consecutive_failures: int = 50
    stall_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.camera_id:
            raise ValueError("camera_id must not be empty")
        if not (math.isfinite(self.target_fps) and self.target_fps >= 0):
            raise ValueError(f"target_fps must be >= 0, got {self.target_fps!r}")
        if not 0.0 <= self.motion_threshold < 1.0:
            raise ValueError(f"motion_threshold must be in [0, 1), got {self.motion_threshold!r}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {self.queue_size!r}")
        if not 0.0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if self.max_consecutive_failures < 1:
            raise ValueError("max_consecutive_failures must be at least 1")
        if self.stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be > 0")
        if self.roi is not None:
            points = tuple((float(x), float(y)) for x, y in self.roi)
            if len(points) < 3:
                raise ValueError(f"roi needs at least 3 points, got {len(points)}")
            if not all(math.isfinite(v) for point in points for v in point):
                raise ValueError("roi points must be finite numbers")
            # A tuple keeps the frozen config hashable and safe from a caller mutating its list later.
            object.__setattr__(self, "roi", points)


@dataclass(frozen=True, slots=True)
class CameraStats:
    """A snapshot of one camera's counters.

    ``fps`` is the rate frames came from the source over the last ~5 s (before pacing and gating).
    ``dropped`` is the queue's count; it covers every camera feeding that queue.
    """

    frames_captured: int
    frames_delivered: int
    dropped: int
    motion_skipped: int
    reconnects: int
    read_errors: int
    fps: float
    connected: bool
    last_error: str | None


_Outcome = Literal["stopped", "ended", "lost"]


@dataclass
class _Counters:
    frames_captured: int = 0
    frames_delivered: int = 0
    motion_skipped: int = 0
    reconnects: int = 0
    read_errors: int = 0
    connected: bool = False
    last_error: str | None = None
    capture_times: deque[float] = field(default_factory=lambda: deque(maxlen=FPS_MAX_SAMPLES))


class CameraWorker:
    """Captures one camera in a daemon thread and feeds ``queue`` (a new one of ``queue_size`` if None)."""

    def __init__(self, config: CameraConfig, source: FrameSource, queue: LatestFrameQueue | None = None) -> None:
        self.config = config
        self.source = source
        self.queue = queue if queue is not None else LatestFrameQueue(config.queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counters = _Counters()
        # Capture-thread state, touched only by that thread.
        self._pacer = FramePacer(config.target_fps)
        self._motion = MotionGate(config.motion_threshold) if config.motion_gating else None
        self._mask: GrayImage | None = None
        self._mask_shape: tuple[int, ...] | None = None
        self._outage_since: float | None = None
        self._backoff_s = config.reconnect_min_s

    @classmethod
    def from_config(cls, config: CameraConfig, queue: LatestFrameQueue | None = None) -> CameraWorker:
        return cls(config, make_source(config.uri, loop=config.loop), queue)

    # -- control (any thread) --------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"camera {self.config.camera_id}: worker already started")
            self._thread = threading.Thread(target=self._run, name=f"capture-{self.config.camera_id}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` s; False if it is still stuck in the source.

        A thread stuck in a blocking read is abandoned (it is a daemon) and closes the source itself when
        the read returns.
        """
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            logger.warning(
                "camera %s: capture thread still blocked in %s after %.1f s; abandoning it",
                self.config.camera_id,
                self.source.name,
                timeout,
            )
            return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end by itself (end of a finite source); True if it has."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stats(self) -> CameraStats:
        now = time.monotonic()
        with self._lock:
            c = self._counters
            recent = [t for t in c.capture_times if now - t <= FPS_WINDOW_S]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
            return CameraStats(
                frames_captured=c.frames_captured,
                frames_delivered=c.frames_delivered,
                dropped=self.queue.dropped,
                motion_skipped=c.motion_skipped,
                reconnects=c.reconnects,
                read_errors=c.read_errors,
                fps=fps,
                connected=c.connected,
                last_error=c.last_error,
            )

    # -- capture thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        camera = self.config.camera_id
        retry = False
        try:
            while not self._stop.is_set():
                if retry:
                    with self._lock:
                        self._counters.reconnects += 1
                retry = True
                try:
                    self.source.open()
                except Exception as exc:
                    self._failed(f"cannot open {self.source.name}: {exc}", unexpected=not isinstance(exc, CaptureError))
                    self._wait_backoff()
                    continue
                with self._lock:
                    self._counters.connected = True
                logger.debug("camera %s: opened %s", camera, self.source.name)
                outcome, frames = self._pump()
                self._close_source()
                if outcome == "stopped":
                    break
                if outcome == "ended":
                    if frames == 0:
                        self._failed(f"{self.source.name} ended without giving a frame", unexpected=False)
                        self._wait_backoff()
                        continue
                    if self.config.loop:
                        retry = False  # replaying a file is not a reconnection
                        continue
                    logger.info("camera %s: end of %s", camera, self.source.name)
                    break
                self._wait_backoff()
        except Exception:
            # Only a bug in this module can get here; log it rather than let the thread die silently.
            logger.exception("camera %s: capture thread failed", camera)
        finally:
            self._close_source()
            logger.debug("camera %s: capture thread stopped", camera)

    def _pump(self) -> tuple[_Outcome, int]:
        """Read until stopped, ended or lost; returns the outcome and the frames read since open."""
        frames = 0
        failures = 0
        last_good = time.monotonic()
        while not self._stop.is_set():
            if getattr(self.source, "on_demand", False) and self._stop.wait(self._pacer.wait_s(time.monotonic())):
                break
            error: str | None = None
            try:
                image = self.source.read()
            except EndOfStream:
                return "ended", frames
            except Exception as exc:
                image, error = None, f"read from {self.source.name} failed: {exc}"
            if image is None:
                failures += 1
                with self._lock:
                    self._counters.read_errors += 1
                    if error is not None:
                        self._counters.last_error = error
                if error is not None:
                    log = logger.warning if failures == 1 else logger.debug
                    log("camera %s: %s", self.config.camera_id, error)
                stalled_s = time.monotonic() - last_good
                if failures >= self.config.max_consecutive_failures or stalled_s > self.config.stall_timeout_s:
                    self._failed(
                        f"lost {self.source.name}: {failures} failed reads in a row, no frame for {stalled_s:.1f} s"
                        + (f" (last: {error})" if error else ""),
                        unexpected=False,
                    )
                    return "lost", frames
                self._stop.wait(FAILED_READ_PAUSE_S)
                continue
            failures = 0
            last_good = time.monotonic()
            if frames == 0:
                self._recovered()
            frames += 1
            self._handle(image, last_good)
        return "stopped", frames

    def _handle(self, image: BgrImage, now: float) -> None:
        utc = datetime.now(UTC)
        with self._lock:
            index = self._counters.frames_captured
            self._counters.frames_captured += 1
            self._counters.capture_times.append(now)
        if not self._pacer.due(now):
            return
        mask = None
        if self.config.roi is not None:
            if self._mask is None or self._mask_shape != image.shape[:2]:
                self._mask = roi_mask(image.shape, self.config.roi)
                self._mask_shape = image.shape[:2]
            mask = self._mask
            image = apply_mask(image, mask)
        if self._motion is not None and not self._motion.changed(image, mask):
            with self._lock:
                self._counters.motion_skipped += 1
            return
        self.queue.put(Frame(self.config.camera_id, index, image, now, utc))
        with self._lock:
            self._counters.frames_delivered += 1

    def _failed(self, message: str, *, unexpected: bool) -> None:
        """Record a failed open or a lost stream; the first in an outage is logged as a warning."""
        with self._lock:
            self._counters.connected = False
            self._counters.last_error = message
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "camera %s: %s; retrying with back-off up to %g s",
                self.config.camera_id,
                message,
                self.config.reconnect_max_s,
                exc_info=unexpected,
            )
        else:
            logger.debug("camera %s: %s", self.config.camera_id, message)

    def _recovered(self) -> None:
        self._backoff_s = self.config.reconnect_min_s
        if self._outage_since is not None:
            logger.info(
                "camera %s: %s is back after %.1f s",
                self.config.camera_id,
                self.source.name,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

    def _wait_backoff(self) -> None:
        # Jitter keeps cameras behind one recorder or switch from reconnecting in lockstep.
        self._stop.wait(self._backoff_s * random.uniform(0.8, 1.0))
        self._backoff_s = min(self._backoff_s * 2.0, self.config.reconnect_max_s)

    def _close_source(self) -> None:
        with self._lock:
            self._counters.connected = False
        try:
            self.source.close()
        except Exception as exc:
            logger.debug("camera %s: closing %s failed: %s", self.config.camera_id, self.source.name, exc)
