"""Several `alpr-hub serve` processes on one PostgreSQL database (how an agency scales the hub): each has
its own endpoints and the same keys; nodes split between them; every read stored once, and the one
access log stays one chain."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest

from edge.sealing import Sealer, decode_key
from edge.spool import Spool
from edge.uplink import CurveKeys
from hub.access.auditlog import AccessLog
from hub.db import make_engine, session_factory
from hub.keys import load_access_log_key
from tests.hub.conftest import make_uplink, stored_ids, wait_for
from tests.hub.processes import HubProcess, Producer, free_port, read_counts, run_cli, write_hub_config


@pytest.mark.parametrize("blank_url", ["postgresql"], indirect=True)
def test_two_hub_processes_share_one_postgresql_database(blank_url: str, tmp_path: Path) -> None:
    configs = [write_hub_config(tmp_path / f"hub-{i}.toml", database_url=blank_url, name=f"hub-{i}") for i in (1, 2)]
    run_cli(configs[0], "init")  # keys under the shared data_dir, the schema migrated once
    run_cli(configs[1], "init")  # the second finds both in place
    keys_dir = tmp_path / "hub-data" / "keys"
    spool_public = decode_key((keys_dir / "spool.public").read_text(encoding="ascii"))
    producers = []
    for i, name in enumerate(["car-1", "car-2", "car-3", "car-4"]):
        config = configs[i % 2]  # each node enrolled against one hub process's endpoint
        run_cli(config, "nodes", "enroll", name, "--out", str(tmp_path / "enrolments"))
        bundle = tmp_path / "enrolments" / name
        snippet = tomllib.loads((bundle / "edge.toml").read_text(encoding="utf-8"))
        keys = CurveKeys(
            snippet["keys"]["node_public_key"], (bundle / "node.key").read_text().strip(), snippet["hub"]["public_key"]
        )
        spool = Spool(tmp_path / f"spool-{name}.db", Sealer(spool_public))
        uplink = make_uplink(name, snippet["hub"]["endpoint"], keys, spool, heartbeat_interval_s=0.5)
        producers.append(Producer(name, spool, uplink, per_put=3, interval_s=0.05))
    assert (
        len(
            {
                tomllib.loads((tmp_path / "enrolments" / n / "edge.toml").read_text())["hub"]["endpoint"]
                for n in ("car-1", "car-2")
            }
        )
        == 2
    )

    hubs = [HubProcess(config, tmp_path / f"{config.stem}.log") for config in configs]
    engine = make_engine(blank_url)
    try:
        for hub in hubs:
            hub.start()
        for producer in producers:
            producer.uplink.start()
            producer.start()
        wait_for(lambda: all(p.uplink.stats.reads_acked >= 20 for p in producers), "every node served")
        for producer in producers:
            producer.stop()
        wait_for(lambda: all(p.spool.stats().depth == 0 for p in producers), "every spool to drain")
        assert all(hub.running() for hub in hubs), [hub.tail() for hub in hubs]
        # Both processes append to the one access log: a user made on each, chain intact.
        run_cli(configs[0], "agencies", "add", "Fresno PD", "--kind", "ca_public", "--by", "admin-1")
        run_cli(configs[1], "agencies", "add", "Kern County Sheriff", "--kind", "ca_public", "--by", "admin-2")
    finally:
        for producer in producers:
            producer.stop()
            producer.uplink.stop()
        for hub in hubs:
            hub.stop()
    try:
        spooled = [read_id for p in producers for read_id in p.ids]
        total, distinct = read_counts(session_factory(engine))
        assert total == distinct == len(spooled) == len(set(spooled))
        assert set(stored_ids(session_factory(engine))) == set(spooled)
        with session_factory(engine)() as session:
            assert AccessLog(load_access_log_key(keys_dir)).verify(session).ok
    finally:
        for producer in producers:
            producer.spool.close()
        engine.dispose()


def test_serve_fails_clearly_when_the_api_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "hub.toml"
        config.write_text(
            f'[hub]\ndata_dir = "data"\n[ingest]\nbind = "tcp://127.0.0.1:{free_port()}"\n'
            f'[dispatch]\npub_bind = "tcp://127.0.0.1:{free_port()}"\n[api]\nbind = "127.0.0.1:{port}"\n',
            encoding="utf-8",
        )
        run_cli(config, "init")
        hub = HubProcess(config, tmp_path / "hub.log")
        hub.start()
        assert hub.process is not None
        assert hub.process.wait(60) == 1
        assert f"the API could not listen on http://127.0.0.1:{port}" in hub.tail()
        hub.process = None
