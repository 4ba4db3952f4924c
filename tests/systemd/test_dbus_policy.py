"""The D-Bus policy ``systemd/dbus-1/system.d/fastpayd.conf`` on a real bus.

A private ``dbus-daemon`` is started with the system bus's default policy,
Debian's own wpa_supplicant policy (which denies wpa_supplicant to everyone
but root and netdev) and ours; a real ``wpa_supplicant -u`` owns
``fi.w1.wpa_supplicant1`` on it. An unprivileged client then tries what
fastpayd needs (call wpa_supplicant, receive its signals) and what it must not
get (own a bus name, call another service). The same run without our policy is
the control: it shows that our file, not a default, opens the door.

The bus daemon resolves policy user names when it loads its configuration, and
this machine has no ``fastpayd`` user, so the test runs the client as
``nobody`` and loads our policy with ``user="fastpayd"`` replaced by
``user="nobody"``; nothing else in the file changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from sd_helpers import SYSTEMD_DIR, require_tool, run

POLICY = SYSTEMD_DIR / "dbus-1" / "system.d" / "fastpayd.conf"
WPA = "fi.w1.wpa_supplicant1"
WPA_PATH = "/fi/w1/wpa_supplicant1"
OTHER = "org.example.FastpayTestOther"
SENTINEL_IFACE = "org.example.FastpayTest"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
TIMEOUT = 30.0

# The system bus's default policy (Debian's /usr/share/dbus-1/system.conf), plus
# a root rule so the test itself may own OTHER; wpa_supplicant's and ours are
# included after it, as /etc/dbus-1/system.d/*.conf are on a device.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <policy user="root">
    <allow own="{other}"/>
  </policy>
  <include>{wpa_policy}</include>
  {ours}
</busconfig>
"""

# Runs as the unprivileged user. Prints "subscribed" once its match rules are
# in, then, when the test's sentinel signal arrives (sent only after
# wpa_supplicant's PropertiesChanged went out), one JSON line of outcomes.
CLIENT = r"""
import asyncio, json, sys
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

async def main(address):
    bus = await MessageBus(bus_address=address).connect()
    out = {"wpa_signal": False}
    sentinel = asyncio.Event()

    def on_message(msg):
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "PropertiesChanged" and msg.path == "/fi/w1/wpa_supplicant1":
            out["wpa_signal"] = True
        elif msg.interface == "org.example.FastpayTest":
            sentinel.set()

    bus.add_message_handler(on_message)

    async def call(dest, path, iface, member, sig="", body=()):
        reply = await bus.call(Message(destination=dest, path=path, interface=iface,
                                       member=member, signature=sig, body=list(body)))
        return reply.error_name if reply.message_type == MessageType.ERROR else "ok"

    out["call_wpa"] = await call("fi.w1.wpa_supplicant1", "/fi/w1/wpa_supplicant1",
                                 "org.freedesktop.DBus.Properties", "Get", "ss",
                                 ["fi.w1.wpa_supplicant1", "DebugLevel"])
    out["call_other"] = await call("org.example.FastpayTestOther", "/",
                                   "org.freedesktop.DBus.Peer", "Ping")
    try:
        await bus.request_name("org.example.FastpayTestOwn")
        out["own_name"] = "ok"
    except DBusError as err:
        out["own_name"] = err.type
    for rule in ("type='signal',sender='fi.w1.wpa_supplicant1'",
                 "type='signal',interface='org.example.FastpayTest'"):
        assert await call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus", "AddMatch", "s", [rule]) == "ok"
    print("subscribed", flush=True)
    await asyncio.wait_for(sentinel.wait(), 30)
    print(json.dumps(out), flush=True)

asyncio.run(main(sys.argv[1]))
"""


def test_policy_grants_only_wpa_supplicant_to_fastpayd() -> None:
    """Structure: one <policy user="fastpayd">, two allow rules, both about wpa_supplicant."""
    root = ET.parse(POLICY).getroot()
    assert root.tag == "busconfig"
    policies = list(root)
    assert [p.tag for p in policies] == ["policy"]
    assert policies[0].attrib == {"user": "fastpayd"}
    rules = sorted((r.tag, tuple(sorted(r.attrib.items()))) for r in policies[0])
    assert rules == [
        ("allow", (("receive_sender", WPA), ("receive_type", "signal"))),
        ("allow", (("send_destination", WPA),)),
    ]
    xmllint = shutil.which("xmllint")
    if xmllint:  # well-formedness by libxml2 too (no DTD validation: none is shipped)
        proc = run([xmllint, "--noout", "--nonet", str(POLICY)])
        assert proc.returncode == 0, proc.stderr


async def read_line(stream: asyncio.StreamReader, what: str) -> str:
    """Next line of a child's stdout, failing clearly if it closes or stalls."""
    line = await asyncio.wait_for(stream.readline(), TIMEOUT)
    assert line, f"{what} closed its output"
    return line.decode().strip()


