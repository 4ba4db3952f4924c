"""Node configuration (``FILE.toml``) and committee file (``committee.toml``), read with tomllib.

Every path in a file is relative to that file's directory.  The format is documented in
``docs/config.md``; this module turns the TOML into frozen dataclasses and reports every
mistake as :class:`ConfigError` with the file and key, so the CLIs can print one line
instead of a traceback.  Nothing here touches the network or the protocol state.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastpayd.errors import EXIT_CONFIG, FastpaydError

ROLES = ("authority", "client")
LINK_KINDS = ("ip", "wifidirect")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Every key each table may hold: anything else is a typo and an error (with the nearest
# known key), because a misspelt key silently falls back to its default.
NODE_FILE_TABLES = frozenset({"node", "link", "client"})
CLIENT_TABLE_KEYS = frozenset({"sync_interval", "retry_after", "max_retry_after"})
NODE_KEYS = frozenset({"role", "name", "key_file", "state_dir", "control_socket",
                       "committee_file", "log_level", "log_requests", "events_max_bytes"})
LINK_KEYS = frozenset({"kind", "listen", "max_frame", "max_connections",
                       "max_connections_per_peer", "idle_timeout", "read_timeout",
                       "write_timeout", "max_unsent", "connect_timeout", "request_timeout"})
# Keys [link] takes for one kind only (LinkConfig.options, read by that link).
LINK_OPTIONS = {
    "ip": frozenset(),
    "wifidirect": frozenset({"interface", "port", "frequency", "bus", "discovery_window",
                             "discovery_pause", "join_timeout", "linger", "stale_rounds",
                             "fresh_for", "committee", "group_sharing", "choose_window",
                             "persistent_groups", "in_group_probe", "in_group_misses",
                             "silent_hold",
                             "handoff_timeout", "handoff_hold"}),
}
COMMITTEE_KEYS = frozenset({"committee_id", "authorities", "clients", "genesis", "genesis_file",
                            "genesis_sha256"})
AUTHORITY_KEYS = frozenset({"name", "public_key", "weight", "endpoint"})
CLIENT_ENTRY_KEYS = frozenset({"name", "address", "endpoint"})
GENESIS_KEYS = frozenset({"address", "balance"})
DEFAULT_EVENTS_MAX_BYTES = 16 << 20


class ConfigError(FastpaydError):
    """A configuration file is missing, unreadable or wrong; the message says where."""

    code = "ConfigError"
    exit_status = EXIT_CONFIG


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
    max_connections_per_peer: int = 32  # server: from one source address (≤ max_connections)
    idle_timeout: float = 30.0  # server: close a connection silent for this long
    read_timeout: float = 10.0  # server: a frame must complete within this of its first byte
    write_timeout: float = 10.0  # server: drop a peer that reads nothing of ours this long
    max_unsent: int = 4 << 20  # server: drop a peer with this many bytes queued to it
    connect_timeout: float = 3.0  # client side
    request_timeout: float = 5.0  # client side: per request/response
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific extras


@dataclass(frozen=True)
class ClientConfig:
    """``[client]``: how a client daemon's payment session paces itself."""

    sync_interval: float = 30.0  # s between asks for payments received (0: start-up only)
    retry_after: float = 2.0  # s before an authority that failed is tried again (doubles)
    max_retry_after: float = 30.0  # s: the back-off's ceiling


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
    client: ClientConfig = field(default_factory=ClientConfig)
    events_max_bytes: int = DEFAULT_EVENTS_MAX_BYTES  # events.jsonl rotates beyond this


def check_keys(table: dict[str, Any], known: frozenset[str] | set[str], where: str) -> None:
    """Raise ConfigError naming the first key of ``table`` not in ``known`` (and the nearest)."""
    for key in table:
        if key in known:
            continue
        nearest = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = (f"did you mean '{nearest[0]}'?" if nearest
                else f"known keys: {', '.join(sorted(known))}")
        raise ConfigError(f"{where}: unknown key '{key}' ({hint})")


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


