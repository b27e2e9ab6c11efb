import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.recognition.ocr import OnnxPlateReader
from edge.recognition.types import BgrImage
from edge.wire import CandidateModel, GpsModel, ReadRecord, uuid7

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 10000 x 10000 PNG (black, so it compresses to ~100 kB)."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    ok, buf = cv2.imencode(".png", np.zeros((10000, 10000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    path.write_bytes(buf.tobytes())
    return path


class BatchSpy(OnnxPlateReader):
    """The shipped reader, recording how many crops each call hands its model."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def probabilities(self, crops: Sequence[BgrImage]) -> np.ndarray:
        self.batches.append(len(crops))
        return super().probabilities(crops)


def make_record(**changes: Any) -> ReadRecord:
    """A valid read record of a made-up plate (fields overridable), as an edge node would send it."""
    fields: dict[str, Any] = {
        "read_id": uuid7(),
        "node_id": "car-12",
        "camera_id": "front",
        "plate": "7ABC123",
        "confidence": 0.93,
        "candidates": [CandidateModel(text="7A8C123", confidence=0.04)],
        "region": "us-ca",
        "box": (10.0, 20.0, 110.0, 50.0),
        "char_confidences": [0.99] * 7,
        "first_seen_utc": NOW,
        "best_utc": NOW,
        "last_seen_utc": NOW,
        "time_source": "gps",
        "gps": GpsModel(latitude=32.7, longitude=-117.1, mode=3, gps_time=NOW),
        "crop_jpeg": b"\xff\xd8crop-" + os.urandom(8) + b"\xff\xd9",
        "software_version": "0.1.0",
        "model_versions": {"ocr": "v1"},
    }
    fields.update(changes)
    return ReadRecord.model_validate(fields)
