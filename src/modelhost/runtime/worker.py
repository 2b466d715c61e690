"""An instance: imports the user's script once, then answers calls on the socket it is handed.

Run as a script by the backend, in whatever interpreter the version's environment uses::

    python worker.py --fd 3 --spec '{"workdir": ..., "file": "predict.py", "function": "predict"}'

or, as a version's fork server, with ``--fork-server-fd 3`` instead of ``--fd``: it imports the
script once, then forks one instance per request it gets on that socket (see
:func:`fork_server`), so the instances share the imported model's memory.

On a Ray node (``backend = ray``) the actor adds ``--more-fd 4``: a socket on which it hands
the worker the connections of further servers (one descriptor a message, SCM_RIGHTS), each
already proven by its token, so every server of the installation calls the same instance
(:func:`serve_shared`).

It uses the standard library only (no modelhost, no third-party packages), so it runs in any
environment. stdout and stderr go to the instance log, each line stamped with the time.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime
import gc
import importlib.util
import inspect
import io
import json
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath
from types import ModuleType
from typing import TYPE_CHECKING, Any

_HERE = Path(__file__).resolve().parent


def _load_by_path(name: str, path: Path) -> ModuleType:
    # Loaded under a private name so a user module of the same name cannot clash with it.
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:  # for the type checker only: at run time the worker imports no modelhost
    from modelhost.json_conversions import to_json_compatible
    from modelhost.runtime import busypoll, protocol, signatures
else:
    protocol = _load_by_path("_modelhost_protocol", _HERE / "protocol.py")
    busypoll = _load_by_path("_modelhost_busypoll", _HERE / "busypoll.py")
    signatures = _load_by_path("_modelhost_signatures", _HERE / "signatures.py")
    # Shared with the client; it sits next to this directory, and the sandbox binds it read-only.
    to_json_compatible = _load_by_path(
        "_modelhost_json_conversions", _HERE.parent / "json_conversions.py"
    ).to_json_compatible

_RECV_BYTES = 1 << 16


try:  # faster parsing where the environment has orjson; results still use json (NaN check)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - environments without orjson
    _fast_loads = None  # type: ignore[assignment]


#: 19 digits in a row: possibly an integer over 64 bits, which orjson would turn into a float
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _loads(data: bytes) -> Any:
    if _fast_loads is not None and not _LONG_NUMBER.search(data):
        try:
            return _fast_loads(data)
        except ValueError:
            pass  # orjson refuses some JSON that Python reads; json says what is wrong
    return json.loads(data, parse_constant=_not_json, parse_float=_finite)


def _not_json(name: str) -> Any:
    """Python's json reads NaN and Infinity, which are not JSON: a caller's mistake, not a
    value for the function (whose result could then not be sent back)."""
    raise ValueError(f"{name} is not a JSON value; send null or a finite number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a 64-bit float; send it as a string")
    return value


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, even one whose message is empty or cannot be made."""
    try:
        message = str(exc)
    except Exception:
        message = "(its message could not be shown)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


BAD_SHAPE = (
    "Request body must be a JSON object with a 'data' object (keyword arguments) or a "
    "'parameters' array (positional arguments)."
)
BOTH_SHAPES = (
    "Request body has both 'data' and 'parameters'; send one of them: a 'data' object "
    "(keyword arguments) or a 'parameters' array (positional arguments)."
)


class _StampedLines(io.TextIOBase):
    """A text stream that writes each complete line to a file descriptor with a timestamp."""

    def __init__(self, fd: int, stream: str) -> None:
        self._fd = fd
        self._stream = stream
        self._pending = ""
        self._lock = threading.Lock()  # calls may print from several threads

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def buffer(self) -> _StampedBytes:
        """For code that writes bytes (``sys.stdout.buffer.write``): decoded, then stamped."""
        return _StampedBytes(self)

    def fileno(self) -> int:
        """The real descriptor, for code that hands it on (a subprocess writes to the log
        directly, without stamps)."""
        return self._fd

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                *lines, self._pending = self._pending.split("\n")
                self._emit(lines)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                lines, self._pending = [self._pending], ""
                self._emit(lines)

    def _emit(self, lines: list[str]) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        out = "".join(f"{stamp} {self._stream} {line}\n" for line in lines)
        data = out.encode("utf-8", "replace")
        while data:
            written = os.write(self._fd, data)
            data = data[written:]


