"""Links: how a node reaches its peers.  One interface, one module per kind.

A :class:`Link` does three things for a node:

* serves inbound requests: ``start(handler)`` and every decoded request goes to
  ``handler.handle(message, peer)`` (see :mod:`fastpayd.link.stream` for the pump);
* opens request channels to named peers: ``await link.connect("auth2")`` returns a
  :class:`~fastpayd.link.stream.ClientConnection` (cached while it stays open);
* reports what it sees: ``peers()`` for the control socket, events for the metrics;
* says which authorities it can reach *now* (:meth:`Link.reachable_authorities`, best
  first), how many it can work with at once (:attr:`Link.max_parallel`), calls the
  callbacks given to :meth:`Link.on_change` when that changes, and lets go of a peer
  (:meth:`Link.release`).  The client's payment session plans with exactly this, so it
  never guesses what a link can do.

Kinds:

* ``ip`` (:mod:`fastpayd.link.ip`): static endpoints from the committee file; TCP on
  loopback or a LAN.  For tests, benchmarks and wired deployments.
* ``wifidirect`` (:mod:`fastpayd.link.wifidirect`): discovery through wpa_supplicant's
  P2P API, addresses from the group; same framed TCP once joined.  Reaches the
  authorities in range, one group (so one authority) at a time.

A link is an async context manager: ``async with make_link(...) as link`` always closes.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

from fastpayd.config import CommitteeFile, ConfigError, Endpoint, LinkConfig
from fastpayd.events import EventLog
from fastpayd.link.stream import (
    ClientConnection,
    ConnectionTracker,
    LinkError,
    RequestHandler,
    ServerConnection,
)

__all__ = [
    "ClientConnection",
    "Link",
    "LinkError",
    "PeerEntry",
    "RequestHandler",
    "directory_from_committee",
    "make_link",
]


@dataclass(frozen=True)
class PeerEntry:
    """A peer the node may talk to: an authority of the committee or a known client."""

    name: str
    role: str  # "authority" | "client"
    key: bytes  # authority public key / client address
    endpoint: Endpoint | None  # static address (IP link); None when it must be discovered


def directory_from_committee(committee: CommitteeFile) -> dict[str, PeerEntry]:
    """Return name → PeerEntry for every authority and client of the committee file."""
    peers: dict[str, PeerEntry] = {}
    for a in committee.authorities:
        peers[a.name] = PeerEntry(a.name, "authority", a.public_key, a.endpoint)
    for c in committee.clients:
        peers[c.name] = PeerEntry(c.name, "client", c.address, c.endpoint)
    return peers


class Link(abc.ABC):
    """A node's attachment to its peers (see module docstring)."""

    kind: ClassVar[str]
    #: How many peers the link can work with at once; None: any number (IP).
    max_parallel: ClassVar[int | None] = None

    def __init__(
        self,
        config: LinkConfig,
        directory: dict[str, PeerEntry],
        events: EventLog,
        self_name: str,
    ) -> None:
        self.config = config
        self.directory = dict(directory)
        self.events = events
        self.self_name = self_name
        self._change_callbacks: list[Callable[[], None]] = []

    @abc.abstractmethod
    async def start(self, handler: RequestHandler | None) -> None:
        """Start serving inbound requests with ``handler`` (None: outbound only)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop serving, close every connection; owed responses are flushed first."""

    @abc.abstractmethod
    async def connect(self, peer: str) -> ClientConnection:
        """Return an open connection to ``peer``; raises LinkError if unreachable."""

    @abc.abstractmethod
    def peers(self) -> list[dict[str, Any]]:
        """Return the peers known to the link, with their state, for the control socket."""

    @property
    @abc.abstractmethod
    def local_address(self) -> str:
        """Where this node listens (human readable)."""

    def stats(self) -> dict[str, Any]:
        """Counters for ``status``."""
        return {}

    def _tracker_for_config(self) -> ConnectionTracker:
        return ConnectionTracker(self.config.max_connections,
                                 self.config.max_connections_per_peer)

    def _server_factory(self, handler: RequestHandler, tracker: ConnectionTracker
                        ) -> Callable[[], ServerConnection]:
        """The protocol factory serving ``handler`` with every server limit of ``[link]``."""
        cfg = self.config

        def factory() -> ServerConnection:
            return ServerConnection(handler, tracker, max_frame=cfg.max_frame,
                                    idle_timeout=cfg.idle_timeout,
                                    read_timeout=cfg.read_timeout,
                                    write_timeout=cfg.write_timeout,
                                    max_unsent=cfg.max_unsent, on_event=self.events.emit)

        return factory

    def reachable_authorities(self) -> list[str]:
        """Authorities that can be reached now, those worth trying first first.

        The base (static endpoints): every authority of the directory, always."""
        return sorted(n for n, e in self.directory.items() if e.role == "authority")

    def reachable_clients(self) -> list[str] | None:
        """Clients that can be reached now (a payer's hand-off), None when the link
        cannot tell (the base: static endpoints, reachable or not only on trying)."""
        return None

    def groups(self) -> dict[str, str]:
        """Authority → the group a visit to it enters, for those sharing one (WiFi Direct
        group sharing); the base: none, each authority on its own."""
        return {}

    def in_range(self) -> list[dict[str, Any]] | None:
        """Authorities in radio range with signal and freshness; None on a link without range."""
        return None

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever :meth:`reachable_authorities` may have changed."""
        self._change_callbacks.append(callback)

    def _changed(self) -> None:
        for callback in list(self._change_callbacks):
            callback()

    def release(self, peer: str) -> None:
        """The caller has nothing more for ``peer`` now (a mobile link leaves its group)."""
        return None

    def update_directory(self, directory: dict[str, PeerEntry]) -> None:
        """Replace the peers directory (SIGHUP)."""
        self.directory = dict(directory)

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


_KINDS = {"ip": "fastpayd.link.ip:IpLink", "wifidirect": "fastpayd.link.wifidirect:WifiDirectLink"}


def make_link(
    config: LinkConfig, directory: dict[str, PeerEntry], events: EventLog, self_name: str
) -> Link:
    """Build the link named by ``config.kind``; raises ConfigError for an unavailable kind."""
    target = _KINDS.get(config.kind)
    if target is None:
        raise ConfigError(f"unknown link kind {config.kind!r}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"link kind {config.kind!r} is not available yet") from None
        raise
    cls: type[Link] = getattr(module, cls_name)
    return cls(config, directory, events, self_name)