@contextlib.asynccontextmanager
async def process(*argv: str, **kwargs: object) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start a child process and always terminate and reap it."""
    proc = await asyncio.create_subprocess_exec(*argv, **kwargs)  # type: ignore[arg-type]
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def wpa_policy_file() -> Path:
    for d in ("/etc/dbus-1/system.d", "/usr/share/dbus-1/system.d"):
        path = Path(d) / "wpa_supplicant.conf"
        if path.exists():
            return path
    pytest.skip("Debian's wpa_supplicant D-Bus policy is absent (package wpasupplicant)")


def unprivileged_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the bus and wpa_supplicant run as root, the client as nobody")
    nobody = pwd.getpwnam("nobody")
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            sys.executable,
            "-c",
            "import dbus_fast",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this venv's Python: {probe.stderr.strip()}")
    return nobody.pw_uid, nobody.pw_gid


@pytest.mark.parametrize("with_policy", [True, False], ids=["with-policy", "without-policy"])
async def test_policy_on_a_real_bus(tmp_path: Path, with_policy: bool) -> None:
    dbus_daemon = require_tool("dbus-daemon", "dbus-daemon")
    wpa_supplicant = require_tool("wpa_supplicant", "wpasupplicant")
    require_tool("setpriv", "util-linux")
    uid, gid = unprivileged_ids()
    ours = tmp_path / "fastpayd.conf"
    text = POLICY.read_text()
    assert text.count('user="fastpayd"') == 1
    ours.write_text(text.replace('user="fastpayd"', 'user="nobody"'))
    # The client (nobody) must reach the socket, and pytest's tmp_path is private.
    socket_dir = Path(tempfile.mkdtemp(prefix="fastpay-bus-"))
    socket_dir.chmod(0o755)
    socket = socket_dir / "bus"
    config = tmp_path / "bus.conf"
    config.write_text(
        BUS_CONFIG.format(
            socket=socket,
            other=OTHER,
            wpa_policy=wpa_policy_file(),
            ours=f"<include>{ours}</include>" if with_policy else "",
        )
    )
    pipe = asyncio.subprocess.PIPE
    try:
        async with process(
            dbus_daemon, f"--config-file={config}", "--nofork", "--print-address", stdout=pipe
        ) as bus_daemon:
            assert bus_daemon.stdout is not None
            address = await read_line(bus_daemon.stdout, "dbus-daemon")
            root = await MessageBus(bus_address=address).connect()
            try:
                await outcome_checks(root, address, wpa_supplicant, uid, gid, with_policy)
            finally:
                root.disconnect()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


async def outcome_checks(
    root: MessageBus, address: str, wpa_supplicant: str, uid: int, gid: int, with_policy: bool
) -> None:
    """Start wpa_supplicant and the unprivileged client on ``address``; check what it may do."""
    wpa_up = asyncio.Event()
    wpa_signalled = asyncio.Event()

    def on_message(msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.body[0] == WPA and msg.body[2]:
            wpa_up.set()
        elif msg.member == "PropertiesChanged" and msg.path == WPA_PATH:
            wpa_signalled.set()

    root.add_message_handler(on_message)
    for rule in (
        f"type='signal',member='NameOwnerChanged',arg0='{WPA}'",
        f"type='signal',sender='{WPA}'",
    ):
        await root.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
    await root.request_name(OTHER)
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address}
    pipe = asyncio.subprocess.PIPE
    async with process(wpa_supplicant, "-u", stdout=pipe, stderr=pipe, env=env):
        await asyncio.wait_for(wpa_up.wait(), TIMEOUT)
        async with process(
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            sys.executable,
            "-c",
            CLIENT,
            address,
            stdout=pipe,
            stderr=pipe,
        ) as client:
            assert client.stdout is not None and client.stderr is not None
            try:
                assert await read_line(client.stdout, "client") == "subscribed"
            except AssertionError:
                raise AssertionError((await client.stderr.read()).decode()) from None
            # Make wpa_supplicant emit PropertiesChanged (root may, by Debian's policy).
            reply = await root.call(
                Message(
                    destination=WPA,
                    path=WPA_PATH,
                    interface="org.freedesktop.DBus.Properties",
                    member="Set",
                    signature="ssv",
                    body=[WPA, "DebugLevel", Variant("s", "debug")],
                )
            )
            assert reply.message_type == MessageType.METHOD_RETURN, reply.body
            # Once root has it, the bus has already queued (or refused) it for the
            # client; the sentinel is queued after it, so the client's verdict on
            # the wpa signal is final when the sentinel arrives. No timed wait.
            await asyncio.wait_for(wpa_signalled.wait(), TIMEOUT)
            await root.send(Message.new_signal("/", SENTINEL_IFACE, "Sentinel"))
            outcome = json.loads(await read_line(client.stdout, "client"))

    if with_policy:
        assert outcome["call_wpa"] == "ok"
        assert outcome["wpa_signal"] is True
    else:  # the control: Debian's policy alone shuts the client out
        assert outcome["call_wpa"] == ACCESS_DENIED
        assert outcome["wpa_signal"] is False
    # Nothing more, with or without our file.
    assert outcome["call_other"] == ACCESS_DENIED
    assert outcome["own_name"] == ACCESS_DENIED
