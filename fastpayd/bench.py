"""Benchmark: one authority process on loopback against a load generator in this process.

``python -m fastpayd.bench [--orders N] [--connections C] [--window W]``

1. Generate a 4-authority test network whose genesis funds N sender accounts, and, before
   anything is timed, pre-sign N transfer orders (distinct senders and recipients) and the
   N certificates for them (votes of auth1..auth3, a quorum of 3), pre-encoded as frames.
2. Start ``auth0`` as a real ``fastpayd`` process (durability on: WAL, synchronous=FULL,
   group commit), pinned to CPU 0; this process (the load generator) pins itself to CPU 1.
3. Phase *orders*: send all orders over C connections with W requests in flight per
   connection; then phase *confirmations* the same way.  The rate is measured in the steady
   state, between the 10th and the 90th percentile response (the start-up, while the first
   batch is voted on and committed, and the drain at the end, when the pipe is no longer
   full, are left out); the whole-phase rate is printed too.  Every response is decoded
   after the clock stops and must be a vote / an acknowledgement.
4. Measure the crypto ceiling in the same run with the same library (PyNaCl through
   ``protocol.crypto``): ``1/(verify+sign)`` orders/s and ``1/(3*verify)`` confirmations/s,
   and print the ratios.  The last two lines are ``orders ratio: X.XX`` and
   ``confirmations ratio: X.XX``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fastpayd.control import control_request
from fastpayd.framing import FrameDecoder, encode_frame
from fastpayd.keys import read_key
from fastpayd.testnet import generate_testnet
from protocol import (
    AuthorityInfo,
    AuthorityState,
    CertifiedTransferOrder,
    Committee,
    ConfirmationAck,
    ConfirmationOrder,
    InMemoryAuthorityStore,
    InvalidSignature,
    KeyPair,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    decode,
    encode,
)
from protocol.crypto import verify_signature

REPO = Path(__file__).resolve().parent.parent


def _pin(cpu: int, pid: int = 0) -> None:
    with contextlib.suppress(AttributeError, OSError):
        if cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(pid, {cpu})


class _Cpu:
    """CPU time of a process from /proc: user, system, and per thread (by thread name)."""

    def __init__(self, user: float, system: float, threads: dict[str, float]) -> None:
        self.user, self.system, self.threads = user, system, threads

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: _Cpu) -> _Cpu:
        names = set(self.threads) | set(other.threads)
        return _Cpu(self.user - other.user, self.system - other.system,
                    {n: self.threads.get(n, 0.0) - other.threads.get(n, 0.0) for n in names})


def _stat_times(path: Path) -> tuple[float, float]:
    fields = path.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _cpu(pid: int) -> _Cpu:
    """User+system CPU time of process ``pid`` (all its threads), from /proc."""
    try:
        user, system = _stat_times(Path(f"/proc/{pid}/stat"))
    except OSError:
        return _Cpu(float("nan"), float("nan"), {})
    threads: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            name = (task / "comm").read_text().strip()
            # Python does not name its threads for the OS: the main thread runs the event
            # loop, the others are the database's commit thread (and the watchdog's).
            name = "event loop" if task.name == str(pid) else "commit"
            threads[name] = threads.get(name, 0.0) + sum(_stat_times(task / "stat"))
    return _Cpu(user, system, threads)


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of ``pid`` in MiB, from /proc/PID/status."""
    values = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Clock:
    """Counts responses over all connections; stamps when the window opens and closes."""

    def __init__(self, total: int, low: float = 0.1, high: float = 0.9) -> None:
        self.count = 0
        self.open_at = max(1, int(total * low))
        self.close_at = max(self.open_at + 1, int(total * high))
        self.t_open = self.t_close = 0.0

    def add(self, n: int) -> None:
        before, self.count = self.count, self.count + n
        if before < self.open_at <= self.count:
            self.t_open = time.perf_counter()
        if before < self.close_at <= self.count:
            self.t_close = time.perf_counter()

    @property
    def window(self) -> tuple[int, float]:
        """(responses, seconds) between the window's two stamps."""
        return self.close_at - self.open_at, self.t_close - self.t_open


class _Pump(asyncio.Protocol):
    """Keeps ``window`` requests in flight on one connection; collects raw responses."""

    def __init__(self, frames: list[bytes], window: int, done: asyncio.Future[None],
                 clock: _Clock) -> None:
        self.clock = clock
        self.frames = frames
        self.window = window
        self.next = 0
        self.responses: list[bytes] = []
        self.decoder = FrameDecoder()
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def start(self) -> None:
        self._send(self.window)

    def _send(self, n: int) -> None:
        assert self.transport is not None
        batch = self.frames[self.next : self.next + n]
        self.next += len(batch)
        if batch:
            self.transport.write(b"".join(batch))

    def data_received(self, data: bytes) -> None:
        got = self.decoder.feed(data)
        self.responses += got
        self._send(len(got))
        self.clock.add(len(got))
        if len(self.responses) == len(self.frames) and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"authority closed the connection: {exc}"))


