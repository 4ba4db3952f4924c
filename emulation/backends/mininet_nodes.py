"""FastPay for Mininet-WiFi scripts: station classes for ``cls=`` and a ``mininet-wifi>`` CLI.

A Mininet-WiFi user writes the network as usual and marks FastPay stations by class::

    net = Mininet_wifi(link=wmediumd, wmediumd_mode=interference)
    net.addStation("auth0", cls=WiFiAuthority, position="50,50,0", range=40)
    net.addStation("client0", cls=WiFiClient, position="10,10,0", range=40,
                   min_x=0, max_x=100, min_y=0, max_y=100, min_v=1, max_v=3)
    net.setPropagationModel(model="logDistance", exp=3)
    net.configureNodes()
    net.setMobilityModel(time=0, model="RandomDirection", max_x=100, max_y=100, seed=1)
    net.build()
    start_fastpay(net)        # dbus-daemon, wpa_supplicant -u and fastpayd in each
    FastPayCLI(net)           # mininet-wifi> with discover, mobile_transfer, ...
    net.stop()                # the stations' daemons stop first (terminate())

:func:`start_fastpay` starts, in every :class:`WiFiAuthority` / :class:`WiFiClient`
station, the same per-station processes as ``python -m emulation.run`` (through
:meth:`emulation.backends.mininet.MininetNetwork.adopt`) and the FastPay layer
(:mod:`emulation.fastpay`: keys, committee, one fastpayd each). Positions and mobility
stay Mininet-WiFi's. Mininet-WiFi's ``net.stop()`` terminates every station; the first
FastPay station to go stops the daemons, before wmediumd and the radios disappear.

:class:`FastPayCLI` is Mininet-WiFi's own CLI (``nodes``, ``net``, ``distance``,
``sta1 ping sta2``, ``py`` ...) plus the FastPay commands of :mod:`emulation.fastpay`.
Importing this module imports ``mn_wifi`` (38-55 s under TCG).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from mn_wifi.cli import CLI
from mn_wifi.node import Station as _MnStation

from emulation import fastpay, scenario
from emulation.backends.mininet import MininetNetwork
from emulation.cli import CommandFailed
from emulation.network import EmulationError


class FastPayStation(_MnStation):  # type: ignore[misc]
    """A Mininet-WiFi station that runs a fastpayd (role: :attr:`role`)."""

    role = "plain"
    fastpay_net: MininetNetwork | None = None  # set by start_fastpay

    def terminate(self) -> None:
        """Mininet-WiFi's ``net.stop()`` calls this: our daemons go first."""
        net = self.fastpay_net
        if net is not None:
            layer = getattr(net, "fastpay", None)
            if layer is not None:
                layer.stop()
            net.stop()
            for node in net.stations.values():
                node.node.fastpay_net = None
        super().terminate()


class WiFiAuthority(FastPayStation):
    """An authority: keeps a P2P group up as GO and advertises the FastPay service."""

    role = "authority"


class WiFiClient(FastPayStation):
    """A (mobile) client: finds authorities in range, joins their groups, pays."""

    role = "client"


def start_fastpay(mn: Any, *, balance: int = 1000, link: dict[str, Any] | None = None,
                  seed: int = 1, log: Any = print) -> fastpay.FastPayLayer:
    """Start the daemons of every FastPay station of a built Mininet-WiFi network and
    return the payment layer (also at ``mn.fastpay``). Raises EmulationError."""
    roles = {s.name: s.role for s in mn.stations if isinstance(s, FastPayStation)}
    if not any(r in ("authority", "client") for r in roles.values()):
        raise EmulationError("no WiFiAuthority/WiFiClient stations in this network")
    net = MininetNetwork.adopt(mn, roles)
    for station in net.stations.values():
        station.node.fastpay_net = net
    scen = scenario.Scenario(
        name="Mininet-WiFi script", stations=list(net.specs), seed=seed, backend="mininet",
        extra={"fastpay": {"balance": balance, "link": dict(link or {})}})
    layer = fastpay.attach(net, scen, log=log)
    if layer is None:  # unreachable: roles were checked above
        raise EmulationError("no FastPay stations")
    mn.fastpay = layer
    return layer


# The FastPay commands, as in `python -m emulation.run`'s CLI.
COMMANDS = {
    "discover": fastpay.discover, "mobile_transfer": fastpay.mobile_transfer,
    "progress": fastpay.progress, "wait_payment": fastpay.wait_payment,
    "receive": fastpay.receive, "show_peers": fastpay.show_peers,
    "connection_status": fastpay.connection_status, "balances": fastpay.balances,
    "expect_balance": fastpay.expect_balance, "expect_in_range": fastpay.expect_in_range,
    "wait_in_range": fastpay.wait_in_range, "daemon": fastpay.daemon_cmd,
}


class _Shim:
    """What a FastPay command needs from its CLI: the network (ours) and ``say``."""

    def __init__(self, net: MininetNetwork, out: IO[str]) -> None:
        self.net, self._out = net, out

    def say(self, text: str = "") -> None:
        self._out.write(text + "\n")
        self._out.flush()


class FastPayCLI(CLI):  # type: ignore[misc]
    """Mininet-WiFi's CLI with FastPay's commands. ``last_ok`` is False after a failed
    FastPay command (for scripted runs, ``FastPayCLI(net, cmd=LINE)``)."""

    last_ok = True

    def __init__(self, mn: Any, stdin: Any = sys.stdin, script: str | None = None,
                 cmd: str | None = None) -> None:
        if getattr(mn, "fastpay", None) is None:
            start_fastpay(mn)
        super().__init__(mn, stdin=stdin, script=script, cmd=cmd)


def _command(fn: Any) -> Any:
    def method(self: FastPayCLI, line: str) -> None:
        FastPayCLI.last_ok = True
        shim = _Shim(self.mn.fastpay.net, sys.stdout)
        try:
            if fn(shim, line) is False:
                FastPayCLI.last_ok = False
        except (CommandFailed, KeyError, ValueError, EmulationError, RuntimeError,
                OSError) as exc:
            shim.say(f"*** {exc}")
            FastPayCLI.last_ok = False

    method.__doc__ = fn.__doc__
    return method


for _name, _fn in COMMANDS.items():
    setattr(FastPayCLI, f"do_{_name}", _command(_fn))
