"""Logging for the training scripts: to the terminal and, with a run folder, to its ``train.log``."""

from __future__ import annotations

import logging
from pathlib import Path


def log_to(out: Path | None) -> None:
    """Log INFO and up with timestamps; with ``out`` (created if missing) also append to ``out/train.log``.

    ``force`` replaces handlers set by an earlier call, so a script's ``main`` can run twice in one process
    (a resumed run in a test) and write to the second run's folder.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)
