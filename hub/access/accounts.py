"""User accounts, agency devices and log-in: argon2 passwords, TOTP on every log-in, expiring sessions.

The account rules of policy 429.4/429.5 live here as plain functions on a database session (the caller
commits and writes the access log): training before access and again after each re-activation,
approval reviewed every period, suspension after inactivity, and an end to access the moment a user's
job classification is no longer an authorized one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import nacl.exceptions
import nacl.secret
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from hub.access.models import ApiSession, Device, User
from hub.access.policy import AccessSection, PolicySettings
from hub.access.roles import Role, parse_roles

MIN_PASSWORD_LENGTH = 12
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a wrong name costs as long as a wrong password."""
    return _HASHER.hash(secrets.token_urlsafe(16))


class AccountError(Exception):
    """A refused account operation, with a message fit to show the operator."""


class UnknownUserError(AccountError, LookupError):
    pass


class LoginRefusedError(AccountError):
    """Log-in refused; ``reason`` is for the access log, the client only ever hears "log-in refused"."""

    def __init__(self, reason: str, username: str) -> None:
        super().__init__("log-in refused")
        self.reason = reason
        self.username = username


class TotpVault:
    """Keeps TOTP seeds encrypted at rest (XSalsa20-Poly1305), so a copy of the database alone cannot
    generate anyone's codes; the key comes from the hub's key files, not the database."""

    PREFIX = "v1:"

    def __init__(self, key: bytes) -> None:
        self._box = nacl.secret.SecretBox(key)

    def seal(self, secret: str) -> str:
        return self.PREFIX + base64.b64encode(self._box.encrypt(secret.encode("ascii"))).decode("ascii")

    def open(self, sealed: str) -> str:
        if not sealed.startswith(self.PREFIX):
            raise AccountError("TOTP seed in an unknown format")
        try:
            return self._box.decrypt(base64.b64decode(sealed[len(self.PREFIX) :])).decode("ascii")
        except (nacl.exceptions.CryptoError, ValueError):
            raise AccountError("TOTP seed cannot be opened with this hub's keys") from None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- users ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewAccount:
    """What the administrator hands to a new user, once: nothing of it can be shown again."""

    username: str
    initial_password: str
    totp_uri: str


def initial_password() -> str:
    """A random password that passes :func:`check_password_strength` (20 URL-safe characters; about one
    draw in 64 is all letters, and is drawn again)."""
    while True:
        password = secrets.token_urlsafe(15)
        if not password.isalpha():
            return password


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"passwords are at least {MIN_PASSWORD_LENGTH} characters")
    if password.isalpha() or password.isdigit():
        raise AccountError("a password mixes letters with digits or symbols")


def _username(name: str) -> str:
    cleaned = name.strip().lower()
    if not cleaned or len(cleaned) > 64 or not all(c.isalnum() or c in "._-" for c in cleaned):
        raise AccountError("a username is 1-64 letters, digits, '.', '_' or '-'")
    return cleaned


def get_user(session: Session, username: str, *, lock: bool = False) -> User:
    statement = select(User).where(User.username == username.strip().lower())
    user = session.execute(statement.with_for_update() if lock else statement).scalar_one_or_none()
    if user is None:
        raise UnknownUserError(f"no user {username.strip().lower()!r}")
    return user


def create_user(
    session: Session,
    username: str,
    full_name: str,
    organization: str,
    classification: str,
    roles: list[str],
    created_by: str,
    now: datetime,
    issuer: str,
    vault: TotpVault,
    password: str | None = None,
) -> NewAccount:
    name = _username(username)
    if session.execute(select(User.id).where(User.username == name)).first() is not None:
        raise AccountError(f"user {name!r} exists")
    if not full_name.strip() or not organization.strip() or not classification.strip():
        raise AccountError("full name, organization and job classification are required")
    checked_roles = parse_roles(roles)
    password = password or initial_password()
    check_password_strength(password)
    secret = pyotp.random_base32()
    session.add(User(
        username=name, full_name=full_name.strip()[:128], organization=organization.strip()[:128],
        job_classification=classification.strip()[:64], roles=[r.value for r in checked_roles],
        password_hash=_HASHER.hash(password), totp_secret=vault.seal(secret), status="active", status_changed_utc=now,
        created_utc=now, created_by=created_by,
    ))  # fmt: skip
    session.flush()
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=issuer)
    return NewAccount(name, password, uri)


def record_training(session: Session, username: str, completed: datetime, recorded_by: str, now: datetime) -> User:
    if completed > now:
        raise AccountError("training cannot be recorded before it happened")
    user = get_user(session, username, lock=True)
    user.training_completed_utc, user.training_recorded_by = completed, recorded_by
    return user


