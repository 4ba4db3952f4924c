"""The FastPay service record, as a Bonjour (DNS-SD) entry in P2P service discovery.

An authority advertises two Bonjour records through wpa_supplicant's ``AddService``
(``service_type="bonjour"``); a Bonjour service is a *query key* (DNS name in wire
format + record type + version byte 0x01) and a *response* (the record's RDATA):

* ``PTR _fastpay._tcp.local`` → ``<name>._fastpay._tcp.local`` (so an ordinary DNS-SD
  browser sees an instance of our service type);
* ``TXT <name>._fastpay._tcp.local`` → the fields as DNS-SD ``key=value`` strings:
  ``txtvers``, ``role``, ``name``, ``pk`` (hex Ed25519 public key), ``committee``,
  ``port``, and for group sharing (optional, absent on a record of its own group)
  ``group`` (the name of the authority whose group this one is reachable through; its
  own name on the GO, empty while it is still choosing) and ``members`` (on a GO: the
  other authorities in its group, ``name@ipv6-link-local`` comma-separated).

Names are written without DNS compression so the key can be parsed on its own. Any
P2P device that runs a standard service-discovery query (all services, or all
Bonjour services) gets back one TLV per record; each TLV's data is ``query key ||
response``. :func:`parse_sd_tlvs` splits a response into TLVs and
:func:`records_from_tlvs` keeps the FastPay TXT records and decodes them.

TLV layout (Wi-Fi P2P spec, as wpa_supplicant puts it on D-Bus): 2-byte little-endian
length (counting what follows), protocol type, transaction id, status code, data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fastpayd.wifidirect import defs
from fastpayd.wifidirect.errors import RecordError

SERVICE_TYPE = "_fastpay._tcp.local"
TXT_VERSION = "1"
DNS_TYPE_PTR = 12
DNS_TYPE_TXT = 16
_BONJOUR_VERSION = 1
ROLES = ("authority", "client")


@dataclass(frozen=True)
class FastPayRecord:
    """What an authority advertises: who it is and where to reach it on its group."""

    role: str
    name: str
    public_key: bytes
    committee: str
    port: int
    group: str | None = None  # None: not sharing (its own group); "": still choosing
    members: tuple[tuple[str, str], ...] = ()  # (name, link-local host) in our group (GO)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RecordError(f"bad role {self.role!r}")
        _check_label(self.name)
        if len(self.public_key) != 32:
            raise RecordError("public key must be 32 bytes (Ed25519)")
        if not self.committee or len(self.committee) > 64 or "=" in self.committee:
            raise RecordError(f"bad committee id {self.committee!r}")
        if not 0 < self.port < 65536:
            raise RecordError(f"bad port {self.port}")
        if self.group:
            _check_label(self.group)
        for name, host in self.members:
            _check_label(name)
            if not host or any(c in host for c in ",@ "):
                raise RecordError(f"bad member host {host!r}")
        if len(self._members_txt()) > 240:
            raise RecordError("too many members for one TXT string")

    def _members_txt(self) -> str:
        return ",".join(f"{n}@{h}" for n, h in self.members)

    @property
    def is_go(self) -> bool:
        """This authority runs a group clients can join (its own, shared or not)."""
        return self.group is None or self.group == self.name

    @property
    def instance(self) -> str:
        """The DNS-SD instance name, ``<name>._fastpay._tcp.local``."""
        return f"{self.name}.{SERVICE_TYPE}"

    def txt(self) -> list[tuple[str, str]]:
        """The TXT key/value pairs, in a fixed order."""
        return [
            ("txtvers", TXT_VERSION),
            ("role", self.role),
            ("name", self.name),
            ("pk", self.public_key.hex()),
            ("committee", self.committee),
            ("port", str(self.port)),
            *([("group", self.group)] if self.group is not None else []),
            *([("members", self._members_txt())] if self.members else []),
        ]

    def bonjour_services(self) -> list[tuple[bytes, bytes]]:
        """Return the (query key, response) pairs to hand to ``AddService``."""
        ptr = (bonjour_key(SERVICE_TYPE, DNS_TYPE_PTR), dns_name(self.instance))
        txt = (bonjour_key(self.instance, DNS_TYPE_TXT), encode_txt(self.txt()))
        return [ptr, txt]


def _check_label(label: str) -> None:
    allowed = all(c.isascii() and (c.isalnum() or c in "-_") for c in label)
    if not (label and len(label) <= 63 and allowed):
        raise RecordError(f"bad authority name {label!r} (ASCII letters, digits, - and _)")


def dns_name(name: str) -> bytes:
    """Encode a dotted DNS name in uncompressed wire format (labels + root byte)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise RecordError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\x00")


def bonjour_key(name: str, rrtype: int) -> bytes:
    """The Bonjour query key wpa_supplicant matches: name, 2-byte type, version 1."""
    return dns_name(name) + struct.pack(">HB", rrtype, _BONJOUR_VERSION)


