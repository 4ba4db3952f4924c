"""``fastpayd``: run a node, or prepare keys and test networks.

::

    fastpayd [--role authority|client] --config FILE.toml     run a node until SIGTERM
    fastpayd keygen OUT.key [--force]                          write a new key (0600)
    fastpayd testnet --authorities N --clients M --balance B --out DIR
                     [--base-port P] [--host H] [--seed HEX] [--force]
    fastpayd testnet up DIR [--authorities N --clients M --balance B] [--timeout S]
    fastpayd testnet status DIR
    fastpayd testnet down DIR [--timeout S]

Mistakes print one line and exit nonzero; no tracebacks.  ``--json`` (keygen, testnet)
prints the outcome as one JSON object on stdout (docs/cli.md).  Exit status: the one table
of :data:`fastpayd.errors.EXIT_CODES`, shared with ``fastpay`` (docs/cli.md): 0 success;
1 failure while running or writing files; 2 usage or configuration error (the message
names the file and the key); 4 ``testnet up`` not ready in time; 5 the state directory or
control socket is in use by a running daemon.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastpayd.errors import exit_epilog

SUBCOMMANDS = ("keygen", "testnet")
EXIT_STATUS = exit_epilog()


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
    p.add_argument("--base-port", type=_positive, default=None, metavar="P",
                   help="authority i listens on P+i, client j on P+100+j (default: a free "
                   "range in 20000-60000)")
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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _localnet(verb: str, argv: list[str]) -> int:
    """``testnet up|status|down DIR``: run a generated network in the background."""
    p = argparse.ArgumentParser(
        prog=f"fastpayd testnet {verb}",
        description={
            "up": "Start every node of the network in DIR in the background (pid files in "
                  "DIR/run, logs in DIR/log) and wait until each answers on its control "
                  "socket. If DIR has no network yet, generate one first (free ports).",
            "status": "Show whether each node of DIR runs and answers; exit 0 only if all "
                      "do, 1 otherwise.",
            "down": "Stop every node of DIR: SIGTERM, wait for it to exit (SIGKILL after "
                    "--timeout).",
        }[verb], epilog=EXIT_STATUS)
    p.add_argument("dir", type=Path, metavar="DIR")
    if verb == "up":
        p.add_argument("--authorities", type=_positive, default=4, metavar="N",
                       help="when generating (default 4)")
        p.add_argument("--clients", type=_positive, default=2, metavar="M",
                       help="when generating (default 2)")
        p.add_argument("--balance", type=_positive, default=1000, metavar="B",
                       help="when generating (default 1000)")
    if verb in ("up", "down"):
        p.add_argument("--timeout", type=_seconds, default=60.0 if verb == "up" else 20.0,
                       metavar="S", help="seconds to wait for the nodes")
    args = p.parse_args(argv)
    from fastpayd import localnet
    from fastpayd.errors import FastpaydError
    from fastpayd.testnet import generate_testnet

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        if verb == "up":
            if not (args.dir / "committee.toml").exists():
                generate_testnet(args.dir, authorities=args.authorities,
                                 clients=args.clients, balance=args.balance, progress=say)
            localnet.up(args.dir, args.timeout, say)
            say(f"network up: fastpay --config {args.dir}/client0.toml status")
        elif verb == "status":
            if not localnet.status(args.dir, say):
                return 1
        else:
            localnet.down(args.dir, args.timeout, say)
    except localnet.LocalNetError as exc:
        print(f"fastpayd testnet {verb}: {exc}", file=sys.stderr)
        return 1
    except FastpaydError as exc:
        print(f"fastpayd testnet {verb}: {exc}", file=sys.stderr)
        return exc.exit_status
    except (OSError, ValueError) as exc:
        print(f"fastpayd testnet {verb}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["testnet"] and argv[1:2] and argv[1] in ("up", "status", "down"):
        return _localnet(argv[1], argv[2:])
    if argv and argv[0] == "keygen":
        return _keygen(argv[1:])
    if argv and argv[0] == "testnet":
        return _testnet(argv[1:])
    args = _run_parser().parse_args(argv)
    from fastpayd.daemon import run

    return run(args.config, args.role)


if __name__ == "__main__":
    sys.exit(main())
