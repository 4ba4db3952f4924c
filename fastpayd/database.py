"""SQLite durability with group commit.

How it works
------------
Handlers running on the event loop *stage* writes (``stage(table, key, value)``): the write
lands in an in-memory dict and bumps a version counter.  A handler that is about to reply
takes :meth:`Database.gate` (a future shared by everything staged since the last batch was
taken) and the reply is released by its done-callback; coroutines ``await db.durable()``.

A single committer task owns the SQLite connection.  Whenever something is staged it takes
the *whole* staged dict, writes it in one transaction (``BEGIN IMMEDIATE`` + upserts, on the
loop: page-cache work only) and hands ``COMMIT`` to a dedicated thread (``synchronous=FULL``
in WAL mode: COMMIT returns only after fsync), then resolves that batch's future.
Writes staged while a batch is committing go into the next batch, so N concurrent requests
cost about two fsyncs, not N.  Later writes to the same key overwrite earlier staged ones,
which is correct because the value is the key's whole latest state.

Append-only tables (``log``) take ``append(table, entry)`` instead: a batch writes all the
entries appended to a table since the previous batch as *one* row, keyed by an 8-byte
big-endian batch number, whose value is the entries concatenated (each entry must be
self-delimiting, e.g. msgpack objects).  A row costs several microseconds of SQLite work
whatever its size, so one row per batch instead of one per entry matters on the hot path.

COMMIT runs in its own thread so the event loop keeps decoding and verifying the next
requests during the fsync (an inline COMMIT stalls the loop for the whole fsync).

Rare reads while serving (key listings for the control socket) go through a
second connection on the event loop's thread: in WAL mode a reader never waits for the
committer's transaction or its fsync, and it sees committed state only.
:meth:`bulk_insert` loads many rows at start-up (a genesis) in one transaction of its own,
off the loop.  (A ``WITHOUT ROWID`` accounts table was tried: its upserts of ~200-byte
summaries cost more than the rowid table's, 10 us per order in the in-process pipeline.)

A failed commit is fatal: the in-memory state already reflects writes that are not on disk,
so no reply may be released; waiters get :class:`StorageError` and ``failed`` is set for the
daemon to shut down.  On restart the process rebuilds from what the disk holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Protocol

from fastpayd.errors import FastpaydError

log = logging.getLogger(__name__)

TABLES = ("accounts", "log", "meta", "history")
APPEND_TABLES = ("log",)  # written with append(), one row per batch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (key BLOB PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log (key BLOB PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key BLOB PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS history (key BLOB PRIMARY KEY, value BLOB NOT NULL);
"""


CACHE_KIB = 32 * 1024  # SQLite page cache per connection (default 2 MiB)
MMAP_BYTES = 1 << 30  # reads map the file: no read syscall per page (virtual size only)
BULK_CACHE_KIB = 512 * 1024


def _tune_cache(conn: sqlite3.Connection) -> None:
    # Point reads and upserts land on random pages of the accounts B-tree: with the default
    # 2 MiB cache, a large table costs a read syscall (or several) per request.
    conn.execute(f"PRAGMA cache_size={-CACHE_KIB}")
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")


class Serializable(Protocol):
    def to_bytes(self) -> bytes: ...


class StorageError(FastpaydError):
    """Raised to waiters when a commit failed; the daemon must stop."""

    code = "StorageError"


