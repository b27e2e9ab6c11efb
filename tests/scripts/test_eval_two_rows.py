"""scripts/eval_two_rows.py, and through it the shipped reader on synthetic two-row plates."""

from __future__ import annotations

import numpy as np
import pytest

from edge.recognition import const
from edge.recognition.ocr import OnnxPlateReader, join_rows, split_rows
from scripts.eval_two_rows import SINGLE_ROW_LAYOUTS, exact_rates, main, synthetic_crops
from scripts.trainlib.synth import TWO_ROW_LAYOUTS
from tests.conftest import BatchSpy


def test_the_shipped_reader_reads_two_row_plates_only_row_by_row_and_single_rows_as_before() -> None:
    reader = OnnxPlateReader()
    rng = np.random.default_rng(7)
    two_rows = exact_rates(reader, synthetic_crops(TWO_ROW_LAYOUTS, 40, rng))
    assert two_rows["whole crop"] <= 0.05  # squeezed into one line, two rows are not readable
    assert two_rows["engine"] >= 0.25
    single = exact_rates(reader, synthetic_crops(SINGLE_ROW_LAYOUTS, 40, rng))
    assert single["engine"] >= single["whole crop"] - 0.025  # at most one plate of 40 read worse


def test_the_script_prints_a_row_per_reader_and_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ocr", str(const.OCR_MODEL), "--plates", "3", "--seed", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {const.OCR_MODEL} |")]
    assert [row.split(" | ")[1] for row in rows] == ["two-row", "single-row"]


def test_a_squarish_crop_keeps_the_surer_of_its_whole_and_its_two_row_reading_from_one_model_call() -> None:
    reader, plain = BatchSpy(), OnnxPlateReader()
    rng = np.random.default_rng(11)
    crops = [c for c, _ in synthetic_crops(TWO_ROW_LAYOUTS, 10, rng) + synthetic_crops(SINGLE_ROW_LAYOUTS, 60, rng)]
    squarish = [c for c in crops if c.shape[1] <= const.TWO_ROW_MAX_ASPECT * c.shape[0]]
    kept = set()
    for crop in squarish:
        reader.batches.clear()
        (reading,) = reader.read([crop])
        assert reader.batches == [3]  # the crop and its two rows together
        alone, top, bottom = plain.probabilities([crop, *split_rows(crop)])
        whole, joined = plain.decode(alone), join_rows(top, bottom)
        rows = plain.decode(joined) if joined is not None else None
        surer_rows = rows is not None and bool(rows.text) and rows.confidence > whole.confidence
        assert reading == (rows if surer_rows else whole)
        kept.add("rows" if surer_rows else "whole")
    assert kept == {"rows", "whole"}  # real plates of both kinds went each way
