"""The client implementation (see :mod:`modelhost.client`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from modelhost import errors, names, urls
from modelhost.builder.packing import (
    check_project_directory,
    collect_files,
    count_files,
    human_size,
    pack_project,
)
from modelhost.client import _arguments, _config, _git, _json
from modelhost.client._results import Instance, Model, Token, User, Version
from modelhost.client._runs import RunsMixin

_UNSET: Any = object()


@dataclass(frozen=True)
class AsyncPrediction:
    """An asynchronous prediction: its ``id``, the ``model`` it calls, its ``status`` (queued,
    running, succeeded, failed), and once it ended its ``result`` and ``release`` or its
    ``error`` (``{"code", "message"}``)."""

    id: str
    model: str
    status: str
    result: Any = None
    release: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    request_id: str | None = None
    #: the server's whole answer (times, timing, model_time_in_ms, http_status, ...)
    answer: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed")

    @property
    def version(self) -> int | None:
        """The number of the version that answered, once it succeeded."""
        return int(self.release["model_version_number"]) if self.release else None


@dataclass(frozen=True)
class Prediction:
    """A successful call: the function's ``result`` and what the server said about it."""

    result: Any
    request_id: str
    timing: float
    model_time_in_ms: int
    release: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.release["model_version_number"])


def parse_target(target: str, file: str | None, function: str | None) -> tuple[Path, str, str]:
    """``PATH --file F --function FN`` or the shorthand ``PATH/F:FN`` -> (root, file, function)."""
    path_part, _, fn = target.rpartition(":") if ":" in target else (target, "", "")
    candidate = Path(path_part)
    if fn and candidate.suffix in (".py", ".R", ".r"):
        if file or function:
            raise errors.BadRequest("Give either PATH/script.py:function or --file/--function.")
        return candidate.parent, candidate.name, fn
    root = Path(target)
    if not file or not function:
        if fn and not file and not function:
            raise errors.BadRequest(_not_shorthand(target))
        raise errors.BadRequest(
            "Say which function to publish: --file predict.py --function predict, or "
            "PATH/predict.py:predict."
        )
    return root, file, function


def _not_shorthand(target: str) -> str:
    """Why ``target``, which has a ':', is not the shorthand PATH/script.py:function."""
    script, _, function = target.partition(":")
    if Path(script).suffix in (".py", ".R", ".r"):
        return (
            f"'{function}' is not a function name: the shorthand is PATH/script.py:function, "
            "with one ':' and a name without one."
        )
    return (
        f"'{script}' is not a Python or R script: the shorthand is PATH/script.py:function "
        "(or PATH/script.R:function); or give --file and --function."
    )


def _missing_script(root: Path, file: str, paths: set[str]) -> str:
    wanted = Path(file).as_posix()
    for suffix in (".py", ".R"):
        if wanted + suffix in paths:
            return f"The file '{file}' is not in {root}; did you mean --file {wanted}{suffix}?"
    if (root / file).is_dir():
        return (
            f"'{file}' is a directory in {root}; pass --file with the script in it, such as "
            f"{wanted}/predict.py."
        )
    return (
        f"The file '{file}' is not in {root} (or it is excluded by .modelignore or --exclude). "
        "Pass --file with a path relative to the project directory."
    )


def example_text(example: Mapping[str, Any] | str | Path | None) -> str | None:
    """An example input as the JSON text a publish sends: a dict is encoded, a Path read, and
    a string taken as JSON text (the server checks it)."""
    if example is None or isinstance(example, str):
        return example
    if isinstance(example, Path):
        try:
            return example.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.BadRequest(
                f"Cannot read the example file {example}: {exc}. Give a JSON file or JSON text."
            ) from None
    return json.dumps(dict(example))


def _project_relative(root: Path, file: str) -> str:
    """``--file`` as a path inside the project; an absolute path inside it is made relative."""
    path = Path(file)
    if not path.is_absolute():
        return file
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise errors.EntryPointNotFound(
            f"The file '{file}' is not inside the project directory {root}. Pass --file with a "
            "path relative to the project directory, such as predict.py."
        ) from None


def _check_publish_arguments(
    *,
    name: Any,
    file: Any,
    function: Any,
    description: Any,
    concurrency: Any,
    environment: Any,
    python: Any,
    example: Any,
    batch_max_size: Any,
    batch_max_wait_ms: Any,
    fork: Any,
    wait: Any,
    wait_timeout: Any,
) -> None:
    """BadRequest, before anything is packed, for a publish argument of the wrong type."""
    _arguments.check_text("name", name, example="wine-quality")
    _arguments.check_text("file", file, example="predict.py", optional=True)
    _arguments.check_text("function", function, example="predict", optional=True)
    _arguments.check_text("description", description, example="retrained on May's data")
    _arguments.check_whole("concurrency", concurrency, example=4)
    _arguments.check_text("environment", environment, example="isolated", optional=True)
    _arguments.check_text("python", python, example="3.11", optional=True)
    _arguments.check_example("example", example)
    _arguments.check_whole("batch_max_size", batch_max_size, example=64, optional=True)
    _arguments.check_number(
        "batch_max_wait_ms", batch_max_wait_ms, unit="milliseconds", example=5, optional=True
    )
    _arguments.check_bool("fork", fork)
    _arguments.check_bool("wait", wait)
    _arguments.check_number("wait_timeout", wait_timeout, unit="seconds", example=1800)


