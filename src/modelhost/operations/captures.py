"""Prediction capture as users see it: exporting a model's captured calls, and drift reports
that compare a version's captured inputs with a reference data set.

The files are written by :mod:`modelhost.gateway.capture`; this module only reads them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modelhost import errors
from modelhost.db.repo import Model, User
from modelhost.events import CAPTURE_EXPORT
from modelhost.gateway import capture
from modelhost.operations import Services, iso
from modelhost.operations import drift as maths
from modelhost.operations.access_control import authorize, authorize_action
from modelhost.operations.audit import audited
from modelhost.operations.models import get_version

FORMATS = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
#: the reference "the first day of capture": its first 24 hours, against what came after
FIRST_DAY = "first-day"
_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``--since``: an ISO 8601 date or time (UTC unless it says otherwise), or a time back
    from ``now`` such as ``90m``, ``24h`` or ``7d``."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    try:
        if relative:
            back = dt.timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
            return now - back
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise errors.BadRequest(
            f"since '{text}' is not a time; give a date or time such as 2026-12-01 or "
            "2026-12-01T09:30Z, or a time back from now such as 90m, 24h or 7d."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _root(services: Services) -> Path:
    return services.settings.home_path / capture.DIRECTORY


def _files(
    services: Services, model: Model, version: int | None, since: dt.datetime | None
) -> list[Path]:
    """The model's part files (of ``version``), of the hours from ``since`` on, oldest first."""
    base = capture.partition_root(services.settings.home_path, model.id)
    pattern = f"version={version if version is not None else '*'}/hour=*/part-*.parquet"
    first = since.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H") if since else ""
    found = [path for path in base.glob(pattern) if path.parent.name[5:] >= first]
    return sorted(found, key=lambda path: (path.parent.name, path.name))


def _read(path: Path, since: dt.datetime | None) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if since is not None:
        edge = pa.scalar(since.astimezone(dt.timezone.utc), pa.timestamp("ms", tz="UTC"))
        table = table.filter(pc.greater_equal(table["time"], edge))
    return table


