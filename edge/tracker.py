"""Plate tracking: one read per vehicle pass instead of one per frame.

A camera sees a vehicle over many frames and the OCR reads its plate slightly differently in some of
them. :class:`PlateTracker` associates the recognition engine's per-frame results of ONE camera into
tracks, votes across each track's readings, and emits a single :class:`VehiclePass` when the plate
leaves the view (not seen for ``lost_after_s``) or, for a vehicle that stays, once the track is
``max_track_s`` old. A parked car therefore yields one read, and the same plate at the same camera is
not emitted again within ``reread_interval_s`` even when its track is lost and re-acquired meanwhile.

Every time decision uses :attr:`Observation.monotonic_s`, never the wall clock: the wall clock can jump
(see :mod:`edge.clock`), and synthetic times keep the tests deterministic.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from edge.clock import Timestamp
from edge.recognition.formats import edit_distance, mask_plate
from edge.recognition.geometry import box_iou
from edge.recognition.ocr import crop_plate
from edge.recognition.types import BgrImage, Box, Candidate, PlateResult

logger = logging.getLogger(__name__)

Direction = Literal["approaching", "receding", "unknown"]

REFERENCE_PLATE_HEIGHT_PX = 40.0
"""Plates at least this tall (in pixels) get full voting weight; smaller ones read worse and count less."""

MIN_SIZE_WEIGHT = 0.05
"""Floor of the size weight, so that a degenerate box still casts a (tiny) vote rather than none."""

DIRECTION_MIN_RELATIVE_CHANGE = 0.2
"""The fitted change of plate area over a track, relative to its mean area, needed to call a direction.

Detector boxes jitter by a few per cent from frame to frame; a vehicle that really approaches or recedes
changes its plate area by far more than this over a track, so noise stays "unknown"."""

DIRECTION_MIN_OBSERVATIONS = 3

MAX_MERGED_CANDIDATES = 10


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """How plate results are associated across frames and when a track becomes a pass."""

    iou_match: float = 0.2
    """Minimum IoU between a result's box and a track's last box, shifted by the track's velocity."""
    max_text_distance: int = 2
    """Edit distance (over top texts and candidates) that associates a result whose box does not overlap
    (a fast mover)."""
    lost_after_s: float = 1.0
    """A track not seen for this long is over: its vehicle has left."""
    max_track_s: float = 10.0
    """A track still visible at this age is emitted anyway (a parked or queued vehicle)."""
    reread_interval_s: float = 600.0
    """The same text at this camera is not emitted again within this many seconds of its last emission."""
    min_observations: int = 2
    """A track seen fewer times is emitted only if its best confidence >= single_frame_min_confidence."""
    single_frame_min_confidence: float = 0.9
    """OCR confidence a glimpse (fewer than min_observations frames) needs to be trusted on its own."""
    max_tracks: int = 64
    """Open tracks are bounded; a new one beyond this drops the least recently seen, unemitted, and counted."""

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.iou_match <= 1.0:
            problems.append("iou_match must be in [0, 1]")
        if self.max_text_distance < 0:
            problems.append("max_text_distance must be >= 0")
        if self.lost_after_s <= 0:
            problems.append("lost_after_s must be > 0")
        if self.max_track_s <= 0:
            problems.append("max_track_s must be > 0")
        if self.reread_interval_s < 0:
            problems.append("reread_interval_s must be >= 0")
        if self.min_observations < 1:
            problems.append("min_observations must be >= 1")
        if not 0.0 <= self.single_frame_min_confidence <= 1.0:
            problems.append("single_frame_min_confidence must be in [0, 1]")
        if self.max_tracks < 1:
            problems.append("max_tracks must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Observation:
    """One processed frame of a camera and the plates read in it (possibly none).

    The tracker keeps a reference to ``frame`` (not a copy) while a track may still need it, so the
    caller must not reuse or modify the array after handing it over.
    """

    camera_id: str
    monotonic_s: float
    timestamp: Timestamp
    frame: BgrImage
    plates: tuple[PlateResult, ...]


@dataclass(frozen=True, slots=True)
class VehiclePass:
    """One read per vehicle pass: the voted text and the evidence from its best frame."""

    camera_id: str
    text: str
    confidence: float
    """Vote share of the winning text, in [0, 1]."""
    candidates: tuple[Candidate, ...]
    """Other texts merged across frames, best first, confidences as vote shares; ``text`` excluded."""
    region: str
    box: Box
    """Box of the best observation, in its frame's pixels."""
    char_confidences: tuple[float, ...]
    crop: BgrImage
    """The plate crop from the best observation's frame (a copy, not a view)."""
    context: BgrImage
    """The best observation's full frame; the caller decides whether to keep it."""
    first_seen: Timestamp
    best_seen: Timestamp
    last_seen: Timestamp
    observations: int
    direction: Direction
    clock_suspect: bool
    """Whether any time stamp of an observation in the pass was suspect."""


# eq=False: identity is what matters, and comparing fields would compare whole frames.
@dataclass(frozen=True, slots=True, eq=False)
class _Sample:
    """One observation of a track, kept only while it is the best one for some text."""

    score: float
    timestamp: Timestamp
    frame: BgrImage
    result: PlateResult


@dataclass(slots=True, eq=False)
class _Track:
    track_id: int
    first_s: float
    last_s: float
    first_seen: Timestamp
    last_seen: Timestamp
    box: Box
    texts: frozenset[str]
    """Texts of the last matched result, for the text-distance fallback."""
    velocity: tuple[float, float] = (0.0, 0.0)
    """Box centre velocity in pixels per second."""
    moved: bool = False
    """Whether velocity has been measured at all (the first measurement is taken as it is)."""
    votes: dict[str, float] = field(default_factory=dict)
    best_by_text: dict[str, _Sample] = field(default_factory=dict)
    """Best observation per top text: a pass takes its box, crop and region from the winner's."""
    best: _Sample | None = None
    areas: list[tuple[float, float]] = field(default_factory=list)
    observations: int = 0
    max_confidence: float = 0.0
    suspect: bool = False
    done: bool = False
    """Emitted (or refused) at timeout; further frames only keep it alive until it is lost."""

    def predicted_box(self, now_s: float) -> Box:
        dt = max(0.0, now_s - self.last_s)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)