class _StampedBytes(io.RawIOBase):
    def __init__(self, text: _StampedLines) -> None:
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._text.write(chunk.decode("utf-8", "replace"))
        return len(chunk)

    def flush(self) -> None:
        self._text.flush()


def log(message: str) -> None:
    """A line from modelhost itself (not the user's code) in the instance log."""
    sys.stderr.write(f"[modelhost] {message}\n")


# --------------------------------------------------------------------------- loading


class LoadFailed(Exception):
    """The script could not be imported or has no usable function; the message says why."""

    def __init__(self, message: str, user_traceback: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.user_traceback = user_traceback


def _user_traceback(exc: BaseException, workdir: Path) -> str:
    """The traceback of ``exc`` without the frames of the worker and of importlib."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen") and Path(frame.filename) != Path(__file__)
    ]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).replace(str(workdir) + os.sep, "")


def load_function(workdir: Path, file: str, function: str) -> Callable[..., Any]:
    """Import ``file`` from ``workdir`` as a module and return its callable ``function``."""
    path = workdir / file
    if not path.is_file():
        raise LoadFailed(f"File '{file}' was not found in the project.")
    module_name = PurePath(file).stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LoadFailed(f"'{file}' cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise LoadFailed(
            f"'{file}' has a syntax error on line {exc.lineno}: {exc.msg}.",
            _user_traceback(exc, workdir),
        ) from None
    except BaseException as exc:
        raise LoadFailed(
            f"Importing '{file}' raised {type(exc).__name__}: {exc}",
            _user_traceback(exc, workdir),
        ) from None
    if not hasattr(module, function):
        defined = sorted(
            name
            for name, value in vars(module).items()
            if callable(value)
            and not name.startswith("_")
            and getattr(value, "__module__", None) == module_name
        )
        hint = f" Callables defined there: {', '.join(defined)}." if defined else ""
        raise LoadFailed(f"'{file}' has no function named '{function}'.{hint}")
    value: object = getattr(module, function)
    if not callable(value):
        raise LoadFailed(
            f"'{function}' in '{file}' is a {type(value).__name__}, not a function; "
            "publish the name of a function (or another callable)."
        )
    return value


# --------------------------------------------------------------------------- results


#: made once: ``json.dumps`` with these options builds a new encoder on every call
_ENCODER = json.JSONEncoder(
    default=to_json_compatible, allow_nan=False, ensure_ascii=False, separators=(",", ":")
)
_SCALARS: dict[type, Callable[[Any], str]] = {
    int: int.__repr__,  # what json writes for them, without its per-call set-up
    bool: lambda value: "true" if value else "false",
    type(None): lambda _value: "null",
}


def encode_result(name: str, result: Any) -> bytes:
    try:
        scalar = _SCALARS.get(type(result))
        text = scalar(result) if scalar is not None else _ENCODER.encode(result)
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise ResultError(
                f"{name} returned NaN or Infinity, which JSON cannot represent; return None "
                "(null) or a finite number instead."
            ) from None
        raise ResultError(
            f"{name} returned a value that cannot be converted to JSON: {exc}."
        ) from None
    except (TypeError, RecursionError) as exc:
        raise ResultError(
            f"{name} returned a value that cannot be converted to JSON: {exc}; return "
            "numbers, strings, lists and dicts."
        ) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ResultError(
            f"{name} returned a string with a lone surrogate ('\\ud800' to '\\udfff'), which "
            "is not valid Unicode; return text that is."
        ) from None


class ResultError(Exception):
    pass


# --------------------------------------------------------------------------- calls


class CallFailed(Exception):
    """A call that fails with an HTTP status and a stable code (see modelhost.errors)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _plain(signature: inspect.Signature) -> inspect.Signature:
    """The signature without annotations: ``predict(features, threshold=0.5)``."""
    return signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=signature.empty,
    )


