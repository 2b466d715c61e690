"""JSON responses encoded with orjson."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse


class JSONResponse(StarletteJSONResponse):
    """A JSON response (a JSONResponse for FastAPI too, so the OpenAPI types its body as JSON,
    not as a string)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            # orjson refuses lone surrogates (text a client sent as \ud800); json escapes them.
            return json.dumps(content, default=str, separators=(",", ":")).encode()
