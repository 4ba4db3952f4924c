"""A mirror of one wpa_supplicant interface's P2P state, kept current from D-Bus signals.

How it works (the bleak BlueZ-manager pattern):

1. :meth:`WpaManager.start` connects to the bus named by ``DBUS_SYSTEM_BUS_ADDRESS``
   (or ``bus_address``), installs a low-level message handler and adds a match rule for
   every signal wpa_supplicant sends -- *before* reading any state, so nothing that
   happens while we read is lost. Low-level handling also sidesteps dbus-fast's proxy
   objects, which silently drop signals whose signature differs from introspection.
2. It then reads the initial state: the interface object for ``ifname`` and the peers
   wpa_supplicant already knows.
3. Every signal goes through one queue and one pump task, in arrival order. The pump
   first updates the mirror (``peers``, ``groups``; reading a new peer's or group's
   properties if the signal did not carry them) and only then calls subscribers, so a
   callback always sees a mirror that already includes its signal.
4. Subscribers get a token from :meth:`subscribe`; :meth:`expect` is the one-shot form
   (register first, trigger the action, then await), which is how callers wait for
   ``GroupStarted`` after ``Connect`` without a race.
5. Method calls go through :meth:`_call`, where D-Bus error replies become
   :class:`~fastpayd.wifidirect.errors.WpaError` (in :func:`check_reply`, the one
   place that does it). :meth:`stop` cancels the pump and disconnects in ``finally``.

Normalisation: ``DeviceFound`` and ``DeviceFoundProperties`` (wpa_supplicant sends
both) are delivered once, as a :class:`Signal` named ``DeviceFound`` whose peer is in
the mirror with its properties.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from fastpayd.wifidirect import defs
from fastpayd.wifidirect.errors import InterfaceNotFound, WifiDirectError, WpaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signal:
    """A signal from wpa_supplicant, with plain Python values and its arrival time."""

    name: str
    path: str
    interface: str
    args: tuple[Any, ...]
    at: float


@dataclass
class Peer:
    """A P2P device wpa_supplicant knows about."""

    path: str
    props: dict[str, Any] = field(default_factory=dict)
    found: bool = False  # seen in a DeviceFound signal (not only in a probe request)
    found_at: float | None = None

    @property
    def address(self) -> str:
        raw = self.props.get(defs.PEER_DEVICE_ADDRESS)
        if isinstance(raw, bytes | bytearray) and len(raw) == 6:
            return defs.mac_str(bytes(raw))
        return ""

    @property
    def name(self) -> str:
        return str(self.props.get(defs.PEER_DEVICE_NAME, ""))

    @property
    def level(self) -> int | None:
        value = self.props.get(defs.PEER_LEVEL)
        return int(value) if value is not None else None


@dataclass
class Group:
    """A P2P group this device is in (as GO or client)."""

    path: str
    iface_path: str
    role: str  # "GO" or "client"
    ifname: str = ""
    bssid: str = ""  # the GO's interface address
    frequency: int | None = None
    started_at: float = 0.0
    props: dict[str, Any] = field(default_factory=dict)


def unwrap(value: Any) -> Any:
    """Turn dbus-fast Variants (and containers of them) into plain Python values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def variants(args: dict[str, Any], types: dict[str, str]) -> dict[str, Variant]:
    """Build an ``a{sv}`` argument with the exact variant types wpa_supplicant checks."""
    out: dict[str, Variant] = {}
    for key, value in args.items():
        if value is None:
            continue
        if key not in types:
            raise ValueError(f"unknown argument {key!r}")
        out[key] = Variant(types[key], value)
    return out


def check_reply(method: str, reply: Message | None) -> list[Any]:
    """Return a method reply's body, or raise WpaError for an error reply."""
    if reply is None:
        raise WifiDirectError(f"{method}: no reply")
    if reply.message_type == MessageType.ERROR:
        text = str(reply.body[0]) if reply.body else ""
        raise WpaError(method, reply.error_name or "", text)
    return list(reply.body)


SignalCallback = Callable[[Signal], None]