def _clip(data: bytes, limit: int) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return text + f"... ({len(data)} bytes)" if len(data) > limit else text


class Handler:
    """Turns one CALL payload into one RESULT or ERROR frame.

    With ``log_requests`` each call's input, output, status and duration go to the instance
    log, each clipped to ``log_limit`` bytes.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        name: str,
        *,
        log_requests: bool = False,
        log_limit: int = 2000,
    ) -> None:
        self.function = function
        self.name = name
        self.log_requests = log_requests
        self.log_limit = log_limit
        try:
            self.signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            self.signature = None
        self.described = f"{name}{_plain(self.signature)}" if self.signature else f"{name}(...)"

    def __call__(self, payload: bytes) -> bytes:
        request_id, body = protocol.decode_call(payload)
        start = time.perf_counter()
        try:
            args, kwargs = self._arguments(body)
            result, elapsed = self._run(request_id, args, kwargs)
            encoded = encode_result(self.name, result)
        except CallFailed as failure:
            error = {"status": failure.status, "code": failure.code, "message": failure.message}
            answer = json.dumps(error).encode()
            self._log_request(request_id, body, failure.status, answer, start)
            return protocol.encode_error(request_id, answer)
        except ResultError as exc:
            log(f"request {request_id}: {exc}")
            answer = json.dumps(
                {"status": 500, "code": "result_not_serializable", "message": str(exc)}
            ).encode()
            self._log_request(request_id, body, 500, answer, start)
            return protocol.encode_error(request_id, answer)
        self._log_request(request_id, body, 200, encoded, start)
        return protocol.encode_result(request_id, elapsed, encoded)

    def _arguments(self, body: bytes) -> tuple[list[Any], dict[str, Any]]:
        form, value = self._request(body)
        return ([], value) if form == "data" else (value, {})

    def _request(self, body: bytes) -> tuple[str, Any]:
        """``("data", the keyword arguments)`` or ``("parameters", the positional ones)``."""
        try:
            request = _loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CallFailed(
                400, "bad_request", f"Request body is not valid JSON ({exc}). " + BAD_SHAPE
            ) from None
        except RecursionError:
            raise CallFailed(
                400,
                "bad_request",
                "Request body is nested too deeply (more than about 1,000 levels of arrays "
                "and objects); send flatter JSON.",
            ) from None
        if not isinstance(request, dict) or ("data" in request) == ("parameters" in request):
            both = isinstance(request, dict) and "data" in request
            raise CallFailed(400, "bad_request", BOTH_SHAPES if both else BAD_SHAPE)
        if "data" in request:
            if not isinstance(request["data"], dict):
                raise CallFailed(
                    400,
                    "bad_request",
                    "'data' must be a JSON object of keyword arguments; "
                    "use 'parameters' for a list of positional arguments.",
                )
            return "data", request["data"]
        if not isinstance(request["parameters"], list):
            raise CallFailed(
                400,
                "bad_request",
                "'parameters' must be a JSON array of positional "
                "arguments; use 'data' for keyword arguments.",
            )
        return "parameters", request["parameters"]

    def _check_binding(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Raise a 400 if the arguments do not fit the signature (checked only after a
        TypeError, so calls that fit pay nothing for it)."""
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise CallFailed(
                400, "invalid_arguments", f"The arguments do not match {self.described}: {exc}."
            ) from None

    def _run(self, request_id: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, float]:
        start = time.perf_counter()
        try:
            result = self.function(*args, **kwargs)
        except TypeError as exc:
            # Python refuses arguments that do not fit before the body runs: say which fit.
            self._check_binding(args, kwargs)
            self._failed(f"request {request_id}", start)
            raise CallFailed(500, "model_error", f"{self.name} raised {_describe(exc)}") from None
        except Exception as exc:
            self._failed(f"request {request_id}", start)
            raise CallFailed(500, "model_error", f"{self.name} raised {_describe(exc)}") from None
        return result, (time.perf_counter() - start) * 1000

    @staticmethod
    def _failed(subject: str, start: float, then: str = "") -> None:
        elapsed = (time.perf_counter() - start) * 1000
        sys.stderr.write(f"[modelhost] {subject} failed after {elapsed:.1f} ms{then}:\n")
        traceback.print_exc()

    def _log_request(
        self, request_id: str, body: bytes, status: int, answer: bytes, start: float
    ) -> None:
        if self.log_requests:
            took = (time.perf_counter() - start) * 1000
            log(
                f"request {request_id} status={status} duration_ms={took:.1f} "
                f"input={_clip(body, self.log_limit)} output={_clip(answer, self.log_limit)}"
            )


