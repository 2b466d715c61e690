"""JSON both ways for the client: a call's arguments out, the server's answers in.

Arguments get the conversions the worker applies to results (``runtime/worker.py``,
``to_json_compatible``), so NumPy and pandas values, ``Decimal``, dates and sets can be passed
as they are. NaN and Infinity are refused: JSON cannot hold them, and sending ``null`` instead
would change the data without saying so. Answers are read with the standard library, which keeps
integers of any size exact (orjson turns integers over 64 bits into floats).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from pathlib import PurePath
from typing import Any

from modelhost import errors


def _convert(value: Any) -> Any:
    kind = type(value)
    module = kind.__module__ or ""
    if module.startswith("pandas"):
        if kind.__name__ == "DataFrame":
            return value.to_dict(orient="records")
        if kind.__name__ in {"Timestamp", "Timedelta", "Period"}:
            return value.isoformat()
        if kind.__name__ == "NaTType":
            return None
    if hasattr(value, "tolist") and module.startswith(("numpy", "pandas")):
        return value.tolist()
    if isinstance(value, decimal.Decimal):
        exponent = value.as_tuple().exponent
        if value.is_finite() and isinstance(exponent, int) and exponent >= 0:
            return int(value)
        return float(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (uuid.UUID, PurePath)):
        return str(value)
    raise TypeError(f"values of type '{kind.__name__}' cannot be sent as JSON")


def encode_arguments(body: dict[str, Any]) -> bytes:
    """The request body of a call; BadRequest, not a TypeError, for what JSON cannot hold."""
    try:
        text = json.dumps(body, default=_convert, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise errors.BadRequest(
                "The arguments contain NaN or Infinity, which JSON cannot represent; pass None "
                "for a missing value."
            ) from None
        raise errors.BadRequest(f"The arguments cannot be sent as JSON: {exc}.") from None
    except (TypeError, RecursionError) as exc:
        raise errors.BadRequest(
            f"The arguments cannot be sent as JSON: {exc}; pass numbers, strings, lists and "
            "dicts (NumPy and pandas values, Decimal, dates and sets are converted)."
        ) from None
    return text.encode("utf-8")


def decode_answer(content: bytes) -> Any:
    """The JSON body of a response; ValueError if it is not JSON (or nested past Python's
    recursion limit)."""
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("the answer is nested too deeply to read") from None
