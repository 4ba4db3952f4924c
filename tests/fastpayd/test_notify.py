"""sd_notify datagrams (fastpayd.notify) and the daemon's signal handling."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest
from fastpayd_helpers import LocalNet

from fastpayd.notify import Notifier


async def test_ready_watchdog_stopping(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000",
                         "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == pytest.approx(0.1)
    try:
        notifier.ready("serving")
        assert (await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)).split(b"\n") == [
            b"READY=1", b"STATUS=serving"]
        notifier.start_watchdog()
        assert await asyncio.wait_for(loop.sock_recv(sock, 4096), 5) == b"WATCHDOG=1"
        assert await asyncio.wait_for(loop.sock_recv(sock, 4096), 5) == b"WATCHDOG=1"
        await notifier.close()
        Notifier({"NOTIFY_SOCKET": str(path)}).stopping()
        assert await asyncio.wait_for(loop.sock_recv(sock, 4096), 5) == b"STOPPING=1"
    finally:
        await notifier.close()
        sock.close()


def test_no_notify_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.send("READY=1")


@pytest.mark.slow
async def test_sighup_reloads_log_level_and_sigterm_exits_zero(make_testnet) -> None:
    net: LocalNet = make_testnet(authorities=4, clients=1)
    daemon = await asyncio.to_thread(net.daemon("auth0").start)
    cfg = net.root / "auth0.toml"
    cfg.write_text(cfg.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(20):
        while True:
            events = (await daemon.control("events"))["events"]
            reloads = [e for e in events if e["event"] == "config_reloaded"]
            if reloads:
                break
            await asyncio.sleep(0.05)  # polling the daemon's event log until it appears
    assert reloads[0]["changed"] == ["log_level=debug"]
    assert daemon.stop() == 0
    assert "SIGHUP: reloaded config" in daemon.log()
