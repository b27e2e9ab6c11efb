"""Behaviour of plate decoding and format post-processing on hand-built probability matrices."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import numpy.typing as npt
import pytest

from edge.recognition.formats import (
    ALPHABET,
    FORMATS,
    LOOKALIKES,
    PAD,
    SLOTS,
    decode_plate,
    k_best_strings,
    lookalike_variants,
    match_region,
    normalize_plate,
    parse_pattern,
)

Matrix = npt.NDArray[np.float32]


def plate_matrix(text: str, peak: float = 0.9) -> Matrix:
    """Each slot puts `peak` on the plate's character (PAD past its end), the rest spread evenly."""
    matrix = np.full((SLOTS, len(ALPHABET)), (1.0 - peak) / (len(ALPHABET) - 1), dtype=np.float32)
    for slot in range(SLOTS):
        char = text[slot] if slot < len(text) else PAD
        matrix[slot, ALPHABET.index(char)] = peak
    return matrix


def with_choices(matrix: Matrix, slot: int, choices: dict[str, float]) -> Matrix:
    """Copy of the matrix whose slot has exactly these probabilities, the rest spread evenly."""
    result = matrix.copy()
    result[slot] = (1.0 - sum(choices.values())) / (len(ALPHABET) - len(choices))
    for char, prob in choices.items():
        result[slot, ALPHABET.index(char)] = prob
    return result


def string_log_prob(matrix: Matrix, text: str) -> float:
    padded = text.ljust(SLOTS, PAD)
    return sum(math.log(float(matrix[slot, ALPHABET.index(char)])) for slot, char in enumerate(padded))


# --- k-best search ---------------------------------------------------------------------------


def sparse_random_matrix(seed: int) -> tuple[Matrix, list[list[str]]]:
    """Random matrix whose mass sits on a few characters per slot, and those characters."""
    rng = np.random.default_rng(seed)
    matrix = np.full((SLOTS, len(ALPHABET)), 1e-7)
    supports: list[list[str]] = []
    for slot in range(SLOTS):
        size = 3 if slot < 4 else 1  # plus PAD: keeps brute force to a few hundred strings
        chars = [ALPHABET[i] for i in rng.choice(len(ALPHABET) - 1, size=size, replace=False)]
        weights = rng.uniform(0.2, 1.0, size=size + 1)
        weights[-1] += 0.0 if slot < 4 else 2.0  # padding dominates the tail slots
        for char, weight in zip([*chars, PAD], weights / weights.sum(), strict=True):
            matrix[slot, ALPHABET.index(char)] = weight
        supports.append(chars)
    matrix /= matrix.sum(axis=1, keepdims=True)
    return matrix.astype(np.float32), supports