def _a(kind: str) -> str:
    """What a value of type ``kind`` is called in a message: "a value of type 'int'"."""
    return f"a value of type {kind!r}"


def one_per_input(results: Any, count: int) -> tuple[list[Any] | None, str]:
    """A batching function's ``results`` as a list of ``count`` results, or None and what it
    returned instead ("a value of type 'dict'", "3 results"). A pandas DataFrame gives one
    result per row, each a ``{column: value}`` object; anything whose length or items cannot
    be read is not a list.
    """
    kind = type(results).__name__
    if isinstance(results, (str, bytes, dict)) or not hasattr(results, "__len__"):
        return None, _a(kind)
    try:
        if kind == "DataFrame" and callable(getattr(results, "to_dict", None)):
            results = results.to_dict("records")  # its rows, not its column names
        size = len(results)
        listed = list(results) if size == count else None
    except Exception as exc:  # a 0-d array's len(), an iterator that raises: the user's value
        return None, f"{_a(kind)} that cannot be read as a list ({_describe(exc)})"
    if listed is None or len(listed) != count:
        return None, f"{size} results"
    return listed, ""


class BatchHandler(Handler):
    """For a batching function (a version published with ``batch_max_size``): the function
    takes a list of inputs, each the ``data`` object or the ``parameters`` array of one call,
    and returns a list of as many results, in the same order.

    A lone CALL is a batch of one. When the function raises for a batch, or returns something
    other than one result per input, each call of the batch is run again on its own (as a list
    of one), so only a call that fails by itself fails.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        name: str,
        *,
        log_requests: bool = False,
        log_limit: int = 2000,
    ) -> None:
        super().__init__(function, name, log_requests=log_requests, log_limit=log_limit)
        if self.signature is not None:
            try:
                self.signature.bind([])
            except TypeError:
                raise LoadFailed(
                    f"{self.described} cannot be a batching function: it must take one "
                    "argument, the list of inputs, and return a list of results. Change the "
                    "function, or publish it without a batch size (--batch-max-size; "
                    "batch_max_size in the Python client)."
                ) from None

    def __call__(self, payload: bytes) -> bytes:
        return self.batch([protocol.decode_call(payload)])

    def batch(self, calls: list[tuple[str, bytes]]) -> bytes:
        """The answers to ``calls``, one RESULT or ERROR frame each, as one string of bytes."""
        start = time.perf_counter()
        frames: list[bytes] = []
        runnable: list[tuple[str, bytes, Any]] = []
        for request_id, body in calls:
            try:
                runnable.append((request_id, body, self._request(body)[1]))
            except CallFailed as failure:
                frames.append(self._error(request_id, body, failure, start))
        if not runnable:
            return b"".join(frames)
        inputs = [value for _, _, value in runnable]
        ids = [request_id for request_id, _, _ in runnable]
        failed: CallFailed | None = None
        try:
            results, elapsed = self._run_batch(ids, inputs)
        except CallFailed as failure:
            failed = failure
        if failed is not None:
            if len(runnable) == 1:
                request_id, body, _ = runnable[0]
                frames.append(self._error(request_id, body, failed, start))
            else:
                # Each call again on its own, out of the handler above: a call's traceback
                # must not show the batch's failure as what it happened during.
                frames.extend(self.batch_of_one(*call) for call in runnable)
            return b"".join(frames)
        for index, (request_id, body, _) in enumerate(runnable):
            frames.append(self._answer(request_id, body, results[index], elapsed, start))
        return b"".join(frames)

    def batch_of_one(self, request_id: str, body: bytes, value: Any) -> bytes:
        start = time.perf_counter()
        try:
            results, elapsed = self._run_batch([request_id], [value])
        except CallFailed as failure:
            return self._error(request_id, body, failure, start)
        return self._answer(request_id, body, results[0], elapsed, start)

    def _run_batch(self, ids: list[str], inputs: list[Any]) -> tuple[list[Any], float]:
        """The function's results for ``inputs`` and the milliseconds it took; a failure is
        logged as the batch's (whose calls :meth:`batch` then runs again one by one)."""
        if len(ids) == 1:
            subject, again = f"request {ids[0]}", ""
        else:
            subject = f"a batch of {len(ids)} calls (request {ids[0]} and {len(ids) - 1} more)"
            again = "each of its calls is run again on its own"
        start = time.perf_counter()
        try:
            results = self.function(inputs)
        except Exception as exc:
            self._failed(subject, start, f"; {again}" if again else "")
            raise CallFailed(500, "model_error", f"{self.name} raised {_describe(exc)}") from None
        elapsed = (time.perf_counter() - start) * 1000
        listed, got = one_per_input(results, len(inputs))
        if listed is not None:
            return listed, elapsed
        message = (
            f"{self.name} returned {got} for {len(inputs)} input"
            f"{'' if len(inputs) == 1 else 's'}; a batching function returns a list with one "
            "result per input, in order."
        )
        log(f"{subject}: {message}" + (f" {again.capitalize()}." if again else ""))
        raise CallFailed(500, "model_error", message)

    def _answer(
        self, request_id: str, body: bytes, result: Any, elapsed: float, start: float
    ) -> bytes:
        try:
            encoded = encode_result(self.name, result)
        except ResultError as exc:
            log(f"request {request_id}: {exc}")
            failure = CallFailed(500, "result_not_serializable", str(exc))
            return self._error(request_id, body, failure, start)
        self._log_request(request_id, body, 200, encoded, start)
        return protocol.encode_result(request_id, elapsed, encoded)

    def _error(self, request_id: str, body: bytes, failure: CallFailed, start: float) -> bytes:
        error = {"status": failure.status, "code": failure.code, "message": failure.message}
        answer = json.dumps(error).encode()
        self._log_request(request_id, body, failure.status, answer, start)
        return protocol.encode_error(request_id, answer)


