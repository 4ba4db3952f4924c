"""A control answer never runs ahead of the daemon's own event log.

When ``transfer`` (with ``wait``) or ``wait transfer`` answers that a transfer is final or
complete, the event log already says so (``transfer_final`` / ``transfer_completed``) and
what the answer reports is on disk.  A live WiFi Direct run found the answer first: the
last confirmations arrived while the pump was making the previous batch durable, so the
session's state was complete before its events were told; a caller that read the log
right after the answer did not find the completion.  On loopback the four authorities
answer a confirmation within the same millisecond, which is the same window.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastpayd_helpers import LocalNet

ROUNDS = 12


def _outcomes(events: list[dict[str, Any]], seq: int) -> set[str]:
    """The outcome events the log holds for transfer ``seq``."""
    return {e["event"] for e in events if e.get("sequence_number") == seq
            and e["event"] in ("transfer_final", "transfer_completed")}


@pytest.mark.slow
async def test_answers_follow_the_event_log(make_testnet) -> None:
    net: LocalNet = make_testnet(authorities=4, clients=2, balance=10_000)
    daemons = {n: net.daemon(n) for n in ("auth0", "auth1", "auth2", "auth3", "client0",
                                          "client1")}
    await asyncio.gather(*(asyncio.to_thread(d.start) for d in daemons.values()))
    payer = daemons["client0"]
    try:
        for seq in range(ROUNDS):
            res = await payer.control("transfer", recipient="client1", amount=1, wait=True,
                                      timeout=60)
            assert res["sequence_number"] == seq and res["fully_propagated"], res
            events = (await payer.control("events"))["events"]
            assert "transfer_completed" in _outcomes(events, seq), (seq, res, [
                (e["event"], e.get("sequence_number")) for e in events[-12:]])
            # `wait` for a state the transfer has reached answers at once, consistently.
            done = await payer.control("wait", **{"for": "transfer"}, sequence_number=seq,
                                       state="completed", timeout=30)
            assert done["state"] == "completed", done
        balance = (await payer.control("balance"))["balance"]
        assert balance == 10_000 - ROUNDS
    finally:
        for d in daemons.values():
            d.stop()
