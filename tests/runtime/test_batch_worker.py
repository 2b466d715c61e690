"""The worker's side of batching, in process: a batch in, one answer frame per call out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelhost.runtime import protocol, worker
from tests.helpers import PROJECTS


def _handler(monkeypatch: pytest.MonkeyPatch, function: str = "total") -> worker.BatchHandler:
    monkeypatch.chdir(PROJECTS / "batching")
    loaded = worker.load_function(PROJECTS / "batching", "batching.py", function)
    return worker.BatchHandler(loaded, function)


def _answers(frames: bytes) -> dict[str, tuple[int, Any]]:
    """request id -> (HTTP status, the result or the error object) of every frame."""
    found: dict[str, tuple[int, Any]] = {}
    for kind, payload in protocol.FrameDecoder().feed(frames):
        if kind == protocol.RESULT:
            request_id, _, result = protocol.decode_result(payload)
            found[request_id] = (200, json.loads(result))
        else:
            request_id, error = protocol.decode_error(payload)
            body = json.loads(error)
            found[request_id] = (body["status"], body)
    return found


def _call(n: int, body: object) -> tuple[str, bytes]:
    return (f"REQUEST{n:09d}", json.dumps(body).encode())


def test_a_batch_calls_the_function_once_with_every_input_and_answers_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = _handler(monkeypatch)
    answers = _answers(
        handler.batch([_call(1, {"data": {"x": 1, "y": 2}}), _call(2, {"parameters": [10, 20]})])
    )
    assert answers == {
        "REQUEST000000001": (200, {"sum": 3, "batch": 2}),
        "REQUEST000000002": (200, {"sum": 30, "batch": 2}),
    }


def test_a_lone_call_frame_is_a_batch_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = _handler(monkeypatch)
    request_id, body = _call(1, {"data": {"x": 4, "y": 5}})
    frame = handler(request_id.encode() + body)
    assert _answers(frame) == {request_id: (200, {"sum": 9, "batch": 1})}


def test_a_batch_that_raises_is_run_again_one_call_at_a_time_and_only_the_bad_call_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = _handler(monkeypatch)
    answers = _answers(
        handler.batch(
            [
                _call(1, {"data": {"x": 1, "y": 1}}),
                _call(2, {"data": {"x": 1, "y": 1, "fail": True}}),
                _call(3, {"data": {"x": 2, "y": 2}}),
            ]
        )
    )
    assert answers["REQUEST000000001"] == (200, {"sum": 2, "batch": 1})
    assert answers["REQUEST000000003"] == (200, {"sum": 4, "batch": 1})
    status, error = answers["REQUEST000000002"]
    assert status == 500
    assert error["code"] == "model_error"
    assert error["message"].startswith("total raised ValueError: cannot add")
    logged = capsys.readouterr().err
    # The batch's failure is logged as the batch's, and says what happens next ...
    assert "a batch of 3 calls (request REQUEST000000001 and 2 more) failed after " in logged, (
        logged
    )
    assert "; each of its calls is run again on its own:" in logged
    # ... then the bad call's own, with its traceback alone (the log's, not the client's)
    assert "request REQUEST000000002 failed after " in logged
    assert logged.count("Traceback") == 2
    assert "During handling of the above exception" not in logged
    assert "CallFailed" not in logged


def test_a_batch_with_the_wrong_number_of_results_is_run_again_one_call_at_a_time(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = _handler(monkeypatch)
    answers = _answers(
        handler.batch(
            [_call(1, {"data": {"x": 1, "y": 2}}), _call(2, {"data": {"x": 0, "y": 0, "short": 1}})]
        )
    )
    assert answers["REQUEST000000001"] == (200, {"sum": 3, "batch": 1})
    status, error = answers["REQUEST000000002"]
    assert status == 500
    assert error["message"] == (
        "total returned 0 results for 1 input; a batching function returns a list with one "
        "result per input, in order."
    )
    logged = capsys.readouterr().err
    assert (
        "a batch of 2 calls (request REQUEST000000001 and 1 more): total returned 1 results "
        "for 2 inputs; a batching function returns a list with one result per input, in "
        "order. Each of its calls is run again on its own." in logged
    ), logged


def test_a_call_with_a_bad_body_fails_alone_and_the_rest_of_its_batch_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = _handler(monkeypatch)
    bad = ("REQUEST000000002", b"{not json")
    answers = _answers(handler.batch([_call(1, {"parameters": [1, 1]}), bad]))
    assert answers["REQUEST000000001"] == (200, {"sum": 2, "batch": 1})
    assert answers["REQUEST000000002"][0] == 400
    assert answers["REQUEST000000002"][1]["code"] == "bad_request"


def test_a_result_that_is_not_a_list_fails_every_call_of_the_batch_with_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = worker.BatchHandler(lambda inputs: {"n": len(inputs)}, "count")
    answers = _answers(handler.batch([_call(1, {"parameters": []})]))
    assert answers["REQUEST000000001"][1]["message"].startswith(
        "count returned a value of type 'dict' for 1 input;"
    )


def test_a_data_frame_with_one_row_per_input_answers_each_call_with_its_row_as_an_object() -> None:
    pandas = pytest.importorskip("pandas")

    def frame(inputs: list[Any]) -> Any:
        return pandas.DataFrame(
            {"value": [item[0] * 2 for item in inputs], "label": ["even"] * len(inputs)}
        )

    handler = worker.BatchHandler(frame, "frame")
    answers = _answers(handler.batch([_call(n, {"parameters": [n]}) for n in range(1, 4)]))
    assert answers == {
        f"REQUEST00000000{n}": (200, {"value": n * 2, "label": "even"}) for n in range(1, 4)
    }


@pytest.mark.parametrize(
    ("returned", "described"),
    [
        # a 0-d array, as np.squeeze makes of a batch of one: it has a __len__ that raises
        (lambda np: np.squeeze(np.asarray([3.0])), "a value of type 'ndarray' that cannot be "
         "read as a list (TypeError: len() of unsized object)"),
        (lambda np: 7, "a value of type 'int'"),
    ],
)  # fmt: skip
def test_a_result_whose_length_cannot_be_read_fails_its_calls_and_the_instance_goes_on(
    returned: Any, described: str, capsys: pytest.CaptureFixture[str]
) -> None:
    numpy = pytest.importorskip("numpy")
    handler = worker.BatchHandler(lambda inputs: returned(numpy), "squeezed")

    answers = _answers(
        handler.batch([_call(1, {"parameters": [1]}), _call(2, {"parameters": [2]})])
    )

    for request in ("REQUEST000000001", "REQUEST000000002"):  # each again on its own, failed
        status, error = answers[request]
        assert status == 500
        assert error["message"] == (
            f"squeezed returned {described} for 1 input; a batching function returns a list "
            "with one result per input, in order."
        )
    assert f"squeezed returned {described} for 2 inputs" in capsys.readouterr().err


def test_a_result_that_raises_while_it_is_listed_fails_its_call_with_the_error() -> None:
    class Broken:
        def __len__(self) -> int:
            return 1

        def __iter__(self) -> Any:
            raise RuntimeError("no rows today")

    handler = worker.BatchHandler(lambda inputs: Broken(), "broken")
    answers = _answers(handler.batch([_call(1, {"parameters": [1]})]))
    assert answers["REQUEST000000001"][1]["message"].startswith(
        "broken returned a value of type 'Broken' that cannot be read as a list (RuntimeError: "
        "no rows today) for 1 input;"
    )


def test_a_function_that_cannot_take_a_list_is_refused_when_it_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(worker.LoadFailed) as failure:
        _handler(monkeypatch, "pair")
    assert "pair(a, b) cannot be a batching function" in failure.value.message
    assert (
        "publish it without a batch size (--batch-max-size; batch_max_size in the Python "
        "client)" in failure.value.message
    )


def test_a_batch_frame_round_trips_through_the_protocol() -> None:
    calls = [("A" * 16, b'{"data": {}}'), ("B" * 16, b"")]
    frames = protocol.FrameDecoder().feed(protocol.encode_batch(calls))
    assert frames == [(protocol.BATCH, frames[0][1])]
    assert protocol.decode_batch(frames[0][1]) == calls


def test_a_batch_shorter_than_it_says_is_a_protocol_error() -> None:
    payload = protocol.encode_batch([("A" * 16, b"12345")])[protocol.HEADER.size : -2]
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_batch(payload)