def encode_txt(pairs: list[tuple[str, str]]) -> bytes:
    """Encode DNS-SD TXT RDATA: each ``key=value`` as a length-prefixed string."""
    out = bytearray()
    for key, value in pairs:
        item = f"{key}={value}".encode()
        if len(item) > 255:
            raise RecordError(f"TXT item {key!r} is too long")
        out += bytes([len(item)]) + item
    return bytes(out)


def decode_txt(rdata: bytes) -> dict[str, str]:
    """Decode TXT RDATA into a dict (later duplicates are ignored, as DNS-SD says)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(rdata):
        n = rdata[i]
        item = rdata[i + 1 : i + 1 + n]
        if len(item) != n:
            raise RecordError("truncated TXT record")
        i += 1 + n
        key, _, value = item.decode("utf-8", "replace").partition("=")
        out.setdefault(key.lower(), value)
    return out


def read_dns_name(data: bytes, offset: int = 0) -> tuple[str, int]:
    """Read an uncompressed wire-format name at ``offset``; return (name, next offset).

    A compression pointer ends the name (its target is not resolved: keys on their own
    have no message to point into); the name then ends with ``*``.
    """
    labels: list[str] = []
    i = offset
    while True:
        if i >= len(data):
            raise RecordError("truncated DNS name")
        n = data[i]
        if n == 0:
            return ".".join(labels), i + 1
        if n & 0xC0 == 0xC0:
            labels.append("*")
            return ".".join(labels), i + 2
        labels.append(data[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n


@dataclass(frozen=True)
class SdTlv:
    """One service-discovery response TLV."""

    protocol: int
    transaction_id: int
    status: int
    data: bytes


def parse_sd_tlvs(tlvs: bytes) -> list[SdTlv]:
    """Split the ``tlvs`` bytes of a ServiceDiscoveryResponse into TLVs."""
    out: list[SdTlv] = []
    i = 0
    while i + 2 <= len(tlvs):
        (length,) = struct.unpack_from("<H", tlvs, i)
        body = tlvs[i + 2 : i + 2 + length]
        if len(body) != length or length < 3:
            raise RecordError("truncated service-discovery TLV")
        out.append(SdTlv(body[0], body[1], body[2], bytes(body[3:])))
        i += 2 + length
    return out


def split_bonjour(data: bytes) -> tuple[str, int, bytes]:
    """Split a Bonjour response TLV's data into (name, record type, RDATA)."""
    name, i = read_dns_name(data)
    if i + 3 > len(data):
        raise RecordError("truncated Bonjour key")
    rrtype, _version = struct.unpack_from(">HB", data, i)
    return name, rrtype, data[i + 3 :]


def record_from_txt(txt: dict[str, str]) -> FastPayRecord:
    """Build a record from decoded TXT pairs; raise RecordError if one is missing or bad."""
    try:
        if txt["txtvers"] != TXT_VERSION:
            raise RecordError(f"unknown txtvers {txt['txtvers']!r}")
        return FastPayRecord(
            role=txt["role"],
            name=txt["name"],
            public_key=bytes.fromhex(txt["pk"]),
            committee=txt["committee"],
            port=int(txt["port"]),
            group=txt.get("group"),
            members=tuple((n, h) for n, _, h in (m.partition("@") for m in
                                                  txt.get("members", "").split(",") if m)),
        )
    except (KeyError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"bad FastPay TXT record: {exc!r}") from exc


def records_from_tlvs(tlvs: bytes) -> list[FastPayRecord]:
    """Return every well-formed FastPay record in a service-discovery response.

    Non-Bonjour TLVs, failed statuses, other services and malformed FastPay TXT
    records are skipped: a response is input from any device in range.
    """
    out: list[FastPayRecord] = []
    try:
        items = parse_sd_tlvs(tlvs)
    except RecordError:
        return out
    for tlv in items:
        if tlv.protocol != defs.SD_PROTO_BONJOUR or tlv.status != defs.SD_STATUS_SUCCESS:
            continue
        try:
            name, rrtype, rdata = split_bonjour(tlv.data)
            if rrtype != DNS_TYPE_TXT or not name.lower().endswith("." + SERVICE_TYPE):
                continue
            out.append(record_from_txt(decode_txt(rdata)))
        except RecordError:
            continue
    return out


def bonjour_all_query(transaction_id: int = 1) -> bytes:
    """The query TLV asking for every Bonjour service of a peer."""
    return struct.pack("<HBB", 2, defs.SD_PROTO_BONJOUR, transaction_id & 0xFF)


def wps_pin_for(committee: str) -> str:
    """The WPS PIN clients of ``committee`` use to join its authorities' groups.

    Eight digits with the WPS checksum, derived from the committee id so both sides
    know it without configuration. It is not a secret: the group is only a carrier,
    FastPay messages are signed end to end.
    """
    import hashlib

    value = int.from_bytes(hashlib.sha256(committee.encode()).digest()[:8], "big") % 10**7
    accum = 0
    t = value * 10
    while t:
        accum += 3 * (t % 10)
        t //= 10
        accum += t % 10
        t //= 10
    check = (10 - accum % 10) % 10
    return f"{value:07d}{check}"
