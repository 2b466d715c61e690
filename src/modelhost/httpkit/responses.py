"""JSON responses encoded with orjson."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            # orjson refuses lone surrogates (text a client sent as \ud800); json escapes them.
            return json.dumps(content, default=str, separators=(",", ":")).encode()
