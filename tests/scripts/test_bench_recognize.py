"""scripts/bench_recognize.py's reader comparison (timings are recorded in docs/benchmarks.md, never asserted)."""

from pathlib import Path

from edge.recognition import const
from edge.recognition.imageio import load_image
from scripts.bench_recognize import compare_readers
from tests.conftest import DATA


def test_compare_readers_times_every_file_on_the_same_crops(tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(const.OCR_MODEL.read_bytes())
    frames = [load_image(p) for p in sorted((DATA / "plates").glob("*.jpg"))]
    report = compare_readers(frames, [const.OCR_MODEL, copy], rounds=2, calls=3)
    assert report["rounds"] == 2 and report["calls_per_round"] == 3 and report["crops"] >= 1
    for name in (str(const.OCR_MODEL), str(copy)):
        assert 0 < report[name]["median_ms"] <= report[name]["p90_ms"]