class Database:
    """One SQLite file, written in group-committed batches.  Use as ``async with``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commit_count = 0  # transactions committed (the group-commit test counts them)
        self.committed_writes = 0  # staged writes those transactions carried
        self.failed: BaseException | None = None
        self.on_failure: Callable[[], None] | None = None  # the daemon stops on it
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite"
        )
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._staged: dict[tuple[str, bytes], bytes | Serializable] = {}
        self._appended: list[tuple[str, bytes]] = []
        self._append_next: dict[str, int] = {}  # next batch number of each append table
        self._version = 0
        self._committed_version = 0
        self._next: asyncio.Future[None] | None = None  # for writes staged, not yet taken
        self._inflight: asyncio.Future[None] | None = None  # for the batch being committed
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (creating if needed) the file and start the committer task."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._open_sync)
        # The reader lives on the loop's thread (point reads are a few microseconds).
        self._reader = sqlite3.connect(self.path, isolation_level=None)
        self._reader.execute("PRAGMA query_only=ON")
        _tune_cache(self._reader)
        self._task = asyncio.create_task(self._committer(), name="sqlite-committer")

    def _open_sync(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per batch.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        _tune_cache(conn)
        conn.executescript(_SCHEMA)
        for table in APPEND_TABLES:
            (last,) = conn.execute(f"SELECT max(key) FROM {table}").fetchone()
            self._append_next[table] = 0 if last is None else int.from_bytes(last, "big") + 1
        return conn

    async def close(self) -> None:
        """Commit whatever is staged, stop the committer and close the file."""
        if self._task is not None and self.failed is None:
            try:
                await self.durable()
            except StorageError:
                pass
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    # -- reads (startup / rare) ----------------------------------------------------------

    async def read_all(self, table: str) -> list[tuple[bytes, bytes]]:
        """Return every committed (key, value) of ``table``; staged writes are not included."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        conn = self._conn
        assert conn is not None, "database not open"

        def read() -> list[tuple[bytes, bytes]]:
            rows = conn.execute(f"SELECT key, value FROM {table}")
            return [(bytes(k), bytes(v)) for k, v in rows]

        return await asyncio.get_running_loop().run_in_executor(self._executor, read)

    async def read_dict(self, table: str) -> dict[bytes, bytes]:
        """Every committed key -> value of ``table`` (one SELECT, built in the DB thread)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        conn = self._conn
        assert conn is not None, "database not open"

        def read() -> dict[bytes, bytes]:
            return dict(conn.execute(f"SELECT key, value FROM {table}"))

        return await asyncio.get_running_loop().run_in_executor(self._executor, read)

    async def read_one_async(self, table: str, key: bytes) -> bytes | None:
        """Like :meth:`read_one`, on the committer's connection (start-up, after imports)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        conn = self._conn
        assert conn is not None, "database not open"

        def read() -> bytes | None:
            row = conn.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        return await asyncio.get_running_loop().run_in_executor(self._executor, read)

    def keys(self, table: str, limit: int) -> list[bytes]:
        """The first ``limit`` committed keys of ``table``, in key order."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        assert self._reader is not None, "database not open"
        rows = self._reader.execute(f"SELECT key FROM {table} ORDER BY key LIMIT ?", (limit,))
        return [bytes(k) for (k,) in rows]

    async def bulk_insert(
        self,
        table: str,
        chunks: Iterable[list[tuple[bytes, bytes]]],
        marker: tuple[str, bytes, bytes],
    ) -> None:
        """Insert every (key, value) of ``chunks`` and the row ``marker`` (table, key, value)
        in one transaction of its own, in the database thread; call it before serving.

        Raises KeyError(key) if a key is already in ``table`` or repeats; whatever
        ``chunks`` raises propagates.  Either way nothing is written.
        """
        if table not in TABLES or marker[0] not in TABLES:
            raise ValueError("unknown table")
        # Nothing may be staged or committing: this transaction would interleave with it.
        await self.durable()
        assert self._inflight is None and not self._staged and not self._appended
        conn = self._conn
        assert conn is not None, "database not open"

        def load() -> None:
            # The rows come in no key order: with the default 2 MiB page cache every insert
            # would evict and re-read B-tree pages (45 s for a million here); let the whole
            # table stay in cache for this one transaction.
            conn.execute(f"PRAGMA cache_size={-BULK_CACHE_KIB}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for rows in chunks:
                    before = conn.total_changes
                    try:
                        conn.executemany(f"INSERT INTO {table} (key, value) VALUES (?, ?)", rows)
                    except sqlite3.IntegrityError:
                        # executemany stopped at the offending row; the rows before it went in.
                        raise KeyError(rows[conn.total_changes - before][0]) from None
                conn.execute(f"INSERT OR REPLACE INTO {marker[0]} (key, value) VALUES (?, ?)",
                             marker[1:])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                _tune_cache(conn)

        await asyncio.get_running_loop().run_in_executor(self._executor, load)

    # -- writes --------------------------------------------------------------------------

    def stage(self, table: str, key: bytes, value: bytes | Serializable) -> None:
        """Stage an upsert; it becomes durable with the next batch.

        ``value`` may be an object with ``to_bytes()``: it is serialized by the committer,
        once per batch even if the key was written many times.
        """
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        self._staged[(table, key)] = value
        self._version += 1
        self._wakeup.set()

    def append(self, table: str, entry: bytes) -> None:
        """Stage ``entry`` for the append-only ``table``; durable with the next batch."""
        if table not in APPEND_TABLES:
            raise ValueError(f"{table!r} is not an append-only table")
        self._appended.append((table, entry))
        self._version += 1
        self._wakeup.set()

    @property
    def is_durable(self) -> bool:
        """True when nothing staged is waiting for a commit (lets hot paths skip a future)."""
        return self._committed_version == self._version

    def gate(self) -> asyncio.Future[None]:
        """Return a future resolved once every write staged so far is committed.

        All callers between two batches share one future (one callback list per batch, not
        one future per request), so it must never be cancelled or awaited with a timeout:
        hot paths add done-callbacks to it, coroutines ``await db.durable()`` instead.
        It fails with StorageError if the commit failed.
        """
        loop = asyncio.get_running_loop()
        if self.failed is not None:
            fut: asyncio.Future[None] = loop.create_future()
            fut.set_exception(StorageError(str(self.failed)))
            fut.exception()  # retrieved: callers inspect it in callbacks
            return fut
        if self._committed_version == self._version:
            fut = loop.create_future()
            fut.set_result(None)
            return fut
        if self._staged or self._appended:
            if self._next is None:
                self._next = loop.create_future()
            return self._next
        assert self._inflight is not None  # staged writes were taken by the running batch
        return self._inflight

    async def durable(self) -> None:
        """Wait until every write staged so far is committed; raises StorageError."""
        if self._committed_version != self._version or self.failed is not None:
            await asyncio.shield(self.gate())

    async def _committer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._staged and not self._appended:
                if self._closing:
                    return
                continue
            batch, self._staged = self._staged, {}
            appended, self._appended = self._appended, []
            target = self._version
            fut, self._next = self._next or loop.create_future(), None
            self._inflight = fut
            try:
                # Rows go into the open transaction inline (page cache only, no I/O wait);
                # only COMMIT, which writes the WAL and fsyncs, runs in the thread.  One
                # GIL hand-off per batch instead of one per row (measured: per-row
                # statements in the thread convoyed on the GIL with the busy event loop).
                self._write_batch(batch.items(), appended)
                await loop.run_in_executor(self._executor, self._commit_sync)
            except BaseException as exc:  # noqa: BLE001 - any failure breaks durability
                log.critical("commit failed, refusing to release replies: %s", exc)
                self.failed = exc
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(self._executor, self._rollback_sync)
                for f in (fut, self._next):
                    if f is not None and not f.done():
                        f.set_exception(StorageError(str(exc)))
                        f.exception()
                if self.on_failure is not None:
                    self.on_failure()
                return
            self.commit_count += 1
            self.committed_writes += len(batch) + len(appended)
            self._committed_version = target
            self._inflight = None
            if not fut.done():
                fut.set_result(None)

    def _write_batch(
        self,
        items: Iterable[tuple[tuple[str, bytes], bytes | Serializable]],
        appended: list[tuple[str, bytes]],
    ) -> None:
        conn = self._conn
        assert conn is not None
        per_table: dict[str, list[tuple[bytes, bytes]]] = {}
        for (table, key), value in items:
            per_table.setdefault(table, []).append(
                (key, value if isinstance(value, bytes) else value.to_bytes())
            )
        if appended:
            entries: dict[str, list[bytes]] = {}
            for table, entry in appended:
                entries.setdefault(table, []).append(entry)
            for table, values in entries.items():
                number = self._append_next[table]
                # Numbered before the commit is known to succeed: a failed commit is fatal
                # (see the module docstring), so a skipped number is never reused.
                self._append_next[table] = number + 1
                per_table.setdefault(table, []).append(
                    (number.to_bytes(8, "big"), b"".join(values))
                )
        conn.execute("BEGIN IMMEDIATE")
        for table, rows in per_table.items():
            conn.executemany(
                f"INSERT INTO {table} (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                rows,
            )

    def _commit_sync(self) -> None:
        assert self._conn is not None
        self._conn.execute("COMMIT")

    def _rollback_sync(self) -> None:
        assert self._conn is not None
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
