"""The `alpr recognize` command with the shipped models on real CC0 photographs."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.recognition.cli import main
from edge.recognition.detector import OnnxPlateDetector
from edge.recognition.geometry import box_iou
from tests.conftest import DATA

PLATES = DATA / "plates"
LABELS = {k: v for k, v in json.loads((PLATES / "labels.json").read_text()).items() if k.endswith(".jpg")}
FOUND_IOU = 0.3
"""The detector's boxes frame the whole plate more loosely than some datasets' labels."""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["recognize", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def test_the_shipped_models_find_and_read_the_bundled_photos(capsys: pytest.CaptureFixture[str]) -> None:
    """A regression guard over real CC0 photos; ``expect`` in labels.json says how well each must be read."""
    code, out, err = run(capsys, "--format", "jsonl", str(PLATES))
    assert code == 0 and err == []
    rows = {Path(r["image"]).name: r for r in (json.loads(line) for line in out)}
    assert sorted(rows) == sorted(LABELS)
    detector = OnnxPlateDetector()
    for name, label in LABELS.items():
        plates = rows[name]["plates"]
        for truth, box in zip(label["plates"], label["boxes"], strict=True):
            found = [p for p in plates if box_iou(tuple(p["box"]), tuple(box)) >= FOUND_IOU]
            if label["expect"] == "detected":
                # The engine drops a crop the reader finds unreadable, so ask the detector itself.
                image = cv2.imread(str(PLATES / name))
                assert image is not None
                boxes = [d.box for d in detector.detect(image)]
                assert any(box_iou(b, tuple(box)) >= FOUND_IOU for b in boxes), f"{name}: no plate found at {box}"
                continue
            assert found, f"{name}: no plate found at {box}"
            texts = [p["text"] for p in found]
            if label["expect"] == "exact":
                assert truth in texts, f"{name}: expected {truth}, read {texts}"
            elif label["expect"] == "candidate":
                options = [p["text"] for p in found] + [c["text"] for p in found for c in p["candidates"][:5]]
                assert truth in options, f"{name}: {truth} not among {options}"


def test_jsonl_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--format", "jsonl", str(PLATES / "cc0-car-1.jpg"))
    assert code == 0
    (row,) = [json.loads(line) for line in out]
    assert row["image"] == str(PLATES / "cc0-car-1.jpg")
    assert set(row["timing_ms"]) == {"detect", "ocr", "total"}
    assert row["timing_ms"]["total"] >= row["timing_ms"]["detect"]
    plate = row["plates"][0]
    assert 0 < plate["confidence"] <= 1
    x1, y1, x2, y2 = plate["box"]
    assert 0 <= x1 < x2 and 0 <= y1 < y2
    assert isinstance(plate["region"], str)
    assert len(plate["candidates"]) >= 5
    assert all(c["text"] != plate["text"] for c in plate["candidates"])
    assert len(plate["char_confidences"]) == len(plate["text"])


def test_bad_inputs_get_one_line_each_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], huge_png: Path
) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a photo")
    good = (PLATES / "cc0-car-1.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    ok, buf = cv2.imencode(".png", np.full((60, 200), 128, np.uint16) * 200)
    (tmp_path / "deep-gray.png").write_bytes(buf.tobytes())
    inputs = [
        str(tmp_path / "missing.jpg"),
        str(tmp_path / "empty.jpg"),
        str(tmp_path / "notes.jpg"),
        str(tmp_path / "truncated.jpg"),
        str(huge_png),
        str(tmp_path / "deep-gray.png"),
        str(PLATES / "cc0-car-1.jpg"),
    ]
    code, out, err = run(capsys, "--format", "jsonl", *inputs)
    assert code == 1
    assert len(err) == 5
    for name, reason in [
        ("missing.jpg", "no such file"),
        ("empty.jpg", "empty file"),
        ("notes.jpg", "not an image"),
        ("truncated.jpg", "truncated JPEG"),
        ("huge.png", "10000x10000"),
    ]:
        assert any(name in line and reason in line for line in err), (name, err)
    assert [Path(json.loads(line)["image"]).name for line in out] == ["deep-gray.png", "cc0-car-1.jpg"]


def test_glob_and_table_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--format", "table", str(PLATES / "cc0-car-[12].jpg"))
    assert code == 0
    assert [line.split("\t")[0] for line in out] == [str(PLATES / "cc0-car-1.jpg"), str(PLATES / "cc0-car-2.jpg")]
    assert out[0].split("\t")[1]  # a reading (its accuracy is the job of the test above)


def test_a_glob_that_matches_nothing_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(PLATES / "nothing-*.jpg"))
    assert code == 1 and out == [] and "no file matches" in err[0]


def test_min_confidence_drops_readings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--min-confidence", "1.01", str(PLATES / "cc0-car-1.jpg"))
    assert code == 0 and json.loads(out[0])["plates"] == []


def test_opencv_backend_reads_the_same_plates(capsys: pytest.CaptureFixture[str]) -> None:
    _, ort_out, _ = run(capsys, "--backend", "onnxruntime", str(PLATES))
    _, cv_out, _ = run(capsys, "--backend", "opencv", "--threads", "2", str(PLATES))
    texts = [[p["text"] for p in json.loads(line)["plates"]] for line in ort_out]
    assert texts == [[p["text"] for p in json.loads(line)["plates"]] for line in cv_out]


def test_console_script_is_installed() -> None:
    alpr = Path(sys.executable).with_name("alpr")
    proc = subprocess.run(
        [str(alpr), "recognize", "--format", "table", str(PLATES / "cc0-car-1.jpg")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cc0-car-1.jpg" in proc.stdout and len(proc.stdout.split("\t")) >= 5
