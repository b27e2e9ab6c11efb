"""Encryption at rest to the hub's public key (libsodium sealed boxes, X25519 + XSalsa20-Poly1305).

The edge node holds only the hub's *public* key, so a stolen device can seal new reads but cannot open
the ones it has spooled: only the hub, holding the private key, can. Each sealed box uses a fresh
ephemeral key pair, so two seals of the same read differ and reveal nothing about each other.

Keys travel in config files as standard base64 text of the raw 32 bytes (`encode_key` / `decode_key`).
"""

from __future__ import annotations

import base64
import binascii
import logging

import nacl.exceptions
from nacl.bindings import crypto_box_SEALBYTES
from nacl.public import PrivateKey, PublicKey, SealedBox

logger = logging.getLogger(__name__)

KEY_BYTES = 32
# A sealed box is the plaintext plus a 32-byte ephemeral public key and a 16-byte MAC.
SEAL_OVERHEAD: int = crypto_box_SEALBYTES


class SealError(Exception):
    """A sealed box could not be opened: tampered, truncated, or sealed to another key."""


def generate_spool_keypair() -> tuple[bytes, bytes]:
    """Return a fresh (public, private) X25519 key pair as raw 32-byte strings; run once, on the hub side."""
    private = PrivateKey.generate()
    return bytes(private.public_key), bytes(private)


def encode_key(key: bytes) -> str:
    """Raw 32-byte key -> base64 text for a config file."""
    _check_length(key, "key")
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Base64 text from a config file -> raw 32-byte key; raises ValueError with a readable reason."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        # The text itself may be a secret (a private key with a typo): never echo it back.
        raise ValueError(f"key is not valid base64 ({exc})") from None
    _check_length(raw, "decoded key")
    return raw


def _check_length(key: bytes, what: str) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes, got {len(key)}")


class Sealer:
    """Seals payloads to the hub's public key. Safe to share between threads (no mutable state)."""

    def __init__(self, hub_public_key: bytes) -> None:
        _check_length(hub_public_key, "hub public key")
        self._box = SealedBox(PublicKey(hub_public_key))
        # Fail at start-up, not at the first plate read: libsodium refuses low-order points such as the
        # all-zero key (a typical placeholder) only when it tries to encrypt.
        try:
            self._box.encrypt(b"")
        except nacl.exceptions.CryptoError as exc:
            raise ValueError("hub public key is not a usable X25519 public key") from exc

    def seal(self, plaintext: bytes) -> bytes:
        """Return the sealed box: len(plaintext) + SEAL_OVERHEAD bytes."""
        return bytes(self._box.encrypt(plaintext))


class Opener:
    """Opens sealed boxes with the hub's private key (hub side)."""

    def __init__(self, hub_private_key: bytes) -> None:
        _check_length(hub_private_key, "hub private key")
        private = PrivateKey(hub_private_key)
        self._public = bytes(private.public_key)
        self._box = SealedBox(private)

    @property
    def public_key(self) -> bytes:
        """The matching public key, so the hub can check that an edge is configured with the right one."""
        return self._public

    def open(self, sealed: bytes) -> bytes:
        """Return the plaintext, or raise SealError; the message never contains the data."""
        try:
            return bytes(self._box.decrypt(sealed))
        except nacl.exceptions.CryptoError as exc:
            # nacl's TypeError for short input is also a CryptoError; both mean "not ours or damaged".
            raise SealError(f"cannot open sealed box of {len(sealed)} bytes: tampered, truncated or foreign") from exc
