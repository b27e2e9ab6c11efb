"""``alpr-hub`` commands for the ALPR Administrator and auditors at the hub's console.

    alpr-hub users create NAME --full-name F --org O --classification C --roles R[,R] --by ADMIN
    alpr-hub users list [--authorized] | train NAME --date YYYY-MM-DD --by A | approve NAME --by A
    alpr-hub users classify NAME CLASSIFICATION --by A | roles NAME R[,R] --by A
    alpr-hub users suspend NAME --reason R --by A | reactivate NAME --by A | delete NAME --by A
    alpr-hub devices register NAME [--description D] --by A | revoke NAME --by A | list
    alpr-hub agencies add NAME --kind ca_public|federal|out_of_state|private [--contact C] --by A | list
    alpr-hub shares list | decide ID --approve|--refuse --note N --by A
    alpr-hub audit verify | report --from DATE --to DATE [--format html|json] [--out FILE] --by A
    alpr-hub audit approve ID --by A [--note N] | show ID [--format html|json]

They go through the same gate and access log as the HTTP API (:mod:`hub.access.service`), as the
console user ``console:<--by>``. The console never reads ALPR information itself: searches, reads and
exports are for trained users through the API.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from hub.access.gate import Actor
from hub.access.roles import Role
from hub.access.service import ComplianceService
from hub.config import HubConfig

Handler = Callable[[argparse.Namespace, HubConfig], int]
Register = Callable[..., argparse.ArgumentParser]


def _service(config: HubConfig) -> ComplianceService:
    from hub.db import make_engine, session_factory
    from hub.service import compliance_service

    return compliance_service(config, session_factory(make_engine(config.hub.url())))


def _console(args: argparse.Namespace) -> Actor:
    # The gate lets the console do any administrative or audit action (never a search); who ran and
    # who approved each audit is still recorded by name.
    return Actor.console(args.by)


def _day(text: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _roles(text: str) -> list[str]:
    return [part for part in text.split(",") if part.strip()]


def _print_rows(rows: list[dict[str, Any]], keys: list[str]) -> None:
    for row in rows:
        print("\t".join("-" if row.get(k) is None else str(row.get(k)) for k in keys))


# --- users ------------------------------------------------------------------------------------


def users_create(args: argparse.Namespace, config: HubConfig) -> int:
    new = _service(config).create_user(_console(args), args.username, args.full_name, args.org, args.classification,
                                       _roles(args.roles))  # fmt: skip
    print(f"created user {new.username}; hand over once, in person (not shown again):")
    print(f"  initial password: {new.initial_password}")
    print(f"  TOTP (scan into the authenticator app): {new.totp_uri}")
    print("before any access to ALPR information: `users train`, then `users approve`")
    return 0


def users_list(args: argparse.Namespace, config: HubConfig) -> int:
    rows = _service(config).list_users(_console(args), authorized_only=args.authorized)
    _print_rows(rows, ["username", "classification", "roles", "status", "training_expires_utc",
                       "approval_expires_utc", "may_access_alpr_data"])  # fmt: skip
    return 0


def users_train(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).record_training(_console(args), args.username, args.date)
    print(f"training of {args.username} recorded ({args.date:%Y-%m-%d})")
    return 0


def users_approve(args: argparse.Namespace, config: HubConfig) -> int:
    service = _service(config)
    service.approve_user(_console(args), args.username)
    print(f"{args.username} approved for {service.policy.access.approval_review_days} days")
    return 0


def users_classify(args: argparse.Namespace, config: HubConfig) -> int:
    ended = _service(config).set_classification(_console(args), args.username, args.classification)
    print(f"{args.username}: {args.classification}" + (" (not authorized: access ended; re-apply and train)"
                                                      if ended else ""))  # fmt: skip
    return 0


def users_roles(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).set_roles(_console(args), args.username, _roles(args.roles))
    print(f"{args.username}: roles {args.roles}")
    return 0


def users_suspend(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).suspend_user(_console(args), args.username, args.reason)
    print(f"{args.username} suspended")
    return 0


def users_reactivate(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).reactivate_user(_console(args), args.username)
    print(f"{args.username} re-activated; training must be recorded again before any access")
    return 0


def users_delete(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).delete_user(_console(args), args.username)
    print(f"{args.username} deleted (access-log entries kept)")
    return 0


# --- devices and agencies ---------------------------------------------------------------------


def devices_register(args: argparse.Namespace, config: HubConfig) -> int:
    key = _service(config).register_device(_console(args), args.name, args.description)
    print(f"device {args.name} registered; install this key on it (sent as X-Device-Key; not shown again):")
    print(f"  {key}")
    return 0


def devices_revoke(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).revoke_device(_console(args), args.name)
    print(f"device {args.name} revoked")
    return 0


def devices_list(args: argparse.Namespace, config: HubConfig) -> int:
    _print_rows(_service(config).list_devices(_console(args)), ["name", "registered_by", "revoked", "last_used_utc"])
    return 0


def agencies_add(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).add_agency(_console(args), args.name, args.kind, args.contact)
    print(f"agency {args.name} ({args.kind}) added")
    return 0


def agencies_list(args: argparse.Namespace, config: HubConfig) -> int:
    _print_rows(_service(config).list_agencies(_console(args)), ["id", "name", "kind", "contact"])
    return 0


def shares_list(args: argparse.Namespace, config: HubConfig) -> int:
    rows = _service(config).list_shares(_console(args))
    _print_rows(rows, ["id", "agency", "agency_kind", "status", "requested_by", "decided_by", "records"])
    return 0


def shares_decide(args: argparse.Namespace, config: HubConfig) -> int:
    _service(config).decide_share(_console(args), args.share_id, args.approve, args.note)
    print(f"share request {args.share_id} {'approved' if args.approve else 'refused'}")
    return 0


# --- audits -----------------------------------------------------------------------------------


def audit_verify(args: argparse.Namespace, config: HubConfig) -> int:
    result = _service(config).verify_log()
    if result.ok:
        print(f"access log verifies: {result.entries_checked} entries, head entry {result.head_seq}")
        return 0
    print(f"ACCESS LOG DOES NOT VERIFY ({len(result.problems)} problems):", file=sys.stderr)
    for problem in result.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def audit_report(args: argparse.Namespace, config: HubConfig) -> int:
    stored = _service(config).run_audit(_console(args), args.start, args.end)
    _emit(stored, args.format, args.out)
    print(f"audit report {stored['id']} stored; approval by someone else: `alpr-hub audit approve {stored['id']}`",
          file=sys.stderr)  # fmt: skip
    return 0


def audit_approve(args: argparse.Namespace, config: HubConfig) -> int:
    stored = _service(config).approve_audit(_console(args), args.report_id, args.note or "")
    print(f"audit report {stored['id']} approved by {stored['approved_by']}")
    return 0


def audit_show(args: argparse.Namespace, config: HubConfig) -> int:
    _emit(_service(config).get_audit(_console(args), args.report_id), args.format, args.out)
    return 0


def _emit(stored: dict[str, Any], fmt: str, out: Path | None) -> None:
    from hub.access.audit import render_html

    text = render_html(stored["report"], stored) if fmt == "html" else json.dumps(stored, indent=2)
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"written to {out}", file=sys.stderr)


def add_commands(command: Register, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the users, devices, agencies, shares and audit commands on ``alpr-hub``'s parser."""

    def by(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--by", required=True, help="who is acting (recorded in the access log)")
        return p

    users = command("users", users_list, "user accounts (ALPR Administrator)").add_subparsers(dest="u", required=True)
    create = by(command("create", users_create, "create an account; prints its initial password and TOTP", users))
    create.add_argument("username")
    create.add_argument("--full-name", required=True)
    create.add_argument("--org", required=True, help="the person's organization (recorded with each access)")
    create.add_argument("--classification", required=True, help="job classification (the policy authorizes some)")
    create.add_argument("--roles", required=True, help=f"comma-separated: {', '.join(r.value for r in Role)}")
    by(command("list", users_list, "accounts and whether each may access ALPR information", users)).add_argument(
        "--authorized", action="store_true", help="only users who may access ALPR information today"
    )
    train = by(command("train", users_train, "record completed training", users))
    train.add_argument("username")
    train.add_argument("--date", type=_day, required=True)
    by(command("approve", users_approve, "approve (or renew the annual approval of) a user", users)).add_argument(
        "username"
    )
    classify = by(command("classify", users_classify, "change a user's job classification", users))
    classify.add_argument("username")
    classify.add_argument("classification")
    roles = by(command("roles", users_roles, "set a user's roles", users))
    roles.add_argument("username")
    roles.add_argument("roles")
    suspend = by(command("suspend", users_suspend, "suspend an account", users))
    suspend.add_argument("username")
    suspend.add_argument("--reason", required=True)
    by(command("reactivate", users_reactivate, "re-activate (training needed again)", users)).add_argument("username")
    by(command("delete", users_delete, "delete a departed user's account", users)).add_argument("username")

    devices = command("devices", devices_list, "agency-issued devices").add_subparsers(dest="d", required=True)
    register = by(command("register", devices_register, "register a device; prints its key once", devices))
    register.add_argument("name")
    register.add_argument("--description", default="")
    by(command("revoke", devices_revoke, "revoke a device", devices)).add_argument("name")
    by(command("list", devices_list, "registered devices", devices))

    agencies = command("agencies", agencies_list, "agency registry").add_subparsers(dest="a", required=True)
    add = by(command("add", agencies_add, "add an agency with its type", agencies))
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=["ca_public", "federal", "out_of_state", "private"])
    add.add_argument("--contact", default="")
    by(command("list", agencies_list, "agencies", agencies))

    shares = command("shares", shares_list, "share requests").add_subparsers(dest="s", required=True)
    by(command("list", shares_list, "share requests and transfers", shares))
    decide = by(command("decide", shares_decide, "approve or refuse a pending share request", shares))
    decide.add_argument("share_id", type=int)
    choice = decide.add_mutually_exclusive_group(required=True)
    choice.add_argument("--approve", action="store_true")
    choice.add_argument("--refuse", dest="approve", action="store_false")
    decide.add_argument("--note", required=True, help="what was verified: the purpose and the need")

    audit = command("audit", audit_verify, "access log and audits").add_subparsers(dest="au", required=True)
    command("verify", audit_verify, "recompute the access-log chain; exit 1 on any problem", audit)
    report = by(command("report", audit_report, "run and store an audit report for a period", audit))
    report.add_argument("--from", dest="start", type=_day, required=True)
    report.add_argument("--to", dest="end", type=_day, required=True)
    report.add_argument("--format", choices=["html", "json"], default="json")
    report.add_argument("--out", type=Path)
    approve = by(command("approve", audit_approve, "approve a stored audit report", audit))
    approve.add_argument("report_id", type=int)
    approve.add_argument("--note")
    show = by(command("show", audit_show, "print a stored audit report", audit))
    show.add_argument("report_id", type=int)
    show.add_argument("--format", choices=["html", "json"], default="json")
    show.add_argument("--out", type=Path)
