"""The client's payment session: where a transfer order's fate is decided, without I/O.

One :class:`PaymentSession` drives all the outbound work of one client account across the
committee, shaped like aioquic's ``QuicConnection``: every input carries ``now``; what
should happen is pulled out as typed values; one timer says when to call back.

Inputs:
  :meth:`~PaymentSession.start` (pay someone), :meth:`~PaymentSession.reachable` (which
  authorities the link can reach now, in the order worth trying), :meth:`~PaymentSession.
  response` / :meth:`~PaymentSession.failed` (the outcome of an action),
  :meth:`~PaymentSession.sync` (ask for payments received), :meth:`~PaymentSession.
  receive` (a certificate handed to us directly), :meth:`~PaymentSession.payee_answered`
  (how a hand-off went), :meth:`~PaymentSession.peers_changed` (the link's view of its
  peers changed), :meth:`~PaymentSession.handle_timer`.
Outputs:
  :meth:`~PaymentSession.actions` -- :class:`SendOrder`, :class:`SendConfirmation`,
  :class:`RelayConfirmation`, :class:`RequestInfo`, :class:`Release`,
  :class:`DeliverToPayee`; :meth:`~PaymentSession.
  next_event` -- what happened (votes, refusals, :class:`CertificateFormed`,
  :class:`Final`, :class:`FullyPropagated`, :class:`NoQuorum`, :class:`Stalled`,
  :class:`PaymentReceived`, ...); :meth:`~PaymentSession.get_timer`;
  :meth:`~PaymentSession.ticket` (where one requested transfer stands).

The rules are the reference client's (``fastpay_core/src/client.rs``):

* **Catch-up before a new order.**  Each authority gets, in this order: an account-info
  request when we must learn how far it is; the certificates of ours it lacks, oldest
  first (it settles them in sequence order); the latest certificate if it has not
  acknowledged it; and only then the pending order.  An order refused with
  ``UnexpectedSequenceNumber``, ``PreviousTransferMustBeConfirmedFirst`` or
  ``MissingEarlierConfirmations`` means the authority lags behind our account: we ask it
  where it stands, bring it up to date and ask again (twice at most per sequence number).
* **Early stop.**  Refusals are weighed per error kind; one that reaches the validity
  threshold (f+1 by weight: at least one honest authority says so) ends vote collection
  for the order with :class:`NoQuorum`.  So does an attempt in which every authority has
  answered or failed without a quorum of votes; failed authorities are still retried in
  the background (exponential back-off), so a transfer is never stranded by a network
  that heals later.
* **Final** means confirmed at a quorum of authorities (the recipient's credit is then
  visible at an honest majority); **fully propagated** means every authority
  acknowledged it.  Both are reported; the session keeps delivering until the latter.
* **One order at a time.**  A transfer asked for while a different one is collecting
  votes is queued and signed when that one has its certificate.  Asking again for the
  transfer that is pending, or for the latest one when nobody has been shown it yet
  (:meth:`~PaymentSession.reported`: the caller that asked for it went away before its
  answer), returns that transfer instead of paying twice (pass ``again=True`` to pay
  the same amount to the same recipient once more).
* **Payments received** are found by certificate identity: every authority's received
  log only grows, so the session keeps a cursor per authority and ingests what lies past
  it (each (sender, sequence number) is credited once, after verifying the certificate
  alone); it asks at start-up, every ``sync_interval`` seconds and on :meth:`sync`.  A
  certificate handed to us directly (:meth:`receive`) is verified the same way; either way
  the first source is recorded (``direct`` / ``authority:<name>``) and kept.
* **Hand-off to the payee.**  Each new certificate of ours yields a
  :class:`DeliverToPayee`.  When the daemon reports it failed for a reason that may pass
  (``payee_answered(..., retry=True)``: the payee was unreachable), the session asks
  again after a back-off (``retry_after`` doubling up to ``max_retry_after``), and at once
  when the link says its peers changed (:meth:`peers_changed`, for that payee or for
  anybody), until the payee acknowledges it or refuses it.  Pending hand-offs live in
  memory only: a restarted daemon does not retry them (the payee still finds the payment
  at the authorities, which the payer keeps confirming at).
* **The payee relays.**  An authority needs the sender's certificate to credit us, so
  every certificate we received is delivered (:class:`RelayConfirmation`) to each
  authority that has not acknowledged it yet, before our own order goes to that
  authority: one cursor per authority over our received log.  An authority is taken to
  have a certificate when it acknowledges it, when it served it to us in its received
  log, or when we found it there in the first place; a refusal (e.g. it lacks the
  sender's earlier certificates) skips that certificate for that authority for this
  session.  Cursors live in memory: after a restart the first sync tells the session
  what each authority has, and the rest is relayed again (idempotent).  On a mobile link
  a certificate handed to us directly justifies visiting an authority; one we found at
  an authority only rides along with a visit made anyway.

Mobile links reach few authorities at a time (``max_parallel``: WiFi Direct is in one
group at a time): the session keeps working with the authority it holds ("active") while
that one still has something to do, then releases it (:class:`Release`) and moves on to
the next reachable one in the link's order.  A periodic sync does not justify a join on
such a link: it rides along with visits made for transfers (an explicit :meth:`sync`
does visit).

The session owns no durability: every state change goes through the
:class:`~protocol.client.ClientState` and its store; the daemon makes staged writes
durable before it executes the actions pulled after an input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from protocol.client import (
    SOURCE_DIRECT,
    SOURCE_SELF,
    ClientState,
    channel_of,
    source_authority,
)
from protocol.errors import (
    FastPayError,
    MissingEarlierConfirmations,
    PreviousTransferMustBeConfirmedFirst,
    UnexpectedMessage,
    UnexpectedSequenceNumber,
    UnknownSenderAccount,
    error_from_message,
)
from protocol.messages import (
    MAX_RECEIVED_TRANSFERS_PER_RESPONSE,
    AccountInfoRequest,
    AccountInfoResponse,
    CertifiedTransferOrder,
    ConfirmationAck,
    ConfirmationOrder,
    Error,
    Message,
    SignedTransferOrder,
    TransferOrder,
)

Ticket = int
"""Names one :meth:`PaymentSession.start` call."""

_LAGGING = (UnexpectedSequenceNumber, PreviousTransferMustBeConfirmedFirst,
            MissingEarlierConfirmations)
_MAX_INFO_TRIES = 2  # info round-trips per authority and sequence number before a refusal


# --- actions: the I/O the daemon performs ------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendOrder:
    """Emitted when ``authority`` should vote on our pending order."""

    authority: str
    order: TransferOrder


@dataclass(frozen=True, slots=True)
class SendConfirmation:
    """Emitted when ``authority`` should settle our certificate for ``sequence_number``."""

    authority: str
    confirmation: ConfirmationOrder
    sequence_number: int


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Emitted when we need ``authority``'s view of our account (or payments received)."""

    authority: str
    request: AccountInfoRequest


