"""Exports and drift reports read the part files in the layout docs/privacy.md describes
(``captures/model=<id>/version=<n>/hour=<YYYY-MM-DDTHH>/part-*.parquet``); here they are
written directly, with the times a test needs, and read through the operations."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelhost import errors
from modelhost.operations import captures
from tests.operations.conftest import World

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)


def _version(world: World) -> int:
    return world.add_version()


def _write(world: World, number: int, rows: list[tuple[dt.datetime, object]]) -> None:
    """Calls at the given times with the given request bodies, one part file per hour."""
    by_hour: dict[str, list[tuple[dt.datetime, object]]] = {}
    for moment, body in rows:
        by_hour.setdefault(moment.strftime("%Y-%m-%dT%H"), []).append((moment, body))
    base = world.services.settings.home_path / "captures" / f"model={world.model.id}"
    for hour, calls in by_hour.items():
        folder = base / f"version={number}" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "time": pa.array([m for m, _ in calls], pa.timestamp("ms", tz="UTC")),
                "request_id": [f"R{i}" for i in range(len(calls))],
                "version": pa.array([number] * len(calls), pa.int32()),
                "version_id": ["v"] * len(calls),
                "input": [json.dumps(b) for _, b in calls],
                "output": ["0"] * len(calls),
            }
        )
        pq.write_table(table, folder / f"part-{len(list(folder.iterdir()))}-1-1.parquet")


def test_the_first_day_of_capture_is_the_reference_for_what_came_after(world: World) -> None:
    number = _version(world)
    early = [(T0 + dt.timedelta(minutes=i), {"data": {"x": i % 10}}) for i in range(200)]
    later = [
        (T0 + dt.timedelta(days=1, minutes=i), {"parameters": [{"x": i % 10 + 20}]})
        for i in range(100)
    ]
    _write(world, number, [*early, *later, (T0 + dt.timedelta(days=2), {"parameters": [1]})])
    report = captures.drift_report(
        world.services, world.editor, "wine", version=None, reference=None
    )
    assert report["version"] == number
    assert report["reference"] == (
        "the first day of capture (2026-12-01T09:00:00Z to 2026-12-02T09:00:00Z)"
    )
    assert report["reference_rows"] == 200
    assert report["captured_rows"] == 101
    assert report["ignored_rows"] == 1  # positional parameters name no feature
    [feature] = report["features"]
    # every later value is above the reference's top: all in the last bin
    assert [b["captured"] for b in feature["bins"]][-1] == 100
    assert feature["drifted"]


def test_an_export_holds_the_calls_since_the_time_asked_for(world: World) -> None:
    number = _version(world)
    calls = [(T0 + dt.timedelta(minutes=25 * i), {"data": {"x": i}}) for i in range(6)]
    _write(world, number, calls)
    found = captures.export(
        world.services, world.editor, "wine", since="2026-12-01T10:00", output="parquet"
    )
    table = pq.read_table(io.BytesIO(b"".join(found.chunks)))
    # 09:00, 09:25, 09:50 are before; 10:15, 10:40, 11:05 after
    assert [json.loads(i)["data"]["x"] for i in table["input"].to_pylist()] == [3, 4, 5]
    assert found.filename == "wine-captures-since-20261201T1000.parquet"
    [event] = world.events("capture-export")
    assert event["actor"] == "eddie"


def test_a_viewer_may_not_export_or_report(world: World) -> None:
    _write(world, _version(world), [(T0, {"data": {"x": 1}})])
    with pytest.raises(errors.Forbidden):
        captures.export(world.services, world.viewer, "wine", since="1d")
    with pytest.raises(errors.Forbidden):
        captures.drift_report(world.services, world.viewer, "wine", version=1, reference=None)
    [event] = world.events("capture-export")
    assert event["outcome"] == "denied"


@pytest.mark.parametrize("text", ["yesterday", "99999999999999999999d", "2026-13-01", ""])
def test_a_since_that_is_not_a_time_says_what_to_give(text: str) -> None:
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)
    with pytest.raises(errors.BadRequest, match="give a date or time such as 2026-12-01"):
        captures.parse_since(text, now)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01", dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)),
        ("2026-12-01T09:30Z", dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone.utc)),
        ("2026-12-01T10:30+01:00", dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone.utc)),
        ("90m", dt.datetime(2026, 12, 6, 10, 30, tzinfo=dt.timezone.utc)),
        ("24h", dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)),
        ("7d", dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)),
    ],
)
def test_since_is_a_date_a_time_or_a_time_back_from_now(text: str, expected: dt.datetime) -> None:
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)
    assert captures.parse_since(text, now) == expected


def test_turning_capture_on_and_off_is_audited_with_the_share(world: World) -> None:
    from modelhost.operations import model_actions as actions

    change = actions.SettingsChange("wine", capture=True, capture_share=0.25)
    view = actions.change_settings(world.services, world.editor, change)
    assert (view["capture"], view["capture_share"]) == (True, 0.25)
    [on] = world.events("capture-on")
    assert (on["actor"], on["detail"]) == ("eddie", {"share": 0.25})
    share = actions.SettingsChange("wine", capture_share=0.5)
    actions.change_settings(world.services, world.editor, share)
    assert len(world.events("capture-on")) == 1  # the share changed, not capture
    off = actions.SettingsChange("wine", capture=False)
    actions.change_settings(world.services, world.owner, off)
    [event] = world.events("capture-off")
    assert event["actor"] == "olivia"
    bad = actions.SettingsChange("wine", capture_share=float("nan"))
    with pytest.raises(errors.BadRequest, match="capture_share must be more than 0"):
        actions.change_settings(world.services, world.owner, bad)
