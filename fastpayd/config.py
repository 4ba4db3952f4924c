"""Node configuration (``FILE.toml``) and committee file (``committee.toml``), read with tomllib.

Every path in a file is relative to that file's directory.  The format is documented in
``docs/config.md``; this module turns the TOML into frozen dataclasses and reports every
mistake as :class:`ConfigError` with the file and key, so the CLIs can print one line
instead of a traceback.  Nothing here touches the network or the protocol state.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("authority", "client")
LINK_KINDS = ("ip", "wifidirect")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A configuration file is missing, unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class Endpoint:
    """An IP endpoint ``host:port`` (IPv6 hosts in brackets: ``[::1]:9100``)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, where: str = "endpoint") -> Endpoint:
        if not isinstance(text, str):
            raise ConfigError(f"{where}: expected 'host:port', got {text!r}")
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
        else:
            host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{where}: expected 'host:port', got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        try:
            if ipaddress.ip_address(self.host).version == 6:
                return f"[{self.host}]:{self.port}"
        except ValueError:
            pass
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AuthorityEntry:
    name: str
    public_key: bytes
    weight: int
    endpoint: Endpoint | None


@dataclass(frozen=True)
class ClientEntry:
    name: str
    address: bytes
    endpoint: Endpoint | None


@dataclass(frozen=True)
class CommitteeFile:
    """The committee, the clients directory and the genesis balances."""

    committee_id: str
    authorities: tuple[AuthorityEntry, ...]
    clients: tuple[ClientEntry, ...]
    genesis: tuple[tuple[bytes, int], ...]
    path: Path | None = None
    genesis_file: Path | None = None  # large genesis: see fastpayd.genesis
    genesis_sha256: bytes | None = None

    def authority(self, name: str) -> AuthorityEntry | None:
        return next((a for a in self.authorities if a.name == name), None)

    def client_by_name(self, name: str) -> ClientEntry | None:
        return next((c for c in self.clients if c.name == name), None)

    def client_by_address(self, address: bytes) -> ClientEntry | None:
        return next((c for c in self.clients if c.address == address), None)


@dataclass(frozen=True)
class LinkConfig:
    kind: str = "ip"
    listen: Endpoint | None = None
    max_frame: int = 1 << 20
    max_connections: int = 256
    idle_timeout: float = 30.0  # server: close a connection silent for this long
    read_timeout: float = 10.0  # server: a started frame must complete within this
    connect_timeout: float = 3.0  # client side
    request_timeout: float = 5.0  # client side: per request/response
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific extras


@dataclass(frozen=True)
class NodeConfig:
    role: str
    name: str
    key_file: Path
    state_dir: Path
    control_socket: Path
    committee_file: Path
    log_level: str
    link: LinkConfig
    path: Path
    log_requests: bool = False  # authority: one event per order/confirmation (costly)


def _require(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key '{key}'")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}: wrong type ({type(value).__name__})")
    return value


def _optional(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any,
              where: str) -> Any:
    if key not in table:
        return default
    return _require(table, key, kind, where)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _hex(value: Any, size: int, where: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{where}: not hex: {value!r}") from None
    if len(raw) != size:
        raise ConfigError(f"{where}: expected {size} bytes, got {len(raw)}")
    return raw


def load_node_config(path: Path | str) -> NodeConfig:
    """Read a node's TOML file; raises ConfigError."""
    path = Path(path).resolve()
    data = _read_toml(path)
    base = path.parent
    node = data.get("node")
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: missing [node] table")
    where = f"{path}: [node]"
    role = _require(node, "role", str, where)
    if role not in ROLES:
        raise ConfigError(f"{where}.role: must be one of {', '.join(ROLES)}, got {role!r}")
    name = _require(node, "name", str, where)
    log_level = _optional(node, "log_level", str, "info", where).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"{where}.log_level: must be one of {', '.join(LOG_LEVELS)}")
    link_t = data.get("link", {})
    if not isinstance(link_t, dict):
        raise ConfigError(f"{path}: [link] must be a table")
    lw = f"{path}: [link]"
    kind = _optional(link_t, "kind", str, "ip", lw)
    if kind not in LINK_KINDS:
        raise ConfigError(f"{lw}.kind: must be one of {', '.join(LINK_KINDS)}, got {kind!r}")
    listen_s = _optional(link_t, "listen", str, None, lw)
    known = {"kind", "listen", "max_frame", "max_connections", "idle_timeout", "read_timeout",
             "connect_timeout", "request_timeout"}
    link = LinkConfig(
        kind=kind,
        listen=Endpoint.parse(listen_s, f"{lw}.listen") if listen_s is not None else None,
        max_frame=_optional(link_t, "max_frame", int, 1 << 20, lw),
        max_connections=_optional(link_t, "max_connections", int, 256, lw),
        idle_timeout=float(_optional(link_t, "idle_timeout", (int, float), 30.0, lw)),
        read_timeout=float(_optional(link_t, "read_timeout", (int, float), 10.0, lw)),
        connect_timeout=float(_optional(link_t, "connect_timeout", (int, float), 3.0, lw)),
        request_timeout=float(_optional(link_t, "request_timeout", (int, float), 5.0, lw)),
        options={k: v for k, v in link_t.items() if k not in known},
    )
    if not 16 <= link.max_frame <= 1 << 20:
        raise ConfigError(f"{lw}.max_frame: must be between 16 and 1048576")
    if link.max_connections < 1:
        raise ConfigError(f"{lw}.max_connections: must be at least 1")
    if kind == "ip" and link.listen is None and role == "authority":
        raise ConfigError(f"{lw}.listen: an authority on an IP link needs a listen address")
    return NodeConfig(
        role=role,
        name=name,
        key_file=base / _require(node, "key_file", str, where),
        state_dir=base / _optional(node, "state_dir", str, f"state/{name}", where),
        control_socket=base / _optional(node, "control_socket", str, f"run/{name}.sock", where),
        committee_file=base / _optional(node, "committee_file", str, "committee.toml", where),
        log_level=log_level,
        link=link,
        path=path,
        log_requests=_optional(node, "log_requests", bool, False, where),
    )