def approve(session: Session, username: str, approved_by: str, now: datetime, policy: PolicySettings) -> User:
    """Approve (or renew the approval of) a user; only for an authorized classification and a trained user."""
    user = get_user(session, username, lock=True)
    if user.status != "active":
        raise AccountError(f"user {user.username!r} is {user.status}: re-activate first")
    if not policy.access.is_authorized(user.job_classification):
        raise AccountError(f"classification {user.job_classification!r} is not authorized by the policy")
    if not training_current(user, now, policy):
        raise AccountError(f"user {user.username!r} has no current training")
    user.approved_utc, user.approved_by = now, approved_by
    return user


def set_classification(session: Session, username: str, classification: str, policy: PolicySettings) -> bool:
    """Change a user's job classification; returns True if this ended their access (429.4)."""
    if not classification.strip():
        raise AccountError("a job classification is required")
    user = get_user(session, username, lock=True)
    user.job_classification = classification.strip()[:64]
    if policy.access.is_authorized(user.job_classification):
        return False
    # Access ends now; the user must re-apply (a new approval) and train again.
    user.approved_utc = user.approved_by = None
    user.training_completed_utc = user.training_recorded_by = None
    _end_sessions(session, user)
    return True


def set_roles(session: Session, username: str, roles: list[str]) -> User:
    user = get_user(session, username, lock=True)
    user.roles = [r.value for r in parse_roles(roles)]
    return user


def suspend(session: Session, username: str, reason: str, now: datetime) -> User:
    if not reason.strip():
        raise AccountError("a reason is required")
    user = get_user(session, username, lock=True)
    user.status, user.status_reason, user.status_changed_utc = "suspended", reason.strip(), now
    _end_sessions(session, user)
    return user


def reactivate(session: Session, username: str, now: datetime) -> User:
    """Re-activate a suspended account; it needs training again before any access (429.5)."""
    user = get_user(session, username, lock=True)
    if user.status == "active":
        raise AccountError(f"user {user.username!r} is already active")
    user.status, user.status_reason, user.status_changed_utc = "active", "", now
    user.training_completed_utc = user.training_recorded_by = None
    user.failed_logins, user.locked_until_utc = 0, None
    return user


def delete_user(session: Session, username: str) -> User:
    """Delete a departed user's account; their access-log entries, shares and downloads stay (by name)."""
    user = get_user(session, username, lock=True)
    session.execute(delete(ApiSession).where(ApiSession.user_id == user.id))
    session.delete(user)
    return user


def change_password(session: Session, username: str, old: str, new: str) -> None:
    user = get_user(session, username, lock=True)
    if not _password_matches(user.password_hash, old):
        raise AccountError("the current password is wrong")
    check_password_strength(new)
    user.password_hash = _HASHER.hash(new)


def training_current(user: User, now: datetime, policy: PolicySettings) -> bool:
    trained = user.training_completed_utc
    return trained is not None and trained + policy.training_valid > now


def approval_current(user: User, now: datetime, policy: PolicySettings) -> bool:
    approved = user.approved_utc
    return approved is not None and approved + policy.approval_valid > now


def access_blockers(user: User, now: datetime, policy: PolicySettings) -> list[str]:
    """Why ``user`` may not reach ALPR information now (empty: they may, given a purpose)."""
    blockers = []
    if user.status != "active":
        blockers.append(f"account {user.status}")
    if not policy.access.is_authorized(user.job_classification):
        blockers.append("job classification not authorized")
    if user.training_completed_utc is None:
        blockers.append("no training recorded")
    elif not training_current(user, now, policy):
        blockers.append("training expired")
    if user.approved_utc is None:
        blockers.append("not approved")
    elif not approval_current(user, now, policy):
        blockers.append("approval lapsed (annual review due)")
    return blockers


def authorized_users(session: Session, now: datetime, policy: PolicySettings) -> list[User]:
    """The list the administrator keeps (429.4): users who may access ALPR information today."""
    users = session.execute(select(User).order_by(User.username)).scalars()
    data_roles = {Role.AUTHORIZED_USER.value, Role.DISPATCHER.value, Role.HOTLIST_MANAGER.value}
    return [u for u in users if data_roles & set(u.roles) and not access_blockers(u, now, policy)]


def suspend_inactive(session: Session, now: datetime, policy: PolicySettings) -> list[str]:
    """Suspend accounts with no access to ALPR information within the inactivity period (429.4)."""
    cutoff = now - timedelta(days=policy.access.inactivity_days)
    stale = session.execute(
        select(User).where(
            User.status == "active",
            or_(User.last_access_utc < cutoff, User.last_access_utc.is_(None) & (User.created_utc < cutoff)),
        )
    ).scalars()
    names = []
    for user in stale:
        user.status, user.status_changed_utc = "suspended", now
        user.status_reason = f"inactive: no access to ALPR information in {policy.access.inactivity_days} days"
        _end_sessions(session, user)
        names.append(user.username)
    return names


def _end_sessions(session: Session, user: User) -> None:
    session.execute(delete(ApiSession).where(ApiSession.user_id == user.id))


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# --- devices ----------------------------------------------------------------------------------


