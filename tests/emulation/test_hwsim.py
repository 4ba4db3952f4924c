"""Netlink encoding helpers of emulation.hwsim."""

from __future__ import annotations

import struct

from emulation import hwsim


def test_pack_attr_pads_to_four_bytes() -> None:
    attr = hwsim.pack_attr(3, b"abcde")
    assert len(attr) == 12
    assert struct.unpack_from("=HH", attr) == (9, 3)


def test_parse_attrs_roundtrip() -> None:
    data = hwsim.pack_attr(1, b"\x01\x02\x03\x04\x05\x06") + hwsim.pack_attr(6, b"\xd8\xff\xff\xff")
    attrs = hwsim.parse_attrs(data)
    assert attrs[1] == b"\x01\x02\x03\x04\x05\x06"
    assert struct.unpack("=i", attrs[6])[0] == -40


def test_genl_message_splits_back() -> None:
    msg = hwsim.genl_message(0x20, hwsim.HWSIM_CMD_FRAME, hwsim.pack_attr(8, b"\0" * 8), seq=5)
    ((msg_type, payload),) = hwsim.split_messages(msg + b"")
    assert msg_type == 0x20
    cmd, attrs = hwsim.parse_genl(payload)
    assert cmd == hwsim.HWSIM_CMD_FRAME and attrs == {8: b"\0" * 8}


def test_mac_conversions() -> None:
    assert hwsim.mac_str(hwsim.mac_bytes("42:00:00:00:01:00")) == "42:00:00:00:01:00"
