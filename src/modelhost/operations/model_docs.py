"""A model's own OpenAPI document: how to call one of its routes, typed from the function.

``GET /models/{model}/openapi.json`` (and ``/labels/{label}/openapi.json``,
``/versions/{n}/openapi.json``) describes the one invocation URL of that route: the two request
forms of DESIGN §3 (a ``data`` object of keyword arguments, a ``parameters`` array of
positional ones), typed from the description of the function the version's first instance
made when it imported the script (``runtime/signatures.py``, stored with the version); the
success envelope with ``result`` typed from the return annotation; the error envelope and its
statuses; the version's example input; and the auth schemes when the model needs a token.
A batching version's document describes what one call sends and gets: one input (any ``data``
object or ``parameters`` array), which the function gets as one element of its list, and that
call's own result; the operation carries the version's limits as ``x-modelhost-batch``.

Who may read it: anyone who may view the model (an API key or a UI session of a viewer, or of
anyone signed in on a public model), and anyone who may call it, since the document says no
more than a call would: everyone for a model whose invocation is public (with or without a
key), a holder of one of the model's access tokens otherwise. Anyone else gets 401, whether or
not the model exists (or 404 for a key that may not see it).
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from modelhost import __version__, errors, urls
from modelhost.db.repo import Model, User, Version
from modelhost.operations import Services
from modelhost.operations.access_control import authorize, hash_token
from modelhost.planning import latest_target

OPENAPI_VERSION = "3.1.0"
#: component names of our own: a hyphen keeps them apart from any Python class name
REQUEST_DATA = "invocation-data"
REQUEST_PARAMETERS = "invocation-parameters"
RESPONSE = "invocation-response"
ERROR = "invocation-error"
RELEASE = "invocation-release"
BASIC, BEARER = "token-basic", "token-bearer"
#: the operation's extension with a batching version's limits, {"max_size", "max_wait_ms"}
BATCH = "x-modelhost-batch"

#: every status an invocation can answer with, and when (DESIGN §3)
ERROR_STATUSES: dict[str, str] = {
    "400": "The body is not JSON, has neither or both of 'data' and 'parameters', or the "
    "arguments do not bind to the function (the message names its parameters).",
    "401": "The access token is missing or wrong (token-required models).",
    "404": "No such model, label or version, or the model was unpublished.",
    "405": "A method other than POST.",
    "413": "The body is over the size limit.",
    "415": "The content type is not application/json.",
    "429": "The access token is over its rate (rate_limited) or used its quota "
    "(quota_exceeded), or too many calls from this address failed the token check "
    "(too_many_requests); see Retry-After.",
    "500": "The function raised: the message has the exception's type and message.",
    "502": "The instance died during the call.",
    "503": "No ready instance (no_ready_instance), the version's queue is full (queue_full), "
    "or the model is stopped (unavailable); see Retry-After.",
    "504": "The call passed the model's timeout.",
}
_RETRY_AFTER = ("429", "503")
_ROUTE = re.compile(r"^(latest|labels/([A-Za-z0-9][A-Za-z0-9._-]{0,63})|versions/([0-9]{1,10}))$")
_PARAMS = re.compile(r"^[^(]*\((.*)\)\s*$", re.S)
_DOCS_NEED = (
    "The OpenAPI document of model '{name}' is for those who may view or call it: send an API "
    "key (Authorization: Bearer mh_...) of a user who may view it, or one of the model's "
    "access tokens (curl -u TOKEN:TOKEN)."
)


# --------------------------------------------------------------------------- who may read it


def readable_model(services: Services, key: str, *, user: User | None, token: str | None) -> Model:
    """The model ``key`` names, if its document may be read with these credentials."""
    if user is not None:
        try:
            return authorize(services, user, key, "view")
        except (errors.ModelNotFound, errors.Forbidden):
            found = services.repo.find_model(key)
            if found is not None and found.invocation_mode == "public":
                return found  # anyone may call it, so anyone may read how
            raise
    model = services.repo.find_model(key)
    if model is not None and model.invocation_mode == "public":
        return model
    if model is not None and token and _valid_token(services, model, token):
        return model
    raise errors.Unauthenticated(_DOCS_NEED.format(name=key))


def _valid_token(services: Services, model: Model, token: str) -> bool:
    digest = hash_token(token)
    valid = False
    for stored in services.repo.list_tokens(model.id, active=True):
        valid |= hmac.compare_digest(digest, stored.token_hash)
    return valid


# --------------------------------------------------------------------------- which version


def resolve(services: Services, model: Model, route: str) -> Version:
    """The version ``route`` (``latest``, ``labels/NAME``, ``versions/N``) sends calls to: for
    a label with a canary, its main version."""
    match = _ROUTE.match(route)
    if match is None:
        raise errors.RouteNotFound(
            f"'{route}' is not a route of a model; use latest, labels/NAME or versions/N."
        )
    versions = {v.number: v for v in services.repo.list_versions(model.id)}
    if match.group(3):
        number = int(match.group(3))
        if number not in versions:
            raise errors.VersionNotFound(
                f"Model '{model.name}' has no version {number}. 'modelhost versions "
                f"{model.name}' lists them."
            )
        return versions[number]
    if match.group(2):
        label = next(
            (x for x in services.repo.list_labels(model.id) if x.name == match.group(2)), None
        )
        if label is None or label.version not in versions:
            raise errors.RouteNotFound(
                f"Model '{model.name}' has no label '{match.group(2)}'; set one with "
                f"'modelhost label {model.name} {match.group(2)} --version N'."
            )
        return versions[label.version]
    ready = sorted(n for n, v in versions.items() if v.status == "ready")
    target = latest_target(model, ready)
    if target is None:
        raise errors.RouteNotFound(
            f"Model '{model.name}' has no ready version yet, so its latest route has no "
            "document; publish one, or ask for /versions/N/openapi.json."
        )
    return versions[target]


def invocation_path(model: Model, route: str) -> str:
    if route.startswith("labels/"):
        return urls.invoke_label(model.name, route.removeprefix("labels/"))
    if route.startswith("versions/"):
        return urls.invoke_version(model.name, route.removeprefix("versions/"))
    return urls.invoke_latest(model.name)


# --------------------------------------------------------------------------- the document


def described(version: Version) -> dict[str, Any]:
    """The stored description of the version's function; for a version built before they
    were stored, the parameter names of its signature, each any JSON. A batching function's
    signature is that of its list of inputs: each call's input is any ``data`` object or
    ``parameters`` array, and its result any JSON."""
    if version.batch_max_size is not None:
        return {"parameters": _from_signature(None), "returns": {}, "$defs": {}}
    if version.signature_schema:
        try:
            found = json.loads(version.signature_schema)
        except ValueError:
            found = None
        if isinstance(found, dict) and isinstance(found.get("parameters"), list):
            return found
    return {"parameters": _from_signature(version.signature), "returns": {}, "$defs": {}}


def _from_signature(signature: str | None) -> list[dict[str, Any]]:
    match = _PARAMS.match(signature or "")
    if match is None:
        return [
            {"name": "args", "kind": "var_positional", "schema": {}},
            {"name": "kwargs", "kind": "var_keyword", "schema": {}},
        ]
    parameters: list[dict[str, Any]] = []
    kind = "positional_or_keyword"
    for part in _split(match.group(1)):
        name, _, default = part.partition("=")
        name = name.split(":")[0].strip()
        if name == "/":
            for earlier in parameters:
                earlier["kind"] = "positional_only"
        elif name == "*":
            kind = "keyword_only"
        elif name == "...":  # R
            parameters.append({"name": "...", "kind": "var_positional", "schema": {}})
            parameters.append({"name": "...", "kind": "var_keyword", "schema": {}})
        elif name.startswith("**"):
            parameters.append({"name": name[2:], "kind": "var_keyword", "schema": {}})
        elif name.startswith("*"):
            parameters.append({"name": name[1:], "kind": "var_positional", "schema": {}})
            kind = "keyword_only"
        elif name:
            parameters.append(
                {"name": name, "kind": kind, "required": not default.strip(), "schema": {}}
            )
    return parameters


def _split(text: str) -> list[str]:
    """Top-level comma-separated parts (defaults may hold commas inside brackets)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def document(services: Services, model: Model, version: Version, route: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``route`` of ``model``, typed from ``version``."""
    description = described(version)
    defs = {
        _component_name(name): schema for name, schema in (description.get("$defs") or {}).items()
    }
    parameters = [p for p in description["parameters"] if isinstance(p, dict)]
    batching = version.batch_max_size is not None
    if batching:
        request_data, request_parameters = _one_input_schemas(version)
        returns: dict[str, Any] = {}  # the function returns a list: a call gets one element
    else:
        request_data, request_parameters = _request_schemas(parameters)
        returns = description.get("returns") or {}
    schemas: dict[str, Any] = {
        **_rewrite_refs(defs),
        REQUEST_DATA: _rewrite_refs(request_data),
        REQUEST_PARAMETERS: _rewrite_refs(request_parameters),
        RESPONSE: _response_schema(_rewrite_refs(returns), _result_words(version)),
        RELEASE: _release_schema(),
        ERROR: _error_schema(),
    }
    token_required = model.invocation_mode != "public"
    operation: dict[str, Any] = {
        "operationId": "invoke",
        "summary": f"Call {version.function} ({_route_words(route)})",
        "description": _operation_description(model, version, route, token_required),
        "requestBody": {
            "required": True,
            "content": {"application/json": _request_content(version)},
        },
        "responses": {
            "200": {
                "description": "The function's result, with the call's id, timings and the "
                "version that answered.",
                "headers": {
                    "X-Request-Id": _header("The call's id, also in the body."),
                    "X-Model-Version": _header("The number of the version that answered."),
                },
                "content": {"application/json": {"schema": _ref(RESPONSE)}},
            },
            **{status: _error_response(status, why) for status, why in ERROR_STATUSES.items()},
        },
    }
    if batching:
        operation["responses"]["400"]["description"] = _NOT_ONE_INPUT
        operation[BATCH] = {
            "max_size": version.batch_max_size,
            "max_wait_ms": version.batch_max_wait_ms,
        }
    components: dict[str, Any] = {"schemas": schemas}
    if token_required:
        operation["security"] = [{BASIC: []}, {BEARER: []}]
        components["securitySchemes"] = {
            BASIC: {
                "type": "http",
                "scheme": "basic",
                "description": "An access token of the model as user name and password "
                "(curl -u TOKEN:TOKEN).",
            },
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "An access token of the model: 'Authorization: Bearer TOKEN'.",
            },
        }
    else:
        operation["security"] = []
    info: dict[str, Any] = {
        "title": f"{model.name} (modelhost model)",
        "version": str(version.number),
        "description": model.description
        or f"The model '{model.name}', served by modelhost {__version__}.",
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "servers": [{"url": services.settings.url}],
        "paths": {invocation_path(model, route): {"post": operation}},
        "components": components,
    }


def _route_words(route: str) -> str:
    if route.startswith("labels/"):
        return f"label {route.removeprefix('labels/')}"
    if route.startswith("versions/"):
        return f"version {route.removeprefix('versions/')}"
    return "latest"


def _operation_description(model: Model, version: Version, route: str, token_required: bool) -> str:
    lines = [
        f"Runs `{version.function}` of `{version.file}` (version {version.number}"
        f"{', which this route serves now' if not route.startswith('versions/') else ''}).",
        f"Signature: `{version.signature or version.function}`.",
        _batch_words(version)
        if version.batch_max_size is not None
        else 'Send keyword arguments as {"data": {...}} or positional ones as '
        '{"parameters": [...]}, not both.',
    ]
    if version.description:
        lines.append(version.description)
    lines.append(
        "Needs one of the model's access tokens." if token_required else "Anyone may call it."
    )
    return "\n\n".join(lines)


def _request_schemas(parameters: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``{"data": {...}}`` and ``{"parameters": [...]}`` forms the function accepts."""
    by_name = [p for p in parameters if p.get("kind") in ("positional_or_keyword", "keyword_only")]
    by_position = [
        p for p in parameters if p.get("kind") in ("positional_only", "positional_or_keyword")
    ]
    var_keyword = next((p for p in parameters if p.get("kind") == "var_keyword"), None)
    var_positional = next((p for p in parameters if p.get("kind") == "var_positional"), None)
    arguments: dict[str, Any] = {
        "type": "object",
        "description": "Keyword arguments of the function.",
        "properties": {p["name"]: _schema(p) for p in by_name},
        "additionalProperties": _schema(var_keyword) if var_keyword is not None else False,
    }
    required = [p["name"] for p in by_name if p.get("required")]
    if required:
        arguments["required"] = required
    data = {
        "type": "object",
        "title": "Keyword arguments",
        "required": ["data"],
        "properties": {"data": arguments},
    }
    items: dict[str, Any] = {
        "type": "array",
        "description": "Positional arguments of the function, in order: "
        + (", ".join(p["name"] for p in by_position) or "(none)")
        + (f", then any number of {var_positional['name']}" if var_positional else "")
        + ".",
        "minItems": sum(1 for p in by_position if p.get("required")),
    }
    if by_position:
        items["prefixItems"] = [_schema(p) for p in by_position]
    if var_positional is not None:
        items["items"] = _schema(var_positional)
    else:
        items["maxItems"] = len(by_position)
    positional = {
        "type": "object",
        "title": "Positional arguments",
        "required": ["parameters"],
        "properties": {"parameters": items},
    }
    return data, positional


#: a batching version's 400: the body is one input, whatever its shape
_NOT_ONE_INPUT = (
    "The body is not JSON, or is not one input: a 'data' object or a 'parameters' array, not both."
)


def _kinds(version: Version) -> tuple[str, str]:
    """What a batching function gets for a ``data`` object and a ``parameters`` array."""
    if version.environment_runtime == "r":
        return "an R named list", "an R list"
    return "a dict", "a list"


def _one_of(version: Version) -> str:
    return f"as one element of its list of inputs (at most {version.batch_max_size} a batch)"


def _batch_words(version: Version) -> str:
    """How to call a batching function (docs/api.md, "Batching functions")."""
    data_kind, list_kind = _kinds(version)
    function = version.function
    return (
        f"`{function}` is a batching function: each call sends one input, as "
        '{"data": {...}} or {"parameters": [...]}, not both. '
        f"`{function}` gets this call's data object ({data_kind}) or parameters array "
        f"({list_kind}) {_one_of(version)}, and the answer's result is this call's own result."
    )


def _one_input_schemas(version: Version) -> tuple[dict[str, Any], dict[str, Any]]:
    """A batching function's two request forms: one input each, of any shape."""
    data_kind, list_kind = _kinds(version)
    one_of = _one_of(version)
    data = {
        "type": "object",
        "title": "One input as a data object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "description": f"One call's input: `{version.function}` gets this object "
                f"({data_kind}) {one_of}.",
                "additionalProperties": {},
            }
        },
    }
    positional = {
        "type": "object",
        "title": "One input as a parameters array",
        "required": ["parameters"],
        "properties": {
            "parameters": {
                "type": "array",
                "description": f"One call's input: `{version.function}` gets this array "
                f"({list_kind}) {one_of}.",
                "items": {},
            }
        },
    }
    return data, positional


