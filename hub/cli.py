"""``alpr-hub``: run and administer the hub.

    alpr-hub init | check-config | db upgrade | db check-index [--rebuild] | serve
    alpr-hub nodes enroll NAME [--public-key K] [--out DIR] | nodes revoke NAME --by U --reason R | nodes list
    alpr-hub hotlist import FILE --list NAME --format csv|tsv|fixed --mapping MAP.toml --by U [--append]
    alpr-hub hotlist add PLATE --list NAME --by U --reason R [...] | hotlist list
    alpr-hub dispatch [--connect ENDPOINT]
    alpr-hub retention run [--dry-run]
    alpr-hub holds create READ_ID --case C --by U --reason R | holds release HOLD_ID --case C --by U --reason R
    alpr-hub hits open --by U | hits dispose HIT_ID --as confirmed|misread|not_actionable --by U [--notes N]
    alpr-hub users | devices | agencies | shares | audit ...   (hub/admin_cli.py: SB 34 administration)

Every command takes ``--config hub.toml`` (defaults apply without one).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.access.gate import Actor
from hub.access.service import AccessDenied, ComplianceService
from hub.config import HubConfig, HubConfigError, load_hub_config

logger = logging.getLogger("alpr-hub")

Handler = Callable[[argparse.Namespace, HubConfig], int]


def _sessions(config: HubConfig) -> sessionmaker[Session]:
    from hub.db import make_engine, session_factory

    return session_factory(make_engine(config.hub.url()))


def init_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.db import upgrade
    from hub.keys import create_keys, load_keys

    created = create_keys(config.keys_dir)
    upgrade(config.hub.url())
    keys = load_keys(config.keys_dir)
    print(f"hub keys {'created' if created else 'kept'} in {config.keys_dir}")
    print(f"database ready: {config.hub.url()}")
    print(f"hub public key: {keys.curve_public}")
    return 0


def check_config_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.keys import KeysMissingError, load_keys

    try:
        load_keys(config.keys_dir)
    except KeysMissingError as exc:
        print(f"hub.data_dir: {exc}", file=sys.stderr)
        return 2
    policy = config.policy
    print(f"{args.config or 'defaults'}: ok (database {config.hub.url()})")
    print(f"policy: {config.compliance.policy_file or 'built-in defaults'}; reads kept {policy.retention.reads_days} "
          f"days, hot lists {policy.retention.hotlist_days}, access log {policy.retention.access_log_days}; "
          f"authorized classifications: {', '.join(policy.access.authorized_classifications)}")  # fmt: skip
    return 0


def db_upgrade_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.db import upgrade

    upgrade(config.hub.url())
    print("database at the newest schema")
    return 0


def db_check_index_command(args: argparse.Namespace, config: HubConfig) -> int:
    """Check the plate-text index against the reads (and rebuild it first with ``--rebuild``)."""
    from hub import textindex

    sessions = _sessions(config)
    if args.rebuild:
        with sessions.begin() as session:
            textindex.rebuild(session.connection())
    with sessions() as session:
        texts = textindex.verify(session)
    print(f"text index: {texts} texts of the stored reads, all indexed")
    return 0


def serve_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.service import HubService, tune_garbage_collection

    tune_garbage_collection()
    service = HubService(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    try:
        stop.wait()
    finally:
        service.stop()
    stats = service.ingest.stats
    logger.info("stopped: %d reads stored, %d duplicates, %d rejected messages", stats.reads_stored,
                stats.duplicates, sum(stats.rejected_messages.values()))  # fmt: skip
    return 0


def nodes_enroll_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.keys import load_keys
    from hub.nodes import enroll

    keys = load_keys(config.keys_dir)
    with _sessions(config).begin() as session:
        enrolment = enroll(session, args.name, keys, config.ingest.public_endpoint, args.out, args.public_key)
    print(f"enrolled node {enrolment.node} (public key {enrolment.public_key})")
    if enrolment.bundle_dir is not None:
        print(f"key bundle and config snippet: {enrolment.bundle_dir}")
    return 0


def nodes_revoke_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.nodes import revoke

    with _sessions(config).begin() as session:
        revoke(session, args.name, args.by, args.reason)
    print(f"revoked node {args.name}")
    return 0


def nodes_list_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.nodes import list_nodes

    with _sessions(config)() as session:
        for node in list_nodes(session):
            state = f"revoked {node.revoked_utc:%Y-%m-%d}" if node.revoked_utc else "active"
            seen = f"{node.last_seen_utc:%Y-%m-%dT%H:%M:%SZ}" if node.last_seen_utc else "never"
            health = node.last_health or {}
            print(f"{node.name}\t{state}\tlast seen {seen}\tspool {health.get('spool_depth', '-')}"
                  f"\tgps {health.get('gps_status', '-')}")  # fmt: skip
    return 0


def hotlist_import_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.hotlists import ColumnMapping, HotlistSettings, import_file

    mapping_data = tomllib.loads(args.mapping.read_text(encoding="utf-8"))
    settings = HotlistSettings.model_validate(mapping_data.pop("list", {}))
    mapping = ColumnMapping.model_validate(mapping_data.get("columns", mapping_data))
    with _sessions(config).begin() as session:
        result = import_file(session, args.list, args.file, args.format, mapping, args.by,
                             replace=not args.append, settings=settings)  # fmt: skip
    print(f"{args.list}: version {result.version}, {result.added} added, {result.removed} removed, "
          f"{result.unchanged} unchanged, {result.duplicates} duplicates, {result.skipped} bad rows")  # fmt: skip
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    return 0


def hotlist_add_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.hotlists import add_entry

    with _sessions(config).begin() as session:
        add_entry(session, args.list, args.plate, args.state, args.category, args.priority, None, args.notes or "",
                  args.by, args.reason)  # fmt: skip
    print(f"listed on {args.list}")
    return 0


def hotlist_list_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.models import Hotlist, HotlistEntry

    with _sessions(config)() as session:
        rows = session.execute(
            select(Hotlist.name, func.count(HotlistEntry.id))
            .outerjoin(HotlistEntry, (HotlistEntry.hotlist_id == Hotlist.id) & HotlistEntry.removed_utc.is_(None))
            .group_by(Hotlist.name)
            .order_by(Hotlist.name)
        )
        for name, count in rows:
            print(f"{name}\t{count} active entries")
    return 0


def dispatch_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.dispatch import DispatchConsole

    endpoint = args.connect or config.dispatch.pub_bind.replace("0.0.0.0", "127.0.0.1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"dispatch console: waiting for hits from {endpoint} (Ctrl-C to quit)", file=sys.stderr)
    DispatchConsole(endpoint, sys.stdout, config.dispatch.bell_max_priority).run(stop)
    return 0


def retention_run_command(args: argparse.Namespace, config: HubConfig) -> int:
    from hub.retention import RetentionJob, RetentionPolicy
    from hub.service import HubRetentionJob, compliance_service, image_store

    policy = RetentionPolicy(reads_days=config.retention.reads_days, hits_days=config.retention.hits_days)
    sessions = _sessions(config)
    upkeep = None if args.dry_run else compliance_service(config, sessions).run_upkeep
    job = HubRetentionJob(RetentionJob(sessions, image_store(config), policy), sessions, config.retention.hotlist_days,
                          upkeep)  # fmt: skip
    report = job.run(dry_run=args.dry_run)
    print(f"{'would purge' if args.dry_run else 'purged'}: {report.reads_purged} reads, {report.hits_purged} hits, "
          f"{report.images_purged} images; kept {report.held_reads_kept} held reads")  # fmt: skip
    return 0


def _compliance(config: HubConfig) -> ComplianceService:
    from hub.service import compliance_service

    return compliance_service(config, _sessions(config))


def holds_create_command(args: argparse.Namespace, config: HubConfig) -> int:
    hold_id = _compliance(config).hold(Actor.console(args.by), args.read_id, args.case, args.reason, args.case)
    print(f"hold {hold_id} on read {args.read_id} for case {args.case}")
    return 0


def holds_release_command(args: argparse.Namespace, config: HubConfig) -> int:
    _compliance(config).release(Actor.console(args.by), args.hold_id, args.reason, args.case)
    print(f"hold {args.hold_id} released")
    return 0


def hits_open_command(args: argparse.Namespace, config: HubConfig) -> int:
    for hit in _compliance(config).open_hits(Actor.console(args.by), args.limit):
        entry = hit["entry"]
        print(f"{hit['hit_id']}\t{hit['created_utc']}\tP{entry['priority']}\t{hit['list_name']}\t"
              f"{hit['matched_text']}\t{hit['match_type']}")  # fmt: skip
    return 0


def hits_dispose_command(args: argparse.Namespace, config: HubConfig) -> int:
    _compliance(config).dispose_hit(Actor.console(args.by), args.hit_id, args.disposition, args.notes)
    print(f"hit {args.hit_id}: {args.disposition}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr-hub", description="ALPR hub")
    parser.add_argument("--config", type=Path, help="hub.toml (defaults apply without one)")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Handler, help_text: str, parent: argparse._SubParsersAction[
            argparse.ArgumentParser] = sub) -> argparse.ArgumentParser:  # fmt: skip
        p = parent.add_parser(name, help=help_text)
        p.set_defaults(handler=handler)
        return p

    command("init", init_command, "create the hub's keys and database")
    command("check-config", check_config_command, "validate the configuration; each problem as key.path: message")
    db = command("db", db_upgrade_command, "database schema").add_subparsers(dest="db_command", required=True)
    command("upgrade", db_upgrade_command, "migrate the database to the newest schema", db)
    check_index = command("check-index", db_check_index_command, "check the plate-text search index", db)
    check_index.add_argument("--rebuild", action="store_true", help="rebuild it first (SQLite: after a VACUUM)")
    command("serve", serve_command, "run ingest, matching, dispatch alerts and retention")

    nodes = command("nodes", nodes_list_command, "edge nodes").add_subparsers(dest="nodes_command", required=True)
    enroll = command("enroll", nodes_enroll_command, "admit a node; writes its key bundle and config snippet", nodes)
    enroll.add_argument("name")
    enroll.add_argument("--public-key", help="the node's key from `alpr-edge keygen` (its secret stays there)")
    enroll.add_argument("--out", type=Path, default=Path("enrolments"), help="where the bundle is written")
    revoke = command("revoke", nodes_revoke_command, "refuse a node from now on", nodes)
    revoke.add_argument("name")
    revoke.add_argument("--by", required=True)
    revoke.add_argument("--reason", required=True)
    command("list", nodes_list_command, "nodes with last seen and health", nodes)

    hotlist = command("hotlist", hotlist_list_command, "hot lists").add_subparsers(dest="hl_command", required=True)
    imp = command("import", hotlist_import_command, "import a CSV/TSV/fixed-width extract as a new version", hotlist)
    imp.add_argument("file", type=Path)
    imp.add_argument("--list", required=True)
    imp.add_argument("--format", required=True, choices=["csv", "tsv", "fixed"])
    imp.add_argument("--mapping", type=Path, required=True, help="TOML: [columns] mapping and [list] settings")
    imp.add_argument("--by", required=True)
    imp.add_argument("--append", action="store_true", help="keep entries missing from the file")
    add = command("add", hotlist_add_command, "list one plate by hand (who and why recorded)", hotlist)
    add.add_argument("plate")
    add.add_argument("--list", required=True)
    add.add_argument("--state")
    add.add_argument("--category")
    add.add_argument("--priority", type=int)
    add.add_argument("--notes")
    add.add_argument("--by", required=True)
    add.add_argument("--reason", required=True)
    command("list", hotlist_list_command, "lists and their active entries", hotlist)

    dispatch = command("dispatch", dispatch_command, "console for dispatchers: prints each hit as it happens")
    dispatch.add_argument("--connect", help="the hub's hit PUB endpoint (default: from the config)")

    retention = command("retention", retention_run_command, "retention").add_subparsers(dest="r", required=True)
    command("run", retention_run_command, "purge what the policy no longer allows to keep", retention).add_argument(
        "--dry-run", action="store_true"
    )

    holds = command("holds", hits_open_command, "evidence holds").add_subparsers(dest="h", required=True)
    create = command("create", holds_create_command, "keep a read past retention for a case", holds)
    create.add_argument("read_id")
    create.add_argument("--case", required=True)
    create.add_argument("--by", required=True)
    create.add_argument("--reason", required=True)
    release = command("release", holds_release_command, "release a hold", holds)
    release.add_argument("hold_id", type=int)
    release.add_argument("--case", required=True, help="the case the hold was for (the purpose, logged)")
    release.add_argument("--by", required=True)
    release.add_argument("--reason", required=True)

    hits = command("hits", hits_open_command, "hot-list hits").add_subparsers(dest="hits_command", required=True)
    hits_open = command("open", hits_open_command, "hits without a disposition (logged)", hits)
    hits_open.add_argument("--limit", type=int, default=50)
    hits_open.add_argument("--by", required=True, help="who is looking (recorded in the access log)")
    dispose = command("dispose", hits_dispose_command, "record what a hit turned out to be", hits)
    dispose.add_argument("hit_id", type=int)
    dispose.add_argument("--as", dest="disposition", required=True, choices=["confirmed", "misread", "not_actionable"])
    dispose.add_argument("--by", required=True)
    dispose.add_argument("--notes")

    from hub.admin_cli import add_commands

    add_commands(command, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_hub_config(args.config)
    except HubConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level or config.hub.log_level, format="%(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args, config)
    except (ValueError, LookupError, RuntimeError, AccessDenied) as exc:  # domain errors: one line, no traceback
        print(f"alpr-hub: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