class PlateTracker:
    """Associates the plate results of one camera across frames and emits one pass per vehicle."""

    def __init__(self, camera_id: str, config: TrackerConfig = TrackerConfig()) -> None:
        self.camera_id = camera_id
        self.config = config
        self._lock = threading.Lock()
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._now_s = -math.inf
        # text -> monotonic time of its last emission, oldest first so expired entries pop off the front.
        self._emitted: OrderedDict[str, float] = OrderedDict()
        self._counters = {
            "tracks_started": 0,
            "passes_emitted": 0,
            "suppressed_rereads": 0,
            "dropped_tracks": 0,
            "single_frame_rejected": 0,
        }

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def update(self, observation: Observation) -> list[VehiclePass]:
        """Feed one processed frame (also one without plates); returns the passes it completed."""
        if observation.camera_id != self.camera_id:
            raise ValueError(f"observation from camera {observation.camera_id!r} fed to tracker of {self.camera_id!r}")
        now = observation.monotonic_s
        with self._lock:
            self._now_s = max(self._now_s, now)
            # Expire before associating, so a plate seen again after a long gap starts a new pass.
            passes = self._end_lost(now)
            plates = [p for p in observation.plates if _texts(p)]
            pairs = self._associate(plates, now)
            # Extend first, so that when a start must drop a track, tracks seen in this frame look fresh.
            for matched, result in pairs:
                if matched is not None:
                    self._extend(matched, observation, result)
            for matched, result in pairs:
                if matched is None:
                    self._start(observation, result)
            return passes + self._end_long(now)

    def tick(self, now_s: float) -> list[VehiclePass]:
        """Time passes without a frame (a silent camera): end the passes of vehicles no longer seen."""
        with self._lock:
            self._now_s = max(self._now_s, now_s)
            return self._end_lost(now_s) + self._end_long(now_s)

    def _end_lost(self, now: float) -> list[VehiclePass]:
        passes: list[VehiclePass] = []
        for track in [t for t in self._tracks if now - t.last_s > self.config.lost_after_s]:
            self._tracks.remove(track)
            if not track.done:
                passes.extend(self._finish(track, now))
        return passes

    def _end_long(self, now: float) -> list[VehiclePass]:
        """Emit tracks open for max_track_s (a parked car), keeping them so they are not read again at once."""
        passes: list[VehiclePass] = []
        for track in self._tracks:
            if not track.done and now - track.first_s >= self.config.max_track_s:
                track.done = True
                passes.extend(self._finish(track, now))
        return passes

    def flush(self) -> list[VehiclePass]:
        """Emit every open track that has not emitted yet (at shutdown) and forget them all."""
        with self._lock:
            passes: list[VehiclePass] = []
            tracks, self._tracks = self._tracks, []
            for track in tracks:
                if not track.done:
                    passes.extend(self._finish(track, self._now_s))
            return passes

    # -- association ---------------------------------------------------------------------------------

    def _associate(self, plates: list[PlateResult], now: float) -> list[tuple[_Track | None, PlateResult]]:
        """Pairs each result with the track it continues, or None to start one; greedy, best pairs first."""
        matched: dict[int, _Track] = {}  # result index -> track
        tracks = list(self._tracks)
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(tracks):
            predicted = track.predicted_box(now)
            for ri, plate in enumerate(plates):
                overlap = box_iou(predicted, plate.detection.box)
                if overlap >= self.config.iou_match and overlap > 0.0:
                    pairs.append((-overlap, ti, ri))
        self._take(sorted(pairs), tracks, matched)
        # Fast movers: a box that jumped past its predicted place still matches on what it says.
        pairs = []
        for ti, track in enumerate(tracks):
            centre = _centre(track.predicted_box(now))
            for ri, plate in enumerate(plates):
                if ri in matched:
                    continue
                distance = _text_distance(_texts(plate), track.texts, self.config.max_text_distance)
                if distance <= self.config.max_text_distance:
                    pairs.append((float(distance) + _gap(centre, plate.detection.box), ti, ri))
        self._take(sorted(pairs), tracks, matched)
        return [(matched.get(ri), plate) for ri, plate in enumerate(plates)]

    @staticmethod
    def _take(pairs: list[tuple[float, int, int]], tracks: list[_Track], matched: dict[int, _Track]) -> None:
        taken: set[int] = {id(t) for t in matched.values()}
        for _, ti, ri in pairs:
            track = tracks[ti]
            if ri in matched or id(track) in taken:
                continue
            matched[ri] = track
            taken.add(id(track))

    def _start(self, observation: Observation, result: PlateResult) -> None:
        if len(self._tracks) >= self.config.max_tracks:
            # The least recently seen track is the one most likely already gone (or parked and emitted).
            oldest = min(self._tracks, key=lambda t: (t.last_s, t.first_s))
            self._tracks.remove(oldest)
            self._counters["dropped_tracks"] += 1
            dropped = self._counters["dropped_tracks"]
            # The counter carries the rest; one warning says the bound is too tight for this scene.
            log = logger.warning if dropped == 1 else logger.debug
            log(
                "camera %s: more than %d open tracks, dropped the oldest (%d dropped so far)",
                self.camera_id,
                self.config.max_tracks,
                dropped,
            )
        track = _Track(
            track_id=self._next_id,
            first_s=observation.monotonic_s,
            last_s=observation.monotonic_s,
            first_seen=observation.timestamp,
            last_seen=observation.timestamp,
            box=result.detection.box,
            texts=_texts(result),
        )
        self._next_id += 1
        self._counters["tracks_started"] += 1
        self._tracks.append(track)
        self._add_votes(track, observation, result)

    def _extend(self, track: _Track, observation: Observation, result: PlateResult) -> None:
        dt = observation.monotonic_s - track.last_s
        if dt > 0:
            old, new = _centre(track.box), _centre(result.detection.box)
            measured = ((new[0] - old[0]) / dt, (new[1] - old[1]) / dt)
            if track.moved:
                # Half-and-half smoothing: one jittery box should not throw the next prediction off.
                track.velocity = (
                    0.5 * (track.velocity[0] + measured[0]),
                    0.5 * (track.velocity[1] + measured[1]),
                )
            else:
                track.velocity = measured
                track.moved = True
        track.box = result.detection.box
        track.texts = _texts(result)
        track.last_s = observation.monotonic_s
        if track.done:
            # The parked-car case: the frame only keeps the emitted track alive, it adds no evidence.
            return
        track.last_seen = observation.timestamp
        self._add_votes(track, observation, result)

    def _add_votes(self, track: _Track, observation: Observation, result: PlateResult) -> None:
        reading = result.reading
        weight = size_weight(result.detection.box)
        offered: dict[str, float] = {}
        for candidate in reading.candidates:
            if candidate.text:
                offered[candidate.text] = max(offered.get(candidate.text, 0.0), candidate.confidence)
        if reading.text:
            offered[reading.text] = max(offered.get(reading.text, 0.0), reading.confidence)
        for text, confidence in offered.items():
            track.votes[text] = track.votes.get(text, 0.0) + confidence * weight
        score = reading.confidence * weight
        sample = _Sample(score=score, timestamp=observation.timestamp, frame=observation.frame, result=result)
        if reading.text:
            current = track.best_by_text.get(reading.text)
            if current is None or score > current.score:
                track.best_by_text[reading.text] = sample
        if track.best is None or score > track.best.score:
            track.best = sample
        track.areas.append((observation.monotonic_s, _area(result.detection.box)))
        track.observations += 1
        track.max_confidence = max(track.max_confidence, reading.confidence)
        track.suspect = track.suspect or observation.timestamp.suspect

    # -- emission ------------------------------------------------------------------------------------

    def _finish(self, track: _Track, now: float) -> list[VehiclePass]:
        """The track's pass, or nothing when it is a doubtful glimpse or a re-read of a recent pass."""
        if track.best is None or not track.votes:
            return []
        if (
            track.observations < self.config.min_observations
            and track.max_confidence < self.config.single_frame_min_confidence
        ):
            self._counters["single_frame_rejected"] += 1
            logger.debug(
                "camera %s: track %d rejected, %d observation(s) at confidence %.2f",
                self.camera_id,
                track.track_id,
                track.observations,
                track.max_confidence,
            )
            return []
        vehicle_pass = self._build(track)
        self._forget_expired(now)
        last = self._emitted.get(vehicle_pass.text)
        if last is not None and now - last < self.config.reread_interval_s:
            self._counters["suppressed_rereads"] += 1
            logger.debug(
                "camera %s: re-read of %s suppressed (%.0f s after its last pass)",
                self.camera_id,
                mask_plate(vehicle_pass.text),
                now - last,
            )
            return []
        self._emitted.pop(vehicle_pass.text, None)
        self._emitted[vehicle_pass.text] = now
        self._counters["passes_emitted"] += 1
        logger.debug(
            "camera %s: pass %s, %d observation(s), %s",
            self.camera_id,
            mask_plate(vehicle_pass.text),
            track.observations,
            vehicle_pass.direction,
        )
        return [vehicle_pass]

    def _forget_expired(self, now: float) -> None:
        while self._emitted:
            text, emitted_s = next(iter(self._emitted.items()))
            if now - emitted_s < self.config.reread_interval_s:
                break
            del self._emitted[text]

    def _build(self, track: _Track) -> VehiclePass:
        assert track.best is not None  # checked by the caller
        total = sum(track.votes.values())
        ranked = sorted(track.votes.items(), key=lambda item: item[1], reverse=True)
        text = ranked[0][0]
        sample = track.best_by_text.get(text)
        if sample is None:
            # The winner was only ever a candidate: the best frame overall is the evidence, but its
            # per-character confidences describe another text, so they are left out.
            sample = track.best
            char_confidences: tuple[float, ...] = ()
        else:
            char_confidences = sample.result.reading.char_confidences
        candidates = tuple(
            Candidate(text=other, confidence=votes / total if total > 0 else 0.0)
            for other, votes in ranked[1 : 1 + MAX_MERGED_CANDIDATES]
        )
        box = sample.result.detection.box
        return VehiclePass(
            camera_id=self.camera_id,
            text=text,
            confidence=ranked[0][1] / total if total > 0 else 0.0,
            candidates=candidates,
            region=sample.result.reading.region,
            box=box,
            char_confidences=char_confidences,
            crop=crop_plate(sample.frame, box, 0.0, 0.0).copy(),  # a copy: frames are dropped later
            context=sample.frame,
            first_seen=track.first_seen,
            best_seen=sample.timestamp,
            last_seen=track.last_seen,
            observations=track.observations,
            direction=direction(track.areas),
            clock_suspect=track.suspect,
        )


