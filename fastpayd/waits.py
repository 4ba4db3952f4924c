"""The control socket's ``wait`` command: a long-poll until something the user waits for.

``{"cmd": "wait", "for": "ready" | "payment" | "transfer", "timeout": S, ...}`` answers
once the condition holds, or ``Timeout`` after ``timeout`` seconds (default 60).  No
loop here polls: the command looks at the node's state once, then sleeps on the event
log (:meth:`fastpayd.events.EventLog.wait_after`) and looks again only when the daemon
emitted an event -- a payment credited, a vote, a certificate, a confirmation, a
transfer's outcome.  Each event that concerns the wait is also sent as a progress line
``{"step": <event name>, "state": ..., "balance": ..., "event": {...}}`` (after a first
``{"step": "waiting", ...}``), so a caller sees why it is still waiting.

* ``ready``: the daemon opens its control socket only once it is up, so it answers at
  once with its ``status`` (``fastpay wait ready`` first waits for the socket).
* ``payment`` (client): a payment credited after the wait began (or after event
  ``since``), from ``sender`` if given, of at least ``min_amount`` if given; with
  ``balance``, until the balance is at least that (then a payment is needed only if
  ``sender`` or ``min_amount`` is given too).
* ``transfer`` (client): the transfer with ``sequence_number``, or the one ``transfer``
  answered with ``ticket``, or else the latest one, reaching ``state``: ``certified``
  (the certificate exists: the money moved), ``final`` (confirmed at a quorum; the
  default), ``completed`` (confirmed at every authority) or ``failed`` (no quorum in its
  latest attempt, or refused before signing).  A state that can no longer come is a
  refusal: ``TransferFailed`` while waiting for success once the failure is definitive
  (refused before signing, or by authorities weighing the validity threshold; a
  transfer short of a quorum because authorities were unreachable is retried by the
  daemon, so that wait goes on), ``TransferCertified`` while waiting for a failure.

Before answering, what the answer reports is made durable (a balance shown is on disk).
A caller that hangs up ends its wait at once (:func:`fastpayd.control.unless_hung_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastpayd.control import ControlError, Progress, unless_hung_up

WAIT_FOR = ("ready", "payment", "transfer")
TRANSFER_STATES = ("certified", "final", "completed", "failed")
DEFAULT_TIMEOUT = 60.0
# How far along a transfer is; "failed" stands apart.
_LEVEL = {"not_signed": 0, "queued": 0, "collecting_votes": 1, "certified": 2, "final": 3,
          "completed": 4}
_TRANSFER_EVENTS = frozenset({
    "transfer_started", "vote_received", "vote_refused", "certificate_formed",
    "confirmation_delivered", "certificate_delivered", "transfer_final",
    "transfer_completed", "transfer_failed"})
_INTERNAL = ("t", "wall", "node")  # event fields a progress line leaves out


def _int(request: dict[str, Any], key: str, minimum: int) -> int | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value < 2**64:
        raise ControlError("BadRequest", f"{key} must be an integer >= {minimum}")
    return value


class _PaymentWatch:
    """Waits for a payment credited (see module docstring)."""

    def __init__(self, node: Any, request: dict[str, Any]) -> None:
        self.node = node
        sender = request.get("sender")
        self.sender = (None if sender is None
                       else node.account_label(node.resolve_account(sender)))
        self.min_amount = _int(request, "min_amount", 1)
        self.balance = _int(request, "balance", 0)
        self.need_payment = (self.sender is not None or self.min_amount is not None
                             or self.balance is None)
        self.payment: dict[str, Any] | None = None

    def feed(self, event: dict[str, Any]) -> bool:
        """Take one event; True if it concerns this wait (a progress line)."""
        if event.get("event") != "payment_received":
            return False
        if self.payment is None and (self.sender is None or event.get("sender") == self.sender) \
                and (self.min_amount is None or int(event.get("amount", 0)) >= self.min_amount):
            self.payment = event
        return True

    @property
    def state(self) -> str | None:
        return None

    def outcome(self) -> dict[str, Any] | None:
        if self.need_payment and self.payment is None:
            return None
        if self.balance is not None and self.node.state.balance < self.balance:
            return None
        p = self.payment
        return {"payment": None if p is None else {
            "sender": str(p["sender"]), "sequence_number": int(p["sequence_number"]),
            "amount": int(p["amount"]), "peer": str(p.get("peer")),
            "channel": str(p.get("channel")), "event_seq": p["seq"]},
            "balance": self.node.state.balance}

    def waiting_for(self) -> str:
        parts = ["a payment"] if self.need_payment else []
        if self.sender is not None:
            parts.append(f"from {self.sender}")
        if self.min_amount is not None:
            parts.append(f"of at least {self.min_amount}")
        if self.balance is not None:
            parts.append(f"{'and ' if parts else ''}a balance of at least {self.balance} "
                         f"(now {self.node.state.balance})")
        return " ".join(parts)


class _TransferWatch:
    """Waits for one of our transfers to reach a state (see module docstring)."""

    def __init__(self, node: Any, request: dict[str, Any]) -> None:
        self.node = node
        self.target = request.get("state", "final")
        if self.target not in TRANSFER_STATES:
            raise ControlError("BadRequest", "state is one of " + ", ".join(TRANSFER_STATES))
        seq = _int(request, "sequence_number", 0)
        self.ticket = _int(request, "ticket", 1)
        if seq is not None and self.ticket is not None:
            raise ControlError("BadRequest", "give sequence_number or ticket, not both")
        if self.ticket is not None:
            try:
                seq = node.session.ticket(self.ticket).sequence_number
            except KeyError:
                raise ControlError("UnknownTicket", f"no ticket {self.ticket} in this run "
                                   "of the daemon (tickets do not survive a restart; use "
                                   "the sequence number)") from None
        elif seq is None:
            rec = node.state.record
            if rec.pending_order is not None:
                seq = rec.pending_order.transfer.sequence_number
            elif rec.certificate is not None:
                seq = rec.certificate.value.transfer.sequence_number
            else:
                raise ControlError("NoTransfer", f"{node.name} has made no transfer yet")
        self.seq: int | None = seq
        self.failure: str | None = None  # why the latest attempt for seq failed
        self.definitive = False  # ... and the daemon will not retry it
        for event in node.events.since(0):  # an outcome reported before the wait began
            self._note(event)

    def _note(self, event: dict[str, Any]) -> None:
        if self.seq is None or event.get("sequence_number") != self.seq:
            return
        if event.get("event") == "transfer_started":
            self.failure, self.definitive = None, False  # a new attempt
        elif event.get("event") == "transfer_failed":
            votes = event.get("votes") or {}
            self.failure = "no quorum: " + ", ".join(f"{k}={v}" for k, v in votes.items())
            # Refused by authorities that cannot all be wrong (the validity threshold):
            # no retry will change it.  Otherwise the daemon retries who it missed.
            self.definitive = event.get("early_stop") is not None

    def feed(self, event: dict[str, Any]) -> bool:
        if self.seq is None and self.ticket is not None:
            self.seq = self.node.session.ticket(self.ticket).sequence_number
        self._note(event)
        name = event.get("event")
        if name not in _TRANSFER_EVENTS:
            return False
        return name == "vote_refused" or event.get("sequence_number") == self.seq

    @property
    def state(self) -> str:
        node = self.node
        if self.ticket is not None:
            ts = node.session.ticket(self.ticket)
            self.seq = ts.sequence_number
            if ts.rejected is not None:
                self.failure = f"refused: {ts.rejected.wire_code}: {ts.rejected.message}"
                self.definitive = True
                return "failed"
            if ts.sequence_number is None:
                return "queued"
        assert self.seq is not None
        rec = node.state.record
        if self.seq < rec.next_sequence_number:
            latest = rec.certificate
            if latest is None or self.seq < latest.value.transfer.sequence_number:
                return "completed"  # superseded: every later transfer needed it settled
            committee = node.committee
            confirmed = rec.confirmed_by
            if confirmed >= committee.names:
                return "completed"
            if committee.weight_of(confirmed) >= committee.quorum_threshold:
                return "final"
            return "certified"
        if self.failure is not None:
            return "failed"
        pending = rec.pending_order
        if pending is not None and pending.transfer.sequence_number == self.seq:
            return "collecting_votes"
        return "not_signed"

    def outcome(self) -> dict[str, Any] | None:
        state = self.state
        if state == "failed" and self.target != "failed":
            if not self.definitive:
                return None  # the daemon retries the authorities it could not reach
            raise ControlError("TransferFailed", f"transfer #{self.seq} failed "
                               f"({self.failure}); waiting for {self.target} is over")
        level = _LEVEL.get(state, -1)
        if self.target == "failed" and level >= _LEVEL["certified"]:
            raise ControlError("TransferCertified", f"transfer #{self.seq} is {state}: it "
                               "cannot fail any more")
        if state != self.target and (self.target == "failed"
                                     or level < _LEVEL[self.target]):
            return None
        rec = self.node.state.record
        latest = rec.certificate
        is_latest = latest is not None and latest.value.transfer.sequence_number == self.seq
        return {"state": state, "sequence_number": self.seq, "ticket": self.ticket,
                "confirmed": sorted(rec.confirmed_by) if is_latest else (
                    sorted(self.node.committee.names) if state == "completed" else []),
                "failure": self.failure if state == "failed" else None,
                "balance": self.node.state.balance}

    def waiting_for(self) -> str:
        which = f"#{self.seq}" if self.seq is not None else f"of ticket {self.ticket}"
        return f"transfer {which} to be {self.target} (now {self.state})"


def _told(node: Any) -> bool:
    """True when the node's session state may be answered from: its pump has logged (and
    made durable) everything the session knows.  An answer read from the session before
    that would run ahead of the event log -- "completed" before ``transfer_completed``."""
    pump = getattr(node, "pump", None)
    return pump is None or bool(pump.told)


async def _flushed(pump: Any, timeout: float) -> None:
    """Return after the pump's next flush, or after ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pump.changed(), timeout)


