"""JSON both ways for the client: a call's arguments out, the server's answers in.

Arguments get the conversions the worker applies to results (the same function,
:func:`modelhost.json_conversions.to_json_compatible`), so NumPy and pandas values,
``Decimal``, dates and sets can be passed as they are. NaN and Infinity are refused: JSON
cannot hold them, and sending ``null`` instead would change the data without saying so.
Answers are read with the standard library, which keeps integers of any size exact (orjson
turns integers over 64 bits into floats).
"""

from __future__ import annotations

import json
import math
from typing import Any

from modelhost import errors
from modelhost.json_conversions import to_json_compatible


def encode_arguments(body: dict[str, Any]) -> bytes:
    """The request body of a call; BadRequest, not a TypeError, for what JSON cannot hold."""
    try:
        text = json.dumps(body, default=to_json_compatible, allow_nan=False, separators=(",", ":"))
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


def encode_body(body: Any) -> bytes:
    """A management request's JSON body; BadRequest, not a ValueError, for NaN, Infinity and
    what JSON cannot hold, naming the field."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError:
        fields = [
            key
            for key, value in (body.items() if isinstance(body, dict) else [])
            if isinstance(value, float) and not math.isfinite(value)
        ]
        where = f" ({', '.join(map(str, fields))})" if fields else ""
        raise errors.BadRequest(
            f"The request contains NaN or Infinity{where}, which JSON cannot represent; give "
            "a finite number."
        ) from None
    except (TypeError, RecursionError) as exc:
        raise errors.BadRequest(
            f"The request cannot be sent as JSON: {exc}; give numbers, strings, booleans, "
            "lists and dicts."
        ) from None


def decode_answer(content: bytes) -> Any:
    """The JSON body of a response; ValueError if it is not JSON (or nested past Python's
    recursion limit)."""
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("the answer is nested too deeply to read") from None
