"""Account records: blob round trips and corruption handling."""

from __future__ import annotations

import pytest
from protocol_helpers import Network

from protocol import AccountState, ClientRecord, InvalidMessage


def test_account_state_round_trip():
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob")
    cert = net.pay(alice, bob.address, 10)
    order = alice.start_transfer(bob.address, 5)
    vote = net.votes(order, ["auth0"])[0]
    alice.handle_vote(vote)
    bob.receive_certificate(cert)
    for name in net.names:
        for address in (alice.address, bob.address):
            account = net.stores[name].load_account(address)
            assert account is not None
            assert AccountState.from_bytes(account.to_bytes()) == account
    for record in (alice.record, bob.record, ClientRecord()):
        assert ClientRecord.from_bytes(record.to_bytes()) == record
    assert alice.record.votes == (vote,) and alice.record.confirmed_by == frozenset(net.names)


@pytest.mark.parametrize("blob", [b"", b"\x95", b"\x93\x01\x02\x03", b"\x95\xa1x\x00\xc0\x90\x90"])
def test_account_state_from_corrupt_bytes(blob: bytes):
    with pytest.raises(InvalidMessage):
        AccountState.from_bytes(blob)
    with pytest.raises(InvalidMessage):
        ClientRecord.from_bytes(blob)
