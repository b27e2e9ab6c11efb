"""The hub's own keys: a CurveZMQ pair for the ingest socket and an X25519 pair for sealed reads.

Both live as files under the config's ``keys_dir`` (secret files mode 0600), made once by
``alpr-hub init`` and never overwritten.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import zmq

from edge.config import write_secret
from edge.sealing import decode_key, encode_key, generate_spool_keypair

CURVE_SECRET = "hub_curve.secret"
CURVE_PUBLIC = "hub_curve.public"
SPOOL_SECRET = "spool.secret"
SPOOL_PUBLIC = "spool.public"
ACCESS_LOG_KEY = "access_log.key"
"""HMAC key of the access-log chain: someone who can edit the database but not read this file cannot forge it."""


class KeysMissingError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class HubKeys:
    curve_public: str
    curve_secret: str
    spool_public: bytes
    spool_private: bytes

    @property
    def spool_public_text(self) -> str:
        return encode_key(self.spool_public)


def create_keys(keys_dir: Path) -> bool:
    """Make any missing key pair; returns True if something was created."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    created = False
    if not (keys_dir / CURVE_SECRET).exists():
        public, secret = zmq.curve_keypair()
        write_secret(keys_dir / CURVE_SECRET, secret.decode())
        (keys_dir / CURVE_PUBLIC).write_text(public.decode() + "\n", encoding="ascii")
        created = True
    if not (keys_dir / SPOOL_SECRET).exists():
        spool_public, spool_private = generate_spool_keypair()
        write_secret(keys_dir / SPOOL_SECRET, encode_key(spool_private))
        (keys_dir / SPOOL_PUBLIC).write_text(encode_key(spool_public) + "\n", encoding="ascii")
        created = True
    if not (keys_dir / ACCESS_LOG_KEY).exists():
        write_secret(keys_dir / ACCESS_LOG_KEY, encode_key(secrets.token_bytes(32)))
        created = True
    return created


def load_access_log_key(keys_dir: Path) -> bytes:
    try:
        return decode_key((keys_dir / ACCESS_LOG_KEY).read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise KeysMissingError(f"access-log key missing in {keys_dir}: run `alpr-hub init`") from None


def load_keys(keys_dir: Path) -> HubKeys:
    try:
        return HubKeys(
            curve_public=(keys_dir / CURVE_PUBLIC).read_text(encoding="ascii").strip(),
            curve_secret=(keys_dir / CURVE_SECRET).read_text(encoding="ascii").strip(),
            spool_public=decode_key((keys_dir / SPOOL_PUBLIC).read_text(encoding="ascii").strip()),
            spool_private=decode_key((keys_dir / SPOOL_SECRET).read_text(encoding="ascii").strip()),
        )
    except FileNotFoundError as exc:
        raise KeysMissingError(f"hub keys missing in {keys_dir} ({exc.filename}): run `alpr-hub init`") from None
