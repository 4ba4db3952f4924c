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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastpayd.control import control_request
from fastpayd.framing import FrameDecoder, encode_frame
from fastpayd.keys import read_key
from fastpayd.testnet import generate_testnet
from protocol import (
    CertifiedTransferOrder,
    ConfirmationAck,
    ConfirmationOrder,
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


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of process ``pid`` (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def _crypto_ceiling(sample: list[TransferOrder], authority: KeyPair) -> tuple[float, float]:
    """Seconds per sign and per verify, with the protocol's own crypto (PyNaCl)."""
    msgs = [o.transfer.vote_signing_bytes for o in sample]
    t0 = time.perf_counter()
    sigs = [authority.sign(m) for m in msgs]
    sign = (time.perf_counter() - t0) / len(msgs)
    pk = authority.public_key
    t0 = time.perf_counter()
    ok = all(verify_signature(pk, m, s) for m, s in zip(msgs, sigs, strict=True))
    verify = (time.perf_counter() - t0) / len(msgs)
    assert ok
    return sign, verify


def _wait_ready(proc: subprocess.Popen[bytes], notify: socket.socket, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the authority exited with status {proc.returncode}")
        notify.settimeout(0.5)
        try:
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return
        except TimeoutError:
            continue
    raise TimeoutError("the authority did not become ready")


async def _main(args: argparse.Namespace) -> int:
    n = args.orders
    tmp = Path(tempfile.mkdtemp(prefix="fastpayd-bench-"))
    print(f"bench: preparing {n} orders and {n} certificates in {tmp} ...", flush=True)
    senders = [KeyPair.from_seed(hashlib.sha256(b"bench-sender-%d" % i).digest())
               for i in range(n)]
    port = _free_port()
    generate_testnet(tmp, authorities=4, clients=0, balance=0, base_port=port,
                     extra_genesis=[(k.public_key, 1_000) for k in senders])
    auth_keys = {f"auth{i}": read_key(tmp / f"auth{i}.key") for i in range(4)}
    orders = []
    for i, k in enumerate(senders):
        recipient = hashlib.sha256(b"bench-recipient-%d" % i).digest()
        orders.append(TransferOrder.sign(Transfer(sender=k.public_key, recipient=recipient,
                                                  amount=1, sequence_number=0), k))
    certs = []
    for o in orders:
        votes = [SignedTransferOrder.sign(o, name, auth_keys[name])
                 for name in ("auth1", "auth2", "auth3")]
        certs.append(ConfirmationOrder(certificate=CertifiedTransferOrder(
            value=o, signatures=tuple(sorted((v.authority, v.signature) for v in votes)))))
    order_frames = [encode_frame(encode(o)) for o in orders]
    conf_frames = [encode_frame(encode(c)) for c in certs]

    notify_path = tmp / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(tmp / "auth0.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "fastpayd", "--config", str(tmp / "auth0.toml")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(proc, notify, 120)
        _pin(0, proc.pid)
        _pin(1)
        print(f"bench: authority auth0 pid {proc.pid} ready on 127.0.0.1:{port} "
              f"(committee of 4, durability on); {args.connections} connections x "
              f"{args.window} in flight", flush=True)
        sign, verify = _crypto_ceiling(orders[: min(n, 2000)], auth_keys["auth0"])

        control = tmp / "run" / "auth0.sock"
        commits0 = (await control_request(control, {"cmd": "status"}))["storage"]["commits"]
        cpu0 = _cpu_seconds(proc.pid)
        t_orders, w_orders, responses = await _phase(port, order_frames, args.connections,
                                                     args.window)
        cpu_orders = _cpu_seconds(proc.pid) - cpu0
        commits1 = (await control_request(control, {"cmd": "status"}))["storage"]["commits"]
        wrong = [m for m in map(decode, responses) if not isinstance(m, SignedTransferOrder)]
        if wrong:
            print(f"bench: {len(wrong)} order responses were not votes, e.g. {wrong[0]}")
            return 1
        cpu0 = _cpu_seconds(proc.pid)
        t_conf, w_conf, responses = await _phase(port, conf_frames, args.connections, args.window)
        cpu_conf = _cpu_seconds(proc.pid) - cpu0
        commits2 = (await control_request(control, {"cmd": "status"}))["storage"]["commits"]
        bad = sum(not (isinstance(a := decode(r), ConfirmationAck) and a.applied)
                  for r in responses)
        if bad:
            print(f"bench: {bad} confirmation responses were not applied acks")
            return 1
        sign2, verify2 = _crypto_ceiling(orders[: min(n, 2000)], auth_keys["auth0"])
        sign, verify = min(sign, sign2), min(verify, verify2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        notify.close()
    orders_s = w_orders[0] / w_orders[1]
    conf_s = w_conf[0] / w_conf[1]
    ceil_orders = 1 / (verify + sign)
    ceil_conf = 1 / (3 * verify)
    print(f"crypto: sign {sign * 1e6:.1f} us, verify {verify * 1e6:.1f} us (PyNaCl)")
    print(f"group commit: {commits1 - commits0} transactions for {n} orders, "
          f"{commits2 - commits1} for {n} confirmations")
    print(f"orders:        {orders_s:8.0f} /s  (steady state: {w_orders[0]} in "
          f"{w_orders[1]:.2f} s; whole phase {n / t_orders:.0f} /s); "
          f"ceiling 1/(verify+sign) = {ceil_orders:.0f} /s")
    print(f"confirmations: {conf_s:8.0f} /s  (steady state: {w_conf[0]} in "
          f"{w_conf[1]:.2f} s; whole phase {n / t_conf:.0f} /s); "
          f"ceiling 1/(3*verify) = {ceil_conf:.0f} /s")
    # CPU time is what the authority itself spent: a check that does not depend on other
    # load on the machine (wall-clock figures do).
    print(f"authority CPU per order {cpu_orders / n * 1e6:.0f} us "
          f"(crypto {(sign + verify) * 1e6:.0f} us), per confirmation {cpu_conf / n * 1e6:.0f} us "
          f"(crypto {3 * verify * 1e6:.0f} us); CPU-time ratios "
          f"{(sign + verify) * n / cpu_orders:.2f} / {3 * verify * n / cpu_conf:.2f}")
    print(f"orders ratio: {orders_s / ceil_orders:.2f}")
    print(f"confirmations ratio: {conf_s / ceil_conf:.2f}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpayd.bench", description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=20000, help="orders (and confirmations)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--window", type=int, default=512, help="requests in flight per connection")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if args.orders < 1 or args.connections < 1 or args.window < 1:
        print("bench: --orders, --connections and --window must be positive", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except (RuntimeError, TimeoutError, ConnectionError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
