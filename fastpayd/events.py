"""Structured events: one JSON object per line, each stamped with ``time.monotonic()``.

Every step a user would time (order sent, vote received, certificate formed, confirmation
delivered, payment received, peer connected, ...) is recorded with :meth:`EventLog.emit`.
Events go to ``<state_dir>/events.jsonl`` (appended, flushed per event so a killed process
leaves a usable log) and to an in-memory ring that the control socket's ``events`` command
serves by sequence number, so pollers can ask for "everything after #n".

Field ``seq`` grows across restarts: at start the log's last ``seq`` (from the tail of
``events.jsonl``, else of ``events.jsonl.1``) is where numbering resumes, so a poller's
``since`` stays valid when the daemon restarts.  Field ``t`` is ``time.monotonic()``
(CLOCK_MONOTONIC, comparable between processes on one host, which is what the emulation's
metrics need); ``wall`` is ``time.time()`` for humans.

The disk use is bounded: when ``events.jsonl`` grows past ``max_bytes`` it is renamed
``events.jsonl.1`` (replacing the previous one) and a new file is started, so the two
files never hold much more than ``2 * max_bytes``.  (External ``logrotate`` with
``copytruncate`` works too: the size is read back from the file after every write.)
Events that input from the network can trigger at will (``RATE_LIMITED``: connections,
bad frames) pass a token bucket per event name; what it holds back is counted and the
next one that passes carries ``suppressed`` (how many were dropped before it).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 << 20
# Events a remote peer can cause as often as it likes, and their budget (per event name).
RATE_LIMITED = frozenset({"peer_connected", "peer_disconnected", "bad_frame",
                          "connection_refused", "peer_dropped"})
RATE_PER_SECOND = 20.0
RATE_BURST = 200.0
_TAIL = 64 << 10  # bytes read back from the end of a log to find its last seq


def last_seq_in(path: Path) -> int | None:
    """The ``seq`` of the last complete, parseable line of an event log, or None."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            seq = json.loads(line).get("seq")
        except (ValueError, AttributeError):
            continue  # a line cut by a crash, or the first (partial) line of the tail
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


class _Bucket:
    __slots__ = ("at", "suppressed", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = RATE_BURST
        self.at = now
        self.suppressed = 0


class EventLog:
    """Append-only event log; ``emit`` never raises (a full disk loses events, not money)."""

    def __init__(self, path: Path | None, node: str, ring_size: int = 10_000,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.node = node
        self.path = path
        self.max_bytes = max_bytes
        self.rotations = 0
        self._ring: collections.deque[dict[str, Any]] = collections.deque(maxlen=ring_size)
        self._seq = 0
        self._size = 0
        self._file: IO[bytes] | None = None
        self._buckets: dict[str, _Bucket] = {}
        self._waiters: list[asyncio.Future[None]] = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            last = last_seq_in(path)
            if last is None:
                last = last_seq_in(self._rotated)
            self._seq = last or 0
            self._open()

    @property
    def _rotated(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".1")

    def _open(self) -> None:
        assert self.path is not None
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._size = self._file.tell()

    def _allowed(self, event: str, now: float) -> int | None:
        """None if ``event`` is over its budget now, else how many were held back before it."""
        bucket = self._buckets.get(event)
        if bucket is None:
            bucket = self._buckets[event] = _Bucket(now)
        bucket.tokens = min(RATE_BURST, bucket.tokens + (now - bucket.at) * RATE_PER_SECOND)
        bucket.at = now
        if bucket.tokens < 1.0:
            bucket.suppressed += 1
            return None
        bucket.tokens -= 1.0
        suppressed, bucket.suppressed = bucket.suppressed, 0
        return suppressed

    def emit(self, event: str, **fields: Any) -> dict[str, Any] | None:
        """Record ``event`` with ``fields``; return the record (None if rate-limited)."""
        now = time.monotonic()
        suppressed = 0
        if event in RATE_LIMITED:
            allowed = self._allowed(event, now)
            if allowed is None:
                return None
            suppressed = allowed
        self._seq += 1
        record: dict[str, Any] = {
            "seq": self._seq,
            "t": now,
            "wall": time.time(),
            "node": self.node,
            "event": event,
        }
        record.update(fields)
        if suppressed:
            record["suppressed"] = suppressed
        self._ring.append(record)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        if self._file is not None:
            try:
                self._file.write((json.dumps(record, default=str) + "\n").encode())
                self._file.flush()
                self._size = self._file.tell()
                if self._size > self.max_bytes:
                    self._rotate()
            except OSError as exc:
                log.warning("cannot write event log: %s", exc)
        return record

    def _rotate(self) -> None:
        assert self._file is not None and self.path is not None
        self._file.close()
        self._file = None
        try:
            os.replace(self.path, self._rotated)
            self.rotations += 1
        finally:
            self._open()

    async def wait_after(self, seq: int, timeout: float) -> None:
        """Return once an event after ``seq`` exists, or after ``timeout`` seconds."""
        if self._seq > seq:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def since(self, seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the events with ``seq`` greater than ``seq`` still in the ring, oldest first."""
        out = [r for r in self._ring if r["seq"] > seq]
        return out[:limit] if limit is not None else out

    @property
    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
