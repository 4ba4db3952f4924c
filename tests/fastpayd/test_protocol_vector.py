"""The test vector of docs/protocol.md section 9 is what the code computes, and what a
real authority answers on the wire: a second implementation can trust it offline."""

from __future__ import annotations

import asyncio
import re
import struct

import nacl.signing
from fastpayd_helpers import REPO, LocalNet

from protocol import KeyPair, SignedTransferOrder, Transfer, TransferOrder, decode, encode
from protocol.crypto import DOMAIN_TRANSFER_ORDER, DOMAIN_VOTE


def vector() -> dict[str, str]:
    text = (REPO / "docs" / "protocol.md").read_text()
    section = text.split("## 9. Test vector", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, flags=re.S)
    assert block is not None
    return dict(line.split(None, 1) for line in block.group(1).strip().splitlines())


def test_vector_recomputed_from_seeds() -> None:
    v = vector()
    sender = KeyPair.from_seed(bytes.fromhex(v["sender_seed"]))
    recipient = KeyPair.from_seed(bytes.fromhex(v["recipient_seed"]))
    authority = KeyPair.from_seed(bytes.fromhex(v["authority_seed"]))
    assert sender.public_key.hex() == v["sender_public"]
    assert recipient.public_key.hex() == v["recipient_public"]
    assert authority.public_key.hex() == v["authority_public"]
    transfer = Transfer(sender=sender.public_key, recipient=recipient.public_key, amount=10,
                        sequence_number=0, user_data=None)
    assert transfer.canonical_bytes.hex() == v["canonical"]
    order = TransferOrder.sign(transfer, sender)
    assert order.signature.hex() == v["order_signature"]
    assert encode(order).hex() == v["order_bytes"]
    assert struct.pack(">I", len(encode(order))).hex() == v["order_frame_header"]
    vote = SignedTransferOrder.sign(order, v["authority_name"], authority)
    assert vote.signature.hex() == v["vote_signature"]
    assert encode(vote).hex() == v["vote_bytes"]
    # Independently of our crypto module: libsodium checks both signatures.
    canonical = bytes.fromhex(v["canonical"])
    nacl.signing.VerifyKey(sender.public_key).verify(
        DOMAIN_TRANSFER_ORDER + canonical, bytes.fromhex(v["order_signature"]))
    nacl.signing.VerifyKey(authority.public_key).verify(
        DOMAIN_VOTE + canonical, bytes.fromhex(v["vote_signature"]))
    assert decode(bytes.fromhex(v["vote_bytes"])) == vote


async def test_authority_answers_the_vector_frame(make_testnet) -> None:
    """An authority holding the vector's key and a funded sender answers vote_bytes."""
    v = vector()
    net: LocalNet = make_testnet(authorities=1, clients=0,
                                 extra_genesis=[(bytes.fromhex(v["sender_public"]), 100)])
    (net.root / "auth0.key").write_text(v["authority_seed"] + "\n")
    committee = net.root / "committee.toml"
    old = net.committee.authorities[0].public_key.hex()
    committee.write_text(committee.read_text().replace(old, v["authority_public"]))
    await asyncio.to_thread(net.daemon("auth0").start)
    reader, writer = await asyncio.open_connection("127.0.0.1", net.port("auth0"))
    writer.write(bytes.fromhex(v["order_frame_header"] + v["order_bytes"]))
    async with asyncio.timeout(15):
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        assert (await reader.readexactly(size)).hex() == v["vote_bytes"]
    writer.close()
