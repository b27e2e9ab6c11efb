"""Helpers for tests that run the hub as a real process (`alpr-hub serve`) and real nodes against it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from edge import wire
from edge.spool import Spool
from edge.uplink import Uplink
from hub.models import Read
from tests.conftest import make_record


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def hub_command(*args: str) -> list[str]:
    """``alpr-hub ARGS``: the installed console script next to this interpreter, else ``python -m hub.cli``."""
    script = Path(sys.executable).with_name("alpr-hub")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]
    return [*base, *args]


def fresh_read(node: str) -> wire.ReadRecord:
    now = datetime.now(UTC)  # dated now, so the hub's retention run at start-up keeps it
    return make_record(
        node_id=node,
        first_seen_utc=now,
        best_utc=now,
        last_seen_utc=now,
        crop_jpeg=b"\xff\xd8" + os.urandom(16) + b"\xff\xd9",
    )


@dataclass
class Producer:
    """A node's recognition stand-in: spools a few fresh reads every ``interval_s`` until stopped."""

    name: str
    spool: Spool
    uplink: Uplink
    per_put: int = 3
    interval_s: float = 0.02
    ids: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"producer-{self.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10.0)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            records = [fresh_read(self.name) for _ in range(self.per_put)]
            self.spool.put_many([(r.read_id, r.to_bytes()) for r in records])
            self.ids.extend(r.read_id for r in records)  # only once durably spooled
            self.uplink.notify()
            self.stop_event.wait(self.interval_s)


def read_counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        total, distinct = session.execute(select(func.count(), func.count(func.distinct(Read.read_id)))).one()
    return int(total), int(distinct)


@dataclass
class HubProcess:
    """``alpr-hub serve`` as a child in its own session, its output in a log file."""

    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                hub_command("--config", str(self.config), "serve"),
                cwd=self.config.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the hub and nothing else
        self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def run_cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        hub_command("--config", str(config), *args),
        cwd=config.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"alpr-hub {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def write_hub_config(
    path: Path, *, database_url: str | None = None, name: str = "hub", api: bool = True, extra: str = ""
) -> Path:
    """A hub.toml at ``path`` for one `alpr-hub serve`: data under ``hub-data`` beside it, every port free
    (ingest, hit PUB, and the API unless ``api`` is False), retention out of the way; ``extra`` appended."""
    ingest = free_port()
    lines = ["[hub]", f'name = "{name}"', 'data_dir = "hub-data"']
    if database_url is not None:
        lines.append(f"database_url = {json.dumps(database_url)}")  # a JSON string is a TOML basic string
    lines += [
        "[ingest]",
        f'bind = "tcp://127.0.0.1:{ingest}"',
        f'public_endpoint = "tcp://127.0.0.1:{ingest}"',
        "[dispatch]",
        f'pub_bind = "tcp://127.0.0.1:{free_port()}"',
        "[retention]",
        "interval_s = 3600.0",
        "[api]",
        f'bind = "127.0.0.1:{free_port()}"' if api else "enabled = false",
    ]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path