def brute_force_best(matrix: Matrix, supports: list[list[str]], k: int) -> list[tuple[str, float]]:
    texts = ["".join(chars) for length in range(1, SLOTS + 1) for chars in product(*supports[:length])]
    scored = sorted(((text, string_log_prob(matrix, text)) for text in texts), key=lambda item: -item[1])
    return scored[:k]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_best_matches_brute_force(seed: int) -> None:
    matrix, supports = sparse_random_matrix(seed)
    expected = brute_force_best(matrix, supports, k=12)

    found = k_best_strings(matrix, 12)

    assert [text for text, _ in found] == [text for text, _ in expected]
    for (_, got), (_, want) in zip(found, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_k_best_is_sorted_distinct_and_left_aligned() -> None:
    found = k_best_strings(plate_matrix("7ABC123", peak=0.6), 64)

    texts = [text for text, _ in found]
    log_probs = [lp for _, lp in found]
    assert texts[0] == "7ABC123"
    assert len(set(texts)) == 64
    assert log_probs == sorted(log_probs, reverse=True)
    assert all(text and PAD not in text for text in texts)


# --- look-alike resolution -------------------------------------------------------------------


def test_california_letter_fixed_where_model_prefers_digit() -> None:
    # Slot 2 of 7ABC123 reads "8" more than "B"; California needs a letter there.
    matrix = with_choices(plate_matrix("7ABC123"), 2, {"8": 0.55, "B": 0.40})
    assert k_best_strings(matrix, 1)[0][0] == "7A8C123"

    reading = decode_plate(matrix)

    assert reading.text == "7ABC123"
    assert reading.region == "us-ca"
    assert reading.char_confidences[2] == pytest.approx(0.40, abs=1e-6)
    assert reading.confidence == pytest.approx(math.exp(string_log_prob(matrix, "7ABC123")), rel=1e-5)
    assert "7A8C123" in [c.text for c in reading.candidates]


@pytest.mark.parametrize(
    ("plate", "slot", "misread", "region"),
    [
        ("AB10CDE", 3, "O", "uk"),  # letter O where the UK format has a digit
        ("1234BCD", 4, "8", "eu-es"),  # digit 8 where Spain has a letter
        ("AB123CD", 6, "0", "eu-fr"),  # digit 0 for a final D
    ],
)
def test_lookalike_fixed_by_format(plate: str, slot: int, misread: str, region: str) -> None:
    matrix = with_choices(plate_matrix(plate), slot, {misread: 0.6, plate[slot]: 0.35})

    reading = decode_plate(matrix)

    assert reading.text == plate
    assert reading.region == region


def test_format_not_forced_when_lookalike_is_implausible() -> None:
    # "B" has 2% against 97% for "8": not a look-alike confusion, and the reading is confident.
    matrix = with_choices(plate_matrix("7ABC123", peak=0.97), 2, {"8": 0.97, "B": 0.02})

    reading = decode_plate(matrix)

    assert reading.text == "7A8C123"
    assert reading.region == "unknown"


def test_region_hint_does_not_force_an_implausible_character() -> None:
    # Not confident overall (so the vanity rule does not apply), and "B" is only 3% in slot 2.
    matrix = with_choices(plate_matrix("7ABC123", peak=0.8), 2, {"8": 0.96, "B": 0.03})

    reading = decode_plate(matrix, region_hint="us-ca")

    assert reading.text == "7A8C123"
    assert "7ABC123" in [c.text for c in reading.candidates]


def test_confident_vanity_plate_is_kept() -> None:
    # HELL0 would fit a German layout, but the zero has only 4% in a confident reading.
    matrix = with_choices(plate_matrix("HELLO", peak=0.95), 4, {"O": 0.95, "0": 0.04})

    reading = decode_plate(matrix)

    assert reading.text == "HELLO"
    assert reading.region == "unknown"
    assert reading.confidence == pytest.approx(math.exp(string_log_prob(matrix, "HELLO")), rel=1e-5)


# --- junk ------------------------------------------------------------------------------------


def test_uniform_probabilities_are_junk() -> None:
    reading = decode_plate(np.full((SLOTS, len(ALPHABET)), 1 / len(ALPHABET), dtype=np.float32))

    assert (reading.text, reading.confidence, reading.region) == ("", 0.0, "junk")
    assert reading.char_confidences == ()


def test_single_character_is_junk() -> None:
    assert decode_plate(plate_matrix("7", peak=0.99)).region == "junk"


def test_wrong_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        decode_plate(np.zeros((SLOTS, 36), dtype=np.float32))


# --- output contract -------------------------------------------------------------------------


def test_candidates_are_distinct_sorted_probabilities_without_the_top() -> None:
    matrix = with_choices(plate_matrix("7ABC123"), 2, {"8": 0.55, "B": 0.40})

    reading = decode_plate(matrix, num_candidates=6)

    texts = [c.text for c in reading.candidates]
    confidences = [c.confidence for c in reading.candidates]
    assert 5 <= len(texts) <= 6
    assert len(set(texts)) == len(texts)
    assert reading.text not in texts
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert sum(confidences) <= 1.0


def test_char_confidences_follow_the_text() -> None:
    reading = decode_plate(plate_matrix("AB12CDE", peak=0.93))

    assert len(reading.char_confidences) == len(reading.text) == 7
    assert reading.char_confidences == pytest.approx([0.93] * 7, abs=1e-6)


def test_mercosur_layout_reported_by_prior_and_overridden_by_hint() -> None:
    matrix = plate_matrix("ABC1D23")

    assert decode_plate(matrix).region == "br-mercosur"
    assert decode_plate(matrix, region_hint="eu-pl").region == "eu-pl"  # Poland shares the layout


def test_region_hint_picks_between_shared_layouts() -> None:
    matrix = plate_matrix("ABC1234")

    assert decode_plate(matrix).region == "us"
    assert decode_plate(matrix, region_hint="BR").region == "br"


# --- text helpers ----------------------------------------------------------------------------


def test_lookalike_variants() -> None:
    assert lookalike_variants("B0", max_changes=0) == {"B0"}
    assert lookalike_variants("b-0") == {"B0", "80", "BO", "BD", "BQ"}
    assert lookalike_variants("B0", max_changes=2) == {"B0", "80", "BO", "BD", "BQ", "8O", "8D", "8Q"}
    assert lookalike_variants("XX") == {"XX"}


def test_lookalikes_are_symmetric() -> None:
    for char, partners in LOOKALIKES.items():
        assert all(char in LOOKALIKES[partner] for partner in partners)


def test_normalize_plate() -> None:
    assert normalize_plate(" 7abc-123 ") == "7ABC123"
    assert normalize_plate("ä.b·1") == "B1"


def test_match_region() -> None:
    assert match_region("7ABC123")[:2] == ["us-ca", "eu-be"]
    assert set(match_region("ab-123-cd")) >= {"eu-fr", "eu-it"}
    assert "eu-de" in match_region("M AB 123E")
    assert match_region("HELLO") == []


def test_format_table_is_well_formed() -> None:
    for fmt in FORMATS:
        assert 2 <= len(parse_pattern(fmt.pattern)) <= SLOTS
        assert 0.0 < fmt.weight <= 1.0
        assert fmt.region == fmt.region.lower()
