"""The documented conversions (docs/api.md, "Return values that plain JSON cannot hold"), one
row at a time, through the worker's encoder: what a function returns and what the caller reads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import threading
import uuid
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelhost.client._json import encode_arguments
from modelhost.json_conversions import to_json_compatible
from modelhost.runtime.worker import ResultError, encode_result


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: int
    label: str


class Vector:
    """Another array library's value: it has ``tolist`` and nothing else."""

    def tolist(self) -> list[int]:
        return [1, 2, 3]


def _read(value: Any) -> Any:
    return json.loads(encode_result("predict", value))


DOCUMENTED = [
    (np.int64(7), 7),
    (np.float32(0.5), 0.5),
    (np.bool_(True), True),
    (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
    (pd.Series([1.5, 2.5]), [1.5, 2.5]),
    (Vector(), [1, 2, 3]),
    (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
    (pd.Timestamp("2026-12-06T10:30:00"), "2026-12-06T10:30:00"),
    (pd.Timedelta(minutes=90), "P0DT1H30M0S"),
    (pd.Period("2026-12", freq="M"), "2026-12"),
    (pd.NaT, None),
    (dt.datetime(2026, 12, 6, 10, 30, tzinfo=dt.timezone.utc), "2026-12-06T10:30:00+00:00"),
    (dt.date(2026, 12, 6), "2026-12-06"),
    (dt.time(10, 30, 15), "10:30:15"),
    (decimal.Decimal("42"), 42),
    (decimal.Decimal("4.2E+1"), 42),
    (decimal.Decimal("1.25"), 1.25),
    (dt.timedelta(minutes=1, seconds=30), 90.0),
    ({3, 1, 2}, [1, 2, 3]),
    ({100, 3, 20}, [3, 20, 100]),  # iterated as 3, 100, 20: sorted, not merely listed
    (frozenset({"b", "a"}), ["a", "b"]),
    ((1, "two"), [1, "two"]),
    (Point(1, "p"), {"x": 1, "label": "p"}),
    (Colour.RED, "red"),
    (Colour.BLUE, 2),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
    (PurePosixPath("results/model.pkl"), "results/model.pkl"),
    ({"nested": [np.int32(1), {dt.date(2026, 1, 2)}]}, {"nested": [1, ["2026-01-02"]]}),
]


@pytest.mark.parametrize(("returned", "reads"), DOCUMENTED, ids=lambda value: type(value).__name__)
def test_each_documented_value_reads_back_as_the_docs_say(returned: Any, reads: Any) -> None:
    read = _read(returned)
    assert read == reads
    assert type(read) is type(reads)


@pytest.mark.parametrize(("passed", "reads"), DOCUMENTED, ids=lambda value: type(value).__name__)
def test_each_documented_value_is_sent_by_the_client_as_the_docs_say(
    passed: Any, reads: Any
) -> None:
    # The client converts a call's arguments with the same table (docs/api.md).
    sent = json.loads(encode_arguments({"value": passed}))["value"]
    assert sent == reads
    assert type(sent) is type(reads)


def test_a_decimal_that_is_whole_becomes_an_integer_and_a_fraction_a_float() -> None:
    assert type(to_json_compatible(decimal.Decimal("10"))) is int
    assert type(to_json_compatible(decimal.Decimal("0.1"))) is float


def test_a_set_whose_items_cannot_be_sorted_is_a_list_of_them_all() -> None:
    read = _read({1, "a"})
    assert sorted(read, key=str) == [1, "a"]
    sent = json.loads(encode_arguments({"value": frozenset({2, "b"})}))["value"]
    assert sorted(sent, key=str) == [2, "b"]


def test_a_pandas_value_with_no_conversion_is_refused_naming_its_type() -> None:
    # pandas values the table does not list (an Interval has no tolist) are refused like others.
    with pytest.raises(TypeError, match="values of type 'Interval' cannot be converted to JSON"):
        to_json_compatible(pd.Interval(0, 1))


@pytest.mark.parametrize("value", [float("nan"), np.float64("inf"), [1.0, -np.inf]])
def test_nan_and_infinity_are_refused_with_what_to_return_instead(value: Any) -> None:
    with pytest.raises(ResultError, match=r"NaN or Infinity.*return None \(null\)"):
        encode_result("predict", value)


def test_a_value_with_no_conversion_is_refused_naming_its_type() -> None:
    with pytest.raises(ResultError, match="'object'"):
        encode_result("predict", object())
    with pytest.raises(TypeError, match="values of type 'lock' cannot be converted to JSON"):
        to_json_compatible(threading.Lock())