class _Chunks:
    """A write-only file that keeps what is written until it is taken, for streaming."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


@dataclass(frozen=True)
class Export:
    filename: str
    media_type: str
    chunks: Iterator[bytes]


def export(
    services: Services,
    actor: User,
    key: str,
    *,
    since: str,
    version: int | None = None,
    output: str = "parquet",
) -> Export:
    """The model's captured calls from ``since`` on (of one ``version``), as a Parquet or CSV
    file written as it is read. Each export is an audit event."""
    model = authorize_action(services, actor, key, CAPTURE_EXPORT)
    if output not in FORMATS:
        raise errors.BadRequest(f"Unknown format '{output}'; use parquet or csv.")
    start = parse_since(since, services.clock())
    if version is not None:
        get_version(services, model, version)
    files = _files(services, model, version, start)
    if not files and not model.capture:
        raise errors.Conflict(
            f"Nothing was captured of '{model.name}' since {iso(start)}, and capture is off; "
            f"turn it on with 'modelhost models update {model.name} --capture'."
        )
    detail = {"since": iso(start), "format": output}
    with audited(services, actor, CAPTURE_EXPORT, model=model, version=version, detail=detail):
        pass
    stamp = start.strftime("%Y%m%dT%H%M")
    name = f"{model.name}-captures-since-{stamp}.{output}"
    return Export(name, FORMATS[output], _stream(files, start, output))


def _stream(files: list[Path], since: dt.datetime, output: str) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    sink = _Chunks()
    schema = pa.schema(
        [
            ("time", pa.timestamp("ms", tz="UTC")),
            ("request_id", pa.string()),
            ("version", pa.int32()),
            ("version_id", pa.string()),
            ("input", pa.string()),
            ("output", pa.string()),
        ]
    )
    writer: Any = (
        pq.ParquetWriter(sink, schema) if output == "parquet" else pcsv.CSVWriter(sink, schema)
    )
    for path in files:
        try:
            table = _read(path, since)
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        if table.num_rows:
            writer.write_table(table.select(list(capture.COLUMNS)).cast(schema))
            yield sink.take()
    writer.close()
    yield sink.take()


# ---------------------------------------------------------------------- drift


def features_of(body: str) -> dict[str, float] | None:
    """The named numbers of a captured input: a ``data`` object's, or those of a
    ``parameters`` array holding exactly one object. Values that are not numbers (strings,
    booleans, nulls, arrays, objects, non-finite numbers) are left out; any other body has no
    features (None)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    source = parsed.get("data")
    if source is None:
        parameters = parsed.get("parameters")
        if isinstance(parameters, list) and len(parameters) == 1:
            source = parameters[0]
    if not isinstance(source, dict):
        return None
    return {
        name: float(value)
        for name, value in source.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def _columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
    return columns


def no_common_feature(expected: Iterable[str], actual: Iterable[str]) -> errors.BadRequest:
    """Why no feature can be compared: the names differ, or the calls sent no named inputs."""
    captured = sorted(actual)
    why = (
        "name the reference's columns as the calls name their inputs."
        if captured
        else "drift compares named inputs, and the calls captured sent none: callers send "
        'them by name as {"data": {"alcohol": 9.9, ...}}, not as positional "parameters".'
    )
    return errors.BadRequest(
        f"No feature is in both the reference ({', '.join(sorted(expected)) or 'none'}) "
        f"and the captured inputs ({', '.join(captured) or 'none'}); {why}"
    )


def _delimiter(data: bytes) -> str:
    """The CSV's separator, from its header row: ',' unless ';' or a tab is more common there
    (spreadsheets of countries that write 0,5 save with ';')."""
    header = data.split(b"\n", 1)[0]
    return max((",", ";", "\t"), key=lambda sep: (header.count(sep.encode()), sep == ","))


def read_reference(data: bytes) -> dict[str, list[float]]:
    """The numeric columns of a reference data set: a Parquet file, or a CSV file with a
    header row. Nulls and non-finite values are left out; other columns are ignored."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not data:
        raise errors.BadRequest(
            "The reference is empty; send a CSV file with a header row or a Parquet file, "
            f"or ask for reference={FIRST_DAY}."
        )
    try:
        if data[:4] == b"PAR1":
            table = pq.read_table(pa.BufferReader(data))
        else:
            table = pcsv.read_csv(
                pa.BufferReader(data),
                parse_options=pcsv.ParseOptions(delimiter=_delimiter(data)),
            )
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise errors.BadRequest(
            f"The reference could not be read as Parquet or as CSV with a header row: {exc}"
        ) from None
    columns: dict[str, list[float]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = [float(v) for v in column.to_pylist() if v is not None]
            values = [v for v in values if math.isfinite(v)]
            if values:
                columns[name] = values
    if not columns:
        raise errors.BadRequest(
            "The reference has no numeric column; drift is measured on numeric features, "
            "named as in the calls' inputs."
        )
    return columns


def newest_captured(services: Services, model: Model) -> int:
    """The newest version of ``model`` with captured calls."""
    base = capture.partition_root(services.settings.home_path, model.id)
    numbers = [
        int(path.name[8:])
        for path in base.glob("version=*")
        if path.name[8:].isdigit() and any(path.glob("hour=*/part-*.parquet"))
    ]
    if not numbers:
        state = "on" if model.capture else "off"
        raise errors.Conflict(
            f"Nothing of '{model.name}' was captured yet (capture is {state}); a drift report "
            f"needs captured calls. Turn capture on with 'modelhost models update {model.name} "
            "--capture' and call the model."
        )
    return max(numbers)


def _captured_inputs(
    services: Services, model: Model, number: int
) -> tuple[list[dt.datetime], list[str]]:
    times: list[dt.datetime] = []
    inputs: list[str] = []
    for path in _files(services, model, number, None):
        try:
            table = _read(path, None)
        except FileNotFoundError:
            continue
        times.extend(table["time"].to_pylist())
        inputs.extend(table["input"].to_pylist())
    return times, inputs


def drift_report(
    services: Services,
    actor: User,
    key: str,
    *,
    version: int | None,
    reference: bytes | None,
) -> dict[str, Any]:
    """Compare the captured inputs of ``version`` (default: the newest version captured) with
    ``reference`` (a CSV or Parquet file's bytes), or, with ``reference`` None, its first day
    of capture with what came after."""
    model = authorize(services, actor, key, "read-captures")
    if version is None:
        version = newest_captured(services, model)
    get_version(services, model, version)
    times, inputs = _captured_inputs(services, model, version)
    if not inputs:
        state = "on" if model.capture else f"off ('modelhost models update {model.name} --capture')"
        raise errors.Conflict(
            f"Nothing of version {version} of '{model.name}' was captured (capture is {state}); "
            "a drift report needs its captured calls."
        )
    if reference is None:
        first = min(times)
        cut = first + dt.timedelta(days=1)
        later = [i for t, i in zip(times, inputs, strict=True) if t >= cut]
        if not later:
            raise errors.Conflict(
                f"Version {version} of '{model.name}' was captured only within its first day "
                f"(from {iso(first)}), which is the reference; compare once later calls are "
                "captured, or give a reference file."
            )
        early = [i for t, i in zip(times, inputs, strict=True) if t < cut]
        expected = _columns([f for f in map(features_of, early) if f is not None])
        inputs = later
        described = f"the first day of capture ({iso(first)} to {iso(cut)})"
        reference_rows = len(early)
    else:
        expected = read_reference(reference)
        described = "the uploaded file"
        reference_rows = max(len(values) for values in expected.values())
    rows = [features_of(body) for body in inputs]
    actual = _columns([row for row in rows if row is not None])
    features = []
    for name in sorted(set(expected) & set(actual)):
        compared = maths.compare(name, expected[name], actual[name])
        features.append(_feature_view(compared))
    not_compared = {
        **{name: "only in the reference" for name in sorted(set(expected) - set(actual))},
        **{name: "only in the captured inputs" for name in sorted(set(actual) - set(expected))},
    }
    if not features:
        raise no_common_feature(expected, actual)
    return {
        "model": model.name,
        "version": version,
        "reference": described,
        "reference_rows": reference_rows,
        "captured_rows": len(inputs),
        "ignored_rows": sum(1 for row in rows if row is None),
        "threshold": maths.DRIFT_THRESHOLD,
        "features": features,
        "not_compared": not_compared,
    }


def _feature_view(found: maths.FeatureDrift) -> dict[str, Any]:
    expected = maths.shares(found.reference_counts)
    actual = maths.shares(found.captured_counts)
    edges: list[float | None] = [None, *found.cuts, None]
    return {
        "name": found.name,
        "psi": round(found.psi, 6),
        "drifted": found.drifted,
        "bins": [
            {
                "low": edges[i],
                "high": edges[i + 1],
                "reference": found.reference_counts[i],
                "captured": found.captured_counts[i],
                "reference_share": round(expected[i], 6),
                "captured_share": round(actual[i], 6),
            }
            for i in range(len(found.reference_counts))
        ],
    }
