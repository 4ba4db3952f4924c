"""``fastpayd``: run a node, or prepare keys and test networks.

::

    fastpayd [--role authority|client] --config FILE.toml     run a node until SIGTERM
    fastpayd keygen OUT.key [--force]                          write a new key (0600)
    fastpayd testnet --authorities N --clients M --balance B --out DIR
                     [--base-port P] [--host H] [--seed HEX] [--force]

Mistakes print one line and exit nonzero; no tracebacks.  Exit status, for every form:
0 success; 1 failure while running or writing files; 2 usage or configuration error (bad
arguments, config/committee/key file, state directory; the message names the file and
the key; keygen/testnet: a file that would be overwritten, a missing directory); 3 the
state directory or control socket is in use by a running daemon.  (docs/config.md.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUBCOMMANDS = ("keygen", "testnet")
EXIT_STATUS = ("Exit status: 0 ok / stopped by SIGTERM; 1 failed while running; 2 usage or "
               "configuration error (names the file and key); 3 state directory or control "
               "socket in use by a running daemon.")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastpayd",
        description="FastPay node daemon: serve an authority's or a client's state until "
        "SIGTERM. Also: 'fastpayd keygen --help', 'fastpayd testnet --help'.",
        epilog=EXIT_STATUS + " The config format: docs/config.md.",
    )
    p.add_argument("--role", choices=("authority", "client"),
                   help="expected role (must match [node] role in the config)")
    p.add_argument("--config", required=True, metavar="FILE.toml", help="node config file")
    return p


def _keygen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastpayd keygen",
                                description="Write a new Ed25519 key (hex seed, mode 0600) and "
                                "print its public key (the account address).",
                                epilog="The directory must exist. " + EXIT_STATUS)
    p.add_argument("out", metavar="OUT.key", type=Path)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = p.parse_args(argv)
    from fastpayd.keys import KeyFileError, write_key
    from protocol import KeyPair

    kp = KeyPair.generate()
    try:
        write_key(args.out, kp, overwrite=args.force)
    except KeyFileError as exc:
        print(f"fastpayd keygen: {exc}", file=sys.stderr)
        return exc.exit_status
    except OSError as exc:
        print(f"fastpayd keygen: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (public key / address {kp.public_key.hex()})")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _testnet(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="fastpayd testnet",
        description="Generate keys, committee.toml (with genesis balances) and one config "
        "per node for an N-authority test network on IP links.",
        epilog="Refuses to write over an earlier network's keys or state unless --force, "
        "which deletes the nodes' old state directories (refused while a daemon runs on "
        "one). " + EXIT_STATUS,
    )
    p.add_argument("--authorities", type=_positive, required=True, metavar="N")
    p.add_argument("--clients", type=_positive, default=2, metavar="M")
    p.add_argument("--balance", type=_positive, default=1000, metavar="B",
                   help="initial balance of every client (default 1000)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--base-port", type=_positive, default=9100, metavar="P",
                   help="authority i listens on P+i, client j on P+100+j (default 9100)")
    p.add_argument("--host", default="127.0.0.1", help="listen/endpoint host (default 127.0.0.1)")
    p.add_argument("--seed", help="hex seed: derive every key from it (reproducible network)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing keys and delete the nodes' old state")
    args = p.parse_args(argv)
    from fastpayd.errors import EXIT_CONFIG, FastpaydError
    from fastpayd.testnet import generate_testnet

    seed = None
    if args.seed is not None:
        try:
            seed = bytes.fromhex(args.seed)
        except ValueError:
            print("fastpayd testnet: --seed must be hex", file=sys.stderr)
            return 2
    try:
        generate_testnet(
            args.out, authorities=args.authorities, clients=args.clients, balance=args.balance,
            base_port=args.base_port, host=args.host, seed=seed, overwrite=args.force,
            progress=lambda line: print(line, flush=True),
        )
    except ValueError as exc:
        print(f"fastpayd testnet: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FastpaydError as exc:
        print(f"fastpayd testnet: {exc}", file=sys.stderr)
        return exc.exit_status
    except OSError as exc:
        print(f"fastpayd testnet: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keygen":
        return _keygen(argv[1:])
    if argv and argv[0] == "testnet":
        return _testnet(argv[1:])
    args = _run_parser().parse_args(argv)
    from fastpayd.daemon import run

    return run(args.config, args.role)


if __name__ == "__main__":
    sys.exit(main())