#: the most a publish's query string (file, function, description, example…) may take once
#: encoded: the body is the project, so these travel in the request line, which the server
#: limits with max_header_bytes (16 KiB by default) together with the path and the headers
MAX_QUERY_BYTES = 12 * 1024


def _check_query_length(params: Mapping[str, Any]) -> None:
    """BadRequest, before anything is packed, for values too long to travel in a URL."""
    sizes = {name: len(str(httpx.QueryParams({name: value}))) for name, value in params.items()}
    if sum(sizes.values()) <= MAX_QUERY_BYTES:
        return
    longest = max(sizes, key=lambda name: sizes[name])
    raise errors.BadRequest(
        f"The {longest} is too long to send: {sizes[longest]:,} bytes once encoded in the "
        f"URL, and a publish's {', '.join(sizes)} may take at most {MAX_QUERY_BYTES:,} bytes "
        f"together. Shorten the {longest}."
    )


class Client(RunsMixin):
    """Talks to a modelhost server.

    >>> client = Client("http://127.0.0.1:8000", api_key="mh_...")  # doctest: +SKIP
    >>> client.publish("examples/wine_quality/predict.py:predict", name="wine-quality")
    ... # doctest: +SKIP

    Without ``url`` and ``api_key`` it uses ``MODELHOST_URL`` / ``MODELHOST_API_KEY``, then the
    credentials file the server writes on first start (``$MODELHOST_HOME/credentials``).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, self.api_key = _config.resolve(url, api_key)
        self._timeout = timeout
        headers = {"User-Agent": "modelhost-client"}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _request(
        self,
        method: str,
        path: str,
        *,
        api_key: bool = True,
        read_timeout_message: str | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = kwargs.pop("headers", None) or {}
        if api_key and self.api_key:
            headers.setdefault("Authorization", f"Bearer {self.api_key}")
        if "json" in kwargs:  # encoded here, so NaN is a modelhost error and not a ValueError
            kwargs["content"] = _json.encode_body(kwargs.pop("json"))
            headers.setdefault("Content-Type", "application/json")
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.ReadTimeout:
            raise errors.ConnectionFailed(
                read_timeout_message or f"The server at {self.url} did not answer in time."
            ) from None
        except httpx.TimeoutException:
            raise errors.ConnectionFailed(
                f"The server at {self.url} did not answer in time."
            ) from None
        except httpx.TransportError as exc:
            raise errors.ConnectionFailed(
                f"Cannot reach the modelhost server at {self.url} ({exc}). Is 'modelhost serve' "
                "running there? Set the address with --url or MODELHOST_URL."
            ) from None
        except httpx.InvalidURL as exc:
            raise errors.BadRequest(
                f"Cannot make the request {method} {path}: {exc}. A value that travels in the "
                "URL is too long or not valid there; shorten it."
            ) from None
        except httpx.RequestError as exc:
            raise errors.ConnectionFailed(
                f"The request {method} {path} to {self.url} failed: {exc}."
            ) from None
        try:
            body = _json.decode_answer(response.content) if response.content else None
        except ValueError:
            if not response.is_error:
                raise errors.ConnectionFailed(
                    f"The server at {self.url} answered {method} {path} with something other "
                    "than JSON; is it a modelhost server? Set the address with --url or "
                    "MODELHOST_URL."
                ) from None
            body = None
        if response.status_code == 401 and api_key and not self.api_key:
            raise errors.Unauthenticated(
                f"The server at {self.url} needs an API key and no API key was given: sign in "
                f"with 'modelhost login {self.url}', or give a key with --api-key or "
                "MODELHOST_API_KEY (api_key= in Python). The first admin's key is in "
                "$MODELHOST_HOME/credentials on the server."
            )
        if response.is_error:
            raise errors.error_from_body(response.status_code, body)
        if response.is_redirect:  # the API never redirects a right path: an empty name, say
            raise errors.RouteNotFound(
                f"There is no route {method} {path}; check the names in it (a model or user "
                "name cannot be empty)."
            )
        return body

    # ------------------------------------------------------------------ models

    def models(self) -> list[Model]:
        """Every model, with its status and latest version."""
        return [Model.from_json(m) for m in self._request("GET", urls.api_models())["models"]]

    def model(self, model: str) -> Model:
        return Model.from_json(self._request("GET", urls.api_model(model)))

    def update_model(self, model: str, **changes: Any) -> Model:
        """Change ``description``, ``instance_count``, ``timeout_seconds``, ``routing_mode``,
        ``log_requests``, ``network`` (whether the model's code may reach the network),
        ``capture`` (prediction capture on or off), ``tier`` (a hardware tier's name, "" for
        none) or ``capture_share`` (the share of
        successful calls captured, more than 0 and at most 1)."""
        return Model.from_json(self._request("PATCH", urls.api_model(model), json=changes))

    def update_version(self, model: str, number: int, **changes: Any) -> Version:
        """Change a batching version's ``batch_max_size`` or ``batch_max_wait_ms``; its
        running instances get batches of the new limits at once, without a restart."""
        return Version.from_json(
            self._request("PATCH", urls.api_version(model, number), json=changes)
        )

    def versions(self, model: str) -> list[Version]:
        found = self._request("GET", urls.api_versions(model))["versions"]
        return [Version.from_json(v) for v in found]

    def version(self, model: str, number: int) -> Version:
        """One version, with its build log."""
        return Version.from_json(self._request("GET", urls.api_version(model, number)))

    def metrics(self, model: str, *, minutes: int = 60) -> dict[str, Any]:
        """Calls, errors and p50/p99 latency per version over the last ``minutes`` (up to
        10080, a week), from the per-minute history the server keeps."""
        return self._request("GET", urls.api_metrics(model), params={"minutes": minutes})

    def openapi(
        self, model: str, *, label: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """The OpenAPI document of a model's latest route (or of ``label``, or ``version``):
        its request forms typed from the function's signature, its answers and auth schemes.

        >>> doc = client.openapi("wine", label="prod")  # doctest: +SKIP
        >>> doc["paths"]  # doctest: +SKIP
        {'/models/wine/labels/prod/model': {'post': {...}}}
        """
        if label is not None and version is not None:
            raise errors.BadRequest("Give a label or a version, not both.")
        route = "latest"
        if label is not None:
            route = f"labels/{label}"
        elif version is not None:
            route = f"versions/{version}"
        document: dict[str, Any] = self._request("GET", urls.model_openapi(model, route))
        return document

    def instances(self, model: str) -> list[Instance]:
        found = self._request("GET", urls.api_instances(model))["instances"]
        return [Instance.from_json(i) for i in found]

    def logs(
        self,
        model: str,
        *,
        tail: int = 200,
        version: int | None = None,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        """The last ``tail`` log lines; with ``after`` (a line's time) only later ones."""
        params: dict[str, Any] = {"tail": tail}
        if version is not None:
            params["version"] = version
        if after is not None:
            params["after"] = after
        return self._request("GET", urls.api_logs(model), params=params)["lines"]

    def requests(self, model: str, *, tail: int = 200) -> list[dict[str, Any]]:
        """The last ``tail`` lines of the model's request log, one per call, oldest first:
        ``time``, ``request_id``, ``model``, ``version``, ``route``, ``status``,
        ``duration_ms``, ``source``."""
        return self._request("GET", urls.api_requests(model), params={"tail": tail})["lines"]

    # ------------------------------------------------------------------ captures

    def export_captures(
        self,
        model: str,
        destination: str | Path,
        *,
        since: str | None = None,
        version: int | None = None,
        format: str = "parquet",
    ) -> int:
        """Download the model's captured calls from ``since`` (``2026-12-01``, ``24h``,
        ``7d``…; None: everything kept) on, of one ``version`` or all, to the file
        ``destination`` as ``parquet`` or ``csv``; the bytes written. The file appears only
        once it is complete."""
        params: dict[str, Any] = {"format": format}
        if since is not None:
            params["since"] = since
        if version is not None:
            params["version"] = version
        target = Path(destination)
        staging = target.with_name(f".{target.name}.part")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        written = 0
        try:
            with self._http.stream(
                "GET", urls.api_captures(model), params=params, headers=headers
            ) as response:
                if response.is_error:
                    response.read()
                    try:
                        body = _json.decode_answer(response.content)
                    except ValueError:
                        body = None
                    raise errors.error_from_body(response.status_code, body)
                with staging.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
                        written += len(chunk)
            staging.replace(target)
        except httpx.TransportError as exc:
            raise errors.ConnectionFailed(
                f"The download from {self.url} failed ({exc}); try again."
            ) from None
        finally:
            staging.unlink(missing_ok=True)
        return written

    def drift(
        self, model: str, *, version: int | None = None, reference: str | Path | None = None
    ) -> dict[str, Any]:
        """A drift report of ``version``'s captured inputs (default: the newest version
        captured) against ``reference``, a CSV or Parquet file, or, without one, against the
        version's first day of capture: per numeric feature, ``psi`` and ``drifted`` (PSI above
        0.2) and the ``bins`` of both histograms."""
        params: dict[str, Any] = {}
        if version is not None:
            params["version"] = version
        if reference is None:
            params["reference"] = "first-day"
            return self._request("POST", urls.api_drift(model), params=params)
        path = Path(reference)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise errors.BadRequest(
                f"Cannot read the reference file {path}: {exc.strerror}; give a CSV or "
                "Parquet file."
            ) from None
        kind = "application/vnd.apache.parquet" if data[:4] == b"PAR1" else "text/csv"
        return self._request(
            "POST",
            urls.api_drift(model),
            params=params,
            content=data,
            headers={"Content-Type": kind},
        )

    # ------------------------------------------------------------------ lifecycle

    def _action(self, model: str, action: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", urls.api_model_action(model, action), json=body or {})

    def deploy(self, model: str, version: int) -> dict[str, Any]:
        """Serve ``version``: on latest in basic routing, on the prod label in advanced."""
        return self._action(model, "deploy", {"version": version})

    def rollback(self, model: str) -> dict[str, Any]:
        """Serve the newest ready version older than the one serving now."""
        return self._action(model, "rollback")

    def promote(self, model: str, version: int | None = None) -> dict[str, Any]:
        """Point the prod label at ``version`` (default: the newest ready one)."""
        return self._action(model, "promote", {"version": version})

    def set_routing(self, model: str, mode: str) -> Model:
        """``basic`` (latest serves the deployed version) or ``advanced`` (prod label)."""
        return self.update_model(model, routing_mode=mode)

    def scale(self, model: str, instances: int) -> Model:
        return self.update_model(model, instance_count=instances)

    def labels(self, model: str) -> list[dict[str, Any]]:
        return self._request("GET", urls.api_model_action(model, "labels"))["labels"]

    def set_label(
        self,
        model: str,
        label: str,
        version: int,
        *,
        canary_version: int | None = None,
        canary_weight: int = 0,
    ) -> dict[str, Any]:
        """Point ``label`` at ``version``; optionally send ``canary_weight`` % elsewhere."""
        body = {
            "version": version,
            "canary_version": canary_version,
            "canary_weight": canary_weight,
        }
        return self._request("PUT", urls.api_label(model, label), json=body)

    def delete_label(self, model: str, label: str) -> None:
        self._request("DELETE", urls.api_label(model, label))

    def stop(self, model: str, version: int | None = None) -> Model:
        return Model.from_json(self._action(model, "stop", {"version": version}))

    def start(self, model: str, version: int | None = None) -> Model:
        return Model.from_json(self._action(model, "start", {"version": version}))

    def restart(self, model: str) -> Model:
        """Replace every instance with a fresh one, with zero downtime."""
        return Model.from_json(self._action(model, "restart"))

    def unpublish(self, model: str) -> Model:
        """Stop and archive the model; its URLs answer 404 and its data is kept."""
        return Model.from_json(self._action(model, "unpublish"))

    def delete(self, model: str, *, confirm: str) -> None:
        """Delete the model and its data; ``confirm`` must repeat the model's name."""
        self._request("DELETE", urls.api_model(model), params={"confirm": confirm})

    def env(self, model: str) -> list[dict[str, Any]]:
        """The model's variables; secret values come back as None."""
        return self._request("GET", urls.api_env(model))["variables"]

    def set_env(self, model: str, name: str, value: str, *, secret: bool = False) -> None:
        self._request("PUT", urls.api_env(model, name), json={"value": value, "secret": secret})

    def unset_env(self, model: str, name: str) -> None:
        self._request("DELETE", urls.api_env(model, name))

    # ------------------------------------------------------------------ access

    @staticmethod
    def login(url: str, username: str, password: str, *, key_name: str = "login") -> Client:
        """Sign in with a password; returns a client holding a new API key for the user."""
        with Client(url, api_key="-") as anonymous:
            answer = anonymous._request(
                "POST",
                urls.API + "/login",
                api_key=False,
                json={"username": username, "password": password, "key_name": key_name},
            )
        return Client(url, answer["api_key"])

    def me(self) -> User:
        return User.from_json(self._request("GET", urls.api_me()))

    def users(self) -> list[User]:
        return [User.from_json(u) for u in self._request("GET", urls.API + "/users")["users"]]

    def add_user(self, username: str, password: str, *, admin: bool = False) -> User:
        """A new account; its ``warning`` says when code on the server is not isolated."""
        body = {"username": username, "password": password, "is_admin": admin}
        return User.from_json(self._request("POST", urls.API + "/users", json=body))

    def disable_user(self, username: str) -> User:
        return User.from_json(self._request("POST", f"{urls.API}/users/{username}/disable"))

    def api_keys(self) -> list[dict[str, Any]]:
        return self._request("GET", urls.API + "/keys")["keys"]

    def create_key(self, name: str, *, expires_in_days: int | None = None) -> str:
        """A new API key for yourself; returned once."""
        body = {"name": name, "expires_in_days": expires_in_days}
        return self._request("POST", urls.API + "/keys", json=body)["api_key"]

    def revoke_key(self, key_id: str) -> None:
        self._request("DELETE", f"{urls.API}/keys/{key_id}")

    def tokens(self, model: str) -> list[Token]:
        found = self._request("GET", urls.api_model_action(model, "tokens"))["tokens"]
        return [Token.from_json(t) for t in found]

    def create_token(
        self, model: str, name: str, *, rate: str | None = None, quota: str | None = None
    ) -> Token:
        """A new access token for ``model``; its ``token`` is shown only in this answer.
        ``rate`` (``"50/s"``, ``"600/min"``, ``"1000/h"``) and ``quota`` (``"100000/day"``,
        ``"1000000/month"``, UTC) limit its calls; over either, calls get HTTP 429."""
        body: dict[str, Any] = {"name": name}
        if rate is not None:
            body["rate"] = rate
        if quota is not None:
            body["quota"] = quota
        path = urls.api_model_action(model, "tokens")
        return Token.from_json(self._request("POST", path, json=body))

    def update_token(
        self, model: str, token_id: str, *, rate: str | None = None, quota: str | None = None
    ) -> Token:
        """Change a token's ``rate`` or ``quota`` (None: as it is; ``"none"``: no limit);
        ``token_id`` is its id, or its name when unique on the model."""
        body = {key: value for key, value in (("rate", rate), ("quota", quota)) if value}
        path = f"{urls.api_model_action(model, 'tokens')}/{quote(token_id, safe='')}"
        return Token.from_json(self._request("PATCH", path, json=body))

    def revoke_token(self, model: str, token_id: str) -> None:
        """Revoke a token: ``token_id`` is its id, or its name when no other active token of
        the model has it."""
        path = f"{urls.api_model_action(model, 'tokens')}/{quote(token_id, safe='')}"
        self._request("DELETE", path)

    def regenerate_token(self, model: str, token_id: str) -> Token:
        """A new secret for a token (its id, or its name when unique on the model)."""
        path = f"{urls.api_model_action(model, 'tokens')}/{quote(token_id, safe='')}/regenerate"
        return Token.from_json(self._request("POST", path))

    def set_access(
        self, model: str, *, visibility: str | None = None, invocation: str | None = None
    ) -> Model:
        """``visibility`` public|private, ``invocation`` public|token."""
        body = {"visibility": visibility, "invocation": invocation}
        path = urls.api_model_action(model, "access")
        return Model.from_json(self._request("PATCH", path, json=body))

    def collaborators(self, model: str) -> list[dict[str, Any]]:
        path = urls.api_model_action(model, "collaborators")
        return self._request("GET", path)["collaborators"]

    def set_collaborator(self, model: str, user: str, role: str) -> list[dict[str, Any]]:
        path = f"{urls.api_model_action(model, 'collaborators')}/{user}"
        return self._request("PUT", path, json={"role": role})["collaborators"]

    def remove_collaborator(self, model: str, user: str) -> None:
        self._request("DELETE", f"{urls.api_model_action(model, 'collaborators')}/{user}")

    def group_roles(self, model: str) -> list[dict[str, Any]]:
        """The groups with a role on ``model``: ``[{"group": "ds", "role": "editor"}]``."""
        return self._request("GET", urls.api_model_action(model, "collaborators"))["groups"]

    def set_group_role(self, model: str, group: str, role: str) -> list[dict[str, Any]]:
        """Give ``group`` the role viewer or editor on ``model``; its members hold it unless
        they hold a higher one of their own."""
        path = f"{urls.api_model_action(model, 'groups')}/{quote(group, safe='')}"
        return self._request("PUT", path, json={"role": role})["groups"]

    def remove_group_role(self, model: str, group: str) -> None:
        path = f"{urls.api_model_action(model, 'groups')}/{quote(group, safe='')}"
        self._request("DELETE", path)

    def groups(self) -> list[dict[str, Any]]:
        """Every group, with its members."""
        return self._request("GET", urls.api_groups())["groups"]

    def create_group(self, name: str) -> dict[str, Any]:
        """A new group (server admins)."""
        return self._request("POST", urls.api_groups(), json={"name": name})

    def delete_group(self, name: str) -> None:
        self._request("DELETE", urls.api_groups(name))

    def add_group_member(self, group: str, user: str) -> dict[str, Any]:
        """Add ``user`` to ``group`` (server admins); returns the group."""
        return self._request("PUT", f"{urls.api_groups(group)}/members/{quote(user, safe='')}")

    def remove_group_member(self, group: str, user: str) -> None:
        self._request("DELETE", f"{urls.api_groups(group)}/members/{quote(user, safe='')}")

    def transfer(self, model: str, user: str) -> dict[str, Any]:
        return self._request("POST", urls.api_model_action(model, "transfer"), json={"user": user})

    def audit(
        self,
        model: str | None = None,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: str | None = None,
        format: str = "json",
    ) -> Any:
        """Audit events (newest first) as a list, or the CSV text with ``format="csv"``."""
        path = urls.api_model_action(model, "audit") if model else urls.API + "/audit"
        params = {
            k: v
            for k, v in {"actor": actor, "action": action, "since": since, "format": format}.items()
            if v is not None
        }
        if format == "csv":
            response = self._http.get(
                path, params=params, headers={"Authorization": f"Bearer {self.api_key}"}
            )
            if response.is_error:
                raise errors.error_from_body(response.status_code, response.json())
            return response.text
        return self._request("GET", path, params=params)["events"]

    # ------------------------------------------------------------------ environments

    def environments(self) -> list[dict[str, Any]]:
        """The named environments, each at its newest revision."""
        return self._request("GET", urls.api_environments())["environments"]

    def environment(self, name: str, *, revision: int | None = None) -> dict[str, Any]:
        """A named environment with its requirements, lock and revisions."""
        params = {"revision": revision} if revision is not None else None
        return self._request("GET", urls.api_environments(name), params=params)

    def create_environment(
        self,
        name: str,
        requirements: str | None = None,
        *,
        python: str | None = None,
        r_library: str | None = None,
    ) -> dict[str, Any]:
        """Lock ``requirements`` (a requirements.txt's text) as the next revision of ``name``;
        ``created`` in the answer is False when nothing changed.

        With ``r_library`` instead, register an R environment: the absolute path on the
        server of a library of installed R packages, such as ``/srv/r-libraries/wine``.
        """
        body: dict[str, Any] = {"name": name}
        if r_library is not None:
            body["r_library"] = r_library
        else:
            body["requirements"] = requirements if requirements is not None else ""
            body["python"] = python
        # Resolving may take a while: up to the server's environment_build_timeout_seconds.
        return self._request("POST", urls.api_environments(), json=body, timeout=900.0)

    def prune_environments(self) -> dict[str, Any]:
        """Delete cached environments that no version uses (admins)."""
        return self._request("POST", urls.api_environments("prune"))

    # ------------------------------------------------------------------ publish

    def publish(
        self,
        path: str | Path,
        *,
        name: str,
        file: str | None = None,
        function: str | None = None,
        exclude: Sequence[str] = (),
        description: str = "",
        concurrency: int = 1,
        environment: str | None = None,
        python: str | None = None,
        example: Mapping[str, Any] | str | Path | None = None,
        batch_max_size: int | None = None,
        batch_max_wait_ms: float | None = None,
        fork: bool = True,
        wait: bool = True,
        wait_timeout: float = 1800.0,
        on_progress: Callable[[str], None] | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> Version:
        """Publish a project as the next version of ``name``; returns the version.

        ``example`` is the version's example input, which the tester and the code snippets
        start from: a dict (``{"data": {"x": 1}}``), JSON text, or a :class:`~pathlib.Path`
        to a JSON file; without it, the project's ``example.json`` if it has one.

        ``batch_max_size`` publishes a batching function, which takes a list of inputs (each
        call's ``data`` object or ``parameters`` array) and returns a list of results: calls
        that arrive while every instance is busy leave together, at most ``batch_max_size``
        at a time, waiting at most ``batch_max_wait_ms`` (default 5) for company.

        With ``fork`` (the default) every instance of a Python version, the first one too, is
        forked from a process that imported the script once, so they share its memory;
        ``fork=False`` starts each instance fresh, for libraries that do not survive a fork
        (threads started at import, CUDA, some gRPC clients). An R version's instances always
        start fresh (its ``fork`` is ``False``).

        ``path`` is a project directory, ``PATH/script.py:function``, or a git repository as
        ``git+URL@REF`` (cloned at REF, whose commit is recorded with the version; give
        ``file`` and ``function``). ``environment`` is ``server``, ``isolated`` or the name of
        a named environment (default: isolated when the project has a requirements.txt or
        pyproject.toml dependencies); ``python`` picks an isolated environment's Python, such
        as ``"3.11"``. With ``wait`` (the default) it returns once the version is running,
        passing each new line of the build log to ``on_log``, and raises
        :class:`~modelhost.errors.BuildFailed` (with ``build_log``) if it failed.

        An argument of the wrong type (``fork="no"``, ``python=3.10``, ``exclude="*.csv"``) is
        a :class:`~modelhost.errors.BadRequest` saying what to pass, before anything is packed.
        """
        exclude = _arguments.patterns("exclude", exclude)
        _check_publish_arguments(
            name=name,
            file=file,
            function=function,
            description=description,
            concurrency=concurrency,
            environment=environment,
            python=python,
            example=example,
            batch_max_size=batch_max_size,
            batch_max_wait_ms=batch_max_wait_ms,
            fork=fork,
            wait=wait,
            wait_timeout=wait_timeout,
        )
        if batch_max_wait_ms is not None and batch_max_size is None:
            raise errors.BadRequest(
                "batch_max_wait_ms needs batch_max_size: give both to publish a batching "
                "function (one that takes a list of inputs and returns a list of results)."
            )
        target = str(path)
        if _git.is_git(target):
            if not file or not function:
                raise errors.BadRequest(
                    "Say which function to publish from the repository: --file predict.py "
                    "--function predict."
                )
            (on_progress or (lambda _m: None))(f"Cloning {target}")
            with _git.checkout(target) as checkout:
                return self._publish(
                    checkout.root,
                    name=name,
                    file=file,
                    function=function,
                    exclude=exclude,
                    params={
                        "description": description,
                        "concurrency": concurrency,
                        "environment": environment,
                        "python": python,
                        "source": checkout.source,
                        "git_commit": checkout.commit,
                        "example": example_text(example),
                        "batch_max_size": batch_max_size,
                        "batch_max_wait_ms": batch_max_wait_ms,
                        "fork": None if fork else "false",
                    },
                    wait=wait,
                    wait_timeout=wait_timeout,
                    on_progress=on_progress,
                    on_log=on_log,
                )
        root, file, function = parse_target(target, file, function)
        return self._publish(
            root,
            name=name,
            file=file,
            function=function,
            exclude=exclude,
            params={
                "description": description,
                "concurrency": concurrency,
                "environment": environment,
                "python": python,
                "example": example_text(example),
                "batch_max_size": batch_max_size,
                "batch_max_wait_ms": batch_max_wait_ms,
                "fork": None if fork else "false",
            },
            wait=wait,
            wait_timeout=wait_timeout,
            on_progress=on_progress,
            on_log=on_log,
        )

    def _publish(
        self,
        root: Path,
        *,
        name: str,
        file: str,
        function: str,
        exclude: Sequence[str],
        params: dict[str, Any],
        wait: bool,
        wait_timeout: float,
        on_progress: Callable[[str], None] | None,
        on_log: Callable[[str], None] | None,
    ) -> Version:
        say = on_progress or (lambda _message: None)
        names.check_model_reference(name)
        check_project_directory(
            root, file_hint=f" with --file {root.name}, or write {root}:{function}"
        )
        file = _project_relative(root, file)
        files = collect_files(root, exclude)
        paths = {f.path for f in files}
        if Path(file).as_posix() not in paths:
            raise errors.EntryPointNotFound(_missing_script(root, file, paths))
        query = {
            "file": file,
            "function": function,
            **{k: v for k, v in params.items() if v is not None},
        }
        _check_query_length(query)
        # What the server can refuse without the project (who may, the settings) it says now,
        # not after a large project was packed and uploaded.
        self._request("POST", urls.api_versions(name), params={**query, "check": "true"})
        total = sum(f.size for f in files)
        say(f"Packing {count_files(len(files))} ({human_size(total)}) from {root}")
        # One key for this publish: a retry after a lost answer returns the version the first
        # attempt made, instead of making a second one.
        key = uuid.uuid4().hex
        for attempt in (1, 2):
            try:
                with pack_project(root, files) as archive:
                    say(f"Uploading to {self.url}")
                    body = self._request(
                        "POST",
                        urls.api_versions(name),
                        params=query,
                        headers={"Content-Type": "application/gzip", "Idempotency-Key": key},
                        content=iter(lambda: archive.read(1 << 20), b""),
                    )
                break
            except errors.ConnectionFailed as exc:
                if attempt == 2:
                    raise
                say(
                    f"{exc.message} Trying once more with the same Idempotency-Key, so the "
                    "server makes no second version if the first attempt reached it."
                )
        version = Version.from_json(body["version"])
        say(f"Version {version.number} of {body['model']['name']} is building")
        if not wait:
            return version
        return self.wait_for_version(name, version.number, timeout=wait_timeout, on_log=on_log)

    def wait_for_version(
        self,
        model: str,
        number: int,
        *,
        timeout: float = 1800.0,
        on_log: Callable[[str], None] | None = None,
    ) -> Version:
        """Poll a version until it is no longer building; raise BuildFailed if it failed.

        Each new line of the build log goes to ``on_log`` as it appears.
        """
        deadline = time.monotonic() + timeout
        delay = 0.1
        settled: float | None = None
        shown = 0
        while True:
            version = self.version(model, number)
            if on_log is not None:
                log = version["build_log"]
                end = log.rfind("\n") + 1  # whole lines only
                for line in log[shown:end].splitlines():
                    on_log(line)
                shown = max(shown, end)
            if version["status"] == "failed":
                failure = version.get("failure")  # absent from an older server: read the log
                log = version["build_log"]
                text = failure["message"] if failure else log.split("Failed:\n", 1)[-1]
                reason = text.strip().splitlines()
                raise errors.BuildFailed(
                    f"Version {number} of {model} failed to load: "
                    f"{reason[0] if reason else 'see its build log'}",
                    build_log=version["build_log"],
                )
            if version["status"] in ("running", "stopped"):
                return version
            if version["status"] == "ready":
                # Built; it goes live within a reconcile tick unless nothing routes to it
                # (a stopped model, or an older version while a newer one serves).
                settled = settled or time.monotonic()
                if time.monotonic() - settled > 5:
                    return version
            if time.monotonic() > deadline:
                raise errors.ModelTimeout(
                    f"Version {number} of {model} is still building after {timeout:g} s; "
                    f"check 'modelhost versions {model}' later."
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # ------------------------------------------------------------------ invoke

    def predict(
        self,
        model: str,
        *,
        data: dict[str, Any] = _UNSET,
        parameters: list[Any] = _UNSET,
        version: int | None = None,
        label: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        as_tester: bool = False,
    ) -> Prediction:
        """Call a model with keyword arguments (``data``) or positional ones (``parameters``).

        ``as_tester`` calls it as the UI's tester does, with the client's API key and no
        access token (``POST /api/v1/models/{model}/test``): anyone who may view the model may,
        and the call is recorded in its audit log as a ``test-call``.

        ``token`` is the model's access token, needed unless the model is public; the API key
        is never sent on this path. By default the client waits for the answer however long it
        takes: the server ends every call within the model's timeout (in the queue, then on an
        instance) and answers 504 past it. ``timeout`` (seconds) gives up sooner.
        """
        if (data is _UNSET) == (parameters is _UNSET):
            raise errors.BadRequest("Pass exactly one of data= (a dict) or parameters= (a list).")
        _one_route(version, label)
        body = {"data": data} if data is not _UNSET else {"parameters": parameters}
        if version is not None:
            path, route = urls.invoke_version(model, version), f"versions/{version}"
        elif label is not None:
            path, route = urls.invoke_label(model, label), f"labels/{label}"
        else:
            path, route = urls.invoke_latest(model), "latest"
        headers = {"Content-Type": "application/json"}
        if token and not as_tester:
            headers["Authorization"] = f"Bearer {token}"
        answer = self._request(
            "POST",
            urls.api_test(model) if as_tester else path,
            params={"route": route} if as_tester else None,
            content=_json.encode_arguments(body),
            headers=headers,
            api_key=as_tester,
            timeout=httpx.Timeout(self._timeout, read=timeout),
            read_timeout_message=(
                f"No answer from model '{model}' within {timeout or 0:g} s (timeout); the call "
                "may still be running on the server. Allow more time, or none to wait for the "
                "server, which ends every call at the model's own timeout."
            ),
        )
        return Prediction(
            result=answer["result"],
            request_id=answer["request_id"],
            timing=answer["timing"],
            model_time_in_ms=answer["model_time_in_ms"],
            release=answer["release"],
        )

    def submit(
        self,
        model: str,
        *,
        data: dict[str, Any] = _UNSET,
        parameters: list[Any] = _UNSET,
        version: int | None = None,
        label: str | None = None,
        token: str | None = None,
        as_tester: bool = False,
    ) -> AsyncPrediction:
        """Submit an asynchronous prediction (the arguments are those of :meth:`predict`); it
        is stored on the server before this returns. Get it with :meth:`result`.

        >>> sent = client.submit("wine-quality", parameters=[row], token=T)  # doctest: +SKIP
        >>> client.result(sent, token=T).result  # waits until it ends  # doctest: +SKIP
        """
        if (data is _UNSET) == (parameters is _UNSET):
            raise errors.BadRequest("Pass exactly one of data= (a dict) or parameters= (a list).")
        _one_route(version, label)
        body = {"data": data} if data is not _UNSET else {"parameters": parameters}
        if version is not None:
            route = f"versions/{version}"
        elif label is not None:
            route = f"labels/{label}"
        else:
            route = "latest"
        headers = {"Content-Type": "application/json"}
        if token and not as_tester:
            headers["Authorization"] = f"Bearer {token}"
        answer = self._request(
            "POST",
            urls.api_test(model) if as_tester else urls.invoke_async(model, route),
            params={"route": route, "async": "true"} if as_tester else None,
            content=_json.encode_arguments(body),
            headers=headers,
            api_key=as_tester,
        )
        return AsyncPrediction(id=answer["asyncPredictionId"], model=model, status=answer["status"])

    def set_webhook(self, model: str, url: str | None) -> dict[str, Any]:
        """Set the URL called when one of the model's asynchronous predictions ends (None
        removes it); the answer's ``secret`` signs the calls and is shown only here."""
        answer: dict[str, Any] = self._request(
            "PUT", f"{urls.api_model(model)}/webhook", json={"url": url}
        )
        return answer

    def result(
        self,
        prediction: AsyncPrediction | str,
        *,
        model: str | None = None,
        wait: bool = True,
        token: str | None = None,
        timeout: float | None = None,
    ) -> AsyncPrediction:
        """An asynchronous prediction as it is now, or with ``wait`` once it ended (polling,
        up to ``timeout`` seconds, none by default). ``prediction`` is what :meth:`submit`
        returned, or an id with ``model=``. It is read with ``token`` (the access token it was
        submitted with) or else the client's API key (a user who may test the model)."""
        if isinstance(prediction, AsyncPrediction):
            prediction_id, model = prediction.id, model or prediction.model
        else:
            prediction_id = prediction
        if not model:
            raise errors.BadRequest(
                "Say which model the prediction is of: result(ID, model=NAME), or pass what "
                "submit() returned."
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.1
        while True:
            answer = self._request(
                "GET",
                urls.invoke_prediction(model, prediction_id),
                headers=headers,
                api_key=not token,
            )
            found = AsyncPrediction(
                id=answer["asyncPredictionId"],
                model=model,
                status=answer["status"],
                result=answer.get("result"),
                release=answer.get("release"),
                error=answer.get("error"),
                request_id=answer.get("request_id"),
                answer=answer,
            )
            if not wait or found.done:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise errors.ModelTimeout(
                    f"Prediction {prediction_id} of '{model}' is still {found.status} after "
                    f"{timeout:g} s; ask again later with result(..., wait=False)."
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)


def _one_route(version: int | None, label: str | None) -> None:
    """A call goes to a version or to a label's version, never both: BadRequest for both."""
    if version is not None and label is not None:
        raise errors.BadRequest(
            "Pass at most one of version= and label=: a call goes to one version."
        )
