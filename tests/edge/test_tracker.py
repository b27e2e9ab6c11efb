"""PlateTracker fed real frames and hand-built PlateResults (its real input), with synthetic times."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.clock import Timestamp
from edge.recognition.formats import edit_distance, mask_plate
from edge.recognition.ocr import crop_plate
from edge.recognition.types import BgrImage, Box, Candidate, PlateDetection, PlateReading, PlateResult
from edge.tracker import Observation, PlateTracker, TrackerConfig, VehiclePass, direction

CAMERA = "cam-north"
START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
FPS = 5
STEP = 1.0 / FPS


def make_frame(seed: int = 0) -> BgrImage:
    """A small real frame with distinct content, so a crop can be checked against its source."""
    return np.random.default_rng(seed).integers(0, 256, (360, 640, 3), dtype=np.uint8)


SHARED_FRAME = make_frame()


def plate(text: str, box: Box, confidence: float = 0.9, candidates: Iterable[tuple[str, float]] = ()) -> PlateResult:
    reading = PlateReading(
        text=text,
        confidence=confidence,
        char_confidences=(confidence,) * len(text),
        region="us-ca",
        candidates=tuple(Candidate(text=t, confidence=c) for t, c in candidates),
    )
    return PlateResult(detection=PlateDetection(box=box, score=0.8), reading=reading)


def observation(
    t: float, plates: Iterable[PlateResult] = (), *, suspect: bool = False, frame: BgrImage | None = None
) -> Observation:
    stamp = Timestamp(
        utc=START + timedelta(seconds=t),
        source="system" if suspect else "ntp",
        suspect=suspect,
        reason="clock jumped" if suspect else None,
    )
    return Observation(
        camera_id=CAMERA,
        monotonic_s=t,
        timestamp=stamp,
        frame=SHARED_FRAME if frame is None else frame,
        plates=tuple(plates),
    )


def idle(tracker: PlateTracker, start: float, seconds: float) -> list[VehiclePass]:
    """Frames with no plates for ``seconds`` from ``start``: what a camera sends once the road is empty."""
    passes: list[VehiclePass] = []
    for i in range(round(seconds * FPS)):
        passes += tracker.update(observation(start + i * STEP))
    return passes


def box_at(cx: float, bottom: float, width: float, height: float) -> Box:
    return (cx - width / 2, bottom - height, cx + width / 2, bottom)


def test_approaching_vehicle_gives_one_voted_pass() -> None:
    tracker = PlateTracker(CAMERA)
    frames = [make_frame(i) for i in range(8)]
    boxes = [box_at(320, 200 + 15 * i, 60 + 12 * i, 20 + 5 * i) for i in range(8)]
    passes: list[VehiclePass] = []
    for i, box in enumerate(boxes):
        confidence = 0.6 + 0.04 * i
        if i == 3:
            result = plate("7ABC128", box, 0.7, [("7ABC123", 0.2)])
        else:
            result = plate("7ABC123", box, confidence, [("7ABC128", 0.05), ("7ABG123", 0.03)])
        passes += tracker.update(observation(i * STEP, [result], frame=frames[i]))
    assert passes == []  # still in view
    passes = idle(tracker, 8 * STEP, 2.0)

    assert len(passes) == 1
    read = passes[0]
    assert read.camera_id == CAMERA
    assert read.text == "7ABC123"
    assert 0.5 < read.confidence <= 1.0
    assert [c.text for c in read.candidates] == ["7ABC128", "7ABG123"]
    assert read.candidates[0].confidence > read.candidates[1].confidence
    assert read.direction == "approaching"
    assert read.observations == 8
    assert read.region == "us-ca"
    # The biggest, most confident frame is the evidence.
    assert read.box == boxes[7]
    assert read.char_confidences == pytest.approx((0.88,) * 7)
    x1, y1, x2, y2 = (round(v) for v in boxes[7])
    assert read.crop.shape == (y2 - y1, x2 - x1, 3)
    assert np.array_equal(read.crop, frames[7][y1:y2, x1:x2])
    assert not np.shares_memory(read.crop, frames[7])
    assert read.context is frames[7]
    assert read.first_seen.utc < read.best_seen.utc <= read.last_seen.utc
    assert read.last_seen.utc == START + timedelta(seconds=7 * STEP)
    assert not read.clock_suspect
    assert tracker.counters() == {
        "tracks_started": 1,
        "passes_emitted": 1,
        "suppressed_rereads": 0,
        "dropped_tracks": 0,
        "single_frame_rejected": 0,
    }


def test_receding_vehicle() -> None:
    tracker = PlateTracker(CAMERA)
    for i in range(6):
        tracker.update(observation(i * STEP, [plate("5XYZ987", box_at(300, 300 - 12 * i, 120 - 12 * i, 40 - 4 * i))]))
    (read,) = idle(tracker, 6 * STEP, 2.0)
    assert read.text == "5XYZ987"
    assert read.direction == "receding"


def test_two_vehicles_at_once_give_two_passes() -> None:
    tracker = PlateTracker(CAMERA)
    for i in range(5):
        tracker.update(
            observation(
                i * STEP,
                [
                    plate("7ABC123", box_at(150 + 5 * i, 250, 80, 26)),
                    plate("5XYZ987", box_at(480 - 5 * i, 260, 80, 26)),
                ],
            )
        )
    passes = idle(tracker, 5 * STEP, 2.0)
    assert sorted(p.text for p in passes) == ["5XYZ987", "7ABC123"]
    assert all(p.observations == 5 for p in passes)
    assert tracker.counters()["tracks_started"] == 2


def test_fast_mover_matched_by_text_then_by_predicted_box() -> None:
    tracker = PlateTracker(CAMERA)
    # 130 px per frame with 100 px wide boxes: consecutive boxes never overlap.
    for i in range(5):
        box = box_at(60 + 130 * i, 200, 100, 30)
        # Frame 3 is misread beyond any text match; only the velocity-shifted box can place it.
        text = "QQQ9999" if i == 3 else ("7ABC123" if i != 2 else "7ABC1Z3")
        tracker.update(observation(i * STEP, [plate(text, box)]))
    passes = idle(tracker, 5 * STEP, 2.0)
    assert len(passes) == 1
    assert passes[0].text == "7ABC123"
    assert passes[0].observations == 5
    assert passes[0].direction == "unknown"  # same size throughout


def test_parked_car_reads_once_and_rereads_only_after_interval() -> None:
    config = TrackerConfig()
    tracker = PlateTracker(CAMERA, config)
    rng = np.random.default_rng(1)

    def parked(start: float, seconds: float) -> list[tuple[float, VehiclePass]]:
        emitted: list[tuple[float, VehiclePass]] = []
        for i in range(round(seconds * FPS)):
            t = start + i * STEP
            jitter = rng.uniform(-2, 2, 4)
            box = (400 + jitter[0], 220 + jitter[1], 490 + jitter[2], 250 + jitter[3])
            emitted += [(t, p) for p in tracker.update(observation(t, [plate("8PRK456", box, 0.85)]))]
        return emitted

    first = parked(0.0, 60.0)
    assert len(first) == 1
    emitted_at, read = first[0]
    assert emitted_at == pytest.approx(config.max_track_s)
    assert read.text == "8PRK456"
    assert read.observations == round(config.max_track_s * FPS) + 1
    assert read.direction == "unknown"
    # It drives away: the emitted track is dropped silently.
    assert idle(tracker, 60.0, 3.0) == []

    # Back within the re-read interval: suppressed, once, though it stays for longer than max_track_s.
    assert parked(100.0, 15.0) == []
    assert idle(tracker, 115.0, 3.0) == []
    assert tracker.counters()["suppressed_rereads"] == 1

    # Back after the interval (measured from the pass at 10 s): a new read.
    second = parked(config.max_track_s + config.reread_interval_s + 1.0, 2.0)
    second += [(0.0, p) for p in idle(tracker, 700.0, 3.0)]
    assert [p.text for _, p in second] == ["8PRK456"]
    counters = tracker.counters()
    assert counters["passes_emitted"] == 2
    assert counters["tracks_started"] == 3


def test_single_frame_glimpse_needs_high_confidence() -> None:
    tracker = PlateTracker(CAMERA)
    tracker.update(observation(0.0, [plate("7ABC123", box_at(300, 200, 90, 30), 0.6)]))
    assert idle(tracker, STEP, 2.0) == []
    assert tracker.counters()["single_frame_rejected"] == 1

    tracker.update(observation(10.0, [plate("6DEF456", box_at(300, 200, 90, 30), 0.95)]))
    passes = idle(tracker, 10.0 + STEP, 2.0)
    assert [p.text for p in passes] == ["6DEF456"]
    assert passes[0].observations == 1
    assert passes[0].direction == "unknown"
    assert tracker.counters()["single_frame_rejected"] == 1


def test_flush_emits_open_tracks() -> None:
    tracker = PlateTracker(CAMERA)
    for i in range(3):
        tracker.update(observation(i * STEP, [plate("7ABC123", box_at(300, 200, 90, 30))]))
    passes = tracker.flush()
    assert [p.text for p in passes] == ["7ABC123"]
    assert tracker.flush() == []
    assert idle(tracker, 3 * STEP, 2.0) == []


def test_tick_ends_a_pass_when_the_camera_goes_silent() -> None:
    config = TrackerConfig()
    tracker = PlateTracker(CAMERA, config)
    for i in range(3):
        tracker.update(observation(i * STEP, [plate("7ABC123", box_at(300, 200, 90, 30))]))
    last = 2 * STEP
    assert tracker.tick(last + config.lost_after_s / 2) == []  # not gone long enough
    passes = tracker.tick(last + config.lost_after_s + 0.01)  # no frame came at all: still ends
    assert [p.text for p in passes] == ["7ABC123"]
    assert tracker.tick(last + 60) == [] and tracker.flush() == []


def test_max_tracks_drops_and_counts() -> None:
    tracker = PlateTracker(CAMERA, TrackerConfig(max_tracks=2))
    texts = ["1AAA111", "2BBB222", "3CCC333"]
    for i in range(3):
        plates = [plate(text, box_at(100 + 200 * k, 200, 90, 30)) for k, text in enumerate(texts[: i + 1])]
        tracker.update(observation(i * STEP, plates))
    assert tracker.counters()["dropped_tracks"] == 1
    assert tracker.counters()["tracks_started"] == 3
    assert len(tracker.flush()) == 2


def test_clock_suspect_propagates() -> None:
    tracker = PlateTracker(CAMERA)
    for i in range(4):
        tracker.update(observation(i * STEP, [plate("7ABC123", box_at(300, 200, 90, 30))], suspect=i == 2))
    (read,) = idle(tracker, 4 * STEP, 2.0)
    assert read.clock_suspect


def test_plate_text_stays_out_of_info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.tracker")
    tracker = PlateTracker(CAMERA, TrackerConfig(reread_interval_s=60.0))
    for start in (0.0, 10.0):
        for i in range(3):
            tracker.update(observation(start + i * STEP, [plate("7ABC123", box_at(300, 200, 90, 30))]))
        idle(tracker, start + 3 * STEP, 2.0)
    assert tracker.counters()["suppressed_rereads"] == 1
    assert "7AB***3" in caplog.text
    assert "7ABC123" not in caplog.text


def test_wrong_camera_and_bad_config_are_refused() -> None:
    tracker = PlateTracker(CAMERA)
    other = observation(0.0)
    with pytest.raises(ValueError, match="camera"):
        tracker.update(Observation("cam-south", 0.0, other.timestamp, other.frame, ()))
    with pytest.raises(ValueError, match="lost_after_s"):
        TrackerConfig(lost_after_s=0.0)


def test_helpers() -> None:
    assert mask_plate("7ABC123") == "7AB***3"
    assert mask_plate("AB1") == "A**"
    assert edit_distance("7ABC123", "7ABC128") == 1
    assert edit_distance("7ABC123", "ABC123") == 1
    assert edit_distance("7ABC123", "QQQ9999", limit=2) == 3
    noisy = [(t * 0.2, 1000.0 + (30.0 if t % 2 else -30.0)) for t in range(10)]
    assert direction(noisy) == "unknown"
    assert direction(noisy[:2]) == "unknown"
    frame = make_frame(3)
    crop = crop_plate(frame, (-5.0, 350.0, 20.0, 400.0), 0.0, 0.0)  # clipped to the frame
    assert crop.shape == (10, 20, 3)
