"""The reader's CTC adapter: a CTC model's columns become the slot matrix the format-aware decoding reads."""

from __future__ import annotations

import numpy as np

from edge.recognition.formats import ALPHABET, PAD_INDEX, SLOTS, decode_plate
from edge.recognition.ocr import ctc_to_slots


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