def _number(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = float(_optional(table, key, (int, float), default, where))
    if not value > 0:
        raise ConfigError(f"{where}.{key}: must be positive, got {value:g}")
    return value


def _count(table: dict[str, Any], key: str, default: int, where: str, low: int,
           high: int | None = None) -> int:
    value = int(_optional(table, key, int, default, where))
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{where}.{key}: must be {bounds}, got {value}")
    return value


def load_node_config(path: Path | str) -> NodeConfig:
    """Read a node's TOML file; raises ConfigError."""
    path = Path(path).resolve()
    data = _read_toml(path)
    base = path.parent
    check_keys(data, NODE_FILE_TABLES, str(path))
    node = data.get("node")
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: missing [node] table")
    where = f"{path}: [node]"
    check_keys(node, NODE_KEYS, where)
    role = _require(node, "role", str, where)
    if role not in ROLES:
        raise ConfigError(f"{where}.role: must be one of {', '.join(ROLES)}, got {role!r}")
    name = _require(node, "name", str, where)
    if not name:
        raise ConfigError(f"{where}.name: must not be empty")
    log_level = _optional(node, "log_level", str, "info", where).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"{where}.log_level: must be one of {', '.join(LOG_LEVELS)}, "
                          f"got {log_level!r}")
    link_t = data.get("link", {})
    if not isinstance(link_t, dict):
        raise ConfigError(f"{path}: [link] must be a table")
    lw = f"{path}: [link]"
    kind = _optional(link_t, "kind", str, "ip", lw)
    if kind not in LINK_KINDS:
        raise ConfigError(f"{lw}.kind: must be one of {', '.join(LINK_KINDS)}, got {kind!r}")
    check_keys(link_t, LINK_KEYS | LINK_OPTIONS[kind], f"{lw} (kind = {kind!r})")
    listen_s = _optional(link_t, "listen", str, None, lw)
    max_connections = _count(link_t, "max_connections", 256, lw, 1)
    link = LinkConfig(
        kind=kind,
        listen=Endpoint.parse(listen_s, f"{lw}.listen") if listen_s is not None else None,
        max_frame=_count(link_t, "max_frame", 1 << 20, lw, 16, 1 << 20),
        max_connections=max_connections,
        max_connections_per_peer=_count(link_t, "max_connections_per_peer",
                                        min(32, max_connections), lw, 1),
        idle_timeout=_number(link_t, "idle_timeout", 30.0, lw),
        read_timeout=_number(link_t, "read_timeout", 10.0, lw),
        write_timeout=_number(link_t, "write_timeout", 10.0, lw),
        max_unsent=_count(link_t, "max_unsent", 4 << 20, lw, 20),
        connect_timeout=_number(link_t, "connect_timeout", 3.0, lw),
        request_timeout=_number(link_t, "request_timeout", 5.0, lw),
        options={k: v for k, v in link_t.items() if k not in LINK_KEYS},
    )
    if link.max_unsent < link.max_frame + 4:
        raise ConfigError(f"{lw}.max_unsent: must hold one whole frame (max_frame + 4 = "
                          f"{link.max_frame + 4} bytes), got {link.max_unsent}")
    if link.max_connections_per_peer > link.max_connections:
        raise ConfigError(f"{lw}.max_connections_per_peer: must not exceed max_connections "
                          f"({link.max_connections})")
    if kind == "ip" and link.listen is None and role == "authority":
        raise ConfigError(f"{lw}.listen: an authority on an IP link needs a listen address")
    client = _client_config(data, path)
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
        client=client,
        events_max_bytes=_count(node, "events_max_bytes", DEFAULT_EVENTS_MAX_BYTES, where,
                                1 << 16),
    )


def check_identity(config: NodeConfig, cf: CommitteeFile, public_key: bytes) -> None:
    """Check that the node's role and key agree with the committee file; raise ConfigError.

    An authority must be a committee member and hold that member's key; a client must not
    hold an authority's key, and if the clients directory names it, its address must be
    the client's key (else payments to that name would go to someone else).
    """
    where = f"{config.path}: [node]"
    if config.role == "authority":
        entry = cf.authority(config.name)
        if entry is None:
            members = ", ".join(a.name for a in cf.authorities)
            raise ConfigError(f"{where}.name: authority {config.name!r} is not in the "
                              f"committee of {cf.path} (members: {members})")
        if entry.public_key != public_key:
            raise ConfigError(f"{where}.key_file: {config.key_file} is not the key of "
                              f"authority {config.name!r} in {cf.path} (public key "
                              f"{public_key.hex()[:16]}…, committee has "
                              f"{entry.public_key.hex()[:16]}…)")
        return
    for a in cf.authorities:
        if a.public_key == public_key:
            raise ConfigError(f"{where}.role: 'client', but {config.key_file} ([node].key_file) "
                              f"is the key of authority {a.name!r} in {cf.path}")
    client = cf.client_by_name(config.name)
    if client is not None and client.address != public_key:
        raise ConfigError(f"{where}.key_file: {config.key_file} is not the key of client "
                          f"{config.name!r} in {cf.path}'s clients directory (address "
                          f"{client.address.hex()[:16]}…)")


def _client_config(data: dict[str, Any], path: Path) -> ClientConfig:
    table = data.get("client", {})
    cw = f"{path}: [client]"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [client] must be a table")
    check_keys(table, CLIENT_TABLE_KEYS, cw)
    values = {}
    for key, default in (("sync_interval", 30.0), ("retry_after", 2.0),
                         ("max_retry_after", 30.0)):
        v = float(_optional(table, key, (int, float), default, cw))
        if v < 0 or (key in ("retry_after", "max_retry_after") and v <= 0):
            raise ConfigError(f"{cw}.{key}: must be a positive number of seconds")
        values[key] = v
    return ClientConfig(**values)


def load_committee_file(path: Path | str) -> CommitteeFile:
    """Read ``committee.toml``; raises ConfigError."""
    path = Path(path).resolve()
    data = _read_toml(path)
    where = str(path)
    check_keys(data, COMMITTEE_KEYS, where)
    committee_id = _require(data, "committee_id", str, where)
    auths: list[AuthorityEntry] = []
    raw_auths = _require(data, "authorities", list, where)
    if not raw_auths:
        raise ConfigError(f"{where}: the committee has no authorities")
    for i, a in enumerate(raw_auths):
        w = f"{where}: authorities[{i}]"
        if not isinstance(a, dict):
            raise ConfigError(f"{w}: expected a table")
        check_keys(a, AUTHORITY_KEYS, w)
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
        check_keys(c, CLIENT_ENTRY_KEYS, w)
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
        check_keys(g, GENESIS_KEYS, w)
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
