"""The client maps the server's envelope back to the same exception classes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost import Client, errors
from modelhost.client._client import parse_target


def _client(handler) -> Client:  # type: ignore[no-untyped-def]
    return Client("http://server", "mh_key", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "model_not_found", errors.ModelNotFound),
        (400, "invalid_arguments", errors.InvalidArguments),
        (503, "queue_full", errors.QueueFull),
        (500, "model_error", errors.ModelError),
        (504, "model_timeout", errors.ModelTimeout),
    ],
)
def test_error_envelopes_become_the_matching_exception(
    status: int, code: str, cls: type[errors.ModelhostError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, json={"error": {"code": code, "message": "why"}, "request_id": "R"}
        )

    with _client(handler) as client, pytest.raises(cls, match="why"):
        client.predict("m", data={})


def test_predict_sends_data_or_parameters_as_json_with_the_model_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "result": 5,
                "request_id": "R" * 16,
                "timing": 1.0,
                "model_time_in_ms": 1,
                "release": {"model_version_number": 3},
            },
        )

    with _client(handler) as client:
        prediction = client.predict("wine", parameters=[[1, 2]])
        client.predict("wine", data={"x": 1}, version=2, token="mht_t")
    assert prediction.result == 5
    assert prediction.version == 3
    assert seen[0].url.path == "/models/wine/latest/model"
    assert json.loads(seen[0].content) == {"parameters": [[1, 2]]}
    assert "authorization" not in seen[0].headers  # the API key never goes to the gateway
    assert seen[1].headers["authorization"] == "Bearer mht_t"
    assert seen[1].url.path == "/models/wine/versions/2/model"
    assert json.loads(seen[1].content) == {"data": {"x": 1}}


def test_predict_needs_exactly_one_of_data_and_parameters() -> None:
    with _client(lambda r: httpx.Response(200)) as client:
        with pytest.raises(errors.BadRequest):
            client.predict("m")
        with pytest.raises(errors.BadRequest):
            client.predict("m", data={}, parameters=[])


def test_a_call_names_a_version_or_a_label_never_both() -> None:
    with _client(lambda r: httpx.Response(200)) as client:
        with pytest.raises(errors.BadRequest, match="at most one of version= and label="):
            client.predict("m", version=2, label="prod", parameters=[])
        with pytest.raises(errors.BadRequest, match="at most one of version= and label="):
            client.submit("m", version=2, label="prod", parameters=[])


def test_an_unreachable_server_is_a_connection_error_that_says_what_to_check() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with (
        _client(handler) as client,
        pytest.raises(errors.ConnectionFailed, match="Is 'modelhost serve' running"),
    ):
        client.models()


def test_targets_accept_a_directory_with_options_or_the_shorthand(tmp_path: Path) -> None:
    assert parse_target(f"{tmp_path}/predict.py:predict", None, None) == (
        tmp_path,
        "predict.py",
        "predict",
    )
    assert parse_target(str(tmp_path), "a.py", "f") == (tmp_path, "a.py", "f")
    with pytest.raises(errors.BadRequest, match="Say which function"):
        parse_target(str(tmp_path), None, None)
    with pytest.raises(errors.BadRequest, match="either"):
        parse_target(f"{tmp_path}/predict.py:predict", "other.py", None)


def test_a_shorthand_that_names_no_script_or_a_function_with_a_colon_says_which_part_is_wrong(
    tmp_path: Path,
) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        parse_target(f"{tmp_path}/requirements.txt:predict", None, None)
    assert refused.value.message == (
        f"'{tmp_path}/requirements.txt' is not a Python or R script: the shorthand is "
        "PATH/script.py:function (or PATH/script.R:function); or give --file and --function."
    )
    with pytest.raises(errors.BadRequest) as refused:
        parse_target(f"{tmp_path}/predict.py:predict:x", None, None)
    assert refused.value.message == (
        "'predict:x' is not a function name: the shorthand is PATH/script.py:function, with one "
        "':' and a name without one."
    )


def test_credentials_come_from_the_file_only_for_the_server_they_were_saved_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "credentials").write_text(json.dumps({"url": "http://saved:1", "api_key": "mh_s"}))
    monkeypatch.setenv("MODELHOST_HOME", str(tmp_path))
    monkeypatch.delenv("MODELHOST_URL", raising=False)
    monkeypatch.delenv("MODELHOST_API_KEY", raising=False)
    with Client() as saved:
        assert (saved.url, saved.api_key) == ("http://saved:1", "mh_s")
    with Client("http://other:2") as other:
        assert other.api_key is None
    monkeypatch.setenv("MODELHOST_API_KEY", "mh_env")
    with Client() as env:
        assert env.api_key == "mh_env"


def test_a_url_without_its_scheme_is_refused_with_the_fix() -> None:
    with pytest.raises(errors.BadRequest, match=r"such as http://127\.0\.0\.1:8600"):
        Client("127.0.0.1:8600", "mh_x")


def _echo_handler(seen: list[bytes]):  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(
            200,
            content=b'{"result": 123456789012345678901234567890, "request_id": "R", "timing": 1,'
            b' "model_time_in_ms": 1, "release": {"model_version_number": 1}}',
        )

    return handler


def test_predict_converts_numpy_pandas_decimal_dates_and_sets_in_the_arguments() -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    import datetime
    import decimal

    seen: list[bytes] = []
    with _client(_echo_handler(seen)) as client:
        client.predict(
            "m",
            parameters=[
                np.array([[1.5, 2.0]]),
                np.int64(3),
                pd.DataFrame({"a": [1, 2]}),
                decimal.Decimal("2.5"),
                datetime.date(2020, 1, 2),
                {3, 1},
                2**70,
            ],
        )
    assert json.loads(seen[0]) == {
        "parameters": [[[1.5, 2.0]], 3, [{"a": 1}, {"a": 2}], 2.5, "2020-01-02", [1, 3], 2**70]
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([float("nan")], "NaN or Infinity"),
        ({"x": float("inf")}, "NaN or Infinity"),
        ([object()], "values of type 'object' cannot be converted to JSON"),
        ({"x": {(1, 2): "a"}}, "cannot be sent as JSON"),
    ],
)
def test_arguments_json_cannot_hold_are_a_bad_request_not_a_type_error(
    arguments: object, message: str
) -> None:
    seen: list[bytes] = []
    key = "parameters" if isinstance(arguments, list) else "data"
    with _client(_echo_handler(seen)) as client, pytest.raises(errors.BadRequest, match=message):
        client.predict("m", **{key: arguments})  # type: ignore[arg-type]
    assert seen == []  # nothing was sent


def test_a_result_keeps_integers_over_64_bits_exact() -> None:
    with _client(_echo_handler([])) as client:
        assert client.predict("m", data={}).result == 123456789012345678901234567890


def test_an_answer_that_is_not_json_says_the_url_may_not_be_a_modelhost_server() -> None:
    with (
        _client(lambda r: httpx.Response(200, content=b"<html>hello</html>")) as client,
        pytest.raises(errors.ConnectionFailed, match="is it a modelhost server"),
    ):
        client.models()


def _refusing_client(seen: list[httpx.Request]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    return _client(handler)


def test_publishing_a_file_as_the_project_says_it_is_a_file_and_what_to_give(
    tmp_path: Path,
) -> None:
    (tmp_path / "predict.py").write_text("def predict(x):\n    return x\n")
    seen: list[httpx.Request] = []
    with _refusing_client(seen) as client:
        with pytest.raises(errors.BadRequest, match="is a file, not a project directory") as info:
            client.publish(tmp_path / "predict.py", name="m", file="predict.py", function="predict")
        assert f"such as {tmp_path} with --file predict.py" in info.value.message
        assert f"{tmp_path}/predict.py:predict" in info.value.message
        with pytest.raises(errors.BadRequest, match="does not exist"):
            client.publish(tmp_path / "nope", name="m", file="predict.py", function="predict")
    assert seen == []


def test_an_absolute_file_inside_the_project_is_taken_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "predict.py").write_text("def predict(x):\n    return x\n")
    seen: list[httpx.Request] = []
    with _refusing_client(seen) as client, pytest.raises(errors.ModelhostError):
        client.publish(
            tmp_path, name="m", file=str(tmp_path / "models" / "predict.py"), function="predict"
        )
    assert seen[0].url.params["file"] == "models/predict.py"


def test_an_absolute_file_outside_the_project_is_refused_before_upload(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere.py").write_text("def predict(x):\n    return x\n")
    seen: list[httpx.Request] = []
    with (
        _refusing_client(seen) as client,
        pytest.raises(errors.EntryPointNotFound, match="is not inside the project directory"),
    ):
        client.publish(
            tmp_path / "project",
            name="m",
            file=str(tmp_path / "elsewhere.py"),
            function="predict",
        )
    assert seen == []


@pytest.mark.parametrize("name", ["", "a/b", "Upper", "with space", "café"])
def test_an_invalid_model_name_is_refused_before_packing_and_uploading(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / "predict.py").write_text("def predict(x):\n    return x\n")
    seen: list[httpx.Request] = []
    progress: list[str] = []
    with (
        _refusing_client(seen) as client,
        pytest.raises(errors.BadRequest, match="is not a valid model name"),
    ):
        client.publish(f"{tmp_path}/predict.py:predict", name=name, on_progress=progress.append)
    assert seen == []
    assert progress == []


def test_a_url_with_another_scheme_is_not_told_to_prepend_http() -> None:
    with pytest.raises(errors.BadRequest) as refused:
        Client("ftp://models.example", "mh_x")
    assert "http://ftp://" not in refused.value.message
    assert "http:// or https://" in refused.value.message


def test_predict_waits_for_the_server_which_bounds_every_call_by_the_model_timeout() -> None:
    seen: list[httpx.Request] = []
    with _client(_echo_handler_recording(seen)) as client:
        client.predict("m", data={})
        client.predict("m", data={}, timeout=7.5)
        client.models()
    assert seen[0].extensions["timeout"]["read"] is None  # the client's 120 s never cut it
    assert seen[1].extensions["timeout"]["read"] == 7.5
    assert seen[2].extensions["timeout"]["read"] == 120.0  # management calls keep it


def test_a_call_past_its_own_timeout_says_it_may_still_be_running() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with (
        _client(handler) as client,
        pytest.raises(errors.ConnectionFailed, match=r"No answer from model 'm' within 2 s"),
    ):
        client.predict("m", data={}, timeout=2)


def _echo_handler_recording(seen: list[httpx.Request]):  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "models": [],
                "result": 1,
                "request_id": "R",
                "timing": 1,
                "model_time_in_ms": 1,
                "release": {"model_version_number": 1},
            },
        )

    return handler


def test_a_script_named_without_its_suffix_or_a_directory_as_the_file_gets_a_hint(
    tmp_path: Path,
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "predict.py").write_text("def predict(x):\n    return x\n")
    seen: list[httpx.Request] = []
    with _refusing_client(seen) as client:
        with pytest.raises(
            errors.EntryPointNotFound, match=r"did you mean --file models/predict\.py"
        ):
            client.publish(tmp_path, name="m", file="models/predict", function="predict")
        with pytest.raises(errors.EntryPointNotFound, match="'models' is a directory in"):
            client.publish(tmp_path, name="m", file="models", function="predict")
    assert seen == []


def test_an_answer_nested_past_the_recursion_limit_is_an_error_not_a_traceback() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with (
        _client(lambda r: httpx.Response(200, content=deep)) as client,
        pytest.raises(errors.ConnectionFailed, match="something other than JSON"),
    ):
        client.models()


def test_a_management_call_without_any_api_key_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELHOST_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MODELHOST_API_KEY", raising=False)

    def handler(request: httpx.Request) -> httpx.Response:
        assert "authorization" not in request.headers
        return httpx.Response(
            401,
            json={"error": {"code": "unauthenticated", "message": "needs a key"}},
        )

    client = Client("http://server", transport=httpx.MockTransport(handler))
    with client, pytest.raises(errors.Unauthenticated) as refused:
        client.models()
    message = refused.value.message
    assert "no API key was given" in message
    assert "modelhost login http://server" in message
    assert "MODELHOST_API_KEY" in message


def test_a_redirect_from_the_api_is_an_error_not_an_empty_answer() -> None:
    # FastAPI redirects /models/ to /models: what an empty model name makes of a path.
    client = _client(
        lambda request: httpx.Response(307, headers={"location": "http://server/api/v1/models"})
    )
    with pytest.raises(errors.RouteNotFound, match="cannot be empty"):
        client.model("")


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (
            {"failure": {"kind": "load", "message": "No function 'f'.", "traceback": None}},
            "No function 'f'.",
        ),
        ({}, "Old server's reason."),  # a server without ``failure``: the log says why
    ],
    ids=["structured", "older-server"],
)
def test_a_failed_build_raises_with_the_failures_message(
    version: dict[str, object], reason: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        log = "Bundle sha256:…\nFailed:\nOld server's reason.\n"
        return httpx.Response(200, json={"status": "failed", "build_log": log, **version})

    with _client(handler) as client, pytest.raises(errors.BuildFailed) as failed:
        client.wait_for_version("m", 1)
    assert failed.value.message == f"Version 1 of m failed to load: {reason}"
    assert "Failed:" in failed.value.build_log


def _never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"nothing should be sent, but {request.method} {request.url} was")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_setting_that_json_cannot_hold_is_a_bad_request_naming_it(value: float) -> None:
    with _client(_never_called) as client, pytest.raises(errors.BadRequest) as raised:
        client.update_model("m", timeout_seconds=value)
    assert "NaN or Infinity (timeout_seconds)" in raised.value.message


def _refused_before_packing(tmp_path: Path, **arguments: Any) -> str:
    """The BadRequest's message for publishing a one-file project with ``arguments``, after
    checking that nothing was packed (no progress reported) and nothing sent."""
    (tmp_path / "predict.py").write_text("def predict(x):\n    return x\n")
    progress: list[str] = []
    with _client(_never_called) as client, pytest.raises(errors.BadRequest) as raised:
        client.publish(
            f"{tmp_path}/predict.py:predict", name="m", on_progress=progress.append, **arguments
        )
    assert progress == []
    return raised.value.message


def test_a_description_too_long_for_a_url_is_refused_before_anything_is_packed(
    tmp_path: Path,
) -> None:
    message = _refused_before_packing(tmp_path, description="d" * 70_000)
    assert "The description is too long to send" in message
    assert "Shorten the description" in message


def test_a_url_httpx_cannot_make_is_a_bad_request_not_an_httpx_error() -> None:
    with _client(_never_called) as client, pytest.raises(errors.BadRequest) as raised:
        client.logs("m", after="x" * 70_000)
    assert "too long or not valid" in raised.value.message


def test_a_batch_wait_without_a_batch_size_is_refused_before_anything_is_packed(
    tmp_path: Path,
) -> None:
    message = _refused_before_packing(tmp_path, batch_max_wait_ms=5)
    assert message.startswith("batch_max_wait_ms needs batch_max_size: give both")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"fork": "no"}, "Pass fork=True or fork=False, not 'no'."),
        ({"fork": 0}, "Pass fork=True or fork=False, not 0."),
        ({"wait": "false"}, "Pass wait=True or wait=False, not 'false'."),
        ({"concurrency": "4"}, "Pass concurrency= as a whole number, such as 4, not '4'."),
        ({"concurrency": True}, "Pass concurrency= as a whole number, such as 4, not True."),
        ({"concurrency": 2.5}, "Pass concurrency= as a whole number, such as 4, not 2.5."),
        ({"batch_max_size": 6.5}, "Pass batch_max_size= as a whole number, such as 64"),
        ({"batch_max_size": 64, "batch_max_wait_ms": "5"}, "Pass batch_max_wait_ms= as a"),
        ({"batch_max_size": 64, "batch_max_wait_ms": True}, "Pass batch_max_wait_ms= as a"),
        ({"wait_timeout": "1h"}, "Pass wait_timeout= as a number of seconds"),
        ({"python": 3.10}, "Pass python= as text, such as '3.11', not 3.1."),
        ({"environment": True}, "Pass environment= as text"),
        ({"description": None}, "Pass description= as text"),
        ({"exclude": "*.csv"}, "Pass exclude= as a list of glob patterns, such as ['*.csv']"),
        ({"exclude": [1]}, "Pass exclude= as a list of glob patterns"),
        ({"example": 5}, "Pass example= as a dict"),
    ],
)
def test_publish_refuses_arguments_of_the_wrong_type_before_anything_is_packed(
    tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    (tmp_path / "predict.py").write_text("def predict(x):\n    return x\n")
    progress: list[str] = []
    with _client(_never_called) as client, pytest.raises(errors.BadRequest) as raised:
        client.publish(
            f"{tmp_path}/predict.py:predict", name="m", on_progress=progress.append, **arguments
        )
    assert raised.value.message.startswith(message)
    assert progress == []


def test_publish_sends_typed_arguments_as_given(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text("def predict(rows):\n    return rows\n")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201, json={"model": {"name": "m"}, "version": {"number": 1, "status": "building"}}
        )

    with _client(handler) as client:
        version = client.publish(
            f"{tmp_path}/predict.py:predict",
            name="m",
            fork=False,
            wait=False,
            concurrency=2,
            batch_max_size=8,
            batch_max_wait_ms=2.5,
            python="3.11",
            exclude=("*.csv",),
        )
    assert version.number == 1
    query = seen[0].url.params
    assert query["fork"] == "false"
    assert query["concurrency"] == "2"
    assert query["batch_max_size"] == "8"
    assert query["batch_max_wait_ms"] == "2.5"
    assert query["python"] == "3.11"


#: each of the client's methods that uploads a project to run a command (docs/api.md, "Runs"),
#: called with the project at ``path`` and the given arguments
_RUNNERS = {
    "start_run": lambda client, path, **kw: client.start_run(path, **kw),
    "create_schedule": lambda client, path, **kw: client.create_schedule(path, every="1h", **kw),
    "replace_schedule": lambda client, path, **kw: client.replace_schedule(
        "s1", path, every="1h", **kw
    ),
}


@pytest.mark.parametrize("method", sorted(_RUNNERS))
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"command": "python train.py"},
            "Pass command= as a list of arguments, such as ['python', 'train.py'] (it runs "
            "without a shell; shlex.split() splits a command line), not 'python train.py'.",
        ),
        ({"command": b"python"}, "Pass command= as a list of arguments"),
        ({"command": []}, "Pass command= as a list of arguments"),
        ({"command": ["sleep", 30]}, "Pass command= as a list of arguments"),
        (
            {"command": ["python", "train.py"], "exclude": "*.csv"},
            "Pass exclude= as a list of glob patterns, such as ['*.csv']",
        ),
    ],
)
def test_runs_and_schedules_refuse_a_command_or_exclude_given_as_one_string_before_packing(
    tmp_path: Path, method: str, arguments: dict[str, object], message: str
) -> None:
    # docs/api.md: the command is "one per argument, run without a shell", so a string has no
    # one right split; it was sent as one argument per character
    (tmp_path / "train.py").write_text("print('trained')\n")
    progress: list[str] = []
    with _client(_never_called) as client, pytest.raises(errors.BadRequest) as raised:
        _RUNNERS[method](client, tmp_path, on_progress=progress.append, **arguments)
    assert raised.value.message.startswith(message)
    assert progress == []


@pytest.mark.parametrize("method", sorted(_RUNNERS))
def test_runs_and_schedules_send_each_argument_of_the_command_as_one_command_parameter(
    tmp_path: Path, method: str
) -> None:
    (tmp_path / "train.py").write_text("print('trained')\n")
    (tmp_path / "data.csv").write_text("x\n1\n")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "r1", "status": "queued"})

    with _client(handler) as client:
        _RUNNERS[method](
            client,
            tmp_path,
            command=("python", "train.py", "--epochs 3"),
            exclude=("*.csv",),
        )
    [request] = seen
    assert request.url.params.get_list("command") == ["python", "train.py", "--epochs 3"]
    with tarfile.open(fileobj=io.BytesIO(request.content), mode="r:gz") as tar:
        assert "train.py" in tar.getnames()
        assert "data.csv" not in tar.getnames()
