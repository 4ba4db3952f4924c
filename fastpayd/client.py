"""The client daemon: one pump runs the account's payment session over the node's link.

What a transfer's fate is -- whom to ask, in which order, what to send a lagging authority,
when to stop, when it is final -- is decided in :mod:`protocol.session`.  This module only
executes, in the shape of aioquic's ``asyncio/protocol.py``:

* :class:`SessionPump` feeds the :class:`~protocol.session.PaymentSession` its inputs with
  ``now = loop.time()`` -- which authorities the link reaches (:meth:`Link.
  reachable_authorities`, re-read whenever the link says it changed), each request's
  answer or failure, the timer -- and after every input makes the staged writes durable
  (a signed order is on disk before it leaves; so is every vote and certificate), then
  performs the actions pulled out (one request in flight per authority; ``Release`` →
  ``link.release``; ``DeliverToPayee`` → the recipient's daemon when the link has its
  address, reporting back whether a failure is worth a retry; ``RelayConfirmation`` → a
  received certificate to an authority) and turns the session's events into node events
  and progress lines.  When the link says its peers changed (``on_change``), the session
  hears it (``peers_changed``, with the clients the link reaches if it can tell), so a
  hand-off that failed is tried again at once.
* The same pump serves every link: IP (all authorities, in parallel) and WiFi Direct (the
  authorities in range, one group at a time, ``max_parallel = 1``).
* It runs for the daemon's whole life, so an unfinished transfer is resumed at start-up
  by itself, failed authorities are retried with back-off, and payments received are
  picked up at start-up and every ``[client] sync_interval`` seconds.

Control commands: ``transfer`` (waits for the outcome on IP links; on mobile links it
returns once the order is signed unless ``wait``), ``progress``, ``sync``, ``balance``,
``history``.  Inbound, the link's handler accepts ConfirmationOrders paying us (from the
payer or anybody): the session verifies the certificate alone against the committee
(refusing it with the error's code otherwise), credits it with source ``direct``, and the
ack leaves once that is durable; the session then relays it to the authorities.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastpayd import address, wire
from fastpayd.control import ControlError, Progress, caller_gone
from fastpayd.link import LinkError
from fastpayd.node import Node
from fastpayd.store import SqliteClientStore
from protocol import (
    ClientState,
    ConfirmationAck,
    ConfirmationOrder,
    FastPayError,
)
from protocol import session as ps
from protocol.client import SOURCE_DIRECT, channel_of

log = logging.getLogger(__name__)

REPORTED_KEY = b"reported_sequence_number"


class SessionPump:
    """Runs one PaymentSession over one link (see module docstring)."""

    def __init__(self, node: ClientNode, session: ps.PaymentSession) -> None:
        self.node = node
        self.session = session
        assert node.link is not None
        self.link = node.link
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # pulsed after every batch of events
        self._requests: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.watchers: list[Progress] = []
        self.syncs_done: dict[int, tuple[str, ...]] = {}
        self._peers_changed = False
        self._flushing = False  # events taken from the session, not yet told
        self.link.on_change(self._on_link_change)

    def _on_link_change(self) -> None:
        self._peers_changed = True
        self._wake.set()

    def _reachable_payees(self) -> list[bytes] | None:
        names = self.link.reachable_clients()
        if names is None:
            return None
        cf = self.node.committee_file
        entries = (cf.client_by_name(n) for n in names)
        return [e.address for e in entries if e is not None]

    @property
    def loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="payment-session")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._requests) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def changed(self) -> None:
        """Return after the next batch of session events."""
        await self._changed.wait()

    @property
    def told(self) -> bool:
        """True when the event log has told, and the disk holds, all the session knows.

        Until then the session's state (a ticket, the record) runs ahead of the log: an
        answer read from it would say "complete" before ``transfer_completed`` is logged.
        When this is False a flush is due, and :meth:`changed` fires after it."""
        return self.session.told and not self._flushing

    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                now = self.loop_time
                self.session.reachable(self.link.reachable_authorities(), now,
                                       self.link.groups())
                if self._peers_changed:
                    self._peers_changed = False
                    self.session.peers_changed(now, self._reachable_payees())
                timer = self.session.get_timer()
                if timer is not None and timer <= now:
                    self.session.handle_timer(now)
                    timer = self.session.get_timer()
                await self._flush()
                delay = None if timer is None else max(0.0, timer - self.loop_time)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.CancelledError:
            raise
        except Exception:  # the pump must report, not vanish
            log.exception("payment session pump failed")
            self.node.events.emit("session_failed")

    async def _flush(self) -> None:
        actions = self.session.actions()
        events: list[ps.Event] = []
        while (event := self.session.next_event()) is not None:
            events.append(event)
        if not actions and not events:
            return
        self._flushing = True
        try:
            await self.node.db.durable()  # what the session staged is on disk before it acts
            for event in events:
                self.node.on_session_event(event)
            for action in actions:
                self._execute(action)
        finally:
            self._flushing = False
        self._changed.set()
        self._changed = asyncio.Event()

    def _execute(self, action: ps.Action) -> None:
        if isinstance(action, ps.Release):
            self.link.release(action.authority)
        elif isinstance(action, ps.DeliverToPayee):
            self._spawn(self.node.deliver_to_payee(action.certificate))
        else:
            self._spawn(self._request(action))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _request(self, action: ps.ToAuthority) -> None:
        name = action.authority
        if isinstance(action, ps.SendOrder):
            message: Any = action.order
            self.node.events.emit("order_sent", authority=name,
                                  sequence_number=action.order.transfer.sequence_number)
        elif isinstance(action, ps.SendConfirmation | ps.RelayConfirmation):
            message = action.confirmation
        else:
            message = action.request
        try:
            conn = await self.link.connect(name)
            response = await conn.request(message, self.node.config.link.request_timeout)
        except LinkError as exc:
            self.session.failed(name, str(exc), self.loop_time)
        else:
            self.session.response(name, response, self.loop_time)
        finally:
            self._wake.set()


class ClientNode(Node):
    role = "client"

    async def _setup_state(self) -> None:
        self.store = SqliteClientStore(self.db)
        await self.store.load_from_disk()
        me = self.keypair.public_key
        genesis = sum(b for a, b in self.committee_file.genesis if a == me)
        self.state = ClientState(self.keypair, self.committee, self.store, genesis)
        self.payments_received = 0
        self._reported = -1
        for key, value in await self.db.read_all("meta"):
            if key == REPORTED_KEY:
                self._reported = int(value.decode())
        self._started_at: dict[int, float] = {}  # sequence number → loop time of its start
        self.pump: SessionPump | None = None

    async def _start_work(self) -> None:
        """Start the payment session's pump (it resumes whatever the record left)."""
        assert self.link is not None
        cc = self.config.client
        session = ps.PaymentSession(
            self.state, asyncio.get_running_loop().time(),
            max_parallel=self.link.max_parallel, retry_after=cc.retry_after,
            max_retry_after=cc.max_retry_after, sync_interval=cc.sync_interval or None,
            reported_sequence_number=self._reported)
        if session.has_work:
            self.events.emit("transfer_resumed", **self.transfer_progress(session))
        self.pump = SessionPump(self, session)
        self.pump.start()

    async def _stop_work(self) -> None:
        if self.pump is not None:
            await self.pump.stop()

    @property
    def session(self) -> ps.PaymentSession:
        assert self.pump is not None
        return self.pump.session

    # -- inbound: certificates paying us ----------------------------------------------------

    def handle(self, message: Any, peer: str) -> tuple[Any, Any]:
        db = self.db
        if type(message) is not ConfirmationOrder:
            return wire.unexpected_message(message), None
        cert = message.certificate
        transfer = cert.value.transfer
        try:
            if self.pump is not None:  # the session credits it, reports it, relays it
                amount = self.session.receive(cert, peer, asyncio.get_running_loop().time())
                self.pump.wake()
            else:  # before the session starts (the link serves first): credit it here
                amount = self.state.receive_certificate(cert, SOURCE_DIRECT)
                if amount:
                    self._credited(transfer.sender, transfer.sequence_number, amount,
                                   "direct", peer)
        except FastPayError as exc:
            self.events.emit("payment_refused", peer=peer, code=exc.wire_code,
                             message=exc.message, sender=self.account_label(transfer.sender),
                             sequence_number=transfer.sequence_number)
            return exc.to_message(), None if db.is_durable else db.gate()
        ack = ConfirmationAck(sender=transfer.sender, sequence_number=transfer.sequence_number,
                              applied=amount > 0)
        return ack, None if db.is_durable else db.gate()

    def _credited(self, sender: bytes, seq: int, amount: int, channel: str,
                  peer: str) -> None:
        self.payments_received += 1
        self.events.emit("payment_received", channel=channel, peer=peer,
                         sender=self.account_label(sender), sequence_number=seq,
                         amount=amount, balance=self.state.balance)

    # -- the session's events ---------------------------------------------------------------

    def on_session_event(self, event: ps.Event) -> None:
        """Log ``event`` and pass it to those following a transfer."""
        emit = self.events.emit
        step: dict[str, Any] | None = None
        now = asyncio.get_running_loop().time()
        quorum = self.committee.quorum_threshold
        if isinstance(event, ps.OrderSigned):
            self._started_at.setdefault(event.sequence_number, now)
            emit("transfer_started", recipient=self.account_label(event.recipient),
                 amount=event.amount, sequence_number=event.sequence_number,
                 resumed=event.resumed, mobile=self.link_is_mobile)
            step = {"step": "order_signed", "sequence_number": event.sequence_number,
                    "resumed": event.resumed}
        elif isinstance(event, ps.TransferQueued):
            step = {"step": "queued", "behind": event.behind}
        elif isinstance(event, ps.VoteReceived):
            emit("vote_received", authority=event.authority,
                 sequence_number=event.sequence_number, weight=event.weight)
            step = {"step": "vote_received", "authority": event.authority,
                    "weight": event.weight, "quorum": event.quorum}
        elif isinstance(event, ps.VoteRefused):
            emit("vote_refused", authority=event.authority, code=event.error.wire_code,
                 message=event.error.message)
            step = {"step": "vote_refused", "authority": event.authority,
                    "code": event.error.wire_code}
        elif isinstance(event, ps.CertificateFormed):
            t0 = self._started_at.get(event.sequence_number)
            emit("certificate_formed", sequence_number=event.sequence_number,
                 signers=[n for n, _ in event.certificate.signatures],
                 latency=None if t0 is None else now - t0)
            step = {"step": "certificate_formed", "sequence_number": event.sequence_number}
        elif isinstance(event, ps.ConfirmationDelivered):
            emit("confirmation_caught_up" if event.catch_up else "confirmation_delivered",
                 authority=event.authority, sequence_number=event.sequence_number,
                 applied=event.applied)
            if not event.catch_up:
                step = {"step": "confirmation_delivered", "authority": event.authority}
        elif isinstance(event, ps.ConfirmationRefused):
            emit("confirmation_refused", authority=event.authority,
                 sequence_number=event.sequence_number, code=event.error.wire_code)
        elif isinstance(event, ps.Final):
            emit("transfer_final", sequence_number=event.sequence_number, quorum=quorum)
            step = {"step": "final", "sequence_number": event.sequence_number}
        elif isinstance(event, ps.FullyPropagated):
            self._completed(event.sequence_number, now)
            step = {"step": "transfer_completed", "sequence_number": event.sequence_number}
        elif isinstance(event, ps.NoQuorum):
            emit("transfer_failed", sequence_number=event.sequence_number,
                 votes=event.describe(), early_stop=None if event.early_stop is None
                 else event.early_stop.wire_code)
        elif isinstance(event, ps.RequestFailed):
            emit("request_failed", authority=event.authority, reason=event.reason,
                 retry_in=round(event.retry_in, 3))
        elif isinstance(event, ps.PaymentReceived):
            self._credited(event.sender, event.sequence_number, event.amount,
                           event.channel, event.peer)
        elif isinstance(event, ps.RelayDelivered):
            emit("certificate_relayed", authority=event.authority,
                 sender=self.account_label(event.sender),
                 sequence_number=event.sequence_number, applied=event.applied)
        elif isinstance(event, ps.RelayRefused):
            emit("certificate_relay_refused", authority=event.authority,
                 sender=self.account_label(event.sender),
                 sequence_number=event.sequence_number, code=event.error.wire_code)
        elif isinstance(event, ps.SyncDone):
            assert self.pump is not None
            self.pump.syncs_done[event.sync_id] = event.reached
        if step is not None and self.pump is not None:
            for watcher in list(self.pump.watchers):
                watcher(step)

    def _completed(self, seq: int, now: float) -> None:
        cert = self.state.certificate
        if cert is None or cert.value.transfer.sequence_number != seq:
            return
        t = cert.value.transfer
        t0 = self._started_at.pop(seq, None)
        self.events.emit("transfer_completed", sequence_number=seq, amount=t.amount,
                         recipient=self.account_label(t.recipient),
                         latency=None if t0 is None else now - t0,
                         confirmed=len(self.state.record.confirmed_by),
                         delivery="via authorities")

    @property
    def link_is_mobile(self) -> bool:
        return self.link is not None and self.link.max_parallel is not None

    async def deliver_to_payee(self, cert: Any) -> None:
        """Hand a certificate to its recipient's daemon if the link has its address; tell
        the session how it went (an unreachable payee is retried by the session)."""
        seq = cert.value.transfer.sequence_number
        outcome, retry = await self._deliver(cert)
        if self.pump is not None:
            self.session.payee_answered(seq, outcome, asyncio.get_running_loop().time(),
                                        retry=retry)
            self.pump.wake()

    async def _deliver(self, cert: Any) -> tuple[str, bool]:
        """(outcome for people, whether a later attempt may succeed)."""
        recipient = self.committee_file.client_by_address(cert.value.transfer.recipient)
        if recipient is None:
            return "not attempted: no daemon known for the recipient (it syncs)", False
        if recipient.name == self.name:
            return "self", False
        if self.link is None:
            return "not attempted: the recipient picks it up from the authorities", False
        reachable = self.link.reachable_clients()
        if reachable is not None:  # a link with range (WiFi Direct): only a payee in range
            if recipient.name not in reachable:
                return "waiting for the payee to come in range (it can also sync)", True
        elif recipient.endpoint is None or self.link_is_mobile:
            return "not attempted: the recipient picks it up from the authorities", False
        seq = cert.value.transfer.sequence_number
        try:
            conn = await self.link.connect(recipient.name)
            response = await conn.request(ConfirmationOrder(certificate=cert),
                                          self.config.link.request_timeout)
        except LinkError as exc:
            self.events.emit("certificate_delivery_failed", recipient=recipient.name,
                             sequence_number=seq, reason=str(exc))
            return f"unreachable: {exc}", True
        if isinstance(response, ConfirmationAck):
            self.events.emit("certificate_delivered", recipient=recipient.name,
                             sequence_number=seq)
            if self.pump is not None:
                for watcher in list(self.pump.watchers):
                    watcher({"step": "certificate_delivered", "recipient": recipient.name})
            return "delivered", False
        code = getattr(response, "code", type(response).__name__)
        self.events.emit("certificate_delivery_refused", recipient=recipient.name,
                         sequence_number=seq, code=code)
        return f"refused: {code}", False

    # -- views ----------------------------------------------------------------------------

    def transfer_progress(self, session: ps.PaymentSession | None = None) -> dict[str, Any]:
        """The latest transfer's progress (pending votes, or the certificate's reach)."""
        p = dict((session or self.session).progress())
        if "recipient" in p:
            p["recipient"] = self.account_label(bytes.fromhex(str(p["recipient"])))
        if p.get("certificate"):
            p["delivery"] = "via authorities (the recipient syncs)"
        p["driving"] = bool(p.get("state") not in ("idle", "complete"))
        return p

    # -- control commands ------------------------------------------------------------------

    async def do_transfer(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Pay `amount` to `recipient` (client name or hex address).

        Waits for the outcome (`wait`, default on IP links; `timeout` s, default 600): the
        certificate and its confirmations, or why there is no quorum.  On a mobile
        (WiFi Direct) link it returns once the order is signed unless `wait` is set.  The
        same transfer asked for again, while it is unfinished or before anybody saw its
        success, returns that transfer (`again`: pay once more).  A different transfer
        waits for an unfinished one to be certified first.
        """
        recipient = self.resolve_account(request.get("recipient"), payee=True,
                                         force=bool(request.get("force")))
        amount = request.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ControlError("BadRequest", "amount must be a positive integer")
        timeout = request.get("timeout", 600.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ControlError("BadRequest", "timeout is a positive number of seconds")
        wait = request.get("wait")
        if wait is not None and not isinstance(wait, bool):
            raise ControlError("BadRequest", "wait is true or false")
        if wait is None:
            wait = not self.link_is_mobile
        assert self.pump is not None
        pump = self.pump
        loop = asyncio.get_running_loop()
        ticket = self.session.start(recipient, amount, loop.time(),
                                    again=bool(request.get("again")))
        pump.wake()
        pump.watchers.append(progress)
        try:
            async with asyncio.timeout(float(timeout)):
                while True:
                    state = self.session.ticket(ticket)
                    # Not before the log has told (and the disk holds) all the session
                    # knows: the answer would run ahead of the event log.
                    if pump.told and (state.settled or (not wait and (
                            state.sequence_number is not None
                            or state.rejected is not None))):
                        break
                    await pump.changed()
        except TimeoutError:
            state = self.session.ticket(ticket)
        finally:
            pump.watchers.remove(progress)
        return self._transfer_answer(ticket, state, recipient, amount)

    def _transfer_answer(self, ticket: int, state: ps.TicketState, recipient: bytes,
                         amount: int) -> dict[str, Any]:
        if state.rejected is not None:
            raise ControlError(state.rejected.wire_code, state.rejected.message)
        seq = state.sequence_number
        if state.no_quorum is not None and not state.certified:
            raise ControlError("NoQuorum", f"no quorum of votes for transfer #{seq}: "
                               + ", ".join(f"{k}={v}" for k, v in
                                           state.no_quorum.describe().items())
                               + "; the daemon keeps trying the authorities it could not "
                               "reach (`fastpay progress` follows it)")
        answer: dict[str, Any] = {
            **self.transfer_progress(),
            "sequence_number": seq, "recipient": self.account_label(recipient),
            "amount": amount, "certificate": state.certified, "final": state.final,
            "fully_propagated": state.fully_propagated,
            "confirmations": {n: "confirmed" if n in state.confirmed else "pending"
                              for n in sorted(self.committee.names)},
            "balance": self.state.balance, "mobile": self.link_is_mobile,
            "accepted": seq is not None, "delivery": state.delivery,
            "ticket": ticket,  # for `wait` (fastpayd.waits)
        }
        if (state.certified or answer["mobile"]) and seq is not None and not caller_gone():
            # Shown to somebody: typing the same transfer again now means paying again.
            self.session.reported(ticket)
            self.db.stage("meta", REPORTED_KEY,
                          str(self.session.reported_sequence_number).encode())
        if state.certified:
            cert = self.state.certificate_for(seq) if seq is not None else None
            answer["votes"] = [n for n, _ in cert.signatures] if cert else []
            t0 = self._started_at.get(seq) if seq is not None else None
            if t0 is not None:
                answer["latency"] = round(asyncio.get_running_loop().time() - t0, 6)
        return answer

    async def do_progress(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """The latest transfer's progress: votes (weight/quorum), confirmations, delivery."""
        in_range = self.link.in_range() if self.link is not None else None
        return {"transfer": self.transfer_progress(), "in_range": in_range}

    async def do_sync(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Ask every reachable authority for payments received; bring lagging ones up to
        date with our certificates.  Returns who answered and what was credited."""
        assert self.pump is not None
        pump = self.pump
        before = self.state.balance
        timeout = request.get("timeout", 120.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ControlError("BadRequest", "timeout is a positive number of seconds")
        sync_id = self.session.sync(asyncio.get_running_loop().time())
        pump.wake()
        try:
            async with asyncio.timeout(float(timeout)):
                while sync_id not in pump.syncs_done:
                    await pump.changed()
        except TimeoutError:
            raise ControlError("Timeout", f"sync: not every authority answered within "
                               f"{timeout:g} s") from None
        reached = pump.syncs_done.pop(sync_id)
        await self.db.durable()
        return {"reached": list(reached), "balance": self.state.balance,
                "credited": self.state.balance - before}

    def status_extra(self) -> dict[str, Any]:
        return {
            "balance": self.state.balance,
            "next_sequence_number": self.state.next_sequence_number,
            "pending": self._pending_view(),
            "payments_received": self.payments_received,
            "mobile": self.link_is_mobile,
            "transfer": self.transfer_progress() if self.pump is not None else None,
        }

    def _own_account_only(self, request: dict[str, Any], what: str) -> None:
        """A client knows its own account only: another one named is refused."""
        account = request.get("account")
        if account is not None and self.resolve_account(account) != self.keypair.public_key:
            raise ControlError("NotThisAccount", f"{self.name} is a client and knows only its "
                               f"own account; ask an authority for {account}'s {what} "
                               f"(fastpay --config auth0.toml {what} {account})")

    async def do_balance(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """This client's balance as it knows it (genesis + verified credits - debits);
        `account`, if given, must be this client's own."""
        self._own_account_only(request, "balance")
        await self.db.durable()
        return {
            "account": self.name,
            "address": self.keypair.public_key.hex(),
            "fp_address": address.encode(self.keypair.public_key),
            "balance": self.state.balance,
            "next_sequence_number": self.state.next_sequence_number,
            "pending": self._pending_view(),
            "received": self._received_view(),
        }

    def _received_view(self) -> dict[str, dict[str, int]]:
        """Payments credited, by channel: ``direct`` (handed over), ``authority`` (found
        at an authority), ``self`` (to ourselves), ``unknown`` (recorded before
        provenance was kept); each ``{"payments": n, "amount": sum}``."""
        out = {c: {"payments": 0, "amount": 0} for c in ("direct", "authority", "self",
                                                          "unknown")}
        rec = self.state.record
        for cert, source in zip(rec.received_log, rec.received_from, strict=True):
            row = out.setdefault(channel_of(source), {"payments": 0, "amount": 0})
            row["payments"] += 1
            row["amount"] += cert.value.transfer.amount
        return out

    def _pending_view(self) -> dict[str, Any] | None:
        """The signed order awaiting its certificate (same shape as an authority's)."""
        pending = self.state.pending_order
        return None if pending is None else {
            "sequence_number": pending.transfer.sequence_number,
            "recipient": self.account_label(pending.transfer.recipient),
            "amount": pending.transfer.amount,
        }

    async def do_history(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Certificates sent and received by this client, oldest first, each with its
        `source` (received: `direct`, `authority:NAME`, `self`, `unknown`; sent: `self`);
        `account`, if given, must be this client's own."""
        self._own_account_only(request, "history")
        await self.db.durable()
        rec = self.state.record
        rows = []
        for direction, log_, sources in (
                ("sent", rec.sent_log, ("self",) * len(rec.sent_log)),
                ("received", rec.received_log, rec.received_from)):
            for cert, source in zip(log_, sources, strict=True):
                t = cert.value.transfer
                rows.append({"direction": direction, "sequence_number": t.sequence_number,
                             "sender": self.account_label(t.sender),
                             "recipient": self.account_label(t.recipient), "amount": t.amount,
                             "signers": [n for n, _ in cert.signatures], "source": source})
        return {"account": self.name, "history": rows}
