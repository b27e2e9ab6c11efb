"""Process-wide settings the hub's server applies (``alpr-hub serve``)."""

from __future__ import annotations

import gc

from hub.service import GC_THRESHOLDS, tune_garbage_collection


def test_the_hub_runs_its_collector_far_less_often_than_python_by_default() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collection()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] >= 100 * 700  # Python's default young-generation threshold is 700
    finally:
        gc.set_threshold(*before)