@dataclass(frozen=True, slots=True)
class Release:
    """Emitted when the session is done with ``authority`` for now (leave its group)."""

    authority: str


@dataclass(frozen=True, slots=True)
class RelayConfirmation:
    """Emitted when ``authority`` should settle a certificate paying us (a relay)."""

    authority: str
    confirmation: ConfirmationOrder

    @property
    def key(self) -> tuple[bytes, int]:
        """(sender, sequence number) of the relayed certificate."""
        t = self.confirmation.certificate.value.transfer
        return t.sender, t.sequence_number


@dataclass(frozen=True, slots=True)
class DeliverToPayee:
    """Emitted for each new certificate, and again after a hand-off that may succeed
    later failed: hand it to the recipient if it can be reached."""

    certificate: CertifiedTransferOrder


Action = SendOrder | SendConfirmation | RelayConfirmation | RequestInfo | Release | DeliverToPayee
ToAuthority = SendOrder | SendConfirmation | RelayConfirmation | RequestInfo


# --- events: what happened ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderSigned:
    """Emitted when a ticket has its order: newly signed, or an existing one it resumes."""

    ticket: Ticket
    sequence_number: int
    recipient: bytes
    amount: int
    resumed: bool
    certified: bool  # it is the latest transfer, already certified (a repeat)


@dataclass(frozen=True, slots=True)
class TransferQueued:
    """Emitted when a ticket waits for a different pending transfer to be certified."""

    ticket: Ticket
    behind: int  # the pending sequence number


@dataclass(frozen=True, slots=True)
class TransferRejected:
    """Emitted when a ticket's order cannot be signed (e.g. insufficient funds)."""

    ticket: Ticket
    error: FastPayError


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """Emitted when an authority's valid vote for the pending order is counted."""

    authority: str
    sequence_number: int
    weight: int
    quorum: int


@dataclass(frozen=True, slots=True)
class VoteRefused:
    """Emitted when an authority refuses the pending order (or sends an invalid vote)."""

    authority: str
    sequence_number: int
    error: FastPayError


@dataclass(frozen=True, slots=True)
class CertificateFormed:
    """Emitted when votes weighing a quorum make the certificate (the payment is final)."""

    sequence_number: int
    certificate: CertifiedTransferOrder


@dataclass(frozen=True, slots=True)
class ConfirmationDelivered:
    """Emitted when an authority acknowledges one of our certificates."""

    authority: str
    sequence_number: int
    applied: bool
    catch_up: bool  # an older certificate, sent to bring a lagging authority up to date


@dataclass(frozen=True, slots=True)
class ConfirmationRefused:
    """Emitted when an authority refuses one of our certificates."""

    authority: str
    sequence_number: int
    error: FastPayError


@dataclass(frozen=True, slots=True)
class Final:
    """Emitted when the latest certificate is confirmed at a quorum of authorities."""

    sequence_number: int


@dataclass(frozen=True, slots=True)
class FullyPropagated:
    """Emitted when every authority acknowledged the latest certificate."""

    sequence_number: int


