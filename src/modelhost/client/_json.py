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


def decode_answer(content: bytes) -> Any:
    """The JSON body of a response; ValueError if it is not JSON (or nested past Python's
    recursion limit)."""
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("the answer is nested too deeply to read") from None
