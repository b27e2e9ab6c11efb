from __future__ import annotations

import base64

import pytest

from edge.sealing import (
    KEY_BYTES,
    SEAL_OVERHEAD,
    Opener,
    Sealer,
    SealError,
    decode_key,
    encode_key,
    generate_spool_keypair,
)

PLAINTEXT = b"\x93\xa7CAB1234\xc4\x04\xff\xd8\xff\xe0 plate read with a jpeg inside"


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return generate_spool_keypair()


def test_keypair_is_raw_32_bytes(keypair: tuple[bytes, bytes]) -> None:
    public, private = keypair
    assert len(public) == len(private) == KEY_BYTES
    assert public != private
    assert Opener(private).public_key == public


def test_round_trip(keypair: tuple[bytes, bytes]) -> None:
    public, private = keypair
    sealed = Sealer(public).seal(PLAINTEXT)
    assert len(sealed) == len(PLAINTEXT) + SEAL_OVERHEAD
    assert PLAINTEXT not in sealed
    assert Opener(private).open(sealed) == PLAINTEXT


def test_round_trip_empty_and_large(keypair: tuple[bytes, bytes]) -> None:
    public, private = keypair
    sealer, opener = Sealer(public), Opener(private)
    big = bytes(range(256)) * 1024
    assert opener.open(sealer.seal(b"")) == b""
    assert opener.open(sealer.seal(big)) == big


def test_each_seal_differs(keypair: tuple[bytes, bytes]) -> None:
    sealer = Sealer(keypair[0])
    assert sealer.seal(PLAINTEXT) != sealer.seal(PLAINTEXT)


@pytest.mark.parametrize("position", [0, 31, 32, 47, 48, -1])
def test_tampered_ciphertext_raises_seal_error(keypair: tuple[bytes, bytes], position: int) -> None:
    public, private = keypair
    sealed = bytearray(Sealer(public).seal(PLAINTEXT))
    sealed[position] ^= 0x01
    with pytest.raises(SealError) as info:
        Opener(private).open(bytes(sealed))
    assert "CAB1234" not in str(info.value)
    assert bytes(sealed).hex() not in str(info.value)


@pytest.mark.parametrize("sealed", [b"", b"short", bytes(SEAL_OVERHEAD - 1)])
def test_truncated_input_raises_seal_error(keypair: tuple[bytes, bytes], sealed: bytes) -> None:
    with pytest.raises(SealError):
        Opener(keypair[1]).open(sealed)


def test_wrong_key_raises_seal_error(keypair: tuple[bytes, bytes]) -> None:
    sealed = Sealer(keypair[0]).seal(PLAINTEXT)
    _, other_private = generate_spool_keypair()
    with pytest.raises(SealError) as info:
        Opener(other_private).open(sealed)
    assert "CAB1234" not in str(info.value)


def test_key_encode_decode_round_trip(keypair: tuple[bytes, bytes]) -> None:
    for key in keypair:
        text = encode_key(key)
        assert isinstance(text, str)
        assert decode_key(text) == key
        assert decode_key(f"  {text}\n") == key  # as read from a config file


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not base64 at all!", "base64"),
        ("", "32 bytes"),
        (base64.b64encode(bytes(31)).decode(), "32 bytes"),
        (base64.b64encode(bytes(33)).decode(), "32 bytes"),
        ("QUJ", "base64"),  # missing padding
    ],
)
def test_decode_key_rejects_bad_input(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_key(text)


def test_decode_key_error_does_not_echo_the_key() -> None:
    secret = "c2VjcmV0LXByaXZhdGUta2V5LXdpdGgtYS10eXBv!"
    with pytest.raises(ValueError) as info:
        decode_key(secret)
    assert secret not in str(info.value)


def test_encode_key_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encode_key(b"\x01" * 16)


def test_sealer_and_opener_reject_wrong_length_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(b"\x01" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        Opener(b"\x01" * 33)


def test_sealer_rejects_placeholder_all_zero_key() -> None:
    with pytest.raises(ValueError, match="not a usable"):
        Sealer(bytes(KEY_BYTES))
