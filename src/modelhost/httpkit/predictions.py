"""The asynchronous prediction URLs, a raw ASGI handler beside the gateway (main process only;
gateway processes pass these requests on, as they pass every request they cannot answer):

- ``POST /models/{model}/(latest|labels/{l}|versions/{n})/async``: the synchronous call's body
  and token; ``202`` with ``{"asyncPredictionId", "status": "queued", "location"}`` and a
  ``Location`` header;
- ``GET /models/{model}/predictions/{id}``: its status, then the result or the error;
- the hosted product's ``POST /api/modelApis/async/v1/{modelId}`` (``{"parameters": ...}``,
  answered ``200`` with ``{"asyncPredictionId"}``) and ``GET .../{modelId}/{asyncPredictionId}``
  (``status``, then ``result`` or ``errors``).

The token check is the gateway's own (:class:`modelhost.gateway.auth.TokenGuard`), with the
route table in memory; the body is checked and the prediction stored before the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import orjson

from modelhost import errors, urls
from modelhost.gateway.app import Gateway, Receive, Scope, Send, new_request_id
from modelhost.gateway.auth import token_from_headers
from modelhost.gateway.envelope import error_response
from modelhost.gateway.routes import ModelRoute
from modelhost.operations import Services
from modelhost.operations import predictions as ops


class PredictionsEndpoint:
    def __init__(self, services: Services, gateway: Gateway, wake: Callable[[], None]) -> None:
        self.services = services
        self.gateway = gateway
        self.wake = wake

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(urls.HOSTED_ASYNC) or (
            path.startswith(urls.INVOKE_PREFIX)
            and (path.endswith("/async") or "/predictions/" in path)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        try:
            status, headers, body = await self._answer(scope, receive, request_id)
        except errors.ModelhostError as exc:
            status, headers, body = error_response(exc, request_id)
        if self.gateway.request_log is not None:  # a line per request, as for every call
            self.gateway.request_log.add(
                started, request_id, scope, status, None, self.gateway.table
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, scope: Scope, receive: Receive, request_id: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path: str = scope["path"]
        method: str = scope["method"]
        hosted = path.startswith(urls.HOSTED_ASYNC)
        if hosted:
            parts = [unquote(p) for p in path[len(urls.HOSTED_ASYNC) :].strip("/").split("/")]
            if len(parts) == 1 and parts[0]:
                self._method(method, "POST")
                return await self._submit(scope, receive, request_id, parts[0], "latest", True)
            if len(parts) == 2 and all(parts):
                self._method(method, "GET")
                return await self._read(scope, request_id, parts[0], parts[1], True)
            raise errors.RouteNotFound(
                "The asynchronous API's URLs are POST /api/modelApis/async/v1/{modelId} and "
                "GET /api/modelApis/async/v1/{modelId}/{asyncPredictionId}."
            )
        parts = path.strip("/").split("/")  # models/{m}/.../async | models/{m}/predictions/{id}
        if len(parts) == 4 and parts[2] == "predictions":
            self._method(method, "GET")
            return await self._read(scope, request_id, unquote(parts[1]), unquote(parts[3]), False)
        if parts[-1] == "async" and len(parts) in (4, 5):
            route = "/".join(parts[2:-1])
            if not (route == "latest" or (len(parts) == 5 and parts[2] in ("labels", "versions"))):
                raise errors.RouteNotFound(
                    f"Unknown route '{route}'; use latest, versions/{{n}} or labels/{{label}}."
                )
            self._method(method, "POST")
            return await self._submit(scope, receive, request_id, unquote(parts[1]), route, False)
        raise errors.RouteNotFound(
            "Asynchronous URLs look like /models/{model}/latest/async (and labels/{label}/async, "
            "versions/{n}/async) and /models/{model}/predictions/{id}."
        )

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise errors.MethodNotAllowed(f"Use {allowed} here.", headers={"Allow": allowed})

    def _route(self, key: str) -> ModelRoute:
        route = self.gateway.table.find(key)
        if route is None or route.state == "archived":
            raise errors.ModelNotFound(f"There is no model '{key}'.")
        return route

    async def _submit(
        self,
        scope: Scope,
        receive: Receive,
        request_id: str,
        key: str,
        route_key: str,
        hosted: bool,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        route = self._route(key)
        # the same checks as a synchronous call: the route exists, the token, the content type
        self.gateway._resolve(f"/models/{route.model_id}/{route_key}/model")
        token = None
        if route.invocation_mode != "public":
            self.gateway.guard.check(route, scope, request_id)
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = token_from_headers([(name, value)])
            elif name == b"content-type" and value.split(b";", 1)[0].strip().lower() not in (
                b"application/json",
                b"text/json",
            ):
                raise errors.UnsupportedMediaType(
                    f"Content-Type '{value.decode('latin-1')}' is not supported; send the "
                    "body as JSON with 'Content-Type: application/json'."
                )
        body = ops.check_body(await self._body(receive), hosted=hosted)
        who = ops.Submitter(
            token_sha256=ops.token_digest(token) if token and not token.startswith("mh_") else None
        )
        prediction = await ops.submit(
            self.services, route.model_id, route_key, body, request_id, who
        )
        self.wake()
        location = ops.location(route.name, prediction.id)
        if hosted:
            answer = {"asyncPredictionId": prediction.id}
            status = 200
        else:
            answer = ops.accepted(route.name, prediction)
            status = 202
        return status, _headers(answer, request_id, location), orjson.dumps(answer)

    async def _read(
        self, scope: Scope, request_id: str, key: str, prediction_id: str, hosted: bool
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        route = self._route(key)
        prediction = await asyncio.to_thread(
            ops.find_readable,
            self.services,
            model_id=route.model_id,
            model_name=route.name,
            public=route.invocation_mode == "public",
            token_digests=route.tokens,
            prediction_id=prediction_id,
            credential=token_from_headers(scope["headers"]),
        )
        answer = ops.hosted_view(prediction) if hosted else ops.view(prediction)
        return 200, _headers(answer, request_id), orjson.dumps(answer)

    async def _body(self, receive: Receive) -> bytes:
        limit = self.gateway.max_request_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message: MutableMapping[str, Any] = await receive()
            if message["type"] == "http.disconnect":
                raise errors.BadRequest("The client disconnected before sending the body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(
                    f"The request body is over the limit of {limit} bytes (setting "
                    "max_request_bytes)."
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _headers(
    answer: dict[str, Any], request_id: str, location: str | None = None
) -> list[tuple[bytes, bytes]]:
    body_length = len(orjson.dumps(answer))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(body_length).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if location is not None:
        headers.append((b"location", location.encode()))
    return headers
