"""The server-drawn SVG charts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from modelhost.ui.charts import PALETTE, legend, line_chart, nice_ceiling


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (0.3, 0.5), (1, 1), (7, 10), (12, 20), (150, 200), (4999, 5000)]
)
def test_the_axis_ends_at_a_round_number_above_the_largest_value(
    value: float, ceiling: float
) -> None:
    assert nice_ceiling(value) == pytest.approx(ceiling)


def test_a_chart_is_valid_svg_with_one_line_per_version_and_gaps_for_missing_minutes() -> None:
    svg = str(line_chart("p50 latency", " ms", [("v1", [1, 2, None, 4, 5]), ("v2", [3, None])]))
    root = ET.fromstring(svg)
    namespace = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{namespace}polyline")
    assert [line.get("stroke") for line in lines] == [PALETTE[0], PALETTE[0]]
    assert len(root.findall(f"{namespace}circle")) == 1  # v2's lone point
    assert "5 ms" in svg
    assert re.search(r">now<", svg)


def test_labels_and_titles_are_escaped() -> None:
    svg = str(line_chart("<script>", "", [("<b>", [1.0])]))
    assert "<script>" not in svg
    assert "&lt;b&gt;" in svg


def test_an_empty_chart_still_draws_its_axes() -> None:
    svg = str(line_chart("Requests per minute", "", []))
    assert svg.startswith("<svg")
    assert "polyline" not in svg
    assert legend(["version 1", "version 2"]) == [
        ("version 1", PALETTE[0]),
        ("version 2", PALETTE[1]),
    ]
