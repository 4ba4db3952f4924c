"""Safe payments from the ``fastpay`` CLI against real daemons on loopback (issue 16, 1):
a typo'd address is refused, not paid; the zero address is refused; an unknown raw hex
address needs --force; paying yourself leaves your balance right at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import fastpay, network_up

from fastpayd import address


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("pay") / "net"
    with network_up(root, "--authorities", "4", "--clients", "2") as up:
        assert up.returncode == 0, up.stdout + up.stderr
        yield root


def cfg(net: Path, name: str) -> str:
    return str(net / f"{name}.toml")


def balance(net: Path, node: str, *account: str) -> int:
    out = fastpay("--config", cfg(net, node), "--json", "balance", *account)
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["balance"])


def client1_fp(net: Path) -> str:
    out = fastpay("--config", cfg(net, "client1"), "--json", "status")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["fp_address"])


def test_address_roundtrip_and_bip350_vectors() -> None:
    key = bytes(range(32))
    text = address.encode(key)
    assert text.startswith("fp1") and len(text) == 61
    assert address.decode(text) == key and address.decode(text.upper()) == key
    # BIP-350's valid bech32m strings check with our checksum code.
    for vector in ("a1lqfn3a", "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx"):
        hrp, _, rest = vector.rpartition("1")
        values = [address.CHARSET.index(c) for c in rest]
        assert address._polymod(address._hrp_expand(hrp) + values) == 0x2BC830A3


def test_transfer_to_typoed_address_refused(net: Path) -> None:
    good = client1_fp(net)
    for i in (5, 20, len(good) - 1):
        typo = good[:i] + ("q" if good[i] != "q" else "p") + good[i + 1:]
        out = fastpay("--config", cfg(net, "client0"), "transfer", typo, "30")
        assert out.returncode == 1 and "checksum" in out.stderr, out
        assert "paid" not in out.stdout
    assert balance(net, "client0") == balance(net, "auth0", "client0")


def test_transfer_to_checksummed_address_pays(net: Path) -> None:
    before = balance(net, "auth1", "client1")
    out = fastpay("--config", cfg(net, "client0"), "transfer", client1_fp(net), "7")
    assert out.returncode == 0 and "paid 7 to client1" in out.stdout, out
    assert balance(net, "auth1", "client1") == before + 7


def test_transfer_to_unknown_hex_needs_force(net: Path) -> None:
    # client1's hex address with one digit changed: valid hex, nobody's account.
    hex1 = json.loads(fastpay("--config", cfg(net, "client1"), "--json", "status").stdout)[
        "address"]
    typo = hex1[:10] + ("0" if hex1[10] != "0" else "1") + hex1[11:]
    before = balance(net, "client0")
    out = fastpay("--config", cfg(net, "client0"), "transfer", typo, "30")
    assert out.returncode == 1 and "UnknownRecipient" in out.stderr and "--force" in out.stderr
    assert balance(net, "client0") == before
    out = fastpay("--config", cfg(net, "client0"), "transfer", typo, "3", "--force")
    assert out.returncode == 0 and "paid 3" in out.stdout, out
    assert balance(net, "client0") == before - 3 == balance(net, "auth2", "client0")


def test_transfer_to_zero_address_refused_even_with_force(net: Path) -> None:
    before = balance(net, "client0")
    for extra in ((), ("--force",)):
        out = fastpay("--config", cfg(net, "client0"), "transfer", "00" * 32, "30", *extra)
        assert out.returncode == 1 and "all-zero" in out.stderr, out
    assert balance(net, "client0") == before


def test_self_payment_balance_right_at_once(net: Path) -> None:
    before = balance(net, "client0")
    out = fastpay("--config", cfg(net, "client0"), "transfer", "client0", "30")
    assert out.returncode == 0 and f"balance {before}" in out.stdout, out
    assert balance(net, "client0") == before  # no sync in between
    assert balance(net, "auth3", "client0") == before