def load_committee_file(path: Path | str) -> CommitteeFile:
    """Read ``committee.toml``; raises ConfigError."""
    path = Path(path).resolve()
    data = _read_toml(path)
    where = str(path)
    committee_id = _require(data, "committee_id", str, where)
    auths: list[AuthorityEntry] = []
    raw_auths = _require(data, "authorities", list, where)
    if not raw_auths:
        raise ConfigError(f"{where}: the committee has no authorities")
    for i, a in enumerate(raw_auths):
        w = f"{where}: authorities[{i}]"
        if not isinstance(a, dict):
            raise ConfigError(f"{w}: expected a table")
        ep = _optional(a, "endpoint", str, None, w)
        weight = _optional(a, "weight", int, 1, w)
        if weight < 1:
            raise ConfigError(f"{w}.weight: must be positive")
        auths.append(AuthorityEntry(
            name=_require(a, "name", str, w),
            public_key=_hex(_require(a, "public_key", str, w), 32, f"{w}.public_key"),
            weight=weight,
            endpoint=Endpoint.parse(ep, f"{w}.endpoint") if ep is not None else None,
        ))
    if len({a.name for a in auths}) != len(auths):
        raise ConfigError(f"{where}: duplicate authority names")
    clients: list[ClientEntry] = []
    for i, c in enumerate(_optional(data, "clients", list, [], where)):
        w = f"{where}: clients[{i}]"
        if not isinstance(c, dict):
            raise ConfigError(f"{w}: expected a table")
        ep = _optional(c, "endpoint", str, None, w)
        clients.append(ClientEntry(
            name=_require(c, "name", str, w),
            address=_hex(_require(c, "address", str, w), 32, f"{w}.address"),
            endpoint=Endpoint.parse(ep, f"{w}.endpoint") if ep is not None else None,
        ))
    genesis: list[tuple[bytes, int]] = []
    for i, g in enumerate(_optional(data, "genesis", list, [], where)):
        w = f"{where}: genesis[{i}]"
        if not isinstance(g, dict):
            raise ConfigError(f"{w}: expected a table")
        balance = _require(g, "balance", int, w)
        if balance < 0:
            raise ConfigError(f"{w}.balance: must not be negative")
        genesis.append((_hex(_require(g, "address", str, w), 32, f"{w}.address"), balance))
    genesis_file = _optional(data, "genesis_file", str, None, where)
    genesis_sha256 = _optional(data, "genesis_sha256", str, None, where)
    if (genesis_file is None) != (genesis_sha256 is None):
        raise ConfigError(f"{where}: genesis_file and genesis_sha256 go together")
    return CommitteeFile(
        committee_id, tuple(auths), tuple(clients), tuple(genesis), path,
        genesis_file=None if genesis_file is None else path.parent / genesis_file,
        genesis_sha256=None if genesis_sha256 is None
        else _hex(genesis_sha256, 32, f"{where}: genesis_sha256"),
    )
