"""Unit tests of fastpayd.database: group commit and durability before release."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from fastpayd.database import Database


def _on_disk(path: Path, key: bytes) -> bytes | None:
    # A separate connection sees only committed data (WAL readers never see staged rows).
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM accounts WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return None if row is None else bytes(row[0])


async def test_durable_resolves_only_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with Database(path) as db:
        db.stage("accounts", b"k1", b"v1")
        assert not db.is_durable
        fut = db.gate()
        assert _on_disk(path, b"k1") is None or fut.done()
        await fut
        assert _on_disk(path, b"k1") == b"v1"
        assert db.is_durable


async def test_group_commit_batches_concurrent_writes(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    n = 200
    async with Database(path) as db:
        seen: list[bool] = []

        async def writer(i: int) -> None:
            key = i.to_bytes(4, "big")
            db.stage("accounts", key, b"v%d" % i)
            await db.durable()
            seen.append(_on_disk(path, key) == b"v%d" % i)

        # Stage in waves, as requests arriving while a commit is in flight would.
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(writer(i)))
            if i % 20 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert all(seen) and len(seen) == n
        assert db.committed_writes == n
        assert db.commit_count < n / 5


async def test_close_flushes_staged_writes(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with Database(path) as db:
        db.stage("meta", b"x", b"y")
    async with Database(path) as db:
        assert await db.read_all("meta") == [(b"x", b"y")]


async def test_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with Database(path):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_appends_are_one_row_per_batch_numbered_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with Database(path) as db:
        for i in range(3):
            db.append("log", b"e%d;" % i)
        assert not db.is_durable
        await db.durable()
        db.append("log", b"e3;")
        await db.durable()
        assert await db.read_all("log") == [((0).to_bytes(8, "big"), b"e0;e1;e2;"),
                                            ((1).to_bytes(8, "big"), b"e3;")]
    async with Database(path) as db:
        db.append("log", b"e4;")
        await db.durable()
        rows = await db.read_all("log")
        assert rows[-1] == ((2).to_bytes(8, "big"), b"e4;")
