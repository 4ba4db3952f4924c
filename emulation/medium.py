"""The wireless medium: our own wmediumd, a process on mac80211_hwsim's generic netlink.

How it works
------------
Once a process sends ``HWSIM_CMD_REGISTER``, mac80211_hwsim stops delivering frames
between its radios itself and hands every transmitted frame to that process instead
(``HWSIM_CMD_FRAME``: transmitter, frame bytes, flags, tx rates, cookie, frequency).
For each frame this medium

1. looks up the sender by its hwsim address and finds every other radio within the
   sender's transmission range (Euclidean distance between current positions);
2. sends the frame back to each of them (``HWSIM_CMD_FRAME`` with the receiver's
   address, a signal level from a log-distance path-loss model, the rx rate and the
   frequency -- the kernel drops it if the receiver is not on that frequency);
3. reports the transmission to the sender (``HWSIM_CMD_TX_INFO_FRAME`` with the
   cookie), with ``HWSIM_TX_STAT_ACK`` set when a unicast frame reached its addressee.

Positions and ranges change at runtime through a Unix datagram control socket
(JSON requests, JSON replies): ``update`` (radios with addresses, names, positions,
ranges), ``move``, ``links``, ``stats``, ``ping``.

If this process dies, hwsim silently falls back to its perfect medium ("switching to
perfect channel medium" in the kernel log) and everyone hears everyone. That must never
go unnoticed: :class:`emulation.network.Network` supervises this process and stops the
emulation with an error when it exits.

Run as ``python -m emulation.medium --control SOCKET`` in the network namespace where
the radios were created (the init namespace). It prints ``READY`` once registered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from emulation import hwsim

# --- the radio model (pure; unit-tested on the host) ---------------------------------


@dataclass(frozen=True)
class PathLoss:
    """Log-distance path loss: ``signal = tx_power - (pl0 + 10 * n * log10(d / d0))``.

    Defaults: 20 dBm transmit power, 40 dB loss at 1 m (free space at 2.4 GHz) and an
    exponent of 3 (outdoor, some obstruction).
    """

    tx_power_dbm: float = 20.0
    ref_loss_db: float = 40.0
    ref_distance_m: float = 1.0
    exponent: float = 3.0

    def signal_dbm(self, distance_m: float) -> int:
        """Return the received signal level in dBm at ``distance_m`` (clamped at d0)."""
        d = max(distance_m, self.ref_distance_m)
        loss = self.ref_loss_db + 10.0 * self.exponent * math.log10(d / self.ref_distance_m)
        return int(round(self.tx_power_dbm - loss))


@dataclass
class RadioState:
    """What the medium knows about one radio."""

    hwsim_addr: str
    name: str
    position: tuple[float, float] = (0.0, 0.0)
    range_m: float = 100.0
    addresses: set[str] = field(default_factory=set)  # permanent ones, never removed
    extra_addresses: set[str] = field(default_factory=set)  # from ADD/DEL_MAC_ADDR

    def owns(self, addr: str) -> bool:
        """True if frames addressed to ``addr`` belong to this radio."""
        return addr == self.hwsim_addr or addr in self.addresses or addr in self.extra_addresses


class MediumState:
    """Radios, positions and ranges; decides who hears a frame and at what level."""

    def __init__(self, pathloss: PathLoss | None = None) -> None:
        self.pathloss = pathloss or PathLoss()
        self.radios: dict[str, RadioState] = {}

    def update(self, hwsim_addr: str, name: str, position: tuple[float, float],
               range_m: float, addresses: list[str] | None = None) -> RadioState:
        """Add or replace a radio's description."""
        radio = self.radios.get(hwsim_addr)
        if radio is None:
            radio = RadioState(hwsim_addr=hwsim_addr, name=name)
            self.radios[hwsim_addr] = radio
        radio.name = name
        radio.position = (float(position[0]), float(position[1]))
        radio.range_m = float(range_m)
        radio.addresses = set(addresses or []) | {hwsim_addr}
        return radio

    def by_name(self, name: str) -> RadioState:
        """Return the radio called ``name``; raise KeyError if unknown."""
        for radio in self.radios.values():
            if radio.name == name:
                return radio
        raise KeyError(name)

    def move(self, name: str, position: tuple[float, float]) -> None:
        """Set a radio's position."""
        self.by_name(name).position = (float(position[0]), float(position[1]))

    @staticmethod
    def distance(a: RadioState, b: RadioState) -> float:
        """Euclidean distance between two radios, in metres."""
        return math.dist(a.position, b.position)

    def receivers(self, sender: RadioState) -> list[tuple[RadioState, int]]:
        """Return [(radio, signal dBm)] for every other radio within the sender's range."""
        out = []
        for radio in self.radios.values():
            if radio is sender:
                continue
            d = self.distance(sender, radio)
            if d <= sender.range_m:
                out.append((radio, self.pathloss.signal_dbm(d)))
        return out

    def links(self) -> list[dict[str, Any]]:
        """Describe every ordered pair: distance, signal, whether the frame gets through."""
        out = []
        for a in self.radios.values():
            for b in self.radios.values():
                if a is b:
                    continue
                d = self.distance(a, b)
                out.append({"from": a.name, "to": b.name, "distance": round(d, 2),
                            "signal": self.pathloss.signal_dbm(d), "in_range": d <= a.range_m})
        return out


