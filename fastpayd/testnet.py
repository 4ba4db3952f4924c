"""Generate a test network: keys, ``committee.toml`` (with genesis) and one config per node.

``generate_testnet(out, authorities=N, clients=M, balance=B)`` writes::

    out/committee.toml        committee id, authorities, clients directory, genesis
    out/genesis.txt           with ``genesis_file=True``: the extra genesis entries
    out/<name>.key            one key per node, 0600
    out/<name>.toml           node config (state under out/state/<name>, socket out/run/<name>.sock)

Authorities are ``auth0..auth{N-1}`` listening on ``base_port + i``; clients are
``client0..client{M-1}`` listening on ``base_port + 100 + j`` (to receive certificates).
Without ``base_port``, :func:`free_base_port` picks a range that is free right now.
Every authority has weight 1, so the committee tolerates f = (N-1)//3 faults.  Every client
starts with ``balance`` at every authority.  Seeds come from the OS unless ``seed`` is
given, in which case the whole network is reproducible.  ``extra_genesis`` funds more
accounts, inline or (``genesis_file=True``, for large networks) in a genesis file that the
authorities import once (:mod:`fastpayd.genesis`); the clients always stay inline.

A network is generated whole or not at all over an old one: without ``overwrite`` an
existing key or state directory of one of the nodes is an error; with it, the nodes'
old state directories are deleted (new keys and a new genesis must not meet the old
accounts), unless a running daemon holds one (StateLocked).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fastpayd.genesis import write_genesis
from fastpayd.keys import KeyFileError, write_key
from fastpayd.statelock import StateLock
from protocol import KeyPair

GENESIS_FILE = "genesis.txt"


@dataclass(frozen=True)
class NodeFiles:
    name: str
    role: str
    config: Path
    key: Path
    public_key: bytes
    endpoint: str


def _q(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _clear_state(state_dir: Path, overwrite: bool) -> None:
    """Make sure no old state of a node survives into the new network."""
    if not state_dir.exists():
        return
    if not overwrite:
        raise KeyFileError(f"{state_dir}: state of an earlier network exists (--force "
                           "deletes it)")
    with StateLock(state_dir):  # refuses while a daemon runs on it
        shutil.rmtree(state_dir)


def free_base_port(authorities: int, clients: int, host: str = "127.0.0.1") -> int:
    """A base port whose authority and client ports are all free on ``host`` right now
    (in 20000-60000, away from the usual services); OSError if none is found."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        base = secrets.randbelow(40000) + 20000
        ports = [base + i for i in range(authorities)]
        ports += [base + 100 + j for j in range(clients)]
        socks: list[socket.socket] = []
        try:
            for port in ports:
                s = socket.socket(family)
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise OSError(f"no free range of ports on {host}")


def generate_testnet(
    out: Path,
    *,
    authorities: int,
    clients: int,
    balance: int,
    base_port: int | None = None,
    host: str = "127.0.0.1",
    seed: bytes | None = None,
    extra_genesis: Iterable[tuple[bytes, int]] = (),
    genesis_file: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[NodeFiles]:
    """Write the network's files under ``out``; return what was written per node.

    Raises ValueError on impossible parameters, KeyFileError if a key or a state directory
    already exists (unless ``overwrite``), StateLocked if a daemon runs on one of them.
    """
    if authorities < 1:
        raise ValueError("at least one authority is needed")
    if clients < 0 or balance < 0:
        raise ValueError("clients and balance must not be negative")
    if base_port is None:
        base_port = free_base_port(authorities, clients, host)
    if not 1 <= base_port <= 65535 - 100 - clients or authorities > 100:
        raise ValueError("ports out of range: lower --base-port or use fewer nodes")
    out.mkdir(parents=True, exist_ok=True)
    committee_id = f"testnet-{(seed or secrets.token_bytes(8)).hex()[:16]}"

    def keypair(name: str) -> KeyPair:
        if seed is None:
            return KeyPair.generate()
        return KeyPair.from_seed(hashlib.sha256(seed + name.encode()).digest())

    nodes: list[NodeFiles] = []
    roles = [(f"auth{i}", "authority", base_port + i) for i in range(authorities)]
    roles += [(f"client{j}", "client", base_port + 100 + j) for j in range(clients)]
    for name, _role, _port in roles:
        _clear_state(out / "state" / name, overwrite)
    for name, role, port in roles:
        kp = keypair(name)
        key_path = out / f"{name}.key"
        write_key(key_path, kp, overwrite=overwrite)
        endpoint = _host_port(host, port)
        cfg = out / f"{name}.toml"
        cfg.write_text(
            "# Generated by `fastpayd testnet`; see docs/config.md.\n"
            "[node]\n"
            f"role = {_q(role)}\n"
            f"name = {_q(name)}\n"
            f"key_file = {_q(key_path.name)}\n"
            f"state_dir = {_q('state/' + name)}\n"
            f"control_socket = {_q('run/' + name + '.sock')}\n"
            'committee_file = "committee.toml"\n'
            'log_level = "info"\n'
            "\n[link]\n"
            'kind = "ip"\n'
            f"listen = {_q(endpoint)}\n"
        )
        nodes.append(NodeFiles(name, role, cfg, key_path, kp.public_key, endpoint))
        if progress:
            progress(f"{role} {name}: key {key_path.name}, config {cfg.name}, {endpoint}")

    lines = [
        "# Generated by `fastpayd testnet`; see docs/config.md.",
        f"committee_id = {_q(committee_id)}",
    ]
    extra_count = 0
    if genesis_file:
        digest, extra_count = write_genesis(out / GENESIS_FILE, extra_genesis)
        lines += [f"genesis_file = {_q(GENESIS_FILE)}", f"genesis_sha256 = {_q(digest)}"]
        extra_genesis = ()
    lines.append("")
    for n in nodes:
        if n.role == "authority":
            lines += [
                "[[authorities]]",
                f"name = {_q(n.name)}",
                f"public_key = {_q(n.public_key.hex())}",
                "weight = 1",
                f"endpoint = {_q(n.endpoint)}",
                "",
            ]
    for n in nodes:
        if n.role == "client":
            lines += [
                "[[clients]]",
                f"name = {_q(n.name)}",
                f"address = {_q(n.public_key.hex())}",
                f"endpoint = {_q(n.endpoint)}",
                "",
            ]
    genesis = [(n.public_key, balance) for n in nodes if n.role == "client"]
    genesis += list(extra_genesis)
    for address, amount in genesis:
        lines += ["[[genesis]]", f"address = {_q(address.hex())}", f"balance = {amount}", ""]
    (out / "committee.toml").write_text("\n".join(lines))
    if progress:
        progress(f"committee {committee_id}: {authorities} authorities, {clients} clients, "
                 f"{len(genesis) + extra_count} genesis accounts -> {out / 'committee.toml'}"
                 + (f" and {out / GENESIS_FILE}" if genesis_file else ""))
    return nodes