def _result_words(version: Version) -> str:
    if version.batch_max_size is None:
        return "What the function returned."
    return f"This call's own result: its element of the list `{version.function}` returned" + (
        " (or its row of the data frame, as an object)."
        if version.environment_runtime == "r"
        else "."
    )


def _schema(parameter: dict[str, Any]) -> dict[str, Any]:
    schema = parameter.get("schema")
    return schema if isinstance(schema, dict) else {}


def _request_content(version: Version) -> dict[str, Any]:
    content: dict[str, Any] = {
        "schema": {"oneOf": [_ref(REQUEST_DATA), _ref(REQUEST_PARAMETERS)]},
    }
    if version.example:
        try:
            example = json.loads(version.example)
        except ValueError:
            return content
        summary = f"The example input of version {version.number}"
        if version.batch_max_size is not None:
            summary = f"One call's input: the example input of version {version.number}"
        content["examples"] = {"example": {"summary": summary, "value": example}}
    return content


def _response_schema(result: dict[str, Any], words: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["result", "request_id", "timing", "model_time_in_ms", "release"],
        "properties": {
            "result": {**result, "description": words},
            "request_id": {"type": "string", "description": "The call's id."},
            "timing": {"type": "number", "description": "Time in the server, in ms."},
            "model_time_in_ms": {"type": "integer", "description": "Time in the function, in ms."},
            "release": _ref(RELEASE),
        },
    }


def _release_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["harness_version", "model_id", "model_version", "model_version_number"],
        "properties": {
            "harness_version": {"type": "string", "description": "The modelhost version."},
            "model_id": {"type": "string"},
            "model_version": {"type": "string", "description": "The version's id."},
            "model_version_number": {"type": "integer"},
        },
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error", "request_id"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "A stable machine code."},
                    "message": {
                        "type": "string",
                        "description": "What went wrong, and what to do.",
                    },
                },
            },
            "request_id": {"type": "string"},
        },
    }


def _error_response(status: str, why: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": why,
        "content": {"application/json": {"schema": _ref(ERROR)}},
    }
    if status in _RETRY_AFTER:
        response["headers"] = {"Retry-After": _header("Seconds to wait before trying again.")}
    if status == "401":
        response["headers"] = {"WWW-Authenticate": _header("The schemes the model accepts.")}
    return response


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _component_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def _rewrite_refs(value: Any) -> Any:
    """``#/$defs/X`` (as the description refers to its classes) -> ``#/components/schemas/X``."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#/$defs/"):
                out[key] = "#/components/schemas/" + _component_name(item[len("#/$defs/") :])
            else:
                out[key] = _rewrite_refs(item)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(item) for item in value]
    return value
