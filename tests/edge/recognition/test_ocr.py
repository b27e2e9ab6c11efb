"""The reader's CTC adapter (a CTC model's columns become the slot matrix the format-aware decoding reads)
and its reading of two-row plates row by row."""

from __future__ import annotations

import json

import numpy as np

from edge.recognition import const
from edge.recognition.formats import ALPHABET, PAD_INDEX, SLOTS, decode_plate
from edge.recognition.imageio import load_image
from edge.recognition.ocr import OnnxPlateReader, crop_plate, ctc_to_slots, join_rows, split_rows
from tests.conftest import DATA, BatchSpy

PLATES = DATA / "plates"


def columns_for(path: str, sure: float = 0.9) -> np.ndarray:
    """Per-column probabilities whose best path is ``path`` ("_" the blank), ``sure`` on the best class."""
    columns = np.full((len(path), len(ALPHABET)), (1 - sure) / (len(ALPHABET) - 1), np.float32)
    for t, char in enumerate(path):
        columns[t, ALPHABET.index(char)] = sure
    return columns


def test_best_path_fills_the_slots_in_order_with_repeats_merged() -> None:
    columns = columns_for("_77__AB_BB_C__1_2__3")  # 20 columns: 7 A B B C 1 2 3
    slots = ctc_to_slots(columns)
    assert slots.shape == (SLOTS, len(ALPHABET))
    read = "".join(ALPHABET[k] for k in slots.argmax(axis=1)).replace("_", "")
    assert read == "7ABBC123"
    assert np.all(slots[8:, PAD_INDEX] == 1.0)  # after the last character: certain pads
    assert decode_plate(slots).text == "7ABBC123"


def test_each_character_takes_the_column_where_it_peaks() -> None:
    columns = columns_for("_AA_B" + "_" * 15)
    columns[2, ALPHABET.index("A")] = 0.95  # the second column of the A is surer
    columns[2, ALPHABET.index("4")] = 0.04
    slots = ctc_to_slots(columns)
    np.testing.assert_array_equal(slots[0], columns[2])
    np.testing.assert_array_equal(slots[1], columns[4])


def test_only_blanks_read_as_no_plate_and_long_paths_are_cut_to_the_slots() -> None:
    assert np.all(ctc_to_slots(columns_for("_" * 20))[:, PAD_INDEX] == 1.0)
    assert decode_plate(ctc_to_slots(columns_for("_" * 20))).text == ""
    twelve = ctc_to_slots(columns_for("A_B_C_D_E_F_G_H_J_K_L_M_"))
    assert "".join(ALPHABET[k] for k in twelve.argmax(axis=1)) == "ABCDEFGHJK"


def slots_for(text: str, sure: float = 0.9) -> np.ndarray:
    """Slot probabilities reading ``text``, then certain pads."""
    return ctc_to_slots(columns_for(text + "_" * (20 - len(text)), sure))


def test_the_rows_of_a_crop_meet_past_its_middle() -> None:
    crop = np.arange(100, dtype=np.uint8)[:, None, None].repeat(3, axis=1).repeat(3, axis=2)
    top, bottom = split_rows(crop, overlap=0.06)
    assert top.shape == (56, 3, 3) and bottom.shape == (56, 3, 3)
    assert top[0, 0, 0] == 0 and top[-1, 0, 0] == 55
    assert bottom[0, 0, 0] == 44 and bottom[-1, 0, 0] == 99
    tiny_top, tiny_bottom = split_rows(crop[:3])
    assert len(tiny_top) >= 1 and len(tiny_bottom) >= 1


def test_two_rows_join_top_then_bottom_and_the_joined_plate_decodes() -> None:
    joined = join_rows(slots_for("ABC"), slots_for("1234"))
    assert joined is not None
    assert "".join(ALPHABET[k] for k in joined.argmax(axis=1)).replace("_", "") == "ABC1234"
    assert np.all(joined[7:, PAD_INDEX] == 1.0)
    assert decode_plate(joined).text == "ABC1234"


def test_an_empty_row_or_too_many_characters_is_not_a_two_row_plate() -> None:
    assert join_rows(slots_for(""), slots_for("1234")) is None
    assert join_rows(slots_for("ABC"), slots_for("")) is None
    assert join_rows(slots_for("ABCDEF"), slots_for("12345")) is None


def test_wide_crops_are_read_whole_only_in_one_model_call() -> None:
    labels = json.loads((PLATES / "labels.json").read_text())
    crops = []
    for name in ("cc0-car-2.jpg", "cc0-car-3.jpg"):
        crop = crop_plate(load_image(PLATES / name), tuple(labels[name]["boxes"][0]))
        assert crop.shape[1] > const.TWO_ROW_MAX_ASPECT * crop.shape[0]
        crops.append(crop)
    reader = BatchSpy()
    readings = reader.read(crops)
    assert reader.batches == [2]
    assert readings == [reader.decode(p) for p in OnnxPlateReader().probabilities(crops)]
