"""The radio verbs of WiFi Direct: an authority keeps a P2P group up; clients find, join, leave.

(Three files, three jobs: :mod:`fastpayd.wifidirect.manager` mirrors one wpa_supplicant
interface over D-Bus; this module says what a FastPay node does with the radio, in
those terms; :mod:`fastpayd.link.wifidirect` is the daemon's :class:`~fastpayd.link.Link`
built on top.)

Authority side (:class:`WifiDirectAuthority`):
  advertise the FastPay record (two Bonjour services, see :mod:`.service`) → start an
  autonomous group as GO (``GroupAdd``) → authorize every client that asks to join:
  each provision-discovery request from a peer re-arms the committee's WPS PIN on the
  group interface (``WPS.Start`` type pin). PIN rather than push-button because
  push-button has *session overlap* detection: two clients pushing at once fail.
  Members joining/leaving are reported from the group's ``PeerJoined``/
  ``PeerDisconnected`` signals. If the group ends while we did not ask, it is restarted.

Client side (:class:`WifiDirectClient`):
  :meth:`~WifiDirectClient.discover` runs P2P ``Find``; every device found gets a
  Bonjour service-discovery query; devices whose answer holds a FastPay authority record
  of our committee are returned, strongest signal first; everything else is ignored.
  :meth:`~WifiDirectClient.membership` joins that authority's running group
  (``Connect`` with ``join`` and the committee PIN; retried on WPS/formation failure)
  and leaves it on exit, reporting when the group ends under us (the peer went out of
  range); :meth:`~WifiDirectClient.open_tcp` connects to the GO's IPv6 link-local
  address on the group interface with the caller's protocol factory.

Addressing: IPv6 link-local, so nobody has to assign addresses (no CAP_NET_ADMIN, no IP
tables). The GO's address is derived from its interface address (the group's BSSID) by
EUI-64, which is the kernel default (``addr_gen_mode`` 0); connection attempts are
retried until the deadline, which covers duplicate-address detection on a fresh group
interface.

Events: ``on_event(name, **fields)`` is called with ``t=time.monotonic()`` in the
fields; names are listed in :data:`EVENTS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from fastpayd.wifidirect import defs, service
from fastpayd.wifidirect.errors import (
    FormationFailed,
    NotListening,
    PeerGone,
    WifiDirectError,
    WpaError,
)
from fastpayd.wifidirect.group import choose, probe
from fastpayd.wifidirect.manager import Group, Peer, Signal, WpaManager
from fastpayd.wifidirect.service import FastPayRecord

log = logging.getLogger(__name__)

EventCallback = Callable[..., None]
T = TypeVar("T")

EVENTS = (
    "peer_found",  # address, device_name, level: a P2P device answered our Find
    "peer_lost",  # address
    "authority_discovered",  # address, authority, committee, port, level, sd_seconds
    "sd_retry",  # address, attempt: a service discovery request went unanswered; asked again
    "peer_ignored",  # address, reason: not a FastPay authority of our committee
    "find_round",  # round, found, since_start: a long discover() window started Find afresh
    "group_started",  # role, ifname, frequency, elapsed (authority: GO up)
    "group_finished",  # role, ifname, reason
    "group_joined",  # address, ifname, go_address, elapsed, attempts (client)
    "formation_failed",  # address, reason, attempt
    "session_opened",  # address, host, elapsed (TCP connected)
    "group_left",  # address, reason, duration (client left)
    "client_joined",  # address (authority: a client joined the group)
    "client_left",  # address
    "reinvoke_failed",  # address, reason, elapsed (client: fell back to a WPS join)
    "group_merge",  # into, members (authority: leaving its empty group for a better one)
    "group_choice",  # action (go/join/wait), target, heard, waited (authority, sharing)
    "go_silent",  # go, probes, hold (member authority: its GO stopped answering; left)
    "record_updated",  # group, members (authority: its advertised record changed)
    "client_discovered",  # address, client, level: a FastPay client of our committee
    "handoff_group_joined",  # address, ifname, elapsed (payer: in a group with the payee)
    "handoff_group_left",  # address, reason, duration
)

DEFAULT_FREQUENCY = 2437  # channel 6: a social channel, so clients doing a social find see it


def _noop(name: str, **fields: Any) -> None:
    return None


def link_local_from_mac(mac: str) -> str:
    """The EUI-64 IPv6 link-local address of an interface with MAC ``mac``."""
    b = bytearray(defs.mac_bytes(mac))
    b[0] ^= 0x02
    eui = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


@dataclass(frozen=True)
class AuthorityPeer:
    """An authority in range, learned from its FastPay service record."""

    address: str  # P2P device address
    path: str  # wpa_supplicant peer object
    record: FastPayRecord
    level: int | None  # dBm, last frame heard
    discovered_at: float  # monotonic
    # Group sharing: reached at this link-local address inside the group of the GO at
    # ``address``/``path`` (whose level this is); None: it is that GO itself.
    host: str | None = None


@dataclass
class Membership:
    """This client's stay in an authority's group (see :meth:`WifiDirectClient.membership`)."""

    peer: AuthorityPeer
    group: Group
    deadline: float  # monotonic: joining and connecting must be done by then
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    on_gone: list[Callable[[], object]] = field(default_factory=list)
    reason: str = "done"

    def set_gone(self) -> None:
        if self.gone.is_set():
            return
        self.gone.set()
        for callback in self.on_gone:
            try:
                callback()
            except Exception:  # one bad callback must not stop the others
                log.exception("on_gone callback failed")


class _Emitter:
    def __init__(self, on_event: EventCallback | None) -> None:
        self._on_event = on_event or _noop

    def emit(self, event: str, /, **fields: Any) -> None:
        fields.setdefault("t", time.monotonic())
        try:
            self._on_event(event, **fields)
        except Exception:  # the link must not die of a bad event sink
            log.exception("event callback failed for %s", event)


class WifiDirectAuthority(_Emitter):
    """An authority's side of the link: advertise, keep a group up as GO, admit clients.

    Use as ``async with WifiDirectAuthority(record) as auth: ...`` and serve TCP on
    ``[::]:record.port`` (the daemon's link does, with its framed protocol).
    """

    def __init__(self, record: FastPayRecord, ifname: str = "wlan0",
                 bus_address: str | None = None, frequency: int = DEFAULT_FREQUENCY,
                 on_event: EventCallback | None = None, start_timeout: float = 60.0,
                 sharing: bool = False, choose_window: float = 6.0, max_waits: int = 2,
                 known: Callable[[FastPayRecord], bool] | None = None,
                 probe_every: float = 10.0, persistent: bool = True,
                 merge_every: float = 15.0, go_probe: float = 2.0, go_misses: int = 5,
                 silent_hold: float = 300.0) -> None:
        super().__init__(on_event)
        # Sharing, as a member: the GO's presence is probed every ``go_probe`` s inside its
        # group; silent ``go_misses`` times in a row, its group is left and it is passed
        # over (choice, merges) for ``silent_hold`` s.  wpa_supplicant keeps a group up
        # when the daemon that made it dies, so without this a room would stay in its
        # dead GO's group for good.  Slower to decide than a client (about 10 s): a busy GO
        # under emulation can miss a few probes, and a member leaving splits the room.
        self.go_probe = go_probe
        self.go_misses = go_misses
        self.silent_hold = silent_hold
        self._silent: dict[str, float] = {}  # GO name → when it was found silent (monotonic)
        self.persistent = persistent
        self.merge_every = merge_every
        self.record = replace(record, group="") if sharing else record
        self.sharing = sharing
        self.choose_window = choose_window
        self.max_waits = max_waits
        self.known = known or (lambda r: True)
        self.probe_every = probe_every
        self.member_of: Membership | None = None  # sharing: the GO's group we are in
        self.shared: dict[str, str] = {}  # GO: authority name → link-local host, in our group
        self.frequency = frequency
        self.start_timeout = start_timeout
        self.manager = WpaManager(ifname, bus_address)
        self.pin = service.wps_pin_for(record.committee)
        self.group: Group | None = None
        self.members: set[str] = set()
        self._token: int | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._prober: asyncio.Future[None] | None = None
        self._leaving = False  # ending our own group on purpose (merging into another)

    async def __aenter__(self) -> WifiDirectAuthority:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Advertise the record and start the group; return once the GO is up."""
        await self.manager.start()
        try:
            await self.manager.leave_stale_groups()
            self._token = self.manager.subscribe(self._on_signal)
            await self._advertise(self.record, first=True)
            if self.sharing:
                await self._choose_and_take()
            else:
                await self._start_group()
        except BaseException:
            await self.stop()
            raise

    async def _advertise(self, record: FastPayRecord, first: bool = False) -> None:
        """(Re-)register our Bonjour services with ``record``'s fields."""
        old, self.record = self.record, record
        for query, response in record.bonjour_services():
            with contextlib.suppress(WpaError):  # the old version, or left from a past run
                await self.manager.delete_bonjour_service(query)
            await self.manager.add_bonjour_service(query, response)
        if not first and old.txt() != record.txt():
            self.emit("record_updated", group=record.group,
                      members=[n for n, _ in record.members])

    # -- group sharing (see fastpayd.wifidirect.group) ----------------------------------
    def _usable(self, record: FastPayRecord, now: float) -> bool:
        """A record worth choosing, joining or merging into at monotonic ``now``: of our
        committee (``known``) and not a GO found silent in its own group within
        ``silent_hold`` seconds."""
        since = self._silent.get(record.name)
        if since is not None and now - since >= self.silent_hold:
            del self._silent[record.name]
            since = None
        return since is None and self.known(record)

    async def _choose_and_take(self) -> None:
        """Listen, then become GO or join the chosen GO's group (and say so)."""
        finder = WifiDirectClient(self.record.committee, manager=self.manager,
                                  on_event=self._on_event)
        waited = 0
        # What each authority said last, over all windows: one busy starting its group
        # may miss a window's query, and must not look absent (we would split the room).
        heard: dict[str, AuthorityPeer] = {}
        while not self._stopping:
            found = await finder.discover(timeout=self.choose_window)
            t = time.monotonic()
            now = {p.record.name: p for p in found
                   if p.record.name != self.record.name and self._usable(p.record, t)}
            heard.update(now)
            choice = choose(self.record.name, {n: p.record.group for n, p in heard.items()},
                            waited, self.max_waits)
            self.emit("group_choice", action=choice.action, target=choice.target,
                      heard=sorted(now), remembered=sorted(set(heard) - set(now)),
                      waited=waited)
            if choice.action == "go":
                await self._start_group()
                await self._advertise(replace(self.record, group=self.record.name))
                return
            if choice.action == "join" and choice.target is not None:
                if await self._join_shared(finder, heard[choice.target]):
                    return
                del heard[choice.target]  # it must be heard again to be tried again
            waited += 1

    async def _join_shared(self, finder: WifiDirectClient, go: AuthorityPeer) -> bool:
        """Join ``go``'s group as a member; False if that failed (choose again)."""
        joined: asyncio.Future[Membership] = asyncio.get_running_loop().create_future()

        async def stay() -> None:
            try:
                async with finder.membership(go, timeout=self.start_timeout,
                                             watch_lost=False) as member:
                    self.member_of = member
                    joined.set_result(member)
                    watch = asyncio.ensure_future(self._watch_go(member))
                    try:
                        await member.gone.wait()
                    finally:
                        watch.cancel()
                        await asyncio.gather(watch, return_exceptions=True)
            except (WifiDirectError, TimeoutError, OSError) as exc:
                if not joined.done():
                    joined.set_exception(exc)
                    return
            finally:
                self.member_of = None
            if not self._stopping:  # the GO went away: choose again
                with contextlib.suppress(WifiDirectError, TimeoutError):
                    await self._advertise(replace(self.record, group="", members=()))
                    await self._choose_and_take()

        self._spawn(stay())
        try:
            await joined
        except (WifiDirectError, TimeoutError, OSError) as exc:
            log.warning("joining %s's group: %s", go.record.name, exc)
            return False
        await self._advertise(replace(self.record, group=go.record.name, members=()))
        return True

    async def _watch_go(self, member: Membership) -> None:
        """Member of a shared group: probe the GO's presence in it; silent ``go_misses``
        probes in a row (its daemon died or hangs while wpa_supplicant keeps the group
        up, or it is out of range), end the membership and pass the GO over a while."""
        go, silent = member.peer.record.name, 0
        while self.go_probe > 0 and not member.gone.is_set():
            try:
                answers = await probe(member.group.ifname, self.record.port,
                                      self.record.committee, wait=self.go_probe, repeats=2)
            except OSError as exc:
                log.warning("presence probe of %s's group: %s", go, exc)
                return
            silent = 0 if go in answers else silent + 1
            if silent >= self.go_misses:
                self._silent[go] = time.monotonic()
                self.emit("go_silent", go=go, probes=silent, hold=self.silent_hold)
                member.reason = "GO silent"
                member.set_gone()
                return

    async def _refresh_members(self) -> None:
        """GO with sharing: list in our record the authorities that answer in our group."""
        group = self.group
        if group is None or not self.sharing:
            return
        try:
            answers = await probe(group.ifname, self.record.port, self.record.committee)
        except OSError as exc:
            log.warning("presence probe on %s: %s", group.ifname, exc)
            return
        shared = {n: p.host for n, p in sorted(answers.items())
                  if n != self.record.name and p.committee == self.record.committee}
        if shared != self.shared and self.group is group:
            self.shared = shared
            with contextlib.suppress(WifiDirectError):
                await self._advertise(replace(self.record, members=tuple(shared.items())))

    async def _merge_forever(self) -> None:
        """GO with sharing and no clients in its group: look (one window) for a better group
        in range -- more members, or as many and a lower name -- and move into it (our
        members, their group gone, choose again and follow).  Heals a room that split
        because its authorities started apart or missed each other's answers (a loaded
        machine); a GO with a paying client in its group is never disturbed."""
        while not self._stopping:
            await asyncio.sleep(self.merge_every)  # a periodic check, not a wait for an event
            if self.group is None or self._has_clients() or self.member_of is not None:
                continue
            finder = WifiDirectClient(self.record.committee, manager=self.manager,
                                      on_event=self._on_event)
            try:
                found = await finder.discover(timeout=self.choose_window)
            except (WifiDirectError, TimeoutError) as exc:
                log.warning("merge check: %s", exc)
                continue
            mine = (len(self.record.members), self.record.name)
            better = sorted((p for p in found if p.record.name != self.record.name
                             and self._usable(p.record, time.monotonic()) and p.record.is_go
                             and (-len(p.record.members), p.record.name)
                             < (-mine[0], mine[1])),
                            key=lambda p: (-len(p.record.members), p.record.name))
            if not better or self._has_clients() or self.group is None:
                continue
            target = better[0]
            self.emit("group_merge", into=target.record.name,
                      members=[n for n, _ in target.record.members])
            await self._end_own_group()
            if not await self._join_shared(finder, target):
                await self._start_group()  # could not move: keep serving as before
                await self._advertise(replace(self.record, group=self.record.name))

    def _has_clients(self) -> bool:
        """Peers in our group that are not authorities of the room (paying clients)."""
        return len(self.members) > len(self.shared)

    async def _end_own_group(self) -> None:
        group, self._leaving = self.group, True
        try:
            if group is not None:
                with self.manager.expect({defs.SIG_GROUP_FINISHED}) as exp:
                    with contextlib.suppress(WpaError, TimeoutError):
                        await self.manager.disconnect(group.iface_path)
                        await exp.wait(10.0)
        finally:
            self._leaving = False
        self.group = None
        self.shared = {}

    async def _probe_forever(self) -> None:
        while not self._stopping:
            await self._refresh_members()
            await asyncio.sleep(self.probe_every)  # periodic: members also leave silently

    async def _start_group(self) -> None:
        t0 = time.monotonic()
        args: dict[str, Any] = {"persistent": False}
        if self.persistent:
            # Pre-established: the same credentials every time (across our restarts
            # too, while wpa_supplicant runs), so a returning client re-invokes the
            # group it stored instead of a WPS provisioning.
            stored = await self._stored_go_group()
            args = {"persistent_group_object": stored} if stored else {"persistent": True}
        with self.manager.expect({defs.SIG_GROUP_STARTED},
                                 lambda s: s.args[0].get("role") == "GO") as exp:
            await self.manager.group_add(frequency=self.frequency, **args)
            sig = await exp.wait(self.start_timeout)
        self.group = self.manager.groups[sig.args[0]["group_object"]]
        await self._authorize()
        self.emit("group_started", role="GO", ifname=self.group.ifname,
                  frequency=self.group.frequency, elapsed=sig.at - t0)
        if self.sharing and self._prober is None:
            self._prober = asyncio.ensure_future(self._probe_forever())
            self._tasks.add(self._prober)
            self._tasks.add(asyncio.ensure_future(self._merge_forever()))

    async def _stored_go_group(self) -> str | None:
        """A persistent GO group wpa_supplicant stored for us earlier, if any."""
        try:
            stored = await self.manager.persistent_groups()
        except WpaError as exc:
            log.warning("reading persistent groups: %s", exc)
            return None
        gos = sorted(p for p, props in stored.items() if str(props.get("mode")) == "3")
        return gos[0] if gos else None

    async def _authorize(self) -> None:
        """(Re-)arm the committee PIN on the GO so the next enrollee can use it."""
        if self.group is None:
            return
        try:
            await self.manager.wps_start(self.group.iface_path, Role="enrollee", Type="pin",
                                         Pin=self.pin)
        except WpaError as exc:
            log.warning("could not arm WPS PIN: %s", exc)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _peer_address(self, path: str) -> str:
        peer = self.manager.peers.get(path)
        return peer.address if peer and peer.address else path.rsplit("/", 1)[-1]

    def _on_signal(self, sig: Signal) -> None:
        group = self.group
        if sig.name in defs.PD_REQUEST_SIGNALS:
            # A client is about to join: make sure an unused PIN is armed for it.
            self._spawn(self._authorize())
        elif group is not None and sig.path == group.path and sig.name == defs.SIG_PEER_JOINED:
            address = self._peer_address(sig.args[0])
            self.members.add(address)
            self.emit("client_joined", address=address)
            self._spawn(self._authorize())
            if self.sharing:
                self._spawn(self._refresh_members())
        elif (group is not None and sig.path == group.path
              and sig.name == defs.SIG_PEER_DISCONNECTED):
            address = self._peer_address(sig.args[0])
            self.members.discard(address)
            self.emit("client_left", address=address)
            if self.sharing:
                self._spawn(self._refresh_members())
        elif (sig.name == defs.SIG_GROUP_FINISHED and group is not None
              and sig.args[0].get("group_object") == group.path):
            self.group = None
            self.members.clear()
            self.emit("group_finished", role="GO", ifname=group.ifname,
                      reason="stopped" if self._stopping else
                      "merging" if self._leaving else "lost")
            if not (self._stopping or self._leaving):
                self._spawn(self._restart())

    async def _restart(self) -> None:
        try:
            await self._start_group()
        except (WifiDirectError, TimeoutError) as exc:
            log.error("could not restart the group: %s", exc)

    @property
    def group_ifname(self) -> str:
        """The network interface the group runs on (where clients reach us)."""
        if self.group is not None:
            return self.group.ifname
        return self.member_of.group.ifname if self.member_of is not None else ""

    async def stop(self) -> None:
        """End the group and withdraw the record; safe to call twice."""
        self._stopping = True
        try:
            for task in list(self._tasks):
                task.cancel()
            group = self.group
            if group is not None and self.manager.iface_path:
                with self.manager.expect({defs.SIG_GROUP_FINISHED}) as exp:
                    with contextlib.suppress(WpaError):
                        await self.manager.disconnect(group.iface_path)
                        await exp.wait(10.0)
            if self.manager.iface_path:
                for query, _ in self.record.bonjour_services():
                    with contextlib.suppress(WpaError):
                        await self.manager.delete_bonjour_service(query)
        except (TimeoutError, WifiDirectError) as exc:
            log.warning("authority stop: %s", exc)
        finally:
            if self._token is not None:
                self.manager.unsubscribe(self._token)
                self._token = None
            await self.manager.stop()


class WifiDirectClient(_Emitter):
    """A client's side of the link: find authorities of one committee, talk to one at a time.

    ``async with WifiDirectClient("committee-1") as c:
    peers = await c.discover(20); async with c.membership(peers[0]) as m: ...`` (then
    :meth:`open_tcp` on ``m.group``).
    """

    def __init__(self, committee: str, ifname: str = "wlan0", bus_address: str | None = None,
                 on_event: EventCallback | None = None,
                 manager: WpaManager | None = None) -> None:
        super().__init__(on_event)
        self.committee = committee
        self.pin = service.wps_pin_for(committee)
        # An authority choosing a shared group lends its own (started) manager.
        self.manager = manager or WpaManager(ifname, bus_address)
        # Groups joined before (GO device address → (persistent group object, MHz)):
        # rejoined by re-invocation, without WPS provisioning (``reinvoke``).
        self.stored: dict[str, tuple[str, int | None]] = {}
        self.reinvoke = True
        self.reinvoke_timeout = 12.0
        # Service discovery requests per device and round before it counts as silent.
        self.sd_attempts = 3
        # Seconds per P2P Find round inside one discover() window (see discover).
        self.find_round = 20.0
        self.authorities: dict[str, AuthorityPeer] = {}  # by device address
        # Clients of our committee heard advertising (payees for a direct hand-off).
        self.clients: dict[str, AuthorityPeer] = {}  # by device address
        self.handoff_timeout = 20.0
        self._advertised: FastPayRecord | None = None
        self._token: int | None = None

    async def __aenter__(self) -> WifiDirectClient:
        await self.manager.start()
        try:
            await self.manager.leave_stale_groups()
            with contextlib.suppress(WpaError):
                await self.manager.cancel()  # a join left half done by a killed process
        except BaseException:
            await self.manager.stop()
            raise
        self._token = self.manager.subscribe(self._on_signal)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            with contextlib.suppress(WifiDirectError):
                await self.manager.stop_find()
        finally:
            if self._token is not None:
                self.manager.unsubscribe(self._token)
            await self.manager.stop()

    def _on_signal(self, sig: Signal) -> None:
        if sig.name == defs.SIG_DEVICE_LOST:
            address = sig.args[0].rsplit("/", 1)[-1]
            lost = [a for a, p in self.authorities.items() if p.path == sig.args[0]]
            for addr in lost:
                del self.authorities[addr]
            for addr in [a for a, p in self.clients.items() if p.path == sig.args[0]]:
                del self.clients[addr]
                lost = lost or [addr]
            self.emit("peer_lost", address=lost[0] if lost else address)

    # -- discovery -------------------------------------------------------------------
    async def discover(self, timeout: float = 30.0, want: int | None = None,
                       query_timeout: float = 10.0) -> list[AuthorityPeer]:
        """Find authorities of our committee in range; strongest signal first.

        Runs P2P Find for up to ``timeout`` seconds (less if ``want`` authorities were
        found) and asks every device found for its Bonjour services. Devices without a
        FastPay authority record of our committee are ignored (``peer_ignored``).

        A window longer than :attr:`find_round` runs as several Find rounds: a round that
        ends short of ``want`` starts Find afresh (wpa_supplicant then reports every device
        in range again) and asks again the devices that never answered, so one missed
        probe or lost service answer costs a round, not the whole window (``find_round``).
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        found: dict[str, AuthorityPeer] = {}
        enough = asyncio.Event()
        queries: dict[str, asyncio.Task[None]] = {}
        silent: set[str] = set()  # peer paths that never answered this round

        async def query(peer: Peer) -> None:
            tq = time.monotonic()
            pred: Callable[[Signal], bool] = lambda s: s.args[0].get("peer_object") == peer.path  # noqa: E731
            sig: Signal | None = None
            # A lost request or answer (a busy channel, the peer off in its own search) must
            # not hide an authority for the whole round: ask again, up to sd_attempts times.
            for attempt in range(1, self.sd_attempts + 1):
                wait = min(query_timeout, deadline - time.monotonic())
                if wait < 0.1:
                    break
                with self.manager.expect({defs.SIG_SD_RESPONSE}, pred) as exp:
                    ref = await self.manager.service_discovery_request(
                        service.bonjour_all_query(), peer.path)
                    try:
                        sig = await exp.wait(wait)
                        break
                    except TimeoutError:
                        with contextlib.suppress(WpaError):
                            await self.manager.service_discovery_cancel(ref)
                if attempt < self.sd_attempts:
                    self.emit("sd_retry", address=peer.address, attempt=attempt,
                              since_start=time.monotonic() - t0)
            if sig is None:
                silent.add(peer.path)
                self.emit("peer_ignored", address=peer.address, reason="no service answer")
                return
            every = service.records_from_tlvs(bytes(sig.args[0].get("tlvs", b"")))
            records = [r for r in every if r.role == "authority"]
            mine = [r for r in records if r.committee == self.committee]
            clients = [r for r in every if r.role == "client" and r.committee == self.committee]
            if clients and not mine:
                with contextlib.suppress(WpaError):
                    peer = await self.manager.refresh_peer(peer.path)
                cp = AuthorityPeer(peer.address, peer.path, clients[0], peer.level, sig.at)
                self.clients[cp.address] = cp
                self.emit("client_discovered", address=cp.address, client=cp.record.name,
                          level=cp.level, since_start=sig.at - t0)
                return
            if not mine:
                reason = "other committee" if every else "not a FastPay authority"
                self.emit("peer_ignored", address=peer.address, reason=reason)
                return
            with contextlib.suppress(WpaError):
                peer = await self.manager.refresh_peer(peer.path)
            ap = AuthorityPeer(peer.address, peer.path, mine[0], peer.level, sig.at)
            found[ap.address] = ap
            self.authorities[ap.address] = ap
            self.emit("authority_discovered", address=ap.address, authority=ap.record.name,
                      committee=ap.record.committee, port=ap.record.port, level=ap.level,
                      sd_seconds=sig.at - tq, since_start=sig.at - t0)
            if want is not None and len(found) >= want:
                enough.set()

        def start_query(peer: Peer) -> None:
            if peer.path in queries or not peer.address:
                return
            queries[peer.path] = asyncio.ensure_future(query(peer))

        def on_found(sig: Signal) -> None:
            if sig.name != defs.SIG_DEVICE_FOUND:
                return
            peer = self.manager.peers.get(sig.args[0])
            if peer is None:
                return
            self.emit("peer_found", address=peer.address, device_name=peer.name, level=peer.level,
                      since_start=sig.at - t0)
            start_query(peer)

        token = self.manager.subscribe(on_found)
        try:
            rounds = 0
            while True:
                rounds += 1
                await self.manager.find("social")
                for peer in list(self.manager.peers.values()):
                    if peer.found:  # found earlier in this manager's life: ask again
                        start_query(peer)
                round_end = min(deadline, time.monotonic() + self.find_round)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(enough.wait(), max(0.0, round_end - time.monotonic()))
                if enough.is_set() or deadline - time.monotonic() < 1.0:
                    break
                # Short of ``want`` with time left: a fresh Find; the silent are asked again.
                for path in [p for p in silent if queries[p].done()]:
                    silent.discard(path)
                    del queries[path]
                self.emit("find_round", round=rounds + 1, found=len(found),
                          since_start=time.monotonic() - t0)
                with contextlib.suppress(WifiDirectError):
                    await self.manager.stop_find()
        finally:
            self.manager.unsubscribe(token)
            for task in queries.values():
                task.cancel()
            await asyncio.gather(*queries.values(), return_exceptions=True)
            with contextlib.suppress(WifiDirectError):
                await self.manager.stop_find()
        return sorted(found.values(), key=lambda p: -(p.level if p.level is not None else -999))

    # -- a client's own record and direct hand-offs ----------------------------------
    async def advertise(self, record: FastPayRecord) -> None:
        """Answer service discovery with ``record`` (a client: role, name, account key,
        committee, port; nothing secret), so payers in range find us."""
        for query, response in record.bonjour_services():
            await self.manager.add_bonjour_service(query, response)
        self._advertised = record

    async def withdraw(self) -> None:
        record, self._advertised = self._advertised, None
        if record is None:
            return
        for query, _ in record.bonjour_services():
            with contextlib.suppress(WpaError):
                await self.manager.delete_bonjour_service(query)

    async def _negotiate(self, peer: AuthorityPeer, deadline: float) -> Group:
        """Form a group with the client ``peer`` by GO negotiation, it as GO (intent 0
        here), the committee PIN typed in on our side: the payer's half of a hand-off."""
        wait = max(0.1, min(self.handoff_timeout, deadline - time.monotonic()))
        return await self._go_negotiation(peer.path, "keypad", 0, wait)

    async def host_handoff(self, peer_path: str, timeout: float) -> Group:
        """Answer a payer's GO negotiation (``GONegotiationRequest`` from ``peer_path``)
        as GO, showing the committee PIN: the payee's half.  Returns the group."""
        return await self._go_negotiation(peer_path, "display", 15, timeout)

    async def _go_negotiation(self, peer_path: str, wps_method: str, go_intent: int,
                              timeout: float) -> Group:
        """``Connect`` to ``peer_path`` by GO negotiation (not a join) with the committee
        PIN; the started group, or FormationFailed (the half-done attempt cancelled)."""
        names = {defs.SIG_GROUP_STARTED, defs.SIG_GROUP_FORMATION_FAILURE, defs.SIG_WPS_FAILED,
                 defs.SIG_GO_NEGOTIATION_FAILURE}
        last = "timeout"
        with self.manager.expect(names) as exp:
            try:
                await self.manager.connect(peer=peer_path, wps_method=wps_method, pin=self.pin,
                                           go_intent=go_intent, persistent=False)
                sig = await exp.wait(timeout)
            except TimeoutError:
                sig = None
            except WpaError as exc:
                sig, last = None, str(exc)
        if sig is not None and sig.name == defs.SIG_GROUP_STARTED:
            group = self.manager.groups.get(sig.args[0].get("group_object", ""))
            if group is not None:
                return group
        if sig is not None:
            last = f"{sig.name} {sig.args!r}"
        with contextlib.suppress(WpaError):
            await self.manager.cancel()
        raise FormationFailed(f"no group with {self._peer_address(peer_path)}: {last}")

    def _peer_address(self, path: str) -> str:
        peer = self.manager.peers.get(path)
        return peer.address if peer and peer.address else path.rsplit("/", 1)[-1]

    async def leave(self, group: Group) -> None:
        """End or leave ``group`` (a hand-off's)."""
        await self._leave(group)

    # -- sessions --------------------------------------------------------------------
    async def _reinvoked(self, peer: AuthorityPeer, deadline: float) -> Group | None:
        """Rejoin a group we stored before by re-invoking it (association with the stored
        credentials, no provisioning); None if we have none for ``peer`` or it failed."""
        stored = self.stored.get(peer.address) if self.reinvoke else None
        if stored is None:
            return None
        path, freq = stored
        t0 = time.monotonic()
        wait = max(0.1, min(self.reinvoke_timeout, deadline - t0))
        names = {defs.SIG_GROUP_STARTED, defs.SIG_GROUP_FORMATION_FAILURE,
                 defs.SIG_GROUP_FINISHED}
        sig = None
        reason = "timeout"
        with self.manager.expect(names) as exp:
            try:
                args: dict[str, Any] = {"persistent_group_object": path}
                if freq:
                    args["frequency"] = freq  # scan one channel, not all
                await self.manager.group_add(**args)
                sig = await exp.wait(wait)
            except TimeoutError:
                pass
            except WpaError as exc:
                reason = str(exc)
        if sig is not None and sig.name == defs.SIG_GROUP_STARTED:
            group = self.manager.groups.get(sig.args[0].get("group_object", ""))
            if group is not None:
                return group
        if sig is not None:
            reason = f"{sig.name} {sig.args!r}"
        # Whatever half-started must go before a WPS join; the stored group is stale
        # (the GO restarted with other credentials, or is out of range).
        self.stored.pop(peer.address, None)
        await self.manager.leave_stale_groups(timeout=5.0)
        with contextlib.suppress(WpaError):
            await self.manager.cancel()
        self.emit("reinvoke_failed", address=peer.address, reason=reason,
                  elapsed=time.monotonic() - t0)
        return None

    def _on_stored(self, peer: AuthorityPeer, sig: Signal) -> None:
        """A persistent group was stored during our join to ``peer``: remember it."""
        if sig.name == defs.SIG_PERSISTENT_GROUP_ADDED and sig.args:
            self.stored[peer.address] = (str(sig.args[0]), None)

    async def _join(self, peer: AuthorityPeer, deadline: float, attempts: int) -> Group:
        group = await self._reinvoked(peer, deadline)
        if group is not None:
            group.props["reinvoked"] = True
            return group
        names = {defs.SIG_GROUP_STARTED, defs.SIG_GROUP_FORMATION_FAILURE, defs.SIG_WPS_FAILED,
                 defs.SIG_GO_NEGOTIATION_FAILURE, defs.SIG_PD_FAILURE}
        last = "timeout"
        for attempt in range(1, attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            token = self.manager.subscribe(lambda sig: self._on_stored(peer, sig))
            try:
                with self.manager.expect(names) as exp:
                    try:
                        await self.manager.connect(peer=peer.path, join=True,
                                                   wps_method="display", pin=self.pin,
                                                   persistent=self.reinvoke)
                        sig = await exp.wait(remaining)
                    except TimeoutError:
                        sig = None
                    except WpaError as exc:
                        sig, last = None, str(exc)
            finally:
                self.manager.unsubscribe(token)
            if sig is not None and sig.name == defs.SIG_GROUP_STARTED:
                group = self.manager.groups[sig.args[0]["group_object"]]
                if peer.address in self.stored:
                    path, _ = self.stored[peer.address]
                    self.stored[peer.address] = (path, group.frequency)
                return group
            if sig is not None:
                last = f"{sig.name} {sig.args!r}"
            self.emit("formation_failed", address=peer.address, reason=last, attempt=attempt)
            with contextlib.suppress(WpaError):
                await self.manager.cancel()
            # Peer must be seen in Find/Listen again before the next Connect.
            with contextlib.suppress(WpaError):
                await self.manager.find("social")
                with self.manager.expect({defs.SIG_DEVICE_FOUND},
                                         lambda s: s.args[0] == peer.path) as seen:
                    await seen.wait(max(0.1, min(10.0, deadline - time.monotonic())))
        raise FormationFailed(f"could not join {peer.address}: {last}")

    async def open_tcp(self, group: Group, port: int, deadline: float,
                       opener: Callable[[str, int], Awaitable[T]],
                       member: str | None = None, refused_for: float | None = None
                       ) -> tuple[T, str]:
        """Connect to the GO of ``group`` (or to the ``member`` at that link-local address
        in it) on ``port``; retry until ``deadline``.

        ``opener(host, port)`` makes the connection (the daemon's builds its framed
        protocol). Returns ``(whatever opener returned, host)``.  Refused without a break
        for ``refused_for`` seconds, if given (longer than a daemon takes from its group
        to its socket): :class:`NotListening`, before the deadline.
        """
        open_fn = opener
        delay = 0.05
        last: Exception | None = None
        host = ""
        refused_since: float | None = None
        while time.monotonic() < deadline:
            if not member and not group.bssid:
                # A re-invoked group may report its BSSID only once associated.
                await self.manager.refresh_group_bssid(group)
                if not group.bssid:
                    await asyncio.sleep(delay)  # back off until the property is set
                    delay = min(delay * 2, 1.0)
                    continue
            host = f"{member or link_local_from_mac(group.bssid)}%{group.ifname}"
            try:
                conn = await asyncio.wait_for(open_fn(host, port),
                                              min(5.0, deadline - time.monotonic()))
                return conn, host
            except (OSError, TimeoutError) as exc:
                # EADDRNOTAVAIL: our link-local address is still tentative (DAD);
                # ECONNREFUSED/EHOSTUNREACH: the GO side is not ready yet.
                if isinstance(exc, OSError) and exc.errno not in (
                        errno.EADDRNOTAVAIL, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                        errno.ENETUNREACH, errno.ETIMEDOUT, None):
                    raise
                last = exc
                if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
                    now = time.monotonic()
                    refused_since = now if refused_since is None else refused_since
                    if refused_for is not None and now - refused_since >= refused_for:
                        raise NotListening(f"{host} port {port} refused every connection "
                                           f"for {now - refused_since:.0f} s") from None
                else:
                    refused_since = None
                await asyncio.sleep(delay)  # back off between connection attempts
                delay = min(delay * 2, 1.0)
        raise PeerGone(f"no TCP connection to {host} port {port}: {last!r}")

    @contextlib.asynccontextmanager
    async def membership(self, peer: AuthorityPeer, timeout: float = 90.0, attempts: int = 3,
                         watch_lost: bool = True) -> AsyncIterator[Membership]:
        """Join ``peer``'s group, yield a :class:`Membership`, leave the group on exit.

        ``Membership.gone`` is set (and its ``on_gone`` callbacks run) when the group ends
        or the peer is lost while we are in it; the body should stop talking then.
        ``watch_lost=False``: only the group's end counts (a long stay: wpa_supplicant's
        peer entry of the GO can expire while we are its client and the group is fine).
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        if peer.record.role == "client":  # a hand-off: a group of our own with the payee
            group = await self._negotiate(peer, deadline)
        else:
            group = await self._join(peer, deadline, attempts)
        handoff = peer.record.role == "client"
        self.emit("handoff_group_joined" if handoff else "group_joined",
                  address=peer.address, authority=peer.record.name,
                  ifname=group.ifname, go_address=group.bssid, elapsed=group.started_at - t0,
                  reinvoked=bool(group.props.get("reinvoked")))
        member = Membership(peer, group, deadline)

        def watch(sig: Signal) -> None:
            ended = (sig.name == defs.SIG_GROUP_FINISHED
                     and sig.args[0].get("group_object") == group.path)
            lost = watch_lost and sig.name == defs.SIG_DEVICE_LOST and sig.args[0] == peer.path
            if ended or lost:
                member.set_gone()

        token = self.manager.subscribe(watch)
        try:
            yield member
        except BaseException as exc:
            member.reason = "peer gone" if member.gone.is_set() else f"error: {exc!r}"
            raise
        finally:
            self.manager.unsubscribe(token)
            if member.gone.is_set() and member.reason == "done":
                member.reason = "peer gone"
            await self._leave(group)
            self.emit("handoff_group_left" if handoff else "group_left",
                      address=peer.address, authority=peer.record.name,
                      reason=member.reason, duration=time.monotonic() - group.started_at)

    async def _leave(self, group: Group) -> None:
        if group.path not in self.manager.groups:
            return  # already ended (peer gone)
        with self.manager.expect({defs.SIG_GROUP_FINISHED},
                                 lambda s: s.args[0].get("group_object") == group.path) as exp:
            try:
                await self.manager.disconnect(group.iface_path)
                await exp.wait(10.0)
            except (WpaError, TimeoutError) as exc:
                log.warning("leaving group %s: %s", group.path, exc)
