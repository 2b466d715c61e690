"""The model's API docs page, rendered on the server from its OpenAPI document (no script, no
CDN): the request forms as tables of parameters, the example, the result, the errors, and the
document itself to download."""

from __future__ import annotations

import json
from typing import Any

from modelhost.operations import model_docs


def type_text(schema: Any, depth: int = 0) -> str:
    """A short reading of a JSON Schema: ``number``, ``array of integer``, ``Wine``,
    ``string or null``, ``any JSON``."""
    if not isinstance(schema, dict) or depth > 4:
        return "any JSON"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(type_text(s, depth + 1) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(type_text(s, depth + 1) for s in schema["prefixItems"]) + "]"
        return "array of " + type_text(schema["items"], depth + 1) if "items" in schema else "array"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "object of " + type_text(schema["additionalProperties"], depth + 1)
    if isinstance(kind, str):
        return kind + (f" ({schema['format']})" if "format" in schema else "")
    return "any JSON"


def _rows(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(arguments.get("required") or [])
    return [
        {
            "name": name,
            "type": type_text(schema),
            "required": name in required,
            "default": json.dumps(schema["default"]) if "default" in schema else None,
        }
        for name, schema in (arguments.get("properties") or {}).items()
    ]


def page_context(document: dict[str, Any]) -> dict[str, Any]:
    """What the docs template shows, read from ``document``."""
    schemas = document["components"]["schemas"]
    path, item = next(iter(document["paths"].items()))
    operation = item["post"]
    data = schemas[model_docs.REQUEST_DATA]["properties"]["data"]
    extra = data.get("additionalProperties")
    positional = schemas[model_docs.REQUEST_PARAMETERS]["properties"]["parameters"]
    content = operation["requestBody"]["content"]["application/json"]
    example = (content.get("examples") or {}).get("example", {}).get("value")
    result = schemas[model_docs.RESPONSE]["properties"]["result"]
    own = {
        model_docs.REQUEST_DATA,
        model_docs.REQUEST_PARAMETERS,
        model_docs.RESPONSE,
        model_docs.RELEASE,
        model_docs.ERROR,
    }
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return {
        # a batching function's limits: the forms below are then one call's input
        "batch": operation.get(model_docs.BATCH),
        "data_description": data.get("description"),
        "parameters_description": positional.get("description"),
        "result_description": result.get("description"),
        "url": document["servers"][0]["url"].rstrip("/") + path,
        "summary": operation["summary"],
        "description": operation["description"],
        "token_required": bool(operation.get("security")),
        "keyword_rows": _rows(data),
        "keyword_extra": None if extra is False else type_text(extra),
        "positional": [type_text(s) for s in positional.get("prefixItems") or []],
        "positional_extra": type_text(positional["items"]) if "items" in positional else None,
        "example": example,
        "result_type": type_text({k: v for k, v in result.items() if k != "description"}),
        "result_schema": {k: v for k, v in result.items() if k != "description"},
        "errors": [
            {"status": status, "description": answer["description"]}
            for status, answer in operation["responses"].items()
            if status != "200"
        ],
        "named": {name: schema for name, schema in schemas.items() if name not in own},
        "json": text,
    }