@dataclass(frozen=True, slots=True)
class NoQuorum:
    """Emitted when vote collection for the pending order ends without a quorum."""

    sequence_number: int
    voted: frozenset[str]
    refused: dict[str, FastPayError]
    unreachable: dict[str, str]
    early_stop: FastPayError | None  # the refusal that reached the validity threshold

    def describe(self) -> dict[str, str]:
        """Authority → ``vote`` / the refusal's code / ``unreachable: why``."""
        out = {n: "vote" for n in self.voted}
        out.update({n: e.wire_code for n, e in self.refused.items()})
        out.update({n: f"unreachable: {why}" for n, why in self.unreachable.items()})
        return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class Stalled:
    """Emitted when work remains but nothing can progress until a retry or a new peer."""

    sequence_number: int | None


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """Emitted when an action could not reach its authority (it is retried later)."""

    authority: str
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class PaymentReceived:
    """Emitted when a verified certificate paying us is credited."""

    sender: bytes
    sequence_number: int
    amount: int
    channel: str  # "direct" (handed over) or "authority" (found in its received log)
    peer: str  # who told us: the authority's name, or the connection it came over


@dataclass(frozen=True, slots=True)
class RelayDelivered:
    """Emitted when an authority acknowledges a certificate paying us that we relayed."""

    authority: str
    sender: bytes
    sequence_number: int
    applied: bool  # False: it had it already


@dataclass(frozen=True, slots=True)
class RelayRefused:
    """Emitted when an authority refuses a certificate paying us that we relayed."""

    authority: str
    sender: bytes
    sequence_number: int
    error: FastPayError


@dataclass(frozen=True, slots=True)
class SyncDone:
    """Emitted when every authority asked by :meth:`PaymentSession.sync` answered or failed."""

    sync_id: int
    reached: tuple[str, ...]


Event = (OrderSigned | TransferQueued | TransferRejected | VoteReceived | VoteRefused
         | CertificateFormed | ConfirmationDelivered | ConfirmationRefused | Final
         | FullyPropagated | NoQuorum | Stalled | RequestFailed | PaymentReceived | SyncDone
         | RelayDelivered | RelayRefused)


# --- where a ticket stands -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketState:
    """Where one requested transfer stands (see :meth:`PaymentSession.ticket`)."""

    ticket: Ticket
    sequence_number: int | None  # None while queued or rejected
    rejected: FastPayError | None
    no_quorum: NoQuorum | None
    certified: bool
    final: bool
    fully_propagated: bool
    stalled: bool  # nothing can progress now on an always-reachable committee (retries)
    confirmed: frozenset[str]
    delivery: str | None  # how handing the certificate to the payee went; None: not yet

    @property
    def settled(self) -> bool:
        """True when a caller waiting for this transfer has its answer.

        Rejected, no quorum, fully propagated -- or certified and stalled (the money has
        moved; the remaining confirmations go on in the background)."""
        if self.rejected is not None or (self.no_quorum is not None and not self.certified):
            return True
        return self.certified and self.delivery is not None and (
            self.fully_propagated or self.stalled)


@dataclass
class _Request:
    ticket: Ticket
    recipient: bytes
    amount: int
    user_data: bytes | None
    sequence_number: int | None = None
    rejected: FastPayError | None = None
    no_quorum: NoQuorum | None = None


@dataclass
class _Authority:
    """What the session knows of one authority."""

    name: str
    reachable: bool = False
    active: bool = False  # holding one of the link's slots
    in_flight: ToAuthority | None = None
    next_seq: int | None = None  # its next sequence number for our account, when known
    need_info: bool = False
    follow_up: AccountInfoRequest | None = None
    info_tries: int = 0
    refused: FastPayError | None = None  # of the pending order, this attempt
    unreachable: str | None = None  # the last failure, this attempt
    confirm_refused: int | None = None  # sequence number of a certificate it refused
    failures: int = 0
    retry_at: float = 0.0
    sync_due: bool = False  # periodic: ask for payments received when convenient
    sync_asked: set[int] = field(default_factory=set)  # explicit syncs waiting on it
    received_cursor: int = 0
    relay_cursor: int = 0  # our received log before this index: it has them (or refused)
    has: set[tuple[bytes, int]] = field(default_factory=set)  # certificates it served us


@dataclass
class _Handoff:
    """A certificate of ours still to be handed to its payee."""

    certificate: CertifiedTransferOrder
    in_flight: bool = False
    failures: int = 0
    retry_at: float = 0.0