def register_device(session: Session, name: str, description: str, registered_by: str, now: datetime) -> str:
    """Register an agency-issued device; returns its key, shown once (only its hash is kept)."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 64:
        raise AccountError("a device name is 1-64 characters")
    if session.execute(select(Device.id).where(Device.name == cleaned)).first() is not None:
        raise AccountError(f"device {cleaned!r} exists")
    key = "dev_" + secrets.token_urlsafe(32)
    session.add(Device(name=cleaned, key_sha256=token_digest(key), description=description,
                       registered_by=registered_by, registered_utc=now))  # fmt: skip
    session.flush()
    return key


def revoke_device(session: Session, name: str, revoked_by: str, now: datetime) -> None:
    device = session.execute(select(Device).where(Device.name == name.strip())).scalar_one_or_none()
    if device is None:
        raise AccountError(f"no device {name.strip()!r}")
    device.revoked_by, device.revoked_utc = revoked_by, now
    session.execute(delete(ApiSession).where(ApiSession.device_name == device.name))


def identify_device(
    session: Session, key: str | None, client_address: str, rules: AccessSection, now: datetime, *, login: bool = False
) -> str | None:
    """The registered device making a request, or None: access to ALPR information is then refused (429.9).

    A log-in stamps the device's ``last_used_utc``; other requests only read it (no write per request)."""
    if rules.device_mode == "ip_allowlist":
        try:
            address = ipaddress.ip_address(client_address)
        except ValueError:
            return None
        allowed = any(address in ipaddress.ip_network(block, strict=False) for block in rules.ip_allowlist)
        return f"ip:{client_address}" if allowed else None
    if not key:
        return None
    device = session.execute(
        select(Device).where(Device.key_sha256 == token_digest(key), Device.revoked_utc.is_(None))
    ).scalar_one_or_none()
    if device is None:
        return None
    if login:
        device.last_used_utc = now
    return device.name


# --- log-in and sessions ----------------------------------------------------------------------


def login(
    session: Session,
    username: str,
    password: str,
    totp_code: str,
    device: str,
    client_address: str,
    now: datetime,
    policy: PolicySettings,
    vault: TotpVault,
) -> tuple[str, User]:
    """Check password and TOTP code and open a session; returns its token (never stored) and the user."""
    rules = policy.access
    user = session.execute(
        select(User).where(User.username == username.strip().lower()).with_for_update()
    ).scalar_one_or_none()
    if user is None:
        _password_matches(_dummy_hash(), password)
        raise LoginRefusedError("unknown user", username.strip().lower()[:64])
    if user.locked_until_utc is not None and user.locked_until_utc > now:
        raise LoginRefusedError("account locked after repeated failures", user.username)
    if user.status != "active":
        raise LoginRefusedError(f"account {user.status}", user.username)
    step = _accepted_totp_step(user, vault.open(user.totp_secret), totp_code, now)
    if not _password_matches(user.password_hash, password) or step is None:
        user.failed_logins += 1
        if user.failed_logins >= rules.max_failed_logins:
            user.locked_until_utc, user.failed_logins = now + timedelta(minutes=rules.lockout_minutes), 0
        raise LoginRefusedError("wrong password or one-time code", user.username)
    user.totp_last_step, user.failed_logins, user.locked_until_utc, user.last_login_utc = step, 0, None, now
    token = secrets.token_urlsafe(32)
    session.add(ApiSession(
        token_sha256=token_digest(token), user_id=user.id, device_name=device, client_address=client_address[:64],
        created_utc=now, last_used_utc=now, expires_utc=now + timedelta(hours=rules.session_max_hours),
    ))  # fmt: skip
    return token, user


def _accepted_totp_step(user: User, secret: str, code: str, now: datetime) -> int | None:
    """The time step of a valid, unused TOTP code (one step of clock drift either way), or None."""
    code = code.strip()
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in (current, current - 1, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            # A code is good once: replaying one just seen (or an older one) is refused.
            return step if user.totp_last_step is None or step > user.totp_last_step else None
    return None


def session_user(session: Session, token: str, device: str, now: datetime, policy: PolicySettings) -> User | None:
    """The user behind a live session used from the device it was opened on, or None."""
    api_session = session.execute(
        select(ApiSession).where(ApiSession.token_sha256 == token_digest(token))
    ).scalar_one_or_none()
    if api_session is None or api_session.ended_utc is not None or api_session.device_name != device:
        return None
    idle_limit = api_session.last_used_utc + timedelta(minutes=policy.access.session_idle_minutes)
    if now >= api_session.expires_utc or now >= idle_limit:
        api_session.ended_utc = now
        return None
    user = session.get(User, api_session.user_id)
    if user is None or user.status != "active":
        return None
    api_session.last_used_utc = now
    return user


def logout(session: Session, token: str, now: datetime) -> None:
    api_session = session.execute(
        select(ApiSession).where(ApiSession.token_sha256 == token_digest(token))
    ).scalar_one_or_none()
    if api_session is not None:
        api_session.ended_utc = now
