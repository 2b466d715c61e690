"""A drift report's reference file, and what it says when nothing can be compared (docs/api.md,
drift)."""

from __future__ import annotations

import pytest

from modelhost import errors
from modelhost.operations.captures import no_common_feature, read_reference


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_a_csv_reference_is_read_whichever_separator_its_header_uses(separator: str) -> None:
    # examples/wine_quality/data/winequality-red.csv is ';'-separated, as many spreadsheets save
    text = separator.join(["fixed acidity", "pH", "label"]) + "\n"
    text += separator.join(["7.4", "3.51", "red"]) + "\n"
    text += separator.join(["7.8", "3.2", "red"]) + "\n"
    assert read_reference(text.encode()) == {"fixed acidity": [7.4, 7.8], "pH": [3.51, 3.2]}


def test_calls_that_sent_no_named_inputs_are_told_to_send_them_by_name() -> None:
    refused = no_common_feature(["alcohol", "pH"], [])
    assert isinstance(refused, errors.BadRequest)
    assert refused.message == (
        "No feature is in both the reference (alcohol, pH) and the captured inputs (none); "
        "drift compares named inputs, and the calls captured sent none: callers send them by "
        'name as {"data": {"alcohol": 9.9, ...}}, not as positional "parameters".'
    )


def test_inputs_named_otherwise_are_told_to_name_the_columns_alike() -> None:
    assert no_common_feature(["w"], ["x", "y"]).message.endswith(
        "name the reference's columns as the calls name their inputs."
    )
