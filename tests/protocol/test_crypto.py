"""Crypto: deterministic keys, detached signatures, verification that never raises."""

from __future__ import annotations

import pytest

from protocol import KeyPair, verify_signature


def test_keypair_from_seed_is_deterministic():
    a, b = KeyPair.from_seed(b"\x01" * 32), KeyPair.from_seed(b"\x01" * 32)
    assert a == b and a.public_key == b.public_key and len(a.public_key) == 32
    assert a.seed == b"\x01" * 32
    assert a.sign(b"m") == b.sign(b"m") and len(a.sign(b"m")) == 64


def test_keypair_generate_is_random():
    a, b = KeyPair.generate(), KeyPair.generate()
    assert a.public_key != b.public_key
    assert KeyPair.from_seed(a.seed) == a


def test_keypair_rejects_bad_seed():
    with pytest.raises(ValueError):
        KeyPair.from_seed(b"short")


def test_verify_signature():
    k = KeyPair.from_seed(b"\x02" * 32)
    sig = k.sign(b"message")
    assert verify_signature(k.public_key, b"message", sig)
    assert not verify_signature(k.public_key, b"messagE", sig)
    assert not verify_signature(k.public_key, b"message", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify_signature(KeyPair.from_seed(b"\x03" * 32).public_key, b"message", sig)
    assert not verify_signature(k.public_key, b"message", sig[:63])
    assert not verify_signature(b"\xff" * 32, b"message", sig)
    assert not verify_signature(b"\x00" * 31, b"message", sig)
