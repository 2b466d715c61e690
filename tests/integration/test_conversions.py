"""Results plain JSON cannot hold are converted, through a real instance and real HTTP."""

from __future__ import annotations

import pytest

from tests.helpers import PROJECTS, Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kitchen(server: Server) -> Server:
    server.client().publish(
        PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="convert"
    )
    return server


def _result(server: Server, case: str) -> object:
    response = server.invoke("convert", {"data": {"case": case}})
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_numpy_scalars_and_arrays_become_numbers_and_lists(kitchen: Server) -> None:
    assert _result(kitchen, "numpy") == {
        "array": [0, 1, 2],
        "float32": 1.5,
        "int64": 7,
        "matrix": [[1.0, 1.0], [1.0, 1.0]],
        "bool": True,
    }


def test_pandas_frames_become_records_and_series_lists(kitchen: Server) -> None:
    assert _result(kitchen, "pandas") == {
        "frame": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
        "series": [1.5, 2.5],
        "when": "2026-01-02T03:04:05",
    }


def test_decimals_dates_sets_tuples_and_dataclasses_become_natural_json(
    kitchen: Server,
) -> None:
    assert _result(kitchen, "python") == {
        "decimal": 1.25,
        "whole": 3,
        "date": "2026-11-23",
        "datetime": "2026-11-23T12:30:00",
        "set": [1, 2, 3],
        "tuple": [1, "a"],
        "point": {"x": 1, "y": 2.5},
    }


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -3, 2.5, "text", "ünïcødé ✓", [1, [2, [3]]], {"nested": {"a": [None]}}],
)
def test_json_arguments_arrive_as_python_values_and_come_back_unchanged(
    kitchen: Server, value: object
) -> None:
    response = kitchen.invoke("convert", {"data": {"case": "echo", "arg": value}})
    assert response.json()["result"] == value
    positional = kitchen.invoke("convert", {"parameters": ["echo", value]})
    assert positional.json()["result"] == value