def _same(pump: _Pump) -> _Pump:
    return pump


async def _phase(port: int, frames: list[bytes], connections: int, window: int
                 ) -> tuple[float, tuple[int, float], list[bytes]]:
    """Run one phase; return (whole-phase seconds, steady-state window, responses)."""
    loop = asyncio.get_running_loop()
    pumps: list[_Pump] = []
    clock = _Clock(len(frames))
    for i in range(connections):
        fut: asyncio.Future[None] = loop.create_future()
        pump = _Pump(frames[i::connections], window, fut, clock)
        await loop.create_connection(functools.partial(_same, pump), "127.0.0.1", port)
        pumps.append(pump)
    t0 = time.perf_counter()
    for p in pumps:
        p.start()
    await asyncio.wait_for(asyncio.gather(*(p.done for p in pumps)), 600)
    elapsed = time.perf_counter() - t0
    for p in pumps:
        assert p.transport is not None
        p.transport.close()
    return elapsed, clock.window, [r for p in pumps for r in p.responses]


class _Crypto:
    """Seconds per sign and per verify with the protocol's own crypto (PyNaCl): wall-clock
    (for the throughput ceilings) and this thread's CPU time (for the CPU ratios, which
    must not count time the thread spent waiting for a core on a shared machine)."""

    def __init__(self, sample: list[TransferOrder], authority: KeyPair) -> None:
        msgs = [o.transfer.vote_signing_bytes for o in sample]
        t0, c0 = time.perf_counter(), time.thread_time()
        sigs = [authority.sign(m) for m in msgs]
        t1, c1 = time.perf_counter(), time.thread_time()
        pk = authority.public_key
        ok = all(verify_signature(pk, m, s) for m, s in zip(msgs, sigs, strict=True))
        t2, c2 = time.perf_counter(), time.thread_time()
        assert ok
        n = len(msgs)
        self.sign, self.verify = (t1 - t0) / n, (t2 - t1) / n
        self.sign_cpu, self.verify_cpu = (c1 - c0) / n, (c2 - c1) / n

    def best(self, other: _Crypto) -> _Crypto:
        """The faster of two measurements, figure by figure."""
        for name in ("sign", "verify", "sign_cpu", "verify_cpu"):
            setattr(self, name, min(getattr(self, name), getattr(other, name)))
        return self


def _confirmation_verifies(order: TransferOrder, cert: ConfirmationOrder,
                           auth_keys: dict[str, KeyPair]) -> int:
    """Signature checks the protocol's authority makes per confirmation, probed on it.

    Every vote in the certificate is checked; whether the client's signature on the carried
    order is checked too depends on the protocol version in the tree, so ask it: a
    certificate with valid votes over an order whose client signature is broken.
    """
    committee = Committee("probe", {n: AuthorityInfo(k.public_key, 1)
                                    for n, k in auth_keys.items()})
    state = AuthorityState("auth0", auth_keys["auth0"], committee, InMemoryAuthorityStore())
    signature = bytes([order.signature[0] ^ 1]) + order.signature[1:]
    broken = ConfirmationOrder(certificate=CertifiedTransferOrder(
        value=TransferOrder(transfer=order.transfer, signature=signature),
        signatures=cert.certificate.signatures))
    votes = len(cert.certificate.signatures)
    try:
        state.handle_confirmation_order(broken)
    except InvalidSignature:
        return votes + 1
    return votes


class _Authority:
    """One real ``fastpayd`` authority process: started (timed until READY=1), stopped."""

    def __init__(self, tmp: Path, name: str = "auth0") -> None:
        self.tmp = tmp
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600) -> float:
        """Start the process; return the seconds from spawn to its READY=1."""
        notify_path = self.tmp / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.tmp / f"{self.name}.log", "ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastpayd", "--config", str(self.tmp / f"{self.name}.toml")],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the authority exited with status {self.proc.returncode}"
                                       f" (log: {self.tmp / (self.name + '.log')})")
                notify.settimeout(0.2)
                try:
                    if b"READY=1" in notify.recv(4096).split(b"\n"):
                        elapsed = time.perf_counter() - t0
                        _pin(0, self.proc.pid)
                        return elapsed
                except TimeoutError:
                    continue
            raise TimeoutError("the authority did not become ready")
        finally:
            notify.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _commits(tmp: Path) -> int:
    status = await control_request(tmp / "run" / "auth0.sock", {"cmd": "status"})
    return int(status["storage"]["commits"])


def _sign_orders(senders: list[KeyPair], tag: bytes) -> list[TransferOrder]:
    return [TransferOrder.sign(Transfer(sender=k.public_key,
                                        recipient=hashlib.sha256(tag + b"%d" % i).digest(),
                                        amount=1, sequence_number=0), k)
            for i, k in enumerate(senders)]