async def wait(node: Any, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Run one ``wait`` request for ``node`` (see module docstring); return the answer."""
    what = request.get("for")
    if what not in WAIT_FOR:
        raise ControlError("BadRequest", "for is one of " + ", ".join(WAIT_FOR))
    timeout = request.get("timeout", DEFAULT_TIMEOUT)
    if what == "ready":
        return {"for": what, "last_seq": node.events.last_seq,
                "status": await node.do_status({"cmd": "status"}, progress)}
    if node.role != "client":
        raise ControlError("NotAClient", f"{node.name} is an {node.role}: wait for a "
                           f"{what} on the client's own daemon")
    watch: _PaymentWatch | _TransferWatch = (
        _PaymentWatch(node, request) if what == "payment" else _TransferWatch(node, request))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(timeout)
    cursor = _int(request, "since", 0)
    if cursor is None or what == "transfer":
        cursor = node.events.last_seq
    progress({"step": "waiting", "state": watch.state, "balance": node.state.balance,
              "event": None})
    def look() -> dict[str, Any] | None:
        return watch.outcome() if _told(node) else None

    answer = look()
    while answer is None:
        # Event by event, so that last_seq is where the condition came true: the next
        # wait's `since`, which then misses nothing.
        for event in node.events.since(cursor):
            cursor = max(cursor, int(event["seq"]))
            if watch.feed(event):
                progress({"step": str(event["event"]), "state": watch.state,
                          "balance": node.state.balance,
                          "event": {k: v for k, v in event.items() if k not in _INTERNAL}})
                answer = look()
                if answer is not None:
                    break
        else:
            answer = look()
        if answer is not None:
            break
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ControlError("Timeout", f"waited {float(timeout):g} s for "
                               f"{watch.waiting_for()}")
        # While the session knows more than the log has told, the next look comes after
        # the pump's flush (which may log nothing); otherwise after the next event.
        sleep = (node.events.wait_after(cursor, remaining) if _told(node)
                 else _flushed(node.pump, remaining))
        if await unless_hung_up(sleep):
            raise ControlError("Gone", "the caller closed the connection")
    await node.db.durable()
    return {"for": what, "last_seq": cursor, **answer}
