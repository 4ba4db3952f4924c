"""Genesis files: the initial balances of a large network, imported once into the database.

Inline ``[[genesis]]`` tables in ``committee.toml`` are parsed by every node at every start
(tomllib: about 120 us per entry here, 2.5 s for 20 000 accounts).  A network with many
accounts names a genesis file instead, pinned by its digest::

    genesis_file = "genesis.txt"
    genesis_sha256 = "<64 hex digits>"

The file holds one account per line, ``<64 hex digits: address> <balance>\\n``, the balance
a decimal integer in 0..2**63-1, no address twice.  An authority imports it at its first
start: the lines are checked and the SHA-256 of the whole file computed while the rows go
into the ``accounts`` table, in *one* transaction that also records the digest in ``meta``
(:data:`GENESIS_KEY`).  A malformed line, a repeated address, an address also given inline,
a total supply beyond 2**63-1 or a digest that is not the committee file's abort that
transaction: nothing is imported and the node does not start.  Every later start reads the
``meta`` row and never opens the file again, so start-up does not grow with the genesis; a
database that imported another genesis refuses to start.

Client daemons take their own starting balance from the inline ``[[genesis]]`` entries only
(they never read the file): ``fastpayd testnet`` keeps the clients it writes inline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import msgpack  # type: ignore[import-untyped]

from fastpayd.config import ConfigError
from fastpayd.database import Database
from protocol.messages import I64_MAX

GENESIS_KEY = b"genesis_sha256"
CHUNK_LINES = 50_000

# AccountState(balance=b).summary_bytes() for a fresh account is [b, 0, nil, [], []]:
# only the balance varies (tests/fastpayd/test_genesis.py checks the two agree).
_SUMMARY_HEAD = b"\x95"
_SUMMARY_TAIL = b"\x00\xc0\x90\x90"


def account_summary(balance: int) -> bytes:
    """The ``accounts`` value of a new account holding ``balance`` (no sequence, no logs)."""
    packed: bytes = msgpack.packb(balance)
    return _SUMMARY_HEAD + packed + _SUMMARY_TAIL


def write_genesis(path: Path, entries: Iterable[tuple[bytes, int]]) -> tuple[str, int]:
    """Write a genesis file; return (its SHA-256 in hex, the number of accounts)."""
    digest = hashlib.sha256()
    count = 0
    with open(path, "wb") as fh:
        batch: list[bytes] = []
        for address, balance in entries:
            if len(address) != 32 or not 0 <= balance <= I64_MAX:
                raise ValueError("a genesis entry is a 32-byte address and a balance in "
                                 "0..2**63-1")
            batch.append(b"%s %d\n" % (address.hex().encode(), balance))
            if len(batch) >= CHUNK_LINES:
                data = b"".join(batch)
                digest.update(data)
                fh.write(data)
                count += len(batch)
                batch = []
        data = b"".join(batch)
        digest.update(data)
        fh.write(data)
        count += len(batch)
    return digest.hexdigest(), count


def _rows(path: Path, expected: bytes, inline: Mapping[bytes, int],
          counts: list[int]) -> Iterator[list[tuple[bytes, bytes]]]:
    """Yield the file's rows in chunks; raise ConfigError at the first problem (or at the
    end, for the digest and the supply), which rolls the import back."""
    digest = hashlib.sha256()
    supply = sum(inline.values())
    number = 0
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in finally; a generator
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        while True:
            lines = fh.readlines(1 << 22)
            if not lines:
                break
            chunk: list[tuple[bytes, bytes]] = []
            for line in lines:
                number += 1
                digest.update(line)
                fields = line.split(b" ")
                if (len(fields) != 2 or len(fields[0]) != 64 or not line.endswith(b"\n")
                        or not fields[1][:-1].isdigit() or len(fields[1]) > 20):
                    raise ConfigError(f"{path}:{number}: expected '<64 hex address> <balance>'")
                try:
                    address = bytes.fromhex(fields[0].decode("ascii"))
                except ValueError:
                    raise ConfigError(f"{path}:{number}: the address is not hex") from None
                balance = int(fields[1])
                if balance > I64_MAX:
                    raise ConfigError(f"{path}:{number}: balance beyond 2**63-1")
                if address in inline:
                    raise ConfigError(f"{path}:{number}: {address.hex()} is also an inline "
                                      "[[genesis]] entry")
                supply += balance
                chunk.append((address, account_summary(balance)))
            yield chunk
    finally:
        fh.close()
    if supply > I64_MAX:
        raise ConfigError(f"{path}: the total supply exceeds 2**63-1")
    if digest.digest() != expected:
        raise ConfigError(f"{path}: SHA-256 {digest.hexdigest()} is not the committee "
                          f"file's genesis_sha256 {expected.hex()}")
    counts.append(number)


async def import_genesis_file(db: Database, path: Path, sha256: bytes,
                              inline: Mapping[bytes, int]) -> int | None:
    """Import the genesis file into ``db`` unless it already was; return the accounts
    imported (None: already imported).  Raises ConfigError (nothing imported)."""
    done = await db.read_one_async("meta", GENESIS_KEY)
    if done == sha256:
        return None
    if done is not None:
        raise ConfigError(f"this database imported genesis {done.hex()}, the committee file "
                          f"names {sha256.hex()}: a genesis cannot change")
    counts: list[int] = []
    try:
        await db.bulk_insert("accounts", _rows(path, sha256, inline, counts),
                             ("meta", GENESIS_KEY, sha256))
    except KeyError as exc:
        raise ConfigError(f"{path}: address {exc.args[0].hex()} appears twice (or already "
                          "has an account)") from None
    return counts[0]