def _senders(n: int, tag: bytes) -> list[KeyPair]:
    return [KeyPair.from_seed(hashlib.sha256(tag + b"%d" % i).digest()) for i in range(n)]


def _cpu_ratio(a: float, b: float) -> str:
    """``a / b`` to two places, for a CPU time ``b`` that /proc counts in clock ticks
    (10 ms): a tiny run may measure none at all, and then there is no ratio to print."""
    return f"{a / b:.2f}" if b > 0 else "not measured (under one clock tick)"


def _cpu_line(what: str, cpu: _Cpu, n: int, crypto: float) -> str:
    threads = ", ".join(f"{name} {t / n * 1e6:.0f}" for name, t in sorted(cpu.threads.items())
                        if t > 0)
    return (f"authority CPU per {what}: {cpu.total / n * 1e6:.0f} us (user {cpu.user / n * 1e6:.0f}"
            f" + sys {cpu.system / n * 1e6:.0f}; by thread: {threads}), of which crypto "
            f"{crypto * 1e6:.0f} us")


async def _scale(size: int, n: int, args: argparse.Namespace, base: Path) -> dict[str, float]:
    """One authority over a genesis of ``size`` accounts: start-up, RSS, orders/s."""
    tmp = base / f"genesis-{size}"
    senders = _senders(n, b"bench-scale-sender-")
    port = _free_port()

    def genesis() -> Iterator[tuple[bytes, int]]:
        # The senders spread over the address space like everybody else; the rest of the
        # genesis are addresses nobody holds a key for (an authority never needs the key).
        yield from ((k.public_key, 1_000) for k in senders)
        for i in range(size - n):
            yield hashlib.sha256(b"bench-genesis-%d" % i).digest(), 1_000

    generate_testnet(tmp, authorities=4, clients=0, balance=0, base_port=port,
                     extra_genesis=genesis(), genesis_file=True)
    frames = [encode_frame(encode(o)) for o in _sign_orders(senders, b"bench-scale-rcpt-")]
    authority = _Authority(tmp)
    try:
        first = authority.start()  # imports the genesis file into the database
        authority.stop()
        db_mib = (tmp / "state" / "auth0" / "fastpay.sqlite").stat().st_size / 2**20
        startup = authority.start()  # what every later start costs
        rss_start, _ = _rss_mib(authority.pid)
        cpu0 = _cpu(authority.pid)
        _, window, responses = await _phase(port, frames, args.connections, args.window)
        cpu = _cpu(authority.pid) - cpu0
        rss, peak = _rss_mib(authority.pid)
    finally:
        authority.stop()
    if not all(isinstance(decode(r), SignedTransferOrder) for r in responses):
        raise RuntimeError(f"genesis {size}: some order responses were not votes")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = window[0] / window[1]
    print(f"genesis {size:>8} accounts: first start (import) {first:5.2f} s, start-up "
          f"{startup:4.2f} s, RSS {rss_start:4.0f} MiB at start / {rss:4.0f} MiB (peak {peak:.0f})"
          f" after {n} orders, database {db_mib:.0f} MiB; orders {rate:6.0f} /s, "
          f"CPU {cpu.total / n * 1e6:.0f} us per order", flush=True)
    return {"startup": startup, "rate": rate, "cpu": cpu.total / n, "rss": rss}


