"""Property tests of the JSON conversions, both ways: what the client sends, what the worker
reads and what it answers must be the same values (DESIGN §3), for any JSON value."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelhost import errors
from modelhost.client._json import decode_answer, encode_arguments
from modelhost.json_conversions import to_json_compatible
from modelhost.runtime.worker import ResultError, _loads, encode_result

# Text JSON can carry: any code point but the lone surrogates, which are not Unicode.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)  # past 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1 and 1.0 differ, and -0.0 is 0.0 with its sign."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(JSON_VALUES)
def test_arguments_the_client_sends_reach_the_worker_unchanged(value: Any) -> None:
    body = encode_arguments({"data": {"x": value}})
    assert _same(_loads(body), {"data": {"x": value}})


@given(JSON_VALUES)
def test_a_result_the_worker_answers_reaches_the_client_unchanged(value: Any) -> None:
    assert _same(decode_answer(encode_result("f", value)), value)


@given(st.sampled_from([math.nan, math.inf, -math.inf]))
def test_nan_and_infinity_are_refused_both_ways_never_sent_as_null(value: float) -> None:
    with pytest.raises(ResultError, match="NaN or Infinity"):
        encode_result("f", {"deep": [value]})
    with pytest.raises(errors.BadRequest, match="NaN or Infinity"):
        encode_arguments({"data": {"deep": [value]}})


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_a_decimal_becomes_the_number_it_stands_for(value: decimal.Decimal) -> None:
    converted = json.loads(encode_result("f", value))
    if value == value.to_integral_value() and value.as_tuple().exponent >= 0:  # type: ignore[operator]
        assert converted == int(value)
    else:
        assert converted == float(value)


@given(st.datetimes(timezones=st.timezones()) | st.datetimes())
def test_a_datetime_becomes_iso_8601_text_that_reads_back_as_the_same_moment(
    value: dt.datetime,
) -> None:
    parsed = dt.datetime.fromisoformat(json.loads(encode_result("f", value)))
    # The same wall time and the same offset (compared as such: a time in a DST gap or fold
    # never equals one in another zone).
    assert parsed.replace(tzinfo=None) == value.replace(tzinfo=None)
    assert parsed.utcoffset() == value.utcoffset()


@given(st.dates())
def test_a_date_becomes_iso_8601_text(value: dt.date) -> None:
    assert dt.date.fromisoformat(to_json_compatible(value)) == value


@given(st.timedeltas())
def test_a_timedelta_becomes_its_seconds(value: dt.timedelta) -> None:
    assert to_json_compatible(value) == value.total_seconds()


@given(st.sets(st.integers()) | st.frozensets(TEXT))
def test_a_set_becomes_a_sorted_list_of_its_members(value: set[Any]) -> None:
    assert json.loads(encode_result("f", value)) == sorted(value)


@given(st.lists(st.one_of(st.integers(), TEXT), min_size=2, unique=True))
def test_a_set_of_mixed_members_becomes_a_list_of_each_member_once(value: list[Any]) -> None:
    converted = json.loads(encode_result("f", set(value)))
    assert len(converted) == len(value)
    assert {json.dumps(x) for x in converted} == {json.dumps(x) for x in value}
