"""The framed protocol between the server and an instance. Sans-IO: no sockets here.

A frame is a 5-byte header, ``>IB`` (payload length, message type), then the payload.
This module is imported by the worker under a private name, so it must use the standard
library only and stay importable on every Python the worker supports.

Messages (direction, payload):

``READY``        worker → server   JSON ``{"pid", "python", "signature", "schema"}`` (see
                                   signatures.py; worker.R describes R formals alike)
``LOAD_FAILED``  worker → server   JSON ``{"message", "traceback"}``
``CALL``         server → worker   16-byte ASCII request id, then the raw request body
``RESULT``       worker → server   request id, ``>d`` model time in ms, the result as JSON bytes
``ERROR``        worker → server   request id, then JSON ``{"status", "code", "message"}``
``SHUTDOWN``     server → worker   empty
``BATCH``        server → worker   ``>I`` count, then per call: request id, ``>I`` length, body

A version published as a batching function (``batch_max_size``) gets calls that waited
together as one BATCH frame, and a lone call as a CALL frame; either way its function is
called with a list of inputs, and every call is answered on its own, with its own RESULT or
ERROR frame.

Every answer carries the request id of its call, so an instance that runs several calls at
once (a version that declares a concurrency above 1) may answer them in any order. The R
worker (worker.R) speaks the same frames, and adds the ``nonce`` it was given to READY and
LOAD_FAILED, since it connects over loopback TCP rather than an inherited socket.
"""

from __future__ import annotations

import json
import struct

READY = 1
LOAD_FAILED = 2
CALL = 3
RESULT = 4
ERROR = 5
SHUTDOWN = 6
BATCH = 7

HEADER = struct.Struct(">IB")
MODEL_TIME = struct.Struct(">d")
COUNT = struct.Struct(">I")
REQUEST_ID_LENGTH = 16
MAX_FRAME = 1 << 30


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame."""


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One frame as bytes."""
    return HEADER.pack(len(payload), kind) + payload


def encode_call(request_id: str, body: bytes) -> bytes:
    rid = request_id.encode("ascii")
    if len(rid) != REQUEST_ID_LENGTH:
        raise ValueError("request id must be 16 ASCII characters")
    return encode(CALL, rid + body)


def decode_call(payload: bytes) -> tuple[str, bytes]:
    return payload[:REQUEST_ID_LENGTH].decode("ascii"), payload[REQUEST_ID_LENGTH:]


def encode_batch(calls: list[tuple[str, bytes]]) -> bytes:
    """One BATCH frame of ``(request id, body)`` calls."""
    parts = [COUNT.pack(len(calls))]
    for request_id, body in calls:
        rid = request_id.encode("ascii")
        if len(rid) != REQUEST_ID_LENGTH:
            raise ValueError("request id must be 16 ASCII characters")
        parts += (rid, COUNT.pack(len(body)), body)
    return encode(BATCH, b"".join(parts))


def decode_batch(payload: bytes) -> list[tuple[str, bytes]]:
    """The ``(request id, body)`` calls of a BATCH payload."""
    (count,) = COUNT.unpack_from(payload, 0)
    calls: list[tuple[str, bytes]] = []
    offset = COUNT.size
    for _ in range(count):
        request_id = payload[offset : offset + REQUEST_ID_LENGTH].decode("ascii")
        offset += REQUEST_ID_LENGTH
        (length,) = COUNT.unpack_from(payload, offset)
        offset += COUNT.size
        if offset + length > len(payload):
            raise ProtocolError("a batch is shorter than its calls say")
        calls.append((request_id, payload[offset : offset + length]))
        offset += length
    return calls


def encode_result(request_id: str, model_time_ms: float, result_json: bytes) -> bytes:
    return encode(RESULT, request_id.encode("ascii") + MODEL_TIME.pack(model_time_ms) + result_json)


def decode_result(payload: bytes) -> tuple[str, float, bytes]:
    (model_time_ms,) = MODEL_TIME.unpack_from(payload, REQUEST_ID_LENGTH)
    start = REQUEST_ID_LENGTH + MODEL_TIME.size
    return payload[:REQUEST_ID_LENGTH].decode("ascii"), model_time_ms, payload[start:]


_RESULT_START = REQUEST_ID_LENGTH + MODEL_TIME.size


def decode_result_body(payload: bytes) -> tuple[float, bytes]:
    """The model time and the result of a RESULT payload whose request id is already known."""
    return MODEL_TIME.unpack_from(payload, REQUEST_ID_LENGTH)[0], payload[_RESULT_START:]


def encode_error(request_id: str, error_json: bytes) -> bytes:
    return encode(ERROR, request_id.encode("ascii") + error_json)


def decode_error(payload: bytes) -> tuple[str, bytes]:
    return payload[:REQUEST_ID_LENGTH].decode("ascii"), payload[REQUEST_ID_LENGTH:]


def carries_nonce(kind: int, payload: bytes, nonce: str) -> bool:
    """Whether a first frame is an R worker's READY or LOAD_FAILED with ``nonce``: how the
    worker proves a connection to its loopback port is its own."""
    if kind not in (READY, LOAD_FAILED) or not nonce:
        return False
    try:
        info = json.loads(payload)
    except ValueError:
        return False
    return isinstance(info, dict) and info.get("nonce") == nonce


class FrameDecoder:
    """Feed it bytes as they arrive; it returns every complete ``(kind, payload)`` frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def rest(self) -> bytes:
        """The bytes received after the last whole frame."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes]] = []
        offset = 0
        size = HEADER.size
        while len(buffer) - offset >= size:
            length, kind = HEADER.unpack_from(buffer, offset)
            if length > MAX_FRAME or not READY <= kind <= BATCH:
                raise ProtocolError(f"invalid frame header (length {length}, type {kind})")
            end = offset + size + length
            if len(buffer) < end:
                break
            frames.append((kind, bytes(buffer[offset + size : end])))
            offset = end
        if offset:
            del buffer[:offset]
        return frames