async def _main(args: argparse.Namespace) -> int:
    n = args.orders
    tmp = Path(tempfile.mkdtemp(prefix="fastpayd-bench-"))
    print(f"bench: preparing {n} orders and {n} certificates in {tmp} ...", flush=True)
    senders = _senders(n, b"bench-sender-")
    port = _free_port()
    generate_testnet(tmp, authorities=4, clients=0, balance=0, base_port=port,
                     extra_genesis=[(k.public_key, 1_000) for k in senders], genesis_file=True)
    auth_keys = {f"auth{i}": read_key(tmp / f"auth{i}.key") for i in range(4)}
    orders = _sign_orders(senders, b"bench-recipient-")
    certs = []
    for o in orders:
        votes = [SignedTransferOrder.sign(o, name, auth_keys[name])
                 for name in ("auth1", "auth2", "auth3")]
        certs.append(ConfirmationOrder(certificate=CertifiedTransferOrder(
            value=o, signatures=tuple(sorted((v.authority, v.signature) for v in votes)))))
    order_frames = [encode_frame(encode(o)) for o in orders]
    conf_frames = [encode_frame(encode(c)) for c in certs]
    verifies = _confirmation_verifies(orders[0], certs[0], auth_keys)

    _pin(1)
    authority = _Authority(tmp)
    try:
        authority.start()
        print(f"bench: authority auth0 pid {authority.pid} ready on 127.0.0.1:{port} "
              f"(committee of 4, durability on); {args.connections} connections x "
              f"{args.window} in flight", flush=True)
        crypto = _Crypto(orders[: min(n, 2000)], auth_keys["auth0"])
        commits0 = await _commits(tmp)
        cpu0 = _cpu(authority.pid)
        t_orders, w_orders, responses = await _phase(port, order_frames, args.connections,
                                                     args.window)
        cpu_orders = _cpu(authority.pid) - cpu0
        commits1 = await _commits(tmp)
        wrong = [m for m in map(decode, responses) if not isinstance(m, SignedTransferOrder)]
        if wrong:
            print(f"bench: {len(wrong)} order responses were not votes, e.g. {wrong[0]}")
            return 1
        cpu0 = _cpu(authority.pid)
        t_conf, w_conf, responses = await _phase(port, conf_frames, args.connections, args.window)
        cpu_conf = _cpu(authority.pid) - cpu0
        commits2 = await _commits(tmp)
        bad = sum(not (isinstance(a := decode(r), ConfirmationAck) and a.applied)
                  for r in responses)
        if bad:
            print(f"bench: {bad} confirmation responses were not applied acks")
            return 1
        crypto = crypto.best(_Crypto(orders[: min(n, 2000)], auth_keys["auth0"]))
    finally:
        authority.stop()
    orders_s = w_orders[0] / w_orders[1]
    conf_s = w_conf[0] / w_conf[1]
    crypto_order = crypto.sign + crypto.verify
    crypto_conf = verifies * crypto.verify
    cpu_crypto_order = crypto.sign_cpu + crypto.verify_cpu
    cpu_crypto_conf = verifies * crypto.verify_cpu
    print(f"crypto: sign {crypto.sign * 1e6:.1f} us, verify {crypto.verify * 1e6:.1f} us wall "
          f"({crypto.sign_cpu * 1e6:.1f} / {crypto.verify_cpu * 1e6:.1f} us CPU; PyNaCl); "
          f"an order costs verify+sign, a confirmation {verifies} verifies")
    print(f"group commit: {commits1 - commits0} transactions for {n} orders, "
          f"{commits2 - commits1} for {n} confirmations")
    print(f"orders:        {orders_s:8.0f} /s  (steady state: {w_orders[0]} in "
          f"{w_orders[1]:.2f} s; whole phase {n / t_orders:.0f} /s); "
          f"ceiling 1/(verify+sign) = {1 / crypto_order:.0f} /s")
    print(f"confirmations: {conf_s:8.0f} /s  (steady state: {w_conf[0]} in "
          f"{w_conf[1]:.2f} s; whole phase {n / t_conf:.0f} /s); "
          f"ceiling 1/({verifies}*verify) = {1 / crypto_conf:.0f} /s")
    # CPU time is what the authority itself spent: a figure that does not depend on other
    # load on the machine (wall-clock figures do).
    print(_cpu_line("order", cpu_orders, n, cpu_crypto_order))
    print(_cpu_line("confirmation", cpu_conf, n, cpu_crypto_conf))
    scale = []
    for size in args.genesis_sizes:
        scale.append(await _scale(size, min(args.scale_orders, size), args, tmp))
    if len(scale) > 1:
        cpu_ratio = "x" + _cpu_ratio(scale[-1]["cpu"], scale[0]["cpu"])
        print(f"genesis {args.genesis_sizes[-1]} vs {args.genesis_sizes[0]} accounts: orders/s "
              f"x{scale[-1]['rate'] / scale[0]['rate']:.2f}, CPU per order "
              f"{cpu_ratio}, start-up "
              f"{scale[0]['startup']:.2f} -> {scale[-1]['startup']:.2f} s")
    print(f"orders ratio: {orders_s * crypto_order:.2f}")
    print(f"confirmations ratio: {conf_s * crypto_conf:.2f}")
    print(f"orders cpu ratio: {_cpu_ratio(cpu_crypto_order * n, cpu_orders.total)}")
    print(f"confirmations cpu ratio: {_cpu_ratio(cpu_crypto_conf * n, cpu_conf.total)}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("genesis sizes must be positive")
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpayd.bench", description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=20000, help="orders (and confirmations)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--window", type=int, default=512, help="requests in flight per connection")
    p.add_argument("--genesis-sizes", type=_sizes, default=[10_000, 100_000, 1_000_000],
                   metavar="N,N,...", help="genesis sizes of the scaling runs ('' for none)")
    p.add_argument("--scale-orders", type=int, default=10_000,
                   help="orders sent in each scaling run")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if min(args.orders, args.connections, args.window, args.scale_orders) < 1:
        print("bench: --orders, --connections, --window and --scale-orders must be positive",
              file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except (RuntimeError, TimeoutError, ConnectionError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