# -- helpers -----------------------------------------------------------------------------------------


def size_weight(box: Box) -> float:
    """Voting weight of a plate by its height: bigger plates in pixels read better."""
    return max(MIN_SIZE_WEIGHT, min(1.0, (box[3] - box[1]) / REFERENCE_PLATE_HEIGHT_PX))


def direction(areas: list[tuple[float, float]]) -> Direction:
    """Approaching or receding from the least-squares trend of plate area over time."""
    if len(areas) < DIRECTION_MIN_OBSERVATIONS:
        return "unknown"
    n = len(areas)
    mean_t = sum(t for t, _ in areas) / n
    mean_a = sum(a for _, a in areas) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in areas)
    if var_t <= 0 or mean_a <= 0:
        return "unknown"
    slope = sum((t - mean_t) * (a - mean_a) for t, a in areas) / var_t
    change = slope * (areas[-1][0] - areas[0][0]) / mean_a
    if change >= DIRECTION_MIN_RELATIVE_CHANGE:
        return "approaching"
    if change <= -DIRECTION_MIN_RELATIVE_CHANGE:
        return "receding"
    return "unknown"


def _text_distance(texts: Iterable[str], others: Iterable[str], limit: int) -> int:
    others = tuple(others)
    best = limit + 1
    for text in texts:
        for other in others:
            best = min(best, edit_distance(text, other, limit))
            if best == 0:
                return 0
    return best


def _texts(result: PlateResult) -> frozenset[str]:
    reading = result.reading
    return frozenset(t for t in (reading.text, *(c.text for c in reading.candidates)) if t)


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _gap(centre: tuple[float, float], box: Box) -> float:
    """A tie-breaker in [0, 1): nearer boxes first among equal text distances."""
    other = _centre(box)
    distance = math.hypot(other[0] - centre[0], other[1] - centre[1])
    return distance / (distance + 1000.0)
