"""The store's spliced account summary is byte for byte the protocol's encoding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpayd.store import summary_bytes
from protocol import AccountState, SignedTransferOrder, Transfer, TransferOrder, decode, encode
from protocol.messages import I64_MAX, I64_MIN, U64_MAX

votes = st.builds(
    SignedTransferOrder,
    value=st.builds(
        TransferOrder,
        transfer=st.builds(
            Transfer,
            sender=st.binary(min_size=32, max_size=32),
            recipient=st.binary(min_size=32, max_size=32),
            amount=st.integers(0, U64_MAX),
            sequence_number=st.integers(0, U64_MAX),
            user_data=st.none() | st.binary(max_size=256),
        ),
        signature=st.binary(min_size=64, max_size=64),
    ),
    authority=st.text(min_size=1, max_size=64),
    signature=st.binary(min_size=64, max_size=64),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(I64_MIN, I64_MAX), st.integers(0, U64_MAX), st.none() | votes,
       st.booleans())
def test_summary_bytes_equal_the_protocol_encoding(balance: int, seq: int,
                                                   vote: SignedTransferOrder | None,
                                                   through_wire: bool) -> None:
    if vote is not None and through_wire:
        # The hot path: the order came off the wire through the hand-written decoder.
        order = decode(encode(vote.value))
        assert isinstance(order, TransferOrder)
        vote = SignedTransferOrder.model_construct(value=order, authority=vote.authority,
                                                   signature=vote.signature)
    state = AccountState(balance=balance, next_sequence_number=seq, pending_confirmation=vote)
    assert summary_bytes(state) == state.summary_bytes()
    assert AccountState.from_bytes(summary_bytes(state)) == state
