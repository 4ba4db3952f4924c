"""Account records: blob round trips and corruption handling."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
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


def test_client_record_written_before_provenance_reads_with_unknown_sources():
    # The eight-field blob an older daemon stored: its received payments read back with
    # source "unknown", and the record is written back in the current (nine-field) form.
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob")
    cert = net.pay(alice, bob.address, 10)
    bob.receive_certificate(cert)
    current = msgpack.unpackb(bob.record.to_bytes(), raw=False)
    assert len(current) == 9 and current[8] == ["direct"]
    old_blob = msgpack.packb(current[:8], use_bin_type=True)
    old = ClientRecord.from_bytes(old_blob)
    assert old.received_log == (cert,) and old.received_from == ("unknown",)
    assert old.balance == 10
    assert ClientRecord.from_bytes(old.to_bytes()) == old


def test_client_record_with_sources_not_matching_its_log_is_corrupt():
    net = Network()
    alice = net.client("alice", 100)
    bob = net.client("bob")
    bob.receive_certificate(net.pay(alice, bob.address, 10))
    fields = msgpack.unpackb(bob.record.to_bytes(), raw=False)
    for bad in ([], ["direct", "direct"], [7], None):
        blob = msgpack.packb([*fields[:8], bad], use_bin_type=True)
        with pytest.raises(InvalidMessage):
            ClientRecord.from_bytes(blob)
