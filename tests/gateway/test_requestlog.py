"""The request log's pieces: rows from what the call path kept, lines, rotation, reading."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from modelhost.gateway.requestlog import (
    LINES_AT_ONCE,
    RequestLog,
    RequestLogWriter,
    line,
    read,
    route_of,
)
from modelhost.gateway.routes import ModelRoute, Release, RouteTable


def _table() -> RouteTable:
    route = ModelRoute(model_id="m1", name="calc", timeout=60.0)
    return RouteTable(by_key={"m1": route, "calc": route})


def test_the_route_is_the_part_of_the_path_between_the_model_and_model() -> None:
    assert route_of("/models/calc/latest/model") == "latest"
    assert route_of("/models/calc/labels/prod/model") == "labels/prod"
    assert route_of("/models/m1/versions/3/model") == "versions/3"
    assert route_of("/models/calc") == ""


def _entries(lines: list[bytes]) -> dict[str, dict[str, object]]:
    """Lines by request id, each as the JSON object it holds (one line each)."""
    assert all(entry.endswith(b"\n") and entry.count(b"\n") == 1 for entry in lines)
    return {entry["request_id"]: entry for entry in map(orjson.loads, lines)}  # type: ignore[misc]


def test_a_call_becomes_a_line_in_its_model_s_log_and_a_call_to_no_model_none() -> None:
    log = RequestLog()
    table = _table()
    release = Release("m1", "v1", 2, b"{}")
    scope = {"path": "/models/calc/latest/model", "client": ("10.0.0.7", 5555)}
    log.add(time.perf_counter(), "AAAA", scope, 200, release, table)
    log.add(
        0.0, "BBBB", {"path": "/models/calc/versions/9/model", "client": None}, 404, None, table
    )
    log.add(0.0, "CCCC", {"path": "/models/nothing/latest/model"}, 404, None, table)
    taken = log.take()
    assert set(taken) == {"m1"}
    entries = _entries(taken["m1"])
    assert set(entries) == {"AAAA", "BBBB"}
    first = entries["AAAA"]
    assert (first["model"], first["version"], first["route"], first["status"]) == (
        "calc",
        2,
        "latest",
        200,
    )
    assert first["source"] == "10.0.0.7"
    assert 0 <= first["duration_ms"] < 60_000  # type: ignore[operator]
    assert (entries["BBBB"]["version"], entries["BBBB"]["route"]) == (None, "versions/9")
    assert entries["BBBB"]["source"] is None
    assert log.take() == {}  # taken once


def test_the_lines_of_more_calls_than_are_made_at_once_come_out_once_each_in_order() -> None:
    log = RequestLog()
    table = _table()
    release = Release("m1", "v1", 2, b"{}")
    scope = {"path": "/models/calc/latest/model", "client": ("10.0.0.7", 5555)}
    ids = [f"{n:016d}" for n in range(LINES_AT_ONCE * 2 + 5)]
    taken: list[bytes] = []
    for n, request_id in enumerate(ids):
        log.add(time.perf_counter(), request_id, scope, 200, release, table)
        if n == LINES_AT_ONCE + 1:  # taken between two runs of lines made together
            taken += log.take()["m1"]
    taken += log.take()["m1"]
    assert [orjson.loads(entry)["request_id"] for entry in taken] == ids
    assert log.take() == {}


def test_a_model_name_with_a_percent_sign_quotes_and_accents_is_logged_as_it_is() -> None:
    name = 'Prix "100%" d\u00e9j\u00e0 %s %d'
    route = ModelRoute(model_id="m1", name=name, timeout=60.0)
    table = RouteTable(by_key={"m1": route, name: route})
    log = RequestLog()
    path = "/models/m1/labels/50%25/model"
    log.add(time.perf_counter(), "AAAA", {"path": path, "client": ("::1", 1)}, 200, None, table)
    entry = orjson.loads(log.take()["m1"][0])
    assert (entry["model"], entry["version"], entry["route"]) == (name, None, "labels/50%25")
    assert (entry["request_id"], entry["status"], entry["source"]) == ("AAAA", 200, "::1")


def test_a_line_made_later_keeps_the_time_and_duration_of_its_call() -> None:
    log = RequestLog()
    started = time.perf_counter() - 0.25  # the call took a quarter of a second
    before = time.time()
    log.add(started, "AAAA", {"path": "/models/calc/latest/model"}, 200, None, _table())
    after = time.time()
    time.sleep(0.1)  # the line is made after this, when the lines are taken
    entry = orjson.loads(log.take()["m1"][0])
    assert 250 <= entry["duration_ms"] < 300
    stamp = dt.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    wall = stamp.replace(tzinfo=dt.timezone.utc).timestamp()
    assert before - 0.001 <= wall <= after + 0.001  # the call's time, not the take's


def test_a_renamed_model_s_next_lines_carry_its_new_name() -> None:
    log = RequestLog()
    scope = {"path": "/models/m1/latest/model", "client": None}
    log.add(0.0, "OLD1", scope, 200, None, _table())
    renamed = ModelRoute(model_id="m1", name="calculator", timeout=60.0)
    log.add(0.0, "NEW1", scope, 200, None, RouteTable(by_key={"m1": renamed}))
    entries = _entries(log.take()["m1"])
    assert entries["OLD1"]["model"] == "calc"
    assert entries["NEW1"]["model"] == "calculator"


def test_lines_a_gateway_process_sends_arrive_whole_and_once() -> None:
    child, main = RequestLog(), RequestLog()
    table = _table()
    for number in range(50):
        path = f'/models/calc/labels/a"b{number}/model'  # a quote: escaped in JSON, twice
        child.add(0.0, f"R{number:03d}", {"path": path, "client": None}, 200, None, table)
    main.add(0.0, "MAIN", {"path": "/models/calc/latest/model", "client": None}, 200, None, table)
    sent = orjson.loads(orjson.dumps(child.export()))  # as the control message carries it
    assert child.take() == {}
    main.add_lines(sent)
    entries = _entries(main.take()["m1"])
    assert len(entries) == 51
    assert entries["R007"]["route"] == 'labels/a"b7'


def test_files_rotate_before_they_pass_the_limit_and_reading_spans_them(tmp_path: Path) -> None:
    writer = RequestLogWriter(lambda model_id: tmp_path / model_id, max_bytes=600, backups=2)
    rows = [
        [1_800_000_000.0 + i, f"ID{i:04d}", "m1", "calc", 1, "latest", 200, 1.5, "127.0.0.1"]
        for i in range(40)
    ]
    for start in range(0, 40, 7):  # batches, as the writer gets them each second
        writer.write({"m1": [line(row) for row in rows[start : start + 7]]})
    names = sorted(path.name for path in (tmp_path / "m1").iterdir())
    assert names == ["requests.log", "requests.log.1", "requests.log.2"]
    for path in (tmp_path / "m1").iterdir():
        assert path.stat().st_size <= 600
    newest = read(tmp_path / "m1", tail=5)
    assert [line["request_id"] for line in newest] == [f"ID{i:04d}" for i in range(35, 40)]
    kept = read(tmp_path / "m1", tail=1000)
    assert kept[-1]["request_id"] == "ID0039"
    assert len(kept) < 40  # the oldest went with the third rotation
    first = orjson.loads((tmp_path / "m1" / "requests.log").read_bytes().splitlines()[0])
    assert set(first) == {
        "time",
        "request_id",
        "model",
        "version",
        "route",
        "status",
        "duration_ms",
        "source",
    }
    assert first["time"].endswith("Z")


def test_a_line_gives_its_time_in_utc_to_the_millisecond() -> None:
    import datetime as dt

    def time_of(wall: float) -> str:
        return orjson.loads(line([wall, "R", "m1", "calc", 1, "latest", 200, 1.0, None]))["time"]

    moment = dt.datetime(2026, 12, 6, 17, 2, 17, 321000, tzinfo=dt.timezone.utc).timestamp()
    assert time_of(moment) == "2026-12-06T17:02:17.321Z"
    assert time_of(moment + 0.5) == "2026-12-06T17:02:17.821Z"  # the same second again
    assert time_of(moment + 1) == "2026-12-06T17:02:18.321Z"  # the next one
    assert time_of(moment - 17.321) == "2026-12-06T17:02:00.000Z"


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_a_lines_time_is_what_datetime_makes_of_the_same_moment(wall: float) -> None:
    import datetime as dt

    moment = dt.datetime.fromtimestamp(wall, dt.timezone.utc)
    expected = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    row = [wall, "R", "m1", "calc", 1, "latest", 200, 1.0, None]
    assert orjson.loads(line(row))["time"] == expected
