"""The capture queue on the call path (bounded: a full queue drops and counts, never waits) and
its writer (Parquet part files per model, version and hour, readable only by the server)."""

from __future__ import annotations

import datetime as dt
import stat
import time
from pathlib import Path

import pyarrow.parquet as pq

from modelhost.gateway.capture import CaptureQueue, CaptureWriter, prune
from modelhost.gateway.routes import Release

RELEASE = Release("model1", "version1", 3, b"{}")


def _fill(queue: CaptureQueue, count: int, share: float = 1.0) -> None:
    for index in range(count):
        queue.add(share, RELEASE, f"R{index}", b'{"data": {"x": %d}}' % index, b"%d" % index)


def test_a_full_queue_drops_and_counts_what_does_not_fit() -> None:
    queue = CaptureQueue(max_records=5)
    _fill(queue, 8)
    assert len(queue) == 5
    assert queue.dropped == {"model1": 3}
    assert [record[4] for record in queue.drain()] == ["R0", "R1", "R2", "R3", "R4"]
    _fill(queue, 2)  # room again once the writer took them
    assert len(queue) == 2
    assert queue.dropped == {"model1": 3}


def test_a_call_larger_than_a_record_may_be_is_dropped_and_counted() -> None:
    queue = CaptureQueue(max_records=5, max_record_bytes=30)
    queue.add(1.0, RELEASE, "small", b'{"data": {}}', b"1")
    queue.add(1.0, RELEASE, "large", b'{"data": {"x": "' + b"a" * 40 + b'"}}', b"1")
    assert [record[4] for record in queue.drain()] == ["small"]
    assert queue.dropped == {"model1": 1}


def test_a_gateway_process_reports_each_drop_once() -> None:
    child, main = CaptureQueue(max_records=1), CaptureQueue()
    _fill(child, 3)
    main.merge_dropped(child.take_dropped())
    assert child.take_dropped() == {}
    _fill(child, 1)
    main.merge_dropped(child.take_dropped())
    assert main.dropped == {"model1": 3}


def test_a_share_captures_about_that_share_of_calls() -> None:
    queue = CaptureQueue(max_records=100_000)
    _fill(queue, 10_000, share=0.1)
    # binomial(10000, 0.1): mean 1000, standard deviation 30; these bounds are 10 of them
    assert 700 < len(queue) < 1300
    assert queue.dropped == {}  # not captured is not dropped


def test_the_writer_writes_part_files_by_model_version_and_hour_for_the_server_only(
    tmp_path: Path,
) -> None:
    queue = CaptureQueue()
    root = tmp_path / "captures"
    writer = CaptureWriter(queue, root)
    _fill(queue, 3)
    assert writer.flush() == 3
    [part] = list(root.glob("model=model1/version=3/hour=*/part-*.parquet"))
    written = dt.datetime.strptime(part.parent.name, "hour=%Y-%m-%dT%H")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert dt.timedelta(0) <= now - written < dt.timedelta(hours=1, minutes=1)
    table = pq.read_table(part)
    assert table.column_names == ["time", "request_id", "version", "version_id", "input", "output"]
    assert table["request_id"].to_pylist() == ["R0", "R1", "R2"]
    assert table["input"].to_pylist()[1] == '{"data": {"x": 1}}'
    assert table["output"].to_pylist() == ["0", "1", "2"]
    assert table["version"].to_pylist() == [3, 3, 3]
    assert stat.S_IMODE(part.stat().st_mode) == 0o600
    for folder in (root, part.parent, part.parent.parent, part.parent.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert writer.flush() == 0  # nothing queued: no empty file
    assert len(list(root.rglob("*.parquet"))) == 1


def test_the_writers_thread_writes_what_is_queued_and_the_rest_when_stopped(
    tmp_path: Path,
) -> None:
    queue = CaptureQueue()
    writer = CaptureWriter(queue, tmp_path / "captures", interval=0.05)
    writer.start()
    _fill(queue, 2)
    deadline = time.monotonic() + 10
    while not list((tmp_path / "captures").rglob("part-*.parquet")):
        assert time.monotonic() < deadline, "nothing was written"
        time.sleep(0.02)
    _fill(queue, 1)
    writer.stop()
    rows = sum(pq.read_table(p).num_rows for p in (tmp_path / "captures").rglob("part-*.parquet"))
    assert rows == 3


def test_retention_deletes_partitions_that_ended_before_it_and_empty_folders(
    tmp_path: Path,
) -> None:
    root = tmp_path / "captures"
    now = dt.datetime(2026, 12, 6, 12, 30, tzinfo=dt.timezone.utc)  # 30 days: 11-06 12:30
    old = root / "model=a" / "version=1" / "hour=2026-11-05T09"
    gone = root / "model=b" / "version=2" / "hour=2026-11-06T11"  # ended 11-06 12:00
    edge = root / "model=b" / "version=2" / "hour=2026-11-06T12"  # ends 11-06 13:00: kept
    recent = root / "model=b" / "version=3" / "hour=2026-12-06T12"
    for folder in (old, gone, edge, recent):
        folder.mkdir(parents=True)
        (folder / "part-1-1-1.parquet").write_bytes(b"")
    removed = prune(root, 30, now=now.timestamp())
    assert sorted(removed) == sorted([old, gone])
    assert not (root / "model=a").exists()
    assert edge.exists()
    assert recent.exists()