def _run(handler: Handler, kind: int, payload: bytes) -> bytes:
    """The answer frame(s) to a CALL or BATCH frame."""
    if kind == protocol.CALL:
        return handler(payload)
    if not isinstance(handler, BatchHandler):
        raise protocol.ProtocolError("a batch for a function that does not take batches")
    return handler.batch(protocol.decode_batch(payload))


def _run_or_exit(handler: Handler, kind: int, payload: bytes) -> bytes:
    """:func:`_run` on a pool thread: SystemExit and friends end the instance, as they do
    with one thread."""
    try:
        return _run(handler, kind, payload)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(70)


def serve(
    sock: socket.socket, handler: Handler, concurrency: int = 1, busy_poll: float = 0.0
) -> None:
    """Answer calls until the server closes the connection or says SHUTDOWN.

    With ``concurrency`` above 1, calls run on that many threads and answer in any order.
    With one, the instance may poll for its next call for up to ``busy_poll`` seconds before
    it sleeps (``busypoll.py``); threads running calls would only lose time to it.
    """
    decoder = protocol.FrameDecoder()
    pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None
    receiver = busypoll.Receiver(sock, _RECV_BYTES, busy_poll if pool is None else 0.0)
    log(f"waiting for calls: {receiver.described}")
    send_lock = threading.Lock()

    def answer(kind: int, payload: bytes) -> None:
        frame = _run_or_exit(handler, kind, payload)
        with send_lock:
            sock.sendall(frame)

    try:
        while True:
            data = receiver.recv()
            if not data:
                return  # the server closed the connection: nothing left to do
            for kind, payload in decoder.feed(data):
                if kind == protocol.CALL or kind == protocol.BATCH:
                    if pool is None:
                        # Each answer goes out as soon as it is ready, never held back for
                        # the calls behind it: the server counts a call's time from the
                        # answer before it, and re-sends calls that never started when an
                        # instance dies or is replaced.
                        sock.sendall(_run(handler, kind, payload))
                        receiver.answered()
                    else:
                        pool.submit(answer, kind, payload)
                elif kind == protocol.SHUTDOWN:
                    return
    finally:
        receiver.close()
        if pool is not None:
            pool.shutdown(wait=True)


