"""Ed25519 keys and domain-separated signatures (PyNaCl / libsodium).

An account address *is* its 32-byte Ed25519 public key; an authority is
identified by its committee name but signs with its own key pair.

Every signature covers ``domain tag || canonical bytes``.  The domain tag is a
fixed ASCII string ending in NUL, one per kind of signed statement
(:data:`DOMAIN_TRANSFER_ORDER` for a client's order, :data:`DOMAIN_VOTE` for an
authority's vote), so a signature made for one purpose can never be accepted
for another even though both cover the same transfer bytes.

Ed25519 is deterministic (RFC 8032): the same seed and message always give the
same signature, which the golden wire-format tests rely on.  Key generation
takes randomness from libsodium unless a seed is given, so callers that need
reproducibility (tests, emulation) pass seeds explicitly.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.signing

PUBLIC_KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
SEED_LENGTH = 32

DOMAIN_TRANSFER_ORDER = b"FastPay/TransferOrder/v1\x00"
"""Prefix of the bytes a client signs to authorise a transfer."""

DOMAIN_VOTE = b"FastPay/Vote/v1\x00"
"""Prefix of the bytes an authority signs to vote for (lock) a transfer."""

Address = bytes
"""An account address: the account owner's 32-byte Ed25519 public key."""


class KeyPair:
    """An Ed25519 signing key with its public key; immutable."""

    __slots__ = ("_seed", "_public_key", "_secret_key")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_LENGTH:
            raise ValueError(f"an Ed25519 seed is {SEED_LENGTH} bytes")
        public_key, secret_key = nacl.bindings.crypto_sign_seed_keypair(seed)
        self._seed = seed
        self._public_key: bytes = public_key
        self._secret_key: bytes = secret_key

    @classmethod
    def generate(cls) -> KeyPair:
        """Return a fresh key pair from libsodium's random source."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """Return the key pair derived from a 32-byte seed (deterministic)."""
        return cls(seed)

    @property
    def seed(self) -> bytes:
        """The 32-byte seed (the secret; store it with care)."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key, which is also the account address."""
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte detached Ed25519 signature of ``data``."""
        signed: bytes = nacl.bindings.crypto_sign(data, self._secret_key)
        return signed[:SIGNATURE_LENGTH]

    def __repr__(self) -> str:
        return f"KeyPair(public_key={self._public_key.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyPair) and other._seed == self._seed

    def __hash__(self) -> int:
        return hash(self._public_key)


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Return True iff ``signature`` is a valid Ed25519 signature of ``data``.

    Never raises on malformed keys or signatures: they simply do not verify.
    """
    if len(signature) != SIGNATURE_LENGTH or len(public_key) != PUBLIC_KEY_LENGTH:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + data, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True