class Expectation:
    """A one-shot wait for the first signal that matches; register before acting."""

    def __init__(self, manager: WpaManager, names: Iterable[str],
                 predicate: Callable[[Signal], bool] | None) -> None:
        self._manager = manager
        self._names = frozenset(names)
        self._predicate = predicate
        self._future: asyncio.Future[Signal] = asyncio.get_running_loop().create_future()
        self._token = manager.subscribe(self._on_signal)

    def _on_signal(self, sig: Signal) -> None:
        if self._future.done() or sig.name not in self._names:
            return
        if self._predicate is None or self._predicate(sig):
            self._future.set_result(sig)

    async def wait(self, timeout: float) -> Signal:
        """Return the matching signal; raise TimeoutError after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), timeout)
        finally:
            self.close()

    def close(self) -> None:
        self._manager.unsubscribe(self._token)

    def __enter__(self) -> Expectation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WpaManager:
    """The D-Bus mirror of one wpa_supplicant network interface (P2P device side)."""

    def __init__(self, ifname: str = "wlan0", bus_address: str | None = None) -> None:
        self.ifname = ifname
        self.bus_address = bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        self.iface_path = ""
        self.peers: dict[str, Peer] = {}
        self.groups: dict[str, Group] = {}
        self._bus: MessageBus | None = None
        self._queue: asyncio.Queue[Signal] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._subscribers: dict[int, SignalCallback] = {}
        self._next_token = 1

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, subscribe to signals, then read the initial state."""
        if self.bus_address:
            bus = MessageBus(bus_address=self.bus_address)
        else:
            bus = MessageBus(bus_type=BusType.SYSTEM)
        self._bus = await bus.connect()
        try:
            self._bus.add_message_handler(self._on_message)
            await self._call(defs.IFACE_DBUS, "/org/freedesktop/DBus", "AddMatch", "s",
                             [f"type='signal',sender='{defs.SERVICE}'"],
                             destination="org.freedesktop.DBus")
            self._pump = asyncio.create_task(self._run_pump(), name="wpa-signal-pump")
            try:
                (self.iface_path,) = await self._call(
                    defs.IFACE_ROOT, defs.ROOT_PATH, "GetInterface", "s", [self.ifname])
            except WpaError as exc:
                raise InterfaceNotFound(f"wpa_supplicant has no interface {self.ifname}") from exc
            for path in await self.get_property(self.iface_path, defs.IFACE_P2P, "Peers"):
                with contextlib.suppress(WpaError):
                    self.peers.setdefault(path, Peer(path, await self._peer_props(path)))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the pump and disconnect; safe to call twice."""
        pump, self._pump = self._pump, None
        try:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        finally:
            bus, self._bus = self._bus, None
            if bus is not None:
                bus.remove_message_handler(self._on_message)
                bus.disconnect()
            self._subscribers.clear()

    async def __aenter__(self) -> WpaManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- subscriptions ---------------------------------------------------------------
    def subscribe(self, callback: SignalCallback) -> int:
        """Call ``callback(signal)`` for every signal (after the mirror is updated)."""
        token = self._next_token
        self._next_token += 1
        self._subscribers[token] = callback
        return token

    def unsubscribe(self, token: int) -> None:
        self._subscribers.pop(token, None)

    def expect(self, names: Iterable[str],
               predicate: Callable[[Signal], bool] | None = None) -> Expectation:
        """Start waiting for a signal now; ``await exp.wait(timeout)`` later."""
        return Expectation(self, names, predicate)

    # -- signal intake ---------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or not msg.interface:
            return None
        if not (msg.interface.startswith(defs.SERVICE) or msg.interface == defs.IFACE_PROPERTIES):
            return None
        args = tuple(unwrap(a) for a in msg.body)
        self._queue.put_nowait(Signal(msg.member or "", msg.path or "", msg.interface, args,
                                      time.monotonic()))
        return None

    async def _run_pump(self) -> None:
        while True:
            sig = await self._queue.get()
            try:
                out = await self._update_mirror(sig)
            except WifiDirectError as exc:  # e.g. a peer vanished while we read it
                log.debug("mirror update for %s failed: %s", sig.name, exc)
                out = sig
            if out is None:
                continue
            for callback in list(self._subscribers.values()):
                try:
                    callback(out)
                except Exception:  # a bad subscriber must not stop the pump
                    log.exception("signal subscriber failed on %s", out.name)

    async def _update_mirror(self, sig: Signal) -> Signal | None:
        """Apply ``sig`` to the mirror; return the signal to deliver (or None to drop)."""
        name = sig.name
        if name in (defs.SIG_DEVICE_FOUND, defs.SIG_DEVICE_FOUND_PROPS):
            path = sig.args[0]
            peer = self.peers.setdefault(path, Peer(path))
            if name == defs.SIG_DEVICE_FOUND_PROPS:
                peer.props.update(sig.args[1])
                if peer.found and peer.found_at is not None and peer.found_at >= sig.at - 5:
                    return None  # DeviceFound already delivered it moments ago
            else:
                # The properties signal follows; read them now in case it does not.
                with contextlib.suppress(WpaError):
                    peer.props.update(await self._peer_props(path))
            peer.found, peer.found_at = True, sig.at
            return Signal(defs.SIG_DEVICE_FOUND, sig.path, sig.interface, (path,), sig.at)
        if name == defs.SIG_DEVICE_LOST:
            self.peers.pop(sig.args[0], None)
            return sig
        if name == defs.SIG_PROPERTIES_CHANGED:
            changed_peer = self.peers.get(sig.path)
            if changed_peer is not None:
                changed = sig.args[1] if len(sig.args) == 3 else sig.args[0]
                if isinstance(changed, dict):
                    changed_peer.props.update(changed)
            return sig
        if name == defs.SIG_GROUP_STARTED and sig.interface == defs.IFACE_P2P:
            info = sig.args[0]
            group = Group(path=info.get("group_object", ""), iface_path=info.get(
                "interface_object", ""), role=info.get("role", ""), started_at=sig.at, props=info)
            with contextlib.suppress(WpaError):
                group.ifname = await self.get_property(group.iface_path, defs.IFACE_INTERFACE,
                                                       "Ifname")
                gprops = await self.get_all(group.path, defs.IFACE_GROUP)
                group.bssid = defs.mac_str(bytes(gprops.get("BSSID", b"")))
                group.frequency = gprops.get("Frequency")
            self.groups[group.path] = group
            return sig
        if name == defs.SIG_GROUP_FINISHED and sig.interface == defs.IFACE_P2P:
            self.groups.pop(sig.args[0].get("group_object", ""), None)
            return sig
        return sig

    # -- calls -----------------------------------------------------------------------
    async def _call(self, interface: str, path: str, member: str, signature: str = "",
                    body: list[Any] | None = None, destination: str = defs.SERVICE) -> list[Any]:
        if self._bus is None:
            raise WifiDirectError("not connected to the bus")
        reply = await self._bus.call(Message(destination=destination, path=path,
                                             interface=interface, member=member,
                                             signature=signature, body=body or []))
        return check_reply(member, reply)

    async def get_property(self, path: str, interface: str, name: str) -> Any:
        (value,) = await self._call(defs.IFACE_PROPERTIES, path, "Get", "ss", [interface, name])
        return unwrap(value)

    async def get_all(self, path: str, interface: str) -> dict[str, Any]:
        (value,) = await self._call(defs.IFACE_PROPERTIES, path, "GetAll", "s", [interface])
        return dict(unwrap(value))

    async def _peer_props(self, path: str) -> dict[str, Any]:
        return await self.get_all(path, defs.IFACE_PEER)

    async def p2p(self, member: str, signature: str = "", body: list[Any] | None = None,
                  path: str | None = None) -> list[Any]:
        """Call a P2PDevice method (on our interface unless ``path`` names a group's)."""
        return await self._call(defs.IFACE_P2P, path or self.iface_path, member, signature, body)

    async def find(self, discovery_type: str = "social", timeout: int | None = None) -> None:
        args = variants({"DiscoveryType": discovery_type, "Timeout": timeout}, defs.FIND_ARGS)
        await self.p2p("Find", "a{sv}", [args])

    async def stop_find(self) -> None:
        await self.p2p("StopFind")

    async def listen(self, timeout: int) -> None:
        await self.p2p("Listen", "i", [timeout])

    async def add_bonjour_service(self, query: bytes, response: bytes) -> None:
        args = variants({"service_type": "bonjour", "query": query, "response": response},
                        defs.SERVICE_ARGS)
        await self.p2p("AddService", "a{sv}", [args])

    async def delete_bonjour_service(self, query: bytes) -> None:
        args = variants({"service_type": "bonjour", "query": query}, defs.SERVICE_ARGS)
        await self.p2p("DeleteService", "a{sv}", [args])

    async def service_discovery_request(self, tlv: bytes, peer_path: str | None = None) -> int:
        """Queue a service query (to one peer, or to every peer when None); return its ref."""
        args = variants({"peer_object": peer_path, "tlv": tlv}, defs.SD_REQUEST_ARGS)
        (ref,) = await self.p2p("ServiceDiscoveryRequest", "a{sv}", [args])
        return int(ref)

    async def service_discovery_cancel(self, ref: int) -> None:
        await self.p2p("ServiceDiscoveryCancelRequest", "t", [ref])

    async def connect(self, **args: Any) -> str:
        """P2PDevice.Connect; returns the generated PIN (empty when one was given)."""
        (pin,) = await self.p2p("Connect", "a{sv}", [variants(args, defs.CONNECT_ARGS)])
        return str(pin)

    async def group_add(self, **args: Any) -> None:
        await self.p2p("GroupAdd", "a{sv}", [variants(args, defs.GROUP_ADD_ARGS)])

    async def disconnect(self, group_iface_path: str) -> None:
        """Leave or end the group that runs on ``group_iface_path``."""
        await self.p2p("Disconnect", path=group_iface_path)

    async def cancel(self) -> None:
        await self.p2p("Cancel")

    async def refresh_group_bssid(self, group: Group) -> None:
        """Read ``group``'s BSSID again (empty right after a re-invoked client group
        started), from the group object or else from the interface's current BSS."""
        with contextlib.suppress(WpaError):
            gprops = await self.get_all(group.path, defs.IFACE_GROUP)
            group.bssid = defs.mac_str(bytes(gprops.get("BSSID", b""))) or group.bssid
        if group.bssid or not group.iface_path:
            return
        with contextlib.suppress(WpaError):
            bss = await self.get_property(group.iface_path, defs.IFACE_INTERFACE, "CurrentBSS")
            if bss and str(bss) != "/":
                raw = await self.get_property(str(bss), defs.IFACE_BSS, "BSSID")
                group.bssid = defs.mac_str(bytes(raw)) if raw else ""

    async def persistent_groups(self) -> dict[str, dict[str, Any]]:
        """Persistent group object → its network block (``ssid``, ``mode``: "3" a GO's,
        "0" a client's; ``bssid``...), as wpa_supplicant stores them."""
        out: dict[str, dict[str, Any]] = {}
        for path in await self.get_property(self.iface_path, defs.IFACE_P2P,
                                            "PersistentGroups"):
            with contextlib.suppress(WpaError):
                props = await self.get_property(path, defs.IFACE_PERSISTENT_GROUP,
                                                "Properties")
                out[str(path)] = {k: unwrap(v) for k, v in dict(props).items()}
        return out

    async def leave_stale_groups(self, timeout: float = 10.0) -> list[str]:
        """Leave every group wpa_supplicant still runs for us; return their interface paths.

        A daemon killed while in a group leaves wpa_supplicant in it (as client or GO);
        joining or starting another group would then fail.  Called at start.
        """
        left = []
        for path in await self.get_property(defs.ROOT_PATH, defs.IFACE_ROOT, "Interfaces"):
            try:
                role = await self.get_property(path, defs.IFACE_P2P, "Role")
            except WpaError:
                continue  # not a P2P interface
            if role not in ("GO", "client"):
                continue
            with self.expect({defs.SIG_GROUP_FINISHED}) as exp:
                try:
                    await self.disconnect(path)
                    await exp.wait(timeout)
                except (WpaError, TimeoutError):
                    pass
            left.append(str(path))
        return left

    async def wps_start(self, iface_path: str, **args: Any) -> dict[str, Any]:
        (out,) = await self._call(defs.IFACE_WPS, iface_path, "Start", "a{sv}",
                                  [variants(args, defs.WPS_START_ARGS)])
        return dict(unwrap(out))

    async def refresh_peer(self, path: str) -> Peer:
        """Re-read a peer's properties (e.g. a fresh signal level) into the mirror."""
        peer = self.peers.setdefault(path, Peer(path))
        peer.props.update(await self._peer_props(path))
        return peer
