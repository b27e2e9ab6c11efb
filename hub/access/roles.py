"""Roles and what each may do. Roles are kept apart: an auditor reads logs and reports, never plates."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Role(StrEnum):
    ADMINISTRATOR = "administrator"  # the ALPR Administrator (429.4): accounts, devices, sharing decisions
    AUTHORIZED_USER = "authorized_user"  # searches ALPR information for an investigation
    DISPATCHER = "dispatcher"  # live hot-list hits only
    HOTLIST_MANAGER = "hotlist_manager"
    AUDITOR = "auditor"  # access log and audit reports, plates masked
    NODE_OPERATOR = "node_operator"  # edge nodes and their health


class Permission(StrEnum):
    SEARCH = "search"
    VIEW_READ = "view_read"
    VIEW_IMAGE = "view_image"
    EXPORT = "export"
    CONFIRM_DESTROYED = "confirm_destroyed"
    REQUEST_SHARE = "request_share"
    HOLD = "hold"
    CORRECT_READ = "correct_read"
    VIEW_HITS = "view_hits"
    DISPOSE_HIT = "dispose_hit"
    MANAGE_HOTLISTS = "manage_hotlists"
    MANAGE_USERS = "manage_users"
    MANAGE_DEVICES = "manage_devices"
    MANAGE_AGENCIES = "manage_agencies"
    DECIDE_SHARE = "decide_share"
    TRANSFER_SHARE = "transfer_share"
    READ_ACCESS_LOG = "read_access_log"
    RUN_AUDIT = "run_audit"
    APPROVE_AUDIT = "approve_audit"
    MANAGE_NODES = "manage_nodes"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMINISTRATOR: frozenset({
        Permission.MANAGE_USERS, Permission.MANAGE_DEVICES, Permission.MANAGE_AGENCIES, Permission.DECIDE_SHARE,
        Permission.TRANSFER_SHARE, Permission.APPROVE_AUDIT, Permission.READ_ACCESS_LOG, Permission.HOLD,
        Permission.CONFIRM_DESTROYED,
    }),
    Role.AUTHORIZED_USER: frozenset({
        Permission.SEARCH, Permission.VIEW_READ, Permission.VIEW_IMAGE, Permission.EXPORT, Permission.REQUEST_SHARE,
        Permission.HOLD, Permission.CORRECT_READ, Permission.VIEW_HITS, Permission.CONFIRM_DESTROYED,
    }),
    Role.DISPATCHER: frozenset({Permission.VIEW_HITS, Permission.DISPOSE_HIT}),
    Role.HOTLIST_MANAGER: frozenset({Permission.MANAGE_HOTLISTS}),
    Role.AUDITOR: frozenset({Permission.READ_ACCESS_LOG, Permission.RUN_AUDIT}),
    Role.NODE_OPERATOR: frozenset({Permission.MANAGE_NODES}),
}  # fmt: skip

ALPR_DATA: frozenset[Permission] = frozenset({
    Permission.SEARCH, Permission.VIEW_READ, Permission.VIEW_IMAGE, Permission.EXPORT, Permission.REQUEST_SHARE,
    Permission.HOLD, Permission.CORRECT_READ, Permission.VIEW_HITS, Permission.DISPOSE_HIT, Permission.TRANSFER_SHARE,
    Permission.MANAGE_HOTLISTS,
})  # fmt: skip
"""Permissions that reach ALPR information: authorized classification, current training and approval needed."""

NEEDS_PURPOSE: frozenset[Permission] = frozenset({
    Permission.SEARCH, Permission.VIEW_READ, Permission.VIEW_IMAGE, Permission.EXPORT, Permission.REQUEST_SHARE,
    Permission.HOLD, Permission.CORRECT_READ, Permission.TRANSFER_SHARE,
})  # fmt: skip
"""Permissions used only with a stated purpose naming the investigation (429.4)."""

_PLATE_ROLES = frozenset({Role.AUTHORIZED_USER, Role.DISPATCHER, Role.HOTLIST_MANAGER})


def parse_roles(names: Iterable[str]) -> tuple[Role, ...]:
    """Validated, de-duplicated roles; an auditor may not also hold a role that shows plates."""
    roles: list[Role] = []
    for name in names:
        try:
            role = Role(name.strip().lower())
        except ValueError:
            raise ValueError(f"unknown role {name!r}: one of {', '.join(r.value for r in Role)}") from None
        if role not in roles:
            roles.append(role)
    if not roles:
        raise ValueError("a user needs at least one role")
    if Role.AUDITOR in roles and (_PLATE_ROLES & set(roles) or Role.ADMINISTRATOR in roles):
        raise ValueError("the auditor role is kept apart: it cannot be combined with roles that see plates or "
                         "with the administrator whose work it audits")  # fmt: skip
    return tuple(roles)


def permissions(roles: Iterable[str]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for name in roles:
        try:
            granted |= ROLE_PERMISSIONS[Role(name)]
        except ValueError:  # a role this version does not know grants nothing
            continue
    return frozenset(granted)
