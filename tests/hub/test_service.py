"""What the hub's server checks and applies before it starts (``alpr-hub serve``)."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from hub.cli import main as hub_main
from hub.db import make_engine, require_current_schema, upgrade
from hub.service import GC_THRESHOLDS, tune_garbage_collection


def test_the_hub_runs_its_collector_far_less_often_than_python_by_default() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collection()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] >= 100 * 700  # Python's default young-generation threshold is 700
    finally:
        gc.set_threshold(*before)


def test_a_hub_refuses_to_serve_a_database_not_at_the_newest_revision(
    blank_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a software upgrade, `serve` says to migrate (one line, exit 1) rather than fail each batch."""
    config = tmp_path / "hub.toml"
    config.write_text(f"[hub]\ndatabase_url = {json.dumps(blank_url)}\ndata_dir = {json.dumps(str(tmp_path))}\n")
    before = gc.get_threshold()
    try:
        assert hub_main(["--config", str(config), "serve"]) == 1
        assert "no hub schema: run `alpr-hub init`" in capsys.readouterr().err
        upgrade(blank_url, "0004")
        assert hub_main(["--config", str(config), "serve"]) == 1
        error = capsys.readouterr().err
        assert "at revision 0004, this hub needs" in error and "run `alpr-hub db upgrade`" in error
    finally:
        gc.set_threshold(*before)  # serve tunes the collector first
    assert hub_main(["--config", str(config), "db", "upgrade"]) == 0
    engine = make_engine(blank_url)
    try:
        require_current_schema(engine)  # at the newest revision: no error
    finally:
        engine.dispose()