# --- the process ------------------------------------------------------------------------


@dataclass
class Stats:
    """Counters the medium reports on ``stats``."""

    frames: int = 0
    delivered: int = 0
    out_of_range: int = 0
    acked: int = 0
    unknown_sender: int = 0
    kernel_rejected: int = 0  # e.g. receiver idle or on another frequency
    overruns: int = 0


class Medium:
    """The running medium: one netlink socket, one control socket, one loop."""

    def __init__(self, control_path: str, state: MediumState | None = None) -> None:
        self.state = state or MediumState()
        self.stats = Stats()
        self.control_path = control_path
        self.nl = hwsim.open_genl_socket()
        self.family = hwsim.resolve_family(self.nl)
        if os.path.exists(control_path):
            os.unlink(control_path)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ctl.bind(control_path)
        self._stop = False

    def register(self) -> None:
        """Become hwsim's medium; raise NetlinkError (e.g. EBUSY: another medium runs)."""
        self.nl.send(hwsim.genl_message(self.family, hwsim.HWSIM_CMD_REGISTER, b"",
                                        flags=hwsim.NLM_F_REQUEST | hwsim.NLM_F_ACK, seq=2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.nl], [], [], 0.5)
            if not ready:
                continue
            for msg_type, payload in hwsim.split_messages(self.nl.recv(65536)):
                if msg_type == hwsim.NLMSG_ERROR:
                    code = hwsim.error_code(payload)
                    if code:
                        raise hwsim.NetlinkError(-code, "HWSIM_CMD_REGISTER: "
                                                 + os.strerror(-code))
                    return
        raise TimeoutError("no answer to HWSIM_CMD_REGISTER")

    def stop(self, *_: object) -> None:
        """Ask the loop to end (signal handler)."""
        self._stop = True

    def run(self) -> None:
        """Serve frames and control requests until stopped."""
        while not self._stop:
            try:
                ready, _, _ = select.select([self.nl, self.ctl], [], [], 1.0)
            except InterruptedError:
                continue
            if self.nl in ready:
                self._drain_netlink()
            if self.ctl in ready:
                self._serve_control()

    # -- netlink --

    def _drain_netlink(self) -> None:
        while True:
            try:
                data = self.nl.recv(1 << 17, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: the kernel dropped frames for us
                self.stats.overruns += 1
                print(f"medium: netlink receive error: {exc}", file=sys.stderr, flush=True)
                return
            for msg_type, payload in hwsim.split_messages(data):
                if msg_type == hwsim.NLMSG_ERROR:
                    if hwsim.error_code(payload):
                        self.stats.kernel_rejected += 1
                    continue
                if msg_type != self.family:
                    continue
                cmd, attrs = hwsim.parse_genl(payload)
                if cmd == hwsim.HWSIM_CMD_FRAME:
                    self._on_frame(attrs)
                elif cmd in (hwsim.HWSIM_CMD_ADD_MAC_ADDR, hwsim.HWSIM_CMD_DEL_MAC_ADDR):
                    self._on_mac_addr(cmd, attrs)

    def _on_mac_addr(self, cmd: int, attrs: dict[int, bytes]) -> None:
        radio_addr = attrs.get(hwsim.HWSIM_ATTR_ADDR_TRANSMITTER)
        vif_addr = attrs.get(hwsim.HWSIM_ATTR_ADDR_RECEIVER)
        if radio_addr is None or vif_addr is None:
            return
        radio = self.state.radios.get(hwsim.mac_str(radio_addr))
        if radio is None:
            return
        addr = hwsim.mac_str(vif_addr)
        if cmd == hwsim.HWSIM_CMD_ADD_MAC_ADDR:
            radio.extra_addresses.add(addr)
        else:
            radio.extra_addresses.discard(addr)

    def _on_frame(self, attrs: dict[int, bytes]) -> None:
        self.stats.frames += 1
        tx_raw = attrs.get(hwsim.HWSIM_ATTR_ADDR_TRANSMITTER, b"")
        frame = attrs.get(hwsim.HWSIM_ATTR_FRAME, b"")
        flags = struct.unpack("=I", attrs.get(hwsim.HWSIM_ATTR_FLAGS, b"\0\0\0\0")[:4])[0]
        cookie = attrs.get(hwsim.HWSIM_ATTR_COOKIE, b"\0" * 8)
        tx_info = attrs.get(hwsim.HWSIM_ATTR_TX_INFO, b"")
        freq = attrs.get(hwsim.HWSIM_ATTR_FREQ)
        sender = self.state.radios.get(hwsim.mac_str(tx_raw))
        rate_idx = tx_info[0] if tx_info and tx_info[0] < 0x80 else 0
        acked = False
        ack_signal = -95
        if sender is None:
            self.stats.unknown_sender += 1
        elif len(frame) >= 10:
            dest = hwsim.mac_str(frame[4:10])
            unicast = not frame[4] & 1
            in_range = self.state.receivers(sender)
            self.stats.out_of_range += len(self.state.radios) - 1 - len(in_range)
            for radio, level in in_range:
                msg = (hwsim.pack_attr(hwsim.HWSIM_ATTR_ADDR_RECEIVER,
                                       hwsim.mac_bytes(radio.hwsim_addr))
                       + hwsim.pack_attr(hwsim.HWSIM_ATTR_FRAME, frame)
                       + hwsim.pack_attr(hwsim.HWSIM_ATTR_RX_RATE, struct.pack("=I", rate_idx))
                       + hwsim.pack_attr(hwsim.HWSIM_ATTR_SIGNAL, struct.pack("=i", level)))
                if freq is not None:
                    msg += hwsim.pack_attr(hwsim.HWSIM_ATTR_FREQ, freq)
                self._send(hwsim.HWSIM_CMD_FRAME, msg)
                self.stats.delivered += 1
                if unicast and radio.owns(dest):
                    acked = True
                    ack_signal = level
        tx_flags = flags
        if acked and not flags & hwsim.HWSIM_TX_CTL_NO_ACK:
            tx_flags |= hwsim.HWSIM_TX_STAT_ACK
            self.stats.acked += 1
        # One attempt at the first rate; the other rate slots unused (idx -1).
        attempts = bytes([rate_idx & 0xFF, 1]) + bytes([0xFF, 0]) * 3
        if tx_info and len(tx_info) >= 8:
            attempts = bytes([tx_info[0], 1]) + bytes([0xFF, 0]) * ((len(tx_info) // 2) - 1)
        self._send(hwsim.HWSIM_CMD_TX_INFO_FRAME,
                   hwsim.pack_attr(hwsim.HWSIM_ATTR_ADDR_TRANSMITTER, tx_raw)
                   + hwsim.pack_attr(hwsim.HWSIM_ATTR_FLAGS, struct.pack("=I", tx_flags))
                   + hwsim.pack_attr(hwsim.HWSIM_ATTR_SIGNAL, struct.pack("=i", ack_signal))
                   + hwsim.pack_attr(hwsim.HWSIM_ATTR_TX_INFO, attempts)
                   + hwsim.pack_attr(hwsim.HWSIM_ATTR_COOKIE, cookie))

    def _send(self, cmd: int, attrs: bytes) -> None:
        try:
            self.nl.send(hwsim.genl_message(self.family, cmd, attrs))
        except BlockingIOError:
            self.stats.overruns += 1

    # -- control --

    def _serve_control(self) -> None:
        try:
            data, peer = self.ctl.recvfrom(1 << 16)
        except OSError:
            return
        try:
            reply = self.handle(json.loads(data))
        except Exception as exc:  # a bad request must never kill the medium
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if peer:
            try:
                self.ctl.sendto(json.dumps(reply).encode(), peer)
            except OSError:
                pass

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Execute one control request and return its JSON reply."""
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "update":
            for r in request["radios"]:
                self.state.update(r["addr"], r["name"], tuple(r["pos"]), r["range"],
                                  r.get("addresses"))
            return {"ok": True}
        if op == "move":
            self.state.move(request["name"], tuple(request["pos"]))
            return {"ok": True}
        if op == "links":
            return {"ok": True, "links": self.state.links()}
        if op == "stats":
            return {"ok": True, "stats": vars(self.stats)}
        return {"ok": False, "error": f"unknown op {op!r}"}


class MediumClient:
    """Talks to a running medium over its control socket."""

    def __init__(self, control_path: str, timeout: float = 10.0) -> None:
        self.control_path = control_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("")  # Linux autobind: an abstract address the medium can reply to
        self.sock.settimeout(timeout)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; return the reply; raise RuntimeError if it failed."""
        self.sock.sendto(json.dumps({"op": op, **fields}).encode(), self.control_path)
        reply: dict[str, Any] = json.loads(self.sock.recv(1 << 20))
        if not reply.get("ok"):
            raise RuntimeError(f"medium: {reply.get('error')}")
        return reply

    def close(self) -> None:
        """Close the client socket."""
        self.sock.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the medium process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="path of the control socket")
    parser.add_argument("--exponent", type=float, default=PathLoss.exponent)
    parser.add_argument("--tx-power", type=float, default=PathLoss.tx_power_dbm)
    args = parser.parse_args(argv)
    try:
        medium = Medium(args.control, MediumState(PathLoss(tx_power_dbm=args.tx_power,
                                                           exponent=args.exponent)))
        medium.register()
    except OSError as exc:
        print(f"medium: cannot become the hwsim medium: {exc}", file=sys.stderr, flush=True)
        return 1
    signal.signal(signal.SIGTERM, medium.stop)
    signal.signal(signal.SIGINT, medium.stop)
    print("READY", flush=True)
    medium.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
