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

On a link that reports which authorities are in range (WiFi Direct: ``in_range()``,
``wait_for_change()``, ``release()``), the client is *mobile*: ``transfer`` signs and stages
the order, returns at once (``wait`` to follow it to the end) and a background *driver*
task does the rest as authorities come and go: it visits each authority in range that
still owes a vote (one group join: order → vote; when that vote completes the quorum the
confirmation goes out in the same visit), and once the certificate exists it visits every
authority that has not acknowledged it yet (ConfirmationOrder → ack, relaying older
certificates first to an authority that lags behind).  A visit that fails (out of range,
join failure, refusal) backs that authority off for ``RETRY_AFTER`` seconds.  Every vote
and acknowledgement is committed before the next visit, so a restarted daemon resumes
where it stopped: the driver restarts on boot when a transfer is unfinished.  The
recipient (a client, which keeps no group of its own) gets the certificate through the
authorities: its ``sync`` asks them for the certificates paying it.

Inbound, the link's handler accepts ConfirmationOrders paying us: ``receive_certificate``
verifies the certificate against the committee, the credit is committed, then acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastpayd import wire
from fastpayd.config import NodeConfig
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

log = logging.getLogger(__name__)

MAX_CATCH_UP = 64  # certificates sent to one lagging authority in one confirmation round
RETRY_AFTER = 8.0  # s: a mobile client does not revisit an authority that just failed sooner
IDLE_WAIT = 5.0  # s: with nobody useful in range, re-check at least this often


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
        self._driver: asyncio.Task[None] | None = None
        self._watchers: list[Progress] = []
        self._backoff: dict[str, float] = {}  # authority → monotonic time it may be retried
        self._refused: dict[str, str] = {}  # authority → why it refused the pending order
        self._started_at: dict[int, float] = {}  # sequence number → monotonic start

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: NodeConfig) -> AsyncIterator[Node]:
        """As :meth:`Node.open`; a mobile client also resumes an unfinished transfer."""
        async with super().open(config) as node:
            assert isinstance(node, ClientNode)
            if node.mobile and node._has_work():
                node.events.emit("transfer_resumed", **node.transfer_progress())
                node._ensure_driver()
            try:
                yield node
            finally:
                await node._stop_driver()

    @property
    def mobile(self) -> bool:
        """True on a link that reports authorities in range (WiFi Direct)."""
        return self.link is not None and hasattr(self.link, "in_range")

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
        if cert is not None or self.state.pending_order is None:
            weight = self.committee.quorum_threshold  # formed now, or before this late vote
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

    async def _catch_up(self, name: str, upto: int | None = None) -> None:
        """Send ``name`` the certificates of ours it has not settled yet (oldest first).

        ``upto``: the first sequence number not to send (default: the latest certificate's).
        """
        info = await self._request(name, self.state.account_info_request())
        if not isinstance(info, AccountInfoResponse):
            return
        last = self.state.next_sequence_number - 1 if upto is None else upto
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


    # -- the mobile client: a background driver visits authorities in range ---------------

    def _has_work(self) -> bool:
        return (self.state.pending_order is not None
                or bool(self.state.authorities_needing_confirmation()))

    def _owes(self, name: str) -> bool:
        """Whether a visit to ``name`` could make progress now."""
        if self.state.pending_order is not None:
            voted = {v.authority for v in self.state.votes}
            return name not in voted and name not in self._refused
        return name in self.state.authorities_needing_confirmation()

    def transfer_progress(self) -> dict[str, Any]:
        """The latest transfer's progress (pending votes, or the certificate's confirmations)."""
        st = self.state
        quorum = self.committee.quorum_threshold
        order = st.pending_order
        if order is not None:
            voters = sorted(v.authority for v in st.votes)
            return {"sequence_number": order.transfer.sequence_number,
                    "recipient": self.account_label(order.transfer.recipient),
                    "amount": order.transfer.amount, "state": "collecting_votes",
                    "votes": voters, "weight": self.committee.weight_of(voters),
                    "quorum": quorum, "certificate": False, "confirmed": [],
                    "refused": dict(self._refused), "driving": self._driving}
        cert = st.certificate
        if cert is None:
            return {"state": "idle", "driving": self._driving}
        t = cert.value.transfer
        confirmed = sorted(st.record.confirmed_by)
        needing = sorted(st.authorities_needing_confirmation())
        return {"sequence_number": t.sequence_number,
                "recipient": self.account_label(t.recipient), "amount": t.amount,
                "state": "confirming" if needing else "complete",
                "votes": sorted(n for n, _ in cert.signatures),
                "weight": self.committee.weight_of(n for n, _ in cert.signatures),
                "quorum": quorum, "certificate": True, "confirmed": confirmed,
                "confirmed_weight": self.committee.weight_of(confirmed),
                "confirmations_needed": needing,
                "delivery": "via authorities (the recipient syncs)",
                "driving": self._driving}

    @property
    def _driving(self) -> bool:
        return self._driver is not None and not self._driver.done()

    def _notify(self, info: dict[str, Any]) -> None:
        for watcher in list(self._watchers):
            watcher(info)

    def _ensure_driver(self) -> None:
        if not self._driving:
            self._driver = asyncio.create_task(self._drive(), name="mobile-transfer")

    async def _stop_driver(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
            self._driver = None

    async def _drive(self) -> None:
        """Visit authorities in range until the latest transfer is fully confirmed."""
        link: Any = self.link
        try:
            while self._has_work():
                now = time.monotonic()
                todo = [r["name"] for r in link.in_range()
                        if r.get("fresh", True) and self._owes(r["name"])
                        and self._backoff.get(r["name"], 0) <= now]
                if not todo:
                    waits = [t - now for n, t in self._backoff.items() if t > now]
                    await link.wait_for_change(min([IDLE_WAIT, *waits]))
                    continue
                await self._visit(todo[0])
            self._finish()
        except asyncio.CancelledError:
            raise
        except Exception:  # the driver must report, not vanish
            log.exception("mobile transfer driver failed")
            self.events.emit("transfer_driver_failed")

    async def _visit(self, name: str) -> None:
        """One group join at ``name``: ask for its vote and/or deliver the confirmation."""
        link: Any = self.link
        ok = True
        try:
            order = self.state.pending_order
            if order is not None and self._owes(name):
                outcome: dict[str, Any] = {}
                cert = await self._ask_vote(name, order, self._notify, outcome)
                result = outcome.get(name, "")
                if result in ("UnexpectedSequenceNumber", "MissingEarlierConfirmations"):
                    # The authority lags behind our account: relay our older certificates.
                    with contextlib.suppress(LinkError):
                        await self._catch_up(name, upto=order.transfer.sequence_number)
                        cert = await self._ask_vote(name, order, self._notify, outcome)
                        result = outcome.get(name, "")
                await self.db.durable()
                if result == "vote":
                    pass
                elif result.startswith("unreachable"):
                    ok = False
                else:
                    # A refusal (e.g. it voted for a conflicting order): not worth revisiting.
                    self._refused[name] = result
                if cert is not None:
                    self._certificate_formed(cert)
            cert_now = self.state.certificate
            if (self.state.pending_order is None and cert_now is not None
                    and name in self.state.authorities_needing_confirmation()):
                res = await self._confirm_at(name, cert_now, self._notify)
                await self.db.durable()
                ok = ok and res == "confirmed"
        except LinkError:
            ok = False
        finally:
            link.release(name)
        if not ok:
            self._backoff[name] = time.monotonic() + RETRY_AFTER
        else:
            self._backoff.pop(name, None)

    def _certificate_formed(self, cert: CertifiedTransferOrder) -> None:
        seq = cert.value.transfer.sequence_number
        t0 = self._started_at.get(seq)
        self._refused.clear()
        self.events.emit("certificate_formed", sequence_number=seq,
                         signers=[n for n, _ in cert.signatures],
                         latency=None if t0 is None else time.monotonic() - t0)
        self._notify({"step": "certificate_formed", "sequence_number": seq})

    def _finish(self) -> None:
        cert = self.state.certificate
        if cert is None:
            return
        t = cert.value.transfer
        t0 = self._started_at.pop(t.sequence_number, None)
        self.events.emit("transfer_completed", sequence_number=t.sequence_number,
                         amount=t.amount, recipient=self.account_label(t.recipient),
                         latency=None if t0 is None else time.monotonic() - t0,
                         confirmed=len(self.state.record.confirmed_by),
                         delivery="via authorities")
        self._notify({"step": "transfer_completed", "sequence_number": t.sequence_number})

    def _pending_same(self, recipient: bytes, amount: int) -> TransferOrder | None:
        """The pending order if it is this very transfer (to resume), None if none is.

        A different pending transfer is refused: it must finish first (one sequence
        number, one order -- the authorities would refuse a second one anyway)."""
        order = self.state.pending_order
        if order is not None:
            t = order.transfer
            if t.recipient != recipient or t.amount != amount:
                raise ControlError(
                    "TransferAlreadyPending",
                    f"transfer #{t.sequence_number} ({t.amount} to "
                    f"{self.account_label(t.recipient)}) is still pending; repeat it to resume",
                )
        return order

    async def _mobile_transfer(self, recipient: bytes, amount: int, wait: bool,
                               timeout: float, progress: Progress) -> dict[str, Any]:
        async with self._transfer_lock:
            order = self._pending_same(recipient, amount)
            resumed = order is not None
            if order is None:
                order = self.state.start_transfer(recipient, amount)
                self._refused.clear()
                self._backoff.clear()
            await self.db.durable()  # the signed order is on disk before it leaves
            seq = order.transfer.sequence_number
            self._started_at.setdefault(seq, time.monotonic())
            self.events.emit("transfer_started", recipient=self.account_label(recipient),
                             amount=amount, sequence_number=seq, resumed=resumed, mobile=True)
            progress({"step": "order_signed", "sequence_number": seq, "resumed": resumed})
            self._ensure_driver()
        if wait:
            self._watchers.append(progress)
            try:
                async with asyncio.timeout(timeout):
                    while self._driving:
                        driver = self._driver
                        assert driver is not None
                        await asyncio.shield(driver)
            except TimeoutError:
                pass
            finally:
                self._watchers.remove(progress)
        return {"accepted": True, "mobile": True, **self.transfer_progress(),
                "balance": self.state.balance}

    async def do_progress(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """The latest transfer's progress: votes (weight/quorum), confirmations, delivery."""
        return {"transfer": self.transfer_progress(),
                "in_range": self.link.in_range() if self.mobile else None}  # type: ignore[union-attr]

    # -- control commands ------------------------------------------------------------------

    async def do_transfer(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Pay `amount` to `recipient` (client name or hex address).

        IP link: waits for the result.  Mobile (WiFi Direct): returns once the order is
        signed and staged (`accepted`), or with `wait` (and `timeout`, s) follows it until
        every authority acknowledged the certificate or the timeout passed.
        """
        recipient = self.resolve_account(request.get("recipient"))
        amount = request.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ControlError("BadRequest", "amount must be a positive integer")
        if self.mobile:
            timeout = request.get("timeout", 600.0)
            if not isinstance(timeout, int | float) or isinstance(timeout, bool):
                raise ControlError("BadRequest", "timeout is a number of seconds")
            return await self._mobile_transfer(recipient, amount, bool(request.get("wait")),
                                               float(timeout), progress)
        async with self._transfer_lock:
            return await self._transfer(recipient, amount, progress)

    async def _transfer(self, recipient: bytes, amount: int, progress: Progress
                        ) -> dict[str, Any]:
        t0 = time.monotonic()
        order = self._pending_same(recipient, amount)
        if order is not None:
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
        names = sorted(self.committee.names)
        if self.mobile:  # only those in range: a join to anyone else cannot work
            mlink: Any = self.link
            names = [r["name"] for r in mlink.in_range()]  # recently heard ones first
        for name in names:
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
            finally:
                if self.mobile:
                    release: Any = self.link
                    release.release(name)
        await self.db.durable()
        return {"reached": reached, "balance": self.state.balance,
                "credited": self.state.balance - before}

    def status_extra(self) -> dict[str, Any]:
        return {
            "balance": self.state.balance,
            "next_sequence_number": self.state.next_sequence_number,
            "pending": self.state.pending_order is not None,
            "payments_received": self.payments_received,
            "mobile": self.mobile,
            "transfer": self.transfer_progress(),
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
