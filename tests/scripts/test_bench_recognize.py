"""scripts/bench_recognize.py's reader comparison (timings are recorded in docs/benchmarks.md, never asserted)."""

from pathlib import Path

from edge.recognition import const
from edge.recognition.imageio import load_image
from edge.recognition.ocr import is_squarish
from scripts.bench_recognize import bench_ocr, compare_readers, plate_crops
from tests.conftest import DATA


def test_compare_readers_times_every_file_on_the_same_crops(tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(const.OCR_MODEL.read_bytes())
    frames = [load_image(p) for p in sorted((DATA / "plates").glob("*.jpg"))]
    report = compare_readers(frames, [const.OCR_MODEL, copy], rounds=2, calls=3)
    assert report["rounds"] == 2 and report["calls_per_round"] == 3 and report["crops"] >= 1
    for name in (str(const.OCR_MODEL), str(copy)):
        assert 0 < report[name]["median_ms"] <= report[name]["p90_ms"]


def test_bench_ocr_times_every_crop_and_the_squarish_ones_on_their_own() -> None:
    frames = [load_image(p) for p in sorted((DATA / "plates").glob("*.jpg"))]
    crops = plate_crops(frames)
    report = bench_ocr(frames, repeat=2)
    assert report["crops"] == len(crops) >= 1
    assert report["squarish crops"] == sum(is_squarish(crop) for crop in crops)
    assert ("threads=1/batch=1, squarish crops" in report) == (report["squarish crops"] > 0)
    for key in ("threads=1/batch=1", "threads=1/batch=8 (per plate)"):
        assert 0 < report[key]["median_ms"] <= report[key]["p90_ms"]
