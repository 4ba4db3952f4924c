"""Structured events: one JSON object per line, each stamped with ``time.monotonic()``.

Every step a user would time (order sent, vote received, certificate formed, confirmation
delivered, payment received, peer connected, ...) is recorded with :meth:`EventLog.emit`.
Events go to ``<state_dir>/events.jsonl`` (appended, flushed per event so a killed process
leaves a usable log) and to an in-memory ring that the control socket's ``events`` command
serves by sequence number, so pollers can ask for "everything after #n".

Field ``t`` is ``time.monotonic()`` (CLOCK_MONOTONIC, comparable between processes on one
host, which is what the emulation's metrics need); ``wall`` is ``time.time()`` for humans.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


class EventLog:
    """Append-only event log; ``emit`` never raises (a full disk loses events, not money)."""

    def __init__(self, path: Path | None, node: str, ring_size: int = 10_000) -> None:
        self.node = node
        self.path = path
        self._ring: collections.deque[dict[str, Any]] = collections.deque(maxlen=ring_size)
        self._seq = 0
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Record ``event`` with ``fields``; return the record."""
        self._seq += 1
        record: dict[str, Any] = {
            "seq": self._seq,
            "t": time.monotonic(),
            "wall": time.time(),
            "node": self.node,
            "event": event,
        }
        record.update(fields)
        self._ring.append(record)
        if self._file is not None:
            try:
                self._file.write(json.dumps(record, default=str) + "\n")
                self._file.flush()
            except OSError as exc:
                log.warning("cannot write event log: %s", exc)
        return record

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
