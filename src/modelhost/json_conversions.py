"""Python values that plain JSON cannot hold, converted to values it can.

Shared by both sides of a call: the worker converts a function's result with it, and the client
converts a call's arguments. It uses the standard library only and imports nothing of modelhost:
the worker (``runtime/worker.py``) loads this file by its path, in any environment's interpreter,
and the sandbox binds it read-only next to the worker.

>>> import datetime, decimal
>>> to_json_compatible(decimal.Decimal("1.5")), to_json_compatible(datetime.date(2024, 1, 2))
(1.5, '2024-01-02')
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from pathlib import PurePath
from typing import Any


def to_json_compatible(value: Any) -> Any:
    """Convert what plain JSON cannot hold (NumPy, pandas, Decimal, dates, sets, dataclasses)."""
    kind = type(value)
    module = kind.__module__ or ""
    if module.startswith("pandas"):
        if kind.__name__ == "DataFrame":
            return value.to_dict(orient="records")
        # A Timedelta is a timedelta, but written as ISO 8601 ("P0DT1H30M0S") rather than
        # seconds; a Timestamp is a datetime, and takes the datetime row below.
        if kind.__name__ == "Timedelta":
            return value.isoformat()
        if kind.__name__ == "Period":  # no isoformat(); its text is ISO 8601 ("2026-12")
            return str(value)
        if kind.__name__ == "NaTType":
            return None
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
    if hasattr(value, "tolist"):  # NumPy, pandas Series and other array libraries
        return value.tolist()
    raise TypeError(f"values of type '{kind.__name__}' cannot be converted to JSON")
