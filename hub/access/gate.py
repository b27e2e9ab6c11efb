"""The gate every access passes: who is asking, from which device, with which permission, for what purpose.

:func:`decide` only looks; the caller writes the decision to the access log in the same transaction as
the action (or, when refused, instead of it), so there is never an access without its log entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from hub.access.accounts import access_blockers
from hub.access.models import User
from hub.access.policy import PolicySettings
from hub.access.purpose import PurposeCheck, check_purpose
from hub.access.roles import ALPR_DATA, NEEDS_PURPOSE, Permission, Role, permissions

CONSOLE_PREFIX = "console:"
CONSOLE_OPERATIONS = frozenset({Permission.HOLD, Permission.VIEW_HITS, Permission.DISPOSE_HIT})
"""What the hub's console may do with ALPR information (logged like any access): holds and live hits,
the work of a dispatch desk; never a search, a read, an image, an export or a share."""


@dataclass(frozen=True, slots=True)
class Actor:
    """A person acting through the API (a logged-in session) or at the hub's console (the CLI)."""

    username: str
    organization: str
    device: str
    client_address: str
    user_id: int | None = None  # None: the hub's console, trusted as an administrator
    roles: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def console(cls, name: str, organization: str = "") -> Actor:
        if not name.strip():
            raise ValueError("say who is acting: --by NAME")
        return cls(CONSOLE_PREFIX + name.strip()[:56], organization, "hub-console", "local",
                   roles=frozenset({Role.ADMINISTRATOR.value}))  # fmt: skip

    @classmethod
    def from_user(cls, user: User, device: str, client_address: str) -> Actor:
        return cls(user.username, user.organization, device, client_address, user.id, frozenset(user.roles))

    @property
    def is_console(self) -> bool:
        return self.user_id is None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""
    purpose: PurposeCheck | None = None

    @property
    def purpose_kind(self) -> str:
        return self.purpose.kind if self.purpose else "none"

    @property
    def logged_purpose(self) -> str:
        return self.purpose.logged_text if self.purpose else ""


def decide(
    session: Session,
    actor: Actor,
    permission: Permission,
    purpose: str | None,
    now: datetime,
    policy: PolicySettings,
) -> Decision:
    """Whether ``actor`` may use ``permission`` now, for ``purpose``; the reason when not."""
    checked = check_purpose(purpose or "", policy.purpose) if permission in NEEDS_PURPOSE else None
    if actor.is_console:
        # The console is an administrator's shell on the hub itself; it never searches ALPR information.
        if permission in ALPR_DATA and permission not in CONSOLE_OPERATIONS:
            return Decision(False, "ALPR information is reached through the API by a trained user", checked)
        if checked is not None and not checked.ok:
            return Decision(False, checked.reason, checked)
        return Decision(True, purpose=checked)
    user = session.get(User, actor.user_id)
    if user is None:
        return Decision(False, "account deleted", checked)
    if permission not in permissions(user.roles):
        return Decision(False, f"role does not allow {permission.value}", checked)
    if user.status != "active":
        return Decision(False, f"account {user.status}", checked)
    if permission in ALPR_DATA:
        blockers = access_blockers(user, now, policy)
        if blockers:
            return Decision(False, "; ".join(blockers), checked)
    if checked is not None and not checked.ok:
        return Decision(False, checked.reason, checked)
    if permission in ALPR_DATA:
        user.last_access_utc = now
    return Decision(True, purpose=checked)
