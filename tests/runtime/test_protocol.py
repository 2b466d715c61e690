"""The framed protocol, sans IO."""

from __future__ import annotations

import pytest

from modelhost.runtime import protocol


def test_frames_survive_being_split_at_every_byte() -> None:
    stream = (
        protocol.encode_call("A" * 16, b'{"data": {}}')
        + protocol.encode_result("B" * 16, 1.5, b"[1,2]")
        + protocol.encode_error("C" * 16, b"{}")
        + protocol.encode(protocol.SHUTDOWN)
    )
    decoder = protocol.FrameDecoder()
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i : i + 1])
    assert [kind for kind, _ in frames] == [
        protocol.CALL,
        protocol.RESULT,
        protocol.ERROR,
        protocol.SHUTDOWN,
    ]
    assert protocol.decode_call(frames[0][1]) == ("A" * 16, b'{"data": {}}')
    assert protocol.decode_result(frames[1][1]) == ("B" * 16, 1.5, b"[1,2]")
    assert protocol.decode_error(frames[2][1]) == ("C" * 16, b"{}")


def test_several_frames_in_one_read_all_come_out() -> None:
    data = protocol.encode(protocol.READY, b"{}") * 3
    assert len(protocol.FrameDecoder().feed(data)) == 3


def test_a_garbage_header_is_a_protocol_error() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameDecoder().feed(b"\x00\x00\x00\x01\x63x")


def test_request_ids_must_be_sixteen_characters() -> None:
    with pytest.raises(ValueError, match="16"):
        protocol.encode_call("short", b"")
