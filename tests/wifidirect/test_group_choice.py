"""Group sharing without a radio: the GO choice and the presence datagrams (real UDP on
loopback; the multicast probe itself runs in the live tests, on a group interface)."""

from __future__ import annotations

import asyncio
import socket

from fastpayd.wifidirect.group import (
    Choice,
    PresenceResponder,
    choose,
    decode_answer,
    decode_query,
    encode_answer,
    encode_query,
)


def test_a_room_settles_on_its_lowest_named_authority():
    everyone_choosing = {"auth0": "", "auth1": "", "auth2": ""}
    assert choose("auth0", everyone_choosing, 0, 2) == Choice("go")
    assert choose("auth2", everyone_choosing, 0, 2) == Choice("wait")
    # One window later auth0 runs its group: the others join it.
    assert choose("auth2", {"auth0": "auth0", "auth1": ""}, 1, 2) == Choice("join", "auth0")
    assert choose("auth1", {"auth0": "auth0", "auth2": ""}, 1, 2) == Choice("join", "auth0")


def test_an_existing_group_wins_over_names():
    # auth0 restarts while auth1 runs the room's group: it joins rather than splitting.
    assert choose("auth0", {"auth1": "auth1", "auth2": "auth1"}, 0, 2) == Choice("join", "auth1")
    # A non-sharing authority's own group can be joined too.
    assert choose("auth3", {"auth1": None}, 0, 2) == Choice("join", "auth1")


def test_a_lower_authority_still_choosing_is_waited_for():
    # auth3 heard auth2 run a group, but auth0 (lower than auth2) answered before its own
    # group was up: wait a window rather than split the room.
    assert choose("auth3", {"auth0": "", "auth2": "auth2"}, 0, 2) == Choice("wait")
    assert choose("auth3", {"auth0": "auth0", "auth2": "auth2"}, 1, 2) == Choice("join", "auth0")
    assert choose("auth3", {"auth0": "", "auth2": "auth2"}, 2, 2) == Choice("join", "auth2")


def test_members_and_silence_make_a_go_and_waiting_is_bounded():
    assert choose("auth1", {}, 0, 2) == Choice("wait")  # nobody heard yet: a slow machine
    assert choose("auth1", {}, 2, 2) == Choice("go")
    # auth1 is a member of someone else's group we cannot hear: no group to join here.
    assert choose("auth2", {"auth1": "auth0"}, 0, 2) == Choice("go")
    assert choose("auth2", {"auth3": ""}, 0, 2) == Choice("go")  # only higher ones choosing
    # A lower-named authority that never decides does not keep us waiting for ever.
    assert choose("auth2", {"auth1": ""}, 2, 2) == Choice("go")


def test_presence_datagrams_round_trip_and_reject_garbage():
    q = encode_query("c1")
    assert decode_query(q) == "c1"
    assert decode_query(b"\xff\x00garbage") is None and decode_query(b"\x01") is None
    a = encode_answer("auth1", bytes(range(32)), "c1", 7400)
    p = decode_answer(a, "fe80::1%wlan0")
    assert p is not None and (p.name, p.port, p.host) == ("auth1", 7400, "fe80::1")
    assert decode_answer(encode_answer("auth1", b"short", "c1", 7400), "fe80::1") is None
    assert decode_answer(b"\x93\x01\x02\x03", "fe80::1") is None


async def test_responder_answers_its_committee_only():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe_port:
        probe_port.bind(("::1", 0))
        port = probe_port.getsockname()[1]
    transport = await PresenceResponder.serve("auth1", bytes(32), "c1", port)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(sock, encode_query("other"), ("::1", port))
        await loop.sock_sendto(sock, encode_query("c1"), ("::1", port))
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 512), 10)
        p = decode_answer(data, addr[0])
        assert p is not None and p.name == "auth1" and p.committee == "c1"
    finally:
        sock.close()
        transport.close()


def test_a_go_found_silent_is_passed_over_for_silent_hold_seconds():
    # wpa_supplicant keeps a dead daemon's group and records: a member that found its GO
    # silent must not choose it (or merge into it) again at once.
    from fastpayd.wifidirect.radio import WifiDirectAuthority
    from fastpayd.wifidirect.service import FastPayRecord

    def record(name: str) -> FastPayRecord:
        return FastPayRecord(role="authority", name=name, public_key=bytes(32),
                             committee="c", port=7400, group=name)

    me = WifiDirectAuthority(record("auth1"), sharing=True, silent_hold=60.0)
    me._silent["auth0"] = 100.0
    assert not me._usable(record("auth0"), 100.0)
    assert not me._usable(record("auth0"), 159.9)
    assert me._usable(record("auth2"), 120.0)
    assert me._usable(record("auth0"), 160.0)  # held long enough: heard again, used again
    assert "auth0" not in me._silent
    me.known = lambda r: r.name != "auth2"  # and the committee check still applies
    assert not me._usable(record("auth2"), 200.0)
