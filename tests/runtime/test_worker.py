"""The worker in process: finding the function, shaping calls, converting results."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelhost.runtime import protocol, worker
from tests.helpers import PROJECTS

LOAD_FAILURES = [
    ("good", "nope.py", "File 'nope.py' was not found in the project."),
    ("syntax_error", "predict.py", "'predict.py' has a syntax error on line 1"),
    ("import_error", "predict.py", "Importing 'predict.py' raised ZeroDivisionError"),
    ("missing_function", "predict.py", "has no function named 'predict'"),
    ("not_callable", "predict.py", "is a int, not a function"),
]


@pytest.mark.parametrize(
    ("project", "file", "message"), LOAD_FAILURES, ids=[c[0] + ":" + c[1] for c in LOAD_FAILURES]
)
def test_loading_fails_with_a_message_that_says_what_is_wrong(
    project: str, file: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(PROJECTS / project))  # as the worker's main() does
    with pytest.raises(worker.LoadFailed) as failure:
        worker.load_function(PROJECTS / project, file, "predict")
    assert message in failure.value.message


def test_an_import_error_keeps_the_users_frames_and_drops_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(PROJECTS / "import_error"))
    with pytest.raises(worker.LoadFailed) as failure:
        worker.load_function(PROJECTS / "import_error", "predict.py", "predict")
    trace = failure.value.user_traceback
    assert trace.startswith("Traceback (most recent call last):")
    assert 'File "predict.py", line 3' in trace
    assert 'File "helpers.py", line 2, in load_model' in trace
    assert "worker.py" not in trace
    assert "importlib" not in trace


def test_a_good_project_loads_its_function() -> None:
    function = worker.load_function(PROJECTS / "good", "predict.py", "predict")
    assert function(3) == {"doubled": 6}


def _call(handler: worker.Handler, body: bytes) -> tuple[int, object]:
    [(kind, payload)] = protocol.FrameDecoder().feed(
        handler(protocol.encode_call("R" * 16, body)[protocol.HEADER.size :])
    )
    if kind == protocol.RESULT:
        return 200, json.loads(protocol.decode_result(payload)[2])
    error = json.loads(protocol.decode_error(payload)[1])
    return error["status"], error


def add(x: int, y: int = 0) -> int:
    return x + y


def test_data_binds_keywords_and_parameters_bind_positions() -> None:
    handler = worker.Handler(add, "add")
    assert _call(handler, b'{"data": {"x": 1, "y": 2}}') == (200, 3)
    assert _call(handler, b'{"parameters": [4, 5]}') == (200, 9)
    assert _call(handler, b'{"parameters": [4]}') == (200, 4)


def test_arguments_that_do_not_bind_name_the_signature() -> None:
    status, error = _call(worker.Handler(add, "add"), b'{"data": {"z": 1}}')
    assert status == 400
    assert error["code"] == "invalid_arguments"  # type: ignore[index]
    assert "add(x, y=0)" in error["message"]  # type: ignore[index]


def test_a_dict_parameter_is_passed_as_one_argument() -> None:
    handler = worker.Handler(lambda features: sorted(features), "predict")
    assert _call(handler, b'{"parameters": [{"b": 1, "a": 2}]}') == (200, ["a", "b"])


@dataclasses.dataclass
class Pair:
    a: int
    b: str


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.int64(3), 3),
        (np.float32(0.5), 0.5),
        (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
        (np.bool_(False), False),
        (pd.Series([1, 2]), [1, 2]),
        (pd.DataFrame({"a": [1], "b": [2.5]}), [{"a": 1, "b": 2.5}]),
        (pd.Timestamp("2026-01-01"), "2026-01-01T00:00:00"),
        (decimal.Decimal("2.50"), 2.5),
        (decimal.Decimal("7"), 7),
        (datetime.date(2026, 1, 2), "2026-01-02"),
        (datetime.timedelta(seconds=90), 90.0),
        ({"b", "a"}, ["a", "b"]),
        ((1, 2), [1, 2]),
        (Pair(1, "x"), {"a": 1, "b": "x"}),
        (Path("results/model.pkl"), "results/model.pkl"),
    ],
)
def test_values_plain_json_cannot_hold_are_converted(value: object, expected: object) -> None:
    assert json.loads(worker.encode_result("f", value)) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (float("nan"), "NaN or Infinity"),
        ([float("inf")], "NaN or Infinity"),
        (np.array([1.0, np.nan]), "NaN or Infinity"),
        (object(), "cannot be converted to JSON"),
        (decimal.Decimal("NaN"), "NaN or Infinity"),
    ],
)
def test_values_json_cannot_represent_are_an_error_not_invalid_json(
    value: object, fragment: str
) -> None:
    with pytest.raises(worker.ResultError, match=fragment):
        worker.encode_result("f", value)


def test_the_log_stream_stamps_each_line(tmp_path: Path) -> None:
    import os

    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    stream = worker._StampedLines(fd, "stdout")
    stream.write("one\ntw")
    stream.write("o\n")
    stream.write("partial")
    stream.flush()
    os.close(fd)
    lines = path.read_text().splitlines()
    assert [line.split(" ", 2)[1:] for line in lines] == [
        ["stdout", "one"],
        ["stdout", "two"],
        ["stdout", "partial"],
    ]
    assert all(line[:4].isdigit() and line[23] == "Z" for line in lines)


def echo(*args: object) -> object:
    return list(args)


def test_integers_over_64_bits_reach_the_function_exactly() -> None:
    body = b'{"parameters": [18446744073709551617, 1234567890123456789012345]}'
    assert _call(worker.Handler(echo, "echo"), body) == (
        200,
        [18446744073709551617, 1234567890123456789012345],
    )


def test_a_body_nested_too_deeply_is_a_bad_request_not_a_dead_instance() -> None:
    body = b'{"parameters": [' + b"[" * 5000 + b"]" * 5000 + b"]}"
    status, error = _call(worker.Handler(echo, "echo"), body)
    assert status == 400
    assert error["code"] == "bad_request"  # type: ignore[index]
    assert "nested too deeply" in error["message"]  # type: ignore[index]


def test_a_result_with_a_lone_surrogate_is_refused_with_a_message() -> None:
    status, error = _call(worker.Handler(lambda: "\ud800", "broken"), b'{"parameters": []}')
    assert status == 500
    assert error["code"] == "result_not_serializable"  # type: ignore[index]
    assert "surrogate" in error["message"]  # type: ignore[index]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _raise(exc: BaseException) -> None:
    raise exc


def test_an_exception_that_cannot_be_printed_is_still_reported() -> None:
    status, error = _call(worker.Handler(lambda: _raise(Unprintable()), "f"), b'{"parameters": []}')
    assert status == 500
    assert error["message"] == "f raised Unprintable: (its message could not be shown)"  # type: ignore[index]


def test_an_exception_without_a_message_is_named_without_a_dangling_colon() -> None:
    status, error = _call(worker.Handler(lambda: _raise(ValueError()), "f"), b'{"parameters": []}')
    assert status == 500
    assert error["message"] == "f raised ValueError"  # type: ignore[index]


def test_the_instance_output_streams_take_bytes_and_give_their_descriptor(tmp_path: Path) -> None:
    target = tmp_path / "log"
    with target.open("wb") as handle:
        stream = worker._StampedLines(handle.fileno(), "stdout")
        stream.buffer.write(b"bytes \xc3\xa9 out\n")
        stream.write("text out\n")
        assert stream.fileno() == handle.fileno()
        assert stream.encoding == "utf-8"
    lines = target.read_text().splitlines()
    assert [line.split(" ", 2)[1:] for line in lines] == [
        ["stdout", "bytes é out"],
        ["stdout", "text out"],
    ]
