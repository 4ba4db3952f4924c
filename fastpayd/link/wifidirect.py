"""The daemon's WiFi Direct link: :mod:`fastpayd.wifidirect`'s radio verbs as a :class:`Link`.

Authority (``start(handler)``):
  advertise the FastPay record (name, public key, committee id, port) and keep a P2P group
  up as GO (:class:`~fastpayd.wifidirect.WifiDirectAuthority`), then serve the node's
  handler on ``[::]:port`` with the same framed pump as the IP link
  (:class:`~fastpayd.link.stream.ServerConnection`).  Clients reach it on the GO's IPv6
  link-local address on the group interface, so nobody assigns addresses.

Client:
  a background *discovery loop* runs P2P Find rounds (``discovery_window`` seconds each)
  and Bonjour service discovery; every authority of our committee that answers, whose
  advertised public key matches the committee file, enters the *in-range table* with its
  signal level.  ``DeviceLost``, a failed join, or ``stale_rounds`` whole rounds without
  an answer take it out again.  The radio does one thing at a time, so discovery and
  group membership share one lock: ``connect(name)``
  cancels the running Find round, joins ``name``'s group (leaving any other one first),
  opens a :class:`~fastpayd.link.stream.ClientConnection` to the GO and returns it.  The
  group is left when the caller calls :meth:`WifiDirectLink.release`, after
  ``linger`` seconds without a request in flight, or at once when the group ends or the
  authority is lost (the connection then fails every outstanding request with LinkError).

  ``reachable_authorities()`` (fresh ones in range, best first), ``max_parallel = 1``,
  ``on_change`` and ``release`` let the client's payment session visit authorities as
  they come into range.

Direct hand-off (payer → payee, no authority needed):
  a client that serves (the daemon's) also advertises a FastPay *client* record (role,
  name, account public key, committee, port; nothing secret) and listens on
  ``[::]:port``.  Discovery enters clients of our committee whose advertised key matches
  the committee file into a small table (``client_in_range``; ``reachable_clients()``
  lists those heard within ``fresh_for`` seconds).  ``connect(payee)`` forms a group with
  the payee by GO negotiation -- the payee GO (intent 15, showing the committee PIN), the
  payer joining (intent 0, typing it) -- then the same framed TCP to the GO's link-local
  address.  The payee answers a ``GONegotiationRequest`` by taking its radio (its Find
  round stops), forms the group, serves until the payer leaves or ``handoff_hold``
  seconds, then ends it and goes back to discovery; while it is in an authority's group
  it declines (the payer retries later).  A payer in the middle of an authority visit
  does not break it off for a hand-off: ``connect`` says the radio is busy.  A P2P
  interface with ``p2p_no_group_iface`` is in one group at a time, so the group exists
  only for the hand-off.

Options (``[link]`` of the node file, see docs/config.md): ``interface`` (``wlan0``),
``frequency`` (MHz, authority's GO, 2437), ``port`` (7400; ``listen``'s port wins),
``bus`` (D-Bus address, default ``$DBUS_SYSTEM_BUS_ADDRESS``), ``discovery_window`` (s, 10),
``discovery_pause`` (s between rounds, 0.5), ``join_timeout`` (s, 60), ``linger`` (s, 2),
``stale_rounds`` (an authority that answers no service query in this many whole rounds
in a row leaves the table, 2; 0: only ``DeviceLost``), ``fresh_for`` (s since its last
answer during which an authority is worth a join, ``discovery_window`` +
``discovery_pause`` + 2), ``committee`` (advertised committee id, default the committee
file's), ``handoff_timeout`` (s, a hand-off's GO negotiation, 20), ``handoff_hold`` (s the
payee keeps a hand-off group at most, 20), ``in_group_probe`` / ``in_group_misses``
(presence probes inside a shared group, 1.0 s / 3), ``silent_hold`` (s a GO found silent
in its own group is passed over, 300: wpa_supplicant keeps the group of a daemon that
died, and its service records keep answering).

Events (in events.jsonl and via ``events``): those of :data:`fastpayd.wifidirect.EVENTS`
(``peer_found``, ``authority_discovered``, ``peer_ignored``, ``peer_lost``,
``group_started``/``group_finished`` (authority), ``group_joined``/``group_left``
(client), ``formation_failed``, ``client_joined``/``client_left``), plus ``link_up``,
``session_opened``, ``authority_in_range``/``authority_out_of_range``,
``client_in_range``/``client_out_of_range``, ``join_failed`` and, on a payee,
``handoff_hosted`` / ``handoff_ended`` / ``handoff_declined`` / ``handoff_host_failed``.
Their ``t`` is ``time.monotonic()`` at the D-Bus signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import replace
from typing import Any

from fastpayd.link import Link
from fastpayd.link.ingroup import InGroupLiveness
from fastpayd.link.inrange import InRangeTable, Left
from fastpayd.link.stream import (
    ClientConnection,
    LinkError,
    RequestHandler,
)
from fastpayd.wifidirect import (
    AuthorityPeer,
    FastPayRecord,
    NotListening,
    WifiDirectAuthority,
    WifiDirectClient,
    WifiDirectError,
    defs,
)
from fastpayd.wifidirect.group import PresenceResponder, probe
from fastpayd.wifidirect.manager import Signal
from fastpayd.wifidirect.radio import DEFAULT_FREQUENCY, Membership

log = logging.getLogger(__name__)

# s a port in the peer's group may refuse every connection before we give up on it
# (NotListening): a daemon opens its socket well within this of its group starting.
REFUSED_FOR = 10.0

DEFAULT_PORT = 7400


class _TimedConnection(ClientConnection):
    """A ClientConnection that remembers when it was last used (for the linger timer)."""

    def __init__(self, max_frame: int, name: str = "") -> None:
        super().__init__(max_frame, name)
        self.last_used = time.monotonic()

    def send_raw(self, payload: bytes) -> asyncio.Future[Any]:
        self.last_used = time.monotonic()
        fut = super().send_raw(payload)
        fut.add_done_callback(self._touch)
        return fut

    def _touch(self, _fut: object) -> None:
        self.last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return bool(self._waiting)


class _Session:
    """The group this client is in and its connections: to the GO and (group sharing) to
    the other authorities in that group, one each, opened as they are asked for."""

    def __init__(self, name: str, go_address: str, task: asyncio.Task[None],
                 ready: asyncio.Future[Any]) -> None:
        self.name = name  # the authority the join was for
        self.go_address = go_address  # P2P device address of the group's GO
        self.task = task
        self.ready = ready
        self.conn: _TimedConnection | None = None  # the first one (to ``name``)
        self.conns: dict[str, _TimedConnection] = {}
        self.member: Membership | None = None
        self.release = asyncio.Event()
        self.since = time.monotonic()

    def alive(self) -> bool:
        return not self.task.done() and not self.release.is_set() and (
            self.member is None or not self.member.gone.is_set())

    def busy(self) -> bool:
        return any(c.busy for c in self.conns.values() if c.is_open)

    def last_used(self) -> float:
        return max((c.last_used for c in self.conns.values()), default=self.since)


class WifiDirectLink(Link):
    kind = "wifidirect"
    max_parallel = 1  # one P2P group at a time

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.config.options
        self.interface = str(opts.get("interface", "wlan0"))
        self.frequency = int(opts.get("frequency", DEFAULT_FREQUENCY))
        listen = self.config.listen
        self.port = listen.port if listen and listen.port else int(opts.get("port",
                                                                           DEFAULT_PORT))
        self.bus = opts.get("bus")
        self.discovery_window = float(opts.get("discovery_window", 10.0))
        self.discovery_pause = float(opts.get("discovery_pause", 0.5))
        self.join_timeout = float(opts.get("join_timeout", 60.0))
        self.linger = float(opts.get("linger", 2.0))
        self.stale_rounds = int(opts.get("stale_rounds", 2))
        self.group_sharing = bool(opts.get("group_sharing", False))
        self.choose_window = float(opts.get("choose_window", 8.0))
        self.persistent_groups = bool(opts.get("persistent_groups", True))
        self.in_group_probe = float(opts.get("in_group_probe", 1.0))
        self.in_group_misses = int(opts.get("in_group_misses", 3))
        self.silent_hold = float(opts.get("silent_hold", 300.0))
        # An authority is *fresh* while its last service answer is younger than about one
        # round: only fresh ones are worth a join (see in_range).
        self.fresh_for = float(opts.get("fresh_for",
                                        self.discovery_window + self.discovery_pause + 2.0))
        me = self.directory.get(self.self_name)
        self.role = me.role if me is not None else "client"
        self._committee_id = opts.get("committee")
        self._presence: asyncio.DatagramTransport | None = None
        self._cid = ""
        self._authority: WifiDirectAuthority | None = None
        self._client: WifiDirectClient | None = None
        self._server: asyncio.Server | None = None
        self._tracker = self._tracker_for_config()
        self._radio = asyncio.Lock()
        self._round: asyncio.Task[Any] | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._session: _Session | None = None
        self.table = InRangeTable(self.stale_rounds, self.fresh_for)
        self._want_radio = 0
        self._radio_idle = asyncio.Event()  # no join waits for the radio, no session is up
        self._radio_idle.set()
        self._last_error: dict[str, str] = {}
        self._silent_gos: dict[str, float] = {}  # GO address → found silent in its group
        self._counts = {"discovery_rounds": 0, "joins": 0, "join_failures": 0,
                        "handoffs_hosted": 0}
        self._closing = False
        # Clients of our committee heard advertising: name -> (peer, last heard, monotonic).
        self._payees: dict[str, tuple[AuthorityPeer, float]] = {}
        self.handoff_timeout = float(opts.get("handoff_timeout", 20.0))
        self.handoff_hold = float(opts.get("handoff_hold", 20.0))
        self._hosting = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- plumbing ----------------------------------------------------------------------

    def _committee(self, handler: RequestHandler | None) -> str:
        """The committee id to advertise and look for: ``[link] committee`` or the node's."""
        if self._committee_id:
            return str(self._committee_id)
        committee = getattr(handler, "committee", None)
        cid = getattr(committee, "committee_id", None)
        if not isinstance(cid, str):
            raise LinkError("WiFi Direct needs a committee id: the node's, or [link] committee")
        return cid

    def _on_wd_event(self, name: str, **fields: Any) -> None:
        self.events.emit(name, **fields)
        if name == "authority_discovered":
            self._table_add(fields.get("address", ""), heard=True)
        elif name == "client_discovered":
            self._payee_heard(fields.get("address", ""))
        elif name == "peer_lost":
            self._table_remove_address(fields.get("address", ""), "lost")
            self._payee_gone(fields.get("address", ""), "lost")

    # -- clients in range (payees of a direct hand-off) --------------------------------

    def _payee_heard(self, address: str) -> None:
        client = self._client
        peer = client.clients.get(address) if client else None
        if peer is None:
            return
        name = peer.record.name
        entry = self.directory.get(name)
        if entry is None or entry.role != "client" or entry.key != peer.record.public_key:
            self.events.emit("peer_ignored", address=address, client=name,
                             reason="not in our committee file (name or key differs)")
            return
        if name == self.self_name:
            return
        new = name not in self._payees
        self._payees[name] = (peer, time.monotonic())
        if new:
            self.events.emit("client_in_range", client=name, address=address,
                             level=peer.level)
            self._pulse()

    def _payee_gone(self, address: str, reason: str) -> None:
        gone = [n for n, (p, _) in self._payees.items() if p.address == address]
        for name in gone:
            del self._payees[name]
            self.events.emit("client_out_of_range", client=name, address=address,
                             reason=reason)
        if gone:
            self._pulse()

    def reachable_clients(self) -> list[str]:
        """Clients of our committee heard advertising within ``fresh_for`` seconds."""
        now = time.monotonic()
        for peer, heard in list(self._payees.values()):
            if now - heard > self.fresh_for * max(1, self.stale_rounds):
                self._payee_gone(peer.address, "silent")
        return sorted(n for n, (_, heard) in self._payees.items()
                      if now - heard <= self.fresh_for)

    def _pulse(self) -> None:
        self._changed()

    def _table_add(self, address: str, heard: bool = False) -> None:
        """(Re)enter the authority at ``address``; ``heard``: it just answered a query."""
        client = self._client
        peer = client.authorities.get(address) if client else None
        if peer is None:
            return
        name = peer.record.name
        if not self._is_ours(peer.record):
            self.events.emit("peer_ignored", address=address, authority=name,
                             reason="not in our committee file (name or key differs)")
            return
        if not peer.record.is_go:
            return  # a member of another group still saying so: reached through its GO
        now = time.monotonic()
        since = self._silent_gos.get(address)
        if since is not None:
            if now - since < self.silent_hold:
                # Found silent in its own group (a dead daemon's group and records live on
                # in wpa_supplicant): its record, and the members it lists, are not used.
                return
            del self._silent_gos[address]
        self._enter(name, peer, now, heard)
        # Group sharing: the authorities in this GO's group, reached over it.
        listed = set()
        for member, host in peer.record.members:
            entry = self.directory.get(member)
            if entry is None or entry.role != "authority" or member == self.self_name:
                continue
            listed.add(member)
            record = replace(peer.record, name=member, public_key=entry.key, group=name,
                             members=())
            self._enter(member, replace(peer, record=record, host=host), now, heard)
        for row in self.table.rows(now):
            ap = self.table.get(row["name"])
            if (ap is not None and ap.address == address and ap.host is not None
                    and row["name"] not in listed):
                self._table_remove(row["name"], f"no longer in {name}'s group")
        self._pulse()

    def _is_ours(self, record: FastPayRecord) -> bool:
        entry = self.directory.get(record.name)
        return entry is not None and entry.role == "authority" and entry.key == record.public_key

    def _enter(self, name: str, peer: AuthorityPeer, now: float, heard: bool) -> None:
        if self.table.heard(name, peer, now, answered=heard) is not None:
            self.events.emit("authority_in_range", authority=name, address=peer.address,
                             level=peer.level, via=peer.record.group if peer.host else None)

    def _table_left(self, gone: list[Left]) -> None:
        for left in gone:
            if self._client is not None:
                self._client.authorities.pop(left.peer.address, None)
            self.events.emit("authority_out_of_range", authority=left.name,
                             address=left.peer.address, reason=left.reason)
        if gone:
            self._pulse()

    def _table_remove_address(self, address: str, reason: str) -> None:
        self._table_left(self.table.remove_address(address, reason))

    def _table_remove(self, name: str, reason: str) -> None:
        left = self.table.remove(name, reason)
        self._table_left([left] if left is not None else [])

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, handler: RequestHandler | None) -> None:
        committee = self._committee(handler)
        self._cid = committee
        try:
            if self.role == "authority":
                await self._start_authority(handler, committee)
            else:
                self._client = WifiDirectClient(committee, ifname=self.interface,
                                                bus_address=self.bus,
                                                on_event=self._on_wd_event)
                self._client.reinvoke = self.persistent_groups
                self._client.handoff_timeout = self.handoff_timeout
                await self._client.__aenter__()
                if handler is not None:
                    await self._start_payee(handler, committee)
                self._discovery = asyncio.create_task(self._discover_forever(),
                                                      name="wifidirect-discovery")
        except (WifiDirectError, TimeoutError, OSError) as exc:
            await self.close()
            raise LinkError(f"WiFi Direct on {self.interface}: {exc}") from None
        self.events.emit("link_up", kind=self.kind, role=self.role, interface=self.interface,
                         committee=committee, port=self.port)

    async def _start_authority(self, handler: RequestHandler | None, committee: str) -> None:
        entry = self.directory.get(self.self_name)
        if entry is None:
            raise LinkError(f"{self.self_name} is not in the committee file")
        record = FastPayRecord(role="authority", name=self.self_name, public_key=entry.key,
                               committee=committee, port=self.port)
        if self.group_sharing:
            # Before choosing: members answer presence queries from inside the GO's group.
            self._presence = await PresenceResponder.serve(self.self_name, entry.key,
                                                           committee, self.port)
        self._authority = WifiDirectAuthority(record, ifname=self.interface,
                                              bus_address=self.bus, frequency=self.frequency,
                                              on_event=self._on_wd_event,
                                              sharing=self.group_sharing,
                                              choose_window=self.choose_window,
                                              known=self._is_ours,
                                              persistent=self.persistent_groups,
                                              silent_hold=self.silent_hold)
        await self._authority.start()
        if handler is None:
            return
        factory = self._server_factory(handler, self._tracker)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, host="::", port=self.port,
                                                family=socket.AF_INET6, reuse_address=True)

    async def _start_payee(self, handler: RequestHandler, committee: str) -> None:
        """A client that serves: payers in range hand it their certificates directly.
        Advertise our client record, answer GO negotiations from payers, serve the
        handler on ``[::]:port`` of whatever group a payer forms with us."""
        client = self._client
        assert client is not None
        entry = self.directory.get(self.self_name)
        if entry is None or entry.role != "client":
            return  # not a client of the committee file: nobody pays us by name
        factory = self._server_factory(handler, self._tracker)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, host="::", port=self.port,
                                                family=socket.AF_INET6, reuse_address=True)
        await client.advertise(FastPayRecord(role="client", name=self.self_name,
                                             public_key=entry.key, committee=committee,
                                             port=self.port))
        client.manager.subscribe(self._on_radio_signal)

    def _on_radio_signal(self, sig: Signal) -> None:
        if sig.name == defs.SIG_GO_NEGOTIATION_REQUEST and sig.args and not self._closing:
            task = asyncio.ensure_future(self._host_handoff(str(sig.args[0])))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _host_handoff(self, path: str) -> None:
        """A payer asks for a group with us (payee as GO): take the radio, form it, serve
        until the payer leaves (or ``handoff_hold`` s), end it."""
        client = self._client
        assert client is not None
        address = client.manager.peers[path].address if path in client.manager.peers else path
        session = self._session
        if self._hosting or (session is not None and session.alive()):
            self.events.emit("handoff_declined", address=address,
                             reason="in another group" if session else "already hosting")
            return
        self._hosting = True
        self._want_radio += 1
        self._radio_busy_changed()
        t0 = time.monotonic()
        try:
            if self._round is not None:
                self._round.cancel()
            async with self._radio:
                try:
                    group = await client.host_handoff(path, self.handoff_timeout)
                except (WifiDirectError, TimeoutError) as exc:
                    self.events.emit("handoff_host_failed", address=address, reason=str(exc),
                                     elapsed=time.monotonic() - t0)
                    return
                self._counts["handoffs_hosted"] += 1
                self.events.emit("handoff_hosted", address=address, ifname=group.ifname,
                                 elapsed=group.started_at - t0)
                left = {defs.SIG_PEER_DISCONNECTED, defs.SIG_GROUP_FINISHED}
                with client.manager.expect(left, lambda s: s.path == group.path or (
                        s.name == defs.SIG_GROUP_FINISHED
                        and s.args[0].get("group_object") == group.path)) as exp:
                    with contextlib.suppress(TimeoutError):
                        await exp.wait(self.handoff_hold)
                with contextlib.suppress(WifiDirectError, TimeoutError):
                    await client.leave(group)
                self.events.emit("handoff_ended", address=address,
                                 duration=time.monotonic() - group.started_at)
        finally:
            self._hosting = False
            self._want_radio -= 1
            self._radio_busy_changed()

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._discovery is not None:
            self._discovery.cancel()
            await asyncio.gather(self._discovery, return_exceptions=True)
            self._discovery = None
        session = self._session
        if session is not None:
            session.release.set()
            await asyncio.gather(session.task, return_exceptions=True)
        if self._server is not None:
            await self._tracker.close_server(self._server)
            self._server = None
        if self._authority is not None:
            await self._authority.stop()
            self._authority = None
        if self._presence is not None:
            self._presence.close()
            self._presence = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.withdraw()
            with contextlib.suppress(Exception):
                await self._client.__aexit__(None, None, None)
            self._client = None

    @property
    def local_address(self) -> str:
        if self._authority is not None:
            return f"{self.interface}/{self._authority.group_ifname or '-'}:[::]:{self.port}"
        return f"{self.interface} (client)"

    # -- discovery (client) ------------------------------------------------------------

    async def _discover_forever(self) -> None:
        client = self._client
        assert client is not None
        while not self._closing:
            # A join wants the radio, or we are in a group: a Find would take the radio
            # off the group's channel.  Wait until both are over.
            await self._radio_idle.wait()
            async with self._radio:
                if not self._radio_idle.is_set():
                    continue
                self._round = asyncio.create_task(
                    client.discover(timeout=self.discovery_window, want=None))
                try:
                    heard = await self._round
                    self._counts["discovery_rounds"] += 1
                    self._table_left(self.table.round_finished(p.address for p in heard))
                except asyncio.CancelledError:
                    if self._closing or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        raise
                except (WifiDirectError, TimeoutError) as exc:
                    log.warning("discovery round failed: %s", exc)
                finally:
                    self._round = None
            for peer in list(client.authorities.values()):
                self._table_add(peer.address)  # refresh levels
            await asyncio.sleep(self.discovery_pause)

    def in_range(self) -> list[dict[str, Any]]:
        """Authorities of our committee in range now, fresh ones first (see
        :mod:`fastpayd.link.inrange`)."""
        return self.table.rows(time.monotonic())

    def reachable_authorities(self) -> list[str]:
        """The authorities of the group we are in (while it lasts), then fresh ones in
        range, best first: those worth a join now.  (No discovery runs while we are in a
        group, so the joined ones would otherwise go stale under a long visit.)"""
        fresh = self.table.reachable(time.monotonic())
        session = self._session
        if session is None or not session.alive():
            return fresh
        here = [n for n in self.table.names if self._in_session(n, session)]
        here.sort(key=lambda n: (n != session.name, n))
        return [*here, *(n for n in fresh if n not in here)]

    def groups(self) -> dict[str, str]:
        """Authority name → the group (its GO's device address) a join for it enters:
        authorities sharing a group are worked with on one membership."""
        return {n: ap.address for n in self.table.names if (ap := self.table.get(n))}

    def _in_session(self, name: str, session: _Session) -> bool:
        ap = self.table.get(name)
        return ap is not None and ap.address == session.go_address

    # -- sessions (client) -------------------------------------------------------------

    async def connect(self, peer: str) -> ClientConnection:
        if self.role == "authority":
            raise LinkError("an authority on WiFi Direct does not open connections")
        session = self._session
        if session is not None and session.alive() and (
                peer in session.conns or self._in_session(peer, session)):
            conn = await self._open_in(session, peer)
            if conn is not None:
                return conn
        entry = self.directory.get(peer)
        if entry is not None and entry.role == "client":
            payee = self._payees.get(peer)
            if payee is None:
                raise LinkError(f"{peer} is not in range")
            # An authority visit (under way or waiting for the radio) goes first: a
            # hand-off never breaks one off, and is tried again after it.
            if session is not None and session.alive():
                raise LinkError(f"the radio is busy in {session.name}'s group")
            if self._want_radio or self._hosting:
                raise LinkError("the radio is busy (a join or a hand-off is waiting)")
            ap: AuthorityPeer | None = payee[0]
        else:
            ap = self.table.get(peer)
        if ap is None:
            err = f"{peer} is not in range" if peer in self.directory else f"unknown {peer!r}"
            self._last_error[peer] = err
            raise LinkError(err)
        self._want_radio += 1
        self._radio_busy_changed()
        try:
            if self._round is not None:
                self._round.cancel()
            async with self._radio:
                session = self._session
                if session is not None and session.alive() and self._in_session(peer, session):
                    shared = await self._open_in(session, peer)
                    if shared is not None:
                        return shared
                if session is not None:
                    await self._end_session(session)
                if entry is None or entry.role != "client":
                    # The table may have changed while we waited for the radio (a dead
                    # GO's group taken out, with the members it listed): join what it
                    # says now, not what it said when we asked.
                    ap = self.table.get(peer)
                    if ap is None:
                        err = f"{peer} is not in range"
                        self._last_error[peer] = err
                        raise LinkError(err)
                ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self._hold(peer, ap, ready), name=f"session-{peer}")
                self._session = _Session(peer, ap.address, task, ready)
                self._radio_busy_changed()
                try:
                    joined: ClientConnection = await asyncio.shield(ready)
                except LinkError as exc:
                    self._last_error[peer] = str(exc)
                    raise
                self._last_error.pop(peer, None)
                return joined
        finally:
            self._want_radio -= 1
            self._radio_busy_changed()

    async def _open_in(self, session: _Session, peer: str) -> ClientConnection | None:
        """A connection to ``peer`` over the group we are in: the open one, or a new one
        (no join: group sharing).  None if the session ended meanwhile."""
        try:
            await asyncio.shield(session.ready)
        except LinkError:
            return None
        conn = session.conns.get(peer)
        if conn is not None and conn.is_open:
            return conn
        ap = self.table.get(peer)
        member = session.member
        if ap is None or member is None or not session.alive():
            return None
        try:
            conn = await self._open(ap, member, peer)
        except (WifiDirectError, TimeoutError, OSError) as exc:
            self._last_error[peer] = str(exc)
            raise LinkError(f"{peer} over {session.name}'s group: {exc}") from None
        session.conns[peer] = conn
        self._last_error.pop(peer, None)
        return conn

    async def _open(self, ap: AuthorityPeer, member: Membership, name: str) -> _TimedConnection:
        client = self._client
        assert client is not None
        loop = asyncio.get_running_loop()
        max_frame = self.config.max_frame
        t0 = time.monotonic()

        async def opener(host: str, port: int) -> _TimedConnection:
            _, conn = await loop.create_connection(
                lambda: _TimedConnection(max_frame, name), host, port)
            return conn

        deadline = max(member.deadline, t0 + self.config.connect_timeout)
        conn, host = await client.open_tcp(member.group, ap.record.port, deadline, opener,
                                           member=ap.host, refused_for=REFUSED_FOR)
        member.on_gone.append(conn.close)
        self.events.emit("session_opened", authority=name, address=ap.address, host=host,
                         elapsed=time.monotonic() - t0, shared=ap.host is not None)
        return conn

    def _radio_busy_changed(self) -> None:
        if self._want_radio == 0 and self._session is None:
            self._radio_idle.set()
        else:
            self._radio_idle.clear()

    async def _end_session(self, session: _Session) -> None:
        session.release.set()
        await asyncio.gather(session.task, return_exceptions=True)

    def release(self, peer: str) -> None:
        """The caller is done with ``peer``: close its connection.  A group that serves
        only ``peer`` is left at once; one shared with other authorities is kept
        ``linger`` seconds after its last request (pooling: the next phase or payment
        for them needs no join)."""
        session = self._session
        if session is None:
            return
        conn = session.conns.pop(peer, None)
        if conn is not None:
            conn.close()
        if any(c.is_open for c in session.conns.values()):
            return
        if not any(self._in_session(n, session) for n in self.table.names if n != peer):
            session.release.set()

    async def _hold(self, name: str, ap: AuthorityPeer, ready: asyncio.Future[Any]) -> None:
        """Join, connect, keep the group while used, leave (runs as the session's task)."""
        client = self._client
        assert client is not None
        me = self._session
        t0 = time.monotonic()
        try:
            async with client.membership(ap, timeout=self.join_timeout) as member:
                self._counts["joins"] += 1
                if me is not None:
                    me.member = member
                conn = await self._open(ap, member, name)
                if me is not None:
                    me.conn = conn
                    me.conns[name] = conn
                ready.set_result(conn)
                watcher = None
                if me is not None and ap.record.group is not None and self.in_group_probe > 0:
                    watcher = asyncio.create_task(self._watch_group(me, member),
                                                  name=f"in-group-{name}")
                release = me.release if me is not None else asyncio.Event()
                while not (member.gone.is_set() or release.is_set()):
                    if me is None:
                        break
                    idle = time.monotonic() - me.last_used()
                    if not me.busy() and idle >= self.linger:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(release.wait(), max(0.1, self.linger - idle))
                if watcher is not None:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                for c in (me.conns.values() if me is not None else (conn,)):
                    c.close()
                if member.gone.is_set() and ap.record.role != "client":
                    self._table_remove_address(ap.address, "group ended")
        except (WifiDirectError, TimeoutError, OSError) as exc:
            self._counts["join_failures"] += 1
            if isinstance(exc, NotListening) and ap.host is None and ap.record.role != "client":
                # In its group, and nobody serves its port: a dead daemon's group, which
                # wpa_supplicant keeps up (and its records answering).  Passed over.
                self._silent_gos[ap.address] = time.monotonic()
            self.events.emit("join_failed", authority=name, address=ap.address,
                             reason=str(exc), elapsed=time.monotonic() - t0)
            # Not reachable now: out of the table until discovery sees it again.
            if ap.record.role == "client":
                self._payee_gone(ap.address, "hand-off group failed")
            else:
                self._table_remove_address(ap.address, "join failed")
            if not ready.done():
                ready.set_exception(LinkError(f"joining {name}: {exc}"))
        finally:
            if not ready.done():
                ready.set_exception(LinkError(f"session with {name} ended"))
            if not ready.cancelled():
                ready.exception()  # retrieved: connect() may have stopped waiting
            if self._session is me:
                self._session = None
                self._radio_busy_changed()

    async def _watch_group(self, session: _Session, member: Membership) -> None:
        """Range awareness inside a shared group (see :mod:`fastpayd.link.ingroup`): probe
        who answers every ``in_group_probe`` s; an authority silent ``in_group_misses``
        times in a row leaves the table (the GO: the whole group is treated as lost)."""
        live = InGroupLiveness([n for n in self.table.names if self._in_session(n, session)],
                               self.in_group_misses)
        while session.alive() and not member.gone.is_set():
            try:
                answers = await probe(member.group.ifname, self.port, self._cid,
                                      wait=self.in_group_probe, repeats=2)
            except OSError as exc:
                log.warning("in-group probe: %s", exc)
                return
            for name in live.probe_done(answers, time.monotonic()):
                ap = self.table.get(name)
                if ap is None:
                    continue
                if ap.host is None:  # the GO: its group is as good as gone
                    self._silent_gos[ap.address] = time.monotonic()
                    self.events.emit("authority_out_of_range", authority=name,
                                     address=ap.address, reason="silent in its group")
                    member.set_gone()
                    return
                conn = session.conns.pop(name, None)
                if conn is not None:
                    conn.close()
                self._table_remove(name, "silent in the group")

    # -- reporting -----------------------------------------------------------------------

    def group_state(self) -> dict[str, Any]:
        """The group this node is in (authority: its own as GO; client: the joined one)."""
        auth = self._authority
        if auth is not None and auth.member_of is not None:  # group sharing: a member
            return {"role": "member", "ifname": auth.member_of.group.ifname, "up": True,
                    "go": auth.record.group, "go_address": auth.member_of.group.bssid}
        if auth is not None:
            group = auth.group
            return {"role": "GO", "ifname": group.ifname if group else None,
                    "up": group is not None, "members": sorted(auth.members),
                    "sharing": auth.sharing, "authorities": sorted(auth.shared)}
        session = self._session
        if session is None or session.member is None:
            return {"role": "client", "joined": None}
        return {"role": "client", "joined": session.name,
                "ifname": session.member.group.ifname,
                "go_address": session.member.group.bssid,
                "since_ago": round(time.monotonic() - session.since, 3),
                "connected": bool(session.conn and session.conn.is_open),
                "shared_with": sorted(n for n in session.conns if n != session.name)}

    def peers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        session = self._session
        out = []
        for name, entry in sorted(self.directory.items()):
            if name == self.self_name:
                continue
            ap = self.table.get(name)
            if ap is None and name in self._payees:  # a client in range (a payee)
                ap = self._payees[name][0]
            out.append({
                "name": name,
                "role": entry.role,
                "key": entry.key.hex(),
                "endpoint": None,
                "in_range": ap is not None,
                "address": ap.address if ap else None,
                "level": ap.level if ap else None,
                "seen_ago": round(now - ap.discovered_at, 3) if ap else None,
                "connected": bool(session and name in session.conns
                                  and session.conns[name].is_open),
                "via": ap.record.group if ap and ap.host else None,
                "last_error": self._last_error.get(name),
            })
        if self._authority is not None:
            for address in sorted(self._authority.members):
                out.append({"name": address, "role": "member", "key": None, "endpoint": None,
                            "in_range": True, "address": address, "level": None,
                            "connected": True, "last_error": None})
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "port": self.port,
            "group": self.group_state(),
            "in_range": [r["name"] for r in self.in_range()],
            "inbound_connections": len(self._tracker.active),
            "accepted": self._tracker.accepted,
            **self._counts,
        }
