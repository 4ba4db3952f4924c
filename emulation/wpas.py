"""A minimal D-Bus client of one station's wpa_supplicant (for live tests and diagnostics).

It speaks ``fi.w1.wpa_supplicant1`` with dbus-fast's low-level messages rather than
introspected proxies: no introspection round trips, and no snake_case mangling of
names such as ``P2PDeviceConfig``. FastPay's own link layer (fastpayd) has its own,
fuller manager; this one only drives what the emulation's tests need.

Signals are recorded in order in :attr:`Supplicant.history`; a caller takes a
:meth:`Supplicant.mark` *before* acting and then waits for a signal after that mark,
so a signal that arrives before the wait starts is never missed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

SERVICE = "fi.w1.wpa_supplicant1"
ROOT = "/fi/w1/wpa_supplicant1"
IFACE = SERVICE + ".Interface"
P2P = IFACE + ".P2PDevice"
BSS = SERVICE + ".BSS"
PROPS = "org.freedesktop.DBus.Properties"


class WpaError(RuntimeError):
    """wpa_supplicant answered a call with a D-Bus error."""


@dataclass(frozen=True)
class Signal:
    """One signal received from wpa_supplicant."""

    at: float  # time.monotonic()
    member: str
    interface: str
    path: str
    body: list[Any]


def addr_of_path(path: str) -> str:
    """'/fi/w1/.../Peers/420000000100' -> '42:00:00:00:01:00'."""
    tail = path.rsplit("/", 1)[-1]
    return ":".join(tail[i : i + 2] for i in range(0, 12, 2))


def unwrap(value: Any) -> Any:
    """Strip dbus-fast Variants recursively (dicts and lists too)."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class Supplicant:
    """One connection to a station's bus, bound to one wpa_supplicant interface."""

    def __init__(self, bus: MessageBus, iface_path: str) -> None:
        self.bus = bus
        self.path = iface_path
        self.history: list[Signal] = []
        self._changed = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, bus_address: str, ifname: str = "wlan0") -> Supplicant:
        """Connect to the bus at ``bus_address`` and bind to interface ``ifname``."""
        bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM).connect()
        await _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                    "AddMatch", "s", [f"type='signal',sender='{SERVICE}'"])
        (path,) = await _call(bus, SERVICE, ROOT, SERVICE, "GetInterface", "s", [ifname])
        return cls(bus, path)

    def close(self) -> None:
        """Disconnect from the bus."""
        self.bus.disconnect()

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.interface and \
                msg.interface.startswith(SERVICE):
            self.history.append(Signal(time.monotonic(), msg.member or "", msg.interface,
                                       msg.path or "", unwrap(msg.body)))
            self._changed.set()

    # -- plumbing --

    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: list[Any] | None = None) -> list[Any]:
        """Call a wpa_supplicant method; return the reply body; raise WpaError."""
        return await _call(self.bus, SERVICE, path, interface, member, signature, body or [])

    async def get(self, path: str, interface: str, prop: str) -> Any:
        """Read one property (unwrapped)."""
        (value,) = await self.call(path, PROPS, "Get", "ss", [interface, prop])
        return unwrap(value)

    def mark(self) -> int:
        """A position in the signal history; wait for signals after it."""
        return len(self.history)

    async def wait_signal(self, member: str, *, since: int = 0, timeout: float = 60.0,
                          match: Any = None) -> Signal:
        """Return the first signal ``member`` after ``since`` for which ``match(sig)`` holds.

        Raises TimeoutError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        index = since
        while True:
            while index < len(self.history):
                sig = self.history[index]
                index += 1
                if sig.member == member and (match is None or match(sig)):
                    return sig
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = ", ".join(s.member for s in self.history[since:]) or "none"
                raise TimeoutError(f"no {member} signal within {timeout:.0f} s "
                                   f"(signals since: {seen})")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    # -- P2P --

    async def find(self, timeout_s: int = 0, social: bool = True) -> None:
        """Start P2P discovery (``timeout_s`` 0: until stopped)."""
        args: dict[str, Variant] = {}
        if timeout_s:
            args["Timeout"] = Variant("i", timeout_s)
        if social:
            args["DiscoveryType"] = Variant("s", "social")
        await self.call(self.path, P2P, "Find", "a{sv}", [args])

    async def stop_find(self) -> None:
        """Stop P2P discovery."""
        await self.call(self.path, P2P, "StopFind")

    async def flush(self) -> None:
        """Forget every peer (so the next discovery signals DeviceFound again)."""
        await self.call(self.path, P2P, "Flush")

    async def wait_device_found(self, address: str, *, since: int = 0,
                                timeout: float = 60.0) -> str:
        """Wait for DeviceFound of the peer with P2P device ``address``; return its path."""
        sig = await self.wait_signal(
            "DeviceFound", since=since, timeout=timeout,
            match=lambda s: addr_of_path(s.body[0]) == address.lower())
        return str(sig.body[0])

    async def connect_peer(self, peer_path: str, *, go_intent: int = 7,
                           authorize_only: bool = False, join: bool = False) -> None:
        """P2P Connect with push-button WPS."""
        args = {"peer": Variant("o", peer_path), "wps_method": Variant("s", "pbc"),
                "go_intent": Variant("i", go_intent),
                "authorize_only": Variant("b", authorize_only), "join": Variant("b", join)}
        await self.call(self.path, P2P, "Connect", "a{sv}", [args])

    async def group_add(self, frequency: int = 2437) -> None:
        """Start an autonomous group as GO on ``frequency`` MHz."""
        await self.call(self.path, P2P, "GroupAdd", "a{sv}",
                        [{"frequency": Variant("i", frequency)}])

    async def disconnect(self) -> None:
        """Leave/end the current group."""
        await self.call(self.path, P2P, "Disconnect")

    async def ifname_of(self, iface_path: str) -> str:
        """The kernel interface name behind a wpa_supplicant interface object."""
        return str(await self.get(iface_path, IFACE, "Ifname"))

    # -- scanning --

    async def scan_bss_signal(self, bssid: str, frequency: int, *,
                              timeout: float = 60.0) -> int:
        """Flush old results, scan ``frequency`` and return the level (dBm) of ``bssid``.

        Raises TimeoutError if the BSS is not seen.
        """
        await self.call(self.path, IFACE, "FlushBSS", "u", [0])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark = self.mark()
            await self.call(self.path, IFACE, "Scan", "a{sv}", [{
                "Type": Variant("s", "active"),
                "Channels": Variant("a(uu)", [[frequency, 20]])}])
            await self.wait_signal("ScanDone", since=mark,
                                   timeout=max(1.0, deadline - time.monotonic()))
            for bss_path in await self.get(self.path, IFACE, "BSSs"):
                raw = await self.get(bss_path, BSS, "BSSID")
                if ":".join(f"{b:02x}" for b in raw) == bssid.lower():
                    return int(await self.get(bss_path, BSS, "Signal"))
        raise TimeoutError(f"BSS {bssid} not seen within {timeout:.0f} s")


async def _call(bus: MessageBus, dest: str, path: str, interface: str, member: str,
                signature: str, body: list[Any]) -> list[Any]:
    reply = await bus.call(Message(destination=dest, path=path, interface=interface,
                                   member=member, signature=signature, body=body))
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        raise WpaError(f"{member}: {reply.error_name}: {reply.body}")
    return list(reply.body)
