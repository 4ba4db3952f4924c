"""``fastpay``: talk to a running fastpayd through its control socket.

::

    fastpay COMMAND [ARGS] [--socket PATH | --config FILE.toml] [--json]

Each command is a ``do_<verb>`` method of :class:`Cli`; its docstring is its help and its
arguments are declared next to it.  The global options may come before or after the
command.  ``--json`` prints the daemon's answer as one JSON object (progress first, as
JSON lines); otherwise a short human summary.  Every failure prints one line on stderr
and exits with a status of the one table, :data:`fastpayd.errors.EXIT_CODES` (docs/cli.md,
shared with ``fastpayd``) -- never a traceback.
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
from fastpayd.errors import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_epilog,
)
from fastpayd.fswatch import PathWatch
from fastpayd.waits import TRANSFER_STATES, WAIT_FOR

EXIT_EPILOG = exit_epilog()


# The error code a CLI-side failure carries in its --json object, by exit status.
_CLI_CODES = {EXIT_USAGE: "Usage", EXIT_UNREACHABLE: "Unreachable", EXIT_TIMEOUT: "Timeout"}


class CliError(Exception):
    """A failure to print as one line and exit with ``status``; ``shown``: the daemon's
    error answer is on stdout already (--json)."""

    def __init__(self, message: str, status: int, shown: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.shown = shown


def _args(*specs: tuple[tuple[str, ...], dict[str, Any]]) -> Callable[[Any], Any]:
    """Attach argparse argument specs to a ``do_`` method."""

    def wrap(fn: Any) -> Any:
        fn.cli_args = specs
        return fn

    return wrap


def _seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = "integer"
    return parse


_seconds.__name__ = "seconds"


class Cli:
    def __init__(self, socket: Path, as_json: bool) -> None:
        self.socket = socket
        self.as_json = as_json

    async def call(self, request: dict[str, Any], timeout: float = 30.0,
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   echo: bool = True) -> dict[str, Any]:
        try:
            answer = await control_request(self.socket, request, timeout, progress)
        except (FileNotFoundError, ConnectionRefusedError):
            raise CliError(f"no fastpayd listening on {self.socket} (is it running?)",
                           EXIT_UNREACHABLE) from None
        except PermissionError:
            raise CliError(f"permission denied on {self.socket}", EXIT_UNREACHABLE) from None
        except TimeoutError:
            raise CliError(f"no answer from {self.socket} within {timeout:g} s",
                           EXIT_TIMEOUT) from None
        except (OSError, ValueError) as exc:
            raise CliError(f"{self.socket}: {exc}", EXIT_UNREACHABLE) from None
        if self.as_json and echo:
            print(json.dumps(answer), flush=True)
        if not answer.get("ok"):
            err = answer.get("error") or {}
            code = err.get("code", "Error")
            raise CliError(f"{code}: {err.get('message', '')}",
                           EXIT_TIMEOUT if code == "Timeout" else EXIT_REFUSED,
                           shown=self.as_json and echo)
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

    @_args((("account",), {"nargs": "?", "help": "name, fp1... or hex address (on a client: "
                                                 "only its own; refused otherwise)"}))
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
            received = acct.get("received")
            if received:  # a client: where the payments it was credited came from
                parts = [f"{k} {v['payments']} ({v['amount']})" for k, v in received.items()
                         if v["payments"] or k in ("direct", "authority")]
                print("  received: " + ", ".join(parts))

    @_args((("recipient",), {"help": "client name, fp1... address, or 64 hex digits "
                                     "(hex of no known account needs --force)"}),
           (("amount",), {"type": _count(1), "help": "positive integer amount"}),
           (("--timeout",), {"type": _seconds, "default": 60.0,
                             "help": "seconds (default 60)"}),
           (("--wait",), {"action": "store_true",
                          "help": "mobile client: follow the transfer until it is complete"}),
           (("--again",), {"action": "store_true",
                           "help": "pay once more although the latest transfer is the same "
                                   "recipient and amount (otherwise that one is returned)"}),
           (("--force",), {"action": "store_true",
                           "help": "pay a raw hex address that is no known account"}))
    async def do_transfer(self, args: argparse.Namespace) -> None:
        """Pay AMOUNT to RECIPIENT: votes, certificate, confirmations, delivery.

        RECIPIENT is a client name of the committee file, an fp1... address (its checksum
        catches typos) or 64 hex digits; hex that is no known account is refused unless
        --force, the all-zero address always.  On a WiFi Direct (mobile) client it
        returns once the order is signed; the daemon visits authorities as they come into
        range (--wait follows it).  Typing the same transfer again while it is
        unfinished, or before its success was shown, returns that transfer instead of
        paying twice; --again pays once more.  Exit 0 once the certificate exists (the
        money has moved), 1 if refused or without a quorum.
        """

        def show(p: dict[str, Any]) -> None:
            if self.as_json:
                print(json.dumps({"progress": p}), flush=True)
                return
            step = p.get("step", "?")
            detail = " ".join(f"{k}={v}" for k, v in p.items() if k != "step")
            print(f"  .. {step} {detail}", file=sys.stderr, flush=True)

        if not self.as_json:
            print(f"transfer {args.amount} to {args.recipient} ...", file=sys.stderr,
                  flush=True)
        req: dict[str, Any] = {"cmd": "transfer", "recipient": args.recipient,
                               "amount": args.amount, "again": args.again,
                               "force": args.force, "timeout": args.timeout}
        if args.wait:
            req["wait"] = True
        a = await self.call(req,
                            args.timeout + 10.0, show)
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

    @_args((("account",), {"nargs": "?", "help": "name, fp1... or hex address (on a client: "
                                                 "only its own; refused otherwise)"}))
    async def do_history(self, args: argparse.Namespace) -> None:
        """List certificates sent and received (a client: its own; an authority: ACCOUNT's,
        or every certificate confirmed there)."""
        req: dict[str, Any] = {"cmd": "history"}
        if args.account:
            req["account"] = args.account
        a = await self.call(req)
        if self.as_json:
            return
        if not a["history"]:
            print("no transfers")
        for row in a["history"]:
            received = row["direction"] == "received" and "source" in row
            via = f"  [{row['source']}]" if received else ""
            print(f"{row['direction']:8} #{row['sequence_number']:<4} {row['amount']:>10}  "
                  f"{row['sender']} -> {row['recipient']}{via}")

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

    @_args((("--since",), {"type": _count(0), "default": 0,
                           "help": "after this sequence number"}),
           (("--follow", "-f"), {"action": "store_true",
                                 "help": "keep printing new events until Ctrl-C"}))
    async def do_events(self, args: argparse.Namespace) -> None:
        """Print the node's recent events (JSON lines); --follow waits for new ones."""
        since = args.since
        while True:
            req: dict[str, Any] = {"cmd": "events", "since": since}
            if args.follow:
                req["wait"] = 30.0  # a long-poll: the daemon answers when an event comes
            a = await self.call(req, 60.0, echo=not args.follow)
            for e in a["events"]:
                if args.follow or not self.as_json:
                    print(json.dumps(e), flush=True)
                since = max(since, int(e["seq"]))
            if not args.follow:
                return

    @_args((("--timeout",), {"type": _seconds, "default": 60.0,
                             "help": "seconds (default 60)"}))
    async def do_sync(self, args: argparse.Namespace) -> None:
        """Client: ask the authorities for payments received and missed state.

        Exit 4 if not every reachable authority answered within --timeout.
        """
        a = await self.call({"cmd": "sync", "timeout": args.timeout}, args.timeout + 10.0)
        if not self.as_json:
            print(f"reached {', '.join(a['reached']) or 'no authority'}; "
                  f"credited {a['credited']}; balance {a['balance']}")

    async def do_reload(self, args: argparse.Namespace) -> None:
        """Re-read the config like SIGHUP (log level, peers directory)."""
        a = await self.call({"cmd": "reload"})
        if not self.as_json:
            print("reloaded: " + (", ".join(a["changed"]) or "nothing changed"))

    async def _ready(self, timeout: float) -> dict[str, Any]:
        """The daemon's ``status`` once it answers on its socket; CliError(4) after
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        refused = 0  # connections refused since the socket last changed
        async with PathWatch(self.socket) as watch:
            while True:
                try:
                    return await control_request(self.socket, {"cmd": "status"},
                                                 max(0.1, deadline - loop.time()))
                except FileNotFoundError:
                    refused = 0  # not there yet: the daemon creates it once it is up
                except ConnectionRefusedError:
                    refused += 1  # left by a dead daemon, or bound and not yet listening
                except (TimeoutError, OSError, ValueError):
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise CliError(f"no fastpayd ready on {self.socket} within "
                                   f"{timeout:g} s", EXIT_TIMEOUT)
                # Woken when the socket's directory changes.  Right after the socket
                # appeared, a refusal may be the instant between bind() and listen(),
                # which no file event follows: look again a few times, soon.
                if 0 < refused <= 5:
                    remaining = min(remaining, 0.01 * 2 ** refused)
                if await watch.changed(remaining):
                    refused = 0

    @_args((("--timeout",), {"type": _seconds, "default": 60.0,
                             "help": "seconds (default 60)"}))
    async def do_wait_ready(self, args: argparse.Namespace) -> None:
        """Wait until the daemon answers on its control socket (it opens the socket only
        once its state, link and session are up; woken by the socket's creation, no
        polling).  Exit 4 if not within --timeout."""
        a = await self._ready(args.timeout)
        if self.as_json:
            print(json.dumps(a), flush=True)
        else:
            print(f"{a['name']} ({a['role']}) ready, pid {a['pid']}")

    @_args((("what",), {"choices": WAIT_FOR, "metavar": "ready|payment|transfer",
                        "help": "what to wait for"}),
           (("sequence_number",), {"nargs": "?", "type": _count(0), "metavar": "SEQ",
                                   "help": "transfer: its sequence number (default: the "
                                           "latest transfer)"}),
           (("--ticket",), {"type": _count(1), "help": "transfer: the ticket a transfer "
                                                       "answered with (instead of SEQ)"}),
           (("--state",), {"choices": TRANSFER_STATES, "help": "transfer: certified, final "
                                                               "(default), completed, failed"}),
           (("--from",), {"dest": "sender", "metavar": "ACCOUNT",
                          "help": "payment: from this sender (name, fp1... or hex)"}),
           (("--amount",), {"dest": "min_amount", "type": _count(1), "metavar": "N",
                            "help": "payment: of at least N"}),
           (("--balance",), {"type": _count(0), "metavar": "N",
                             "help": "payment: until the balance is at least N"}),
           (("--since",), {"type": _count(0), "metavar": "EVENT",
                           "help": "payment: count payments after this event seq too "
                                   "(default: from now; an answer's last_seq is the "
                                   "next wait's --since)"}),
           (("--timeout",), {"type": _seconds, "default": 60.0,
                             "help": "seconds (default 60); then exit 4"}))
    async def do_wait(self, args: argparse.Namespace) -> None:
        """Wait for the daemon to be ready, a payment to arrive, or a transfer to reach a
        state; the daemon answers when its own events say so (a long-poll, no polling).

          fastpay wait ready
          fastpay wait payment [--from ACCOUNT] [--amount N] [--balance N] [--since EVENT]
          fastpay wait transfer [SEQ | --ticket T] [--state certified|final|completed|failed]

        A payment counts if it is credited after the wait begins (or after event
        --since), from --from, of at least --amount; --balance N waits until the balance
        is at least N (with no other option, no new payment is needed).  A transfer
        (default: the latest) is certified once its certificate exists, final once
        confirmed at a quorum, completed once at every authority, failed on no quorum or
        a refusal (short of a quorum because authorities were unreachable, the daemon
        retries it: a wait for success goes on).  Progress goes to stderr (JSON lines on
        stdout with --json).  Exit 0 when it holds, 4 after --timeout, 1 if it can no
        longer happen (refused for good while waiting for success: TransferFailed;
        certified while waiting for a failure: TransferCertified), 130 on Ctrl-C.
        """
        transfer_only = {"sequence_number": args.sequence_number, "--ticket": args.ticket,
                         "--state": args.state}
        payment_only = {"--from": args.sender, "--amount": args.min_amount,
                        "--balance": args.balance, "--since": args.since}
        for kind, options in (("transfer", transfer_only), ("payment", payment_only)):
            wrong = [k if k.startswith("-") else "SEQ" for k, v in options.items()
                     if v is not None and args.what != kind]
            if wrong:
                raise CliError(f"wait {args.what}: {', '.join(wrong)} is for 'wait {kind}'",
                               EXIT_USAGE)
        if args.sequence_number is not None and args.ticket is not None:
            raise CliError("wait transfer: give SEQ or --ticket, not both", EXIT_USAGE)
        if args.what == "ready":
            await self._ready(args.timeout)  # the socket exists only once the daemon is up
        req: dict[str, Any] = {"cmd": "wait", "for": args.what, "timeout": args.timeout}
        for key in ("sequence_number", "ticket", "state", "sender", "min_amount",
                    "balance", "since"):
            if getattr(args, key) is not None:
                req[key] = getattr(args, key)

        def show(p: dict[str, Any]) -> None:
            if self.as_json:
                print(json.dumps({"progress": p}), flush=True)
                return
            if p.get("step") == "waiting":
                return
            event = p.get("event") or {}
            detail = " ".join(f"{k}={v}" for k, v in event.items()
                              if k not in ("seq", "event"))
            now = f" (now {p['state']})" if p.get("state") else ""
            print(f"  .. {p.get('step')} {detail}{now}", file=sys.stderr, flush=True)

        if not self.as_json and args.what != "ready":
            print(f"waiting for {_wait_target(args)} (up to {args.timeout:g} s) ...",
                  file=sys.stderr, flush=True)
        a = await self.call(req, args.timeout + 10.0, show)
        if self.as_json:
            return
        if args.what == "ready":
            st = a["status"]
            print(f"{st['name']} ({st['role']}) ready, pid {st['pid']}")
        elif args.what == "payment":
            p = a["payment"]
            got = (f"received {p['amount']} from {p['sender']} (#{p['sequence_number']}, "
                   f"via {p['peer']}); " if p else "")
            print(f"{got}balance {a['balance']}")
        else:
            where = (f" (confirmed at {', '.join(a['confirmed'])})" if a["confirmed"]
                     else "")
            why = f": {a['failure']}" if a.get("failure") else ""
            print(f"transfer #{a['sequence_number']}: {a['state']}{where}{why}; "
                  f"balance {a['balance']}")

    @_args((("topic",), {"nargs": "?", "metavar": "COMMAND", "help": "a command"}))
    async def do_help(self, args: argparse.Namespace) -> None:
        """Show the commands, or one COMMAND's help (--json: the same as one object)."""
        parser = _parser()
        choices = _subparsers(parser).choices
        if args.topic is None:
            if self.as_json:
                print(json.dumps({"ok": True, "commands": {
                    name: (inspect.getdoc(getattr(Cli, "do_" + name.replace("-", "_")))
                           or "").split("\n\n")[0].replace("\n", " ")
                    for name in sorted(choices)},
                    "exit_codes": {str(k): v for k, v in EXIT_CODES.items()}}), flush=True)
            else:
                parser.print_help()
            return
        sub = choices.get(args.topic)
        if sub is None:
            raise CliError(f"no command {args.topic!r}; 'fastpay help' lists them", EXIT_USAGE)
        if self.as_json:
            print(json.dumps({"ok": True, "command": args.topic, "usage": sub.format_usage(),
                              "help": sub.format_help()}), flush=True)
        else:
            sub.print_help()


