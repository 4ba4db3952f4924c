"""mac80211_hwsim: the kernel module, its radios, and its generic-netlink protocol.

This module is the only place that knows the numbers of the ``MAC80211_HWSIM``
generic-netlink family (the protocol wmediumd speaks) and how radios look in sysfs.

* Radios come from ``modprobe mac80211_hwsim radios=N``. Each radio is a wiphy
  (``/sys/class/ieee80211/phyN``) with two permanent addresses: the first is the
  interface address (``02:00:00:00:NN:00``), the second (``42:...``) is the address
  hwsim uses to name the radio on netlink and, with ``support_p2p_device``, the
  P2P device address.
* Netlink is spoken with the standard library only (``socket`` + ``struct``):
  importing pyroute2 costs ~6 s under QEMU/TCG, and the protocol is small.
  A message is ``nlmsghdr`` + ``genlmsghdr`` + attributes (type-length-value,
  padded to 4 bytes).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

# --- netlink / generic netlink -------------------------------------------------------

NETLINK_GENERIC = 16
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

_NLMSGHDR = struct.Struct("=IHHII")
_GENLMSGHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")

# --- MAC80211_HWSIM family (include/uapi of drivers/net/wireless/mac80211_hwsim.h) ----

HWSIM_FAMILY = "MAC80211_HWSIM"

HWSIM_CMD_REGISTER = 1
HWSIM_CMD_FRAME = 2
HWSIM_CMD_TX_INFO_FRAME = 3
HWSIM_CMD_NEW_RADIO = 4
HWSIM_CMD_DEL_RADIO = 5
HWSIM_CMD_GET_RADIO = 6
HWSIM_CMD_ADD_MAC_ADDR = 7
HWSIM_CMD_DEL_MAC_ADDR = 8

HWSIM_ATTR_ADDR_RECEIVER = 1
HWSIM_ATTR_ADDR_TRANSMITTER = 2
HWSIM_ATTR_FRAME = 3
HWSIM_ATTR_FLAGS = 4
HWSIM_ATTR_RX_RATE = 5
HWSIM_ATTR_SIGNAL = 6
HWSIM_ATTR_TX_INFO = 7
HWSIM_ATTR_COOKIE = 8
HWSIM_ATTR_FREQ = 19
HWSIM_ATTR_TX_INFO_FLAGS = 21

HWSIM_TX_CTL_REQ_TX_STATUS = 1
HWSIM_TX_CTL_NO_ACK = 2
HWSIM_TX_STAT_ACK = 4

SYSFS_WIPHYS = Path("/sys/class/ieee80211")
MODULE = "mac80211_hwsim"


class NetlinkError(OSError):
    """A netlink request was answered with an error code."""


def pack_attr(attr_type: int, payload: bytes) -> bytes:
    """Return one netlink attribute, padded to 4 bytes."""
    length = _NLATTR.size + len(payload)
    pad = (4 - length % 4) % 4
    return _NLATTR.pack(length, attr_type) + payload + b"\0" * pad


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Parse a run of netlink attributes into {type: payload} (nested flag bits dropped)."""
    attrs: dict[int, bytes] = {}
    offset = 0
    while offset + _NLATTR.size <= len(data):
        length, attr_type = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            break
        attrs[attr_type & 0x3FFF] = data[offset + _NLATTR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


def genl_message(family: int, cmd: int, attrs: bytes, flags: int = NLM_F_REQUEST,
                 seq: int = 0) -> bytes:
    """Return a complete generic-netlink message."""
    body = _GENLMSGHDR.pack(cmd, 1, 0) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, flags, seq, 0) + body


def split_messages(data: bytes) -> list[tuple[int, bytes]]:
    """Split a netlink datagram into [(nlmsg_type, payload after nlmsghdr)]."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        out.append((msg_type, data[offset + _NLMSGHDR.size : offset + length]))
        offset += (length + 3) & ~3
    return out


def parse_genl(payload: bytes) -> tuple[int, dict[int, bytes]]:
    """Return (cmd, attrs) of a generic-netlink payload."""
    cmd, _version, _reserved = _GENLMSGHDR.unpack_from(payload, 0)
    return cmd, parse_attrs(payload[_GENLMSGHDR.size :])


def error_code(payload: bytes) -> int:
    """Return the (negative) errno of an NLMSG_ERROR payload; 0 is an ACK."""
    return int(struct.unpack_from("=i", payload, 0)[0])


def open_genl_socket(rcvbuf: int = 8 << 20) -> socket.socket:
    """Open a generic-netlink socket with a large receive buffer (frames come in bursts)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    try:
        # SO_RCVBUFFORCE ignores rmem_max; we are root in the VM. Fall back if refused.
        sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((0, 0))
    return sock


