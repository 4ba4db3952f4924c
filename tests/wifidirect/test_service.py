"""Unit tests of the FastPay service record, the SD TLV parser, PINs, addresses, frames."""

from __future__ import annotations

import struct

import pytest

from fastpayd.wifidirect import FastPayRecord, RecordError, link_local_from_mac
from fastpayd.wifidirect.service import (
    bonjour_all_query,
    decode_txt,
    records_from_tlvs,
    split_bonjour,
    wps_pin_for,
)

REC = FastPayRecord(role="authority", name="auth-1", public_key=bytes(range(32)),
                    committee="c1", port=7400)


def tlv(proto: int, status: int, data: bytes, tid: int = 1) -> bytes:
    return struct.pack("<HBBB", 3 + len(data), proto, tid, status) + data


def test_record_round_trips_through_bonjour_tlvs() -> None:
    tlvs = b"".join(tlv(1, 0, q + r) for q, r in REC.bonjour_services())
    assert records_from_tlvs(tlvs) == [REC]


def test_record_txt_is_plain_dns_sd() -> None:
    (_, ptr), (key, txt) = REC.bonjour_services()
    assert split_bonjour(key + txt)[:2] == ("auth-1._fastpay._tcp.local", 16)
    assert decode_txt(txt) == {"txtvers": "1", "role": "authority", "name": "auth-1",
                               "pk": bytes(range(32)).hex(), "committee": "c1", "port": "7400"}
    assert ptr == b"\x06auth-1\x08_fastpay\x04_tcp\x05local\x00"


def test_records_from_tlvs_skips_other_services_and_garbage() -> None:
    other = tlv(1, 0, b"\x04_ipp\x04_tcp\x05local\x00\x00\x10\x01\x05a=b=c")
    upnp = tlv(2, 0, b"\x10uuid:1234")
    failed = tlv(1, 1, b"")
    bad_txt = tlv(1, 0, b"\x01x\x08_fastpay\x04_tcp\x05local\x00\x00\x10\x01\x07role=zz")
    good = b"".join(tlv(1, 0, q + r) for q, r in REC.bonjour_services())
    assert records_from_tlvs(other + upnp + failed + bad_txt + good) == [REC]
    assert records_from_tlvs(b"\xff\xff\x01") == []


@pytest.mark.parametrize("kwargs", [
    {"role": "king"}, {"name": "a.b"}, {"name": "x" * 64}, {"public_key": b"\x00" * 31},
    {"committee": ""}, {"port": 0},
])
def test_record_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    fields = {"role": "authority", "name": "a", "public_key": b"\x00" * 32,
              "committee": "c", "port": 1}
    fields.update(kwargs)
    with pytest.raises(RecordError):
        FastPayRecord(**fields)  # type: ignore[arg-type]


def test_bonjour_all_query_is_the_standard_tlv() -> None:
    assert bonjour_all_query(7) == b"\x02\x00\x01\x07"


def test_wps_pin_has_valid_checksum() -> None:
    pin = wps_pin_for("committee-test")
    assert len(pin) == 8 and pin.isdigit()
    digits = [int(c) for c in pin]
    assert (3 * sum(digits[0:8:2]) + sum(digits[1:8:2])) % 10 == 0
    assert wps_pin_for("committee-test") == pin != wps_pin_for("other")


def test_link_local_from_mac_is_eui64() -> None:
    assert link_local_from_mac("02:00:00:00:01:00") == "fe80::ff:fe00:100"
    assert link_local_from_mac("42:01:02:03:04:05") == "fe80::4001:2ff:fe03:405"


def test_shared_group_fields_round_trip_and_are_optional() -> None:
    go = FastPayRecord(role="authority", name="auth0", public_key=bytes(32), committee="c1",
                       port=7400, group="auth0",
                       members=(("auth1", "fe80::ff:fe00:100"), ("auth2", "fe80::ff:fe00:200")))
    assert records_from_tlvs(_tlvs(go)) == [go] and go.is_go
    member = FastPayRecord(role="authority", name="auth1", public_key=bytes(32),
                           committee="c1", port=7400, group="auth0")
    assert records_from_tlvs(_tlvs(member)) == [member] and not member.is_go
    plain = FastPayRecord(role="authority", name="auth3", public_key=bytes(32),
                          committee="c1", port=7400)
    assert "group" not in dict(plain.txt()) and plain.is_go  # the old record, unchanged
    with pytest.raises(RecordError):
        FastPayRecord(role="authority", name="auth0", public_key=bytes(32), committee="c1",
                      port=7400, group="auth0", members=(("auth1", ""),))


def _tlvs(rec: FastPayRecord) -> bytes:
    return b"".join(tlv(1, 0, q + r) for q, r in rec.bonjour_services())
