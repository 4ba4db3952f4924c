"""Unit tests of fastpayd.framing (sans-I/O frame decoder)."""

from __future__ import annotations

import pytest

from fastpayd.framing import EmptyFrame, FrameDecoder, FrameTooLarge, encode_frame


def test_feed_whole_frames() -> None:
    dec = FrameDecoder()
    data = encode_frame(b"abc") + encode_frame(b"defg")
    assert dec.feed(data) == [b"abc", b"defg"]
    assert not dec.pending


def test_feed_byte_by_byte() -> None:
    dec = FrameDecoder()
    data = encode_frame(b"hello") + encode_frame(b"x" * 300)
    out: list[bytes] = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
        if i == 5:
            assert dec.pending  # inside the first frame
    assert out == [b"hello", b"x" * 300]
    assert not dec.pending


def test_oversized_header_rejected_before_payload() -> None:
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(FrameTooLarge) as info:
        dec.feed((101).to_bytes(4, "big"))
    assert info.value.size == 101


def test_empty_frame_rejected() -> None:
    with pytest.raises(EmptyFrame):
        FrameDecoder().feed(b"\0\0\0\0")


def test_encode_refuses_oversized() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 11, max_frame=10)
