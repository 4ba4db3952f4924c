"""The client daemon: pays through the committee, receives certificates.

``transfer`` (control command) runs the whole FastPay exchange with
:class:`protocol.ClientState` doing the bookkeeping:

1. sign the order (staged durably *before* it is sent: a client must never sign two
   orders for one sequence number);
2. send it to every authority at once and feed each vote to ``handle_vote`` until the votes
   weigh a quorum — the certificate is formed then, without waiting for slow authorities;
3. send the ConfirmationOrder to every authority (an authority that answers
   ``MissingEarlierConfirmations`` first gets the certificates it missed, found through an
   AccountInfoRequest), recording each acknowledgement;
4. hand the certificate to the recipient's daemon (ConfirmationOrder on its link), which
   verifies it alone and credits it.

Every step is an event (and a progress line on the control socket).  Transfers run one at a
time (a client has at most one pending order); a transfer whose order is still pending from
an earlier, interrupted attempt is resumed when the same recipient and amount are asked for.

Inbound, the link's handler accepts ConfirmationOrders paying us: ``receive_certificate``
verifies the certificate against the committee, the credit is committed, then acked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastpayd import wire
from fastpayd.control import ControlError, Progress
from fastpayd.link import LinkError
from fastpayd.node import Node
from fastpayd.store import SqliteClientStore
from protocol import (
    AccountInfoResponse,
    CertifiedTransferOrder,
    ClientState,
    ConfirmationAck,
    ConfirmationOrder,
    Error,
    FastPayError,
    SignedTransferOrder,
    TransferOrder,
)

MAX_CATCH_UP = 64  # certificates sent to one lagging authority in one confirmation round


class ClientNode(Node):
    role = "client"

    async def _setup_state(self) -> None:
        self.store = SqliteClientStore(self.db)
        await self.store.load_from_disk()
        me = self.keypair.public_key
        genesis = sum(b for a, b in self.committee_file.genesis if a == me)
        self.state = ClientState(self.keypair, self.committee, self.store, genesis)
        self._transfer_lock = asyncio.Lock()
        self.payments_received = 0

    # -- inbound: certificates paying us ----------------------------------------------------

    def handle(self, message: Any, peer: str) -> tuple[Any, Any]:
        db = self.db
        if type(message) is not ConfirmationOrder:
            return wire.unexpected_message(message), None
        cert = message.certificate
        transfer = cert.value.transfer
        try:
            amount = self.state.receive_certificate(cert)
        except FastPayError as exc:
            self.events.emit("payment_refused", peer=peer, code=exc.wire_code,
                             sender=self.account_label(transfer.sender))
            return exc.to_message(), None if db.is_durable else db.gate()
        if amount:
            self.payments_received += 1
            self.events.emit("payment_received", peer=peer,
                             sender=self.account_label(transfer.sender),
                             sequence_number=transfer.sequence_number, amount=amount,
                             balance=self.state.balance)
        ack = ConfirmationAck(sender=transfer.sender, sequence_number=transfer.sequence_number,
                              applied=amount > 0)
        return ack, None if db.is_durable else db.gate()

    # -- outbound helpers ---------------------------------------------------------------------

    async def _request(self, peer: str, message: Any) -> Any:
        """Send ``message`` to ``peer``; return the response (Error included) or raise LinkError."""
        assert self.link is not None
        conn = await self.link.connect(peer)
        return await conn.request(message, self.config.link.request_timeout)

    async def _ask_vote(self, name: str, order: TransferOrder, progress: Progress,
                        outcome: dict[str, Any]) -> CertifiedTransferOrder | None:
        t = order.transfer
        self.events.emit("order_sent", authority=name, sequence_number=t.sequence_number)
        try:
            response = await self._request(name, order)
        except LinkError as exc:
            outcome[name] = f"unreachable: {exc}"
            self.events.emit("vote_failed", authority=name, reason=str(exc))
            return None
        if isinstance(response, Error):
            outcome[name] = response.code
            self.events.emit("vote_refused", authority=name, code=response.code,
                             message=response.message)
            progress({"step": "vote_refused", "authority": name, "code": response.code})
            return None
        if not isinstance(response, SignedTransferOrder):
            outcome[name] = f"unexpected {type(response).__name__}"
            return None
        try:
            cert = self.state.handle_vote(response)
        except FastPayError as exc:
            outcome[name] = exc.wire_code
            self.events.emit("vote_invalid", authority=name, code=exc.wire_code)
            return None
        outcome[name] = "vote"
        weight = self.committee.weight_of(v.authority for v in self.state.votes)
        if cert is not None:
            weight = self.committee.quorum_threshold
        self.events.emit("vote_received", authority=name, sequence_number=t.sequence_number,
                         weight=weight)
        progress({"step": "vote_received", "authority": name, "weight": weight,
                  "quorum": self.committee.quorum_threshold})
        return cert

    async def _collect_votes(self, order: TransferOrder, progress: Progress
                             ) -> tuple[CertifiedTransferOrder | None, dict[str, Any]]:
        outcome: dict[str, Any] = {}
        tasks = {asyncio.create_task(self._ask_vote(n, order, progress, outcome))
                 for n in sorted(self.committee.names)}
        cert: CertifiedTransferOrder | None = None
        try:
            pending = tasks
            while pending and cert is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    cert = cert or task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return cert, outcome

    async def _confirm_at(self, name: str, cert: CertifiedTransferOrder, progress: Progress
                          ) -> str:
        order = ConfirmationOrder(certificate=cert)
        try:
            response = await self._request(name, order)
            if isinstance(response, Error) and response.code == "MissingEarlierConfirmations":
                await self._catch_up(name)
                response = await self._request(name, order)
        except LinkError as exc:
            self.events.emit("confirmation_failed", authority=name, reason=str(exc))
            return f"unreachable: {exc}"
        if isinstance(response, ConfirmationAck):
            self.state.confirmation_delivered(name)
            self.events.emit("confirmation_delivered", authority=name,
                             sequence_number=cert.value.transfer.sequence_number,
                             applied=response.applied)
            progress({"step": "confirmation_delivered", "authority": name})
            return "confirmed"
        code = response.code if isinstance(response, Error) else type(response).__name__
        self.events.emit("confirmation_refused", authority=name, code=code)
        return code

    async def _catch_up(self, name: str) -> None:
        """Send ``name`` the certificates of ours it has not settled yet (oldest first)."""
        info = await self._request(name, self.state.account_info_request())
        if not isinstance(info, AccountInfoResponse):
            return
        last = self.state.next_sequence_number - 1  # the current certificate's seq
        for seq in range(info.next_sequence_number, min(last, info.next_sequence_number
                                                         + MAX_CATCH_UP)):
            old = self.state.certificate_for(seq)
            if old is None:
                return
            response = await self._request(name, ConfirmationOrder(certificate=old))
            self.events.emit("confirmation_caught_up", authority=name, sequence_number=seq,
                             ok=isinstance(response, ConfirmationAck))

    async def _deliver(self, cert: CertifiedTransferOrder, progress: Progress) -> str:
        recipient = self.committee_file.client_by_address(cert.value.transfer.recipient)
        if recipient is None:
            return "unknown recipient daemon"
        if recipient.name == self.name:
            return "self"
        try:
            response = await self._request(recipient.name, ConfirmationOrder(certificate=cert))
        except LinkError as exc:
            self.events.emit("certificate_delivery_failed", recipient=recipient.name,
                             reason=str(exc))
            return f"unreachable: {exc}"
        if isinstance(response, ConfirmationAck):
            self.events.emit("certificate_delivered", recipient=recipient.name,
                             sequence_number=cert.value.transfer.sequence_number)
            progress({"step": "certificate_delivered", "recipient": recipient.name})
            return "delivered"
        code = response.code if isinstance(response, Error) else type(response).__name__
        self.events.emit("certificate_delivery_refused", recipient=recipient.name, code=code)
        return code

    # -- control commands ------------------------------------------------------------------

    async def do_transfer(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Pay `amount` to `recipient` (client name or hex address); waits for the result."""
        recipient = self.resolve_account(request.get("recipient"))
        amount = request.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ControlError("BadRequest", "amount must be a positive integer")
        async with self._transfer_lock:
            return await self._transfer(recipient, amount, progress)

    async def _transfer(self, recipient: bytes, amount: int, progress: Progress
                        ) -> dict[str, Any]:
        t0 = time.monotonic()
        order = self.state.pending_order
        if order is not None:
            t = order.transfer
            if t.recipient != recipient or t.amount != amount:
                raise ControlError(
                    "TransferAlreadyPending",
                    f"transfer #{t.sequence_number} ({t.amount} to "
                    f"{self.account_label(t.recipient)}) is still pending; repeat it to resume",
                )
            resumed = True
        else:
            order = self.state.start_transfer(recipient, amount)
            resumed = False
        await self.db.durable()  # the signed order is on disk before it leaves
        seq = order.transfer.sequence_number
        self.events.emit("transfer_started", recipient=self.account_label(recipient),
                         amount=amount, sequence_number=seq, resumed=resumed)
        progress({"step": "order_signed", "sequence_number": seq, "resumed": resumed})
        cert, votes = await self._collect_votes(order, progress)
        await self.db.durable()
        if cert is None:
            self.events.emit("transfer_failed", sequence_number=seq, votes=votes)
            raise ControlError("NoQuorum", f"no quorum of votes for transfer #{seq}: "
                               + ", ".join(f"{k}={v}" for k, v in sorted(votes.items())))
        t_cert = time.monotonic()
        self.events.emit("certificate_formed", sequence_number=seq,
                         signers=[n for n, _ in cert.signatures], latency=t_cert - t0)
        progress({"step": "certificate_formed", "sequence_number": seq})
        names = sorted(self.state.authorities_needing_confirmation())
        results = await asyncio.gather(*(self._confirm_at(n, cert, progress) for n in names))
        confirmations = dict(zip(names, results, strict=True))
        delivery = await self._deliver(cert, progress)
        await self.db.durable()
        t_end = time.monotonic()
        self.events.emit("transfer_completed", sequence_number=seq, amount=amount,
                         recipient=self.account_label(recipient), latency=t_end - t0,
                         confirmed=sum(r == "confirmed" for r in results), delivery=delivery)
        return {
            "sequence_number": seq,
            "recipient": self.account_label(recipient),
            "amount": amount,
            "votes": votes,
            "confirmations": confirmations,
            "delivery": delivery,
            "balance": self.state.balance,
            "certificate_latency": round(t_cert - t0, 6),
            "latency": round(t_end - t0, 6),
        }

    async def do_sync(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Ask every reachable authority about our account (payments received, recovery)."""
        before = self.state.balance
        reached = []
        for name in sorted(self.committee.names):
            req = self.state.account_info_request(
                received_from=len(self.state.record.received_log))
            try:
                for _ in range(MAX_CATCH_UP):
                    response = await self._request(name, req)
                    if not isinstance(response, AccountInfoResponse):
                        break
                    follow = self.state.handle_account_info_response(name, response)
                    if follow is None:
                        break
                    req = follow
                reached.append(name)
            except LinkError:
                continue
        await self.db.durable()
        return {"reached": reached, "balance": self.state.balance,
                "credited": self.state.balance - before}

    def status_extra(self) -> dict[str, Any]:
        return {
            "balance": self.state.balance,
            "next_sequence_number": self.state.next_sequence_number,
            "pending": self.state.pending_order is not None,
            "payments_received": self.payments_received,
        }

    async def do_balance(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """This client's balance as it knows it (genesis + verified credits - debits)."""
        await self.db.durable()
        pending = self.state.pending_order
        return {
            "account": self.name,
            "address": self.keypair.public_key.hex(),
            "balance": self.state.balance,
            "next_sequence_number": self.state.next_sequence_number,
            "pending": None if pending is None else {
                "sequence_number": pending.transfer.sequence_number,
                "recipient": self.account_label(pending.transfer.recipient),
                "amount": pending.transfer.amount,
            },
        }

    async def do_history(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Certificates sent and received by this client, oldest first."""
        await self.db.durable()
        rec = self.state.record
        rows = []
        for direction, log in (("sent", rec.sent_log), ("received", rec.received_log)):
            for cert in log:
                t = cert.value.transfer
                rows.append({"direction": direction, "sequence_number": t.sequence_number,
                             "sender": self.account_label(t.sender),
                             "recipient": self.account_label(t.recipient), "amount": t.amount,
                             "signers": [n for n, _ in cert.signatures]})
        return {"account": self.name, "history": rows}
