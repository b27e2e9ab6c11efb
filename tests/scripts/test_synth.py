from pathlib import Path

import numpy as np
import pytest

from scripts.trainlib.synth import (
    CA_FONT_FILES,
    CA_LEGACY_FONT_FILES,
    CA_SCRIPT_FONT_FILES,
    LAYOUTS,
    available_fonts,
    label_of,
    render_plate,
    synth_sample,
)


def test_every_font_of_the_renderer_is_installed() -> None:
    # .ci/run installs them from Debian packages; a missing one would silently narrow the training data.
    assert len(available_fonts()) >= 6
    assert all(Path(p).exists() for p in CA_FONT_FILES + CA_LEGACY_FONT_FILES + CA_SCRIPT_FONT_FILES)


def test_label_drops_separators_and_row_breaks() -> None:
    assert label_of("AB-123 C/D4") == "AB123CD4"


def test_rendered_plates_have_clean_labels_and_cover_every_layout() -> None:
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(150):
        plate, label, layout, text_box = render_plate(rng)
        seen.add(layout)
        assert label.isalnum() and label.isupper() or label.isdigit()
        assert 2 <= len(label) <= 10
        assert plate.height == 160 and plate.width > plate.height
        x1, y1, x2, y2 = text_box
        assert 0 <= x1 < x2 <= plate.width and 0 <= y1 < y2 <= plate.height
    assert seen == {layout.name for layout in LAYOUTS}


def test_synth_sample_is_a_degraded_crop_of_the_requested_size() -> None:
    rng = np.random.default_rng(4)
    image, label = synth_sample(rng, 160, 48)
    assert image.shape == (48, 160, 3) and image.dtype == np.uint8
    assert image.std() > 5  # not a blank canvas
    assert label


def test_rendering_is_reproducible_for_a_seed() -> None:
    a, label_a = synth_sample(np.random.default_rng(7), 160, 48)
    b, label_b = synth_sample(np.random.default_rng(7), 160, 48)
    assert label_a == label_b and np.array_equal(a, b)


def test_california_plates_follow_the_state_sequences() -> None:
    rng = np.random.default_rng(5)
    labels: list[str] = []
    while len(labels) < 60:
        plate, label, layout, (x1, y1, x2, y2) = render_plate(rng)
        if layout != "us-ca":
            continue
        labels.append(label)
        assert plate.width == pytest.approx(2 * plate.height, rel=0.05)
        # one row of characters about half the plate's height, clear of the top edge
        assert 0.35 * plate.height <= y2 - y1 <= 0.65 * plate.height and y1 >= 0.1 * plate.height
        assert x2 - x1 >= 0.6 * plate.width
    assert all(len(label) in (6, 7) and label.isalnum() and label[0] != "0" for label in labels)
    seven = [label for label in labels if len(label) == 7]
    assert sum(label[0].isdigit() and label[1:4].isalpha() and label[4:].isdigit() for label in seven) > len(seven) / 2


def test_two_row_plates_give_one_sample_per_row_labelled_with_that_row() -> None:
    from scripts.trainlib.synth import TWO_ROW_LAYOUTS, render_printed_plate, synth_row_samples

    rng = np.random.default_rng(3)
    for _ in range(5):
        state = rng.bit_generator.state
        _, printed, layout, _ = render_printed_plate(rng, TWO_ROW_LAYOUTS)
        assert layout == "two-row" and printed.count("/") == 1
        rng.bit_generator.state = state  # the same plate again, cut into its rows
        samples = synth_row_samples(rng, 160, 48)
        assert [label for _, label in samples] == [label_of(row) for row in printed.split("/")]
        assert all(image.shape == (48, 160, 3) for image, _ in samples)


def test_a_plate_label_is_its_printed_text_without_gaps_or_row_breaks() -> None:
    from scripts.trainlib.synth import render_printed_plate

    first, second = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(20):
        _, label, layout, _ = render_plate(first)
        _, printed, same_layout, _ = render_printed_plate(second)
        assert (label, layout) == (label_of(printed), same_layout)
