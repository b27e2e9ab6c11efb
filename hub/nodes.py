"""Node enrolment: a node is admitted by its CurveZMQ public key, and revoked by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import zmq
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.config import write_secret
from hub.keys import HubKeys
from hub.models import Node

NODE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
Z85_KEY = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class EnrolmentError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Enrolment:
    node: str
    public_key: str
    bundle_dir: Path | None


def enroll(
    session: Session, name: str, keys: HubKeys, hub_endpoint: str, out_dir: Path | None, public_key: str | None = None
) -> Enrolment:
    """Admit a node. Without ``public_key`` a key pair is made and written, with a config snippet, to
    ``out_dir/<name>/`` for installing on the device; with one (from ``alpr-edge keygen``) the secret
    never leaves the device and only the snippet is written."""
    if not NODE_NAME.match(name):
        raise EnrolmentError("node name must be 1-64 letters, digits, '.', '_' or '-'")
    if session.scalar(select(Node).where(Node.name == name)) is not None:
        raise EnrolmentError(f"a node named {name} is already enrolled (revoke it first, or choose another name)")
    secret = None
    if public_key is None:
        public, secret_bytes = zmq.curve_keypair()
        public_key, secret = public.decode(), secret_bytes.decode()
    elif not Z85_KEY.match(public_key):
        raise EnrolmentError("public key must be a 40-character Z85 CurveZMQ key")
    if session.scalar(select(Node).where(Node.curve_public_key == public_key)) is not None:
        raise EnrolmentError("this public key is already enrolled")
    session.add(Node(name=name, curve_public_key=public_key, enrolled_utc=datetime.now(UTC)))
    bundle = None
    if out_dir is not None:
        bundle = out_dir / name
        bundle.mkdir(parents=True, exist_ok=True)
        if secret is not None:
            write_secret(bundle / "node.key", secret)
        (bundle / "edge.toml").write_text(config_snippet(name, public_key, keys, hub_endpoint, secret is not None))
    return Enrolment(name, public_key, bundle)


def config_snippet(name: str, public_key: str, keys: HubKeys, hub_endpoint: str, with_key_file: bool) -> str:
    secret_line = (
        'node_secret_key_file = "node.key"' if with_key_file else 'node_secret_key_file = "/etc/alpr/node.key"'
    )
    return f"""# Enrolment of node {name}: merge into the node's edge.toml (see deploy/edge.example.toml).
[node]
id = "{name}"

[hub]
endpoint = "{hub_endpoint}"
public_key = "{keys.curve_public}"
spool_public_key = "{keys.spool_public_text}"

[keys]
node_public_key = "{public_key}"
{secret_line}
"""


def revoke(session: Session, name: str, by: str, reason: str) -> Node:
    if not reason.strip():
        raise EnrolmentError("a revocation needs a reason")
    node = session.scalar(select(Node).where(Node.name == name))
    if node is None:
        raise EnrolmentError(f"no node named {name}")
    if node.revoked_utc is not None:
        raise EnrolmentError(f"node {name} was already revoked")
    node.revoked_utc = datetime.now(UTC)
    node.revoked_by = by
    node.revoke_reason = reason
    return node


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.name)))