def resolve_family(sock: socket.socket, name: str = HWSIM_FAMILY) -> int:
    """Return the numeric id of a generic-netlink family; raise NetlinkError if absent."""
    request = genl_message(
        GENL_ID_CTRL, CTRL_CMD_GETFAMILY, pack_attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"),
        seq=1,
    )
    sock.send(request)
    while True:
        for msg_type, payload in split_messages(sock.recv(65536)):
            if msg_type == NLMSG_ERROR:
                code = error_code(payload)
                if code:
                    raise NetlinkError(-code, f"generic netlink family {name!r}: "
                                       f"{os.strerror(-code)}")
                continue
            if msg_type == GENL_ID_CTRL:
                _cmd, attrs = parse_genl(payload)
                if CTRL_ATTR_FAMILY_ID in attrs:
                    return int(struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][:2])[0])


def mac_bytes(mac: str) -> bytes:
    """'02:00:..' -> 6 bytes."""
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_str(raw: bytes) -> str:
    """6 bytes -> '02:00:..'."""
    return ":".join(f"{b:02x}" for b in raw[:6])


# --- radios and the module ----------------------------------------------------------


@dataclass(frozen=True)
class Radio:
    """One hwsim radio as the init namespace sees it."""

    phy: str
    addresses: tuple[str, ...]

    @property
    def hwsim_addr(self) -> str:
        """The address hwsim names this radio by on netlink (its second permanent one)."""
        return self.addresses[1] if len(self.addresses) > 1 else self.addresses[0]


def kernel_has_hwsim() -> bool:
    """Return True if this kernel can provide mac80211_hwsim radios (loaded or loadable)."""
    if Path("/sys/module/mac80211_hwsim").exists():
        return True
    release = os.uname().release
    for base in (Path("/lib/modules") / release, Path("/usr/lib/modules") / release):
        dep = base / "modules.dep"
        if dep.exists() and "mac80211_hwsim" in dep.read_text(errors="replace"):
            return True
        builtin = base / "modules.builtin"
        if builtin.exists() and "mac80211_hwsim" in builtin.read_text(errors="replace"):
            return True
    return False


def module_loaded() -> bool:
    """Return True if mac80211_hwsim is loaded."""
    return Path("/sys/module/mac80211_hwsim").exists()


def load_module(radios: int) -> None:
    """Load mac80211_hwsim with ``radios`` radios (it must not be loaded already)."""
    subprocess.run(["modprobe", MODULE, f"radios={radios}"], check=True,
                   capture_output=True, text=True)


def unload_module() -> None:
    """Remove mac80211_hwsim (and with it every radio it made), if loaded."""
    if module_loaded():
        subprocess.run(["modprobe", "-r", MODULE], check=False, capture_output=True)


def list_radios() -> list[Radio]:
    """Return the hwsim radios visible in this network namespace, ordered by phy index."""
    radios: list[Radio] = []
    if not SYSFS_WIPHYS.exists():
        return radios
    for phy_dir in SYSFS_WIPHYS.iterdir():
        device = phy_dir / "device"
        # hwsim radios hang off the virtual "hwsim" bus/platform device.
        driver = (device / "driver").resolve().name if (device / "driver").exists() else ""
        if driver and "hwsim" not in driver:
            continue
        addresses = tuple((phy_dir / "addresses").read_text().split())
        radios.append(Radio(phy=phy_dir.name, addresses=addresses))
    radios.sort(key=lambda r: int(r.phy.removeprefix("phy")) if r.phy[3:].isdigit() else 0)
    return radios


# mac80211 allocates the CCMP/GCMP/BIP ciphers when a key is installed. In a fresh
# kernel that first allocation loads crypto modules and runs their self-tests, which
# under QEMU/TCG stalled a GO's group-key setup for ~6 s -- long enough for the peer's
# group formation to time out. Instantiating them once up front moves that cost to
# start-up.
_WARM_CIPHERS = (("aead", "ccm(aes)"), ("aead", "gcm(aes)"), ("hash", "cmac(aes)"),
                 ("hash", "gmac(aes)"), ("skcipher", "ctr(aes)"), ("skcipher", "ecb(aes)"))


def warm_up_crypto() -> list[str]:
    """Instantiate the ciphers mac80211 uses (via AF_ALG); return those unavailable."""
    missing = []
    for alg_type, name in _WARM_CIPHERS:
        try:
            with socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0) as alg:
                alg.bind((alg_type, name))
        except OSError:
            missing.append(name)
    return missing
