"""``fastpay``: talk to a running fastpayd through its control socket.

::

    fastpay [--socket PATH | --config FILE.toml] [--json] COMMAND [ARGS]

Each command is a ``do_<verb>`` method of :class:`Cli`; its docstring is its help and its
arguments are declared next to it.  ``--json`` prints the daemon's answer as one JSON
object; otherwise a short human summary.  Every failure (socket missing, daemon refused,
bad arguments) prints one line on stderr and exits nonzero — never a traceback:
exit 1 = the daemon refused, 2 = usage, 3 = daemon unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastpayd.control import control_request

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _args(*specs: tuple[tuple[str, ...], dict[str, Any]]) -> Callable[[Any], Any]:
    """Attach argparse argument specs to a ``do_`` method."""

    def wrap(fn: Any) -> Any:
        fn.cli_args = specs
        return fn

    return wrap


class Cli:
    def __init__(self, socket: Path, as_json: bool) -> None:
        self.socket = socket
        self.as_json = as_json

    async def call(self, request: dict[str, Any], timeout: float = 30.0,
                   progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        try:
            answer = await control_request(self.socket, request, timeout, progress)
        except (FileNotFoundError, ConnectionRefusedError):
            raise CliError(f"no fastpayd listening on {self.socket} (is it running?)",
                           EXIT_UNREACHABLE) from None
        except PermissionError:
            raise CliError(f"permission denied on {self.socket}", EXIT_UNREACHABLE) from None
        except TimeoutError:
            raise CliError(f"no answer from {self.socket} within {timeout:.0f}s",
                           EXIT_UNREACHABLE) from None
        except (OSError, ValueError) as exc:
            raise CliError(f"{self.socket}: {exc}", EXIT_UNREACHABLE) from None
        if self.as_json:
            print(json.dumps(answer, indent=None if answer.get("ok") else None))
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise CliError(f"{err.get('code', 'Error')}: {err.get('message', '')}",
                           EXIT_REFUSED)
        return answer

    # -- commands ---------------------------------------------------------------------

    async def do_status(self, args: argparse.Namespace) -> None:
        """Show the node's identity, link and storage counters."""
        a = await self.call({"cmd": "status"})
        if self.as_json:
            return
        print(f"{a['name']} ({a['role']}) pid {a['pid']} up {a['uptime']:.1f}s")
        print(f"  address    {a['address']}")
        print(f"  committee  {a['committee_id']}: {', '.join(a['authorities'])} "
              f"(quorum {a['quorum_threshold']})")
        link = a["link"]
        print(f"  link       {link['kind']} on {link.get('listen')}")
        st = a["storage"]
        print(f"  storage    {st['commits']} commits, {st['committed_writes']} writes")
        if "balance" in a:
            print(f"  balance    {a['balance']} (next seq {a['next_sequence_number']})")
        if "accounts" in a:
            print(f"  accounts   {a['accounts']}")
        group = link.get("group")
        if group:
            if group.get("role") == "GO":
                print(f"  group      GO on {group.get('ifname')}, members "
                      f"{', '.join(group.get('members', [])) or 'none'}")
            else:
                joined = group.get("joined")
                print(f"  group      {'joined ' + joined if joined else 'none'}")
        if "in_range" in link:
            print(f"  in range   {', '.join(link['in_range']) or 'no authority'}")
        tr = a.get("transfer")
        if tr and tr.get("state") not in (None, "idle"):
            print(f"  transfer   {_progress_line(tr)}")

    @_args((("account",), {"nargs": "?", "help": "account (authorities: name or hex)"}))
    async def do_balance(self, args: argparse.Namespace) -> None:
        """Show the balance (a client: its own; an authority: ACCOUNT's, or all)."""
        req: dict[str, Any] = {"cmd": "balance"}
        if args.account:
            req["account"] = args.account
        a = await self.call(req)
        if self.as_json:
            return
        for acct in a.get("accounts", [a]):
            pending = acct.get("pending")
            extra = (f", pending #{pending['sequence_number']}: {pending['amount']} to "
                     f"{pending['recipient']}") if pending else ""
            print(f"{acct['account']}: {acct['balance']} "
                  f"(next seq {acct['next_sequence_number']}{extra})")

    @_args((("recipient",), {"help": "client name or 64-hex address"}),
           (("amount",), {"type": int, "help": "positive integer amount"}),
           (("--timeout",), {"type": float, "default": 60.0, "help": "seconds (default 60)"}),
           (("--wait",), {"action": "store_true",
                          "help": "mobile client: follow the transfer until it is complete"}),
           (("--again",), {"action": "store_true",
                           "help": "pay once more although the latest transfer is the same "
                                   "recipient and amount (otherwise that one is returned)"}))
    async def do_transfer(self, args: argparse.Namespace) -> None:
        """Pay AMOUNT to RECIPIENT: votes, certificate, confirmations, delivery.

        On a WiFi Direct (mobile) client it returns once the order is signed; the daemon
        visits authorities as they come into range (--wait follows it).  Typing the same
        transfer again while it is unfinished, or before its success was shown, returns
        that transfer instead of paying twice; --again pays once more.  Exit 0 once the
        certificate exists (the money has moved), 1 if refused or without a quorum.
        """
        if args.amount <= 0:
            raise CliError("amount must be a positive integer", EXIT_USAGE)
        if args.timeout <= 0:
            raise CliError("--timeout must be a positive number of seconds", EXIT_USAGE)

        def show(p: dict[str, Any]) -> None:
            step = p.get("step", "?")
            detail = " ".join(f"{k}={v}" for k, v in p.items() if k != "step")
            print(f"  .. {step} {detail}", file=sys.stderr, flush=True)

        print(f"transfer {args.amount} to {args.recipient} ...", file=sys.stderr, flush=True)
        request = {"cmd": "transfer", "recipient": args.recipient, "amount": args.amount,
                   "again": args.again, "timeout": args.timeout}
        if args.wait:
            request["wait"] = True  # else the daemon's default for its link
        a = await self.call(request, args.timeout + 10.0, show)
        if self.as_json:
            return
        if not a.get("certificate"):
            print(f"transfer #{a.get('sequence_number')}: {_progress_line(a)}")
            return
        confirmed = sum(v == "confirmed" for v in a["confirmations"].values())
        where = ("final" if a.get("fully_propagated") or a.get("final") else
                 "not yet final; the daemon keeps delivering")
        took = f", in {a['latency'] * 1000:.1f} ms" if a.get("latency") is not None else ""
        print(f"paid {a['amount']} to {a['recipient']} (seq {a['sequence_number']}){took}: "
              f"confirmed at {confirmed}/{len(a['confirmations'])} authorities ({where}); "
              f"balance {a['balance']}")

    @_args((("account",), {"nargs": "?", "help": "account (authorities only)"}))
    async def do_history(self, args: argparse.Namespace) -> None:
        """List certificates sent and received."""
        req: dict[str, Any] = {"cmd": "history"}
        if args.account:
            req["account"] = args.account
        a = await self.call(req)
        if self.as_json:
            return
        if not a["history"]:
            print("no transfers")
        for row in a["history"]:
            print(f"{row['direction']:8} #{row['sequence_number']:<4} {row['amount']:>10}  "
                  f"{row['sender']} -> {row['recipient']}")

    async def do_peers(self, args: argparse.Namespace) -> None:
        """List the peers the node knows and their link state."""
        a = await self.call({"cmd": "peers"})
        if self.as_json:
            return
        for p in a["peers"]:
            state = "connected" if p["connected"] else (p.get("last_error") or "idle")
            if "in_range" in p:  # WiFi Direct: where the peer is, not a static endpoint
                level = p.get("level")
                where = (f"{p.get('address')} {level} dBm" if p["in_range"] and level is not None
                         else ("in range" if p["in_range"] else "not in range"))
                print(f"{p['name']:12} {p['role']:9} {where:30} {state}")
            else:
                print(f"{p['name']:12} {p['role']:9} {p.get('endpoint') or '-':22} {state}")

    async def do_progress(self, args: argparse.Namespace) -> None:
        """Client: the latest transfer's progress and the authorities in range."""
        a = await self.call({"cmd": "progress"})
        if self.as_json:
            return
        print(_progress_line(a["transfer"]))
        if a.get("in_range") is not None:
            print("in range: " + (", ".join(f"{r['name']} ({r['level']} dBm)"
                                            for r in a["in_range"]) or "no authority"))

    @_args((("--since",), {"type": int, "default": 0, "help": "after this sequence number"}))
    async def do_events(self, args: argparse.Namespace) -> None:
        """Print the node's recent events (JSON lines)."""
        a = await self.call({"cmd": "events", "since": args.since})
        if self.as_json:
            return
        for e in a["events"]:
            print(json.dumps(e))

    @_args((("--timeout",), {"type": float, "default": 60.0, "help": "seconds (default 60)"}))
    async def do_sync(self, args: argparse.Namespace) -> None:
        """Client: ask the authorities for payments received and missed state."""
        if args.timeout <= 0:
            raise CliError("--timeout must be a positive number of seconds", EXIT_USAGE)
        a = await self.call({"cmd": "sync", "timeout": args.timeout}, args.timeout + 10.0)
        if not self.as_json:
            print(f"reached {', '.join(a['reached']) or 'no authority'}; "
                  f"credited {a['credited']}; balance {a['balance']}")


