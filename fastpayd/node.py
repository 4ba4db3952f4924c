"""The running node: what authority and client daemons share.

``Node.open(config)`` is an async context manager that brings the node up in order —
event log, database (with group commit), protocol state, link (serving requests), control
socket — and tears it down in reverse, always: the link stops first (owed replies are
flushed, each only once durable), then the database commits what is staged, then the
files close.  :func:`fastpayd.daemon.run` wraps it with signals and sd_notify.

Subclasses (:class:`fastpayd.authority.AuthorityNode`, :class:`fastpayd.client.ClientNode`)
provide ``_setup_state()``, the link's request handler ``handle(message, peer)`` and their
``do_<verb>`` control commands.  Common commands live here: ``status``, ``peers``,
``events``, ``wait`` (:mod:`fastpayd.waits`), ``reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastpayd import address, waits
from fastpayd.config import (
    CommitteeFile,
    ConfigError,
    NodeConfig,
    check_identity,
    load_committee_file,
    load_node_config,
)
from fastpayd.control import (
    ControlError,
    ControlServer,
    ControlSocketInUse,
    Progress,
    unless_hung_up,
)
from fastpayd.database import Database
from fastpayd.events import EventLog
from fastpayd.keys import KeyFileError, read_key
from fastpayd.link import Link, LinkError, PeerEntry, directory_from_committee, make_link
from fastpayd.statelock import StateLock
from protocol import AuthorityInfo, Committee, KeyPair

log = logging.getLogger(__name__)


def build_committee(cf: CommitteeFile) -> Committee:
    """The protocol Committee described by a committee file; raises ConfigError."""
    try:
        return Committee(
            cf.committee_id,
            {a.name: AuthorityInfo(a.public_key, a.weight) for a in cf.authorities},
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{cf.path}: invalid committee: {exc}") from None


def lock_state(config: NodeConfig) -> StateLock:
    """Create ``state_dir`` if needed and take its lock; ConfigError names the key."""
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        lock = StateLock(config.state_dir)
        lock.acquire()
    except OSError as exc:
        raise ConfigError(f"{config.path}: [node].state_dir = {str(config.state_dir)!r}: "
                          f"cannot use it: {exc.strerror or exc}") from None
    return lock


class Node:
    """Common base of the daemons (see module docstring)."""

    role = "node"

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.name = config.name
        self.committee_file = load_committee_file(config.committee_file)
        self.committee = build_committee(self.committee_file)
        try:
            self.keypair: KeyPair = read_key(config.key_file)
        except KeyFileError as exc:
            raise ConfigError(f"{config.path}: [node].key_file: {exc}") from None
        check_identity(config, self.committee_file, self.keypair.public_key)
        self.started_at = time.monotonic()
        self.events = EventLog(config.state_dir / "events.jsonl", config.name,
                               max_bytes=config.events_max_bytes)
        self.db = Database(config.state_dir / "fastpay.sqlite")
        self.link: Link | None = None
        self.control: ControlServer | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: NodeConfig) -> AsyncIterator[Node]:
        """Start a node of this class; always stops it on exit.

        Raises StateLocked if another process serves this ``state_dir`` (checked before
        anything of the state is read) and ConfigError naming the key at fault.
        """
        lock = lock_state(config)
        try:
            node = cls(config)
        except BaseException:
            lock.release()
            raise
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(lock.release)  # registered first: released last
            stack.callback(node.events.close)
            await stack.enter_async_context(node.db)
            await node._setup_state()
            node.link = make_link(config.link, node._directory(), node.events, config.name)
            stack.push_async_callback(node._close_link)
            try:
                await node.link.start(node)
            except LinkError as exc:
                raise LinkError(f"{config.path}: [link].listen: {exc}") from None
            await node._start_work()
            stack.push_async_callback(node._stop_work)
            node.control = ControlServer(config.control_socket, node)
            try:
                await stack.enter_async_context(node.control)
            except ControlSocketInUse as exc:
                raise ControlSocketInUse(exc.path, f"{config.path}: [node].control_socket"
                                         ) from None
            except OSError as exc:
                raise ConfigError(f"{config.path}: [node].control_socket = "
                                  f"{str(config.control_socket)!r}: "
                                  f"{exc.strerror or exc}") from None
            node.events.emit(
                "node_started", role=cls.role, listen=node.link.local_address,
                control_socket=str(config.control_socket), pid=os.getpid(),
            )
            yield node
            node.events.emit("node_stopping")

    async def _close_link(self) -> None:
        if self.link is not None:
            await self.link.close()
        await self._before_db_close()

    async def _before_db_close(self) -> None:
        """Hook: anything to stage before the final commit."""

    async def _setup_state(self) -> None:
        raise NotImplementedError

    async def _start_work(self) -> None:
        """Hook: background work that needs the link, started before the control socket."""

    async def _stop_work(self) -> None:
        """Hook: stop what :meth:`_start_work` started (before the link closes)."""

    def handle(self, message: Any, peer: str) -> tuple[Any, asyncio.Future[Any] | None]:
        """The link's request handler: (response, gate) — see fastpayd.link.stream."""
        raise NotImplementedError

    def _directory(self) -> dict[str, PeerEntry]:
        return directory_from_committee(self.committee_file)

    def reload(self) -> list[str]:
        """Re-read what can change at runtime (SIGHUP); return what changed.

        Log level and the peers directory (endpoints, clients) are reloaded; the committee
        itself (members, keys, weights) cannot change under a running node.
        """
        changed: list[str] = []
        config = load_node_config(self.config.path)
        if config.log_level != self.config.log_level:
            logging.getLogger().setLevel(config.log_level.upper())
            changed.append(f"log_level={config.log_level}")
        cf = load_committee_file(config.committee_file)
        if build_committee(cf) != self.committee:
            raise ConfigError("the committee changed; restart the node to use it")
        if cf != self.committee_file:
            self.committee_file = cf
            if self.link is not None:
                self.link.update_directory(self._directory())
            changed.append("peers directory")
        self.config = config
        self.events.emit("config_reloaded", changed=changed)
        return changed

    # -- helpers -------------------------------------------------------------------------

    def resolve_account(self, text: Any, *, payee: bool = False, force: bool = False) -> bytes:
        """An account given as a client name from the directory, an ``fp1…`` address
        (checksummed, :mod:`fastpayd.address`) or 64 hex digits → address bytes.

        For a payee (``payee``), 64 hex digits that are no known account (directory,
        genesis, our own) are refused unless ``force`` (a typo there is another valid
        account), and the all-zero address is always refused (nobody holds its key).
        """
        if not isinstance(text, str) or not text:
            raise ControlError("BadRequest", "expected an account name or address")
        entry = self.committee_file.client_by_name(text)
        if entry is not None:
            return entry.address
        if address.looks_like_address(text):
            try:
                raw = address.decode(text)
            except address.AddressError as exc:
                raise ControlError("BadAddress", f"{text!r}: {exc}") from None
        else:
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ControlError("UnknownAccount", f"{text!r} is neither a known client "
                                   "nor an address (fp1... or 64 hex digits)")
            if payee and raw == bytes(32):
                raise ControlError("BadAddress", "the all-zero address belongs to nobody")
            if payee and not force and not self.is_known_account(raw):
                raise ControlError("UnknownRecipient", f"{text} is no known account and a "
                                   "raw hex address has no checksum: check it, give its "
                                   f"{address.HRP}1... form, or pay it anyway with force "
                                   "(fastpay transfer --force)")
        if payee and raw == bytes(32):
            raise ControlError("BadAddress", "the all-zero address belongs to nobody")
        return raw

    def is_known_account(self, raw: bytes) -> bool:
        """Whether ``raw`` is a directory client, a genesis account or this node's own."""
        return (self.committee_file.client_by_address(raw) is not None
                or raw == self.keypair.public_key
                or any(a == raw for a, _ in self.committee_file.genesis))

    def account_label(self, address: bytes) -> str:
        entry = self.committee_file.client_by_address(address)
        return entry.name if entry is not None else address.hex()

    # -- common control commands -----------------------------------------------------------

    async def do_status(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Node identity, uptime, link and storage counters."""
        return {
            "name": self.name,
            "role": self.role,
            "address": self.keypair.public_key.hex(),
            "fp_address": address.encode(self.keypair.public_key),
            "committee_id": self.committee.committee_id,
            "authorities": sorted(self.committee.names),
            "quorum_threshold": self.committee.quorum_threshold,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.started_at, 3),
            "link": {
                "kind": self.config.link.kind,
                "listen": self.link.local_address if self.link else None,
                **(self.link.stats() if self.link else {}),
            },
            "storage": {
                "path": str(self.db.path),
                "commits": self.db.commit_count,
                "committed_writes": self.db.committed_writes,
            },
            **self.status_extra(),
        }

    def status_extra(self) -> dict[str, Any]:
        return {}

    async def do_peers(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Known peers (authorities and clients) and the link's view of them."""
        return {"peers": self.link.peers() if self.link else []}

    async def do_events(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Events after sequence number `since` (default 0), at most `limit`.

        With `wait` (seconds), a long-poll: if there is no such event yet, the answer
        comes as soon as one is emitted, or after `wait` seconds with no events.
        """
        since = request.get("since", 0)
        limit = request.get("limit")
        if not isinstance(since, int) or (limit is not None and not isinstance(limit, int)):
            raise ControlError("BadRequest", "since and limit are integers")
        wait = request.get("wait")
        if wait is not None and wait is not False:
            if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
                raise ControlError("BadRequest", "wait is a number of seconds >= 0")
            if await unless_hung_up(self.events.wait_after(since, float(wait))):
                raise ControlError("Gone", "the caller closed the connection")
        return {"events": self.events.since(since, limit), "last_seq": self.events.last_seq}

    async def do_wait(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Long-poll until `for` holds: `ready`; `payment` (client: `sender`, `min_amount`,
        `balance`, `since`); `transfer` (client: `sequence_number` or `ticket`, `state`
        certified/final/completed/failed).  `timeout` s (60), then `Timeout`."""
        return await waits.wait(self, request, progress)

    async def do_reload(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Reload the config like SIGHUP does."""
        try:
            return {"changed": self.reload()}
        except ConfigError as exc:
            raise ControlError("ConfigError", str(exc)) from None
