"""``fastpayd``: run a node, or prepare keys and test networks.

::

    fastpayd [--role authority|client] --config FILE.toml     run a node until SIGTERM
    fastpayd keygen OUT.key [--force] [--json]                 write a new key (0600)
    fastpayd testnet --authorities N --clients M --balance B --out DIR
                     [--base-port P] [--host H] [--seed HEX] [--force] [--json]
    fastpayd testnet up DIR [--authorities N --clients M --balance B] [--timeout S] [--json]
    fastpayd testnet status DIR [--json]
    fastpayd testnet down DIR [--timeout S] [--json]

Mistakes print one line and exit nonzero; no tracebacks.  ``--json`` (keygen, testnet)
prints the outcome as one JSON object on stdout (docs/cli.md).  Exit status: the one table
of :data:`fastpayd.errors.EXIT_CODES`, shared with ``fastpay`` (docs/cli.md): 0 success;
1 failure while running or writing files; 2 usage or configuration error (the message
names the file and the key); 4 ``testnet up`` not ready in time; 5 the state directory or
control socket is in use by a running daemon.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fastpayd.errors import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    exit_epilog,
)

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


class _Out:
    """Where a subcommand's results go: text lines, or (``--json``) one JSON object on
    stdout, the last line, after ``{"progress": {...}}`` lines."""

    def __init__(self, prog: str, as_json: bool) -> None:
        self.prog = prog
        self.as_json = as_json

    def say(self, line: str) -> None:
        if not self.as_json:
            print(line, flush=True)

    def step(self, info: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"progress": info}), flush=True)

    def done(self, answer: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"ok": True, **answer}), flush=True)

    def fail(self, message: str, code: str, status: int) -> int:
        """One line on stderr (and the error object on stdout with --json); ``status``."""
        print(f"{self.prog}: {message}", file=sys.stderr, flush=True)
        if self.as_json:
            print(json.dumps({"ok": False, "error": {"code": code, "message": message}}),
                  flush=True)
        return status


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the outcome as one JSON object (progress as JSON lines "
                   "first; docs/cli.md)")


def _keygen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastpayd keygen",
                                description="Write a new Ed25519 key (hex seed, mode 0600) and "
                                "print its public key (the account address).",
                                epilog="The directory must exist. " + EXIT_STATUS)
    p.add_argument("out", metavar="OUT.key", type=Path)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    _json_option(p)
    args = p.parse_args(argv)
    from fastpayd import address
    from fastpayd.keys import KeyFileError, write_key
    from protocol import KeyPair

    out = _Out("fastpayd keygen", args.json)
    kp = KeyPair.generate()
    try:
        write_key(args.out, kp, overwrite=args.force)
    except KeyFileError as exc:
        return out.fail(str(exc), exc.code, exc.exit_status)
    except OSError as exc:
        return out.fail(f"{args.out}: {exc.strerror or exc}", "OSError", EXIT_FAILURE)
    out.say(f"wrote {args.out} (public key / address {kp.public_key.hex()})")
    out.done({"path": str(args.out), "address": kp.public_key.hex(),
              "fp_address": address.encode(kp.public_key)})
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _node_rows(nodes: list[Any]) -> list[dict[str, Any]]:
    """``testnet``'s written nodes (fastpayd.testnet.NodeFiles) as JSON rows."""
    from fastpayd import address

    return [{"name": n.name, "role": n.role, "config": str(n.config), "key": str(n.key),
             "address": n.public_key.hex(), "fp_address": address.encode(n.public_key),
             "endpoint": n.endpoint} for n in nodes]


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
    _json_option(p)
    args = p.parse_args(argv)
    from fastpayd.errors import FastpaydError
    from fastpayd.testnet import generate_testnet

    out = _Out("fastpayd testnet", args.json)
    seed = None
    if args.seed is not None:
        try:
            seed = bytes.fromhex(args.seed)
        except ValueError:
            return out.fail("--seed must be hex", "BadArgument", EXIT_USAGE)
    try:
        nodes = generate_testnet(
            args.out, authorities=args.authorities, clients=args.clients, balance=args.balance,
            base_port=args.base_port, host=args.host, seed=seed, overwrite=args.force,
            progress=out.say,
        )
    except ValueError as exc:
        return out.fail(str(exc), "BadArgument", EXIT_CONFIG)
    except FastpaydError as exc:
        return out.fail(str(exc), exc.code, exc.exit_status)
    except OSError as exc:
        return out.fail(str(exc), "OSError", EXIT_FAILURE)
    out.done({"dir": str(args.out), "committee": str(args.out / "committee.toml"),
              "nodes": _node_rows(nodes)})
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
                       metavar="S", help="seconds to wait for the nodes"
                       + (" (then exit 4)" if verb == "up" else ""))
    _json_option(p)
    args = p.parse_args(argv)
    from fastpayd import localnet
    from fastpayd.errors import FastpaydError
    from fastpayd.testnet import generate_testnet

    out = _Out(f"fastpayd testnet {verb}", args.json)
    try:
        if verb == "up":
            generated = not (args.dir / "committee.toml").exists()
            if generated:
                nodes = generate_testnet(args.dir, authorities=args.authorities,
                                         clients=args.clients, balance=args.balance,
                                         progress=out.say)
                for node in nodes:
                    out.step({"node": node.name, "step": "generated", "pid": None})
            localnet.up(args.dir, args.timeout, out.say, out.step)
            out.say(f"network up: fastpay --config {args.dir}/client0.toml status")
            out.done({"dir": str(args.dir), "generated": generated,
                      "nodes": localnet.status_rows(args.dir)})
        elif verb == "status":
            rows = localnet.status_rows(args.dir)
            for r in rows:
                out.say(f"{r['name']:10} {r['state']:24} pid {r['pid'] or '-'}  "
                        f"socket {r['socket']}")
            down = [r["name"] for r in rows if r["state"] != "ready"]
            if args.json:
                answer: dict[str, Any] = {"ok": not down, "dir": str(args.dir), "nodes": rows}
                if down:
                    answer["error"] = {"code": "NotReady",
                                       "message": f"not ready: {', '.join(down)}"}
                print(json.dumps(answer), flush=True)
            if down:
                return EXIT_FAILURE
        else:
            done: dict[str, list[str]] = {"stopped": [], "killed": []}

            def step(info: dict[str, Any]) -> None:
                done[str(info["step"])].append(str(info["node"]))
                out.step(info)

            localnet.down(args.dir, args.timeout, out.say, step)
            out.done({"dir": str(args.dir), **done})
    except localnet.LocalNetTimeout as exc:
        return out.fail(str(exc), "Timeout", EXIT_TIMEOUT)
    except localnet.LocalNetError as exc:
        return out.fail(str(exc), "LocalNetError", EXIT_FAILURE)
    except FastpaydError as exc:
        return out.fail(str(exc), exc.code, exc.exit_status)
    except (OSError, ValueError) as exc:
        return out.fail(str(exc), type(exc).__name__, EXIT_FAILURE)
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