def _progress_line(tr: dict[str, Any]) -> str:
    """One line for a transfer's progress (see ClientNode.transfer_progress)."""
    state = tr.get("state", "?")
    if state == "idle":
        return "no transfer"
    line = (f"#{tr.get('sequence_number')} {tr.get('amount')} to {tr.get('recipient')}: "
            f"{state}, votes {tr.get('weight')}/{tr.get('quorum')} "
            f"({', '.join(tr.get('votes', [])) or '-'})")
    if tr.get("certificate"):
        line += (f", certificate, confirmed at {', '.join(tr.get('confirmed', [])) or '-'}"
                 f" (waiting for {', '.join(tr.get('confirmations_needed', [])) or 'none'})")
    return line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastpay", description="Control a running fastpayd.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", type=Path, help="control socket path ($FASTPAY_SOCKET)")
    where.add_argument("--config", type=Path, help="the node's config file (finds its socket)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, fn in inspect.getmembers(Cli, inspect.iscoroutinefunction):
        if not name.startswith("do_"):
            continue
        doc = inspect.getdoc(fn) or ""
        sp = sub.add_parser(name[3:], help=doc.splitlines()[0] if doc else "", description=doc)
        for flags, kwargs in getattr(fn, "cli_args", ()):
            sp.add_argument(*flags, **kwargs)
    return p


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        from fastpayd.config import ConfigError, load_node_config

        try:
            return load_node_config(args.config).control_socket
        except ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    env = os.environ.get("FASTPAY_SOCKET")
    if env:
        return Path(env)
    raise CliError("say which node: --socket PATH, --config FILE.toml or $FASTPAY_SOCKET",
                   EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cli = Cli(_socket_path(args), args.json)
        asyncio.run(getattr(cli, f"do_{args.command}")(args))
    except CliError as exc:
        print(f"fastpay: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
