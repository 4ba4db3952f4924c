"""Human-readable account addresses with a checksum: bech32m (BIP-350) with prefix ``fp``.

An account is its 32-byte Ed25519 public key.  Typed as 64 hex digits, one wrong digit is
another valid account, and the money goes there.  The address form is the key in bech32m
(https://github.com/bitcoin/bips/blob/master/bip-0350.mediawiki; the BIP-173 encoding
with the BIP-350 checksum constant): ``fp1`` + 52 data characters + a 6-character BCH
checksum, lower case, 61 characters.  The checksum detects any error in up to 4
characters and all but about one in 10^9 others, so a typo is refused, not paid.

:func:`encode` and :func:`decode` are the whole interface; ``decode`` raises
:class:`AddressError` saying what is wrong.
"""

from __future__ import annotations

HRP = "fp"
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32M_CONST = 0x2BC830A3
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class AddressError(ValueError):
    """The text is not a valid ``fp1…`` address (the message says why)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: bytes | list[int], frm: int, to: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to) - 1
    for value in data:
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to - bits)) & maxv)
    elif bits >= frm or (acc << (to - bits)) & maxv:
        return None
    return out


def encode(public_key: bytes) -> str:
    """The ``fp1…`` address of a 32-byte public key."""
    if len(public_key) != 32:
        raise ValueError("an account is 32 bytes")
    data = _convert(public_key, 8, 5, True)
    assert data is not None
    poly = _polymod(_hrp_expand(HRP) + data + [0] * 6) ^ _BECH32M_CONST
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return HRP + "1" + "".join(CHARSET[d] for d in data + checksum)


def decode(text: str) -> bytes:
    """The public key in an ``fp1…`` address; AddressError if it is not one."""
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixed upper and lower case")
    text = text.lower()
    hrp, sep, rest = text.rpartition("1")
    if not sep or hrp != HRP:
        raise AddressError(f"an address starts with {HRP}1")
    if any(c not in CHARSET for c in rest):
        bad = next(c for c in rest if c not in CHARSET)
        raise AddressError(f"{bad!r} cannot appear in an address")
    values = [CHARSET.index(c) for c in rest]
    if len(values) != 58:
        raise AddressError(f"{len(text)} characters, an address has 61")
    if _polymod(_hrp_expand(hrp) + values) != _BECH32M_CONST:
        raise AddressError("checksum mismatch (a typo?)")
    key = _convert(values[:-6], 5, 8, False)
    if key is None or len(key) != 32:
        raise AddressError("bad padding")
    return bytes(key)


def looks_like_address(text: str) -> bool:
    """Whether ``text`` is meant as an ``fp1…`` address (so a failure is a typo)."""
    return text.lower().startswith(HRP + "1")