class _Peer:
    """One server's connection to a shared instance (:func:`serve_shared`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = protocol.FrameDecoder()
        self.lock = threading.Lock()

    def send(self, frame: bytes) -> None:
        with self.lock, contextlib.suppress(OSError):  # that server went away; the others go on
            self.sock.sendall(frame)


def serve_shared(
    first: socket.socket,
    more: socket.socket,
    handler: Handler,
    ready: bytes,
    concurrency: int = 1,
) -> None:
    """Answer calls from several servers, each on its own connection: ``first``, and those
    the actor hands over on ``more`` (each gets the READY frame ``ready`` first). Calls run
    one at a time (or ``concurrency`` at once) whichever server sent them, and each answer
    goes back on its call's connection.

    A connection that closes is dropped (its server went away; a new leader connects again),
    and the instance goes on. It ends once a server said SHUTDOWN and no connection is left
    (the leader stops it; the other servers stopped sending it calls and let go), or when
    ``more`` closes (its actor is gone).
    """
    pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None
    selector = selectors.DefaultSelector()
    selector.register(more, selectors.EVENT_READ)
    selector.register(first, selectors.EVENT_READ, _Peer(first))
    peers = 1
    ending = False

    def answer(peer: _Peer, kind: int, payload: bytes) -> None:
        peer.send(_run_or_exit(handler, kind, payload))

    def drop(peer: _Peer) -> None:
        nonlocal peers
        selector.unregister(peer.sock)
        peer.sock.close()
        peers -= 1

    try:
        while not (ending and peers == 0):
            for key, _events in selector.select():
                if key.fileobj is more:
                    _message, fds = _receive(more)
                    if not _message and not fds:
                        return  # the actor is gone
                    for fd in fds:
                        sock = socket.socket(fileno=fd)
                        sock.setblocking(True)
                        peer = _Peer(sock)
                        peer.send(ready)
                        selector.register(sock, selectors.EVENT_READ, peer)
                        peers += 1
                    continue
                peer = key.data
                try:
                    data = peer.sock.recv(_RECV_BYTES)
                except OSError:
                    data = b""
                if not data:
                    drop(peer)
                    continue
                for kind, payload in peer.decoder.feed(data):
                    if kind == protocol.CALL or kind == protocol.BATCH:
                        if pool is None:
                            peer.send(_run(handler, kind, payload))
                        else:
                            pool.submit(answer, peer, kind, payload)
                    elif kind == protocol.SHUTDOWN:
                        ending = True
                        drop(peer)
                        break
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _load(spec: dict[str, Any]) -> Handler:
    """Import the script and make the handler of its function; raises :class:`LoadFailed`."""
    function = load_function(Path(spec["workdir"]), spec["file"], spec["function"])
    return (BatchHandler if spec.get("batch") else Handler)(
        function,
        spec["function"],
        log_requests=bool(spec.get("log_requests")),
        log_limit=int(spec.get("log_limit", 2000)),
    )


def _load_logged(
    spec: dict[str, Any], report: Callable[[dict[str, str]], None], what: str
) -> Handler | None:
    """:func:`_load`, with its progress in the log; a failure is given to ``report`` and
    gives None."""
    log(
        f"{what} (pid {os.getpid()}) loading {spec['file']}:{spec['function']} with "
        f"{sys.executable}"
    )
    started = time.perf_counter()
    try:
        handler = _load(spec)
    except LoadFailed as exc:
        if exc.user_traceback:
            sys.stderr.write(exc.user_traceback)
        log(f"load failed: {exc.message}")
        sys.stderr.flush()
        report({"message": exc.message, "traceback": exc.user_traceback})
        return None
    log(f"ready in {time.perf_counter() - started:.2f} s: {handler.described}")
    return handler


def _ready(handler: Handler) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "signature": handler.described,
        # JSON Schema of the parameters and result, for the model's OpenAPI document
        "schema": signatures.describe(handler.function),
    }


def _serve_instance(
    sock: socket.socket,
    handler: Handler,
    spec: dict[str, Any],
    more: socket.socket | None = None,
) -> int:
    """Say READY on the instance's connection, then answer its calls until told to stop (and
    those of the connections handed over on ``more``, if given)."""
    ready = protocol.encode(protocol.READY, json.dumps(_ready(handler)).encode())
    sock.sendall(ready)
    concurrency = int(spec.get("concurrency", 1))
    with contextlib.suppress(OSError):  # the server went away: nothing left to answer
        if more is None:
            serve(sock, handler, concurrency, float(spec.get("busy_poll_us", 0)) / 1e6)
        else:
            serve_shared(sock, more, handler, ready, concurrency)
    log("stopping")
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


# --------------------------------------------------------------------------- fork server
#
# The server and a fork server talk over a SOCK_SEQPACKET socket, one JSON object a message.
# The server sends {"fork": INSTANCE, "env": {...}} with two descriptors (SCM_RIGHTS): the
# instance's end of its connection and its log, opened for appending; and {"kill": PID} to end
# a forked instance that is not answering. The fork server sends {"ready": {..., "threads": N}}
# or {"load_failed": {...}} once, then {"forked": INSTANCE, "pid": PID} or
# {"fork_failed": INSTANCE, "message": ...} per fork, and {"exited": PID, "code": CODE} when an
# instance it forked ends (CODE is negative for a signal).

_MAX_MESSAGE = 1 << 20


#: Threads that are safe to leave behind in a fork, by the name the kernel shows
#: (``/proc/self/task/*/comm``). jemalloc's background threads (pyarrow's allocator, which
#: pandas imports) are: jemalloc's own fork handlers hold its locks across the fork and turn
#: the threads off in the child, which then returns memory without them.
FORK_SAFE_THREADS = frozenset({"jemalloc_bg_thd"})


def _threads() -> int:
    """How many threads this process has, as the kernel counts them (C libraries' too),
    leaving out those a fork may leave behind (:data:`FORK_SAFE_THREADS`)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return threading.active_count()
    count = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm", encoding="utf-8") as comm:
                name = comm.read().strip()
        except OSError:
            continue  # it ended meanwhile
        count += name not in FORK_SAFE_THREADS
    return count


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.sendall(json.dumps(message).encode())


def _receive(control: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors that came with it; None when the server is gone."""
    fds = array.array("i")
    data, ancillary, _flags, _address = control.recvmsg(
        _MAX_MESSAGE, socket.CMSG_SPACE(4 * fds.itemsize)
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def fork_server(control: socket.socket, spec: dict[str, Any]) -> int:
    """Import the script once, then fork an instance for each request on ``control``.

    It stays single-threaded (forking copies only the thread that forks): when the script
    started threads at import it says so in its READY message and exits, and the server
    starts that version's instances fresh instead. It never runs a call itself.
    """
    handler = _load_logged(
        spec, lambda failure: _send(control, {"load_failed": failure}), "fork server"
    )
    if handler is None:
        return 1
    threads = _threads()
    _send(control, {"ready": {**_ready(handler), "threads": threads}})
    if threads > 1:
        log(
            f"the script started {threads - 1} thread(s) at import: the fork server stops "
            "(a fork copies only the thread that forks)"
        )
        return 0
    # Objects that exist now are never collected: the collector would write to their pages,
    # which the instances would then each copy.
    gc.freeze()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: set[int] = set()
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        for key, _events in selector.select():
            if key.fileobj is control:
                message, fds = _receive(control)
                if message is None:
                    log("stopping the fork server")
                    sys.stderr.flush()
                    return 0
                if "fork" in message:
                    child = _fork(control, message, fds, handler, spec, [wake_read, wake_write])
                    if child:
                        children.add(child)
                elif "kill" in message and message["kill"] in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(message["kill"], signal.SIGKILL)
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
                while children:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    children.discard(pid)
                    _send(control, {"exited": pid, "code": _exit_code(status)})


def _unusable_variable(env: dict[str, str]) -> str | None:
    """The name of the first variable no process environment can hold, if any."""
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            return name.replace("\0", "\\0")
    return None


def _fork(
    control: socket.socket,
    message: dict[str, Any],
    fds: list[int],
    handler: Handler,
    spec: dict[str, Any],
    own: list[int],
) -> int | None:
    """Fork the instance ``message`` asks for; returns its pid (None if it could not)."""
    instance = message["fork"]
    if len(fds) != 2:
        _send(control, {"fork_failed": instance, "message": "no connection and log were sent"})
        return None
    started = time.perf_counter()
    try:
        pid = os.fork()
    except OSError as exc:
        _send(control, {"fork_failed": instance, "message": f"fork failed: {exc}"})
        return None
    if pid:
        _send(control, {"forked": instance, "pid": pid})
        return pid
    # The instance: nothing of the fork server's loop, its own log, environment and connection.
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        for fd in own:
            os.close(fd)
        connection, log_fd = fds
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        sys.stdout = _StampedLines(1, "stdout")
        sys.stderr = _StampedLines(2, "stderr")
        env: dict[str, str] = message.get("env") or {}
        sock = socket.socket(fileno=connection)
        unusable = _unusable_variable(env)
        if unusable is not None:
            # a value stored before such values were refused: say so instead of a traceback
            model = env.get("MODELHOST_MODEL_NAME", "MODEL")
            failed = (
                f"The environment variable {unusable} cannot be set: its name or value "
                f"contains a NUL character or its name contains '='. Set it again without "
                f"one, or remove it ('modelhost env unset {model} {unusable}')."
            )
            log(f"instance {instance} (pid {os.getpid()}) load failed: {failed}")
            sys.stderr.flush()
            payload = json.dumps({"message": failed, "traceback": ""}).encode()
            sock.sendall(protocol.encode(protocol.LOAD_FAILED, payload))
            code = 1
            return None
        os.environ.clear()
        os.environ.update(env)
        took = (time.perf_counter() - started) * 1000
        log(
            f"instance {instance} (pid {os.getpid()}) forked from the fork server in "
            f"{took:.1f} ms: {handler.described}"
        )
        code = _serve_instance(sock, handler, spec)
    except SystemExit as exc:  # the function called sys.exit: exit as a fresh worker would
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
            code = 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    channel = parser.add_mutually_exclusive_group(required=True)
    channel.add_argument("--fd", type=int)
    channel.add_argument("--fork-server-fd", type=int)
    parser.add_argument("--more-fd", type=int, help="connections of further servers (Ray)")
    parser.add_argument("--spec", required=True)
    options = parser.parse_args(argv)
    spec = json.loads(options.spec)

    sys.stdout = _StampedLines(1, "stdout")
    sys.stderr = _StampedLines(2, "stderr")
    workdir = Path(spec["workdir"])
    os.chdir(workdir)
    sys.path[:] = [str(workdir)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

    if options.fork_server_fd is not None:
        control = socket.socket(fileno=options.fork_server_fd)
        control.setblocking(True)
        return fork_server(control, spec)
    sock = socket.socket(fileno=options.fd)

    def load_failed(failure: dict[str, str]) -> None:
        sock.sendall(protocol.encode(protocol.LOAD_FAILED, json.dumps(failure).encode()))

    handler = _load_logged(spec, load_failed, f"instance {spec.get('instance', '?')}")
    if handler is None:
        return 1
    more = None if options.more_fd is None else socket.socket(fileno=options.more_fd)
    return _serve_instance(sock, handler, spec, more)


if __name__ == "__main__":
    sys.exit(main())
