#!/usr/bin/env python3
"""FastPay over WiFi Direct, as a Mininet-WiFi user writes it.

    sudo .venv/bin/python examples/fastpay_p2p_demo.py            # mininet-wifi> CLI
    sudo .venv/bin/python examples/fastpay_p2p_demo.py --batch    # the story, headless

``create_p2p_network(num_authorities, num_clients)`` builds a Mininet-WiFi network whose
stations are FastPay authorities (``cls=WiFiAuthority``) on a circle and clients
(``cls=WiFiClient``) with Mininet-WiFi mobility bounds (``min_x/max_x/min_v/max_v``);
wmediumd is the medium. Every station then runs its own dbus-daemon, ``wpa_supplicant -u``
and ``fastpayd`` (``start_fastpay``), and ``FastPayCLI`` is Mininet-WiFi's CLI
(``nodes``, ``net``, ``distance``, ``sta1 ping sta2``, ``py`` ...) plus ``discover``,
``mobile_transfer``, ``progress``, ``show_peers``, ``connection_status``, ``balances`` ...

Interactive: the clients move by Mininet-WiFi's RandomDirection model. ``--batch``: the
clients stand still and the script walks client0 from one pair of authorities to the
next (no single place reaches a quorum), pays client1 and checks every balance.

On a kernel without mac80211_hwsim (these machines) the script re-runs itself in the
QEMU/TCG VM (emulation.vm); on a host kernel with hwsim it runs directly.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RANGE = 40.0  # metres: tx power 5 dBm at exponent 3.5 and 0 dBi antennas (39.8 m)
EXPONENT = 3.5
CENTER = (80.0, 80.0)
RADIUS = 42.43  # four authorities: the corners of a 60 m square, 30 m from each midpoint


def authority_positions(n: int) -> list[tuple[float, float]]:
    """Authorities on a circle; consecutive pairs are in range of their midpoint."""
    return [(round(CENTER[0] + RADIUS * math.cos(math.radians(225 + 360 * i / n)), 2),
             round(CENTER[1] + RADIUS * math.sin(math.radians(225 + 360 * i / n)), 2))
            for i in range(n)]


def midpoints(n: int) -> list[tuple[float, float]]:
    """Where client0 stops: between authority i and i+1 (two in range, never a quorum)."""
    pos = authority_positions(n)
    return [(round((pos[i][0] + pos[(i + 1) % n][0]) / 2, 2),
             round((pos[i][1] + pos[(i + 1) % n][1]) / 2, 2)) for i in range(n)]


def create_p2p_network(num_authorities: int = 4, num_clients: int = 2,
                       mobile: bool = True, seed: int = 1) -> Any:
    """Build (configureNodes + build) a Mininet-WiFi network of FastPay stations."""
    from mn_wifi.link import wmediumd
    from mn_wifi.net import Mininet_wifi
    from mn_wifi.wmediumdConnector import interference

    from emulation.backends.mininet import (
        patch_wmediumd_connect,
        prepare_environment,
        remove_stale_socket,
    )
    from emulation.backends.mininet_nodes import WiFiAuthority, WiFiClient

    prepare_environment()  # our tools on PATH, debugfs
    remove_stale_socket()  # and mn_wifi's wmediumd connect waits for wmediumd
    patch_wmediumd_connect()
    net = Mininet_wifi(link=wmediumd, wmediumd_mode=interference)
    for i, (x, y) in enumerate(authority_positions(num_authorities)):
        net.addStation(f"auth{i}", cls=WiFiAuthority, position=f"{x},{y},0", range=RANGE,
                       antennaGain=0)
    start = midpoints(num_authorities)[0]
    last = authority_positions(num_authorities)[-1]
    out = (last[0] - CENTER[0], last[1] - CENTER[1])
    scale = 30.0 / math.hypot(*out)
    for j in range(num_clients):
        if j == 0:
            x, y = start
        else:  # the payees: 30 m outside the last authority, a few metres apart
            x = round(last[0] + out[0] * scale + 6 * (j - 1), 2)
            y = round(last[1] + out[1] * scale, 2)
        net.addStation(f"client{j}", cls=WiFiClient, position=f"{x},{y},0", range=RANGE,
                       antennaGain=0, min_x=0, max_x=160, min_y=0, max_y=160, min_v=1,
                       max_v=3)
    net.setPropagationModel(model="logDistance", exp=EXPONENT)
    net.configureNodes()
    if mobile:
        net.setMobilityModel(time=0, model="RandomDirection", max_x=160, max_y=160,
                             seed=seed)
    net.build()
    return net


def run_batch(net: Any, num_authorities: int) -> bool:
    """The story through the same CLI a user types into; True if every step passed."""
    from emulation.backends.mininet_nodes import FastPayCLI

    amount = 10
    genesis = 1000
    steps = ["nodes", "distance client0 auth0", "discover client0",
             f"mobile_transfer client0 client1 {amount}"]
    walk = midpoints(num_authorities)[1:]
    tail = ["wait_payment client0 600", f"receive client1 {genesis + amount} 400",
            "balances", f"expect_balance client0 {genesis - amount}",
            f"expect_balance client1 {genesis + amount}", "show_peers client0"]
    ok = _retry(FastPayCLI, net, "wait_in_range client0 auth0 auth1", 180)
    for line in steps:
        ok = _step(FastPayCLI, net, line) and ok
    _wait_visits(net, ["auth0", "auth1"], 300)  # the first stop's votes
    for k, (x, y) in enumerate(walk, start=1):
        ok = _step(FastPayCLI, net, f"py net.get('client0').setPosition('{x},{y},0')") and ok
        _wait_visits(net, [f"auth{k % num_authorities}", f"auth{(k + 1) % num_authorities}"],
                     300)
    for line in tail:
        ok = _step(FastPayCLI, net, line) and ok
    return ok


def _step(cli: Any, net: Any, line: str) -> bool:
    print(f"mininet-wifi> {line}", flush=True)
    cli.last_ok = True  # Mininet-WiFi's own commands do not report failure
    cli(net, cmd=line)
    return bool(cli.last_ok)


def _retry(cli: Any, net: Any, line: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if _step(cli, net, line) or time.monotonic() >= deadline:
            return bool(cli.last_ok)
        time.sleep(1.0)  # the daemon's table changes once per discovery round


def _wait_visits(net: Any, authorities: list[str], seconds: float) -> None:
    """Until client0 has done at this stop what it can: a vote from each authority here
    while there is no certificate, a confirmation at each once there is one (or
    ``seconds`` pass -- then the walk goes on anyway)."""
    daemon = net.fastpay.daemon("client0")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        events = daemon.events()
        cert = any(e["event"] == "certificate_formed" for e in events)
        done = {e.get("authority") for e in events
                if e["event"] == "confirmation_delivered"
                or (not cert and e["event"] == "vote_received")}
        if set(authorities) <= done:
            return
        time.sleep(1.0)  # polling the daemon's events file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--batch", action="store_true", help="run the story headless")
    parser.add_argument("--authorities", type=int, default=4)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--vm-timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root: sudo .venv/bin/python examples/fastpay_p2p_demo.py", file=sys.stderr)
        return 2
    from emulation import vm

    if not vm.in_vm() and vm.needs_vm():
        print("fastpay_p2p_demo: this kernel has no mac80211_hwsim; running in the VM",
              flush=True)
        return vm.run_in_vm([sys.executable, str(Path(__file__).resolve()),
                             *sys.argv[1:]], cwd=str(ROOT),
                            env={"PYTHONPATH": str(ROOT)}, timeout=args.vm_timeout,
                            interactive=not args.batch and sys.stdin.isatty())
    if args.authorities < 4 and args.batch:
        print("--batch needs at least 4 authorities", file=sys.stderr)
        return 2
    from mininet.log import setLogLevel

    setLogLevel("info")  # as Mininet-WiFi scripts do: its steps, `distance` answers
    t0 = time.monotonic()
    net = create_p2p_network(args.authorities, args.clients, mobile=not args.batch)
    print(f"*** Mininet-WiFi network built in {time.monotonic() - t0:.1f} s", flush=True)
    ok = True
    try:
        from emulation.backends.mininet_nodes import FastPayCLI, start_fastpay

        start_fastpay(net)
        if args.batch:
            ok = run_batch(net, args.authorities)
        else:
            FastPayCLI(net)
    finally:
        net.stop()
    print(f"*** demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s",
          flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
