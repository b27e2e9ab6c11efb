"""``alpr-edge``: run and operate an edge node.

alpr-edge run --config edge.toml
alpr-edge check-config --config edge.toml
alpr-edge keygen [--out node.key]
alpr-edge status --config edge.toml
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import zmq

from edge.config import ConfigError, EdgeConfig, load_config, write_secret
from edge.recognition.onnx_runtime import ModelLoadError

logger = logging.getLogger("alpr-edge")


def _load(path: Path) -> EdgeConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def check_config_command(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    problems = []
    if config.keys.node_secret_key_file is not None and not config.keys.node_secret_key_file.is_file():
        problems.append(f"keys.node_secret_key_file: no such file: {config.keys.node_secret_key_file}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: ok ({len(config.cameras)} camera(s), node {config.node.id})")
    return 0


def keygen_command(args: argparse.Namespace) -> int:
    public, secret = zmq.curve_keypair()
    if args.out is not None:
        if args.out.exists() and not args.force:
            print(f"alpr-edge: {args.out} exists; use --force to replace it", file=sys.stderr)
            return 2
        write_secret(args.out, secret.decode())
        print(f'node_public_key = "{public.decode()}"')
        print(f'node_secret_key_file = "{args.out}"')
    else:
        print(f'node_public_key = "{public.decode()}"')
        print(f'node_secret_key = "{secret.decode()}"')
    return 0


def status_command(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    path = config.node.data_dir / "status.json"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"alpr-edge: no status yet ({path} missing): is the node running?", file=sys.stderr)
        return 1
    written = datetime.fromisoformat(status["written_utc"])
    age = (datetime.now(UTC) - written).total_seconds()
    stale = age > max(10.0, 3 * config.node.status_interval_s)
    note = f"  (STALE: last written {age:.0f}s ago)" if stale else ""
    print(f"node       {status['node_id']}{note}")
    print(f"link       {status['link']}  last ack {status['last_ack_utc'] or 'never'}")
    spool = status["spool"]
    print(f"spool      {spool['depth']} reads, {spool['bytes'] / 1e6:.1f} MB, {spool['evicted']} evicted")
    gps = status["gps"]
    fix_age = gps["last_fix_age_s"] if gps["last_fix_age_s"] is not None else "-"
    print(f"gps        {gps['status']}  last fix {fix_age} s ago")
    for camera_id, cam in status["cameras"].items():
        state = "connected" if cam["connected"] else "DISCONNECTED"
        print(
            f"camera     {camera_id}: {cam['fps']:.1f} fps, {cam['dropped']} dropped, "
            f"{cam['reconnects']} reconnects, {cam.get('read_errors', 0)} read errors, {state}"
        )
    print(f"hot list   version {status['hotlist_version'] if status['hotlist_version'] is not None else '-'}")
    return 1 if stale else 0


def run_command(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    logging.basicConfig(
        level=config.node.log_level,
        format="%(levelname)s %(name)s: %(message)s",  # journald adds the time stamp
        stream=sys.stderr,
    )
    from edge.node import EdgeNode  # the models and cameras load only for `run`

    try:
        node = EdgeNode(config)
    except ModelLoadError as exc:
        logger.error("%s", exc)
        return 2
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        stopping = True
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    started = time.monotonic()
    try:
        node.run(until_sources_end=args.exit_at_end)
    finally:
        node.stop()
    logger.info(
        "ran %.0fs, %d frames, %d reads",
        time.monotonic() - started,
        node.counters.frames_processed,
        node.counters.reads_emitted,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr-edge", description="ALPR edge node")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="capture, read plates, spool and send them to the hub")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--exit-at-end", action="store_true", help="stop when every (file) source has ended")
    run.set_defaults(handler=run_command)
    check = sub.add_parser("check-config", help="validate a config file; each problem as key.path: message")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(handler=check_config_command)
    keygen = sub.add_parser("keygen", help="make a CurveZMQ key pair for this node")
    keygen.add_argument("--out", type=Path, help="write the secret key to this file (mode 0600)")
    keygen.add_argument("--force", action="store_true")
    keygen.set_defaults(handler=keygen_command)
    status = sub.add_parser("status", help="spool depth, link state, last fix, per-camera fps")
    status.add_argument("--config", type=Path, required=True)
    status.set_defaults(handler=status_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