def _wait_target(args: argparse.Namespace) -> str:
    """What ``fastpay wait`` waits for, in words (its first stderr line)."""
    if args.what == "transfer":
        which = (f"ticket {args.ticket}" if args.ticket is not None else
                 f"#{args.sequence_number}" if args.sequence_number is not None
                 else "(the latest)")
        return f"transfer {which} to be {args.state or 'final'}"
    parts = []
    if args.sender is not None or args.min_amount is not None or args.balance is None:
        parts.append("a payment")
    if args.sender is not None:
        parts.append(f"from {args.sender}")
    if args.min_amount is not None:
        parts.append(f"of at least {args.min_amount}")
    if args.balance is not None:
        parts.append(f"{'and ' if parts else ''}a balance of at least {args.balance}")
    return " ".join(parts)


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


# Commands that do not talk to a daemon (they need no --socket/--config).
LOCAL_COMMANDS = frozenset({"help"})


def _global_options(p: argparse.ArgumentParser, default: Any) -> None:
    """--socket/--config/--json, on the main parser and (SUPPRESSed) on every command."""
    p.add_argument("--socket", type=Path, default=default,
                   help="control socket path ($FASTPAY_SOCKET)")
    p.add_argument("--config", type=Path, default=default,
                   help="the node's config file (finds its socket)")
    p.add_argument("--json", action="store_true", default=default or False,
                   help="print the daemon's answer as JSON (progress as JSON lines first)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastpay", description="Control a running fastpayd. The options --socket, "
        "--config and --json may come before or after the command; 'fastpay help COMMAND' "
        "shows a command's help.", epilog=EXIT_EPILOG)
    _global_options(p, None)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, fn in inspect.getmembers(Cli, inspect.iscoroutinefunction):
        if not name.startswith("do_"):
            continue
        doc = inspect.getdoc(fn) or ""
        first = doc.split("\n\n")[0].replace("\n", " ")
        sp = sub.add_parser(name[3:].replace("_", "-"), help=first, description=doc,
                            epilog=EXIT_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        for flags, kwargs in getattr(fn, "cli_args", ()):
            sp.add_argument(*flags, **kwargs)
        _global_options(sp, argparse.SUPPRESS)
    return p


def _subparsers(p: argparse.ArgumentParser) -> Any:
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None and args.config is not None:
        raise CliError("give --socket or --config, not both", EXIT_USAGE)
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


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("fastpay: a command is needed; 'fastpay help' lists them", file=sys.stderr)
        return EXIT_USAGE
    try:
        socket = Path() if args.command in LOCAL_COMMANDS else _socket_path(args)
        cli = Cli(socket, args.json)
        asyncio.run(getattr(cli, f"do_{args.command.replace('-', '_')}")(args))
    except CliError as exc:
        print(f"fastpay: {exc}", file=sys.stderr)
        if args.json and not exc.shown:  # the last stdout line is an object, always
            print(json.dumps({"ok": False, "error": {
                "code": _CLI_CODES.get(exc.status, "Error"), "message": str(exc)}}),
                flush=True)
        return exc.status
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (:data:`EXIT_CODES`)."""
    try:
        status = _main(argv)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if isinstance(exc, BrokenPipeError):
            return _closed_output()
        print(f"fastpay: unexpected error (a bug, please report it): "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return status


def _closed_output() -> int:
    """The reader went away (`fastpay events --follow | head`): stop quietly, and keep the
    interpreter's final flush from failing again on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
