"""The authority daemon: serves transfer orders, confirmations and account queries.

``handle(message, peer)`` is the link's request handler and runs synchronously on the event
loop: it feeds the message to :class:`protocol.AuthorityState` (which stages its writes in
the SQLite store) and returns the response together with the database's "durable" future.
The connection writes the response only when that future resolves, i.e. after the group
commit holding the vote (or the settled confirmation) returned from COMMIT.  Errors are
gated the same way, since they too reveal state (e.g. "another order is pending").

Crash testing: with ``FASTPAYD_TEST_CRASH_AFTER_VOTE_COMMIT=1`` in the environment the
process SIGKILLs itself right after the commit that made a new vote durable and before the
vote is written to the socket — the exact window the invariant is about.  The kill is a
done-callback on the batch's commit future; the vote itself waits on a future that is
never resolved, so no path can write it first.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from typing import Any

from fastpayd import address as fp_address
from fastpayd import wire
from fastpayd.config import ConfigError
from fastpayd.control import ControlError, Progress
from fastpayd.genesis import import_genesis_file
from fastpayd.node import Node
from fastpayd.store import SqliteAuthorityStore
from protocol import (
    AccountInfoRequest,
    AuthorityState,
    ConfirmationOrder,
    FastPayError,
    TransferOrder,
)

CRASH_ENV = "FASTPAYD_TEST_CRASH_AFTER_VOTE_COMMIT"


def _suicide(_fut: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class AuthorityNode(Node):
    role = "authority"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_after_vote_commit = os.environ.get(CRASH_ENV) == "1"
        self.counters: collections.Counter[str] = collections.Counter()

    async def _setup_state(self) -> None:
        self.store = SqliteAuthorityStore(self.db)
        await self.store.load()
        loaded = self.store.count()
        cf = self.committee_file
        try:
            self.state = AuthorityState(self.name, self.keypair, self.committee, self.store)
            genesis: dict[bytes, int] = {}
            for address, balance in cf.genesis:
                genesis[address] = genesis.get(address, 0) + balance
            imported = None
            if cf.genesis_file is not None and cf.genesis_sha256 is not None:
                imported = await import_genesis_file(self.db, cf.genesis_file,
                                                     cf.genesis_sha256, genesis)
                if imported is not None:
                    await self.store.load()  # the imported accounts
            self.state.init_accounts(genesis)
        except ValueError as exc:
            raise ConfigError(f"{self.config.committee_file}: {exc}") from None
        await self.db.durable()
        self.events.emit("state_loaded", accounts=self.store.count(), from_disk=loaded,
                         genesis_imported=imported)

    # -- the link's request handler ---------------------------------------------------------

    def handle(self, message: Any, peer: str) -> tuple[Any, Any]:
        db = self.db
        kind = type(message)
        try:
            if kind is TransferOrder:
                vote = self.state.handle_transfer_order(message)
                self.counters["votes"] += 1
                if self.config.log_requests:
                    self._log_request("vote_issued", message.transfer, peer)
                if self.crash_after_vote_commit and not db.is_durable:
                    # The reply waits on a future that is never resolved: the kill comes
                    # first, right after the batch holding this vote committed.
                    db.gate().add_done_callback(_suicide)
                    return vote, asyncio.get_running_loop().create_future()
                response: Any = vote
            elif kind is ConfirmationOrder:
                outcome = self.state.handle_confirmation_order(message)
                self.counters["confirmations" if outcome.applied else "confirmations_replayed"] += 1
                if self.config.log_requests:
                    self._log_request("confirmation_applied", message.certificate.value.transfer,
                                      peer, applied=outcome.applied)
                response = outcome.to_ack()
            elif kind is AccountInfoRequest:
                response = self.state.handle_account_info_request(message)
                self.counters["account_info"] += 1
            else:
                self.counters["unexpected"] += 1
                return wire.unexpected_message(message), None
        except FastPayError as exc:
            self.counters[f"error:{exc.wire_code}"] += 1
            response = exc.to_message()
        return response, None if db.is_durable else db.gate()

    def _log_request(self, event: str, transfer: Any, peer: str, **extra: Any) -> None:
        self.events.emit(event, peer=peer, sender=transfer.sender.hex(),
                         sequence_number=transfer.sequence_number, amount=transfer.amount,
                         **extra)

    # -- control commands ------------------------------------------------------------------

    def status_extra(self) -> dict[str, Any]:
        return {"accounts": self.store.count(), "counters": dict(self.counters)}

    def _account_view(self, address: bytes) -> dict[str, Any]:
        state = self.store.load_account(address)
        if state is None:
            raise ControlError("UnknownAccount", f"no account {self.account_label(address)}")
        pending = state.pending_confirmation
        return {
            "account": self.account_label(address),
            "address": address.hex(),
            "fp_address": fp_address.encode(address),
            "balance": state.balance,
            "next_sequence_number": state.next_sequence_number,
            "pending": None if pending is None else {
                "sequence_number": pending.value.transfer.sequence_number,
                "recipient": self.account_label(pending.value.transfer.recipient),
                "amount": pending.value.transfer.amount,
            },
        }

    async def do_balance(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Balance of `account` (name or hex) at this authority, or of every account."""
        await self.db.durable()  # report only what is durable
        if request.get("account") is not None:
            return self._account_view(self.resolve_account(request["account"]))
        limit = request.get("limit", 1000)
        views = [self._account_view(a) for a in self.store.addresses(limit)]
        return {"accounts": views, "total": self.store.count()}

    async def do_history(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Confirmed and received certificates of `account` at this authority; without
        an account, every certificate confirmed here (once, as its sender's)."""
        await self.db.durable()
        if request.get("account") is None:
            addresses = list(self.store.accounts)
        else:
            addresses = [self.resolve_account(request["account"])]
            if self.store.load_account(addresses[0]) is None:
                raise ControlError("UnknownAccount",
                                   f"no account {self.account_label(addresses[0])}")

        def row(direction: str, cert: Any) -> dict[str, Any]:
            t = cert.value.transfer
            return {"direction": direction, "sequence_number": t.sequence_number,
                    "sender": self.account_label(t.sender),
                    "recipient": self.account_label(t.recipient), "amount": t.amount}

        if request.get("account") is None:
            rows = [row("sent", c) for a in addresses
                    for c in self._state(a).confirmed_log]
            rows.sort(key=lambda r: (r["sender"], r["sequence_number"]))
            return {"account": None, "history": rows}
        state = self._state(addresses[0])
        return {"account": self.account_label(addresses[0]), "history": [
            *(row("sent", c) for c in state.confirmed_log),
            *(row("received", c) for c in state.received_log),
        ]}

    def _state(self, address: bytes) -> Any:
        state = self.store.load_account(address)
        assert state is not None
        return state