class PaymentSession:
    """The outbound work of one client account (see module docstring)."""

    def __init__(
        self,
        client: ClientState,
        now: float,
        *,
        max_parallel: int | None = None,
        retry_after: float = 2.0,
        max_retry_after: float = 30.0,
        sync_interval: float | None = 30.0,
        reported_sequence_number: int = -1,
    ) -> None:
        """Drive ``client``'s work; resumes what its record left unfinished.

        ``max_parallel``: authorities worked with at once (None: all, as on IP links).
        ``reported_sequence_number``: the latest transfer whose success a caller saw
        (persisted by the daemon; see :meth:`reported`).
        """
        self.client = client
        self.committee = client.committee
        self.max_parallel = max_parallel
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self.sync_interval = sync_interval
        self.reported_sequence_number = reported_sequence_number
        self._auth = {n: _Authority(n) for n in sorted(self.committee.names)}
        self._order: list[str] = sorted(self._auth)  # reachable ones, preferred first
        self._always_reachable = max_parallel is None
        self._groups: dict[str, str] = {}
        if self._always_reachable:
            for a in self._auth.values():
                a.reachable = True
        self._actions: list[Action] = []
        self._events: deque[Event] = deque()
        self._queue: deque[_Request] = deque()
        self._requests: dict[Ticket, _Request] = {}
        self._next_ticket = 1
        self._stopped_seq: int | None = None  # vote collection ended early for this seq
        self._no_quorum_seq: int | None = None  # NoQuorum reported for this seq
        self._delivery: dict[int, str | None] = {}
        self._handoffs: dict[int, _Handoff] = {}  # sequence number → hand-off not done yet
        self._final_seq: int | None = None
        self._propagated_seq: int | None = None
        self._stalled = False
        self._next_sync = now  # sync at start-up
        self._syncs: dict[int, set[str]] = {}
        self._sync_reached: dict[int, list[str]] = {}
        self._next_sync_id = 1
        self._now = now
        latest = client.certificate
        if latest is not None:  # what was already true before this session is not news
            seq = latest.value.transfer.sequence_number
            confirmed = client.record.confirmed_by
            if self.committee.weight_of(confirmed) >= self.committee.quorum_threshold:
                self._final_seq = seq
            if confirmed >= self.committee.names:
                self._propagated_seq = seq
        self._update(now)

    # --- read-only views -------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        """True while an order collects votes or a certificate is not everywhere yet."""
        rec = self.client.record
        if rec.pending_order is not None or self._queue:
            return True
        return self.client.certificate is not None and bool(
            self.client.authorities_needing_confirmation())

    @property
    def is_stalled(self) -> bool:
        """True when work remains but none can progress before a retry or a new peer."""
        return self._stalled

    def ticket(self, ticket: Ticket) -> TicketState:
        """Where ``ticket`` stands; raises KeyError for an unknown ticket."""
        req = self._requests[ticket]
        seq = req.sequence_number
        rec = self.client.record
        latest = rec.certificate
        certified = seq is not None and seq < rec.next_sequence_number
        is_latest = latest is not None and seq == latest.value.transfer.sequence_number
        confirmed = rec.confirmed_by if is_latest else frozenset()
        weight = self.committee.weight_of(confirmed)
        older = certified and not is_latest  # superseded by a later transfer of ours
        return TicketState(
            ticket=ticket,
            sequence_number=seq,
            rejected=req.rejected,
            no_quorum=req.no_quorum,
            certified=certified,
            final=older or (certified and weight >= self.committee.quorum_threshold),
            fully_propagated=older or (certified and confirmed >= self.committee.names),
            # On a mobile link a pause between authorities is the normal state of things,
            # not an outcome to report: only an always-reachable committee stalls.
            stalled=self._stalled and self._always_reachable,
            confirmed=confirmed,
            delivery=self._delivery[seq] if seq in self._delivery else (
                "before this session" if certified else None),
        )

    def progress(self) -> dict[str, object]:
        """A snapshot for people: the pending order's votes or the certificate's reach."""
        rec = self.client.record
        quorum = self.committee.quorum_threshold
        refused = {n: a.refused.wire_code for n, a in self._auth.items() if a.refused}
        waiting = {n: round(max(0.0, a.retry_at - self._now), 3)
                   for n, a in self._auth.items() if a.retry_at > self._now}
        base: dict[str, object] = {"queued": len(self._queue), "stalled": self._stalled,
                                   "retrying": waiting}
        order = rec.pending_order
        if order is not None:
            voters = sorted(v.authority for v in rec.votes)
            return {**base, "state": "collecting_votes",
                    "sequence_number": order.transfer.sequence_number,
                    "recipient": order.transfer.recipient.hex(),
                    "amount": order.transfer.amount, "votes": voters,
                    "weight": self.committee.weight_of(voters), "quorum": quorum,
                    "certificate": False, "refused": refused,
                    "confirmed": sorted(rec.confirmed_by)}
        cert = rec.certificate
        if cert is None:
            return {**base, "state": "idle"}
        t = cert.value.transfer
        weight = self.committee.weight_of(rec.confirmed_by)
        needing = sorted(self.client.authorities_needing_confirmation())
        return {**base, "state": "confirming" if needing else "complete",
                "sequence_number": t.sequence_number, "recipient": t.recipient.hex(),
                "amount": t.amount, "votes": sorted(n for n, _ in cert.signatures),
                "weight": self.committee.weight_of(n for n, _ in cert.signatures),
                "quorum": quorum, "certificate": True,
                "confirmed": sorted(rec.confirmed_by), "confirmed_weight": weight,
                "final": weight >= quorum, "confirmations_needed": needing}

    # --- inputs ------------------------------------------------------------------------

    def start(self, recipient: bytes, amount: int, now: float, *,
              user_data: bytes | None = None, again: bool = False) -> Ticket:
        """Ask to pay ``amount`` to ``recipient``; return the ticket that follows it.

        The outcome arrives as events (:class:`OrderSigned`, :class:`TransferQueued`,
        :class:`TransferRejected`, ...) and in :meth:`ticket`.
        """
        ticket = self._next_ticket
        self._next_ticket += 1
        req = _Request(ticket, recipient, amount, user_data)
        self._requests[ticket] = req
        rec = self.client.record
        pending = rec.pending_order
        latest = rec.certificate
        if pending is not None and not again and self._same(pending, req):
            # The very transfer that is collecting votes: resume it (a new attempt).
            req.sequence_number = pending.transfer.sequence_number
            self._new_attempt()
            self._events.append(OrderSigned(ticket, req.sequence_number, recipient, amount,
                                            resumed=True, certified=False))
        elif (pending is None and not self._queue and not again and latest is not None
              and self._same(latest.value, req)
              and latest.value.transfer.sequence_number > self.reported_sequence_number):
            req.sequence_number = latest.value.transfer.sequence_number
            self._events.append(OrderSigned(ticket, req.sequence_number, recipient, amount,
                                            resumed=True, certified=True))
        else:
            self._queue.append(req)
            if pending is not None:
                self._events.append(TransferQueued(ticket, pending.transfer.sequence_number))
            self._sign_next()
        self._update(now)
        return ticket

    def reachable(self, names: Sequence[str], now: float,
                  groups: Mapping[str, str] | None = None) -> None:
        """The authorities the link can reach now, the ones worth trying first first.

        ``groups`` (authority → the group a visit to it enters): authorities in one group
        are worked with together on one of the ``max_parallel`` slots (WiFi Direct group
        sharing: one join reaches them all); an authority absent from it is a group of
        its own."""
        if self._always_reachable:
            return
        wanted = [n for n in names if n in self._auth]
        self._groups = dict(groups or {})
        for name, a in self._auth.items():
            a.reachable = name in wanted
        self._order = wanted + [n for n in sorted(self._auth) if n not in wanted]
        self._update(now)

    def response(self, authority: str, message: Message, now: float) -> None:
        """The answer ``authority`` gave to the action sent to it."""
        a = self._auth.get(authority)
        if a is None or a.in_flight is None:
            return
        sent, a.in_flight = a.in_flight, None
        a.failures, a.unreachable = 0, None
        if isinstance(sent, SendOrder):
            self._on_vote_answer(a, sent, message)
        elif isinstance(sent, SendConfirmation):
            self._on_confirmation_answer(a, sent, message)
        elif isinstance(sent, RelayConfirmation):
            self._on_relay_answer(a, sent, message)
        else:
            self._on_info_answer(a, sent, message)
        self._update(now)

    def failed(self, authority: str, reason: str, now: float) -> None:
        """The action sent to ``authority`` did not get an answer (link down, timeout)."""
        a = self._auth.get(authority)
        if a is None or a.in_flight is None:
            return
        a.in_flight = None
        a.failures += 1
        delay = min(self.max_retry_after, self.retry_after * 2 ** (a.failures - 1))
        a.retry_at = now + delay
        a.unreachable = reason
        self._release(a)
        self._events.append(RequestFailed(authority, reason, delay))
        self._update(now)

    def sync(self, now: float) -> int:
        """Ask every reachable authority for payments received; returns the sync's id.

        :class:`SyncDone` with that id follows once each has answered or failed."""
        sync_id = self._next_sync_id
        self._next_sync_id += 1
        names = {n for n, a in self._auth.items() if a.reachable}
        if not names:
            self._events.append(SyncDone(sync_id, ()))
            return sync_id
        self._syncs[sync_id] = names
        self._sync_reached[sync_id] = []
        for n in names:
            self._auth[n].sync_asked.add(sync_id)
            self._auth[n].retry_at = min(self._auth[n].retry_at, now)
        self._update(now)
        return sync_id

    def reported(self, ticket: Ticket) -> None:
        """A caller was shown ``ticket``'s transfer (its number, or its success): typing the
        same transfer again once it is certified pays again."""
        seq = self._requests[ticket].sequence_number
        if seq is not None:
            self.reported_sequence_number = max(self.reported_sequence_number, seq)

    def payee_answered(self, sequence_number: int, outcome: str, now: float, *,
                       retry: bool = False) -> None:
        """How the :class:`DeliverToPayee` for ``sequence_number`` went (for people:
        ``delivered``, ``unreachable: ...``, ``not attempted: ...``).

        ``retry``: it failed for a reason that may pass (the payee was unreachable); the
        session hands it over again later.  Otherwise the hand-off is over."""
        self._delivery[sequence_number] = outcome
        h = self._handoffs.get(sequence_number)
        if h is not None:
            h.in_flight = False
            if retry:
                h.failures += 1
                h.retry_at = now + min(self.max_retry_after,
                                       self.retry_after * 2 ** (h.failures - 1))
            else:
                del self._handoffs[sequence_number]
        self._update(now)

    def peers_changed(self, now: float, payees: Collection[bytes] | None = None) -> None:
        """The link's view of its peers changed: hand-offs waiting for a retry are due at
        once -- those to ``payees`` (addresses the link reaches now), or all of them when
        the link cannot tell (None)."""
        for h in self._handoffs.values():
            if not h.in_flight and (payees is None
                                    or h.certificate.value.transfer.recipient in payees):
                h.retry_at = min(h.retry_at, now)
        self._update(now)

    def receive(self, certificate: CertifiedTransferOrder, peer: str, now: float) -> int:
        """A certificate paying us, handed over directly by ``peer``: verify it alone,
        credit it (source ``direct``) and relay it to the authorities.

        Returns the amount credited (0: already credited, by whatever channel); raises
        the FastPayError that refuses it (nothing is credited)."""
        amount = self.client.receive_certificate(certificate, SOURCE_DIRECT)
        if amount:
            t = certificate.value.transfer
            self._events.append(PaymentReceived(t.sender, t.sequence_number, amount,
                                                channel_of(SOURCE_DIRECT), peer))
        self._update(now)
        return amount

    @property
    def pending_handoffs(self) -> list[int]:
        """Sequence numbers of our certificates not handed to their payee yet."""
        return sorted(self._handoffs)

    def handle_timer(self, now: float) -> None:
        """Call when :meth:`get_timer`'s time has come."""
        self._update(now)

    # --- outputs -----------------------------------------------------------------------

    def actions(self) -> list[Action]:
        """Return (and forget) the actions to perform now, in order."""
        out, self._actions = self._actions, []
        return out

    def next_event(self) -> Event | None:
        """Return the next event, None when there is none."""
        return self._events.popleft() if self._events else None

    @property
    def told(self) -> bool:
        """True when every event and action so far has been taken out.

        What :meth:`ticket` and the record say runs ahead of the events until then: a
        caller answering from them should wait for the driver to take the rest out (and
        log and persist it) first, so that no answer says more than the log has told."""
        return not self._events and not self._actions

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called (None: no timer needed)."""
        times = [a.retry_at for a in self._auth.values()
                 if a.retry_at > self._now and a.in_flight is None and self._wants(a)]
        times += [h.retry_at for h in self._handoffs.values() if not h.in_flight]
        if self.sync_interval is not None:
            times.append(self._next_sync)
        return min(times) if times else None

    # --- answers -----------------------------------------------------------------------

    def _on_vote_answer(self, a: _Authority, sent: SendOrder, message: Message) -> None:
        seq = sent.order.transfer.sequence_number
        pending = self.client.pending_order
        if isinstance(message, SignedTransferOrder):
            if message.authority != a.name:
                self._refuse(a, seq, UnexpectedMessage(f"a vote signed as {message.authority}"))
                return
            try:
                cert = self.client.handle_vote(message)
            except FastPayError as exc:
                self._refuse(a, seq, exc)
                return
            if pending is None or pending.transfer != sent.order.transfer:
                return  # a late vote for a transfer already certified
            voters = [v.authority for v in self.client.votes] if cert is None else [
                n for n, _ in cert.signatures]
            self._events.append(VoteReceived(a.name, seq, self.committee.weight_of(voters),
                                             self.committee.quorum_threshold))
            if cert is not None:
                self._certified(cert)
            return
        error = self._as_error(message)
        if isinstance(error, _LAGGING) and a.info_tries < _MAX_INFO_TRIES:
            a.need_info = True  # it lags behind our account: learn how far, catch it up
            a.info_tries += 1
            return
        self._refuse(a, seq, error)

    def _on_confirmation_answer(self, a: _Authority, sent: SendConfirmation,
                                message: Message) -> None:
        seq = sent.sequence_number
        latest = self.client.certificate
        latest_seq = None if latest is None else latest.value.transfer.sequence_number
        if (isinstance(message, ConfirmationAck) and message.sequence_number == seq
                and message.sender == self.client.address):
            a.next_seq = max(a.next_seq or 0, seq + 1)
            a.confirm_refused = None
            if seq == latest_seq:
                self.client.confirmation_delivered(a.name)
            self._events.append(ConfirmationDelivered(a.name, seq, message.applied,
                                                      catch_up=seq != latest_seq))
            return
        error = self._as_error(message)
        if isinstance(error, MissingEarlierConfirmations) and a.info_tries < _MAX_INFO_TRIES:
            a.need_info = True
            a.info_tries += 1
            return
        a.confirm_refused = seq
        self._back_off(a)
        self._events.append(ConfirmationRefused(a.name, seq, error))

    def _on_relay_answer(self, a: _Authority, sent: RelayConfirmation,
                         message: Message) -> None:
        sender, seq = sent.key
        log = self.client.record.received_log
        if a.relay_cursor < len(log) and log[a.relay_cursor].value.transfer.key == sent.key:
            a.relay_cursor += 1
        a.has.add(sent.key)
        if (isinstance(message, ConfirmationAck) and message.sender == sender
                and message.sequence_number == seq):
            self._events.append(RelayDelivered(a.name, sender, seq, message.applied))
        else:
            self._events.append(RelayRefused(a.name, sender, seq, self._as_error(message)))

    def _on_info_answer(self, a: _Authority, sent: RequestInfo, message: Message) -> None:
        a.need_info = False
        a.follow_up = None
        asked = sent.request.request_received_transfers_excluding_first_nth
        if isinstance(message, Error):
            if isinstance(error_from_message(message), UnknownSenderAccount):
                a.next_seq = 0  # it never heard of us: nothing settled, nothing received
                self._sync_answered(a)
            else:
                self._back_off(a)
            return
        if not isinstance(message, AccountInfoResponse) or message.sender != self.client.address:
            self._back_off(a)
            return
        received_before = len(self.client.record.received_log)
        pending_before = self.client.pending_order
        follow = self.client.handle_account_info_response(a.name, message)
        a.next_seq = message.next_sequence_number
        a.has.update(c.value.transfer.key for c in message.requested_received_transfers)
        for cert in self.client.record.received_log[received_before:]:
            t = cert.value.transfer
            self._events.append(PaymentReceived(t.sender, t.sequence_number, t.amount,
                                                "authority", a.name))
        if asked is not None:
            a.received_cursor = asked + len(message.requested_received_transfers)
            more = len(message.requested_received_transfers) >= MAX_RECEIVED_TRANSFERS_PER_RESPONSE
            if more:
                a.sync_due = True
            else:
                self._sync_answered(a)
        latest = self.client.certificate
        if latest is not None and a.next_seq > latest.value.transfer.sequence_number:
            self.client.confirmation_delivered(a.name)  # it has settled our latest
        if follow is not None:
            a.follow_up = follow  # it knows a later sequence number of ours (recovery)
        if pending_before is not None and self.client.pending_order is None:
            formed = self.client.certificate
            if formed is not None:  # the info carried the vote that completed the quorum
                self._certified(formed)

    # --- helpers -----------------------------------------------------------------------

    @staticmethod
    def _same(order: TransferOrder, req: _Request) -> bool:
        t = order.transfer
        return (t.recipient, t.amount, t.user_data) == (req.recipient, req.amount, req.user_data)

    @staticmethod
    def _as_error(message: Message) -> FastPayError:
        if isinstance(message, Error):
            return error_from_message(message)
        return UnexpectedMessage(f"unexpected {type(message).__name__}")

    def _refuse(self, a: _Authority, seq: int, error: FastPayError) -> None:
        a.refused = error
        self._events.append(VoteRefused(a.name, seq, error))
        weight = self.committee.weight_of(
            n for n, o in self._auth.items() if o.refused is not None
            and type(o.refused) is type(error) and o.refused.wire_code == error.wire_code)
        if weight >= self.committee.validity_threshold:
            self._stopped_seq = seq
            self._report_no_quorum(seq, early_stop=error)

    def _back_off(self, a: _Authority) -> None:
        a.failures += 1
        a.retry_at = self._now + min(self.max_retry_after,
                                     self.retry_after * 2 ** (a.failures - 1))
        self._release(a)

    def _release(self, a: _Authority) -> None:
        if a.active:
            a.active = False
            self._actions.append(Release(a.name))

    def _sync_answered(self, a: _Authority) -> None:
        a.sync_due = False
        for sync_id in sorted(a.sync_asked):
            self._sync_reached[sync_id].append(a.name)
        self._drop_from_syncs(a, reached=True)

    def _drop_from_syncs(self, a: _Authority, reached: bool) -> None:
        for sync_id in sorted(a.sync_asked):
            names = self._syncs.get(sync_id)
            if names is None:
                continue
            names.discard(a.name)
            if not names:
                del self._syncs[sync_id]
                reached_names = tuple(sorted(self._sync_reached.pop(sync_id, [])))
                self._events.append(SyncDone(sync_id, reached_names))
        a.sync_asked.clear()

    def _new_attempt(self) -> None:
        self._stopped_seq = None
        self._no_quorum_seq = None
        for a in self._auth.values():
            a.refused = None
            a.unreachable = None
            a.info_tries = 0
            a.retry_at = min(a.retry_at, self._now)

    def _sign_next(self) -> None:
        """Sign the first queued transfer if no order is pending."""
        while self._queue and self.client.pending_order is None:
            req = self._queue.popleft()
            try:
                order = self.client.start_transfer(req.recipient, req.amount, req.user_data)
            except (FastPayError, ValueError) as exc:
                err = exc if isinstance(exc, FastPayError) else UnexpectedMessage(str(exc))
                req.rejected = err
                self._events.append(TransferRejected(req.ticket, err))
                continue
            req.sequence_number = order.transfer.sequence_number
            self._new_attempt()
            self._events.append(OrderSigned(req.ticket, req.sequence_number, req.recipient,
                                            req.amount, resumed=False, certified=False))

    def _certified(self, cert: CertifiedTransferOrder) -> None:
        seq = cert.value.transfer.sequence_number
        self._events.append(CertificateFormed(seq, cert))
        self._delivery[seq] = None
        self._handoffs[seq] = _Handoff(cert, in_flight=True)
        self._actions.append(DeliverToPayee(cert))
        for a in self._auth.values():
            a.refused = None
            a.info_tries = 0
        self._sign_next()

    def _report_no_quorum(self, seq: int, early_stop: FastPayError | None) -> None:
        if self._no_quorum_seq == seq:
            return
        self._no_quorum_seq = seq
        voted = frozenset(v.authority for v in self.client.votes)
        event = NoQuorum(
            sequence_number=seq,
            voted=voted,
            refused={n: a.refused for n, a in self._auth.items()
                     if a.refused is not None and n not in voted},
            unreachable={n: a.unreachable for n, a in self._auth.items()
                         if a.unreachable is not None and a.refused is None
                         and n not in voted},
            early_stop=early_stop,
        )
        for req in self._requests.values():
            if req.sequence_number == seq and req.no_quorum is None:
                req.no_quorum = event
        self._events.append(event)

    # --- scheduling --------------------------------------------------------------------

    def _work_for(self, a: _Authority) -> ToAuthority | None:
        """The next thing to send ``a``, None when it owes us nothing now."""
        client = self.client
        if a.follow_up is not None:
            return RequestInfo(a.name, a.follow_up)
        if a.need_info or a.sync_asked or (a.sync_due and (a.active or self._always_reachable)):
            return RequestInfo(a.name, client.account_info_request(
                received_from=a.received_cursor))
        rec = client.record
        latest = rec.certificate
        if latest is not None:
            lseq = latest.value.transfer.sequence_number
            if a.next_seq is not None and a.next_seq < lseq:
                old = client.certificate_for(a.next_seq)
                if old is not None and a.confirm_refused != a.next_seq:
                    return SendConfirmation(a.name, ConfirmationOrder(certificate=old),
                                            a.next_seq)
            if (a.name not in rec.confirmed_by and a.confirm_refused != lseq
                    and not (a.next_seq is not None and a.next_seq > lseq)):
                return SendConfirmation(a.name, ConfirmationOrder(certificate=latest), lseq)
        relay = self._next_relay(a)
        if relay is not None and (a.active or self._always_reachable
                                  or self._direct_unrelayed(a)):
            # Before our order: it may need this credit to vote.
            return RelayConfirmation(a.name, ConfirmationOrder(certificate=relay))
        pending = rec.pending_order
        if (pending is not None and self._stopped_seq != pending.transfer.sequence_number
                and a.refused is None and all(v.authority != a.name for v in rec.votes)):
            return SendOrder(a.name, pending)
        return None

    def _next_relay(self, a: _Authority) -> CertifiedTransferOrder | None:
        """The first certificate paying us that ``a`` may lack (moves its cursor past those
        it has: ours to ourselves, found at ``a``, or served by ``a``)."""
        rec = self.client.record
        log, sources = rec.received_log, rec.received_from
        mine = source_authority(a.name)
        while a.relay_cursor < len(log):
            cert = log[a.relay_cursor]
            source = sources[a.relay_cursor]
            if source not in (SOURCE_SELF, mine) and cert.value.transfer.key not in a.has:
                return cert
            a.relay_cursor += 1
        return None

    def _direct_unrelayed(self, a: _Authority) -> bool:
        """True when ``a`` may lack a certificate handed to us directly (one only we may
        hold, worth a visit on a mobile link; those found at authorities ride along)."""
        rec = self.client.record
        return any(rec.received_from[i] == SOURCE_DIRECT
                   and rec.received_log[i].value.transfer.key not in a.has
                   for i in range(a.relay_cursor, len(rec.received_log)))

    def _group_of(self, name: str) -> str:
        return self._groups.get(name, "\0" + name)  # no group given: one of its own

    def _wants(self, a: _Authority) -> bool:
        return a.reachable and self._work_for(a) is not None

    def _update(self, now: float) -> None:
        """Re-plan after any input: timers, dispatch, then what to tell."""
        self._now = now
        if self.sync_interval is not None and now >= self._next_sync:
            self._next_sync = now + self.sync_interval
            for a in self._auth.values():
                a.sync_due = True
        for name in self._order:  # those holding a slot go on first
            a = self._auth[name]
            if a.active and a.in_flight is None:
                self._dispatch(a, now)
        limit = self.max_parallel
        for name in self._order:
            a = self._auth[name]
            if a.active or a.in_flight is not None:
                continue
            if limit is not None:
                busy = {self._group_of(o.name) for o in self._auth.values() if o.active}
                if self._group_of(name) not in busy and len(busy) >= limit:
                    continue  # a slot is taken; one in a busy group may still go
            self._dispatch(a, now)
        for h in self._handoffs.values():
            if not h.in_flight and h.retry_at <= now:
                h.in_flight = True
                self._actions.append(DeliverToPayee(h.certificate))
        self._drop_unreachable_syncs()
        self._check_outcomes()

    def _dispatch(self, a: _Authority, now: float) -> None:
        work = self._work_for(a) if a.reachable and a.retry_at <= now else None
        if work is None:
            self._release(a)
            return
        a.active = True
        a.in_flight = work
        self._actions.append(work)

    def _drop_unreachable_syncs(self) -> None:
        for a in self._auth.values():
            if a.sync_asked and (not a.reachable or (a.unreachable is not None
                                                     and a.in_flight is None)):
                self._drop_from_syncs(a, reached=False)

    def _check_outcomes(self) -> None:
        rec = self.client.record
        pending = rec.pending_order
        if pending is not None:
            seq = pending.transfer.sequence_number
            voted = {v.authority for v in rec.votes}
            if all(n in voted or a.refused is not None or a.unreachable is not None
                   for n, a in self._auth.items()):
                self._report_no_quorum(seq, early_stop=None)
        latest = rec.certificate
        if latest is not None:
            seq = latest.value.transfer.sequence_number
            weight = self.committee.weight_of(rec.confirmed_by)
            if weight >= self.committee.quorum_threshold and self._final_seq != seq:
                self._final_seq = seq
                self._events.append(Final(seq))
            if rec.confirmed_by >= self.committee.names and self._propagated_seq != seq:
                self._propagated_seq = seq
                self._events.append(FullyPropagated(seq))
        busy = any(a.in_flight is not None for a in self._auth.values())
        stalled = self.has_work and not busy
        if stalled and not self._stalled:
            about = pending.transfer if pending is not None else (
                latest.value.transfer if latest is not None else None)
            self._events.append(Stalled(None if about is None else about.sequence_number))
        self._stalled = stalled
